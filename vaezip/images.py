"""Images in and out: which pixels go through the model, which go through a simple plane coder, and the
checksum that proves a decode exact.

| mode | model plane            | side planes (i.i.d. histogram coder) |
|------|------------------------|--------------------------------------|
| L    | grey (1, H, W)         | -                                    |
| LA   | grey                   | alpha                                |
| RGB  | colour (3, H, W)       | -                                    |
| RGBA | colour                 | alpha                                |
| P    | colour via the palette | - (or the index plane when two used indices share a colour) |

A 16-bit PNG (grey, grey + alpha, RGB, RGBA), TIFF (grey, RGB, RGBA) or binary PNM is a DeepImage, which Pillow
cannot hold in colour: its samples go as two of these images, the high part and the low one (codec/depth.py). What
vaezip cannot hold exactly is refused before anything is written, never narrowed: more than 8 bits per channel but
those, more than one frame (animations, multi-page TIFF, icons with several sizes), modes other than the five above.
The image's metadata travel in its info (vaezip/metadata.py), and so does a grey image's bit depth below 8 (GREY_BITS:
a bilevel scan, a 2- or 4-bit grey PNG), coded as the 8-bit grey Pillow reads and written back in its own depth.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from codec import depth as depths
from codec.classic import ICON_HEADS, PNG_SIGNATURE, TEXT_MEMORY, pillow_settings
from codec.metadata import Chunk
from vaezip import png16
from vaezip.config import MAX_IMAGE_PIXELS, short_repr
from vaezip.errors import ImageError
from vaezip.file_ends import ENDS_KNOWN, Beyond, beyond_pixels, describe_unread, pnm_comments, pnm_header
from vaezip.files import read_limited
from vaezip.metadata import (DROPPED, METADATA, TIFF_IMAGE_DATA, chunks_from_info, image_chunks, read_png_chunks,
                             stated_info)
from vaezip.metadata import fields_left_out, walk_png_chunks, with_chunks

SUPPORTED_MODES = ("L", "LA", "RGB", "RGBA", "P")
# image.info key: 1, 2 or 4 where the grey image's file held samples of that many bits (a bilevel image: 1), which
# Pillow scales up to 0..255; the depth a format-23 file keeps and png_bytes writes the image back in (grey_bits)
GREY_BITS = "vaezip.grey_bits"
SUBPIXELS_PER_PIXEL = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 1}  # as stored: a palette index counts once


@dataclass
class Planes:
    """An image split for coding. `model_plane` is (C, H, W) uint8 or None (palette fallback)."""

    mode: str
    width: int
    height: int
    model_plane: np.ndarray | None
    side_planes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (H, W) uint8
    palette: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_channels(self) -> int:
        return 0 if self.model_plane is None else self.model_plane.shape[0]

    @property
    def subpixels(self) -> int:
        """Subpixels of the image as stored (an index plane counts once per pixel)."""
        return SUBPIXELS_PER_PIXEL[self.mode] * self.width * self.height


@dataclass(eq=False)
class DeepImage:
    """A 16-bit image, which Pillow holds only in grey: `samples` (H, W) for L, else (H, W, C) uint16, with C the
    mode's channels (L, LA, RGB or RGBA), and `info` as a PIL image's (its metadata: vaezip/metadata.py)."""

    samples: np.ndarray
    mode: str
    info: dict[str, Any] = field(default_factory=dict)
    format: str | None = None

    def __post_init__(self) -> None:
        samples = self.samples
        channels = png16.CHANNELS.get(self.mode)
        shape = samples.shape if samples.ndim == 3 else (*samples.shape, 1)
        if samples.dtype != np.uint16 or channels is None or samples.ndim != (2 if self.mode == "L" else 3) or (
                shape[2] != channels):
            raise ImageError(f"{samples.dtype} samples of shape {samples.shape} are no 16-bit {self.mode} image")

    @property
    def width(self) -> int:
        return self.samples.shape[1]

    @property
    def height(self) -> int:
        return self.samples.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def getbands(self) -> tuple[str, ...]:
        return tuple(self.mode)


def is_deep(image) -> bool:
    return isinstance(image, DeepImage)


def open_image(source) -> Image.Image | DeepImage:
    """Open and fully decode an image file (path, bytes or file object); every failure is an ImageError, and so
    is an image that vaezip cannot hold exactly (refused from its header, before any pixel is decoded). A 16-bit
    PNG, TIFF (a colour one through imagecodecs) or PGM / PPM of maxval 65535 comes as a DeepImage. A PNG's
    damaged ancillary chunk is left out (and named in the image's DROPPED) wherever it is."""
    source = _at_hand(source)
    if _is_empty(source):  # as Pillow takes it: an image of unknown or damaged format
        raise ImageError("an empty file (0 bytes), not an image")
    try:
        return _open_image(source)
    except ImageError:
        repaired, damaged = _without_damaged_chunks(source)
        if not damaged:
            raise
    image = _open_image(repaired)
    image.info[DROPPED] = damaged + tuple(image.info.get(DROPPED, ()))
    return image


def _is_empty(source) -> bool:
    """Whether `source` (as _at_hand gives it) holds no bytes: bytes, or a path to a regular file (a file object is
    Pillow's to read)."""
    if isinstance(source, (bytes, bytearray)):
        return not source
    if isinstance(source, (str, os.PathLike)):
        try:
            info = os.stat(source)
        except (OSError, ValueError):
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == 0
    return False


def _at_hand(source):
    """`source` read into bytes where reading it could wait on another thread (a pipe, a socket, a FIFO: a file
    object that cannot seek, or a path to a FIFO or socket), as it is elsewhere. Pillow opens an image under a lock
    (pillow_settings), and a read that waited there for a thread that decodes an image would wait for ever. Any
    other path is left to Pillow (a device is refused from what it reads first, not read to a limit)."""
    if isinstance(source, (bytes, bytearray)):
        return source
    if isinstance(source, (str, os.PathLike)):
        try:
            kind = os.stat(source).st_mode
        except (OSError, ValueError):  # missing, unreadable, a NUL in the name: Pillow's open says what is wrong
            return source
        if not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind)):
            return source
        try:
            with open(source, "rb") as file:
                return read_limited(file, what="the image file holds")
        except (OSError, ValueError) as error:  # past the input limit, too
            raise ImageError(f"cannot read it ({str(error).strip() or type(error).__name__})") from None
    if not hasattr(source, "read"):
        raise ImageError(f"a {type(source).__name__}: open_image reads a path, bytes or a binary file object")
    try:
        seekable = source.seekable()
    except (AttributeError, ValueError, OSError):
        seekable = False
    if seekable:
        return source
    try:
        return read_limited(source, what="the image file holds")
    except (OSError, ValueError, TypeError) as error:  # TypeError: a text-mode stream
        raise ImageError(f"cannot read it ({str(error).strip() or type(error).__name__})") from None


