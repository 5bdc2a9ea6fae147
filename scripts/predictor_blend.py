"""How format 6's blend predictor (codec/predictive.py: BLEND) was chosen: ideal bits per subpixel (the
Laplace's code lengths over 0..255, tails folded into the end bins) of variants of the predictor on 32x32 tiles
every 96 pixels without context, each with its Laplace scale fitted on photos_train's first 40 images as a
linear function of the activity and the residuals around (as the format's std is), priced on Kodak.

    python scripts/predictor_blend.py "med:1,1,0" "med+grad+wne+avg:1,1,0" "med+grad+wne+avg+ad+a+b:1,0.8,0.2"
    python scripts/predictor_blend.py --round "med+grad+wne+avg+ad+a+b:1,0.8,0.2"   # integer means, as coded
    python scripts/predictor_blend.py --round --half "med+grad+wne+avg+ad+a+b:1,0.8,0.2"   # a lead: halves
    python scripts/predictor_blend.py --round --tile-scale 7 "med+grad+wne+avg+ad+a+b:1,0.8,0.2"  # per-tile scale

A variant is PREDICTORS:GAINS. PREDICTORS joins sub-predictors of the left (a), above (b), above-left (c) and
above-right (d) neighbours with '+': med (the median edge of a, b, c), grad (a + b - c), wne (a + d - b), avg
((a + b) / 2), ad ((a + d) / 2), a, b; more than one are blended, each weighted by 1 / (its errors at the left
and above neighbours + half those at the diagonal ones + 1)**2 (--power 3 cubes instead). GAINS g1,g2,g3: the
second channel adds g1 x the first channel's spatial error, the third g2 x the second's + g3 x the first's.
"med:1,1,0" is format 5's mean. The fitted weights print as (per channel class, first then later channels):
1, activity, (left + above residual) / 2, (above-left + above-right residual) / 2, the channel before's
residual, the first channel's residual. Format 6's std weights are those of the `--round` example above times
sqrt(2) (a std, not a scale), the one slightly negative weight set to 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from predictor_rate import laplace_bits, tiles, value_bits  # noqa: E402  (this folder: scripts/)
from vaezip import data  # noqa: E402

MIN_SCALE = 0.05  # below format 6's smallest level, so that the fit may reach it


def shifted(values: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """values (C, H, W) read at (y + dy, x + dx), 0 outside."""
    out = np.zeros_like(values)
    height, width = values.shape[1:]
    y0, y1, x0, x1 = max(0, -dy), height - max(0, dy), max(0, -dx), width - max(0, dx)
    out[:, y0:y1, x0:x1] = values[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
    return out


def neighbours(values: np.ndarray):
    """a, b, c, d (C, H, W) with codec/predictive.py's rules for missing ones, and the masks (H, W)."""
    height, width = values.shape[1:]
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    has_up, has_left, has_right = ys > 0, xs > 0, xs < width - 1
    up = shifted(values, -1, 0)
    a = np.where(has_left, shifted(values, 0, -1), np.where(has_up, up, predictive.NEUTRAL))
    b = np.where(has_up, up, a)
    c = np.where(has_up & has_left, shifted(values, -1, -1), b)
    d = np.where(has_up & has_right, shifted(values, -1, 1), b)
    return (a, b, c, d), (has_up, has_left, has_right)


