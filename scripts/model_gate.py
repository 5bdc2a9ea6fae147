"""How well a sample of an image's tiles tells whether the model can win it: the figure behind the default
compress's early exit (vaezip/archive.py GATE_EVERY, GATE_RATIO).

For each image: the quick stream's real bits (the predictor alone, tiles of 128: what the default keeps on
photographs), the float network's estimate of every 32x32 tile summed (the model alone), that sum projected from
the lattice sample of one tile in S (archive.gate_sample; for S = GATE_EVERY archive.gate_tiles, what compress
prices) by its bits per pixel (archive.gate_projection) for each S asked for, and the encoder's full estimate
of its model stream (each tile the cheaper of the model and format 9's predictor, archive._model_estimate), which
the full path compares with the quick stream. Prints per image the ratios to the quick stream, and over the set
how often each sample rate's gate (projection > GATE_RATIO x quick) would skip the full pricing, and whether it
ever skips an image whose full estimate, less its margin, was below the quick stream (a possible loss). For a
large image, also the first stage of its sample (archive.gate_stages: its tiles and their projection), which rules
the model out at GATE_FIRST_RATIO x quick without pricing the rest.

    python scripts/model_gate.py kodak [--model photo2] [--limit 24] [--every 4 8 16]

`--most N ...` instead times the early exit's pricing of each image (archive._price_sample, what the default
compress runs beside the quick stream) with archive.GATE_MOST set to each N, and prints the tiles sampled, the
seconds and the projected bits per subpixel (for a large image its first stage, then with the second stage's
tiles: archive.gate_stages): how GATE_MOST was chosen (`python scripts/make_mosaic.py kodak 8 8
/tmp/m/mosaic.png; python scripts/model_gate.py /tmp/m --most 100000 1024 512`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The same arguments, folder and model as skip_margin.py's measurement.
from skip_margin import set_coder, set_parser, set_paths  # noqa: E402

from codec import bitsback  # noqa: E402
from codec.tiling import split_tiles  # noqa: E402
from vaezip import archive  # noqa: E402
from vaezip.api import compress_images  # noqa: E402
from vaezip.images import open_image, split_image  # noqa: E402


def main() -> None:
    parser = set_parser(__doc__)
    parser.add_argument("--every", type=int, nargs="+", default=[4, 8, 16], help="sample rates: one tile in S")
    parser.add_argument("--most", type=int, nargs="+", help="instead: time the sample's pricing at these GATE_MOST")
    args = parser.parse_args()
    folder, paths = set_paths(args, (".png", ".tif", ".tiff", ".bmp", ".webp"))
    if args.most:
        time_samples(paths, args.model, args.most)
        return
    loaded, coder, stride = set_coder(args)
    tile = archive.effective_tile(None, stride)
    print(f"{folder.name}, model {loaded.name} (sha256 {loaded.sha256[:16]}), tiles of {tile}, gate ratio "
          f"{archive.GATE_RATIO}\n")
    print("| image | tiles | quick bpsp | model alone / quick | " + " | ".join(f"1 in {s} / quick" for s in args.every)
          + " | first stage: tiles, / quick | full estimate / quick |")
    print("|---|---|---|---|" + "---|" * len(args.every) + "---|---|")
    skipped = {s: 0 for s in args.every}
    first_stages = first_skipped = first_losses = 0
    losses = {s: 0 for s in args.every}
    for path in paths:
        image = open_image(path)
        planes = split_image(image)
        quick = compress_images([(path.name, image)], loaded, fast=True, classical=False).images[0].payload_bits
        tiles = split_tiles(planes.model_plane, tile, stride)
        estimates = np.array(coder.tile_bounds(tiles, estimate=True))
        priced = bitsback.price_without_model(tiles, bitsback.PREDICTIVE_ADAPTIVE, list(estimates))
        full, _ = archive._model_estimate(tiles, list(estimates), priced)
        could_win = full / archive.skip_ratio(len(tiles)) <= quick
        cells = []
        for every in args.every:
            chosen = archive.gate_sample(planes.height, planes.width, tile, every)
            if every == archive.GATE_EVERY:
                chosen = archive.gate_tiles(planes.height, planes.width, tile)  # what compress prices
            projected = archive.gate_projection({t: estimates[t] for t in chosen},
                                                {t: tiles[t].valid[0] * tiles[t].valid[1] for t in chosen},
                                                planes.height * planes.width)
            skip = projected > archive.GATE_RATIO * quick
            skipped[every] += skip
            losses[every] += skip and could_win
            cells.append(f"{projected / quick:.4f}{' skip' if skip else ''}")
        first, second = archive.gate_stages(planes.height, planes.width, tile)
        if second:  # the first stage of a large image's sample (archive.gate_stages)
            projected = archive.gate_projection({t: estimates[t] for t in first},
                                                {t: tiles[t].valid[0] * tiles[t].valid[1] for t in first},
                                                planes.height * planes.width)
            skip = projected > archive.GATE_FIRST_RATIO * quick
            first_stages += 1
            first_skipped += skip
            first_losses += skip and could_win
            first_cell = f"{len(first)}: {projected / quick:.4f}{' skip' if skip else ''}"
        else:
            first_cell = "-"
        print(f"| {path.name} | {len(tiles)} | {quick / planes.subpixels:.4f} | {estimates.sum() / quick:.4f} | "
              + " | ".join(cells) + f" | {first_cell} | {full / quick:.4f}{' (could win)' if could_win else ''} |",
              flush=True)
    print(f"\nfirst stage (GATE_FIRST_RATIO {archive.GATE_FIRST_RATIO}): on {first_stages} of {len(paths)} images, "
          f"the rest of the sample skipped on {first_skipped}, {first_losses} of them images whose full estimate "
          "could have won")
    for every in args.every:
        print(f"\n1 in {every}: the full pricing skipped on {skipped[every]} of {len(paths)} images, "
              f"{losses[every]} of them images whose full estimate could have won")


def time_samples(paths: list[Path], model: str, counts: list[int]) -> None:
    """Each image's early-exit pricing timed with GATE_MOST set to each of `counts`."""
    for path in paths:
        image = open_image(path)
        split = archive._split([(path.name, image)])
        for most in counts:
            archive.GATE_MOST = most
            started = time.perf_counter()
            gate = archive._price_sample(split, model, "cpu")
            seconds = time.perf_counter() - started
            if gate is None or 0 not in gate.projected:
                print(f"{path.name}: the model {model} cannot code it", flush=True)
                break
            projected = gate.projected[0] / split[0].planes.subpixels
            line = (f"{path.name}: GATE_MOST {most}: {len(gate.sampled[0])} tiles in {seconds:.2f} s, projected "
                    f"{projected:.4f} bpsp")
            if gate.rest:  # a large image's first stage only: the second stage's tiles too, what it spares
                started = time.perf_counter()
                whole = gate.completed()
                line += (f" (first stage); with the second stage's {len(whole.sampled[0]) - len(gate.sampled[0])} "
                         f"tiles {seconds + time.perf_counter() - started:.2f} s, projected "
                         f"{whole.projected[0] / split[0].planes.subpixels:.4f} bpsp")
            print(line, flush=True)


if __name__ == "__main__":
    main()
