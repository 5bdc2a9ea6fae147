"""DVAE++'s binary latents (ModelConfig.binary_groups): the overlapping relaxation that trains them, the float
model and its integer twin (Bernoulli frequencies from the sigmoid table, exact), the coder's binary pops and
pushes, real round trips decoded in a fresh process under other kernels, training, and the config rules."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import (
    assert_decoder_posteriors_equal_a_second_pass, check_pinned_model_file, make_tiny_weights, perturbed_model,
    round_trip_in_fresh_processes, run_cli, smooth_pixels, smooth_rgb,
)
from PIL import Image

from codec.ans import Stack
from codec.errors import CodingError
from codec.latents import (
    BINARY_FLOOR,
    BINARY_TOTAL,
    binary_kl_bits,
    binary_tables,
    pop_binary,
    push_binary,
)
from vaezip.config import (
    ConfigError,
    config_to_dict,
    get_preset,
    importance_coding_obstacle,
    model_config_from_dict,
    parameter_count,
)
from vaezip.model.integer import CDF_BITS, IntegerVAE
from vaezip.model.layers import MAX_BINARY_BETA, bernoulli_kl, relaxed_binary_sample


def binary_config(groups: int = 1, preset: str = "tiny", **changes):
    return dataclasses.replace(get_preset(preset).model, binary_groups=groups, **changes)


def _mixture_cdf(zeta: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """The CDF of (1 - q) r(zeta | 0) + q r(zeta | 1), the two exponentials of rate beta on [0, 1]."""
    d = math.exp(-beta)
    return ((1 - q) * (1 - torch.exp(-beta * zeta)) + q * (torch.exp(beta * (zeta - 1)) - d)) / (1 - d)


# ---------------------------------------------------------------------------------------------- relaxation


@pytest.mark.parametrize("beta", [4.0, 8.0, 16.0, 40.0])
def test_relaxed_sample_is_the_inverse_cdf_of_the_mixture_of_exponentials(beta):
    q = torch.tensor([1e-5, 0.01, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    u = torch.linspace(0.001, 0.999, 41, dtype=torch.float64)
    q_grid, u_grid = torch.meshgrid(q, u, indexing="ij")
    logits = torch.log(q_grid / (1 - q_grid))
    zeta = relaxed_binary_sample(logits, beta, uniform=u_grid.float()).double()
    assert float(zeta.min()) >= 0.0 and float(zeta.max()) <= 1.0
    assert torch.all(torch.diff(zeta, dim=1) >= -1e-6)  # monotone in u: an inverse CDF
    torch.testing.assert_close(_mixture_cdf(zeta, q_grid.float().double(), beta), u_grid, atol=2e-4, rtol=0)


def test_relaxed_samples_approach_bernoulli_samples_and_carry_gradients_at_extreme_logits():
    torch.manual_seed(0)
    q = 0.3
    logits = torch.full((200_000,), math.log(q / (1 - q)))
    sharp = relaxed_binary_sample(logits, 60.0)
    # nearly every sample within 0.1 of 0 or 1, in the Bernoulli's proportion
    assert float(((sharp < 0.1) | (sharp > 0.9)).float().mean()) > 0.99
    assert abs(float((sharp > 0.5).float().mean()) - q) < 0.005
    for beta in (8.0, MAX_BINARY_BETA):  # the sharpest relaxation training allows too
        extreme = torch.tensor([-40.0, -13.0, -12.0, 0.0, 12.0, 13.0, 40.0], requires_grad=True)
        for u in (1e-4, 0.3, 0.7, 0.9999):
            zeta = relaxed_binary_sample(extreme, beta, uniform=torch.full((7,), u))
            zeta.sum().backward()
            assert torch.isfinite(zeta).all() and torch.isfinite(extreme.grad).all(), (beta, u, extreme.grad)
        assert extreme.grad[3] > 0 and extreme.grad[1] != 0  # a larger P(z = 1) moves the samples up
    torch.manual_seed(1)
    wide = (torch.randn(100_000) * 8).requires_grad_()
    relaxed_binary_sample(wide, MAX_BINARY_BETA).sum().backward()
    assert torch.isfinite(wide.grad).all()


def test_bernoulli_kl_is_the_analytic_kl_and_zero_between_equals():
    post = torch.tensor([-3.0, 0.0, 2.5, 30.0, -30.0], dtype=torch.float64)
    prior = torch.tensor([1.0, 0.0, -1.0, 0.0, 5.0], dtype=torch.float64)
    q, p = torch.sigmoid(post), torch.sigmoid(prior)
    expected = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    got = bernoulli_kl(post, prior)
    torch.testing.assert_close(got[:3], expected[:3])
    assert torch.isfinite(got).all() and float(got[1]) == 0.0 and float(got[3]) > 0
    ones = np.array([2**23, 2**20, 2**24 - 16])
    kl = binary_kl_bits(ones, np.full(3, 2**23))
    assert kl[0] == 0.0 and kl[2] > kl[1] > 0


# ---------------------------------------------------------------------------------------------- float model


def test_binary_groups_are_the_first_top_down_and_their_samples_are_zero_or_one_outside_training():
    config = binary_config(2, "cpu")
    model = perturbed_model(config, seed=0)
    assert [block.binary for block in model.decoder.blocks] == [True, True] + [False] * (config.num_groups - 2)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert parameter_count(config) < parameter_count(get_preset("cpu").model)  # one head output per latent
    pixels = smooth_pixels(3)
    with torch.no_grad():
        walk = model.walk(pixels, 2, 16, 16)
        step = walk.step()
        assert step.binary and step.prior_std is None and step.post_std is None
        assert step.post_mean.shape == (2, 8, 2, 2)  # one logit per latent
        seen = []
        original = model.decoder.blocks[0].update

        def spy(h, feature, latent):
            seen.append(latent)
            return original(h, feature, latent)

        model.decoder.blocks[0].update = spy
        model(pixels)  # eval mode: z itself
        assert set(torch.unique(seen[-1]).tolist()) <= {0.0, 1.0}
        model.train()
        model(pixels)  # training: the relaxation, strictly inside (0, 1) almost surely
        assert 0.0 < float(seen[-1].min()) and float(seen[-1].max()) < 1.0


def test_training_loss_reaches_binary_heads_and_importance_training_is_refused():
    model = perturbed_model(binary_config(1), seed=1).train()
    output = model(smooth_pixels(3), binary_beta=8.0)
    assert torch.isfinite(output.loss) and output.kl_bits.shape == (2,) and float(output.kl_bits[0].detach()) > 0
    output.loss.backward()
    assert float(model.decoder.blocks[0].posterior_head.weight.grad.abs().max()) > 0
    assert float(model.decoder.blocks[0].prior_head.weight.grad.abs().max()) > 0
    with pytest.raises(ValueError, match="relaxed sample has none"):
        model(smooth_pixels(3), importance_samples=2)
    # outside training the binary sample has a probability: the K-sample bound of an eval-mode pass
    model.eval()
    with torch.no_grad():
        weights = model.importance_log_weights(smooth_pixels(3), 3)
    assert weights.shape == (2, 3) and torch.isfinite(weights).all()


# ---------------------------------------------------------------------------------------------- integer twin


def test_integer_frequencies_are_the_sigmoid_table_floored_and_clamped():
    model = perturbed_model(binary_config(2), seed=2)
    integer = IntegerVAE(model)
    logits = torch.tensor([-2.0**24, -30 * 2**14, -3 * 2**14 - 7, 0.0, 1.0, 5 * 2**14 + 3, 30 * 2**14, 2.0**24],
                          dtype=torch.float64)
    got = integer.ones_frequency(logits)
    sigmoid = integer.tables["sigmoid"](logits)
    for value, cdf in zip(got.tolist(), sigmoid.tolist()):
        assert value == min(max(int(cdf) >> (CDF_BITS - 24), BINARY_FLOOR), BINARY_TOTAL - BINARY_FLOOR)
    assert got[3] == 2**23 and got[0] == BINARY_FLOOR and got[-1] == BINARY_TOTAL - BINARY_FLOOR
    assert torch.all(torch.diff(got) >= 0)
    middle = logits[2:6] / 2**14
    assert float((got[2:6] / BINARY_TOTAL - torch.sigmoid(middle)).abs().max()) < 1e-6
    # the walk gives frequencies for binary groups and (mean, std) for the others; the decoder's posteriors
    # from its prior-only walk equal a walk begun with pixels
    posteriors = assert_decoder_posteriors_equal_a_second_pass(integer, smooth_pixels(3, seed=2))
    assert [std is None for _, std in posteriors] == [g < 2 for g in range(len(posteriors))]


def test_binary_pops_and_pushes_are_exact_and_cost_the_entropy():
    rng = np.random.default_rng(3)
    ones = rng.integers(BINARY_FLOOR, BINARY_TOTAL - BINARY_FLOOR, size=(40, 50))
    stack = Stack()
    stack.push_uniform(rng.integers(0, 2**16, 4096), 2**16)
    before = stack.num_valid_bits()
    z = pop_binary(stack, ones)
    assert z.shape == ones.shape and set(np.unique(z)) <= {0, 1}
    popped = before - stack.num_valid_bits()
    push_binary(stack, z, ones)
    assert stack.num_valid_bits() == before  # exactly undone
    p = ones / BINARY_TOTAL
    information = float(-np.where(z == 1, np.log2(p), np.log2(1 - p)).sum())
    assert abs(popped - information) < 0.02 * information + 64
    rows = binary_tables(np.array([16, 2**23]))
    assert rows.dtype == np.float32 and rows[0, 1] * 2**24 == 16 and rows[1, 0] == 0.5
    for bad in (np.array([15]), np.array([BINARY_TOTAL - 15]), np.array([100.5]), np.array([np.nan])):
        with pytest.raises(CodingError, match="binary latent frequencies"):
            binary_tables(bad)


# ---------------------------------------------------------------------------------------------- coding


@pytest.mark.parametrize("groups", [1, 2])
def test_round_trip_decodes_exactly_in_a_fresh_process_under_other_kernels(tmp_path, groups):
    from vaezip.api import load_model, read_header

    weights = make_tiny_weights(tmp_path / "tiny-binary.safetensors", 3, "tiny-binary", seed=5,
                                binary_groups=groups)
    assert load_model(weights).model.config.binary_groups == groups
    result = round_trip_in_fresh_processes(tmp_path, weights, smooth_rgb(40, 44, seed=5))
    kinds = {kind for kind, _ in read_header(result.data).coder.schedule}
    assert "bitsback" in kinds, kinds
    report = result.images[0]
    assert abs(report.payload_bits - report.bound_bits) < 0.05 * report.bound_bits  # bits-back pays the bound


def test_direct_tiles_set_binary_latents_to_their_prior_mode(tmp_path):
    """A tile coded without bits-back through the model (kind direct): binary latents at their most likely
    value, the same on both sides."""
    from codec import tilekinds
    from codec.tiling import split_tiles
    from vaezip.api import load_model
    from vaezip.coding import TorchLatentModel

    weights = make_tiny_weights(tmp_path / "tiny-binary.safetensors", 3, "tiny-binary", seed=6, binary_groups=2)
    coder = TorchLatentModel(load_model(weights).model)
    image = smooth_pixels(3, batch=1, size=32, seed=6)[0].numpy()
    tiles = split_tiles(np.ascontiguousarray(image), 16, coder.stride)
    stream = tilekinds.Stream(len(tiles), lambda k: tiles[k].pixels, coder)
    stack = Stack()
    direct = tilekinds.BY_NAME[tilekinds.DIRECT]
    bits = direct.push(stack, tiles[:1], 0, stream)
    assert bits.shape == (1,) and stack.num_valid_bits() > 0
    decoded = direct.pop(stack, [tiles[0].spec], 0, stream)
    assert np.array_equal(decoded[0], tiles[0].pixels) and stack.is_empty()


def test_importance_coding_and_float_coding_are_refused(tmp_path):
    from vaezip.api import load_model
    from vaezip.coding import TorchLatentModel

    weights = make_tiny_weights(tmp_path / "tiny-binary.safetensors", 3, "tiny-binary", seed=7, binary_groups=1)
    assert importance_coding_obstacle(load_model(weights).model.config) == "it has binary latent groups"
    with pytest.raises(CodingError, match="binary latent groups is coded by integers only"):
        TorchLatentModel(load_model(weights).model, integer=False)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(smooth_pixels(3, batch=1, size=24)[0].permute(1, 2, 0).numpy()).save(images / "in.png")
    done = run_cli("compress", images / "in.png", "-o", tmp_path / "iw.vz", "-m", weights, "--samples", "4")
    error = done.stderr.decode().strip()
    assert done.returncode == 1 and "binary latent groups" in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "iw.vz").exists()
    # eval gives the K-sample bound of binary samples, and says compress cannot code it
    done = run_cli("eval", weights, str(images), "--samples", "2")
    assert done.returncode == 0, done.stderr.decode()
    assert "cannot code this model: it has binary latent groups" in " ".join(done.stdout.decode().split())


# ---------------------------------------------------------------------------------------------- config and training


def test_configs_name_the_option_only_where_it_is_not_the_default():
    plain = get_preset("tiny").model
    data = config_to_dict(plain)
    assert "binary_groups" not in data  # byte for byte what was written before the option
    assert model_config_from_dict(data).binary_groups == 0
    binary = config_to_dict(binary_config(2))
    assert binary["binary_groups"] == 2
    assert model_config_from_dict(json.loads(json.dumps(binary))) == binary_config(2)
    for bad in (3, -1, True, 1.0, "1"):
        with pytest.raises(ConfigError, match="binary_groups must be an integer in 0..2"):
            model_config_from_dict({**data, "binary_groups": bad})
    with pytest.raises(ConfigError, match="does not combine with residual_posterior"):
        binary_config(1, residual_posterior=True)
    old = {key: value for key, value in data.items() if key != "pixel_context"}
    with pytest.raises(ConfigError, match="binary_groups"):
        model_config_from_dict({**old, "binary_groups": 1}, format_version=1)


def test_training_binary_groups_and_refusing_a_start_without_them(tmp_path, tiny_npz):
    from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from vaezip.train import train

    data = tiny_npz
    overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8, binary_beta=12.0)
    summary = train(tmp_path / "run", data, get_preset("tiny"), steps=3, train_overrides=overrides,
                    model_options={"binary_groups": 2}, coded_validation=None)
    assert summary["step"] == 3 and math.isfinite(summary["val_bpsp"] or 0.0)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["model_config"]["binary_groups"] == 2 and checkpoint["train_config"]["binary_beta"] == 12.0
    assert all(block.binary for block in model_from_checkpoint(checkpoint).decoder.blocks)
    train(tmp_path / "plain", data, get_preset("tiny"), steps=1, train_overrides=overrides, coded_validation=None)
    with pytest.raises(CheckpointError, match="--binary-groups 1: the start model"):
        train(tmp_path / "warm", data, get_preset("tiny"), steps=1, train_overrides=overrides,
              init=str(tmp_path / "plain"), model_options={"binary_groups": 1}, coded_validation=None)
    with pytest.raises(ValueError, match="binary latent groups train on the ELBO"):
        train(tmp_path / "iw", data, get_preset("tiny"), steps=1, coded_validation=None,
              train_overrides={**overrides, "importance_samples": 2}, model_options={"binary_groups": 1})


def test_cli_refuses_contradicting_binary_options_in_one_line(tmp_path):
    for args, message in (
        (["--binary-groups", "1", "--residual-posterior"], "--binary-groups does not combine with --residual-posterior"),
        (["--binary-groups", "1", "--importance-samples", "2"], "--binary-groups trains on the ELBO"),
        (["--binary-beta", "0"], "--binary-beta must be in (0, 64]"),
        (["--binary-beta", "65"], "--binary-beta must be in (0, 64]"),
        (["--binary-beta", "nan"], "--binary-beta must be in (0, 64]"),
        (["--binary-groups", "-1"], "--binary-groups must not be negative"),
    ):
        done = run_cli("train", str(tmp_path), "--preset", "tiny", "--steps", "1", "--out", tmp_path / "run", *args)
        assert done.returncode == 2, done.stderr.decode()
        error = done.stderr.decode().strip()
        assert message in error and "Traceback" not in error and len(error.splitlines()) == 1, error
    # more binary groups than the model has: a bad input, refused before any training
    x = np.random.default_rng(0).integers(90, 160, size=(8, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x)
    done = run_cli("train", str(tmp_path / "tiny.npz"), "--preset", "tiny", "--steps", "1", "--out",
                   tmp_path / "run", "--binary-groups", "3")
    error = done.stderr.decode().strip()
    assert done.returncode == 1 and "binary_groups must be an integer in 0..2" in error, error
    assert "Traceback" not in error and len(error.splitlines()) == 1, error


# ---------------------------------------------------------------------------------------------- golden file


def test_the_binary_golden_file_decodes_in_a_fresh_process_and_re_encodes_byte_for_byte(tmp_path):
    """tests/data/binary/model.vz (`python scripts/make_golden.py --binary`): golden.png through the seeded
    untrained tiny model with two binary groups. It pins how binary latents are coded: a failure means that
    changed (or the integer model's rules did)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_golden import binary_weights

    header = check_pinned_model_file("binary", binary_weights(tmp_path), tmp_path)
    assert header.model_name == "tiny-binary"
    assert "bitsback" in {kind for kind, _ in header.coder.schedule}


def test_a_decoder_without_the_posteriors_shortcut_pushes_binary_posteriors_from_a_second_pass(tmp_path):
    """bitsback's decoder asks a pass for posteriors() where it has them (IntegerPass), else runs a second pass
    begun with the pixels: both give the encoder's stream back."""
    from codec import bitsback
    from codec.tiling import split_tiles
    from vaezip.api import load_model
    from vaezip.coding import TorchLatentModel

    class WithoutShortcut:  # the pass, minus posteriors()
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            if name == "posteriors":
                raise AttributeError(name)
            return getattr(self._inner, name)

    class Model:
        def __init__(self, coder):
            self.coder, self.channels, self.stride = coder, coder.channels, coder.stride

        def begin(self, shape, pixels=None):
            return WithoutShortcut(self.coder.begin(shape, pixels))

    weights = make_tiny_weights(tmp_path / "tiny-binary.safetensors", 3, "tiny-binary", seed=8, binary_groups=1)
    coder = TorchLatentModel(load_model(weights).model)
    image = smooth_pixels(3, batch=1, size=48, seed=8)[0].numpy()
    tiles = split_tiles(np.ascontiguousarray(image), 16, coder.stride)
    result = bitsback.encode(tiles, coder, max_batch=4)
    assert "bitsback" in {kind for kind, _ in result.schedule}
    decoded = bitsback.decode(result.words, result.schedule, [t.spec for t in tiles], Model(coder))
    assert all(np.array_equal(a, t.pixels) for a, t in zip(decoded, tiles))
