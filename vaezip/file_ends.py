"""Where an image file's image ends, and what follows it.

Pillow reads an image and stops: bytes after it (a second PNM image of a netpbm stream, the video of a phone's
motion photo after its JPEG, a second GIF or BMP, an appended archive) are read by no one, no .vz holds them, and
`compress --rm` deleted them without a word. Each reader here walks its format's own structure to the image's end
(never decoding a pixel): PNM, BMP and DIB, GIF, WebP, JPEG (and MPO), TIFF (to the last byte any of its directories
takes or points to), ICO and CUR, QOI and TGA. A format not known here, or a file not as its format says (Pillow's
reading has the final word on it), gives no end, and nothing is claimed. A PNG's end is read with its chunks
(vaezip/metadata.py read_png_chunks), and named as here (describe_following).

Torch-free and Pillow-free: it reads the bytes of a file only.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

# A newline, spaces or NULs that some tools append are nothing of the file's; past 1 MiB anything is something
PADDING = b" \t\r\n\0"
LOOK_AHEAD = 1 << 20
AFTER = "after the image's end"  # how an ImageReport's metadata_unkept names what follows (describe_following)
_PNM_SPACE = b" \t\n\v\f\r"
_PNM_IMAGE = re.compile(rb"P[1-7]\s")  # what a netpbm stream's next image starts with
_PNM_SPACE_TABLE = np.zeros(256, bool)
_PNM_SPACE_TABLE[np.frombuffer(_PNM_SPACE, np.uint8)] = True
_PNM_SPACE_BYTES = frozenset(_PNM_SPACE)
_LINE_END = re.compile(rb"[\r\n]")
_TGA_SIGNATURE = b"TRUEVISION-XFILE.\0"
_SCAN_WINDOW = 1 << 16
# A GIF's application extensions that hold nothing of the image: an animation's loop count, and the gamma ImageMagick
# writes into every GIF it makes (its own default, 0.45455, or 0 for unknown), which no other reader uses
_GIF_OWN_EXTENSIONS = (b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ImageMagick")
_PLAIN_WINDOW = 1 << 20
_GIF_MOST_BLOCKS = 1 << 16  # a single image's GIF has a few (Pillow refuses none: vaezip refuses animations)
_GIF_MOST_NAMED = 16
_GIF_BLOCK = re.compile(rb"[!,;]")  # what a GIF's blocks start with: an extension, an image, the trailer


@dataclass(frozen=True)
class Following:
    """What follows an image in its file: `count` bytes (more than padding), and whether they start another image
    of the same format (a netpbm stream of several)."""

    count: int
    another_image: bool = False

    def describe(self) -> str:
        return describe_following(self.count)


@dataclass(frozen=True)
class Beyond:
    """What a file holds besides its image's pixels that Pillow does not read: what follows the image (None:
    nothing, or padding), what a TGA's footer points to, a GIF's extensions Pillow passes over and a BMP's linked
    colour profile ("TYPE (why)" each, as vaezip/metadata.py names what a file leaves out), and a BMP's embedded
    colour profile."""

    following: Following | None = None
    areas: tuple[str, ...] = ()
    profile: bytes | None = None


def describe_following(count: int, where: str = AFTER) -> str:
    """What follows an image as an ImageReport's metadata_unkept entry (`compress --rm` then keeps the input):
    "12 bytes after the image's end"; `where`: "after IEND" for a PNG."""
    return f"{count} byte{'' if count == 1 else 's'} {where}"


def is_after_image(entry: str) -> bool:
    """Whether a metadata_unkept entry is describe_following's (any format's): bytes after the image, not metadata."""
    return _DESCRIBED.fullmatch(entry) is not None


def describe_unread(what: str, why: str | None = None, whole: bool = False) -> str:
    """What of a file Pillow does not read into the pixels as an ImageReport's metadata_unkept entry (not metadata:
    `compress --rm` keeps the input, --strip or not): "TIFF colour map (not read: its 16-bit entries narrowed to 8)";
    `whole`: a file of a format not read whole, "EPS file as it is (not read whole: ...)"."""
    return f"{what} (not read{' whole' if whole else ''}{': ' + why if why else ''})"


def is_unread(entry: str) -> bool:
    """Whether a metadata_unkept entry is describe_unread's."""
    return _UNREAD.search(entry) is not None