def _without_damaged_chunks(source) -> tuple[bytes | None, tuple[str, ...]]:
    """A PNG (bytes, a path or a file object) without its damaged ancillary chunks before the image data, which
    Pillow refuses the file for (it checks no CRC after them: vaezip/metadata.py read_png_chunks leaves those out),
    and what was left out; (None, ()) where it has none, or is no PNG. Only the chunks before the image data are
    read to find them. A damaged tRNS (the pixels' transparency) or critical chunk is never left out, and a walk
    that leaves the chunks' bounds finds nothing: such a file is refused as it is."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return _cut_damaged(io.BytesIO(source))
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as file:
                return _cut_damaged(file)
        return _cut_damaged(source)
    except (OSError, ValueError, AttributeError, TypeError, struct.error):
        return None, ()


def _cut_damaged(file) -> tuple[bytes | None, tuple[str, ...]]:
    file.seek(0)
    if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        return None, ()
    damaged, cuts = [], []  # cuts: (start, end) of each damaged chunk
    for start, length, kind in walk_png_chunks(file):
        if not kind.isalpha():
            return None, ()  # off the chunks' bounds: nothing is mended
        if kind == b"IDAT" or kind == b"IEND":
            break
        if not kind[0] & 32 or kind == b"tRNS":
            continue
        body, crc = file.read(length), file.read(4)
        if len(crc) < 4:
            return None, ()
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            damaged.append(f"{kind.decode('latin-1')} (damaged: bad CRC)")
            cuts.append((start, file.tell()))
    else:  # cut short before the image data
        return None, ()
    if not damaged:
        return None, ()
    file.seek(0)
    data = read_limited(file, what="the PNG holds")  # past the input limit: an InputError, the file refused
    kept, position = [], 0
    for start, end in cuts:
        kept.append(data[position:start])
        position = end
    return b"".join(kept) + data[position:], tuple(damaged)


def _file_start(source, count: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:count])
    try:
        if hasattr(source, "read"):
            at = source.tell()
            head = source.read(count)
            source.seek(at)
            return head
        with open(source, "rb") as file:
            return file.read(count)
    except (OSError, ValueError, AttributeError):  # Pillow's open says what is wrong with it
        return b""


def _tag_values(tags, tag: int, default) -> tuple:
    """A TIFF tag's values in `tags` (Pillow's directory) as a tuple, whether Pillow holds one value or several."""
    found = tags.get(tag, default)
    return found if isinstance(found, tuple) else (found,)


_PHOTOMETRIC_NAMES = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 4: "mask", 5: "separated", 6: "YCbCr", 8: "Lab"}


def _tiff_layout(source) -> str | None:
    """What a TIFF that Pillow cannot open holds (its first image's samples, their bits, photometric interpretation
    and extra samples) with the advice that fits, such as `a TIFF of 2 samples of 16 bits (grey + alpha), which
    Pillow cannot read: convert it to a 16-bit PNG (no loss)`; None for any other file, and for a TIFF whose first
    directory is damaged (cut short, without the image's size or data, or of a layout Pillow reads): Pillow's own
    words then."""
    from PIL import TiffImagePlugin

    try:
        if isinstance(source, (bytes, bytearray)):
            file = io.BytesIO(source)
        elif hasattr(source, "read"):  # where Pillow reads a file object's image from: its start
            file, at = source, source.tell()
        else:
            file = open(source, "rb")
        try:
            file.seek(0)
            head = file.read(8)
            if len(head) < 8 or head[:4] not in (b"II*\0", b"MM\0*"):
                return None
            directory = TiffImagePlugin.ImageFileDirectory_v2(head)
            size = file.seek(0, 2)
            file.seek(directory.next)
            entries = struct.unpack("<H" if head[:2] == b"II" else ">H", file.read(2))[0]
            if directory.next + 2 + 12 * entries + 4 > size:
                return None  # cut short (Pillow leaves out the tags it cannot read)
            file.seek(directory.next)
            directory.load(file)
        finally:
            if file is source:
                file.seek(at)
            else:
                file.close()
        samples, photometric = directory.get(277, 1), directory.get(262)
        bits, extra = _tag_values(directory, 258, (1,)), _tag_values(directory, 338, ())
        if not (isinstance(samples, int) and 0 < samples <= 64 and bits and len(extra) < samples
                and all(isinstance(b, int) and 0 < b <= 64 for b in bits + (samples,))):
            return None
        if not (256 in directory and 257 in directory and (273 in directory or 324 in directory)):
            return None  # no size or no image data: damaged
        starts = _tag_values(directory, 273, ()) or _tag_values(directory, 324, ())  # strips, or tiles
        lengths = _tag_values(directory, 279, ()) or _tag_values(directory, 325, ())
        if len(starts) != len(lengths) or any(start + length > size for start, length in zip(starts, lengths)):
            return None  # its image data's pieces are not all in the file
        bits = bits * samples if len(bits) == 1 else bits
        layout = (directory.prefix, photometric, _tag_values(directory, 339, (1,)), directory.get(266, 1), bits,
                  extra)
        if layout in TiffImagePlugin.OPEN_INFO:
            return None  # a layout Pillow reads: the file is damaged
    except Exception:  # noqa: BLE001 - Pillow's parser raises many kinds on a damaged directory
        return None
    kind = _PHOTOMETRIC_NAMES.get(photometric, f"photometric {photometric}")
    # A PNG holds such pixels as they are only where they are grey or RGB (and palette), with one alpha at most
    kept = kind in ("grey", "RGB", "palette") and extra in ((), (1,), (2,))
    kind += " + alpha" if any(e in (1, 2) for e in extra) else f" + {len(extra)} more" if extra else ""
    deepest = max(bits)
    depth = (f"{deepest} bit{'s' if deepest > 1 else ''}" if len(set(bits)) == 1
             else "/".join(map(str, bits)) + " bits")
    no_loss = " (no loss)" if kept else ""
    advice = (f"convert it to a 16-bit PNG{no_loss}, which vaezip codes whole" if 8 < deepest <= 16
              else f"convert it to a PNG{no_loss}" if deepest <= 8
              else "convert it to 16 or 8 bits first if that loss is acceptable")
    counted = f"{samples} sample{'s' if samples > 1 else ''}"
    return f"a TIFF of {counted} of {depth} ({kind}), which Pillow cannot read: {advice}"


def _open_image(source) -> Image.Image | DeepImage:
    with _readable(decoded_on_opening=_file_start(source, 4) in ICON_HEADS):
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        except UnidentifiedImageError:
            layout = _tiff_layout(source)
            if layout is None:
                raise
            raise ImageError(layout) from None  # _readable prefixes it: "not a readable image (...)"
        if image.width * image.height > MAX_IMAGE_PIXELS:  # from the header alone, before decoding any pixel
            image.close()  # a file Pillow opened from a path
            raise Image.DecompressionBombError("too many pixels")
    data, beyond = _beyond_pixels(source, image)
    damage = png16.data_damage(data) if image.format == "PNG" and data is not None else None
    if damage is not None:
        image.close()
        raise ImageError(f"not a readable image ({damage})")
    unread = _not_read(image, data)
    follows = beyond.following
    if follows is not None and follows.another_image:
        image.close()
        raise ImageError("the file holds more than one image (a netpbm stream of several); vaezip codes single-frame "
                         "images: split it first (pamsplit)")
    if beyond.profile is not None and "icc_profile" not in image.info:
        image.info["icc_profile"] = beyond.profile
    if image.format == "PPM" and data is not None and "comment" not in image.info:
        comment = pnm_comments(data)  # kept as the PNG's comment
        if comment:
            image.info["comment"] = comment
    opened = _decode(image, data)
    # No .vz holds them: named, and `compress --rm` keeps the file (bytes after the image even with --strip)
    opened.info[DROPPED] = tuple(opened.info.get(DROPPED, ())) + beyond.areas + unread + (
        (follows.describe(),) if follows is not None else ())
    return opened


# The formats whose files vaezip reads whole (but what vaezip/metadata.py and vaezip/file_ends.py name): `compress
# --rm` deletes no file of another. Pillow renders an EPS, reads one surface of a DDS or BLP (not its mipmaps or cube
# faces), one plane of a FITS, a PSD's composite without its other channels and layers, a PhotoCD's base scan turned
# into RGB, a Sun raster's 32-bit pixels in another byte order, an XPM's 16-bit colours wrongly, a cursor without its
# hotspot or mask, ... (a review found each).
READ_WHOLE = frozenset({"PNG", "BMP", "DIB", "GIF", "TIFF", "PPM", "WEBP", "JPEG", "MPO", "QOI", "TGA", "ICO"})
_READ_WHOLE_NAMES = "PNG, TIFF, JPEG, WebP, GIF, BMP, PNM, QOI, TGA and ICO"


def _not_read(image: Image.Image, data: bytes | None) -> tuple[str, ...]:
    """What of the file Pillow opened as `image` (not loaded yet; its bytes `data` where they were read) its pixels do
    not hold, file_ends.describe_unread's each (vaezip/metadata.py not_metadata: `compress --rm` keeps the file,
    --strip or not)."""
    if image.format not in READ_WHOLE:
        return (describe_unread(f"{image.format or 'image'} file as it is",
                                f"--rm deletes {_READ_WHOLE_NAMES} files only", whole=True),)
    rawmode = (_tile_rawmode(image) or "").split(";")[0]
    tags = (getattr(image, "tag_v2", None) or {}) if image.format == "TIFF" else {}
    unread = [describe_unread(f"TIFF {name}", why) for tag, (name, why) in TIFF_IMAGE_DATA.items() if tag in tags]
    extra = tags.get(338, ())
    if 0 in (extra if isinstance(extra, tuple) else (extra,)):  # unspecified: Pillow drops them (planar ones too)
        unread.append(describe_unread("TIFF extra samples"))
    elif tags.get(262) == 6 and "X" in rawmode:  # libtiff's RGBA of YCbCr (not of JPEG's)
        unread.append(describe_unread("TIFF YCbCr samples", "converted to RGB"))
    colours = tags.get(320) if tags.get(262) == 3 else None
    # Pillow keeps value // 256: exact where a writer stored every entry as v * 257, or (as Pillow) as v * 256
    if isinstance(colours, tuple) and any(value % 257 for value in colours) and any(value % 256 for value in colours):
        unread.append(describe_unread("TIFF colour map", "its 16-bit entries narrowed to 8"))
    chunks = _icon_png_chunks(image, data)
    if chunks:  # an icon's PNG's profile, text, ...: kept by no chunk of the .vz (its tRNS is refused)
        unread.append(describe_unread(f"ICO's PNG chunks {', '.join(chunks)}", "Pillow reads an icon's PNG without "
                                                                               "them"))
    if image.format in ("BMP", "DIB") and "A" not in image.mode and _bmp_alpha_mask(image, data):
        unread.append(describe_unread("BMP alpha", "Pillow reads its alpha mask's bits as no alpha"))
    args = _tile_args(image)
    if image.format == "PPM" and isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int) and \
            args[1] < 255:  # Pillow scales the samples to 0..255; the maximum value is nowhere in a .vz
        unread.append(describe_unread(f"PNM maximum value {args[1]}", "samples scaled to 255"))
    return tuple(unread)


def _beyond_pixels(source, image: Image.Image) -> tuple[bytes | None, Beyond]:
    """The file's bytes where they were read here (`source` itself where it is bytes), and what the file holds besides
    the image's pixels that Pillow does not read (vaezip/file_ends.py; a PNG's bytes after IEND are read with its
    chunks); nothing where the file cannot be read again (past vaezip's input limit: only a path or file object
    given to the API can be)."""
    data = source if isinstance(source, (bytes, bytearray)) else None
    if image.format not in ENDS_KNOWN:
        return data, Beyond()
    tiles = getattr(image, "tile", None) or ()
    pixels_at = tiles[0][2] if len(tiles) == 1 and isinstance(tiles[0][2], int) else None
    try:
        data = _file_bytes(source)
    except (OSError, ValueError, TypeError, AttributeError):  # Pillow, which read it, has the final word
        return data, Beyond()
    return data, beyond_pixels(data, image.format, pixels_at)


def _file_bytes(source) -> bytes:
    """`source`'s bytes: itself, a path's content or a file object's whole content (its position put back). Read, not
    mapped: a mapped file that shrinks as it is read kills the process (SIGBUS)."""
    if isinstance(source, (bytes, bytearray)):
        return source
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return read_limited(file, what="the image file holds")
    position = source.tell()
    try:
        source.seek(0)
        return read_limited(source, what="the image file holds")
    finally:
        source.seek(position)


def _decode(image: Image.Image, data: bytes | None) -> Image.Image | DeepImage:
    """The image Pillow opened from its file (whose bytes are `data` where they were read) decoded."""
    if image.format == "PNG" and sniff_bits_per_channel(_file_head(image, data)) == 16 and _frame_count(image) == 1:
        return _open_deep(image, data)
    if image.format in ("TIFF", "PPM") and _tile_rawmode(image) in _GREY16_RAWMODES and _frame_count(image) == 1:
        return _open_grey16(image)
    if image.format == "PPM" and _tile_args(image) == ("RGB", 0xFFFF) and _tile_codec(image) == "ppm":
        return _open_ppm16(image, data)
    if image.format == "PPM" and _tile_args(image) in (("RGB", 0xFFFF), ("L", 0xFFFF)) and \
            _tile_codec(image) == "ppm_plain":
        return _open_plain_pnm16(image, data)
    if image.format == "TIFF" and _tiff16_mode(image) is not None and _frame_count(image) == 1:
        return _open_tiff16(image, data)
    refuse_what_would_be_lost(image, data, opened_here=True)
    low_grey_bits = _grey_bits_below_8(image) or (1 if image.mode == "1" else 0)
    # A PNG's chunks as they are, read before load() (which closes a file Pillow opened); other formats' metadata
    # from what Pillow read of it.
    chunks = read_png_chunks(image.fp, low_grey_bits) if image.format == "PNG" and image.fp is not None else None
    keeps_depth = bool(low_grey_bits) and _chunks_fit_depth(image, low_grey_bits)
    alpha = _bmp_alpha(image, data) if _bmp_fourth_bytes(image) else None
    with _readable():
        image.load()
    if alpha is not None:  # the fourth bytes as the image's alpha: RGBA
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(alpha, "L"))
        rgba.info.update(image.info)
        rgba.format = image.format
        image = rgba
    elif image.mode == "La":  # premultiplied grey + alpha whose every alpha is 255 (else refused): straight as it is
        straight = image.convert("LA")
        straight.info.update(image.info)
        straight.format = image.format
        image = straight
    if chunks is None:
        chunks = chunks_from_info(stated_info(image), fields_left_out(image))
    image.info[METADATA], image.info[DROPPED] = chunks
    if image.mode == "1":  # after its metadata are read: a TIFF's tags are the file's, which the grey image lacks
        image = _bilevel_as_grey(image, keeps_depth)
    elif keeps_depth and image.mode == "L":
        image.info[GREY_BITS] = low_grey_bits
    _within_pixel_limit(image)
    if isinstance(image.info.get("transparency"), int) and image.mode == "L":
        # Pillow scales 1/2/4-bit grey up to 0..255 but leaves the tRNS key as stored: scale it with the pixels
        # (otherwise the key would name a grey no pixel has, and the transparency would be lost).
        image.info["transparency"] = _scaled_key(image.info["transparency"], low_grey_bits)
    return image


def codable(image):
    """`image` as vaezip codes it: a bilevel image (mode 1) as the grey one _bilevel_as_grey makes of it (checked
    for what would be lost first, while its file says how many frames it has); any other as it is."""
    if isinstance(image, Image.Image) and image.mode == "1":
        refuse_what_would_be_lost(image)
        return _bilevel_as_grey(image)
    return image


def _bilevel_as_grey(image: Image.Image, keeps_depth: bool | None = None) -> Image.Image:
    """A bilevel (mode 1) image as the grey image of its pixels' values, 0 and 255 (as Pillow reads them), its info
    kept and its colour key (0 or 1, as a 1-bit PNG's tRNS states it) scaled with them: coded, and decoded, as an
    8-bit grey image, as 2- and 4-bit grey PNGs are (Pillow reads those as 8-bit grey). Its metadata are read from
    it first where open_image has not (an API caller's image): what its file states (a TIFF's resolution tags) and
    what no chunk keeps (its other tags) are known from the bilevel image only. `keeps_depth`: whether its file's
    chunks fit one bit (_chunks_fit_depth; None: read from its file here, where Pillow still has it open), and
    decompress writes it back as a 1-bit PNG (GREY_BITS)."""
    if keeps_depth is None:
        keeps_depth = _chunks_fit_depth(image, 1)
    _within_pixel_limit(image)  # before eight times its bytes are asked for
    _load_pixels(image)
    grey = image.convert("L")
    grey.info = dict(image.info)
    grey.format = image.format
    if METADATA not in grey.info:
        grey.info[METADATA], grey.info[DROPPED] = chunks_from_info(stated_info(image), fields_left_out(image))
    key = grey.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        grey.info["transparency"] = _scaled_key(key, 1)
    if keeps_depth:
        grey.info[GREY_BITS] = 1
    return grey


def _chunks_fit_depth(image: Image.Image, bits: int) -> bool:
    """Whether a grey PNG's (before load) colour key, background and significant bits are ones a grey PNG of its
    depth `bits` holds (True for another format's image, or one whose file is gone): PNG allows no others, yet a
    file may hold a key past its depth (Pillow writes a 1-bit image's key as 255), which a reader takes as nothing
    transparent where Pillow compares it with the pixels it scaled up. Only where they fit is the file's depth kept
    (GREY_BITS): written back in it, they would mean other pixels."""
    file = getattr(image, "fp", None)
    if image.format != "PNG" or file is None:
        return True
    try:
        position = file.tell()
    except (OSError, ValueError):
        return True
    try:
        file.seek(8)
        for _, length, kind in walk_png_chunks(file):
            if kind == b"IDAT":
                return True
            if kind in (b"tRNS", b"bKGD", b"sBIT"):
                data = file.read(length)
                value = int.from_bytes(data, "big")
                if kind == b"sBIT" and (len(data) != 1 or not 1 <= value <= bits) or \
                        kind != b"sBIT" and (len(data) != 2 or value >= 1 << bits):
                    return False
        return True
    except (OSError, ValueError):
        return False
    finally:
        file.seek(position)


def _bmp_fourth_bytes(image: Image.Image) -> bool:
    """Whether Pillow reads `image` (not loaded yet) as a 32-bit BMP or DIB of plain RGB (BI_RGB) whose fourth bytes
    it drops (BGRX): where an RGBA image Pillow itself saved keeps its alpha. (A BI_BITFIELDS one's masks say
    whether those bytes are alpha: Pillow reads them as it says.)"""
    return image.format in ("BMP", "DIB") and image.info.get("compression") == 0 and _tile_rawmode(image) == "BGRX"


def _bmp_alpha(image: Image.Image, data: bytes | None) -> np.ndarray | None:
    """A 32-bit BMP's fourth bytes (H, W), where they hold anything: Pillow reads such a BMP as RGB, dropping them
    (BGRX), so an RGBA image Pillow itself saved as BMP lost its alpha, and `--rm` deleted the file. None where they
    are all 0 (padding) or all 255 (opaque), or where the file is not as its tile says (Pillow's load says why)."""
    (tile,) = image.tile
    args = tile[-1]
    if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[1], int) and isinstance(args[2], int)):
        return None
    _, stride, orientation = args
    width, height = image.size
    raw = _whole_file(image, data)
    if stride < 4 * width or len(raw) < tile[2] + stride * height:
        return None
    rows = np.frombuffer(raw, np.uint8, count=stride * height, offset=tile[2]).reshape(height, stride)
    fourth = rows[:, : 4 * width].reshape(height, width, 4)[..., 3]
    if orientation < 0:  # bottom-up rows, as most BMPs store them
        fourth = fourth[::-1]
    if (fourth == 0).all() or (fourth == 255).all():
        return None
    return np.ascontiguousarray(fourth)


def _deep(image: Image.Image, samples: np.ndarray, mode: str, chunks: tuple) -> DeepImage:
    """The DeepImage of `samples` read from the file Pillow opened as `image` (closed here), with its metadata."""
    deep = DeepImage(np.ascontiguousarray(samples), mode, format=image.format)
    deep.info[METADATA], deep.info[DROPPED] = chunks
    image.close()
    return deep


def _open_deep(image: Image.Image, data: bytes | None) -> DeepImage:
    """A 16-bit PNG that Pillow opened (its header read), read whole by vaezip/png16.py."""
    try:
        data = _whole_file(image, data)
        chunks = read_png_chunks(io.BytesIO(data))
        samples, mode = png16.read(data, MAX_IMAGE_PIXELS)
    except png16.PngError as error:
        raise ImageError(f"not a readable image ({error})" if "tRNS" not in str(error) else str(error)) from None
    except (OSError, ValueError, AttributeError) as error:
        raise ImageError(f"not a readable image ({str(error).strip() or type(error).__name__})") from None
    finally:
        image.close()  # whatever happened (_deep closes it too: a second close does nothing)
    return _deep(image, samples, mode, chunks)


# Unsigned 16-bit grey as Pillow reads it from a TIFF (I;16) or a PGM of maxval 65535 (I;16B), every value as stored
_GREY16_RAWMODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _tile_rawmode(image: Image.Image) -> str | None:
    """How Pillow will unpack the file's tiles (before load): their raw mode, where they share one; else None."""
    found = {_rawmode(tile) for tile in getattr(image, "tile", None) or ()}
    return found.pop() if len(found) == 1 else None


def _rawmode(tile) -> str | None:
    """A Pillow tile's raw mode ("RGB;16B", "I;16", "L;4"), None where its arguments name none."""
    args = tile[-1]
    rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else None
    return rawmode if isinstance(rawmode, str) else None


def _open_grey16(image: Image.Image) -> DeepImage:
    """A 16-bit grey TIFF or PGM (maxval 65535), whose samples Pillow reads as they are, as a DeepImage. A TIFF whose
    white is 0 (photometric interpretation 0) is turned over, as Pillow turns over an 8-bit one: 0 is then black."""
    white_is_zero = image.format == "TIFF" and getattr(image, "tag_v2", {}).get(262) == 0
    with _readable():
        image.load()
    left_out = fields_left_out(image)  # loaded: Pillow has turned the pixels by its orientation tag and dropped it
    samples = np.asarray(image)
    if samples.ndim != 2 or samples.size and (int(samples.min()) < 0 or int(samples.max()) > 0xFFFF):
        raise ImageError(f"not a readable image (16-bit grey {image.format} read as {samples.dtype} "
                         f"{samples.shape})")
    samples = samples.astype(np.uint16)
    return _deep(image, 0xFFFF - samples if white_is_zero else samples, "L",
                 chunks_from_info(stated_info(image), left_out))


def _tile_args(image: Image.Image):
    tiles = getattr(image, "tile", None) or ()
    return tiles[0][-1] if len(tiles) == 1 else None


def _whole_file(image: Image.Image, data: bytes | None) -> bytes:
    if data is not None:
        return bytes(data)
    with _readable():
        image.fp.seek(0)
        return image.fp.read()


def _open_ppm16(image: Image.Image, data: bytes | None) -> DeepImage:
    """A binary PPM of maxval 65535 (P6), which Pillow narrows to 8 bits: its big-endian samples read as stored."""
    data = _whole_file(image, data)
    offset, count = image.tile[0][2], image.width * image.height * 3
    if len(data) < offset + 2 * count:
        raise ImageError("not a readable image (image file is truncated)")
    samples = np.frombuffer(data, ">u2", count, offset).astype(np.uint16).reshape(image.height, image.width, 3)
    return _deep(image, samples, "RGB", chunks_from_info(stated_info(image)))


def _tile_codec(image: Image.Image) -> str | None:
    tiles = getattr(image, "tile", None) or ()
    return tiles[0][0] if len(tiles) == 1 else None


def _open_plain_pnm16(image: Image.Image, data: bytes | None) -> DeepImage:
    """A plain (text) PPM or PGM of maxval 65535 (P3, P2), which Pillow narrows to 8 bits: its decimal samples."""
    mode = _tile_args(image)[0]
    data = _whole_file(image, data)
    count = image.width * image.height * len(mode)
    words = data[image.tile[0][2] :].split(maxsplit=count)[:count]
    if len(words) < count or not all(word.isdigit() and len(word) <= 5 for word in words):
        raise ImageError("not a readable image (a plain PNM's samples are not as many numbers as its pixels hold)")
    samples = np.array(words, dtype=np.int64)
    if int(samples.max(initial=0)) > 0xFFFF:
        raise ImageError("not a readable image (a plain PNM's sample is above its maximum value 65535)")
    shape = (image.height, image.width, 3) if mode == "RGB" else (image.height, image.width)
    return _deep(image, samples.astype(np.uint16).reshape(shape), mode, chunks_from_info(stated_info(image)))


def _tiff16_mode(image: Image.Image) -> str | None:
    """RGB, RGBA or LA for a TIFF of unsigned 16-bit samples with an unassociated alpha where it has one (Pillow
    narrows those to 8 bits); None for any other TIFF."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None

    samples, photometric, extra = tags.get(277, 1), tags.get(262), _tag_values(tags, 338, ())
    if _tag_values(tags, 258, 1) != (16,) * samples or any(kind != 1 for kind in _tag_values(tags, 339, 1)):
        return None
    return {(3, 2, ()): "RGB", (4, 2, (2,)): "RGBA", (2, 1, (2,)): "LA"}.get((samples, photometric, extra))


def _open_tiff16(image: Image.Image, data: bytes | None) -> DeepImage:
    """A 16-bit colour (or grey + alpha) TIFF, read through imagecodecs' libtiff where it is installed (Pillow keeps 8
    bits of it)."""
    mode = _tiff16_mode(image)
    try:
        import imagecodecs
    except ImportError:
        raise ImageError(f"16-bit {mode} TIFF: vaezip reads one through imagecodecs, which is not installed (pip "
                         f"install imagecodecs); or convert it to a 16-bit PNG") from None
    data = _whole_file(image, data)
    try:
        samples = imagecodecs.tiff_decode(data)
    except Exception as error:  # noqa: BLE001 - imagecodecs' own error classes: a damaged or unreadable file
        raise ImageError(f"not a readable image ({str(error).strip() or type(error).__name__})") from None
    channels = png16.CHANNELS[mode]
    # libtiff gives the samples as stored; Pillow turns an image by its orientation tag as it loads it, gives the
    # turned size already, and drops the tag: so here too
    turn = _TURNS.get(image.tag_v2.get(274, 1), lambda stored: stored)
    turned = image.tag_v2.get(274) in (5, 6, 7, 8)  # width and height swapped
    height, width = (image.width, image.height) if turned else (image.height, image.width)
    if samples.shape == (channels, height, width):  # stored a plane a channel
        samples = samples.transpose(1, 2, 0)
    if samples.dtype != np.uint16 or samples.shape != (height, width, channels):
        raise ImageError(f"not a readable image (a 16-bit {mode} TIFF read as {samples.dtype} {samples.shape})")
    image.tag_v2.pop(274, None)
    left_out = fields_left_out(image)
    return _deep(image, np.ascontiguousarray(turn(samples)), mode, chunks_from_info(stated_info(image), left_out))


# What Pillow's ImageOps.exif_transpose does to an image of each TIFF orientation, on (H, W, C) samples
_TURNS = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
          6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


@contextmanager
def _readable(decoded_on_opening: bool = False):
    """Pillow's failures while opening or decoding, as one-line ImageErrors (nothing else may raise inside).
    `decoded_on_opening`: a format Pillow decodes as it opens it (an icon: a 90-byte one claiming 16383x16383
    took 1 GB before vaezip could look at its size), opened under Pillow's limit set to refuse past vaezip's."""
    try:
        # Pillow's own limits raised (pillow_settings): vaezip's MAX_IMAGE_PIXELS is checked from the header.
        # Pillow refuses a PNG whose text chunk inflates past 1 MB (a large XMP packet): vaezip keeps the chunks
        # as stored, and their inflated total stays within Pillow's own 64 MB for all of a file's text.
        with pillow_settings(text_chunk=TEXT_MEMORY, pixels=MAX_IMAGE_PIXELS // 2 if decoded_on_opening else None):
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image (unknown or damaged format)") from None
    except LookupError:  # a plugin's table has no entry for this variant (e.g. a 16-bit PSD)
        raise ImageError("not a readable image (a variant of its format that Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, RuntimeError, TypeError) as error:
        # (RuntimeError: the AVIF plugin's damaged file; TypeError: a TIFF's directory without its size)
        raise ImageError(f"not a readable image ({str(error).strip() or type(error).__name__})") from None


# ---------------------------------------------------------------------------------------------- what would be lost

# A Pillow raw mode: base mode, bits, then byte order / signedness letters ("RGB;16B", "I;16", "F;32F", "L;4").
_RAWMODE = re.compile(r"^([A-Za-z]+);(\d+)([A-Za-z]*)")
_DEEP_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_SNIFF_BYTES = 1 << 20  # how much of a file's start is searched for a JPEG 2000 or AVIF header


def refuse_what_would_be_lost(image: Image.Image, data: bytes | None = None, opened_here: bool = False) -> None:
    """Raise ImageError, naming the reason, when coding `image` would hold less than its file: more than 8 bits
    per channel (Pillow reads 16-bit RGB, RGBA and grey+alpha PNGs as 8-bit RGB / RGBA, silently), or more than
    one frame (animated GIF / PNG / WebP, multi-page TIFF, an icon with several sizes).

    Best before the image is loaded: the raw mode and the file's own header are only readable then. `data` is the
    whole file where the caller has it (else the image's still-open file is read); `opened_here`: open_image is
    the caller (whose refusal is final), not an API caller's image that open_image would read whole."""
    frames = _frame_count(image)
    if frames > 1:
        raise ImageError(f"image has {frames} frames; vaezip codes single-frame images")
    sizes = image.info.get("sizes") if image.format in ("ICO", "ICNS") else None
    if sizes is not None and len(sizes) > 1:
        raise ImageError(f"icon holds {len(sizes)} sizes; vaezip codes single-frame images")
    entries = getattr(getattr(image, "ico", None), "entry", None) if image.format in ("ICO", "CUR") else None
    if isinstance(entries, list) and len(entries) > 1:  # two of one size (24-bit and 32-bit): Pillow reads one
        raise ImageError(f"icon holds {len(entries)} images; vaezip codes single-frame images")
    if isinstance(entries, list) and entries:
        offset = getattr(entries[0], "offset", 0)
        if sniff_bits_per_channel(_bytes_at(image, data, offset, 32)) == 16:
            raise ImageError("icon holds a 16-bit PNG, which vaezip does not read from an icon: save it as a PNG "
                             "file of its own (vaezip codes 16-bit PNGs whole)")
        if "tRNS" in _icon_png_chunks(image, data):  # its transparency: pixels, not metadata
            raise ImageError("icon holds a PNG with a transparent colour (tRNS), which Pillow does not read from an "
                             "icon: save it as a PNG file of its own")
    bits = _bits_per_channel(image, data)
    if image.format in ("PNG", "PPM") and bits == 16 and not opened_here:  # opened by Pillow, not open_image
        raise ImageError(f"16-bit {image.format} (16 bits per channel) opened as Pillow opens it, which keeps 8 (or "
                         f"no colour): open it with vaezip.images.open_image, which keeps all 16")
    if bits > 8:
        in_memory = image.format is None and bits <= 16  # made in a program (Image.fromarray), not read
        advice = ("give its samples as a uint16 array (np.asarray(image)), which vaezip codes whole" if in_memory
                  else "convert it to a 16-bit PNG (no loss)" if bits <= 16
                  else "convert it to 16 or 8 bits first if that loss is acceptable")
        raise ImageError(f"{bits}-bit {image.format or 'image'} ({bits} bits per channel); vaezip codes 8 bits per "
                         f"channel (16 in most PNG, TIFF and PNM files) and will not drop the low bits: {advice}")
    rawmode = _tile_rawmode(image)
    if rawmode is not None and "a" in rawmode.split(";")[0]:
        # Premultiplied ("associated") alpha, a TIFF's ExtraSamples 1: Pillow divides the colours by it as it reads
        # them (where the alpha is below 255 the stored values may be gone); the file was deleted by --rm. Where
        # every alpha is 255 the division changes nothing.
        try:
            with _readable():
                image.load()
        except (ImageError, AssertionError, AttributeError) as error:  # closed (Pillow asserts), or damaged
            raise ImageError(f"its pixels cannot be read ({str(error) or type(error).__name__}; a closed "
                             f"image?)") from None
        if image.mode[-1:] in ("A", "a") and image.getextrema()[-1][0] < 255:
            raise ImageError(f"{image.format or 'an image'} of premultiplied alpha ({rawmode}): Pillow converts it "
                             f"to straight alpha as it reads it, which loses values, and vaezip will not: convert it "
                             f"to a PNG first if that loss is acceptable")
    if not opened_here and image.format in ("BMP", "DIB"):
        try:
            held = _bmp_alpha(image, data) is not None if _bmp_fourth_bytes(image) else _loaded_bmp_alpha(image)
        except (ImageError, AttributeError):  # the file can no longer be read (closed): nothing to tell
            held = False
        if held:
            raise ImageError(f"32-bit {image.format} whose fourth bytes hold an alpha, opened as Pillow opens it, "
                             f"which drops them: open it with vaezip.images.open_image, which keeps them")


def _icon_png_chunks(image: Image.Image, data: bytes | None) -> list[str]:
    """The chunks of the PNG an icon of one image holds besides those of its pixels (IHDR, PLTE, IDAT, IEND), which
    Pillow reads the pixels without (a colour profile, text, a transparent colour); [] where it holds a bitmap."""
    entries = getattr(getattr(image, "ico", None), "entry", None) if image.format in ("ICO", "CUR") else None
    if not isinstance(entries, list) or len(entries) != 1:
        return []
    png = _bytes_at(image, data, getattr(entries[0], "offset", 0), min(getattr(entries[0], "size", 0), 1 << 26))
    if not png.startswith(PNG_SIGNATURE):
        return []
    file, kinds = io.BytesIO(png), []
    file.seek(len(PNG_SIGNATURE))
    for _, _, kind in walk_png_chunks(file):
        if kind == b"IEND":
            break
        if kind not in (b"IHDR", b"PLTE", b"IDAT"):
            kinds.append(kind.decode("latin-1"))
    return kinds


def _bytes_at(image: Image.Image, data: bytes | None, offset: int, count: int) -> bytes:
    """`count` bytes at `offset` of the file Pillow opened as `image` (its whole bytes `data`, else read from its
    still-open file, the position put back); b"" where they cannot be read."""
    if data is not None:
        return bytes(data[offset: offset + count])
    return _read_at(getattr(image, "fp", None), offset, count)


def _read_at(fp, offset: int, count: int) -> bytes:
    """`count` bytes at `offset` of the open file `fp`, its position put back; b"" where they cannot be read."""
    try:
        position = fp.tell()
        fp.seek(offset)
        found = fp.read(count)
        fp.seek(position)
    except (OSError, ValueError, AttributeError):
        return b""
    return found if isinstance(found, bytes) else b""


_BMP_MASKS_END = 14 + 40 + 16  # a BMP's file header, info header and its four bit-field masks


def _bmp_alpha_mask(image: Image.Image, data: bytes | None) -> bool:
    """Whether a BMP or DIB of bit fields (BI_BITFIELDS, BI_ALPHABITFIELDS) names an alpha mask (ARGB1555, ARGB4444),
    which Pillow reads as no alpha; False where its header cannot be read again."""
    if image.info.get("compression") not in (3, 6):
        return False
    try:
        head = _bytes_at(image, data, 0, _BMP_MASKS_END)
        start = 14 if head[:2] == b"BM" else 0
        size, bits = struct.unpack_from("<I", head, start)[0], struct.unpack_from("<H", head, start + 14)[0]
        if size < 56 and image.info.get("compression") != 6:
            return False
        red, green, blue, alpha = struct.unpack_from("<IIII", head, start + 40)  # in the header, or right after it
        return bool(alpha & ~(red | green | blue) & ((1 << bits) - 1))  # bits of their own, within the pixel
    except struct.error:
        return False


def _loaded_bmp_alpha(image: Image.Image) -> bool:
    """Whether the BMP or DIB file a loaded `image` was opened from by name (Pillow no longer says how it read it)
    holds an alpha in its fourth bytes, which Pillow dropped; False where it cannot tell."""
    filename = getattr(image, "filename", None)
    if getattr(image, "tile", None) or not isinstance(filename, str) or not os.path.isfile(filename):
        return False
    try:
        with pillow_settings(), Image.open(filename) as twin:
            return twin.format == image.format and twin.size == image.size and _bmp_fourth_bytes(twin) and \
                _bmp_alpha(twin, None) is not None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # changed or gone since: cannot tell
        return False


def _frame_count(image: Image.Image) -> int:
    try:
        with pillow_settings():  # a GIF's frames are size-checked as they are read: a host's lower limit refused them
            frames = getattr(image, "n_frames", 1)  # GIF and WebP count by reading through the file
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError, LookupError, struct.error, RuntimeError, TypeError) as error:
        raise ImageError(f"not a readable image ({str(error).strip() or type(error).__name__})") from None
    return frames if isinstance(frames, int) else 1


def _bits_per_channel(image: Image.Image, data: bytes | None) -> int:
    """The most bits per channel that the file holds (8 where nothing says more)."""
    for tile in getattr(image, "tile", None) or ():  # before load(): how Pillow will unpack the file's bytes
        codec, args, rawmode = tile[0], tile[-1], _rawmode(tile)
        if rawmode is not None and _rawmode_bits(rawmode) > 8:
            return _rawmode_bits(rawmode)
        if codec == "SGI16" or (codec == "sgi_rle" and isinstance(args, tuple) and len(args) > 2 and args[2] == 2):
            return 16
        if codec in ("ppm", "ppm_plain") and isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int):
            if args[1] > 255:  # a maximum value above 255: Pillow scales the samples down to 8 bits
                return args[1].bit_length()
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        per_sample = tags.get(258)  # BitsPerSample
        values = per_sample if isinstance(per_sample, tuple) else (per_sample,)
        values = [v for v in values if isinstance(v, int)]
        if values and max(values) > 8:
            return max(values)
    if image.mode in _DEEP_MODES:
        return _DEEP_MODES[image.mode]
    return sniff_bits_per_channel(_file_head(image, data))


