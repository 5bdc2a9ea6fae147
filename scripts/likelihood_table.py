"""The pixel likelihoods compared at equal training (same preset, steps, data, seed, one thread each): the
logistic mixture with and without channel coupling, sigma-VAE's discretized Gaussian with a learned shared
sigma and with each image's optimal sigma (stored in the file), and its categorical decoder. For each:
training images/s, the bound on held-out images, the achieved rate of one real archive of them (every image
through the model: `classical=False, predictor=False`), decoded and compared, coding speed each way, and the
initial bits a stream needs (what popping one tile's latents
takes: scripts/initial_bits.py; the likelihood does not change the latents' shape, only what the trained
posteriors look like).

    python scripts/likelihood_table.py [--steps 1500] [--preset tiny] [--images 300] \
        [--sets mnist imagenette32] [--only NAME ...] [--out docs/results/likelihoods] \
        [--work /tmp/vaezip-likelihoods]

Needs ../shared/data. Writes OUT/table.md and OUT/table.csv; the training runs go under --work.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from initial_bits import mean_initial_bits  # noqa: E402  (scripts/, this script's folder)
from vaezip.api import compress_images, decompress_images, load_model  # noqa: E402
from vaezip.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from vaezip.config import get_preset  # noqa: E402
from vaezip.data import load  # noqa: E402
from vaezip.evaluate import evaluate  # noqa: E402
from vaezip.train import train  # noqa: E402

SETS = {"mnist": ("mnist-train", "mnist-test"), "imagenette32": ("imagenette32-train", "imagenette32-val")}
OPTIONS = {
    "logistic mixture (default)": {},
    "mixture, no channel coupling": {"channel_coupling": False},
    "gaussian, shared sigma": {"likelihood": "gaussian"},
    "gaussian, optimal sigma": {"likelihood": "gaussian-optimal"},
    "categorical": {"likelihood": "categorical"},
}


def measure(name: str, options: dict, train_set: str, test_images, args, train_options: dict | None = None,
            preset=None, label: str | None = None) -> dict:
    """One row: `options` (ModelConfig fields) and `train_options` (TrainConfig fields) on `preset` (default:
    args.preset's); `label` names its run folder where the options do not tell it apart."""
    both = {**options, **(train_options or {})}
    run = args.work / f"{args.set}-{label or '-'.join(f'{k}={v}' for k, v in both.items()) or 'default'}"
    started = time.process_time()
    summary = train(run, train_set, preset or get_preset(args.preset), steps=args.steps,
                    train_overrides=dict(seed=0, val_images=200, val_every=10**9, checkpoint_every=10**9,
                                         **(train_options or {})),
                    model_options=options, coded_validation=None)
    train_cpu = time.process_time() - started
    checkpoint = load_checkpoint(run)
    model = model_from_checkpoint(checkpoint)  # the EMA weights, as load_model gives the coder
    bound = evaluate(model, test_images, tile=32).bound_bpsp
    return {
        "set": args.set, "likelihood": name, "parameters": sum(p.numel() for p in model.parameters()),
        "train img/s": round(summary["step"] * checkpoint["train_config"]["batch_size"] / train_cpu, 1),
        "bound bpsp": round(bound, 4), **coded_archive(name, load_model(run), test_images),
        # what a stream must hold before its first bits-back tile (the test images are one tile each)
        "initial bits / tile": round(mean_initial_bits(load_model(run), test_images, whole=False)[0]),
    }


def coded_archive(name: str, loaded, images: list[np.ndarray], samples: int = 1) -> dict:
    """One real archive of `images` (HWC uint8) through the model path only (no predictor, no classical
    coding; Monte-Carlo bits-back with `samples` > 1), every image decoded and compared: achieved bpsp and
    images/s each way."""
    mode = "L" if loaded.model.config.image_channels == 1 else "RGB"
    items = [(f"{i}.png", Image.fromarray(np.ascontiguousarray(img.squeeze(-1) if mode == "L" else img), mode))
             for i, img in enumerate(images)]
    started = time.perf_counter()
    result = compress_images(items, loaded, tile=32, device="cpu", predictor=False, classical=False, samples=samples)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = decompress_images(result.data, loaded, device="cpu")
    decode_s = time.perf_counter() - started
    for (_, original), (_, back) in zip(items, decoded):
        if not np.array_equal(np.asarray(original), np.asarray(back)):
            raise SystemExit(f"{name}: an image did not decode to itself")
    return {"achieved bpsp": round(len(result.data) * 8 / sum(img.size for img in images), 4),
            "encode img/s": round(len(items) / encode_s, 1), "decode img/s": round(len(items) / decode_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--images", type=int, default=300, help="held-out images: the bound and one archive")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--only", nargs="+", choices=list(OPTIONS), help="these rows only (each row is trained "
                        "on its own, so rows of separate runs compare)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/likelihoods"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vaezip-likelihoods"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for set_name in args.sets:
        args.set = set_name
        train_set, test_set = SETS[set_name]
        images = load(test_set, limit=args.images)
        test_images = [np.asarray(image) for image in images]
        channels = test_images[0].shape[-1]
        for name, options in OPTIONS.items():
            if args.only and name not in args.only:
                continue
            if channels == 1 and options.get("channel_coupling") is False:
                continue  # a grey mixture has no coupling
            row = measure(name, options, train_set, test_images, args)
            print(row, flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python scripts/likelihood_table.py " + " ".join(sys.argv[1:])
    lines = [f"# Pixel likelihoods at equal training\n", f"`{command.strip()}`: preset {args.preset}, {args.steps} "
             f"steps of seed 0 on each training set, one CPU thread ({platform.machine()}, torch "
             f"{torch.__version__}); bound and one real archive (model path only) of the first {args.images} "
             "test images, decoded and compared.\n", "| " + " | ".join(rows[0]) + " |",
             "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
