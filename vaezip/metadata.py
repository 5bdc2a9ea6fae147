"""An image's metadata on its way through vaezip: read from its file as PNG ancillary chunks (codec/metadata.py says
which are kept), carried in the PIL image's info under METADATA, stored in a format-17 header, and written back into
the PNG that decompress makes.

A PNG's chunks are taken as they are, each with its place. Other formats' colour profile, EXIF and XMP (what
Pillow reads of them) become the PNG chunks that hold the same: iCCP, eXIf and an iTXt named XML:com.adobe.xmp, and
their comment (JPEG, GIF, a PNM's header comments) a tEXt named Comment (an iTXt where it is UTF-8 beyond ASCII)
and their dots per inch a pHYs.
"""

from __future__ import annotations

import io
import math
import numbers
import re
import struct
import zlib

from codec.classic import PNG_SIGNATURE, png_chunk
from codec.metadata import AFTER_DATA, AFTER_HEADER, BEFORE_DATA, LENGTHS, SINGLE, Chunk, keepable, places
from vaezip.file_ends import LOOK_AHEAD, describe_following, is_after_image, is_padding, is_unread

METADATA = "vaezip.metadata"  # image.info key: the chunks its file held (a tuple of codec.metadata.Chunk)
DROPPED = "vaezip.dropped"  # image.info key: what its file held that no file keeps, "TYPE (why)" each

_LENGTH_TYPE = struct.Struct(">I4s")
_XMP_KEYWORD = b"XML:com.adobe.xmp"
_EXIF_PREFIX = b"Exif\0\0"
_TIFF_HEADS = (b"II*\0", b"MM\0*")
_WHY_NOT = {b"hIST": "it describes the palette's entries", b"acTL": "animation", b"fcTL": "animation",
            b"fdAT": "animation"}
