"""What a model's files cost at several tile sizes: for each image of a data set, one file per tile size
through the model path (`compress_images(..., classical=False)`: the model, with the local predictor taking
the tiles it codes for less), against the model's bound; and where the difference goes: the tiles coded without
bits-back (the stream's first ones, and the predictor's) and what they cost beyond their bound.

    python scripts/tile_sizes.py runs/photo64 kodak --limit 3 --tiles 32 64 128

Needs ../shared/data. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip import data as datasets  # noqa: E402
from vaezip.api import compress_images, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=3, help="the first N images")
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    loaded = load_model(args.model)
    images = [np.asarray(image) for image in datasets.load(args.dataset, limit=args.limit).images]
    print(f"`python scripts/tile_sizes.py {' '.join(sys.argv[1:])}`: {loaded.name} (sha256 {loaded.sha256[:16]}), "
          f"{len(images)} images of {args.dataset}, one file each, model path (classical=False); "
          f"{platform.machine()}, torch {torch.__version__}\n")
    print("| tile | achieved bpsp | bound bpsp | tiles | without bits-back | their excess bpsp | encode s |")
    print("|---|---|---|---|---|---|---|")
    for tile in args.tiles:
        payload = bound = excess = subpixels = 0.0
        tiles = alone = 0
        started = time.perf_counter()
        for index, image in enumerate(images):
            pil = Image.fromarray(np.ascontiguousarray(image.squeeze(-1) if image.shape[-1] == 1 else image))
            result = compress_images([(f"{index}.png", pil)], loaded, tile=tile, device="cpu", classical=False)
            report = result.images[0]
            payload += 8 * len(result.data)
            bound += report.bound_bits
            excess += report.without_bitsback_excess_bits
            subpixels += report.subpixels
            tiles += report.tiles
            alone += report.tiles_without_bitsback
        seconds = time.perf_counter() - started
        print(f"| {tile} | {payload / subpixels:.4f} | {bound / subpixels:.4f} | {tiles} | {alone} | "
              f"{excess / subpixels:+.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
