"""Weights exported as float16 (`export_weights(..., half=True)`, `scripts/ship_model.py --half`): half the
file, the model of exactly those values, coded and decoded like any other (a fresh process, other kernels)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from conftest import OTHER_KERNELS, perturbed_model, run_cli, smooth_rgb
from vaezip.api import compress_images, load_model, read_header
from vaezip.checkpoint import config_to_dict, export_weights
from vaezip.config import get_preset


def _checkpoint(model) -> dict:
    return {"ema": model.state_dict(), "model_config": config_to_dict(model.config), "step": 0}


@pytest.fixture(scope="module")
def model():
    return perturbed_model(dataclasses.replace(get_preset("tiny").model, image_channels=3), seed=5)


def test_half_weights_are_half_the_file_and_the_model_of_those_values(model, tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    export_weights(_checkpoint(model), full, "full")
    export_weights(_checkpoint(model), half, "half", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    with safe_open(str(half), framework="pt") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}
    loaded = load_model(half).model.state_dict()
    for key, value in model.state_dict().items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], value.to(torch.float16).to(torch.float32)), key
    # float16 moved some weights: the float32 model is a different one
    assert any(not torch.equal(loaded[key], value) for key, value in model.state_dict().items())


def test_values_beyond_float16_are_refused(model, tmp_path):
    checkpoint = _checkpoint(model)
    key = next(iter(checkpoint["ema"]))
    checkpoint["ema"] = {**checkpoint["ema"], key: checkpoint["ema"][key] + 1e5}
    with pytest.raises(ValueError, match="float16"):
        export_weights(checkpoint, tmp_path / "big.safetensors", "big", half=True)
    assert not (tmp_path / "big.safetensors").exists()


def test_a_half_model_codes_and_a_fresh_process_under_other_kernels_decodes(model, tmp_path):
    weights = tmp_path / "half.safetensors"
    export_weights(_checkpoint(model), weights, "half", half=True)
    image = Image.fromarray(smooth_rgb(40, 48, seed=2))
    result = compress_images([("w.png", image)], load_model(weights), device="cpu", classical=False,
                             predictor=False)
    assert any(kind == "bitsback" for kind, _ in read_header(result.data).coder.schedule)
    (tmp_path / "w.vz").write_bytes(result.data)
    done = run_cli("decompress", "w.vz", "-m", weights, "-o", "back.png", cwd=tmp_path, env=OTHER_KERNELS)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(image))
