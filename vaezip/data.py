"""Image data for vaezip: named data sets, folders, files and .npz arrays; crop sampling.

Everything here is numpy + Pillow (no torch).  Images are always HWC ``uint8`` with
C in {1, 3}: grey stays one channel, alpha is dropped.

Sources accepted by :func:`load`:

* a data set NAME from :data:`DATASETS` (files under the data root, see :func:`data_root`);
* a folder: searched recursively for .png .jpg .jpeg .webp .bmp .tif .tiff .gif .ppm .pgm .pnm (case-insensitive),
  sorted by relative path; files Pillow cannot read, images of more than 8 bits or 100 Mpixel, files of several
  frames or images, and symbolic links are skipped (counted in ``ImageSet.skipped``, named in
  ``ImageSet.passed_over`` and in a warning);
* a single image file;
* an ``.npz`` file: the key is ``x_train`` if present, else ``x``; ``file.npz:key`` selects a key
  explicitly.  If the file also holds a ``split`` array with one entry per row, only the
  ``split == 0`` (train) rows are kept.  Arrays may be (N, H, W) grey, (N, H, W, C) with
  C in {1, 3, 4} or (N, C, H, W) with C in {1, 3}; they must be uint8.

16-bit (or float / 32-bit integer) images are never narrowed: a file alone is refused with an
error naming it, one in a folder passed over and named in the warning (this project codes 8-bit
data only, and Pillow would otherwise silently drop the low byte of 16-bit RGB files).

Batches handed to models are NCHW ``uint8`` (:class:`CropSampler`, :func:`iter_batches`).
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageSet",
    "CropSampler",
    "MixtureSampler",
    "parse_mixture",
    "data_root",
    "load",
    "split_holdout",
    "iter_batches",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".pnm")


class DataError(ValueError):
    """A data source could not be loaded (unknown name, missing folder, unsupported file)."""


# --------------------------------------------------------------------------------------------
# ImageSet
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A named set of HWC uint8 images (C in {1, 3}).

    ``images`` is a stacked ``(N, H, W, C)`` array when all images share a shape, else a list
    of ``(H, W, C)`` arrays.  ``names`` (optional) gives one identifier per image (file path
    relative to the source folder, or the row index); ``skipped`` counts the files passed over
    (unreadable, or not 8-bit); ``changed`` says what reading changed of the images (alpha dropped, a palette
    expanded, grey repeated into RGB beside colour images).
    """

    name: str
    images: np.ndarray | list[np.ndarray]
    names: tuple[str, ...] = field(default=(), repr=False)
    skipped: int = 0
    # What reading changed of the files' images, one line a kind: e.g. "alpha dropped: a.png, b.png (2 of 9)"
    # (training and bench take grey or RGB samples; compress keeps them all)
    changed: tuple[str, ...] = field(default=(), repr=False)
    # The files passed over, each "name (why)": what `skipped` counts
    passed_over: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        imgs = self.images
        if isinstance(imgs, np.ndarray):
            if imgs.ndim != 4 or imgs.dtype != np.uint8 or imgs.shape[-1] not in (1, 3):
                raise DataError(
                    f"ImageSet {self.name!r}: stacked images must be (N,H,W,C) uint8 with C in "
                    f"{{1,3}}, got {imgs.shape} {imgs.dtype}"
                )
        else:
            imgs = list(imgs)
            object.__setattr__(self, "images", imgs)
            chans = set()
            for i, im in enumerate(imgs):
                if not isinstance(im, np.ndarray) or im.ndim != 3 or im.dtype != np.uint8 \
                        or im.shape[-1] not in (1, 3):
                    raise DataError(
                        f"ImageSet {self.name!r}: image {i} must be (H,W,C) uint8 with C in "
                        f"{{1,3}}, got {getattr(im, 'shape', type(im))} {getattr(im, 'dtype', '')}"
                    )
                chans.add(im.shape[-1])
            if len(chans) > 1:
                raise DataError(f"ImageSet {self.name!r}: mixed channel counts {sorted(chans)}")
        if self.names and len(self.names) != len(self):
            raise DataError(f"ImageSet {self.name!r}: {len(self.names)} names for {len(self)} images")
        object.__setattr__(self, "names", tuple(self.names))

    def __len__(self) -> int:
        return int(self.images.shape[0]) if isinstance(self.images, np.ndarray) else len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.images[i]

    @property
    def same_shape(self) -> bool:
        """True when ``images`` is a stacked array."""
        return isinstance(self.images, np.ndarray)

    @property
    def channels(self) -> int:
        if isinstance(self.images, np.ndarray):
            return int(self.images.shape[-1])
        return int(self.images[0].shape[-1]) if self.images else 0

    @property
    def subpixels(self) -> int:
        """Total number of subpixels (H*W*C summed over images)."""
        if isinstance(self.images, np.ndarray):
            return int(self.images.size)
        return int(sum(im.size for im in self.images))

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return [tuple(int(s) for s in im.shape) for im in self]  # type: ignore[misc]

    def image_name(self, i: int) -> str:
        return self.names[i] if self.names else str(i)

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> "ImageSet":
        """A new ImageSet with the images at ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if isinstance(self.images, np.ndarray):
            imgs: np.ndarray | list[np.ndarray] = self.images[idx]
        else:
            imgs = _maybe_stack([self.images[i] for i in idx])
        names = tuple(self.names[i] for i in idx) if self.names else ()
        return ImageSet(name or self.name, imgs, names, self.skipped, self.changed, self.passed_over)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

# name -> (description, spec).  spec kinds:
#   ("npz", relpath, key, rows) with rows None | ("split", v) | ("slice", start, stop)
#   ("files", [relative folders or files])
#   ("listed", folder, list file, keep): the folder's images named in the list file (keep True) or not (False)
_SPECS: dict[str, tuple[str, tuple]] = {
    "mnist-train": ("MNIST training digits, 60000 x 28x28 grey (mnist.npz x_train)",
                    ("npz", "mnist/mnist.npz", "x_train", None)),
    "mnist-test": ("MNIST test digits, 10000 x 28x28 grey (mnist.npz x_test)",
                   ("npz", "mnist/mnist.npz", "x_test", None)),
    "imagenette32-train": ("Imagenette box-downsampled 32x32 RGB, train split (split==0), 9469 images",
                           ("npz", "imagenette_lowres/imagenette_32x32_box7.npz", "x", ("split", 0))),
    "imagenette32-val": ("Imagenette box-downsampled 32x32 RGB, val split (split==1), 3925 images",
                         ("npz", "imagenette_lowres/imagenette_32x32_box7.npz", "x", ("split", 1))),
    "imagenette56-val": ("Imagenette box-downsampled 56x56 RGB, val split, 3925 images",
                         ("npz", "imagenette_lowres/imagenette_val_56x56_box4.npz", "x", None)),
    "cifar4k-train": ("CIFAR-10 training images 0..2999 (first 3000 of the 4k subset), 32x32 RGB",
                      ("npz", "cifar10_subset4k/cifar10_train_first4000.npz", "x", ("slice", 0, 3000))),
    "cifar4k-holdout": ("CIFAR-10 training images 3000..3999 of the 4k subset (never trained on), 32x32 RGB",
                        ("npz", "cifar10_subset4k/cifar10_train_first4000.npz", "x", ("slice", 3000, 4000))),
    "kodak": ("Kodak true-colour suite, 24 x 768x512 RGB PNG",
              ("files", ["kodak"])),
    "photos": ("24 Wikimedia photos + 18 McMaster + flower_foveon, full-size RGB (43 images)",
               ("files", ["photos_fullsize/wikipedia_photos", "photos_fullsize/mcmaster",
                          "photos_fullsize/imagecompression_info/flower_foveon.png"])),
    "photos-wikimedia": ("24 downsampled Wikimedia Commons photos, ~1 Mpixel RGB",
                         ("files", ["photos_fullsize/wikipedia_photos"])),
    "mcmaster": ("McMaster (IMAX) colour set, 18 x 500x500 RGB",
                 ("files", ["photos_fullsize/mcmaster"])),
    "gray8bit": ("imagecompression.info 8-bit grey camera photos, 9 images, 3-12 Mpixel",
                 ("files", ["photos_fullsize/imagecompression_info/gray8bit"])),
    # scikit-image's bundled sample photographs: the only full-resolution photographs here that no
    # benchmark uses, hence the photo models' source of camera-scale pixel statistics.
    "skimage-rgb": ("scikit-image sample photos, RGB: astronaut, chelsea, coffee, ihc, motorcycle pair (6 images)",
                    ("files", [f"skimage_samples/{n}.png" for n in
                               ("astronaut", "chelsea", "coffee", "ihc", "motorcycle_left", "motorcycle_right")])),
    # The same photographs 2x box-downsampled: the benchmarks' photographs (Kodak, Wikimedia) are downsampled
    # scans and photos, smoother and less noisy per pixel than the camera-resolution originals.
    "skimage-rgb-half": ("skimage-rgb 2x box-downsampled (each pixel the rounded mean of a 2x2 block), 6 images",
                         ("shrink", "skimage-rgb", 2)),
    # Real photographs for training, never a benchmark: train on photos-train, validate on photos-train-val
    # (the fixed split of photos_train/VALIDATION.txt).
    "photos-train": ("327 real photographs less the 30 of VALIDATION.txt, up to 384x384 RGB (training only)",
                     ("listed", "photos_train", "photos_train/VALIDATION.txt", False)),
    "photos-train-val": ("the 30 validation photographs of photos_train (VALIDATION.txt), up to 384x384 RGB",
                         ("listed", "photos_train", "photos_train/VALIDATION.txt", True)),
    "skimage-gray": ("scikit-image sample photos, grey: camera, coins, textures, moon, cell, ... (11 images)",
                     ("files", [f"skimage_samples/{n}.png" for n in
                                ("brick", "camera", "cell", "clock_motion", "coins", "grass", "gravel",
                                 "microaneurysms", "moon", "page", "text")])),
}

#: data set name -> one-line description
DATASETS: dict[str, str] = {k: v[0] for k, v in _SPECS.items()}


def data_root() -> Path:
    """The data root: ``$VAEZIP_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("VAEZIP_DATA")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    return (repo.parent / "shared" / "data").resolve()


