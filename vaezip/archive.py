"""Images <-> one .vz file. Each image goes the cheaper of two ways (format 3), chosen by the exact size of the
file: through the model, or through the smallest classical coding (raw, PNG or WebP samples; vaezip/classical.py).

The encoder codes every image classically (cheap), runs the model over the images whose estimated cost does
not rule it out, and writes the smallest of: every image classical, the model's images through the model, and,
where only some of them were cheaper there, just those (coded again: bits-back chains them). A float model's
files are format 1, which holds model-coded images only; format 2 (on request) codes every image by the model.

The model path: side planes first (their bits become the first tile's initial bits; an alpha plane that PNG or
WebP holds in fewer bytes goes beside the stack instead), then every model tile of every model-coded image
through bits-back, chained in one stack; the decoder undoes it in reverse. Every decode ends with the file's
pixel checksum."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
# Imported here, before compress starts its threads: numba's import in the quick stream's thread and numpy's lazy
# `np.random` in the estimator's (the main thread) once imported it at the same time, and Python's import locks
# refused that with a _DeadlockError (its submodules import each other). ~8 ms.
import numpy.random  # noqa: F401

from codec import bitsback, classic, container, tilekinds
from codec.ans import Stack, constriction_version
from codec.depth import LOW
from codec.header import MAX_IMAGES, MAX_NAME_CHARS, MODEL, CoderSettings, Header, ImageEntry
from codec.latents import LatentGrid
from codec.metadata import MAX_CHUNKS
from codec.planes import fit_histogram, push_plane
from codec.tiling import split_tiles
from vaezip import __version__
from vaezip.classical import MAX_FILE_PIXELS, check_file_pixels, combined_checksum, with_depth
from vaezip.classical import smallest_entry
from vaezip.config import importance_coding_obstacle
from vaezip.errors import CheckpointError, ImageError
from vaezip.images import (Planes, as_image, codable, deep_parts, grey_bits, is_deep, join_planes, pixel_checksum,
                           split_image)
from vaezip.metadata import image_chunks, not_metadata
from vaezip.models import LoadedModel, ModelIdentity, default_model, identify_model, load_by_sha256, load_model
from vaezip.results import CompressResult, ImageReport
from vaezip.unpack import MAX_BATCH_PIXELS, MAX_TILE, MAX_TILES, count_tiles, decode_file, decode_stream

# torch (vaezip.coding, the network) is imported where a network runs: coding with none (fast=True) and decoding
# a file whose tiles all went without the model import no torch.
if TYPE_CHECKING:
    import torch

GRID = LatentGrid()
DEFAULT_TILE = 32  # pixels per tile side: the shipped models were trained on 32x32 crops and bound best there
# compress --fast's and the default's quick stream: no model, and the predictor's larger tiles start from their
# context less often. Format 9's tiles (Kodak's 24) gained little beyond 64: 3.1463 bpsp in tiles of 32, 3.1437 in
# 64, 3.1426 in 128, 3.1420 in 256. The cascade's least-squares windows and statistics gain more from a larger
# frame: format 13's files 2.9109 in 128, 2.9071 in 256, at the same speed (every third image's +0.32 % in 64 and
# -0.18 % in 512, beyond the decoder's limit of 256, unpack.MAX_TILE); format 14's 2.9031 and 2.8992 bits per
# subpixel of payload (`python scripts/cascade.py kodak --sizes 128 256`: -0.13 %).
FAST_TILE = 256
FLOAT_VERSION = 1  # .vz files coded by float inference (read only)
__all__ = ["MAX_FILE_PIXELS", "combined_checksum", "decode_archive", "effective_tile", "encode_archive"]


# The older formats written with the default's coding (quick stream, early exit, --samples) and only their own
# predictor tiles instead of format 16's sections of the staged cascade: 10 and 11 the least-squares tiles (format 10
# with its header as it is, 11 deflating it where that pays), 12 the cascade's without parity, 13 those with parity,
# 14 the wide cascade's, 15 the staged cascade's in one chain over the stream. Older ones than these are written by
# their own, older coding.
DEFAULT_CODING_FORMATS = {container.LEAST_SQUARES_VERSION: bitsback.PREDICTIVE_LEAST_SQUARES,
                          container.DEFLATED_VERSION: bitsback.PREDICTIVE_LEAST_SQUARES,
                          container.CASCADE_VERSION: bitsback.PREDICTIVE_CASCADE,
                          container.PARITY_VERSION: bitsback.PREDICTIVE_PARITY,
                          container.WIDE_VERSION: bitsback.PREDICTIVE_WIDE,
                          container.STAGED_VERSION: bitsback.PREDICTIVE_STAGED}


def effective_tile(tile: int | None, stride: int) -> int:
    """The tile side the coder uses when asked for `tile` (None: DEFAULT_TILE): a multiple of the model's stride,
    at least one."""
    tile = DEFAULT_TILE if tile is None else tile
    if not 1 <= tile <= MAX_TILE:
        raise ValueError(f"tile must be between 1 and {MAX_TILE} pixels, not {tile}")
    if stride > MAX_TILE:  # a tile is a multiple of it: the decoder refuses tiles past its limit
        raise CheckpointError(f"the model's stride {stride} is more than vaezip's largest tile {MAX_TILE}: it can "
                              f"code no file")
    return max(stride, tile // stride * stride)


def _resolve_device(name: str, recorded: str | None = None) -> torch.device:
    """Like resolve_device, but "auto" prefers the device class that encoded (where it exists here)."""
    import torch

    from vaezip.devices import resolve_device

    if name == "auto" and recorded in ("cpu", "cuda"):
        name = recorded if recorded == "cpu" or torch.cuda.is_available() else "cpu"
    return resolve_device(name)


@dataclass
class _Image:
    name: str
    image: object  # the PIL image
    planes: Planes
    checksum: str


@dataclass
class _ModelCoding:
    """The model path over some of the images: their header entries, the stack's words and each one's figures."""

    version: int  # 3, or 2 (the JSON header, on request); 1 (float inference) only for a float coder model
    settings: CoderSettings
    words: np.ndarray
    entries: dict[int, ImageEntry]  # image index -> its entry
    reports: dict[int, tuple[float, float, float, int, int]]  # index -> (payload, bound, excess bits, tiles, alone)

    def payload_bytes(self, index: int) -> float:
        return self.reports[index][0] / 8


def encode_archive(images, model, *, tile, max_batch, device, progress, predictor=True, classical=True,
                   format_version=None, samples=1, fast=False, metadata=True) -> CompressResult:
    """compress_images (vaezip/api.py). By default (no tile, format or sample count asked for) the file is also
    coded as `fast` codes it without its classical codings, the predictor's tiles of FAST_TILE, and the smaller
    file kept: since format 9's adaptive predictor the model's tiles of 32 gain less on most photographs than
    the predictor's larger tiles do (Kodak: the smaller of the two on 21 of the 24 in format 9, on all 24 since
    format 10's least squares). The model's stream then codes its predictor tiles with format 9's adaptive kind,
    not format 10's least-squares one: pricing every tile of 32 with least squares costs about a second a
    Kodak image, and the quick stream has it where the predictor wins (Kodak: 91 -> 84 s to compress); and where
    the model's estimate rules every image out against the quick stream, the model codes nothing (with the quick
    stream in a thread of its own beside the pricing, 73 s). The early exit: the model first prices a sample of
    one tile in GATE_EVERY; where that puts it far behind the quick stream on every image (_Gate.rules_out), the
    file is the smallest of the quick stream, the classical codings, and the quick stream of the images it codes for
    less beside the others' classical codings, which the full path would keep there too, and nothing more is
    priced; the classical codings are the quick ones unless they come near the quick stream (CLASSICAL_SCREEN).
    Kodak: 73 -> 33 s to compress, the same files; kodim23's whole command 6.5 -> 3.0 s. The reports' bounds are
    then the sample's projection.

    Where the network runs, the file is likewise the smallest of its file, the quick stream and that mixed file.

    metadata: keep each image's metadata (its colour profile, EXIF, text: vaezip/metadata.py) in a format-17 file,
    where the format is not one asked for that holds none (16 or older; those files keep none). A 16-bit image
    (vaezip/images.py DeepImage) goes as its two 8-bit parts, in a format-18 file. A grey image read from 1-, 2- or
    4-bit samples (vaezip/images.py grey_bits) keeps that depth in a format-23 file, where no older format was asked
    for (22 and older: decompress writes it as 8-bit grey)."""
    started = time.perf_counter()
    writable = (*container.OLDER_FORMATS, container.SECTIONS_VERSION, container.METADATA_VERSION,
                container.DEPTH_VERSION, container.SMALL_VERSION, container.PHOTO_VERSION,
                container.REFINED_VERSION, container.ACROSS_VERSION, container.BITS_VERSION)
    if format_version not in (None, *writable):
        raise ValueError(f"format_version must be one of {', '.join(map(str, writable))}, not {format_version}")
    images, depths = _parts(images)
    deep = any(depth for depth, _ in depths)
    if len(images) > MAX_IMAGES and deep:  # more images than inputs
        raise ImageError(f"{len(images)} images with the low parts of 16-bit images, more than {MAX_IMAGES} in one "
                         f"archive: compress them into several archives")
    if deep and format_version not in (None, container.DEPTH_VERSION, container.SMALL_VERSION,
                                       container.PHOTO_VERSION, container.REFINED_VERSION, container.ACROSS_VERSION,
                                       container.BITS_VERSION):
        name = next(name for (name, _), (depth, _) in zip(images, depths) if depth)
        raise ImageError(f"{name}: a 16-bit image needs format {container.DEPTH_VERSION} or later (the default), not "
                         f"{format_version}")
    newest = (None, container.METADATA_VERSION, container.DEPTH_VERSION, container.SMALL_VERSION,
              container.PHOTO_VERSION, container.REFINED_VERSION, container.ACROSS_VERSION, container.BITS_VERSION)
    keep_metadata = metadata and format_version in newest
    keep_bits = format_version in (None, container.BITS_VERSION)  # format 22 and older: a grey image's 8 bits
    # Format 19's small-image sections, format 20's photograph sections, format 21's refined ones and format 22's
    # refined across channels only where no older format was asked for.
    allowed = {None: bitsback.SECTION_KINDS, container.BITS_VERSION: bitsback.SECTION_KINDS,
               container.ACROSS_VERSION: bitsback.SECTION_KINDS,
               container.REFINED_VERSION: bitsback.SECTION_KINDS[:4],
               container.PHOTO_VERSION: bitsback.SECTION_KINDS[:3],
               container.SMALL_VERSION: bitsback.SECTION_KINDS[:2]}.get(format_version, bitsback.SECTION_KINDS[:1])
    format_version = None if format_version in newest else format_version
    split = _split(images)  # once: `images` may be an iterator, and both codings read the same planes
    for item, (depth, levels) in zip(split, depths):  # the file's checksum covers a 16-bit image's depth too
        item.checksum = with_depth(item.checksum, depth, levels)
    # Every image's pixels, whichever path takes it (the classical ones too): the decoder holds them all.
    check_file_pixels(sum(item.planes.width * item.planes.height for item in split), ImageError)
    found = [image_chunks(item.image) for item in split]  # (kept, left out) of each
    bits = [grey_bits(item.image) for item in split]
    for item, (kept, _) in zip(split, found):
        if keep_metadata and len(kept) > MAX_CHUNKS:
            raise ImageError(f"{item.name}: {len(kept)} metadata chunks, more than a file keeps of an image "
                             f"({MAX_CHUNKS}): keep no metadata (--strip; compress_images(metadata=False))")
    result = _encode_split(split, started, model, tile=tile, max_batch=max_batch, device=device, progress=progress,
                           predictor=predictor, classical=classical, format_version=format_version, samples=samples,
                           fast=fast, allowed=allowed)
    return _finished(result, found, keep_metadata, depths, metadata_asked=metadata, grey_bits=bits,
                     keep_bits=keep_bits)


def _parts(images) -> tuple[list[tuple[str, object]], list[tuple[str, tuple]]]:
    """The images as 8-bit PIL images, each 16-bit one (a DeepImage) as its parts (vaezip/images.py deep_parts), and
    each one's depth and levels (("", ()) for an 8-bit image, codec/depth.py's LOW for a low part)."""
    parts, depths = [], []
    # a dict's keys, a path's characters: "too many values to unpack"; an image itself: "not iterable"
    if isinstance(images, (dict, str, bytes)) or not hasattr(images, "__iter__"):
        raise ImageError(f"compress_images takes a sequence of (name, image) pairs, not a {type(images).__name__}")
    for pair in images:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ImageError(f"compress_images takes a sequence of (name, image) pairs, not one of "
                             f"{type(pair).__name__}")
        name, image = pair
        if not isinstance(name, str):  # the header holds names as UTF-8 text
            raise ImageError(f"an image's name must be a str, not {type(name).__name__}")
        if len(name) > MAX_NAME_CHARS:  # the header refused it after all the work
            raise ImageError(f"an image's name of {len(name)} characters (at most {MAX_NAME_CHARS})")
        try:
            image = as_image(image)  # an array as compress takes it
        except ImageError as error:
            raise ImageError(f"{name}: {error}") from None
        if not is_deep(image):
            parts.append((name, image))
            depths.append(("", ()))
            continue
        try:
            depth, levels, found = deep_parts(image)
        except ImageError as error:
            raise ImageError(f"{name}: {error}") from None
        parts += [(name, part) for part in found]
        depths += [(depth, levels)] + [(LOW, ())] * (len(found) - 1)
    return parts, depths


def _encode_split(split: list[_Image], started: float, model, **options) -> CompressResult:
    """encode_archive's file of `split` (_split's), without metadata."""
    format_version, classical, fast = options["format_version"], options["classical"], options["fast"]
    chosen, other_kind = _mixed_kinds(split) if model is None else (None, [])
    if other_kind and (not classical or format_version == 2):  # without classical codings: the error stands
        return _encode_images(split, started, model, **options)
    if not other_kind:
        # One kind: its model, not the first image's mode's where that is a palette image coding its indices.
        return _encode_images(split, started, model if chosen is None else chosen, **options)
    # Grey among colour images (or colour among grey): the model of the kind holding most of the pixels codes
    # those, and each image of the other kind goes by its smallest classical coding, which any reader of format 3
    # or later decodes without a model.
    own = [k for k in range(len(split)) if k not in set(other_kind)]
    coded = _encode_images([split[k] for k in own], started, chosen, **options)
    return _with_classical(coded, split, own, fast=fast, deflate=format_version is None
                           or format_version >= container.DEFLATED_VERSION, started=started)


def _encode_images(split: list[_Image], started: float, model, *, tile, max_batch, device, progress, predictor,
                   classical, format_version, samples, fast, allowed=bitsback.SECTION_KINDS) -> CompressResult:
    """encode_archive's coding of `split` (_split's), its time counted from `started`."""
    older = DEFAULT_CODING_FORMATS.get(format_version)
    format_version = None if format_version == container.SECTIONS_VERSION else format_version  # the newest
    deflate = format_version != container.LEAST_SQUARES_VERSION
    newest = older or bitsback.PREDICTIVE_STAGED
    sections = format_version is None  # format 16's sections where the predictor codes every tile
    format_version = None if older else format_version
    if fast or tile is not None or not (predictor and classical) or format_version is not None or samples != 1:
        return _encode_archive(split, started, model, tile=tile, max_batch=max_batch, device=device, progress=progress,
                               predictor=predictor, classical=classical, format_version=format_version,
                               samples=samples, fast=fast, deflate=deflate, newest=newest, sections=sections,
                               allowed=allowed)

    # The quick stream's progress is shown (on photographs it is the file, its sections' pricing most of the work)
    # until the full path's begins, where the model codes after all.
    full_path_reports = threading.Event()

    def quick_progress(done: int, total: int) -> None:
        if not full_path_reports.is_set():
            progress(done, total)

    def full_progress(done: int, total: int) -> None:
        full_path_reports.set()
        progress(done, total)

    def quick_stream(images: list[_Image] = split, shown=progress and quick_progress) -> CompressResult:
        return _encode_archive(images, time.perf_counter(), model, tile=None, max_batch=max_batch, device=device,
                               progress=shown, predictor=True, classical=False, format_version=None, samples=1,
                               fast=True, deflate=deflate, newest=newest, sections=sections, allowed=allowed)

    # The quick stream and the classical codings are made in threads of their own (the compiled coder and
    # Pillow's encoders release the GIL) while the model prices a sample of the tiles (the early exit: GATE_EVERY;
    # by numpy for a shipped model, else after torch loads); the pool waits for both whatever happens.
    # classic.reusing(): the mixed file's classical codings below are mostly made already by the screened ones.
    with classic.reusing(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="vaezip-quick") as worker:
        quick_later = worker.submit(quick_stream)
        classical_later = worker.submit(_screened_classical_codings, split, quick_later)
        gate = _price_sample(split, model, device, busy=lambda: not classical_later.done())
        quick_bits = None if gate is None else [report.payload_bits for report in quick_later.result().images]
        if gate is not None and not gate.rules_out(quick_bits):
            gate = gate.completed()  # a large image's second stage
        # The classical codings are waited for only where the sample rules the model out: else the full path
        # prices the model's tiles while they finish. Ruled out, the file is the smallest of the classical codings,
        # the quick stream, and (below, where they disagree) the quick stream beside some classical codings.
        if gate is not None and gate.rules_out(quick_bits):
            alternatives = classical_later.result()
            entries = {index: entry for index, (entry, _) in alternatives.items()}
            sizes = {index: tried for index, (_, tried) in alternatives.items()}
            result = _result(_write(split, None, entries, gate.loaded, False, deflate), split, None, entries, sizes,
                             gate.loaded, started, estimated={k: (bits, bits) for k, bits in gate.projected.items()})
            result = dataclasses.replace(result, images=tuple(
                dataclasses.replace(report, bound_sample=gate.counts[k]) if gate.partly(k) else report
                for k, report in enumerate(result.images)))
        else:
            result = _encode_archive(
                split, started, model if gate is None else gate.model, tile=tile, max_batch=max_batch,
                device=device, progress=progress and full_progress, predictor=predictor, classical=classical,
                format_version=format_version, samples=samples, fast=fast,
                alongside=lambda: lambda: [report.payload_bits for report in quick_later.result().images],
                predictor_kind=bitsback.PREDICTIVE_ADAPTIVE, gate=gate, classical_later=classical_later,
                deflate=deflate, newest=newest, sections=sections, allowed=allowed)
        quick = quick_later.result()
        kept = result if len(result.data) <= len(quick.data) else quick
        # Where some image's classical coding beats its share of the quick stream (a 16-bit image's noisy low bits,
        # a drawing among photographs), the quick stream of the others beside those codings may beat both files.
        codings = classical_later.result()
        classically = [k for k, (entry, _) in codings.items() if 8 * len(entry.data) < quick.images[k].payload_bits]
        if classically and len(classically) < len(split):
            own = [k for k in range(len(split)) if k not in set(classically)]
            mixed = _with_classical(quick_stream([split[k] for k in own], None), split, own, fast=False,
                                    deflate=deflate, started=started)
            if len(mixed.data) < len(kept.data):
                kept = dataclasses.replace(mixed, images=tuple(dataclasses.replace(report, other_kind="")
                                                               for report in mixed.images))
    # Each image keeps the model's bound (the network ran) and its candidates, the quick stream's share joining them.
    reports = tuple(dataclasses.replace(
        report, bound_bits=model_report.bound_bits, bound_sample=model_report.bound_sample,
        candidate_bytes=tuple(sorted(({**dict(model_report.candidate_bytes),
                                       "predictor": math.ceil(quick_report.payload_bits / 8)}).items(),
                                     key=lambda pair: pair[1])))
        for report, model_report, quick_report in zip(kept.images, result.images, quick.images))
    return dataclasses.replace(kept, images=reports, seconds=time.perf_counter() - started)


def _mixed_kinds(split: list[_Image]) -> tuple[str | None, list[int]]:
    """The shipped default model of the kind (grey or colour model planes) whose images hold the most pixels
    (colour on a tie), and the indices of the other kind's images; (None, []) where no image has a model plane."""
    pixels: dict[int, int] = {}
    first_mode: dict[int, str] = {}
    for item in split:
        if item.planes.model_plane is not None:
            channels = item.planes.model_channels
            pixels[channels] = pixels.get(channels, 0) + item.planes.width * item.planes.height
            first_mode.setdefault(channels, item.planes.mode)
    if not pixels:
        return None, []
    most = max(pixels, key=lambda channels: (pixels[channels], channels))
    chosen = default_model(first_mode[most])
    if len(pixels) > 1:
        try:
            if identify_model(chosen).config.image_channels != most:  # no shipped model of that kind
                return None, []
        except CheckpointError:  # a broken manifest entry: the coding path says what is wrong
            return None, []
    # One kind (a palette image that codes its indices, which any model's file holds, may come first): its model.
    return chosen, [k for k, item in enumerate(split)
                    if item.planes.model_plane is not None and item.planes.model_channels != most]


