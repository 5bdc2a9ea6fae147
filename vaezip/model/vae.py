"""The hierarchical VAE: a bottom-up residual encoder and a top-down stack of latent groups
(VDVAE / Efficient-VDVAE design), fully convolutional, with a pixel likelihood from likelihood.py (by default a
discretized logistic mixture), optionally refined per pixel from already coded neighbours (context.py).

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
from vaezip.model.layers import (
    ResBlock, TopDownBlock, bernoulli_kl, conv3x3, gaussian_kl, relaxed_binary_sample, smooth_std,
)
from vaezip.model.likelihood import make_likelihood, pixels_to_unit


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
                binary = len(self.blocks) < config.binary_groups
                self.blocks.append(TopDownBlock(stage.width, stage.latent_channels, config.min_std, scale,
                                                residual_posterior=config.residual_posterior, binary=binary))
                self.block_stage.append(stage_index)
        # upsamples[i] takes stage i+1 (lower resolution) to stage i.
        self.upsamples = nn.ModuleList(
            nn.Conv2d(b.width, a.width, kernel_size=1) for a, b in zip(config.stages, config.stages[1:])
        )
        # A stride-f transposed conv is a 1x1 conv followed by pixel_shuffle, without the slow shuffle backward.
        f = config.stem_factor
        self.head = nn.ConvTranspose2d(config.stages[0].width, num_params, kernel_size=f, stride=f)
        # The global group (ModelConfig.global_latents): its posterior head reads the mean of the encoder's
        # lowest-resolution activation; its projection shifts the starting state, like a group's.
        self.global_latents = config.global_latents
        if config.global_latents:
            top = config.stages[-1].width
            self.global_posterior = nn.Conv2d(top, 2 * config.global_latents, kernel_size=1)
            self.global_projection = nn.Conv2d(config.global_latents, top, kernel_size=1)
            with torch.no_grad():
                self.global_projection.weight.mul_(scale)


@dataclass
class GroupStep:
    """Distributions of one latent group, each (B, Z, h, w). A binary group's (`binary`): the means are the
    Bernoullis' logits and the stds None."""

    prior_mean: torch.Tensor
    prior_std: torch.Tensor | None
    post_mean: torch.Tensor | None
    post_std: torch.Tensor | None
    binary: bool = False


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
        self.first_block = 1 if decoder.global_latents else 0  # group 0 is the global group where there is one

    @property
    def num_groups(self) -> int:
        return len(self.model.decoder.blocks) + self.first_block

    def _enter_stage_of(self, group: int) -> None:
        decoder = self.model.decoder
        block = group - self.first_block
        if block < 0:
            return  # the global group: before any block
        target = decoder.block_stage[block] if block < len(decoder.blocks) else 0
        while self.stage > target:
            self.stage -= 1
            self.h = decoder.upsamples[self.stage](F.interpolate(self.h, scale_factor=2.0, mode="nearest"))

    def _global_step(self) -> GroupStep:
        """The global group: prior N(0, I), posterior from the mean of the top encoder activation, (B, D, 1, 1)."""
        decoder, batch = self.model.decoder, self.h.shape[0]
        dims = decoder.global_latents
        prior_mean = self.h.new_zeros(batch, dims, 1, 1)
        post_mean = post_std = None
        if self.activations is not None:
            pooled = self.activations[-1].mean(dim=(2, 3), keepdim=True)  # B, W_last, 1, 1
            out = decoder.global_posterior(F.silu(pooled))
            post_mean, post_std = out[:, :dims], smooth_std(out[:, dims:], self.model.config.min_std)
        return GroupStep(prior_mean, torch.ones_like(prior_mean), post_mean, post_std)

    def step(self) -> GroupStep:
        if self.group < self.first_block:
            return self._global_step()
        self._enter_stage_of(self.group)
        block = self.model.decoder.blocks[self.group - self.first_block]
        prior_mean, prior_std, self._feature = block.prior(self.h)
        post_mean = post_std = None
        if self.activations is not None:
            post_mean, post_std = block.posterior(self.h, self.activations[self.stage], prior_mean, prior_std)
        return GroupStep(prior_mean, prior_std, post_mean, post_std, block.binary)

    def advance(self, latent: torch.Tensor) -> None:
        if self.group < self.first_block:  # the global group's latents (B, D, 1, 1) shift every position
            self.h = self.h + self.model.decoder.global_projection(latent)
            self.group += 1
            return
        block = self.model.decoder.blocks[self.group - self.first_block]
        self.h = block.update(self.h, self._feature, latent)
        self._feature = None
        self.group += 1

    def pixel_params(self) -> torch.Tensor:
        """Mixture parameters (B, P, H, W) at full resolution, once every group is set."""
        if self.group != self.num_groups:
            raise RuntimeError(f"pixel_params after {self.group} of {self.num_groups} groups")
        self._enter_stage_of(self.num_groups)
        return self.model.decoder.head(self.h)


