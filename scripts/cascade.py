"""What format 12's cascade predictor tiles (codec/predictive.py: CASCADE) save against format 10's least-squares ones,
format 13's cascade with parity (PARITY), format 14's wide cascade (WIDE) and format 15's staged cascade (STAGED)
against those, by real coding: each image cut into tiles as compress cuts them, every tile priced as the encoder
prices a stream whose tiles all go to the predictor (bitsback.price_without_model), the exact bits each tile pushes,
so a `--fast` file's payload without the classical alternatives; and the seconds each took.

    python scripts/cascade.py kodak                                   # --fast's former tiles of 128
    python scripts/cascade.py kodak --every 3 --tile 256              # how format 14's WIDE_FAR was judged
    python scripts/cascade.py photos-train --every 13 --tune          # how the cascade's numbers were chosen
    python scripts/cascade.py kodak --sizes 128 256                   # format 15 in tiles of each size
    python scripts/cascade.py photos-train --every 13 --tile 256 --stages   # how format 15's numbers were chosen

`--tune` searches the cascade's numbers by coordinate descent (each in turn 20 % up, else down, kept where the set
costs less; then 10 %): codec/kernels.py's CASCADE_TUNING, predictive.CASCADE_STD_WEIGHTS (but the two the first
channel never reads) and the blend's CASCADE_ERROR_DIAGONAL and _FLOOR, starting from the shipped ones, and prints
each step. Its residual tables stay the shipped ones meanwhile (scripts/fit_residual_tables.py --cascade fits them
again for the numbers chosen). `--stages` prices format 15 with other values of each of codec/kernels.py's
STAGED_TUNING in turn (the std's share of the residuals two away, the third stage's share of its mean residual, and
its classes' edges), the others as shipped. `--every K` takes every K-th image of the set (after `--limit`);
`--one-stream` prices all the images' tiles as one stream, as an archive codes them (how Imagenette's 32x32 images
were measured: `python scripts/cascade.py imagenette32-val --limit 2000 --every 5 --tile 256 --one-stream`).
`--warm N` prices each image with its statistics as they start and as they would after N training photographs
(`python scripts/cascade.py kodak --every 3 --tile 256 --warm 8`: what a shipped initial state could save).
`--sections` prices format 16 against format 15: each image (or with --one-stream the whole set) as one chain of the
staged cascade from zeros (format 15), in sections as the encoder cuts them (bitsback.price_sections: format 16) and
in one section (`python scripts/cascade.py kodak --every 3 --tile 256 --sections`). `--counts N ...` prices each
image in N sections for each N, cut as the encoder cuts them (bitsback.cut_sections): what one more section costs
(`python scripts/cascade.py gray8bit --tile 256 --counts 2 3 4 8`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import adaptive_contexts  # noqa: E402
from adaptive_contexts import image_tiles, set_images, set_parser  # noqa: E402

from codec import bitsback, kernels, predictive  # noqa: E402


FORMAT16 = [bitsback.PREDICTIVE_SECTIONS]  # format 16's sections only (not format 19's small-image profile)
ONE_STREAM = False  # --one-stream: every image's tiles in one stream, as an archive codes them


def image_streams(images, tile: int) -> list[list]:
    """Each image's tiles as a stream of its own, or with ONE_STREAM all of them in one (an archive's)."""
    if ONE_STREAM:
        return [[cut for image in images for cut in image_tiles(image, tile)]]
    return [image_tiles(image, tile) for image in images]


def bits(images, tile: int, predictor: str) -> float:
    """Total bits of every image's tiles (image_streams): each image a stream of its own, or with
    ONE_STREAM all of them in one, the statistics running on from image to image as in an archive."""
    return float(sum(price[1] for tiles in image_streams(images, tile)
                     for price in bitsback.price_without_model(tiles, predictor)))


def numbers() -> dict[str, float]:
    """The cascade's free numbers by name, as shipped."""
    found = {f"tuning{k}": float(value) for k, value in enumerate(kernels.CASCADE_TUNING)}
    for row, weights in enumerate(predictive.CASCADE_STD_WEIGHTS):
        found.update({f"std{row}.{k}": float(value) for k, value in enumerate(weights) if row or k < 4})
    found["diagonal"], found["floor"] = predictive.CASCADE_ERROR_DIAGONAL, predictive.CASCADE_ERROR_FLOOR
    return found


