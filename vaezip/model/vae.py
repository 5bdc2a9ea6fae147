"""The hierarchical VAE: a bottom-up residual encoder and a top-down stack of latent groups
(VDVAE / Efficient-VDVAE design), fully convolutional, with a discretized logistic-mixture likelihood,
optionally refined per pixel from already coded neighbours (context.py).

Training calls `forward`; the bits-back coder walks the same top-down path one group at a time through
`TopDownWalk`, so both use exactly the same operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaezip.config import ModelConfig
from vaezip.model.context import PixelContext
from vaezip.model.layers import ResBlock, TopDownBlock, conv3x3, gaussian_kl
from vaezip.model.likelihood import LogisticMixture, pixels_to_unit


def pad_to_stride(pixels: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-replicate (B, C, H, W) up to multiples of `stride`; the mask (B, 1, H', W') marks real pixels,
    so padding never counts as pixels in the likelihood or the per-subpixel rate."""
    batch, _, height, width = pixels.shape
    pad_h, pad_w = -height % stride, -width % stride
    mask = torch.ones(batch, 1, height, width, device=pixels.device)
    if pad_h or pad_w:
        padded = F.pad(pixels.float(), (0, pad_w, 0, pad_h), mode="replicate").to(pixels.dtype)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=0.0)
        return padded, mask
    return pixels, mask


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        f = config.stem_factor
        first = config.stages[0].width
        self.stem_factor = f
        self.stem = conv3x3(config.image_channels * f * f, first)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ResBlock(stage.width) for _ in range(stage.encoder_blocks)]) for stage in config.stages
        )
        self.downsamples = nn.ModuleList(
            nn.Conv2d(a.width, b.width, kernel_size=2, stride=2) for a, b in zip(config.stages, config.stages[1:])
        )

    def forward(self, unit: torch.Tensor) -> list[torch.Tensor]:
        """unit (B, C, H, W) in [-1, 1] -> one activation per stage, highest resolution first."""
        h = self.stem(F.pixel_unshuffle(unit, self.stem_factor) if self.stem_factor > 1 else unit)
        activations = []
        for index, stage in enumerate(self.stages):
            h = stage(h)
            activations.append(h)
            if index < len(self.downsamples):
                h = self.downsamples[index](h)
        return activations


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, num_params: int):
        super().__init__()
        scale = 1.0 / math.sqrt(config.num_groups)
        self.stem_factor = config.stem_factor
        self.initial = nn.Parameter(torch.zeros(1, config.stages[-1].width, 1, 1))
        # Blocks in top-down order: lowest resolution first.
        self.blocks = nn.ModuleList()
        self.block_stage: list[int] = []
        for stage_index in reversed(range(len(config.stages))):
            stage = config.stages[stage_index]
            for _ in range(stage.latent_groups):
                self.blocks.append(TopDownBlock(stage.width, stage.latent_channels, config.min_std, scale))
                self.block_stage.append(stage_index)
        # upsamples[i] takes stage i+1 (lower resolution) to stage i.
        self.upsamples = nn.ModuleList(
            nn.Conv2d(b.width, a.width, kernel_size=1) for a, b in zip(config.stages, config.stages[1:])
        )
        # A stride-f transposed conv is a 1x1 conv followed by pixel_shuffle, without the slow shuffle backward.
        f = config.stem_factor
        self.head = nn.ConvTranspose2d(config.stages[0].width, num_params, kernel_size=f, stride=f)


@dataclass
class GroupStep:
    """Distributions of one latent group, each (B, Z, h, w)."""

    prior_mean: torch.Tensor
    prior_std: torch.Tensor
    post_mean: torch.Tensor | None
    post_std: torch.Tensor | None


