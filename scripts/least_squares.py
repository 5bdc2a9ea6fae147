"""What format 10's least-squares predictor tiles (codec/predictive.py: LEAST_SQUARES) save against format 9's
adaptive ones, by real coding: each image cut into tiles as compress cuts them, every tile priced as the encoder
prices a stream whose tiles all go to the predictor (bitsback.price_without_model), the exact bits each tile
pushes, so a `--fast` file's payload without the classical alternatives; and the seconds each took.

    python scripts/least_squares.py kodak --tile 128              # --fast's tiles
    python scripts/least_squares.py photos-train --every 13 --tile 128 --tune    # how LS_RADIUS and LS_EVERY were
                                                                                  # chosen

`--tune` prices the set again with other values of codec/kernels.py's LS_RADIUS and LS_EVERY, each in a process
of its own (numba compiles the constants into the kernel, so each gets a fresh cache folder). `--every K` takes
every K-th image of the set (after `--limit`).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The same arguments, images and pricing as format 9's measurement; nothing is compiled on import, so --radius and
# --every-column still reach the kernel.
from adaptive_contexts import bits, set_images, set_parser  # noqa: E402


def main() -> None:
    parser = set_parser(__doc__)
    parser.add_argument("--radius", type=int, help="LS_RADIUS for this run (a fresh kernel)")
    parser.add_argument("--every-column", type=int, help="LS_EVERY for this run (a fresh kernel)")
    parser.add_argument("--only", action="store_true", help="price format 10 only")
    args = parser.parse_args()
    if args.tune:
        base = [sys.executable, __file__, args.dataset, "--tile", str(args.tile), "--every", str(args.every)]
        base += ["--limit", str(args.limit)] if args.limit else []
        subprocess.run(base, check=True)
        for radius, every in itertools.product((4, 6, 8, 10), (1, 2, 3, 4)):
            with tempfile.TemporaryDirectory() as cache:
                subprocess.run([*base, "--only", "--radius", str(radius), "--every-column", str(every)], check=True,
                               env={**os.environ, "NUMBA_CACHE_DIR": cache})
        return
    from codec import kernels

    if args.radius is not None or args.every_column is not None:
        if "NUMBA_CACHE_DIR" not in os.environ:
            parser.error("--radius and --every-column need a NUMBA_CACHE_DIR of their own (as --tune gives)")
        kernels.LS_RADIUS = args.radius if args.radius is not None else kernels.LS_RADIUS
        kernels.LS_EVERY = args.every_column if args.every_column is not None else kernels.LS_EVERY
    from codec import bitsback

    images, values = set_images(args)
    kinds = [bitsback.PREDICTIVE_LEAST_SQUARES] if args.only else [bitsback.PREDICTIVE_ADAPTIVE,
                                                                    bitsback.PREDICTIVE_LEAST_SQUARES]
    if not args.only:
        print(f"{args.dataset}: {len(images)} images, {values} subpixels, tiles of {args.tile}", flush=True)
    bits(images[:1], min(args.tile, 64), bitsback.PREDICTIVE_LEAST_SQUARES)  # compiled before the clock starts
    for kind in kinds:
        started = time.perf_counter()
        total = bits(images, args.tile, kind)
        label = {bitsback.PREDICTIVE_ADAPTIVE: "format 9 (predictive-adaptive)",
                 bitsback.PREDICTIVE_LEAST_SQUARES: "format 10 (predictive-least-squares)"}[kind]
        label += f", radius {kernels.LS_RADIUS}, every {kernels.LS_EVERY}" if kind != kinds[0] or args.only else ""
        print(f"{label}: {total / values:.4f} bits per subpixel, {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
