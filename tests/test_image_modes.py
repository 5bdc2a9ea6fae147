"""What vaezip cannot hold exactly is refused, never narrowed (issue 19 items 2 and 4): images with more than 8 bits
per channel (but 16-bit PNGs, tests/test_deep.py) and images with more than one frame are refused before any output
is written; the tRNS colour key
of L and RGB images is coded, restored and covered by the pixel checksum."""

from __future__ import annotations

import dataclasses
import importlib.util
import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import OTHER_KERNELS, run_cli
from PIL import Image, features

from codec import container
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.archive import combined_checksum
from vaezip.errors import ImageError, IntegrityError
from vaezip.images import DeepImage, open_image, pixel_checksum, png_bytes, sniff_bits_per_channel, split_image

GOLDEN = Path(__file__).parent / "data"
RNG = np.random.default_rng(19)


# ---------------------------------------------------------------------------------------------- crafted files


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(samples: np.ndarray, depth: int, colour_type: int, extra: bytes = b"") -> bytes:
    """A PNG from (H, W * channels) samples, written by hand: Pillow cannot write 16-bit RGB, RGBA or LA."""
    height, row = samples.shape
    channels = {0: 1, 2: 3, 4: 2, 6: 4, 3: 1}[colour_type]
    width = row // channels if depth >= 8 else row * 8 // depth
    rows = samples.astype(">u2" if depth == 16 else np.uint8)
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def deep_png(colour_type: int, height: int = 5, width: int = 6) -> bytes:
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    return crafted_png(RNG.integers(0, 65536, (height, width * channels)), 16, colour_type)


def tiff_rgb16(height: int = 4, width: int = 5, samples: int = 3, photometric: int = 2, extra: int | None = None
               ) -> bytes:
    """An uncompressed little-endian TIFF, RGB with BitsPerSample (16, 16, 16); with `samples` 4, a fourth sample
    that no ExtraSamples tag names (RGBX: vaezip keeps no such TIFF); `extra`: an ExtraSamples tag of that value."""
    pixels = RNG.integers(0, 65536, (height, width, samples)).astype("<u2").tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, samples, None), (259, 3, 1, 1),
            (262, 3, 1, photometric), (273, 4, 1, None), (277, 3, 1, samples), (278, 3, 1, height),
            (279, 4, 1, len(pixels)), (284, 3, 1, 1)] + ([(338, 3, 1, extra)] if extra is not None else [])
    ifd_size = 2 + 12 * len(tags) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 2 * samples
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = {258: bits_at, 273: pixels_at}.get(tag, value)
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        if tag == 258 and samples <= 2:  # values that fit in the entry are stored in it, not pointed to
            packed = struct.pack("<HH", 16, 16 if samples == 2 else 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    bits = struct.pack(f"<{samples}H", *[16] * samples)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bits + pixels


def bmp_565(height: int = 3, width: int = 2) -> bytes:
    """A 16-bit BMP (5-5-5 packed pixels, fewer than 8 bits per channel): never mistaken for a deep image."""
    stride = (2 * width + 3) // 4 * 4
    rows = b"".join(RNG.integers(0, 1 << 15, width).astype("<u2").tobytes().ljust(stride, b"\0") for _ in range(height))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + info + rows


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def frames(count: int = 3, mode: str = "RGB") -> list[Image.Image]:
    return [Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).convert(mode) for _ in range(count)]


def animated(fmt: str) -> bytes:
    first, *rest = frames()
    return encoded(first, fmt, save_all=True, append_images=rest, **({"lossless": True} if fmt == "WEBP" else {}))


def colour_key_png(mode: str) -> tuple[bytes, object]:
    """An 8-bit L or RGB PNG with a tRNS colour key that some of its pixels have."""
    if mode == "L":
        grey = RNG.integers(0, 256, (7, 9), dtype=np.uint8)
        grey[2:4, 3:6] = 77
        return crafted_png(grey, 8, 0, png_chunk(b"tRNS", struct.pack(">H", 77))), 77
    rgb = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb[1:5, :2] = (10, 200, 30)
    return crafted_png(rgb.reshape(7, 27), 8, 2, png_chunk(b"tRNS", struct.pack(">3H", 10, 200, 30))), (10, 200, 30)