def _rawmode_bits(rawmode: str) -> int:
    match = _RAWMODE.match(rawmode)
    if match is None:
        return 8
    base, bits, suffix = match.group(1), int(match.group(2)), match.group(3)
    # Bits per channel for one-band modes ("I;16", "L;16B", "L;4") and for byte-ordered samples ("RGB;16B",
    # "LA;16B"); without a byte order a many-band number counts packed pixels ("BGR;16" is 5-6-5, "BGR;24").
    return bits if len(base) == 1 or suffix[:1] in ("B", "L", "N") else 8


def _grey_bits_below_8(image: Image.Image) -> int:
    """1, 2 or 4 when Pillow will scale this image's grey samples up from that many bits (before load only)."""
    for tile in getattr(image, "tile", None) or ():
        rawmode = _rawmode(tile)
        if rawmode in ("L;1", "L;2", "L;4"):
            return int(rawmode[2])
    return 0


def _unscaled_key_bits(image: Image.Image) -> int:
    """1, 2 or 4 where `image` is a grey PNG of that depth whose colour key Pillow left as stored while scaling the
    pixels up to 0..255 (open_image scales it with them), else 0."""
    if METADATA in image.info or image.mode != "L" or not isinstance(image.info.get("transparency"), int):
        return 0
    return _grey_bits_below_8(image) or _png_grey_bits_below_8(image)


