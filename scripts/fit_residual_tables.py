"""Fit format 8's residual tables (codec/fitted_residuals.npy, codec/predictive.py: FITTED) on photos_train's
training photographs, never on a benchmark set:

    python scripts/fit_residual_tables.py [--out codec/fitted_residuals.npy] [--limit N] [--check]
    python scripts/fit_residual_tables.py --variants kodak     # how the tables' shape was chosen
    python scripts/fit_residual_tables.py --cascade [--check]  # format 12's (codec/cascade_residuals.npy)

Every 32x32 tile of each photograph is run through the blend predictor without context (its unrounded means and
stds: predictive._blend_encoder), and the offsets of its values from the rounded means are counted per std level
and quarter of the mean (FITTED's levels and bins). Each table is the counts plus SMOOTHING counts spread as a
Laplace of the level's middle std (so that offsets and levels the photographs rarely reach keep the Laplace's
shape), as integers: floor(p * (2**24 - 16 * 511)) + 16 each, the largest entry taking what makes the table sum
to 2**24. --check compares the fit with the shipped file instead of writing it (and prints its sha256).

--cascade fits format 12's tables (predictive.CASCADE) instead: what the cascade codes of each photograph, as
compress --fast codes it (tiles of 128, each photograph a stream of its own), each value's offset from its coded
mean counted in the table its row names (the rows do not depend on the tables' contents; the shipped FITTED tables
stand in while recording), with the same smoothing and integers.

--variants DATASET prices DATASET's 32x32 tiles every 96 pixels without context (ideal code lengths, the tails
folded into the end bins as the coder does) under format 7's Laplaces and under tables fitted the same way
with other choices of levels and quarters (fitted on photos_train's first 40 photographs, for speed): what each
choice buys.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive  # noqa: E402
from vaezip import data  # noqa: E402

TILE = 32
SMOOTHING = 1000.0  # prior counts per table, as a Laplace of the level's std


def tile_values(images, step: int):
    """For each 32x32 tile every `step` pixels of each image, without context: its values, the blend's
    unrounded means and its stds, (C * TILE * TILE,) float64 each."""
    for image in images:
        chw = np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1)).astype(np.float64)
        for top in range(0, chw.shape[1] - TILE + 1, step):
            for left in range(0, chw.shape[2] - TILE + 1, step):
                tile = chw[:, top : top + TILE, left : left + TILE]
                means, stds = predictive._blend_encoder(tile, 0, 0)  # (C, TILE * TILE) each
                yield tile.reshape(-1), means.reshape(-1), stds.reshape(-1)


def count_offsets(images) -> np.ndarray:
    """(levels, bins, 511) float64 counts of the offsets value - rounded mean of every value of every tile."""
    levels, edges = predictive.fitted_levels()
    counts = np.zeros((levels, predictive.FITTED_BINS, 2 * 255 + 1))
    for values, means, stds in tile_values(images, TILE):
        rounded = predictive._rounded(means)
        quarter = predictive.fitted_bins(means, rounded).astype(np.int64)
        np.add.at(counts, (np.searchsorted(edges, stds), quarter, (values - rounded).astype(np.int64) + 255), 1.0)
    return counts


def count_cascade_offsets(images) -> np.ndarray:
    """(levels, bins, 511) float64 counts of the offsets value - coded mean of every value the cascade codes of
    `images` (tiles of 128, each image a stream), in the table its row names."""
    from adaptive_contexts import image_tiles

    from codec import bitsback

    def recordings():
        for image in images:
            tiles = image_tiles(image, 128)
            for price in bitsback.price_without_model(tiles, bitsback.PREDICTIVE_CASCADE,
                                                      record_below=[float("inf")] * len(tiles), record_bytes=2**62):
                if price.recorded is not None:
                    yield price.recorded

    return recorded_offsets(recordings, predictive.FITTED)  # any valid tables: the rows are the same


def recorded_offsets(recordings, stand_in: str) -> np.ndarray:
    """(levels, bins, 511) float64 counts of the offsets value - coded mean of every value of the recorded tiles
    (predictive.Recorded) that `recordings()` yields, in the table its row names, recorded while the table set
    `stand_in` stands in for every other (the rows do not depend on the tables' contents; a set being fitted may not
    exist yet). The tables' caches are cleared after."""
    levels, _ = predictive.fitted_levels()
    counts = np.zeros((levels * predictive.FITTED_BINS, 2 * 255 + 1))
    shipped = predictive._table_file
    predictive._table_file = lambda tables: shipped(stand_in)
    try:
        for recorded in recordings():
            table, mean = np.divmod(recorded.rows.astype(np.int64), 256)
            np.add.at(counts, (table, recorded.values.astype(np.int64) - mean + 255), 1.0)
    finally:
        predictive._table_file = shipped
        predictive.clear_table_caches()
    return counts.reshape(levels, predictive.FITTED_BINS, -1)


def laplace_prior(levels: int) -> np.ndarray:
    """(levels, 511): a discretised Laplace of each FITTED level's middle std (BLEND's two levels' geometric
    middle), over the offsets -255..255, summing to 1."""
    first, _ = predictive.TABLE_LEVELS[predictive.BLEND]
    steps = (first + predictive.FITTED_LEVEL_STEP * np.arange(levels) + (predictive.FITTED_LEVEL_STEP - 1) / 2)
    stds = predictive.STD_FLOOR * 2.0 ** (steps / predictive.SCALE_STEPS_PER_OCTAVE)
    scale = stds / np.sqrt(2.0)
    offsets = np.arange(-255, 256)

    def cdf(x):
        tail = 0.5 * np.exp(-np.abs(x) / scale[:, None])
        return np.where(x < 0, tail, 1.0 - tail)

    mass = cdf(offsets + 0.5) - cdf(offsets - 0.5)
    return mass / mass.sum(axis=1, keepdims=True)


