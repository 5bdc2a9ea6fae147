"""Classical lossless coding of an image's samples: the fallback that keeps a .vz file from ever being much
larger than the best classical coding vaezip knows (format 3, docs/FORMAT.md).

The samples are what `np.asarray(image)` holds: (H, W) for L and for a P image's indices, (H, W, C) with C = 2
(LA), 3 (RGB) or 4 (RGBA). Palettes and colour keys stay in the .vz header, so every coding only has to
restore uint8 arrays exactly. Three codings:

    raw    the samples' bytes as they are (H * W * C): never more than the image itself
    png    one byte naming the PNG layout (LAYOUTS), then the zlib stream of the PNG's IDAT chunks; the
           decoder rebuilds the PNG around it (signature, IHDR from the header's size, a grey PLTE for the
           palette layouts, IEND): ~45 bytes less than the PNG file
    webp   the VP8L bitstream of a lossless WebP (the RIFF wrapper, 20 bytes, is rebuilt); one channel goes
           in as grey RGB (the decoder keeps red), two as (L, L, L, A)

Decoding treats the data as hostile: the size a PNG or WebP would decode to is fixed by the header before
Pillow sees a byte (the PNG's IHDR is written from it, a VP8L bitstream's own size must equal it), so Pillow
allocates exactly the image the header declared; every failure is a CodingError.

Pillow and numpy only: decoding a classically coded file needs neither the model nor torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import threading
import zlib
from concurrent.futures import Executor

import numpy as np

from codec.errors import CodingError

RAW, PNG, WEBP = "raw", "png", "webp"
CODINGS = (RAW, PNG, WEBP)
# (PNG colour type, bit depth) by layout byte; the channels each holds. Palette layouts (colour type 3) carry
# one-channel samples (a P image's indices, or greys) packed at 1, 2 or 4 bits where they fit, unfiltered.
LAYOUTS = ((0, 8), (3, 1), (3, 2), (3, 4), (3, 8), (4, 8), (2, 8), (6, 8))
_LAYOUT_CHANNELS = (1, 1, 1, 1, 1, 2, 3, 4)
_PNG_MODES = {0: "L", 3: "P", 4: "LA", 2: "RGB", 6: "RGBA"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEBP_MAX_SIDE = 16383  # VP8L stores each side minus one in 14 bits
# Lossless WebP effort: quality 100 at method 4 came within 0.1 % of method 6 on a screenshot, a palette image
# and an RGBA image (15,334 / 5,762 / 82,994 B both), 10 to 20 times faster (0.09 s instead of 1.6 s for the
# 640x400 screenshot).
WEBP_METHOD, WEBP_QUALITY = 4, 100
# compress --fast: quality 50 (a shorter search for LZ77 matches). On Kodak's 24 photographs WebP's files came
# out 0.4 % larger (3.1892 -> 3.2029 bpsp) in a fifth of the time (36.4 -> 7.5 s of one core; kodim03 2.8 s ->
# 0.3 s) and --fast's files, the predictor's wherever they are smaller, 0.09 % larger (3.1430 -> 3.1459);
# WebP's files of three charts 0.1-3.5 % larger.
FAST_WEBP_QUALITY = 50
# PNG at its best (Pillow's optimize: zlib level 9) is made only where PNG at zlib's default level 6 (QUICK_PNG)
# comes within PNG_SCREEN of the smallest other coding: elsewhere the best cannot be the smallest, level 9 having
# saved at most 6.7 % against level 6 (median 0.1-3 %) on 104 images (Kodak, gray8bit, Wikimedia, McMaster,
# scikit-image's photographs, MNIST and CIFAR-10 images). Level 9 is the slow one on large photographs: 15.3 s
# against 1.8 s for gray8bit's 12-Mpixel spider_web, where quick PNG came out 1.22 times WebP's size (Kodak
# 1.32-1.40, gray8bit 1.04-1.3).
QUICK_PNG_LEVEL = 6
PNG_SCREEN = 1.10


def channels_of(samples: np.ndarray) -> int:
    return 1 if samples.ndim == 2 else samples.shape[2]


def _check_samples(samples: np.ndarray) -> None:
    if samples.dtype != np.uint8 or samples.ndim not in (2, 3) or (samples.ndim == 3 and samples.shape[2] not in (2, 3, 4)):
        raise CodingError(f"samples must be (H, W) or (H, W, 2|3|4) uint8, got {samples.dtype} {samples.shape}")
    if samples.size == 0:
        raise CodingError("samples must not be empty")


# ---------------------------------------------------------------------------------------------- encoding


def encode(samples: np.ndarray, coding: str, fast: bool = False) -> bytes | None:
    """The coded samples, or None where `coding` cannot hold them (WebP above 16383 pixels a side); `fast`:
    WebP at FAST_WEBP_QUALITY."""
    _check_samples(samples)
    if coding == RAW:
        return np.ascontiguousarray(samples).tobytes()
    if coding == PNG:
        return _encode_png(samples)
    if coding == WEBP:
        return _encode_webp(samples, FAST_WEBP_QUALITY if fast else WEBP_QUALITY)
    raise CodingError(f"unknown classical coding {coding!r}")


# From this many samples (a 4-Mpixel colour image) smallest makes its codings one after the other.
SERIAL_SAMPLES = 12 * 2**20


def smallest(samples: np.ndarray, codings=CODINGS, pool: Executor | None = None,
             fast: bool = False) -> tuple[str, bytes, dict[str, int]]:
    """The coding that holds `samples` in the fewest bytes, checked by decoding it: (coding, data, the size of
    every coding tried: PNG's quick form's where its best was not made, PNG_SCREEN). Ties go to the earlier coding
    in `codings`. With `pool`, the codings are made in its threads at once (Pillow's encoders release the GIL): the
    same result. `fast`: see encode."""
    height, width = samples.shape[:2]
    # Raw bytes are the samples as they are: measured here, made only where they are the smallest (a 25-Mpixel
    # photograph's would be 75 MB). A large image's codings are made one after the other: lossless WebP alone
    # takes ~30 bytes a pixel, and PNG's working memory would add to it.
    made = map if pool is None or samples.size >= SERIAL_SAMPLES else pool.map
    made_here = [coding for coding in codings if coding != RAW]
    coded = dict(zip(made_here, made(lambda coding: _first_coding(samples, coding, fast), made_here)))
    rivals = [len(data) for coding, data in coded.items() if coding != PNG and data is not None]
    rivals += [samples.size] if RAW in codings else []
    if PNG in coded and (not rivals or len(coded[PNG]) <= PNG_SCREEN * min(rivals)):
        coded[PNG] = _encode_png(samples)
    sizes = {coding: len(data) for coding, data in coded.items() if data is not None}
    sizes |= {RAW: samples.size} if RAW in codings else {}
    for coding in sorted(sizes, key=lambda c: (sizes[c], codings.index(c))):
        if coding == RAW:
            return coding, np.ascontiguousarray(samples).tobytes(), sizes
        try:
            back = decode(coding, coded[coding], height, width, channels_of(samples))
        except CodingError:
            back = None
        # A codec that does not give the samples back is never written (libwebp without `exact` would not).
        if back is not None and np.array_equal(back, samples):
            return coding, coded[coding], sizes
    raise CodingError("no classical coding restores these samples")  # raw always does: a broken Pillow


def _first_coding(samples: np.ndarray, coding: str, fast: bool) -> bytes | None:
    """encode's, but PNG's quick form (QUICK_PNG_LEVEL), which smallest makes at its best only where it could win."""
    return _encode_png(samples, quick=True) if coding == PNG else encode(samples, coding, fast)


# The default compress (vaezip/archive.py) codes some images classically twice: its screened codings, then the file of
# the other images' predictor stream beside those images' classical codings. Within reusing(), a coding of the same
# samples with the same settings is made once: a 16-bit photograph's noisy low byte no longer takes its best WebP
# twice (1.7 s each for a 6-Mpixel grey one's). Keyed by the samples' digest; kept until the last reusing() ends,
# at most REUSED_BYTES of them.
REUSED_BYTES = 512 * 2**20
_reused: dict[tuple, bytes | None] = {}
_reused_lock = threading.Lock()
_reusers = 0
_reused_bytes = 0


@contextlib.contextmanager
def reusing():
    """Within it (in any thread), each PNG or WebP coding of the same samples with the same settings is made once.
    The codecs give the same bytes for the same samples and settings: files are as without it."""
    global _reusers, _reused_bytes
    with _reused_lock:
        _reusers += 1
    try:
        yield
    finally:
        with _reused_lock:
            _reusers -= 1
            if not _reusers:
                _reused.clear()
                _reused_bytes = 0


def _once(settings: tuple, samples: np.ndarray, make):
    """make()'s coding of `samples` with `settings`, or the one made already within reusing()."""
    global _reused_bytes
    if not _reusers:
        return make()
    digest = hashlib.blake2b(np.ascontiguousarray(samples).data, digest_size=16).digest()
    key = (*settings, samples.dtype.str, samples.shape, digest)
    with _reused_lock:
        if key in _reused:
            return _reused[key]
    data = make()
    with _reused_lock:
        if _reusers and key not in _reused and _reused_bytes + len(data or b"") <= REUSED_BYTES:
            _reused[key] = data
            _reused_bytes += len(data or b"")
    return data


def _encode_png(samples: np.ndarray, quick: bool = False) -> bytes:
    """The PNG layout byte and zlib stream of the samples' smallest PNG form: at zlib level 9 (Pillow's optimize),
    or with `quick` at QUICK_PNG_LEVEL."""
    return _once((PNG, quick), samples, lambda: _made_png(samples, quick))


def _made_png(samples: np.ndarray, quick: bool) -> bytes:
    from PIL import Image

    channels = channels_of(samples)
    images = []
    if channels == 1:
        images.append(Image.fromarray(np.ascontiguousarray(samples), "L"))
        top = int(samples.max())
        bits = next(b for b in (1, 2, 4, 8) if top < 1 << b)
        indexed = Image.fromarray(np.ascontiguousarray(samples), "P")
        indexed.putpalette(bytes(3 << bits), rawmode="RGB")  # 2**bits entries: Pillow packs at `bits` bits
        images.append(indexed)
    else:
        images.append(Image.fromarray(np.ascontiguousarray(samples), {2: "LA", 3: "RGB", 4: "RGBA"}[channels]))
    best = None
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **({"compress_level": QUICK_PNG_LEVEL} if quick else {"optimize": True}))
        data = _strip_png(buffer.getvalue())
        if best is None or len(data) < len(best):
            best = data
    return best


