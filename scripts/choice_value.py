"""What the encoder's per-tile choice between the model and the predictor is worth: for every tile of a data
set, the model's estimated cost (the float network's one-sample bound, as the encoder estimates it) against
the predictor's exact cost (bitsback.price_without_model), by the predictor's cost per subpixel. Prints the
share of tiles the model wins and the bits those tiles save against the predictor alone, as a share of the
predictor-only total.

    python scripts/choice_value.py kodak [--model photo2] [--limit 24]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitsback  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import archive, data  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.coding import TorchLatentModel, deterministic_kernels  # noqa: E402
from vaezip.images import open_image, split_image  # noqa: E402

BANDS = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 8.0, 9.0)  # predictor bits per subpixel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a folder of images, or a data set name under $VAEZIP_DATA (kodak)")
    parser.add_argument("--model", default="photo2")
    parser.add_argument("--limit", type=int, default=24)
    args = parser.parse_args()
    folder = Path(args.dataset) if Path(args.dataset).is_dir() else Path(data.data_root()) / args.dataset
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".bmp"))[: args.limit]
    loaded = load_model(args.model)
    coder = TorchLatentModel(loaded.model)
    stride = loaded.model.config.stride
    estimates, prices, subpixels = [], [], []
    for path in paths:
        planes = split_image(open_image(path))
        if planes.model_plane is None:
            continue
        tiles = split_tiles(planes.model_plane, archive.effective_tile(None, stride), stride)
        with deterministic_kernels(pin_threads=False):
            estimates += coder.tile_bounds(tiles, estimate=True)
        prices += [bits for _, bits in bitsback.price_without_model(tiles, bitsback.PREDICTIVE_FITTED)]
        subpixels += [tile.pixels.shape[0] * tile.valid[0] * tile.valid[1] for tile in tiles]
    estimates, prices, subpixels = (np.asarray(values, dtype=np.float64) for values in (estimates, prices, subpixels))
    saved = np.maximum(prices - estimates, 0.0)  # bits the model saves on each tile it wins
    print(f"{folder.name}, {len(paths)} images, {len(prices)} tiles, model {loaded.name}: the model wins "
          f"{np.mean(estimates < prices):.1%} of the tiles and saves {saved.sum() / 1000:.0f} kbit, "
          f"{saved.sum() / prices.sum():.2%} of the predictor-only total\n")
    print("| predictor bpsp | tiles | model wins | kbit saved |")
    print("|---|---|---|---|")
    rate = prices / subpixels
    for low, high in zip(BANDS, BANDS[1:]):
        band = (rate >= low) & (rate < high)
        if band.any():
            print(f"| {low}-{high} | {band.sum()} | {np.mean(estimates[band] < prices[band]):.1%} | "
                  f"{saved[band].sum() / 1000:.0f} |")


if __name__ == "__main__":
    main()
