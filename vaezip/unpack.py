"""Decoding a .vz file's model stream, without torch: everything around the model (the limits, the schedule's
checks, the side planes, the images rebuilt, the checksum) and the whole of a stream whose tiles all went
without the model (the predictor's, raw bytes).

archive.py runs the model's tiles through this with its model; a file whose every tile is model-free
(`needs_no_model`) decodes here alone: no torch, no model file, the model the header names not even installed
(the tiles do not depend on it). That is most small images and graphics, which the predictor codes for less.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from codec import bitsback, classic, container, tilekinds
from codec.ans import Stack
from codec.errors import CodingError, HeaderError, LimitError
from codec.header import MODEL, Header, ImageEntry
from codec.latents import LatentGrid
from codec.planes import Histogram, pop_plane
from codec.tiling import LazyTileSpecs, merge_tiles
from vaezip.classical import check_header, decode_entry, entry_digests, matches
from vaezip.errors import IntegrityError
from vaezip.images import Planes, join_planes

# vaezip's own limits (on top of codec/header.py's), the same when writing and reading, so that a forged header
# cannot make the decoder build huge tile lists or run the model on a huge batch (docs/ERRORS.md).
MAX_TILE = 256  # tile side: one tile must fit a batch (MAX_TILE**2 <= MAX_BATCH_PIXELS)
# Padded pixels in one batch of tiles (n * Th * Tw): the model's activations for a batch, and its unfolded
# convolution inputs, are float64 integers. Measured with the photo model, a forged batch took 1.85 GiB over
# the process's baseline at 2**18 pixels and 0.7 GiB at this limit (4x a default batch of 16 32x32 tiles).
MAX_BATCH_PIXELS = 2**16
MAX_TILES = 2**20  # tiles in one file

DAMAGED = "the file is damaged"

# (stack, schedule, specs, stream order or None) -> the decoded tiles in raster order, the stream's last batch
# first (bitsback.decode_tiles with a model, or none)
TileDecoder = Callable[[Stack, list, LazyTileSpecs, "list[int] | None"], list]
# (version, header, words) -> ({image index: image}, what most likely went wrong if a checksum fails)
ModelPart = Callable[[int, Header, np.ndarray], tuple[dict, str]]


def needs_no_model(header: Header) -> bool:
    """Whether every tile of the file's model stream went without the model (or it has none)."""
    return all(not tilekinds.by_name(kind).uses_model for kind, _ in header.coder.schedule)


def decode_file(data: bytes, model_part: ModelPart, parsed=None) -> list:
    """.vz bytes -> [(name, PIL image)], the model stream's images by `model_part`; IntegrityError unless every
    checksum matches."""
    version, header, words = parsed or container.read_versioned(data)
    check_header(header)
    # The classical images first: cheap, and a damaged one is found before any model work.
    decoded = {k: decode_entry(entry) for k, entry in enumerate(header.images) if entry.coding != MODEL}
    cause = DAMAGED
    if header.uses_model:
        images, cause = model_part(version, header, words)
        decoded.update(images)
    results = [(entry.name, decoded[k]) for k, entry in enumerate(header.images)]
    if not matches(header, entry_digests(header, results)):
        names = results[0][0] if len(results) == 1 else f"{len(results)} images"
        raise IntegrityError(f"{names}: decoded pixels do not match the checksum; {cause}")
    return results


