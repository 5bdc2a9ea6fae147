"""The classical path of format 3: an image coded without the model (raw, PNG or WebP samples, codec/classic.py)
where that is smaller than the model's coding. No torch here: a file whose images all took this path decodes
without the model, and without importing torch.

What the classical codecs see is an image's planes as numpy arrays (vaezip/images.py), channels last:

| mode | samples                                                   | channels |
|------|-----------------------------------------------------------|----------|
| L    | grey                                                      | 1        |
| LA   | grey, alpha                                               | 2        |
| RGB  | red, green, blue                                          | 3        |
| RGBA | red, green, blue, alpha                                   | 4        |
| P    | the indices; or, where the used indices have distinct colours (`info["used"]`), the colours | 1 or 3 |

The palette, its mode, transparency and colour keys stay in the header entry, as for the model path, so each
image comes back through images.join_planes and is checked against the file's pixel checksum.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Executor
from typing import Any

import numpy as np
from PIL import Image

from codec import classic
from codec.depth import LOW
from codec.errors import CodingError, HeaderError
from codec.header import MODEL, Header, ImageEntry
from codec.errors import LimitError
from vaezip.errors import IntegrityError
from vaezip.images import MAX_IMAGE_PIXELS, SUPPORTED_MODES, Planes, join_planes

# Pixels of all the images of one file together: the decoder holds every decoded image until the checksum of
# the whole file is verified (~1 GiB of RGBA at the limit), and a forged header must not claim more.
MAX_FILE_PIXELS = 2**28
_INFO_KEYS = {"palette_mode", "transparency", "used", "bits"}  # what a classical entry's info may hold


def channels(mode: str, info: dict[str, Any]) -> int:
    """Channels of a classical entry's samples."""
    return {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode) or (3 if "used" in info else 1)


def representations(planes: Planes, image: Image.Image) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The ways the classical codecs can hold the image: [(samples (H, W) or (H, W, C) uint8, info), ...]."""
    if planes.mode == "P":
        info = {key: value for key, value in planes.info.items() if key != "used"}
        found = [(np.ascontiguousarray(np.asarray(image)), info)]  # (H, W) indices
        if planes.model_plane is not None:  # distinct colours: WebP finds its own palette in them
            found.append((np.ascontiguousarray(planes.model_plane.transpose(1, 2, 0)), dict(planes.info)))
        return found
    parts = [*planes.model_plane, *planes.side_planes.values()]  # each (H, W)
    samples = parts[0] if len(parts) == 1 else np.stack(parts, axis=-1)
    return [(np.ascontiguousarray(samples), dict(planes.info))]


def smallest_entry(name: str, planes: Planes, image: Image.Image, pool: Executor | None = None,
                   fast: bool = False, codings=classic.CODINGS) -> tuple[ImageEntry, dict[str, int]]:
    """The header entry of the image's smallest classical coding, and the bytes each coding took (the best of
    its representations); `pool`: threads to make the codings of a representation in at once; `fast`: the
    quicker WebP of compress --fast (codec/classic.py: FAST_WEBP_QUALITY); `codings`: those tried (raw among
    them: it holds anything)."""
    best, sizes = None, {}
    for samples, info in representations(planes, image):
        coding, data, tried = classic.smallest(samples, codings, pool=pool, fast=fast)
        for key, size in tried.items():
            sizes[key] = min(size, sizes.get(key, size))
        if best is None or len(data) < len(best.data):
            best = ImageEntry(name, planes.mode, planes.width, planes.height, planes.palette, info, coding, data)
    return best, sizes


def check_file_pixels(total: int, error: type[Exception]) -> None:
    if total > MAX_FILE_PIXELS:
        raise error(f"{total} pixels in one file, more than vaezip's limit of {MAX_FILE_PIXELS}: use several files")


def check_header(header: Header) -> None:
    """vaezip's checks of a header that need no model, before any decoding work (the codec checks the rest)."""
    for entry in header.images:
        check_entry(entry)
    check_file_pixels(sum(e.width * e.height for e in header.images), LimitError)