def _strip_png(png: bytes) -> bytes:
    """Layout byte + the IDAT zlib stream of a PNG that Pillow wrote."""
    position, layout, idat = len(PNG_SIGNATURE), None, []
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        kind, body = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            depth, colour, _, _, interlace = body[8:13]
            if interlace or (colour, depth) not in LAYOUTS:
                raise CodingError(f"Pillow wrote an unexpected PNG layout (colour type {colour}, depth {depth})")
            layout = LAYOUTS.index((colour, depth))
        elif kind == b"IDAT":
            idat.append(body)
    return bytes([layout]) + b"".join(idat)


def _encode_webp(samples: np.ndarray, quality: int = WEBP_QUALITY) -> bytes | None:
    """The VP8L bitstream of the samples' lossless WebP at `quality`, or None where WebP cannot hold them."""
    return _once((WEBP, quality), samples, lambda: _made_webp(samples, quality))


def _made_webp(samples: np.ndarray, quality: int) -> bytes | None:
    from PIL import Image, features

    height, width = samples.shape[:2]
    if max(height, width) > WEBP_MAX_SIDE or not features.check("webp"):
        return None
    channels = channels_of(samples)
    if channels == 1:
        image = Image.fromarray(np.repeat(samples[..., None], 3, axis=2), "RGB")
    elif channels == 2:
        grey, alpha = samples[..., :1], samples[..., 1:]
        image = Image.fromarray(np.ascontiguousarray(np.concatenate([grey, grey, grey, alpha], axis=2)), "RGBA")
    else:
        image = Image.fromarray(np.ascontiguousarray(samples), "RGB" if channels == 3 else "RGBA")
    buffer = io.BytesIO()
    # exact: keep the colour of fully transparent pixels (libwebp would otherwise change them)
    image.save(buffer, format="WEBP", lossless=True, quality=quality, method=WEBP_METHOD, exact=True)
    data = buffer.getvalue()
    size = struct.unpack_from("<I", data, 16)[0] if len(data) >= 20 else -1
    # Only the simple form, RIFF + one VP8L chunk, is rebuilt by the decoder.
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8L" or len(data) != 20 + size + (size & 1):
        return None
    return data[20 : 20 + size]