def is_padding(after: bytes, count: int, format: str | None = None) -> bool:
    """Whether the `count` bytes after an image, whose first LOOK_AHEAD are `after`, are only padding (a JPEG's 0xFF
    fill and a second end-of-image marker too): nothing of the file's."""
    if format in ("JPEG", "MPO"):  # 0xFF fill, and an end-of-image marker written twice
        after = after.replace(b"\xff\xd9", b"").strip(b"\xff")
    return count <= LOOK_AHEAD and not after.strip(PADDING)


def beyond_pixels(buffer, format: str | None, pixels_at: int | None = None) -> Beyond:
    """What the file in `buffer` (its bytes; Pillow opened it as `format`) holds besides its image's pixels.
    `pixels_at`: where Pillow reads a BMP's or DIB's pixels from (its tile's offset), which its header says in more
    than one way."""
    if format == "TGA":
        try:
            pixels_end = _tga_pixels_end(buffer)
            footer = _tga_footer(buffer, pixels_end)
        except (IndexError, ValueError, struct.error, OverflowError):  # cut short or malformed: Pillow says what
            return Beyond()
        if footer is None:
            return Beyond(_following(buffer, format, pixels_end))
        areas = tuple(f"TGA {what} (a TGA's own fields)"
                      for what, offset in zip(("extension area", "developer fields"), footer.offsets) if offset)
        return Beyond(_following(buffer, format, footer.end), areas)
    if format == "GIF":
        unread: list[str] = []
        try:
            end = _gif_end(buffer, unread)
        except (IndexError, ValueError, struct.error, OverflowError):
            end = None
        return Beyond(_following(buffer, format, end), tuple(unread))
    reader = _ENDS.get(format or "")
    if reader is None:
        return Beyond()
    try:
        end = reader(buffer, pixels_at) if format in ("BMP", "DIB") else reader(buffer)
    except (IndexError, ValueError, struct.error, OverflowError):
        end = None
    if format not in ("BMP", "DIB"):
        return Beyond(_following(buffer, format, end))
    linked = _bmp_colour_space(buffer)[1] == _LINKED  # the name of a profile's file, which no .vz keeps
    areas = ("BMP linked colour profile (the name of a profile's file, not kept)",) if linked else ()
    return Beyond(_following(buffer, format, end), areas, _bmp_profile(buffer))


def following(buffer, format: str | None, pixels_at: int | None = None) -> Following | None:
    """What follows the image in `buffer` (beyond_pixels's `following`)."""
    return beyond_pixels(buffer, format, pixels_at).following


def _following(buffer, format: str | None, end: int | None) -> Following | None:
    if end is None or end >= len(buffer):
        return None
    count = len(buffer) - end
    after = bytes(buffer[end: end + LOOK_AHEAD])
    if is_padding(after, count, format):
        return None
    return Following(count, format == "PPM" and _PNM_IMAGE.match(after.lstrip(_PNM_SPACE)) is not None)


_EMBEDDED, _LINKED = b"DEBM", b"KNIL"  # a BMP's colour space types PROFILE_EMBEDDED ('MBED') and PROFILE_LINKED


def _bmp_colour_space(buffer) -> tuple[int, bytes]:
    """Where a BMP's or DIB's info header starts, and its colour space type as stored (b"" before version 5, or where
    the header cannot be read)."""
    start = 14 if bytes(buffer[:2]) == b"BM" else 0
    try:
        (size,) = struct.unpack_from("<I", buffer, start)
    except struct.error:
        return start, b""
    return start, bytes(buffer[start + 56: start + 60]) if size >= 124 else b""


def _bmp_profile(buffer) -> bytes | None:
    """The colour profile a version-5 BMP or DIB embeds, which Pillow does not read; None where it embeds none or the
    file is not as its header says."""
    start, colour_space = _bmp_colour_space(buffer)
    if colour_space != _EMBEDDED:
        return None
    try:
        offset, length = struct.unpack_from("<II", buffer, start + 112)  # from the info header's start
    except struct.error:
        return None
    profile = bytes(buffer[start + offset: start + offset + length])
    return profile if length and len(profile) == length else None


