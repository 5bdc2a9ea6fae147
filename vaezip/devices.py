"""Which torch device a command runs on ("auto", "cpu" or "cuda"), shared by coding, evaluation and training;
and whether the CPU multiplies bfloat16 in AMX tiles (the encoder's estimates and training use them)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = ("auto", "cpu", "cuda")  # what --device takes (the CLI checks it before torch loads)


def resolve_device(name: str) -> torch.device:
    """The torch.device `name` (one of DEVICE_NAMES) stands for here."""
    import torch  # here: DEVICE_NAMES is read without it

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in DEVICE_NAMES:
        raise ValueError(f"unknown device {name!r}; use {', '.join(DEVICE_NAMES[:-1])} or {DEVICE_NAMES[-1]}")
    return torch.device(name)


def amx_available() -> bool:
    """Whether oneDNN multiplies bfloat16 in AMX tiles here: the CPU has AMX-BF16 (torch's own check; False
    where torch has none), torch uses oneDNN, and ONEDNN_MAX_CPU_ISA (or, where it is unset, its old name
    DNNL_MAX_CPU_ISA) does not keep oneDNN below AMX. Where any of them fails oneDNN would emulate bfloat16,
    slower than float32 (kodim23's estimate: 1.9 s against 0.7 under AVX512_CORE)."""
    import torch

    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if limit not in ("", "ALL", "DEFAULT") and "AMX" not in limit:
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return False
    return bool(capabilities.get("amx_bf16"))
