"""Shared fixtures. Core tests need no trained weights and no ../shared/data: an untrained `tiny` model still
codes losslessly (only the rate is poor)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaezip.checkpoint import config_to_dict, export_weights
from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE

SHARED_DATA = Path(os.environ.get("VAEZIP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_tiny_weights(path: Path, channels: int, name: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels))
    checkpoint = {"ema": model.state_dict(), "model_config": config_to_dict(model.config), "step": 0}
    export_weights(checkpoint, path, name)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> dict[int, Path]:
    """Untrained tiny models as weights files: {channels: path}."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        1: make_tiny_weights(folder / "tiny-grey.safetensors", 1, "tiny-grey"),
        3: make_tiny_weights(folder / "tiny-rgb.safetensors", 3, "tiny-rgb"),
    }


def run_cli(*args: str, input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`vaezip ARGS` in a fresh process (so decoding never shares state with encoding)."""
    return subprocess.run(
        [sys.executable, "-m", "vaezip", *map(str, args)], input=input, capture_output=True, cwd=cwd, timeout=900
    )
