"""The Python API that the CLI and users call: load a model; compress and decompress images.

A thin facade: loading is vaezip/models.py's (re-exported here), coding vaezip/archive.py's. Importing it
imports no torch: a file whose images are all coded classically decodes without it, and `file_info` reads
headers only."""

from __future__ import annotations

import dataclasses
import functools
import operator
from dataclasses import dataclass

import numpy as np

from vaezip.models import LoadedModel, default_model, load_model
from vaezip.results import CompressResult, ImageReport


def _numpy_defaults(function):
    """`function` under numpy's own error handling, whatever np.seterr the calling thread set (a host's all="raise"
    made compress fail on an underflow the estimate expects): what vaezip computes, the files included, never
    depends on it. A new errstate each call (numpy 1.x's keeps its saved state on the object)."""

    @functools.wraps(function)
    def under_defaults(*args, **kwargs):
        with np.errstate(divide="warn", over="warn", under="ignore", invalid="warn"):
            return function(*args, **kwargs)

    return under_defaults

__all__ = [
    "CompressResult", "FileInfo", "ImageInfo", "ImageReport", "INFERENCE", "LoadedModel", "compress",
    "compress_images", "decompress", "decompress_images", "default_model", "file_info", "load_model", "png_bytes",
    "png_file_names", "read_header",
]

from vaezip.files import png_file_names  # noqa: E402  (torch-free; re-exported: see decompress_images)


# ---------------------------------------------------------------------------------------------- coding


