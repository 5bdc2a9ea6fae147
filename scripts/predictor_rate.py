"""Bits per subpixel of codec/predictive.py (the model-free coder of a stream's first tiles) on 32x32 tiles
taken every 96 pixels from a data set, by real coding, with each residual distribution the format knows
(Gaussian: formats 1 to 4; Laplace: format 5); `--grid` also tries other scale constants (Gaussian);
`--shapes` prices the same means and stds under other residual distributions (ideal code lengths, bins over
0..255 with the tails folded into the end bins, as the coder's quantized Gaussian does): what a predictor tile
kind with another distribution would save (a format change: the decoder must know it).

    python scripts/predictor_rate.py skimage-rgb --grid     # how STD_FLOOR / STD_GAIN were chosen
    python scripts/predictor_rate.py kodak [--shapes]
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


def rate(images, distribution: str = predictive.GAUSSIAN) -> float:
    bits = values = 0
    for image in images:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        for top in range(0, chw.shape[1] - TILE + 1, STEP):
            for left in range(0, chw.shape[2] - TILE + 1, STEP):
                stack = Stack()
                tile = np.ascontiguousarray(chw[:, top : top + TILE, left : left + TILE])
                predictive.encode(stack, tile, distribution=distribution)
                bits += stack.num_valid_bits()
                values += chw.shape[0] * TILE * TILE
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
    for image in images:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float64)
        for top in range(0, chw.shape[1] - TILE + 1, STEP):
            for left in range(0, chw.shape[2] - TILE + 1, STEP):
                tile = chw[:, top : top + TILE, left : left + TILE]
                means, stds = predictive._parameters(tile, *predictive._all_positions(TILE, TILE))
                values = tile.reshape(tile.shape[0], -1)
                for name, (cdf, factor) in forms.items():
                    bits[name] += _bin_bits(cdf, values, means, stds * factor)
                values_count += values.size
    return {name: total / values_count for name, total in bits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--shapes", action="store_true")
    args = parser.parse_args()
    images = data.load(args.dataset).images
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
