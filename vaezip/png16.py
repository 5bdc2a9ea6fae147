"""16-bit PNGs read and written by vaezip itself: Pillow reads 16-bit grey + alpha, RGB and RGBA PNGs as 8-bit
images (it keeps the high bytes) and writes none of them.

    samples, mode = read(data)          # (H, W) or (H, W, C) uint16, "L", "LA", "RGB" or "RGBA"
    data = write(samples, mode, chunks) # a PNG file, the metadata chunks each in its place

The reader takes what the PNG specification allows of a 16-bit image: any IDAT split, any filter per row, Adam7
interlacing. It refuses a tRNS chunk (a transparent colour: vaezip keeps 16-bit images without one) and damage
(a critical chunk's CRC, image data that is short, long or not a zlib stream). Rows are unfiltered by numba where it
is installed, else by the same code in Python (slower).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from codec.classic import PNG_SIGNATURE, png_chunk
from vaezip.metadata import with_chunks

COLOUR_TYPES = {0: "L", 4: "LA", 2: "RGB", 6: "RGBA"}  # PNG colour type -> mode, for bit depth 16
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
# Adam7: each pass's first row, first column, row step and column step
_PASSES = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
_CHUNK_HEAD = struct.Struct(">I4s")


class PngError(ValueError):
    """The PNG cannot be read as a 16-bit image (the message says why, in a few words)."""


def header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR; None where `data` starts otherwise."""
    if data[:8] != PNG_SIGNATURE or data[8:16] != b"\0\0\0\x0dIHDR" or len(data) < 33:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def read(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """A 16-bit PNG file's samples and mode; PngError where it is not one or cannot be read exactly."""
    found = header(data)
    if found is None:
        raise PngError("not a PNG")
    width, height, depth, colour, interlace = found
    if depth != 16 or colour not in COLOUR_TYPES:
        raise PngError(f"bit depth {depth}, colour type {colour}: not a 16-bit grey, grey + alpha, RGB or RGBA PNG")
    if not (1 <= width < 2**31 and 1 <= height < 2**31) or width * height > max_pixels:
        raise PngError(f"a {width}x{height} image")
    if interlace not in (0, 1) or data[26:28] != b"\0\0":
        raise PngError("unknown compression, filter or interlace method")
    mode = COLOUR_TYPES[colour]
    stream = zlib.decompressobj()
    position, parts, size = 8, [], _data_size(width, height, 16 * CHANNELS[mode], interlace)
    inflated = 0  # bytes so far: the stream is never inflated past one byte more than the image holds
    data_ended = False  # IDATs are consecutive
    while True:
        if position + 8 > len(data):
            raise PngError("file ends before IEND")
        length, kind = _CHUNK_HEAD.unpack_from(data, position)
        body = data[position + 8 : position + 8 + length]
        if length >= 2**31 or len(body) < length or len(data) < position + 12 + length:
            raise PngError(f"{kind!r} chunk cut short")
        if kind[0] & 32 == 0 or kind == b"tRNS":  # critical chunks (and the transparent colour) must be whole
            crc = struct.unpack_from(">I", data, position + 8 + length)[0]
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                raise PngError(f"{kind.decode('latin-1')} chunk damaged (CRC)")
        if kind == b"IDAT" and data_ended:
            raise PngError("image data split by another chunk")
        data_ended |= bool(parts) and kind != b"IDAT"
        if kind == b"IHDR" and position > 8:
            raise PngError("a second IHDR")
        if kind == b"IDAT":
            if inflated > size:  # (a max_length of 0 would mean no limit)
                raise PngError("image data longer than the image")
            try:
                parts.append(stream.decompress(body, size + 1 - inflated))
            except zlib.error:
                raise PngError("image data is not a zlib stream") from None
            inflated += len(parts[-1])
        elif kind == b"tRNS":
            raise PngError("a 16-bit PNG with a transparent colour (tRNS); vaezip keeps 16-bit images without one")
        elif kind == b"PLTE" and colour in (0, 4):
            raise PngError("a palette in a grey PNG")
        elif kind == b"IEND":
            break
        elif kind[0] & 32 == 0 and kind not in (b"IHDR", b"PLTE"):
            raise PngError(f"unknown critical chunk {kind.decode('latin-1')}")
        position += 12 + length
    raw = b"".join(parts)
    if len(raw) != size or not stream.eof:
        raise PngError("image data shorter or longer than the image")
    channels = CHANNELS[mode]
    if interlace == 0:
        samples = _unfiltered(raw, height, width, 2 * channels)
    else:
        samples = np.zeros((height, width * channels), dtype=np.uint16)
        offset = 0
        for top, left, down, across in _PASSES:
            rows, columns = _pass_size(height, top, down), _pass_size(width, left, across)
            if rows and columns:
                length = rows * (1 + 2 * channels * columns)
                part = _unfiltered(raw[offset : offset + length], rows, columns, 2 * channels)
                cells = samples.reshape(height, width, channels)
                cells[top::down, left::across] = part.reshape(rows, columns, channels)
                offset += length
    samples = samples.reshape(height, width, channels)
    return (samples[..., 0] if channels == 1 else samples), mode


# PNG colour type -> samples a pixel, at any bit depth
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def data_damage(data: bytes) -> str | None:
    """What is wrong with a PNG's image data that Pillow reads past without a word (None where nothing is): a
    critical chunk's CRC up to the image data's end (Pillow checks none of IDAT's), a stream that is not zlib, or
    image data shorter or longer than the image, where Pillow fills what is missing with black (`compress --rm` then
    deleted an image it had not read). As read() refuses a 16-bit PNG, for any bit depth; the stream is inflated
    and counted, not kept. What follows the image data is metadata, named where it is damaged (vaezip/metadata.py,
    vaezip/file_ends.py); an IDAT after another chunk is none of the image's, as Pillow reads it."""
    found = header(data)
    if found is None:
        return None  # Pillow's to judge
    width, height, depth, colour, interlace = found
    if colour not in _SAMPLES or depth not in (1, 2, 4, 8, 16) or interlace not in (0, 1):
        return None
    size = _data_size(width, height, _SAMPLES[colour] * depth, interlace)
    stream, position, inflated, seen = zlib.decompressobj(), 8, 0, False
    while position + 8 <= len(data):
        length, kind = _CHUNK_HEAD.unpack_from(data, position)
        if kind == b"IEND" or (seen and kind != b"IDAT"):  # the image data's end
            break
        body = data[position + 8 : position + 8 + length]
        if length >= 2**31 or len(data) < position + 12 + length:
            return f"{kind.decode('latin-1')} chunk cut short"
        if kind[0] & 32 == 0:  # critical: must be whole
            crc = struct.unpack_from(">I", data, position + 8 + length)[0]
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                return f"{kind.decode('latin-1')} chunk damaged (CRC)"
        if kind == b"IDAT":
            seen = True
            try:
                while body and inflated <= size:  # a piece at a time: never more than the image and one byte
                    inflated += len(stream.decompress(body, size + 1 - inflated))
                    body = stream.unconsumed_tail
            except zlib.error:
                return "image data is not a zlib stream"
        position += 12 + length
    if inflated != size or not stream.eof:
        return "image data shorter or longer than the image"
    return None


def _pass_size(size: int, start: int, step: int) -> int:
    return max(0, (size - start + step - 1) // step)


def _data_size(width: int, height: int, pixel_bits: int, interlace: int) -> int:
    """The bytes of a PNG's inflated image data: each row (each pass's, interlaced) a filter byte and its pixels,
    `pixel_bits` each, rounded up to whole bytes."""
    if not interlace:
        return height * (1 + (width * pixel_bits + 7) // 8)
    total = 0
    for top, left, down, across in _PASSES:
        rows, columns = _pass_size(height, top, down), _pass_size(width, left, across)
        if rows and columns:
            total += rows * (1 + (columns * pixel_bits + 7) // 8)
    return total


def _unfiltered(raw: bytes, rows: int, columns: int, pixel_bytes: int) -> np.ndarray:
    """(rows, columns * pixel_bytes / 2) uint16 samples of filtered scanlines (each a filter byte, then the row)."""
    lines = np.frombuffer(raw, dtype=np.uint8).reshape(rows, 1 + columns * pixel_bytes)
    filters = lines[:, 0]
    if int(filters.max(initial=0)) > 4:
        raise PngError(f"unknown row filter {int(filters.max())}")
    out = np.empty((rows, columns * pixel_bytes), dtype=np.uint8)
    _unfilter(np.ascontiguousarray(lines[:, 1:]), filters.copy(), out, pixel_bytes)
    return out.view(">u2").astype(np.uint16)


def _unfilter_python(lines: np.ndarray, filters: np.ndarray, out: np.ndarray, pixel_bytes: int) -> None:
    """PNG's five filters undone, row by row (out[r] from lines[r] and out[r - 1]), in byte arithmetic mod 256."""
    rows, stride = lines.shape
    for r in range(rows):
        kind = filters[r]
        for i in range(stride):
            a = int(out[r, i - pixel_bytes]) if i >= pixel_bytes else 0
            b = int(out[r - 1, i]) if r > 0 else 0
            if kind == 0:
                value = 0
            elif kind == 1:
                value = a
            elif kind == 2:
                value = b
            elif kind == 3:
                value = (a + b) // 2
            else:
                c = int(out[r - 1, i - pixel_bytes]) if r > 0 and i >= pixel_bytes else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                value = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[r, i] = (int(lines[r, i]) + value) & 255


_COMPILED: list = []


def _unfilter(lines: np.ndarray, filters: np.ndarray, out: np.ndarray, pixel_bytes: int) -> None:
    """_unfilter_python compiled by numba on first use (its import costs ~0.3 s: not for a command reading no 16-bit
    PNG); that function itself where numba is missing."""
    if not _COMPILED:
        try:  # a dependency, but reading a PNG must not need it
            import numba

            _COMPILED.append(numba.njit(cache=False, nogil=True)(_unfilter_python))
        except ImportError:  # pragma: no cover - only where numba is missing
            _COMPILED.append(_unfilter_python)
    _COMPILED[0](lines, filters, out, pixel_bytes)


def write(samples: np.ndarray, mode: str, chunks=()) -> bytes:
    """A 16-bit PNG of `samples` ((H, W) or (H, W, C) uint16) in `mode`, non-interlaced, each row with the filter
    whose bytes sum smallest as signed (libpng's heuristic), deflated at level 6; `chunks` (codec.metadata.Chunk)
    each in its place, as vaezip/metadata.py's with_chunks puts them."""
    height, width = samples.shape[:2]
    channels = CHANNELS[mode]
    rows = np.ascontiguousarray(samples.reshape(height, width * channels).astype(">u2")).view(np.uint8)
    packer = zlib.compressobj(6)
    data = []
    for top in range(0, height, _WRITE_ROWS):  # a block of rows at a time: five filtered copies of a whole
        above = rows[top - 1] if top else np.zeros(rows.shape[1], np.uint8)  # image would take 10 bytes a byte
        data.append(packer.compress(_filtered(rows[top : top + _WRITE_ROWS], above, 2 * channels).tobytes()))
    data.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 16, {v: k for k, v in COLOUR_TYPES.items()}[mode], 0, 0, 0)
    png = PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(data)) + png_chunk(b"IEND", b"")
    return with_chunks(png, tuple(chunks))


_WRITE_ROWS = 256


def _filtered(block: np.ndarray, above: np.ndarray, pixel_bytes: int) -> np.ndarray:
    """(rows, 1 + stride) uint8 scanlines of `block` ((rows, stride) bytes; `above`: the row before it), each with
    the filter whose bytes sum smallest as signed."""
    rows = block.astype(np.int16)
    up = np.concatenate([above[None].astype(np.int16), rows[:-1]])
    left = np.zeros_like(rows)
    left[:, pixel_bytes:] = rows[:, :-pixel_bytes]
    corner = np.zeros_like(rows)
    corner[:, pixel_bytes:] = up[:, :-pixel_bytes]
    p = left + up - corner
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - corner)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    candidates = np.stack([rows, rows - left, rows - up, rows - (left + up) // 2, rows - paeth]) & 255  # (5, R, S)
    cost = np.where(candidates >= 128, 256 - candidates, candidates).sum(axis=2)  # (5, R)
    chosen = cost.argmin(axis=0)
    lines = np.empty((len(rows), 1 + rows.shape[1]), dtype=np.uint8)
    lines[:, 0] = chosen
    lines[:, 1:] = candidates[chosen, np.arange(len(rows))]
    return lines