def pnm_comments(buffer) -> bytes:
    """The comments of a PNM's header (GIMP writes "Created by GIMP ..."), a line each, which Pillow passes over."""
    comments: list[bytes] = []
    pnm_header(buffer, comments)
    return b"\n".join(text for text in (comment.strip() for comment in comments) if text)


def pnm_header(buffer, comments: list[bytes] | None = None) -> tuple[list[int], int] | None:
    """A PNM (P1 to P6) header as Pillow reads it: width, height and (but for P1 and P4) maximum value, and where the
    samples start; None where it is not one, or not whole in `buffer`. `comments` gets each comment's text."""
    magic = bytes(buffer[:3])
    if len(magic) < 3 or magic[:2] not in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6") or \
            magic[2] not in _PNM_SPACE_BYTES:
        return None
    fields, position = [], 3  # Pillow reads the magic number and the whitespace after it
    for _ in range(2 if magic[:2] in (b"P1", b"P4") else 3):
        token, position = _pnm_token(buffer, position, comments)
        try:
            fields.append(int(token))  # as Pillow reads it ("+48" and "2_55" too)
        except ValueError:
            return None
    return (fields, position) if min(fields) >= 0 else None


def _pnm_end(buffer) -> int | None:
    header = pnm_header(buffer)
    if header is None:
        return None
    (width, height, *maximum), position = header
    kind = bytes(buffer[:2])
    channels = 3 if kind in (b"P3", b"P6") else 1
    if kind == b"P4":
        return position + (width + 7) // 8 * height
    if kind in (b"P5", b"P6"):
        return position + width * height * channels * (1 if maximum[0] < 256 else 2)
    return _plain_end(buffer, position, width * height * channels, single_digits=kind == b"P1")


def _pnm_token(buffer, position: int, comments: list[bytes] | None = None) -> tuple[bytes, int]:
    """A PNM header's next token and where the bytes after it start, as Pillow reads them: whitespace before it
    skipped, a comment (# to the end of its line, CR or LF included) skipped wherever it is, even inside the token,
    and the one whitespace byte that ends it read."""
    token = bytearray()
    while len(token) <= 10 and position < len(buffer):
        byte = buffer[position]
        position += 1
        if byte in _PNM_SPACE_BYTES:
            if token:
                break
        elif byte == 0x23:  # '#'
            end = _LINE_END.search(buffer, position)
            if comments is not None:
                comments.append(bytes(buffer[position: len(buffer) if end is None else end.start()]))
            position = len(buffer) if end is None else end.end()
        else:
            token.append(byte)
    return bytes(token), position


def _plain_end(buffer, start: int, count: int, single_digits: bool) -> int | None:
    """Where a plain PNM's `count`-th sample ends: decimal numbers apart (P2, P3), or digits 0 and 1 with or without
    space between them (P1). A comment (# to its line's end, that CR or LF included) is taken out, as Pillow takes it
    out: the numbers either side of one join. Read a window at a time (numpy: a few times the window's bytes of
    memory, whatever the file's size)."""
    if count == 0:
        return start
    view = np.frombuffer(buffer, np.uint8)
    seen, in_comment, pending = 0, False, None  # pending: where the last window's last number may end
    for position in range(start, len(view), _PLAIN_WINDOW):
        window = view[position: position + _PLAIN_WINDOW]  # (n,) uint8
        newline = (window == 10) | (window == 13)
        hashes = np.cumsum(window == ord("#"), dtype=np.int32)
        # each byte's line's start within the window, and whether a '#' lies between it and the byte
        line_start = np.maximum.accumulate(np.where(newline, np.arange(1, len(window) + 1, dtype=np.int32), 0))
        before = np.where(line_start > 0, hashes[np.maximum(line_start - 1, 0)], 0)
        comment = (hashes - before > 0) | ((line_start == 0) & in_comment)
        ending = newline & np.append(in_comment, comment[:-1])  # the CR or LF that ends a comment goes with it
        kept = np.flatnonzero(~(comment | ending))  # (k,) the window's bytes that are not comments
        solid = ~_PNM_SPACE_TABLE[window[kept]]
        in_comment = bool(comment[-1])
        if not len(kept):
            continue
        if pending is not None:  # the last window's last number ends unless this window goes on with it
            if solid[0] and not single_digits:
                pending = None
            else:
                seen += 1
                if seen == count:
                    return pending
                pending = None
        ends = np.flatnonzero(solid if single_digits else solid & ~np.append(solid[1:], False))
        if not single_digits and solid[-1]:  # may go on in the next window
            ends, pending = ends[:-1], position + int(kept[-1]) + 1
        if seen + len(ends) >= count:
            return position + int(kept[ends[count - seen - 1]]) + 1
        seen += len(ends)
    return pending if pending is not None and seen + 1 == count else None