def old_pixel_checksum(image: Image.Image) -> str:
    """pixel_checksum as released before colour keys were coded: every file written so far holds this."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(np.ascontiguousarray(np.asarray(image)).tobytes())
    if image.mode == "P" and image.palette is not None:
        digest.update(image.palette.mode.encode() + bytes(image.palette.tobytes()))
        digest.update(repr(image.info.get("transparency")).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- more than 8 bits


@pytest.mark.parametrize("colour_type, pillow_mode", [(0, "I;16"), (2, "RGB"), (4, "RGBA"), (6, "RGBA")])
def test_sixteen_bit_pngs_are_read_with_all_their_bits(colour_type, pillow_mode):
    """Pillow opens 16-bit RGB, RGBA and grey+alpha as 8-bit RGB / RGBA; open_image reads every bit."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    samples = RNG.integers(0, 65536, (5, 6 * channels))
    data = crafted_png(samples, 16, colour_type)
    assert Image.open(io.BytesIO(data)).mode == pillow_mode  # what made the loss silent
    image = open_image(data)
    assert isinstance(image, DeepImage) and image.mode == {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}[colour_type]
    assert np.array_equal(image.samples.reshape(5, -1), samples)


@pytest.mark.parametrize("colour_type", [2, 4, 6])
def test_sixteen_bit_pngs_opened_by_pillow_are_refused_by_the_api(tmp_path, tiny_weights, colour_type):
    """compress_images refuses the 8 bits Pillow makes of them: opened and not yet loaded, or loaded from a path."""
    path = tmp_path / "deep.png"
    path.write_bytes(deep_png(colour_type))
    model = load_model(tiny_weights[3])
    with pytest.raises(ImageError, match="deep.png: 16-bit PNG .* open it with vaezip.images.open_image"):
        compress_images([("deep.png", Image.open(io.BytesIO(path.read_bytes())))], model, device="cpu")
    with pytest.raises(ImageError, match="16-bit PNG"):
        split_image(Image.open(path))
    loaded = Image.open(path)
    loaded.load()
    with pytest.raises(ImageError, match="16-bit PNG"):
        split_image(loaded)


def test_other_deep_files_are_refused():
    samples = RNG.integers(0, 65536, (3, 4, 3))
    cases = {
        "tiff-rgbx16": (tiff_rgb16(samples=4), "16-bit TIFF"),
        "tiff-float": (encoded(Image.new("F", (4, 3), 0.5), "TIFF"), "32-bit TIFF"),
        "ppm-10": (b"P6 4 3 1023\n" + (samples % 1024).astype(">u2").tobytes(), "10-bit PPM"),
        "pgm-10": (b"P5 4 3 1023\n" + (samples[..., 0] % 1024).astype(">u2").tobytes(), "10-bit PPM"),
        "sgi-16": (encoded(Image.new("RGB", (4, 3), (1, 2, 3)), "SGI", bpc=2), "16-bit SGI"),
    }
    opened = Image.open(io.BytesIO(tiff_rgb16()))
    assert opened.mode == "RGB" and opened.tag_v2[258] == (16, 16, 16)  # the crafted file is what it claims
    assert isinstance(open_image(tiff_rgb16()), DeepImage) == (importlib.util.find_spec("imagecodecs") is not None)
    for name, (data, message) in cases.items():
        with pytest.raises(ImageError, match=message):
            open_image(data)
        print(name, "refused")
    with pytest.raises(ImageError, match=r"convert it to a 16-bit PNG \(no loss\)"):
        open_image(cases["tiff-rgbx16"][0])
    with pytest.raises(ImageError, match="convert it to 16 or 8 bits first"):
        open_image(cases["tiff-float"][0])


def test_a_tiff_pillow_cannot_open_is_described_with_the_advice_that_fits(tmp_path):
    """A 16-bit grey + alpha TIFF, which Pillow cannot open, was `not a readable image (unknown or damaged
    format)`: now its layout and the advice to convert it, from a path, bytes and a file object; a TIFF whose
    directory is cut short, and any other file Pillow cannot open, keep the old words."""
    grey_alpha = tiff_rgb16(samples=2, photometric=1, extra=2)
    assert tiff_rgb16(samples=3)[:4] == grey_alpha[:4]
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(grey_alpha))
    (tmp_path / "la.tif").write_bytes(grey_alpha)
    for source in (grey_alpha, tmp_path / "la.tif", io.BytesIO(grey_alpha)):
        with pytest.raises(ImageError, match=r"^not a readable image \(a TIFF of 2 samples of 16 bits \(grey \+ "
                                             r"alpha\), which Pillow cannot read: convert it to a 16-bit PNG \(no "
                                             r"loss\), which vaezip codes whole\)$"):
            open_image(source)
    without_width = grey_alpha.replace(struct.pack("<HHI", 256, 3, 1), struct.pack("<HHI", 999, 3, 1), 1)
    for damaged in (grey_alpha[:60], grey_alpha[:-1], without_width, b"II*\0" + b"\xff" * 12,
                    b"not an image at all"):
        with pytest.raises(ImageError, match=r"^not a readable image \(unknown or damaged format\)$"):
            open_image(damaged)
    result = run_cli("compress", "--fast", tmp_path / "la.tif")
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1, result.stderr
    assert "la.tif: not a readable image (a TIFF of 2 samples" in result.stderr.decode(), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["la.tif"]


