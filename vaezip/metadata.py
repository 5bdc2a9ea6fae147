"""An image's metadata on its way through vaezip: read from its file as PNG ancillary chunks (codec/metadata.py says
which are kept), carried in the PIL image's info under METADATA, stored in a format-17 header, and written back into
the PNG that decompress makes.

A PNG's chunks are taken as they are, each with its place. Other formats' colour profile, EXIF and XMP (what
Pillow reads of them) become the PNG chunks that hold the same: iCCP, eXIf and an iTXt named XML:com.adobe.xmp.
"""

from __future__ import annotations

import struct
import zlib

from codec.metadata import AFTER_DATA, AFTER_HEADER, BEFORE_DATA, Chunk, keepable

METADATA = "vaezip.metadata"  # image.info key: the image's chunks (a tuple of codec.metadata.Chunk)
DROPPED = "vaezip.dropped"  # image.info key: the chunk types its file held that are not kept (a tuple of bytes)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LENGTH_TYPE = struct.Struct(">I4s")
_XMP_KEYWORD = b"XML:com.adobe.xmp"
_EXIF_PREFIX = b"Exif\0\0"
_TIFF_HEADS = (b"II*\0", b"MM\0*")


def read_png_chunks(file) -> tuple[tuple[Chunk, ...], tuple[bytes, ...]]:
    """The kept chunks of the PNG file object `file` (read from its start; its position is put back) and the types
    of the ancillary ones left out. A file cut short or malformed gives what was read before the fault (the
    image's decoder has the final word on the file)."""
    position = file.tell()
    kept, dropped = [], []
    try:
        file.seek(0)
        if file.read(8) != _PNG_SIGNATURE:
            return (), ()
        seen_palette = seen_data = False
        while True:
            head = file.read(8)
            if len(head) < 8:
                break
            length, kind = _LENGTH_TYPE.unpack(head)
            if kind == b"IEND" or length >= 2**31:
                break
            if kind in (b"IHDR", b"PLTE", b"IDAT") or not kind[0] & 32:  # critical: skipped, marking the place
                seen_palette |= kind == b"PLTE"
                seen_data |= kind == b"IDAT"
                file.seek(length + 4, 1)
                continue
            if not keepable(kind):
                dropped.append(kind)
                file.seek(length + 4, 1)
                continue
            data = file.read(length)
            file.seek(4, 1)  # the chunk's CRC: Pillow checked it while reading the image
            if len(data) < length:
                break
            place = AFTER_DATA if seen_data else BEFORE_DATA if seen_palette else AFTER_HEADER
            kept.append(Chunk(place, kind, data))
    except (OSError, ValueError, struct.error):
        pass
    finally:
        file.seek(position)
    return tuple(kept), tuple(dropped)


def chunks_from_info(info: dict) -> tuple[tuple[Chunk, ...], tuple[bytes, ...]]:
    """The chunks that hold what Pillow read of a non-PNG file's metadata (its info): the colour profile, EXIF and
    XMP; and what could not be held (EXIF that is not a TIFF structure)."""
    kept, dropped = [], []
    profile = info.get("icc_profile")
    if isinstance(profile, (bytes, bytearray)) and profile:
        kept.append(Chunk(AFTER_HEADER, b"iCCP", b"ICC profile\0\0" + zlib.compress(bytes(profile), 9)))
    exif = info.get("exif")
    if isinstance(exif, (bytes, bytearray)) and exif:
        exif = bytes(exif)
        exif = exif[len(_EXIF_PREFIX):] if exif.startswith(_EXIF_PREFIX) else exif
        if exif[:4] in _TIFF_HEADS:
            kept.append(Chunk(AFTER_HEADER, b"eXIf", exif))
        else:
            dropped.append(b"eXIf")
    xmp = info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, (bytes, bytearray)) and xmp:
        # iTXt: keyword, NUL, compression flag and method (0: not compressed), language tag and translated keyword
        # (both empty, each NUL-terminated), the UTF-8 text
        kept.append(Chunk(BEFORE_DATA, b"iTXt", _XMP_KEYWORD + b"\0\0\0\0\0" + bytes(xmp)))
    return tuple(kept), tuple(dropped)


def image_chunks(image) -> tuple[Chunk, ...]:
    """The chunks an image carries: those its file held where vaezip opened it (open_image), else those that hold
    its colour profile, EXIF and XMP as Pillow holds them (an image an API caller opened or made)."""
    chunks = image.info.get(METADATA)
    if chunks is not None:
        return tuple(chunks)
    return chunks_from_info(image.info)[0]


def attach(image, chunks: tuple[Chunk, ...]) -> None:
    """Give a decoded image its chunks (METADATA), and Pillow's own keys for what they hold, so that a caller who
    saves it with Pillow in another format keeps its colour profile and EXIF."""
    if not chunks:
        return
    image.info[METADATA] = tuple(chunks)
    for chunk in chunks:
        if chunk.kind == b"iCCP" and "icc_profile" not in image.info:
            name_end = chunk.data.find(b"\0")
            try:
                if name_end > 0 and chunk.data[name_end + 1: name_end + 2] == b"\0":
                    image.info["icc_profile"] = _inflate(chunk.data[name_end + 2:])
            except zlib.error:
                pass  # the PNG still gets the chunk as it was
        elif chunk.kind == b"eXIf" and "exif" not in image.info:
            image.info["exif"] = _EXIF_PREFIX + chunk.data


def _inflate(data: bytes, limit: int = 2**26) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise zlib.error("profile too large")
    return out


def with_chunks(png: bytes, chunks: tuple[Chunk, ...]) -> bytes:
    """The PNG file `png` (as Pillow writes it: IHDR first, then its other chunks, IDATs, IEND) with `chunks`
    each in its place: after IHDR, before the first IDAT, or before IEND."""
    if not chunks:
        return png
    placed = {place: b"".join(_chunk(c.kind, c.data) for c in chunks if c.place == place)
              for place in (AFTER_HEADER, BEFORE_DATA, AFTER_DATA)}
    header_end = 8 + 12 + _LENGTH_TYPE.unpack_from(png, 8)[0]
    first_data = _find_chunk(png, b"IDAT")
    end = len(png) - 12  # IEND: an empty chunk, the file's last
    if png[end + 4: end + 8] != b"IEND" or first_data < 0:
        raise ValueError("not a PNG as Pillow writes it")
    return b"".join([png[:header_end], placed[AFTER_HEADER], png[header_end:first_data], placed[BEFORE_DATA],
                     png[first_data:end], placed[AFTER_DATA], png[end:]])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return _LENGTH_TYPE.pack(len(data), kind) + data + struct.pack(">I", zlib.crc32(kind + data))


def _find_chunk(png: bytes, wanted: bytes) -> int:
    """The offset of the first chunk of type `wanted` in the PNG, or -1."""
    at = 8
    while at + 8 <= len(png):
        length, kind = _LENGTH_TYPE.unpack_from(png, at)
        if kind == wanted:
            return at
        at += 12 + length
    return -1


def describe(chunks: tuple[Chunk, ...]) -> str:
    """'iCCP, pHYs, 2 tEXt (3.3 KB)': the chunk types in file order, counted, and their size."""
    counts: dict[bytes, int] = {}
    for chunk in chunks:
        counts[chunk.kind] = counts.get(chunk.kind, 0) + 1
    names = ", ".join(kind.decode() if n == 1 else f"{n} {kind.decode()}" for kind, n in counts.items())
    size = sum(12 + len(chunk.data) for chunk in chunks)
    return f"{names} ({size / 1000:.1f} KB)" if size >= 1000 else f"{names} ({size} bytes)"