def _bmp_end(buffer, pixels_at: int | None) -> int | None:
    file_header = bytes(buffer[:2]) == b"BM"
    start = 14 if file_header else 0
    (size,) = struct.unpack_from("<I", buffer, start)
    if size == 12:  # OS/2 1.x: 16-bit width and height, no compression
        width, height, _, bits = struct.unpack_from("<HHHH", buffer, start + 4)
        compression, image_size, colours = 0, 0, 0
    elif size in (40, 52, 56, 64, 108, 124):
        width, height, _, bits, compression, image_size, _, _, colours = struct.unpack_from(
            "<iiHHIIiiI", buffer, start + 4)
    else:
        return None
    if pixels_at is not None:
        offset = pixels_at
    elif file_header:
        (offset,) = struct.unpack_from("<I", buffer, 10)
    else:  # a DIB: the palette (or BI_BITFIELDS' masks) right after the info header
        masks = 12 if compression == 3 and size == 40 else 16 if compression == 6 and size == 40 else 0
        entries = colours or (1 << bits if bits <= 8 else 0)
        offset = size + masks + entries * (3 if size == 12 else 4)
    if compression in (0, 3, 6):
        end = offset + (abs(width) * bits + 31) // 32 * 4 * abs(height)
    elif compression in (1, 2):  # RLE8, RLE4: to the end-of-bitmap code
        end = _bmp_rle_end(buffer, offset, compression == 2, abs(width), abs(height))
    else:  # JPEG or PNG inside, or not a BMP's: Pillow refuses those, or reads them its own way
        return None
    if end is None:
        return None
    if _bmp_colour_space(buffer)[1] in (_EMBEDDED, _LINKED):  # an embedded or linked profile
        profile_offset, profile_size = struct.unpack_from("<II", buffer, start + 112)
        if start + profile_offset + profile_size <= len(buffer):  # (a size overstated: appended bytes are not its)
            end = max(end, start + profile_offset + profile_size)
    return end


