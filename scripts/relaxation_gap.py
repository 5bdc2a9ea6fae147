"""How far a binary-latent model's training relaxation is from the binary latents the coder uses: the bound
of trained runs (ModelConfig.binary_groups > 0) with z in {0, 1} (an eval-mode pass: what vaezip reports and
the coder pays) beside the same pass with DVAE++'s relaxed zeta at several inverse temperatures (a
training-mode pass, the Bernoullis' KL either way), on the first N images of a data set, one tile each.

    python scripts/relaxation_gap.py RUN [RUN ...] [--data imagenette32-val] [--images 300] [--betas 8 16 64]

A relaxed figure is not a bound of anything coded: it says how much of a binary model's loss against
Gaussian latents comes from training through the relaxation (the gap) rather than from what binary latents
can carry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from vaezip.data import load  # noqa: E402


def mean_bpsp(model, pixels: torch.Tensor, relaxed: bool, beta: float) -> float:
    model.train(relaxed)  # training mode: the relaxation; no parameter changes (no_grad, no optimizer)
    with torch.no_grad():
        output = model(pixels, binary_beta=beta)
    model.eval()
    return float((output.bound_bits / output.subpixels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default="imagenette32-val")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--betas", nargs="+", type=float, default=[8.0, 16.0, 64.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = np.stack([np.asarray(image) for image in load(args.data, limit=args.images)])
    if images.ndim == 3:
        images = images[..., None]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # N, C, H, W
    for run in args.runs:
        model = model_from_checkpoint(load_checkpoint(run))  # the EMA weights, as the coder gets them
        if not model.config.binary_groups:
            sys.exit(f"{run}: no binary latent groups")
        torch.manual_seed(0)
        row = {"binary z": mean_bpsp(model, pixels, False, 0.0)}
        for beta in args.betas:
            torch.manual_seed(0)
            row[f"relaxed, beta {beta:g}"] = mean_bpsp(model, pixels, True, beta)
        print(f"{run.name}: " + ", ".join(f"{name} {value:.4f}" for name, value in row.items()), flush=True)


if __name__ == "__main__":
    main()
