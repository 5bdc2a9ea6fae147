"""Model options of ModelConfig beyond the defaults. The pixel likelihoods beside the logistic mixture
(likelihood, channel_coupling): sigma-VAE's discretized Gaussian with a learned shared sigma and its categorical
decoder, and the mixture without channel coupling: float models, their integer twins (exact tables, close to
the float ones), real round trips decoded in a fresh process under other kernels, training and the config
rules. The pixel-context head's multi-scale order (context_order): config and training rules (its phases and
round trips: tests/test_model.py, test_integer.py, test_roundtrip.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import OTHER_KERNELS, make_tiny_weights, perturbed_model, round_trip_in_fresh_processes, run_cli, smooth_rgb
from conftest import smooth_pixels as _smooth_pixels

from vaezip.config import (
    ConfigError,
    ModelConfig,
    config_to_dict,
    get_preset,
    model_config_from_dict,
    parameter_count,
)
from vaezip.model import HierarchicalVAE
from vaezip.model.integer import (
    CATEGORICAL_BITS,
    CDF_BITS,
    PROBABILITY_BITS,
    IntegerVAE,
    _normal_cdf,
    _normal_cdf_table,
)

ONE = 2.0**14
OPTIONS = {
    "uncoupled": {"channel_coupling": False},
    "gaussian": {"likelihood": "gaussian"},
    "gaussian-optimal": {"likelihood": "gaussian-optimal"},
    "categorical": {"likelihood": "categorical"},
}


def _config(name: str, preset: str = "tiny", **changes) -> ModelConfig:
    return dataclasses.replace(get_preset(preset).model, **OPTIONS[name], **changes)


def _perturbed(config: ModelConfig, seed: int, scale: float = 0.02) -> HierarchicalVAE:
    """conftest.perturbed_model, with a Gaussian's sigma wide enough that no pixel of the test images lies
    beyond the integer CDF table (a trained model's pixels do not)."""
    model = perturbed_model(config, seed, scale)
    if config.likelihood == "gaussian":
        with torch.no_grad():
            model.likelihood.log_sigma.copy_(torch.tensor([-0.5, -0.9, -0.3])[: config.image_channels])
    return model


# ---------------------------------------------------------------------------------------------- float


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_float_tables_sum_to_one_and_agree_with_log_prob(name, channels):
    """channel_table is a distribution over the 256 values, and the product of the channels' tables at the
    actual values is exp(log_prob): the coder's and the trainer's likelihood are the same."""
    if name == "uncoupled" and channels == 1:
        pytest.skip("a grey mixture has no coupling to switch off")
    model = _perturbed(_config(name, image_channels=channels), seed=1)
    pixels = _smooth_pixels(channels)
    with torch.no_grad():
        params = torch.randn(2, model.likelihood.num_params, 16, 16) * 0.3
        if name == "gaussian-optimal":  # each image's sigma appended, as training and the coder append it
            params = model.likelihood.with_sigma(params, pixels, None)
        log_prob = model.likelihood.log_prob(params, pixels).double()  # B, H, W
        from_tables = torch.zeros_like(log_prob)
        for c in range(channels):
            table = model.likelihood.channel_table(params, pixels, c).double()  # B, H, W, 256
            torch.testing.assert_close(table.sum(-1), torch.ones_like(table[..., 0]), atol=1e-5, rtol=0)
            from_tables += torch.log(table.gather(-1, pixels[:, c, :, :, None].long())[..., 0])
    torch.testing.assert_close(from_tables, log_prob, atol=1e-3, rtol=1e-4)


def test_uncoupled_channels_read_the_channels_before_them_only_through_the_component():
    """Without coupling, a component's distribution of B does not move with R and G: with one component, B's
    table is the same whatever R and G are (with several, R and G still change the components' weights)."""
    model = _perturbed(_config("uncoupled", num_mixtures=1), seed=2)
    params = torch.randn(1, model.likelihood.num_params, 4, 4)
    a, b = _smooth_pixels(3, batch=1, size=4, seed=1), _smooth_pixels(3, batch=1, size=4, seed=2)
    b[:, 2] = a[:, 2]
    with torch.no_grad():
        assert torch.equal(model.likelihood.channel_table(params, a, 2), model.likelihood.channel_table(params, b, 2))
    coupled = _perturbed(dataclasses.replace(get_preset("tiny").model, num_mixtures=1), seed=2)
    params = torch.randn(1, coupled.likelihood.num_params, 4, 4)
    with torch.no_grad():  # the default's do: the check above can fail
        assert not torch.equal(coupled.likelihood.channel_table(params, a, 2),
                               coupled.likelihood.channel_table(params, b, 2))


def test_gaussian_log_prob_is_finite_and_exact_in_both_tails():
    """Bins 8 sigmas from the mean on either side (where Phi(upper) - Phi(lower) of two numbers near 1 would
    cancel) get the log-mass of a direct float64 difference of lower-tail values; 90 sigmas away (beyond any
    float difference) the log-mass and its gradient stay finite."""
    from vaezip.model.likelihood import HALF_BIN, DiscretizedGaussian, pixels_to_unit

    gaussian = DiscretizedGaussian(1)
    sigma = 0.01
    with torch.no_grad():
        gaussian.log_sigma.fill_(math.log(sigma))
    pixels = torch.tensor([[[[100, 160, 128]]]], dtype=torch.uint8)
    units = pixels_to_unit(pixels).double()  # the model's float32 pixel values
    means = (units + torch.tensor([[[[8 * sigma, -8 * sigma, -90 * sigma]]]], dtype=torch.float64)).float()
    means.requires_grad_(True)
    log_prob = gaussian.log_prob(means, pixels)
    log_prob.sum().backward()
    log_prob = log_prob.detach()
    assert torch.isfinite(log_prob).all() and torch.isfinite(means.grad).all() and float(log_prob[0, 0, 2]) < -3000
    inv_sigma = 1 / math.exp(math.log(sigma))
    for i in range(2):
        centered = units[0, 0, 0, i] - means.detach()[0, 0, 0, i].double()
        upper, lower = (centered + HALF_BIN) * inv_sigma, (centered - HALF_BIN) * inv_sigma
        # the bin's mass as a difference of two small lower-tail values (no cancellation near 1), from libm's
        # erfc (torch's float64 ndtr is 1e-4 off this far out)
        tail = lambda x: 0.5 * math.erfc(-float(x) / math.sqrt(2))  # noqa: E731 - Phi(x) for x < 0
        mass = tail(upper) - tail(lower) if i == 0 else tail(-lower) - tail(-upper)
        assert 1e-17 < mass < 1e-12
        assert abs(float(log_prob[0, 0, i]) - math.log(mass)) < 1e-5, i


# ---------------------------------------------------------------------------------------------- integer


def test_normal_cdf_table_is_phi_and_monotone():
    x = np.linspace(-9, 9, 20001)
    got = _normal_cdf(x)
    expected = torch.special.ndtr(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() < 1e-14
    table = _normal_cdf_table().values
    assert bool((table[1:] >= table[:-1]).all()) and table[0] == 0 and table[-1] == 2.0**CDF_BITS


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_integer_tables_are_exact_distributions_close_to_the_float_model(name):
    """Every integer table row sums to 2**24 with every value >= 1, and the pixels' cost under them is within
    1 % of the float model's (as test_integer.py holds the default mixture)."""
    model = _perturbed(_config(name, "cpu"), seed=3)
    integer = IntegerVAE(model)
    pixels = _smooth_pixels(3)
    with torch.inference_mode():
        walk_f, walk_i = model.walk(pixels, 2, 16, 16), integer.walk(pixels, 2, 16, 16)
        for _ in range(walk_i.num_groups):
            walk_f.step()
            _, _, post_mean, _ = walk_i.step()
            z = torch.round(post_mean / 64) * 64
            walk_i.advance(z)
            walk_f.advance((z / ONE).float())
        params_f, params_i = walk_f.pixel_params(), walk_i.pixel_params()
        if name == "gaussian-optimal":  # the same stored sigmas for both: the float model's choice
            params_f = model.likelihood.with_sigma(params_f, pixels, None)
            params_i = torch.cat([params_i, torch.round(params_f[:, 3:].double() * ONE)], 1)
        bits_i = bits_f = 0.0
        for c in range(3):
            table = integer.likelihood.channel_table(params_i, pixels, c)  # B, H, W, 256 int64
            assert bool((table >= 1).all()) and bool((table.sum(-1) == 2**PROBABILITY_BITS).all())
            value = pixels[:, c, :, :, None].long()
            bits_i += float((PROBABILITY_BITS - torch.log2(table.gather(-1, value).double())).sum())
        bits_f = float(-model.likelihood.log_prob(params_f, pixels).double().sum()) / math.log(2)
        estimate = float(integer.likelihood.nll_bits(params_i, pixels).sum())  # the encoder's bound
    assert abs(bits_i - bits_f) / bits_f < 0.01, (bits_i, bits_f)
    assert abs(estimate - bits_i) / bits_i < 0.001, (estimate, bits_i)


def test_gaussian_tables_are_the_same_from_every_table_form():
    """The Gaussian reuses the mixture's three table forms (full, windowed, compiled kernel) with Phi's table,
    which saturates at other indices than the sigmoid's: all three give the same integers, from the narrowest
    sigma the clamp allows to the widest."""
    from vaezip.model import kernels

    model = _perturbed(_config("gaussian"), seed=8)
    integer = IntegerVAE(model)
    rng = np.random.default_rng(8)
    for log_sigma in (-7.0, -4.0, -1.5, 0.5, 1.0):
        integer.likelihood.inv_sigma = integer.tables["inv_scale"](torch.full((3,), log_sigma * ONE))
        flat = torch.from_numpy(np.rint(rng.uniform(-1.2, 1.2, (400, 3)) * ONE))  # N, C means
        values = torch.from_numpy(rng.integers(0, 256, (400, 3)))
        for c in range(3):
            full = integer.likelihood.frequencies(flat, values, c, windowed=False)
            windowed = integer.likelihood.frequencies(flat, values, c)
            assert torch.equal(full, windowed), (log_sigma, c)
            assert bool((full >= 1).all()) and bool((full.sum(-1) == 2**PROBABILITY_BITS).all())
            if kernels.AVAILABLE:
                masses = integer.likelihood.masses(flat, values, c, windowed=False)
                assert torch.equal(integer.likelihood.compiled_masses(flat, values, c).double(), masses)
                out = np.empty((400, 256), dtype=np.float32)
                integer.likelihood.probabilities(flat, values, c, out)
                assert np.array_equal(out, (full.numpy() * 2.0**-PROBABILITY_BITS).astype(np.float32))


def test_categorical_frequencies_follow_the_rule_exactly():
    """Python integers reproduce one row: weights exp(logit - max) * 2**24 from the table (>= 1), frequencies
    floor(w / sum * (2**24 - 256)) + 1, the remainder to the first largest."""
    model = _perturbed(_config("categorical", image_channels=1), seed=4)
    integer = IntegerVAE(model)
    rng = np.random.default_rng(4)
    logits = np.rint(rng.normal(0, 3, 256) * ONE)
    logits[[7, 9]] = logits.max() + 5 * ONE  # two equal largest: the first gets the remainder
    logits[11] = logits.max() - 40 * ONE  # far below the table: weight 1
    flat = torch.from_numpy(logits)[None]  # 1, 256
    got = integer.likelihood.frequencies(flat, None, 0)[0].long().tolist()
    table = integer.likelihood.exp
    weights = [max(1, int(table.values[int(min(max(q - logits.max() - table.first_q, 0), len(table.values) - 1))]))
               for q in logits]
    total, spare = sum(weights), 2**PROBABILITY_BITS - 256
    expected = [math.floor(w / total * spare) + 1 for w in weights]
    largest = expected.index(max(expected))
    expected[largest] += 2**PROBABILITY_BITS - sum(expected)
    assert got == expected and largest == 7 and weights[11] == 1 and max(weights) == 2**CATEGORICAL_BITS


# ---------------------------------------------------------------------------------------------- coding


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_round_trip_decodes_exactly_in_a_fresh_process_under_other_kernels(tmp_path, name):
    from vaezip.api import load_model, read_header

    weights = make_tiny_weights(tmp_path / f"tiny-{name}.safetensors", 3, f"tiny-{name}", seed=6, **OPTIONS[name])
    assert config_to_dict(load_model(weights).model.config) == config_to_dict(_config(name))
    # encoded here under the default kernels, decoded in a fresh process under others
    result = round_trip_in_fresh_processes(tmp_path, weights, smooth_rgb(36, 40, seed=6),
                                           envs=({**OTHER_KERNELS, "ONEDNN_MAX_CPU_ISA": "AVX2"},))
    header = read_header(result.data)
    assert header.model_name == f"tiny-{name}" and "bitsback" in {kind for kind, _ in header.coder.schedule}


# ---------------------------------------------------------------------------------------------- config and training


def test_configs_name_the_option_only_where_it_is_not_the_default():
    plain = get_preset("tiny").model
    data = config_to_dict(plain)
    assert "likelihood" not in data and "channel_coupling" not in data  # byte for byte as before the options
    assert model_config_from_dict(data) == plain
    for name in OPTIONS:
        config = _config(name)
        written = json.loads(json.dumps(config_to_dict(config)))
        assert set(written) - set(data) == set(OPTIONS[name])
        assert model_config_from_dict(written) == config
        assert parameter_count(config) == sum(p.numel() for p in HierarchicalVAE(config).parameters())
    with pytest.raises(ConfigError, match="likelihood must be one of"):
        model_config_from_dict({**data, "likelihood": "laplace"})
    with pytest.raises(ConfigError, match="channel_coupling must be true or false"):
        model_config_from_dict({**data, "channel_coupling": 0})
    with pytest.raises(ConfigError, match="logistic mixture of a colour model only"):
        model_config_from_dict({**data, "likelihood": "gaussian", "channel_coupling": False})
    with pytest.raises(ConfigError, match="logistic mixture of a colour model only"):  # grey: nothing to couple
        model_config_from_dict({**data, "image_channels": 1, "channel_coupling": False})
    old = {key: value for key, value in data.items() if key != "pixel_context"}
    with pytest.raises(ConfigError, match="likelihood"):  # format 1 knew no such field
        model_config_from_dict({**old, "likelihood": "gaussian"}, format_version=1)


def test_training_with_a_likelihood_and_refusing_a_start_with_another(tmp_path, tiny_npz):
    from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from vaezip.train import train

    data = tiny_npz
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    gaussian = {"likelihood": "gaussian"}
    summary = train(tmp_path / "run", data, get_preset("tiny"), steps=3, train_overrides=overrides,
                    model_options=gaussian, coded_validation=None)
    assert summary["step"] == 3 and math.isfinite(summary["val_bpsp"] or 0.0)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["model_config"]["likelihood"] == "gaussian"
    model = model_from_checkpoint(checkpoint)
    assert model.config.likelihood == "gaussian"
    assert not torch.equal(model.likelihood.log_sigma, torch.full((3,), math.log(0.125)))  # it learns sigma
    # resumed without the option: still Gaussian; with another: refused
    assert train(tmp_path / "run", data, get_preset("tiny"), steps=4, resume=True, coded_validation=None)["step"] == 4
    with pytest.raises(CheckpointError, match="--likelihood categorical"):
        train(tmp_path / "run", data, get_preset("tiny"), steps=5, resume=True,
              model_options={"likelihood": "categorical"}, coded_validation=None)
    # a Gaussian model starts a Gaussian run; a mixture model cannot start one
    warm = train(tmp_path / "warm", data, get_preset("tiny"), steps=1, train_overrides=overrides,
                 init=str(tmp_path / "run"), model_options=gaussian, coded_validation=None)
    assert warm["step"] == 1 and load_checkpoint(tmp_path / "warm")["model_config"]["likelihood"] == "gaussian"
    train(tmp_path / "plain", data, get_preset("tiny"), steps=1, train_overrides=overrides, coded_validation=None)
    with pytest.raises(CheckpointError, match="--no-channel-coupling: the start model"):
        train(tmp_path / "warm2", data, get_preset("tiny"), steps=1, train_overrides=overrides,
              init=str(tmp_path / "plain"), model_options={"channel_coupling": False}, coded_validation=None)


def test_cli_refuses_unknown_likelihoods_in_one_line(tmp_path):
    for args, message in (
        (["--likelihood", "laplace"], "--likelihood must be one of logistic-mixture, gaussian, gaussian-optimal, categorical"),
        (["--likelihood", "gaussian", "--no-channel-coupling"], "--no-channel-coupling applies to the logistic"),
        (["--likelihood", "gaussian-optimal", "--pixel-context", "8"],
         "--likelihood gaussian-optimal does not combine with --pixel-context"),
    ):
        done = run_cli("train", str(tmp_path), "--preset", "tiny", "--steps", "1", "--out", tmp_path / "run", *args)
        assert done.returncode == 2, done.stderr.decode()
        error = done.stderr.decode().strip()
        assert message in error and "Traceback" not in error and len(error.splitlines()) == 1, error


def test_context_order_needs_a_context_head_and_goes_with_a_new_one(tmp_path):
    from vaezip.checkpoint import CheckpointError, load_checkpoint
    from vaezip.train import train

    data = config_to_dict(get_preset("tiny").model)
    assert "context_order" not in config_to_dict(dataclasses.replace(get_preset("tiny").model, pixel_context=8))
    with pytest.raises(ConfigError, match="applies to a pixel-context head"):
        model_config_from_dict({**data, "context_order": "scales"})
    with pytest.raises(ConfigError, match="context_order must be one of rows, scales"):
        model_config_from_dict({**data, "pixel_context": 8, "context_order": "zigzag"})
    scales = model_config_from_dict({**data, "pixel_context": 8, "context_order": "scales"})
    assert parameter_count(scales) == sum(p.numel() for p in HierarchicalVAE(scales).parameters())

    x = np.random.default_rng(1).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    source = str(tmp_path / "tiny.npz")
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
    train(tmp_path / "plain", source, get_preset("tiny"), steps=1, train_overrides=overrides, coded_validation=None)
    # a head new to the start model takes the order asked for; the run keeps it when resumed
    train(tmp_path / "run", source, get_preset("tiny"), steps=1, train_overrides=overrides,
          init=str(tmp_path / "plain"), pixel_context=8, model_options={"context_order": "scales"},
          coded_validation=None)
    saved = load_checkpoint(tmp_path / "run")["model_config"]
    assert saved["pixel_context"] == 8 and saved["context_order"] == "scales"
    assert train(tmp_path / "run", source, get_preset("tiny"), steps=2, resume=True, coded_validation=None)["step"] == 2
    with pytest.raises(CheckpointError, match="--context-order rows: the run to resume"):
        train(tmp_path / "run", source, get_preset("tiny"), steps=3, resume=True,
              model_options={"context_order": "rows"}, coded_validation=None)


def test_cli_refuses_a_context_order_without_a_head(tmp_path):
    for args, message in (
        (["--context-order", "scales"], "--context-order applies to a pixel-context head"),
        (["--context-order", "zigzag", "--pixel-context", "8"], "--context-order must be one of rows, scales"),
    ):
        done = run_cli("train", str(tmp_path), "--preset", "tiny", "--steps", "1", "--out", tmp_path / "run", *args)
        assert done.returncode == 2, done.stderr.decode()
        error = done.stderr.decode().strip()
        assert message in error and "Traceback" not in error and len(error.splitlines()) == 1, error
