"""Files decode bit-exactly whatever kernels, instruction set or thread count the CPU runs (integer-exact
inference): the portability matrix of scripts/portability.py, every encode and decode in a fresh process.

ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY stand in for other machines (a laptop's AVX2, ARM, a GPU): float
convolutions give other last bits under them, which is what made format-1 files undecodable elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vaezip_portability", ROOT / "scripts" / "portability.py")
portability = importlib.util.module_from_spec(_spec)
sys.modules["vaezip_portability"] = portability
_spec.loader.exec_module(portability)


def test_every_mode_and_an_archive_decode_under_every_kernel_setting():
    """Encoded under each setting: byte-identical files. Decoded under each setting (the default's files) and
    under the default (each setting's files): every image exact."""
    report = portability.matrix(shipped=False)
    assert len(set(report["encode"].values())) == 1, report["encode"]
    for pair, outcome in report["decode"].items():
        assert set(outcome.values()) == {"ok"}, (pair, outcome)
    assert len(report["decode"]) == 2 * len(portability.SETTINGS) - 1


OPS_SCRIPT = r"""
import hashlib, json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from vaezip.api import load_model
from vaezip.model.integer import IntConv, IntegerVAE

model = load_model(sys.argv[2]).model  # loaded, not initialised here: torch's samplers differ by kernel
integer = IntegerVAE(model)
rng = np.random.default_rng(1)
pixels = torch.from_numpy(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
h = lambda t: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
out = {}
x = torch.from_numpy(rng.integers(-2**20, 2**20, (4, 64, 16, 16)).astype(np.float64))
conv = IntConv(model.encoder.stages[0][0].conv_in.weight, model.encoder.stages[0][0].conv_in.bias, 1, 1)
out["conv3x3"] = h(conv(x))
out["conv2x2-stride2"] = h(IntConv(model.encoder.downsamples[0].weight, model.encoder.downsamples[0].bias, 2)(x))
for name in ("silu", "softplus", "tanh", "inv_scale", "sigmoid", "exp"):
    out[name] = h(integer.tables[name](x * 4))
with torch.inference_mode():
    walk = integer.walk(pixels, 4, 32, 32)
    steps = []
    for group in range(walk.num_groups):
        prior_mean, prior_std, post_mean, post_std = walk.step()
        steps += [prior_mean, prior_std, post_mean, post_std]
        walk.advance(torch.round(post_mean / 64) * 64)
    out["latent parameters"] = h(torch.cat([s.flatten() for s in steps]))
    params = walk.pixel_params()
    out["pixel parameters"] = h(params)
    for c in range(3):
        out[f"table {c}"] = h(integer.likelihood.channel_table(params, pixels, c))
    # The float network under the same settings, for contrast: its last bits may move with the kernels.
    float_params = model.walk(pixels, 4, 32, 32)
    for group in range(float_params.num_groups):
        float_params.advance(float_params.step().post_mean)
    out["float pixel parameters (not used by the coder)"] = h(float_params.pixel_params())
print(json.dumps(out))
"""


def test_each_integer_op_gives_the_same_bits_under_other_kernels(tmp_path):
    """Convolutions, lookup tables, the latent and pixel parameters of a full walk, and the pixel tables of a
    model of the shipped shape: the same bits under every setting, each in a fresh process."""
    import torch

    from vaezip.checkpoint import config_to_dict, export_weights
    from vaezip.config import get_preset
    from vaezip.model import HierarchicalVAE

    torch.manual_seed(0)
    model = HierarchicalVAE(get_preset("cpu").model)  # widths 64-128, 8 mixtures: the shipped shape
    with torch.no_grad():  # trained heads are not zero: make every layer matter
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    weights = tmp_path / "cpu.safetensors"
    export_weights({"ema": model.state_dict(), "model_config": config_to_dict(model.config), "step": 0}, weights, "cpu")
    results = {}
    for setting, env in portability.SETTINGS.items():
        done = subprocess.run([sys.executable, "-c", OPS_SCRIPT, str(ROOT), str(weights)], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=600)
        assert done.returncode == 0, done.stderr
        results[setting] = json.loads(done.stdout.splitlines()[-1])
    reference = results["default"]
    for setting, hashes in results.items():
        for op, value in hashes.items():
            if not op.startswith("float"):
                assert value == reference[op], (setting, op)