def decode_model_free(data: bytes, *, progress=None, parsed=None) -> list:
    """decode_file for a file that needs_no_model: its model stream's tiles popped without any model."""

    def model_part(version: int, header: Header, words: np.ndarray) -> tuple[dict, str]:
        if not needs_no_model(header):
            raise CodingError("this file's tiles need its model")
        entries = [entry for entry in header.images if entry.coding == MODEL]
        for entry in entries:  # before their planes are looked at (a crafted 'planes' may be no mapping)
            _check_entry(entry)
        channels = {model_channels(entry.mode) for entry in entries if "index" not in entry.info.get("planes", {})}
        if len(channels) > 1:
            raise HeaderError("bad header: the model-coded images mix grey and colour")
        grid = LatentGrid(header.coder.grid_step, header.coder.grid_bound)

        def decode(stack: Stack, schedule: list, specs: LazyTileSpecs, order: list[int] | None) -> list:
            return bitsback.decode_tiles(stack, schedule, specs, None, grid, progress, order=order)

        # stride 1: a model-free tile holds its valid pixels only, whatever the model pads them to
        return decode_stream(header, words, channels=min(channels, default=3), stride=1, decode=decode,
                             cause=DAMAGED), DAMAGED

    return decode_file(data, model_part, parsed)


def check_stream(header: Header) -> tuple[list[bool], int]:
    """The checks of a file's model stream that need no model, before anything is built (what `vaezip info`
    runs too): its entries, its tile, and a schedule that covers exactly the tiles the images need. Whether each
    model-coded entry has a model plane, and the tiles they need."""
    tile = header.coder.tile
    planes_of = []
    for entry in header.images:
        if entry.coding == MODEL:
            _check_entry(entry)
            planes_of.append("index" not in entry.info.get("planes", {}))
    if tile > MAX_TILE:
        raise LimitError(f"tile = {tile} outside vaezip's limit {MAX_TILE}")
    entries = [entry for entry in header.images if entry.coding == MODEL]
    needed = sum(count_tiles(e.height, e.width, tile) for e, uses in zip(entries, planes_of) if uses)
    if needed > MAX_TILES:
        raise LimitError(f"{needed} tiles, more than vaezip's limit {MAX_TILES}")
    scheduled = sum(n for _, n in header.coder.schedule)
    if scheduled != needed:
        raise CodingError(f"the schedule covers {scheduled} tiles, the images need {needed}")
    return planes_of, needed


def decode_stream(header: Header, words: np.ndarray, *, channels: int, stride: int, decode: TileDecoder,
                  cause: str) -> dict:
    """The model-coded images of a file, {image index: image}: the model plane's tiles by `decode` (for
    `channels`-channel tiles padded to a multiple of `stride`), the side planes, the images rebuilt. `cause`:
    what an IntegrityError says most likely went wrong."""
    tile = header.coder.tile
    indices = [k for k, entry in enumerate(header.images) if entry.coding == MODEL]
    entries = [header.images[k] for k in indices]
    planes_of, needed = check_stream(header)
    for entry, uses_model in zip(entries, planes_of):
        if uses_model and model_channels(entry.mode) != channels:
            raise CodingError(f"{entry.name}: mode {entry.mode} does not match the model's {channels} channels")
    sizes = [(e.height, e.width) for e, uses in zip(entries, planes_of) if uses]
    specs = LazyTileSpecs(channels, sizes, tile, stride)  # nothing per tile is built before it is decoded
    counts = [count_tiles(e.height, e.width, tile) if uses else 0 for e, uses in zip(entries, planes_of)]
    order = bitsback.order_from_runs(header.coder.order, needed) if header.coder.order else None
    in_stream = specs if order is None else bitsback.Reordered(specs, order)
    batch_start = 0
    for kind, n in header.coder.schedule:
        _, th, tw = in_stream[batch_start].shape
        batch_start += n
        if not tilekinds.BY_NAME[kind].uses_model:  # coded tile by tile (a section's many): no batch in memory
            continue
        if n * th * tw > MAX_BATCH_PIXELS:
            raise LimitError(f"a batch of {n} tiles of {th}x{tw} is more than vaezip's limit of {MAX_BATCH_PIXELS} pixels")
        rows = n * tilekinds.BY_NAME[kind].samples  # an importance-weighted batch runs the model on K rows a tile
        if n > 1 and rows * th * tw > MAX_BATCH_PIXELS:
            raise LimitError(f"a batch of {n} tiles of {th}x{tw} with {rows // n} samples each is more than vaezip's "
                             f"limit of {MAX_BATCH_PIXELS} pixels")
    stack = Stack.from_words(words)

    # An empty stack is no proof of damage: a black tile costs no payload at all, so whole files of black
    # images are empty. What a genuine stream must hold is checked where it is certain: bits-back batches
    # need bits on the stack (bitsback.check_payload_size, before any model run, and before every such batch),
    # and every image ends with its checksum.
    try:
        tiles = decode(stack, list(header.coder.schedule), specs, order)
        side: list[dict[str, np.ndarray]] = [{} for _ in entries]
        for index in reversed(range(len(entries))):
            entry = entries[index]
            histograms = entry.info.get("planes", {})
            for plane_name in reversed(list(histograms)):
                if "coding" in histograms[plane_name]:  # classically coded, beside the stack
                    continue
                histogram = Histogram.from_dict(histograms[plane_name])
                if not histogram.is_constant and stack.is_empty():
                    raise CodingError(f"payload exhausted before the {plane_name} plane of {entry.name}")
                side[index][plane_name] = pop_plane(stack, histogram, (entry.height, entry.width))
    except CodingError as error:
        raise IntegrityError(f"decoding failed ({error}); {cause}") from None
    if not stack.is_empty():
        raise IntegrityError(f"payload not fully consumed; {cause}")

    for index, entry in enumerate(entries):
        side[index].update(_classical_side_planes(entry))
    images, start = {}, 0
    for index, entry in enumerate(entries):
        model_plane = None
        if planes_of[index]:
            model_plane = merge_tiles(tiles[start : start + counts[index]], entry.height, entry.width, tile)
            start += counts[index]
        info = {key: value for key, value in entry.info.items() if key != "planes"}
        planes = Planes(entry.mode, entry.width, entry.height, model_plane, side[index], entry.palette, info)
        try:
            images[indices[index]] = join_planes(planes)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
            raise IntegrityError(f"{entry.name}: cannot rebuild the image ({type(error).__name__}: {error}); {cause}") from None
    return images