@pytest.mark.skipif(not features.check("jpg_2000"), reason="Pillow built without OpenJPEG")
def test_deep_jpeg_2000_is_refused():
    """Pillow names a 3-component JPEG 2000 RGB whatever its precision: the SIZ marker says 12 or 16 bits."""
    image = Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for options in ({"no_jp2": True}, {}):
        data = bytearray(encoded(image, "JPEG2000", **options))
        assert open_image(bytes(data)).mode == "RGB"
        siz = data.find(b"\xff\x4f\xff\x51") + 2
        for component in range(3):
            data[siz + 40 + 3 * component] = 15  # Ssiz: precision - 1
        assert Image.open(io.BytesIO(bytes(data))).mode == "RGB"
        with pytest.raises(ImageError, match="16-bit JPEG2000"):
            open_image(bytes(data))


def test_sniffing_avif_bit_depth():
    """A 10- or 12-bit AVIF decodes to 8-bit RGB in Pillow: the av1C box says so (high_bitdepth, twelve_bit)."""
    def avif(flags: int) -> bytes:
        ftyp = struct.pack(">I", 20) + b"ftypavif" + b"\0\0\0\0" + b"mif1"
        return ftyp + struct.pack(">I", 12) + b"av1C" + bytes([0x81, 0x00, flags, 0x00])

    assert sniff_bits_per_channel(avif(0x0C)) == 8
    assert sniff_bits_per_channel(avif(0x4C)) == 10
    assert sniff_bits_per_channel(avif(0x6C)) == 12
    assert sniff_bits_per_channel(b"") == 8


def test_eight_bits_and_fewer_are_accepted():
    """No false alarms: 8-bit images of every mode, 1/2/4-bit grey and palettes, packed 5-5-5 BMP, PNM max 15."""
    accepted = {
        "png-L": (crafted_png(RNG.integers(0, 256, (3, 4)), 8, 0), "L"),
        "png-LA": (crafted_png(RNG.integers(0, 256, (3, 8)), 8, 4), "LA"),
        "png-RGB": (crafted_png(RNG.integers(0, 256, (3, 12)), 8, 2), "RGB"),
        "png-RGBA": (crafted_png(RNG.integers(0, 256, (3, 16)), 8, 6), "RGBA"),
        "png-grey2": (crafted_png(RNG.integers(0, 256, (3, 1)), 2, 0), "L"),
        "png-grey4": (crafted_png(RNG.integers(0, 256, (3, 2)), 4, 0), "L"),
        "png-P4": (encoded(Image.new("P", (4, 3), 3), "PNG", bits=4), "P"),
        "bmp-555": (bmp_565(), "RGB"),
        "ppm-max15": (b"P6 2 2 15\n" + bytes(RNG.integers(0, 16, 12).astype(np.uint8)), "RGB"),
        "tiff-rgb8": (encoded(Image.new("RGB", (4, 3), (1, 2, 3)), "TIFF"), "RGB"),
        "sgi-8": (encoded(Image.new("RGB", (4, 3), (1, 2, 3)), "SGI"), "RGB"),
        "gif": (encoded(Image.new("P", (4, 3), 1), "GIF"), "P"),
        "jpeg": (encoded(Image.new("RGB", (4, 3), (1, 2, 3)), "JPEG"), "RGB"),
    }
    for name, (data, mode) in accepted.items():
        image = open_image(data)
        assert image.mode == mode, name
        split_image(image)