# ---------------------------------------------------------------------------------------------- decoding


def decode(coding: str, data: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """The samples of an image of the declared size: (H, W) uint8 for one channel, else (H, W, C)."""
    if not (height >= 1 and width >= 1 and channels in (1, 2, 3, 4)):
        raise CodingError(f"bad sample shape {height}x{width}x{channels}")
    shape = (height, width) if channels == 1 else (height, width, channels)
    if coding == RAW:
        if len(data) != height * width * channels:
            raise CodingError(f"raw samples hold {len(data)} bytes, the image {height * width * channels}")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()
    if coding == PNG:
        image = _open(_png_file(data, height, width, channels), "PNG", height, width)
        pixels = np.asarray(image)
        if image.mode != _PNG_MODES[LAYOUTS[data[0]][0]] or pixels.shape != shape:
            raise CodingError(f"PNG data decoded to {image.mode} {pixels.shape}, not {shape}")
        return np.ascontiguousarray(pixels)
    if coding == WEBP:
        from PIL import features

        if not features.check("webp"):
            raise CodingError("this Pillow was built without WebP, which this image needs")
        image = _open(_webp_file(data, height, width), "WEBP", height, width)
        if image.mode not in ("RGB", "RGBA"):
            raise CodingError(f"WebP data decoded to mode {image.mode}")
        pixels = np.asarray(image)  # (H, W, 3) or (H, W, 4)
        if pixels.shape[2] == 3 and channels in (2, 4):  # the bitstream says no pixel is transparent
            pixels = np.concatenate([pixels, np.full((height, width, 1), 255, np.uint8)], axis=2)
        picked = {1: [0], 2: [0, 3], 3: [0, 1, 2], 4: [0, 1, 2, 3]}[channels]
        return np.ascontiguousarray(pixels[..., picked].reshape(shape))
    raise CodingError(f"unknown classical coding {coding!r}")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, type, `body`, CRC (also vaezip/metadata.py's, for the chunks it writes back)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_file(data: bytes, height: int, width: int, channels: int) -> bytes:
    if not data or data[0] >= len(LAYOUTS) or _LAYOUT_CHANNELS[data[0]] != channels:
        raise CodingError(f"bad PNG layout byte for {channels}-channel samples")
    colour, depth = LAYOUTS[data[0]]
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    # Pillow reads indices as they are: any palette of 2**depth entries gives the same samples.
    palette = png_chunk(b"PLTE", bytes(3 << depth)) if colour == 3 else b""
    return PNG_SIGNATURE + header + palette + png_chunk(b"IDAT", data[1:]) + png_chunk(b"IEND", b"")


def _webp_file(data: bytes, height: int, width: int) -> bytes:
    if len(data) < 5 or data[0] != 0x2F:
        raise CodingError("not a VP8L bitstream")
    (bits,) = struct.unpack_from("<I", data, 1)  # 14 bits width - 1, 14 bits height - 1, alpha hint, version
    declared = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if declared != (width, height) or bits >> 29:
        raise CodingError(f"VP8L bitstream of {declared[0]}x{declared[1]} (version {bits >> 29}), the image "
                          f"is {width}x{height}")
    pad = b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", 12 + len(data) + len(pad)) + b"WEBPVP8L" + struct.pack("<I", len(data)) + data + pad


_PILLOW_SETTINGS = threading.RLock()
TEXT_MEMORY = 64 * 2**20  # a PNG's text chunks inflated, all together: Pillow's own default
# Pillow's pixel limit while vaezip opens an image, where the host's is lower: Pillow refuses twice it (2^28
# pixels, the largest image a .vz header holds) and warns past it, beyond vaezip's own 10^8 (checked from the
# header), so that no image vaezip codes meets either; a host thread's image meanwhile still meets a limit.
PILLOW_PIXELS = 2**27
# What an icon file begins with (ICO, CUR): Pillow decodes its largest picture as it opens it, before its size can
# be checked (pillow_settings' `pixels`)
ICON_HEADS = (b"\0\0\1\0", b"\0\0\2\0")


@contextlib.contextmanager
def pillow_settings(text_chunk: int | None = None, pixels: int | None = None):
    """Pillow's process-wide limits raised while vaezip opens and decodes an image, and put back as the host program
    had them: its pixel limit to at least PILLOW_PIXELS (vaezip applies its own from the header:
    vaezip.config.MAX_IMAGE_PIXELS; the host's lower one would have Pillow warn, or refuse, before vaezip's one-line
    refusal), and with `text_chunk` a PNG text chunk's inflated size raised to at least that and all of a file's
    text to TEXT_MEMORY. A host's stricter limits refused valid files as damaged, and setting Pillow's globals for
    good changed the host's. One opening at a time in the process holds them (a lock: two would put back each
    other's), so a host's own thread that opens an image meanwhile does so under these. No warnings filter is
    touched (catch_warnings is not thread-safe): an image past PILLOW_PIXELS, which vaezip refuses, brings Pillow's
    DecompressionBombWarning (the CLI shows none). `pixels`: Pillow's limit is that instead (a format whose opening
    decodes the image, before its size can be checked: an icon's)."""
    from PIL import Image, PngImagePlugin

    with _PILLOW_SETTINGS:
        saved = Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY
        _hosts_settings.append(saved)
        Image.MAX_IMAGE_PIXELS = pixels if pixels is not None else None if saved[0] is None else max(saved[0],
                                                                                                   PILLOW_PIXELS)
        if text_chunk is not None:
            PngImagePlugin.MAX_TEXT_CHUNK = max(saved[1], text_chunk)
            PngImagePlugin.MAX_TEXT_MEMORY = max(saved[2], TEXT_MEMORY)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = saved
            _hosts_settings.pop()


# What each pillow_settings found (nested in one thread: the first is the host's)
_hosts_settings: list[tuple] = []


def _fresh_lock_after_fork() -> None:
    """A child forked while another thread opened an image has that thread's lock, not the thread: a new lock, and
    Pillow's limits put back as the host had them."""
    global _PILLOW_SETTINGS
    _PILLOW_SETTINGS = threading.RLock()
    if _hosts_settings:
        from PIL import Image, PngImagePlugin

        Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = _hosts_settings[0]
        _hosts_settings.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def _open(file: bytes, kind: str, height: int, width: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with pillow_settings():  # the size is the header's, within the format's limits
            image = Image.open(io.BytesIO(file), formats=[kind])
            if image.size != (width, height):
                raise CodingError(f"{kind} data of {image.size[0]}x{image.size[1]}, the image is {width}x{height}")
            image.load()
    except CodingError:
        raise
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            struct.error, zlib.error, LookupError, TypeError) as error:
        raise CodingError(f"{kind} data does not decode ({str(error).strip() or type(error).__name__})") from None
    return image
