"""What format 9's adaptive contexts (codec/predictive.py: ADAPTIVE) save against format 8's fitted predictor
tiles, by real coding: each image cut into tiles as compress cuts them, every tile priced as the encoder prices
a stream whose tiles all go to the predictor (bitsback.price_without_model: the adaptive statistics over the
tiles in the decoder's order, a tile coded for less as whitened bytes leaving them as they were; the exact bits
each tile pushes), so a `--fast` file's payload without the classical alternatives.

    python scripts/adaptive_contexts.py kodak                     # 32x32 tiles, the default's
    python scripts/adaptive_contexts.py kodak --tile 128          # --fast's tiles
    python scripts/adaptive_contexts.py photos-train --every 13 --tune    # how ADAPT_TUNING was chosen

`--tune` prices the set with other values of codec/kernels.py's ADAPT_TUNING (the statistics' halving count,
the std ratio's prior count and its expected |residual| / std per value; the contexts themselves are compiled
into the kernel). `--every K` takes every K-th image of the set (after `--limit`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitsback, kernels  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import data  # noqa: E402

STRIDE = 8  # compress cuts tiles on the model's stride grid; the shipped models' is 8


def image_tiles(image: np.ndarray, tile: int):
    """(H, W) or (H, W, C) uint8 -> compress's tiles of it (raster order)."""
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    return split_tiles(np.ascontiguousarray(chw), tile, STRIDE)


def bits(images, tile: int, predictor: str) -> float:
    """Total bits of every image's tiles, each image a stream of its own."""
    return float(sum(price[1] for image in images
                     for price in bitsback.price_without_model(image_tiles(image, tile), predictor)))


def set_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a predictor measurement (this one, scripts/least_squares.py): a data set, the tile size,
    --limit, --every and --tune."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--tune", action="store_true")
    return parser


def set_images(args: argparse.Namespace) -> tuple[list[np.ndarray], int]:
    """The images set_parser's arguments name (every K-th after --limit) and their subpixels."""
    images = list(data.load(args.dataset, limit=args.limit).images)[:: args.every]
    return images, sum(image.size for image in images)


def main() -> None:
    args = set_parser(__doc__).parse_args()
    images, values = set_images(args)
    print(f"{args.dataset}: {len(images)} images, {values} subpixels, tiles of {args.tile}", flush=True)
    started = time.perf_counter()
    fitted = bits(images, args.tile, bitsback.PREDICTIVE_FITTED)
    print(f"format 8 (predictive-fitted): {fitted / values:.4f} bits per subpixel", flush=True)
    tunings = [tuple(float(value) for value in kernels.ADAPT_TUNING)]
    if args.tune:
        tunings += [(limit, prior, expected, *tunings[0][3:])
                    for limit, prior, expected in itertools.product((32.0, 64.0, 128.0), (4.0, 8.0, 16.0),
                                                                    (0.65, 0.7, 0.8))]
    shipped = kernels.ADAPT_TUNING
    try:
        for tuning in dict.fromkeys(tunings):
            kernels.ADAPT_TUNING = np.array(tuning)
            adaptive = bits(images, args.tile, bitsback.PREDICTIVE_ADAPTIVE)
            label = "format 9 (predictive-adaptive)" + ("" if tuning == tunings[0] else f", tuning {tuning}")
            print(f"{label}: {adaptive / values:.4f} bits per subpixel ({100 * (adaptive / fitted - 1):+.2f} %)",
                  flush=True)
    finally:
        kernels.ADAPT_TUNING = shipped
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
