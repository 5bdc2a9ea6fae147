"""Pixels of a batch of tiles on the stack: valid pixels only, channel by channel, through the model's tables.

The decoder pops channel 0 first (so the encoder pushes it last) and gives the model the channels decoded so
far, padded by edge replication as soon as each is complete; the encoder hands the model exactly the same
arrays (later channels zeroed), so any deterministic model gives identical tables on both sides.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from codec.ans import Stack, Tables, check_tables
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
    return pixels, _valid_mask([t.spec for t in tiles])


def _valid_mask(specs: Sequence[TileSpec]) -> np.ndarray:
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
    return check_tables(rows)


def push_pixels(stack: Stack, batch: ModelPass, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Push the valid pixels, last channel first (so the decoder pops channel 0 first). Per-tile bits (B,)."""
    bits = np.zeros(pixels.shape[0])
    tile_of_pixel = np.nonzero(mask)[0]  # (N,) the tile each valid pixel belongs to
    for c in reversed(range(pixels.shape[1])):
        seen = pixels.copy()
        seen[:, c:] = 0  # exactly what the decoder will have when it pops channel c
        tables = _table(batch, c, seen, mask)  # (N, 256)
        symbols = pixels[:, c][mask]  # (N,)
        stack.push_categorical(symbols, tables)
        p = tables.rows[np.arange(len(symbols)), symbols] / tables.sums
        p = np.maximum(p.astype(np.float64), 2.0**-24)  # the coder gives every symbol >= 2**-24
        bits += np.bincount(tile_of_pixel, weights=-np.log2(p), minlength=len(bits))
    return bits


def pop_pixels(stack: Stack, batch: ModelPass, specs: Sequence[TileSpec]) -> np.ndarray:
    """Pop the valid pixels channel by channel; re-pad each channel as soon as it is complete."""
    mask = _valid_mask(specs)
    c_all, th, tw = specs[0].shape
    pixels = np.zeros((len(specs), c_all, th, tw), dtype=np.uint8)  # (B, C, H, W)
    for c in range(c_all):
        plane = pixels[:, c]  # (B, H, W) view
        plane[mask] = stack.pop_categorical(_table(batch, c, pixels, mask))
        for b, spec in enumerate(specs):
            h, w = spec.valid
            plane[b] = pad_tile(plane[b : b + 1, :h, :w], th, tw)[0]
    return pixels