@_numpy_defaults
def compress_images(
    images,
    model: LoadedModel | str | None = None,
    *,
    tile: int | None = None,
    max_batch: int = 16,
    device: str = "auto",
    progress=None,
    predictor: bool = True,
    classical: bool = True,
    format_version: int | None = None,
    samples: int = 1,
    fast: bool = False,
    metadata: bool = True,
) -> CompressResult:
    """images: a sequence of (name, PIL image) or (name, vaezip.images.DeepImage), a 16-bit image (what open_image
    gives of a 16-bit PNG, image_from_array of a uint16 array), or (name, array) as compress takes one. Chains
    bits-back across all the model-coded ones in one stream. `progress(done, total)` may be called from a thread of
    vaezip's own (the quick stream's), not only the caller's.

    model: None for the shipped default model of the images' kind (grey or colour); where they mix both kinds,
    that of the kind holding most of the pixels (colour on a tie), the other kind's images then coded classically
    (ImageReport.other_kind names them). A named model refuses an image it cannot code.

    predictor: let the model-free predictor code any tile it codes for less than the model would (False: only
    the stream's first tiles, which cannot use bits-back, go without the model).
    classical: also code every image classically (raw, PNG or WebP samples) and keep, image by image, the
    smaller path, so that a file is never much larger than the best classical coding (False: the model codes
    every image, as before format 3).
    format_version: None (or 23, the newest) for the oldest format that holds the file: 3; 4 for
    importance-weighted batches; 7 where the predictor's tiles go first in the stream, so that the model's run in
    full batches; 8 where a tile decided on while coding goes to the predictor, whose residuals format 8 codes with
    tables fitted on photographs; 9 where the predictor's tiles adapt their contexts' statistics over the stream;
    11 where the header deflated saves 16 bytes or more; 15 where the predictor's staged cascade tiles code a tile;
    16 where they code every tile, in sections; 17 where an image keeps metadata; 18 where an image has 16 bits
    per sample (such an image needs it, and 19 to 22); 19 where small images' sections code for less by the
    predictor's small-image profile (22 where refined bit by bit); 22 where a section is coded by its photograph
    profile refined bit by bit (a photograph's, and the sections of its stream); 23 where a grey image keeps a bit
    depth below 8 (a bilevel scan, a 2- or 4-bit grey PNG: vaezip/images.py grey_bits). An older version N writes
    what format N wrote, at most format N, which readers older than N + 1 read:
      22: no bit depth below 8 (such a grey image decompresses as 8-bit grey);
      21: the refinement reading no other channel, small images' sections unrefined;
      20: the photograph profile's sections unrefined; 19: no photograph sections; 18: no small-image sections;
      17: no 16-bit image (such an image is refused);
      16: no metadata;
      15: the staged cascade's tiles in one chain;
      14: the wide cascade's tiles (without the third stage);
      13: the cascade's tiles with parity; 12: the cascade's tiles without parity;
      11: the predictor's tiles of format 10 instead of the cascade's; 10: those with the header as it is;
      9: the predictor's tiles without least squares; 8: without adapting;
      7: the predictor's residuals with Laplaces; 6: its tiles in raster order;
      5: the predictor's Laplace residuals; 3: its Gaussian ones;
      2: the format before 3 (the model codes every image).
    samples: posterior samples per tile; above 1 (2, 4, 8 or 16), importance-weighted (Monte-Carlo) bits-back:
    the K-sample importance-weighted bound instead of the ELBO, for K times the model's work each way
    (format 4 or later, which readers of format 3 refuse).
    fast: run no network: every tile goes to the predictor (or raw bytes), and each image keeps the smaller of
    that stream and its classical codings (the quicker WebP: codec/classic.py FAST_WEBP_QUALITY); tiles of
    FAST_TILE (256) unless `tile` says otherwise. Compress takes a fraction of the time, the file decodes without
    the model (and without torch), and on photographs it is about the default's size (Kodak: 0.003 % larger; the
    default keeps this stream where it is the smaller file), larger on thumbnails; the reports carry no model
    bound (nan).
    metadata: keep what each image's file held besides its pixels (a colour profile, EXIF, XMP, a PNG's text and
    other ancillary chunks: vaezip/metadata.py), which decompress writes back into its PNG; a file that keeps some
    is format 17. False, or a format_version of 16 or older: the file keeps none (ImageReport.metadata_left_out
    names what was left out). An image opened by vaezip's open_image brings its file's chunks; any other image
    its colour profile, EXIF, XMP, comment and dots per inch as Pillow holds them in its info."""
    from vaezip.archive import encode_archive

    # Known before any work: a bad max_batch failed after all of it, and a bad device passed wherever no model ran;
    # numpy's integers are taken as ints (an np.int64 tile reached the header's writer after all the coding)
    max_batch, samples = _integer(max_batch, "max_batch", "a positive int"), _integer(samples, "samples")
    tile = None if tile is None else _integer(tile, "tile")
    format_version = None if format_version is None else _integer(format_version, "format_version")
    if max_batch < 1:
        raise ValueError(f"max_batch must be a positive int, not {max_batch!r}")
    _check_device(device)
    return encode_archive(
        images, model, tile=tile, max_batch=max_batch, device=device, progress=progress, predictor=predictor,
        classical=classical, format_version=format_version, samples=samples, fast=fast, metadata=metadata,
    )


def compress(image, model: LoadedModel | str | None = None, *, name: str = "image.png", **options) -> bytes:
    """Compress one PIL image, DeepImage, or (H, W) / (H, W, C) uint8 or uint16 array (C from 1 to 4) to .vz
    bytes."""
    return compress_images([(name, image)], model, **options).data


@_numpy_defaults
def decompress_images(data: bytes, model: LoadedModel | str | None = None, *, device: str = "auto", progress=None):
    """.vz bytes -> list of (name, PIL image), a 16-bit image as a vaezip.images.DeepImage (its `samples` uint16);
    raises IntegrityError unless every checksum matches. A name is as the file stores it, whoever made the file:
    it may hold '../', '/', control characters, or repeat another's; `png_file_names(names)` gives the plain,
    distinct file names `vaezip decompress --dir` writes them under. A file whose
    images are all coded classically, or whose every tile went without the model (the predictor's, raw bytes),
    needs no model (and imports no torch); `model` is then not used. A format-17 image carries its metadata
    chunks in its info (vaezip/metadata.py METADATA), which png_bytes writes into its PNG."""
    from codec.container import read_versioned

    _check_device(device)
    data = _file_bytes(data)
    return _images(data, read_versioned(data), model, device, progress)


