"""Make samples/hopper.png, the image the README's quick start compresses, from the public-domain photo of
Grace Hopper that matplotlib ships (mpl-data/sample_data/grace_hopper.jpg, US Navy, 1984).

    python scripts/make_sample.py            # writes samples/hopper.png (needs matplotlib: pip install -e ".[bench]")
    python scripts/make_sample.py --check    # exit 1 unless the file it would write is the one shipped

The result is committed, so users never run this; it records how the file was made. Halving the 512x512 crop
with a Lanczos filter also averages away most of the JPEG's 8x8 block artefacts, which a lossless coder would
otherwise spend bits on faithfully.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "samples" / "hopper.png"
BOX = (0, 20, 512, 532)  # the source is 512x600: a square with the face in its upper half
SIDE = 256


def source() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def make() -> bytes:
    with Image.open(source()) as photo:
        image = photo.convert("RGB").crop(BOX).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # No metadata chunks (no time stamp, no ICC profile): the bytes depend on the pixels alone.
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    args = parser.parse_args()
    data = make()
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        shipped = OUT.read_bytes() if OUT.exists() else b""
        same = shipped == data
        print(f"{OUT}: {'same as' if same else 'differs from'} what this makes ({len(data)} bytes, sha256 {digest})")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    print(f"{OUT}: {SIDE}x{SIDE} RGB, {len(data)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