def model_channels(mode: str) -> int:
    """The channels of an image mode's model plane."""
    return 1 if mode in ("L", "LA") else 3


def count_tiles(height: int, width: int, tile: int) -> int:
    return -(-height // tile) * -(-width // tile)


def _classical_side_planes(entry: ImageEntry) -> dict[str, np.ndarray]:
    """The side planes of a model-coded image that are coded classically, from its data, in plane order."""
    planes, start = {}, 0
    for plane_name, plane in entry.info.get("planes", {}).items():
        if "coding" in plane:
            data = entry.data[start : start + plane["length"]]
            start += plane["length"]
            try:
                planes[plane_name] = classic.decode(plane["coding"], data, entry.height, entry.width, 1)
            except CodingError as error:
                raise IntegrityError(f"{entry.name}: its {plane_name} plane does not decode ({error}); the file "
                                     "is damaged") from None
    return planes


def _check_entry(entry: ImageEntry) -> None:
    """What the model path adds to a model-coded image entry (check_header has checked the rest)."""
    histograms = entry.info.get("planes", {})
    if not isinstance(histograms, dict) or not all(isinstance(h, dict) for h in histograms.values()):
        raise HeaderError(f"bad header: {entry.name}: 'planes' must map plane names to histograms")
    classical = [h for h in histograms.values() if "coding" in h]
    if any(set(h) != {"coding", "length"} or h["coding"] not in classic.CODINGS or type(h["length"]) is not int
           or h["length"] < 0 for h in classical) or sum(h["length"] for h in classical) != len(entry.data):
        raise HeaderError(f"bad header: {entry.name}: classically coded planes must name a coding and the "
                          "lengths of the image's data")
    allowed = {"LA": {"alpha"}, "RGBA": {"alpha"}, "P": {"index"}}.get(entry.mode, set())
    if not set(histograms) <= allowed:
        raise HeaderError(f"bad header: {entry.name}: planes {sorted(histograms)} do not fit mode {entry.mode}")
