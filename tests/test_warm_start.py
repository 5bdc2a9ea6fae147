"""Warm starts (`vaezip train --init`), the colour -> grey conversion, and mixtures of training sources."""

import dataclasses

import numpy as np
import pytest
import torch

from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from vaezip.config import get_preset
from vaezip.data import DataError, ImageSet, MixtureSampler, parse_mixture
from vaezip.model import HierarchicalVAE
from vaezip.model.convert import grey_from_colour
from vaezip.train import train

OVERRIDES = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)


def _randomised(channels: int, seed: int = 0, **options) -> HierarchicalVAE:
    """A tiny model with every weight random (zero-initialised heads would make the checks trivial)."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels, **options))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("options", [{}, {"channel_coupling": False}, {"likelihood": "gaussian"},
                                     {"likelihood": "categorical"}], ids=["mixture", "uncoupled", "gaussian",
                                                                          "categorical"])
def test_grey_from_colour_is_the_red_marginal_of_a_grey_image(options):
    # float64: the two add the colour weights in a different order, and random weights amplify fp32 rounding.
    colour = _randomised(3, **options).double()
    grey = grey_from_colour(colour)
    assert grey.config.image_channels == 1
    pixels = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    unit = pixels.double() / 127.5 - 1
    with torch.no_grad():
        for a, b in zip(colour.encoder(unit.repeat(1, 3, 1, 1)), grey.encoder(unit)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        hidden = torch.randn(2, colour.config.stages[0].width, 4, 4, dtype=torch.float64)
        colour_params, grey_params = colour.decoder.head(hidden), grey.decoder.head(hidden)
        colour_red = colour.likelihood.channel_table(colour_params, pixels.repeat(1, 3, 1, 1), 0)
        grey_table = grey.likelihood.channel_table(grey_params, pixels, 0)
    torch.testing.assert_close(colour_red, grey_table, rtol=1e-6, atol=1e-9)


def test_grey_from_colour_refuses_a_grey_model():
    with pytest.raises(ValueError):
        grey_from_colour(_randomised(1))


@pytest.fixture()
def colour_npz(tmp_path):
    x = np.random.default_rng(0).integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "colour.npz", x=x)
    return str(tmp_path / "colour.npz")


def test_init_starts_from_the_given_weights_and_is_recorded(tmp_path, colour_npz):
    preset = get_preset("tiny")
    train(tmp_path / "base", colour_npz, preset, steps=3, train_overrides=OVERRIDES)
    base = load_checkpoint(tmp_path / "base")
    warm = train(tmp_path / "warm", colour_npz, preset, steps=0, train_overrides=OVERRIDES, init=str(tmp_path / "base"))
    assert warm["step"] == 0
    saved = load_checkpoint(tmp_path / "warm")
    for key, value in base["ema"].items():
        assert torch.equal(saved["model"][key], value), key
        assert torch.equal(saved["ema"][key], value), key
    assert saved["init"]["name"] == "base" and len(saved["init"]["sha256"]) == 64
    # The record survives a resume.
    train(tmp_path / "warm", colour_npz, preset, steps=2, resume=True)
    assert load_checkpoint(tmp_path / "warm")["init"] == saved["init"]


def test_a_context_head_added_to_an_init_model_starts_as_that_model(tmp_path, colour_npz):
    preset = get_preset("tiny")
    train(tmp_path / "base", colour_npz, preset, steps=3, train_overrides=OVERRIDES)
    train(tmp_path / "context", colour_npz, preset, steps=0, train_overrides=OVERRIDES,
          init=str(tmp_path / "base"), pixel_context=8)
    base = model_from_checkpoint(load_checkpoint(tmp_path / "base"))
    context = model_from_checkpoint(load_checkpoint(tmp_path / "context"))
    assert base.context is None and context.config.pixel_context == 8
    pixels = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = base(pixels).bound_bits
        torch.manual_seed(0)
        torch.testing.assert_close(context(pixels).bound_bits, expected)
    # It trains, and the head can no longer be given another width.
    assert train(tmp_path / "context", colour_npz, preset, steps=2, resume=True)["step"] == 2
    with pytest.raises(CheckpointError, match="context"):
        train(tmp_path / "other", colour_npz, preset, steps=0, train_overrides=OVERRIDES,
              init=str(tmp_path / "context"), pixel_context=4)
    with pytest.raises(ValueError, match="context"):
        grey_from_colour(context)
    # Adding a head keeps the other checks: a grey model cannot start a colour run.
    grey = np.random.default_rng(1).integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=grey)
    train(tmp_path / "grey", str(tmp_path / "grey.npz"), preset, steps=1, train_overrides=OVERRIDES)
    with pytest.raises(CheckpointError, match=r"colour images, but --init .* is a grey model \(--channels 1 "):
        train(tmp_path / "mixed", colour_npz, preset, steps=0, train_overrides=OVERRIDES,
              init=str(tmp_path / "grey"), pixel_context=8)


def test_train_only_context_leaves_the_vae_as_it_was(tmp_path, colour_npz):
    preset = get_preset("tiny")
    train(tmp_path / "base", colour_npz, preset, steps=2, train_overrides=OVERRIDES)
    with pytest.raises(CheckpointError, match="context"):
        train(tmp_path / "none", colour_npz, preset, steps=1, train_overrides={**OVERRIDES, "train_only_context": True})
    train(tmp_path / "head", colour_npz, preset, steps=3, train_overrides={**OVERRIDES, "train_only_context": True},
          init=str(tmp_path / "base"), pixel_context=8)
    base, head = load_checkpoint(tmp_path / "base")["ema"], load_checkpoint(tmp_path / "head")["model"]
    for key, value in head.items():
        if key.startswith("context."):
            continue
        assert torch.equal(value, base[key]), key
    assert any(head[key].abs().sum() > 0 for key in ("context.layer_out.weight", "context.layer_out.bias"))


def test_init_from_colour_trains_a_grey_model(tmp_path, colour_npz):
    preset = get_preset("tiny")
    train(tmp_path / "base", colour_npz, preset, steps=2, train_overrides=OVERRIDES)
    grey = np.random.default_rng(1).integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=grey)
    train(tmp_path / "grey", str(tmp_path / "grey.npz"), preset, steps=2, train_overrides=OVERRIDES,
          init=str(tmp_path / "base"))
    assert model_from_checkpoint(load_checkpoint(tmp_path / "grey")).config.image_channels == 1
    # Colour data made grey for a grey run (`--channels 1`).
    train(tmp_path / "luma", colour_npz, preset, steps=2, train_overrides=OVERRIDES, init=str(tmp_path / "base"),
          channels=1)
    assert model_from_checkpoint(load_checkpoint(tmp_path / "luma")).config.image_channels == 1


def test_parse_mixture():
    assert parse_mixture("a@2+b") == [("a", 2.0), ("b", 1.0)]
    assert parse_mixture("mnist-train") == [("mnist-train", 1.0)]
    assert parse_mixture("x@0.25") == [("x", 0.25)]
    for bad in ("a@0+b", "a@-1", "a@x+b", "+b"):
        with pytest.raises(DataError):
            parse_mixture(bad)


def test_mixture_sampler_follows_weights_and_resumes():
    small = ImageSet("small", np.zeros((5, 8, 8, 3), np.uint8))
    large = ImageSet("large", [np.full((40, 50, 3), 255, np.uint8)])
    sampler = MixtureSampler([small, large], [1.0, 3.0], crop=16, seed=3)
    shapes = [sampler.sample(2).shape for _ in range(400)]
    from_large = sum(shape == (2, 3, 16, 16) for shape in shapes)
    assert all(shape in ((2, 3, 8, 8), (2, 3, 16, 16)) for shape in shapes)
    assert 250 < from_large < 350  # 3 / 4 of 400
    state = sampler.state()
    ahead = [sampler.sample(2) for _ in range(5)]
    again = MixtureSampler([small, large], [1.0, 3.0], crop=16, seed=0)
    again.set_state(state)
    for expected in ahead:
        assert np.array_equal(again.sample(2), expected)


def test_training_on_a_mixture_holds_out_only_from_large_parts(tmp_path, colour_npz):
    import PIL.Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for index in range(3):
        PIL.Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    summary = train(tmp_path / "mix", f"{folder}@2+{colour_npz}@1", get_preset("tiny"), steps=4,
                    train_overrides=OVERRIDES)
    assert summary["step"] == 4
    saved = load_checkpoint(tmp_path / "mix")
    assert len(saved["rng"]["sampler"]["parts"]) == 2
