"""How close the encoder's estimate of an image's model path comes to the real file: the figure that decides
whether `vaezip compress` runs the model at all (vaezip/archive.py skip_ratio).

For each image: its smallest classical coding (what the default path writes where the model loses), the
estimate (each tile the cheaper of the float network's bound and its exact cost without the model, as the
coder chooses), and the model path's real file (`--files`, else coded here: slow). Prints per image the
ratios model file / estimate and estimate / classical, and which images the current skip_ratio spares.

    python scripts/skip_margin.py kodak [--model photo2] [--limit 24] [--files docs/results/photo2/kodak-format5/results.csv]
    python scripts/skip_margin.py kodak --limit 2 --noise 6

--files takes a bench results.csv (its `vaezip-model` rows) instead of coding each image again. --noise S
prints instead how far one tile's one-sample estimate moves between S seeds (relative standard deviation per
tile: median and largest) and how far the image's sum moves: the noise skip_ratio's margin must cover.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitsback  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import archive, data  # noqa: E402
from vaezip.api import compress_images, load_model  # noqa: E402
from vaezip.classical import smallest_entry  # noqa: E402
from vaezip.coding import TorchLatentModel  # noqa: E402
from vaezip.images import open_image, split_image  # noqa: E402


def set_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a measurement of a model on a folder of images (this one, scripts/model_gate.py): the
    folder or data set, --model and --limit."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a folder of images, or a data set name under $VAEZIP_DATA (kodak)")
    parser.add_argument("--model", default="photo2")
    parser.add_argument("--limit", type=int, default=24)
    return parser


def set_paths(args: argparse.Namespace, suffixes: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """set_parser's folder and its first --limit images whose suffix is one of `suffixes`, sorted."""
    folder = Path(args.dataset) if Path(args.dataset).is_dir() else Path(data.data_root()) / args.dataset
    return folder, sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)[: args.limit]


def set_coder(args: argparse.Namespace):
    """set_parser's --model loaded, its float estimator and its stride."""
    loaded = load_model(args.model)
    return loaded, TorchLatentModel(loaded.model), loaded.model.config.stride


def main() -> None:
    parser = set_parser(__doc__)
    parser.add_argument("--files", help="a bench results.csv whose vaezip-model rows give the model files' bytes")
    parser.add_argument("--noise", type=int, default=0, metavar="SEEDS",
                        help="measure the estimate's sampling noise over this many seeds instead")
    args = parser.parse_args()
    folder, paths = set_paths(args, (".png", ".tif", ".tiff", ".bmp"))
    model_bytes = {}
    if args.files:
        with open(args.files, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["codec"] == "vaezip-model":
                    model_bytes[Path(row["image"]).name] = int(row["bytes"])
    loaded, coder, stride = set_coder(args)
    if args.noise:
        noise(paths, coder, stride, args.noise)
        return
    print(f"{folder.name}, model {loaded.name} (sha256 {loaded.sha256[:16]}), tile 32, skip_ratio(tiles) = 1 + "
          f"{archive.SKIP_MARGIN} + {archive.SKIP_NOISE} / sqrt(tiles)\n")
    print("| image | classical | bytes | model file / estimate | estimate / classical | model file / classical | "
          "model runs |")
    print("|---|---|---|---|---|---|---|")
    ratios, spared, lost_wins = [], 0, 0
    for path in paths:
        image = open_image(path)
        planes = split_image(image)
        entry, _ = smallest_entry(path.name, planes, image)
        tiles = split_tiles(planes.model_plane, archive.effective_tile(None, stride), stride)
        estimates = coder.tile_bounds(tiles, estimate=True)
        priced = bitsback.price_without_model(tiles, bitsback.PREDICTIVE_FITTED)  # as the encoder prices them
        estimate, _ = archive._model_estimate(tiles, estimates, priced)
        if path.name in model_bytes:
            model = 8 * model_bytes[path.name]
        else:
            model = 8 * len(compress_images([(path.name, image)], loaded, classical=False).data)
        classical = 8 * len(entry.data)
        runs = estimate <= archive.skip_ratio(len(tiles)) * classical
        spared += not runs
        lost_wins += (not runs) and model < classical
        ratios.append(model / estimate)
        print(f"| {path.name} | {entry.coding} | {classical // 8} | {model / estimate:.4f} | {estimate / classical:.4f} "
              f"| {model / classical:.4f} | {'yes' if runs else 'no'} |", flush=True)
    print(f"\nmodel file / estimate: {min(ratios):.4f} to {max(ratios):.4f}; the model spared on {spared} of "
          f"{len(paths)} images, {lost_wins} of them images it would have won")


def noise(paths, coder, stride: int, seeds: int) -> None:
    print(f"the float network's one-sample estimate over {seeds} seeds, 32x32 tiles\n")
    print("| image | tiles | per-tile relative std, median | largest | the image's sum, relative std |")
    print("|---|---|---|---|---|")
    for path in paths:
        tiles = split_tiles(split_image(open_image(path)).model_plane, archive.effective_tile(None, stride), stride)
        draws = np.array([coder.tile_bounds(tiles, seed=seed, estimate=True) for seed in range(seeds)])  # S, T
        per_tile = draws.std(axis=0) / draws.mean(axis=0)
        sums = draws.sum(axis=1)
        print(f"| {path.name} | {len(tiles)} | {np.median(per_tile):.4f} | {per_tile.max():.4f} | "
              f"{sums.std() / sums.mean():.5f} |", flush=True)


if __name__ == "__main__":
    main()
