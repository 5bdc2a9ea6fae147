"""Regenerate tests/data/golden.{png,vz}: a small synthetic image coded by the seeded, untrained tiny model.

    python scripts/make_golden.py
Only after a deliberate format change (bump codec.container.VERSION): the golden file pins the format.

    python scripts/make_golden.py --black
writes tests/data/black/*.vz, images with black regions as the coder of 2026-12-02 wrote them (those files
were refused by the decoder of that day although they were sound): never regenerate them, they pin that
such files decode forever.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_tiny_weights  # noqa: E402

from vaezip.api import compress_images, load_model  # noqa: E402

GOLDEN = ROOT / "tests" / "data"


def golden_image() -> Image.Image:
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[0:20, 0:24]
    base = 100 + 50 * np.sin(x / 4.0)[..., None] + 30 * np.cos(y / 3.0)[..., None] + rng.normal(0, 6, (20, 24, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def black_region_images() -> dict[str, list[tuple[str, Image.Image]]]:
    """File name -> the images it holds: black regions where a stream starts (its first tiles)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bars = noise.copy()
    bars[:32] = 0
    letterbox = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    letterbox[:10], letterbox[-10:], letterbox[..., 3] = 0, 0, 255
    grey = np.zeros((40, 40), dtype=np.uint8)
    grey[30:] = rng.integers(0, 256, (10, 40), dtype=np.uint8)
    return {
        "black-rgb.vz": [("black.png", Image.new("RGB", (8, 8)))],
        "bars-rgb.vz": [("bars.png", Image.fromarray(bars, "RGB"))],
        "bars-rgb-model-only.vz": [("bars.png", Image.fromarray(bars, "RGB"))],
        "letterbox-rgba.vz": [("letterbox.png", Image.fromarray(letterbox, "RGBA"))],
        "black-top-l.vz": [("grey.png", Image.fromarray(grey, "L"))],
        "palette-1x1.vz": [("dot.png", Image.new("P", (1, 1)))],
        "archive-black-first.vz": [("black.png", Image.new("RGB", (16, 16))), ("bars.png", Image.fromarray(bars, "RGB"))],
    }


def make_black_fixtures() -> None:
    folder = GOLDEN / "black"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights = {c: make_tiny_weights(Path(scratch) / f"tiny-{c}.safetensors", c, name)
                   for c, name in ((1, "tiny-grey"), (3, "tiny-rgb"))}
        for file_name, images in black_region_images().items():
            channels = 1 if images[0][1].mode in ("L", "LA") else 3
            result = compress_images(images, load_model(weights[channels]), tile=16, device="cpu",
                                     predictor="model-only" not in file_name)
            (folder / file_name).write_bytes(result.data)
            print(f"black/{file_name}: {len(result.data)} bytes")


def main() -> None:
    if "--black" in sys.argv[1:]:
        make_black_fixtures()
        return
    GOLDEN.mkdir(parents=True, exist_ok=True)
    image = golden_image()
    image.save(GOLDEN / "golden.png")
    with tempfile.TemporaryDirectory() as folder:
        weights = make_tiny_weights(Path(folder) / "tiny-rgb.safetensors", 3, "tiny-rgb")
        # Model-only: with the untrained tiny model the predictor would take every tile, and the golden file
        # is to pin bits-back too.
        result = compress_images([("golden.png", image)], load_model(weights), tile=16, device="cpu", predictor=False)
    (GOLDEN / "golden.vz").write_bytes(result.data)
    print(f"golden.vz: {len(result.data)} bytes")


if __name__ == "__main__":
    main()
