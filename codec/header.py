"""The .vz header: what the decoder needs besides the payload, as canonical UTF-8 JSON (see docs/FORMAT.md).

Frozen dataclasses on the Python side; `to_json` / `from_json` on the wire. `from_json` treats its input as
hostile: strict types, exactly the expected keys, documented limits (LimitError) checked before anything is
expanded, and only canonical JSON (sorted keys, no spaces, no duplicate keys), so that a header has one
byte representation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from codec import bitsback
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

_KIND_TO_JSON = {
    bitsback.DIRECT: "d", bitsback.BITSBACK: "b", bitsback.RAW: "r", bitsback.WHITENED: "w", bitsback.PREDICTIVE: "p",
    bitsback.PREDICTIVE_NEIGHBOURS: "q",
}
_JSON_TO_KIND = {v: k for k, v in _KIND_TO_JSON.items()}


@dataclass(frozen=True)
class CoderSettings:
    grid_step: float
    grid_bound: float
    tile: int
    max_batch: int
    schedule: tuple[tuple[str, int], ...]  # ((bitsback.DIRECT | bitsback.BITSBACK, n_tiles), ...)
    constriction: str  # version that wrote the payload
    extra: dict[str, Any] = field(default_factory=dict)  # opaque, JSON-able: torch version, device class, ...


@dataclass(frozen=True)
class ImageEntry:
    name: str
    mode: str  # e.g. "L", "RGB", "RGBA", "P"
    width: int
    height: int
    palette: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)  # small, JSON-able (e.g. an alpha histogram)


@dataclass(frozen=True)
class Header:
    model_name: str
    model_sha256: str  # first 16 lowercase hex chars of the weights' sha256
    coder: CoderSettings
    images: tuple[ImageEntry, ...]
    # sha256 over the images' pixel digests in order: one digest per file, so that archives of small images
    # do not pay 32 bytes each (64 lowercase hex chars)
    pixels_sha256: str = "0" * 64


# ---------------------------------------------------------------------------------------------- JSON


def to_json(header: Header) -> bytes:
    """Canonical UTF-8 JSON; refuses what `from_json` would refuse, so no unreadable file is ever written."""
    try:
        text = _canonical(_header_to_json(header))
    except (TypeError, ValueError) as error:  # NaN, a non-JSON object in info/extra, a lone surrogate
        raise HeaderError(f"header cannot be written as JSON: {error}") from None
    _json_to_header(json.loads(text))
    return text


def from_json(text: bytes) -> Header:
    try:
        obj = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
        canonical = _canonical(obj) == text
    except (ValueError, RecursionError) as error:  # UnicodeError and JSONDecodeError are ValueErrors
        raise HeaderError(f"bad header: not valid UTF-8 JSON ({type(error).__name__})") from None
    if not canonical:
        raise HeaderError("bad header: not canonical JSON (sorted keys, no spaces, no duplicates)")
    return _json_to_header(obj)


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
    for kind, n in schedule:
        if kind not in _KIND_TO_JSON:
            raise HeaderError(f"bad schedule kind {kind!r}")
        if runs and runs[-1][0] == _KIND_TO_JSON[kind] and runs[-1][1] == n:
            runs[-1][2] += 1
        else:
            runs.append([_KIND_TO_JSON[kind], n, 1])
    return runs


def _json_to_header(obj: Any) -> Header:
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
        schedule=_schedule(coder["schedule"], max_batch, sum(im.width * im.height for im in images)),
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
    return ImageEntry(
        name=_str(d["name"], "image name", MAX_NAME_CHARS),
        mode=_str(d["mode"], "mode", 16),
        width=width,
        height=height,
        palette=palette,
        info=_dict(d["info"], "info", None),
    )


def _schedule(obj: Any, max_batch: int, total_pixels: int) -> tuple[tuple[str, int], ...]:
    """Expand [[kind, n, repeat], ...], refusing anything that could not come from a real encoding."""
    if not isinstance(obj, list):
        raise HeaderError("bad header: schedule must be a list")
    batches = tiles = 0
    for run in obj:
        if not (isinstance(run, list) and len(run) == 3 and isinstance(run[0], str) and run[0] in _JSON_TO_KIND):
            raise HeaderError(f"bad header: schedule run must be [\"d\", \"b\" or \"r\", n, repeat], got {str(run)[:40]}")
        n, repeat = _int(run[1], "schedule n", 1, max_batch), _int(run[2], "schedule repeat", 1, MAX_BATCHES)
        batches, tiles = batches + repeat, tiles + n * repeat
        if batches > MAX_BATCHES:
            raise LimitError(f"schedule too long: more than {MAX_BATCHES} batches")
    if tiles > total_pixels:  # every tile holds at least one pixel
        raise HeaderError(f"bad header: schedule covers {tiles} tiles but the images hold {total_pixels} pixels")
    # Shared tuples: a long run costs one pointer per batch.
    return tuple(entry for kind, n, repeat in obj for entry in [(_JSON_TO_KIND[kind], n)] * repeat)


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
