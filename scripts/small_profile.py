"""The staged cascade's small-image profile (format 19; codec/predictive.py: SMALL, SMALL_PROFILE, and its residual
tables codec/small_residuals.npy), chosen on Imagenette's training thumbnails, never on its validation images:

    python scripts/small_profile.py --tune [--from-staged] [--steps 0.1 0.05]   # search the profile's numbers
    python scripts/small_profile.py --tables [--check]                          # fit its tables for the numbers
    python scripts/small_profile.py --price imagenette32-val --limit 2000 --every 5     # format 16 against 19

`--tune` searches SMALL_PROFILE's numbers by coordinate descent (each in turn `step` up, else down, kept where the
set costs less; then the next step), starting from the shipped profile (or with `--from-staged` from the staged
cascade's numbers), SMALL's shipped tables standing meanwhile, and prints each step: every 23rd training thumbnail
(412), as one section of format 19 (its statistics from the initial ones, as an archive's sections start).
`--tables` fits SMALL's residual tables as scripts/fit_residual_tables.py --cascade fits the cascade's: what SMALL
codes of every third training thumbnail (3,157) as one section, each value's offset from its coded mean counted in
the table its row names, with the same smoothing and integers; `--check` compares with the shipped file instead of
writing it (and prints the sha256 that codec/predictive.py pins). `--price SET` codes a set's images (every K-th of
the first N) as one stream in sections as the encoder cuts them, by format 16's staged cascade and by format 19's
profile, and prints both (the bits the sections' words take); with `--each` each image as a file of its own
(`python scripts/small_profile.py --price kodak --every 3 --each`: what the profile would do to photographs).

How the shipped profile was made (2026-12-07): from the staged cascade's numbers, coordinate descent with steps of
30, 15 and 7 % with the channels in image order and the cascade's tables; tables fitted; steps of 20, 10 and 5 %;
the channels coded last first (blue, green, red: 0.17 % less on the training and the validation thumbnails alike),
tables fitted; steps of 10 and 5 %; the numbers rounded to three significant digits and the tables fitted for them
(`--tables`). Those searches priced each set as one chain of tiles from zeros (format 15's), not in a section.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fit_residual_tables  # noqa: E402
from adaptive_contexts import image_tiles  # noqa: E402
from cascade import descend  # noqa: E402

from codec import bitsback, predictive, tilekinds  # noqa: E402
from vaezip import data  # noqa: E402

TILE = 256  # vaezip/archive.py's FAST_TILE: a thumbnail is one tile
SMALL_KINDS = (bitsback.PREDICTIVE_SECTIONS, bitsback.PREDICTIVE_SMALL_SECTIONS)  # format 16's and format 19's
TUNE_EVERY = 23
TABLE_EVERY = 3


def stream_tiles(images) -> list:
    """Every image's tiles, one stream (an archive's)."""
    return [cut for image in images for cut in image_tiles(image, TILE)]


def priced_words(priced) -> int:
    """The words of a stream's sections as bitsback.price_sections coded them (each section's once: its tiles' prices
    share its coding)."""
    return sum({id(price.coded): len(price.coded.words) for price in priced}.values())


def section_bits(tiles, distribution: str) -> int:
    """The bits of one section of `tiles` coded by `distribution` (its words')."""
    return 32 * len(tilekinds.code_section(tilekinds.record_section(tiles, 0, distribution)).words)


def numbers(profile: predictive.Profile) -> dict[str, float]:
    """A profile's free numbers by name."""
    found = {}
    for name in ("adapt", "cascade", "far", "staged"):
        found.update({f"{name}{k}": float(value) for k, value in enumerate(getattr(profile, name))})
    for row in range(2):  # the first channel reads no earlier channel's residuals
        found.update({f"std{row}.{k}": float(value) for k, value in enumerate(profile.std_weights[row])
                      if row or k < 4})
    found["diagonal"], found["floor"] = profile.diagonal, profile.floor
    return found


def profile_of(chosen: dict[str, float], base: predictive.Profile) -> predictive.Profile:
    arrays = {name: np.array([chosen[f"{name}{k}"] for k in range(len(getattr(base, name)))])
              for name in ("adapt", "cascade", "far", "staged")}
    weights = np.array(base.std_weights)
    for row in range(2):
        for k in range(weights.shape[1]):
            weights[row, k] = chosen.get(f"std{row}.{k}", weights[row, k])
    return predictive.Profile(**arrays, std_weights=weights, diagonal=chosen["diagonal"], floor=chosen["floor"])


def tune(steps: list[float], from_staged: bool) -> None:
    tiles = stream_tiles(list(data.load("imagenette32-train").images)[::TUNE_EVERY])
    values = sum(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles)
    base = predictive.staged_profile() if from_staged else predictive.SMALL_PROFILE

    def cost(chosen: dict[str, float]) -> float:
        predictive.SMALL_PROFILE = profile_of(chosen, base)
        return section_bits(tiles, predictive.SMALL) / values

    best = numbers(base)
    lowest = cost(best)
    print(f"{len(tiles)} thumbnails, start: {lowest:.5f} bits per subpixel", flush=True)
    descend(best, lowest, cost, steps)


def count_offsets(tiles) -> np.ndarray:
    """(levels, bins, 511) float64 counts of the offsets value - coded mean of every value SMALL codes of `tiles`
    (one section), in the table its row names (the rows do not depend on the tables' contents: the cascade's tables
    stand in while recording)."""
    return fit_residual_tables.recorded_offsets(
        lambda: tilekinds.record_section(tiles, 0, predictive.SMALL), predictive.CASCADE)


def tables(check: bool) -> None:
    started = time.perf_counter()
    tiles = stream_tiles(list(data.load("imagenette32-train").images)[::TABLE_EVERY])
    counts = count_offsets(tiles)
    print(f"{len(tiles)} thumbnails, {counts.sum():.0f} values in {time.perf_counter() - started:.0f} s")
    fit_residual_tables.save_tables(counts, predictive.SMALL_TABLE_FILE, check)


def price(dataset: str, limit: int | None, every: int, each: bool) -> None:
    images = list(data.load(dataset, limit=limit).images)[::every]
    streams = [stream_tiles([image]) for image in images] if each else [stream_tiles(images)]
    values = sum(image.size for image in images)
    runs = [bitsback.section_runs(tiles) for tiles in streams]
    print(f"{dataset}: {len(images)} images, {values} values, {sum(map(len, runs))} sections as the encoder cuts "
          f"{'each image' if each else 'them as one archive'}")
    totals = {}
    for kind in SMALL_KINDS:
        started = time.perf_counter()
        totals[kind] = 0
        for tiles, cut in zip(streams, runs):
            priced = bitsback.price_sections(tiles, cut, kinds=[kind])
            totals[kind] += 32 * priced_words(priced)
        print(f"{kind}: {totals[kind] / values:.5f} bits per subpixel ({time.perf_counter() - started:.1f} s)",
              flush=True)
    first, second = (totals[kind] for kind in SMALL_KINDS)
    print(f"format 19's profile against format 16: {100 * (second / first - 1):+.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="search the profile's numbers")
    parser.add_argument("--from-staged", action="store_true", help="--tune from the staged cascade's numbers")
    parser.add_argument("--steps", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--tables", action="store_true", help="fit the profile's residual tables")
    parser.add_argument("--check", action="store_true", help="--tables: compare with the shipped file")
    parser.add_argument("--price", metavar="SET", help="format 16 against format 19 on a data set")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--each", action="store_true", help="--price: each image a file of its own, not one archive")
    args = parser.parse_args()
    if args.tune:
        tune(args.steps, args.from_staged)
    elif args.tables:
        tables(args.check)
    elif args.price:
        price(args.price, args.limit, args.every, args.each)
    else:
        parser.error("one of --tune, --tables or --price")


if __name__ == "__main__":
    main()
