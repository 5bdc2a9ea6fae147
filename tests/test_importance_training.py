"""Importance-weighted training (DVAE##, paper 001, appendix C): K posterior samples per image and the loss
-log mean_k p(x | z_k) (p(z_k) / q(z_k | x))^beta, beta the KL warm-up's weight; the bound Monte-Carlo
bits-back coding with K samples pays (tests/test_importance.py codes it)."""

import math

import numpy as np
import pytest
import torch
from conftest import randomised_tiny
from typer.testing import CliRunner

from vaezip import zoo
from vaezip.checkpoint import load_checkpoint
from vaezip.cli import app
from vaezip.config import get_preset
from vaezip.model import HierarchicalVAE
from vaezip.model.layers import gaussian_kl
from vaezip.train import train

OVERRIDES = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)


def _log_normal(x, mean, std):
    """Sum over all but the batch dimension of log N(x; mean, std), float64."""
    x, mean, std = x.double(), mean.double(), std.double()
    z = (x - mean) / std
    return (-0.5 * z * z - torch.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def _reference_log_weights(model, pixels, noises, kl_weight):
    """log p(x | z) + kl_weight * (log p(z) - log q(z | x)) for one sample per image, walked group by group with
    the given noise (one (B, Z, h, w) tensor per group), full Gaussian densities in float64."""
    walk = model.walk(pixels, len(pixels), pixels.shape[2], pixels.shape[3])
    log_w = torch.zeros(len(pixels), dtype=torch.float64)
    for noise in noises:
        step = walk.step()
        latent = step.post_mean + step.post_std * noise
        log_w += kl_weight * (_log_normal(latent, step.prior_mean, step.prior_std)
                              - _log_normal(latent, step.post_mean, step.post_std))
        walk.advance(latent)
    return log_w + model.likelihood.log_prob(walk.pixel_params(), pixels).flatten(1).sum(1).double()


@pytest.mark.parametrize("kl_weight", [1.0, 0.25])
def test_the_loss_is_the_annealed_importance_weighted_bound(monkeypatch, kl_weight):
    model = randomised_tiny()
    batch, samples = 3, 4
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (batch, 3, 16, 16), dtype=np.uint8))
    # Record the noise the model draws (one (K * B, ...) tensor per group), to walk each sample again by hand.
    drawn = []
    randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t: drawn.append(randn_like(t)) or drawn[-1])
    with torch.no_grad():
        out = model(pixels, kl_weight=kl_weight, importance_samples=samples)
    monkeypatch.undo()
    assert len(drawn) == len(model.decoder.blocks) and drawn[0].shape[0] == samples * batch

    with torch.no_grad():
        columns = [_reference_log_weights(model, pixels, [n[k * batch:(k + 1) * batch] for n in drawn], kl_weight)
                   for k in range(samples)]
    log_w = torch.stack(columns, 1)  # B, K
    bound = -(torch.logsumexp(log_w, 1) - math.log(samples))  # B nats
    subpixels = 3 * 16 * 16
    assert float(out.loss) == pytest.approx(float((bound / subpixels).mean()) / math.log(2), rel=1e-5)
    # the public form gives the same weights (kl_weight 1) for the same noise
    if kl_weight == 1.0:
        replay = iter(drawn)
        monkeypatch.setattr(torch, "randn_like", lambda t: next(replay))
        with torch.no_grad():
            torch.testing.assert_close(model.importance_log_weights(pixels, samples).double(), log_w,
                                       rtol=1e-5, atol=1e-3)


def test_one_sample_is_the_elbo_and_the_reported_figures_stay_the_elbo(monkeypatch):
    model = randomised_tiny()
    pixels = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8))
    drawn = []
    randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda t: drawn.append(randn_like(t)) or drawn[-1])
    with torch.no_grad():
        plain = model(pixels, kl_weight=0.5)
    monkeypatch.undo()
    # the ELBO by hand, walked with the same noise: analytic KL of every group, the pixels' log-probability
    walk = model.walk(pixels, 2, 16, 16)
    kl = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for noise in drawn:
            step = walk.step()
            kl += gaussian_kl(step.post_mean, step.post_std, step.prior_mean, step.prior_std).flatten(1).sum(1).double()
            walk.advance(step.post_mean + step.post_std * noise)
        nll = -model.likelihood.log_prob(walk.pixel_params(), pixels).double().flatten(1).sum(1)
    subpixels = 3 * 16 * 16
    assert float(plain.loss) == pytest.approx(float(((0.5 * kl + nll) / subpixels).mean()) / math.log(2), rel=1e-5)
    torch.testing.assert_close(plain.bound_bits.double(), (kl + nll) / math.log(2), rtol=1e-5, atol=1e-3)
    replay = iter(drawn)
    monkeypatch.setattr(torch, "randn_like", lambda t: next(replay))
    with torch.no_grad():
        one = model(pixels, kl_weight=0.5, importance_samples=1)
    monkeypatch.undo()
    assert torch.equal(plain.loss, one.loss) and torch.equal(plain.bound_bits, one.bound_bits)
    with torch.no_grad():
        several = model(pixels, importance_samples=8)
    # bound_bits is the ELBO's (analytic KL, averaged over the samples), the loss the tighter IW bound: with
    # random weights the posterior is far from the true one, so the gap is large
    elbo = float((several.bound_bits / several.subpixels).mean())
    assert float(several.loss) < elbo
    assert several.kl_bits.shape == plain.kl_bits.shape and (several.kl_bits > 0).all()
    with pytest.raises(ValueError, match="balancing"):
        model(pixels, kl_weight=0.5, kl_balance=True, importance_samples=2)
    with pytest.raises(ValueError, match="at least 1"):
        model(pixels, importance_samples=0)


