"""The time of one training step (forward, backward, Adam) of a preset's model, in float32 and under the
bfloat16 autocast `vaezip train` uses on a CPU with AMX (vaezip/train.py: bfloat16_steps), alternating so that
a busy machine slows both alike.

    python scripts/train_step_speed.py [--preset cpu] [--batch 32] [--crop 32] [--steps 8] [--rounds 3]

Random pixels and a randomly initialised model: only the time is measured."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip import devices  # noqa: E402
from vaezip.config import get_preset  # noqa: E402
from vaezip.model import HierarchicalVAE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round (after one untimed)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HierarchicalVAE(get_preset(args.preset).model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    pixels = torch.randint(0, 256, (args.batch, model.config.image_channels, args.crop, args.crop), dtype=torch.uint8)
    times: dict[str, list[float]] = {"float32": [], "bfloat16 autocast": []}
    for _ in range(args.rounds):
        for name in times:
            for step in range(args.steps + 1):
                started = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name != "float32"):
                    loss = model(pixels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step:  # the first of a round warms the kernels of its precision
                    times[name].append(time.perf_counter() - started)
    print(f"preset {args.preset}, batch {args.batch} of {args.crop}x{args.crop}, {torch.get_num_threads()} threads, "
          f"AMX for vaezip: {devices.amx_available()}")
    for name, spent in times.items():
        print(f"{name}: {statistics.median(spent):.3f} s a step (median of {len(spent)})")


if __name__ == "__main__":
    main()
