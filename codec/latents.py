"""Discretization of continuous Gaussian latents on a fine uniform grid, for bits-back coding; and binary
latents (DVAE++), coded as they are (end of the module).

A latent z is coded as an integer index k with z = k * step, k in [-bound/step, bound/step]. The coder sees
Gaussians in *index units* (mean / step, std / step), where every bin has width 1 (constriction's
QuantizedGaussian). Mass beyond +-bound is folded into the two end bins.

Why a uniform grid: bits-back pops k with the discretized posterior Q and pushes it with the discretized prior
P, so the net cost of a latent is log Q(k) - log P(k) ~ log q(z) + log step - log p(z) - log step: the step
cancels, as long as it is small against the posterior std (a bin then holds density * step of mass). The grid
needs no per-model fitting (unlike Bit-Swap's static bins) and no per-symbol bin search (unlike HiLLoC's
equal-mass bins).

Measured by tests/codec/test_codec_latents.py::test_grid_net_rate_matches_kl (numbers in its docstring): with
the default grid (step 2**-8, bound 16) and posterior stds in [0.02, 1], the real coder's net rate is
0.011 +- 0.001 bit per latent *below* the analytic KL (-0.4 % of a mean KL of 3 bits): discretizing both
Gaussians can only shrink their KL. Posterior stds well below the step pay up to log2(step / std) extra bits
each (the sample is pinned to one bin): keep them above ~0.02.

Leak: constriction gives every bin at least 2**-24, so a pop over the whole grid returns an arbitrary bin in
[-bound, bound] with probability bins * 2**-24 = 4.9e-4 per latent for the default 8193 bins
(test_leaky_grid_samples_outliers_at_the_predicted_rate), and the model then decodes pixels from a wild
latent. Posterior pops therefore use a window of +-W bins around the posterior mean (pop_posterior below);
with the linear toy model this took the bits-back tiles from 0.5-1.2 % above the expected negative ELBO
(batches of 16, 3 seeds) to 0.00 %
(tests/codec/test_codec_bitsback.py::test_popped_latents_are_faithful_posterior_samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.ans import Stack
from codec.errors import CodingError
from codec.protocol import BinaryParams, LatentParams


@dataclass(frozen=True)
class LatentGrid:
    """z = k * step for integer k in [lo, hi] = [-bound/step, bound/step]."""

    step: float = 2.0**-8
    bound: float = 16.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.step) and np.isfinite(self.bound) and self.step > 0 and self.bound > 0):
            raise CodingError(f"grid step and bound must be finite and > 0, got {self.step}, {self.bound}")
        k = self.bound / self.step
        if not k < 2**24:  # also inf and nan: constriction's 24-bit probabilities cannot cover more bins
            raise CodingError(f"grid of bound {self.bound} and step {self.step} has too many bins (limit 2**24)")
        if k != round(k):
            raise CodingError(f"grid bound {self.bound} is not a multiple of step {self.step}")
        if 2 * round(k) + 1 >= 2**24:  # constriction's 24-bit probabilities cannot cover more bins
            raise CodingError(f"grid has {2 * round(k) + 1} bins, must be < 2**24")

    @property
    def hi(self) -> int:
        """Largest index: bound / step."""
        return int(round(self.bound / self.step))

    @property
    def lo(self) -> int:
        return -self.hi

    def to_index_units(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian (mean, std) in latent units -> index units (bin width 1), float64, same shapes."""
        return np.asarray(mean, dtype=np.float64) / self.step, np.asarray(std, dtype=np.float64) / self.step

    def values(self, k: np.ndarray) -> np.ndarray:
        """Indices -> latent values z = k * step (float64, exact: step is a power of two by default)."""
        return np.asarray(k, dtype=np.float64) * self.step


def gaussian_kl_bits(
    post_mean: np.ndarray, post_std: np.ndarray, prior_mean: np.ndarray, prior_std: np.ndarray
) -> np.ndarray:
    """Analytic KL(q || p) of Gaussians, elementwise, in bits (same shapes as the inputs)."""
    var_ratio = (post_std / prior_std) ** 2
    nats = 0.5 * (var_ratio + ((post_mean - prior_mean) / prior_std) ** 2 - 1.0 - np.log(var_ratio))
    return nats / np.log(2.0)