def _scaled_key(key, low_grey_bits: int):
    """A grey colour key of `low_grey_bits` bits scaled as Pillow scales the pixels (as it is where 0)."""
    if low_grey_bits and isinstance(key, int) and 0 <= key < 1 << low_grey_bits:
        return key * 255 // ((1 << low_grey_bits) - 1)
    return key


def _png_grey_bits_below_8(image: Image.Image) -> int:
    """1, 2 or 4 where `image` is a grey PNG of that bit depth by its file's header (0 where that is not known)."""
    if image.format != "PNG" or image.mode != "L":
        return 0
    head = _file_head(image, None)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or len(head) < 26:
        return 0
    return head[24] if head[25] == 0 and head[24] in (1, 2, 4) else 0  # colour type 0: grey


def _file_head(image: Image.Image, data: bytes | None) -> bytes:
    """The start of the file Pillow opened `image` from, where it can still be read (b"" where not: an image Pillow
    made, or copied, holds nothing of its file)."""
    if data is not None:
        return bytes(data[:_SNIFF_BYTES])
    fp = getattr(image, "fp", None)
    if fp is None:  # loaded: Pillow keeps the file of a format of several frames (PNG among them) open
        try:
            fp = getattr(image, "_fp", None)
            if not hasattr(fp, "seek") or getattr(fp, "closed", True):
                fp = None
        except ValueError:  # closed: Pillow's stand-in raises on every attribute
            fp = None
    if fp is not None:
        return _read_at(fp, 0, _SNIFF_BYTES)
    # loaded already: Pillow has closed the file, but a path opened by name is still there
    filename = getattr(image, "filename", None)
    if image.format is None or not isinstance(filename, str) or not os.path.isfile(filename):
        return b""
    try:
        with open(filename, "rb") as file:
            return file.read(_SNIFF_BYTES)
    except (OSError, ValueError):
        return b""


