"""The contract between a hierarchical latent model (torch side, or a numpy toy in tests) and bitsback.py.

codec/ never imports the model: it calls these methods with numpy arrays and receives numpy arrays.

Determinism contract (the decoder must compute bit-identical floats):
- Prior parameters of group g are a function of the latents of groups < g only, never of the pixels: the
  decoder gets them from a pass begun without pixels.
- Posterior parameters are a function of the (padded) pixels and the latents of groups < g.
- `pixel_table(c, pixels)` is a pure function of the latents and of channels < c of `pixels`; channels >= c
  hold zeros on both sides (bitsback.py zeroes them for the encoder too). It may be called in any channel
  order and more than once.
- All of it for the same batch shape: encoder and decoder run identical batches (the schedule fixes them).

Pixel phases (optional): a pass whose `pixel_phases` is an (H, W) integer map codes its pixels phase by phase
(0, 1, ...), and `pixel_table(c, pixels, phase, mask)` gives the tables of the pixels of that phase only, in
raster order. They may depend on the latents, on every channel of pixels of earlier phases, and on channels
< c of the pixel itself, at valid pixels (mask) only; every other entry of `pixels` is zero on both sides.
A phase without valid pixels is never asked for. Within a batch, phases come in order, channels 0..C-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class LatentParams:
    """Gaussian parameters of one latent group for a batch: float64 (B, D_group), latent units."""

    prior_mean: np.ndarray  # (B, D)
    prior_std: np.ndarray  # (B, D)
    post_mean: np.ndarray | None = None  # (B, D), only in a pass begun with pixels
    post_std: np.ndarray | None = None  # (B, D)


@dataclass(frozen=True)
class BinaryParams:
    """Bernoulli parameters of one binary latent group for a batch: P(z = 1) as integer frequencies out of
    2**24 (latents.BINARY_TOTAL), (B, D) int64, each in [latents.BINARY_FLOOR, 2**24 - latents.BINARY_FLOOR].
    The latents themselves are 0 or 1, in latent units as in index units."""

    prior_ones: np.ndarray  # (B, D)
    post_ones: np.ndarray | None = None  # (B, D), only in a pass begun with pixels


class ModelPass(Protocol):
    """One top-down pass over a batch of B tiles of equal padded shape (B, C, H, W)."""

    num_groups: int
    pixel_phases: np.ndarray | None  # (H, W) phase of every pixel, or None: all at once (see above)

    def latent_params(self, group: int) -> LatentParams | BinaryParams:
        """Parameters of `group` (a binary group's: BinaryParams); called for group g only after
        set_latent(g - 1, ...)."""
        ...

    def set_latent(self, group: int, values: np.ndarray) -> None:
        """Fix the latent values of `group`: (B, D_group) float64, latent units."""
        ...

    def pixel_table(
        self, channel: int, pixels: np.ndarray, phase: int | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """After all groups are set: (B, H, W, 256) float32 probabilities of `channel`'s values.

        pixels: (B, C, H, W) uint8 whose channels < `channel` are final (padded by edge replication) and
        channels >= `channel` are zero. With pixel phases: (B, n, 256) for the n pixels of `phase`, and
        mask (B, H, W) bool marks the valid pixels.
        """
        ...

    # Optional: `exact_tables = True` promises that every pixel_table row is integer frequencies / 2**24, each
    # >= 1, summing to exactly 2**24 (an integer-exact model's), in an array the coder may change: pixels.py
    # then takes the rows without check_tables' passes over them (ans.frequency_tables).

    # Optional: side symbols. A pass with `side_size` > 0 builds its tables from `side_count` symbols per tile
    # in 0..side_size-1 besides the latents (an optimal-sigma model's per-tile sigmas), coded uniformly:
    #     def choose_side(self, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray   (the encoder: (B, S))
    #     def set_side(self, symbols: np.ndarray) -> None                            (both, before any table)
    # pixels.py pushes them after the tile's pixels, so the decoder pops them first.

    # Optional: a pass begun without pixels may offer
    #     def posteriors(self, pixels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]
    # after all groups are set: every group's (posterior mean, posterior std), (B, D) float64 each (a binary
    # group's: (post_ones, None), BinaryParams' frequencies), given
    # the decoded pixels and the latents set, exactly what a pass begun with those pixels gives. The decoder
    # then skips its second pass over the top-down path.


class LatentModel(Protocol):
    channels: int  # 1 or 3
    stride: int  # padded tile sides must be multiples of this

    def begin(self, shape: tuple[int, int, int, int], pixels: np.ndarray | None = None) -> ModelPass:
        """Start a pass for a batch of `shape` (B, C, H, W): with pixels (B, C, H, W) uint8 for posteriors,
        or pixels=None for a prior-only pass (the decoder; direct coding)."""
        ...
