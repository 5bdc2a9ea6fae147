"""The .vz file: magic, version, a header, the payload, CRC32. Byte by byte in docs/FORMAT.md.

Formats 1 and 2 (still read; written on request):

    offset      size  field
    0           8     magic  89 2E 56 5A 0D 0A 1A 0A  ("\\x89.VZ\\r\\n\\x1a\\n")
    8           2     format version, u16 little-endian
    10          4     N = header length in bytes, u32 LE
    14          N     header: canonical UTF-8 JSON (sorted keys, no spaces), zlib-deflated (RFC 1950)
    14+N        4     CRC32 of bytes [0, 14+N), u32 LE
    18+N        4     W = payload length in 32-bit words, u32 LE
    22+N        4W    payload: the ANS words, u32 LE each
    22+N+4W     4     CRC32 of bytes [18+N, 22+N+4W) (count and payload), u32 LE; then end of file

Formats 3 to 23 (written by default; shown here as 3 to 6, which differ from 3 only in the tile kinds their
schedules may hold, codec/tilekinds.py; later ones add header fields and store it deflated, docs/FORMAT.md): a
binary header (header.py: to_binary) that also says how each image is coded,
so that a 5x5 image costs ~100 bytes, not ~400:

    0           8     magic
    8           2     format version, u16 LE (3)
    10          v     N = header length in bytes, unsigned LEB128 varint
    10+v        N     header (binary; declares each classical coding's length and the count of ANS words)
    10+v+N      D     each image's classical coding (model-coded images: of their side planes, if any)
    10+v+N+D    4W    the ANS words of the model-coded images, u32 LE each
    end-4       4     CRC32 of every byte before it, u32 LE; then end of file

Reading treats the input as hostile: every length is checked against the real input size and against the
documented limits (MAX_HEADER_BYTES here, the rest in header.py) before anything is allocated, and each way a
file can be broken raises its own FormatError subclass (errors.py) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from codec import tilekinds
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodingError,
    HeaderError,
    LimitError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from codec.header import CoderSettings, Header, ImageEntry, from_binary_with_chunks, from_json, to_binary, to_json
from codec.metadata import Chunk

MAGIC = b"\x89.VZ\r\n\x1a\n"  # non-ASCII first byte, then CRLF / EOF (^Z) / LF traps as in PNG
# Version 3: a binary header, and images coded classically (codec/classic.py) beside the model's; the model
# path is version 2's. Version 2: the model's distributions are computed by integer-exact inference
# (vaezip/model/integer.py), so a file decodes on any machine. Version 1 (float inference) files have version
# 2's layout and decode only on the kind of machine that made them. All are still read, 2 written on request
# (--format 2) and 1 only by the float coder (vaezip/coding.py: TorchLatentModel(integer=False)).
VERSION = 3
# Format 3 and importance-weighted bits-back batches (codec/tilekinds.py).
IMPORTANCE_VERSION = 4
# Format 4 and predictor tiles with Laplace residuals (codec/tilekinds.py: PREDICTIVE_LAPLACE).
LAPLACE_VERSION = 5
# Format 5 and predictor tiles through the blend of predictors (codec/tilekinds.py: PREDICTIVE_BLEND).
BLEND_VERSION = 6
# Format 6 and the stream order in the header: the tiles without the model first (codec/bitsback.py).
ORDER_VERSION = 7
# Format 7 and predictor tiles with residual tables fitted on photographs (codec/tilekinds.py: PREDICTIVE_FITTED).
FITTED_VERSION = 8
# Format 8 and predictor tiles whose contexts adapt over the stream (codec/tilekinds.py: PREDICTIVE_ADAPTIVE).
ADAPTIVE_VERSION = 9
# Format 9 and predictor tiles that blend in a local least-squares prediction (codec/tilekinds.py:
# PREDICTIVE_LEAST_SQUARES).
LEAST_SQUARES_VERSION = 10
# Format 10 with its header deflated (raw deflate, RFC 1951), written where that saves DEFLATE_SAVING bytes or
# more: an archive of many small images repeats each image's mode, size and coding in it, and numbers their
# names (a few bytes' saving is not worth a file that vaezip before format 11 cannot read).
DEFLATED_VERSION = 11
DEFLATE_SAVING = 16
# Format 11 and predictor tiles of the cascade (codec/tilekinds.py: PREDICTIVE_CASCADE), the header always deflated.
CASCADE_VERSION = 12
# Format 12 and predictor tiles of the cascade with parity (codec/tilekinds.py: PREDICTIVE_PARITY).
PARITY_VERSION = 13
# Format 13 and predictor tiles of the wide cascade (codec/tilekinds.py: PREDICTIVE_WIDE).
WIDE_VERSION = 14
# Format 14 and predictor tiles of the staged cascade (codec/tilekinds.py: PREDICTIVE_STAGED).
STAGED_VERSION = 15
# Format 15 and the staged cascade's tiles in sections, each on a stack of its own (codec/tilekinds.py:
# PREDICTIVE_SECTIONS): a decoder decodes the sections side by side.
SECTIONS_VERSION = 16
# Format 16 and each image's metadata in the header: PNG ancillary chunks that decompress writes back (a colour
# profile, EXIF, text; codec/metadata.py). Written only where an image holds some.
METADATA_VERSION = 17
# Format 17 and 16-bit images, each as two 8-bit images with its depth in the header (codec/depth.py). Written only
# where an image has more than 8 bits per sample.
DEPTH_VERSION = 18
# Format 18 and sections coded by the staged cascade's small-image profile (codec/tilekinds.py:
# PREDICTIVE_SMALL_SECTIONS). Written where a section of small images codes for less so.
SMALL_VERSION = 19
# Format 19 and sections coded by the staged cascade's photograph profile (codec/tilekinds.py:
# PREDICTIVE_PHOTO_SECTIONS). Written where a stream of photographs is coded by the predictor in sections.
PHOTO_VERSION = 20
# Format 20 and sections coded by the photograph profile with its values refined bit by bit by an adaptive model
# (codec/tilekinds.py: PREDICTIVE_REFINED_SECTIONS). Written where a stream of photographs is coded in sections.
REFINED_VERSION = 21
# Format 21 and refined sections whose refinement also reads the earlier channels' gradients, in the photograph or the
# small-image profile (codec/tilekinds.py: PREDICTIVE_ACROSS_SECTIONS, PREDICTIVE_SMALL_ACROSS_SECTIONS). Written
# where a section takes either.
ACROSS_VERSION = 22
# Format 22 and the bit depth of grey images read from 1-, 2- or 4-bit samples (bilevel scans, 2- and 4-bit grey
# PNGs), which decompress writes back: coded as the 8-bit grey Pillow reads, in the image's info (codec/header.py).
# Written only where an image has such a depth.
BITS_VERSION = 23
# the formats whose header is stored deflated
DEFLATED_HEADERS = (DEFLATED_VERSION, CASCADE_VERSION, PARITY_VERSION, WIDE_VERSION, STAGED_VERSION, SECTIONS_VERSION,
                    METADATA_VERSION, DEPTH_VERSION, SMALL_VERSION, PHOTO_VERSION, REFINED_VERSION, ACROSS_VERSION,
                    BITS_VERSION)
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23)
# Formats vaezip writes on request, for readers before the newest: 2, the JSON header, every image through the
# model; 3, the predictor's Gaussian tiles; 5, its Laplace tiles; 6, the blend's tiles in raster order; 7, the
# blend's tiles (Laplace residuals) in the stream order; 8, the blend's tiles with fitted residual tables; 9, those
# with their contexts adapting over the stream; 10, those with local least squares too, the header as it is; 11,
# format 10's tiles with the header deflated where that pays; 12, the cascade's tiles without parity; 13, the
# cascade's tiles with parity, their blends not reading the errors two away; 14, the wide cascade's tiles, without
# the third stage; 15, the staged cascade's tiles in one chain over the stream, not in sections.
OLDER_FORMATS = (2, VERSION, LAPLACE_VERSION, BLEND_VERSION, ORDER_VERSION, FITTED_VERSION, ADAPTIVE_VERSION,
                 LEAST_SQUARES_VERSION, DEFLATED_VERSION, CASCADE_VERSION, PARITY_VERSION, WIDE_VERSION,
                 STAGED_VERSION)
JSON_VERSIONS = (1, 2)  # the layout with a JSON header and two CRCs
# The binary layout; a file gets the first of these whose tile kinds hold its schedule (binary_version), so
# that a file holding nothing newer stays readable by readers of format 3.
BINARY_VERSIONS = (VERSION, IMPORTANCE_VERSION, LAPLACE_VERSION, BLEND_VERSION, ORDER_VERSION, FITTED_VERSION,
                   ADAPTIVE_VERSION, LEAST_SQUARES_VERSION, DEFLATED_VERSION, CASCADE_VERSION, PARITY_VERSION,
                   WIDE_VERSION, STAGED_VERSION, SECTIONS_VERSION, METADATA_VERSION, DEPTH_VERSION, SMALL_VERSION,
                   PHOTO_VERSION, REFINED_VERSION, ACROSS_VERSION, BITS_VERSION)
MAX_HEADER_BYTES = 16 * 2**20
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length: 14 bytes
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

__all__ = [
    "ACROSS_VERSION", "BINARY_VERSIONS", "BITS_VERSION", "CASCADE_VERSION", "DEFLATED_HEADERS", "DEFLATED_VERSION",
    "DEPTH_VERSION", "MAGIC", "MAX_HEADER_BYTES",
    "METADATA_VERSION", "PARITY_VERSION", "PHOTO_VERSION", "READABLE_VERSIONS", "REFINED_VERSION", "SECTIONS_VERSION",
    "SMALL_VERSION", "STAGED_VERSION", "VERSION", "WIDE_VERSION",
    "CoderSettings", "Header", "ImageEntry", "binary_version", "deflate_header", "inflate_header", "pack_header",
    "read", "read_versioned", "unpack_header", "write",
]


def pack_header(text: bytes) -> bytes:
    """The stored form of the header JSON: deflated (archives of small images repeat the same keys)."""
    return zlib.compress(text, 9)


def unpack_header(raw: bytes, window_bits: int = zlib.MAX_WBITS) -> bytes:
    """Inflate a stored header, never to more than MAX_HEADER_BYTES (a deflate bomb stops there); `window_bits`
    as zlib takes it (negative: raw deflate, format 11's)."""
    inflater = zlib.decompressobj(window_bits)
    try:
        text = inflater.decompress(raw, MAX_HEADER_BYTES + 1)
    except zlib.error as error:
        raise HeaderError(f"bad header: not deflate data ({error})") from None
    if len(text) > MAX_HEADER_BYTES:
        raise LimitError(f"header too large: inflates to more than {MAX_HEADER_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise HeaderError("bad header: deflate stream incomplete or followed by extra bytes")
    return text


def binary_version(kinds, ordered: bool = False) -> int:
    """The first of BINARY_VERSIONS whose files may hold every tile kind named in `kinds` (schedule names), and
    a stream order where `ordered` (format 7 on)."""
    kinds = set(kinds)
    for version in BINARY_VERSIONS:
        if ordered and version < ORDER_VERSION:
            continue
        if all(version in tilekinds.by_name(kind).formats for kind in kinds):
            return version
    raise CodingError(f"no format holds the tile kinds {sorted(kinds)} together")


def deflate_header(text: bytes) -> bytes:
    """Format 11's to 13's stored header: `text` as raw deflate (no zlib wrapper: the file's CRC covers it)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(text) + packer.flush()


def inflate_header(raw: bytes) -> bytes:
    """A format-11 to -13 header's binary form, never more than MAX_HEADER_BYTES (a deflate bomb stops there)."""
    return unpack_header(raw, -zlib.MAX_WBITS)


def write(header: Header, words: np.ndarray, version: int = VERSION, deflate: bool = False) -> bytes:
    """The complete .vz file. Refuses headers that `read` would refuse. `deflate`: where `version` is binary and
    the header deflated is DEFLATE_SAVING bytes shorter or more, write format 11 (DEFLATED_VERSION) instead."""
    if version not in READABLE_VERSIONS:
        raise CodingError(f"cannot write format version {version}")
    words = np.asarray(words)
    if words.ndim != 1 or words.dtype != np.uint32:
        raise CodingError(f"payload must be a 1-D uint32 array, got {words.dtype} {words.shape}")
    if len(words) >= 2**32:
        raise LimitError(f"payload too large: {len(words)} words")
    if version not in JSON_VERSIONS:
        return _write_binary(header, words, version, deflate)
    text = to_json(header, version)  # the same checks as reading: never write what cannot be read
    if len(text) > MAX_HEADER_BYTES:
        raise LimitError(f"header too large: {len(text)} bytes (limit {MAX_HEADER_BYTES})")
    text = pack_header(text)
    prefix = _PREFIX.pack(MAGIC, version, len(text)) + text
    payload = _U32.pack(len(words)) + words.astype("<u4").tobytes()
    return b"".join([prefix, _U32.pack(zlib.crc32(prefix)), payload, _U32.pack(zlib.crc32(payload))])


def read(data: bytes) -> tuple[Header, np.ndarray]:
    """Parse a .vz file: (header, payload words as a native uint32 array)."""
    _, header, words = read_versioned(data)
    return header, words


def read_versioned(data: bytes) -> tuple[int, Header, np.ndarray]:
    """Parse a .vz file: (format version, header, payload words as a native uint32 array)."""
    data = memoryview(data).cast("B")
    size = len(data)
    if bytes(data[:8]) != MAGIC:
        if not size:
            raise TruncatedError("an empty file (0 bytes)")
        if size < 8 and MAGIC.startswith(bytes(data)):
            raise TruncatedError(f"truncated file: {size} bytes, shorter than the 8-byte magic")
        if bytes(data[:4]) == MAGIC[:4]:
            # CRLF -> LF, LF -> CRLF (each LF, or the last): the magic's traps; else its other bytes are damaged
            if bytes(data[4:10]).startswith((b"\n\x1a\n", b"\r\r\n", b"\r\n\x1a\r\n")):
                raise BadMagicError("not a .vz file (bad magic: line endings converted by a text-mode transfer?)")
            raise BadMagicError("not a .vz file, or a damaged one (bad magic)")
        raise BadMagicError("not a .vz file (bad magic)")
    if size < 10:
        raise TruncatedError(f"truncated file: {size} bytes, shorter than the 10-byte prefix")
    (version,) = _U16.unpack_from(data, 8)
    if version not in READABLE_VERSIONS:
        known = ", ".join(map(str, READABLE_VERSIONS))
        # past the newest within a byte: a newer vaezip's, or a bit flipped; beyond a byte, or 0: a damaged field
        why = "made by a newer vaezip, or damaged? " if max(READABLE_VERSIONS) < version < 256 else "damaged? "
        raise UnsupportedVersionError(f"unsupported .vz format version {version} ({why}this reader knows {known})")
    if version not in JSON_VERSIONS:
        header, words = _read_binary(data, version)
        return version, header, words
    if size < _PREFIX.size:
        raise TruncatedError(f"truncated file: {size} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, version, n = _PREFIX.unpack_from(data)
    if n > MAX_HEADER_BYTES:
        raise LimitError(f"header too large: {n} bytes (limit {MAX_HEADER_BYTES})")
    end = _PREFIX.size + n
    if end + 4 > size:
        raise TruncatedError(f"truncated file: header claims {n} bytes (+4 CRC), only {size - _PREFIX.size} present")
    (crc,) = _U32.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise ChecksumError("header checksum mismatch (file corrupted)")
    header = from_json(unpack_header(bytes(data[_PREFIX.size : end])), version)

    start = end + 4  # payload count field
    if start + 4 > size:
        raise TruncatedError("truncated file: payload length missing")
    (w,) = _U32.unpack_from(data, start)
    present = size - start - 8  # bytes available for the words
    if 4 * w > present:
        raise TruncatedError(f"truncated file: payload claims {4 * w} bytes, only {max(0, present)} present")
    if 4 * w < present:
        raise TrailingDataError(f"trailing data: {present - 4 * w} bytes after the payload checksum")
    (crc,) = _U32.unpack_from(data, start + 4 + 4 * w)
    if zlib.crc32(data[start : start + 4 + 4 * w]) != crc:
        raise ChecksumError("payload checksum mismatch (file corrupted)")
    words = np.frombuffer(data, dtype="<u4", count=w, offset=start + 4).astype(np.uint32)
    return version, header, words


# ---------------------------------------------------------------------------------------------- format 3


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write_binary(header: Header, words: np.ndarray, version: int, deflate: bool = False) -> bytes:
    if len(words) and not header.uses_model:
        raise CodingError("ANS words without a model-coded image")
    text = to_binary(header, len(words), version)
    if len(text) > MAX_HEADER_BYTES:
        raise LimitError(f"header too large: {len(text)} bytes (limit {MAX_HEADER_BYTES})")
    if version in DEFLATED_HEADERS:
        text = deflate_header(text)
    elif deflate:  # format 11 holds what every earlier binary format holds (format 10's header, deflated)
        plain = to_binary(header, len(words), DEFLATED_VERSION)  # a byte longer than formats 3 to 6's: the order
        packed = deflate_header(plain)
        if len(plain) <= MAX_HEADER_BYTES and len(packed) + DEFLATE_SAVING <= len(text):
            version, text = DEFLATED_VERSION, packed
    parts = [MAGIC, _U16.pack(version), _varint(len(text)), text]
    for image in header.images:  # each image's data, then its metadata chunks' (format 17)
        parts += [bytes(image.data)] + [bytes(chunk.data) for chunk in image.metadata]
    parts.append(words.astype("<u4").tobytes())
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def _read_binary(data: memoryview, version: int) -> tuple[Header, np.ndarray]:
    size, position, n, shift = len(data), 10, 0, 0
    while True:  # the header length: a varint of at most 4 bytes (MAX_HEADER_BYTES < 2**28)
        if position >= size:
            raise TruncatedError(f"truncated file: {size} bytes, the header length is cut off")
        byte = data[position]
        position += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 28:
            raise LimitError(f"header too large: its length field has more than 4 bytes (limit {MAX_HEADER_BYTES})")
    if n > MAX_HEADER_BYTES:
        raise LimitError(f"header too large: {n} bytes (limit {MAX_HEADER_BYTES})")
    if position + n > size:
        raise TruncatedError(f"truncated file: header claims {n} bytes, only {size - position} present")
    crc_ok = size >= 4 and zlib.crc32(data[: size - 4]) == _U32.unpack_from(data, size - 4)[0]
    if position - 10 != len(_varint(n)):  # a padded length (0x85 0x00 for 5): two byte strings for one file
        if not crc_ok:
            raise ChecksumError("checksum mismatch (file corrupted)")
        raise HeaderError("bad header: not in its one canonical binary form (its length field is padded)")
    try:
        raw = data[position : position + n]
        header, lengths, chunk_lengths, count = from_binary_with_chunks(
            inflate_header(raw) if version in DEFLATED_HEADERS else raw, version)
    except (HeaderError, LimitError):
        if not crc_ok:  # a damaged file is the likelier story than a forged header
            raise ChecksumError("checksum mismatch (file corrupted)") from None
        raise
    start = position + n
    payload = sum(lengths) + sum(map(sum, chunk_lengths)) + 4 * count
    present = size - start - 4
    if payload > present:
        raise TruncatedError(f"truncated file: payload claims {payload} bytes, only {max(0, present)} present")
    if payload < present:
        raise TrailingDataError(f"trailing data: {present - payload} bytes after the checksum")
    if not crc_ok:
        raise ChecksumError("checksum mismatch (file corrupted)")
    images = []
    for image, length, sizes in zip(header.images, lengths, chunk_lengths):
        own = bytes(data[start : start + length])
        start += length
        chunks = []
        for chunk, size in zip(image.metadata, sizes):
            chunks.append(Chunk(chunk.place, chunk.kind, bytes(data[start : start + size])))
            start += size
        images.append(dataclasses.replace(image, data=own, metadata=tuple(chunks)))
    words = np.frombuffer(data, dtype="<u4", count=count, offset=start).astype(np.uint32)
    return Header(header.model_name, header.model_sha256, header.coder, tuple(images), header.pixels_sha256), words
