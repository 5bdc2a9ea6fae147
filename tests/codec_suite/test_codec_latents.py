"""codec.latents: the uniform latent grid, and its measured net-rate overhead in real bits-back coding."""

import numpy as np
import pytest

from codec.ans import Stack
from codec.errors import CodingError
from codec.latents import LatentGrid, gaussian_kl_bits


def test_grid_geometry():
    grid = LatentGrid()
    assert (grid.lo, grid.hi) == (-4096, 4096)
    np.testing.assert_array_equal(grid.values(np.array([-4096, 0, 1])), [-16.0, 0.0, 2.0**-8])
    mean, std = grid.to_index_units(np.array([1.0]), np.array([0.5]))
    assert mean[0] == 256 and std[0] == 128
    assert LatentGrid(0.5, 4.0).hi == 8


@pytest.mark.parametrize("step, bound", [(0.0, 1.0), (-1.0, 1.0), (np.nan, 1.0), (0.3, 1.0), (2.0**-20, 16.0)])
def test_bad_grids_raise(step, bound):
    with pytest.raises(CodingError):
        LatentGrid(step, bound)


def test_kl_formula():
    assert gaussian_kl_bits(np.array(0.0), np.array(1.0), np.array(0.0), np.array(1.0)) == 0
    # KL(N(1, 1) || N(0, 1)) = 1/2 nat
    assert np.isclose(gaussian_kl_bits(np.array(1.0), np.array(1.0), np.array(0.0), np.array(1.0)), 0.5 / np.log(2))


def test_grid_net_rate_matches_kl():
    """Bits-back through the real coder on the default grid: pop k with the posterior, push it with the prior.

    Measured with 5 seeds x 100 000 latents (posterior stds log-uniform in [0.02, 1], prior stds in [0.3, 2],
    mean KL 3.03 bits): net rate - analytic KL = -0.011 +- 0.001 bit per latent (-0.4 %). Negative because
    discretizing both Gaussians can only shrink their KL. This test: one seed, 20 000 latents.
    """
    rng = np.random.default_rng(0)
    n = 20_000
    grid = LatentGrid()
    prior_mean, prior_std = rng.normal(0, 1, n), rng.uniform(0.3, 2.0, n)
    post_std = np.exp(rng.uniform(np.log(0.02), np.log(1.0), n))
    post_mean = prior_mean + prior_std * rng.normal(0, 1, n)
    stack = Stack.from_words(rng.integers(1, 2**32, 2 * n, dtype=np.uint64).astype(np.uint32))  # random bits
    before = stack.num_valid_bits()

    k = stack.pop_gaussian(*grid.to_index_units(post_mean, post_std), grid.lo, grid.hi)
    stack.push_gaussian(k, *grid.to_index_units(prior_mean, prior_std), grid.lo, grid.hi)
    net = stack.num_valid_bits() - before

    kl = gaussian_kl_bits(post_mean, post_std, prior_mean, prior_std).sum()
    overhead = (net - kl) / n
    print(f"net {net} bits, KL {kl:.1f}: {overhead:+.4f} bit/latent, net/KL = {net / kl:.4f}")
    assert -0.05 < overhead < 0.01


def test_leaky_grid_samples_outliers_at_the_predicted_rate():
    """constriction gives every bin >= 2**-24, so a pop lands on an arbitrary bin with probability
    bins * 2**-24 (4.9e-4 for the default 8193 bins): the model then sees a latent anywhere in [-16, 16]."""
    rng = np.random.default_rng(3)
    n = 100_000
    grid = LatentGrid()
    stack = Stack.from_words(rng.integers(1, 2**32, n, dtype=np.uint64).astype(np.uint32))
    mean, std = np.zeros(n), np.full(n, 0.5)
    k = stack.pop_gaussian(*grid.to_index_units(mean, std), grid.lo, grid.hi)
    outliers = np.count_nonzero(np.abs(grid.values(k)) > 8 * 0.5)
    expected = n * (2 * grid.hi + 1) * 2.0**-24  # ~49
    assert expected / 2 < outliers < expected * 2


def test_narrow_posteriors_cost_more():
    """Posterior std below the grid step: the pop yields almost no bits, the prior push costs -log2(P(k))."""
    rng = np.random.default_rng(1)
    n = 5000
    grid = LatentGrid()
    post_std = np.full(n, grid.step / 16)
    stack = Stack.from_words(rng.integers(1, 2**32, n, dtype=np.uint64).astype(np.uint32))
    before = stack.num_valid_bits()
    k = stack.pop_gaussian(*grid.to_index_units(np.zeros(n), post_std), grid.lo, grid.hi)
    stack.push_gaussian(k, *grid.to_index_units(np.zeros(n), np.ones(n)), grid.lo, grid.hi)
    kl = gaussian_kl_bits(np.zeros(n), post_std, np.zeros(n), np.ones(n)).sum()
    assert (stack.num_valid_bits() - before) / n < kl / n - 1  # cheaper than KL claims: the grid truncates q