def use(chosen: dict[str, float]) -> None:
    """Code with these numbers from now on (the kernels read them as arguments: nothing is compiled again)."""
    kernels.CASCADE_TUNING = np.array([chosen[f"tuning{k}"] for k in range(len(kernels.CASCADE_TUNING))])
    weights = np.array(predictive.CASCADE_STD_WEIGHTS)
    for row in range(2):
        for k in range(weights.shape[1]):
            weights[row, k] = chosen.get(f"std{row}.{k}", weights[row, k])
    predictive._CASCADE_STD_WEIGHTS = weights
    predictive.CASCADE_ERROR_DIAGONAL, predictive.CASCADE_ERROR_FLOOR = chosen["diagonal"], chosen["floor"]


def tune(images, values: int, tile: int) -> None:
    def cost(chosen: dict[str, float]) -> float:
        use(chosen)
        return bits(images, tile, bitsback.PREDICTIVE_CASCADE) / values

    best = numbers()
    lowest = cost(best)
    print(f"shipped: {lowest:.5f} bits per subpixel", flush=True)
    descend(best, lowest, cost, (0.2, 0.1))


def descend(best: dict[str, float], lowest: float, cost, steps) -> dict[str, float]:
    """Coordinate descent from the numbers `best` (costing `lowest`): for each step, each number in turn `step` up,
    else down (a zero to +-step / 2), kept where `cost` falls; prints each change and each step's result. The
    numbers found."""
    for step in steps:
        for name in list(best):
            for direction in (1, -1):
                trial = dict(best)
                trial[name] = best[name] * (1 + direction * step) if best[name] else direction * step / 2
                trial_cost = cost(trial)
                if trial_cost < lowest - 1e-5:
                    best, lowest = trial, trial_cost
                    print(f"{name} -> {best[name]:.4f}: {lowest:.5f}", flush=True)
                    break
        print(f"after steps of {step:.0%}: {lowest:.5f} with {best}", flush=True)
    return best


# What --stages tries: for each of STAGED_TUNING's numbers, the values beside the shipped one (edges as pairs).
STAGE_TRIALS = {"residuals two away": [(share, None, None, None) for share in (0.0, 0.05, 0.15, 0.2, 0.3)],
                "third stage's share": [(None, share, None, None) for share in (0.0, 0.25, 0.8)],
                "third stage's edges": [(None, None, outer, inner) for outer, inner in ((0.7, 0.15), (1.0, 0.25),
                                                                                        (2.0, 0.5))]}


def stages(images, values: int, tile: int) -> None:
    shipped = kernels.STAGED_TUNING
    print(f"shipped {shipped.tolist()}: {bits(images, tile, bitsback.PREDICTIVE_STAGED) / values:.5f} bits per "
          "subpixel", flush=True)
    try:
        for name, trials in STAGE_TRIALS.items():
            for trial in trials:
                kernels.STAGED_TUNING = np.array([s if t is None else t for s, t in zip(shipped, trial)])
                total = bits(images, tile, bitsback.PREDICTIVE_STAGED)
                print(f"{name} {kernels.STAGED_TUNING.tolist()}: {total / values:.5f}", flush=True)
    finally:
        kernels.STAGED_TUNING = shipped


def warm(images, values: int, tile: int, count: int) -> None:
    """Format 15's bits of each image with its context statistics as they start (zeros) and as they would after the
    tiles of `count` of photos_train's training photographs (every 13th): those tiles put last in the stream, which
    the decoder pops first. What a shipped initial state of the statistics could save."""
    from vaezip import data

    training = list(data.load("photos-train").images)[::13][:count]
    warmers = [cut for image in training for cut in image_tiles(image, tile)]
    cold_total = warm_total = 0.0
    for image in images:
        tiles = image_tiles(image, tile)
        cold = sum(price[1] for price in bitsback.price_without_model(tiles, bitsback.PREDICTIVE_STAGED))
        prices = bitsback.price_without_model(tiles + warmers, bitsback.PREDICTIVE_STAGED)
        warmed = sum(price[1] for price in prices[: len(tiles)])
        cold_total, warm_total = cold_total + cold, warm_total + warmed
        print(f"{cold / image.size:.4f} -> {warmed / image.size:.4f} bits per subpixel "
              f"({100 * (warmed / cold - 1):+.3f} %)", flush=True)
    print(f"all: {cold_total / values:.5f} -> {warm_total / values:.5f} ({100 * (warm_total / cold_total - 1):+.3f} %)")


