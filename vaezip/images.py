"""Images in and out: which pixels go through the model, which go through a simple plane coder, and the
checksum that proves a decode exact.

| mode | model plane            | side planes (i.i.d. histogram coder) |
|------|------------------------|--------------------------------------|
| L    | grey (1, H, W)         | -                                    |
| LA   | grey                   | alpha                                |
| RGB  | colour (3, H, W)       | -                                    |
| RGBA | colour                 | alpha                                |
| P    | colour via the palette | - (or the index plane when two used indices share a colour) |

Only pixel values (and the palette, with its transparency entry) are kept; metadata such as EXIF or ICC
profiles is not.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaezip.errors import ImageError

# Refused before decoding (Pillow raises DecompressionBombError above twice its own limit; ours is lower).
MAX_IMAGE_PIXELS = 100_000_000
SUPPORTED_MODES = ("L", "LA", "RGB", "RGBA", "P")
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


def open_image(source) -> Image.Image:
    """Open and fully decode an image file (path, bytes or file object); every failure is an ImageError."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # Pillow warns (stderr noise) between its limit and twice it: refuse
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
            if image.width * image.height > MAX_IMAGE_PIXELS:  # from the header alone, before decoding any pixel
                raise Image.DecompressionBombError("too many pixels")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)") from None
    except UnidentifiedImageError:
        raise ImageError("not a readable image (unknown or damaged format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"not a readable image ({str(error).strip() or type(error).__name__})") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)")
    return image


def _check_mode(image: Image.Image) -> None:
    if image.mode in SUPPORTED_MODES:
        return
    hint = {"I;16": "16-bit", "I;16B": "16-bit", "I": "32-bit integer", "F": "floating point", "CMYK": "CMYK"}
    kind = f" ({hint[image.mode]})" if image.mode in hint and hint[image.mode] != image.mode else ""
    raise ImageError(f"unsupported image mode {image.mode}{kind}; vaezip codes 8-bit L, LA, RGB, RGBA and P")


def split_image(image: Image.Image) -> Planes:
    _check_mode(image)
    if image.width < 1 or image.height < 1:
        raise ImageError("image has no pixels")
    if image.width * image.height > MAX_IMAGE_PIXELS:  # the decoder refuses such files: never write one
        raise ImageError(f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)")
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
    return planes


def _split_palette(image: Image.Image, indices: np.ndarray, planes: Planes) -> None:
    palette_mode = image.palette.mode if image.palette is not None else "RGB"
    raw = bytes(image.palette.tobytes()) if image.palette is not None else b""
    planes.palette = raw
    planes.info["palette_mode"] = palette_mode
    transparency = image.info.get("transparency")
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
    mode = planes.mode
    if mode in ("L", "LA"):
        grey = planes.model_plane[0]
        array = grey if mode == "L" else np.stack([grey, planes.side_planes["alpha"]], axis=-1)
        return Image.fromarray(array, mode)
    if mode in ("RGB", "RGBA"):
        rgb = planes.model_plane.transpose(1, 2, 0)
        array = rgb if mode == "RGB" else np.concatenate([rgb, planes.side_planes["alpha"][..., None]], axis=-1)
        return Image.fromarray(np.ascontiguousarray(array), mode)
    return _join_palette(planes)


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
    if isinstance(transparency, int):
        image.info["transparency"] = transparency
    elif isinstance(transparency, str):
        image.info["transparency"] = bytes.fromhex(transparency)
    return image


def pixel_checksum(image: Image.Image) -> str:
    """sha256 of everything a decode must restore: mode, size, pixel values, palette and transparency."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(np.ascontiguousarray(np.asarray(image)).tobytes())
    if image.mode == "P" and image.palette is not None:
        digest.update(image.palette.mode.encode() + bytes(image.palette.tobytes()))
        digest.update(repr(image.info.get("transparency")).encode())
    return digest.hexdigest()