# Added to each group's batch-mean KL (nats per image) before it sets the group's balancing coefficient: a group
# with (nearly) no KL gets a small positive coefficient, never exactly 0 (NVAE's code adds 0.01).
KL_BALANCE_EPSILON = 0.01


def kl_balance_coefficients(group_kls: torch.Tensor, sizes, epsilon: float = KL_BALANCE_EPSILON) -> torch.Tensor:
    """NVAE's KL balancing coefficients (detached, mean 1) from `group_kls` (B, G): each image's KL of each
    latent group, in nats, and `sizes` (G,): each group's number of latent positions h * w.

        a_l = (mean over the batch of KL_l + epsilon) / s_l,      alpha_l = G * a_l / sum_j a_j

    A group that carries little information per latent position gets a small coefficient (its KL is penalised
    less, so it is encouraged to carry more) and one that carries much a large one; where every group carries
    the same KL per position, every alpha is 1. The size divides, as in NVAE's first author's explanation
    (NVlabs/NVAE issue #26: "proportional to the average KL per group in a batch divided by the dimension of
    each group"); NVAE's released code divides by a per-scale factor (4**i / groups per scale), here it is
    plain h * w.
    The paper's appendix A says "proportional to also the size": that would penalise the large,
    high-resolution groups most, the ones whose latents go unused. Under DDP each rank uses its own batch."""
    kl = group_kls.detach().float()
    sizes = torch.as_tensor(sizes, dtype=kl.dtype, device=kl.device)
    if kl.dim() != 2 or sizes.shape != kl.shape[1:]:
        raise ValueError(f"group_kls must be (B, G) and sizes (G,), not {tuple(kl.shape)} and {tuple(sizes.shape)}")
    raw = (kl.clamp_min(0.0).mean(0) + epsilon) / sizes
    return raw * (raw.numel() / raw.sum())


@dataclass
class ForwardOutput:
    # scalar, bits per real subpixel averaged over the batch: beta * sum_l alpha_l KL_l + NLL (alpha_l = 1 unless
    # `kl_balance`, then kl_balance_coefficients), or with K importance samples the annealed K-sample bound
    # -log mean_k p(x | z_k) (p(z_k) / q(z_k | x))^beta
    loss: torch.Tensor
    bound_bits: torch.Tensor  # (B,) negative ELBO in bits per image (KL + NLL, real pixels only)
    kl_bits: torch.Tensor  # (G,) KL of each latent group summed over the batch, bits
    nll_bits: torch.Tensor  # scalar: NLL summed over the batch, bits
    subpixels: torch.Tensor  # (B,) real subpixels per image