def sniff_bits_per_channel(head: bytes) -> int:
    """Bits per channel from the start of a PNG, JPEG 2000, AVIF or PNM file (8 for anything else)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) > 24:
        return max(8, head[24])  # IHDR bit depth: 1, 2, 4, 8 or 16
    if head[:2] in (b"P2", b"P3", b"P5", b"P6"):
        header = pnm_header(head)  # width, height, maximum value (Pillow scales one above 255 down to 8 bits)
        return max(8, header[0][2].bit_length()) if header is not None else 8
    codestream = head.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC, then the SIZ marker segment
    if codestream >= 0 and (head[:2] == b"\xff\x4f" or head[4:8] == b"jP  "):
        siz = head[codestream + 2 :]
        if len(siz) >= 40:
            components = struct.unpack_from(">H", siz, 38)[0]
            depths = [(siz[40 + 3 * c] & 0x7F) + 1 for c in range(components) if 40 + 3 * c < len(siz)]
            if depths and max(depths) > 8:
                return max(depths)
        return 8
    if head[4:8] == b"ftyp" and _avif_brand(head):
        box = head.find(b"av1C")  # AV1 codec configuration: high_bitdepth and twelve_bit flags in byte 2
        if box >= 0 and len(head) > box + 6:
            flags = head[box + 6]
            if flags & 0x40:
                return 12 if flags & 0x20 else 10
    return 8


def _avif_brand(head: bytes) -> bool:
    """Whether a file's ftyp box names AVIF, as its major brand or among its compatible ones (a 10-bit AVIF of major
    brand mif1 was narrowed to 8 bits without a word)."""
    size = int.from_bytes(head[:4], "big")
    brands = [head[at: at + 4] for at in range(8, min(size, len(head)) - 3, 4) if at != 12]  # major, then compatible
    return any(brand in (b"avif", b"avis") for brand in brands)


def _check_mode(image: Image.Image) -> None:
    if image.mode in SUPPORTED_MODES:
        return
    hint = {"CMYK": "CMYK", "PA": "palette with alpha", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}
    kind = f" ({hint[image.mode]})" if image.mode in hint and hint[image.mode] != image.mode else ""
    raise ImageError(f"unsupported image mode {image.mode}{kind}; vaezip codes 1, L, LA, RGB, RGBA and P images "
                     f"(8 bits a channel, or 16 in PNG, TIFF and PNM files)")


def as_image(image) -> Image.Image | DeepImage:
    """What the API codes from what a caller gives: a PIL image or a DeepImage as it is, an array through
    image_from_array; ImageError for anything else (a path, bytes, None)."""
    if isinstance(image, (Image.Image, DeepImage)):
        return image
    if isinstance(image, (str, bytes, bytearray, os.PathLike, dict)) or image is None or hasattr(image, "read"):
        raise ImageError(f"a {type(image).__name__}: vaezip codes a PIL image, a DeepImage or a uint8 or uint16 "
                         f"array (open a file with vaezip.images.open_image)")
    return image_from_array(image)


def image_from_array(array) -> Image.Image | DeepImage:
    """An (H, W) or (H, W, C) uint8 array (C from 1 to 4) as an L, L, LA, RGB or RGBA image (a uint16 one as such
    a DeepImage); ImageError for any other dtype or shape (Pillow's own message names neither)."""
    array = np.asarray(array)
    if array.dtype.kind == "u" and array.dtype.itemsize == 2 and array.dtype != np.uint16:
        array = array.astype(np.uint16)  # big-endian samples (a 16-bit PNG's or PNM's, read as they are stored)
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"an array of {array.dtype}: vaezip codes uint8 samples (8 bits) and uint16 ones (16)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    channels = array.shape[2] if array.ndim == 3 else None
    mode = "L" if array.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ImageError(f"an array of shape {array.shape}: vaezip codes (H, W) and (H, W, C) arrays, C from 1 to 4")
    if array.dtype == np.uint16:
        return DeepImage(np.ascontiguousarray(array), mode)
    return Image.fromarray(np.ascontiguousarray(array), mode)


def _within_pixel_limit(image) -> None:
    """ImageError where `image` (a PIL image or a DeepImage) has more pixels than vaezip codes (MAX_IMAGE_PIXELS)."""
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)")