def test_gradients_reach_encoder_and_decoder():
    model = randomised_tiny()
    pixels = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    model(pixels, kl_weight=0.5, importance_samples=3).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_training_uses_the_samples_and_a_checkpoint_from_before_loads_with_one(tmp_path, tiny_npz, monkeypatch):
    calls = []
    forward = HierarchicalVAE.forward

    def spy(self, pixels, importance_samples=1, **options):
        if self.training and torch.is_grad_enabled():
            calls.append((options.get("kl_weight"), importance_samples))
        return forward(self, pixels, importance_samples=importance_samples, **options)

    monkeypatch.setattr(HierarchicalVAE, "forward", spy)
    overrides = dict(OVERRIDES, kl_warmup_steps=2, importance_samples=3)
    train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=3, train_overrides=overrides)
    assert calls == [(0.5, 3), (1.0, 3), (1.0, 3)]
    assert load_checkpoint(tmp_path / "run")["train_config"]["importance_samples"] == 3
    with pytest.raises(ValueError, match="importance_samples"):
        train(tmp_path / "other", tiny_npz, get_preset("tiny"), steps=1,
              train_overrides=dict(OVERRIDES, kl_warmup_steps=2, kl_balance=True, importance_samples=2))

    saved = load_checkpoint(tmp_path / "run")
    del saved["train_config"]["importance_samples"]  # what a checkpoint written before the field holds
    torch.save(saved, tmp_path / "run" / "last.pt")
    assert load_checkpoint(tmp_path / "run")["train_config"]["importance_samples"] == 1
    calls.clear()
    assert train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=4, resume=True)["step"] == 4
    assert calls == [(1.0, 1)]


def test_the_flag_reaches_the_saved_config(tmp_path, tiny_npz, monkeypatch, tiny_weights):
    monkeypatch.setenv("VAEZIP_MODELS", str(tmp_path / "user-models"))
    zoo.install("tiny-start", tiny_weights[3].read_bytes())
    monkeypatch.setattr(zoo, "default_for", lambda mode: "tiny-start")

    def invoke(*args):
        return CliRunner().invoke(app, ["train", tiny_npz, "--preset", "tiny", "--batch-size", "4", "--crop", "8",
                                        "--threads", "1", *map(str, args)])

    for args in (["--importance-samples", "0"], ["--importance-samples", "2", "--kl-warmup", "3", "--kl-balance"]):
        result = invoke("--out", tmp_path / "refused", "--steps", "1", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert result.stderr.count("vaezip: error:") == 1 and "--importance-samples" in result.stderr, result.stderr
    assert not (tmp_path / "refused").exists()
    result = invoke("--out", tmp_path / "run", "--steps", "2", "--importance-samples", "2")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert load_checkpoint(tmp_path / "run")["train_config"]["importance_samples"] == 2


def test_eval_reports_the_importance_weighted_bound(tmp_path, tiny_weights):
    """`evaluate(..., samples=K)` / `vaezip eval --samples K`: the K-sample bound beside the ELBO, from the same
    draws as a hand computation; below the ELBO."""
    from conftest import perturbed_model, run_cli

    from vaezip.evaluate import evaluate, repeatable_sampling

    model = perturbed_model(get_preset("tiny").model, 3, 0.02).eval()
    images = np.random.default_rng(4).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    result = evaluate(model, images, batch_size=8, samples=4)
    pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with repeatable_sampling(1, "cpu"), torch.no_grad():  # its own stream, after the ELBO's (seed 0)
        weights = model.importance_log_weights(pixels, 4).double()
    expected = -float((torch.logsumexp(weights, 1) - math.log(4)).sum()) / images.size / math.log(2)
    assert result.importance_bpsp == pytest.approx(expected, rel=1e-6)
    assert result.importance_bpsp < result.bound_bpsp
    plain = evaluate(model, images, batch_size=8)
    assert plain.importance_bpsp is None
    # the ELBO is the same with or without the second pass, over several batches too
    assert plain.bound_bpsp == result.bound_bpsp
    assert evaluate(model, images, batch_size=1, samples=2).bound_bpsp == evaluate(model, images, batch_size=1).bound_bpsp
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(model, images, samples=0)

    np.savez(tmp_path / "images.npz", x=images)
    done = run_cli("eval", tiny_weights[3], tmp_path / "images.npz", "--tile", "8", "--samples", "2")
    assert done.returncode == 0, done.stderr.decode()
    assert "importance-weighted bound, 2 samples" in done.stdout.decode()
    done = run_cli("eval", tiny_weights[3], tmp_path / "images.npz", "--samples", "3")
    assert done.returncode == 2 and "--samples must be 1, 2, 4, 8, 16, not 3" in done.stderr.decode()