def _finished(result: CompressResult, found: list[tuple], keep: bool,
              depths: list[tuple[str, tuple]], metadata_asked: bool, grey_bits: list[int],
              keep_bits: bool = True) -> CompressResult:
    """`result` (of the images with each 16-bit one as its parts: `depths`, _parts's) with each image's metadata
    chunks (`found`: image_chunks's (kept, left out) of each) where `keep`, each image's depth, and each grey one's
    bit depth below 8 (`grey_bits`, 0 where it has none) where `keep_bits`: a format-17 file where some image keeps
    metadata, 18 where some image has 16 bits, 23 where some grey image keeps a bit depth below 8 (its payload as it
    was). Its reports say what each image's file held that the file keeps and what it does not (where
    `metadata_asked`, whether or not the format keeps it; else only the bytes after the image in its file, which are
    not metadata; a bit depth below 8 either way), one a 16-bit image with its parts' figures added up."""
    chunks = [kept if keep else () for kept, _ in found]  # a low part's are ()
    unkept_bits = [0 if keep_bits else bits for bits in grey_bits]  # an older format asked for: said, not kept
    grey_bits = [bits if keep_bits else 0 for bits in grey_bits]
    deep = any(depth for depth, _ in depths)
    reports: list[ImageReport] = []
    for report, (kept, unkept), stored, (depth, _), bits, unkept_depth in zip(result.images, found, chunks, depths,
                                                                           grey_bits, unkept_bits):
        if depth == LOW:
            high = reports[-1]
            reports[-1] = dataclasses.replace(
                high, bound_bits=high.bound_bits + report.bound_bits, payload_bits=high.payload_bits
                + report.payload_bits, without_bitsback_excess_bits=high.without_bitsback_excess_bits
                + report.without_bitsback_excess_bits, tiles=high.tiles + report.tiles,
                tiles_without_bitsback=high.tiles_without_bitsback + report.tiles_without_bitsback,
                low_coding=report.coding)
            continue
        left_out = () if stored else tuple(dict.fromkeys(chunk.kind.decode() for chunk in kept))
        reports.append(dataclasses.replace(report, metadata=stored, metadata_left_out=left_out,
                                           metadata_unkept=unkept if metadata_asked
                                           else tuple(filter(not_metadata, unkept)),
                                           depth=depth, grey_bits=bits, grey_bits_left_out=unkept_depth))
    result = dataclasses.replace(result, images=tuple(reports))
    if not any(chunks) and not deep and not any(grey_bits):
        return result
    version, header, words = container.read_versioned(result.data)
    if version not in container.BINARY_VERSIONS:  # a float model's format 1 (format 2 is only asked for: no metadata)
        what = "16-bit images" if deep else "metadata: keep none (--strip; compress_images(metadata=False))"
        raise ImageError(f"format {version} holds no {what}")
    entries = tuple(dataclasses.replace(entry, metadata=tuple(own), depth=depth, levels=levels,
                                        info=entry.info | {"bits": bits} if bits else entry.info)
                    for entry, own, (depth, levels), bits in zip(header.images, chunks, depths, grey_bits))
    # Format 19's and 20's layout holds metadata and depths too: a file with their sections stays format 19 or 20.
    written = max(version, container.DEPTH_VERSION if deep else container.METADATA_VERSION,
                  container.BITS_VERSION if any(grey_bits) else 0)
    data = container.write(dataclasses.replace(header, images=entries), words, written)
    return dataclasses.replace(result, data=data, header_bytes=_header_bytes(data, written), format_version=written)