# An ICC profile's data colour space (bytes 16 to 20 of its header) that fits each mode's PNG colour type
_PROFILE_SPACES = {"L": b"GRAY", "LA": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB ", "P": b"RGB "}


def walk_png_chunks(file):
    """(start, length, type) of each chunk of the PNG file object `file`, read from just past its signature, up
    to a head cut short or a length PNG does not allow. At each one the file sits at the chunk's data; whatever
    the caller reads of it, the walk goes on from the chunk's end (its CRC's)."""
    while True:
        start = file.tell()
        head = file.read(8)
        if len(head) < 8:
            return
        length, kind = _LENGTH_TYPE.unpack(head)
        if length >= 2**31:
            return
        yield start, length, kind
        file.seek(start + 12 + length)


def read_png_chunks(file, low_grey_bits: int = 0) -> tuple[tuple[Chunk, ...], tuple[str, ...]]:
    """The chunks of the PNG file object `file` that a file may keep (read from its start; its position is put
    back), each at a place its type allows, and what is left out ("TYPE (why)"): chunks unsafe to copy, a damaged
    one (its CRC: Pillow does not check those after the image data), a second one of a type PNG allows once.
    `low_grey_bits`: a grey PNG's bit depth below 8, whose background grey is scaled up as Pillow scales its
    pixels. A file cut short or malformed gives what was read before the fault (Pillow has the final word)."""
    position = file.tell()
    kept, dropped = [], []
    try:
        file.seek(0)
        if file.read(8) != PNG_SIGNATURE:
            return (), ()
        seen_palette = seen_data = False
        kinds_kept = set()
        for start, length, kind in walk_png_chunks(file):
            if kind == b"IEND":
                # Bytes after the image's end (an appended archive, a second file): no PNG decompress writes holds
                # them, and `compress --rm` deleted them without a word
                end = file.seek(start + 12 + length)
                after, count = file.read(LOOK_AHEAD), file.seek(0, io.SEEK_END) - end
                if count > 0 and not is_padding(after, count):
                    dropped.append(describe_following(count, "after IEND"))
                break
            if kind in (b"IHDR", b"PLTE", b"IDAT", b"tRNS") or not kind[0] & 32:  # critical, or in the pixels
                seen_palette |= kind == b"PLTE"
                seen_data |= kind == b"IDAT"
                continue
            if not keepable(kind):
                dropped.append(f"{kind.decode('latin-1')} ({_WHY_NOT.get(kind, 'unsafe to copy')})")
                continue
            data, crc = file.read(length), file.read(4)
            if len(crc) < 4:
                break
            if struct.unpack(">I", crc)[0] != zlib.crc32(kind + data):
                dropped.append(f"{kind.decode()} (damaged: bad CRC)")
                continue
            if kind in SINGLE and kind in kinds_kept:
                dropped.append(f"{kind.decode()} (a second one)")
                continue
            if kind == b"bKGD" and low_grey_bits and length == 2 and int.from_bytes(data, "big") < 1 << low_grey_bits:
                # (one past the depth, which PNG does not allow, is kept as it is: scaled, it overflowed two bytes)
                data = (int.from_bytes(data, "big") * 255 // ((1 << low_grey_bits) - 1)).to_bytes(2, "big")
            place = AFTER_DATA if seen_data else BEFORE_DATA if seen_palette else AFTER_HEADER
            allowed = places(kind)  # an input's chunk out of its place is put where PNG wants it
            kept.append(Chunk(place if place in allowed else allowed[-1 if place > allowed[-1] else 0], kind, data))
            kinds_kept.add(kind)
    except (OSError, ValueError, struct.error):
        pass
    finally:
        file.seek(position)
    return tuple(kept), tuple(dropped)


# A TIFF's tags that describe its pixels' layout (or that a chunk keeps: the colour profile, XMP), not metadata left
# out: the baseline and extension tags of the image's structure (TIFF 6.0), by number.
_TIFF_STRUCTURE = {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 290,
                   291, 292, 293, 297, 317, 320, 321, 322, 323, 324, 325, 338, 339, 340, 341, 347, 512, 513, 514, 515,
                   517, 518, 519, 520, 521, 529, 530, 531, 532, 700, 34675}
_TIFF_RESOLUTION = {282, 283, 296}  # kept as a pHYs where Pillow gives the dots per inch
# A TIFF's tags that hold images or their parts, which Pillow does not read: not metadata (--strip let --rm delete
# them), named by vaezip/images.py's _not_read
TIFF_IMAGE_DATA = {330: ("SubIFDs", "images such as a DNG's full one"),
                   37724: ("ImageSourceData", "Photoshop's layers")}
_NAMED_FIELDS = 6  # a report names this many of a file's left-out tags or segments, then counts the others
# A JPEG's application segments that a chunk keeps (EXIF, XMP, the colour profile, the JFIF density as a pHYs) or
# that describe its pixels (an MPO's picture index, Adobe's colour transform): (marker, identifier)
_JPEG_KEPT = {("APP0", b"JFIF"), ("APP1", b"http://ns.adobe.com/xap/1.0/"), ("APP2", b"ICC_PROFILE"),
              ("APP2", b"MPF"), ("APP14", b"Adobe")}


def stated_info(image) -> dict:
    """`image.info` without the dots per inch that Pillow makes up where the file states none: a TIFF without
    resolution tags reads as 1 dpi, a JPEG whose EXIF holds no resolution (and no JFIF density) as 72."""
    info = image.info
    if "dpi" not in info:
        return info
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", None) or {}
        stated = 282 in tags and 283 in tags
    elif image.format in ("JPEG", "MPO") and info.get("jfif_unit") not in (1, 2):
        try:  # Pillow read the dots per inch from the EXIF where it holds a resolution unit and a usable XResolution
            exif = image.getexif()
            stated = 0x0128 in exif and 0 < float(exif[0x011A]) < math.inf
        except Exception:  # noqa: BLE001 - Pillow's many errors of a damaged EXIF: then it made the 72 up
            stated = False
    else:
        stated = True
    return info if stated else {key: value for key, value in info.items() if key != "dpi"}


def fields_left_out(image) -> tuple[str, ...]:
    """What of a TIFF's own tags, of a JPEG's application segments and comments, or a TGA's image ID no chunk keeps
    ("TYPE (why)" each; () for other formats): a TIFF's EXIF fields (orientation, camera, date, the EXIF and GPS
    directories), artist, copyright, description, software, IPTC ...; a JPEG's IPTC (Photoshop's APP13), extended
    XMP, a JFXX thumbnail, a comment before its last ..."""
    if image.format == "TGA" and image.info.get("id_section"):  # the image ID field (a name, a scan's notes)
        return ("TGA image ID (a TGA's own fields)",)
    names = _tiff_tags_left_out(image) if image.format == "TIFF" else _jpeg_segments_left_out(image)
    if not names:
        return ()
    named = ", ".join(names[:_NAMED_FIELDS]) + (
        f" and {len(names) - _NAMED_FIELDS} more" if len(names) > _NAMED_FIELDS else "")
    if image.format == "TIFF":
        return (f"TIFF tags {named} (a TIFF's own tags are not kept)",)
    return (f"JPEG segments {named} (no chunk holds them)",)


def _tiff_tags_left_out(image) -> list[str]:
    from PIL import TiffTags

    tags = getattr(image, "tag_v2", None) or {}
    kept = _TIFF_STRUCTURE | TIFF_IMAGE_DATA.keys() | (_TIFF_RESOLUTION if "dpi" in stated_info(image) else set())
    names = []
    for tag in sorted(tags.keys()):
        if tag not in kept:
            name = TiffTags.lookup(tag).name
            names.append(name if name and name != "unknown" else f"tag {tag}")
    return names


def _jpeg_segments_left_out(image) -> list[str]:
    """Each application segment of a JPEG (or MPO) that is not its JFIF header, EXIF, XMP, colour profile, the
    MPO's picture index or Adobe's colour transform, as 'APPn identifier'; and each comment but the last (Pillow
    keeps the last one only), as 'COM'."""
    if image.format not in ("JPEG", "MPO"):
        return []
    segments = getattr(image, "applist", None) or ()
    comments = [bytes(data) for marker, data in segments if marker == "COM"]
    # an empty one, or one the same as the last (which is kept), holds nothing more
    names = ["COM"] * sum(1 for comment in comments[:-1] if comment and comment != comments[-1])
    for marker, data in segments:
        identifier = bytes(data[:40]).split(b"\0", 1)[0]
        exif = marker == "APP1" and data.startswith(_EXIF_PREFIX)
        if not marker.startswith("APP") or (marker, identifier) in _JPEG_KEPT or exif:
            continue
        shown = identifier.decode("latin-1") if identifier.isascii() and identifier.decode().isprintable() else ""
        names.append(f"{marker} {shown}".strip())
    return names


def _field_bytes(info: dict, key: str, name: str, dropped: list[str]) -> bytes:
    """The bytes of info[key] as Pillow (or a caller) may hold them: bytes, a bytearray or memoryview, text as UTF-8;
    b"" where it holds none. Anything else is named in `dropped` ("NAME (why)"), not left out without a word."""
    value = info.get(key)
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no file can hold them
            dropped.append(f"{name} (text that is not Unicode)")
            return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    dropped.append(f"{name} (not bytes: {type(value).__name__})")
    return b""


def chunks_from_info(info: dict, left_out: tuple[str, ...] = ()) -> tuple[tuple[Chunk, ...], tuple[str, ...]]:
    """The chunks that hold what Pillow read of a non-PNG file's metadata (its info, stated_info): the colour
    profile, EXIF, XMP, a comment (JPEG, GIF, PNM) and the pixel size in dots per inch; and what could not be held
    ("TYPE (why)"), after `left_out` (fields_left_out: what of the file no chunk holds)."""
    kept, dropped = [], list(left_out)
    profile = _field_bytes(info, "icc_profile", "iCCP", dropped)
    if profile:
        kept.append(Chunk(AFTER_HEADER, b"iCCP", b"ICC profile\0\0" + zlib.compress(profile, 9)))
    exif = _field_bytes(info, "exif", "EXIF", dropped)
    if exif:
        while exif.startswith(_EXIF_PREFIX):  # twice where a writer prefixed a prefixed block (seen in WebP files)
            exif = exif[len(_EXIF_PREFIX):]
        if exif[:4] in _TIFF_HEADS:
            kept.append(Chunk(AFTER_HEADER, b"eXIf", exif))
        else:
            dropped.append("EXIF (not a TIFF structure)")
    dpi = info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2 and all(isinstance(v, numbers.Real) and 0 < v < 1e6 for v in dpi):
        per_metre = [round(float(v) / 0.0254) for v in dpi]  # a TIFF's are fractions (IFDRational)
        if all(0 < v < 2**31 for v in per_metre):
            kept.append(Chunk(AFTER_HEADER, b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    density = info.get("jfif_density")
    if (info.get("jfif_unit") == 0 and not any(chunk.kind == b"pHYs" for chunk in kept) and isinstance(density, tuple)
            and len(density) == 2 and density != (1, 1)
            and all(isinstance(v, int) and 0 < v < 2**31 for v in density)):
        # a JFIF aspect ratio without a unit (2:1 pixels): pHYs's unit 0 says the same (it was left out unsaid)
        kept.append(Chunk(AFTER_HEADER, b"pHYs", struct.pack(">IIB", *density, 0)))
    xmp = _field_bytes(info, "xmp", "XMP", dropped)
    if xmp:
        # iTXt: keyword, NUL, compression flag and method (0: not compressed), language tag and translated keyword
        # (both empty, each NUL-terminated), the UTF-8 text
        kept.append(Chunk(BEFORE_DATA, b"iTXt", _XMP_KEYWORD + b"\0\0\0\0\0" + xmp))
    comment = _field_bytes(info, "comment", "comment", dropped)
    if comment:
        try:
            plain = comment.decode("utf-8").isascii()  # tEXt holds Latin-1, iTXt UTF-8
        except UnicodeDecodeError:
            plain = True  # not UTF-8: taken as Latin-1, as JPEG and GIF comments often are
        if b"\0" in comment:
            dropped.append("comment (holds a NUL byte)")
        else:
            kept.append(Chunk(BEFORE_DATA, b"tEXt", b"Comment\0" + comment) if plain
                        else Chunk(BEFORE_DATA, b"iTXt", b"Comment\0\0\0\0\0" + comment))
    return tuple(kept), tuple(dropped)


def image_chunks(image) -> tuple[tuple[Chunk, ...], tuple[str, ...]]:
    """The chunks a file keeps of an image, and what it leaves out ("TYPE (why)"): those its file held where vaezip
    opened it (open_image), else those that hold what Pillow holds of it (an image an API caller opened or made);
    without those that no longer fit the image's mode (an image converted since: a background or significant bits
    of another colour type, a colour profile of another colour space)."""
    if METADATA in image.info:
        found, dropped = image.info[METADATA], image.info.get(DROPPED, ())
        if (not isinstance(found, (tuple, list)) or not all(isinstance(chunk, Chunk) for chunk in found)
                or not isinstance(dropped, (tuple, list)) or not all(isinstance(why, str) for why in dropped)):
            raise ValueError(f"image.info[{METADATA!r}] (and {DROPPED!r}) are vaezip's own, what open_image read "
                             f"of a file: a tuple of codec.metadata.Chunk (and of str), not what it holds here")
        found, dropped = tuple(found), tuple(dropped)
    else:
        found, dropped = chunks_from_info(stated_info(image), fields_left_out(image))
    kept, unfit = [], []
    for chunk in found:
        why = _unfit(chunk, image.mode)
        if why:
            unfit.append(f"{chunk.kind.decode('latin-1')} ({why})")
        else:
            kept.append(chunk)
    return tuple(kept), dropped + tuple(unfit)


def _unfit(chunk: Chunk, mode: str) -> str:
    """Why `chunk` cannot be kept in an image of `mode` ("" where it can)."""
    if chunk.kind in LENGTHS and LENGTHS[chunk.kind].get(mode) != len(chunk.data):
        return f"{len(chunk.data)} bytes do not fit a {mode} image"
    if chunk.kind == b"iCCP":
        name_end = chunk.data.find(b"\0")
        try:
            head = zlib.decompressobj().decompress(chunk.data[name_end + 2:], 20) if name_end > 0 else b""
        except zlib.error:
            head = b""
        if len(head) < 20:
            return "damaged"
        if head[16:20] != _PROFILE_SPACES.get(mode):
            return f"a {head[16:20].decode('latin-1').strip()} profile does not fit a {mode} image"
    return ""


# What of an image's file no .vz keeps that holds nothing of the image's own: iDOT (every macOS screenshot's: where
# the file's bytes split, for decoding in parallel), a second chunk PNG allows once, the palette's histogram, one that
# does not fit the image. Anything else (a TIFF's Artist and Copyright, a JPEG's IPTC, a private chunk unsafe to copy
# such as Fireworks' layers, a damaged tEXt whose text is intact) is information: `compress --rm` keeps the input.
_NOTHING_OF_ITS_OWN = re.compile(r"iDOT \(unsafe to copy\)|\S+ \((a second one|it describes the palette's entries|"
                                 r"\d+ bytes do not fit a \w+ image|a .* profile does not fit a \w+ image)\)")


def not_metadata(unkept: str) -> bool:
    """Whether `unkept` (an ImageReport.metadata_unkept entry) names what is not metadata, which --strip and an older
    --format drop on request: bytes after the image in its file (after a PNG's IEND, or vaezip/file_ends.py's: another
    file's bytes, a video), or what Pillow does not read into the pixels (file_ends.describe_unread's: vaezip/images.py
    _not_read). Nothing reads them back from a .vz: `compress --rm` keeps the input whatever else it is asked."""
    return is_after_image(unkept) or is_unread(unkept)


def loses_information(unkept: str) -> bool:
    """Whether `unkept` (an ImageReport.metadata_unkept entry, "TYPE (why)") is information of the image's file:
    what `compress --rm` must not delete."""
    return _NOTHING_OF_ITS_OWN.fullmatch(unkept) is None


def attach(image, chunks: tuple[Chunk, ...]) -> None:
    """Give a decoded image its chunks (METADATA), which png_bytes writes into its PNG."""
    if chunks:
        image.info[METADATA] = tuple(chunks)


def with_chunks(png: bytes, chunks: tuple[Chunk, ...]) -> bytes:
    """The PNG file `png` (as Pillow writes it: IHDR first, then its other chunks, IDATs, IEND) with `chunks`
    each in its place: after IHDR, before the first IDAT, or before IEND."""
    if not chunks:
        return png
    placed = {place: b"".join(png_chunk(c.kind, c.data) for c in chunks if c.place == place)
              for place in (AFTER_HEADER, BEFORE_DATA, AFTER_DATA)}
    header_end = 8 + 12 + _LENGTH_TYPE.unpack_from(png, 8)[0]
    first_data = _find_chunk(png, b"IDAT")
    end = len(png) - 12  # IEND: an empty chunk, the file's last
    if png[end + 4: end + 8] != b"IEND" or first_data < 0:
        raise ValueError("not a PNG as Pillow writes it")
    return b"".join([png[:header_end], placed[AFTER_HEADER], png[header_end:first_data], placed[BEFORE_DATA],
                     png[first_data:end], placed[AFTER_DATA], png[end:]])


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
    """'iCCP, pHYs, 2 tEXt (3.3 KB)': the chunk types in the order they first come, counted, and their size."""
    counts: dict[bytes, int] = {}
    for chunk in chunks:
        counts[chunk.kind] = counts.get(chunk.kind, 0) + 1
    names = ", ".join(kind.decode() if n == 1 else f"{n} {kind.decode()}" for kind, n in counts.items())
    size = sum(12 + len(chunk.data) for chunk in chunks)
    return f"{names} ({size / 1000:.1f} KB)" if size >= 1000 else f"{names} ({size} bytes)"
