"""The staged cascade's photograph profile (format 20; codec/predictive.py: PHOTO, PHOTO_PROFILE, and its residual
tables codec/photo_residuals.npy), chosen on photos_train's training photographs, never on a benchmark set:

    python scripts/photo_profile.py --tune [--from-staged] [--steps 0.3 0.1]   # search the profile's numbers
    python scripts/photo_profile.py --tables [--check]                         # fit its tables for the numbers
    python scripts/photo_profile.py --price kodak [--every 3] [--one-stream]   # format 16 against format 20
    python scripts/photo_profile.py --price kodak:4 imagenette32-val:1000 --one-stream   # a mixed archive

`--tune` searches PHOTO_PROFILE's numbers by coordinate descent (scripts/cascade.py: descend; each number in turn
`step` up, else down, kept where the set costs less; then the next step), starting from the shipped profile (or with
`--from-staged` from the staged cascade's numbers, format 16's), the tables standing meanwhile (the cascade's with
`--from-staged`, else PHOTO's), and prints each step: every 13th training photograph (23), each coded as one section
from the initial statistics, as format 16 and 20 code an image. `--tables` fits PHOTO's residual tables as
scripts/fit_residual_tables.py --cascade fits the cascade's: what PHOTO codes of every training photograph (297), each
as one section, each value's offset from its coded mean counted in the table its row names, with the same smoothing
and integers; `--check` compares with the shipped file instead of writing it (and prints the sha256 that
codec/predictive.py pins). `--price SET [SET...]` codes each of the sets' images (every K-th of the first N; SET:N
for a set's own N) as its own file's stream (with `--one-stream` all of them, set after set, as one archive's), in
sections as the encoder cuts them, by format 16's staged cascade, by format 20's profile, as format 19's encoder
chooses (format 16's or the small-image profile, its header bytes counted in its choice) and as format 20's does
(bitsback.sections_kinds; and by the stream's average image, as it did until the fortieth sitting), and prints each
(the bits the sections' words take, without the header's bytes) and the streams the profile codes for more than
format 16's.

How the shipped profile was made (2026-12-07): from the staged cascade's numbers with the cascade's tables standing
(`--tune --from-staged --steps 0.3 0.3 0.1`: 2.21020 -> 2.20148 bits per subpixel on the 23 photographs; the first
pass of 30 % was cut short after the std weights and the search started again from the numbers it had reached, so
that a run of this command may end a few steps apart); the numbers rounded to three significant digits; the tables
fitted for them (`--tables`). Against format 16's sections (`--price`): Kodak's 24 -0.50 %, every second Wikimedia
photograph -0.46 %, gray8bit's nine -0.54 %, none of those images larger.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fit_residual_tables  # noqa: E402
from cascade import descend  # noqa: E402
from small_profile import numbers, priced_words, profile_of, section_bits, stream_tiles  # noqa: E402

from codec import bitsback, predictive, tilekinds  # noqa: E402
from vaezip import data  # noqa: E402

TUNE_EVERY = 13
TRAINING = "photos-train"  # its training split only (../shared/data/photos_train's README: the fixed validation split)


def photograph_streams(dataset: str, limit: int | None, every: int) -> tuple[list, int]:
    """Each of a set's images (every `every`-th of the first `limit`) as its own stream's tiles, and their values."""
    images = list(data.load(dataset, limit=limit).images)[::every]
    return [stream_tiles([image]) for image in images], sum(image.size for image in images)


def tune(steps: list[float], from_staged: bool) -> None:
    streams, values = photograph_streams(TRAINING, None, TUNE_EVERY)
    base = predictive.staged_profile() if from_staged else predictive.PHOTO_PROFILE
    shipped_tables, shipped_profile = predictive._table_file, predictive.PHOTO_PROFILE
    if from_staged:  # the cascade's tables stand in for the profile's (which may not exist yet)
        predictive._table_file = lambda tables: shipped_tables(predictive.CASCADE if tables == predictive.PHOTO
                                                                else tables)
        predictive.clear_table_caches()
    pool = ThreadPoolExecutor(bitsback.section_workers())

    def cost(chosen: dict[str, float]) -> float:
        predictive.PHOTO_PROFILE = profile_of(chosen, base)
        return sum(pool.map(lambda tiles: section_bits(tiles, predictive.PHOTO), streams)) / values

    try:
        best = numbers(base)
        lowest = cost(best)
        print(f"{len(streams)} photographs, start: {lowest:.5f} bits per subpixel", flush=True)
        descend(best, lowest, cost, steps)
    finally:
        predictive._table_file, predictive.PHOTO_PROFILE = shipped_tables, shipped_profile
        predictive.clear_table_caches()


def tables(check: bool) -> None:
    started = time.perf_counter()
    streams, _ = photograph_streams(TRAINING, None, 1)
    counts = fit_residual_tables.recorded_offsets(
        lambda: (replay for tiles in streams for replay in tilekinds.record_section(tiles, 0, predictive.PHOTO)),
        predictive.CASCADE)
    print(f"{len(streams)} photographs, {counts.sum():.0f} values in {time.perf_counter() - started:.0f} s")
    fit_residual_tables.save_tables(counts, predictive.PHOTO_TABLE_FILE, check)


# What --price codes each stream with (bitsback.price_sections's options for its tiles): the kinds every section is
# priced in, or those the encoder prices each in (bitsback.sections_kinds) where the format allows them; the fewest
# words kept
PRICED = {
    "format 16's sections": lambda tiles: {"kinds": (bitsback.PREDICTIVE_SECTIONS,)},
    "the photograph profile's": lambda tiles: {"kinds": (bitsback.PREDICTIVE_PHOTO_SECTIONS,)},
    "format 19's choice": lambda tiles: {"allowed": bitsback.SECTION_KINDS[:2]},
    "format 20's choice by the stream's average image (until the fortieth sitting)":
        lambda tiles: {"kinds": bitsback.section_kinds(tiles)},
    "format 20's choice": lambda tiles: {},
}


def price(datasets: list[str], limit: int | None, every: int, one_stream: bool) -> None:
    """`datasets`: names, each with its own limit where it ends in :N (kodak:4), the images one after another."""
    images = []
    for dataset in datasets:
        name, _, own = dataset.partition(":")
        images += list(data.load(name, limit=int(own) if own else limit).images)[::every]
    streams = [stream_tiles(images)] if one_stream else [stream_tiles([image]) for image in images]
    values = sum(image.size for image in images)
    print(f"{' + '.join(datasets)}: {len(images)} images, {values} values, "
          f"{'one stream' if one_stream else 'each its own'}, in sections as the encoder cuts it")
    words: dict[str, list[int]] = {}
    for name, options in PRICED.items():
        started = time.perf_counter()
        words[name] = []
        for tiles in streams:
            priced = bitsback.price_sections(tiles, **options(tiles))
            if priced is None:
                sys.exit(f"an image holds more than {bitsback.SECTION_TILES} tiles in a section")
            words[name].append(priced_words(priced))
        change = 100 * (sum(words[name]) / sum(next(iter(words.values()))) - 1)
        print(f"{name}: {32 * sum(words[name]) / values:.5f} bits per subpixel ({change:+.3f} %; "
              f"{time.perf_counter() - started:.1f} s)", flush=True)
    before, after = words["format 16's sections"], words["the photograph profile's"]
    larger = [k for k, (old, new) in enumerate(zip(before, after)) if new > old]
    print(f"the photograph profile larger than format 16's sections on {len(larger)} of {len(streams)} streams"
          f"{': ' + ', '.join(map(str, larger)) if larger else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", action="store_true", help="search the profile's numbers")
    parser.add_argument("--from-staged", action="store_true", help="--tune from the staged cascade's numbers")
    parser.add_argument("--steps", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--tables", action="store_true", help="fit the profile's residual tables")
    parser.add_argument("--check", action="store_true", help="--tables: compare with the shipped file")
    parser.add_argument("--price", metavar="SET[:N]", nargs="+",
                        help="format 16 against format 20 on data sets' images (each of its first N where given)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--one-stream", action="store_true", help="--price: the images as one archive's stream")
    args = parser.parse_args()
    if args.tune:
        tune(args.steps, args.from_staged)
    elif args.tables:
        tables(args.check)
    elif args.price:
        price(args.price, args.limit, args.every, args.one_stream)
    else:
        parser.error("one of --tune, --tables or --price")


if __name__ == "__main__":
    main()
