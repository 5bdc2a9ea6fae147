"""The initial bits a model's bits-back stream needs: what popping one tile's latents with the posterior takes
off the stack, measured by the coder itself (codec.latents.pop_group_posterior on the integer model's
posterior, a stack filled with random words, Gaussian latents on the coder's grid, binary ones as they are). Until a stream holds that many bits its tiles
go without bits-back (the predictor, raw bytes or latents at their prior means), so it is a fixed cost per file
that large files hide and small ones pay; Monte-Carlo bits-back with K samples (`compress --samples K`) pops K
times as much before its first importance-weighted tile.

    python scripts/initial_bits.py photo2 kodak --limit 2 --tile 32 [--tiles 64]

Needs ../shared/data. Prints the mean over whole tiles, in bits per tile and per subpixel of the tile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.ans import Stack  # noqa: E402
from codec.latents import LatentGrid, group_values, pop_group_posterior  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import data as datasets  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.coding import TorchLatentModel  # noqa: E402


def initial_bits(coder: TorchLatentModel, pixels: np.ndarray, grid: LatentGrid, seed: int = 0) -> float:
    """Bits one tile's latent pops take off a stack of random words: pixels (C, H, W) uint8, one whole tile."""
    stack = Stack()
    rng = np.random.default_rng(seed)
    stack.push_uniform(rng.integers(0, 2**16, 2**16), 2**16)  # 1 Mbit: far more than any tile pops
    before = stack.num_valid_bits()
    batch = coder.begin((1, *pixels.shape), pixels[None])
    for group in range(batch.num_groups):
        params = batch.latent_params(group)
        k = pop_group_posterior(stack, grid, params)
        batch.set_latent(group, group_values(grid, params, k))
    return float(before - stack.num_valid_bits())


def mean_initial_bits(loaded, images, tile: int = 32, count: int = 64, whole: bool = True) -> tuple[float, int]:
    """(the mean, the number) of initial_bits over the first `count` tiles of `images` (HWC uint8 arrays) cut as the coder
    cuts them; `whole`: whole tiles only (else every tile, padded as coded: an image smaller than the tile
    is one tile)."""
    coder = TorchLatentModel(loaded.model)
    grid = LatentGrid()
    measured = []
    for image in images:
        planes = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))
        for one in split_tiles(planes, tile, loaded.model.config.stride):
            if len(measured) < count and (not whole or one.valid == (tile, tile)):
                measured.append(initial_bits(coder, one.pixels, grid, seed=len(measured)))
        if len(measured) >= count:
            break
    return (float(np.mean(measured)) if measured else float("nan")), len(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=2, help="the first N images")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--tiles", type=int, default=64, help="at most this many whole tiles")
    args = parser.parse_args()
    loaded = load_model(args.model)
    images = datasets.load(args.dataset, limit=args.limit).images
    bits, measured = mean_initial_bits(loaded, images, args.tile, args.tiles)
    if not measured:
        sys.exit(f"no whole {args.tile}x{args.tile} tiles in the first {args.limit} images of {args.dataset}")
    subpixels = loaded.model.config.image_channels * args.tile * args.tile
    print(f"{loaded.name} on {args.dataset}, {measured} whole {args.tile}x{args.tile} tiles: "
          f"{bits:,.0f} bits per tile ({bits / subpixels:.2f} per subpixel of the tile)")


if __name__ == "__main__":
    main()
