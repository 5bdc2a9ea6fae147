"""The coder's probability tables must be the training likelihood, exactly enough to code with."""

import math

import pytest
import torch

from vaezip.model.likelihood import LogisticMixture


def random_case(channels, mixtures=5, batch=2, size=6, spread=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mixture = LogisticMixture(channels, mixtures)
    params = torch.randn(batch, mixture.num_params, size, size, generator=generator) * spread
    pixels = torch.randint(0, 256, (batch, channels, size, size), generator=generator)
    # make sure the unbounded edge bins are exercised
    pixels[0, :, 0, 0] = 0
    pixels[0, :, 0, 1] = 255
    return mixture, params, pixels


def table_nll_bits(mixture, params, pixels):
    """-log2 of the table entries of the actual values, summed over channels: (B, H, W)."""
    total = torch.zeros(pixels.shape[0], pixels.shape[2], pixels.shape[3], dtype=torch.float64)
    for channel in range(mixture.channels):
        table = mixture.channel_table(params, pixels, channel)  # B, H, W, 256
        picked = table.gather(-1, pixels[:, channel].long().unsqueeze(-1)).squeeze(-1)
        total += -torch.log2(picked.double())
    return total


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("spread", [0.5, 3.0])
def test_tables_match_training_nll(channels, spread):
    mixture, params, pixels = random_case(channels, spread=spread)
    training_bits = -mixture.log_prob(params, pixels).double() / math.log(2)  # B, H, W
    coder_bits = table_nll_bits(mixture, params, pixels)
    per_subpixel_gap = (coder_bits - training_bits).abs().mean() / channels
    assert per_subpixel_gap < 1e-3, per_subpixel_gap


@pytest.mark.parametrize("channels", [1, 3])
def test_tables_are_distributions(channels):
    mixture, params, pixels = random_case(channels, spread=4.0, seed=1)
    for channel in range(channels):
        table = mixture.channel_table(params, pixels, channel)
        assert table.shape == (2, 6, 6, 256)
        assert torch.isfinite(table).all()
        assert (table >= 0).all()
        assert torch.allclose(table.sum(-1), torch.ones(2, 6, 6), atol=1e-5)


def test_table_reads_only_earlier_channels():
    mixture, params, pixels = random_case(3, seed=2)
    changed = pixels.clone()
    changed[:, 1:] = 255 - changed[:, 1:]
    torch.testing.assert_close(mixture.channel_table(params, pixels, 1), mixture.channel_table(params, changed, 1))
    assert not torch.allclose(mixture.channel_table(params, pixels, 2), mixture.channel_table(params, changed, 2))


def test_nll_is_finite_with_extreme_parameters():
    mixture, params, pixels = random_case(3, spread=60.0, seed=3)
    params.requires_grad_(True)
    log_prob = mixture.log_prob(params, pixels)
    assert torch.isfinite(log_prob).all()
    log_prob.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_sharp_component_puts_mass_on_its_value():
    mixture = LogisticMixture(1, 1)
    params = torch.zeros(1, mixture.num_params, 1, 1)
    params[0, 1] = 100 / 127.5 - 1  # mean at value 100
    params[0, 2] = -7.0  # the narrowest allowed scale
    table = mixture.channel_table(params, torch.zeros(1, 1, 1, 1, dtype=torch.long), 0)
    assert table[0, 0, 0].argmax() == 100
    assert table[0, 0, 0, 100] > 0.97  # half-bin / e^-7 = 4.3 scales: sigmoid(4.3) - sigmoid(-4.3)
