"""NVAE's residual normal posterior (ModelConfig.residual_posterior): q = N(mean_p + dmu, max(std_p * r, min_std)),
r = std_ratio(raw) = log2(1 + 2**raw). The float model, its integer twin (exact, close to the float one), a real
round trip decoded in a fresh process under other kernels, training, and old files loading unchanged."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import assert_decoder_posteriors_equal_a_second_pass, make_tiny_weights, round_trip_in_fresh_processes
from conftest import smooth_rgb
from conftest import perturbed_model as _perturbed
from conftest import smooth_pixels as _smooth_pixels

from vaezip.config import (
    ConfigError,
    ModelConfig,
    config_to_dict,
    get_preset,
    model_config_from_dict,
)
from vaezip.model import HierarchicalVAE
from vaezip.model.integer import (
    FRACTION_BITS,
    LIMIT_Q,
    STD_RATIO_BITS,
    IntegerVAE,
    _build_tables,
    fixed_to_float,
)
from vaezip.model.layers import smooth_std, std_ratio

ONE = 2.0**FRACTION_BITS


def residual_config(preset: str = "tiny", **changes) -> ModelConfig:
    return dataclasses.replace(get_preset(preset).model, residual_posterior=True, **changes)


# ---------------------------------------------------------------------------------------------- float model


def test_float_posterior_is_the_prior_shifted_and_scaled_and_trains():
    model = _perturbed(residual_config(), seed=0)
    pixels = _smooth_pixels(3)
    walk = model.walk(pixels, 2, 16, 16)
    for _ in range(walk.num_groups):
        block = model.decoder.blocks[walk.group]
        step = walk.step()  # h and the stage as this group sees them
        out = block.posterior_head(torch.nn.functional.silu(torch.cat([walk.h, walk.activations[walk.stage]], 1)))
        z = block.latent_channels
        delta, raw = out[:, :z], out[:, z:]
        assert delta.abs().max() > 1e-3 and raw.abs().max() > 1e-3  # the check below is not vacuous
        assert torch.equal(step.post_mean, step.prior_mean + delta)
        expected_std = torch.maximum(step.prior_std * std_ratio(raw), torch.tensor(model.config.min_std))
        assert torch.equal(step.post_std, expected_std)
        walk.advance(step.post_mean)
    # std_ratio: positive, 1 at 0, ~2**x below 0 and ~x above
    x = torch.tensor([-30.0, -8.0, 0.0, 8.0, 40.0], dtype=torch.float64)
    torch.testing.assert_close(std_ratio(x), torch.tensor([2.0**-30 / math.log(2), 2.0**-8 / math.log(2) * (1 - 2**-9),
                                                           1.0, 8.0 + 2**-8 / math.log(2), 40.0], dtype=torch.float64),
                               rtol=1e-4, atol=0)
    model.train()
    output = model(pixels)
    assert torch.isfinite(output.loss) and output.loss > 0
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.decoder.blocks[0].posterior_head.weight.grad.abs().max() > 0


def test_a_zero_posterior_head_gives_the_prior_and_no_kl():
    """dmu = 0, raw = 0: q = p exactly in the integer model (std_ratio's table is exactly 2**18 at 0) and up to
    float rounding in the float model, so a residual-posterior model starts with every group's KL ~ 0."""
    model = _perturbed(residual_config(), seed=1)
    with torch.no_grad():
        for block in model.decoder.blocks:
            block.posterior_head.weight.zero_()
            block.posterior_head.bias.zero_()
    pixels = _smooth_pixels(3)
    with torch.inference_mode():
        output = model(pixels)
        assert float(output.kl_bits.abs().max()) < 1e-3
        walk = IntegerVAE(model).walk(pixels, 2, 16, 16)
        for _ in range(walk.num_groups):
            prior_mean, prior_std, post_mean, post_std = walk.step()
            assert torch.equal(prior_mean, post_mean) and torch.equal(prior_std, post_std)
            walk.advance(torch.round(post_mean / 64) * 64)


def test_the_plain_posterior_is_unchanged():
    """The same weights without the option: absolute (mean, smooth_std(raw)), as every model before it."""
    residual = _perturbed(residual_config(), seed=2)
    plain = HierarchicalVAE(dataclasses.replace(residual.config, residual_posterior=False)).eval()
    plain.load_state_dict(residual.state_dict())
    pixels = _smooth_pixels(3)
    with torch.inference_mode():
        walk = plain.walk(pixels, 2, 16, 16)
        step = walk.step()
        block = plain.decoder.blocks[0]
        out = block.posterior_head(torch.nn.functional.silu(torch.cat([walk.h, walk.activations[walk.stage]], 1)))
        z = block.latent_channels
        assert torch.equal(step.post_mean, out[:, :z])
        assert torch.equal(step.post_std, smooth_std(out[:, z:], plain.config.min_std))
    assert "std_ratio" not in IntegerVAE(plain).tables  # a plain model never builds the ratio table
    assert "std_ratio" not in _build_tables()  # nor does the shared cache hold it


# ---------------------------------------------------------------------------------------------- integer twin


def test_std_ratio_table_is_exact_at_one_monotone_and_close_to_the_float_function():
    table = IntegerVAE(HierarchicalVAE(residual_config())).tables["std_ratio"]
    assert torch.all(torch.diff(table.values) >= 0)
    assert table(torch.tensor([0.0], dtype=torch.float64)).item() == 2.0**STD_RATIO_BITS
    q = torch.arange(-24 * 2**14, 40 * 2**14, 97, dtype=torch.float64)
    got = table(q) * 2.0**-STD_RATIO_BITS
    expected = std_ratio(q / ONE)
    assert float((got - expected).abs().max()) <= 2.0 ** -(STD_RATIO_BITS + 1) * 1.001  # one rounding
    assert table(torch.tensor([-LIMIT_Q], dtype=torch.float64)).item() == 0.0  # far below: min_std takes over


def test_integer_residual_posterior_is_one_exact_rounding_even_at_the_extremes():
    integer = IntegerVAE(HierarchicalVAE(residual_config()))
    largest_std = float(integer.std(torch.tensor([LIMIT_Q], dtype=torch.float64)))  # the prior std's maximum
    prior_std = torch.tensor([largest_std, largest_std, 16384.0, 16384.0, 333.0, 1.0, 12345.0], dtype=torch.float64)
    raw = torch.tensor([LIMIT_Q, -LIMIT_Q, 0.0, -8 * ONE, 3 * ONE + 7, 5 * ONE, -123457.0], dtype=torch.float64)
    prior_mean = torch.tensor([LIMIT_Q, -LIMIT_Q, 5.0, -5.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    delta = torch.tensor([LIMIT_Q, -LIMIT_Q, -5.0, 7.0, 1.0, -1.0, 0.0], dtype=torch.float64)
    mean, std = integer.residual_posterior_of(prior_mean, prior_std, delta, raw)
    ratio = integer.tables["std_ratio"](raw)
    for i in range(len(raw)):  # Python integers: the exact value, rounded half up
        product = int(prior_std[i]) * int(ratio[i])
        assert product < 2**53
        rounded = (product + 2 ** (STD_RATIO_BITS - 1)) >> STD_RATIO_BITS
        assert std[i].item() == max(rounded, integer.min_std_q), i
        assert mean[i].item() == max(-LIMIT_Q, min(LIMIT_Q, int(prior_mean[i]) + int(delta[i])))
    assert std[2].item() == 16384.0 and std[1].item() == integer.min_std_q


@pytest.mark.parametrize("channels, head_scale, mean_tolerance, std_tolerance",
                         [(1, 1.0, 1e-3, 1e-3), (3, 1.0, 1e-3, 1e-3), (3, 10.0, 1e-2, 5e-3)])
def test_integer_twin_stays_close_to_the_float_model(channels, head_scale, mean_tolerance, std_tolerance):
    """The posterior means and stds close to the float model's (absolute, relative), and the pixels' cost under
    the integer tables within 1 % of the float tables' (as test_integer.py holds the plain model). Posterior
    heads scaled by 10 spread the std ratios over ~0.02..7 (the perturbed model's alone stay in 0.8..1.2)."""
    model = _perturbed(residual_config("cpu", image_channels=channels), seed=3)
    with torch.no_grad():
        for block in model.decoder.blocks:
            block.posterior_head.weight.mul_(head_scale)
            block.posterior_head.bias.mul_(head_scale)
    integer = IntegerVAE(model)
    pixels = _smooth_pixels(channels)
    worst_mean = worst_std = 0.0
    with torch.inference_mode():
        walk_f, walk_i = model.walk(pixels, 2, 16, 16), integer.walk(pixels, 2, 16, 16)
        for _ in range(walk_i.num_groups):
            step = walk_f.step()
            _, _, post_mean, post_std = walk_i.step()
            mean_f, std_f = step.post_mean.double().numpy(), step.post_std.double().numpy()
            worst_mean = max(worst_mean, float(np.abs(fixed_to_float(post_mean) - mean_f).max()))
            worst_std = max(worst_std, float(np.abs(fixed_to_float(post_std) / std_f - 1).max()))
            z = torch.round(post_mean / 64) * 64
            walk_i.advance(z)
            walk_f.advance((z / ONE).float())
        params_f, params_i = walk_f.pixel_params(), walk_i.pixel_params()
        bits_f = bits_i = 0.0
        for c in range(channels):
            table = integer.likelihood.channel_table(params_i, pixels, c)
            value = pixels[:, c, :, :, None].long()
            bits_i += float((24 - torch.log2(table.gather(-1, value).double())).sum())
            float_table = model.likelihood.channel_table(params_f, pixels, c)
            bits_f += float(-torch.log2(float_table.gather(-1, value).double()).sum())
    assert worst_mean < mean_tolerance, worst_mean
    assert worst_std < std_tolerance, worst_std
    assert abs(bits_i - bits_f) / bits_f < 0.01, (bits_i, bits_f)


def test_decoder_posteriors_equal_a_second_pass():
    """The decoder's posteriors from its prior-only walk (states and priors) equal a walk begun with pixels."""
    model = _perturbed(residual_config(), seed=4)
    integer = IntegerVAE(model)
    pixels = _smooth_pixels(3, seed=4)
    assert_decoder_posteriors_equal_a_second_pass(integer, pixels)


# ---------------------------------------------------------------------------------------------- coding


def test_round_trip_decodes_exactly_in_a_fresh_process_under_other_kernels(tmp_path):
    from vaezip.api import load_model, read_header

    weights = make_tiny_weights(tmp_path / "tiny-residual.safetensors", 3, "tiny-residual", seed=5,
                                residual_posterior=True)
    assert load_model(weights).model.config.residual_posterior
    result = round_trip_in_fresh_processes(tmp_path, weights, smooth_rgb(40, 44, seed=5))
    header = read_header(result.data)
    assert header.model_name == "tiny-residual" and "bitsback" in {kind for kind, _ in header.coder.schedule}


# ---------------------------------------------------------------------------------------------- config and files


def test_old_configs_load_without_the_field_and_plain_configs_are_written_as_before():
    plain = get_preset("tiny").model
    data = config_to_dict(plain)
    assert "residual_posterior" not in data  # byte for byte what was written before the option
    assert model_config_from_dict(data).residual_posterior is False
    assert model_config_from_dict({**data, "residual_posterior": False}) == plain
    residual = config_to_dict(residual_config())
    assert residual["residual_posterior"] is True
    assert model_config_from_dict(json.loads(json.dumps(residual))) == residual_config()
    old = {key: value for key, value in data.items() if key != "pixel_context"}
    assert model_config_from_dict(old, format_version=1) == plain
    with pytest.raises(ConfigError, match="residual_posterior"):
        model_config_from_dict({**old, "residual_posterior": True}, format_version=1)
    for bad in (1, 0, "true", None):
        with pytest.raises(ConfigError, match="residual_posterior must be true or false"):
            model_config_from_dict({**data, "residual_posterior": bad})


def test_plain_weights_files_are_unchanged_and_shipped_models_load_as_before(tmp_path):
    """A plain model's weights file has no residual_posterior key (the conftest tiny models, which
    tests/test_golden.py pins by sha256 through golden.vz, are byte-identical); every shipped model loads, its
    sha256 checked against the manifest, with residual_posterior False."""
    from safetensors import safe_open

    from vaezip import zoo
    from vaezip.api import load_model

    path = make_tiny_weights(tmp_path / "plain.safetensors", 3, "plain")
    with safe_open(str(path), framework="pt") as handle:
        description = json.loads(handle.metadata()["vaezip"])
    assert "residual_posterior" not in description["model_config"]
    names = list(zoo.manifest()["models"])
    assert names
    for name in names:
        loaded = load_model(name)
        assert loaded.model.config.residual_posterior is False, name
        assert "residual_posterior" not in config_to_dict(loaded.model.config)
        assert not any(block.residual_posterior for block in loaded.model.decoder.blocks)


def test_training_a_residual_model_and_refusing_an_absolute_start(tmp_path, tiny_npz):
    from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from vaezip.train import train

    data = tiny_npz
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    summary = train(tmp_path / "run", data, get_preset("tiny"), steps=2, train_overrides=overrides,
                    residual_posterior=True, coded_validation=None)
    assert summary["step"] == 2
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["model_config"]["residual_posterior"] is True
    assert model_from_checkpoint(checkpoint).config.residual_posterior
    # resumed without the flag: still residual (the checkpoint's config decides)
    assert train(tmp_path / "run", data, get_preset("tiny"), steps=3, resume=True, coded_validation=None)["step"] == 3
    # a plain model cannot start a residual one: its posterior heads output absolute parameters
    train(tmp_path / "plain", data, get_preset("tiny"), steps=1, train_overrides=overrides, coded_validation=None)
    with pytest.raises(CheckpointError, match="residual-posterior"):
        train(tmp_path / "warm", data, get_preset("tiny"), steps=1, train_overrides=overrides,
              init=str(tmp_path / "plain"), residual_posterior=True, coded_validation=None)
    with pytest.raises(CheckpointError, match="residual-posterior"):
        train(tmp_path / "plain", data, get_preset("tiny"), steps=2, resume=True, residual_posterior=True,
              coded_validation=None)
    # a residual model starts a residual run, with or without the flag
    warm = train(tmp_path / "warm2", data, get_preset("tiny"), steps=1, train_overrides=overrides,
                 init=str(tmp_path / "run"), coded_validation=None)
    started = load_checkpoint(tmp_path / "warm2")
    assert warm["step"] == 1 and started["model_config"]["residual_posterior"] is True
    assert started["init"]["name"] == "run" and len(started["init"]["sha256"]) == 64
