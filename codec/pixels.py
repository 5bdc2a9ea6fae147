"""Pixels of a batch of tiles on the stack: valid pixels only, channel by channel, through the model's tables.

The decoder pops channel 0 first (so the encoder pushes it last) and gives the model the channels decoded so
far, padded by edge replication as soon as each is complete; the encoder hands the model exactly the same
arrays (later channels zeroed), so any deterministic model gives identical tables on both sides.

A pass with side symbols (protocol.py: an optimal-sigma model's per-tile sigmas) gets them from the encoder's
choose_side before its tables; they are pushed after the pixels, so the decoder pops them first.

A model whose pass has `pixel_phases` (an (H, W) map, see protocol.py) reads neighbours coded before: its
pixels are coded phase by phase, channel by channel within a phase, and the encoder builds every table from
exactly the array the decoder will hold at that point (earlier phases and channels filled at valid pixels,
everything else zero).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from codec.ans import Stack, Tables, check_tables, frequency_tables
from codec.errors import CodingError
from codec.protocol import ModelPass
from codec.tiling import Tile, TileSpec, pad_tile


def batch_pixels(tiles: Sequence[Tile]) -> tuple[np.ndarray, np.ndarray]:
    """Stack tiles into (B, C, H, W) uint8, re-padded from their valid regions exactly as the decoder will,
    and the (B, H, W) mask of valid pixels."""
    c, th, tw = tiles[0].pixels.shape
    pixels = np.empty((len(tiles), c, th, tw), dtype=np.uint8)
    for b, tile in enumerate(tiles):
        h, w = tile.valid
        if tile.pixels.shape != (c, th, tw) or tile.pixels.dtype != np.uint8:
            raise CodingError(f"tiles of a batch must be uint8 of one shape {(c, th, tw)}, got {tile.pixels.shape}")
        pixels[b] = pad_tile(tile.pixels[:, :h, :w], th, tw)
    return pixels, valid_mask([t.spec for t in tiles])


def valid_mask(specs: Sequence[TileSpec]) -> np.ndarray:
    """(B, H, W) True at the valid pixels of each tile."""
    _, th, tw = specs[0].shape
    mask = np.zeros((len(specs), th, tw), dtype=bool)  # (B, H, W)
    for b, spec in enumerate(specs):
        mask[b, : spec.valid[0], : spec.valid[1]] = True
    return mask


def _table(batch: ModelPass, channel: int, seen: np.ndarray, mask: np.ndarray) -> Tables:
    """The model's table for `channel`, valid pixels only: (N, 256) rows in (b, y, x) order, checked once."""
    table = np.asarray(batch.pixel_table(channel, seen))
    expected = (*mask.shape, 256)
    if table.shape != expected:
        raise CodingError(f"pixel_table({channel}) must be {expected}, got {table.shape}")
    rows = table.reshape(-1, 256) if mask.all() else table[mask]  # full tiles (the common case): no copy
    return _checked(batch, rows)


def _checked(batch: ModelPass, rows: np.ndarray) -> Tables:
    """A pass's table rows as the coder takes them: an integer-exact pass's (`exact_tables`, protocol.py) as
    they are (with the last entry's floor: frequency_tables), anything else through check_tables."""
    if getattr(batch, "exact_tables", False) and rows.dtype == np.float32:
        return frequency_tables(np.ascontiguousarray(rows))
    return check_tables(rows)


def _symbol_bits(tables: Tables, symbols: np.ndarray) -> np.ndarray:
    """-log2 of each symbol's probability in its table row, (N,) float64."""
    p = tables.rows[np.arange(len(symbols)), symbols] / tables.sums
    return -np.log2(np.maximum(p.astype(np.float64), 2.0**-24))  # the coder gives every symbol >= 2**-24


