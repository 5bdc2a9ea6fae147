"""Causal pixel context: each pixel's mixture parameters are refined from neighbours already coded.

Given the latents, the plain VAE codes every pixel independently, so fine detail that a neighbour predicts
well (the bulk of a photograph's bits) must be carried by the latents. The context head adds what local
predictors (JPEG-XL, CALIC) live on, while keeping the decoder parallel: pixel (y, x) is coded in
*phase* 2y + (x mod 2), so a phase is every other pixel of one row, 2H phases per tile instead of H x W.
A pixel reads the two rows above (complete) within +-3 columns, and an odd column also reads the even
columns +-1 and +-3 of its own row (coded one phase earlier). Neighbours outside the tile or its valid
region read as zero with an "absent" flag, the same in training and coding.

Training computes every pixel at once (`forward`); the coder computes one phase at a time (`phase`), the
encoder with exactly the decoder's shapes and inputs, so both sides get identical floats.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vaezip.model.likelihood import pixels_to_unit

ROWS_ABOVE = 2
REACH = 3
# (dy, dx): the rows above are always coded before; same-row offsets are read by odd columns only.
ABOVE_OFFSETS = tuple((dy, dx) for dy in range(-ROWS_ABOVE, 0) for dx in range(-REACH, REACH + 1))
ROW_OFFSETS = ((0, -3), (0, -1), (0, 1), (0, 3))
OFFSETS = ABOVE_OFFSETS + ROW_OFFSETS


def phase_map(height: int, width: int) -> np.ndarray:
    """(H, W) int64: the phase in which every pixel is coded."""
    rows = np.arange(height)[:, None]
    columns = np.arange(width)[None, :]
    return 2 * rows + columns % 2


def phase_positions(phase: int, width: int) -> tuple[int, slice]:
    """Row and column slice of the pixels coded in `phase` (the raster order of phase_map == phase)."""
    return phase // 2, slice(phase % 2, width, 2)


def _pad(tensor: torch.Tensor) -> torch.Tensor:
    """Zero rows above and zero columns either side, so every offset is a plain slice."""
    return F.pad(tensor, (REACH, REACH, ROWS_ABOVE, 0))


class PixelContext(nn.Module):
    """A per-pixel MLP: (mixture parameters from the latents, causal neighbours) -> parameter correction.

    The last layer starts at zero, so a context head added to a trained VAE starts as exactly that VAE.
    """

    def __init__(self, channels: int, num_params: int, hidden: int):
        super().__init__()
        self.channels = channels
        features = num_params + len(OFFSETS) * (channels + 1)
        self.layer_in = nn.Conv2d(features, hidden, kernel_size=1)
        self.layer_mid = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.layer_out = nn.Conv2d(hidden, num_params, kernel_size=1)
        nn.init.zeros_(self.layer_out.weight)
        nn.init.zeros_(self.layer_out.bias)

    def _refine(self, params: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.layer_in(torch.cat([params, neighbours], dim=1)))
        return params + self.layer_out(F.silu(self.layer_mid(hidden)))

    def forward(self, params: torch.Tensor, pixels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Every pixel at once (training, bounds). params (B, P, H, W), pixels (B, C, H, W) 0..255,
        valid (B, 1, H, W) 1 for real pixels -> refined params (B, P, H, W)."""
        height, width = pixels.shape[2:]
        odd_columns = (torch.arange(width, device=pixels.device) % 2).float()  # W
        neighbours = _neighbours(pixels_to_unit(pixels), valid.float(), slice(0, height), 0, 1, width, odd_columns)
        return self._refine(params, neighbours)

    def phase(self, params: torch.Tensor, pixels: torch.Tensor, valid: torch.Tensor, phase: int) -> torch.Tensor:
        """The pixels of one phase. params (B, P, 1, n) at those pixels; pixels (B, C, H, W) with every earlier
        phase final (later ones are never read); valid (B, 1, H, W) -> refined params (B, P, 1, n)."""
        row, columns = phase_positions(phase, pixels.shape[3])
        # Only odd columns read their own row; a phase is all odd or all even columns.
        neighbours = _neighbours(pixels_to_unit(pixels), valid.float(), slice(row, row + 1), columns.start, 2,
                                 params.shape[3], float(columns.start))
        return self._refine(params, neighbours)


def _neighbours(unit, valid, rows: slice, first_column: int, step: int, count: int, same_row,
                flag_value: float = 1.0) -> torch.Tensor:
    """Every offset's neighbour (zero where absent) and its presence flag, at the pixels of `rows` x columns
    first_column, first_column + step, ... (`count` of them): (B, len(OFFSETS) * (C + 1), len(rows), count).
    unit: (B, C, H, W) pixel values in the network's units; valid (B, 1, H, W) 1 or 0. `same_row` (per column,
    or one number, 1 or 0) multiplies the flags of same-row offsets; a present flag reads `flag_value` (1.0,
    or one in the integer model's fixed point)."""
    unit = _pad(unit)  # B, C, 2 + H, W + 6
    present = _pad(valid)  # B, 1, 2 + H, W + 6
    values, flags = [], []
    for dy, dx in OFFSETS:
        shifted_rows = slice(ROWS_ABOVE + dy + rows.start, ROWS_ABOVE + dy + rows.stop)
        start = REACH + dx + first_column
        columns = slice(start, start + step * (count - 1) + 1, step)
        flag = present[:, :, shifted_rows, columns]  # B, 1, rows, count
        if dy == 0:
            flag = flag * same_row
        values.append(unit[:, :, shifted_rows, columns] * flag)
        flags.append(flag * flag_value if flag_value != 1.0 else flag)
    return torch.cat(values + flags, dim=1)
