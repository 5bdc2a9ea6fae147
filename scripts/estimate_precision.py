"""How far the encoder's tile estimates move when the float network's convolutions run in bfloat16
(vaezip/model/estimator.py), against the spread between two posterior samples in float32; and, with
--files N, what that does to real files: the bytes and compress times of N images coded both ways.

    python scripts/estimate_precision.py ../shared/data/kodak/kodim23.png [--model photo2]
    python scripts/estimate_precision.py ../shared/data/kodak/kodim23.png --files 24   # + Kodak's first 24

Needs a CPU with AMX (bfloat16 is emulated, and slower, elsewhere)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.tiling import split_tiles  # noqa: E402
from vaezip import coding, devices  # noqa: E402
from vaezip.allocator import retain_freed_memory  # noqa: E402
from vaezip.api import compress_images, load_model  # noqa: E402
from vaezip.images import open_image, split_image  # noqa: E402
from vaezip.model import estimator  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def timed_bounds(network, coder, tiles, seed: int = 0) -> tuple[np.ndarray, float]:
    coder.estimate_network = coder.model if network is None else network  # what TorchLatentModel estimates with
    coder.tile_bounds(tiles[:64], estimate=True)  # first calls (oneDNN's primitives) outside the timing
    started = time.perf_counter()
    bounds = np.array(coder.tile_bounds(tiles, seed=seed, estimate=True))
    return bounds, time.perf_counter() - started


def describe(name: str, bounds: np.ndarray, seconds: float | None, reference: np.ndarray) -> None:
    off = np.abs(bounds - reference) / reference
    timing = "-" if seconds is None else f"{seconds:.2f} s"
    print(f"| {name} | {100 * np.median(off):.3f} % | {100 * np.percentile(off, 90):.3f} % | {100 * off.max():.3f} % "
          f"| {100 * (bounds.sum() - reference.sum()) / reference.sum():+.3f} % | {timing} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--model", default="photo2")
    parser.add_argument("--files", type=int, default=0, help="also compress Kodak's first N images both ways")
    args = parser.parse_args()
    retain_freed_memory()
    if not devices.amx_available():
        sys.exit("this CPU has no AMX: the estimator stays float32 here")
    loaded = load_model(args.model)
    tiles = split_tiles(split_image(open_image(args.image)).model_plane, 32, loaded.model.config.stride)
    coder = coding.TorchLatentModel(loaded.model, torch.device("cpu"))
    float32, seconds = timed_bounds(None, coder, tiles)
    print(f"{args.image}: {len(tiles)} tiles, model {loaded.name}, {torch.get_num_threads()} threads; "
          "each tile's estimate against float32's (seed 0)\n")
    print("| estimator | median | 90th percentile | largest | sum | time |")
    print("|---|---|---|---|---|---|")
    print(f"| float32 | - | - | - | - | {seconds:.2f} s |")
    describe("float32, another posterior sample (seed 1)", timed_bounds(None, coder, tiles, seed=1)[0], None,
             float32)
    variants = {
        "every convolution in bfloat16": lambda module: isinstance(module, nn.Conv2d),
        "the wide 3x3 ones in bfloat16 (vaezip's)": estimator.wide,
    }
    for name, convert in variants.items():
        network = estimator.bfloat16_estimator(loaded.model, torch.device("cpu"), convert=convert)
        describe(name, *timed_bounds(network, coder, tiles), float32)
    if args.files:
        files = sorted(KODAK.glob("*.png"))[: args.files]
        totals = {"float32": [0, 0.0], "bfloat16": [0, 0.0]}
        real = estimator.bfloat16_estimator
        try:
            for name in totals:
                coding.bfloat16_estimator = real if name == "bfloat16" else (lambda model, device: None)
                for path in files:
                    image = open_image(path)
                    started = time.perf_counter()
                    data = compress_images([(path.name, image)], loaded).data
                    totals[name][0] += len(data)
                    totals[name][1] += time.perf_counter() - started
        finally:
            coding.bfloat16_estimator = real
        (b32, t32), (b16, t16) = totals["float32"], totals["bfloat16"]
        print(f"\n{len(files)} Kodak images, one file each: float32 estimates {b32:,} bytes in {t32:.1f} s, "
              f"bfloat16 {b16:,} bytes ({100 * (b16 - b32) / b32:+.4f} %) in {t16:.1f} s")


if __name__ == "__main__":
    main()
