"""Bits per subpixel of codec/predictive.py (the model-free coder of a stream's first tiles) on 32x32 tiles
taken every 96 pixels from a data set, by real coding, with each residual model the format knows
(Gaussian: formats 1 to 4; Laplace: format 5; blend: formats 6 and 7, scripts/predictor_blend.py; blend-fitted:
format 8, scripts/fit_residual_tables.py); `--grid` also
tries other scale constants (Gaussian);
`--shapes` prices the same means and stds under other residual distributions (ideal code lengths, bins over
0..255 with the tails folded into the end bins, as the coder's quantized Gaussian does): how format 5's
Laplace was chosen, and what another distribution would save (a format change: the decoder must know it).

    python scripts/predictor_rate.py skimage-rgb --grid     # how STD_FLOOR / STD_GAIN were chosen
    python scripts/predictor_rate.py kodak [--shapes]
    python scripts/predictor_rate.py kodak --fit-scale photos-train   # a lead for a later format

`--fit-scale FIT_SET` fits the Laplace's scale as a linear function of the predictor's features (activity,
neighbour residuals, the previous channel's residual, per channel class) to the Laplace's likelihood on the
first 60 images of FIT_SET, and prices DATASET with it (ideal code lengths): what a fitted scale would buy
over format 5's std / sqrt(2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from codec.ans import Stack  # noqa: E402
from vaezip import data  # noqa: E402

TILE, STEP = 32, 96


def tiles(images):
    """Each image's (H, W, C) uint8 TILE x TILE tiles every STEP pixels, (C, TILE, TILE) float64."""
    for image in images:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float64)
        for top in range(0, chw.shape[1] - TILE + 1, STEP):
            for left in range(0, chw.shape[2] - TILE + 1, STEP):
                yield chw[:, top : top + TILE, left : left + TILE]


def rate(images, distribution: str = predictive.GAUSSIAN) -> float:
    bits = values = 0
    for tile in tiles(images):
        stack = Stack()
        predictive.encode(stack, tile.astype(np.uint8), distribution=distribution)
        bits += stack.num_valid_bits()
        values += tile.size
    return bits / values


def _bin_bits(cdf, values: np.ndarray, means: np.ndarray, scales: np.ndarray) -> float:
    """Sum of -log2 P(value), P the mass of [v - 1/2, v + 1/2] under cdf((x - mean) / scale), the end bins
    taking the tails."""
    upper = np.where(values >= 255, 1.0, cdf((values + 0.5 - means) / scales))
    lower = np.where(values <= 0, 0.0, cdf((values - 0.5 - means) / scales))
    return float(-np.log2(np.maximum(upper - lower, 2.0**-24)).sum())


def shapes(images) -> dict[str, float]:
    """Bits per subpixel of the predictor's means and stds under a Gaussian (its own distribution, ideal), a
    logistic and a Laplace of the same variance, and the Gaussian with the std scaled."""
    import torch

    ndtr = lambda z: torch.special.ndtr(torch.from_numpy(z)).numpy()  # noqa: E731
    expit = lambda z: torch.sigmoid(torch.from_numpy(z)).numpy()  # noqa: E731
    laplace = lambda z: np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))  # noqa: E731
    forms = {"gaussian": (ndtr, 1.0), "gaussian, std x 1.15": (ndtr, 1.15), "gaussian, std x 0.85": (ndtr, 0.85),
             "logistic (same variance)": (expit, np.sqrt(3) / np.pi),
             "logistic, scale x 0.8": (expit, 0.8 * np.sqrt(3) / np.pi),
             "laplace (same variance)": (laplace, 1 / np.sqrt(2)),
             "laplace, scale x 0.8": (laplace, 0.8 / np.sqrt(2)), "laplace, scale x 1.25": (laplace, 1.25 / np.sqrt(2))}
    bits = dict.fromkeys(forms, 0.0)
    values_count = 0
    for tile in tiles(images):
        means, stds = predictive._parameters(tile, *predictive._all_positions(TILE, TILE))
        values = tile.reshape(tile.shape[0], -1)
        for name, (cdf, factor) in forms.items():
            bits[name] += _bin_bits(cdf, values, means, stds * factor)
        values_count += values.size
    return {name: total / values_count for name, total in bits.items()}