def _load_pixels(image: Image.Image) -> None:
    """Decode a lazily opened image's pixels: ImageError where they cannot be (one closed meanwhile, of which Pillow
    says tersely `Operation on closed image`)."""
    try:
        image.load()
    except (ValueError, AssertionError, OSError) as error:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        closed = "" if isinstance(error, OSError) else "; a closed image?"  # an OSError: a damaged file
        raise ImageError(f"its pixels cannot be read ({detail}{closed})") from None


def split_image(image: Image.Image) -> Planes:
    refuse_what_would_be_lost(image)  # before np.asarray loads it: the raw mode is only readable until then
    if image.mode == "1":  # (its pixel checksum is the grey image's: archive._split converts it first, by codable)
        image = _bilevel_as_grey(image)
    _check_mode(image)
    low_grey_bits = _unscaled_key_bits(image)  # before load(), while Pillow's raw mode says it
    if image.width < 1 or image.height < 1:
        raise ImageError("image has no pixels")
    _within_pixel_limit(image)  # the decoder refuses such files: never write one
    _load_pixels(image)
    pixels = np.asarray(image)
    planes = Planes(image.mode, image.width, image.height, None)
    if image.mode in ("L", "LA"):
        grey = pixels if image.mode == "L" else pixels[..., 0]
        planes.model_plane = np.ascontiguousarray(grey[None])
        if image.mode == "LA":
            planes.side_planes["alpha"] = np.ascontiguousarray(pixels[..., 1])
    elif image.mode in ("RGB", "RGBA"):
        planes.model_plane = np.ascontiguousarray(pixels[..., :3].transpose(2, 0, 1))
        if image.mode == "RGBA":
            planes.side_planes["alpha"] = np.ascontiguousarray(pixels[..., 3])
    else:
        _split_palette(image, pixels, planes)
    if image.mode in ("L", "RGB") and image.info.get("transparency") is not None:
        try:
            key = _colour_key(image.mode, image.info["transparency"])
        except ValueError:
            raise ImageError(
                f"transparency {image.info['transparency']!r} is not a colour key for a {image.mode} image"
            ) from None
        key = _scaled_key(key, low_grey_bits)
        planes.info["transparency"] = key if isinstance(key, int) else list(key)  # JSON-able
    return planes


