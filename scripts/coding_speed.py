"""Compress and decompress one image, timed, with the time split into network, probability tables and
entropy coder (everything else: tiling, planes, container), and the parts of those worth watching: the
network's convolutions (and the rate their float64 GEMMs reach) and activation lookups, the encoder's up-front
estimate pass over every tile (float network; numpy's for a shipped model's early-exit sample) and the local
predictor (pricing every tile, coding some). The model is given to both by name, as the commands give it: each
call loads what it needs (a file without a model tile, nothing), and that load is timed, as each command pays it.

    python scripts/coding_speed.py ../shared/data/kodak/kodim23.png [--model NAME] [--device cpu|cuda] [--float]
        [--classical] [--fast] [--repeat N] [--system-allocator]

The C allocator is set as the vaezip command sets it (vaezip/allocator.py) unless --system-allocator.
--float codes with the float network (format 1, what vaezip wrote before the integer-exact coder; decodes
only on the kind of machine that wrote it), for comparison. --fast codes with no network (compress --fast).
Format 16's sections are coded in threads side by side: the predictor's time is then summed over those threads
(the cores' time, which can exceed the command's).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import ans, predictive  # noqa: E402
from vaezip import coding  # noqa: E402
from vaezip.allocator import retain_freed_memory  # noqa: E402
from vaezip.api import compress_images, decompress_images, default_model, load_model  # noqa: E402
from vaezip.estimate import NumpyEstimator  # noqa: E402
from vaezip.images import open_image  # noqa: E402
from vaezip.model import integer  # noqa: E402

SPENT: dict[str, float] = defaultdict(float)
PARTS: dict[str, float] = defaultdict(float)  # within SPENT's buckets or "other": reported apart
FLOPS: dict[str, float] = defaultdict(float)  # the integer-exact convolutions' multiply-adds x 2, per phase


def timed(owner, name: str, bucket: str, into: dict[str, float] = SPENT) -> None:
    if not hasattr(owner, name):
        return
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            into[bucket] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def count_convolution_flops() -> None:
    """Add each integer-exact convolution's 2 x multiply-adds to FLOPS["convolutions"] (the rate the float64
    GEMMs reach: compare it with the CPU's float64 peak)."""
    timed_call = integer.IntConv.__call__

    def counted(self, x):
        y = timed_call(self, x)
        batch, channels = x.shape[:2]
        FLOPS["convolutions"] += 2.0 * batch * self.out_channels * y.shape[2] * y.shape[3] * channels * self.kernel**2
        return y

    integer.IntConv.__call__ = counted


def float64_gemm_rate(side: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a side x side x side float64 matmul on this machine's threads: the ceiling the convolutions'
    GEMMs could reach (best of `repeats`)."""
    a, b = torch.randn(side, side, dtype=torch.float64), torch.randn(side, side, dtype=torch.float64)
    best = math.inf
    for _ in range(repeats + 1):  # the first warms up
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * side**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--float", action="store_true", help="the format-1 float coder, for comparison")
    parser.add_argument("--classical", action="store_true",
                        help="let a classical coding win where it is smaller (by default the model path is timed)")
    parser.add_argument("--fast", action="store_true", help="compress --fast: no network, every tile by the predictor")
    parser.add_argument("--repeat", type=int, default=1,
                        help="code the image this many times each way and report the fastest (the first run of a "
                             "process also builds tables and loads compiled kernels)")
    parser.add_argument("--system-allocator", action="store_true",
                        help="leave the C allocator's settings as they are (the command sets them: vaezip/allocator.py)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not args.system_allocator:
        retain_freed_memory()  # as the vaezip command does
    latent_model = coding.TorchLatentModel
    if args.float:
        import functools

        # encode_archive imports it from vaezip.coding at each call
        coding.TorchLatentModel = functools.partial(latent_model, integer=False)
    image = open_image(args.image)
    spec = args.model or default_model(image.mode)  # both are given the name, as the commands are
    loaded = load_model(spec)  # its name and the classes timed below
    for kind in (coding.TorchPass, coding.IntegerPass):  # float (format 1) and integer-exact (format 2) passes
        for name in ("__init__", "latent_params", "set_latent", "posteriors"):
            timed(kind, name, "network")
        timed(kind, "pixel_table", "tables")
    for name in ("push_gaussian", "pop_gaussian", "push_categorical", "pop_categorical", "push_uniform", "pop_uniform"):
        timed(ans.Stack, name, "coder")
    timed(integer.IntConv, "__call__", "convolutions", PARTS)
    count_convolution_flops()
    timed(integer.Table, "__call__", "activation lookups", PARTS)
    timed(latent_model, "tile_bounds", "estimate pass", PARTS)
    timed(NumpyEstimator, "tile_bounds", "estimate pass", PARTS)  # the early exit's sample of a shipped model
    timed(predictive, "encode", "predictor", PARTS)
    timed(predictive, "push_recorded", "predictor", PARTS)  # a priced tile pushed again (bitsback.Price)
    timed(predictive, "record_adaptive", "predictor", PARTS)  # a stateful tile (formats 9 to 13) recorded
    timed(predictive, "decode", "predictor", PARTS)

    raw_mb = image.width * image.height * len(image.getbands()) / 1e6
    report = {}
    for phase in ("compress", "decompress"):
        for _ in range(args.repeat):  # the fastest run is reported
            SPENT.clear()
            PARTS.clear()
            FLOPS.clear()
            started = time.perf_counter()
            if phase == "compress":
                result = compress_images([("image.png", image)], spec, device=args.device,
                                         classical=args.classical, fast=args.fast)
                data = result.data
            else:
                (_, decoded), = decompress_images(data, spec, device=args.device)
                assert np.array_equal(np.asarray(decoded), np.asarray(image)), "round trip is not exact"
            total = time.perf_counter() - started
            if phase not in report or total < report[phase][0]:
                other = total - sum(SPENT.values())
                report[phase] = (total, dict(SPENT), other, dict(PARTS), FLOPS["convolutions"])
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    coder = "float (format 1)" if args.float else "no network (--fast)" if args.fast else "integer-exact"
    print(f"{args.image}: {image.width}x{image.height} {image.mode}, model {loaded.name}, {coder}, {device}, "
          f"torch {torch.__version__}")
    bound = "no model bound" if math.isnan(result.bound_bpsp) else \
        f"bound {result.bound_bpsp:.4f} ({result.achieved_bpsp / result.bound_bpsp:.4f}x)"
    print(f"achieved {result.achieved_bpsp:.4f} bpsp vs {bound}")
    for phase, (total, spent, other, parts, flops) in report.items():
        split = [f"{k} {v:.2f} s ({v / total:.0%})" for k, v in sorted(spent.items())]
        split.append(f"other {other:.2f} s ({other / total:.0%})")
        print(f"{phase}: {total:.2f} s = {raw_mb / total:.3f} MB/s; {', '.join(split)}")
        print("  of which " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(parts.items()) if v > 0))
        if flops and parts.get("convolutions"):
            print(f"  convolutions: {flops / 1e9:.1f} GFLOP (float64 integer GEMMs) at "
                  f"{flops / parts['convolutions'] / 1e9:.1f} GFLOP/s (a large float64 GEMM here: "
                  f"{float64_gemm_rate():.1f})")


if __name__ == "__main__":
    main()
