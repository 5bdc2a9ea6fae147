"""Images <-> one .vz stream: side planes first (their bits become the first tile's initial bits), then every
model tile of every image through bits-back, chained in one stack; the decoder undoes it in reverse and
verifies each image's pixel checksum."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from codec import bitsback, container
from codec.ans import Stack, constriction_version
from codec.errors import CodingError, HeaderError, LimitError
from codec.header import CoderSettings, Header, ImageEntry
from codec.latents import LatentGrid
from codec.planes import Histogram, fit_histogram, pop_plane, push_plane
from codec.tiling import LazyTileSpecs, merge_tiles, split_tiles
from vaezip import __version__
from vaezip.api import CompressResult, ImageReport, LoadedModel, default_model, load_model
from vaezip.checkpoint import CheckpointError
from vaezip.coding import TorchLatentModel, deterministic_kernels
from vaezip.errors import ImageError, IntegrityError
from vaezip.images import MAX_IMAGE_PIXELS, SUPPORTED_MODES, Planes, join_planes, pixel_checksum, split_image
from vaezip.train import resolve_device

GRID = LatentGrid()
DEFAULT_TILE = 32  # pixels per tile side: the shipped models were trained on 32x32 crops and bound best there
# vaezip's own limits (on top of codec/header.py's), the same when writing and reading, so that a forged header
# cannot make the decoder build huge tile lists or run the model on a huge batch (docs/ERRORS.md).
FLOAT_VERSION = 1  # .vz files coded by float inference (read only)
MAX_TILE = 256  # tile side: one tile must fit a batch (MAX_TILE**2 <= MAX_BATCH_PIXELS)
# Padded pixels in one batch of tiles (n * Th * Tw): the model's activations for a batch, and its unfolded
# convolution inputs, are float64 integers. Measured with the photo model, a forged batch took 1.85 GiB over
# the process's baseline at 2**18 pixels and 0.7 GiB at this limit (4x a default batch of 16 32x32 tiles).
MAX_BATCH_PIXELS = 2**16
MAX_TILES = 2**20  # tiles in one file
# Pixels of all the images of one file together: the decoder holds every decoded image until the checksum of
# the whole file is verified (~1 GiB of RGBA at the limit), and a forged header must not claim more.
MAX_FILE_PIXELS = 2**28


def effective_tile(tile: int | None, stride: int) -> int:
    """The tile side the coder uses when asked for `tile`: a multiple of the model's stride, at least one."""
    tile = tile or DEFAULT_TILE
    if not 1 <= tile <= MAX_TILE:
        raise ValueError(f"tile must be between 1 and {MAX_TILE} pixels, not {tile}")
    return max(stride, tile // stride * stride)


def _resolve_device(name: str, recorded: str | None = None) -> torch.device:
    """Like training's resolver, but "auto" prefers the device class that encoded (where it exists here)."""
    if name == "auto" and recorded in ("cpu", "cuda"):
        name = recorded if recorded == "cpu" or torch.cuda.is_available() else "cpu"
    return resolve_device(name)


def _model_channels(mode: str) -> int:
    return 1 if mode in ("L", "LA") else 3


def encode_archive(images, model, *, tile, max_batch, device, progress, predictor=True) -> CompressResult:
    started = time.perf_counter()
    split = []
    for name, image in images:
        try:
            split.append((name, split_image(image), pixel_checksum(image)))
        except ImageError as error:
            raise ImageError(f"{name}: {error}") from None
    if not split:
        raise ImageError("no images to compress")
    _check_file_pixels(sum(p.width * p.height for _, p, _ in split), ImageError)
    if model is None:
        model = default_model(split[0][1].mode)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    channels, stride = loaded.model.config.image_channels, loaded.model.config.stride
    for name, planes, _ in split:
        if planes.model_plane is not None and planes.model_channels != channels:
            raise ImageError(
                f"{name}: a {planes.mode} image needs a {planes.model_channels}-channel model, "
                f"but {loaded.name} codes {channels}-channel images (mixed grey and colour need separate files)"
            )
    tile = effective_tile(tile, stride)
    max_batch = max(1, min(max_batch, MAX_BATCH_PIXELS // (tile * tile)))
    tiles_needed = sum(_count_tiles(p.height, p.width, tile) for _, p, _ in split if p.model_plane is not None)
    if tiles_needed > MAX_TILES:
        raise ImageError(f"{tiles_needed} tiles, more than {MAX_TILES} in one file: use a larger --tile")
    target = _resolve_device(device)
    coder_model = TorchLatentModel(loaded.model, target)  # integer-exact
    version = container.VERSION if coder_model.integer else FLOAT_VERSION

    stack = Stack()
    side_bits: list[tuple[float, float]] = []  # (payload bits, ideal bits) of each image's side planes
    infos = []
    for _, planes, _ in split:
        before, ideal, histograms = stack.num_valid_bits(), 0.0, {}
        for plane_name, plane in planes.side_planes.items():
            histogram = fit_histogram(plane)
            push_plane(stack, plane, histogram)
            histograms[plane_name] = histogram.to_dict()
            ideal += histogram.ideal_bits()
        infos.append({**planes.info, "planes": histograms})
        side_bits.append((stack.num_valid_bits() - before, ideal))

    tiles, owner = [], []
    for index, (_, planes, _) in enumerate(split):
        if planes.model_plane is not None:
            cut = split_tiles(planes.model_plane, tile, stride)
            tiles += cut
            owner += [index] * len(cut)
    with deterministic_kernels(pin_threads=not coder_model.integer):
        # Which tiles the predictor takes: decided on the float network's estimate (fast); the decoder replays
        # the schedule, so the choice needs no exactness.
        estimates = coder_model.tile_bounds(tiles, estimate=True) if predictor else None
        schedule, stats = bitsback.encode_tiles(
            stack, tiles, coder_model, GRID, max_batch, on_batch=progress, model_bits=estimates
        )
        # The bound is the coder's model's negative ELBO: a bits-back tile's comes from the pass that coded it;
        # a tile coded by the model without bits-back (the first ones) gets the (integer) model's own. A tile
        # the model did not code (predictor, whitened bytes) reports the estimate that chose its kind (the
        # float network, within ~0.1 % of the integer model): pricing it again would cost the encoder a
        # fifth of its time (kodim23: 150 of 384 tiles) for a figure that no byte depends on.
        kinds = [kind for kind, n in schedule for _ in range(n)]
        model_coded = [k for k, s in enumerate(stats) if s.direct and (estimates is None or kinds[k] == bitsback.DIRECT)]
        model_bits = dict(zip(model_coded, coder_model.tile_bounds([tiles[k] for k in model_coded])))
    bounds = [
        s.ideal_bits if not s.direct else model_bits[k] if k in model_bits else estimates[k]
        for k, s in enumerate(stats)
    ]

    entries = tuple(
        ImageEntry(name, planes.mode, planes.width, planes.height, planes.palette, info)
        for (name, planes, _), info in zip(split, infos)
    )
    extra = {"device": target.type, "torch": str(torch.__version__), "vaezip": __version__}
    settings = CoderSettings(GRID.step, GRID.bound, tile, max_batch, tuple(schedule), constriction_version(), extra)
    header = Header(loaded.name, loaded.sha256[:16], settings, entries, combined_checksum(c for _, _, c in split))
    data = container.write(header, stack.words(), version)

    tiles_of: list[list[int]] = [[] for _ in split]
    for k, index in enumerate(owner):
        tiles_of[index].append(k)
    reports = []
    for index, (name, planes, _) in enumerate(split):
        mine = tiles_of[index]
        payload = side_bits[index][0] + sum(stats[k].net_bits for k in mine)
        bound = side_bits[index][1] + sum(bounds[k] for k in mine)
        alone = [k for k in mine if stats[k].direct]
        excess = sum(stats[k].net_bits - bounds[k] for k in alone)
        reports.append(
            ImageReport(
                name, planes.mode, planes.width, planes.height, planes.subpixels, bound, payload, excess,
                len(mine), len(alone),
            )
        )
    header_bytes = len(data) - 4 * len(stack.words())
    return CompressResult(data, loaded.name, tuple(reports), header_bytes, time.perf_counter() - started)


def _model_for(header: Header, model) -> LoadedModel:
    from vaezip import zoo

    if model is None:
        if not zoo.has_model(header.model_name):
            raise CheckpointError(
                f"this file was made with model {header.model_name!r}, which is not installed: pass --model"
            )
        model = header.model_name
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if loaded.sha256[:16] != header.model_sha256:
        raise CheckpointError(
            f"this file was made with model {header.model_name!r} (sha256 {header.model_sha256}...), "
            f"not with {loaded.name!r} (sha256 {loaded.sha256[:16]}...)"
        )
    return loaded


def decode_archive(data: bytes, model, *, device, progress):
    version, header, words = container.read_versioned(data)
    loaded = _model_for(header, model)
    integer = version != FLOAT_VERSION
    recorded = header.coder.extra.get("device")
    # A float file decodes best where it was made; an integer file anywhere.
    target = _resolve_device(device, recorded if isinstance(recorded, str) and not integer else None)
    coder_model = TorchLatentModel(loaded.model, target, integer=integer)
    channels, stride, tile = loaded.model.config.image_channels, loaded.model.config.stride, header.coder.tile

    planes_of = []
    for entry in header.images:
        _check_entry(entry)
        histograms = entry.info.get("planes", {})
        uses_model = "index" not in histograms
        if uses_model and _model_channels(entry.mode) != channels:
            raise CodingError(f"{entry.name}: mode {entry.mode} does not match the model's {channels} channels")
        planes_of.append(uses_model)
    if tile > MAX_TILE:
        raise LimitError(f"tile = {tile} outside vaezip's limit {MAX_TILE}")
    _check_file_pixels(sum(e.width * e.height for e in header.images), LimitError)
    # Count before building anything: the schedule must cover exactly the tiles the images need.
    needed = sum(_count_tiles(e.height, e.width, tile) for e, uses in zip(header.images, planes_of) if uses)
    if needed > MAX_TILES:
        raise LimitError(f"{needed} tiles, more than vaezip's limit {MAX_TILES}")
    scheduled = sum(n for _, n in header.coder.schedule)
    if scheduled != needed:
        raise CodingError(f"the schedule covers {scheduled} tiles, the images need {needed}")
    sizes = [(e.height, e.width) for e, uses in zip(header.images, planes_of) if uses]
    specs = LazyTileSpecs(channels, sizes, tile, stride)  # nothing per tile is built before it is decoded
    counts = [_count_tiles(e.height, e.width, tile) if uses else 0 for e, uses in zip(header.images, planes_of)]
    batch_start = 0
    for _, n in header.coder.schedule:
        _, th, tw = specs[batch_start].shape
        if n * th * tw > MAX_BATCH_PIXELS:
            raise LimitError(f"a batch of {n} tiles of {th}x{tw} is more than vaezip's limit of {MAX_BATCH_PIXELS} pixels")
        batch_start += n
    stack = Stack.from_words(words)

    # An empty stack is no proof of damage: a black tile costs no payload at all, so whole files of black
    # images are empty. What a genuine stream must hold is checked where it is certain: bits-back batches
    # need bits on the stack (bitsback.check_payload_size, before any model run, and before every such batch),
    # and every image ends with its checksum.
    try:
        with deterministic_kernels(pin_threads=not integer):
            grid = LatentGrid(header.coder.grid_step, header.coder.grid_bound)
            tiles = bitsback.decode_tiles(stack, list(header.coder.schedule), specs, coder_model, grid, progress)
        side: list[dict[str, np.ndarray]] = [{} for _ in header.images]
        for index in reversed(range(len(header.images))):
            entry = header.images[index]
            histograms = entry.info.get("planes", {})
            for plane_name in reversed(list(histograms)):
                histogram = Histogram.from_dict(histograms[plane_name])
                if not histogram.is_constant and stack.is_empty():
                    raise CodingError(f"payload exhausted before the {plane_name} plane of {entry.name}")
                side[index][plane_name] = pop_plane(stack, histogram, (entry.height, entry.width))
    except CodingError as error:
        raise IntegrityError(f"decoding failed ({error}); {_likely_cause(header, target, integer)}") from None
    if not stack.is_empty():
        raise IntegrityError(f"payload not fully consumed; {_likely_cause(header, target, integer)}")

    results, start = [], 0
    for index, entry in enumerate(header.images):
        model_plane = None
        if planes_of[index]:
            model_plane = merge_tiles(tiles[start : start + counts[index]], entry.height, entry.width, tile)
            start += counts[index]
        info = {key: value for key, value in entry.info.items() if key != "planes"}
        planes = Planes(entry.mode, entry.width, entry.height, model_plane, side[index], entry.palette, info)
        try:
            image = join_planes(planes)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
            raise IntegrityError(
                f"{entry.name}: cannot rebuild the image ({type(error).__name__}: {error}); "
                f"{_likely_cause(header, target, integer)}"
            ) from None
        results.append((entry.name, image))
    if combined_checksum(pixel_checksum(image) for _, image in results) != header.pixels_sha256:
        names = results[0][0] if len(results) == 1 else f"{len(results)} images"
        raise IntegrityError(f"{names}: decoded pixels do not match the checksum; {_likely_cause(header, target, integer)}")
    return results


def combined_checksum(digests) -> str:
    """One sha256 over the images' pixel digests (hex) in order: the file's proof of an exact decode."""
    combined = hashlib.sha256()
    for digest in digests:
        combined.update(bytes.fromhex(digest))
    return combined.hexdigest()


def _check_file_pixels(total: int, error: type[Exception]) -> None:
    if total > MAX_FILE_PIXELS:
        raise error(f"{total} pixels in one file, more than vaezip's limit of {MAX_FILE_PIXELS}: use several files")


def _count_tiles(height: int, width: int, tile: int) -> int:
    return -(-height // tile) * -(-width // tile)


def _check_entry(entry: ImageEntry) -> None:
    """What vaezip adds to an image entry, checked before any decoding work (the codec checks the rest)."""
    if entry.width * entry.height > MAX_IMAGE_PIXELS:
        raise LimitError(
            f"{entry.name}: {entry.width}x{entry.height} is more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)"
        )
    if entry.mode not in SUPPORTED_MODES:
        raise HeaderError(f"bad header: {entry.name}: unsupported image mode {entry.mode!r}")
    histograms = entry.info.get("planes", {})
    if not isinstance(histograms, dict) or not all(isinstance(h, dict) for h in histograms.values()):
        raise HeaderError(f"bad header: {entry.name}: 'planes' must map plane names to histograms")
    palette_mode = entry.info.get("palette_mode")
    if entry.mode == "P" and (entry.palette is None or not isinstance(palette_mode, str) or not 1 <= len(palette_mode) <= 8):
        raise HeaderError(f"bad header: {entry.name}: a P image needs a palette and a palette_mode such as RGB")
    allowed = {"LA": {"alpha"}, "RGBA": {"alpha"}, "P": {"index"}}.get(entry.mode, set())
    if not set(histograms) <= allowed:
        raise HeaderError(f"bad header: {entry.name}: planes {sorted(histograms)} do not fit mode {entry.mode}")


def _likely_cause(header: Header, device: torch.device, integer: bool) -> str:
    if integer:  # computed exactly: no machine, kernel or device difference can explain it
        return "the file is damaged, or was made by a different model or vaezip version"
    extra = header.coder.extra
    # constriction is named too: a different ANS or quantiser version codes the same tables differently.
    made = f"{extra.get('device', '?')} with torch {extra.get('torch', '?')}, constriction {header.coder.constriction}"
    here = f"{device.type} with torch {torch.__version__}, constriction {constriction_version()}"
    return (f"this is a format-1 file (float inference), made on {made}, decoded on {here}: such files decode "
            "only on the kind of machine (CPU instruction set, GPU) and versions that made them")