def _with_classical(coded: CompressResult, split: list[_Image], own: list[int], *, fast: bool, deflate: bool,
                    started: float) -> CompressResult:
    """`coded` (the file of the images `own` of `split`) with every other image of `split` in its place by its
    smallest classical coding: the same payload, a header with every image and the checksum over them all."""
    version, header, words = container.read_versioned(coded.data)
    if version not in container.BINARY_VERSIONS:  # a float model's format 1 holds model-coded images only
        raise ImageError(f"format {version} cannot hold images coded classically beside the model's")
    others = [k for k in range(len(split)) if k not in set(own)]
    codings = dict(zip(others, _classical_codings([split[k] for k in others], fast).values()))
    entries = dict(zip(own, header.images)) | {k: entry for k, (entry, _) in codings.items()}
    merged = dataclasses.replace(header, images=tuple(entries[k] for k in range(len(split))),
                                 pixels_sha256=combined_checksum(item.checksum for item in split))
    data = container.write(merged, words, version, deflate=deflate)
    written = int.from_bytes(data[8:10], "little")  # format 11 where the longer header now deflates
    reports = dict(zip(own, coded.images))
    for k, (entry, sizes) in codings.items():
        planes = split[k].planes
        reports[k] = ImageReport(split[k].name, planes.mode, planes.width, planes.height, planes.subpixels,
                                 math.nan, 8 * len(entry.data), 0.0, 0, 0, entry.coding,
                                 tuple(sorted(sizes.items(), key=lambda pair: pair[1])),
                                 other_kind="grey" if planes.model_channels == 1
                                 else "palette" if planes.mode == "P" else "colour")
    return dataclasses.replace(coded, data=data, images=tuple(reports[k] for k in range(len(split))),
                               header_bytes=_header_bytes(data, written), seconds=time.perf_counter() - started,
                               format_version=written)


def _split(images) -> list[_Image]:
    """Each (name, image) as its planes and pixel checksum; ImageError naming the image that cannot be coded."""
    split = []
    for name, image in images:
        try:
            image = codable(image)  # a bilevel image as grey
            planes, checksum = split_image(image), pixel_checksum(image)
            # A palette or transparency the planes would not give back is found here, not by the decoder: an API
            # caller's image may hold types Pillow never reads from a file. Plain pixels need no second look.
            if (image.mode == "P" or "transparency" in image.info) and pixel_checksum(join_planes(planes)) != checksum:
                raise ImageError("its palette or transparency would not come back exactly")
            split.append(_Image(name, image, planes, checksum))
        except ImageError as error:
            raise ImageError(f"{name}: {error}") from None
    if not split:
        raise ImageError("no images to compress")
    return split