def test_bilevel_images_are_coded_as_the_grey_of_their_pixels(tmp_path):
    """Bilevel (mode 1) images were refused (`unsupported image mode 1`): a 1-bit PNG, TIFF, PBM and BMP, and one made
    in a program, are coded as the grey image of their pixels (0 and 255, as 2- and 4-bit grey PNGs are), a 1-bit
    PNG's transparent grey and background scaled with them; decoded in a fresh process to those very pixels, written
    back as a 1-bit PNG (format 23; 8-bit grey before it) with its key and background in one bit again. A bilevel
    image of several frames is still refused."""
    bits = RNG.integers(0, 2, (9, 14)).astype(bool)
    bilevel = Image.fromarray(bits)
    assert bilevel.mode == "1"
    grey = np.where(bits, 255, 0).astype(np.uint8)
    files = {"a.png": encoded(bilevel, "PNG"), "a.tif": encoded(bilevel, "TIFF"), "a.pbm": encoded(bilevel, "PPM"),
             "a.bmp": encoded(bilevel, "BMP"), "key.png": encoded(bilevel, "PNG", transparency=1)}
    for name, data in files.items():
        assert Image.open(io.BytesIO(data)).mode == "1", name  # what Pillow reads: the case that was refused
        opened = open_image(data)
        assert opened.mode == "L" and np.array_equal(np.asarray(opened), grey), name
        (tmp_path / name).write_bytes(data)
    # a bKGD of grey 1 among a 1-bit PNG's chunks comes back as 255, as the pixels do
    background = files["key.png"]
    at = background.index(b"IDAT") - 4
    background = background[:at] + png_chunk(b"bKGD", b"\0\1") + background[at:]
    (tmp_path / "bkgd.png").write_bytes(background)
    for name in [*files, "bkgd.png"]:
        out = tmp_path / f"{name}.out.png"
        archive = tmp_path / f"{name}.vz"
        assert run_cli("compress", "--fast", "-f", name, "-o", archive, cwd=tmp_path).returncode == 0
        decoded = run_cli("decompress", archive, "-o", out, cwd=tmp_path, env=OTHER_KERNELS)
        assert decoded.returncode == 0, decoded.stderr
        restored = Image.open(out)
        assert restored.mode == "1" and np.array_equal(np.asarray(restored.convert("L")), grey), name
        # Pillow reads a 1-bit PNG's key scaled up with its pixels, as 255: the PNG's own is 1
        assert restored.info.get("transparency") == (255 if name in ("key.png", "bkgd.png") else None), name
        assert (b"\0\0\0\2tRNS\0\1" in out.read_bytes()) == (name in ("key.png", "bkgd.png")), name
        assert (png_chunk(b"bKGD", b"\0\1") in out.read_bytes()) == (name == "bkgd.png"), name
    made = compress_images([("made", bilevel)], fast=True)
    assert made.format_version == 23 and made.images[0].grey_bits == 1
    ((_, back),) = decompress_images(made.data)
    assert back.mode == "L" and np.array_equal(np.asarray(back), grey) and png_bytes(back)[24] == 1
    lazy = Image.open(tmp_path / "a.png")
    lazy.close()
    with pytest.raises(ImageError, match=r"its pixels cannot be read \(ValueError: .*; a closed image\?\)"):
        compress_images([("closed", lazy)], fast=True)
    several = io.BytesIO()
    bilevel.save(several, "TIFF", save_all=True, append_images=[bilevel.copy()])
    with pytest.raises(ImageError, match="image has 2 frames"):
        compress_images([("two", Image.open(io.BytesIO(several.getvalue())))], fast=True)


def test_a_bilevel_tiffs_own_tags_are_read_from_it_before_it_is_coded_as_grey(tmp_path):
    """The grey image made of a bilevel TIFF has none of the TIFF's tags: its stated resolution was dropped, its
    Artist tag left out without a word, and `compress --rm` deleted it; through the API, Pillow's made-up 1 dpi of a
    TIFF that states none was kept as a pHYs. Now as for a grey TIFF: kept and named, in both paths."""
    bits = RNG.integers(0, 2, (12, 20)).astype(bool)
    for mode, pixels in (("1", bits), ("L", np.where(bits, 255, 0).astype(np.uint8))):
        Image.fromarray(pixels).save(tmp_path / f"{mode}.tif", dpi=(300, 300), tiffinfo={315: "Some Artist"})
        done = run_cli("compress", "--fast", "--rm", f"{mode}.tif", cwd=tmp_path)
        told = done.stderr.decode()
        assert done.returncode == 0 and "Artist" in told and (tmp_path / f"{mode}.tif").exists(), (mode, told)
        assert run_cli("decompress", f"{mode}.vz", cwd=tmp_path).returncode == 0
        restored = Image.open(tmp_path / f"{mode}.png")
        assert restored.mode == mode and round(restored.info["dpi"][0]) == 300, (mode, restored.info)
        unstated = io.BytesIO()
        Image.fromarray(pixels).save(unstated, "TIFF")  # no resolution tags: Pillow says 1 dpi
        opened = Image.open(io.BytesIO(unstated.getvalue()))
        assert opened.info.get("dpi") is not None
        (report,) = compress_images([("x", opened)], fast=True).images
        assert report.metadata == (), (mode, report.metadata)  # no pHYs of the made-up 1 dpi


