"""The float network the encoder estimates each tile's cost with, its wide convolutions in bfloat16 where the
CPU multiplies bfloat16 in AMX tiles.

The estimate only chooses which tiles the predictor codes (and whether the model runs at all): the decoder
replays the choice from the file, so it needs no exactness, only accuracy. On a CPU with AMX a bfloat16
convolution of 64-128 channels runs at 1.5-2.8 TFLOP/s against float32's 0.2-0.4 (measured on the 2-core
Xeon, 2026-12-03), so the 3x3 convolutions with at least WIDE_CHANNELS inputs and outputs (nearly all of the
network's work; in photo2 also the decoder's prior heads, 64-128 channels wide) take bfloat16 inputs and
weights: AMX multiplies them and sums in float32, the output is rounded to bfloat16 and handed on as float32
with the bias added in float32. The others (the stem, the posterior heads, the latent projections, the 2x2
downsamplings and 1x1 upsamplings), the pixel head and everything between stay float32. With every
convolution in bfloat16 the estimates of kodim23's 384 tiles came out 0.26 % off (median) and 0.33 % high in
sum; with the wide ones only, 0.05 % off (median; 0.43 % at most) and 0.06 % high in sum, against 0.74 %
(median) between two posterior samples in float32 (`python scripts/estimate_precision.py
../shared/data/kodak/kodim23.png`, docs/results/photo2/estimate-precision.md).

Elsewhere (no AMX, or not the CPU) the float32 network is the estimator: emulated bfloat16 would be slower.
A file's bytes may therefore differ between machines with and without AMX (another choice of tiles), as they
may between any two float kernels; every such file decodes anywhere."""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vaezip.devices import amx_available
from vaezip.model.vae import HierarchicalVAE

WIDE_CHANNELS = 64


class Bfloat16Conv2d(nn.Module):
    """A Conv2d computed from bfloat16 inputs and weights (float32 in and out)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: B, C_in, H, W float32 -> B, C_out, H', W' float32: bfloat16 products summed in float32 (AMX), the
        # sums rounded to bfloat16 on the way out, the bias (float32) added after
        out = F.conv2d(x.to(torch.bfloat16), self.weight, None, self.stride, self.padding, self.dilation,
                       self.groups).float()
        return out if self.bias is None else out + self.bias[:, None, None]


def wide(conv: nn.Module) -> bool:
    """Whether the estimator computes `conv` in bfloat16: a 3x3 Conv2d at least WIDE_CHANNELS wide each way."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.groups == 1
            and min(conv.in_channels, conv.out_channels) >= WIDE_CHANNELS)


def bfloat16_estimator(model: HierarchicalVAE, device: torch.device,
                       convert: Callable[[nn.Module], bool] = wide) -> HierarchicalVAE | None:
    """A copy of `model` (eval mode) with the Conv2d modules `convert` picks (the wide ones) in bfloat16, or
    None where that would not be faster (not the CPU, no AMX, nothing picked). `model` itself is not changed."""
    if device.type != "cpu" or not amx_available() or not any(convert(module) for module in model.modules()):
        return None
    estimator = copy.deepcopy(model).eval().requires_grad_(False)
    for parent in list(estimator.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and convert(child):
                setattr(parent, name, Bfloat16Conv2d(child))
    return estimator
