"""Pixel likelihoods over 0..255 given the decoder's outputs: the discretized logistic mixture with per-pixel
channel coupling (PixelCNN++ / Efficient-VDVAE, the default), and sigma-VAE's calibrated decoders (paper 002):
a discretized Gaussian with one learned sigma per channel, and a 256-way categorical per subpixel.

Every likelihood gives `num_params` outputs per pixel, `log_prob` (training, bounds) and `channel_table`
(the float coder's tables, format 1 only). The coder's exact tables come from the integer twins in integer.py.

The mixture:

The mixture component is shared by the channels of a pixel, so the joint is
    P(r, g, b) = sum_k pi_k P_k(r) P_k(g | r) P_k(b | r, g),
with P_k(g | r) a logistic whose mean is shifted by a coefficient times r. The coder needs the same joint as
three conditionals, R, then G given R, then B given R and G; each is again a mixture whose weights are the
posterior of the component given the channels already seen. `channel_table` returns those tables; their
-log2 at the actual values sums to exactly the training NLL.

Pixel values v map to s = v / 127.5 - 1 in [-1, 1]; bin v covers [s - 1/255, s + 1/255], and the edge bins
0 and 255 extend to -inf and +inf so every table sums to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaezip.config import mixture_param_count

HALF_BIN = 1.0 / 255.0
MIN_LOG_SCALE = -7.0
NUM_VALUES = 256
# The optimal-sigma Gaussian's per-image log sigma, one per channel, on a grid the file stores: log sigma =
# OPTIMAL_LOG_SIGMA_LOW + code / OPTIMAL_SIGMA_CODES_PER_NAT for code in 0..OPTIMAL_SIGMA_CODES - 1 (sigma
# from e**-7, far below a bin, to e**0.94, wider than the [-1, 1] range), each code a uniform symbol of 7 bits.
# Steps of 1/16 nat leave sigma at most 3.2 % from the analytic one, which costs ~0.001 bits a subpixel.
OPTIMAL_LOG_SIGMA_LOW = MIN_LOG_SCALE
OPTIMAL_SIGMA_CODES_PER_NAT = 16
OPTIMAL_SIGMA_CODES = 128


def _inner_edges(device) -> torch.Tensor:
    """The 255 inner bin edges (float64); the outer ones are -inf and +inf (unbounded edge bins)."""
    return torch.linspace(-1.0 + HALF_BIN, 1.0 - HALF_BIN, NUM_VALUES - 1, device=device, dtype=torch.float64)


def _table_from_cdf(cdf: torch.Tensor) -> torch.Tensor:
    """(..., 255) float64 CDF at the inner edges -> (..., 256) float32 bin probabilities."""
    cdf = F.pad(F.pad(cdf, (1, 0), value=0.0), (0, 1), value=1.0)  # ..., 257
    return (cdf[..., 1:] - cdf[..., :-1]).clamp_(min=0.0).float()


def pixels_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 -> [-1, 1], float32: how every part of the model sees pixel values."""
    return pixels.float() / 127.5 - 1.0