def around(array: np.ndarray, masks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    has_up, has_left, has_right = masks
    return (np.where(has_left, shifted(array, 0, -1), 0.0), np.where(has_up, shifted(array, -1, 0), 0.0),
            np.where(has_up & has_left, shifted(array, -1, -1), 0.0),
            np.where(has_up & has_right, shifted(array, -1, 1), 0.0))


def spatial_prediction(values: np.ndarray, names: list[str], power: int) -> np.ndarray:
    (a, b, c, d), masks = neighbours(values)
    subs = {"med": predictive._median_edge(a, b, c), "grad": a + b - c, "wne": a + d - b, "avg": (a + b) / 2.0,
            "ad": (a + d) / 2.0, "a": a, "b": b}
    predictions = [subs[name] for name in names]
    if len(predictions) == 1:
        return predictions[0]
    total = weighted = 0.0
    for prediction in predictions:
        left, up, up_left, up_right = around(np.abs(values - prediction), masks)
        spread = left + up + 0.5 * (up_left + up_right) + 1.0
        weight = 1.0 / spread**power
        total, weighted = total + weight, weighted + weight * prediction
    return weighted / total


def collect(images, names: list[str], gains: list[float], power: int, rounded: bool, step: float = 1.0):
    """Every value (N,), its mean (N,), its scale's design rows (N, 12) and its tile's number (N,)."""
    import torch

    parts = []
    for number, tile in enumerate(tiles(images)):
        spatial = spatial_prediction(tile, names, power)
        errors = tile - spatial
        means = spatial.copy()
        if tile.shape[0] > 1:
            means[1] += gains[0] * errors[0]
        if tile.shape[0] > 2:
            means[2] += gains[1] * errors[1] + gains[2] * errors[0]
        means = np.clip(means, 0, 255)
        if rounded:
            means = np.floor(means / step + 0.5) * step
        residuals = np.abs(tile - means)
        (a, b, c, d), masks = neighbours(tile)
        activity = (np.abs(a - c) + np.abs(b - c) + np.abs(b - d)) / 3.0
        left, up, up_left, up_right = around(residuals, masks)
        zero = np.zeros(tile.shape[1:])
        for channel in range(tile.shape[0]):
            later = float(channel > 0)
            columns = [np.ones(tile.shape[1:]), activity[channel], (left[channel] + up[channel]) / 2,
                       (up_left[channel] + up_right[channel]) / 2,
                       residuals[channel - 1] if channel else zero, residuals[0] if channel == 2 else zero]
            design = np.stack([column.reshape(-1) for column in columns], axis=1)
            design = np.concatenate([design * (1 - later), design * later], axis=1)
            parts.append((tile[channel].reshape(-1), means[channel].reshape(-1), design,
                          np.full(tile[channel].size, number)))
    values, means, designs, numbers = zip(*parts)
    return [torch.from_numpy(np.concatenate(x)) for x in (values, means, designs, numbers)]


def fit(fit_set, steps: int = 300):
    import torch

    weights = torch.zeros(fit_set[2].shape[1], dtype=torch.float64)
    # format 5's scale, (0.6 + 0.4 (activity + near)) / sqrt(2), as the starting point
    weights[[0, 1, 2, 6, 7, 8, 10]] = torch.tensor([0.6, 0.4, 0.4, 0.6, 0.2, 0.4, 0.2], dtype=torch.float64) / 2**0.5
    weights.requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = laplace_bits(weights, *fit_set[:3], min_scale=MIN_SCALE)
        loss.backward()
        optimizer.step()
    return weights.detach()


def tile_scaled(weights, values_means_designs_tiles, count: int) -> float:
    """Ideal bits per value where each tile scales its whole scale by the best of `count` factors 2**(k / 4),
    k centred on 0, its choice costing log2(count) bits a tile (what a per-tile scale in the file would buy)."""
    import torch

    values, means, designs, numbers = values_means_designs_tiles
    factors = [2.0 ** ((k - (count - 1) / 2) / 4) for k in range(count)]
    with torch.no_grad():
        per_tile = torch.stack([torch.zeros(int(numbers.max()) + 1, dtype=torch.float64).index_add_(
            0, numbers, value_bits(weights, values, means, designs, MIN_SCALE, factor)) for factor in factors])
    return float((per_tile.min(dim=0).values.sum() + per_tile.shape[1] * np.log2(count)) / len(values))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", metavar="PREDICTORS:GAINS")
    parser.add_argument("--round", action="store_true", help="integer means (as format 6 codes them)")
    parser.add_argument("--half", action="store_true", help="with --round: means rounded to halves (no format "
                        "codes them: what tables for half-integer means would buy)")
    parser.add_argument("--power", type=int, default=2, choices=(2, 3))
    parser.add_argument("--tile-scale", type=int, default=0, metavar="N",
                        help="also price a per-tile scale factor chosen from N (a lead: no format codes it)")
    parser.add_argument("--fit-set", default="photos-train")
    parser.add_argument("--dataset", default="kodak")
    args = parser.parse_args()
    fit_images = data.load(args.fit_set, limit=40).images
    images = data.load(args.dataset).images
    for variant in args.variants:
        names, gains = variant.split(":")
        started = time.perf_counter()
        gain_values = [float(g) for g in gains.split(",")]
        step = 0.5 if args.half else 1.0
        sets = [collect(x, names.split("+"), gain_values, args.power, args.round, step) for x in (fit_images, images)]
        weights = fit(sets[0])
        with torch.no_grad():
            fitted, priced = (float(laplace_bits(weights, *s[:3], min_scale=MIN_SCALE)) for s in sets)
        print(f"{variant}: {args.fit_set} (fit) {fitted:.4f}, {args.dataset} {priced:.4f} bits per subpixel (ideal; "
              f"{time.perf_counter() - started:.0f} s); scale weights {np.round(weights.numpy(), 3).tolist()}",
              flush=True)
        if args.tile_scale:
            print(f"  each tile's scale times the best of {args.tile_scale} factors 2**(k / 4) around 1, its choice "
                  f"coded in log2({args.tile_scale}) bits: {args.dataset} {tile_scaled(weights, sets[1], args.tile_scale):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
