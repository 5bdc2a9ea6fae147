"""Where a model's bits go inside the coder's tiles, and what the model-free predictor would cost instead.

For every full tile of the first N images: the bound (KL + NLL, one posterior sample, as `vaezip eval --tile`),
the NLL by distance from the tile's edge, and the real cost of coding that tile with codec/predictive.py.
Prints the mean bound, the ring NLLs, and the rate if each tile took the cheaper of the two.

    python scripts/tile_costs.py photo kodak --limit 4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from codec.ans import Stack  # noqa: E402
from vaezip import data as datasets  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.evaluate import repeatable_sampling, tiled_batches  # noqa: E402
from vaezip.model.layers import gaussian_kl  # noqa: E402


def predictive_bits(tile: np.ndarray) -> int:
    stack = Stack()
    predictive.encode(stack, np.ascontiguousarray(tile))
    return stack.num_valid_bits()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--tile", type=int, default=32)
    args = parser.parse_args()
    model = load_model(args.model).model.eval()
    images = datasets.load(args.dataset, limit=args.limit).images
    side = args.tile
    nll_map = torch.zeros(side, side, dtype=torch.float64)  # bits per subpixel summed over tiles
    bound_bits, predictive_total, cheaper_total, tiles = 0.0, 0.0, 0.0, 0
    with repeatable_sampling(0, "cpu"):
        for batch, mask in tiled_batches(images, 64, side, model.config.stride):
            full = mask.reshape(len(mask), -1).min(axis=1) == 1  # only whole tiles: every pixel real
            if batch.shape[2:] != (side, side) or not full.any():
                continue
            batch = batch[full]
            pixels = torch.from_numpy(batch)
            walk = model.walk(pixels, len(batch), side, side)
            kl = torch.zeros(len(batch), dtype=torch.float64)
            for _ in range(walk.num_groups):
                step = walk.step()
                latent = step.post_mean + step.post_std * torch.randn_like(step.post_std)
                kl += gaussian_kl(step.post_mean, step.post_std, step.prior_mean, step.prior_std).flatten(1).sum(1).double()
                walk.advance(latent)
            nll = -model.likelihood.log_prob(walk.pixel_params(), pixels).double() / math.log(2)  # B, H, W bits
            channels = batch.shape[1]
            nll_map += nll.sum(0) / channels
            per_tile = kl / math.log(2) + nll.flatten(1).sum(1)  # B bits
            costs = torch.tensor([predictive_bits(tile) for tile in batch], dtype=torch.float64)
            bound_bits += float(per_tile.sum())
            predictive_total += float(costs.sum())
            cheaper_total += float(torch.minimum(per_tile, costs).sum())
            tiles += len(batch)
    if not tiles:
        sys.exit(f"no whole {side}x{side} tiles in the first {args.limit} images of {args.dataset}")
    values = tiles * channels * side * side
    print(f"{args.model} on {args.dataset} (first {args.limit}), {tiles} whole {side}x{side} tiles")
    print(f"bound {bound_bits / values:.4f} bpsp; predictive {predictive_total / values:.4f}; "
          f"the cheaper of the two per tile {cheaper_total / values:.4f}")
    mean_map = nll_map / tiles
    for ring in range(4):
        inside = torch.zeros(side, side, dtype=torch.bool)
        inside[ring : side - ring, ring : side - ring] = True
        inner = torch.zeros_like(inside)
        inner[ring + 1 : side - ring - 1, ring + 1 : side - ring - 1] = True
        print(f"NLL of ring {ring} (pixels {ring} from the edge): {mean_map[inside & ~inner].mean():.4f} bpsp")
    quarter = side // 4
    print(f"NLL of the middle half: {mean_map[quarter:-quarter, quarter:-quarter].mean():.4f} bpsp")


if __name__ == "__main__":
    main()
