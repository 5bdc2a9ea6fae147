"""DVAE++'s latent options at equal training (same preset, steps, data, seed, one thread each): Gaussian
latents (the default); binary latents (ModelConfig.binary_groups): the top group binary, every group binary,
every group binary at a sharper relaxation (beta 16), every group binary with four times the latent channels
(a binary latent carries at most one bit); a global group per tile (ModelConfig.global_latents: 16 latents),
alone and with the top group binary. Per row, as scripts/likelihood_table.py measures
its rows: training images per CPU second, the bound on held-out images, the achieved rate of one real archive
of them through the model path (decoded and compared), coding speed each way, and the initial bits a stream
needs before its first bits-back tile (scripts/initial_bits.py: a binary latent pops at most 20 bits and
usually under one; a Gaussian one on the grid about 8).

    python scripts/latent_table.py [--steps 2000] [--preset tiny] [--images 300] \
        [--sets imagenette32 mnist] [--only ROW ...] [--out docs/results/latents] [--work /tmp/vaezip-binary]

Needs ../shared/data. Writes OUT/table.md and OUT/table.csv (with --only, the other rows of an earlier
table.csv stay); the training runs go under --work.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from likelihood_table import SETS, measure  # noqa: E402  (scripts/, this script's folder)
from vaezip.config import get_preset  # noqa: E402
from vaezip.data import load  # noqa: E402

ROWS = {  # name: (ModelConfig options, TrainConfig options, latent channels per stage: a factor)
    "gaussian latents (default)": ({}, {}, 1),
    "top group binary": ({"binary_groups": 1}, {}, 1),
    "every group binary": ({"binary_groups": "all"}, {}, 1),
    "every group binary, beta 16": ({"binary_groups": "all"}, {"binary_beta": 16.0}, 1),
    # a binary latent carries at most one bit: four times as many of them
    "every group binary, 4x latent channels": ({"binary_groups": "all"}, {}, 4),
    "global group (16)": ({"global_latents": 16}, {}, 1),
    "global group (16), top group binary": ({"global_latents": 16, "binary_groups": 1}, {}, 1),
}


def _number(text: str):
    """A CSV cell as the number it was written from (or the text)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--images", type=int, default=300, help="held-out images: the bound and one archive")
    parser.add_argument("--sets", nargs="+", default=["imagenette32"], choices=list(SETS))
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="these rows only")
    parser.add_argument("--out", type=Path, default=Path("docs/results/latents"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vaezip-binary"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    groups = get_preset(args.preset).model.num_groups
    rows = []
    for set_name in args.sets:
        args.set = set_name
        train_set, test_set = SETS[set_name]
        test_images = [np.asarray(image) for image in load(test_set, limit=args.images)]
        for name, (options, train_options, factor) in ROWS.items():
            if args.only and name not in args.only:
                continue
            options = {key: groups if value == "all" else value for key, value in options.items()}
            preset = get_preset(args.preset)
            if factor != 1:
                stages = tuple(dataclasses.replace(stage, latent_channels=stage.latent_channels * factor)
                               for stage in preset.model.stages)
                preset = dataclasses.replace(preset, model=dataclasses.replace(preset.model, stages=stages))
            row = measure(name, options, train_set, test_images, args, train_options, preset=preset,
                          label=f"{'-'.join(f'{k}={v}' for k, v in {**options, **train_options}.items())}"
                                f"-latents{factor}x" if factor != 1 else None)
            row = {"set": row.pop("set"), "latents": name, **{k: v for k, v in row.items() if k != "likelihood"}}
            print(row, flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    merged = bool(args.only and (args.out / "table.csv").exists())
    if merged:  # the other rows of an earlier run stay
        with open(args.out / "table.csv", newline="") as handle:
            earlier = [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]
        fresh = {(row["set"], row["latents"]) for row in rows}
        rows = [row for row in earlier if (row["set"], row["latents"]) not in fresh] + rows
        order = {name: index for index, name in enumerate(ROWS)}
        rows.sort(key=lambda row: (row["set"], order.get(row["latents"], len(order))))
    with open(args.out / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python scripts/latent_table.py " + shlex.join(sys.argv[1:])
    lines = ["# Latent options (DVAE++) at equal training\n",
             f"`{command.strip()}`: preset {args.preset} ({groups} latent groups), {args.steps} steps of seed 0 on "
             f"each training set, one CPU thread ({platform.machine()}, torch {torch.__version__}); bound and one "
             f"real archive (model path only) of the first {args.images} test images, decoded and compared."
             + (" The rows it did not name (--only) come from an earlier run into the same folder (see the "
                "README there).\n" if merged else "\n"),
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
