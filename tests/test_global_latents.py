"""DVAE++'s global latents, per tile (ModelConfig.global_latents): a group of D latents before the top-down
groups, prior N(0, I), posterior from the mean of the encoder's top activation. The float model, its integer
twin (an exact mean, the same heads), real round trips decoded in a fresh process under other kernels (alone
and with the other latent options), the pinned first file, evaluation, training and the config rules."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_decoder_posteriors_equal_a_second_pass, check_pinned_model_file, make_tiny_weights, perturbed_model,
    round_trip_in_fresh_processes, run_cli, smooth_pixels, smooth_rgb,
)

from vaezip.config import ConfigError, config_to_dict, get_preset, model_config_from_dict, parameter_count
from vaezip.model.integer import ONE, IntegerVAE, fixed_to_float
from vaezip.model.vae import kl_balance_coefficients


def global_config(dims: int = 8, preset: str = "tiny", **changes):
    return dataclasses.replace(get_preset(preset).model, global_latents=dims, **changes)


def test_the_global_group_comes_first_with_a_standard_normal_prior_and_trains():
    config = global_config(8, "cpu")
    model = perturbed_model(config, seed=0)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    pixels = smooth_pixels(3)
    with torch.no_grad():
        walk = model.walk(pixels, 2, 16, 16)
        assert walk.num_groups == config.num_groups + 1
        step = walk.step()
        assert step.prior_mean.shape == (2, 8, 1, 1) and not step.binary
        assert torch.equal(step.prior_mean, torch.zeros(2, 8, 1, 1)) and torch.equal(step.prior_std, torch.ones(2, 8, 1, 1))
        pooled = walk.activations[-1].mean(dim=(2, 3), keepdim=True)
        out = model.decoder.global_posterior(torch.nn.functional.silu(pooled))
        assert torch.equal(step.post_mean, out[:, :8])
        before = walk.h.clone()
        walk.advance(step.post_mean)
        shift = model.decoder.global_projection(step.post_mean)  # the same shift at every position
        assert torch.allclose(walk.h, before + shift)
    model.train()
    output = model(pixels)
    assert output.kl_bits.shape == (config.num_groups + 1,) and float(output.kl_bits[0].detach()) > 0
    output.loss.backward()
    assert float(model.decoder.global_posterior.weight.grad.abs().max()) > 0


def test_the_integer_twin_pools_exactly_and_stays_close_to_the_float_model():
    model = perturbed_model(global_config(8, "cpu"), seed=1)
    integer = IntegerVAE(model)
    pixels = smooth_pixels(3, seed=1)
    with torch.inference_mode():
        walk_i, walk_f = integer.walk(pixels, 2, 16, 16), model.walk(pixels, 2, 16, 16)
        prior_mean, prior_std, post_mean, post_std = walk_i.step()
        assert torch.equal(prior_mean, torch.zeros(2, 8, 1, 1, dtype=torch.float64))
        assert torch.equal(prior_std, torch.full((2, 8, 1, 1), ONE, dtype=torch.float64))
        top = walk_i.activations[-1]
        sums = top.sum(dim=(2, 3))  # Python integers below: the exact floor of the mean
        expected = torch.tensor([[int(v) // (top.shape[2] * top.shape[3]) for v in row] for row in sums.tolist()],
                                dtype=torch.float64)
        out = integer.global_posterior(integer.silu(expected[:, :, None, None]))
        assert torch.equal(post_mean, out[:, :8]) and torch.equal(post_std, integer.std(out[:, 8:]))
        step = walk_f.step()
        assert np.abs(fixed_to_float(post_mean) - step.post_mean.double().numpy()).max() < 1e-3
        assert np.abs(fixed_to_float(post_std) / step.post_std.double().numpy() - 1).max() < 1e-3


@pytest.mark.parametrize("options", [{}, {"residual_posterior": True}, {"binary_groups": 1}],
                         ids=["global", "with-residual-posterior", "with-binary-groups"])
def test_decoder_posteriors_equal_a_second_pass(options):
    model = perturbed_model(global_config(4, **options), seed=2)
    integer = IntegerVAE(model)
    got = assert_decoder_posteriors_equal_a_second_pass(integer, smooth_pixels(3, seed=2))
    assert len(got) == integer.walk(None, 1, 16, 16).num_groups


@pytest.mark.parametrize("options, samples", [({}, 1), ({"residual_posterior": True}, 1), ({"binary_groups": 2}, 1),
                                              ({"pixel_context": 8}, 1), ({}, 2)],
                         ids=["global", "with-residual-posterior", "with-binary-groups", "with-pixel-context",
                              "importance-weighted"])
def test_round_trip_decodes_exactly_in_a_fresh_process_under_other_kernels(tmp_path, options, samples):
    from vaezip.api import read_header

    weights = make_tiny_weights(tmp_path / "tiny-global.safetensors", 3, "tiny-global", seed=5, global_latents=8,
                                **options)
    result = round_trip_in_fresh_processes(tmp_path, weights, smooth_rgb(40, 44, seed=5), samples=samples)
    kinds = {kind for kind, _ in read_header(result.data).coder.schedule}
    assert ("bitsback-iw2" if samples == 2 else "bitsback") in kinds, kinds
    report = result.images[0]
    assert abs(report.payload_bits - report.bound_bits) < 0.05 * report.bound_bits


def test_the_global_golden_file_decodes_in_a_fresh_process_and_re_encodes_byte_for_byte(tmp_path):
    """tests/data/global/model.vz (`python scripts/make_golden.py --global`): golden.png through the seeded
    untrained tiny model with a global group of 8. A failure means how such models are coded changed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_golden import global_weights

    header = check_pinned_model_file("global", global_weights(tmp_path), tmp_path)
    assert header.model_name == "tiny-global"