def integer_tables(counts: np.ndarray) -> np.ndarray:
    levels, bins, width = counts.shape
    prior = np.repeat(laplace_prior(levels)[:, None, :], bins, axis=1)
    p = (counts + SMOOTHING * prior) / (counts.sum(axis=2, keepdims=True) + SMOOTHING)
    spread = float(predictive.LAPLACE_TOTAL - predictive.LAPLACE_MIN_FREQUENCY * width)
    tables = np.floor(p * spread).astype(np.int64) + predictive.LAPLACE_MIN_FREQUENCY
    largest = tables.argmax(axis=2)
    np.put_along_axis(tables, largest[..., None], np.take_along_axis(tables, largest[..., None], axis=2)
                      + predictive.LAPLACE_TOTAL - tables.sum(axis=2, keepdims=True), axis=2)
    assert np.all(tables.sum(axis=2) == predictive.LAPLACE_TOTAL) and tables.min() >= predictive.LAPLACE_MIN_FREQUENCY
    return tables.astype(np.uint32)


def save_tables(counts: np.ndarray, shipped: Path, check: bool, out: Path | None = None) -> None:
    """integer_tables of `counts` as the .npy bytes a table set's file holds, their sha256 printed (what
    codec/predictive.py pins); with `check` compared with the shipped file (exit status 0 where they are the same,
    1 where not), else written to `out` (the shipped file's path by default)."""
    buffer = io.BytesIO()
    np.save(buffer, integer_tables(counts), allow_pickle=False)
    raw = buffer.getvalue()
    print(f"sha256 {hashlib.sha256(raw).hexdigest()}")
    if check:
        same = shipped.read_bytes() == raw
        print("the same as the shipped file" if same else "DIFFERENT from the shipped file")
        sys.exit(0 if same else 1)
    out = out or shipped
    out.write_bytes(raw)
    print(f"wrote {out}")


def _values(images, step: int):
    """tile_values's arrays of every tile, concatenated: (values, unrounded means, stds)."""
    return tuple(np.concatenate(part) for part in zip(*tile_values(images, step)))


def _folded_bits(p: np.ndarray, table: np.ndarray, values: np.ndarray, rounded: np.ndarray) -> float:
    """Mean -log2 of each value under its table's offsets p[table] (T, 511), the tails folded into 0 and 255."""
    before = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)  # mass of offsets below index
    index = (values - rounded).astype(np.int64) + 255
    mass = p[table, index]
    low, high = values == 0, values == 255
    mass[low] = before[table[low], index[low] + 1]
    mass[high] = before[table[high], -1] - before[table[high], index[high]]
    return float(-np.log2(np.maximum(mass, 2.0**-24)).mean())


def variants(dataset: str) -> None:
    fit_values, fit_means, fit_stds = _values(data.load("photos-train", limit=40).images, TILE)
    values, means, stds = _values(data.load(dataset).images, 96)
    blend_edges = predictive._every_table(*predictive.TABLE_LEVELS[predictive.BLEND])[1]
    blend_inner = predictive._level_tables(*predictive.TABLE_LEVELS[predictive.BLEND])[0]  # (82, 511)
    rounded, fit_rounded = predictive._rounded(means), predictive._rounded(fit_means)
    laplace = _folded_bits(blend_inner, np.searchsorted(blend_edges, stds), values, rounded)
    print(f"{dataset}: format 7's Laplaces (8 levels to the octave): {laplace:.4f} bits per subpixel (ideal)")
    for step, bins in ((1, 1), (2, 1), (1, 2), (2, 2), (1, 4), (2, 4), (2, 8)):
        edges = blend_edges[step - 1 :: step]
        levels = len(edges) + 1

        def tables(m, r, s):
            return np.searchsorted(edges, s) * bins + predictive.fitted_bins(m, r, bins).astype(np.int64)

        counts = np.zeros((levels * bins, 511))
        np.add.at(counts, (tables(fit_means, fit_rounded, fit_stds), (fit_values - fit_rounded).astype(np.int64) + 255), 1)
        prior = np.repeat(blend_inner[::step][:levels], bins, axis=0)
        p = (counts + SMOOTHING * prior) / (counts.sum(axis=1, keepdims=True) + SMOOTHING)
        bits = _folded_bits(p, tables(means, rounded, stds), values, rounded)
        print(f"{dataset}: fitted, {8 // step} levels to the octave, {bins} part(s) of the mean: {bits:.4f} bits per "
              f"subpixel (ideal; {bits / laplace - 1:+.1%}; {levels * bins * 256 * 256 * 4 / 2**20:.0f} MiB of rows)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to write the tables (default: the shipped file's path)")
    parser.add_argument("--cascade", action="store_true", help="format 12's tables (predictive.CASCADE)")
    parser.add_argument("--limit", type=int, default=None, help="the first N training photographs only")
    parser.add_argument("--check", action="store_true", help="compare with the shipped file, write nothing")
    parser.add_argument("--variants", metavar="DATASET", help="price other choices of tables on DATASET")
    args = parser.parse_args()
    if args.variants:
        variants(args.variants)
        return
    started = time.perf_counter()
    images = data.load("photos-train", limit=args.limit)
    counts = (count_cascade_offsets if args.cascade else count_offsets)(images.images)
    print(f"{len(images)} photographs, {int(counts.sum())} values in {time.perf_counter() - started:.0f} s")
    save_tables(counts, predictive.CASCADE_TABLE_FILE if args.cascade else predictive.FITTED_TABLE_FILE, args.check,
                args.out)


if __name__ == "__main__":
    main()