def _log_bin_prob(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(upper) - sigmoid(lower)) for upper > lower, stable in fp32 for every input.

    sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(-(a - b))): each factor is computed in log
    space, so no difference of two numbers close to 1 is ever formed. Infinite edges give exact edge bins.
    """
    # A huge scale underflows the gap to 0 in fp32; the clamp keeps log and its gradient finite.
    gap = (upper - lower).clamp(min=1e-30)
    return -F.softplus(-upper) - F.softplus(lower) + torch.log(-torch.expm1(-gap))


class LogisticMixture:
    """Splits raw network outputs into mixture parameters and evaluates probabilities. Without `coupling`,
    the channels are independent given the component (no coefficients among the outputs)."""

    def __init__(self, channels: int, num_mixtures: int, coupling: bool = True):
        self.channels = channels
        self.num_mixtures = num_mixtures
        self.coupled = coupling and channels == 3
        self.num_params = mixture_param_count(channels, num_mixtures, coupling)

    def split(self, params: torch.Tensor):
        """params (B, P, H, W) -> logits (B,K,H,W), means/log_scales (B,K,C,H,W), coeffs (B,K,3,H,W) or None."""
        batch, _, height, width = params.shape
        k, c = self.num_mixtures, self.channels
        # One split instead of slices: slice backward zero-fills a full-size gradient per slice.
        sizes = [k, k * c, k * c] + ([3 * k] if self.coupled else [])
        parts = params.float().split(sizes, dim=1)
        logits = parts[0]  # B, K, H, W
        means = parts[1].reshape(batch, k, c, height, width)
        log_scales = parts[2].reshape(batch, k, c, height, width).clamp(min=MIN_LOG_SCALE)
        coeffs = torch.tanh(parts[3].reshape(batch, k, 3, height, width)) if self.coupled else None
        return logits, means, log_scales, coeffs

    @staticmethod
    def _coupled_mean(means, coeffs, unit, channel: int) -> torch.Tensor:
        """Mean of `channel` for every component, shifted by the channels before it. Returns (B,K,H,W)."""
        mean = means[:, :, channel]
        if coeffs is None:
            return mean
        if channel == 1:
            mean = mean + coeffs[:, :, 0] * unit[:, 0:1]
        elif channel == 2:
            mean = mean + coeffs[:, :, 1] * unit[:, 0:1] + coeffs[:, :, 2] * unit[:, 1:2]
        return mean

    def _component_log_probs(self, split, pixels: torch.Tensor, channel: int) -> torch.Tensor:
        """log P_k(x_channel | x_<channel) of the actual values, (B, K, H, W)."""
        _, means, log_scales, coeffs = split
        unit = pixels_to_unit(pixels)  # B, C, H, W
        mean = self._coupled_mean(means, coeffs, unit, channel)
        inv_scale = torch.exp(-log_scales[:, :, channel])
        value = pixels[:, channel : channel + 1]  # B, 1, H, W
        centered = unit[:, channel : channel + 1] - mean
        upper = torch.where(value == 255, math.inf, inv_scale * (centered + HALF_BIN))
        lower = torch.where(value == 0, -math.inf, inv_scale * (centered - HALF_BIN))
        return _log_bin_prob(upper, lower)

    def log_prob(self, params: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Joint log-probability (nats) of every pixel, (B, H, W). pixels: (B, C, H, W) integer 0..255."""
        split = self.split(params)
        log_weights = torch.log_softmax(split[0], dim=1)  # B, K, H, W
        for channel in range(self.channels):
            log_weights = log_weights + self._component_log_probs(split, pixels, channel)
        return torch.logsumexp(log_weights, dim=1)

    def channel_table(self, params: torch.Tensor, pixels: torch.Tensor, channel: int) -> torch.Tensor:
        """Probabilities of every value of `channel` given the channels before it, (B, H, W, 256) float32.

        Only pixels[:, :channel] is read, so a decoder can pass a partly filled array.
        """
        split = self.split(params)
        logits, means, log_scales, coeffs = split
        log_weights = torch.log_softmax(logits, dim=1)  # B, K, H, W
        for previous in range(channel):
            log_weights = log_weights + self._component_log_probs(split, pixels, previous)
        weights = torch.softmax(log_weights, dim=1)  # B, K, H, W

        unit = pixels_to_unit(pixels)
        mean = self._coupled_mean(means, coeffs, unit, channel).double().unsqueeze(-1)  # B, K, H, W, 1
        inv_scale = torch.exp(-log_scales[:, :, channel]).double().unsqueeze(-1)  # B, K, H, W, 1
        component_cdfs = torch.addcmul(-inv_scale * mean, inv_scale, _inner_edges(params.device)).sigmoid_()
        # Mix the CDFs (B, K, H, W, 255) first, then difference once. float64 keeps tail bins exact: a
        # difference of two CDF values near 1 loses only ~1e-16 absolute, far below the coder's 2^-24.
        return _table_from_cdf(component_cdfs.mul_(weights.double().unsqueeze(-1)).sum(dim=1))  # B, H, W, 256


