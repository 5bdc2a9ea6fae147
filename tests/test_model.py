import dataclasses

import numpy as np
import pytest
import torch

from vaezip.config import (
    FORMAT_VERSION,
    PRESETS,
    ConfigError,
    config_to_dict,
    get_preset,
    model_config_from_dict,
    train_config_from_dict,
)
from vaezip.model import HierarchicalVAE


def tiny(channels=3):
    return HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, image_channels=channels))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(4, 4), (28, 28), (32, 48), (7, 3), (1, 1)])
def test_any_size_and_channel_count(channels, size):
    model = tiny(channels)
    pixels = torch.randint(0, 256, (2, channels, *size))
    out = model(pixels)
    assert torch.isfinite(out.loss)
    # padding never counts as pixels
    assert out.subpixels.tolist() == [channels * size[0] * size[1]] * 2
    assert out.kl_bits.shape == (model.config.num_groups,)


def test_padding_does_not_count_in_the_likelihood():
    torch.manual_seed(0)
    model = tiny(1)
    pixels = torch.randint(0, 256, (1, 1, 6, 6))
    out = model(pixels)
    # a 6x6 image of the tiny model (stride 4) is padded to 8x8; the bound is over 36 subpixels only
    assert out.subpixels.item() == 36
    assert out.bound_bits.item() / 36 < 20


def test_walk_matches_forward_with_the_same_latents():
    """The coder's step-by-step walk must compute exactly what training computes."""
    model = tiny(3).eval()
    pixels = torch.randint(0, 256, (2, 3, 8, 8))
    walk = model.walk(pixels, 2, 8, 8)
    latents = []
    for _ in range(walk.num_groups):
        step = walk.step()
        latents.append(step.post_mean)
        walk.advance(step.post_mean)
    params_posterior_path = walk.pixel_params()
    prior_walk = model.walk(None, 2, 8, 8)
    for latent in latents:
        step = prior_walk.step()
        assert step.post_mean is None
        prior_walk.advance(latent)
    assert torch.equal(prior_walk.pixel_params(), params_posterior_path)


def test_training_reduces_the_bound():
    torch.manual_seed(0)
    model = tiny(1)
    optimizer = torch.optim.Adamax(model.parameters(), lr=3e-3)
    pixels = torch.randint(100, 140, (8, 1, 8, 8))
    first = None
    for _ in range(60):
        out = model(pixels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < first - 1.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip(name):
    preset = PRESETS[name]
    assert model_config_from_dict(config_to_dict(preset.model)) == preset.model
    assert train_config_from_dict(config_to_dict(preset.train)) == preset.train
    assert FORMAT_VERSION >= 1


def test_config_loading_is_strict():
    data = config_to_dict(get_preset("tiny").model)
    data["surprise"] = 1
    with pytest.raises(ConfigError, match="surprise"):
        model_config_from_dict(data)
    data = config_to_dict(get_preset("tiny").model)
    del data["num_mixtures"]
    with pytest.raises(ConfigError, match="num_mixtures"):
        model_config_from_dict(data)
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("huge")


def test_format_1_configs_load_without_a_pixel_context():
    data = config_to_dict(get_preset("cpu").model)
    del data["pixel_context"]
    assert model_config_from_dict(data, format_version=1) == get_preset("cpu").model
    with pytest.raises(ConfigError, match="pixel_context"):
        model_config_from_dict(data)  # the current format must name it
    with pytest.raises(ConfigError, match="format 1"):
        model_config_from_dict({**data, "pixel_context": 8}, format_version=1)
    with pytest.raises(ConfigError, match="format 99"):
        model_config_from_dict(data, format_version=99)


@pytest.mark.parametrize("order", ["rows", "scales"])
def test_pixel_context_phases_match_the_full_pass_and_read_only_earlier_phases(order):
    torch.manual_seed(0)
    model = HierarchicalVAE(dataclasses.replace(get_preset("tiny").model, pixel_context=16,
                                                context_order=order)).eval()
    with torch.no_grad():
        model.context.layer_out.weight.normal_(0, 0.3)
    height, width = 6, 10
    pixels = torch.randint(0, 256, (2, 3, height, width))
    valid = torch.ones(2, 1, height, width)
    valid[1, :, 4:] = 0  # a partial tile: 4 x 7 valid pixels
    valid[1, :, :, 7:] = 0
    params = torch.randn(2, model.likelihood.num_params, height, width)
    phases = torch.from_numpy(model.context.order.phase_map(height, width))
    covered = torch.zeros(height, width, dtype=torch.int64)
    with torch.no_grad():
        full = model.context(params, pixels, valid)
        for phase in range(int(phases.max()) + 1):
            rows, columns = (torch.from_numpy(a) for a in model.context.order.positions(phase, height, width))
            assert torch.equal(rows * width + columns, (rows * width + columns).sort().values)  # raster order
            covered[rows, columns] += 1
            # Noise in this phase and every later one (and at invalid pixels) must change nothing.
            seen = pixels.clone()
            seen[:, :, phases >= phase] = torch.randint(0, 256, seen[:, :, phases >= phase].shape)
            seen[1][:, valid[1, 0] == 0] = 77
            refined = model.context.phase(params[:, :, rows, columns].unsqueeze(2), seen, valid, phase)
            torch.testing.assert_close(refined[:, :, 0], full[:, :, rows, columns], rtol=1e-5, atol=1e-5)
        # The head reads neighbours: change one pixel and a later one's parameters move.
        moved = pixels.clone()
        moved[0, :, 2, 4] = (moved[0, :, 2, 4] + 50) % 256
        assert not torch.allclose(model.context(params, moved, valid)[0, :, 3, 4], full[0, :, 3, 4])
    assert bool((covered == 1).all())  # every pixel in exactly one phase


def test_tiny_preset_stays_tiny():
    """Unit tests run the tiny model everywhere: it must stay small (its speed is measured by the benchmarks,
    never timed here)."""
    model = tiny(3).eval()
    assert sum(p.numel() for p in model.parameters()) < 200_000
    with torch.no_grad():
        assert model(torch.randint(0, 256, (1, 3, 32, 32))).bound_bits.shape == (1,)


def test_tiled_bound_cuts_like_the_coder_and_counts_only_real_pixels():
    from codec.tiling import split_tiles
    from vaezip.evaluate import evaluate

    torch.manual_seed(0)
    model = HierarchicalVAE(get_preset("tiny").model).eval()
    stride = model.config.stride
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2 * stride, 2 * stride, 3), dtype=np.uint8)
    tiles = np.stack([t.pixels for t in split_tiles(image.transpose(2, 0, 1), stride, stride)]).transpose(0, 2, 3, 1)
    whole_tiles = evaluate(model, tiles, batch_size=4)
    tiled = evaluate(model, [image], batch_size=4, tile=stride)
    assert tiled.images == 1 and tiled.subpixels == image.size
    assert tiled.bound_bpsp == pytest.approx(whole_tiles.bound_bpsp, rel=1e-6)
    # Padding is coded (its latents) but never counted as pixels.
    odd = rng.integers(0, 256, (stride + 3, stride - 1, 3), dtype=np.uint8)
    assert evaluate(model, [odd], tile=stride).subpixels == odd.size