def sections(images, values: int, tile: int) -> None:
    """Format 15's chain from zeros, format 16's sections as the encoder cuts them, and one section, per image (or
    per set with ONE_STREAM)."""
    streams = image_streams(images, tile)
    totals = np.zeros(3)
    for tiles in streams:
        runs = bitsback.section_runs(tiles)
        costs = np.array([sum(price[1] for price in prices) for prices in (
            bitsback.price_without_model(tiles, bitsback.PREDICTIVE_STAGED),
            bitsback.price_sections(tiles, kinds=FORMAT16),
            bitsback.price_sections(tiles, runs=[len(tiles)], kinds=FORMAT16))])
        totals += costs
        count = sum(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles)
        print(f"{costs[0] / count:.4f} -> {costs[1] / count:.4f} in {len(runs)} sections of {runs} tiles "
              f"({100 * (costs[1] / costs[0] - 1):+.3f} %), {costs[2] / count:.4f} in one "
              f"({100 * (costs[2] / costs[0] - 1):+.3f} %)", flush=True)
    print(f"all: format 15 {totals[0] / values:.5f}, format 16 {totals[1] / values:.5f} "
          f"({100 * (totals[1] / totals[0] - 1):+.3f} %), one section {totals[2] / values:.5f} "
          f"({100 * (totals[2] / totals[0] - 1):+.3f} %)")


def counts(images, values: int, tile: int, sections: list[int]) -> None:
    """Format 16's bits of each image (or with ONE_STREAM the set) in each count of sections (at most one a row of
    tiles: an image's line says how many it got), against the first."""
    streams = image_streams(images, tile)
    totals = np.zeros(len(sections))
    for tiles in streams:
        runs = [bitsback.cut_sections(tiles, count) for count in sections]
        costs = np.array([sum(price[1] for price in bitsback.price_sections(tiles, runs=cut, kinds=FORMAT16))
                          for cut in runs])
        totals += costs
        count = sum(tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles)
        print(f"{count} values: " + ", ".join(
            f"{len(cut)} sections {cost / count:.5f} ({100 * (cost / costs[0] - 1):+.3f} %)"
            for cut, cost in zip(runs, costs)), flush=True)
    print("all: " + ", ".join(
        f"at most {count} sections {total / values:.5f} ({100 * (total / totals[0] - 1):+.3f} %)"
        for count, total in zip(sections, totals)))


def main() -> None:
    parser = set_parser(__doc__)
    # --fast's tiles until FAST_TILE became 256 (vaezip/archive.py), and those of every figure quoted from here
    parser.set_defaults(tile=128)
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="instead: format 15's bits in tiles of each of these sizes (archive.FAST_TILE's choice)")
    parser.add_argument("--stages", action="store_true", help="instead: format 15 with other STAGED_TUNING values")
    parser.add_argument("--one-stream", action="store_true", help="every image's tiles in one stream (an archive's)")
    parser.add_argument("--sections", action="store_true", help="instead: format 16's sections against format 15")
    parser.add_argument("--counts", type=int, nargs="+", metavar="N",
                        help="instead: format 16 in N sections for each N (bitsback.cut_sections)")
    parser.add_argument("--warm", type=int, metavar="N", help="instead: format 15 with its statistics warmed by N "
                        "training photographs first")
    args = parser.parse_args()
    global ONE_STREAM
    ONE_STREAM = args.one_stream
    images, values = set_images(args)
    print(f"{args.dataset}: {len(images)} images, {values} subpixels, tiles of {args.sizes or args.tile}", flush=True)
    adaptive_contexts.bits(images[:1], min(args.tile, 64), bitsback.PREDICTIVE_CASCADE)  # compiled before the clock
    if args.sizes:
        first = None
        for size in args.sizes:
            started = time.perf_counter()
            total = bits(images, size, bitsback.PREDICTIVE_STAGED)
            first = first or total
            print(f"tiles of {size}: {total / values:.4f} bits per subpixel ({100 * (total / first - 1):+.3f} %), "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
        return
    if args.tune:
        tune(images, values, args.tile)
        return
    if args.stages:
        stages(images, values, args.tile)
        return
    if args.warm:
        warm(images, values, args.tile, args.warm)
        return
    if args.sections:
        sections(images, values, args.tile)
        return
    if args.counts:
        counts(images, values, args.tile, args.counts)
        return
    for kind, label in ((bitsback.PREDICTIVE_LEAST_SQUARES, "format 10 (predictive-least-squares)"),
                        (bitsback.PREDICTIVE_CASCADE, "format 12 (predictive-cascade)"),
                        (bitsback.PREDICTIVE_PARITY, "format 13 (predictive-parity)"),
                        (bitsback.PREDICTIVE_WIDE, "format 14 (predictive-wide)"),
                        (bitsback.PREDICTIVE_STAGED, "format 15 (predictive-staged)")):
        started = time.perf_counter()
        total = bits(images, args.tile, kind)
        print(f"{label}: {total / values:.4f} bits per subpixel, {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