class TopDownWalk:
    """The top-down pass as a state machine: `step()` gives group g's distributions, `advance(z)` feeds its
    latent and moves on. Training samples z; the bits-back coder chooses z on its grid."""

    def __init__(self, model: "HierarchicalVAE", activations: list[torch.Tensor] | None, batch: int, low_hw):
        self.model = model
        self.activations = activations
        decoder = model.decoder
        self.h = decoder.initial.expand(batch, -1, *low_hw)  # B, W_last, h_low, w_low
        self.group = 0
        self.stage = len(model.config.stages) - 1
        self._feature: torch.Tensor | None = None

    @property
    def num_groups(self) -> int:
        return len(self.model.decoder.blocks)

    def _enter_stage_of(self, group: int) -> None:
        decoder = self.model.decoder
        target = decoder.block_stage[group] if group < self.num_groups else 0
        while self.stage > target:
            self.stage -= 1
            self.h = decoder.upsamples[self.stage](F.interpolate(self.h, scale_factor=2.0, mode="nearest"))

    def step(self) -> GroupStep:
        self._enter_stage_of(self.group)
        block = self.model.decoder.blocks[self.group]
        prior_mean, prior_std, self._feature = block.prior(self.h)
        post_mean = post_std = None
        if self.activations is not None:
            post_mean, post_std = block.posterior(self.h, self.activations[self.stage])
        return GroupStep(prior_mean, prior_std, post_mean, post_std)

    def advance(self, latent: torch.Tensor) -> None:
        block = self.model.decoder.blocks[self.group]
        self.h = block.update(self.h, self._feature, latent)
        self._feature = None
        self.group += 1

    def pixel_params(self) -> torch.Tensor:
        """Mixture parameters (B, P, H, W) at full resolution, once every group is set."""
        if self.group != self.num_groups:
            raise RuntimeError(f"pixel_params after {self.group} of {self.num_groups} groups")
        self._enter_stage_of(self.num_groups)
        return self.model.decoder.head(self.h)


@dataclass
class ForwardOutput:
    loss: torch.Tensor  # scalar: (beta * KL + NLL) in bits per real subpixel, averaged over the batch
    bound_bits: torch.Tensor  # (B,) negative ELBO in bits per image (KL + NLL, real pixels only)
    kl_bits: torch.Tensor  # (G,) KL of each latent group summed over the batch, bits
    nll_bits: torch.Tensor  # scalar: NLL summed over the batch, bits
    subpixels: torch.Tensor  # (B,) real subpixels per image


class HierarchicalVAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.likelihood = LogisticMixture(config.image_channels, config.num_mixtures)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, self.likelihood.num_params)
        self.context = (
            PixelContext(config.image_channels, self.likelihood.num_params, config.pixel_context)
            if config.pixel_context
            else None
        )

    def lowest_resolution(self, height: int, width: int) -> tuple[int, int]:
        stride = self.config.stride
        return height // stride, width // stride

    def walk(self, pixels: torch.Tensor | None, batch: int, height: int, width: int) -> TopDownWalk:
        """Start a top-down pass over padded pixels (B, C, H, W), or a prior-only pass when pixels is None."""
        activations = None if pixels is None else self.encoder(pixels_to_unit(pixels))
        return TopDownWalk(self, activations, batch, self.lowest_resolution(height, width))

    def forward(self, pixels: torch.Tensor, kl_weight: float = 1.0, mask: torch.Tensor | None = None) -> ForwardOutput:
        """pixels: (B, C, H, W) integers 0..255 of any height and width. `mask` (B, 1, H, W) marks the real
        pixels of inputs that are already padded (the coder's tiles); by default every pixel is real."""
        padded, pad_mask = pad_to_stride(pixels, self.config.stride)
        mask = pad_mask if mask is None else pad_mask * F.pad(mask, (0, pad_mask.shape[3] - mask.shape[3], 0, pad_mask.shape[2] - mask.shape[2]))
        batch, _, height, width = padded.shape
        walk = self.walk(padded, batch, height, width)
        group_kls = []
        for _ in range(walk.num_groups):
            step = walk.step()
            latent = step.post_mean + step.post_std * torch.randn_like(step.post_std)
            kl = gaussian_kl(step.post_mean.float(), step.post_std.float(), step.prior_mean.float(), step.prior_std.float())
            group_kls.append(kl.flatten(1).sum(1))  # B
            walk.advance(latent)
        params = walk.pixel_params()  # B, P, H, W
        if self.context is not None:
            params = self.context(params, padded, mask)
        log_probs = self.likelihood.log_prob(params, padded)  # B, H, W
        nll = -(log_probs * mask[:, 0]).flatten(1).sum(1)  # B
        kl_per_image = torch.stack(group_kls, dim=1)  # B, G
        subpixels = mask.flatten(1).sum(1) * self.config.image_channels  # B
        ln2 = math.log(2.0)
        loss = ((kl_weight * kl_per_image.sum(1) + nll) / subpixels).mean() / ln2
        return ForwardOutput(
            loss=loss,
            bound_bits=(kl_per_image.sum(1) + nll) / ln2,
            kl_bits=kl_per_image.sum(0) / ln2,
            nll_bits=nll.sum() / ln2,
            subpixels=subpixels,
        )