def _phase_order(batch: ModelPass, shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(rows, columns) of every phase in coding order, or None for a model without pixel phases."""
    phases = getattr(batch, "pixel_phases", None)
    if phases is None:
        return None
    phases = np.asarray(phases)
    if phases.shape != tuple(shape[2:]) or phases.dtype.kind not in "iu" or phases.min() < 0:
        raise CodingError(f"pixel_phases must be a non-negative integer map of shape {tuple(shape[2:])}")
    return [np.nonzero(phases == phase) for phase in range(int(phases.max()) + 1)]


def _phase_table(batch: ModelPass, channel: int, seen: np.ndarray, phase: int, count: int, valid: np.ndarray,
                 mask: np.ndarray) -> Tables:
    """The model's table for `channel` at the `count` pixels of `phase`, valid ones only: (N, 256) rows."""
    table = np.asarray(batch.pixel_table(channel, seen, phase, mask))
    expected = (mask.shape[0], count, 256)
    if table.shape != expected:
        raise CodingError(f"pixel_table({channel}, phase {phase}) must be {expected}, got {table.shape}")
    return _checked(batch, table.reshape(-1, 256) if valid.all() else table[valid])


def side_size(batch: ModelPass) -> int:
    """The alphabet of a pass's side symbols (codec.protocol), 0 where it has none."""
    return int(getattr(batch, "side_size", 0) or 0)


def push_pixels(stack: Stack, batch: ModelPass, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Push the valid pixels, last channel first (so the decoder pops channel 0 first), then any side symbols
    the tables were built from (popped before the pixels). Per-tile bits (B,)."""
    size = side_size(batch)
    if size:
        symbols = np.asarray(batch.choose_side(pixels, mask), dtype=np.int64)  # B, S
        if symbols.shape != (len(pixels), batch.side_count) or symbols.min() < 0 or symbols.max() >= size:
            raise CodingError(f"choose_side must give (B, {batch.side_count}) symbols in 0..{size - 1}, got "
                              f"{symbols.shape}")
        batch.set_side(symbols)
    order = _phase_order(batch, pixels.shape)
    if order is not None:
        bits = _push_phased(stack, batch, pixels, mask, order)
    else:
        bits = np.zeros(pixels.shape[0])
        for symbols_c, tables, tile_of_pixel in _pixel_steps(batch, pixels, mask):
            stack.push_categorical(symbols_c, tables)
            bits += np.bincount(tile_of_pixel, weights=_symbol_bits(tables, symbols_c), minlength=len(bits))
    if size:
        stack.push_uniform(symbols.ravel(), size)
        bits += symbols.shape[1] * np.log2(size)
    return bits


def pixel_steps(batch: ModelPass, pixels: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, Tables, np.ndarray]]:
    """What push_pixels pushes for a model without pixel phases, in its order (last channel first): per
    channel the valid pixels' values (N,), their tables (N, 256) and the tile of each (N,)."""
    if _phase_order(batch, pixels.shape) is not None or side_size(batch):
        raise CodingError("pixel_steps is for models without pixel phases or side symbols")
    return _pixel_steps(batch, pixels, mask)


def _pixel_steps(batch: ModelPass, pixels: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, Tables, np.ndarray]]:
    tile_of_pixel = np.nonzero(mask)[0]  # (N,) the tile each valid pixel belongs to
    steps = []
    for c in reversed(range(pixels.shape[1])):
        seen = pixels.copy()
        seen[:, c:] = 0  # exactly what the decoder will have when it pops channel c
        steps.append((pixels[:, c][mask], _table(batch, c, seen, mask), tile_of_pixel))
    return steps


def push_steps(stack: Stack, steps: list[tuple[np.ndarray, Tables, np.ndarray]], tiles: np.ndarray) -> None:
    """Push the pixels of `tiles` (indices into the batch the steps came from), as push_pixels would push a
    batch of those tiles alone: a model's table of a pixel does not depend on the other tiles of its batch."""
    for symbols, tables, tile_of_pixel in steps:
        keep = np.isin(tile_of_pixel, tiles)
        stack.push_categorical(symbols[keep], Tables(np.ascontiguousarray(tables.rows[keep]), tables.sums[keep]))


def _push_phased(stack: Stack, batch: ModelPass, pixels: np.ndarray, mask: np.ndarray, order) -> np.ndarray:
    seen = np.zeros_like(pixels)  # what the decoder holds, step by step
    steps = []  # (symbols, tables, tile of each symbol) in decoding order
    for phase, (rows, columns) in enumerate(order):
        valid = mask[:, rows, columns]  # B, n
        if not valid.any():  # a row of padding only: nothing to code, and the decoder skips it too
            continue
        tile_of_pixel = np.nonzero(valid)[0]
        for c in range(pixels.shape[1]):
            tables = _phase_table(batch, c, seen, phase, len(rows), valid, mask)
            values = pixels[:, c, rows, columns]  # B, n
            steps.append((values[valid], tables, tile_of_pixel))
            seen[:, c, rows, columns] = np.where(valid, values, 0)
    bits = np.zeros(pixels.shape[0])
    for symbols, tables, tile_of_pixel in reversed(steps):  # the decoder pops the first step first
        stack.push_categorical(symbols, tables)
        bits += np.bincount(tile_of_pixel, weights=_symbol_bits(tables, symbols), minlength=len(bits))
    return bits


def pop_pixels(stack: Stack, batch: ModelPass, specs: Sequence[TileSpec]) -> np.ndarray:
    """Pop the valid pixels channel by channel (phase by phase for a model with phases) and re-pad them."""
    mask = valid_mask(specs)
    c_all, th, tw = specs[0].shape
    pixels = np.zeros((len(specs), c_all, th, tw), dtype=np.uint8)  # (B, C, H, W)
    size = side_size(batch)
    if size:
        count = int(batch.side_count)
        batch.set_side(stack.pop_uniform(len(specs) * count, size).astype(np.int64).reshape(len(specs), count))
    order = _phase_order(batch, pixels.shape)
    if order is not None:
        for phase, (rows, columns) in enumerate(order):
            valid = mask[:, rows, columns]  # B, n
            if not valid.any():
                continue
            for c in range(c_all):
                values = np.zeros(valid.shape, dtype=np.uint8)
                values[valid] = stack.pop_categorical(_phase_table(batch, c, pixels, phase, len(rows), valid, mask))
                pixels[:, c, rows, columns] = values
        for b, spec in enumerate(specs):
            h, w = spec.valid
            pixels[b] = pad_tile(pixels[b, :, :h, :w], th, tw)
        return pixels
    for c in range(c_all):
        plane = pixels[:, c]  # (B, H, W) view
        plane[mask] = stack.pop_categorical(_table(batch, c, pixels, mask))
        for b, spec in enumerate(specs):
            h, w = spec.valid
            plane[b] = pad_tile(plane[b : b + 1, :h, :w], th, tw)[0]
    return pixels
