"""vaezip.model.estimator: the encoder's estimates with the wide convolutions in bfloat16 (CPUs with AMX)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codec.tiling import split_tiles
from vaezip import devices
from vaezip.coding import TorchLatentModel
from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE, estimator

CPU = torch.device("cpu")
amx = pytest.mark.skipif(not devices.amx_available(), reason="no AMX on this CPU: the estimator stays float32")


def wide_model() -> HierarchicalVAE:
    """The `cpu` preset (64-128 channels, photo2's shape), randomly initialised."""
    torch.manual_seed(0)
    return HierarchicalVAE(get_preset("cpu").model).eval()


def photo_tiles(count: int = 24):
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:96, 0:128]
    smooth = np.stack([120 + 60 * np.sin(x / 9.0), 100 + 50 * np.cos(y / 7.0), 90 + 0.6 * x + 0.4 * y])
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    return split_tiles(pixels, 32, 1)[:count]


@amx
def test_the_wide_convolutions_and_only_they_run_in_bfloat16_in_a_copy():
    model = wide_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    copy = estimator.bfloat16_estimator(model, CPU)
    converted = {name for name, module in copy.named_modules() if isinstance(module, estimator.Bfloat16Conv2d)}
    # The `cpu` preset's: the encoder's and decoder's 3x3 convolutions of 64-128 channels and the decoder's
    # prior heads; not the stem (12 channels in), the posterior heads (16 out) or the 1x1 projections.
    # 6 encoder and 14 decoder residual convolutions, 7 prior heads: every 3x3 Conv2d of 64 channels or more
    assert len(converted) == 27 and "encoder.stem" not in converted
    assert any(name.endswith("prior_head") for name in converted)
    assert not any("posterior" in name or "proj" in name for name in converted)
    for name in converted:
        conv = model.get_submodule(name)
        assert conv.kernel_size == (3, 3) and min(conv.in_channels, conv.out_channels) >= 64, name
    # The model the coder codes with is untouched: its modules and its float32 weights.
    assert not any(isinstance(module, estimator.Bfloat16Conv2d) for module in model.modules())
    assert all(torch.equal(before[name], tensor) and tensor.dtype == before[name].dtype
               for name, tensor in model.state_dict().items())
    assert not any(parameter.requires_grad for parameter in copy.parameters())


def test_a_bfloat16_convolution_multiplies_bfloat16_and_adds_its_bias_in_float32():
    torch.manual_seed(1)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(2, 64, 8, 8)
    out = estimator.Bfloat16Conv2d(conv)(x)  # B, C, H, W
    sums = F.conv2d(x.bfloat16(), conv.weight.bfloat16(), None, padding=1).float()
    assert out.dtype == torch.float32 and torch.equal(out, sums + conv.bias.detach()[:, None, None])
    assert not torch.equal(out, conv(x))  # not the float32 convolution


@amx
def test_bfloat16_estimates_stay_close_to_the_float32_ones():
    """The shipped photograph model's estimates: far closer to float32's than two posterior samples of the same
    network are to each other."""
    from vaezip.api import load_model

    coder = TorchLatentModel(load_model("photo2").model, CPU)
    tiles = photo_tiles()
    assert isinstance(coder.estimate_network, HierarchicalVAE) and coder.estimate_network is not coder.model
    bfloat16 = np.array(coder.tile_bounds(tiles, estimate=True))
    coder.estimate_network = coder.model  # the float32 network
    float32 = np.array(coder.tile_bounds(tiles, estimate=True))
    resampled = np.array(coder.tile_bounds(tiles, seed=1, estimate=True))
    off, spread = np.abs(bfloat16 / float32 - 1), np.abs(resampled / float32 - 1)
    assert 0 < np.median(off) < 0.25 * np.median(spread)
    assert abs(bfloat16.sum() / float32.sum() - 1) < 0.003


def test_no_bfloat16_estimator_where_it_would_not_be_faster(monkeypatch):
    model = wide_model()
    monkeypatch.setattr(estimator, "amx_available", lambda: True)
    assert estimator.bfloat16_estimator(model, torch.device("cuda")) is None  # not the CPU
    assert estimator.bfloat16_estimator(HierarchicalVAE(get_preset("tiny").model), CPU) is None  # nothing wide
    monkeypatch.setattr(estimator, "amx_available", lambda: False)
    assert estimator.bfloat16_estimator(model, CPU) is None
    coder = TorchLatentModel(model, CPU)
    assert coder.estimate_network is coder.model  # the float32 network estimates


def test_only_the_integer_coders_estimates_use_it(monkeypatch):
    """A float-coded file's (format 1) bounds come from the float model it is coded with, never the copy."""
    made = []
    monkeypatch.setattr("vaezip.coding.bfloat16_estimator", lambda model, device: made.append(model) or None)
    tiles = photo_tiles(4)
    TorchLatentModel(wide_model(), CPU, integer=False).tile_bounds(tiles, estimate=True)
    assert made == []
    TorchLatentModel(wide_model(), CPU).tile_bounds(tiles, estimate=True)
    assert len(made) == 1


def test_amx_counts_only_where_onednn_may_use_it(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert devices.amx_available()
    for limit, expected in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", True), ("ALL", True),
                            ("DEFAULT", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert devices.amx_available() == expected, limit
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # the old name, where the new one is unset
    assert not devices.amx_available()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # the new name wins
    assert devices.amx_available()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # torch without oneDNN
    assert not devices.amx_available()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": False, "amx_tile": True})
    assert not devices.amx_available()
