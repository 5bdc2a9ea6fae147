"""vaezip itself as a benchmark codec.

Two ways of storing a data set are measured:

* ``vaezip`` (:class:`VaezipCodec`, per image): every image is its own ``.vz`` file,
  ``compress_images([(name, image)], model)``; the bytes counted are the whole file (header,
  image entry with its checksum, payload).  It follows the :class:`~vaezip.bench.Codec`
  protocol, so :func:`vaezip.bench.run` times it and checks the round trip like any classical
  codec; ``bound_bpsp`` is the model's bound (negative ELBO + ideal cost of side planes) for
  the same image, reported next to the achieved rate.
* ``vaezip-archive`` (:func:`run_archive`): all images of the data set in ONE ``.vz`` archive
  (bits-back chained across images, one header).  One :class:`~vaezip.bench.Row` per data set
  (``index = -1``), with the archive's bound.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .classical import Row, _check_image, _same_pixels, warm_up

__all__ = ["VaezipCodec", "run_archive", "ARCHIVE_NAME", "to_pil"]

ARCHIVE_NAME = "vaezip-archive"


def _shown(path: str) -> str:
    """A path inside the repository relative to it (reports are committed), others as given."""
    try:
        return Path(path).resolve().relative_to(Path(__file__).resolve().parents[2]).as_posix()
    except ValueError:
        return path


def to_pil(img: np.ndarray):
    """HWC uint8 (C in {1, 3}) -> PIL image of mode L or RGB."""
    from PIL import Image

    img = _check_image(img)
    return Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img)


def _key(img: np.ndarray) -> tuple:
    return img.shape, hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest()


def _library() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from vaezip import __version__

    try:
        from codec.ans import constriction_version

        cons = constriction_version()
    except Exception:  # noqa: BLE001  # pragma: no cover
        cons = "?"
    try:
        torch = version("torch")  # read from its metadata: a bench that runs no network imports no torch
    except PackageNotFoundError:  # pragma: no cover
        torch = "?"
    return f"vaezip {__version__} (torch {torch}, constriction {cons})"


class VaezipCodec:
    """vaezip, one ``.vz`` file per image, with a loaded model (:class:`vaezip.api.LoadedModel`), or for
    ``fast`` alone a shipped model's identity (vaezip.models.ModelIdentity: no weights read, no torch)."""

    def __init__(self, model, *, tile: int | None = None, device: str = "auto", name: str = "vaezip",
                 classical: bool = True, fast: bool = False):
        self.model = model
        self.tile = tile
        self.device = device
        self.name = name
        self.classical = classical  # False: the model path for every image (what the model alone achieves)
        self.fast = fast  # True: no network runs (compress --fast)
        self.channels = int(model.config.image_channels)
        self.library = _library()
        from vaezip.archive import DEFAULT_TILE, FAST_TILE, effective_tile

        where = _shown(model.source)
        shown_tile = f"default ({FAST_TILE if fast else DEFAULT_TILE})" if tile is None else str(tile)
        coded_tile = effective_tile(tile, model.config.stride) if tile is not None and not fast else tile
        shown_tile += f" (coded as {coded_tile}: a multiple of the model's stride)" if coded_tile != tile else ""
        self.flags = (f"compress_images([(name, image)], model={model.name!r} "
                      f"[{where}, sha256 {model.sha256[:16]}], tile={shown_tile}, "
                      f"device={device!r}{'' if classical else ', classical=False'}{', fast=True' if fast else ''}); "
                      f"one .vz file per image")
        self._bounds: dict[tuple, float] = {}

    def encode(self, img: np.ndarray) -> bytes:
        from vaezip.api import compress_images

        img = _check_image(img)
        result = compress_images([("image", to_pil(img))], self.model, tile=self.tile, device=self.device,
                                 classical=self.classical, fast=self.fast)
        report = result.images[0]
        self._bounds = {_key(img): (report.bound_bpsp, bool(report.bound_sample))}  # only the latest image is kept
        return result.data

    def decode(self, data: bytes) -> np.ndarray:
        from vaezip.api import decompress_images

        (_, image), = decompress_images(data, self.model, device=self.device)
        return np.asarray(image)

    def bound_bpsp(self, img: np.ndarray) -> float | None:
        """The bound recorded when ``img`` was last encoded (``None`` if it was not)."""
        bound = self._bounds.get(_key(_check_image(img)))
        return None if bound is None else bound[0]

    def bound_projected(self, img: np.ndarray) -> bool:
        """Whether that bound was projected from the model's estimate of a sample of the tiles (the early exit)."""
        bound = self._bounds.get(_key(_check_image(img)))
        return bound is not None and bound[1]


class ArchiveFlags:
    """The flags entry of the archive mode, for the report's codec table."""

    def __init__(self, codec: VaezipCodec, name: str = ARCHIVE_NAME):
        self.name = name
        self.library = codec.library
        self.flags = codec.flags.replace("[(name, image)]", "(all images of the data set)").replace(
            "one .vz file per image", "one .vz archive per data set")


def run_archive(images, codec: VaezipCodec, *, dataset: str | None = None, name: str = ARCHIVE_NAME,
                verify: bool = True, progress: Callable[[Row], None] | None = None) -> Row:
    """Compress every image of ``images`` (an ImageSet or what :func:`vaezip.bench.run` takes) into
    one archive with ``codec``'s model; decode it and compare every image.  One :class:`Row`:
    ``index = -1``, ``subpixels``/``bytes`` over the whole archive, ``bound_bpsp`` the archive's bound;
    ``height``/``width`` are the common image size (0 when sizes differ)."""
    from vaezip.api import compress_images, decompress_images
    from vaezip.data import ImageSet, _as_imageset

    iset = images if isinstance(images, ImageSet) else _as_imageset(images, dataset or "images")
    ds = dataset or iset.name
    arrays = [_check_image(iset.images[i]) for i in range(len(iset))]
    shapes = {a.shape for a in arrays}
    h, w, c = next(iter(shapes)) if len(shapes) == 1 else (0, 0, iset.channels)
    sub = int(sum(a.size for a in arrays))
    label = f"{len(arrays)} images in one archive"
    try:
        named = [(iset.image_name(i), to_pil(a)) for i, a in enumerate(arrays)]
        warm_up(codec, arrays[0])  # the per-image files' own first-call costs, untimed (no archive paid them)
        t0 = time.perf_counter()
        result = compress_images(named, codec.model, tile=codec.tile, device=codec.device)
        t1 = time.perf_counter()
        ok, err = True, ""
        if verify:
            decoded = decompress_images(result.data, codec.model, device=codec.device)
            t2 = time.perf_counter()
            if len(decoded) != len(arrays):
                ok, err = False, f"decoded {len(decoded)} images, not {len(arrays)}"
            else:
                bad = [i for i, ((_, im), a) in enumerate(zip(decoded, arrays)) if not _same_pixels(np.asarray(im), a)]
                if bad:
                    ok, err = False, f"{len(bad)} decoded image(s) differ (first: {iset.image_name(bad[0])})"
        else:
            t2 = t1
        nbytes = len(result.data)
        row = Row(ds, name, -1, label, h, w, c, sub, nbytes, 8.0 * nbytes / sub, t1 - t0,
                  (t2 - t1) if verify else math.nan, ok, float(result.bound_bpsp), err,
                  any(bool(image.bound_sample) for image in result.images))
    except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
        row = Row(ds, name, -1, label, h, w, c, sub, -1, math.nan, math.nan, math.nan, False, math.nan,
                  f"{type(e).__name__}: {e}"[:300])
    if progress is not None:
        progress(row)
    return row