def _bmp_rle_end(buffer, position: int, four_bits: bool, width: int, height: int) -> int:
    """After the RLE codes that fill the image's pixels, counted as Pillow's decoder counts them (a run cut at its
    row's end, a literal run padded to an even file offset), which stops there whether or not the row's padding, an
    end-of-line or an end-of-bitmap code follows; and after those (ImageMagick codes each row out to its padded
    width, then ends the line)."""
    total, filled, column, row = width * height, 0, 0, 0  # row: the current row's pixels as coded, past its end too
    padded = -(-width // 8) * 8 if four_bits else -(-width // 4) * 4  # a stored row's pixels, 4-byte padded
    while filled < total:
        count, value = buffer[position], buffer[position + 1]
        position += 2
        if count:  # a run of one value, cut at the row's end
            row += count
            count = min(count, max(0, width - column))
            filled += count
            column += count
        elif value == 0:  # end of line: the row's rest
            filled += -filled % width
            column = row = 0
        elif value == 1:  # end of bitmap
            return position
        elif value == 2:  # a move right and up
            filled += min(total - filled, buffer[position] + buffer[position + 1] * width)
            column = row = filled % width
            position += 2
        else:  # literal pixels
            pixels = min(total - filled, value)
            stored = _rle_literal_bytes(four_bits, value if filled + pixels == total and row + value <= padded
                                        else pixels)  # Pillow stops in the last one: the file holds all of it
            position += stored
            position += position % 2
            filled += pixels
            column += value
            row += value
    while position + 2 <= len(buffer):  # the last row's padding, as runs or literal pixels
        count, value = buffer[position], buffer[position + 1]
        if count and row + count <= padded:
            row += count
            position += 2
        elif not count and value >= 3 and row + value <= padded:
            position += 2 + _rle_literal_bytes(four_bits, value)
            position += position % 2
            row += value
        else:
            break
    for code in (b"\0\1", b"\0\0\0\1"):  # end of bitmap, or end of line and of bitmap
        if bytes(buffer[position: position + len(code)]) == code:
            return position + len(code)
    return position + 2 if bytes(buffer[position:]) == b"\0\0" else position  # an end of line ending the file


def _rle_literal_bytes(four_bits: bool, pixels: int) -> int:
    return (pixels + 1) // 2 if four_bits else pixels


def _gif_end(buffer, unread: list[str]) -> int | None:
    """After a GIF's trailer; `unread` gets what of it Pillow does not read ("WHAT (why)" each): a plain text
    extension (text drawn onto the image), an application extension but the animation's loop, a comment after the
    image, an extension of another label. A GIF without its trailer ends after its last whole block. Past the image,
    bytes other than padding where a block should start, or an extension of a label no GIF writer uses, end it
    where they begin: appended bytes (an archive) read as blocks are no part of it, a trailer after them neither."""
    if bytes(buffer[:6]) not in (b"GIF87a", b"GIF89a"):
        return None
    flags = buffer[10]
    position, imaged = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), False
    last = position  # after the last whole block
    doubted: int | None = None  # `last` where, past the image, something not a GIF's began
    named: dict[str, None] = {}  # what Pillow does not read, each once
    for _ in range(_GIF_MOST_BLOCKS):
        if position >= len(buffer):
            break
        start = position
        try:
            position, kind = _gif_block(buffer, position, imaged, named)
        except IndexError:  # a block cut short
            break
        if kind == "trailer":
            last = position
            break
        if kind == "stray":  # bytes Pillow passes over
            if imaged and doubted is None and bytes(buffer[start: position]).strip(PADDING):
                doubted = last
            continue
        if kind == "unknown" and imaged and doubted is None:
            doubted = last
        imaged = imaged or kind == "image"
        last = position
    # after the trailer, the file's end, a block cut short, or (a crafted file of blocks by the million) walked so
    # far: what follows the last whole block keeps the input
    unread.extend(list(named)[:_GIF_MOST_NAMED])
    return last if doubted is None else doubted


def _gif_block(buffer, position: int, imaged: bool, unread: dict[str, None]) -> tuple[int, str]:
    """The GIF block at `position` (`imaged`: after the image): where the next starts, and what it was: "trailer",
    "image", "extension", "unknown" (an extension of another label) or "stray" (bytes up to the next block);
    `unread` gets what of it Pillow does not read."""
    block = buffer[position]
    if block == 0x3B:
        return position + 1, "trailer"
    if block == 0x21:  # an extension: its label, then sub-blocks
        label, first = buffer[position + 1], bytes(buffer[position + 3: position + 3 + buffer[position + 2]])
        if label == 0x01:  # text drawn onto the image: not metadata
            unread[describe_unread("GIF plain text", "text drawn onto the image")] = None
        elif label == 0xFF and first[:11] not in _GIF_OWN_EXTENSIONS:
            name = first[:11].decode("latin-1").strip() if first[:11].isascii() else "?"
            unread[f"GIF application extension{' ' + name if name else ''} (not kept)"] = None
        elif label == 0xFE and imaged and first:  # (Pillow keeps a comment before the image)
            unread["GIF comment after the image (not kept)"] = None
        elif label not in (0x01, 0xF9, 0xFE, 0xFF):
            unread[f"GIF extension 0x{label:02x} (not kept)"] = None
            return _gif_sub_blocks(buffer, position + 2), "unknown"
        return _gif_sub_blocks(buffer, position + 2), "extension"
    if block == 0x2C:  # an image: its descriptor, local colours, LZW code size, sub-blocks
        flags = buffer[position + 9]
        position += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        return _gif_sub_blocks(buffer, position + 1, ends_file=not imaged), "image"
    found = _GIF_BLOCK.search(buffer, position)  # past stray bytes at once (a crafted run of them is long)
    return (found.start() if found else len(buffer)), "stray"


