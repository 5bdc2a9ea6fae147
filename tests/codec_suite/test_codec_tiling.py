"""codec.tiling: every tile of an image has the same padded shape; merge inverts split; padding is recomputable."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import CodingError
from codec.tiling import ceil_to, merge_tiles, pad_tile, padded_shape, shape_batches, split_tiles, tile_boxes, tile_specs


def check_tiling(image, tile, stride):
    c, h, w = image.shape
    tiles = split_tiles(image, tile, stride)
    shape = padded_shape(c, h, w, tile, stride)
    assert shape == (c, min(tile, ceil_to(h, stride)), min(tile, ceil_to(w, stride)))
    assert [t.spec for t in tiles] == tile_specs(c, h, w, tile, stride)
    for t in tiles:
        th, tw = t.pixels.shape[1:]
        assert t.pixels.shape == shape and t.pixels.dtype == np.uint8
        assert th % stride == 0 and tw % stride == 0
        vh, vw = t.valid
        np.testing.assert_array_equal(pad_tile(t.pixels[:, :vh, :vw], th, tw), t.pixels)  # decoder can redo it
    np.testing.assert_array_equal(merge_tiles([t.pixels for t in tiles], h, w, tile), image)
    return tiles


@pytest.mark.parametrize("h, w", [(1, 1), (1, 500), (300, 1), (7, 3), (64, 64), (65, 129), (128, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_split_merge_shapes(h, w, channels):
    image = np.random.default_rng(h * w).integers(0, 256, (channels, h, w), dtype=np.uint8)
    tiles = check_tiling(image, 64, 8)
    assert len(tiles) == ceil_to(h, 64) // 64 * (ceil_to(w, 64) // 64)


def test_valid_extents_and_edge_padding():
    image = np.arange(7 * 3, dtype=np.uint8).reshape(1, 7, 3)
    (tile,) = split_tiles(image, 8, 4)
    assert tile.valid == (7, 3) and tile.pixels.shape == (1, 8, 4)
    np.testing.assert_array_equal(tile.pixels[0, 7, :3], image[0, 6])  # bottom row repeats the last valid row
    np.testing.assert_array_equal(tile.pixels[0, :7, 3], image[0, :, 2])  # right column repeats the last column
    assert tile.pixels[0, 7, 3] == image[0, 6, 2]
    tiles = split_tiles(np.zeros((1, 10, 10), np.uint8), 8, 4)
    assert [t.valid for t in tiles] == [(8, 8), (8, 2), (2, 8), (2, 2)]
    assert all(t.pixels.shape == (1, 8, 8) for t in tiles)


@pytest.mark.parametrize("tile, stride", [(6, 4), (0, 4), (2, 4), (8, 0)])
def test_bad_geometry_raises(tile, stride):
    with pytest.raises(CodingError):
        split_tiles(np.zeros((1, 5, 5), np.uint8), tile, stride)


def test_bad_inputs_raise():
    with pytest.raises(CodingError):
        split_tiles(np.zeros((5, 5), np.uint8), 8, 4)
    with pytest.raises(CodingError):
        split_tiles(np.zeros((1, 5, 5), np.float32), 8, 4)
    with pytest.raises(CodingError):
        merge_tiles([np.zeros((1, 8, 8), np.uint8)], 10, 10, 8)  # 4 tiles needed
    with pytest.raises(CodingError):
        pad_tile(np.zeros((1, 9, 3), np.uint8), 8, 4)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    channels=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2, 4, 8]),
    multiple=st.integers(1, 4),
)
def test_split_merge_property(h, w, channels, stride, multiple):
    image = np.random.default_rng(h * 1000 + w).integers(0, 256, (channels, h, w), dtype=np.uint8)
    check_tiling(image, stride * multiple, stride)


@pytest.mark.parametrize("h, w, tile", [(1, 1, 8), (8, 8, 8), (17, 40, 8), (40, 9, 16), (64, 64, 32)])
def test_neighbour_offsets_point_at_the_tiles_below_and_to_the_right(h, w, tile):
    boxes = tile_boxes(h, w, tile)
    tiles = split_tiles(np.zeros((1, h, w), np.uint8), tile, 1)
    specs = tile_specs(1, h, w, tile, 1)
    for k, ((y0, x0, th, tw), piece, spec) in enumerate(zip(boxes, tiles, specs)):
        below, right = piece.neighbours
        assert spec.neighbours == piece.spec.neighbours == (below, right)
        assert (below > 0) == (y0 + th < h) and (right > 0) == (x0 + tw < w)
        if below:
            assert boxes[k + below][:2] == (y0 + tile, x0) and boxes[k + below][3] == tw  # same valid width
        if right:
            assert boxes[k + right][:2] == (y0, x0 + tile) and boxes[k + right][2] == th  # same valid height



def test_shape_batches_group_tiles_of_one_shape_within_the_pixel_budget_in_order():
    # an archive's tiles: six of a 70x50 image (each padded to 32x32), then two small images' (20x18 each)
    tiles = split_tiles(np.zeros((3, 70, 50), np.uint8), 32, 1) + 2 * split_tiles(np.zeros((3, 20, 18), np.uint8), 32, 1)
    assert [tile.pixels.shape[1:] for tile in tiles] == [(32, 32)] * 6 + [(20, 18)] * 2
    assert list(shape_batches(tiles, batch_pixels=2 * 32 * 32)) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert list(shape_batches(tiles, batch_pixels=1)) == [[k] for k in range(8)]  # at least one tile a batch
    # the stride raises the sides the budget counts: 20x18 -> 20x20 with stride 4, over 20x36 for two
    assert list(shape_batches(tiles, batch_pixels=20 * 36))[-1] == [6, 7]
    assert list(shape_batches(tiles, batch_pixels=20 * 36, stride=4))[-2:] == [[6], [7]]