# ---------------------------------------------------------------------------------------------- coding

# Posterior pops use a window of +-W bins around the posterior mean instead of the whole grid: every bin of a
# quantized Gaussian gets >= 2**-24 (leakiness), so on the whole grid a pop lands on an arbitrary bin in
# [-bound, bound] with probability bins * 2**-24 (4.9e-4 for 8193 bins), and the model then decodes the
# pixels from a wild latent. In a window the leak is (2W + 1) * 2**-24 and an outlier is at most W bins off.
# W is the smallest power of two >= WINDOW_SIGMAS posterior stds (one coder call per distinct W); the Gaussian
# mass outside 8 stds is ~1e-15. Priors keep the whole grid: a prior must be able to code any latent.
WINDOW_SIGMAS = 8.0


def _windows(grid: LatentGrid, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-widths W (N,) and centers (N,) of the posterior windows, index units; each window inside the grid."""
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise CodingError("posterior means must be finite and stds finite and > 0")
    # The smallest power of two >= WINDOW_SIGMAS * std, from frexp (exact) rather than log2 (a libm function
    # whose last bit may differ between machines, and ceil would carry that difference into the window).
    mantissa, exponent = np.frexp(np.maximum(WINDOW_SIGMAS * std, 1.0))  # x = m * 2**e, m in [0.5, 1)
    exponent = exponent - (mantissa == 0.5)
    half = np.minimum(np.ldexp(1.0, np.minimum(exponent, 30)), grid.hi).astype(np.int64)  # (N,)
    center = np.clip(np.rint(np.clip(mean, grid.lo, grid.hi)), grid.lo + half, grid.hi - half).astype(np.int64)
    return half, center


def pop_posterior(stack: Stack, grid: LatentGrid, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Pop latents (B, D) from their posteriors, each within its window (ascending window sizes)."""
    m, s = (a.ravel() for a in grid.to_index_units(mean, std))  # (N,) each
    half, center = _windows(grid, m, s)
    k = np.empty(m.shape, dtype=np.int64)
    for w in np.unique(half):
        i = np.nonzero(half == w)[0]
        k[i] = center[i] + stack.pop_gaussian(m[i] - center[i], s[i], -int(w), int(w))
    return k.reshape(mean.shape)


def push_posterior(stack: Stack, grid: LatentGrid, k: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Exact inverse of pop_posterior (same windows, descending sizes: last popped, first pushed)."""
    m, s = (a.ravel() for a in grid.to_index_units(mean, std))
    half, center = _windows(grid, m, s)
    k = k.ravel()
    for w in np.unique(half)[::-1]:
        i = np.nonzero(half == w)[0]
        stack.push_gaussian(k[i] - center[i], m[i] - center[i], s[i], -int(w), int(w))


def pop_prior(stack: Stack, grid: LatentGrid, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Pop latents (B, D) from their priors over the whole grid."""
    m, s = grid.to_index_units(mean, std)  # (B, D) each
    return stack.pop_gaussian(m.ravel(), s.ravel(), grid.lo, grid.hi).reshape(m.shape)


def push_prior(stack: Stack, grid: LatentGrid, k: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Push latent indices k (B, D) with their priors over the whole grid."""
    m, s = grid.to_index_units(mean, std)  # (B, D) each
    stack.push_gaussian(k.ravel(), m.ravel(), s.ravel(), grid.lo, grid.hi)


# ---------------------------------------------------------------------------------------------- binary latents

# A binary latent z in {0, 1} (DVAE++, paper 000) needs no grid: its prior and posterior are Bernoullis, given
# by the model as the frequency of z = 1 out of BINARY_TOTAL (constriction's 24-bit precision; exact in
# float32, and constriction's quantization of a float32 table is deterministic, so both sides code with the
# same probabilities, within a unit or two of the model's). Popping one from its posterior takes at most
# -log2(BINARY_FLOOR / BINARY_TOTAL) = 20 bits and usually far less: a tile's first bits-back batch needs
# that many bits on the stack, not the ~15 bits per latent of a Gaussian on the grid.
BINARY_TOTAL = 2**24
BINARY_FLOOR = 16  # each frequency >= 16: codec/ans.py's last-entry floor (2**-20 of the row) never moves it


def binary_tables(ones: np.ndarray) -> np.ndarray:
    """Frequencies of z = 1 (any shape, integers in [BINARY_FLOOR, BINARY_TOTAL - BINARY_FLOOR]) -> (N, 2)
    float32 rows [P(z = 0), P(z = 1)], exact."""
    ones = np.asarray(ones, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(ones)) and np.all(ones == np.floor(ones))):
        raise CodingError("binary latent frequencies must be integers")
    if ones.size and (ones.min() < BINARY_FLOOR or ones.max() > BINARY_TOTAL - BINARY_FLOOR):
        raise CodingError(f"binary latent frequencies must be in [{BINARY_FLOOR}, {BINARY_TOTAL - BINARY_FLOOR}], "
                          f"got {ones.min():.0f}..{ones.max():.0f}")
    rows = np.empty((ones.size, 2), dtype=np.float32)
    rows[:, 0] = (BINARY_TOTAL - ones) / BINARY_TOTAL
    rows[:, 1] = ones / BINARY_TOTAL
    return rows


def pop_binary(stack: Stack, ones: np.ndarray) -> np.ndarray:
    """Pop binary latents (B, D) int64 with P(z = 1) = ones / BINARY_TOTAL (B, D)."""
    return stack.pop_categorical(binary_tables(ones)).astype(np.int64).reshape(np.shape(ones))


def push_binary(stack: Stack, z: np.ndarray, ones: np.ndarray) -> None:
    """Exact inverse of pop_binary."""
    stack.push_categorical(np.asarray(z).ravel().astype(np.int64), binary_tables(ones))


def binary_kl_bits(post_ones: np.ndarray, prior_ones: np.ndarray) -> np.ndarray:
    """KL(q || p) of Bernoullis given as frequencies of z = 1, elementwise, in bits."""
    q, p = np.asarray(post_ones, np.float64) / BINARY_TOTAL, np.asarray(prior_ones, np.float64) / BINARY_TOTAL
    return q * np.log2(q / p) + (1 - q) * np.log2((1 - q) / (1 - p))


# ---------------------------------------------------------------------------------------------- either kind

# One latent group's pops and pushes, whatever its kind: a Gaussian (LatentParams) on the grid, a binary group
# (BinaryParams) as it is. A posterior given apart (the decoder's, once the pixels are known) is a pair (mean,
# std), or a binary group's (frequencies of z = 1, None).


def pop_group_posterior(stack: Stack, grid: LatentGrid, p: LatentParams | BinaryParams) -> np.ndarray:
    if isinstance(p, BinaryParams):
        return pop_binary(stack, p.post_ones)
    return pop_posterior(stack, grid, p.post_mean, p.post_std)


def push_group_posterior(stack: Stack, grid: LatentGrid, k: np.ndarray, posterior) -> None:
    """posterior: (mean, std), or a binary group's (frequencies of z = 1, None)."""
    first, std = posterior
    if std is None:
        push_binary(stack, k, first)
    else:
        push_posterior(stack, grid, k, first, std)


def pop_group_prior(stack: Stack, grid: LatentGrid, p: LatentParams | BinaryParams) -> np.ndarray:
    if isinstance(p, BinaryParams):
        return pop_binary(stack, p.prior_ones)
    return pop_prior(stack, grid, p.prior_mean, p.prior_std)


def push_group_prior(stack: Stack, grid: LatentGrid, k: np.ndarray, p: LatentParams | BinaryParams) -> None:
    if isinstance(p, BinaryParams):
        push_binary(stack, k, p.prior_ones)
    else:
        push_prior(stack, grid, k, p.prior_mean, p.prior_std)


def group_values(grid: LatentGrid, p: LatentParams | BinaryParams, k: np.ndarray) -> np.ndarray:
    """What set_latent takes: grid values, or a binary latent's 0 and 1."""
    return k.astype(np.float64) if isinstance(p, BinaryParams) else grid.values(k)


def group_kl_bits(p: LatentParams | BinaryParams) -> np.ndarray:
    if isinstance(p, BinaryParams):
        return binary_kl_bits(p.post_ones, p.prior_ones)
    return gaussian_kl_bits(p.post_mean, p.post_std, p.prior_mean, p.prior_std)
