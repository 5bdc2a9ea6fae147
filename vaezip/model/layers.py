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
    """One latent group: prior p(z | h), posterior q(z | h, encoder features), and the update of h."""

    def __init__(self, width: int, latent_channels: int, min_std: float, projection_scale: float,
                 residual_posterior: bool = False):
        super().__init__()
        self.latent_channels = latent_channels
        self.min_std = min_std
        # The posterior head outputs (dmu, raw std ratio) relative to the prior (layers.residual_posterior)
        # instead of (mean, raw std).
        self.residual_posterior = residual_posterior
        # The prior head also emits a feature added to h (VDVAE); those output channels start at zero.
        self.prior_head = conv3x3(width, 2 * latent_channels + width)
        with torch.no_grad():
            self.prior_head.weight[2 * latent_channels :].zero_()
            self.prior_head.bias[2 * latent_channels :].zero_()
        self.posterior_head = conv3x3(2 * width, 2 * latent_channels)
        self.latent_projection = nn.Conv2d(latent_channels, width, kernel_size=1)
        with torch.no_grad():
            # Scaled so the sum of all groups' contributions keeps h at unit scale at initialisation.
            self.latent_projection.weight.mul_(projection_scale)
        self.residual = ResBlock(width)

    def prior(self, h: torch.Tensor):
        """h (B, W, H, W') -> mean, std (B, Z, H, W'), feature (B, W, H, W')."""
        out = self.prior_head(F.silu(h))
        z = self.latent_channels
        return out[:, :z], smooth_std(out[:, z : 2 * z], self.min_std), out[:, 2 * z :]

    def posterior(self, h: torch.Tensor, encoded: torch.Tensor, prior_mean: torch.Tensor | None = None,
                  prior_std: torch.Tensor | None = None):
        """h, encoded (B, W, H, W') -> mean, std (B, Z, H, W'). A residual posterior also needs the prior's
        mean and std (from `prior(h)`)."""
        out = self.posterior_head(F.silu(torch.cat([h, encoded], dim=1)))
        z = self.latent_channels
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