# --------------------------------------------------------------------------------------------
# image decoding / conversion
# --------------------------------------------------------------------------------------------

_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;32", "I;32B"}
_RAW16 = re.compile(r";16[BLNS]|^I;16|;32")


class _NotCodable(DataError):
    """An image read, but not one to train on; `reason` is what a folder's warning says of it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _pnm_maximum(im) -> int:
    """The maximum value of a PPM or PGM whose samples Pillow scales as it decodes (its tile's arguments hold
    it), 255 for any other image."""
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if tile[0] in ("ppm", "ppm_plain") and isinstance(args, tuple) and len(args) > 1 \
                and isinstance(args[1], int):
            return args[1]
    return 255


def _single_netpbm(path) -> None:
    """Refuse a netpbm file of several images, of which Pillow reads the first without a word (compress refuses it
    too)."""
    from vaezip.file_ends import following

    with open(path, "rb") as file:
        after = following(file.read(), "PPM")
    if after is not None and after.another_image:
        raise _NotCodable(f"{path}: a netpbm stream of several images; training and bench read single images "
                          "(split it first: pamsplit)", "several images")


def _pil_to_array(im, path: str, changes: list[str] | None = None) -> np.ndarray:
    """Pillow image -> HWC uint8 with C in {1, 3} (alpha dropped: `changes` gets what was changed). Rejects
    >8-bit data and several frames."""
    from PIL import Image  # noqa: F401  (Pillow imported lazily)

    raw = ""
    for t in getattr(im, "tile", None) or []:
        args = t[3] if len(t) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
        if raw:
            break
    if im.mode in _HIGH_DEPTH_MODES or (raw and _RAW16.search(raw)):
        raise _NotCodable(f"{path}: {im.mode} image with raw mode {raw or im.mode!r} is not 8-bit; training "
                          "and bench read 8-bit images (compress keeps 16 bits)", "not 8-bit")
    maxval = _pnm_maximum(im)
    if maxval > 255:  # Pillow scales such a PPM or PGM down to 8 bits: that would be training on other values
        raise _NotCodable(f"{path}: a PNM image of maximum value {maxval} is not 8-bit; training and bench read "
                          "8-bit images (compress keeps 16 bits)", "not 8-bit")
    if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":  # a camera's MPO JPEG: its first picture
        raise _NotCodable(f"{path}: {im.n_frames} frames; training and bench read single images", "several frames")
    mode = im.mode
    what = {"LA": "alpha dropped", "RGBA": "alpha dropped", "RGBa": "alpha dropped", "P": "palette expanded to RGB",
            "PA": "palette expanded to RGB, alpha dropped", "CMYK": "converted to RGB", "YCbCr": "converted to RGB",
            "LAB": "converted to RGB", "HSV": "converted to RGB"}.get(mode)
    if what is not None and changes is not None:
        changes.append(what)
    if mode in ("L", "1"):
        im = im.convert("L")
    elif mode == "LA":
        im = im.getchannel("L")
    elif mode in ("RGB",):
        pass
    elif mode in ("RGBA", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA").convert("RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    else:
        raise _NotCodable(f"{path}: unsupported image mode {mode!r}", f"mode {mode}")
    a = np.asarray(im)
    if a.dtype != np.uint8:
        raise _NotCodable(f"{path}: decoded to {a.dtype}, not uint8", "not 8-bit")
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a)


def _rgb_to_l(a: np.ndarray) -> np.ndarray:
    """RGB -> L exactly as Pillow's ``convert("L")`` (ITU-R 601-2 luma, fixed point)."""
    a = a.astype(np.uint32)
    y = (a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]


