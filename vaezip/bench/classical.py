"""Classical lossless codecs and the benchmark runner behind ``vaezip bench``.

Every codec is lossless and is checked by a decode round trip.  Rates are bits per subpixel
(bpsp = 8 * bytes / (H * W * C)) over the *input* image: a grey image fed to a codec that only
takes RGB (WebP, QOI) is expanded to R = G = B before encoding, and its bytes are still
counted over the grey subpixels (the cost of storing that grey image with that codec).

Speeds are single-threaded where the library lets us choose (``numthreads=1``) and are
reported as MB/s of raw image data (H * W * C bytes) per second of wall time.

A learned codec runs through the same :func:`run` as long as it follows the :class:`Codec`
protocol (``name``, ``flags``, ``encode``, ``decode``; optionally ``library`` and
``bound_bpsp(img)``, the model's rate bound, e.g. the negative ELBO, for the same image).
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = [
    "Codec",
    "ClassicalCodec",
    "Row",
    "Aggregate",
    "CODEC_NAMES",
    "make_codec",
    "get_codecs",
    "available_codecs",
    "library_versions",
    "run",
    "aggregate",
]


@runtime_checkable
class Codec(Protocol):
    """What :func:`run` needs from a codec (classical or learned).

    ``encode`` takes one HWC uint8 image (C in {1, 3}) and returns the complete file as bytes;
    ``decode`` returns the image (HWC or HW).  Optional attributes: ``library`` (version
    string) and ``bound_bpsp(img) -> float | None`` (a theoretical rate for the image, shown
    next to the real one).
    """

    name: str
    flags: str

    def encode(self, img: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# classical codecs
# --------------------------------------------------------------------------------------------


@dataclass
class ClassicalCodec:
    """A lossless classical codec with fixed, recorded flags.

    ``rgb_only``: the format cannot hold one-channel images; grey input is expanded to RGB
    (R = G = B) before encoding and decodes to that RGB image.
    """

    name: str
    flags: str
    library: str
    _encode: Callable[[np.ndarray], bytes] = field(repr=False)
    _decode: Callable[[bytes], np.ndarray] = field(repr=False)
    rgb_only: bool = False
    is_available: bool = True
    unavailable_reason: str = ""

    def available(self) -> bool:
        return self.is_available

    def encode(self, img: np.ndarray) -> bytes:
        if not self.is_available:
            raise RuntimeError(f"codec {self.name} unavailable: {self.unavailable_reason}")
        img = _check_image(img)
        if self.rgb_only and img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        return bytes(self._encode(np.ascontiguousarray(img)))

    def decode(self, data: bytes) -> np.ndarray:
        if not self.is_available:
            raise RuntimeError(f"codec {self.name} unavailable: {self.unavailable_reason}")
        out = np.asarray(self._decode(data))
        return out[:, :, None] if out.ndim == 2 else out


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.dtype != np.uint8 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an HWC uint8 image with C in {{1, 3}}, got {img.shape} {img.dtype}")
    return img


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - bench extra not installed
        return None
    return imagecodecs


def _pillow_png() -> ClassicalCodec:
    import PIL
    from PIL import Image, features

    from codec.classic import pillow_settings

    def enc(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a[:, :, 0] if a.shape[-1] == 1 else a).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def dec(b: bytes) -> np.ndarray:
        with pillow_settings(), Image.open(io.BytesIO(b)) as im:  # bench's own PNG: within Pillow's raised limit
            return np.asarray(im)

    zlib = features.version("zlib") or "?"
    return ClassicalCodec("png", "Pillow Image.save(format='PNG', optimize=True)",
                          f"Pillow {PIL.__version__} (zlib {zlib})", enc, dec)


def _ic_codec(name: str, flags: str, attr: str, enc_kw: dict, dec_kw: dict | None = None,
              rgb_only: bool = False) -> ClassicalCodec:
    ic = _imagecodecs()
    cls = getattr(ic, attr.upper(), None) if ic else None
    if ic is None or cls is None or not getattr(cls, "available", False):
        reason = "imagecodecs not installed" if ic is None else f"imagecodecs build lacks {attr}"
        return ClassicalCodec(name, flags, "n/a", _missing, _missing, rgb_only, False, reason)
    enc_fn = getattr(ic, f"{attr}_encode")
    dec_fn = getattr(ic, f"{attr}_decode")
    dkw = dec_kw or {}
    lib = f"imagecodecs {ic.__version__} ({getattr(ic, f'{attr}_version')()})"
    return ClassicalCodec(name, flags, lib, lambda a: enc_fn(a, **enc_kw),
                          lambda b: dec_fn(b, **dkw), rgb_only)


def _missing(*_a, **_k):  # pragma: no cover
    raise RuntimeError("codec unavailable")


def _kw(d: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in d.items())


def _webp() -> ClassicalCodec:
    # imagecodecs passes `level` as WebPConfig.quality, which in lossless mode is the effort
    # (0 fastest .. 100 smallest); method 6 + quality 100 is cwebp's `-lossless -m 6 -q 100`
    # (~ `-z 9`).  Pillow's save(lossless=True, quality=100, method=6) gives identical bytes.
    kw = dict(level=100, lossless=True, method=6)
    return _ic_codec("webp", f"imagecodecs.webp_encode({_kw(kw)}); grey expanded to RGB",
                     "webp", kw, rgb_only=True)


def _webp_fast() -> ClassicalCodec:
    kw = dict(level=75, lossless=True, method=6)
    return _ic_codec("webp-q75", f"imagecodecs.webp_encode({_kw(kw)}); grey expanded to RGB",
                     "webp", kw, rgb_only=True)


def _jpeg2k() -> ClassicalCodec:
    # reversible 5/3 wavelet + reversible colour transform (RCT, mct=True) for RGB; raw J2K
    # codestream (no JP2 boxes); openjpeg defaults otherwise (6 resolutions, 1 tile, 1 layer).
    kw = dict(reversible=True, mct=True, codecformat="J2K", numthreads=1)
    return _ic_codec("jpeg2000", f"imagecodecs.jpeg2k_encode({_kw(kw)})", "jpeg2k", kw)


def _jpegls() -> ClassicalCodec:
    # CharLS, near=0 (lossless); imagecodecs sets no colour transform for RGB.
    kw = dict(level=0)
    return _ic_codec("jpegls", f"imagecodecs.jpegls_encode({_kw(kw)}) (CharLS, near=0, no colour transform)",
                     "jpegls", kw)


def _jpegxl(effort: int) -> ClassicalCodec:
    kw = dict(lossless=True, effort=effort, distance=0.0, numthreads=1)
    return _ic_codec(f"jpegxl-e{effort}", f"imagecodecs.jpegxl_encode({_kw(kw)})", "jpegxl", kw,
                     dict(numthreads=1))


def _qoi() -> ClassicalCodec:
    return _ic_codec("qoi", "imagecodecs.qoi_encode(); grey expanded to RGB", "qoi", {},
                     rgb_only=True)


_FACTORIES: dict[str, Callable[[], ClassicalCodec]] = {
    "png": _pillow_png,
    "webp": _webp,
    "jpeg2000": _jpeg2k,
    "jpegls": _jpegls,
    "jpegxl-e7": lambda: _jpegxl(7),
    "jpegxl-e9": lambda: _jpegxl(9),
    "qoi": _qoi,
    "webp-q75": _webp_fast,
}

#: the default classical line-up (``webp-q75`` is an extra, faster WebP setting)
CODEC_NAMES: tuple[str, ...] = ("png", "webp", "jpeg2000", "jpegls", "jpegxl-e7", "jpegxl-e9", "qoi")


def make_codec(name: str) -> ClassicalCodec:
    """One classical codec by name (see ``CODEC_NAMES``; also ``webp-q75``)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(_FACTORIES)}") from None