# ---------------------------------------------------------------------------------------------- more than one frame


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF", "WEBP"])
def test_multi_frame_images_are_refused(fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    data = animated(fmt)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    with pytest.raises(ImageError, match="^image has 3 frames; vaezip codes single-frame images$"):
        open_image(data)
    with pytest.raises(ImageError, match="has 3 frames"):
        split_image(Image.open(io.BytesIO(data)))
    first, *_ = frames(1)
    assert open_image(encoded(first, fmt)).size == (5, 6)  # one frame: fine


def test_an_icon_with_several_sizes_is_refused():
    icon = frames(1)[0].resize((16, 16))
    with pytest.raises(ImageError, match="icon holds 2 sizes"):
        open_image(encoded(icon, "ICO", sizes=[(16, 16), (8, 8)]))
    assert open_image(encoded(icon, "ICO", sizes=[(16, 16)])).size == (16, 16)


def test_cli_refuses_deep_and_animated_images_and_writes_nothing(tmp_path, tiny_weights):
    """The real console path, --rm included: every input kept, no .vz, one line per file naming the reason."""
    files = {"tiff16.tif": tiff_rgb16(samples=4), "anim-gif.gif": animated("GIF"), "anim-png.png": animated("PNG"),
             "pages.tif": animated("TIFF")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_cli("compress", *files, "-m", tiny_weights[3], "--rm", "-q", cwd=tmp_path)
    assert result.returncode == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(files)  # nothing written, nothing deleted
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    for name in files:
        line = next(line for line in lines if f" {name}: " in line)
        reason = "has 3 frames" if name.startswith(("anim", "pages")) else "16-bit"
        assert reason in line, line
    (tmp_path / "rgb16.png").write_bytes(deep_png(2))
    result = run_cli("compress", "rgb16.png", "anim-gif.gif", "-o", "all.vz", "-m", tiny_weights[3], "--rm", "-q",
                     cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / "all.vz").exists()
    assert (tmp_path / "rgb16.png").exists() and (tmp_path / "anim-gif.gif").exists()


# ---------------------------------------------------------------------------------------------- tRNS colour keys


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_colour_key_round_trips_in_a_fresh_process(tmp_path, tiny_weights, mode):
    data, key = colour_key_png(mode)
    (tmp_path / "key.png").write_bytes(data)
    original = Image.open(tmp_path / "key.png")
    assert original.mode == mode and original.info["transparency"] == key
    channels = 1 if mode == "L" else 3
    assert run_cli("compress", "key.png", "-m", tiny_weights[channels], "-q", cwd=tmp_path).returncode == 0
    result = run_cli("decompress", "key.vz", "-m", tiny_weights[channels], "-d", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    written = (tmp_path / "out" / "key.png").read_bytes()
    assert b"tRNS" in written
    decoded = Image.open(io.BytesIO(written))
    assert decoded.mode == mode and decoded.info.get("transparency") == key
    assert np.array_equal(np.asarray(decoded), np.asarray(original))
    # Displayed the same: the pixels that have the key are transparent, the others opaque.
    assert np.array_equal(np.asarray(decoded.convert("RGBA")), np.asarray(original.convert("RGBA")))
    assert (np.asarray(decoded.convert("RGBA"))[..., 3] == 0).any()


def test_a_low_depth_grey_key_is_scaled_with_its_pixels(tmp_path, tiny_weights):
    """2-bit grey: Pillow scales the samples to 0..255 but not the key; open_image scales the key as well."""
    samples = np.array([[0b00011011], [0b01010101]], dtype=np.uint8)  # greys 0 1 2 3 / 1 1 1 1
    image = open_image(crafted_png(samples, 2, 0, png_chunk(b"tRNS", struct.pack(">H", 1))))
    assert image.mode == "L" and image.info["transparency"] == 85
    assert np.asarray(image)[0].tolist() == [0, 85, 170, 255]
    model = load_model(tiny_weights[1])
    (_, decoded), = decompress_images(compress_images([("g.png", image)], model, device="cpu").data, model,
                                      device="cpu")
    assert decoded.info["transparency"] == 85
    assert np.asarray(decoded.convert("LA"))[..., 1].tolist() == [[255, 0, 255, 255], [0, 0, 0, 0]]


def test_a_low_depth_grey_key_is_scaled_with_its_pixels_where_pillow_opened_the_png(tmp_path):
    """The same 2-bit grey opened by Pillow, not open_image, keeps its key as stored: compress scales it too, whether
    Pillow has loaded the image or not (the file's header says the depth)."""
    samples = np.array([[0b00011011], [0b01010101]], dtype=np.uint8)
    data = crafted_png(samples, 2, 0, png_chunk(b"tRNS", struct.pack(">H", 1)))
    (tmp_path / "g.png").write_bytes(data)
    for source, load in ((io.BytesIO(data), False), (io.BytesIO(data), True), (tmp_path / "g.png", True)):
        image = Image.open(source)
        if load:
            image.load()
        assert image.info["transparency"] == 1
        (_, decoded), = decompress_images(compress_images([("g.png", image)], fast=True).data)
        assert decoded.info["transparency"] == 85
        assert np.asarray(decoded.convert("LA"))[..., 1].tolist() == [[255, 0, 255, 255], [0, 0, 0, 0]]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_decode_that_loses_or_changes_the_key_fails_the_checksum(tiny_weights, mode):
    image = open_image(colour_key_png(mode)[0])
    model = load_model(tiny_weights[1 if mode == "L" else 3])
    data = compress_images([("key.png", image)], model, tile=8, device="cpu").data
    header, words = container.read(data)
    entry = header.images[0]
    stored = entry.info["transparency"]
    assert stored == (77 if mode == "L" else [10, 200, 30])

    def forged(info: dict) -> bytes:
        return container.write(dataclasses.replace(header, images=(dataclasses.replace(entry, info=info),)), words)

    without = {key: value for key, value in entry.info.items() if key != "transparency"}
    other = 78 if mode == "L" else [10, 200, 31]
    for info in (without, {**entry.info, "transparency": other}):
        with pytest.raises(IntegrityError, match="do not match the checksum"):
            decompress_images(forged(info), model, device="cpu")
    for bad in ("77", -1, 65536, True, [1, 2], [1, 2, "3"], 1.5):
        with pytest.raises(IntegrityError, match="cannot rebuild the image"):
            decompress_images(forged({**entry.info, "transparency": bad}), model, device="cpu")
    (_, decoded), = decompress_images(data, model, device="cpu")
    assert decoded.info["transparency"] == (77 if mode == "L" else (10, 200, 30))


def test_a_colour_key_in_a_mode_that_has_none_is_refused_by_the_decoder(tiny_weights):
    image = Image.fromarray(RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8), "RGBA")
    model = load_model(tiny_weights[3])
    data = compress_images([("a.png", image)], model, tile=8, device="cpu").data
    header, words = container.read(data)
    entry = dataclasses.replace(header.images[0], info={**header.images[0].info, "transparency": [1, 2, 3]})
    with pytest.raises(IntegrityError, match="cannot rebuild the image"):
        decompress_images(container.write(dataclasses.replace(header, images=(entry,)), words), model, device="cpu")


def test_a_malformed_key_is_refused_before_coding():
    image = Image.new("RGB", (3, 2), (1, 2, 3))
    image.info["transparency"] = 5  # an RGB key must be (r, g, b): Pillow could not even save this
    with pytest.raises(ImageError, match="not a colour key for a RGB image"):
        split_image(image)


def test_palette_transparency_of_any_type_the_api_may_be_handed_round_trips_or_is_refused(monkeypatch):
    """Pillow reads a palette image's transparency as an int or bytes; an API caller's image may hold a numpy
    integer or a bytearray (kept, as the int or bytes a decode gives back), or an (r, g, b) left by quantize() of an
    RGB image with a colour key (refused). Such a file was written and then refused by every decoder."""
    def palette_image(transparency):
        image = Image.fromarray(RNG.integers(0, 16, (9, 7), dtype=np.uint8), "P")
        image.putpalette(list(range(48)))
        image.info["transparency"] = transparency
        return image

    for given, restored in [(np.uint8(3), 3), (bytearray(b"\x00\x10"), b"\x00\x10")]:
        image = palette_image(given)
        (_, decoded), = decompress_images(compress_images([("p.png", image)], None, fast=True).data)
        assert decoded.info["transparency"] == restored and pixel_checksum(decoded) == pixel_checksum(image)
    keyed = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(keyed, "PNG", transparency=(1, 2, 3))
    quantized = Image.open(keyed).quantize(16)
    assert quantized.info["transparency"] == (1, 2, 3)
    for image in (quantized, palette_image([0, 255, 128])):
        with pytest.raises(ImageError, match="neither a palette index nor at most 256 alpha bytes"):
            compress_images([("q.png", image)], None, fast=True)
    # Whatever else would not come back is refused before coding, not by the decoder.
    import vaezip.archive

    monkeypatch.setattr(vaezip.archive, "join_planes", lambda planes: palette_image(None))
    with pytest.raises(ImageError, match="p.png: its palette or transparency would not come back exactly"):
        compress_images([("p.png", palette_image(3))], None, fast=True)


def test_the_api_refuses_arrays_and_closed_images_it_cannot_code_in_one_line(tmp_path):
    from vaezip.api import compress, decompress

    grey = RNG.integers(0, 256, (9, 7, 1), dtype=np.uint8)  # (H, W, 1): grey
    decoded = decompress(compress(grey, fast=True))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), grey[..., 0])
    for array, message in [(np.zeros((9, 7, 3), np.int64), "an array of int64: vaezip codes uint8 samples"),
                           (np.zeros((9, 7), np.float32), "an array of float32"),
                           (np.zeros((9, 7, 5), np.uint8), r"an array of shape \(9, 7, 5\): vaezip codes"),
                           (np.zeros((2, 9, 7, 3), np.uint8), r"an array of shape \(2, 9, 7, 3\)")]:
        with pytest.raises(ImageError, match=message):
            compress(array, fast=True)
    Image.fromarray(grey[..., 0]).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as lazy:
        pass  # closed before its pixels were ever read
    opened = Image.open(tmp_path / "g.png")
    opened.close()
    for closed in (lazy, opened):
        with pytest.raises(ImageError, match=r"image.png: its pixels cannot be read \(.*; a closed image\?\)"):
            compress(closed, fast=True)


