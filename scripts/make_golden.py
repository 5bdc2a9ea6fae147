"""Regenerate tests/data/golden.{png,vz}: a small synthetic image coded by the seeded, untrained tiny model.

    python scripts/make_golden.py --golden [--force]
Only after a deliberate format change (bump codec.container.VERSION): the golden file pins the format.

    python scripts/make_golden.py --black [--force]
writes tests/data/black/*.vz, images with black regions as the coder of 2026-12-02 wrote them (those files
were refused by the decoder of that day although they were sound): never regenerate them, they pin that
such files decode forever.

    python scripts/make_golden.py --format3 [--force]
writes tests/data/format3/*.vz, the first files of format 3 (binary header, classical codings beside the
model's): each kind of image that the classical path takes, one model-coded file (golden.png, its payload
words those of golden.vz), one whose alpha plane is coded classically beside the model's tiles, and an
archive that mixes both paths. Never regenerate them either.

    python scripts/make_golden.py --format5 [--force]
writes tests/data/format5/*.vz, the first files of format 5 (predictor tiles with Laplace residuals):
golden.png through the model without the predictor's choice (its first tile a Laplace predictor tile, the
rest bits-back: the same tiles as format3/model.vz) and with it (the untrained model loses every tile to the
predictor), written today with compress_images(format_version=5). Never regenerate them either.

    python scripts/make_golden.py --format6 [--force]
writes tests/data/format6/*.vz, the first files of format 6 (predictor tiles through the blend of
predictors): the same two codings of golden.png, by default. Never regenerate them either.

    python scripts/make_golden.py --format7 [--force]
writes tests/data/format7/reordered.vz, the first file of format 7 (the stream order in the header: the
tiles without the model first): golden.png in tiles of 8 through the untrained tiny model, which loses every
tile to the predictor on its own estimate, so the estimate is replaced by a fixed one (format7_estimates:
every other tile to the model) to give the order something to move. Never regenerate it either.

    python scripts/make_golden.py --format8 [--force]
writes tests/data/format8/*.vz, the first files of format 8 (predictor tiles with residual tables fitted on
photographs): golden.png's two codings of --format6 and the stream order of --format7 (reordered.vz), written
today by default. Never regenerate them either.

    python scripts/make_golden.py --format9 [--force]
writes tests/data/format9/*.vz, the first files of format 9 (predictor tiles whose contexts adapt over the
stream): golden.png with the predictor's choice (predictor.vz; without it only a stream's first tile goes to
the predictor, as format 8's stateless kind) and the stream order of --format7 (reordered.vz), written today by
default then. Never regenerate them either.

    python scripts/make_golden.py --format10 [--force]
writes tests/data/format10/*.vz, the first files of format 10 (predictor tiles that blend in a local
least-squares prediction): --format9's two and golden.png as `--fast` codes it (fast.vz: one tile of the whole
image, the least-squares windows of a larger tile), and a 96x64 crop of samples/hopper.png the same way
(photo-fast.vz), written today by default. Never regenerate them either.

    python scripts/make_golden.py --format11 [--force]
writes tests/data/format11/*.vz, the first files of format 11 (format 10 with its header deflated): an archive
of twelve 16x16 crops of samples/hopper.png through the tiny model (archive.vz) and as `--fast` codes it
(archive-fast.vz), written today by default. Never regenerate them either.

    python scripts/make_golden.py --format12 [--force]
writes tests/data/format12/*.vz, the first files of format 12 (the predictor's cascade tiles): golden.png with the
predictor's choice through the tiny model (predictor.vz) and as `--fast` codes it (fast.vz), the 96x64 crop of
samples/hopper.png as `--fast` codes it (photo-fast.vz) and --format11's archive as `--fast` codes it
(archive-fast.vz), written today by default. Never regenerate them either.

    python scripts/make_golden.py --format13 [--force]
writes tests/data/format13/*.vz, the first files of format 13 (the cascade's tiles with parity): --format12's
images and options, and a 23x21 crop as `--fast` codes it (odd-fast.vz), written today by default. Never
regenerate them either.

    python scripts/make_golden.py --format14 [--force]
writes tests/data/format14/*.vz, the first files of format 14 (the wide cascade's tiles): --format13's images and
options, `--fast`'s tiles of 256 named, written by default when format 14 was the newest. Never regenerate them
either.

    python scripts/make_golden.py --format15 [--force]
writes tests/data/format15/*.vz, the first files of format 15 (the staged cascade's tiles): --format14's images and
options, written by default when format 15 was the newest. Never regenerate them either.

    python scripts/make_golden.py --format16 [--force]
writes tests/data/format16/*.vz, the first files of format 16 (the staged cascade's tiles in sections):
--format15's images and options but smaller tiles where --fast codes one image (so that it holds rows of tiles),
written today by default with sections cut at far fewer values than compress cuts them (small_sections: several
sections a file). Never regenerate them either.

    python scripts/make_golden.py --format19 [--force]
writes tests/data/format19/*.vz, the first files of format 19 (2026-12-07: small images' sections coded by the staged
cascade's small-image profile), as `--fast` codes them in tiles of 8 with the tiny models, written by default with
sections cut at far fewer values than compress cuts them (small_sections): twelve 16x16 hopper crops in colour and in
grey, and golden.png with a 23x21 corner (format19_files). Never regenerate them either.

    python scripts/make_golden.py --format20 [--force]
writes tests/data/format20/*.vz, the first files of format 20 (2026-12-07: photographs' sections coded by the staged
cascade's photograph profile), as `--fast` codes them with the tiny models, written by default with sections cut at
far fewer values than compress cuts them (small_sections) and images of a thousand values or more taken for
photographs, of five hundred for images that take the photograph profile beside the small-image one (photo_sections):
photo_crop in tiles of 32 in colour (photo-fast.vz) and in grey (grey-fast.vz), golden.png with a 23x21 corner of
photo_crop in tiles of 8 (odd-fast.vz), and hopper_crops in tiles of 8, each section in one profile or the other
(archive-fast.vz) (format20_files). Never regenerate them either.

    python scripts/make_golden.py --format21 [--force]
writes tests/data/format21/*.vz, the first files of format 21 (2026-12-07: the photograph profile's values coded bit
by bit, refined by an adaptive model), format20_files's images and options written with format_version=21
(format21_files). Never regenerate them either.

    python scripts/make_golden.py --format22 [--force]
writes tests/data/format22/*.vz, the first files of format 22 (2026-12-07: the refinement also reading the earlier
channels' gradients, and refining small images' sections too), format20_files's images and options written by default
(format22_files). Never regenerate them either.

    python scripts/make_golden.py --format23 [--force]
writes tests/data/format23/archive-fast.vz, the first file of format 23 (2026-12-08: grey images' bit depths below
8), as `--fast` codes them in tiles of 8 through the predictor's stream alone (no classical coding, whose bytes are
Pillow's): a bilevel crop of samples/hopper.png with a colour key, a 2-bit grey one with a background grey and
significant bits chunk, a 4-bit grey one and an 8-bit grey one, each as open_image reads it from the PNG Pillow writes
of it (grey_bits_files). Never regenerate it either: it pins how bit depths below 8 are stored.

    python scripts/make_golden.py --mixed [--force]
writes tests/data/mixed/*.vz, the first archives that mix grey and colour images (2026-12-05, format 16, as
`--fast` codes them with the shipped default models): the kind with most pixels through its model's stream, the
other kind's images by their classical codings (mixed_files). Never regenerate them either: they pin that such
archives decode.

    python scripts/make_golden.py --format17 [--force]
writes tests/data/format17/*.vz, the first files of format 17 (2026-12-06: each image's metadata chunks in the
header), as `--fast` codes them with the shipped default models: a colour crop with a colour profile, colour space
chunks, EXIF, text and a private chunk in each of the three places (photo-fast.vz), and an archive of a palette image
with a background colour, a grey image without metadata and a colour one with XMP (archive-fast.vz)
(metadata_files). Never regenerate them either: they pin how metadata are stored.

    python scripts/make_golden.py --format18 [--force]
writes tests/data/format18/*.vz, the first files of format 18 (2026-12-06: 16-bit images, each as its high and low
parts, codec/depth.py), as `--fast` codes them with the shipped default models (deep_files): a 16-bit colour crop of
12 significant bits shifted up, with a colour profile and significant bits chunk (photo-fast.vz), and an archive of a
16-bit grey + alpha image scaled up from 10 bits, an 8-bit colour image, a 16-bit RGBA image of 256 values a channel
(levels of 8 bits), a 16-bit colour one of 10 bits with a gain per channel (levels of 10 bits) and a 16-bit grey one
that holds 8 (archive-fast.vz). Never regenerate them either: they pin how 16-bit images are stored.

    python scripts/make_golden.py --binary [--force]
writes tests/data/binary/model.vz, the first file of a model with binary latent groups (DVAE++; the seeded
untrained tiny model with binary_groups = 2, "tiny-binary"): golden.png through the model only (format 5,
written today with format_version=5).
Never regenerate it either: it pins how binary latents are coded.

    python scripts/make_golden.py --global [--force]
writes tests/data/global/model.vz, the first file of a model with a global latent group (DVAE++; the seeded
untrained tiny model with global_latents = 8, "tiny-global"): golden.png through the model only (format 5,
written today with format_version=5).
Never regenerate it either.

    python scripts/make_golden.py --sizes [--model-too]
prints the sizes of issue 15's table for larger versions of the same synthetic kinds: vaezip (format 3, the
shipped default models) against Pillow's optimized PNG and lossless WebP (--model-too also times the model path
alone, as vaezip coded these images before format 3).

Every pinned file that exists is left alone unless --force is given: regenerating one is a format decision.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zlib
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_tiny_weights  # noqa: E402

from vaezip.api import compress_images, load_model  # noqa: E402

GOLDEN = ROOT / "tests" / "data"
# --fast's tile side (vaezip/archive.py FAST_TILE) when every `--fast` golden so far was written: their options
# name it, so that they re-encode to their bytes whatever the default is now (256 since 2026-12-05)
WRITTEN_FAST_TILE = 128


def golden_image() -> Image.Image:
    rng = np.random.default_rng(2026)
    y, x = np.mgrid[0:20, 0:24]
    base = 100 + 50 * np.sin(x / 4.0)[..., None] + 30 * np.cos(y / 3.0)[..., None] + rng.normal(0, 6, (20, 24, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def black_region_images() -> dict[str, list[tuple[str, Image.Image]]]:
    """File name -> the images it holds: black regions where a stream starts (its first tiles)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bars = noise.copy()
    bars[:32] = 0
    letterbox = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    letterbox[:10], letterbox[-10:], letterbox[..., 3] = 0, 0, 255
    grey = np.zeros((40, 40), dtype=np.uint8)
    grey[30:] = rng.integers(0, 256, (10, 40), dtype=np.uint8)
    return {
        "black-rgb.vz": [("black.png", Image.new("RGB", (8, 8)))],
        "bars-rgb.vz": [("bars.png", Image.fromarray(bars, "RGB"))],
        "bars-rgb-model-only.vz": [("bars.png", Image.fromarray(bars, "RGB"))],
        "letterbox-rgba.vz": [("letterbox.png", Image.fromarray(letterbox, "RGBA"))],
        "black-top-l.vz": [("grey.png", Image.fromarray(grey, "L"))],
        "palette-1x1.vz": [("dot.png", Image.new("P", (1, 1)))],
        "archive-black-first.vz": [("black.png", Image.new("RGB", (16, 16))), ("bars.png", Image.fromarray(bars, "RGB"))],
    }