def _images(data: bytes, parsed, model, device: str, progress) -> list:
    """decompress_images's images of the file `data`, read_versioned's `parsed`."""
    from codec.depth import LOW, low_bits
    from vaezip.metadata import attach

    parts = _decoded(data, parsed, model, device, progress)
    images = []
    for k, ((name, image), entry) in enumerate(zip(parts, parsed[1].images)):
        if entry.depth == LOW:  # joined with the image before it
            continue
        if entry.depth:
            from vaezip.images import join_deep

            image = join_deep(entry.depth, entry.levels, image, parts[k + 1][1] if low_bits(entry.depth) else None)
        attach(image, entry.metadata)
        if entry.info.get("bits"):  # format 23: a grey image that png_bytes writes back in 1, 2 or 4 bits
            from vaezip.images import GREY_BITS

            image.info[GREY_BITS] = entry.info["bits"]
        images.append((name, image))
    return images


def _decoded(data: bytes, parsed, model, device: str, progress):
    if not parsed[1].uses_model:
        from vaezip.classical import decode_without_model

        return decode_without_model(parsed[1])
    from vaezip.unpack import decode_model_free, needs_no_model

    if needs_no_model(parsed[1]):
        return decode_model_free(data, progress=progress, parsed=parsed)
    from vaezip.archive import decode_archive

    return decode_archive(data, model, device=device, progress=progress, parsed=parsed)


@_numpy_defaults
def decompress(data: bytes, model: LoadedModel | str | None = None, *, device: str = "auto", progress=None):
    """.vz bytes of a single image -> PIL image (a DeepImage for a 16-bit one); ValueError for an archive of
    several (decompress_images gives them all)."""
    from codec.container import read_versioned
    from codec.depth import image_count

    _check_device(device)
    data = _file_bytes(data)
    parsed = read_versioned(data)
    count = image_count(parsed[1].images)
    if count != 1:  # the first alone was given, the others dropped without a word
        raise ValueError(f"the file holds {count} images: decompress_images gives them all")
    return _images(data, parsed, model, device, progress)[0][1]


def _check_device(device: str) -> None:
    """A device the API takes (the CLI's --device values), before any work: one no model needs passed unseen."""
    from vaezip.devices import DEVICE_NAMES  # no torch

    if device not in DEVICE_NAMES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_NAMES)}, not {device!r}")


