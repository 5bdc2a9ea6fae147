"""The Python API that the CLI and users call: load a model; compress and decompress images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vaezip.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    load_weights,
    model_from_checkpoint,
    sha256_file,
)
from vaezip.model import HierarchicalVAE


@dataclass(frozen=True)
class LoadedModel:
    name: str  # what the .vz header records and `--model` accepts
    model: HierarchicalVAE
    sha256: str  # of the file the weights came from
    source: str  # where it was loaded from


def load_model(spec: str | Path) -> LoadedModel:
    """A run folder, a checkpoint (.pt), a weights file (.safetensors) or a shipped model's name."""
    path = Path(spec)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".safetensors" and path.is_file():
        model, metadata = load_weights(path)
        return LoadedModel(metadata.get("name", path.stem), model, sha256_file(path), str(path))
    if path.suffix == ".pt" and path.is_file():
        checkpoint = load_checkpoint(path)
        name = path.parent.name if path.name == CHECKPOINT_NAME else path.stem
        return LoadedModel(name, model_from_checkpoint(checkpoint), sha256_file(path), str(path))
    from vaezip import zoo

    if zoo.has_model(str(spec)):
        return zoo.load(str(spec))
    raise CheckpointError(f"no model {str(spec)!r}: not a run folder, .pt, .safetensors or shipped model name")


# ---------------------------------------------------------------------------------------------- coding


@dataclass(frozen=True)
class ImageReport:
    """What compressing one image cost, against what the model promises."""

    name: str
    mode: str
    width: int
    height: int
    subpixels: int
    bound_bits: float  # the model's negative ELBO of the model plane (+ the ideal cost of side planes)
    payload_bits: float  # this image's real share of the payload (stack growth while it was pushed)
    # Tiles coded without bits-back (a stream's first tiles; any tile the predictor codes for less): their
    # cost minus their bound, negative where the predictor beat the model.
    without_bitsback_excess_bits: float
    tiles: int
    tiles_without_bitsback: int

    @property
    def bound_bpsp(self) -> float:
        return self.bound_bits / self.subpixels


@dataclass(frozen=True)
class CompressResult:
    data: bytes
    model: str
    images: tuple[ImageReport, ...]
    header_bytes: int  # everything in the file except the payload words
    seconds: float

    @property
    def subpixels(self) -> int:
        return sum(image.subpixels for image in self.images)

    @property
    def achieved_bpsp(self) -> float:
        return 8 * len(self.data) / self.subpixels

    @property
    def bound_bpsp(self) -> float:
        return sum(image.bound_bits for image in self.images) / self.subpixels


def default_model(mode: str) -> str:
    from vaezip import zoo

    return zoo.default_for(mode)


def compress_images(
    images,
    model: LoadedModel | str | None = None,
    *,
    tile: int | None = None,
    max_batch: int = 16,
    device: str = "auto",
    progress=None,
    predictor: bool = True,
) -> CompressResult:
    """images: a sequence of (name, PIL image). Chains bits-back across all of them in one stream.

    predictor: let the model-free predictor code any tile it codes for less than the model would (False: only
    the stream's first tiles, which cannot use bits-back, go without the model)."""
    from vaezip.archive import encode_archive

    return encode_archive(
        images, model, tile=tile, max_batch=max_batch, device=device, progress=progress, predictor=predictor
    )


def compress(image, model: LoadedModel | str | None = None, *, name: str = "image.png", **options) -> bytes:
    """Compress one PIL image or (H, W) / (H, W, C) uint8 array to .vz bytes."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    return compress_images([(name, image)], model, **options).data


def decompress_images(data: bytes, model: LoadedModel | str | None = None, *, device: str = "auto", progress=None):
    """.vz bytes -> list of (name, PIL image); raises IntegrityError unless every checksum matches."""
    from vaezip.archive import decode_archive

    return decode_archive(data, model, device=device, progress=progress)


def decompress(data: bytes, model: LoadedModel | str | None = None, **options):
    """.vz bytes of a single image -> PIL image."""
    return decompress_images(data, model, **options)[0][1]


def read_header(data: bytes):
    from codec.container import read

    return read(data)[0]
