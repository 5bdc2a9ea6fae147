"""What compressing images returns: the .vz bytes and, image by image, what they cost against the model's bound.

Built by vaezip/archive.py, re-exported by vaezip/api.py; importing it imports no torch."""

from __future__ import annotations

from dataclasses import dataclass


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
    # The path the image took: "model", or the classical coding that was smaller ("raw", "png", "webp"); a
    # classically coded image has no tiles, its payload is its coding's size, its bound the model's (nan where
    # the model could not code it).
    coding: str = "model"
    # What each path would have cost this image, in bytes, smallest first: (("webp", 15314), ("png", 36846),
    # ("model", 151766), ...); the model's figure is its share of a stream that held every image it could code,
    # or, where the model's estimate ruled it out (more than 1.25 times the classical coding) and it did not
    # run, that estimate.
    candidate_bytes: tuple[tuple[str, int], ...] = ()
    # (tiles priced, tiles) where the model's bound (and its candidate) is projected from a sample of the image's
    # tiles: the default compress's early exit, which found the model far behind the predictor's stream there
    # (vaezip/archive.py GATE_RATIO); () where every tile was priced.
    bound_sample: tuple[int, int] = ()
    # "grey", "colour" or "palette" (this image's kind: a palette image's model plane is its colours) where the
    # image went classically because the archive's model codes the other kind (vaezip/archive.py:
    # encode_archive); its bound is then nan. "" elsewhere.
    other_kind: str = ""
    # The metadata chunks the file keeps of this image (codec.metadata.Chunk: its colour profile, EXIF, text); the
    # types of those a file could keep that this one does not (--strip, or a format before 17); and what no file
    # keeps, "TYPE (why)" each (vaezip/metadata.py: unsafe to copy such as Apple's iDOT, damaged, not fitting), and
    # what is not metadata (metadata.not_metadata: the bytes after the image in its file, "N bytes after the image's
    # end", and what Pillow does not read into its pixels, "... (not read)"), named without metadata too (--strip;
    # compress_images(metadata=False)).
    metadata: tuple = ()
    metadata_left_out: tuple[str, ...] = ()
    metadata_unkept: tuple[str, ...] = ()
    # A 16-bit image's depth (codec/depth.py: "shift:12" where the file held 12-bit samples shifted up; "" for an
    # 8-bit image) and the path its low part took ("" where it has none): `coding` and `candidate_bytes` are its high
    # part's, the other figures both parts' together.
    depth: str = ""
    low_coding: str = ""
    # A grey image's bit depth below 8 that the file keeps (1, 2 or 4: a bilevel scan, a 2- or 4-bit grey PNG), which
    # decompress writes it back in; 0 where it has none, or the format asked for keeps none (22 and older).
    grey_bits: int = 0
    grey_bits_left_out: int = 0  # that depth where the format asked for (22 or older) keeps none

    @property
    def bound_bpsp(self) -> float:
        return self.bound_bits / self.subpixels


@dataclass(frozen=True)
class CompressResult:
    data: bytes
    model: str
    images: tuple[ImageReport, ...]
    header_bytes: int  # everything in the file except the payload (the model's words, the classical codings)
    seconds: float
    format_version: int = 3
    # The tile side the images were cut into: --tile rounded to a multiple of the model's stride (None where the
    # default's early exit chose the file before any was cut)
    tile: int | None = None

    @property
    def codings(self) -> tuple[str, ...]:
        """The path each image took ("model", "raw", "png", "webp"), in order."""
        return tuple(image.coding for image in self.images)

    @property
    def subpixels(self) -> int:
        return sum(image.subpixels for image in self.images)

    @property
    def other_kind_images(self) -> int:
        """The images coded classically because the model codes the other kind (grey or colour)."""
        return sum(1 for image in self.images if image.other_kind)

    @property
    def achieved_bpsp(self) -> float:
        return 8 * len(self.data) / self.subpixels

    @property
    def bound_bpsp(self) -> float:
        return sum(image.bound_bits for image in self.images) / self.subpixels
