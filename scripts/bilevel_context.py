"""What a bilevel image would cost under an adaptive context model of its own, against the classical codings vaezip
keeps for one today (a lead, no file format has it): each pixel coded as a binary decision whose probability is the
count of its context's earlier decisions, the context the ten pixels before it of JBIG's three-row template; the
ideal cost -log2(p) summed, in bytes. Grey images are thresholded at 128 first.

    python scripts/bilevel_context.py ../shared/data/skimage_samples/page.png ../shared/data/skimage_samples/text.png

Prints each image's size, that cost, and its 1-bit PNG (Pillow, optimize) and lossless WebP (quality 100, method 6).
"""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
from PIL import Image


def context_cost_bytes(bits: np.ndarray) -> float:
    """bits (H, W) of 0 and 1 -> the ideal bytes of coding them in raster order under the adaptive model."""
    height, width = bits.shape
    padded = np.zeros((height + 2, width + 4), np.int64)  # two rows above, two columns each side: zeros
    padded[2:, 2:-2] = bits
    counts = np.ones((1 << 10, 2))  # each context's decisions so far, from one each (Laplace)
    total = 0.0
    for y in range(2, height + 2):
        above2, above, row = padded[y - 2], padded[y - 1], padded[y]
        for x in range(2, width + 2):
            context = (above2[x - 1] << 9 | above2[x] << 8 | above2[x + 1] << 7 | above[x - 2] << 6
                       | above[x - 1] << 5 | above[x] << 4 | above[x + 1] << 3 | above[x + 2] << 2
                       | row[x - 2] << 1 | row[x - 1])
            value = row[x]
            seen = counts[context]
            total -= math.log2(seen[value] / (seen[0] + seen[1]))
            seen[value] += 1
    return total / 8


def classical_bytes(bits: np.ndarray) -> tuple[int, int]:
    """(the 1-bit PNG's bytes, the lossless WebP's) of the bilevel image."""
    image = Image.fromarray(bits.astype(bool))
    png, webp = io.BytesIO(), io.BytesIO()
    image.save(png, "PNG", optimize=True)
    image.save(webp, "WEBP", lossless=True, quality=100, method=6)
    return len(png.getvalue()), len(webp.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="image files (grey ones thresholded at 128)")
    args = parser.parse_args()
    for path in args.images:
        bits = (np.asarray(Image.open(path).convert("L")) > 128).astype(np.uint8)
        png, webp = classical_bytes(bits)
        cost = context_cost_bytes(bits)
        print(f"{path}: {bits.shape[1]}x{bits.shape[0]}, context model {cost:.0f} B, 1-bit PNG {png} B, "
              f"lossless WebP {webp} B ({100 * (cost / webp - 1):+.1f} % against WebP)")


if __name__ == "__main__":
    main()