def _integer(value, name: str, kind: str = "an int") -> int:
    """An option that is a whole number, as an int (a numpy integer too); a bool, float or str is a ValueError."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise ValueError(f"{name} must be {kind}, not {value!r}")


def _file_bytes(data) -> bytes:
    """A .vz file's bytes as the API takes them: bytes, or anything that holds them (a bytearray, memoryview, mmap,
    numpy array: of any shape or item size, as its bytes); a path or file object is a TypeError that says what to
    pass."""
    if isinstance(data, (bytes, bytearray)):
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a .vz file's bytes, not {type(data).__name__} (pass open(path, 'rb').read())") from None
    if view.ndim != 1 or view.itemsize != 1 or not view.contiguous:
        return view.tobytes()  # len() counts its bytes, and the reader's casts take it
    return view


def png_bytes(image) -> bytes:
    """A decoded image as the PNG file `vaezip decompress` writes: every pixel as decoded, and its metadata
    chunks in their places. (Pillow's own `image.save(path)` cuts palette indices past the palette's end down to
    its bit depth.)"""
    from vaezip.images import png_bytes as as_png  # Pillow, on first use

    return as_png(image)


def read_header(data: bytes):
    from codec.container import read

    return read(_file_bytes(data))[0]


@dataclass(frozen=True)
class ImageInfo:
    name: str
    mode: str
    width: int
    height: int
    coding: str  # "model", "raw", "png" or "webp"; a 16-bit image's high part's
    # A classical coding's size; for the model, None (its images share one stream; classically coded side
    # planes, if any, are in `side_bytes`)
    coded_bytes: int | None
    side_bytes: int = 0
    metadata: tuple = ()  # the metadata chunks it keeps (codec.metadata.Chunk), written back into its PNG
    depth: str = ""  # a 16-bit image's (codec/depth.py: "shift:12", ...); "" for an 8-bit image
    low: "ImageInfo | None" = None  # a 16-bit image's low part, where its depth has one
    grey_bits: int = 0  # a grey image's bit depth below 8 (format 23: 1, 2 or 4), which decompress writes; 0: none


@dataclass(frozen=True)
class FileInfo:
    """What `vaezip info` shows of a .vz file, from its header alone (no model, no torch)."""

    size: int  # bytes of the whole file
    version: int
    inference: str  # how the model path's numbers are computed: what that means for where the file decodes
    model: str | None  # the model's name, None where no image needs it
    model_sha256: str | None
    tile: int | None
    batches: int  # of the model path's schedule
    schedule: tuple[tuple[str, int], ...]  # (tile kind, tiles), in order of first use
    payload_words: int  # the model's ANS words
    images: tuple[ImageInfo, ...]
    constriction: str | None
    extra: dict


INFERENCE = {
    1: "float inference: decodes on the kind of machine that made it",
    2: "integer-exact inference: decodes on any machine",
    3: "integer-exact inference and classical codings: decodes on any machine",
    4: "integer-exact inference with importance-weighted bits-back, and classical codings: decodes on any machine",
    5: "integer-exact inference with Laplace predictor tiles, and classical codings: decodes on any machine",
    6: "integer-exact inference with blend predictor tiles, and classical codings: decodes on any machine",
    7: "integer-exact inference with blend predictor tiles first in the stream, and classical codings: decodes on "
       "any machine",
    8: "integer-exact inference with blend predictor tiles coded by fitted residual tables, first in the stream, "
       "and classical codings: decodes on any machine",
    9: "integer-exact inference with adaptive blend predictor tiles first in the stream, and classical codings: "
       "decodes on any machine",
    10: "integer-exact inference with adaptive least-squares predictor tiles first in the stream, and classical "
        "codings: decodes on any machine",
    11: "format 10's, its header deflated: decodes on any machine",  # file_info names what the content needs
    12: "integer-exact inference with cascade predictor tiles first in the stream, and classical codings, its "
        "header deflated: decodes on any machine",
    13: "integer-exact inference with cascade predictor tiles with parity first in the stream, and classical "
        "codings, its header deflated: decodes on any machine",
    14: "integer-exact inference with wide cascade predictor tiles first in the stream, and classical codings, its "
        "header deflated: decodes on any machine",
    15: "integer-exact inference with staged cascade predictor tiles first in the stream, and classical codings, "
        "its header deflated: decodes on any machine",
    16: "integer-exact inference with staged cascade predictor tiles in sections, each decoded apart, and "
        "classical codings, its header deflated: decodes on any machine",
    17: "the content of an earlier format, its header deflated, and each image's metadata: decodes on any machine",
    18: "the content of an earlier format, its header deflated, and 16-bit images: decodes on any machine",
    19: "integer-exact inference with staged cascade predictor tiles in sections, some coded by its small-image "
        "profile, and classical codings, its header deflated: decodes on any machine",
    20: "integer-exact inference with staged cascade predictor tiles in sections, some coded by its photograph "
        "profile (others perhaps by its small-image profile), and classical codings, its header deflated: decodes on "
        "any machine",
    21: "integer-exact inference with staged cascade predictor tiles in sections, some coded by its photograph "
        "profile refined bit by bit by an adaptive model (others perhaps by its small-image profile), and classical "
        "codings, its header deflated: decodes on any machine",
    22: "integer-exact inference with staged cascade predictor tiles in sections, some coded by its photograph "
        "profile refined bit by bit by an adaptive model that also reads the earlier channels' gradients (others "
        "perhaps by its small-image profile, refined so), and classical codings, its header deflated: decodes on any "
        "machine",
    23: "the content of an earlier format, its header deflated, and grey images' bit depths below 8: decodes on any "
        "machine",
}


def file_info(data: bytes) -> FileInfo:
    """What a .vz file holds, from its header (checked as a decode would check it first; no pixel decoded)."""
    from codec import container, tilekinds
    from codec.container import read_versioned
    from codec.depth import LOW

    from vaezip.classical import check_header
    from vaezip.unpack import check_stream

    data = _file_bytes(data)
    version, header, words = read_versioned(data)
    check_header(header)
    if header.uses_model:
        check_stream(header)
    coder = header.coder
    kinds: dict[str, int] = {}
    for kind, n in coder.schedule if coder is not None else ():
        kinds[kind] = kinds.get(kind, 0) + n
    images: list[ImageInfo] = []
    for e in header.images:
        found = ImageInfo(e.name, e.mode, e.width, e.height, e.coding, None if e.coding == "model" else len(e.data),
                          len(e.data) if e.coding == "model" else 0, e.metadata, e.depth if e.depth != LOW else "",
                          grey_bits=e.info.get("bits", 0))
        if e.depth == LOW:  # one ImageInfo an image: a low part goes into its image's
            images[-1] = dataclasses.replace(images[-1], low=found)
        else:
            images.append(found)
    deflated = version == container.DEFLATED_VERSION
    newest = version
    # formats 17 to 23 may hold any content of the formats before them: described as the oldest that holds it
    with_metadata = version in (container.METADATA_VERSION, container.DEPTH_VERSION, container.SMALL_VERSION,
                                container.PHOTO_VERSION, container.REFINED_VERSION, container.ACROSS_VERSION,
                                container.BITS_VERSION)
    if deflated or with_metadata:
        version = container.binary_version(kinds, ordered=bool(coder is not None and coder.order))
        deflated = version not in container.DEFLATED_HEADERS  # format 17's header is deflated too
    inference = INFERENCE[version]
    if version in (5, 6, 7, 8, 9, 10, 12, 13, 14, 15) and any(tilekinds.BY_NAME[kind].samples > 1 for kind in kinds):
        predictor = {5: "Laplace predictor tiles", 6: "blend predictor tiles",
                     7: "blend predictor tiles first in the stream",
                     8: "blend predictor tiles coded by fitted residual tables, first in the stream",
                     9: "adaptive blend predictor tiles first in the stream",
                     10: "adaptive least-squares predictor tiles first in the stream",
                     12: "cascade predictor tiles first in the stream",
                     13: "cascade predictor tiles with parity first in the stream",
                     14: "wide cascade predictor tiles first in the stream",
                     15: "staged cascade predictor tiles first in the stream"}[version]
        inference = (f"integer-exact inference with {predictor} and importance-weighted bits-back, and classical "
                     f"codings{', its header deflated' if version in (12, 13, 14, 15) else ''}: decodes on any machine")
    if deflated:
        inference = inference.replace(": decodes on any machine", ", its header deflated: decodes on any machine")
        version = container.DEFLATED_VERSION
    if with_metadata:
        kept = [what for what, present in (("each image's metadata", any(e.metadata for e in header.images)),
                                           ("16-bit images", any(e.depth for e in header.images)),
                                           ("grey images' bit depths below 8",
                                            any(e.info.get("bits") for e in header.images))) if present]
        if kept:
            inference = inference.replace(": decodes on any machine", f", and {' and '.join(kept)}: decodes on any "
                                          "machine")
        version = newest
    return FileInfo(
        len(data), version, inference, header.model_name or None, header.model_sha256 or None,
        None if coder is None else coder.tile, 0 if coder is None else len(coder.schedule), tuple(kinds.items()),
        len(words), tuple(images),
        None if coder is None else coder.constriction, {} if coder is None else dict(coder.extra),
    )
