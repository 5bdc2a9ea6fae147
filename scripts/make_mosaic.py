"""A large test photograph made of a data set's images side by side (none of the data sets holds a camera's
24-Mpixel photograph): how compress and decompress scale past ~13 million values, where format 16 cuts more
sections and the encoder's recordings outgrow their budget.

    python scripts/make_mosaic.py kodak 8 8 /tmp/mosaic.png     # 6144x4096 RGB, 75.5 million values
    python scripts/coding_speed.py /tmp/mosaic.png --fast

The images go row after row, each ROWS x COLUMNS cell the set's next image (from the first again once they run
out), portrait ones turned to landscape; every image must then have the first one's size. The PNG is written at
zlib level 1 (its size does not matter; it is read once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip import data  # noqa: E402


def mosaic(images: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """(rows * H, columns * W, C) uint8 of `images` (H, W, C) each, or (W, H, C) turned; cycled in raster order."""
    landscape = [image if image.shape[0] <= image.shape[1] else image.transpose(1, 0, *range(2, image.ndim))
                 for image in images]
    if any(image.shape != landscape[0].shape for image in landscape):
        raise SystemExit(f"the images differ in size: {sorted({image.shape for image in landscape})}")
    cells = [landscape[k % len(landscape)] for k in range(rows * columns)]
    return np.ascontiguousarray(np.concatenate(
        [np.concatenate(cells[r * columns:(r + 1) * columns], axis=1) for r in range(rows)], axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("rows", type=int)
    parser.add_argument("columns", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    image = mosaic(list(data.load(args.dataset).images), args.rows, args.columns)
    Image.fromarray(image).save(args.out, compress_level=1)
    print(f"{args.out}: {image.shape[1]}x{image.shape[0]}, {image.size} values")


if __name__ == "__main__":
    main()