def _colour_key(mode: str, value) -> int | tuple[int, int, int]:
    """A tRNS colour key as Pillow holds it: one grey for L, an (r, g, b) tuple for RGB (16-bit PNG samples at
    most); ValueError for anything else."""

    def sample(v) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= 0xFFFF:
            raise ValueError(f"bad colour key {value!r} for mode {mode}")
        return int(v)

    if mode == "L":
        return sample(value)
    if mode == "RGB" and isinstance(value, (tuple, list)) and len(value) == 3:
        return tuple(sample(v) for v in value)
    raise ValueError(f"bad colour key {value!r} for mode {mode}")


def _as_restored(transparency):
    """A palette image's transparency as a decode gives it back: a numpy integer as an int, a bytearray as bytes
    (what the API may be handed; Pillow itself reads an int or bytes); anything else as it is."""
    if isinstance(transparency, np.integer):
        return int(transparency)
    if isinstance(transparency, bytearray):
        return bytes(transparency)
    return transparency


PALETTE_ENTRIES = 256  # a PNG's or a GIF's palette: its transparency names one of them, or gives each an alpha


def _palette_transparency_fits(transparency) -> bool:
    """Whether a palette image's transparency (an index, alpha bytes or None, as decoded) is one a palette can
    have: a crafted file's index of 2**30 made a decode build a gigabyte of alpha bytes."""
    if isinstance(transparency, bool):
        return False
    if isinstance(transparency, int):
        return 0 <= transparency < PALETTE_ENTRIES
    if isinstance(transparency, bytes):
        return len(transparency) <= PALETTE_ENTRIES
    return transparency is None


def _split_palette(image: Image.Image, indices: np.ndarray, planes: Planes) -> None:
    palette_mode = image.palette.mode if image.palette is not None else "RGB"
    raw = bytes(image.palette.tobytes()) if image.palette is not None else b""
    planes.palette = raw
    planes.info["palette_mode"] = palette_mode
    transparency = _as_restored(image.info.get("transparency"))
    if not _palette_transparency_fits(transparency):  # the decoder would refuse the file
        raise ImageError(f"a palette image's transparency ({short_repr(transparency)}) is neither a palette index "
                         f"nor at most {PALETTE_ENTRIES} alpha bytes")
    if isinstance(transparency, int):
        planes.info["transparency"] = transparency
    elif isinstance(transparency, bytes):
        planes.info["transparency"] = transparency.hex()
    width = len(palette_mode)
    colours = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)[:, :3] if raw else np.zeros((0, 3), np.uint8)
    used = np.unique(indices)
    if len(colours) > int(used.max()) and len(np.unique(colours[used], axis=0)) == len(used):
        planes.info["used"] = used.astype(np.uint8).tobytes().hex()
        planes.model_plane = np.ascontiguousarray(colours[indices].transpose(2, 0, 1))
    else:  # two used indices share a colour (or indices past the palette): code the indices themselves
        planes.side_planes["index"] = np.ascontiguousarray(indices)


def join_planes(planes: Planes) -> Image.Image:
    """The image back from its planes; ValueError (or KeyError...) where the planes or info cannot be one."""
    mode = planes.mode
    if mode == "P":
        return _join_palette(planes)
    key = planes.info.get("transparency")
    if key is not None and mode not in ("L", "RGB"):
        raise ValueError(f"a colour key does not fit mode {mode}")
    if mode in ("L", "LA"):
        grey = planes.model_plane[0]
        array = grey if mode == "L" else np.stack([grey, planes.side_planes["alpha"]], axis=-1)
        image = Image.fromarray(array, mode)
    elif mode in ("RGB", "RGBA"):
        rgb = planes.model_plane.transpose(1, 2, 0)
        array = rgb if mode == "RGB" else np.concatenate([rgb, planes.side_planes["alpha"][..., None]], axis=-1)
        image = Image.fromarray(np.ascontiguousarray(array), mode)
    else:
        raise ValueError(f"unsupported image mode {mode!r}")
    if key is not None:
        image.info["transparency"] = _colour_key(mode, key)  # PNG writes it back as tRNS
    return image


def _join_palette(planes: Planes) -> Image.Image:
    palette_mode = planes.info["palette_mode"]
    if "index" in planes.side_planes:
        indices = planes.side_planes["index"]
    else:
        width = len(palette_mode)
        colours = np.frombuffer(planes.palette, dtype=np.uint8).reshape(-1, width)[:, :3].astype(np.int64)
        used = np.frombuffer(bytes.fromhex(planes.info["used"]), dtype=np.uint8)
        lookup = np.zeros(1 << 24, dtype=np.uint8)  # colour key -> palette index, for the used indices only
        keys = (colours[used, 0] << 16) | (colours[used, 1] << 8) | colours[used, 2]
        lookup[keys] = used
        rgb = planes.model_plane.astype(np.int64)
        indices = lookup[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]]
    image = Image.fromarray(np.ascontiguousarray(indices), "P")
    image.putpalette(planes.palette, rawmode=palette_mode)
    transparency = planes.info.get("transparency")
    if isinstance(transparency, str):
        transparency = bytes.fromhex(transparency)
    if not _palette_transparency_fits(transparency):
        raise ValueError(f"a palette image's transparency {short_repr(planes.info.get('transparency'))} is no "
                         f"palette index or alpha table")
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def png_bytes(image: Image.Image) -> bytes:
    """`image` as a PNG file that holds every pixel as it is. Pillow sizes a palette PNG's bit depth (and its tRNS
    chunk) by the palette, so indices past the palette's end, which GIFs and PNGs may hold, would be cut down where
    the palette is short (4 entries: 2 bits, index 39 -> 3) and a transparency entry past it dropped. So a palette
    image's PNG is read back: where it differs, the palette is extended with opaque black entries (what viewers
    show for those indices) up to the highest index used, and the PNG made again and checked again (ImageError if
    even that differs: a wrong image is never written). Elsewhere the PNG is Pillow's, as vaezip always wrote it.
    The image's metadata chunks (vaezip/metadata.py: METADATA, a format-17 file's) go into it, each in its place,
    but those that no longer fit the image (converted since it was opened: image_chunks). A DeepImage is a 16-bit
    PNG (vaezip/png16.py)."""
    if not isinstance(image, (Image.Image, DeepImage)):
        raise TypeError(f"png_bytes takes a PIL image or a vaezip.images.DeepImage, not a {type(image).__name__}")
    if isinstance(image, DeepImage) and image.samples.size == 0:
        raise ImageError("image has no pixels")
    if isinstance(image, DeepImage):
        return png16.write(image.samples, image.mode, image_chunks(image)[0] if METADATA in image.info else ())
    chunks = image_chunks(image)[0] if METADATA in image.info else ()
    low = _low_grey_png(image, bits, chunks) if (bits := grey_bits(image)) else None
    if low is not None:
        return low
    data = _png(image)
    if image.mode == "P" and not _holds(data, image):
        data = _png(_palette_covering(image))
        if not _holds(data, image):
            raise ImageError("Pillow cannot write this palette image as a PNG that holds its pixels exactly")
    return with_chunks(data, chunks)


