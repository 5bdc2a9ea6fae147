"""Monte-Carlo (importance-weighted) bits-back against plain bits-back on real files: for each image of a data
set, one file per sample count K (`compress_images(..., samples=K)`, the model path with the predictor, no
classical coding, so that the model's figures are what is compared), decoded and compared; the achieved rate,
the bound the coder pays (the ELBO for K = 1, the K-sample bound above), and the time each way.

    python scripts/importance_table.py kodak --limit 4 --samples 1 4 8 [--model photo2] [--out DIR]

Needs ../shared/data. Prints a Markdown table (and writes DIR/table.md with --out).
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
from vaezip.api import compress_images, decompress_images, default_model, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--limit", type=int, default=4, help="the first N images")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--model", default=None, help="default: the shipped default for the images' mode")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    images = [np.asarray(image) for image in datasets.load(args.dataset, limit=args.limit).images]
    items = [(f"{i}.png", Image.fromarray(np.ascontiguousarray(img.squeeze(-1) if img.shape[-1] == 1 else img)))
             for i, img in enumerate(images)]
    loaded = load_model(args.model or default_model(items[0][1].mode))
    subpixels = sum(img.size for img in images)
    totals = {k: {"bytes": 0, "bound": 0.0, "encode": 0.0, "decode": 0.0} for k in args.samples}
    for name, image in items:
        for k in args.samples:
            started = time.perf_counter()
            result = compress_images([(name, image)], loaded, device="cpu", classical=False, samples=k)
            encoded = time.perf_counter() - started
            started = time.perf_counter()
            (_, back), = decompress_images(result.data, loaded, device="cpu")
            decoded = time.perf_counter() - started
            if not np.array_equal(np.asarray(back), np.asarray(image)):
                raise SystemExit(f"{name}, K = {k}: the file did not decode to the image")
            total = totals[k]
            total["bytes"] += len(result.data)
            total["bound"] += result.images[0].bound_bits
            total["encode"] += encoded
            total["decode"] += decoded
            size = image.width * image.height * len(image.getbands())
            print(f"{name} K={k}: {8 * len(result.data) / size:.4f} bpsp (bound {result.images[0].bound_bits / size:.4f}), "
                  f"{encoded:.1f} s / {decoded:.1f} s", flush=True)
    base = totals[args.samples[0]]
    lines = [f"`python scripts/importance_table.py {' '.join(sys.argv[1:])}`: {args.dataset}, first {len(items)} "
             f"images, model {loaded.name}, one file per image (model path with the predictor, no classical "
             f"coding), every file decoded and compared; {platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.\n",
             "| samples K | achieved bpsp | bound bpsp | vs K = " + str(args.samples[0]) + " | encode s | decode s |",
             "|---|---|---|---|---|---|"]
    for k, total in totals.items():
        change = (total["bytes"] / base["bytes"] - 1) * 100
        lines.append(f"| {k} | {8 * total['bytes'] / subpixels:.4f} | {total['bound'] / subpixels:.4f} | "
                     f"{change:+.2f} % | {total['encode']:.1f} | {total['decode']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text)


if __name__ == "__main__":
    main()
