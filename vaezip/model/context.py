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

That is the "rows" order. The "scales" order (ModelConfig.context_order) is DVAE++'s multi-scale conditional
decoder (paper 000, appendix G.1) within a tile: pixels on the stride-4 grid first (given the latents only),
then the centres of its cells, then the rest of the stride-2 grid, then the centres of the stride-2 cells,
then every other pixel: 5 phases per tile instead of 2H, each conditioned on every pixel of the earlier
phases within +-2 rows and columns (24 offsets, on all sides), each decoded in parallel.
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


class RowOrder:
    """Phase 2y + (x mod 2): every other pixel of a row at once; reads the two rows above and its own row."""

    name = "rows"
    offsets = OFFSETS

    @staticmethod
    def phase_map(height: int, width: int) -> np.ndarray:
        return phase_map(height, width)

    @staticmethod
    def positions(phase: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the pixels of `phase`, in raster order."""
        row, columns = phase_positions(phase, width)
        columns = np.arange(width)[columns]
        return np.full(len(columns), row), columns

    @staticmethod
    def all_neighbours(unit: torch.Tensor, valid: torch.Tensor, flag_value: float = 1.0) -> torch.Tensor:
        """Every pixel's neighbours and flags (B, len(offsets) * (C + 1), H, W)."""
        height, width = unit.shape[2:]
        odd_columns = (torch.arange(width, device=unit.device) % 2).to(unit.dtype)  # W
        return _neighbours(unit, valid, slice(0, height), 0, 1, width, odd_columns, flag_value)

    @staticmethod
    def phase_neighbours(unit: torch.Tensor, valid: torch.Tensor, phase: int, count: int,
                         flag_value: float = 1.0) -> torch.Tensor:
        """The neighbours of the `count` pixels of `phase` (B, F, 1, count), reading only earlier phases."""
        row, columns = phase_positions(phase, unit.shape[3])
        # Only odd columns read their own row; a phase is all odd or all even columns.
        return _neighbours(unit, valid, slice(row, row + 1), columns.start, 2, count, float(columns.start),
                           flag_value)


SCALE_REACH = 2
SCALE_OFFSETS = tuple((dy, dx) for dy in range(-SCALE_REACH, SCALE_REACH + 1)
                      for dx in range(-SCALE_REACH, SCALE_REACH + 1) if (dy, dx) != (0, 0))
SCALE_PHASES = 5


class ScaleOrder:
    """Coarse to fine (module docstring): a pixel reads every pixel of an earlier phase within +-2."""

    name = "scales"
    offsets = SCALE_OFFSETS

    @staticmethod
    def phase_map(height: int, width: int) -> np.ndarray:
        y, x = np.arange(height)[:, None], np.arange(width)[None, :]
        phases = np.full((height, width), 4, dtype=np.int64)  # y + x odd: last
        phases[(y % 2 == 1) & (x % 2 == 1)] = 3  # centres of the stride-2 cells
        phases[(y % 2 == 0) & (x % 2 == 0)] = 2  # the stride-2 grid
        phases[(y % 4 == 2) & (x % 4 == 2)] = 1  # centres of the stride-4 cells
        phases[(y % 4 == 0) & (x % 4 == 0)] = 0  # the stride-4 grid
        return phases

    @classmethod
    def positions(cls, phase: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        return np.nonzero(cls.phase_map(height, width) == phase)

    @classmethod
    def all_neighbours(cls, unit: torch.Tensor, valid: torch.Tensor, flag_value: float = 1.0) -> torch.Tensor:
        height, width = unit.shape[2:]
        phases = torch.from_numpy(cls.phase_map(height, width)).to(unit.device, unit.dtype)[None, None]  # 1,1,H,W
        r = SCALE_REACH
        unit_padded, valid_padded = F.pad(unit, (r, r, r, r)), F.pad(valid, (r, r, r, r))
        phases_padded = F.pad(phases, (r, r, r, r), value=float(SCALE_PHASES))  # outside: never earlier
        values, flags = [], []
        for dy, dx in SCALE_OFFSETS:
            rows, columns = slice(r + dy, r + dy + height), slice(r + dx, r + dx + width)
            flag = valid_padded[:, :, rows, columns] * (phases_padded[:, :, rows, columns] < phases).to(unit.dtype)
            values.append(unit_padded[:, :, rows, columns] * flag)
            flags.append(flag * flag_value if flag_value != 1.0 else flag)
        return torch.cat(values + flags, dim=1)  # B, 24 * (C + 1), H, W

    @classmethod
    def phase_neighbours(cls, unit: torch.Tensor, valid: torch.Tensor, phase: int, count: int,
                         flag_value: float = 1.0) -> torch.Tensor:
        """Every pixel's neighbours, then those of the phase's pixels: each pixel's features read only its own
        offsets, so selecting afterwards gives the same values."""
        rows, columns = cls.positions(phase, *unit.shape[2:])
        features = cls.all_neighbours(unit, valid, flag_value)  # B, F, H, W
        index = torch.from_numpy(rows * unit.shape[3] + columns).to(unit.device)  # count
        return features.flatten(2).index_select(2, index).unsqueeze(2)  # B, F, 1, count


ORDERS = {order.name: order for order in (RowOrder, ScaleOrder)}


class PixelContext(nn.Module):
    """A per-pixel MLP: (likelihood parameters from the latents, causal neighbours) -> parameter correction.

    The last layer starts at zero, so a context head added to a trained VAE starts as exactly that VAE.
    """

    def __init__(self, channels: int, num_params: int, hidden: int, order: str = "rows"):
        super().__init__()
        self.channels = channels
        self.order = ORDERS[order]
        features = num_params + len(self.order.offsets) * (channels + 1)
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
        return self._refine(params, self.order.all_neighbours(pixels_to_unit(pixels), valid.float()))

    def phase(self, params: torch.Tensor, pixels: torch.Tensor, valid: torch.Tensor, phase: int) -> torch.Tensor:
        """The pixels of one phase. params (B, P, 1, n) at those pixels (the order's positions, raster order);
        pixels (B, C, H, W) with every earlier phase final (later ones are never read); valid (B, 1, H, W)
        -> refined params (B, P, 1, n)."""
        neighbours = self.order.phase_neighbours(pixels_to_unit(pixels), valid.float(), phase, params.shape[3])
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