def test_eval_lists_the_global_group_first(tmp_path):
    from vaezip.api import load_model
    from vaezip.evaluate import evaluate

    weights = make_tiny_weights(tmp_path / "tiny-global.safetensors", 3, "tiny-global", seed=6, global_latents=8)
    model = load_model(weights).model
    images = [smooth_pixels(3, batch=1, size=32, seed=6)[0].permute(1, 2, 0).numpy()]
    result = evaluate(model, images, tile=32)
    assert [group.resolution for group in result.groups] == ["1x1", "8x8", "16x16"]
    assert result.groups[0].latent_dims == 8
    assert math.isclose(sum(g.bpsp for g in result.groups), result.kl_bpsp, rel_tol=1e-9)


def test_configs_name_the_option_only_where_it_is_not_the_default():
    data = config_to_dict(get_preset("tiny").model)
    assert "global_latents" not in data
    assert model_config_from_dict(data).global_latents == 0
    config = global_config(16)
    assert model_config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config
    for bad in (-1, 257, True, 2.0):
        with pytest.raises(ConfigError, match="global_latents"):
            model_config_from_dict({**data, "global_latents": bad})


def test_training_global_latents_and_refusing_a_start_without_them(tmp_path):
    from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from vaezip.train import train

    x = np.random.default_rng(0).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    data = str(tmp_path / "tiny.npz")
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    summary = train(tmp_path / "run", data, get_preset("tiny"), steps=3, train_overrides=overrides,
                    model_options={"global_latents": 4}, coded_validation=None)
    assert summary["step"] == 3 and math.isfinite(summary["val_bpsp"] or 0.0)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["model_config"]["global_latents"] == 4
    assert model_from_checkpoint(checkpoint).decoder.global_posterior.out_channels == 8
    # resumed: still the same group; a start model with another group size is refused
    assert train(tmp_path / "run", data, get_preset("tiny"), steps=4, resume=True, coded_validation=None)["step"] == 4
    with pytest.raises(CheckpointError, match="--global-latents 8: the run to resume"):
        train(tmp_path / "run", data, get_preset("tiny"), steps=5, resume=True, model_options={"global_latents": 8},
              coded_validation=None)
    with pytest.raises(CheckpointError, match="--global-latents 8: the start model"):
        train(tmp_path / "warm", data, get_preset("tiny"), steps=1, train_overrides=overrides,
              init=str(tmp_path / "run"), model_options={"global_latents": 8}, coded_validation=None)
    kl = train(tmp_path / "balanced", data, get_preset("tiny"), steps=2, coded_validation=None,
               train_overrides={**overrides, "kl_warmup_steps": 10, "kl_balance": True},
               model_options={"global_latents": 4})
    assert kl["step"] == 2
    done = run_cli("train", data, "--preset", "tiny", "--steps", "1", "--out", tmp_path / "cli", "--global-latents", "-2")
    error = done.stderr.decode().strip()
    assert done.returncode == 2 and "--global-latents must not be negative" in error and len(error.splitlines()) == 1