def _encode_archive(split: list[_Image], started: float, model, *, tile, max_batch, device, progress, predictor,
                    classical, format_version, samples, fast, alongside=None,
                    predictor_kind: str | None = None, gate: _Gate | None = None,
                    classical_later: Future | None = None, deflate: bool = True,
                    newest: str = bitsback.PREDICTIVE_STAGED, sections: bool = True,
                    allowed: tuple[str, ...] = bitsback.SECTION_KINDS) -> CompressResult:
    """encode_archive's coding of `split` (_split's) with these options, its time counted from `started`;
    `alongside()` is called once the classical codings run beside the coder, before the model's tiles are priced
    (not at all where no classical coding runs); what it returns gives, called after the pricing, each image's
    payload bits in another file the caller will choose from (encode_archive's quick stream); where the model's
    estimates say that file will be the smaller, the model codes nothing.
    `predictor_kind`: the predictor kind of the model stream's tiles coded without the model, instead of
    format_version's (`newest` where None: PREDICTIVE_STAGED, or format 14's PREDICTIVE_WIDE, 13's
    PREDICTIVE_PARITY, 12's PREDICTIVE_CASCADE, or format 10's and 11's PREDICTIVE_LEAST_SQUARES).
    `gate`: the early exit's model and priced sample, reused; `classical_later`: the classical codings
    (encode_archive's _screened_classical_codings), made already or being made. `deflate`: format 11's deflated
    header where it pays and no older format was asked for (formats 12 to 16's are always deflated). `sections`:
    where the staged cascade codes every tile of the model's stream for less than the model would, format 16's
    sections (bitsback.price_sections) instead of format 15's one chain; `allowed`: the section kinds the format asked
    for may hold (bitsback.sections_kinds: format 19's small-image profile for small images where it codes them for
    less, format 20's photograph profile for photographs; format 16's alone for an older format)."""
    if format_version not in (None, *container.OLDER_FORMATS):
        raise ValueError(f"format_version must be one of {', '.join(map(str, container.OLDER_FORMATS))}, "
                         f"not {format_version}")
    legacy = format_version == 2  # the JSON header of formats 1 and 2, every image through the model
    deflate = deflate and format_version is None  # format 11's deflated header where it pays
    if fast and (legacy or samples != 1 or not predictor):
        raise ValueError("fast coding runs no network: not with format 2, importance sampling or predictor=False")
    if samples != 1:
        if format_version is not None:
            raise ValueError(f"importance-weighted coding (samples > 1) writes format 4 or later, not {format_version}")
        tilekinds.importance_kind(samples)  # one of the sample counts a kind exists for (CodingError if not)
    classical = classical and not legacy
    chosen_by_mode = model is None
    if model is None:
        model = default_model(split[0].planes.mode)
    # A shipped or installed model by its identity (no torch, no weights read): loaded where the network runs
    # (coder_model below); anything else (a weights file, a run folder) loaded here.
    loaded = identify_model(model)
    channels, stride = loaded.config.image_channels, loaded.config.stride
    for item in split:  # the model is the default path: an image it cannot code is an error, as before format 3
        if item.planes.model_plane is None or item.planes.model_channels == channels:
            continue
        article = "a" if item.planes.mode == "P" else "an"  # an L, an RGB
        if chosen_by_mode:  # the user named no model (or --fast runs none): the first image's kind decided
            kind = "grey" if channels == 1 else "colour"
            raise ImageError(f"{item.name}: {article} {item.planes.mode} image in an archive of {kind} images "
                             f"({split[0].name} is {split[0].planes.mode}): without classical codings (--format 2) "
                             f"one archive holds grey or colour images, not both; compress them into two archives")
        raise ImageError(f"{item.name}: {article} {item.planes.mode} image needs a {item.planes.model_channels}-"
                         f"channel model, but {loaded.name} codes {channels}-channel images (mixed grey and colour "
                         f"need separate files, or no model named: the other kind then goes classically)")
    tile = effective_tile(FAST_TILE if tile is None and fast else tile, stride)
    max_batch = max(1, min(max_batch, MAX_BATCH_PIXELS // (tile * tile)))
    everyone = list(range(len(split)))
    tiles_needed = sum(count_tiles(item.planes.height, item.planes.width, tile) for item in split
                       if item.planes.model_plane is not None)
    if tiles_needed > MAX_TILES and not classical:
        raise ImageError(f"{tiles_needed} tiles, more than {MAX_TILES} in one file: use a larger --tile")
    if not fast and device not in ("auto", "cpu"):
        _resolve_device(device)  # a device asked for that this machine lacks is refused whatever runs
    made = [gate.coder_model] if gate is not None and gate.coder_model is not None else []

    def coder_model():
        """The integer-exact coder model (None for fast: no network), made where the network first runs: torch
        imported and the weights loaded only then. An archive of thumbnails that the early exit lets through but
        whose quick stream the full path then keeps (quick_file_wins) needs neither: ~2.5 s of its compress."""
        if fast:
            return None
        if not made:
            from vaezip.coding import TorchLatentModel

            full = loaded if isinstance(loaded, LoadedModel) else load_model(loaded.name)
            if full.sha256 != loaded.sha256:
                raise CheckpointError(f"{loaded.name}: its weights changed while compressing")
            made.append(TorchLatentModel(full.model, _resolve_device(device)))
        return made[0]

    # The coder's inference: integer-exact (TorchLatentModel's default; the early exit's coder model says so too).
    integer = fast or not made or made[0].integer
    # Format 15's predictor tiles (the blend of predictors and local least squares in raster order, weighed by their
    # errors around and two away, with fitted residual tables, its contexts adapting over the stream in three stages,
    # the second reading each value's parity, the third the signed residuals next to it), format 14's, 13's, 12's or
    # 10's where `newest` says so, or
    # the `predictor_kind` asked for; where an older format was asked for, format 9's (without least squares),
    # format 8's (without adapting), format 6 and 7's (the blend with Laplace residuals), format 5's (Laplace
    # residuals), else Gaussian ones (formats 1 to 4; the model's files are format 1 without integer inference).
    newest = predictor_kind or newest
    predictor_kind = bitsback.PREDICTIVE_NEIGHBOURS
    if integer:
        predictor_kind = {
            None: newest, container.ADAPTIVE_VERSION: bitsback.PREDICTIVE_ADAPTIVE,
            container.FITTED_VERSION: bitsback.PREDICTIVE_FITTED,
            container.ORDER_VERSION: bitsback.PREDICTIVE_BLEND, container.BLEND_VERSION: bitsback.PREDICTIVE_BLEND,
            container.LAPLACE_VERSION: bitsback.PREDICTIVE_LAPLACE,
        }.get(format_version, predictor_kind)
    obstacle = importance_coding_obstacle(loaded.config) if samples != 1 else None
    if obstacle:
        raise ImageError(f"--samples {samples}: importance-weighted coding cannot code {loaded.name}: {obstacle}")
    tiles_of = {k: split_tiles(item.planes.model_plane, tile, stride) for k, item in enumerate(split)
                if item.planes.model_plane is not None and tiles_needed <= MAX_TILES}
    estimates_of = priced_of = None
    if fast:
        # No network runs: the model is never the cheaper path, so every tile goes to the predictor (or raw
        # bytes), priced exactly below; no estimate, no model bound.
        estimates_of = {k: [math.inf] * len(cut) for k, cut in tiles_of.items()}
    elif predictor or classical:
        # The float network's estimate of each tile's cost (fast), over every tile at once whatever is coded
        # later: the predictor's choice of tiles depends on it, and one image always gives the same bytes.
        # The early exit's sample (encode_archive) is priced already: only the other tiles are.
        known = gate.sampled if gate is not None else {}
        wanted = [(k, t) for k in everyone for t in range(len(tiles_of.get(k, ()))) if t not in known.get(k, {})]
        priced_now = {}
        if wanted:
            from vaezip.coding import deterministic_kernels

            coder = coder_model()
            with deterministic_kernels(pin_threads=not coder.integer):
                priced_now = dict(zip(wanted, map(_usable, coder.tile_bounds([tiles_of[k][t] for k, t in wanted],
                                                                             estimate=True))))
        estimates_of = {k: [known[k][t] if t in known.get(k, {}) else priced_now[k, t] for t in range(len(cut))]
                        for k, cut in tiles_of.items()}
    alternatives_later = None
    if classical:
        # The classical codings run beside the pricing below, one thread's work (Pillow's encoders release the
        # GIL): kodim01 3.4 -> 2.7 s. Not beside the estimate, whose two-thread convolutions then wait for the
        # core the encoder takes (no faster at all); the default's (`classical_later`) are begun by its caller.
        alternatives_later = classical_later
        if alternatives_later is None:
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaezip-classical")
            alternatives_later = worker.submit(_classical_codings, split, fast)
            worker.shutdown(wait=False)  # the task still runs; the thread ends after it
    quick_later = alongside() if alongside is not None and alternatives_later is not None else None
    if predictor and estimates_of is not None:
        # What each tile costs without the model, exactly as the coder prices it (its neighbours are in the
        # same image), once: the coder's choice of tiles and the estimate that decides whether it runs.
        # The predictor's pushes of the tiles it will code (cheaper than the estimate) are kept from it, within one
        # budget for all the images, and pushed again by the coder (kodim23 --fast: its coding 0.63 -> 0.09 s).
        # All the images' tiles at once, as the stream holds them: the adaptive predictor's statistics run over
        # them all, and its recordings hold where the stream codes these very tiles the same way.
        cuts = list(tiles_of.items())
        stream_tiles, limits = [t for _, cut in cuts for t in cut], [e for k, _ in cuts for e in estimates_of[k]]
        if sections and format_version is None and predictor_kind == bitsback.PREDICTIVE_STAGED:
            every = bitsback.price_stream(stream_tiles, predictor_kind, limits, progress, allowed)
        else:
            every = bitsback.price_without_model(stream_tiles, predictor_kind, limits)
        priced_of, start = {}, 0
        for k, cut in cuts:
            priced_of[k], start = every[start : start + len(cut)], start + len(cut)
    quick_bits = quick_later() if quick_later is not None else None

    def code(indices: list[int], on_batch=progress) -> _ModelCoding:
        return _encode_model(split, indices, coder_model(), tiles_of, estimates_of if predictor else None, tile,
                             max_batch, on_batch, legacy, predictor_kind, samples, priced_of,
                             model_last_order=format_version is None
                             or format_version >= container.ORDER_VERSION, allowed=allowed)

    if legacy or not classical:
        everything = code(everyone) if tiles_needed <= MAX_TILES else None
        data = _write(split, everything, {}, loaded, legacy, deflate)
        return _result(data, split, everything, {}, {}, loaded, started, tile=tile)

    # Classical codings of every image; then the files worth writing, the smallest of which is kept. The model
    # codes the images its estimate does not rule out (skip_ratio: the estimate's error shrinks with the tiles
    # it sums over).
    estimated = {k: _model_estimate(tiles_of[k], estimates_of[k], None if priced_of is None else priced_of[k])
                 for k in tiles_of}

    # The other file the caller chooses from (the quick stream) against this one: where the model's estimate of
    # every image is above that image's share of it, the model does not code while the classical codings finish;
    # and where this file would still be the larger (quick_file_wins), the model codes nothing.
    quick_wins_each = quick_bits is not None and all(
        k in estimated and estimated[k][0] > skip_ratio(len(tiles_of[k])) * quick_bits[k] for k in everyone)

    def ruled_out_by_quick(alternatives) -> bool:
        return quick_bits is not None and quick_file_wins(
            {k: estimated[k][0] for k in estimated}, {k: len(tiles_of[k]) for k in estimated},
            {k: 8 * len(entry.data) for k, (entry, _) in alternatives.items()}, quick_bits)

    def worth_the_model(alternatives) -> list[int]:
        if ruled_out_by_quick(alternatives):
            return []
        budget = {k: skip_ratio(len(tiles_of.get(k, ()))) * 8 * len(entry.data) for k, (entry, _) in alternatives.items()}
        return [k for k in everyone if tiles_needed <= MAX_TILES and estimated.get(k, (0.0,))[0] <= budget[k]]

    everything = None
    # what worth_the_model gives without a budget
    candidates = everyone if tiles_needed <= MAX_TILES and not quick_wins_each else []
    if SPECULATE and candidates and not alternatives_later.done():
        # While the classical codings finish (a photograph's take ~0.65 s of one core), the model codes every
        # image it could code, on the bet that none is ruled out; the bet is checked after each batch, and a
        # lost one abandons the coding (the same file either way: the images coded are those ruled in).
        # Meanwhile torch and the table kernel take one thread fewer: two threads on the one free core made
        # those batches' convolutions run at 20-30 GFLOP/s instead of 75 (the split of every step waits for
        # the share whose core the classical coding holds). The integer path computes the same integers on
        # any number of threads (the float path of format 1 pins its own count, and a GPU's batches take no CPU
        # thread: both left alone; with no network, fast, there is nothing to give back). The count is this
        # thread's own (process_settings.py: torch_threads).
        threads = contextlib.nullcontext()
        coder = coder_model()  # the model codes now, on the bet
        if coder is not None and coder.integer and coder.device.type == "cpu":
            from vaezip.process_settings import set_torch_threads, torch_threads

            threads = torch_threads(lambda host: max(1, host - 1))
        given_back = []

        def watching(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if alternatives_later.done():
                if host is not None and not given_back:  # watching runs in this thread: its count
                    given_back.append(True)
                    set_torch_threads(host)
                if worth_the_model(alternatives_later.result()) != candidates:
                    raise _LostBet

        with threads as host:
            try:
                everything = code(candidates, watching)
            except Exception:  # noqa: BLE001 - a lost bet, or a failure on an image that may be ruled out: the
                everything = None  # coding below raises again whatever concerns the images ruled in
    alternatives = alternatives_later.result()
    classical_entries = {index: entry for index, (entry, _) in alternatives.items()}
    sizes = {index: tried for index, (_, tried) in alternatives.items()}
    included = worth_the_model(alternatives)
    if everything is None or included != candidates:
        everything = code(included) if included else None
    files = [(_write(split, None, classical_entries, loaded, False, deflate), None)]
    if everything is not None:
        # A float model's files (format 1) hold model-coded images only: it codes all or none.
        mixable = everything.version in container.BINARY_VERSIONS
        if mixable or len(included) == len(split):
            files.append((_write(split, everything, classical_entries, loaded, False, deflate), everything))
        cheaper = [k for k in included if everything.payload_bytes(k) < len(classical_entries[k].data)]
        if cheaper and len(cheaper) < len(included) and mixable:
            # Bits-back chains the images: without the others, those the model won code a little differently.
            some = code(cheaper)
            files.append((_write(split, some, classical_entries, loaded, False, deflate), some))
    data, chosen = min(files, key=lambda file: len(file[0]))
    return _result(data, split, chosen, classical_entries, sizes, loaded, started, everything, estimated, tile)


def _classical_codings(split: list[_Image], fast: bool) -> dict[int, tuple[ImageEntry, dict[str, int]]]:
    """Each image's smallest classical coding (smallest_entry). With `fast` (no network: they were most of the
    work) PNG and WebP are made in two threads at once, WebP at the quicker FAST_WEBP_QUALITY (kodim03: PNG
    0.5 s, WebP 2.8 s -> 0.3 s of one core). Fresh workers per call: nothing of them outlives it or a fork."""
    coders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vaezip-classical") if fast else None
    try:
        return {index: smallest_entry(item.name, item.planes, item.image, coders, fast)
                for index, item in enumerate(split)}
    finally:
        if coders is not None:
            coders.shutdown(wait=False)


# The default compress makes an image's classical codings at their best (WebP at quality 100: 0.5-2.8 s of a core
# for a Kodak photograph) only where its quick ones (--fast's: PNG, WebP at FAST_WEBP_QUALITY) come within
# CLASSICAL_SCREEN times its share of the quick stream; elsewhere no classical coding can be smaller than that
# share, WebP's best being within 3.5 % of its quick one on charts and 0.4 % on Kodak (codec/classic.py). On
# Kodak 21 of the 24 photographs are spared it, and so is a 16-bit photograph's top byte where its low byte, noise,
# is not (2.3 s of a 6-Mpixel grey one's). (Where the full path runs after all, an image's classical coding also
# competes with the model's stream there, which may take the quick WebP a little above its best.)
CLASSICAL_SCREEN = 1.05


def _screened_classical_codings(split: list[_Image], quick_later: Future) -> dict[int, tuple[ImageEntry, dict]]:
    """The default compress's classical codings (_classical_codings): the quick ones, and for each image whose
    quick ones come within CLASSICAL_SCREEN of its share of the quick stream (`quick_later`'s) the smaller of those
    and WebP's best (never larger than the best ones alone)."""
    quick_ones = _classical_codings(split, True)
    quick_bits = [report.payload_bits for report in quick_later.result().images]
    best = {}
    for k, item in enumerate(split):  # PNG has no quicker form: only WebP is made again, at its best
        entry, sizes = quick_ones[k]
        if 8 * len(entry.data) > CLASSICAL_SCREEN * quick_bits[k]:
            best[k] = quick_ones[k]
            continue
        webp, webp_sizes = smallest_entry(item.name, item.planes, item.image, codings=(classic.RAW, classic.WEBP))
        best[k] = (webp if len(webp.data) < len(entry.data) else entry,
                   {coding: min(size, sizes.get(coding, size)) for coding, size in webp_sizes.items()} | {
                       coding: size for coding, size in sizes.items() if coding not in webp_sizes})
    return best


@dataclass
class _Gate:
    """The default compress's early exit (encode_archive): the model, loaded once, and its float network's
    estimate of a sample of each image's tiles, reused by the full path where the exit is not taken. A large
    image's sample is priced in two stages (GATE_FIRST): `rest` prices the second's tiles where the first's do
    not rule the model out."""

    loaded: LoadedModel | ModelIdentity  # a shipped model's identity where numpy priced the sample (no torch)
    coder_model: object | None  # vaezip.coding.TorchLatentModel; None where numpy priced the sample
    sampled: dict[int, dict[int, float]]  # image index -> {tile index (raster): its estimate, bits}
    valid: dict[int, dict[int, int]]  # image index -> {tile index: its valid pixels}
    pixels: dict[int, int]  # image index -> its pixels
    counts: dict[int, tuple[int, int]]  # image index -> (tiles priced, tiles)
    rest: dict[int, dict[int, object]] = dataclasses.field(default_factory=dict)  # image -> {tile index: Tile}
    price: object = None  # the pricing of a list of Tiles, bits each (the same network as the first stage's)

    @property
    def model(self) -> LoadedModel | str:
        """The model for the full path: loaded, or the shipped model's name to load (with torch) there."""
        return self.loaded if isinstance(self.loaded, LoadedModel) else self.loaded.name

    @property
    def projected(self) -> dict[int, float]:
        """Image index -> the sample's bits per pixel times the image's: the model alone."""
        return {k: gate_projection(self.sampled[k], self.valid[k], self.pixels[k]) for k in self.sampled}

    def rules_out(self, quick_bits: list[float]) -> bool:
        """Whether the model path is not worth pricing in full: each image the model can code costs it, by the
        sample, more than GATE_RATIO times its share of the quick stream (GATE_FIRST_RATIO where only the first
        stage's tiles are priced; the model codes no image that it cannot: no model plane, a file of more than
        MAX_TILES tiles)."""
        projected = self.projected
        return all(projected.get(k, math.inf) > (GATE_FIRST_RATIO if k in self.rest else GATE_RATIO) * bits
                   for k, bits in enumerate(quick_bits))

    def completed(self) -> _Gate:
        """The gate with the second stage's tiles priced too (itself where there are none)."""
        if not self.rest:
            return self
        wanted = [(k, t) for k, tiles in self.rest.items() for t in tiles]
        estimates = self.price([self.rest[k][t] for k, t in wanted])
        sampled = {k: dict(bits) for k, bits in self.sampled.items()}
        valid = {k: dict(pixels) for k, pixels in self.valid.items()}
        for (k, t), bits in zip(wanted, estimates):
            one = self.rest[k][t]
            sampled[k][t], valid[k][t] = _usable(bits), one.valid[0] * one.valid[1]
        counts = {k: (len(sampled[k]), total) for k, (_, total) in self.counts.items()}
        return dataclasses.replace(self, sampled=sampled, valid=valid, counts=counts, rest={})

    def partly(self, k: int) -> bool:
        """Whether image k's bound is projected from some of its tiles, not summed over all of them."""
        return k in self.counts and self.counts[k][0] < self.counts[k][1]


def _price_sample(split: list[_Image], model, device: str,
                  busy: Callable[[], bool] = lambda: True) -> _Gate | None:
    """The early exit's model and priced sample (gate_sample) of every image it could code; None where the model
    cannot code some image (the full path says why). On the CPU a network numpy computes is priced by numpy
    (vaezip/estimate.py): a model named by a manifest from its file, without importing torch (which the full path
    then imports where the exit is not taken), one loaded already from the weights it holds, the same figures
    either way, on one BLAS thread while `busy()` (the quick stream and the classical codings are being made beside
    it), then on as many as the machine has. A network numpy does not compute, or CUDA, is priced by torch's float
    network, as the full path prices the other tiles."""
    if model is None:
        model = default_model(split[0].planes.mode)
    try:
        loaded = model if isinstance(model, LoadedModel) else identify_model(model)  # a shipped name: no torch
    except CheckpointError:  # a manifest entry without a usable config: loading says what is wrong, or loads it
        loaded = load_model(model)
    estimator = None
    if device in ("auto", "cpu"):
        from vaezip.estimate import NumpyEstimator, unsupported

        # A model loaded already (the API's, bench's) is priced by numpy too, from the weights it holds: the same
        # figures as by its name or file
        if unsupported(loaded.config) is None:
            estimator = NumpyEstimator.from_file(loaded.source, loaded.sha256, loaded.config) \
                if isinstance(loaded, ModelIdentity) else NumpyEstimator.from_model(loaded.model)
    if estimator is None and isinstance(loaded, ModelIdentity):
        loaded = load_model(loaded.name)
    channels, stride = loaded.config.image_channels, loaded.config.stride
    if any(item.planes.model_plane is not None and item.planes.model_channels != channels for item in split):
        return None
    tile = effective_tile(None, stride)
    planes_of = {k: item.planes for k, item in enumerate(split) if item.planes.model_plane is not None}
    if sum(count_tiles(p.height, p.width, tile) for p in planes_of.values()) > MAX_TILES:
        planes_of = {}  # the full path codes no image by the model either
    chosen, tiles, rest = [], [], {}
    for k, planes in planes_of.items():
        cut = split_tiles(planes.model_plane, tile, stride)
        first, second = gate_stages(planes.height, planes.width, tile)
        for t in first:
            chosen.append((k, t))
            tiles.append(cut[t])
        if second:
            rest[k] = {t: cut[t] for t in second}
    coder_model = None  # made by the full path where numpy prices the sample
    if estimator is not None:
        # One BLAS thread while the quick stream and the classical codings hold the machine's cores (the torch form
        # below takes two threads fewer than the machine's, for the same reason), all of them once those are made: the
        # same figures on any count. A large image's sample outlasts them (leaves_iso_200.png, 6 Mpixel grey, 2-core
        # EPYC: 740 tiles, the compress 9.1-9.3 -> 7.6-8.2 s; 496 Imagenette thumbnails 8.2-9.3 -> 7.4 s). The second
        # stage's tiles are drawn their posterior samples from a seed of their own: its estimates do not depend on what
        # else the first priced.
        def threads() -> int:  # the cores asked for once not busy: a limit above the host's own leaves it alone
            return 1 if busy() else bitsback.section_workers()

        estimates = estimator.tile_bounds(tiles, threads=threads)

        def price(tiles: list) -> list[float]:
            return estimator.tile_bounds(tiles, seed=1, threads=threads)
    else:
        estimates, coder_model = _torch_estimates(tiles, loaded, device)

        def price(tiles: list) -> list[float]:
            return _torch_estimates(tiles, loaded, device, coder_model)[0]
    sampled: dict[int, dict[int, float]] = {k: {} for k in planes_of}
    valid: dict[int, dict[int, int]] = {k: {} for k in planes_of}
    for (k, t), one, bits in zip(chosen, tiles, estimates):
        sampled[k][t], valid[k][t] = _usable(bits), one.valid[0] * one.valid[1]
    counts = {k: (len(sampled[k]), count_tiles(p.height, p.width, tile)) for k, p in planes_of.items()}
    pixels = {k: p.height * p.width for k, p in planes_of.items()}
    return _Gate(loaded, coder_model, sampled, valid, pixels, counts, rest, price)


def _usable(bits: float) -> float:
    """A tile's estimate as the choices take it: NaN (weights whose activations overflow: a model that cannot
    code) as infinite, the model never the cheaper."""
    return bits if not math.isnan(bits) else math.inf


def _torch_estimates(tiles: list, loaded: LoadedModel, device: str,
                     coder_model=None) -> tuple[list[float], object]:
    """torch's float estimate of `tiles` (the early exit's sample), and the coder model that made it (made here
    where `coder_model` is None)."""
    from vaezip.coding import TorchLatentModel, deterministic_kernels
    from vaezip.process_settings import torch_threads

    if coder_model is None:
        coder_model = TorchLatentModel(loaded.model, _resolve_device(device))  # integer-exact
    # Two torch threads fewer than the machine's: the quick stream and the classical codings hold two cores
    # meanwhile, and threads that wait on each other's share run slower than fewer (2 cores, kodim01: 1.5 s for
    # its 48 tiles on two threads, 0.2 s alone; _encode_archive's bet).
    threads = torch_threads(lambda host: max(1, host - 2)) if coder_model.device.type == "cpu" else \
        contextlib.nullcontext()
    with threads, deterministic_kernels(pin_threads=not coder_model.integer):
        return (coder_model.tile_bounds(tiles, estimate=True) if tiles else []), coder_model


def gate_projection(bits: dict[int, float], pixels: dict[int, int], image_pixels: int) -> float:
    """The model's cost of a whole image projected from its sampled tiles' (tile -> bits, tile -> valid pixels):
    their bits per pixel times the image's pixels (an edge tile holds fewer pixels, and costs less)."""
    return sum(bits.values()) * image_pixels / sum(pixels.values())


def gate_tiles(height: int, width: int, tile: int) -> list[int]:
    """The tiles the early exit prices of a height x width image: gate_sample's one in GATE_EVERY (in more, at
    most about GATE_MOST tiles, in an image of more than GATE_EVERY * GATE_MOST), or every tile of an image of
    fewer than GATE_WHOLE, where one tile would stand for too much of it."""
    return gate_sample(height, width, tile, _gate_every(height, width, tile))


def _gate_every(height: int, width: int, tile: int) -> int:
    """gate_tiles's lattice step: one in GATE_EVERY (or more, about GATE_MOST tiles), 1 below GATE_WHOLE tiles."""
    count = count_tiles(height, width, tile)
    every = 1 if count < GATE_WHOLE else max(GATE_EVERY, -(-count // GATE_MOST))
    return every + (every % 3 == 0)  # a multiple of 3 would skip columns


def gate_stages(height: int, width: int, tile: int) -> tuple[list[int], list[int]]:
    """gate_tiles's sample of a height x width image in the two stages of the early exit: the tiles of its
    sub-lattice of one in GATE_FIRST of them, where that holds GATE_FIRST_LEAST or more, and the others (the
    second stage's, priced only where the first does not rule the model out); else all of them and none."""
    every = _gate_every(height, width, tile)
    sample = gate_sample(height, width, tile, every)
    # every * GATE_FIRST is no multiple of 3 either (GATE_FIRST is none), and a multiple of every: a sub-lattice
    first = set(gate_sample(height, width, tile, every * GATE_FIRST)) if every > 1 else set()
    if len(first) < GATE_FIRST_LEAST:
        return sample, []
    return [t for t in sample if t in first], [t for t in sample if t not in first]


# Whether compress may code with the model while the classical codings finish (tests compare both ways).
SPECULATE = True


class _LostBet(Exception):
    """The classical codings ruled out an image that the model was coding on the bet that none would be."""


# The model path is not run for an image whose estimated cost is more than skip_ratio(its tiles) times its
# classical coding's (a 640x400 screenshot: 26 times, and 270 s of a CPU's time for nothing). The estimate
# prices each tile as the coder will choose it (the model's one-sample bound or the exact cost without the
# model). Over Kodak's 384-tile images with photo2 the real model files came within -0.14 % and +0.09 % of it
# in format 6 (-0.02 % and +0.21 % in format 5; `python scripts/skip_margin.py kodak`), and an image's sum
# moves by under 0.05 % between seeds, though one tile's one-sample bound moves by about 0.5 % (median) and up
# to 2 % (`python scripts/skip_margin.py kodak --noise 6`); a review measured small images' estimates up to
# 6.6 % above their share of an archive (MNIST). So the margin is SKIP_MARGIN, over twice the largest
# deviation on Kodak, plus SKIP_NOISE / sqrt(tiles): 0.9 % on a Kodak image (the model is spared on 9 of
# the 24, all of which it loses; at 1.8 % it ran on three of them for nothing), 7.5 % on a one-tile image.
# (Measured with float32 estimates; the bfloat16 ones of a CPU with AMX, model/estimator.py, sum about 0.06 %
# higher on kodim23: an eighth of the margin.)
SKIP_MARGIN = 0.005
SKIP_NOISE = 0.07


# The default compress's early exit: the model's estimate of a lattice sample of one tile in GATE_EVERY, projected
# over the image, against the quick stream's real bits (encode_archive). With photo2 the model alone is 6-25 %
# above the quick stream on Kodak's photographs, and the sample's projection within ~2 % of the sum over every
# tile; at GATE_RATIO the full pricing is skipped on all 24 of them, on 11 of the first 12 Wikimedia photographs
# and on gray8bit's first three (photo-gray2), none of them an image whose full estimate, less its margin, came
# below the quick stream (`python scripts/model_gate.py kodak`; docs/results/early-exit).
GATE_EVERY = 8
GATE_RATIO = 1.05
GATE_WHOLE = 16  # an image of fewer tiles is priced whole (a 128x128 image's 16: two of them in the sample)
# A larger photograph's sample is about GATE_MOST tiles: a 6144x4096 mosaic of Kodak's images (24,576 tiles;
# scripts/make_mosaic.py kodak 8 8) took 21.8 s to price one in 8 (3,072 tiles, 3.3336 bpsp projected), 7.3 s one
# in 25 (982 tiles, 3.3221) and 4.3 s one in 49 (502 tiles, 3.3833: the mosaic's period of 24 tile columns
# aliases such a lattice), beside the quick stream's ~30 s of two cores (`python scripts/model_gate.py FOLDER
# --most 100000 1024 512`). Kodak's and the Wikimedia set's images hold fewer than 8,192 tiles: one in 8.
GATE_MOST = 1024
# On a large photograph the sample is priced in two stages (gate_stages): first one tile in GATE_FIRST of it, where
# that is GATE_FIRST_LEAST tiles or more, the rest only where the first's projection is within GATE_FIRST_RATIO of
# the quick stream. On gray8bit's nine (3-12 Mpixel, photo-gray2) the first stage's projection came within -3.6 % and
# +0.7 % of the model alone over every tile (the whole sample's within -1.0 % and +0.9 %), and ruled the model out on
# five, none of them an image whose full estimate could have won, and on a 25-Mpixel mosaic of Kodak's (`python
# scripts/model_gate.py FOLDER --model photo-gray2 --every 8`; docs/results/early-exit/gray8bit.md, mosaic.md).
# cathedral.png's sample priced in 1.03 s instead of 3.65 s (`python scripts/model_gate.py FOLDER --model
# photo-gray2 --most 1024`, 2-core EPYC busy with a test run); `vaezip compress cathedral.png` 5.8 -> 3.8 s (quiet).
GATE_FIRST = 4
GATE_FIRST_LEAST = 64
GATE_FIRST_RATIO = 1.08


def gate_sample(height: int, width: int, tile: int, every: int) -> list[int]:
    """Raster indices of the tiles of `tile` pixels over a height x width image in the gate's sample: one in
    `every`, on a lattice that steps 3 columns a row (a straight column pattern would sample one image column
    of tiles only), so that every row and every column of tiles is sampled where there are enough of them."""
    rows, columns = -(-height // tile), -(-width // tile)
    return [row * columns + column for row in range(rows) for column in range(columns)
            if (column + 3 * row) % every == 0]


def skip_ratio(tiles: int) -> float:
    """How many times its classical coding an image's estimated model path may cost and still be run."""
    return 1.0 + SKIP_MARGIN + SKIP_NOISE / math.sqrt(max(1, tiles))


def quick_file_wins(estimates: dict[int, float], tiles: dict[int, int], classical_bits: dict[int, int],
                    quick_bits: list[float]) -> bool:
    """Whether the quick stream (`quick_bits`: each image's share of it) will be smaller than the model's file
    even where that file is as small as its estimate allows: each image the cheaper of the model path's estimate
    (`estimates`, bits, of the images it can code; `tiles`: how many tiles each sums over) less the margin and its
    classical coding (`classical_bits`, every image's). Not image by image: the quick stream holds no classical
    coding, and one image that goes classical can make the model's file the smaller. The margin is the whole
    file's, skip_ratio of all the tiles estimated: the estimate's noise shrinks over the file's sum as over an
    image's, and each 32x32 image's own 7.5 % had the model code Imagenette's 2,000 thumbnails (11 s of 28) into
    a stream whose estimate was 1.7 % above the quick one (its real file larger still)."""
    margin = skip_ratio(sum(tiles.values()))
    this_file = sum(min(estimates[k] / margin, bits) if k in estimates else bits for k, bits in classical_bits.items())
    return this_file > sum(quick_bits)


def _model_estimate(tiles, estimates: list[float],
                    priced: list[tuple[str, float]] | None = None) -> tuple[float, float]:
    """(about what the model path will cost, the model's estimated bound), in bits, of an image's tiles: each
    tile as the cheaper of the model's estimate and its exact cost without the model (`priced`:
    bitsback.price_without_model, what the coder chooses from). Without prices (a coder told to take no
    predictor tiles) raw bytes stand in for them: the figure then errs low, which only runs the model more.
    Side planes are not counted, for the same reason."""
    alone = [cost for _, cost in priced] if priced is not None else [tilekinds.raw_bits(one) for one in tiles]
    return sum(min(estimate, cost) for estimate, cost in zip(estimates, alone)), sum(estimates)


def _encode_model(split: list[_Image], indices: list[int], coder_model, tiles_of: dict[int, list],
                  estimates_of: dict[int, list[float]] | None, tile: int, max_batch: int, progress,
                  legacy: bool, predictor_kind: str, samples: int = 1,
                  priced_of: dict[int, list[tuple[str, float]]] | None = None,
                  model_last_order: bool = False,
                  allowed: tuple[str, ...] = bitsback.SECTION_KINDS) -> _ModelCoding:
    """The model path over split[k] for k in `indices`: their planes and tiles in one bits-back stack;
    `samples` > 1: importance-weighted bits-back (format 4 or later where a batch is coded so), batches of at most
    max(1, max_batch // samples) tiles, so that a batch's passes hold no more rows than plain bits-back's
    (but for a single tile). predictor_kind: that of the tiles coded without the model (one the file's format
    holds: PREDICTIVE_NEIGHBOURS for formats 1 and 2). model_last_order: the tiles the predictor takes first in
    the stream, then the model's in full batches (formats 7 on; bitsback.model_last), where any tile moves. `allowed`:
    the section kinds that sections priced again (over fewer images) may take (bitsback.sections_kinds)."""
    integer = coder_model is None or coder_model.integer  # None: no network runs (fast)
    version = (2 if legacy else container.VERSION) if integer else FLOAT_VERSION
    bitsback_kind = tilekinds.BITSBACK
    if samples != 1:
        bitsback_kind = tilekinds.importance_kind(samples)
        max_batch = max(1, max_batch // samples)

    stack = Stack()
    side_bits: dict[int, tuple[float, float]] = {}  # (payload bits, ideal bits) of each image's side planes
    entries = {}
    for k in indices:
        planes = split[k].planes
        before, ideal, histograms, data = stack.num_valid_bits(), 0.0, {}, b""
        for plane_name, plane in planes.side_planes.items():
            histogram = fit_histogram(plane)
            coded = None if legacy else _side_plane_coding(plane, histogram)
            if coded is None:
                push_plane(stack, plane, histogram)
                histograms[plane_name] = histogram.to_dict()
                ideal += histogram.ideal_bits()
            else:
                histograms[plane_name] = {"coding": coded[0], "length": len(coded[1])}
                data += coded[1]
                ideal += 8 * len(coded[1])
        info = {**planes.info, "planes": histograms}
        entries[k] = ImageEntry(split[k].name, planes.mode, planes.width, planes.height, planes.palette, info,
                                MODEL, data)
        side_bits[k] = (stack.num_valid_bits() - before + 8 * len(data), ideal)

    tiles, owner = [], []
    for k in indices:
        tiles += tiles_of.get(k, [])
        owner += [k] * len(tiles_of.get(k, []))
    # Which tiles the predictor takes: decided on the float network's estimate (fast); the decoder replays the
    # schedule, so the choice needs no exactness.
    estimates = None if estimates_of is None else [e for k in indices for e in estimates_of.get(k, [])]
    priced = None if priced_of is None else [p for k in indices for p in priced_of.get(k, [])]
    if priced and getattr(priced[0], "section", None) is not None and \
            [price.section for price in priced] != bitsback.section_spans(tiles):
        # Sections priced over more images than this stream holds: priced again over these (the same where the
        # sections did not cross the images left out), or the chain where they no longer hold.
        priced = bitsback.price_stream(tiles, predictor_kind, estimates, allowed=allowed)
    order = None
    if model_last_order and estimates is not None and version in container.BINARY_VERSIONS:
        if priced is None:
            priced = bitsback.price_without_model(tiles, predictor_kind)
        order = bitsback.model_last(bitsback.cheaper_without_model(tiles, estimates, predictor_kind, priced))
    if coder_model is None:
        kernels = contextlib.nullcontext()
    else:
        from vaezip.coding import deterministic_kernels

        kernels = deterministic_kernels(pin_threads=not integer)
    with kernels:
        schedule, stream_stats = bitsback.encode_tiles(
            stack, tiles, coder_model, GRID, max_batch, on_batch=progress, model_bits=estimates,
            bitsback_kind=bitsback_kind, predictor=predictor_kind, priced=priced, order=order,
        )
        if version in container.BINARY_VERSIONS:  # 3 unless the schedule (or the order) needs a later format
            version = container.binary_version((kind for kind, _ in schedule), ordered=order is not None)
        # The schedule's kind and the stats of every tile in raster order (the stream's may differ: order).
        stream_kinds = [tilekinds.BY_NAME[kind] for kind, n in schedule for _ in range(n)]
        stats, kinds = list(stream_stats), list(stream_kinds)
        for position, k in enumerate(order or ()):
            stats[k], kinds[k] = stream_stats[position], stream_kinds[position]
        # The bound is what the coder's model pays: a bits-back tile's negative ELBO (an importance-weighted
        # tile's K-sample bound) comes from the pass that coded it;
        # a tile coded by the model without bits-back (the first ones) gets the (integer) model's own. A tile
        # the model did not code (predictor, whitened bytes) reports the estimate that chose its kind (the
        # float network, within ~0.1 % of the integer model): pricing it again would cost the encoder a
        # fifth of its time (kodim23: 150 of 384 tiles) for a figure that no byte depends on.
        # coded without bits-back (s.direct) but through the model (uses_model): the direct tiles
        model_coded = [k for k, s in enumerate(stats) if s.direct and (estimates is None or kinds[k].uses_model)]
        model_bits = dict(zip(model_coded, coder_model.tile_bounds([tiles[k] for k in model_coded]))) \
            if model_coded else {}
    bounds = [
        s.ideal_bits if not s.direct else model_bits[k] if k in model_bits else estimates[k]
        for k, s in enumerate(stats)
    ]
    # Format 3 files are integer-exact: where and with what they were made changes no bit, and the header
    # stays small. The JSON formats keep recording it (format 1 decodes only on the kind of machine named).
    extra = {}
    if version not in container.BINARY_VERSIONS:
        import torch

        extra = {"device": coder_model.device.type, "torch": str(torch.__version__), "vaezip": __version__}
    # A section is one batch however many tiles it holds: the header's batch limit is at least its count.
    max_batch = max([max_batch] + [n for kind, n in schedule if kind in bitsback.SECTION_KINDS])
    settings = CoderSettings(GRID.step, GRID.bound, tile, max_batch, tuple(schedule), constriction_version(), extra,
                             () if order is None else bitsback.order_runs(order))

    mine_of: dict[int, list[int]] = {k: [] for k in indices}
    for t, k in enumerate(owner):
        mine_of[k].append(t)
    reports = {}
    for k in indices:
        mine = mine_of[k]
        payload = side_bits[k][0] + sum(stats[t].net_bits for t in mine)
        bound = side_bits[k][1] + sum(bounds[t] for t in mine)
        alone = [t for t in mine if stats[t].direct]
        excess = sum(stats[t].net_bits - bounds[t] for t in alone)
        reports[k] = (payload, bound, excess, len(mine), len(alone))
    return _ModelCoding(version, settings, stack.words(), entries, reports)


def _side_plane_coding(plane: np.ndarray, histogram) -> tuple[str, bytes] | None:
    """(coding, data) of a side plane (H, W) where a classical coding holds it in fewer bytes than the i.i.d.
    histogram (its pixels and its header entry), which ignores all spatial context: an alpha plane's edges and
    gradients cost a fraction of their entropy as PNG or WebP. None: the histogram."""
    if histogram.is_constant:  # free on the stack, its value in the header
        return None
    coding, data, _ = classic.smallest(plane)
    histogram_bytes = histogram.ideal_bits() / 8 + 3 * len(histogram.values)
    return (coding, data) if len(data) < histogram_bytes else None


def _write(split: list[_Image], coded: _ModelCoding | None, classical: dict[int, ImageEntry],
           loaded: LoadedModel | ModelIdentity, legacy: bool, deflate: bool = False) -> bytes:
    """The file: images the model coded from `coded`, the others from `classical`; format 11 where its deflated
    header makes it the smaller and `deflate` (no older format asked for)."""
    entries = tuple(coded.entries[k] if coded is not None and k in coded.entries else classical[k]
                    for k in range(len(split)))
    checksum = combined_checksum(item.checksum for item in split)
    if coded is None:
        return container.write(Header("", "", None, entries, checksum), np.zeros(0, np.uint32), deflate=deflate)
    header = Header(loaded.name, loaded.sha256[:16], coded.settings, entries, checksum)
    return container.write(header, coded.words, coded.version, deflate=deflate)


def _result(data: bytes, split: list[_Image], coded: _ModelCoding | None, classical: dict[int, ImageEntry],
            sizes: dict[int, dict[str, int]], loaded: LoadedModel | ModelIdentity, started: float,
            everything: _ModelCoding | None = None, estimated: dict[int, tuple[float, float]] | None = None,
            tile: int | None = None) -> CompressResult:
    everything = everything or coded
    reports = []
    for k, item in enumerate(split):
        planes = item.planes
        tried = dict(sizes.get(k, {}))
        bound = math.nan
        stream_bytes = math.nan
        if everything is not None and k in everything.reports:
            stream_bytes, bound = everything.payload_bytes(k), everything.reports[k][1]
        elif estimated and k in estimated:  # ruled out by its estimate, not run
            stream_bytes, bound = estimated[k][0] / 8, estimated[k][1]
        if math.isfinite(stream_bytes):
            # the stream of an image without a model plane (a palette's indices), or one no network ran for
            # (--fast), holds no model tile
            ran = planes.model_plane is not None and math.isfinite(bound)
            tried["model" if ran else "predictor"] = math.ceil(stream_bytes)
        if coded is not None and k in coded.reports:
            payload, bound, excess, n_tiles, alone = coded.reports[k]
            coding = MODEL
        else:
            payload, excess, n_tiles, alone = 8 * len(classical[k].data), 0.0, 0, 0
            coding = classical[k].coding
        # Fast coding: the network never ran (every estimate infinite), so there is no model bound; nor for an
        # image without a model plane (a palette's indices), whatever its side plane's coder priced.
        bound = bound if math.isfinite(bound) and planes.model_plane is not None else math.nan
        excess = excess if math.isfinite(excess) else math.nan
        candidates = tuple(sorted(tried.items(), key=lambda pair: pair[1]))
        reports.append(ImageReport(item.name, planes.mode, planes.width, planes.height, planes.subpixels, bound,
                                   payload, excess, n_tiles, alone, coding, candidates))
    version = int.from_bytes(data[8:10], "little")
    return CompressResult(data, loaded.name, tuple(reports), _header_bytes(data, version),
                          time.perf_counter() - started, version, tile)


def _header_bytes(data: bytes, version: int) -> int:
    """Everything in a file but its payload (ANS words, classical codings): magic, lengths, header, CRCs."""
    if version in container.JSON_VERSIONS:
        return 26 + int.from_bytes(data[10:14], "little")
    position, n, shift = 10, 0, 0
    while True:  # the header length, a varint
        n |= (data[position] & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not data[position - 1] & 0x80:
            return position + n + 4


def _installed_sha256(name: str) -> str:
    """The sha256 the manifests record for the model called `name` ("" where none is installed, or its entry is
    damaged: the file's weights are then looked for by their sha256)."""
    from vaezip import zoo

    try:
        return zoo.weights_file(name)[1] if zoo.has_model(name) else ""
    except CheckpointError:
        return ""


def _exported_again(name: str) -> str:
    """What exporting the run again gives, where the file's model name is one export takes (not a file's name)."""
    from vaezip import zoo

    if not zoo.NAME_PATTERN.fullmatch(name) or name.lower().endswith(zoo.PATH_LIKE_SUFFIXES):
        return ""
    return f"; a run exported again has them only unchanged since and under the name {name!r}"


def _model_for(header: Header, model) -> LoadedModel:
    from vaezip import zoo

    named = f"model {header.model_name!r} (sha256 {header.model_sha256}...)"
    if model is None:
        # By name, or where that name now holds other weights (installed again) or none, by the weights' sha256:
        # the same weights under another name code the same.
        model, installed = header.model_name, _installed_sha256(header.model_name)
        if installed[:16] == header.model_sha256:
            try:
                model = load_model(header.model_name)
            except CheckpointError:  # its file damaged or gone: another copy of the weights may be installed
                try:
                    model = load_by_sha256(header.model_sha256)
                except CheckpointError:
                    model = None
                if model is None:
                    raise
        else:  # another name's, or weights replaced or removed (retired)
            model = load_by_sha256(header.model_sha256)
        if model is None:
            if zoo.has_model(header.model_name) and not installed:
                zoo.weights_file(header.model_name)  # its entry is damaged: that is the error to name
            if installed:
                raise CheckpointError(f"this file was made with {named}; the {header.model_name!r} here has "
                                      f"other weights (sha256 {installed[:16]}...): "
                                      f"pass --model with the weights it was made with")
            raise CheckpointError(f"this file was made with {named}, which is not installed here: pass --model "
                                  f"with those very weights (their .safetensors; a run folder or .pt only if the "
                                  f"file was made with it), or install them (vaezip export FILE.safetensors --name "
                                  f"NAME){_exported_again(header.model_name)}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if loaded.sha256[:16] != header.model_sha256:
        raise CheckpointError(f"this file was made with {named}, not with {loaded.name!r} (sha256 "
                              f"{loaded.sha256[:16]}...)")
    return loaded


def decode_archive(data: bytes, model, *, device, progress, parsed=None):
    return decode_file(data, lambda version, header, words: _decode_model(version, header, words, model, device,
                                                                          progress), parsed)


def _decode_model(version: int, header: Header, words: np.ndarray, model, device: str, progress):
    """The model-coded images of a file through its model: ({image index: image}, the likely cause of a failure)."""
    from vaezip.coding import TorchLatentModel, deterministic_kernels

    loaded = _model_for(header, model)
    integer = version != FLOAT_VERSION
    recorded = header.coder.extra.get("device")
    # A float file decodes best where it was made; an integer file anywhere.
    target = _resolve_device(device, recorded if isinstance(recorded, str) and not integer else None)
    coder_model = TorchLatentModel(loaded.model, target, integer=integer)
    grid = LatentGrid(header.coder.grid_step, header.coder.grid_bound)

    def decode(stack: Stack, schedule: list, specs, order: list[int] | None) -> list:
        with deterministic_kernels(pin_threads=not integer):
            return bitsback.decode_tiles(stack, schedule, specs, coder_model, grid, progress, order=order)

    cause = _likely_cause(header, target, integer)
    config = loaded.config
    return decode_stream(header, words, channels=config.image_channels, stride=config.stride, decode=decode,
                         cause=cause), cause


def _likely_cause(header: Header, device: torch.device, integer: bool) -> str:
    """What most likely went wrong where a model stream does not decode (unpack.decode_file's cause)."""
    import torch

    from vaezip import process_settings

    if integer:  # computed exactly: no machine, kernel or device difference can explain it
        return "the file is damaged, or was made by a different model or vaezip version"
    extra = header.coder.extra
    # constriction is named too: a different ANS or quantiser version codes the same tables differently.
    made = f"{extra.get('device', '?')} with torch {extra.get('torch', '?')}, constriction {header.coder.constriction}"
    here = f"{device.type} with torch {torch.__version__}, constriction {constriction_version()}"
    forked = ("; this process was forked from one that had imported torch, so torch runs on one thread here (its "
              "threads may not have survived the fork), where the float coder needs two: decode it in a fresh process"
              if process_settings.threads_lost_in_fork() else "")
    return (f"this is a format-1 file (float inference), made on {made}, decoded on {here}: such files decode "
            f"only on the kind of machine (CPU instruction set, GPU) and versions that made them{forked}")
