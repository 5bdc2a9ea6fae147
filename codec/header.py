"""The .vz header: what the decoder needs besides the payload (see docs/FORMAT.md).

Frozen dataclasses on the Python side. On the wire, two forms:
- formats 1 and 2: canonical UTF-8 JSON, `to_json` / `from_json`;
- formats 3 to 5: binary fields (varints, fixed-size digests, length-prefixed strings), `to_binary` / `from_binary`,
  a few dozen bytes where the JSON took ~330; it also names how each image is coded (the model, or a
  classical coding of codec/classic.py).
Both readers treat their input as hostile: strict types, documented limits (LimitError) checked before
anything is expanded, and one byte representation per header (canonical JSON; binary that re-encodes to the
same bytes).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codec import depth as depths
from codec import metadata, tilekinds
from codec.errors import CodingError, HeaderError, LimitError
from codec.latents import LatentGrid

# Limits, refused before allocating (documented in docs/FORMAT.md).
MAX_SIDE = 65535  # width and height
MAX_PIXELS = 2**28  # width * height of one image
MAX_IMAGES = 4096
MAX_BATCHES = 2**22  # schedule entries after expanding the runs
MAX_TILE = 65536
MAX_BATCH = 4096
MAX_NAME_CHARS = 4096
MAX_PALETTE_BYTES = 1024  # 256 RGBA entries
MAX_ORDER_RUNS = 2**21  # runs of the stream order (format 7): at most one per tile of vaezip's 2**20
MAX_ORDER_RUN = 2**28  # tiles in one run: no more than MAX_PIXELS of one image, let alone a file

MODEL = "model"  # ImageEntry.coding of an image coded by the model (every image of a format-1 or -2 file)
CODINGS = (MODEL, "raw", "png", "webp")  # format 3 names a coding by its index here (codec/classic.py)
MODES = ("L", "LA", "RGB", "RGBA", "P")  # format 3 names a mode by its index here
PIXEL_DIGEST_BYTES = 8  # format 3 keeps this prefix of the pixel sha256 (formats 1, 2: all 32 bytes)


@dataclass(frozen=True)
class CoderSettings:
    grid_step: float
    grid_bound: float
    tile: int
    max_batch: int
    schedule: tuple[tuple[str, int], ...]  # ((tile kind name, see codec/tilekinds.py, n_tiles), ...)
    constriction: str  # version that wrote the payload
    extra: dict[str, Any] = field(default_factory=dict)  # opaque, JSON-able: torch version, device class, ...
    # Format 7: the stream order as run lengths over the raster tiles, alternately of tiles in the stream's
    # first part and tiles moved to its second part (codec/bitsback.py: order_runs); (): raster order (always
    # so in earlier formats).
    order: tuple[int, ...] = ()


@dataclass(frozen=True)
class ImageEntry:
    name: str
    mode: str  # e.g. "L", "RGB", "RGBA", "P"
    width: int
    height: int
    palette: bytes | None = None
    # small, JSON-able (e.g. an alpha histogram); format 23: "bits", 1, 2 or 4 where a grey image was read from samples
    # of that many bits (its 8-bit values as Pillow scales them up), the depth decompress writes it back in
    info: dict[str, Any] = field(default_factory=dict)
    coding: str = MODEL  # MODEL, or the classical coding (codec/classic.py) of `data` (format 3)
    # The classically coded samples; for MODEL, its classically coded side planes (format 3: see info planes)
    data: bytes = b""
    # Format 17: what the image's file held besides its pixels, as PNG chunks (codec/metadata.py); the header holds
    # their places, types and lengths, the file's data part their bytes after the image's data
    metadata: tuple[metadata.Chunk, ...] = ()
    # Format 18: "" for an 8-bit image; a 16-bit image's depth (codec/depth.py: "shift:12", ...), its samples' top 8
    # bits in this image; depth.LOW for the low bits of the image before it. A "levels:n" depth's values, each
    # channel's strictly increasing (its samples' ranks in them are what the parts hold); () for any other depth.
    depth: str = ""
    levels: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class Header:
    model_name: str  # "" in a format-3 file whose images are all coded classically
    model_sha256: str  # first 16 lowercase hex chars of the weights' sha256 ("" as model_name)
    coder: CoderSettings | None  # None where model_name is ""
    images: tuple[ImageEntry, ...]
    # sha256 over the images' pixel digests in order: one digest per file, so that archives of small images
    # do not pay 32 bytes each (64 lowercase hex chars; format 3: the first 16)
    pixels_sha256: str = "0" * 64

    @property
    def uses_model(self) -> bool:
        return any(image.coding == MODEL for image in self.images)


# ---------------------------------------------------------------------------------------------- JSON


def to_json(header: Header, version: int | None = None) -> bytes:
    """Canonical UTF-8 JSON; refuses what `from_json` would refuse, so no unreadable file is ever written.
    version: the file's format (1 or 2), whose tile kinds the schedule may hold; None: any format's."""
    if header.coder is None or not all(im.coding == MODEL and not im.data for im in header.images):
        raise HeaderError("a format-1 or -2 header holds model-coded images only (classical codings need format 3)")
    if header.coder.order:
        raise HeaderError(f"a format-1 or -2 header holds no stream order (format {FORMAT_ORDER} and later)")
    if any(image.metadata for image in header.images):
        raise HeaderError(f"a format-1 or -2 header holds no metadata (format {FORMAT_METADATA} and later)")
    if any(image.depth or image.levels for image in header.images):
        raise HeaderError(f"a format-1 or -2 header holds no 16-bit image (format {FORMAT_DEPTH} and later)")
    if any(bits_problem(image.info, image.mode, 2) for image in header.images):
        raise HeaderError(f"a format-1 or -2 header holds no bit depth below 8 (format {FORMAT_BITS} and later)")
    try:
        text = _canonical(_header_to_json(header))
    except (TypeError, ValueError) as error:  # NaN, a non-JSON object in info/extra, a lone surrogate
        raise HeaderError(f"header cannot be written as JSON: {error}") from None
    _json_to_header(json.loads(text), version)
    return text


def from_json(text: bytes, version: int | None = None) -> Header:
    """Parse a format-1 or -2 header (`version`: the file's, whose tile kinds the schedule may hold; None: any
    format's)."""
    try:
        obj = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
        canonical = _canonical(obj) == text
    except (ValueError, RecursionError) as error:  # UnicodeError and JSONDecodeError are ValueErrors
        raise HeaderError(f"bad header: not valid UTF-8 JSON ({type(error).__name__})") from None
    if not canonical:
        raise HeaderError("bad header: not canonical JSON (sorted keys, no spaces, no duplicates)")
    return _json_to_header(obj, version)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a .vz header")


def _header_to_json(h: Header) -> dict[str, Any]:
    c = h.coder
    return {
        "model": {"name": h.model_name, "sha256": h.model_sha256},
        "pixels_sha256": h.pixels_sha256,
        "coder": {
            "grid_step": float(c.grid_step),
            "grid_bound": float(c.grid_bound),
            "tile": c.tile,
            "max_batch": c.max_batch,
            "schedule": _runs(c.schedule),
            "constriction": c.constriction,
            "extra": c.extra,
        },
        "images": [
            {
                "name": im.name,
                "mode": im.mode,
                "width": im.width,
                "height": im.height,
                "palette": None if im.palette is None else bytes(im.palette).hex(),
                "info": im.info,
            }
            for im in h.images
        ],
    }


def _runs(schedule: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    """Run-length form [[kind, n_tiles, repeat], ...]: long streams repeat (bitsback, max_batch) many times."""
    runs: list[list[Any]] = []
    for name, n in schedule:
        kind = tilekinds.BY_NAME.get(name) if isinstance(name, str) else None
        if kind is None:
            raise HeaderError(f"bad schedule kind {str(name)[:40]!r}; valid kinds: {tilekinds.valid_kinds()}")
        if runs and runs[-1][0] == kind.code and runs[-1][1] == n:
            runs[-1][2] += 1
        else:
            runs.append([kind.code, n, 1])
    return runs


def _json_to_header(obj: Any, version: int | None) -> Header:
    top = _dict(obj, "header", {"model", "coder", "images", "pixels_sha256"})
    model = _dict(top["model"], "model", {"name", "sha256"})
    coder_keys = {"grid_step", "grid_bound", "tile", "max_batch", "schedule", "constriction", "extra"}
    coder = _dict(top["coder"], "coder", coder_keys)
    if not isinstance(top["images"], list):
        raise HeaderError("bad header: images must be a list")
    if not top["images"]:  # the encoder never writes one, and an empty file proves nothing
        raise HeaderError("bad header: a .vz file holds at least one image")
    if len(top["images"]) > MAX_IMAGES:
        raise LimitError(f"too many images: {len(top['images'])} (limit {MAX_IMAGES})")
    images = tuple(_image(im, i) for i, im in enumerate(top["images"]))
    step, bound = _float(coder["grid_step"], "grid_step"), _float(coder["grid_bound"], "grid_bound")
    try:
        LatentGrid(step, bound)
    except CodingError as error:
        raise HeaderError(f"bad header: {error}") from None
    max_batch = _int(coder["max_batch"], "max_batch", 1, MAX_BATCH)
    settings = CoderSettings(
        grid_step=step,
        grid_bound=bound,
        tile=_int(coder["tile"], "tile", 1, MAX_TILE),
        max_batch=max_batch,
        schedule=_schedule(coder["schedule"], max_batch, sum(im.width * im.height for im in images), version),
        constriction=_str(coder["constriction"], "constriction", 64),
        extra=_dict(coder["extra"], "extra", None),
    )
    sha = _str(model["sha256"], "model sha256", 16)
    if len(sha) != 16 or not _is_hex(sha):
        raise HeaderError("bad header: model sha256 must be 16 lowercase hex chars")
    pixels_sha = _str(top["pixels_sha256"], "pixels sha256", 64)
    if len(pixels_sha) != 64 or not _is_hex(pixels_sha):
        raise HeaderError("bad header: pixels sha256 must be 64 lowercase hex chars")
    return Header(_str(model["name"], "model name", MAX_NAME_CHARS), sha, settings, images, pixels_sha)


def _image(obj: Any, i: int) -> ImageEntry:
    d = _dict(obj, f"image {i}", {"name", "mode", "width", "height", "palette", "info"})
    width, height = _int(d["width"], "width", 1, MAX_SIDE), _int(d["height"], "height", 1, MAX_SIDE)
    if width * height > MAX_PIXELS:
        raise LimitError(f"image {i} too large: {width}x{height} = {width * height} pixels (limit {MAX_PIXELS})")
    palette = d["palette"]
    if palette is not None:
        palette = _str(palette, "palette", 2 * MAX_PALETTE_BYTES)
        if len(palette) % 2 or not _is_hex(palette):
            raise HeaderError(f"bad header: image {i} palette must be lowercase hex")
        palette = bytes.fromhex(palette)
    entry = ImageEntry(
        name=_str(d["name"], "image name", MAX_NAME_CHARS),
        mode=_str(d["mode"], "mode", 16),
        width=width,
        height=height,
        palette=palette,
        info=_dict(d["info"], "info", None),
    )
    trouble = bits_problem(entry.info, entry.mode, 2)
    if trouble:
        raise HeaderError(f"bad header: image {i} {trouble}")
    return entry


def _schedule(obj: Any, max_batch: int, total_pixels: int, version: int | None) -> tuple[tuple[str, int], ...]:
    """Expand [[code, n, repeat], ...], refusing anything that could not come from a real encoding: a tile
    kind (codec/tilekinds.py) unknown, or not in files of format `version` (None: any format's)."""
    if not isinstance(obj, list):
        raise HeaderError("bad header: schedule must be a list")
    batches = tiles = 0
    for run in obj:
        if not (isinstance(run, list) and len(run) == 3 and isinstance(run[0], str)):
            raise HeaderError(f"bad header: schedule run must be [kind, n, repeat], got {str(run)[:40]}")
        kind = tilekinds.BY_CODE.get(run[0])
        if kind is None:
            raise HeaderError(f"bad header: unknown tile kind {run[0][:8]!r} in the schedule; valid kinds: "
                              f"{tilekinds.valid_kinds()}")
        if version is not None and version not in kind.formats:
            raise HeaderError(f"bad header: tile kind {kind.code!r} ({kind.name}) in a format-{version} file; valid "
                              f"kinds there: {tilekinds.valid_kinds(version)}")
        n, repeat = _int(run[1], "schedule n", 1, max_batch), _int(run[2], "schedule repeat", 1, MAX_BATCHES)
        batches, tiles = batches + repeat, tiles + n * repeat
        if batches > MAX_BATCHES:
            raise LimitError(f"schedule too long: more than {MAX_BATCHES} batches")
    if tiles > total_pixels:  # every tile holds at least one pixel
        raise HeaderError(f"bad header: schedule covers {tiles} tiles but the images hold {total_pixels} pixels")
    # Shared tuples: a long run costs one pointer per batch.
    return tuple(entry for code, n, repeat in obj for entry in [(tilekinds.BY_CODE[code].name, n)] * repeat)


def _dict(obj: Any, what: str, keys: set[str] | None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise HeaderError(f"bad header: {what} must be an object")
    if keys is not None and set(obj) != keys:
        raise HeaderError(f"bad header: {what} needs exactly the keys {sorted(keys)}, got {sorted(obj)[:10]}")
    return obj


def _int(obj: Any, what: str, lo: int, hi: int) -> int:
    if type(obj) is not int:  # bool is an int subclass: refused too
        raise HeaderError(f"bad header: {what} must be an integer")
    if not lo <= obj <= hi:
        raise LimitError(f"{what} = {obj} outside the limits [{lo}, {hi}]")
    return obj


def _float(obj: Any, what: str) -> float:
    if type(obj) is not float or not obj > 0:
        raise HeaderError(f"bad header: {what} must be a positive float")
    return obj


def _str(obj: Any, what: str, max_chars: int) -> str:
    if not isinstance(obj, str) or len(obj) > max_chars:
        raise HeaderError(f"bad header: {what} must be a string of at most {max_chars} chars")
    return obj


def _is_hex(s: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in s)


# ---------------------------------------------------------------------------------------------- binary (format 3)

FORMAT_BINARY = 3  # the first format version whose header is binary (container.VERSION)
FORMAT_ORDER = 7  # the first whose header holds the stream order (container.ORDER_VERSION)
FORMAT_METADATA = 17  # the first whose header holds each image's metadata chunks (container.METADATA_VERSION)
FORMAT_DEPTH = 18  # the first whose header holds each image's depth (container.DEPTH_VERSION)
FORMAT_BITS = 23  # the first whose header holds a grey image's bit depth below 8 (container.BITS_VERSION)
GREY_BITS = (1, 2, 4)  # the bit depths below 8 of a grey PNG
_FLAG_MODEL = 1  # some image is coded by the model: the header names the model and the coder settings
_F64 = struct.Struct("<d")
# The latent grid: a step of 2**-e and a whole bound (vaezip's, 2**-8 and 16) in three bytes; else two float64s.
_GRID_FLOATS, _GRID_POWER = 0, 1
MAX_DATA_BYTES = 2**40  # a classical coding's length field (the container checks it against the file first)


def to_binary(header: Header, words: int, version: int = FORMAT_BINARY) -> bytes:
    """Format 3's header (and formats 4 to 6's: the same layout, whose schedules may also hold the tile kinds
    of those formats, codec/tilekinds.py). `words`: the payload's count of ANS words (0 without model-coded
    images). Refuses what
    `from_binary` would refuse, so no unreadable file is ever written."""
    model = header.uses_model
    if not model and (header.coder is not None or header.model_name or header.model_sha256):
        raise HeaderError("no image is coded by the model: a format-3 header then names no model or coder")
    if model and (header.coder is None or len(header.model_sha256) != 16 or not _is_hex(header.model_sha256)):
        raise HeaderError("model-coded images need coder settings and a model sha256 of 16 lowercase hex chars")
    if len(header.pixels_sha256) not in (2 * PIXEL_DIGEST_BYTES, 64) or not _is_hex(header.pixels_sha256):
        raise HeaderError("bad header: pixels sha256 must be lowercase hex")
    try:
        raw = _encode_binary(header, words, [len(image.data) for image in header.images], version)
    except (TypeError, ValueError, OverflowError, struct.error) as error:  # a mode or coding unknown, NaN info
        raise HeaderError(f"header cannot be written: {error}") from None
    from_binary(raw, version)  # the reader's checks
    return raw


def from_binary(raw: bytes, version: int = FORMAT_BINARY) -> tuple[Header, list[int], int]:
    """Parse the binary header of a format `version` (3 to 6) file: (header with every image's `data` empty,
    each image's data length (0 for the model), the count of ANS words)."""
    header, lengths, _, words = from_binary_with_chunks(raw, version)
    return header, lengths, words


def from_binary_with_chunks(raw: bytes, version: int) -> tuple[Header, list[int], list[list[int]], int]:
    """from_binary, and each image's metadata chunks' data lengths (format 17), whose bytes follow the image's data
    in the file: the header's images hold their chunks with empty data."""
    reader = _Reader(raw)
    flags = reader.u8("flags")
    if flags & ~_FLAG_MODEL:
        raise HeaderError(f"bad header: unknown flags {flags:#x}")
    pixels = reader.take(PIXEL_DIGEST_BYTES, "pixels sha256").hex()
    name = sha = ""
    coder = None
    words = 0
    if flags & _FLAG_MODEL:
        name = reader.string("model name", MAX_NAME_CHARS)
        sha = reader.take(8, "model sha256").hex()
        constriction = reader.string("constriction", 64)
        if reader.u8("grid form") == _GRID_POWER:
            step, bound = 2.0 ** -reader.varint("grid step exponent", 0, 64), float(reader.varint("grid bound", 1, 2**24))
        else:
            step, bound = (_float(_F64.unpack(reader.take(8, what))[0], what) for what in ("grid_step", "grid_bound"))
        try:
            LatentGrid(step, bound)
        except CodingError as error:
            raise HeaderError(f"bad header: {error}") from None
        tile = reader.varint("tile", 1, MAX_TILE)
        max_batch = reader.varint("max_batch", 1, MAX_BATCH)
        runs = []
        for _ in range(reader.varint("schedule runs", 0, MAX_BATCHES)):
            kind = chr(reader.u8("schedule kind"))
            runs.append([kind, reader.varint("schedule n", 1, max_batch), reader.varint("schedule repeat", 1, MAX_BATCHES)])
        extra = reader.json("extra")
        order = ()
        if version >= FORMAT_ORDER:
            count = reader.varint("order runs", 0, MAX_ORDER_RUNS)
            if count in (1, 2):  # such runs describe the raster order, whose one form is no runs
                raise HeaderError(f"bad header: {count} order runs (the raster order is written as none)")
            order = tuple(reader.varint("order run", 0 if k == 0 else 1, MAX_ORDER_RUN) for k in range(count))
        words = reader.varint("payload words", 0, 2**32 - 1)
    count = reader.varint("image count", 1, MAX_IMAGES)
    images, lengths, chunk_lengths = [], [], []
    for i in range(count):
        image_name = reader.string("image name", MAX_NAME_CHARS)
        mode = reader.u8("mode")
        if mode >= len(MODES):
            raise HeaderError(f"bad header: image {i} has mode number {mode}")
        width, height = reader.varint("width", 1, MAX_SIDE), reader.varint("height", 1, MAX_SIDE)
        if width * height > MAX_PIXELS:
            raise LimitError(f"image {i} too large: {width}x{height} = {width * height} pixels (limit {MAX_PIXELS})")
        coding = reader.u8("coding")
        if coding >= len(CODINGS) or (CODINGS[coding] == MODEL and not flags & _FLAG_MODEL):
            raise HeaderError(f"bad header: image {i} has coding number {coding}")
        lengths.append(reader.varint("data length", 0, MAX_DATA_BYTES))
        palette = None
        if MODES[mode] == "P":
            palette = reader.take(reader.varint("palette length", 0, MAX_PALETTE_BYTES), "palette")
        info = reader.info()
        trouble = bits_problem(info, MODES[mode], version)
        if trouble:
            raise HeaderError(f"bad header: image {i} {trouble}")
        table = reader.chunks(f"image {i}", MODES[mode]) if version >= FORMAT_METADATA else []
        chunk_lengths.append([length for _, _, length in table])
        chunks = tuple(metadata.Chunk(place, kind, b"") for place, kind, _ in table)
        depth, levels = 0, ()
        if version >= FORMAT_DEPTH:
            depth = reader.u8("depth")
            if depth >= len(depths.DEPTHS):
                raise HeaderError(f"bad header: image {i} has depth number {depth}")
            if depths.has_levels(depths.DEPTHS[depth]):
                levels = reader.levels(min(1 << depths.bits(depths.DEPTHS[depth]), width * height),
                                       len(MODES[mode]) if mode < 4 else 1)
        images.append(ImageEntry(image_name, MODES[mode], width, height, palette, info, CODINGS[coding], b"", chunks,
                                 depths.DEPTHS[depth], levels))
    if reader.position != len(raw):
        raise HeaderError(f"bad header: {len(raw) - reader.position} bytes after the last image")
    trouble = depth_problem(images)
    if trouble:
        raise HeaderError(f"bad header: {trouble}")
    if flags & _FLAG_MODEL:
        model_pixels = sum(im.width * im.height for im in images if im.coding == MODEL)
        if not model_pixels:
            raise HeaderError("bad header: the header names a model but no image is coded by it")
        schedule = _schedule(runs, max_batch, model_pixels, version)
        if sum(order) > model_pixels:  # every tile holds at least one pixel
            raise HeaderError(f"bad header: the stream order covers {sum(order)} tiles but the images hold "
                              f"{model_pixels} pixels")
        coder = CoderSettings(step, bound, tile, max_batch, schedule, constriction, extra, order)
    header = Header(name, sha, coder, tuple(images), pixels)
    if _encode_binary(header, words, lengths, version, chunk_lengths) != bytes(raw):
        raise HeaderError("bad header: not in its one canonical binary form")
    return header, lengths, chunk_lengths, words


def _encode_binary(h: Header, words: int, lengths: list[int], version: int,
                   chunk_lengths: list[list[int]] | None = None) -> bytes:
    """The binary header; `chunk_lengths`: each image's metadata chunks' data lengths, where its chunks hold no
    data (from_binary_with_chunks's), else theirs."""
    out = bytearray()
    model = h.uses_model
    out.append(_FLAG_MODEL if model else 0)
    out += bytes.fromhex(h.pixels_sha256[: 2 * PIXEL_DIGEST_BYTES])
    if model:
        c = h.coder
        _put_string(out, h.model_name)
        out += bytes.fromhex(h.model_sha256)
        _put_string(out, c.constriction)
        exponent = -math.log2(c.grid_step) if c.grid_step > 0 else -1.0
        whole = c.grid_bound == int(c.grid_bound) and 1 <= c.grid_bound <= 2**24
        if exponent == int(exponent) and 0 <= exponent <= 64 and whole:
            out.append(_GRID_POWER)
            _put_varint(out, int(exponent))
            _put_varint(out, int(c.grid_bound))
        else:
            out.append(_GRID_FLOATS)
            out += _F64.pack(c.grid_step) + _F64.pack(c.grid_bound)
        _put_varint(out, c.tile)
        _put_varint(out, c.max_batch)
        runs = _runs(c.schedule)
        _put_varint(out, len(runs))
        for kind, n, repeat in runs:
            out.append(ord(kind))
            _put_varint(out, n)
            _put_varint(out, repeat)
        _put_json(out, c.extra)
        if version >= FORMAT_ORDER:
            _put_varint(out, len(c.order))
            for run in c.order:
                _put_varint(out, run)
        elif c.order:
            raise ValueError(f"a stream order in a format-{version} header (format {FORMAT_ORDER} and later hold one)")
        _put_varint(out, words)
    _put_varint(out, len(h.images))
    for i, (image, length) in enumerate(zip(h.images, lengths)):
        _put_string(out, image.name)
        out.append(MODES.index(image.mode))
        _put_varint(out, image.width)
        _put_varint(out, image.height)
        out.append(CODINGS.index(image.coding))
        _put_varint(out, length)
        if image.mode == "P":
            _put_varint(out, len(image.palette))
            out += image.palette
        elif image.palette is not None:
            raise ValueError(f"a palette in a {image.mode} image")
        trouble = bits_problem(image.info, image.mode, version)
        if trouble:
            raise ValueError(f"image {i} {trouble}")
        _put_info(out, image.info)
        if version >= FORMAT_METADATA:
            sizes = [len(chunk.data) for chunk in image.metadata] if chunk_lengths is None else chunk_lengths[i]
            _put_chunks(out, [(chunk.place, chunk.kind, size) for chunk, size in zip(image.metadata, sizes)],
                        image.mode)
        elif image.metadata:
            raise ValueError(f"metadata in a format-{version} header (format {FORMAT_METADATA} and later hold them)")
        if version >= FORMAT_DEPTH:
            out.append(depths.DEPTHS.index(image.depth))
            for values in image.levels:  # each channel's: a count, the first value, then each step less 1
                _put_varint(out, len(values))
                for k, value in enumerate(values):
                    _put_varint(out, value - (values[k - 1] + 1 if k else 0))
        elif image.depth:
            raise ValueError(f"a 16-bit image in a format-{version} header (format {FORMAT_DEPTH} and later hold them)")
    trouble = depth_problem(h.images)
    if trouble:
        raise ValueError(trouble)
    return bytes(out)


def bits_problem(info: dict[str, Any], mode: str, version: int) -> str:
    """What is wrong with an image's bit depth below 8 (its info's "bits"; "" where nothing is, or it has none): it is
    1, 2 or 4, of a grey image (L), in a file of format 23 or later."""
    if "bits" not in info:
        return ""
    bits = info["bits"]
    if version < FORMAT_BITS:
        return f"holds a bit depth ({bits!r}), which format {version} does not (format {FORMAT_BITS} and later)"
    if type(bits) is not int or bits not in GREY_BITS:
        return f"has bit depth {bits!r} (1, 2 or 4 where it has one)"
    if mode != "L":
        return f"is a {mode} image with a bit depth of {bits} (grey images only)"
    return ""


def depth_problem(images) -> str:
    """What is wrong with the images' depths ("" where nothing is): a 16-bit image is grey or colour, with or
    without alpha, and holds no colour key; its low part (where its depth has low bits) follows it at once with its
    name, mode and size, and holds nothing but samples: no info, no metadata."""
    expected = None  # the image whose low part comes next
    for k, image in enumerate(images):
        if expected is not None:
            if image.depth != depths.LOW or (image.name, image.mode, image.width, image.height) != (
                    expected.name, expected.mode, expected.width, expected.height):
                return f"image {k - 1} ({expected.depth}) is not followed by its low part"
            if image.metadata or set(image.info) - {"planes"}:
                return f"image {k} (a low part) holds more than samples"
            expected = None
            continue
        if image.depth == depths.LOW:
            return f"image {k} is a low part without a 16-bit image before it"
        if image.depth:
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                return f"image {k} is a 16-bit {image.mode} image (16-bit images are L, LA, RGB or RGBA)"
            if set(image.info) - {"planes"}:
                return f"image {k} is a 16-bit image with {sorted(set(image.info) - {'planes'})} in its info"
        trouble = ""
        if image.depth or image.levels:
            trouble = depths.check_levels(image.depth, tuple(np.asarray(v, np.int64) for v in image.levels),
                                          len(image.mode), image.width * image.height)
        if trouble:
            return f"image {k}: {trouble}"
        if image.depth:
            if depths.low_bits(image.depth):
                expected = image
    if expected is not None:
        return f"the last image ({expected.depth}) has no low part"
    return ""


def _put_chunks(out: bytearray, chunks: list[tuple[int, bytes, int]], mode: str) -> None:
    """Format 17's table of an image's metadata chunks ((place, type, data length), ...): a varint count, then each
    chunk's place (u8), type (4 bytes) and data length (varint)."""
    trouble = metadata.problem(chunks, mode)
    if trouble:
        raise ValueError(trouble)
    _put_varint(out, len(chunks))
    for place, kind, length in chunks:
        out.append(place)
        out += kind
        _put_varint(out, length)


# An image's info in format 3: a mask byte. Bit 7: canonical JSON follows (varint length, then the object), for
# what the typed fields cannot hold; else bits 0-4 say which of these keys follow, in this order (0: no info; "bits",
# bit 4, in format 23 and later):
_INFO_KEYS = ("palette_mode", "transparency", "used", "planes", "bits")
_JSON_INFO = 0x80


def _put_info(out: bytearray, info: dict[str, Any]) -> None:
    typed = _typed_info(info)
    if typed is None:
        data = _canonical(info)
        out.append(_JSON_INFO)
        _put_varint(out, len(data))
        out += data
    else:
        out += typed


def _typed_info(info: dict[str, Any]) -> bytes | None:
    """The typed form of `info`, or None where it holds a key or a value of a shape the typed fields do not."""
    if not set(info) <= set(_INFO_KEYS):
        return None
    out = bytearray([sum(1 << bit for bit, key in enumerate(_INFO_KEYS) if key in info)])
    if "palette_mode" in info:
        if not isinstance(info["palette_mode"], str):
            return None
        _put_string(out, info["palette_mode"])
    if "transparency" in info:
        key = info["transparency"]
        if _is_count(key):  # a P image's transparent index, or an L image's colour key
            out.append(0)
            _put_varint(out, key)
        elif isinstance(key, str) and _is_hex_bytes(key):  # a P image's alpha per index
            out.append(1)
            _put_varint(out, len(key) // 2)
            out += bytes.fromhex(key)
        elif isinstance(key, list) and len(key) == 3 and all(map(_is_count, key)):  # an RGB colour key
            out.append(2)
            for value in key:
                _put_varint(out, value)
        else:
            return None
    if "used" in info:  # the sorted distinct indices of a P image, as a bitmap
        used = info["used"]
        if not (isinstance(used, str) and used and _is_hex_bytes(used)):
            return None
        indices = bytes.fromhex(used)
        if any(a >= b for a, b in zip(indices, indices[1:])):
            return None
        bitmap = bytearray(indices[-1] // 8 + 1)
        for index in indices:
            bitmap[index // 8] |= 1 << (index % 8)
        _put_varint(out, len(bitmap))
        out += bitmap
    if "planes" in info:  # plane name -> histogram {"values": hex, "counts": [...]} (codec/planes.py)
        planes = info["planes"]
        if not isinstance(planes, dict):
            return None
        _put_varint(out, len(planes))
        for name in sorted(planes):
            histogram = planes[name]
            if isinstance(histogram, dict) and set(histogram) == {"coding", "length"}:  # a classical coding
                if histogram["coding"] not in CODINGS[1:] or not _is_count(histogram["length"]):
                    return None
                _put_string(out, name)
                out.append(CODINGS.index(histogram["coding"]))
                _put_varint(out, histogram["length"])
                continue
            if not (isinstance(histogram, dict) and set(histogram) == {"values", "counts"}
                    and isinstance(histogram["values"], str) and _is_hex_bytes(histogram["values"])
                    and isinstance(histogram["counts"], list) and all(map(_is_count, histogram["counts"]))):
                return None
            _put_string(out, name)
            out.append(0)
            _put_varint(out, len(histogram["values"]) // 2)
            out += bytes.fromhex(histogram["values"])
            _put_varint(out, len(histogram["counts"]))
            for count in histogram["counts"]:
                _put_varint(out, count)
    if "bits" in info:  # a grey image's bit depth below 8 (bits_problem has checked it)
        if type(info["bits"]) is not int or not 0 <= info["bits"] <= 255:
            return None
        out.append(info["bits"])
    return bytes(out)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_hex_bytes(text: str) -> bool:
    return len(text) % 2 == 0 and _is_hex(text)


def _put_varint(out: bytearray, value: int) -> None:
    """Unsigned LEB128: 7 bits a byte, low bits first, the high bit set on every byte but the last."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_string(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
    _put_varint(out, len(data))
    out += data


def _put_json(out: bytearray, obj: dict[str, Any]) -> None:
    """An empty object as no bytes at all (most images have no info)."""
    data = _canonical(obj) if obj else b""
    _put_varint(out, len(data))
    out += data


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.position = raw, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.raw) - self.position:
            raise HeaderError(f"bad header: {what} runs past the end of the header")
        self.position += n
        return bytes(self.raw[self.position - n : self.position])

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str, lo: int, hi: int) -> int:
        value = shift = 0
        while True:
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return _int(value, what, lo, hi)
            shift += 7
            if shift > 63:
                raise HeaderError(f"bad header: {what} is a varint of more than 64 bits")

    def string(self, what: str, max_chars: int) -> str:
        data = self.take(self.varint(f"{what} length", 0, 4 * max_chars), what)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(f"bad header: {what} is not UTF-8") from None
        return _str(text, what, max_chars)

    def chunks(self, what: str, mode: str) -> list[tuple[int, bytes, int]]:
        """Format 17's table of an image's metadata chunks: (place, type, data length), ..."""
        found = []
        for _ in range(self.varint(f"{what}'s metadata chunks", 0, metadata.MAX_CHUNKS)):
            place = self.u8("metadata place")
            kind = self.take(4, "metadata chunk type")
            found.append((place, kind, self.varint("metadata length", 0, metadata.MAX_CHUNK_BYTES)))
        trouble = metadata.problem(found, mode)
        if trouble:
            raise HeaderError(f"bad header: {what}: {trouble}")
        return found

    def levels(self, most: int, channels: int) -> tuple[tuple[int, ...], ...]:
        """A levels depth's values (codec/depth.py), each channel's: a count (1 .. `most`: 2^n, and no more than the
        image's pixels, so that a small file cannot declare large tables), the first value, then each step less 1;
        every value at most 65535."""
        found = []
        for _ in range(channels):
            values, value = [], -1
            for _ in range(self.varint("levels", 1, most)):
                value += 1 + self.varint("level step", 0, 65535)
                if value > 65535:
                    raise HeaderError("bad header: a level past 65535")
                values.append(value)
            found.append(tuple(values))
        return tuple(found)

    def info(self) -> dict[str, Any]:
        mask = self.u8("info")
        if mask == _JSON_INFO:
            return self.json("info", empty=False)
        if mask >> len(_INFO_KEYS):
            raise HeaderError(f"bad header: info mask {mask:#x}")
        info: dict[str, Any] = {}
        if mask & 1:
            info["palette_mode"] = self.string("palette_mode", 16)
        if mask & 2:
            kind = self.u8("transparency")
            if kind == 0:
                info["transparency"] = self.varint("transparency", 0, 2**63)
            elif kind == 1:
                info["transparency"] = self.take(self.varint("transparency length", 0, 256), "transparency").hex()
            elif kind == 2:
                info["transparency"] = [self.varint("transparency", 0, 2**63) for _ in range(3)]
            else:
                raise HeaderError(f"bad header: transparency kind {kind}")
        if mask & 4:
            bitmap = self.take(self.varint("used length", 1, 32), "used")
            info["used"] = bytes(i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1).hex()
        if mask & 8:
            planes = {}
            for _ in range(self.varint("planes", 0, 16)):
                name = self.string("plane name", 64)
                kind = self.u8("plane coding")
                if kind:  # a classical coding of the plane, in the image's data
                    if kind >= len(CODINGS):
                        raise HeaderError(f"bad header: plane coding number {kind}")
                    planes[name] = {"coding": CODINGS[kind], "length": self.varint("plane length", 0, MAX_DATA_BYTES)}
                    continue
                values = self.take(self.varint("histogram values", 0, 256), "histogram values").hex()
                counts = [self.varint("histogram count", 0, 2**63) for _ in range(self.varint("histogram counts", 0, 256))]
                planes[name] = {"values": values, "counts": counts}
            info["planes"] = planes
        if mask & 16:
            info["bits"] = self.u8("bits")
        return info

    def json(self, what: str, empty: bool = True) -> dict[str, Any]:
        data = self.take(self.varint(f"{what} length", 0 if empty else 1, len(self.raw)), what)
        if not data:
            return {}
        try:
            obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
            canonical = _canonical(obj) == data
        except (ValueError, RecursionError) as error:
            raise HeaderError(f"bad header: {what} is not valid UTF-8 JSON ({type(error).__name__})") from None
        if not canonical or not obj:
            raise HeaderError(f"bad header: {what} is not canonical JSON")
        return _dict(obj, what, None)