class HierarchicalVAE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.likelihood = make_likelihood(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, self.likelihood.num_params)
        self.context = (
            PixelContext(config.image_channels, self.likelihood.num_params, config.pixel_context, config.context_order)
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

    def _sampled_pass(self, padded: torch.Tensor, mask: torch.Tensor, log_ratio: bool, binary_beta: float = 8.0):
        """One top-down pass over padded pixels (N, C, H, W) with a posterior sample per group: each image's KL
        of each group (N, G) nats, the groups' sizes h * w, its NLL (N,) nats over real pixels, and where asked
        its log p(z) - log q(z | x) at the sample (N,) nats (else None).

        A binary group's KL is the Bernoullis' (analytic); its sample is DVAE++'s relaxed zeta (inverse
        temperature `binary_beta`) in training mode, and z in {0, 1} itself otherwise: the bound of an eval-mode
        pass is the one the coder pays."""
        batch, _, height, width = padded.shape
        walk = self.walk(padded, batch, height, width)
        group_kls, group_sizes = [], []
        ratio = torch.zeros(batch, device=padded.device) if log_ratio else None
        for _ in range(walk.num_groups):
            step = walk.step()
            if step.binary:
                post_logits, prior_logits = step.post_mean.float(), step.prior_mean.float()
                kl = bernoulli_kl(post_logits, prior_logits)
                group_kls.append(kl.flatten(1).sum(1))  # N
                group_sizes.append(kl.shape[2] * kl.shape[3])
                if self.training:
                    if ratio is not None:
                        raise ValueError("importance weights need the probability of the sample: a binary group's "
                                         "relaxed sample has none (train binary groups on the ELBO)")
                    latent = relaxed_binary_sample(post_logits, binary_beta)
                else:
                    latent = torch.bernoulli(torch.sigmoid(post_logits))
                    if ratio is not None:  # log P(z) - log Q(z) of the binary sample
                        sign = 2 * latent - 1  # log P(z) = logsigmoid(+-logit)
                        ratio = ratio + (F.logsigmoid(sign * prior_logits) - F.logsigmoid(sign * post_logits)).flatten(1).sum(1)
                walk.advance(latent.to(step.post_mean.dtype))
                continue
            noise = torch.randn_like(step.post_std)
            latent = step.post_mean + step.post_std * noise
            post_mean, post_std = step.post_mean.float(), step.post_std.float()
            prior_mean, prior_std = step.prior_mean.float(), step.prior_std.float()
            kl = gaussian_kl(post_mean, post_std, prior_mean, prior_std)
            group_kls.append(kl.flatten(1).sum(1))  # N
            group_sizes.append(kl.shape[2] * kl.shape[3])
            if ratio is not None:
                # log N(z; prior) - log N(z; posterior) at z = mean + std * noise; the 2 pi terms cancel.
                prior_z = (latent.float() - prior_mean) / prior_std
                ratio = ratio + (0.5 * noise.float() ** 2 - 0.5 * prior_z**2 + torch.log(post_std / prior_std)).flatten(1).sum(1)
            walk.advance(latent)
        params = walk.pixel_params()  # N, P, H, W
        if self.context is not None:
            params = self.context(params, padded, mask)
        side_bits = getattr(self.likelihood, "side_bits", 0.0)
        if side_bits:  # each image's optimal sigma, as the coder stores it for each tile
            params = self.likelihood.with_sigma(params, padded, mask)  # N, 2C, H, W
        log_probs = self.likelihood.log_prob(params, padded)  # N, H, W
        nll = -(log_probs * mask[:, 0]).flatten(1).sum(1) + side_bits * math.log(2.0)  # N
        return torch.stack(group_kls, dim=1), group_sizes, nll, ratio

    def _padded(self, pixels: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, C, H, W) padded to the stride, and the mask (B, 1, H', W') of their real pixels: those of
        `mask` (already padded inputs, the coder's tiles), or every pixel of the input."""
        padded, pad_mask = pad_to_stride(pixels, self.config.stride)
        if mask is not None:
            pad_mask = pad_mask * F.pad(mask, (0, pad_mask.shape[3] - mask.shape[3], 0, pad_mask.shape[2] - mask.shape[2]))
        return padded, pad_mask

    def importance_log_weights(self, pixels: torch.Tensor, samples: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) log p(x, z_k) - log q(z_k | x) in nats for K posterior samples of each image (B, C, H, W),
        real pixels as in `forward`: the K-sample importance-weighted bound is -(logsumexp_k - log K) of them."""
        padded, mask = self._padded(pixels, mask)
        batch = padded.shape[0]
        _, _, nll, ratio = self._sampled_pass(padded.repeat(samples, 1, 1, 1), mask.repeat(samples, 1, 1, 1),
                                              log_ratio=True)
        return (ratio - nll).view(samples, batch).t()

    def forward(self, pixels: torch.Tensor, kl_weight: float = 1.0, mask: torch.Tensor | None = None,
                kl_balance: bool = False, importance_samples: int = 1, binary_beta: float = 8.0) -> ForwardOutput:
        """pixels: (B, C, H, W) integers 0..255 of any height and width. `mask` (B, 1, H, W) marks the real
        pixels of inputs that are already padded (the coder's tiles); by default every pixel is real.
        `kl_weight`, `kl_balance` (each group's KL weighted by kl_balance_coefficients) and `importance_samples`
        only change the training loss: `bound_bits`, `kl_bits` and `nll_bits` are always those of the plain
        ELBO (averaged over the samples).

        With importance_samples = K > 1 the loss is DVAE##'s annealed importance-weighted bound (paper 001,
        appendix C): K posterior samples per image, log w_k = log p(x | z_k) + kl_weight * (log p(z_k) -
        log q(z_k | x)), loss = -log mean_k w_k; the bound Monte-Carlo bits-back (`compress --samples K`)
        pays when kl_weight is 1, and the ELBO when K is 1.

        `binary_beta`: the relaxation of binary latent groups in training mode (_sampled_pass)."""
        if importance_samples < 1:
            raise ValueError(f"importance_samples must be at least 1, not {importance_samples}")
        if importance_samples > 1 and kl_balance:
            raise ValueError("KL balancing weights analytic KL terms: it does not apply to the importance-weighted bound")
        padded, mask = self._padded(pixels, mask)
        batch = padded.shape[0]
        samples = importance_samples
        if samples > 1:
            # Sample k of image b is row k * B + b: one pass over K * B rows.
            padded, mask = padded.repeat(samples, 1, 1, 1), mask.repeat(samples, 1, 1, 1)
        kl_per_image, group_sizes, nll, ratio = self._sampled_pass(padded, mask, log_ratio=samples > 1,
                                                                   binary_beta=binary_beta)
        subpixels = mask[:batch].flatten(1).sum(1) * self.config.image_channels  # B
        ln2 = math.log(2.0)
        if samples > 1:
            log_w = (kl_weight * ratio - nll).view(samples, batch)  # K, B
            bound_nats = -(torch.logsumexp(log_w, dim=0) - math.log(samples))  # B
            kl_per_image = kl_per_image.view(samples, batch, -1).mean(0)  # B, G
            nll = nll.view(samples, batch).mean(0)  # B
            loss = (bound_nats / subpixels).mean() / ln2
        else:
            if kl_balance:
                # A global group (first) is not balanced: its one position holds all its latents, so its KL per
                # position would dwarf the spatial groups' and take nearly all the weight. Its coefficient is 1.
                first = 1 if self.config.global_latents else 0
                coefficients = kl_balance_coefficients(kl_per_image[:, first:], group_sizes[first:])
                if first:
                    coefficients = torch.cat([coefficients.new_ones(1), coefficients])
                weighted_kl = (kl_per_image * coefficients).sum(1)
            else:
                weighted_kl = kl_per_image.sum(1)
            loss = ((kl_weight * weighted_kl + nll) / subpixels).mean() / ln2
        return ForwardOutput(
            loss=loss,
            bound_bits=(kl_per_image.sum(1) + nll) / ln2,
            kl_bits=kl_per_image.sum(0) / ln2,
            nll_bits=nll.sum() / ln2,
            subpixels=subpixels,
        )