def grey_bits(image) -> int:
    """The bit depth below 8 (1, 2 or 4; 0 for none) that a file keeps of `image` and decompress writes it back in:
    its GREY_BITS (open_image's, of a bilevel or 2- or 4-bit grey file, or a decoded image's), where the image is
    grey and every sample, its colour key and its background grey (a bKGD chunk) are ones that depth holds, scaled
    up as Pillow scales the samples (x * 255 / (2^n - 1)), and its significant bits (sBIT) no more than it."""
    bits = image.info.get(GREY_BITS) if isinstance(image, Image.Image) and image.mode == "L" else None
    if type(bits) is not int or bits not in (1, 2, 4):
        return 0
    step = 255 // ((1 << bits) - 1)
    key = image.info.get("transparency")
    if key is not None and (type(key) is not int or not 0 <= key <= 255 or key % step):
        return 0
    if METADATA in image.info and not all(_fits_depth(chunk, bits) for chunk in image_chunks(image)[0]):
        return 0
    _load_pixels(image)
    return bits if not np.any(np.asarray(image) % step) else 0


def _fits_depth(chunk: Chunk, bits: int) -> bool:
    """Whether the metadata chunk fits a grey PNG of `bits` bits: a background grey (bKGD, as open_image scaled it
    with the pixels) that depth holds, significant bits (sBIT) no more than it; any other chunk fits."""
    if chunk.kind == b"bKGD":
        value = int.from_bytes(chunk.data, "big")
        return len(chunk.data) == 2 and value <= 255 and value % (255 // ((1 << bits) - 1)) == 0
    if chunk.kind == b"sBIT":
        return len(chunk.data) == 1 and 1 <= chunk.data[0] <= bits
    return True


def _low_grey_png(image: Image.Image, bits: int, chunks: tuple[Chunk, ...]) -> bytes | None:
    """The grey image (grey_bits's `bits`) as a PNG of that bit depth, its colour key and background grey scaled
    back down to it, read back before it is given (None where it does not give back the pixels and the key: the
    image is then written in 8 bits, never wrong)."""
    step = 255 // ((1 << bits) - 1)
    options: dict[str, Any] = {"bits": bits, **({"icc_profile": None} if METADATA in image.info else {})}
    if image.info.get("transparency") is not None:
        options["transparency"] = image.info["transparency"] // step
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    down = tuple(Chunk(chunk.place, chunk.kind, (int.from_bytes(chunk.data, "big") // step).to_bytes(2, "big"))
                 if chunk.kind == b"bKGD" else chunk for chunk in chunks)
    data = with_chunks(buffer.getvalue(), down)
    with pillow_settings(), Image.open(io.BytesIO(data)) as back:
        back.load()
        pixels = np.asarray(back.convert("L") if back.mode == "1" else back)
        # Pillow scales a 1-bit PNG's colour key up with its pixels, not a 2- or 4-bit one's
        if data[24] != bits or not np.array_equal(pixels, np.asarray(image)) or _scaled_key(
                back.info.get("transparency"), bits) != image.info.get("transparency"):
            return None
    return data


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Where the image carries metadata chunks, they hold its profile (with_chunks writes it): none of Pillow's.
    options = {"icc_profile": None} if METADATA in image.info else {}
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _holds(data: bytes, image: Image.Image) -> bool:
    """Whether the PNG `data` gives back the palette image's indices and the alpha its transparency gives each
    entry (an index or alpha bytes: the same table either way)."""
    with pillow_settings(), Image.open(io.BytesIO(data)) as back:  # the image's own size: within Pillow's raised limit
        back.load()
        return (back.mode == "P" and np.array_equal(np.asarray(back), np.asarray(image))
                and _alpha_table(back.info.get("transparency")) == _alpha_table(_transparency_of(image)))


def _transparency_of(image: Image.Image):
    """What a PNG writer makes the palette image's tRNS of: its transparency, else an RGBA palette's alphas."""
    transparency = image.info.get("transparency")
    if transparency is None and image.palette is not None and image.palette.mode == "RGBA":
        return bytes(image.palette.tobytes()[3::4])
    return transparency


def _alpha_table(transparency) -> bytes | None:
    """A palette's transparency as alpha bytes per entry, entries past the table opaque (so trailing 255s dropped);
    None for anything else (which the PNG cannot hold)."""
    if isinstance(transparency, int):
        return b"\xff" * transparency + b"\0"
    if isinstance(transparency, bytes):
        return transparency.rstrip(b"\xff")
    return b"" if transparency is None else None


def _palette_covering(image: Image.Image) -> Image.Image:
    palette_mode = image.palette.mode if image.palette is not None else "RGB"
    palette = bytes(image.palette.tobytes()) if image.palette is not None else b""
    transparency = image.info.get("transparency")
    alphas = 0  # the tRNS entries the transparency needs
    if isinstance(transparency, int):
        alphas = transparency + 1
    elif isinstance(transparency, bytes):
        alphas = len(transparency)
    width = len(palette_mode)
    entries = len(palette) // width
    needed = min(max(int(np.asarray(image).max()) + 1, alphas, entries), 256)
    black = bytes(min(width, 3)) + b"\xff" * (width - 3)  # opaque where the palette holds alpha
    covering = image.copy()  # the caller's image keeps its palette (and its checksum)
    covering.putpalette(palette[: entries * width] + black * (needed - entries), rawmode=palette_mode)
    return covering


def pixel_checksum(image: Image.Image) -> str:
    """sha256 of everything a decode must restore: mode, size, pixel values, palette and transparency (the
    palette's, or an L / RGB image's colour key). An image without a key hashes as it always has."""
    if isinstance(image, DeepImage):
        return deep_checksum(image)
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(np.ascontiguousarray(np.asarray(image)).tobytes())
    if image.mode == "P" and image.palette is not None:
        digest.update(image.palette.mode.encode() + bytes(image.palette.tobytes()))
        digest.update(repr(_as_restored(image.info.get("transparency"))).encode())
    key = image.info.get("transparency")
    if image.mode in ("L", "RGB") and key is not None:
        try:
            key = _scaled_key(_colour_key(image.mode, key), _unscaled_key_bits(image))
        except ValueError:
            pass  # hashed as it is (split_image refuses such an image)
        digest.update(b"colour key:" + repr(key).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- 16-bit images


def deep_parts(image: DeepImage) -> tuple[str, tuple, list[Image.Image]]:
    """A 16-bit image as its depth and levels (codec/depth.py) and the 8-bit images that hold it: the high part, which
    keeps the image's info (its metadata), and the low part where the depth has low bits."""
    if image.width < 1 or image.height < 1:
        raise ImageError("image has no pixels")
    if image.info.get("transparency") is not None:
        raise ImageError("a 16-bit image with a transparent colour: vaezip keeps 16-bit images without one")
    _within_pixel_limit(image)
    depth, levels = depths.choose(image.samples)
    parts = []
    for samples in depths.split(image.samples, depth, levels):
        if samples is not None:
            parts.append(Image.fromarray(np.ascontiguousarray(samples), image.mode))
    parts[0].info.update(image.info)
    if len(parts) > 1:
        parts[1].info[METADATA] = ()
    return depth, tuple(tuple(int(v) for v in values) for values in levels), parts


def join_deep(depth: str, levels: tuple, high: Image.Image, low: Image.Image | None) -> DeepImage:
    """The 16-bit image back from deep_parts's (its metadata: attach them after)."""
    samples = depths.join(np.asarray(high), None if low is None else np.asarray(low), depth,
                          tuple(np.asarray(values, np.uint16) for values in levels))
    return DeepImage(samples, high.mode)


def deep_checksum(image: DeepImage) -> str:
    digest = hashlib.sha256()
    digest.update(f"{image.mode};16:{image.width}x{image.height}:".encode())
    digest.update(np.ascontiguousarray(image.samples).astype(">u2").tobytes())
    return digest.hexdigest()