def get_codecs(names: Iterable[str] | None = None, *, skip_unavailable: bool = True) -> list[ClassicalCodec]:
    """Codecs by name (default ``CODEC_NAMES``); unavailable ones are dropped (or kept, flagged)."""
    out = [make_codec(n) for n in (CODEC_NAMES if names is None else names)]
    return [c for c in out if c.is_available] if skip_unavailable else out


def available_codecs() -> dict[str, bool]:
    return {n: make_codec(n).is_available for n in _FACTORIES}


def library_versions() -> dict[str, str]:
    import PIL
    import platform
    v = {"python": platform.python_version(), "numpy": np.__version__, "Pillow": PIL.__version__}
    ic = _imagecodecs()
    if ic is not None:
        v["imagecodecs"] = ic.__version__
        for attr in ("webp", "jpeg2k", "jpegls", "jpegxl", "qoi"):
            try:
                v[attr] = getattr(ic, f"{attr}_version")()
            except Exception:  # noqa: BLE001
                v[attr] = "n/a"
    try:
        from PIL import features
        v["zlib (Pillow)"] = features.version("zlib") or "?"
    except Exception:  # noqa: BLE001  # pragma: no cover
        pass
    return v


# --------------------------------------------------------------------------------------------
# runner
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One image through one codec."""

    dataset: str
    codec: str
    index: int
    image: str
    height: int
    width: int
    channels: int
    subpixels: int
    bytes: int
    bpsp: float
    encode_s: float
    decode_s: float
    roundtrip_ok: bool
    bound_bpsp: float = math.nan
    error: str = ""
    # The bound projected from the model's estimate of a sample of the tiles (compress's early exit), not summed
    # over every tile
    bound_projected: bool = False


@dataclass
class Aggregate:
    """One (dataset, codec) pair over all its images."""

    dataset: str
    codec: str
    images: int
    subpixels: int
    bytes: int
    bpsp: float            # 8 * sum(bytes) / sum(subpixels)
    mean_image_bpsp: float  # unweighted mean of per-image bpsp
    encode_MBps: float     # sum(subpixels) / sum(encode_s) / 1e6 (raw uint8 bytes)
    decode_MBps: float
    encode_s: float
    decode_s: float
    all_ok: bool
    failures: int
    bound_bpsp: float = math.nan  # subpixel-weighted bound, if the codec gives one
    bound_projected: bool = False  # some row's bound projected from a sample of its tiles

    @staticmethod
    def fieldnames() -> list[str]:
        return [f.name for f in fields(Aggregate)]


ROW_FIELDS = [f.name for f in fields(Row)]


def _same_pixels(decoded: np.ndarray, img: np.ndarray) -> bool:
    d = np.asarray(decoded)
    if d.ndim == 2:
        d = d[:, :, None]
    if d.dtype != np.uint8 or d.ndim != 3 or d.shape[:2] != img.shape[:2]:
        return False
    if d.shape[-1] == img.shape[-1]:
        return bool(np.array_equal(d, img))
    if img.shape[-1] == 1 and d.shape[-1] == 3:  # RGB-only codec fed an expanded grey image
        return bool(np.array_equal(d, np.broadcast_to(img, d.shape)))
    return False


WARM_UP_SIDE = 64  # the side of the untimed crop each codec codes first (warm_up)


def warm_up(codec: Codec, img: np.ndarray) -> None:
    """One untimed round trip of a crop of `img`: what only a codec's first image pays (imports, compiled kernels
    loaded or compiled, first-call set-up) is kept out of its timed rows, as no classical codec pays it there."""
    try:
        codec.decode(codec.encode(np.ascontiguousarray(img[:WARM_UP_SIDE, :WARM_UP_SIDE])))
    except Exception:  # noqa: BLE001 - the timed run records what fails
        pass


def run(images, codecs: Sequence[Codec], *, dataset: str | None = None, verify: bool = True,
        progress: Callable[[Row], None] | None = None) -> list[Row]:
    """Encode (and decode) every image with every codec; one :class:`Row` per pair, each codec's times taken
    after an untimed round trip of a crop of the first image (warm_up).

    ``images`` is a :class:`vaezip.data.ImageSet` (or anything :func:`vaezip.data.load`
    would give: an array or a list of HWC arrays).  Errors in a codec are recorded in the row
    (``roundtrip_ok=False``, ``error``), not raised.  Codecs loop outermost, so a slow codec's
    rows arrive together.
    """
    from vaezip.data import ImageSet, _as_imageset

    iset = images if isinstance(images, ImageSet) else _as_imageset(images, dataset or "images")
    name = dataset or iset.name
    rows: list[Row] = []
    for codec in codecs:
        bound_fn = getattr(codec, "bound_bpsp", None)
        projected_fn = getattr(codec, "bound_projected", None)
        if len(iset):
            warm_up(codec, _check_image(iset.images[0]))
        for i in range(len(iset)):
            img = _check_image(iset.images[i])
            h, w, c = img.shape
            sub = h * w * c
            label = iset.image_name(i)
            try:
                t0 = time.perf_counter()
                data = codec.encode(img)
                t1 = time.perf_counter()
                nbytes = len(data)
                if verify:
                    dec = codec.decode(data)
                    t2 = time.perf_counter()
                    ok = _same_pixels(dec, img)
                    err = "" if ok else "decoded image differs"
                else:
                    t2, ok, err = t1, True, ""
                bound = math.nan
                if callable(bound_fn):
                    b = bound_fn(img)
                    bound = math.nan if b is None else float(b)
                projected = bool(projected_fn(img)) if callable(projected_fn) and not math.isnan(bound) else False
                row = Row(name, codec.name, i, label, h, w, c, sub, nbytes, 8.0 * nbytes / sub,
                          t1 - t0, (t2 - t1) if verify else math.nan, ok, bound, err, projected)
            except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
                row = Row(name, codec.name, i, label, h, w, c, sub, -1, math.nan, math.nan,
                          math.nan, False, math.nan, f"{type(e).__name__}: {e}"[:300])
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def _images_in(row: Row) -> int:
    """The images a row measured: one, or an archive's (index -1, labelled "N images in one archive")."""
    if row.index >= 0:
        return 1
    count = row.image.split(" ", 1)[0]
    return int(count) if count.isdigit() else 1