def test_kl_balancing_leaves_the_global_group_at_one_and_balances_the_others():
    model = perturbed_model(global_config(8), seed=7)
    pixels = smooth_pixels(3, seed=7)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = float(model(pixels, kl_balance=True).loss)
    torch.manual_seed(0)
    padded, mask = model._padded(pixels, None)
    with torch.no_grad():
        kls, sizes, nll, _ = model._sampled_pass(padded, mask, log_ratio=False)
    assert sizes[0] == 1 and kls.shape[1] == 3
    coefficients = kl_balance_coefficients(kls[:, 1:], sizes[1:])
    weighted = kls[:, 0] + (kls[:, 1:] * coefficients).sum(1)
    expected = float(((weighted + nll) / (3 * 16 * 16)).mean() / math.log(2.0))
    assert math.isclose(loss, expected, rel_tol=1e-6), (loss, expected)
    everything = (kls * kl_balance_coefficients(kls, sizes)).sum(1)  # the global group balanced too
    assert float((everything - weighted).abs().max()) > 1e-3 * float(weighted.abs().max())  # the check can fail


def test_a_global_group_added_to_a_trained_model_starts_as_that_model(tmp_path):
    """--init MODEL --global-latents D: the new group's projection starts at zero and its posterior at its
    prior, so every pixel distribution is the start model's and the group costs nothing until it learns."""
    from vaezip.checkpoint import load_checkpoint, model_from_checkpoint
    from vaezip.train import train

    x = np.random.default_rng(1).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    data = str(tmp_path / "tiny.npz")
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    train(tmp_path / "plain", data, get_preset("tiny"), steps=2, train_overrides=overrides, coded_validation=None)
    train(tmp_path / "warm", data, get_preset("tiny"), steps=1, train_overrides={**overrides, "lr": 0.0},
          init=str(tmp_path / "plain"), model_options={"global_latents": 4}, coded_validation=None)
    plain = model_from_checkpoint(load_checkpoint(tmp_path / "plain"))
    warm = model_from_checkpoint(load_checkpoint(tmp_path / "warm"))
    assert warm.config.global_latents == 4 and warm.config == dataclasses.replace(plain.config, global_latents=4)
    assert not warm.decoder.global_projection.weight.any() and not warm.decoder.global_projection.bias.any()
    with torch.no_grad():  # the new group's posterior is its prior: no KL to pay
        output = warm.eval()(smooth_pixels(3, size=8))
    assert float(output.kl_bits[0]) < 1e-6
    state = warm.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key
    pixels = smooth_pixels(3, size=8)
    with torch.inference_mode():
        walk_plain, walk_warm = IntegerVAE(plain).walk(pixels, 2, 8, 8), IntegerVAE(warm).walk(pixels, 2, 8, 8)
        _, _, post_mean, _ = walk_warm.step()
        walk_warm.advance(torch.round(post_mean / 64) * 64)  # any global latent: no effect yet
        for _ in range(walk_plain.num_groups):
            expected = walk_plain.step()
            got = walk_warm.step()
            assert all(torch.equal(a, b) for a, b in zip(expected, got))
            z = torch.round(expected[2] / 64) * 64
            walk_plain.advance(z)
            walk_warm.advance(z)
        assert torch.equal(walk_plain.pixel_params(), walk_warm.pixel_params())