def _to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    c = a.shape[-1]
    if c == channels:
        return a
    if c == 1 and channels == 3:
        return np.repeat(a, 3, axis=-1)
    if c == 3 and channels == 1:
        return _rgb_to_l(a)
    raise DataError(f"cannot convert {c} channels to {channels}")


def _maybe_stack(imgs: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    if imgs and all(im.shape == imgs[0].shape for im in imgs):
        return np.stack(imgs)
    return imgs


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H // factor, W // factor, C): each pixel the mean of a factor x factor block,
    rounded half up (a remainder of fewer than `factor` rows or columns is dropped)."""
    height, width = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:height, :width].astype(np.int64).reshape(height // factor, factor, width // factor, factor, -1)
    area = factor * factor
    return ((blocks.sum(axis=(1, 3)) + area // 2) // area).astype(np.uint8)


def _finish(name: str, imgs: list[np.ndarray], names: list[str], skipped: int,
            channels: int | None, changes: Sequence[tuple[str, str]] = (), passed_over: Sequence[str] = ()) -> ImageSet:
    """The set of `imgs` in one channel count; `changes`: (what, label) of what reading changed."""
    if not imgs:
        raise DataError(f"{name}: no readable images"
                        + (f" ({skipped} unreadable or not 8-bit files skipped)" if skipped else ""))
    if channels is None:
        channels = 3 if any(im.shape[-1] == 3 for im in imgs) else 1
    changes = list(changes)
    if names:
        changes += [("grey repeated into RGB" if channels == 3 else "colour converted to grey", label)
                    for im, label in zip(imgs, names) if im.shape[-1] != channels]
    imgs = [_to_channels(im, channels) for im in imgs]
    grouped: dict[str, list[str]] = {}
    for what, label in changes:
        grouped.setdefault(what, []).append(label)
    changed = tuple(f"{what}: {', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''} ({len(labels)} of "
                    f"{len(imgs)})" for what, labels in grouped.items())
    return ImageSet(name, _maybe_stack(imgs), tuple(names), skipped, changed, tuple(passed_over))


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------


def _list_images(folder: Path) -> list[Path]:
    """The image files under `folder`, but hidden ones and those in hidden folders (a viewer's .thumbnails, a .git)
    and symbolic links (_images_and_passed_over)."""
    return _images_and_passed_over(folder)[0]


def _images_and_passed_over(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files under `folder` and, apart, those of an image's name passed over, each with why: symbolic links
    (a link to nothing too) and what is no regular file (a FIFO, a device), in one walk; hidden ones and those in
    hidden folders (a viewer's .thumbnails, a .git) left out of both. `vaezip compress -r` passes links over, and a
    link to an image of the folder would put the same image among the held-out ones and the trained-on ones."""
    found = sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                    and (p.is_symlink() or not p.is_dir())
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
                   key=lambda p: p.relative_to(folder).as_posix())
    passed = [(p, "a symbolic link" if p.is_symlink() else "not a regular file") for p in found
              if p.is_symlink() or not p.is_file()]
    return [p for p in found if not p.is_symlink() and p.is_file()], passed


def _unreadable_folders(folder: Path) -> list[str]:
    """The folders under `folder` (itself: ".") that cannot be listed, relative to it, hidden ones left out as
    _images_and_passed_over leaves them: a walk of pathlib's or os's passes them over without a word."""
    failed = []
    for _ in os.walk(folder, onerror=failed.append):
        pass
    names = [Path(error.filename).relative_to(folder).as_posix() for error in failed
             if error.filename is not None and Path(error.filename).is_relative_to(folder)]
    return sorted(name for name in names if not any(part.startswith(".") for part in Path(name).parts))


# What `vaezip bench` writes beside its tables (vaezip/bench/report.py REPORT_FILES): charts, not data
_REPORT_CHART = re.compile(r"bpsp_bars\.png|scatter_.+\.png")
_REPORT_TABLES = ("results.csv", "summary.csv", "results.md")


def _report_chart(file: Path, report: str | os.PathLike | None) -> bool:
    """Whether `file` is a chart of a bench report: named as one, in the report folder `report` (bench's --out) or
    beside a report's tables. A report written into a data folder (or a folder above one) was measured as data by
    the next bench; bench's --out inside a data folder left out the images in it."""
    if _REPORT_CHART.fullmatch(file.name) is None:
        return False
    if report is not None and file.parent.resolve() == Path(report).resolve():
        return True
    return any((file.parent / table).is_file() for table in _REPORT_TABLES)


def _without_charts(files: list[tuple[Path, str]], report: str | os.PathLike | None
                    ) -> tuple[list[tuple[Path, str]], list[str]]:
    """`files` ((path, label) pairs) without bench's charts (_report_chart), and those as passed-over entries."""
    charts = {path for path, _ in files if _report_chart(path, report)}
    return ([(path, label) for path, label in files if path not in charts],
            [f"{label} (a vaezip bench report's chart)" for path, label in files if path in charts])


def _load_files(name: str, files: list[tuple[Path, str]], limit: int | None,
                channels: int | None, *, skip_unreadable: bool, passed_over: Sequence[str] = ()) -> ImageSet:
    """The images of `files` ((path, label) pairs); `passed_over`: files left out before (named with them)."""
    from PIL import Image, UnidentifiedImageError

    from codec.classic import ICON_HEADS, pillow_settings
    from vaezip.config import MAX_IMAGE_PIXELS

    imgs, names, passed_over, changes = [], [], list(passed_over), []
    for path, label in files:
        if limit is not None and len(imgs) >= limit:
            break
        try:
            # compress's pixel limit, not Pillow's (which a host program may have set otherwise), checked from the
            # header before any pixel is decoded; past twice Pillow's raised one, Pillow refuses it first
            with open(path, "rb") as file:
                icon = file.read(4) in ICON_HEADS  # decoded as it is opened: Pillow refuses past vaezip's limit
            try:
                with pillow_settings(pixels=MAX_IMAGE_PIXELS // 2 if icon else None), Image.open(path) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise _NotCodable(f"{path}: {im.width}x{im.height} is more than {MAX_IMAGE_PIXELS:,} "
                                          f"pixels", "too many pixels")
                    if im.format == "PPM":
                        _single_netpbm(path)
                    changed: list[str] = []
                    a = _pil_to_array(im, str(path), changed)
                    changes += [(what, label) for what in changed]
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # (the warning: where an error)
                raise _NotCodable(f"{path}: more than {MAX_IMAGE_PIXELS:,} pixels", "too many pixels") from None
        except _NotCodable as error:  # in a folder of one's own images, one such file stops nothing
            if not skip_unreadable:
                raise
            passed_over.append(f"{label} ({error.reason})")
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if not skip_unreadable:
                raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
            passed_over.append(f"{label} (unreadable)")
            continue
        imgs.append(a)
        names.append(label)
    passed_over.sort()
    if passed_over:
        listed = ", ".join(passed_over[:3]) + (", ..." if len(passed_over) > 3 else "")
        warnings.warn(f"{name}: skipped {len(passed_over)} image file(s) it cannot use: {listed}", stacklevel=3)
    return _finish(name, imgs, names, len(passed_over), channels, changes, passed_over)


def _npz_array(path: Path, key: str | None, label: str) -> tuple[np.ndarray, str]:
    """The images array of an .npz file (a zip of .npy arrays, never pickles: numpy's own message would invite
    loading the file unsafely) and its key."""
    try:
        with open(path, "rb") as file:
            zipped = file.read(4) in (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip's end
    except OSError as error:
        raise DataError(f"{label}: cannot read it ({error.strerror or error})") from None
    if not zipped:
        raise DataError(f"{label}: not an .npz file (a zip of numpy arrays)")
    try:
        return _npz_key(path, key, label)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = ("it holds Python objects, which vaezip never loads" if "pickle" in str(error)
                  else str(error) or type(error).__name__)
        raise DataError(f"{label}: not a readable .npz of images: {reason}") from None


def _npz_key(path: Path, key: str | None, label: str) -> tuple[np.ndarray, str]:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if not keys:  # np.savez() of no array
            raise DataError(f"{label}: an .npz that holds no arrays")
        if key is None:
            key = "x_train" if "x_train" in keys else ("x" if "x" in keys else None)
            if key is None:
                raise DataError(f"{label}: no 'x_train' or 'x' key (keys: {', '.join(keys)}); "
                                "select one with file.npz:KEY")
        elif key not in keys:
            raise DataError(f"{label}: no key {key!r} (keys: {', '.join(keys)})")
        x = z[key]
        if "split" in keys and key != "split":
            split = z["split"]
            if split.ndim == 1 and len(split) == len(x):
                kept = split == 0  # a data set's own file (the shared Imagenette's): its training rows
                if not kept.all():
                    warnings.warn(f"{label}: {int(kept.sum())} of its {len(x)} images taken, those whose 'split' "
                                  f"is 0 (its training rows)", stacklevel=4)
                x = x[kept]
    return x, key


def _normalise_stack(x: np.ndarray, label: str, changes: list[str] | None = None) -> np.ndarray:
    """An array of images as (N, H, W, C) uint8 with C in {1, 3}; `changes` gets "alpha dropped" where C was 4."""
    if x.dtype != np.uint8:
        raise DataError(f"{label}: array dtype {x.dtype} is not uint8 (8-bit images only)")
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)
        if x.shape[-1] == 4:
            x = x[..., :3]
            if changes is not None:
                changes.append("alpha dropped")
        if x.shape[-1] not in (1, 3):
            raise DataError(f"{label}: cannot interpret array of shape {x.shape} as images")
    else:
        raise DataError(f"{label}: cannot interpret array of shape {x.shape} as images")
    if 0 in x.shape[1:3]:  # torch and the codecs failed on them after loading
        raise DataError(f"{label}: images of {x.shape[2]}x{x.shape[1]} pixels: none to code")
    return np.ascontiguousarray(x)


def _from_array(name: str, x: np.ndarray, limit: int | None, channels: int | None,
                offset: int = 0) -> ImageSet:
    if limit is not None and x.ndim != 2:  # a 2-D array is one image: its rows are not images
        x = x[:limit]
    changes: list[str] = []
    x = _normalise_stack(x, name, changes)
    if channels is not None:
        x = _to_channels(x, channels)
    if len(x) == 0:
        raise DataError(f"{name}: no images")
    # as _finish words a folder's changes; every row of the array has them
    return ImageSet(name, x, changed=tuple(f"{what}: every image ({len(x)} of {len(x)})" for what in changes))


def _load_name(name: str, limit: int | None, channels: int | None,
               exclude: str | os.PathLike | None = None) -> ImageSet:
    root = data_root()
    desc, spec = _SPECS[name]
    if spec[0] == "shrink":
        _, base, factor = spec
        source = _load_name(base, limit, channels, exclude)
        return _finish(name, [box_downsample(image, factor) for image in source], list(source.names), 0, channels)
    if spec[0] == "npz":
        _, rel, key, rows = spec
        path = root / rel
        if not path.is_file():
            raise DataError(f"data set {name!r}: missing file {path} (set VAEZIP_DATA to the data root)")
        with np.load(path, allow_pickle=False) as z:
            x = z[key]
            if rows is not None and rows[0] == "split":
                x = x[z["split"] == rows[1]]
        if rows is not None and rows[0] == "slice":
            x = x[rows[1]:rows[2]]
        return _from_array(name, x, limit, channels)
    if spec[0] == "listed":
        _, folder, list_file, keep = spec
        if not (root / list_file).is_file():
            raise DataError(f"data set {name!r}: missing {root / list_file} (set VAEZIP_DATA to the data root)")
        listed = {line.strip() for line in (root / list_file).read_text().splitlines() if line.strip()}
        chosen = [f for f in _list_images(root / folder) if (f.name in listed) == keep]
        files, charts = _without_charts([(f, f.relative_to(root).as_posix()) for f in chosen], exclude)
        return _load_files(name, files, limit, channels, skip_unreadable=False, passed_over=charts)
    files: list[tuple[Path, str]] = []
    for rel in spec[1]:
        p = root / rel
        if p.is_dir():
            files += [(f, f.relative_to(root).as_posix()) for f in _list_images(p)]
        elif p.is_file():
            files.append((p, p.relative_to(root).as_posix()))
        else:
            raise DataError(f"data set {name!r}: missing {p} (set VAEZIP_DATA to the data root)")
    files, charts = _without_charts(files, exclude)
    return _load_files(name, files, limit, channels, skip_unreadable=False, passed_over=charts)


def load(source: str | os.PathLike, *, limit: int | None = None, channels: int | None = None,
         exclude: str | os.PathLike | None = None, data_set: bool = False) -> ImageSet:
    """Load images from a data set name, a folder, an image file or an .npz (see module doc).

    ``limit`` keeps the first ``limit`` images (in sorted / row order).  ``channels`` (1 or 3)
    forces the channel count: grey -> RGB by repetition, RGB -> grey as Pillow's
    ``convert("L")``.  Without it, a set with any RGB image is RGB, otherwise grey. A bench report's charts
    are left out (_report_chart): those beside its tables, and those in ``exclude``, the report folder
    (`vaezip bench -o`). ``data_set``: ``source`` is a data set's name, whatever path here has it (a name the
    user did not type: bench's defaults); else such a path wins (names_data_set).
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None, got {channels!r}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    src = os.fspath(source)
    if (data_set and src in _SPECS) or names_data_set(src):
        return _load_name(src, limit, channels, exclude)

    key = None
    m = re.match(r"^(.*\.npz):([^:/\\]+)$", src, flags=re.IGNORECASE)
    if m and not Path(src).exists():
        src, key = m.group(1), m.group(2)
    path = Path(src).expanduser()
    if path.is_dir():
        unreadable = _unreadable_folders(path)  # a walk passes them over without a word
        if "." in unreadable:
            raise DataError(f"{path}: cannot read the folder (permission denied)")
        images, passed = _images_and_passed_over(path)
        files, charts = _without_charts([(f, f.relative_to(path).as_posix()) for f in images], exclude)
        if not files:
            raise DataError(f"{path}: no image files ({' '.join(IMAGE_EXTENSIONS)}) found"
                            + (f", and {len(unreadable)} folder(s) it cannot read (permission denied): "
                               f"{', '.join(unreadable)}" if unreadable else ""))
        named = [f"{f.relative_to(path).as_posix()} ({why})" for f, why in passed]
        if unreadable:
            warnings.warn(f"{path.name or path}: left out {len(unreadable)} folder(s) it cannot read (permission "
                          f"denied): {', '.join(unreadable)}", stacklevel=2)
        return _load_files(path.name or str(path), files, limit, channels, skip_unreadable=True,
                           passed_over=named + charts)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            x, key = _npz_array(path, key, str(path))
            return _from_array(f"{path.stem}:{key}", x, limit, channels)
        return _load_files(path.stem, [(path, path.name)], limit, channels, skip_unreadable=False)
    raise DataError(f"unknown data set or missing path {os.fspath(source)!r}; "
                    f"data set names: {', '.join(DATASETS)}")


# --------------------------------------------------------------------------------------------
# splits, sampling, batching
# --------------------------------------------------------------------------------------------


def _as_imageset(images, name: str = "images") -> ImageSet:
    if isinstance(images, ImageSet):
        return images
    if isinstance(images, np.ndarray):
        return ImageSet(name, _normalise_stack(images, name) if images.ndim != 4 else images)
    imgs = [im if im.ndim == 3 else im[:, :, None] for im in images]
    return ImageSet(name, _maybe_stack(imgs))


def split_holdout(images, *, fraction: float = 0.05, max_count: int = 1000, seed: int = 0):
    """Deterministic held-out split -> ``(train, val)``.

    ``val`` has ``min(max_count, round(fraction * N))`` images (at least 1 when N >= 2 and
    fraction > 0), chosen by ``np.random.default_rng(seed).permutation(N)``; both parts keep
    the original order.  Returns ImageSets (named ``<name>:train`` / ``<name>:val``) for an
    ImageSet, arrays for an array, lists for a list.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(images)
    n_val = min(int(max_count), int(round(fraction * n)))
    if n >= 2 and fraction > 0 and max_count > 0:
        n_val = max(1, n_val)
    n_val = min(n_val, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    if isinstance(images, ImageSet):
        return (images.subset(train_idx, f"{images.name}:train"),
                images.subset(val_idx, f"{images.name}:val"))
    if isinstance(images, np.ndarray):
        return images[train_idx], images[val_idx]
    images = list(images)
    return [images[i] for i in train_idx], [images[i] for i in val_idx]


class CropSampler:
    """Random crops as NCHW uint8 batches, with a resumable RNG stream.

    For a stacked (same-shape) set, ``crop`` is clipped to the image size (MNIST with crop 32
    gives 28x28) and sampling is vectorised (a strided window view + one fancy-index gather).
    For a list of differently sized images, images smaller than the crop in either dimension
    are skipped (``self.skipped``); each crop picks an eligible image uniformly at random,
    then a uniform offset.
    """

    def __init__(self, images, crop: int | tuple[int, int], seed: int):
        iset = _as_imageset(images)
        if len(iset) == 0:
            raise DataError("CropSampler: no images")
        ch, cw = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop)
        ch, cw = int(ch), int(cw)
        if ch < 1 or cw < 1:
            raise ValueError(f"crop must be positive, got {crop!r}")
        self.channels = iset.channels
        self.skipped = 0
        self._rng = np.random.default_rng(seed)
        if iset.same_shape:
            arr = iset.images
            _, h, w, _ = arr.shape
            # a set of one size below the crop on a side is cropped at that side's size (MNIST's 28 of 32)
            self.clipped = ((h, w),) if h < ch or w < cw else ()
            ch, cw = min(ch, h), min(cw, w)
            self._arr = arr
            # (N, H-ch+1, W-cw+1, C, ch, cw) view; v[i, y, x] is one crop in CHW layout
            self._view = sliding_window_view(arr, (ch, cw), axis=(1, 2))
            self._list = None
        else:
            self.clipped = ()
            keep = [im for im in iset.images if im.shape[0] >= ch and im.shape[1] >= cw]
            self.skipped = len(iset) - len(keep)
            if not keep:
                # split_holdout's training part: the folder's name, and a count that leaves out the held-out images
                name, which = ((iset.name.removesuffix(":train"), " not held out") if iset.name.endswith(":train")
                               else (iset.name, ""))
                raise DataError(f"{name}: all {len(iset)} images{which} are smaller than the training crop "
                                f"{ch}x{cw} (--crop takes smaller crops)")
            self._list = keep
            self._view = None
        self.crop = (ch, cw)
        self.num_images = len(iset) - self.skipped

    def sample(self, batch_size: int) -> np.ndarray:
        """``(batch_size, C, h, w)`` uint8 random crops."""
        rng = self._rng
        b = int(batch_size)
        ch, cw = self.crop
        if self._view is not None:
            v = self._view
            idx = rng.integers(0, v.shape[0], b)
            ys = rng.integers(0, v.shape[1], b)
            xs = rng.integers(0, v.shape[2], b)
            out = np.ascontiguousarray(v[idx, ys, xs])
        else:
            out = np.empty((b, self.channels, ch, cw), dtype=np.uint8)
            idx = rng.integers(0, len(self._list), b)
            for k, i in enumerate(idx):
                im = self._list[i]
                y = int(rng.integers(0, im.shape[0] - ch + 1))
                x = int(rng.integers(0, im.shape[1] - cw + 1))
                out[k] = im[y:y + ch, x:x + cw].transpose(2, 0, 1)
        return out

    def state(self) -> dict:
        """JSON-able RNG state (a dict of Python ints / strings)."""
        return _plain(self._rng.bit_generator.state)

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state


class MixtureSampler:
    """Crops from several image sets: each batch comes from one set, picked with probability proportional to
    its weight, so six large photographs can count as much as thousands of thumbnails.  Batches from sets of
    different sizes differ in shape (the models are fully convolutional and the loss is per subpixel)."""

    def __init__(self, parts: Sequence[ImageSet], weights: Sequence[float], crop: int, seed: int):
        if len(parts) != len(weights) or not parts:
            raise ValueError("MixtureSampler: one weight per part, at least one part")
        if any(w <= 0 for w in weights):
            raise DataError(f"mixture weights must be positive, got {list(weights)}")
        channels = {part.channels for part in parts}
        if len(channels) != 1:
            raise DataError(f"mixture parts differ in channel count: {sorted(channels)}")
        self.channels = channels.pop()
        # Every part draws from its own stream, so adding a part never changes another part's crops.
        self._samplers = [CropSampler(part, crop, seed=seed + 7919 * (index + 1)) for index, part in enumerate(parts)]
        self._probabilities = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self._rng = np.random.default_rng(seed)
        self.crop = self._samplers[0].crop if len({s.crop for s in self._samplers}) == 1 \
            else tuple(s.crop for s in self._samplers)
        self.skipped = sum(s.skipped for s in self._samplers)
        self.clipped = tuple(size for s in self._samplers for size in s.clipped)
        self.num_images = sum(s.num_images for s in self._samplers)

    def sample(self, batch_size: int) -> np.ndarray:
        part = int(self._rng.choice(len(self._samplers), p=self._probabilities))
        return self._samplers[part].sample(batch_size)

    def state(self) -> dict:
        return {"choice": _plain(self._rng.bit_generator.state), "parts": [s.state() for s in self._samplers]}

    def set_state(self, state: dict) -> None:
        if len(state["parts"]) != len(self._samplers):
            raise DataError("the saved sampler state has a different number of mixture parts")
        self._rng.bit_generator.state = state["choice"]
        for sampler, part_state in zip(self._samplers, state["parts"]):
            sampler.set_state(part_state)


_SAID_PATH_WINS: set[str] = set()  # sources whose warning was given (each check would give it again)


def names_data_set(source: str) -> bool:
    """Whether `source` names one of vaezip's data sets (DATASETS). A path that exists here is the user's own
    images even where a data set has its name (a folder `photos`): with a warning; `vaezip train photos` trained
    on the data set instead, without a word."""
    if source not in _SPECS:
        return False
    if not Path(source).expanduser().exists():
        return True
    if source not in _SAID_PATH_WINS:
        _SAID_PATH_WINS.add(source)
        warnings.warn(f"{source}: the {'folder' if Path(source).expanduser().is_dir() else 'file'} here, not "
                      f"vaezip's data set of that name", stacklevel=3)
    return False


def parse_mixture(source: str) -> list[tuple[str, float]]:
    """``"skimage-rgb@1+imagenette32-train@1"`` -> ``[("skimage-rgb", 1.0), ("imagenette32-train", 1.0)]``.

    A source that names a data set or an existing path is one part of weight 1, even when it contains
    ``+`` or ``@``.  A part without ``@WEIGHT`` has weight 1."""
    if names_data_set(source) or Path(source).expanduser().exists():
        return [(source, 1.0)]
    parts = []
    for item in source.split("+"):
        name, _, weight = item.rpartition("@") if "@" in item else (item, "", "1")
        if not name or not re.fullmatch(r"[0-9]*\.?[0-9]+", weight) or float(weight) <= 0:
            raise DataError(f"bad mixture part {item!r}: write NAME or NAME@WEIGHT (a positive number)")
        parts.append((name, float(weight)))
    return parts


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def iter_batches(images, batch_size: int, *, chw: bool = True) -> Iterator[np.ndarray]:
    """Sequential full-image batches, in order, for evaluation.

    Stacked sets yield slices of ``batch_size`` images (the last one may be shorter); lists
    yield one image per batch.  Batches are ``(B, C, H, W)`` uint8 (``chw=False``: ``(B, H, W, C)``).
    """
    iset = _as_imageset(images)
    if iset.same_shape:
        arr = iset.images
        for i in range(0, len(arr), int(batch_size)):
            b = arr[i:i + int(batch_size)]
            yield np.ascontiguousarray(b.transpose(0, 3, 1, 2)) if chw else b
    else:
        for im in iset.images:
            b = im[None]
            yield np.ascontiguousarray(b.transpose(0, 3, 1, 2)) if chw else b
