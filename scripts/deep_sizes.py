"""What 16-bit files cost (format 18) against a 16-bit PNG and lossless JPEG-XL of the same samples.

    python scripts/deep_sizes.py kodak --form x257 [--limit N] [--fast]
    python scripts/deep_sizes.py photos_fullsize/imagecompression_info/gray8bit --form box4-scaled

The data sets hold no 16-bit photographs, so each image of a set is made into one of these forms:
- x257: its 8-bit samples as editors save them in 16 bits (x * 257): vaezip finds the 8 significant bits
  (codec/depth.py scale:8) and codes the 8-bit image; the 8-bit file is measured beside it.
- boxK-shifted, boxK-scaled: the sums of its KxK blocks (K = 2, 4 or 8), which hold 8 + log2(K*K) real bits each
  (what averaging a photograph down gives, as a camera's 10- to 14-bit data is real), shifted up to the top bits of
  16 (vaezip finds them: shift:10, shift:12, shift:14) or scaled to the whole 16-bit range by 65535 / (255 K^2),
  which no formula undoes (vaezip ranks each channel's values: levels).
- lanczos2: halved by Pillow's Lanczos filter in floating point and rounded to 16 bits (x 257), as an editor that
  works in floats exports it: near-continuous values (17,000 to 37,000 a channel in the first four of Kodak), all 16
  bits real (shift:16): the low byte is coded as an image of its own, without the high one as context.

Prints a markdown table of bits per 16-bit subpixel (bytes * 8 / subpixels) and the sums.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaezip import data as datasets  # noqa: E402
from vaezip.api import compress_images  # noqa: E402
from vaezip.images import DeepImage, open_image  # noqa: E402

FORMS = ("x257", "box2-shifted", "box2-scaled", "box4-shifted", "box4-scaled", "box8-shifted", "box8-scaled",
         "lanczos2")


def deep_samples(pixels: np.ndarray, form: str) -> np.ndarray:
    """(H', W'[, C]) uint16 samples of an (H, W[, C]) uint8 image in `form`."""
    if form == "x257":
        return pixels.astype(np.uint16) * 257
    if form == "lanczos2":
        from PIL import Image

        planes = pixels.astype(np.float32).reshape(*pixels.shape[:2], -1)  # H, W, C
        size = (pixels.shape[1] // 2, pixels.shape[0] // 2)
        halved = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c])).resize(size, Image.LANCZOS))
                           for c in range(planes.shape[-1])], -1).reshape(size[1], size[0], *pixels.shape[2:])
        return np.clip(np.rint(halved * 257), 0, 65535).astype(np.uint16)
    k = int(form[3])
    height, width = pixels.shape[0] // k * k, pixels.shape[1] // k * k
    blocks = pixels[:height, :width].astype(np.int64)
    sums = blocks.reshape(height // k, k, width // k, k, *pixels.shape[2:]).sum(axis=(1, 3))  # 0 .. 255 k^2
    bits = 8 + int(np.log2(k * k))
    if form.endswith("shifted"):
        return (sums << (16 - bits)).astype(np.uint16)
    top = 255 * k * k
    return ((sums * 65535 + top // 2) // top).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", help="a folder under $VAEZIP_DATA (kodak, ...) or any folder of 8-bit PNGs")
    parser.add_argument("--form", choices=FORMS, default="x257")
    parser.add_argument("--limit", type=int, default=0, help="the first N images (0: all)")
    parser.add_argument("--fast", action="store_true", help="vaezip compress --fast")
    args = parser.parse_args()
    import imagecodecs

    folder = Path(args.set)
    if not folder.is_dir():
        folder = Path(datasets.data_root()) / args.set
    paths = sorted(folder.glob("*.png"))[: args.limit or None]
    eight = args.form == "x257"
    columns = (["vaezip 8-bit"] if eight else []) + ["vaezip 16-bit", "depth", "PNG 16-bit (level 9)",
                                                      "JPEG-XL e7 16-bit"]
    print(f"{args.set}, {args.form}{' --fast' if args.fast else ''}\n")
    print("| image | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    totals, subpixels_total = np.zeros(4), 0
    for path in paths:
        image = open_image(path)
        samples = deep_samples(np.asarray(image), args.form)
        result = compress_images([(path.name, DeepImage(np.ascontiguousarray(samples), image.mode))], fast=args.fast)
        sizes = [len(compress_images([(path.name, image)], fast=args.fast).data) if eight else 0, len(result.data),
                 len(imagecodecs.png_encode(samples, level=9)),
                 len(imagecodecs.jpegxl_encode(samples, lossless=True, effort=7))]
        totals += sizes
        subpixels_total += samples.size
        cells = [f"{8 * size / samples.size:.4f}" for size in sizes]
        cells.insert(2, result.images[0].depth)
        print(f"| {path.name} | " + " | ".join(cells[0 if eight else 1:]) + " |", flush=True)
    cells = [f"**{8 * total / subpixels_total:.4f}**" for total in totals]
    cells.insert(2, "")
    print("| **all** | " + " | ".join(cells[0 if eight else 1:]) + " |")


if __name__ == "__main__":
    main()
