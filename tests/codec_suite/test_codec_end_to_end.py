"""All of codec/ together, the way the torch side will use it: images -> .vz bytes -> images.

RGBA images: RGB through bits-back (toy model), alpha as an i.i.d. plane pushed *first*, so that its bits are
the initial bits of the first tile; the decoder pops in the opposite order and must end with an empty stack.
"""

import hashlib
from dataclasses import replace

import numpy as np
import pytest
from codec_toymodel import LinearToyModel, smooth_image

from codec import bitsback
from codec.ans import Stack, constriction_version
from codec.container import CoderSettings, Header, ImageEntry, binary_version, read, write
from codec.errors import CodingError
from codec.latents import LatentGrid
from codec.planes import Histogram, fit_histogram, pop_plane, push_plane
from codec.tiling import merge_tiles, split_tiles, tile_specs

TILE, MAX_BATCH = 16, 8


def compress(images: dict[str, np.ndarray], model, grid=LatentGrid()) -> bytes:
    """images: name -> (4, H, W) uint8 RGBA."""
    stack = Stack()
    entries, digests = [], hashlib.sha256()
    for name, rgba in images.items():
        hist = fit_histogram(rgba[3])
        push_plane(stack, rgba[3], hist)
        digests.update(hashlib.sha256(rgba.tobytes()).digest())
        entries.append(ImageEntry(name, "RGBA", rgba.shape[2], rgba.shape[1], info={"alpha": hist.to_dict()}))
    tiles = [t for rgba in images.values() for t in split_tiles(rgba[:3], TILE, model.stride)]
    schedule, _ = bitsback.encode_tiles(stack, tiles, model, grid, MAX_BATCH)
    coder = CoderSettings(grid.step, grid.bound, TILE, MAX_BATCH, tuple(schedule), constriction_version())
    header = Header("linear-toy", "0" * 16, coder, tuple(entries), digests.hexdigest())
    return write(header, stack.words(), binary_version(kind for kind, _ in schedule))


def decompress(data: bytes, model) -> dict[str, np.ndarray]:
    header, words = read(data)
    c = header.coder
    grid = LatentGrid(c.grid_step, c.grid_bound)
    specs = [s for im in header.images for s in tile_specs(3, im.height, im.width, c.tile, model.stride)]
    stack = Stack.from_words(words)
    tiles = bitsback.decode_tiles(stack, list(c.schedule), specs, model, grid)
    out, start = {}, 0
    for im in header.images:
        n = len(tile_specs(3, im.height, im.width, c.tile, model.stride))
        out[im.name] = merge_tiles(tiles[start : start + n], im.height, im.width, c.tile)
        start += n
    for im in reversed(header.images):  # pushed first, popped last
        alpha = pop_plane(stack, Histogram.from_dict(im.info["alpha"]), (im.height, im.width))
        out[im.name] = np.concatenate([out[im.name], alpha[None]])
    digests = hashlib.sha256()
    for im in header.images:
        digests.update(hashlib.sha256(out[im.name].tobytes()).digest())
    if not digests.hexdigest().startswith(header.pixels_sha256):  # format 3 keeps a 64-bit prefix
        raise CodingError("decoded pixels do not match the stored sha256")
    if not stack.is_empty():
        raise CodingError("payload not fully consumed")
    return out


def rgba(rng, h, w, alpha="random"):
    image = smooth_image(rng, 3, h, w)
    a = {"random": rng.integers(0, 256, (1, h, w)), "opaque": np.full((1, h, w), 255)}[alpha]
    return np.concatenate([image, a.astype(np.uint8)])


def test_images_survive_the_whole_pipeline():
    rng = np.random.default_rng(0)
    images = {"a.png": rgba(rng, 40, 33), "tiny.png": rgba(rng, 1, 1, "opaque"), "strip.png": rgba(rng, 3, 70)}
    model = LinearToyModel(3)
    data = compress(images, model)
    decoded = decompress(data, LinearToyModel(3))
    assert list(decoded) == list(images)
    for name in images:
        np.testing.assert_array_equal(decoded[name], images[name])
    header, _ = read(data)
    assert header.coder.schedule[0][0] == bitsback.BITSBACK  # the alpha planes were the initial bits


def test_a_wrong_model_is_caught():
    rng = np.random.default_rng(1)
    data = compress({"a.png": rgba(rng, 24, 24, "opaque")}, LinearToyModel(3))
    other = LinearToyModel(3)
    other.c1 = 21.0  # slightly different weights
    with pytest.raises(CodingError):
        decompress(data, other)


def test_a_wrong_schedule_is_caught():
    rng = np.random.default_rng(2)
    data = compress({"a.png": rgba(rng, 32, 32, "opaque")}, LinearToyModel(3))
    header, words = read(data)
    schedule = list(header.coder.schedule)
    schedule[0:2] = [schedule[1], schedule[0]]  # same tiles, other order
    bad = write(replace(header, coder=replace(header.coder, schedule=tuple(schedule))), words,
                binary_version(kind for kind, _ in schedule))
    with pytest.raises(CodingError):
        decompress(bad, LinearToyModel(3))