def _gif_sub_blocks(buffer, position: int, ends_file: bool = False) -> int:
    """After the sub-blocks at `position` and their terminator; `ends_file` (the image's): or the file's end right
    after one, where Pillow reads them as whole."""
    while True:
        size = buffer[position]
        position += 1 + size
        if size == 0 or (ends_file and position == len(buffer)):
            return position
        if position > len(buffer):  # cut short
            raise IndexError(position)


def _webp_end(buffer) -> int | None:
    if bytes(buffer[:4]) != b"RIFF" or bytes(buffer[8:12]) != b"WEBP":
        return None
    (size,) = struct.unpack_from("<I", buffer, 4)
    return 8 + size + (size & 1)


def _jpeg_end(buffer) -> int | None:
    """After the end-of-image marker, the segments walked by their lengths and each scan's coded data to the
    first marker in it that is neither a stuffed 0xFF nor a restart."""
    if bytes(buffer[:2]) != b"\xff\xd8":
        return None
    position, length = 2, len(buffer)
    while position < length:
        if buffer[position] != 0xFF:  # stray bytes before a marker: libjpeg warns and passes over them
            position = buffer.find(b"\xff", position)
            if position < 0:
                return None
        while position < length and buffer[position] == 0xFF:  # fill bytes
            position += 1
        marker = buffer[position]
        position += 1
        if marker == 0xD9:
            return position
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            continue
        (size,) = struct.unpack_from(">H", buffer, position)
        if size < 2:
            return None
        position += size
        if marker == 0xDA:
            position = _scan_end(buffer, position)
            if position is None:
                return None
    return None


def _scan_end(buffer, position: int) -> int | None:
    """Where a scan's coded data ends: the first 0xFF in it followed by a marker (not a stuffed 0, a restart or
    another 0xFF), found a window at a time (a crafted file of stuffed bytes alone is not walked byte by byte)."""
    view = np.frombuffer(buffer, np.uint8)
    while position < len(view) - 1:
        window = view[position: position + _SCAN_WINDOW + 1]
        fill = np.flatnonzero(window[:-1] == 0xFF)
        after = window[fill + 1]
        markers = fill[(after != 0) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))]
        if markers.size:
            return position + int(markers[0])
        position += len(window) - 1
    return None


def _icon_end(buffer) -> int | None:
    reserved, kind, count = struct.unpack_from("<HHH", buffer, 0)
    if reserved != 0 or kind not in (1, 2) or count == 0:
        return None
    ends = [sum(struct.unpack_from("<II", buffer, 6 + 16 * entry + 8)) for entry in range(count)]
    return max(ends)


def _qoi_end(buffer) -> int | None:
    """After the end marker (seven 0 bytes and a 1): an encoder never writes seven index-0 operations in a row
    (the same pixel seven times is a run)."""
    if bytes(buffer[:4]) != b"qoif":
        return None
    found = buffer.find(b"\0" * 7 + b"\1", 14)
    return None if found < 0 else found + 8


# A TIFF entry's value bytes by field type (Pillow skips an entry of another), the integer types an offset or a byte
# count may have, and the entries that point to further directories (SubIFDs, the Exif, GPS and Interoperability
# directories) or to data by offset and byte count
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}
_TIFF_INTEGERS = {3: "u2", 4: "u4", 8: "i2", 9: "i4", 13: "u4", 16: "u8", 17: "i8", 18: "u8"}
_TIFF_DIRECTORIES = frozenset({330, 34665, 34853, 40965})
_TIFF_DATA = {273: 279, 324: 325, 288: 289, 513: 514}  # strips, tiles, free space, an old-style JPEG's stream
_TIFF_POINTING = _TIFF_DIRECTORIES | set(_TIFF_DATA) | set(_TIFF_DATA.values())
_TIFF_MOST_ENTRIES = 1 << 16  # a file's directories hold some hundreds; a crafted one is not walked for ever
_TIFF_MOST_DATA = 1 << 24  # strips and tiles: 100 Mpixel in tiles of 16 x 16 are 400,000
_TIFF_CHUNK = 1 << 20
_GDAL_TRAILER = b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED"


