"""The float network the encoder estimates each tile's cost with, its wide convolutions in bfloat16 where the
CPU multiplies bfloat16 in AMX tiles.

The estimate only chooses which tiles the predictor codes (and whether the model runs at all): the decoder
replays the choice from the file, so it needs no exactness, only accuracy. On a CPU with AMX a bfloat16
convolution of 64-128 channels runs at 1.5-2.8 TFLOP/s against float32's 0.2-0.4 (measured on the 2-core
Xeon, 2026-12-03), so the 3x3 convolutions with at least WIDE_CHANNELS inputs and outputs (nearly all of the
network's work) take bfloat16 inputs and weights, and hand float32 on. The thin ones, which make the latent
and pixel parameters, and everything between the convolutions stay float32: with every convolution in
bfloat16 the estimates of kodim23's 384 tiles came out 0.29 % off (median) and 0.37 % high in sum; with the
wide ones only, 0.05 % off (median, 0.32 % at most) and 0.06 % high in sum, against 0.74 % (median) between
two posterior samples in float32 (`python scripts/estimate_precision.py`).

Elsewhere (no AMX, or not the CPU) the float32 network is the estimator: emulated bfloat16 would be slower."""

from __future__ import annotations

import copy
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vaezip.model.vae import HierarchicalVAE

WIDE_CHANNELS = 64


class Bfloat16Conv2d(nn.Module):
    """A Conv2d computed from bfloat16 inputs and weights (float32 in and out)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().to(torch.bfloat16),
                                                                requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: B, C_in, H, W float32 -> B, C_out, H', W' float32 (the products and sums in bfloat16 tiles)
        out = F.conv2d(x.to(torch.bfloat16), self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups)
        return out.float()


def wide(conv: nn.Module) -> bool:
    """Whether the estimator computes `conv` in bfloat16: a 3x3 Conv2d at least WIDE_CHANNELS wide each way."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.groups == 1
            and min(conv.in_channels, conv.out_channels) >= WIDE_CHANNELS)


def amx_available() -> bool:
    """Whether oneDNN multiplies bfloat16 in AMX tiles here: the CPU has them (torch's own check; False where
    torch has none) and no ONEDNN_MAX_CPU_ISA (or its old name) keeps oneDNN below them, which would emulate
    bfloat16 instead (kodim23's estimate: 1.9 s against float32's 0.7 under AVX512_CORE)."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        limit = os.environ.get(name, "").upper()
        if limit and limit != "ALL" and "AMX" not in limit:
            return False
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def bfloat16_estimator(model: HierarchicalVAE, device: torch.device,
                       convert: Callable[[nn.Module], bool] = wide) -> HierarchicalVAE | None:
    """A copy of `model` (eval mode) with the Conv2d modules `convert` picks (the wide ones) in bfloat16, or
    None where that would not be faster (not the CPU, no AMX, nothing picked). `model` itself is not changed."""
    if device.type != "cpu" or not amx_available() or not any(convert(module) for module in model.modules()):
        return None
    estimator = copy.deepcopy(model).eval()
    for parent in list(estimator.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and convert(child):
                setattr(parent, name, Bfloat16Conv2d(child))
    return estimator
