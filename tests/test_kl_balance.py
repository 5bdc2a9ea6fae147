"""KL balancing (NVAE, appendix A; DVAE++, appendix H): during the KL warm-up each latent group's KL term is
weighted by a coefficient from its KL per latent position, mean 1; afterwards the plain ELBO."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import randomised_tiny

from vaezip.checkpoint import load_checkpoint
from vaezip.config import ConfigError, config_to_dict, get_preset, train_config_from_dict
from vaezip.model import HierarchicalVAE
from vaezip.model.vae import KL_BALANCE_EPSILON, kl_balance_coefficients
from vaezip.train import kl_balancing, train

OVERRIDES = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)


def test_coefficients_follow_the_kl_per_latent_position_and_average_one():
    kls = torch.tensor([[4.0, 1.0, 0.0], [2.0, 3.0, 0.0]], requires_grad=True)  # (B, G) nats: means 3, 2, 0
    sizes = [4, 16, 64]
    alpha = kl_balance_coefficients(kls, sizes, epsilon=0.0)
    # a = mean KL / size = 0.75, 0.125, 0; alpha = 3 a / sum(a)
    torch.testing.assert_close(alpha, torch.tensor([0.75, 0.125, 0.0]) * 3 / 0.875)
    assert not alpha.requires_grad  # a constant of the loss: no gradient flows through it
    assert float(alpha.mean()) == pytest.approx(1.0)

    alpha = kl_balance_coefficients(kls, sizes)  # the default epsilon: a group without KL keeps a small floor
    raw = (torch.tensor([3.0, 2.0, 0.0]) + KL_BALANCE_EPSILON) / torch.tensor([4.0, 16.0, 64.0])
    torch.testing.assert_close(alpha, raw * 3 / raw.sum())
    assert 0 < float(alpha[2]) < 1e-3 and float(alpha.mean()) == pytest.approx(1.0)


def test_equal_kl_per_position_gives_every_group_one():
    sizes = torch.tensor([4.0, 16.0, 64.0, 64.0])
    kls = (0.3 * sizes).expand(5, 4)  # each group: 0.3 nats per latent position, whatever its size
    torch.testing.assert_close(kl_balance_coefficients(kls, sizes, epsilon=0.0), torch.ones(4))
    # ... and a single group is always 1
    torch.testing.assert_close(kl_balance_coefficients(torch.tensor([[7.0], [0.0]]), [16]), torch.ones(1))
    with pytest.raises(ValueError):
        kl_balance_coefficients(torch.ones(2, 3), [4, 16])


def test_the_balanced_loss_differs_but_the_bound_does_not():
    model = randomised_tiny()
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    outputs = {}
    for balance in (False, True):
        torch.manual_seed(1)  # the same latent noise
        with torch.no_grad():
            outputs[balance] = model(pixels, kl_weight=0.5, kl_balance=balance)
    plain, balanced = outputs[False], outputs[True]
    assert torch.equal(plain.bound_bits, balanced.bound_bits)
    assert torch.equal(plain.kl_bits, balanced.kl_bits) and torch.equal(plain.nll_bits, balanced.nll_bits)
    assert (plain.kl_bits > 0).all() and float(plain.loss) != pytest.approx(float(balanced.loss), rel=1e-4)
    # the loss, by hand: every image has the same subpixels, so sum_b sum_l alpha_l KL_bl = sum_l alpha_l KL_l
    subpixels = float(plain.subpixels.sum())
    sizes = [4 * 4, 8 * 8]  # top-down: the 4x4 group (stride 4), then the 8x8 one (stride 2)
    alpha = kl_balance_coefficients((plain.kl_bits * math.log(2) / 2).unsqueeze(0), sizes)
    assert not torch.allclose(alpha, torch.ones(2))
    expected = (0.5 * float((alpha * plain.kl_bits).sum()) + float(plain.nll_bits)) / subpixels
    assert float(balanced.loss) == pytest.approx(expected, rel=1e-5)
    assert float(plain.loss) == pytest.approx((0.5 * float(plain.kl_bits.sum()) + float(plain.nll_bits)) / subpixels,
                                              rel=1e-5)
    torch.manual_seed(1)
    balanced = model(pixels, kl_weight=0.5, kl_balance=True)
    balanced.loss.backward()  # the coefficients are constants of the graph
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_balancing_only_during_the_warm_up():
    config = dataclasses.replace(get_preset("tiny").train, kl_warmup_steps=3, kl_balance=True)
    assert [kl_balancing(config, step) for step in range(5)] == [True, True, True, False, False]
    assert not any(kl_balancing(dataclasses.replace(config, kl_balance=False), step) for step in range(5))
    assert not kl_balancing(dataclasses.replace(config, kl_warmup_steps=0), 0)
    assert get_preset("tiny").train.kl_balance is False  # off unless asked for


def test_training_balances_the_warm_up_steps_only(tmp_path, tiny_npz, monkeypatch):
    calls = []
    forward = HierarchicalVAE.forward

    def spy(self, pixels, kl_weight=1.0, mask=None, kl_balance=False, **options):
        if self.training and torch.is_grad_enabled():
            calls.append((kl_weight, kl_balance))
        return forward(self, pixels, kl_weight=kl_weight, mask=mask, kl_balance=kl_balance, **options)

    monkeypatch.setattr(HierarchicalVAE, "forward", spy)
    overrides = dict(OVERRIDES, kl_warmup_steps=2, kl_balance=True)
    train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=4, train_overrides=overrides)
    assert calls == [(0.5, True), (1.0, True), (1.0, False), (1.0, False)]
    assert load_checkpoint(tmp_path / "run")["train_config"]["kl_balance"] is True
    with pytest.raises(ValueError, match="kl_warmup_steps"):
        train(tmp_path / "other", tiny_npz, get_preset("tiny"), steps=1,
              train_overrides=dict(OVERRIDES, kl_balance=True))


def test_a_checkpoint_from_before_kl_balance_loads_and_resumes(tmp_path, tiny_npz):
    train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=2, train_overrides=OVERRIDES)
    saved = load_checkpoint(tmp_path / "run")
    del saved["train_config"]["kl_balance"]  # what format 2 wrote before the field
    torch.save(saved, tmp_path / "run" / "last.pt")
    assert load_checkpoint(tmp_path / "run")["train_config"]["kl_balance"] is False
    assert train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=3, resume=True)["step"] == 3
    # still strict otherwise: unknown keys and other missing keys are refused
    data = config_to_dict(get_preset("tiny").train)
    assert train_config_from_dict(data) == get_preset("tiny").train
    with pytest.raises(ConfigError, match="unknown"):
        train_config_from_dict({**data, "kl_balance_typo": True})
    del data["kl_warmup_steps"]
    with pytest.raises(ConfigError, match="kl_warmup_steps"):
        train_config_from_dict(data)


# ---------------------------------------------------------------------------------------------- the CLI

from typer.testing import CliRunner  # noqa: E402

from vaezip import zoo  # noqa: E402
from vaezip.cli import app  # noqa: E402


def test_the_flag_reaches_the_saved_config_and_needs_a_warm_up(tmp_path, tiny_npz, monkeypatch, tiny_weights):
    # a tiny model as the 'shipped default': the end-of-training comparison runs without the real models
    monkeypatch.setenv("VAEZIP_MODELS", str(tmp_path / "user-models"))
    zoo.install("tiny-start", tiny_weights[3].read_bytes())
    monkeypatch.setattr(zoo, "default_for", lambda mode: "tiny-start")

    def invoke(*args):
        return CliRunner().invoke(app, ["train", tiny_npz, "--preset", "tiny", "--batch-size", "4", "--crop", "8",
                                        "--threads", "1", *map(str, args)])

    for args in (["--kl-balance"], ["--kl-balance", "--kl-warmup", "0"]):
        result = invoke("--out", tmp_path / "refused", "--steps", "1", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert result.stderr.count("vaezip: error:") == 1 and "--kl-warmup" in result.stderr, result.stderr
    assert not (tmp_path / "refused").exists()
    result = invoke("--out", tmp_path / "run", "--steps", "2", "--kl-warmup", "5", "--kl-balance")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    saved = load_checkpoint(tmp_path / "run")
    assert saved["train_config"]["kl_balance"] is True and saved["train_config"]["kl_warmup_steps"] == 5
