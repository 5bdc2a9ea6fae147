"""Bits per subpixel of codec/predictive.py (the model-free coder of a stream's first tiles) on 32x32 tiles
taken every 96 pixels from a data set, by real coding; `--grid` also tries other scale constants.

    python scripts/predictor_rate.py skimage-rgb --grid     # how STD_FLOOR / STD_GAIN were chosen
    python scripts/predictor_rate.py kodak
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


def rate(images) -> float:
    bits = values = 0
    for image in images:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))
        for top in range(0, chw.shape[1] - TILE + 1, STEP):
            for left in range(0, chw.shape[2] - TILE + 1, STEP):
                stack = Stack()
                predictive.encode(stack, np.ascontiguousarray(chw[:, top : top + TILE, left : left + TILE]))
                bits += stack.num_valid_bits()
                values += chw.shape[0] * TILE * TILE
    return bits / values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--grid", action="store_true")
    args = parser.parse_args()
    images = data.load(args.dataset).images
    settings = [(predictive.STD_FLOOR, predictive.STD_GAIN)]
    if args.grid:
        settings = [(floor, gain) for floor in (0.3, 0.45, 0.6) for gain in (0.3, 0.4, 0.5)]
    for floor, gain in settings:
        predictive.STD_FLOOR, predictive.STD_GAIN = floor, gain
        print(f"{args.dataset}: STD_FLOOR {floor}, STD_GAIN {gain}: {rate(images):.4f} bits per subpixel", flush=True)


if __name__ == "__main__":
    main()