def test_checksums_without_a_key_are_unchanged():
    """Every .vz already written (and the golden files) must still verify: only a colour key adds to the hash."""
    images = [
        Image.fromarray(RNG.integers(0, 256, (4, 5), dtype=np.uint8), "L"),
        Image.fromarray(RNG.integers(0, 256, (4, 5, 2), dtype=np.uint8), "LA"),
        Image.fromarray(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8), "RGB"),
        Image.fromarray(RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8), "RGB").quantize(colors=7),
    ]
    images[-1].info["transparency"] = 3
    stale = Image.fromarray(RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8), "RGBA")
    stale.info["transparency"] = (1, 2, 3)  # not a key of an RGBA image: never hashed
    for image in [*images, stale, Image.open(GOLDEN / "golden.png")]:
        assert pixel_checksum(image) == old_pixel_checksum(image)
    for name in ("golden.vz", "golden-v1.vz", "golden-v2.vz", "golden-v3.vz"):
        header, _ = container.read((GOLDEN / name).read_bytes())
        assert header.pixels_sha256 == combined_checksum([pixel_checksum(Image.open(GOLDEN / "golden.png"))]), name
    keyed = images[2].copy()
    keyed.info["transparency"] = (1, 2, 3)
    assert pixel_checksum(keyed) != pixel_checksum(images[2])


