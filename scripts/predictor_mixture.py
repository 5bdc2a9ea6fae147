"""What mixing the model's pixel distributions with the local predictor's would buy (ideal code lengths, no
file format has it): per 32x32 tile of each image, the model's integer tables at one posterior sample (plus
the latents' analytic KL) against

- today's choice per tile: the model, or the predictor (codec/predictive.py, Laplace residuals, no
  neighbour context) where it costs less;
- a linear mixture (1 - a) p_model + a p_predictor, one a for every tile, and the best a per tile;
- a product of experts p_model^(1 - b) p_predictor^b, renormalised over the 256 values, likewise.

    python scripts/predictor_mixture.py [--model photo2] [--images kodim01 kodim05 kodim13 kodim23]

A per-tile weight would be a few bits a tile in a file; they are not counted. The predictor here sees no
neighbouring tiles (the coder's does), which favours the model a little.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from codec.latents import LatentGrid, gaussian_kl_bits  # noqa: E402
from codec.pixels import batch_pixels  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import data  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.coding import TorchLatentModel  # noqa: E402
from vaezip.images import open_image  # noqa: E402

ALPHAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
BETAS = (0.0, 0.1, 0.2, 0.3, 0.4)


def tile_costs(coder: TorchLatentModel, tiles, rng) -> dict[str, np.ndarray]:
    """Bits of each tile of one batch under every rule: 'kl' (B,), 'model' (B,), 'predictor' (B,),
    'mix' (A, B), 'poe' (P, B)."""
    grid = LatentGrid()
    pixels, _ = batch_pixels(tiles)
    batch = coder.begin(pixels.shape, pixels)
    kl = np.zeros(len(tiles))
    for group in range(batch.num_groups):
        p = batch.latent_params(group)
        sample = p.post_mean + p.post_std * rng.standard_normal(p.post_mean.shape)
        kl += gaussian_kl_bits(p.post_mean, p.post_std, p.prior_mean, p.prior_std).sum(axis=1)
        batch.set_latent(group, grid.values(np.clip(np.rint(sample / grid.step), grid.lo, grid.hi)))
    b, c, h, w = pixels.shape
    model = np.empty((b, c, h, w, 256))
    for channel in range(c):
        seen = pixels.copy()
        seen[:, channel:] = 0
        model[:, channel] = batch.pixel_table(channel, seen)
    laplace = np.empty_like(model)
    for index, tile in enumerate(tiles):
        values = tile.pixels.astype(np.float64)
        means, stds = predictive._parameters(values, *predictive._all_positions(h, w))
        rows = predictive._laplace_rows(means.reshape(-1), stds.reshape(-1)).rows.astype(np.float64)
        laplace[index] = (rows / rows.sum(axis=1, keepdims=True)).reshape(c, h, w, 256)
    symbol = pixels.astype(np.int64)[..., None]
    p_model = np.take_along_axis(model, symbol, -1)[..., 0]
    p_laplace = np.take_along_axis(laplace, symbol, -1)[..., 0]
    bits = lambda p: -np.log2(p).reshape(b, -1).sum(axis=1)  # noqa: E731
    log_model, log_laplace = np.log(model), np.log(laplace)
    poe = []
    for beta in BETAS:
        joint = (1 - beta) * log_model + beta * log_laplace
        joint -= joint.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(joint).sum(axis=-1))
        poe.append(-(np.take_along_axis(joint, symbol, -1)[..., 0] - log_z).reshape(b, -1).sum(axis=1) / np.log(2))
    return {"kl": kl, "model": bits(p_model), "predictor": bits(p_laplace),
            "mix": np.stack([bits((1 - a) * p_model + a * p_laplace) for a in ALPHAS]), "poe": np.stack(poe)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="photo2")
    parser.add_argument("--images", nargs="+", default=["kodim01", "kodim05", "kodim13", "kodim23"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model(args.model)
    coder = TorchLatentModel(loaded.model)
    rng = np.random.default_rng(args.seed)
    print(f"model {loaded.name} (sha256 {loaded.sha256[:16]}), Kodak images {' '.join(args.images)}, 32x32 tiles, "
          f"seed {args.seed}; bits per subpixel, latents' KL included\n")
    print("| image | model | model or predictor per tile | linear mix, best single a | linear mix, a per tile "
          "| product, best single b | product, b per tile |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, np.ndarray | float] = {}
    for name in args.images:
        image = np.asarray(open_image(Path(data.data_root()) / "kodak" / f"{name}.png").convert("RGB"))
        tiles = split_tiles(image.transpose(2, 0, 1), 32, loaded.model.config.stride)
        sums: dict[str, np.ndarray | float] = {"n": float(image.size)}
        for start in range(0, len(tiles), 16):
            costs = tile_costs(coder, tiles[start : start + 16], rng)
            kl = costs["kl"]
            rules = {
                "model": (costs["model"] + kl).sum(),
                "choice": np.minimum(costs["model"] + kl, costs["predictor"]).sum(),
                "mix": (costs["mix"] + kl).sum(axis=1), "mix_tile": (costs["mix"].min(axis=0) + kl).sum(),
                "poe": (costs["poe"] + kl).sum(axis=1), "poe_tile": (costs["poe"].min(axis=0) + kl).sum(),
            }
            for key, value in rules.items():
                sums[key] = sums.get(key, 0.0) + value
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value
        report(name, sums)
    report("all", totals)
    print(f"\nlinear mix a in {ALPHAS}, product b in {BETAS}")


def report(name: str, sums: dict) -> None:
    n = sums["n"]
    mix, poe = np.asarray(sums["mix"]) / n, np.asarray(sums["poe"]) / n
    print(f"| {name} | {sums['model'] / n:.4f} | {sums['choice'] / n:.4f} | {mix.min():.4f} (a {ALPHAS[int(mix.argmin())]}) "
          f"| {sums['mix_tile'] / n:.4f} | {poe.min():.4f} (b {BETAS[int(poe.argmin())]}) | {sums['poe_tile'] / n:.4f} |")


if __name__ == "__main__":
    main()
