"""Building blocks: residual blocks and the heads of a top-down block."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# softplus with beta = ln 2 maps 0 to exactly 1 and is smoother than exp (Efficient-VDVAE).
SOFTPLUS_BETA = math.log(2.0)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def smooth_std(raw: torch.Tensor, min_std: float) -> torch.Tensor:
    return F.softplus(raw, beta=SOFTPLUS_BETA) + min_std


def std_ratio(raw: torch.Tensor) -> torch.Tensor:
    """The factor of a residual posterior's std on its prior's: log2(1 + 2**raw), smooth, positive, exactly 1 at
    0 (the posterior starts as the prior), ~2**raw below 0 and ~raw above (a wider posterior grows linearly,
    never exponentially). integer.py tabulates it ("std_ratio")."""
    return F.softplus(raw, beta=SOFTPLUS_BETA)


def residual_posterior(prior_mean: torch.Tensor, prior_std: torch.Tensor, delta: torch.Tensor, raw: torch.Tensor,
                       min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NVAE's residual normal posterior (Vahdat & Kautz 2020, section 3.2): q = N(mean_p + delta, std_p *
    std_ratio(raw)), its std floored at min_std like every latent std."""
    return prior_mean + delta, (prior_std * std_ratio(raw)).clamp_min(min_std)


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))). The last conv starts at zero, so every block starts as the identity
    and a deep stack trains without rescaling."""

    def __init__(self, width: int):
        super().__init__()
        self.conv_in = conv3x3(width, width)
        self.conv_out = conv3x3(width, width)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(F.silu(self.conv_in(F.silu(x))))


class TopDownBlock(nn.Module):
    """One latent group: prior p(z | h), posterior q(z | h, encoder features), and the update of h. A Gaussian
    group's heads give (mean, std) per latent; a binary group's (`binary`) one logit per latent, the
    Bernoulli's log(P(z = 1) / P(z = 0)), and its std is None."""

    def __init__(self, width: int, latent_channels: int, min_std: float, projection_scale: float,
                 residual_posterior: bool = False, binary: bool = False):
        super().__init__()
        self.latent_channels = latent_channels
        self.min_std = min_std
        self.binary = binary
        outputs = latent_channels if binary else 2 * latent_channels
        # The posterior head outputs (dmu, raw std ratio) relative to the prior (layers.residual_posterior)
        # instead of (mean, raw std).
        self.residual_posterior = residual_posterior
        # The prior head also emits a feature added to h (VDVAE); those output channels start at zero.
        self.prior_head = conv3x3(width, outputs + width)
        with torch.no_grad():
            self.prior_head.weight[outputs:].zero_()
            self.prior_head.bias[outputs:].zero_()
        self.posterior_head = conv3x3(2 * width, outputs)
        self.latent_projection = nn.Conv2d(latent_channels, width, kernel_size=1)
        with torch.no_grad():
            # Scaled so the sum of all groups' contributions keeps h at unit scale at initialisation.
            self.latent_projection.weight.mul_(projection_scale)
        self.residual = ResBlock(width)

    def prior(self, h: torch.Tensor):
        """h (B, W, H, W') -> mean, std (B, Z, H, W'), feature (B, W, H, W')."""
        out = self.prior_head(F.silu(h))
        z = self.latent_channels
        if self.binary:
            return out[:, :z], None, out[:, z:]
        return out[:, :z], smooth_std(out[:, z : 2 * z], self.min_std), out[:, 2 * z :]

    def posterior(self, h: torch.Tensor, encoded: torch.Tensor, prior_mean: torch.Tensor | None = None,
                  prior_std: torch.Tensor | None = None):
        """h, encoded (B, W, H, W') -> mean, std (B, Z, H, W'). A residual posterior also needs the prior's
        mean and std (from `prior(h)`)."""
        out = self.posterior_head(F.silu(torch.cat([h, encoded], dim=1)))
        z = self.latent_channels
        if self.binary:
            return out, None
        if self.residual_posterior:
            if prior_mean is None or prior_std is None:
                raise ValueError("a residual posterior needs the prior's mean and std")
            return residual_posterior(prior_mean, prior_std, out[:, :z], out[:, z:], self.min_std)
        return out[:, :z], smooth_std(out[:, z:], self.min_std)

    def update(self, h: torch.Tensor, feature: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self.residual(h + feature + self.latent_projection(latent))


def gaussian_kl(post_mean, post_std, prior_mean, prior_std) -> torch.Tensor:
    """KL(q || p) in nats, elementwise."""
    return (
        torch.log(prior_std / post_std)
        + (post_std**2 + (post_mean - prior_mean) ** 2) / (2 * prior_std**2)
        - 0.5
    )


def bernoulli_kl(post_logits: torch.Tensor, prior_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p) in nats, elementwise, of Bernoullis given by their logits: q log(q / p) + (1 - q) log((1 - q) /
    (1 - p)), through log-sigmoids (finite for any logits)."""
    q = torch.sigmoid(post_logits)
    return (q * (F.logsigmoid(post_logits) - F.logsigmoid(prior_logits))
            + (1 - q) * (F.logsigmoid(-post_logits) - F.logsigmoid(-prior_logits)))


# A Bernoulli's probabilities are kept this far from 0 and 1 in the relaxation: its inverse CDF divides by 1 - q.
RELAXATION_EPSILON = 1e-6
# The sharpest relaxation allowed (TrainConfig.binary_beta): far beyond the paper's 5..10, and where its
# samples are already within 0.1 of z nearly always.
MAX_BINARY_BETA = 64.0


def relaxed_binary_sample(logits: torch.Tensor, beta: float, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """DVAE++'s overlapping transformation with a mixture of exponentials (paper 000, appendix A): a sample of
    zeta in [0, 1] from (1 - q) r(zeta | 0) + q r(zeta | 1), r(zeta | 0) = beta exp(-beta zeta) / (1 - exp(-beta))
    and r(zeta | 1) its mirror image, q = sigmoid(logits), u uniform on (0, 1); differentiable in q. As beta grows, zeta -> z ~
    Bernoulli(q). With m = exp(-beta zeta), d = exp(-beta), the CDF at zeta equals u when m**2 + b m + c = 0,
    b = (u + d (q - u)) / (1 - q) - 1, c = -q d / (1 - q): m = (-b + sqrt(b**2 - 4c)) / 2, zeta = -log(m) / beta."""
    # float64: exp(-beta) and c stay normal numbers for every beta that MAX_BINARY_BETA allows (in float32, c
    # underflows to 0 from beta ~ 88 and the sample's gradient turns NaN)
    q = torch.sigmoid(logits.double()).clamp(RELAXATION_EPSILON, 1 - RELAXATION_EPSILON)
    u = torch.rand_like(q) if uniform is None else uniform.to(q.dtype)
    d = math.exp(-beta)
    b = (u + d * (q - u)) / (1 - q) - 1
    c = -q * d / (1 - q)
    root = torch.sqrt(b * b - 4 * c)  # > |b|: c < 0
    # The positive root, in the form without cancellation: (-b + root) / 2 = -2c / (b + root) where b > 0. Both
    # forms are written with |b| so that neither divides by ~0 where it is not taken (torch.where's gradient
    # would carry that inf into a NaN).
    m = torch.where(b > 0, -2 * c / (b.abs() + root), (root + b.abs()) / 2)
    return (-torch.log(m) / beta).clamp(0.0, 1.0).to(logits.dtype)