def check_entry(entry: ImageEntry) -> None:
    """What vaezip adds to an image entry of either path; and a classical entry's info."""
    if entry.width * entry.height > MAX_IMAGE_PIXELS:
        raise LimitError(
            f"{entry.name}: {entry.width}x{entry.height} is more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)"
        )
    if entry.mode not in SUPPORTED_MODES:
        raise HeaderError(f"bad header: {entry.name}: unsupported image mode {entry.mode!r}")
    palette_mode = entry.info.get("palette_mode")
    if entry.mode == "P" and (entry.palette is None or not isinstance(palette_mode, str) or not 1 <= len(palette_mode) <= 8):
        raise HeaderError(f"bad header: {entry.name}: a P image needs a palette and a palette_mode such as RGB")
    if entry.coding == MODEL:
        return
    extra = set(entry.info) - _INFO_KEYS
    if extra or ("used" in entry.info and entry.mode != "P"):
        raise HeaderError(f"bad header: {entry.name}: info keys {sorted(entry.info)[:5]} do not fit a {entry.coding} image")


def decode_entry(entry: ImageEntry) -> Image.Image:
    """The image of a classical entry (IntegrityError where its data or info cannot be one)."""
    try:
        samples = classic.decode(entry.coding, entry.data, entry.height, entry.width, channels(entry.mode, entry.info))
    except CodingError as error:
        raise IntegrityError(
            f"{entry.name}: its {entry.coding} data does not decode ({error}); the file is damaged"
        ) from None
    if samples.ndim == 2:
        samples = samples[..., None]  # (H, W, 1)
    planes = Planes(entry.mode, entry.width, entry.height, None, {}, entry.palette, dict(entry.info))
    if entry.mode == "P" and "used" not in entry.info:
        planes.side_planes["index"] = np.ascontiguousarray(samples[..., 0])
    else:
        colour = 1 if entry.mode in ("L", "LA") else 3
        planes.model_plane = np.ascontiguousarray(samples[..., :colour].transpose(2, 0, 1))  # (C, H, W)
        if entry.mode in ("LA", "RGBA"):
            planes.side_planes["alpha"] = np.ascontiguousarray(samples[..., colour])
    try:
        return join_planes(planes)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise IntegrityError(
            f"{entry.name}: cannot rebuild the image ({type(error).__name__}: {error}); the file is damaged"
        ) from None


def combined_checksum(digests) -> str:
    """One sha256 over the images' pixel digests (hex) in order: the file's proof of an exact decode."""
    combined = hashlib.sha256()
    for digest in digests:
        combined.update(bytes.fromhex(digest))
    return combined.hexdigest()


def with_depth(digest: str, depth: str, levels) -> str:
    """An image's pixel digest as the file's checksum holds it: a 16-bit image's high part's also covers its depth
    and levels (format 18), header data that turn the parts into the image, so that an edited depth is found as an
    edited pixel is; any other image's as it is."""
    if not depth or depth == LOW:
        return digest
    combined = hashlib.sha256(bytes.fromhex(digest) + b"depth:" + depth.encode())
    for values in levels:
        combined.update(len(values).to_bytes(4, "big") + b"".join(value.to_bytes(2, "big") for value in values))
    return combined.hexdigest()


def entry_digests(header: Header, results) -> list[str]:
    """The decoded images' (`results`: (name, image) in the header's order) digests as the checksum holds them."""
    from vaezip.images import pixel_checksum

    return [with_depth(pixel_checksum(image), entry.depth, entry.levels)
            for entry, (_, image) in zip(header.images, results)]


def matches(header: Header, digests) -> bool:
    """Whether the images' pixel digests give the header's checksum (format 3 keeps a prefix of it)."""
    return combined_checksum(digests)[: len(header.pixels_sha256)] == header.pixels_sha256


def decode_without_model(header: Header) -> list[tuple[str, Image.Image]]:
    """Every image of a file whose images are all coded classically, checked against the pixel checksum."""
    if any(entry.coding == MODEL for entry in header.images):
        raise ValueError("this file needs the model")
    check_header(header)
    results = [(entry.name, decode_entry(entry)) for entry in header.images]
    if not matches(header, entry_digests(header, results)):
        names = results[0][0] if len(results) == 1 else f"{len(results)} images"
        raise IntegrityError(f"{names}: decoded pixels do not match the checksum; the file is damaged")
    return results