def test_a_32_bit_bmp_keeps_its_fourth_bytes_as_alpha(tmp_path):
    """Pillow writes an RGBA image as a 32-bit BMP and reads it back as RGB (BGRX), dropping the alpha: `--rm`
    deleted the file (a review). The fourth bytes are the image's alpha, unless all 0 (padding) or all 255."""
    rgba = np.random.default_rng(7).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.bmp")
    with Image.open(tmp_path / "a.bmp") as pillow:
        assert pillow.mode == "RGB"  # Pillow's own reading: what was lost
    opened = open_image(tmp_path / "a.bmp")
    assert opened.mode == "RGBA" and np.array_equal(np.asarray(opened), rgba)
    (_, back), = decompress_images(compress_images([("a.bmp", opened)], fast=True).data)
    assert np.array_equal(np.asarray(back), rgba)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.dib", format="DIB")  # a headerless one too
    assert np.array_equal(np.asarray(open_image(tmp_path / "a.dib")), rgba)
    # opened by Pillow and given to the API: refused, as a 16-bit PNG Pillow opened is
    with pytest.raises(ImageError, match="32-bit BMP whose fourth bytes hold an alpha, opened as Pillow opens it"):
        compress_images([("a.bmp", Image.open(tmp_path / "a.bmp"))], fast=True)
    loaded = Image.open(tmp_path / "a.bmp")
    loaded.load()  # Pillow no longer says how it read the file: it is read again (it compressed as RGB, silently)
    with pytest.raises(ImageError, match="32-bit BMP whose fourth bytes hold an alpha"):
        compress_images([("a.bmp", loaded)], fast=True)
    for fourth in (0, 255):
        rgba[..., 3] = fourth
        Image.fromarray(rgba, "RGBA").save(tmp_path / "b.bmp")
        assert open_image(tmp_path / "b.bmp").mode == "RGB"
        assert compress_images([("b.bmp", Image.open(tmp_path / "b.bmp"))], fast=True).images[0].mode == "RGB"
        loaded = Image.open(tmp_path / "b.bmp")
        loaded.load()
        assert compress_images([("b.bmp", loaded)], fast=True).images[0].mode == "RGB"
    with Image.open(tmp_path / "b.bmp") as closed:  # closed: an ImageError, not an AttributeError (a review)
        pass
    with pytest.raises(ImageError):
        compress_images([("b.bmp", closed)], fast=True)