def _log_normal_bin(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for upper > lower (float64), stable in both tails: a bin right of 0 is
    computed as its mirror image, so the difference is always of two numbers in the lower tail, in log space."""
    mirror = lower > 0
    upper, lower = torch.where(mirror, -lower, upper), torch.where(mirror, -upper, lower)
    log_upper, log_lower = torch.special.log_ndtr(upper), torch.special.log_ndtr(lower)
    # log_lower < log_upper; the clamp keeps log1p finite when a huge sigma makes the bin's mass underflow
    return log_upper + torch.log1p(-torch.exp((log_lower - log_upper).clamp(max=-1e-30)))


def optimal_sigma_codes(means: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """sigma-VAE's optimal sigma of each image and channel, sqrt of the mean squared error of the means at the
    real pixels, as codes on the stored grid (nearest log sigma, clamped): (B, C) int64. means (B, C, H, W)
    in [-1, 1] units, pixels (B, C, H, W) 0..255, mask (B, 1, H, W) of the real pixels or None (all). What the
    encoder stores for each tile; the decoder reads it, so this needs no exactness."""
    error = (pixels_to_unit(pixels).double() - means.detach().double()) ** 2  # B, C, H, W
    if mask is None:
        mse = error.flatten(2).mean(2)
    else:
        weight = mask.double().expand_as(error)
        mse = (error * weight).flatten(2).sum(2) / weight.flatten(2).sum(2).clamp(min=1.0)
    log_sigma = 0.5 * torch.log(mse.clamp(min=1e-30))
    codes = torch.round((log_sigma - OPTIMAL_LOG_SIGMA_LOW) * OPTIMAL_SIGMA_CODES_PER_NAT)
    return codes.clamp(0, OPTIMAL_SIGMA_CODES - 1).long()


def optimal_log_sigma(codes: torch.Tensor) -> torch.Tensor:
    """Stored codes -> log sigma (float64, exact: a multiple of 1/16)."""
    return OPTIMAL_LOG_SIGMA_LOW + codes.double() / OPTIMAL_SIGMA_CODES_PER_NAT


class DiscretizedGaussian(nn.Module):
    """sigma-VAE's calibrated Gaussian decoder (paper 002), discretized like the mixture: per subpixel a mean
    from the network, edge bins to +-inf, channels independent given the latents. Its sigma: one learned log
    sigma per channel shared by every pixel and image (the paper's "shared sigma"), or with `optimal` each
    image's own per channel (the paper's "optimal sigma", the analytic sqrt of the mean squared error on the
    stored grid: optimal_sigma_codes), which `with_sigma` appends to the means as C more parameters per pixel
    and which a file pays OPTIMAL_SIGMA_CODES symbols for (`side_bits`)."""

    def __init__(self, channels: int, optimal: bool = False):
        super().__init__()
        self.channels = channels
        self.num_params = channels
        self.optimal = optimal
        if not optimal:
            # log sigma = log(1/8) to start: wider than any trained model's, narrower than the [-1, 1] range
            self.log_sigma = nn.Parameter(torch.full((channels,), math.log(0.125)))

    @property
    def side_bits(self) -> float:
        """Bits a coded image (tile) spends on its sigmas beside its pixels: 0 for a shared sigma."""
        return self.channels * math.log2(OPTIMAL_SIGMA_CODES) if self.optimal else 0.0

    def scales(self) -> torch.Tensor:
        """(C,) log sigma, clamped as the mixture's log scales are (shared sigma only)."""
        return self.log_sigma.clamp(MIN_LOG_SCALE, 8.0)

    def with_sigma(self, params: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Optimal sigma: means (B, C, H, W) -> (B, 2C, H, W), each image's stored log sigma per channel
        appended at every pixel (a constant of the graph: at the optimum its gradient is 0 anyway)."""
        log_sigma = optimal_log_sigma(optimal_sigma_codes(params, pixels, mask)).to(params.dtype)  # B, C
        return torch.cat([params, log_sigma[:, :, None, None].expand_as(params)], dim=1)

    def _inv_sigma(self, params: torch.Tensor) -> torch.Tensor:
        """1 / sigma, broadcastable to the means (B, C, H, W), float64."""
        if self.optimal:
            if params.shape[1] != 2 * self.channels:
                raise ValueError("an optimal-sigma Gaussian reads means and log sigmas: call with_sigma first")
            return torch.exp(-params[:, self.channels :].double())
        return torch.exp(-self.scales()).double()[None, :, None, None]  # 1, C, 1, 1

    def log_prob(self, params: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) nats: params (B, C, H, W) means (optimal sigma: (B, 2C, H, W), from with_sigma), pixels
        (B, C, H, W) 0..255."""
        inv_sigma = self._inv_sigma(params)
        centered = pixels_to_unit(pixels).double() - params[:, : self.channels].double()  # B, C, H, W
        upper = torch.where(pixels == 255, math.inf, inv_sigma * (centered + HALF_BIN))
        lower = torch.where(pixels == 0, -math.inf, inv_sigma * (centered - HALF_BIN))
        return _log_normal_bin(upper, lower).sum(dim=1).float()

    def channel_table(self, params: torch.Tensor, pixels: torch.Tensor, channel: int) -> torch.Tensor:
        """(B, H, W, 256) float32 probabilities of `channel` (the others are not read). Only the float coder
        (format 1) reads float tables, and no format-1 file names such a model: what tests compare the integer
        tables with."""
        inv_sigma = self._inv_sigma(params)[:, channel].unsqueeze(-1)  # B or 1, H or 1, W or 1, 1
        mean = params[:, channel].double().unsqueeze(-1)  # B, H, W, 1
        return _table_from_cdf(torch.special.ndtr((_inner_edges(params.device) - mean) * inv_sigma))


class Categorical:
    """sigma-VAE's categorical decoder: 256 logits per subpixel, channels independent given the latents."""

    def __init__(self, channels: int):
        self.channels = channels
        self.num_params = NUM_VALUES * channels

    def _log_probs(self, params: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = params.shape  # params B, C * 256, H, W
        return torch.log_softmax(params.float().reshape(batch, self.channels, NUM_VALUES, height, width), dim=2)

    def log_prob(self, params: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W) nats."""
        log_probs = self._log_probs(params)  # B, C, 256, H, W
        return log_probs.gather(2, pixels.long().unsqueeze(2)).squeeze(2).sum(dim=1)

    def channel_table(self, params: torch.Tensor, pixels: torch.Tensor, channel: int) -> torch.Tensor:
        """(B, H, W, 256) float32 probabilities of `channel` (for tests, as DiscretizedGaussian's)."""
        return self._log_probs(params)[:, channel].exp().permute(0, 2, 3, 1).contiguous()


def make_likelihood(config) -> "LogisticMixture | DiscretizedGaussian | Categorical":
    """The likelihood of a ModelConfig (its `likelihood`, `num_mixtures`, `channel_coupling`)."""
    if config.likelihood in ("gaussian", "gaussian-optimal"):
        return DiscretizedGaussian(config.image_channels, optimal=config.likelihood == "gaussian-optimal")
    if config.likelihood == "categorical":
        return Categorical(config.image_channels)
    return LogisticMixture(config.image_channels, config.num_mixtures, config.channel_coupling)
