"""Training throughput (images/s) of each preset: full optimizer steps on random 8-bit images.

    python scripts/throughput.py --presets tiny cpu gpu --size 32 --device cpu
On CUDA the step runs under bf16 autocast, as `vaezip train` does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezip.config import get_preset  # noqa: E402
from vaezip.devices import resolve_device  # noqa: E402
from vaezip.model import HierarchicalVAE  # noqa: E402
from vaezip.train import make_optimizer  # noqa: E402


def measure(preset_name: str, size: int, channels: int, device: torch.device, seconds: float) -> float:
    preset = get_preset(preset_name)
    config = preset.model.__class__(**{**preset.model.__dict__, "image_channels": channels})
    model = HierarchicalVAE(config).to(device)
    optimizer = make_optimizer(model, preset.train)
    batch = torch.randint(0, 256, (preset.train.batch_size, channels, size, size), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, oneDNN / cuDNN kernel selection
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * preset.train.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu", "gpu"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.size}x{args.size}x{args.channels}")
    for name in args.presets:
        rate = measure(name, args.size, args.channels, device, args.seconds)
        print(f"{name}: {rate:.0f} images/s (batch {get_preset(name).train.batch_size})", flush=True)


if __name__ == "__main__":
    main()