def _features(images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every value (N,), its predicted mean (N,) and the scale's design rows (N, 7): 1, activity, neighbour
    residuals, and for channels after the first: the previous channel's residual, 1, activity, neighbour
    residuals (the predictor's own numbers, from predictive._parameters and _neighbours)."""
    parts = []
    for tile in tiles(images):
        ys, xs = predictive._all_positions(TILE, TILE)
        means, _ = predictive._parameters(tile, ys, xs)  # (C, N)
        residuals = np.zeros_like(tile)
        residuals[:, ys, xs] = np.abs(tile[:, ys, xs] - means)
        _, activity, near = predictive._neighbours(tile, residuals, ys, xs)
        for c in range(tile.shape[0]):
            later = float(c > 0)
            previous = residuals[c - 1, ys, xs] if c else np.zeros(len(ys))
            design = np.stack([np.ones(len(ys)), activity[c], near[c], previous * later,
                               np.full(len(ys), later), activity[c] * later, near[c] * later], axis=1)
            parts.append((tile[c, ys, xs], means[c], design))
    values, means, designs = zip(*parts)
    return np.concatenate(values), np.concatenate(means), np.concatenate(designs)


def laplace_bits(weights, values, means, designs, min_scale: float):
    """Mean ideal bits (torch scalar, differentiable in `weights`) of `values` (N,) under discretized Laplaces
    around `means` (N,) of scale designs (N, F) @ weights (F,), at least `min_scale`, over 0..255 with the tails
    in the end bins."""
    return value_bits(weights, values, means, designs, min_scale).mean()


def value_bits(weights, values, means, designs, min_scale: float, factor=1.0):
    """laplace_bits per value (N,), each scale times `factor` before the floor."""
    import torch

    scale = torch.clamp(factor * (designs @ weights), min=min_scale)
    cdf = lambda z: torch.where(z < 0, 0.5 * torch.exp(torch.clamp(z, max=0)),  # noqa: E731
                                1 - 0.5 * torch.exp(-torch.clamp(z, min=0)))
    upper = torch.where(values >= 255, torch.ones_like(values), cdf((values + 0.5 - means) / scale))
    lower = torch.where(values <= 0, torch.zeros_like(values), cdf((values - 0.5 - means) / scale))
    return -torch.log2(torch.clamp(upper - lower, min=2.0**-24))


def fitted_scale(dataset_images, fit_images, steps: int = 400) -> dict[str, float]:
    """Ideal bits per subpixel of the Laplace with format 5's scale (std / sqrt(2), levels not rounded) and
    with a scale fitted on `fit_images`, on both sets."""
    import torch

    def bits(weights, values, means, designs) -> torch.Tensor:
        return laplace_bits(weights, values, means, designs, min_scale=0.2)

    sets = {name: tuple(torch.from_numpy(a) for a in _features(images))
            for name, images in (("fit", fit_images), ("dataset", dataset_images))}
    # format 5's scale as design weights: (0.6 + 0.4 (activity + near)) / sqrt(2), the activity of later
    # channels averaged with the previous channel's residual
    root = np.sqrt(2)
    current = torch.tensor([0.6, 0.4, 0.4, 0.2, 0.0, -0.2, 0.0], dtype=torch.float64) / root
    weights = current.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = bits(weights, *sets["fit"])
        loss.backward()
        optimizer.step()
    print("fitted design weights:", np.round(weights.detach().numpy(), 3).tolist(), flush=True)
    with torch.no_grad():
        return {f"{name}, {which}": float(bits(w, *sets[name])) for name in sets
                for which, w in (("format 5's scale", current), ("fitted scale", weights))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--shapes", action="store_true")
    parser.add_argument("--fit-scale", metavar="FIT_SET")
    args = parser.parse_args()
    images = data.load(args.dataset).images
    if args.fit_scale:
        for name, value in fitted_scale(images, data.load(args.fit_scale, limit=60).images).items():
            print(f"{name}: {value:.4f} bits per subpixel (ideal)", flush=True)
        return
    if args.shapes:
        for name, value in shapes(images).items():
            print(f"{args.dataset}: {name}: {value:.4f} bits per subpixel (ideal)", flush=True)
        return
    if not args.grid:
        for distribution in predictive.DISTRIBUTIONS:
            print(f"{args.dataset}: {distribution} residuals: {rate(images, distribution):.4f} bits per subpixel "
                  "(real coding)", flush=True)
        return
    for floor, gain in [(floor, gain) for floor in (0.3, 0.45, 0.6) for gain in (0.3, 0.4, 0.5)]:
        predictive.STD_FLOOR, predictive.STD_GAIN = floor, gain
        print(f"{args.dataset}: STD_FLOOR {floor}, STD_GAIN {gain}: {rate(images):.4f} bits per subpixel", flush=True)


if __name__ == "__main__":
    main()
