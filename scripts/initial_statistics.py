"""Make format 16's initial statistics (codec/initial_statistics.npz, codec/predictive.py: initial_statistics) from
photos_train's training photographs, never from a benchmark set:

    python scripts/initial_statistics.py [--out codec/initial_statistics.npz] [--photos 8] [--scale 0.25] [--check]

The statistics of the staged cascade (predictive.STAGED) as they stand after coding every 13th training photograph
(the first `--photos` of them) in tiles of 256, as one stream in the decoder's order, each tile with its
neighbours below and to the right as context (what compress --fast codes), times `--scale` (every sum and count:
the same means and ratios, weighing that share of the values, so that a section's own values outweigh them
sooner): where each of format 16's sections starts. Stored as float32 (numpy's .npz, no pickle); the sha256 of
those float32 values is what codec/predictive.py pins (printed here). --check compares the result with the shipped
file instead of writing it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import predictive, tilekinds  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import data  # noqa: E402

TILE = 256  # vaezip/archive.py's FAST_TILE
STRIDE = 8  # the shipped models' stride, on whose grid compress cuts tiles
EVERY = 13


def statistics(photos: int, scale: float = 1.0) -> np.ndarray:
    """STAGED's statistics (kernels.ADAPT_STATISTICS, 4) float32 after `photos` training photographs, times
    `scale`."""
    training = list(data.load("photos-train").images)[::EVERY][:photos]
    # One stream of every photograph's tiles, as an archive of them codes them, popped last tile first; a tile's
    # neighbours (offsets within its own photograph) are its context.
    tiles = [tile for image in training
             for tile in split_tiles(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1)), TILE, STRIDE)]
    stream = tilekinds.Stream(len(tiles), lambda k: tiles[k].pixels)
    for index in range(len(tiles) - 1, -1, -1):
        tilekinds.record_adaptive(tiles[index], index, stream, tilekinds.PREDICTIVE_STAGED)
    return (stream.adaptive.sums * scale).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=predictive.INITIAL_STATISTICS_FILE)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    args = parser.parse_args()
    sums = statistics(args.photos, args.scale)
    digest = hashlib.sha256(np.ascontiguousarray(sums, dtype="<f4").tobytes()).hexdigest()
    seen = int((sums[:, 1] > 0).sum())
    print(f"{args.photos} photographs times {args.scale}: {seen} of {len(sums)} contexts seen; sha256 {digest}")
    if args.check:
        shipped = predictive.INITIAL_STATISTICS_SHA256
        print("the same as the shipped file" if digest == shipped else f"differs from the shipped {shipped}")
        sys.exit(0 if digest == shipped else 1)
    np.savez_compressed(args.out, sums=np.ascontiguousarray(sums, dtype="<f4"))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
