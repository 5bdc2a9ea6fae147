"""Importance-weighted training (DVAE##, `vaezip train --importance-samples K`) against the ELBO, each model
trained from scratch with the same preset, data, seed and KL warm-up (its first quarter: DVAE##'s annealing
of the importance-weighted bound), one CPU thread each; K samples cost about K times the model's work a step,
so K > 1 runs twice: at the ELBO's steps (equal steps) and at 1/K of them (about equal CPU time).

For each: training images/s, on the first --images held-out images (32x32, one tile each) the ELBO and the
K-sample importance-weighted bound, the initial bits a stream needs (scripts/initial_bits.py), and the
achieved rate of one real archive of them through the model path with plain bits-back and with Monte-Carlo
bits-back of K samples (`compress --samples K`), decoded and compared, with its coding speed.

    python scripts/importance_training_table.py [--steps 2000] [--samples 4] [--images 300]
    python scripts/importance_training_table.py --set mnist --steps 400

Needs ../shared/data. Writes OUT/table.md and OUT/table.csv (--set mnist: OUT/mnist.md, .csv) (OUT: docs/results/importance-training); the
runs go under --work.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from initial_bits import mean_initial_bits  # noqa: E402  (scripts/, this script's folder)
from likelihood_table import coded_archive  # noqa: E402
from vaezip.api import load_model  # noqa: E402
from vaezip.checkpoint import load_checkpoint  # noqa: E402
from vaezip.config import get_preset  # noqa: E402
from vaezip.data import load  # noqa: E402
from vaezip.evaluate import evaluate, repeatable_sampling  # noqa: E402
from vaezip.train import train  # noqa: E402

SETS = {"imagenette32": ("imagenette32-train", "imagenette32-val"), "mnist": ("mnist-train", "mnist-test")}


def importance_bound(model, images: np.ndarray, samples: int, batch: int = 50) -> float:
    """The K-sample importance-weighted bound of images (N, H, W, C) uint8 (one tile each: 32x32, MNIST's 28x28)
    in bits per subpixel."""
    nats = 0.0
    with repeatable_sampling(0, "cpu"), torch.no_grad():
        for start in range(0, len(images), batch):
            pixels = torch.from_numpy(np.ascontiguousarray(images[start:start + batch].transpose(0, 3, 1, 2)))
            weights = model.importance_log_weights(pixels, samples).double()  # B, K
            nats -= float((torch.logsumexp(weights, 1) - math.log(samples)).sum())
    return nats / images.size / math.log(2)


def measure(name: str, steps: int, samples: int, images: np.ndarray, args) -> dict:
    run = args.work / f"{args.preset}-{steps}-k{samples}" if args.set == "imagenette32" else \
        args.work / f"{args.set}-{args.preset}-{steps}-k{samples}"
    started = time.process_time()
    summary = train(run, SETS[args.set][0], get_preset(args.preset), steps=steps, resume=run.exists(),
                    train_overrides=dict(seed=0, val_images=200, val_every=10**9, checkpoint_every=10**9,
                                         kl_warmup_steps=max(1, steps // 4), importance_samples=samples),
                    coded_validation=None)
    train_cpu = time.process_time() - started
    batch_size = load_checkpoint(run)["train_config"]["batch_size"]
    loaded = load_model(run)  # the EMA weights, as the coder gets them
    model = loaded.model.eval()
    k = args.samples
    row = {"training": name, "steps": summary["step"], "train img/s": round(summary["step"] * batch_size / max(train_cpu, 1e-9), 1),
           "ELBO": round(evaluate(model, list(images), tile=32).bound_bpsp, 4),
           f"IW bound K={k}": round(importance_bound(model, images, k), 4),
           # what one tile's latents pop: a stream holds that much before its first bits-back tile (K times it
           # before its first importance-weighted one)
           "initial bits / tile": round(mean_initial_bits(loaded, list(images), whole=args.set == "imagenette32")[0])}
    for count in (1, k):
        coded = coded_archive(name, loaded, list(images), samples=count)
        row.update({f"achieved K={count}": coded["achieved bpsp"],
                    f"encode img/s K={count}": coded["encode img/s"], f"decode img/s K={count}": coded["decode img/s"]})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=list(SETS), default="imagenette32")
    parser.add_argument("--steps", type=int, default=2000, help="the ELBO's training steps")
    parser.add_argument("--samples", type=int, default=4, help="K: training samples and coding samples")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--images", type=int, default=300, help="held-out images: the bounds and one archive")
    parser.add_argument("--out", type=Path, default=Path("docs/results/importance-training"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vaezip-importance-training"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = np.stack([np.asarray(image) for image in load(SETS[args.set][1], limit=args.images)])
    if images.ndim == 3:  # grey: (N, H, W) -> (N, H, W, 1)
        images = images[..., None]
    k = args.samples
    plan = [("ELBO (K = 1)", args.steps, 1),
            (f"IW, K = {k}, equal time", args.steps // k, k),
            (f"IW, K = {k}, equal steps", args.steps, k)]
    rows = []
    for name, steps, samples in plan:  # the table is rewritten after every row: a cut run keeps its rows
        rows.append(measure(name, steps, samples, images, args))
        print(rows[-1], flush=True)
        write_table(rows, args)


def write_table(rows: list[dict], args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "table" if args.set == "imagenette32" else args.set
    with open(args.out / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = " ".join(["python", "scripts/importance_training_table.py"] + ([] if args.set == "imagenette32" else
                       ["--set", args.set]) + ["--steps", str(args.steps), "--samples", str(args.samples), "--images",
                       str(args.images)])
    train_set, test_set = SETS[args.set]
    lines = [f"`{command}`: preset {args.preset}, seed 0 on {train_set}, KL warm-up over the first quarter of "
             f"each run's steps, one CPU thread ({platform.machine()}, torch {torch.__version__}); the first "
             f"{args.images} images of {test_set} (one tile each).", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(value) for value in row.values()) + " |" for row in rows]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