def _tiff_end(buffer) -> int | None:
    """After the last byte any of a TIFF's (or BigTIFF's) directories, their values or the data they point to
    (strips, tiles, ...) takes, every directory of its chain and those its entries point to walked. What points
    outside the file is passed over, as Pillow passes over such a tag (where it needs it, its reading says what), and
    a file crafted to be walked for ever is walked so far: the end found is then earlier, never later (what follows
    it keeps the input). None where the file is not a TIFF."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(buffer[:2]))
    if order is None:
        return None
    (version,) = struct.unpack_from(order + "H", buffer, 2)
    if version == 42:
        offset_form, count_form, entry_size, inline, end = order + "I", order + "H", 12, 4, 8
    elif version == 43:
        offset_form, count_form, entry_size, inline, end = order + "Q", order + "Q", 20, 8, 16
    else:
        return None
    (first,) = struct.unpack_from(offset_form, buffer, end - struct.calcsize(offset_form))
    # GDAL's cloud-optimised files repeat each strip's or tile's last 4 bytes after it, as their header says
    trailer = 4 if _GDAL_TRAILER in bytes(buffer[end: end + 1024]) else 0
    length, offset_size, count_size = len(buffer), struct.calcsize(offset_form), struct.calcsize(count_form)
    pending, queued, walked, added, data_entries = [first], {first}, 0, set(), 0  # added: the arrays read

    def queue(offsets) -> None:
        fresh = [offset for offset in dict.fromkeys(map(int, offsets)) if offset not in queued]
        queued.update(fresh)
        pending.extend(fresh)

    while pending:
        directory = pending.pop()
        if directory <= 0 or directory + count_size > length:  # (a signed type's offset may be negative)
            continue
        (count,) = struct.unpack_from(count_form, buffer, directory)
        entries = directory + count_size
        after = entries + count * entry_size + offset_size  # the entries, then the next directory's offset
        if after > length:
            continue
        walked += count + 1
        if walked > _TIFF_MOST_ENTRIES or len(queued) > _TIFF_MOST_ENTRIES:
            return end
        end = max(end, after)
        values: dict[int, tuple[int, int, int]] = {}  # tag: (where its values start, how many, their type)
        for at in range(entries, after - offset_size, entry_size):
            tag, kind, number = struct.unpack_from(order + "HH" + offset_form[1], buffer, at)
            size = _TIFF_TYPE_SIZES.get(kind)
            if size is None:
                continue
            start = at + 4 + offset_size
            if size * number > inline:
                (start,) = struct.unpack_from(offset_form, buffer, start)
                if start + size * number > length:
                    continue
                end = max(end, start + size * number)
            if kind in _TIFF_INTEGERS and tag in _TIFF_POINTING:
                values[tag] = (start, number, kind)
        for tag in _TIFF_DIRECTORIES & values.keys():
            if values[tag] in added:  # (directories may share one)
                continue
            added.add(values[tag])
            walked += values[tag][1]
            if walked > _TIFF_MOST_ENTRIES:
                return end
            queue(_tiff_array(buffer, order, values[tag]))
        for offsets_tag, counts_tag in _TIFF_DATA.items():
            pair = values.get(offsets_tag), values.get(counts_tag)
            if None in pair or pair[0][1] != pair[1][1] or pair in added:
                continue
            added.add(pair)
            data_entries += pair[0][1]
            if data_entries > _TIFF_MOST_DATA:
                return end
            data_end = _tiff_data_end(_tiff_array(buffer, order, pair[0]), _tiff_array(buffer, order, pair[1]),
                                      length)
            end = max(end, min(data_end + trailer, length) if data_end and offsets_tag in (273, 324) else data_end)
        queue(struct.unpack_from(offset_form, buffer, after - offset_size))
    return end


def _tiff_array(buffer, order: str, value: tuple[int, int, int]) -> np.ndarray:
    start, number, kind = value
    return np.frombuffer(buffer, np.dtype(order + _TIFF_INTEGERS[kind]), number, start)


def _tiff_data_end(offsets: np.ndarray, counts: np.ndarray, length: int) -> int:
    """After the last byte of data at `offsets` of `counts` bytes each; 0 where some lie outside the file (passed
    over: appended bytes would otherwise count as theirs)."""
    if not offsets.size or min(int(offsets.min()), int(counts.min())) < 0 or \
            max(int(offsets.max()), int(counts.max())) > length:
        return 0
    end = 0
    for first in range(0, offsets.size, _TIFF_CHUNK):  # (in int64, a part at a time)
        part = slice(first, first + _TIFF_CHUNK)
        end = max(end, int((offsets[part].astype(np.int64) + counts[part]).max()))
    return end if end <= length else 0  # (a count overstated past the file's end, which Pillow's reading passes)


@dataclass(frozen=True)
class _Footer:
    end: int  # where the file ends: after the footer
    offsets: tuple[int, int]  # of the extension area and the developer fields, 0 where none


def _tga_footer(buffer, pixels_end: int | None) -> _Footer | None:
    """A TGA 2.0 file's footer: the first after its pixels (a second TGA 2.0 file after it has one too); None where
    there is none, where one that points to nothing does not follow the pixels right away (then it is a second
    file's), or where what it points to is not between the pixels and the footer as such an area starts."""
    if pixels_end is None:
        return None
    found = buffer.find(_TGA_SIGNATURE, pixels_end + 8)
    if found < 0:
        return None
    footer = found - 8
    offsets = struct.unpack_from("<II", buffer, footer)
    if not any(offsets) and footer != pixels_end:
        return None
    if not all(offset == 0 or _tga_area_fits(buffer, offset, pixels_end, footer, extension)
               for offset, extension in zip(offsets, (True, False))):
        return None
    return _Footer(found + len(_TGA_SIGNATURE), offsets)


def _tga_area_fits(buffer, offset: int, pixels_end: int, footer: int, extension: bool) -> bool:
    """Whether an area a TGA's footer points to lies between the pixels and the footer and starts as one does: the
    extension area with its size (495), the developer directory with its tag count (10 bytes a tag)."""
    if not pixels_end <= offset <= footer - 2:
        return False
    (first,) = struct.unpack_from("<H", buffer, offset)
    return offset + (first if extension else 2 + 10 * first) <= footer and (not extension or first == 495)


def _tga_pixels_end(buffer) -> int | None:
    id_length, has_map, kind, _, map_length, map_bits, _, _, width, height, bits, _ = struct.unpack_from(
        "<BBBHHBHHHHBB", buffer, 0)
    if kind not in (1, 2, 3, 9, 10, 11) or has_map not in (0, 1):
        return None
    position = 18 + id_length + (map_length * ((map_bits + 7) // 8) if has_map else 0)
    pixel = (bits + 7) // 8
    pixels = width * height
    if kind < 9:
        end = position + (width * bits + 7) // 8 * height  # 1-bit rows packed, each to a whole byte
    elif bits < 8:
        return None
    else:
        done = 0
        while done < pixels:
            packet = buffer[position]
            count = (packet & 0x7F) + 1
            position += 1 + (pixel if packet & 0x80 else count * pixel)
            done += count
        end = position
    return end


_ENDS = {"PPM": _pnm_end, "BMP": _bmp_end, "DIB": _bmp_end, "WEBP": _webp_end, "JPEG": _jpeg_end,
         "MPO": _jpeg_end, "ICO": _icon_end, "CUR": _icon_end, "QOI": _qoi_end, "TIFF": _tiff_end}
ENDS_KNOWN = frozenset({*_ENDS, "GIF", "TGA"})  # the formats (as Pillow names them) whose end is read here
_DESCRIBED = re.compile(r"\d+ bytes? after (IEND|the image's end)")
_UNREAD = re.compile(r" \(not read( whole)?(: .*)?\)$", re.DOTALL)