def aggregate(rows: Iterable[Row]) -> list[Aggregate]:
    """Per (dataset, codec) totals, in first-seen order.  Failed rows are excluded from rates."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.codec), []).append(r)
    out = []
    for (ds, cname), rs in groups.items():
        good = [r for r in rs if r.roundtrip_ok and r.bytes >= 0]
        sub = sum(r.subpixels for r in good)
        nb = sum(r.bytes for r in good)
        enc = sum(r.encode_s for r in good)
        dec = sum(r.decode_s for r in good if not math.isnan(r.decode_s))
        bounds = [(r.bound_bpsp, r.subpixels) for r in good if not math.isnan(r.bound_bpsp)]
        bound = (sum(b * s for b, s in bounds) / sum(s for _, s in bounds)) if bounds else math.nan
        out.append(Aggregate(
            dataset=ds, codec=cname, images=sum(_images_in(r) for r in rs), subpixels=sub, bytes=nb,
            bpsp=(8.0 * nb / sub) if sub else math.nan,
            mean_image_bpsp=float(np.mean([r.bpsp for r in good])) if good else math.nan,
            encode_MBps=(sub / enc / 1e6) if enc > 0 else math.nan,
            decode_MBps=(sub / dec / 1e6) if dec > 0 else math.nan,
            encode_s=enc, decode_s=dec, all_ok=len(good) == len(rs), failures=len(rs) - len(good),
            bound_bpsp=bound, bound_projected=any(r.bound_projected for r in good if not math.isnan(r.bound_bpsp))))
    return out


def rows_to_dicts(rows: Iterable[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
