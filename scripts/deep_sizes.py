"""What a 16-bit file of an 8-bit photograph costs (format 18): each image of a set saved as 16-bit samples the way
editors write them (x * 257, every 8-bit value spread over the 16-bit range), against its 8-bit file, a 16-bit PNG
and lossless JPEG-XL of the same 16-bit samples.

    python scripts/deep_sizes.py kodak [--limit N] [--fast]

Prints a markdown table of bits per subpixel (bytes * 8 / subpixels) and the sum. The data sets have no real
16-bit photographs, so only this form is measured here: vaezip finds the 8 significant bits (codec/depth.py,
scale:8) and codes them as the 8-bit image, so the two files differ by the header's few bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaezip import data as datasets  # noqa: E402
from vaezip import png16  # noqa: E402
from vaezip.api import compress_images  # noqa: E402
from vaezip.images import DeepImage, open_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", help="a data set folder under $VAEZIP_DATA (kodak, ...) or any folder of PNGs")
    parser.add_argument("--limit", type=int, default=0, help="the first N images (0: all)")
    parser.add_argument("--fast", action="store_true", help="vaezip compress --fast")
    args = parser.parse_args()
    import imagecodecs

    folder = Path(args.set)
    if not folder.is_dir():
        folder = Path(datasets.data_root()) / args.set
    paths = sorted(folder.glob("*.png"))[: args.limit or None]
    rows, totals = [], np.zeros(5)
    subpixels_total = 0
    print("| image | vaezip 8-bit | vaezip 16-bit | PNG 16-bit (level 9) | JPEG-XL e7 16-bit |")
    print("|---|---|---|---|---|")
    for path in paths:
        image = open_image(path)
        samples = np.asarray(image).astype(np.uint16) * 257
        subpixels = samples.size
        sizes = [
            len(compress_images([(path.name, image)], fast=args.fast).data),
            len(compress_images([(path.name, DeepImage(samples, image.mode))], fast=args.fast).data),
            len(imagecodecs.png_encode(samples, level=9)),
            len(imagecodecs.jpegxl_encode(samples, lossless=True, effort=7)),
        ]
        assert png16.read(imagecodecs.png_encode(samples, level=9), 10**9)[0].shape == samples.shape
        rows.append(sizes)
        totals[:4] += sizes
        subpixels_total += subpixels
        print(f"| {path.name} | " + " | ".join(f"{8 * size / subpixels:.4f}" for size in sizes) + " |", flush=True)
    print("| **all** | " + " | ".join(f"**{8 * total / subpixels_total:.4f}**" for total in totals[:4]) + " |")


if __name__ == "__main__":
    main()
