"""Cutting an image (C, H, W) into tiles of one padded shape, and putting it back together.

The model codes batches of tiles of equal shape whose sides are multiples of its stride. An image is cut on a
regular grid of `tile x tile` cells (the last row and column hold what is left); every tile is then padded to
the image's one padded shape (C, Th, Tw), Th = min(tile, ceil_to(H, stride)), Tw likewise, by edge replication
of its valid pixels. Only valid pixels are coded. The padding is a pure function of the valid pixels
(`pad_tile`), so the decoder recreates it exactly, and the model sees the same padded tile on both sides.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from codec.errors import CodingError


def ceil_to(n: int, multiple: int) -> int:
    """Smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class TileSpec:
    """What the decoder knows of a tile before decoding it: padded shape (C, Th, Tw), valid extent (h, w), and
    how many tiles further on in the stream its neighbours below and to the right are (0: none)."""

    shape: tuple[int, int, int]
    valid: tuple[int, int]
    neighbours: tuple[int, int] = (0, 0)  # (below, right)


@dataclass(frozen=True)
class Tile:
    pixels: np.ndarray  # (C, Th, Tw) uint8, padded by edge replication of pixels[:, :h, :w]
    valid: tuple[int, int]  # (h, w)
    neighbours: tuple[int, int] = (0, 0)  # as TileSpec.neighbours

    @property
    def valid_pixels(self) -> np.ndarray:
        """(C, h, w) uint8, contiguous: the pixels that are coded (the rest is padding)."""
        h, w = self.valid
        return np.ascontiguousarray(self.pixels[:, :h, :w])

    @property
    def spec(self) -> TileSpec:
        c, th, tw = self.pixels.shape
        return TileSpec((c, th, tw), self.valid, self.neighbours)


def _check_geometry(height: int, width: int, tile: int, stride: int) -> None:
    if stride < 1 or tile < stride or tile % stride:
        raise CodingError(f"tile size {tile} must be a positive multiple of the stride {stride}")
    if height < 1 or width < 1:
        raise CodingError(f"image must be at least 1x1, got {height}x{width}")


def padded_shape(channels: int, height: int, width: int, tile: int, stride: int) -> tuple[int, int, int]:
    """The one padded tile shape (C, Th, Tw) of an image."""
    _check_geometry(height, width, tile, stride)
    return channels, min(tile, ceil_to(height, stride)), min(tile, ceil_to(width, stride))


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of each tile's valid region, row-major over the tile grid."""
    return [
        (y0, x0, min(tile, height - y0), min(tile, width - x0))
        for y0 in range(0, height, tile)
        for x0 in range(0, width, tile)
    ]


def tile_neighbours(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """(below, right) of each tile of `tile_boxes`: how many tiles on, row-major, its neighbours are (0: none)."""
    rows, columns = -(-height // tile), -(-width // tile)
    return [
        (columns if row < rows - 1 else 0, 1 if column < columns - 1 else 0)
        for row in range(rows)
        for column in range(columns)
    ]


def tile_specs(channels: int, height: int, width: int, tile: int, stride: int) -> list[TileSpec]:
    """The decoder's view of an image's tiles, in the order `split_tiles` returns them."""
    shape = padded_shape(channels, height, width, tile, stride)
    boxes, neighbours = tile_boxes(height, width, tile), tile_neighbours(height, width, tile)
    return [TileSpec(shape, (h, w), near) for (_, _, h, w), near in zip(boxes, neighbours)]


def pad_tile(valid_pixels: np.ndarray, th: int, tw: int) -> np.ndarray:
    """(C, h, w) valid pixels -> (C, th, tw) by edge replication (bottom and right). A fresh array."""
    c, h, w = valid_pixels.shape
    if not (1 <= h <= th and 1 <= w <= tw):
        raise CodingError(f"valid extent {h}x{w} does not fit the padded tile {th}x{tw}")
    return np.pad(valid_pixels, ((0, 0), (0, th - h), (0, tw - w)), mode="edge")


def split_tiles(image: np.ndarray, tile: int, stride: int) -> list[Tile]:
    """(C, H, W) uint8 -> padded tiles, row-major."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise CodingError(f"image must be (C, H, W) uint8, got {image.dtype} {image.shape}")
    c, height, width = image.shape
    _, th, tw = padded_shape(c, height, width, tile, stride)
    boxes, neighbours = tile_boxes(height, width, tile), tile_neighbours(height, width, tile)
    return [
        Tile(pad_tile(image[:, y0 : y0 + h, x0 : x0 + w], th, tw), (h, w), near)
        for (y0, x0, h, w), near in zip(boxes, neighbours)
    ]


def shape_batches(tiles: Sequence[Tile], batch_pixels: int, stride: int = 1) -> Iterator[list[int]]:
    """The indices of `tiles` in batches of one padded shape (C, H, W), at most `batch_pixels` pixels of the
    shape's sides raised to a multiple of `stride` a batch (at least one tile): how a network prices many tiles at
    once (vaezip/coding.py's tile_bounds and vaezip/estimate.py's, both in this order)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, tile in enumerate(tiles):
        by_shape.setdefault(tile.pixels.shape, []).append(index)
    for (_, height, width), indices in by_shape.items():
        step = max(1, batch_pixels // (ceil_to(height, stride) * ceil_to(width, stride)))
        for start in range(0, len(indices), step):
            yield indices[start : start + step]


def merge_tiles(tiles: list[np.ndarray], height: int, width: int, tile: int) -> np.ndarray:
    """Padded tiles (C, Th, Tw), row-major as from `split_tiles` -> the (C, H, W) image (padding dropped)."""
    boxes = tile_boxes(height, width, tile)
    if len(tiles) != len(boxes):
        raise CodingError(f"{len(tiles)} tiles for a {height}x{width} image cut into {len(boxes)}")
    image = np.empty((tiles[0].shape[0], height, width), dtype=np.uint8)  # (C, H, W)
    for pixels, (y0, x0, h, w) in zip(tiles, boxes):
        image[:, y0 : y0 + h, x0 : x0 + w] = pixels[:, :h, :w]
    return image


class LazyTileSpecs:
    """The decoder's tile specs of several images in stream order, computed on demand: a header that claims
    a million tiles costs a few integers per image, not a million objects, until a batch is decoded.

    Behaves as a read-only sequence of TileSpec (len, index, slice) equal to the concatenation of
    `tile_specs(channels, height, width, tile, stride)` over `sizes` [(height, width), ...]."""

    def __init__(self, channels: int, sizes: list[tuple[int, int]], tile: int, stride: int):
        self.channels, self.tile, self.stride = channels, tile, stride
        self._images = []  # (first tile index, height, width, tile columns, padded shape)
        first = 0
        for height, width in sizes:
            shape = padded_shape(channels, height, width, tile, stride)
            self._images.append((first, height, width, -(-width // tile), shape))
            first += -(-height // tile) * -(-width // tile)
        self._starts = [image[0] for image in self._images]
        self._total = first

    def __len__(self) -> int:
        return self._total

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(self._total))]
        if index < 0:
            index += self._total
        if not 0 <= index < self._total:
            raise IndexError(index)
        first, height, width, columns, shape = self._images[bisect.bisect_right(self._starts, index) - 1]
        row, column = divmod(index - first, columns)
        rows = -(-height // self.tile)
        h, w = min(self.tile, height - row * self.tile), min(self.tile, width - column * self.tile)
        below = columns if row < rows - 1 else 0
        right = 1 if column < columns - 1 else 0
        return TileSpec(shape, (h, w), (below, right))

    def __iter__(self):
        return (self[k] for k in range(self._total))