def _premultiplied_tiff(rgba: np.ndarray, mode: str = "RGBA") -> tuple[bytes, bytes]:
    """An RGBA (or LA) TIFF as Pillow saves it (straight alpha), and the same with its ExtraSamples tag saying
    premultiplied (1 where Pillow writes 2)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    directory = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, directory)[0]):
        at = directory + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] == 338:
            struct.pack_into("<H", data, at + 8, 1)
    return buffer.getvalue(), bytes(data)


def test_a_tiff_of_premultiplied_alpha_is_refused_not_converted(tmp_path):
    """Pillow divides a premultiplied (ExtraSamples 1) TIFF's colours by its alpha as it reads them: values lost,
    and `--rm` deleted the file (a review). Refused, unless every alpha is 255 (the division then changes
    nothing)."""
    rgba = np.random.default_rng(8).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    straight, premultiplied = _premultiplied_tiff(rgba)
    (tmp_path / "pm.tif").write_bytes(premultiplied)
    with pytest.raises(ImageError, match=r"TIFF of premultiplied alpha \(RGBa\)"):
        open_image(tmp_path / "pm.tif")
    done = run_cli("compress", tmp_path / "pm.tif", "--fast", "--rm")
    assert done.returncode == 1 and (tmp_path / "pm.tif").exists() and not (tmp_path / "pm.vz").exists()
    assert open_image(straight).mode == "RGBA"  # straight alpha, as saved: taken
    rgba[..., 3] = 255
    assert np.array_equal(np.asarray(open_image(_premultiplied_tiff(rgba)[1])), rgba)
    # grey + alpha: Pillow keeps such a TIFF as mode La, which compress then refused as a mode it does not code
    la = rgba[..., 2:]
    la_tiff = _premultiplied_tiff(la, "LA")[1]
    assert Image.open(io.BytesIO(la_tiff)).mode == "La"
    opened = open_image(la_tiff)
    assert opened.mode == "LA" and np.array_equal(np.asarray(opened), la)
    (_, back), = decompress_images(compress_images([("la.tif", opened)], fast=True).data)
    assert np.array_equal(np.asarray(back), la)
    la[..., 1] = 254
    with pytest.raises(ImageError, match=r"TIFF of premultiplied alpha \(La\)"):
        open_image(_premultiplied_tiff(la, "LA")[1])
    # a closed one given to the API: one clear error (Pillow's bare AssertionError escaped, a review)
    (tmp_path / "pm255.tif").write_bytes(_premultiplied_tiff(rgba)[1])
    with Image.open(tmp_path / "pm255.tif") as closed:
        pass
    with pytest.raises(ImageError, match="a closed image"):
        compress_images([("pm255.tif", closed)], fast=True)
