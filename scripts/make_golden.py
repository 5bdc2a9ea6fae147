"""Regenerate tests/data/golden.{png,vz}: a small synthetic image coded by the seeded, untrained tiny model.

    python scripts/make_golden.py
Only after a deliberate format change (bump codec.container.VERSION): the golden file pins the format.
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


def main() -> None:
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
