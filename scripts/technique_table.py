"""The seed papers' techniques for the photo models, each trained from scratch at equal training (same preset,
steps, data and seed, one thread each), one row per technique and one for their combination:

- KL warm-up alone, and with NVAE's KL balancing (`--kl-warmup`, `--kl-balance`);
- NVAE's residual normal posterior (`--residual-posterior`);
- a causal pixel-context head in row order, and in DVAE++'s multi-scale order (`--pixel-context 32
  [--context-order scales]`);
- all of them that apply together (warm-up + balancing + residual posterior + multi-scale head).

For each: training images/s, the tiled bound (32x32 tiles, as files are cut) on the held-out sets of the data
set, and for Imagenette32 and MNIST the achieved rate of one real archive of the held-out images (every image through the
model, decoded and compared) with its coding speed.

    python scripts/technique_table.py --set imagenette32 [--steps 2000] [--images 300]
    python scripts/technique_table.py --set photos --steps 1000
    python scripts/technique_table.py --set mnist --steps 400

Needs ../shared/data. Writes OUT/SET.md and OUT/SET.csv (OUT: docs/results/techniques); the runs go under
--work.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from likelihood_table import coded_archive  # noqa: E402  (scripts/, this script's folder)
from vaezip.api import load_model  # noqa: E402
from vaezip.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from vaezip.config import get_preset  # noqa: E402
from vaezip.data import load  # noqa: E402
from vaezip.evaluate import evaluate  # noqa: E402
from vaezip.train import train  # noqa: E402

# training set, held-out sets for the bound (the first is also coded for real where `coded`)
SETS = {
    "imagenette32": ("imagenette32-train", ("imagenette32-val",), True),
    "photos": ("photos-train", ("photos-train-val", "kodak"), False),
    "mnist": ("mnist-train", ("mnist-test",), True),
}
CONTEXT_WIDTH = 32


def techniques(steps: int) -> dict[str, dict]:
    """Row name -> what train() is given beyond the preset. The KL warm-up spans the first quarter."""
    warmup = {"kl_warmup_steps": max(1, steps // 4)}
    balanced = {**warmup, "kl_balance": True}
    scales = {"pixel_context": CONTEXT_WIDTH, "model_options": {"context_order": "scales"}}
    return {
        "baseline (Efficient-VDVAE recipe)": {},
        "KL warm-up": {"train": warmup},
        "KL warm-up + balancing (NVAE)": {"train": balanced},
        "residual posterior (NVAE)": {"residual_posterior": True},
        "pixel context, row order": {"pixel_context": CONTEXT_WIDTH},
        "multi-scale conditional decoder (DVAE++)": scales,
        "combination": {"train": balanced, "residual_posterior": True, **scales},
    }


def measure(name: str, options: dict, args) -> dict:
    train_set, held_out, coded = SETS[args.set]
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    run = args.work / f"{args.set}-{args.steps}-{slug}"
    started = time.process_time()
    summary = train(run, train_set, get_preset(args.preset), steps=args.steps, resume=run.exists(),
                    train_overrides=dict(seed=0, val_images=200, val_every=10**9, checkpoint_every=10**9,
                                         **options.get("train", {})),
                    pixel_context=options.get("pixel_context"), residual_posterior=options.get("residual_posterior", False),
                    model_options=options.get("model_options"), coded_validation=None)
    train_cpu = time.process_time() - started
    checkpoint = load_checkpoint(run)
    model = model_from_checkpoint(checkpoint)  # the EMA weights, as load_model gives the coder
    row = {"set": args.set, "technique": name, "parameters": sum(p.numel() for p in model.parameters()),
           "train img/s": round(summary["step"] * checkpoint["train_config"]["batch_size"] / max(train_cpu, 1e-9), 1)}
    for set_name in held_out:
        images = [np.asarray(image) for image in load(set_name, limit=args.images)]
        row[f"{set_name} bound"] = round(evaluate(model, images, tile=32).bound_bpsp, 4)
    if coded:
        images = [np.asarray(image) for image in load(held_out[0], limit=args.images)]
        row.update(coded_archive(name, load_model(run), images))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=list(SETS), required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--images", type=int, default=300, help="at most this many held-out images per set")
    parser.add_argument("--only", nargs="*", help="row names (or unique prefixes) to run; default: every row")
    parser.add_argument("--out", type=Path, default=Path("docs/results/techniques"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vaezip-techniques"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    table = techniques(args.steps)
    chosen = [name for name in table if not args.only or any(name.startswith(p) for p in args.only)]
    for name in chosen:  # the table is rewritten after every row: a run cut short keeps what it measured
        row = measure(name, table[name], args)
        print(row, flush=True)
        rows.append(row)
        write_table(rows, args, complete=len(rows) == len(chosen))


def write_table(rows: list[dict], args, complete: bool) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.set if not args.only else f"{args.set}-part-{os.getpid()}"
    with open(args.out / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python scripts/technique_table.py " + " ".join(sys.argv[1:])
    lines = [f"`{command.strip()}`: preset {args.preset}, {args.steps} steps of seed 0 on {SETS[args.set][0]}, "
             f"one CPU thread ({platform.machine()}, torch {torch.__version__}); tiled bounds (32x32) of the first "
             f"{args.images} images of each held-out set" + ("." if complete else "; the rows measured so far.")
             + "\n", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    if complete:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