# ---------------------------------------------------------------------------------------------- format 3 kinds
# Integer arithmetic only (no sin, exp, fonts or Pillow quantizers), so that the same images come out on any
# machine and with any numpy or Pillow: the golden files are compared with them.


def glyphs(rng: np.random.Generator) -> np.ndarray:
    """26 glyph-like 7x5 bitmaps: strokes of a pixel font (bool)."""
    marks = rng.random((26, 7, 5)) < 0.45
    marks[:, :, 0] |= rng.random((26, 1)) < 0.5  # a vertical stem in many, as in letters
    return marks


def screenshot(width: int = 64, height: int = 48, seed: int = 15) -> Image.Image:
    """Flat colours and text-like strokes: a title bar, a side bar, lines of 'text', a button."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = (242, 242, 240)
    rgb[: max(4, height // 12)] = (45, 62, 80)
    rgb[height // 12 :, : width // 4] = (228, 231, 236)
    font = glyphs(rng)
    for top in range(height // 12 + 3, height - 9, 10):
        for left in range(width // 4 + 3, width - 6, 6):
            if rng.random() < 0.85:  # spaces between 'words'
                rgb[top : top + 7, left : left + 5][font[rng.integers(0, 26)]] = (25, 25, 30)
        for left in range(3, width // 4 - 6, 6):
            if top < height // 2:
                rgb[top : top + 7, left : left + 5][font[rng.integers(0, 26)]] = (60, 60, 70)
    rgb[height - 8 : height - 2, width - 20 : width - 3] = (0, 120, 215)
    return Image.fromarray(rgb, "RGB")


def palette_image(width: int = 64, height: int = 48, colours: int = 64, seed: int = 16) -> Image.Image:
    """A P image of `colours` palette entries: smooth regions dithered between neighbouring entries."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    field = (x * 5 + y * 3 + (x * y) // 16) % (4 * colours)  # slow ramps and bands
    bayer = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
    indices = ((field + bayer[y % 4, x % 4]) // 4) % colours
    image = Image.fromarray(indices.astype(np.uint8), "P")
    k = np.arange(colours)[:, None]
    ramp = np.hstack([k * 255 // colours, 255 - k * 180 // colours, 90 + (k * 7) % 60])  # neighbours look alike
    image.putpalette(np.clip(ramp + rng.integers(-6, 7, ramp.shape), 0, 255).astype(np.uint8).tobytes())
    return image


def tiny_image(seed: int = 17) -> Image.Image:
    """5x5 RGB noise: the classical path's floor (raw bytes)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (5, 5, 3), dtype=np.uint8), "RGB")


def rgba_smooth(width: int = 48, height: int = 40, seed: int = 18) -> Image.Image:
    """Smooth colour under a smooth round alpha (opaque in the middle, transparent at the corners)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 2 % 256], -1) + rng.integers(-3, 4, (height, width, 3))
    distance = ((2 * x - width) ** 2 + (2 * y - height) ** 2) * 255 // (width**2 + height**2)
    alpha = np.clip(400 - 2 * distance * 3 // 2, 0, 255)
    return Image.fromarray(np.clip(np.dstack([rgb, alpha]), 0, 255).astype(np.uint8), "RGBA")


def la_image(width: int = 30, height: int = 20, seed: int = 19) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    grey = np.clip(x * 8 + rng.integers(-2, 3, (height, width)), 0, 255)
    alpha = np.where((x // 5 + y // 5) % 2 == 0, 255, y * 12)
    return Image.fromarray(np.dstack([grey, alpha]).astype(np.uint8), "LA")


def p_transparent(width: int = 33, height: int = 21) -> Image.Image:
    """A P image with an RGBA-style transparency table (tRNS bytes) and an unused palette entry."""
    y, x = np.mgrid[0:height, 0:width]
    image = Image.fromarray(((x // 4 + y // 3) % 5).astype(np.uint8), "P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 9, 9, 9])
    image.info["transparency"] = bytes([0, 128, 255, 200, 255, 7])
    return image


def l_colour_key(width: int = 25, height: int = 17) -> Image.Image:
    """An L image with a tRNS colour key (grey 77) that some pixels have."""
    y, x = np.mgrid[0:height, 0:width]
    grey = ((x * 10 + y * 3) % 256).astype(np.uint8)
    grey[4:9, 6:14] = 77
    image = Image.fromarray(grey, "L")
    image.info["transparency"] = 77
    return image


def p_duplicates(size: int = 48, seed: int = 20) -> Image.Image:
    """A P image whose palette repeats a colour, its indices i.i.d. with probabilities 0.6 / 0.25 / 0.1 / 0.05: the
    model path's histogram codes them at their entropy, below PNG and WebP (even for the untrained tiny model)."""
    draws = np.random.default_rng(seed).integers(0, 20, (size, size))
    image = Image.fromarray(((draws >= 12).astype(np.uint8) + (draws >= 17) + (draws >= 19)).astype(np.uint8), "P")
    image.putpalette([10, 20, 30, 10, 20, 30, 200, 0, 0, 0, 0, 255])
    return image


def classic_images() -> dict[str, Image.Image]:
    """Every kind the classical path must hold exactly (tests/test_classic.py), small."""
    return {"screenshot": screenshot(), "palette": palette_image(), "tiny": tiny_image(), "rgba": rgba_smooth(),
            "la": la_image(), "p-transparency": p_transparent(), "l-key": l_colour_key()}


def format3_files() -> dict[str, list[tuple[str, Image.Image]]]:
    """tests/data/format3: file name -> the images it holds."""
    files = {f"{kind}.vz": [(f"{kind}.png", image)] for kind, image in classic_images().items()}
    files["model.vz"] = [("golden.png", golden_image())]
    files["model-alpha.vz"] = [("alpha.png", rgba_smooth())]
    files["archive.vz"] = [("duplicates.png", p_duplicates()), ("tiny.png", tiny_image()), ("palette.png", palette_image())]
    return files


def _tiny_models(folder: Path) -> dict[int, Path]:
    """The untrained tiny grey and colour models that the fixtures name: {channels: weights path}."""
    return {c: make_tiny_weights(folder / f"tiny-{c}.safetensors", c, name) for c, name in ((1, "tiny-grey"), (3, "tiny-rgb"))}


def write_pinned(path: Path, data: bytes, force: bool) -> bool:
    """Writes a pinned fixture; one that exists is kept (and said so) unless `force`."""
    if path.exists() and not force:
        print(f"{path.relative_to(ROOT)} exists: kept (pinned; --force overwrites it)")
        return False
    path.write_bytes(data)
    return True


def make_format3_fixtures(force: bool) -> None:
    folder = GOLDEN / "format3"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights = _tiny_models(Path(scratch))
        for file_name, images in format3_files().items():
            channels = 1 if images[0][1].mode in ("L", "LA") else 3
            # model.vz: the model path of golden.vz in format 3 (model-only, no predictor, as golden.vz);
            # model-alpha.vz: the model path with its alpha plane coded classically.
            options = {"model.vz": dict(predictor=False, classical=False), "model-alpha.vz": dict(classical=False)}
            options = options.get(file_name, {})
            result = compress_images(images, load_model(weights[channels]), tile=16, device="cpu", format_version=3,
                                     **options)
            if write_pinned(folder / file_name, result.data, force):
                print(f"format3/{file_name}: {len(result.data)} bytes, {', '.join(result.codings)}")


# The predictor kind of the files of tests/data/format5, format6, format8, format9 and format10 (predictor_files).
PREDICTOR_KINDS = {5: "predictive-laplace", 6: "predictive-blend", 8: "predictive-fitted", 9: "predictive-adaptive",
                   10: "predictive-least-squares"}
NEWEST = 21  # the format compress_images writes by default (format_version=None) where the predictor codes


def predictor_files(version: int) -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/formatVERSION (5, 6, 8, 9 or 10): file name -> (the images it holds, compress_images's options):
    golden.png through the model without the predictor's choice (only its first tile a predictor tile; not from
    format 9 on, where that tile takes format 8's kind) and with it; in format 10 also as `--fast` codes it."""
    golden = [("golden.png", golden_image())]
    version_option = dict(format_version=version) if version != NEWEST else {}
    files = {"model.vz": (golden, dict(predictor=False, classical=False, **version_option)),
             "predictor.vz": (golden, dict(classical=False, **version_option))}
    if version >= 9:
        del files["model.vz"]
    if version == 10:
        files["fast.vz"] = (golden, dict(classical=False, fast=True, tile=WRITTEN_FAST_TILE, **version_option))
        files["photo-fast.vz"] = ([("hopper.png", photo_crop())],
                                  dict(classical=False, fast=True, tile=WRITTEN_FAST_TILE, **version_option))
    return files


def hopper_crops() -> list[tuple[str, Image.Image]]:
    """Twelve 16x16 crops of samples/hopper.png named 0.png .. 11.png: an archive whose header deflates to less."""
    hopper = Image.open(ROOT / "samples" / "hopper.png").convert("RGB")
    return [(f"{k}.png", hopper.crop((16 * (k % 4) + 40, 16 * (k // 4) + 60, 16 * (k % 4) + 56, 16 * (k // 4) + 76)))
            for k in range(12)]


def format11_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format11: file name -> (the images it holds, compress_images's options): hopper_crops through the
    tiny model (its stream's first tile by the predictor, the others bits-back: archive.vz) and as `--fast` codes
    them (archive-fast.vz); no classical coding, whose bytes are Pillow's. (Written with the default options when
    format 11 was the newest; format_version=11 gives the same files since format 12.)"""
    images = hopper_crops()
    return {"archive.vz": (images, dict(classical=False, predictor=False, tile=16, format_version=11)),
            "archive-fast.vz": (images, dict(classical=False, fast=True, tile=WRITTEN_FAST_TILE, format_version=11))}


def format12_files(version: int = 12, fast_tile: int = WRITTEN_FAST_TILE
                   ) -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format12 (or format13 and 14, `version` 13 or 14): file name -> (the images it holds,
    compress_images's options): golden.png through the tiny model with the predictor's choice (predictor.vz) and as `--fast` codes it
    (fast.vz), photo_crop as `--fast` codes it (photo-fast.vz: the cascade's windows, solves and both stages all
    take part) and hopper_crops the same way (archive-fast.vz); no classical coding. (Format 12's were written with
    the default options when format 12 was the newest; format_version=12 gives the same files since format 13.)
    `fast_tile`: the --fast tile the files name (the default's when they were written)."""
    golden = [("golden.png", golden_image())]
    chosen = {} if version == NEWEST else dict(format_version=version)
    fast = dict(classical=False, fast=True, tile=fast_tile, **chosen)
    return {"predictor.vz": (golden, dict(classical=False, tile=16, **chosen)), "fast.vz": (golden, fast),
            "photo-fast.vz": ([("hopper.png", photo_crop())], fast), "archive-fast.vz": (hopper_crops(), fast)}


def format13_files(version: int = 13, fast_tile: int = WRITTEN_FAST_TILE
                   ) -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format13: format12_files's images and options, written in format 13 (the cascade with parity),
    and a 23x21 corner of photo_crop as `--fast` codes it (odd-fast.vz: one tile of odd sides, its parity counted
    from its last column and row). (Written with the default options when format 13 was the newest;
    format_version=13 gives the same files since format 14.)"""
    files = format12_files(version, fast_tile)
    files["odd-fast.vz"] = ([("odd.png", photo_crop().crop((0, 0, 23, 21)))], files["fast.vz"][1])
    return files


def format14_files(version: int = 14) -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format14 (or format15, `version` 15): format13_files's images and options written in format 14
    (the wide cascade), --fast's tiles of 256. (Written with the default options when format 14 was the newest;
    format_version=14 gives the same files since format 15.)"""
    return format13_files(version, fast_tile=256)


def format15_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format15: format14_files's images and options written in format 15 (the staged cascade)."""
    return format14_files(15)


def format16_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format16: format15_files's images and options written in format 16 (the staged cascade's tiles in
    sections), where --fast codes one image in tiles small enough for rows of them: golden.png's 24x20 in tiles of
    8 (fast.vz), photo_crop's 96x64 in tiles of 32 (photo-fast.vz) and the 23x21 corner in tiles of 8
    (odd-fast.vz). Written within small_sections."""
    files = format14_files(16)  # the default's when format 16 was the newest
    for name, tile in (("fast.vz", 8), ("photo-fast.vz", 32), ("odd-fast.vz", 8)):
        files[name] = (files[name][0], {**files[name][1], "tile": tile})
    return files


def format19_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format19: file name -> (the images it holds, compress_images's options, the tiny models): small
    images whose sections the staged cascade's small-image profile codes (predictive-small-sections), as `--fast`
    codes them in tiles of 8: hopper_crops in colour (archive-fast.vz), in grey (grey-fast.vz), and golden.png with
    a 23x21 corner of photo_crop (odd-fast.vz). Written by default when format 19 was the newest (format_version=19
    gives the same files since format 22 refines small images' sections), within small_sections."""
    crops = hopper_crops()
    fast = dict(classical=False, fast=True, tile=8, format_version=19)
    return {"archive-fast.vz": (crops, fast),
            "grey-fast.vz": ([(name, image.convert("L")) for name, image in crops], fast),
            "odd-fast.vz": ([("golden.png", golden_image()), ("odd.png", photo_crop().crop((0, 0, 23, 21)))], fast)}


def format20_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format20: file name -> (the images it holds, compress_images's options, the tiny models):
    photographs (within photo_sections) whose sections the staged cascade's photograph profile codes
    (predictive-photo-sections), as `--fast` codes them: photo_crop in tiles of 32 in colour (photo-fast.vz) and in
    grey (grey-fast.vz), and golden.png with a 23x21 corner of photo_crop in tiles of 8 (odd-fast.vz); and hopper_crops
    in tiles of 8, whose sections take the photograph profile or the small-image one (archive-fast.vz). Written by
    default when format 20 was the newest (format_version=20 gives the same files since format 21), within
    small_sections and photo_sections."""
    return {name: (images, {**options, "format_version": 20}) for name, (images, options) in format22_files().items()}


def format21_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format21: format20_files's images and options, written by default when format 21 was the newest
    (format_version=21 gives the same files since format 22): the photograph profile's sections refined bit by bit
    (predictive-refined-sections), within small_sections and photo_sections."""
    return {name: (images, {**options, "format_version": 21}) for name, (images, options) in format22_files().items()}


def format22_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format22: format20_files's images and options, written by default (format 22 the newest): the
    photograph profile's sections refined bit by bit, the refinement reading the earlier channels' gradients too
    (predictive-refined-across-sections), and in the archive the small-image profile's refined so
    (predictive-small-refined-across-sections), within small_sections and photo_sections."""
    fast = dict(classical=False, fast=True)
    crop = photo_crop()
    return {"photo-fast.vz": ([("hopper.png", crop)], {**fast, "tile": 32}),
            "grey-fast.vz": ([("hopper.png", crop.convert("L"))], {**fast, "tile": 32}),
            "odd-fast.vz": ([("golden.png", golden_image()), ("odd.png", crop.crop((0, 0, 23, 21)))],
                            {**fast, "tile": 8}),
            "archive-fast.vz": (hopper_crops(), {**fast, "tile": 8})}


# What photo_sections takes instead of bitsback.PHOTO_PROFILE_VALUES and SMALL_PROFILE_VALUES: images of five hundred
# values or more each on average take the photograph profile (with the small-image one beside it below a thousand),
# so that tests/data/format20's small images are coded as photographs are.
PHOTO_SECTION_VALUES = 500, 1000


@contextmanager
def photo_sections():
    """compress_images taking images of PHOTO_SECTION_VALUES values or more each for photographs (format 20's
    photograph profile; the files' format is the same, only the encoder's choice of profile changes)."""
    from codec import bitsback

    kept = bitsback.PHOTO_PROFILE_VALUES, bitsback.SMALL_PROFILE_VALUES
    bitsback.PHOTO_PROFILE_VALUES, bitsback.SMALL_PROFILE_VALUES = PHOTO_SECTION_VALUES
    try:
        yield
    finally:
        bitsback.PHOTO_PROFILE_VALUES, bitsback.SMALL_PROFILE_VALUES = kept


# What small_sections cuts sections at, instead of bitsback.SECTION_VALUES, SECTIONS_NEAR and SECTIONS_MOST: a few
# hundred values (a 16x16 colour tile holds 768), so that tests/data/format16's small images hold several sections
# each (LARGE_SECTION_VALUES, millions, adds none to them).
SMALL_SECTION_VALUES = 256
SMALL_SECTIONS_MOST = 64


@contextmanager
def small_sections():
    """compress_images cutting format 16's sections at SMALL_SECTION_VALUES values (the files' format is the
    same; only where the encoder cuts changes)."""
    from codec import bitsback

    kept = bitsback.SECTION_VALUES, bitsback.SECTIONS_NEAR, bitsback.SECTIONS_MOST
    bitsback.SECTION_VALUES, bitsback.SECTIONS_NEAR, bitsback.SECTIONS_MOST = \
        SMALL_SECTION_VALUES, SMALL_SECTIONS_MOST, SMALL_SECTIONS_MOST
    try:
        yield
    finally:
        bitsback.SECTION_VALUES, bitsback.SECTIONS_NEAR, bitsback.SECTIONS_MOST = kept


def mixed_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/mixed: file name -> (the images it holds, compress_images's options, no model named): colour
    hopper crops with a grey one and a grey-with-alpha one among them (colour.vz: photo2's stream, the two grey
    images classical), and a grey 96x64 crop with a small colour one (grey.vz: photo-gray2's stream, the colour
    image classical); `--fast`, in tiles of 8."""
    crops = [image for _, image in hopper_crops()]
    alpha = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)), "L")
    grey_alpha = crops[3].convert("L")
    grey_alpha.putalpha(alpha)
    colour = [("0.png", crops[0]), ("1.png", crops[1].convert("L")), ("2.png", crops[2]), ("3.png", grey_alpha)]
    grey = [("photo.png", photo_crop().convert("L")), ("small.png", crops[4])]
    options = {"fast": True, "tile": 8, "format_version": 16}  # the default's when they were written
    return {"colour.vz": (colour, options), "grey.vz": (grey, options)}


def metadata_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format17: file name -> (the images it holds, each with its metadata chunks in its info as
    open_image puts them there, compress_images's options, no model named)."""
    from vaezip.metadata import METADATA
    from codec.metadata import AFTER_DATA, AFTER_HEADER, BEFORE_DATA, Chunk

    # opaque to vaezip but for the data colour space in its header (bytes 16 to 20)
    profile = b"ICC profile\0\0" + zlib.compress(bytes(16) + b"RGB " + bytes(range(256)) * 2, 9)
    photo = photo_crop()
    photo.info[METADATA] = (
        Chunk(AFTER_HEADER, b"iCCP", profile), Chunk(AFTER_HEADER, b"gAMA", (45455).to_bytes(4, "big")),
        Chunk(AFTER_HEADER, b"eXIf", b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0"),
        Chunk(BEFORE_DATA, b"pHYs", (2835).to_bytes(4, "big") * 2 + b"\x01"),
        Chunk(BEFORE_DATA, b"tEXt", b"Title\0hopper, a crop"), Chunk(BEFORE_DATA, b"prVt", b"\0\xff private"),
        Chunk(AFTER_DATA, b"tIME", bytes([7, 234, 12, 6, 2, 40, 0])), Chunk(AFTER_DATA, b"tEXt", b"Comment\0after"),
    )
    crops = [image for _, image in hopper_crops()]
    palette = crops[0].quantize(16)
    palette.info[METADATA] = (Chunk(BEFORE_DATA, b"bKGD", b"\x03"),)
    colour = crops[2].copy()
    colour.info[METADATA] = (Chunk(BEFORE_DATA, b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta/>"),)
    grey = crops[1].convert("L")
    options = {"fast": True, "tile": 8, "format_version": 17}  # the default's when they were written
    return {"photo-fast.vz": ([("photo.png", photo)], options),
            "archive-fast.vz": ([("palette.png", palette), ("grey.png", grey), ("colour.png", colour)], options)}


def make_version_fixtures(version: int, files: dict, force: bool) -> None:
    """tests/data/formatN: each of `files` (metadata_files's, deep_files's, grey_bits_files's) as compress_images
    codes it, which must be format `version` (17 for metadata, 18 for 16-bit images, 23 for bit depths below 8)."""
    folder = GOLDEN / f"format{version}"
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (images, options) in files.items():
        result = compress_images(images, **options)
        assert result.format_version == version, file_name
        if write_pinned(folder / file_name, result.data, force):
            depths = [image.depth for image in result.images]
            print(f"format{version}/{file_name}: {len(result.data)} bytes, model {result.model}"
                  + (f", depths {depths}" if any(depths) else ""))


def deep_files() -> dict[str, tuple[list[tuple[str, object]], dict]]:
    """tests/data/format18: file name -> (the images it holds, 16-bit ones as vaezip.images.DeepImage with their
    metadata chunks as open_image puts them, compress_images's options, no model named)."""
    from codec.metadata import AFTER_HEADER, BEFORE_DATA, Chunk
    from vaezip.images import DeepImage
    from vaezip.metadata import METADATA

    rng = np.random.default_rng(18)
    photo = np.asarray(photo_crop()).astype(np.uint16)  # (64, 96, 3)
    twelve = (photo << 4 | rng.integers(0, 16, photo.shape, dtype=np.uint16)) << 4  # 12 bits, shifted up
    profile = b"ICC profile\0\0" + zlib.compress(bytes(16) + b"RGB " + bytes(range(256)) * 2, 9)
    shifted = DeepImage(twelve, "RGB")
    shifted.info[METADATA] = (Chunk(AFTER_HEADER, b"iCCP", profile), Chunk(AFTER_HEADER, b"sBIT", b"\x0c" * 3),
                              Chunk(BEFORE_DATA, b"tEXt", b"Title\0hopper, 12 bits"))
    crops = [np.asarray(image) for _, image in hopper_crops()]
    ten = np.arange(1024, dtype=np.int64).reshape(32, 32)  # every 10-bit value, scaled up to the full range
    grey_alpha = (np.stack([ten, np.full((32, 32), 1023)], axis=-1) * 65535 + 511) // 1023
    palette = rng.integers(0, 65536, (256, 4))  # 256 values a channel, anywhere in 16 bits
    full = palette[rng.integers(0, 256, (32, 32, 4)), np.arange(4)].astype(np.uint16)
    ten_bit_photo = np.asarray(photo_crop()).astype(np.int64) * 4 + rng.integers(0, 4, (64, 96, 3))
    balanced = (ten_bit_photo * np.array([65535, 50000, 61000]) + 511) // 1023  # a white balance's gain per channel
    eight = crops[4][..., 1].astype(np.uint16) * 257
    options = {"fast": True, "tile": 8, "format_version": 18}  # the default's when they were written
    return {"photo-fast.vz": ([("photo.png", shifted)], options),
            "archive-fast.vz": ([("grey-alpha.png", DeepImage(grey_alpha.astype(np.uint16), "LA")),
                                 ("colour.png", Image.fromarray(crops[5])),
                                 ("rgba.png", DeepImage(full, "RGBA")),
                                 ("balanced.png", DeepImage(balanced.astype(np.uint16), "RGB")),
                                 ("grey.png", DeepImage(eight, "L"))], options)}


def grey_bits_files() -> dict[str, tuple[list[tuple[str, Image.Image]], dict]]:
    """tests/data/format23: file name -> (the images it holds, as open_image reads them from Pillow's PNGs of 1, 2, 4
    and 8 bits, compress_images's options, no model named)."""
    import io

    from codec.classic import png_chunk
    from vaezip.images import open_image

    grey = np.asarray(Image.open(ROOT / "samples" / "hopper.png").convert("L").crop((40, 60, 72, 84)))  # (24, 32)

    def opened(bits: int, chunks: bytes = b"", **options) -> Image.Image:
        levels = (grey.astype(np.int64) * ((1 << bits) - 1) + 127) // 255  # each value of `bits` bits
        image = Image.fromarray((levels * (255 // ((1 << bits) - 1))).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **({"bits": bits} if bits < 8 else {}), **options)
        png = buffer.getvalue()
        at = png.index(b"IDAT") - 4
        return open_image(png[:at] + chunks + png[at:])

    images = [("bilevel.png", opened(1, transparency=1)),
              ("grey2.png", opened(2, png_chunk(b"sBIT", b"\x02") + png_chunk(b"bKGD", b"\0\2"))),
              ("grey4.png", opened(4)), ("grey8.png", opened(8))]
    return {"archive-fast.vz": (images, {"fast": True, "tile": 8, "classical": False})}


def make_mixed_fixtures(force: bool) -> None:
    folder = GOLDEN / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (images, options) in mixed_files().items():
        result = compress_images(images, **options)
        assert result.other_kind_images, file_name
        if write_pinned(folder / file_name, result.data, force):
            print(f"mixed/{file_name}: {len(result.data)} bytes, model {result.model}")


def make_deflated_fixtures(version: int, force: bool) -> None:
    """tests/data/format11 to format16 and format19 to format22."""
    folder = GOLDEN / f"format{version}"
    folder.mkdir(parents=True, exist_ok=True)
    files = {11: format11_files, 12: format12_files, 13: format13_files, 14: format14_files,
             15: format15_files, 16: format16_files, 19: format19_files, 20: format20_files,
             21: format21_files, 22: format22_files}[version]()
    with tempfile.TemporaryDirectory() as scratch, \
            small_sections() if version in (16, 19, 20, 21, 22) else nullcontext(), \
            photo_sections() if version in (20, 21, 22) else nullcontext():
        weights = _tiny_models(Path(scratch))
        for file_name, (images, options) in files.items():
            channels = 1 if images[0][1].mode == "L" else 3
            result = compress_images(images, load_model(weights[channels]), **{"device": "cpu", **options})
            assert result.format_version == version, file_name
            if write_pinned(folder / file_name, result.data, force):
                print(f"format{version}/{file_name}: {len(result.data)} bytes")


def photo_crop() -> Image.Image:
    """A 96x64 crop of samples/hopper.png: a photograph's textures and edges, where the least-squares predictor's
    windows, solves and reuse all take part (tests/data/format10/photo-fast.vz)."""
    return Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((96, 64, 192, 128))


def make_predictor_fixtures(version: int, force: bool) -> None:
    folder = GOLDEN / f"format{version}"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights = _tiny_models(Path(scratch))
        for file_name, (images, options) in predictor_files(version).items():
            result = compress_images(images, load_model(weights[3]), **{"tile": 16, "device": "cpu", **options})
            assert result.format_version == version, file_name
            if write_pinned(folder / file_name, result.data, force):
                print(f"format{version}/{file_name}: {len(result.data)} bytes")


FORMAT7_TILE = 8


def format7_estimates(count: int) -> list[float]:
    """The fixed estimate of the model's cost of each of `count` tiles behind tests/data/format7: 0 bits for
    the odd tiles (the model takes them), infinite for the even ones (the predictor takes them)."""
    return [0.0 if k % 2 else float("inf") for k in range(count)]


@contextmanager
def fixed_estimates():
    """compress_images with format7_estimates for the float network's estimate of every tile (the choice of
    tiles only: the coder, the model's bits and the file are as ever)."""
    from vaezip.coding import TorchLatentModel

    estimated = TorchLatentModel.tile_bounds

    def tile_bounds(self, tiles, *args, estimate: bool = False, **kwargs):
        if estimate:
            return format7_estimates(len(tiles))
        return estimated(self, tiles, *args, estimate=estimate, **kwargs)

    TorchLatentModel.tile_bounds = tile_bounds
    try:
        yield
    finally:
        TorchLatentModel.tile_bounds = estimated


def format7_file(weights: Path, version: int = 7) -> bytes:
    """tests/data/format7/reordered.vz's bytes (formatN/reordered.vz's with version N, 8, 9 or 10): golden.png by the
    tiny model of `weights`, fixed estimates."""
    with fixed_estimates():
        result = compress_images([("golden.png", golden_image())], load_model(weights), tile=FORMAT7_TILE,
                                 device="cpu", classical=False, format_version=None if version == NEWEST else version)
    assert result.format_version == version
    return result.data


def make_format7_fixture(force: bool, version: int = 7) -> None:
    folder = GOLDEN / f"format{version}"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        data = format7_file(_tiny_models(Path(scratch))[3], version)
        if write_pinned(folder / "reordered.vz", data, force):
            print(f"format{version}/reordered.vz: {len(data)} bytes")


def binary_weights(folder: Path) -> Path:
    """The seeded untrained tiny model whose two latent groups are binary: what tests/data/binary pins."""
    return make_tiny_weights(folder / "tiny-binary.safetensors", 3, "tiny-binary", binary_groups=2)


def global_weights(folder: Path) -> Path:
    """The seeded untrained tiny model with a global group of 8 latents: what tests/data/global pins."""
    return make_tiny_weights(folder / "tiny-global.safetensors", 3, "tiny-global", global_latents=8)


def make_latent_fixture(name: str, weights_of, force: bool) -> None:
    """tests/data/NAME/model.vz: golden.png through the model of weights_of(folder) only."""
    folder = GOLDEN / name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        result = compress_images([("golden.png", golden_image())], load_model(weights_of(Path(scratch))),
                                 tile=16, device="cpu", predictor=False, classical=False, format_version=5)
        if write_pinned(folder / "model.vz", result.data, force):
            print(f"{name}/model.vz: {len(result.data)} bytes")


def make_black_fixtures(force: bool) -> None:
    folder = GOLDEN / "black"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights = _tiny_models(Path(scratch))
        for file_name, images in black_region_images().items():
            channels = 1 if images[0][1].mode in ("L", "LA") else 3
            result = compress_images(images, load_model(weights[channels]), tile=16, device="cpu",
                                     predictor="model-only" not in file_name)
            if write_pinned(folder / file_name, result.data, force):
                print(f"black/{file_name}: {len(result.data)} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--golden", action="store_true", help="tests/data/golden.{png,vz} (format 2)")
    action.add_argument("--black", action="store_true", help="tests/data/black/*.vz")
    action.add_argument("--format3", action="store_true", help="tests/data/format3/*.vz")
    action.add_argument("--format5", action="store_true", help="tests/data/format5/*.vz")
    action.add_argument("--format6", action="store_true", help="tests/data/format6/*.vz")
    action.add_argument("--format7", action="store_true", help="tests/data/format7/reordered.vz")
    action.add_argument("--format8", action="store_true", help="tests/data/format8/*.vz")
    action.add_argument("--format9", action="store_true", help="tests/data/format9/*.vz")
    action.add_argument("--format10", action="store_true", help="tests/data/format10/*.vz")
    action.add_argument("--format11", action="store_true", help="tests/data/format11/*.vz")
    action.add_argument("--format12", action="store_true", help="tests/data/format12/*.vz")
    action.add_argument("--format13", action="store_true", help="tests/data/format13/*.vz")
    action.add_argument("--format14", action="store_true", help="tests/data/format14/*.vz")
    action.add_argument("--format15", action="store_true", help="tests/data/format15/*.vz")
    action.add_argument("--format16", action="store_true", help="tests/data/format16/*.vz")
    action.add_argument("--format17", action="store_true", help="tests/data/format17/*.vz")
    action.add_argument("--format18", action="store_true", help="tests/data/format18/*.vz")
    action.add_argument("--format19", action="store_true", help="tests/data/format19/*.vz")
    action.add_argument("--format20", action="store_true", help="tests/data/format20/*.vz")
    action.add_argument("--format21", action="store_true", help="tests/data/format21/*.vz")
    action.add_argument("--format22", action="store_true", help="tests/data/format22/*.vz")
    action.add_argument("--format23", action="store_true", help="tests/data/format23/*.vz")
    action.add_argument("--mixed", action="store_true", help="tests/data/mixed/*.vz")
    action.add_argument("--binary", action="store_true", help="tests/data/binary/model.vz")
    action.add_argument("--global", dest="global_", action="store_true", help="tests/data/global/model.vz")
    action.add_argument("--sizes", action="store_true", help="print issue 15's size table (writes nothing)")
    parser.add_argument("--model-too", action="store_true", help="with --sizes: also the model path alone")
    parser.add_argument("--force", action="store_true", help="overwrite pinned files that exist")
    args = parser.parse_args()
    if args.model_too and not args.sizes:
        parser.error("--model-too goes with --sizes")
    if args.black:
        make_black_fixtures(args.force)
    elif args.format3:
        make_format3_fixtures(args.force)
    elif args.format5 or args.format6:
        make_predictor_fixtures(5 if args.format5 else 6, args.force)
    elif args.format7:
        make_format7_fixture(args.force)
    elif args.format8 or args.format9 or args.format10:
        version = 8 if args.format8 else 9 if args.format9 else 10
        make_predictor_fixtures(version, args.force)
        make_format7_fixture(args.force, version)
    elif any(getattr(args, f"format{v}") for v in range(11, 17)):
        version = next(v for v in range(11, 17) if getattr(args, f"format{v}"))
        make_deflated_fixtures(version, args.force)
    elif args.format17:
        make_version_fixtures(17, metadata_files(), args.force)
    elif args.format18:
        make_version_fixtures(18, deep_files(), args.force)
    elif args.format19 or args.format20 or args.format21 or args.format22:
        make_deflated_fixtures(next(v for v in (19, 20, 21, 22) if getattr(args, f"format{v}")), args.force)
    elif args.format23:
        make_version_fixtures(23, grey_bits_files(), args.force)
    elif args.mixed:
        make_mixed_fixtures(args.force)
    elif args.binary:
        make_latent_fixture("binary", binary_weights, args.force)
    elif args.global_:
        make_latent_fixture("global", global_weights, args.force)
    elif args.sizes:
        print_sizes(args.model_too)
    else:
        make_golden_fixture(args.force)


def make_golden_fixture(force: bool) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    image = golden_image()
    with tempfile.TemporaryDirectory() as folder:
        weights = make_tiny_weights(Path(folder) / "tiny-rgb.safetensors", 3, "tiny-rgb")
        # Model-only: with the untrained tiny model the predictor would take every tile, and the golden file
        # is to pin bits-back too.
        result = compress_images([("golden.png", image)], load_model(weights), tile=16, device="cpu", predictor=False,
                                 format_version=2)
    if write_pinned(GOLDEN / "golden.vz", result.data, force):
        image.save(GOLDEN / "golden.png")
        print(f"golden.vz: {len(result.data)} bytes")


def print_sizes(model_too: bool) -> None:
    """Issue 15's table: vaezip (format 3, default models) against Pillow's optimized PNG and lossless WebP."""
    import io
    import time

    def pillow(image: Image.Image, fmt: str, **options) -> int:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return len(buffer.getvalue())

    kinds = {
        "synthetic screenshot 640x400": screenshot(640, 400),
        "64-colour palette 256x192": palette_image(256, 192),
        "5x5 RGB": tiny_image(),
        "RGBA smooth alpha 256x192": rgba_smooth(256, 192),
    }
    print("| image | vaezip (path) | model path alone | PNG optimize | lossless WebP |")
    print("|---|---|---|---|---|")
    for name, image in kinds.items():
        started = time.perf_counter()
        result = compress_images([("image.png", image)], None, device="cpu")
        seconds = time.perf_counter() - started
        alone = "-"
        if model_too:
            started = time.perf_counter()
            alone = f"{len(compress_images([('image.png', image)], None, device='cpu', classical=False).data):,} B " \
                    f"({time.perf_counter() - started:.1f} s)"
        webp_source = image.convert("RGBA" if image.mode == "LA" else "RGB") if image.mode in ("P", "LA") else image
        webp = pillow(webp_source, "WEBP", lossless=True, quality=100, method=4, exact=True)
        print(f"| {name} | {len(result.data):,} B ({', '.join(result.codings)}, {seconds:.1f} s) | {alone} | "
              f"{pillow(image, 'PNG', optimize=True):,} B | {webp:,} B |")


if __name__ == "__main__":
    main()
