"""16-bit images (format 18): every bit of a 16-bit PNG comes back, its samples coded as a high and a low 8-bit
image after the fewest bits that hold them (codec/depth.py), read and written by vaezip/png16.py."""

from __future__ import annotations

import dataclasses
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import container, depth
from codec.errors import CodingError, HeaderError
from codec.metadata import AFTER_DATA, AFTER_HEADER, Chunk
from conftest import mutate, pngs_from_a_fresh_process, run_cli, smooth_rgb
from vaezip import png16
from vaezip.api import compress, compress_images, decompress, decompress_images, file_info, png_bytes
from vaezip.errors import ImageError
from vaezip.images import DeepImage, open_image, pixel_checksum
from vaezip.metadata import DROPPED, METADATA

GOLDEN = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_golden import deep_files  # noqa: E402

RNG = np.random.default_rng(18)
MODES = ("L", "LA", "RGB", "RGBA")
FAST = {"fast": True, "tile": 16}


def deep(mode: str, height: int = 20, width: int = 28, bits: int = 16, seed: int = 0) -> np.ndarray:
    """(H, W) or (H, W, C) uint16: smooth colour in the top 8 bits, noise below, `bits` significant bits shifted up."""
    rng = np.random.default_rng(seed)
    channels = png16.CHANNELS[mode]
    base = np.concatenate([smooth_rgb(height, width, seed)] * 2, axis=-1)[..., :channels].astype(np.int64)
    values = base << (bits - 8) | rng.integers(0, 1 << (bits - 8), base.shape)
    samples = (values << (16 - bits)).astype(np.uint16)
    return samples[..., 0] if mode == "L" else samples


# ---------------------------------------------------------------------------------------------- depths


def test_each_depth_gives_back_what_it_is_chosen_for_and_the_fewest_bits_are_chosen():
    for name in depth.DEPTHS[2:]:
        form, n = name.split(":")
        if form == "levels":
            continue
        x = np.arange(1 << int(n)).reshape(-1, 1, 1).repeat(3, axis=2)  # every value: no levels of fewer bits
        v = depth._forward(name, x).astype(np.uint16)
        chosen, levels = depth.choose(v)
        assert depth.bits(chosen) <= int(n) and not levels, (name, chosen)
        high, low = depth.split(v, chosen)
        assert high.dtype == np.uint8 and (low is None) == (chosen.endswith(":8"))
        assert np.array_equal(depth.join(high, low, chosen), v), name
    assert depth.choose(np.arange(256, dtype=np.uint16)[None] * 257)[0] == "scale:8"  # 8-bit pictures in 16 bits
    assert depth.choose(np.arange(65536, dtype=np.uint16).reshape(256, 256))[0] == "shift:16"
    assert depth.choose(np.arange(4096, dtype=np.uint16).reshape(64, 64) << 4)[0] == "shift:12"


def test_levels_hold_any_value_set_of_fewer_bits_per_channel():
    """A 12-bit picture scaled by 65535 / 4080 (no formula's), and channels of their own gains (a white balance):
    each channel's values ranked, in 12 bits."""
    x = np.stack([RNG.permutation(np.arange(128 * 128) % 4081).reshape(128, 128) for _ in range(3)], axis=-1)
    v = ((x * np.array([65535, 50000, 61000]) + 2040) // 4080).astype(np.uint16)
    chosen, levels = depth.choose(v)
    assert chosen == "levels:12" and len(levels) == 3
    assert [len(values) for values in levels] == [len(np.unique(v[..., c])) for c in range(3)]
    high, low = depth.split(v, chosen, levels)
    assert int(low.max()) < 16 and np.array_equal(depth.join(high, low, chosen, levels), v)
    assert depth.check_levels(chosen, levels, 3, 128 * 128) == ""
    assert "4 level tables" in depth.check_levels(chosen, levels + levels[:1], 3, 128 * 128)
    assert "not strictly increasing" in depth.check_levels(chosen, (levels[0][::-1],) + levels[1:], 3, 128 * 128)
    assert "4081 levels in a levels:12 image of 4000 pixels" in depth.check_levels(chosen, levels, 3, 4000)
    with pytest.raises(CodingError, match="past its"):
        depth.join(np.full((1, 1, 3), 255, np.uint8), np.full((1, 1, 3), 15, np.uint8), chosen,
                   tuple(values[:10] for values in levels))
    with pytest.raises(ValueError, match="levels do not hold"):
        depth.split(v + 1, chosen, levels)


def test_a_depth_refuses_samples_it_does_not_hold_and_parts_that_do_not_fit():
    with pytest.raises(ValueError, match="does not hold"):
        depth.split(np.array([1, 256], np.uint16), "shift:8")
    high = np.zeros((2, 2), np.uint8)
    with pytest.raises(CodingError, match="more than 4 bits"):
        depth.join(high, np.full((2, 2), 16, np.uint8), "shift:12")
    with pytest.raises(CodingError, match="do not fit"):
        depth.join(high, None, "shift:12")
    with pytest.raises(CodingError, match="do not fit"):
        depth.join(high, high, "scale:8")
    with pytest.raises(CodingError, match="unknown depth"):
        depth.bits("shift:17")


# ---------------------------------------------------------------------------------------------- 16-bit PNGs


@pytest.mark.parametrize("mode", MODES)
def test_png16_round_trips_and_other_readers_agree(mode):
    samples = deep(mode, 13, 17)
    data = png16.write(samples, mode)
    back, found = png16.read(data, 10**6)
    assert found == mode and np.array_equal(back, samples)
    if mode == "L":  # Pillow reads 16-bit grey with all its bits
        with Image.open(io.BytesIO(data)) as pillow:
            assert np.array_equal(np.asarray(pillow).astype(np.uint16), samples)
    codecs = pytest.importorskip("imagecodecs")
    assert np.array_equal(codecs.png_decode(data), samples)
    assert np.array_equal(png16.read(codecs.png_encode(samples), 10**6)[0], samples)


def interlaced(samples: np.ndarray, colour_type: int) -> bytes:
    """An Adam7 PNG of `samples` written by hand, each pass's rows with filters 0 to 4 in turn."""
    height, width = samples.shape[:2]
    cells = samples.reshape(height, width, -1)
    raw = b""
    for top, left, down, across in png16._PASSES:
        part = cells[top::down, left::across]
        if part.size:
            rows = part.reshape(part.shape[0], -1).astype(">u2").view(np.uint8)
            previous = np.zeros(rows.shape[1], np.uint8)
            for r, row in enumerate(rows):
                line = png16._filtered(row[None], previous, 2 * cells.shape[2])[0]
                raw += bytes(line)  # the filter png16's writer chooses; the pass structure is what is tested
                previous = row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 1)
    return png16.PNG_SIGNATURE + png16.png_chunk(b"IHDR", ihdr) + png16.png_chunk(
        b"IDAT", zlib.compress(raw)) + png16.png_chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 10), (17, 23)])
def test_interlaced_png16_is_read(size):
    samples = deep("RGB", *size)
    back, mode = png16.read(interlaced(samples, 2), 10**6)
    assert mode == "RGB" and np.array_equal(back, samples)
    with Image.open(io.BytesIO(interlaced(samples[..., 0], 0))) as pillow:  # Pillow agrees on a grey one
        assert np.array_equal(np.asarray(pillow).astype(np.uint16), samples[..., 0])


def test_damaged_or_unfit_png16_is_refused_in_one_line():
    data = png16.write(deep("RGB", 6, 7), "RGB")
    at = data.index(b"IDAT")
    cases = {
        "crc": (data[: at + 6] + bytes([data[at + 6] ^ 1]) + data[at + 7 :], "IDAT chunk damaged"),
        "short": (data[:-20], "not a readable image"),
        "trns": (data[:33] + png16.png_chunk(b"tRNS", bytes(6)) + data[33:], "transparent colour"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(ImageError, match=message):
            open_image(bad)
    with pytest.raises(png16.PngError, match="row filter"):
        lines = np.zeros((2, 1 + 6), np.uint8)
        lines[1, 0] = 7
        png16._unfiltered(lines.tobytes(), 2, 1, 6)


def test_grey_sixteen_bit_tiff_and_pgm_are_read_with_all_their_bits():
    """Pillow reads these as they are stored (I;16, I;16B): open_image keeps them, in one strip or several, raw or
    compressed; a PGM of another maxval (which Pillow scales) stays refused."""
    samples = deep("L", 40, 30)
    for options in ({}, {"compression": "tiff_lzw"}, {"tiffinfo": {278: 4}}):
        buffer = io.BytesIO()
        Image.fromarray(samples).save(buffer, format="TIFF", **options)
        image = open_image(buffer.getvalue())
        assert isinstance(image, DeepImage) and image.format == "TIFF" and np.array_equal(image.samples, samples)
    image = open_image(b"P5 30 40 65535\n" + samples.astype(">u2").tobytes())
    assert isinstance(image, DeepImage) and image.mode == "L" and np.array_equal(image.samples, samples)
    assert np.array_equal(decompress(compress(image, **FAST)).samples, samples)
    with pytest.raises(ImageError, match="10-bit PPM"):
        open_image(b"P5 30 40 1023\n" + (samples >> 6).astype(">u2").tobytes())


# ---------------------------------------------------------------------------------------------- coding


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_sixteen_bit_images_round_trip_through_the_api(mode, bits):
    samples = deep(mode, bits=bits, seed=bits)
    data = compress(samples, **FAST)
    image = decompress(data)
    assert isinstance(image, DeepImage) and image.mode == mode and np.array_equal(image.samples, samples)
    info = file_info(data)
    chosen = depth.choose(samples)[0]
    assert depth.bits(chosen) <= bits
    # 22 where a section of these small images codes for less in the small-image profile, refined
    assert info.version in (18, 22) and info.images[0].depth == chosen and "16-bit images" in info.inference
    assert (info.images[0].low is None) == (depth.bits(chosen) == 8)


def test_an_archive_mixes_8_and_16_bit_images_and_each_comes_back_in_its_place():
    images = [("a.png", DeepImage(deep("RGB", seed=1), "RGB")), ("b.png", Image.fromarray(smooth_rgb(12, 9, 2))),
              ("c.png", DeepImage(deep("RGB", bits=8, seed=3), "RGB")),
              ("d.png", DeepImage(deep("RGBA", bits=10, seed=4), "RGBA"))]
    for options in (FAST, {}):
        result = compress_images(images, **options)
        assert result.format_version in (18, 22)
        assert [report.depth for report in result.images] == [
            depth.choose(image.samples)[0] if isinstance(image, DeepImage) else "" for _, image in images]
        assert result.images[2].depth == "shift:8"
        assert result.images[0].low_coding and not result.images[2].low_coding
        assert result.subpixels == 3 * 20 * 28 + 3 * 12 * 9 + 3 * 20 * 28 + 4 * 20 * 28
        decoded = decompress_images(result.data)
        assert [name for name, _ in decoded] == ["a.png", "b.png", "c.png", "d.png"]
        for (_, original), (_, back) in zip(images, decoded):
            assert pixel_checksum(back) == pixel_checksum(original)


def test_the_default_compress_makes_a_low_parts_best_webp_once(monkeypatch):
    """A 16-bit image whose low byte repeats a pattern (which PNG and WebP find, the predictor not): the default
    compress codes that part classically beside the top byte's predictor stream, making each classical coding of
    it once (the screened codings' are reused, not made again for that file; codec/classic.py reusing) and no
    best WebP of the top byte, which no classical coding comes near."""
    from codec import classic

    made = []
    real = classic._made_webp
    monkeypatch.setattr(classic, "_made_webp", lambda samples, quality: made.append(
        (quality, samples.tobytes())) or real(samples, quality))
    photograph = Image.open(Path(__file__).resolve().parents[1] / "samples" / "hopper.png").convert("RGB")
    top = np.asarray(photograph.crop((64, 64, 148, 124))).astype(np.uint16)  # 60 x 84
    pattern = np.random.default_rng(5).integers(0, 256, (5, 7, 3))
    samples = (top << 8 | np.tile(pattern, (12, 12, 1))).astype(np.uint16)
    result = compress_images([("a.png", DeepImage(samples, "RGB"))])
    assert result.images[0].low_coding in ("png", "webp") and result.images[0].coding == "model", result.images
    assert len(made) == len(set(made)) and made.count(made[0]) == 1
    high, low = depth.split(samples, depth.choose(samples)[0])
    best = [one for quality, one in made if quality == classic.WEBP_QUALITY]
    assert best == [np.ascontiguousarray(low).tobytes()], len(best)  # the low part's only
    assert np.array_equal(decompress(result.data).samples, samples)


def test_a_sixteen_bit_image_needs_format_18_and_a_file_without_one_is_written_as_before():
    samples = deep("L", 8, 8)
    for version in (17, 16, 3):
        with pytest.raises(ImageError, match="a 16-bit image needs format 18"):
            compress(samples, format_version=version, **FAST)
    assert container.read_versioned(compress(samples, format_version=18, **FAST))[0] == 18
    eight = compress(Image.fromarray(smooth_rgb(8, 8, 0)), **FAST)
    assert container.read_versioned(eight)[0] < 17
    assert compress(Image.fromarray(smooth_rgb(8, 8, 0)), format_version=18, **FAST) == eight


def test_metadata_of_a_sixteen_bit_image_come_back_in_its_png(tmp_path):
    samples = deep("RGB", 10, 12, bits=12)
    profile = b"p\0\0" + zlib.compress(bytes(16) + b"RGB " + bytes(64))
    chunks = (Chunk(AFTER_HEADER, b"iCCP", profile), Chunk(AFTER_HEADER, b"sBIT", b"\x0c\x0c\x0c"))
    png = png16.write(samples, "RGB", chunks)
    opened = open_image(png)
    assert opened.info[METADATA] == chunks
    back = decompress(compress(opened, **FAST))
    assert back.info[METADATA] == chunks and png_bytes(back) == png


def test_the_api_refuses_what_no_16_bit_image_holds():
    with pytest.raises(ImageError, match="no 16-bit RGB image"):
        DeepImage(np.zeros((2, 2), np.uint16), "RGB")
    with pytest.raises(ImageError, match="no 16-bit L image"):
        DeepImage(np.zeros((2, 2), np.uint8), "L")
    keyed = DeepImage(np.zeros((2, 2), np.uint16), "L", {"transparency": 5})
    with pytest.raises(ImageError, match="x.png: a 16-bit image with a transparent colour"):
        compress_images([("x.png", keyed)], **FAST)
    with pytest.raises(ImageError, match="int32"):
        compress(np.zeros((2, 2), np.int32))


def test_the_api_refuses_a_16_bit_file_that_pillow_loaded_or_takes_its_samples_in_either_byte_order(tmp_path):
    """Pillow keeps 8 bits of a 16-bit colour PNG or a 16-bit PPM; once it has loaded one its raw mode is gone, but
    the file it keeps open (a PNG's: a format of several frames) or the path it was opened by still says 16 bits:
    refused, as before loading. A big-endian uint16 array (a 16-bit file's samples as stored) is coded as its
    values."""
    samples = np.random.default_rng(3).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    png = png16.write(samples, "RGB")
    (tmp_path / "deep.png").write_bytes(png)
    (tmp_path / "deep.ppm").write_bytes(b"P6\n# made here\n5 6\n65535\n" + samples.astype(">u2").tobytes())
    for source in (io.BytesIO(png), tmp_path / "deep.png", tmp_path / "deep.ppm"):
        image = Image.open(source)
        image.load()
        assert image.mode == "RGB"
        with pytest.raises(ImageError, match="16-bit (PNG|PPM).*open_image"):
            compress_images([("deep", image)], **FAST)
    big_endian = samples.astype(">u2")
    assert np.array_equal(decompress(compress(big_endian, **FAST)).samples, samples)


def test_plain_text_16_bit_pnms_are_read_as_their_numbers():
    """A plain PPM or PGM (P3, P2) of maxval 65535: its samples are decimal numbers (they were read as the binary
    form's bytes, and came back as other values, verified); damaged ones are refused in one line."""
    samples = np.array([[[1, 2, 3], [4000, 65535, 0]], [[7, 8, 9], [10, 11, 12]]], np.uint16)
    text = b"P3\n# a comment\n2 2\n65535\n" + b" ".join(str(v).encode() for v in samples.ravel()) + b"\n"
    grey = b"P2 3 1 65535\n0 300\n65535\n"
    for data, mode, expected in ((text, "RGB", samples), (grey, "L", np.array([[0, 300, 65535]], np.uint16))):
        image = open_image(data)
        assert isinstance(image, DeepImage) and image.mode == mode and np.array_equal(image.samples, expected)
        assert np.array_equal(decompress(compress(image, **FAST)).samples, expected)
    for damaged in (grey.replace(b"300", b"3x0"), grey[:-8], grey.replace(b"300", b"70000")):
        with pytest.raises(ImageError, match="not a readable image"):
            open_image(damaged)


# ---------------------------------------------------------------------------------------------- the header


def entries_of(data: bytes):
    version, header, words = container.read_versioned(data)
    return header, words


def test_the_reader_refuses_parts_that_do_not_make_an_image():
    images = [("a.png", DeepImage(deep("RGB"), "RGB")), ("b.png", DeepImage(deep("L"), "L"))]  # levels:10
    header, words = entries_of(compress_images(images, **FAST).data)
    a, a_low, b, b_low = header.images
    forged = {
        "no low part": [a, b, b_low],
        "low part first": [a_low, a, b, b_low],
        "low part of another size": [a, dataclasses.replace(b_low, name=a.name), b, b_low],
        "low part with metadata": [a, dataclasses.replace(a_low, metadata=(Chunk(0, b"gAMA", bytes(4)),)), b, b_low],
        "a palette image of 16 bits": [dataclasses.replace(b, depth="scale:8", mode="P", palette=bytes(3))],
    }
    for name, images_ in forged.items():
        payload = words if any(image.coding == "model" for image in images_) else words[:0]
        with pytest.raises(HeaderError):
            container.write(dataclasses.replace(header, images=tuple(images_)), payload, 18)
        print(name, "refused")
    raw = container.write(header, words, 18)
    with pytest.raises(HeaderError, match="16-bit image"):
        container.write(header, words, 17)
    # a depth number past the table, in a file whose CRC is right: a lone scale:8 image's is its header's last byte
    raw = compress((deep("L", bits=8) >> 8) * 257, **FAST)
    assert entries_of(raw)[0].images[0].depth == "scale:8"
    length, start = raw[10], 11
    assert length < 128
    text = bytearray(container.inflate_header(raw[start:start + length]))
    assert text[-1] == depth.DEPTHS.index(entries_of(raw)[0].images[0].depth)
    text[-1] = len(depth.DEPTHS)
    packed = container.deflate_header(bytes(text))
    body = raw[:10] + bytes([len(packed)]) + packed + raw[start + length:-4]
    with pytest.raises(HeaderError, match="depth number"):
        container.read(body + struct.pack("<I", zlib.crc32(body)))


# ---------------------------------------------------------------------------------------------- the command


def test_cli_compresses_and_decompresses_a_16_bit_png_exactly(tmp_path):
    samples = deep("RGBA", 24, 30, bits=12)
    chunks = (Chunk(AFTER_HEADER, b"sBIT", b"\x0c" * 4),)
    png = png16.write(samples, "RGBA", chunks)
    (tmp_path / "deep.png").write_bytes(png)
    result = run_cli("compress", "-v", "--fast", "deep.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    chosen = depth.choose(samples)[0]
    below = depth.low_bits(chosen)
    assert f"deep.png: 30x24 RGBA 16-bit ({chosen}; its low {below} bits" in (result.stdout + result.stderr).decode()
    info = run_cli("info", "deep.vz", cwd=tmp_path).stdout.decode()
    assert ("format 18" in info or "format 22" in info) and f"RGBA 16-bit ({chosen}), its top 8 bits" in info
    assert f"its low {below} bits:" in info
    (tmp_path / "deep.png").rename(tmp_path / "original.png")
    result = run_cli("decompress", "deep.vz", "--rm", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "deep.png").read_bytes() == png and not (tmp_path / "deep.vz").exists()
    result = run_cli("compress", "original.png", "--format", "16", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.decode().count("\n") == 1
    assert "a 16-bit image needs format 18" in result.stderr.decode()


@pytest.mark.parametrize("file_name", sorted(deep_files()))
def test_format_18_goldens_decode_in_a_fresh_process(file_name, tmp_path):
    """format18/*.vz: the first files with 16-bit images. A fresh process under other kernels decodes them without
    torch to their images, the PNGs 16-bit where the images are; coding the images again gives the same file."""
    images, options = deep_files()[file_name]
    path = GOLDEN / "format18" / file_name
    pngs_from_a_fresh_process(path, tmp_path)
    for k, (_, image) in enumerate(images):
        back = open_image((tmp_path / f"{k}.png").read_bytes())
        assert pixel_checksum(back) == pixel_checksum(image), (file_name, k)
        after = [(chunk.kind, chunk.data, chunk.place == AFTER_DATA) for chunk in back.info[METADATA]]
        assert after == [(chunk.kind, chunk.data, chunk.place == AFTER_DATA) for chunk in image.info.get(METADATA, ())]
    assert compress_images(images, **options).data == path.read_bytes()


def test_a_low_part_of_more_bits_than_its_depth_gives_is_refused_in_one_line(tmp_path):
    """A forged file whose low part holds 5 bits for a 12-bit depth, every checksum right (they cover the parts and
    the depth, not the samples joined), is refused by the join, never written as other samples."""
    high = Image.fromarray(smooth_rgb(6, 7, 1))
    low = Image.fromarray(np.full((6, 7, 3), 31, np.uint8))
    from vaezip.classical import combined_checksum, with_depth

    parts = compress_images([("x.png", high), ("x.png", low)], **FAST).data
    header, words = entries_of(parts)

    def labelled(depth_: str) -> bytes:  # the parts as a 16-bit image of `depth_`, its checksum made anew
        entries = (dataclasses.replace(header.images[0], depth=depth_), dataclasses.replace(header.images[1],
                                                                                             depth="low"))
        digest = combined_checksum([with_depth(pixel_checksum(high), depth_, ()), pixel_checksum(low)])
        return container.write(dataclasses.replace(header, images=entries, pixels_sha256=digest), words, 18)

    forged = labelled("shift:12")
    with pytest.raises(CodingError, match="low part holds values of more than 4 bits"):
        decompress_images(forged)
    (tmp_path / "x.vz").write_bytes(forged)
    result = run_cli("decompress", "x.vz", cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / "x.png").exists()
    assert result.stderr.decode() == ("vaezip: error: x.vz: a shift:12 image's low part holds values of more than 4 "
                                      "bits\n")
    (image_name, image), = decompress_images(labelled("shift:13"))
    expected = (np.asarray(high).astype(np.uint16) << 5 | 31) << 3
    assert image_name == "x.png" and np.array_equal(image.samples, expected)


def test_levels_are_stored_in_the_header_and_checked_both_ways():
    x = np.stack([RNG.permutation(np.arange(100 * 100) % 1500).reshape(100, 100) for _ in range(3)], axis=-1)
    samples = ((x * np.array([43, 40, 37])) % 65536).astype(np.uint16)
    data = compress(samples, **FAST)
    header, words = entries_of(data)
    high = header.images[0]
    assert high.depth == "levels:11" and len(high.levels) == 3 and header.images[1].depth == "low"
    assert [len(values) for values in high.levels] == [1500] * 3
    assert np.array_equal(decompress(data).samples, samples)
    payload = words if any(image.coding == "model" for image in header.images) else words[:0]
    too_many = dataclasses.replace(high, depth="levels:10")  # 1500 values do not fit 10 bits
    stray = dataclasses.replace(header.images[1], levels=high.levels)  # levels on a low part
    short = dataclasses.replace(high, levels=high.levels[:2])
    for images in ([too_many, header.images[1]], [high, stray], [short, header.images[1]]):
        with pytest.raises(HeaderError):
            container.write(dataclasses.replace(header, images=tuple(images)), payload, 18)


def test_an_edited_depth_or_level_is_found_by_the_checksum():
    """The parts' pixels are unchanged, but what they stand for is not: the file's checksum covers the depth and the
    levels, so an edited header (every CRC right) is an IntegrityError, never other samples."""
    from vaezip.errors import IntegrityError

    shifted = compress(deep("RGB", bits=12), **FAST)
    header, words = entries_of(shifted)
    assert header.images[0].depth.startswith(("shift", "levels"))
    x = np.stack([RNG.permutation(np.arange(100 * 100) % 1500).reshape(100, 100) for _ in range(3)], axis=-1)
    ranked = compress(((x * np.array([43, 40, 37])) % 65536).astype(np.uint16), **FAST)
    ranked_header, ranked_words = entries_of(ranked)
    levels = ranked_header.images[0].levels
    assert ranked_header.images[0].depth.startswith("levels")
    versions = [container.read_versioned(data)[0] for data in (shifted, ranked)]
    edits = [
        (header, words, dataclasses.replace(header.images[0], depth="replicate:" + header.images[0].depth[-2:])
         if header.images[0].depth.startswith("shift") else dataclasses.replace(
             header.images[0], levels=(tuple(v + 1 for v in header.images[0].levels[0]),)
             + header.images[0].levels[1:])),
        (ranked_header, ranked_words, dataclasses.replace(
            ranked_header.images[0], levels=(levels[0][:-1] + (levels[0][-1] + 1,),) + levels[1:])),
    ]
    for (header_, words_, edited), version in zip(edits, versions):
        # each file's own format: these files' sections may be the small-image profile's
        forged = container.write(dataclasses.replace(header_, images=(edited,) + header_.images[1:]), words_,
                                 version)
        with pytest.raises(IntegrityError, match="do not match the checksum"):
            decompress_images(forged)


def test_an_archive_of_too_many_parts_is_refused_before_coding(monkeypatch):
    from vaezip import archive

    monkeypatch.setattr(archive, "MAX_IMAGES", 3)
    images = [(f"{k}.png", DeepImage(deep("L", seed=k), "L")) for k in range(2)]  # levels:10, a low part each
    with pytest.raises(ImageError, match="4 images with the low parts of 16-bit images, more than 3 in one archive"):
        compress_images(images, **FAST)


def test_png16_image_data_is_never_inflated_past_the_image():
    """IDATs past the image's size (a bomb after it) are refused without inflating them."""
    samples = deep("L", 4, 4)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    packer = zlib.compressobj()
    stream = packer.compress(raw + bytes(100_000_000)) + packer.flush()  # 100 MB of zeros: ~100 KB deflated
    data = png16.write(samples, "L")
    at = data.index(b"IDAT") - 4
    end = at + 12 + struct.unpack(">I", data[at:at + 4])[0]
    chunks = b"".join(png16.png_chunk(b"IDAT", stream[k:k + 8192]) for k in range(0, len(stream), 8192))
    with pytest.raises(png16.PngError, match="longer than the image"):
        png16.read(data[:at] + chunks + data[end:], 10**6)


def test_damaged_16_bit_pngs_give_one_line_errors_or_an_image():
    """600 mutations of 16-bit PNGs (plain and interlaced, CRCs recomputed half the time so that the damage reaches
    the reader's checks): each one is an ImageError or a 16-bit image, never another exception."""
    import random

    rng = random.Random(18)
    sources = [png16.write(deep("RGBA", 9, 7), "RGBA"), interlaced(deep("RGB", 11, 6), 2),
               png16.write(deep("L", 5, 30), "L")]
    outcomes = {"error": 0, "image": 0}
    for case in range(600):
        data = bytearray(rng.choice(sources))
        mutate(data, rng, rng.randrange(8, len(data)), cut=None, inserted=8)
        if case % 2:  # every chunk's CRC made right again
            position = 8
            while position + 12 <= len(data):
                length = struct.unpack_from(">I", data, position)[0]
                if position + 12 + length > len(data):
                    break
                body = bytes(data[position + 4:position + 8 + length])
                struct.pack_into(">I", data, position + 8 + length, zlib.crc32(body))
                position += 12 + length
        try:
            image = open_image(bytes(data))
        except ImageError:
            outcomes["error"] += 1
        else:
            outcomes["image"] += 1
            assert isinstance(image, (DeepImage, Image.Image))
    assert outcomes["error"] > 100 and outcomes["image"] >= 1, outcomes  # mutations past IEND, in ancillary chunks


def test_png16_keeps_to_the_chunk_order_png_asks_for():
    """A second IHDR, image data split by another chunk, an IHDR of another length: refused (libpng refuses them)."""
    samples = deep("RGB", 6, 9)
    data = png16.write(samples, "RGB")
    at = data.index(b"IDAT") - 4
    end = at + 12 + struct.unpack(">I", data[at:at + 4])[0]
    stream = data[at + 8:end - 4]
    split = png16.png_chunk(b"IDAT", stream[:10]) + png16.png_chunk(b"tEXt", b"a\0b") + png16.png_chunk(
        b"IDAT", stream[10:])
    together = png16.png_chunk(b"IDAT", stream[:10]) + png16.png_chunk(b"IDAT", stream[10:])
    assert np.array_equal(png16.read(data[:at] + together + data[end:], 10**6)[0], samples)
    with pytest.raises(png16.PngError, match="split by another chunk"):
        png16.read(data[:at] + split + data[end:], 10**6)
    with pytest.raises(png16.PngError, match="a second IHDR"):
        png16.read(data[:33] + data[8:33] + data[33:], 10**6)
    long_header = data[:8] + png16.png_chunk(b"IHDR", data[16:29] + b"\0") + data[33:]
    with pytest.raises(png16.PngError, match="not a PNG"):
        png16.read(long_header, 10**6)


def tiff16(samples: np.ndarray, photometric: int) -> bytes:
    """An uncompressed little-endian 16-bit grey TIFF written by hand (Pillow writes no photometric 0 of 16 bits)."""
    height, width = samples.shape
    pixels = samples.astype("<u2").tobytes()
    tags = [(256, width), (257, height), (258, 16), (259, 1), (262, photometric), (273, 8 + 2 + 12 * 9 + 4),
            (277, 1), (278, height), (279, len(pixels))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHIHH", tag, 3, 1, value, 0) if tag != 273 and tag
                                                  != 279 else struct.pack("<HHII", tag, 4, 1, value)
                                                  for tag, value in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(4) + pixels


def test_a_16_bit_tiff_whose_white_is_zero_is_turned_over_as_pillow_turns_an_8_bit_one():
    samples = np.array([[0, 1000, 65535, 40000]], np.uint16)
    assert np.array_equal(open_image(tiff16(samples, 1)).samples, samples)
    assert np.array_equal(open_image(tiff16(samples, 0)).samples, 65535 - samples)


def rgb_tiff(samples: np.ndarray, orientation: int) -> bytes:
    """An uncompressed little-endian RGB TIFF of 8- or 16-bit `samples` (H, W, 3) with an orientation tag."""
    height, width, _ = samples.shape
    bits = samples.dtype.itemsize * 8
    pixels = samples.astype(f"<u{samples.dtype.itemsize}").tobytes()
    values_at = 8 + 2 + 12 * 10 + 4
    tags = [(256, 3, width), (257, 3, height), (258, 3, None), (259, 3, 1), (262, 3, 2), (273, 4, values_at + 6),
            (274, 3, orientation), (277, 3, 3), (278, 3, height), (279, 4, len(pixels))]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, 3, 3, values_at) if value is None else
        struct.pack("<HHIHH", tag, kind, 1, value, 0) if kind == 3 else struct.pack("<HHII", tag, kind, 1, value)
        for tag, kind, value in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(4) + struct.pack("<3H", bits, bits, bits) + pixels


def test_a_16_bit_colour_tiff_is_turned_by_its_orientation_as_pillow_turns_an_8_bit_one():
    """libtiff (imagecodecs) gives a TIFF's samples as stored; Pillow turns an 8-bit one by its orientation tag and
    drops the tag. A 16-bit one was refused where the turn swaps width and height, and kept as stored otherwise (its
    orientation named as a tag left out): turned as the 8-bit one is now."""
    pytest.importorskip("imagecodecs")
    samples = deep("RGB", 5, 7)
    for orientation in range(1, 9):
        image = open_image(rgb_tiff(samples, orientation))
        expected = np.asarray(Image.open(io.BytesIO(rgb_tiff((samples >> 8).astype(np.uint8), orientation))))
        assert isinstance(image, DeepImage) and np.array_equal(image.samples >> 8, expected), orientation
        assert not any("Orientation" in entry for entry in image.info.get(DROPPED, ())), orientation


def test_the_levels_of_a_small_image_of_many_values_are_not_worth_their_table():
    """96x96 at 14 bits: levels would save a bit a sample (3.4 KB) and cost more in the header; the formula is kept.
    A header may not declare more levels than the image has pixels."""
    x = np.stack([RNG.permutation(96 * 96) % 12000 for _ in range(3)], axis=-1).reshape(96, 96, 3)
    samples = (x << 2).astype(np.uint16)
    assert depth.choose(samples)[0] == "shift:14"
    big = RNG.integers(0, 4000, (300, 300)).astype(np.uint16) << 4
    assert depth.choose(big)[0] == "shift:12"  # no better levels
    scaled = ((RNG.integers(0, 4001, (300, 300)) * 65535 + 2000) // 4000).astype(np.uint16)
    chosen, levels = depth.choose(scaled)
    assert chosen == "levels:12" and depth.table_bytes(levels) < 4 * scaled.size / 8


def test_a_header_cannot_declare_more_levels_than_its_image_has_pixels():
    """A 1x1 image's levels are one value a channel: a small file cannot make the reader build large tables."""
    header, words = entries_of(compress(deep("RGBA", 1, 1), **FAST))
    many = tuple(tuple(range(0, 65536, 2)) for _ in range(4))  # 32768 each
    entries = (dataclasses.replace(header.images[0], depth="levels:15", levels=many),)
    with pytest.raises(HeaderError, match="32768 levels in a levels:15 image of 1 pixels"):
        container.write(dataclasses.replace(header, images=entries), words, 18)


def test_colour_16_bit_tiff_and_ppm_are_read_with_all_their_bits(monkeypatch):
    """Pillow keeps 8 bits of these: a binary PPM of maxval 65535 is read as stored, a colour TIFF through
    imagecodecs (its libtiff: any compression, predictor, planar configuration, tiles) where that is installed."""
    samples = deep("RGB", 12, 17)
    image = open_image(b"P6\n# a comment\n17 12\n65535\n" + samples.astype(">u2").tobytes())
    assert isinstance(image, DeepImage) and image.mode == "RGB" and np.array_equal(image.samples, samples)
    with pytest.raises(ImageError, match="truncated"):
        open_image(b"P6 17 12 65535\n" + samples.astype(">u2").tobytes()[:-1])
    codecs = pytest.importorskip("imagecodecs")
    rgba = deep("RGBA", 12, 17)
    for array, options in ((samples, {}), (samples, {"compression": "lzw", "predictor": True}),
                           (np.ascontiguousarray(samples.transpose(2, 0, 1)), {"planarconfig": "separate",
                                                                               "photometric": "rgb"}),
                           (rgba, {"compression": "deflate"})):
        image = open_image(codecs.tiff_encode(array, **options))
        expected = samples if array.ndim == 3 and array.shape[0] != 3 and array.shape[2] == 3 else (
            rgba if array.shape[-1] == 4 else samples)
        assert isinstance(image, DeepImage) and image.format == "TIFF" and np.array_equal(image.samples, expected)
        assert np.array_equal(decompress(compress(image, **FAST)).samples, expected)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # not installed
    with pytest.raises(ImageError, match="16-bit RGB TIFF: vaezip reads one through imagecodecs, which is not "
                                         "installed"):
        open_image(codecs.tiff_encode(samples))


@pytest.mark.parametrize("asked, version, kind", [(None, 22, "predictive-refined-across-sections"),
                                                  (21, 21, "predictive-refined-sections"),
                                                  (20, 20, "predictive-photo-sections")])
def test_photographs_16_bits_and_metadata_in_formats_20_to_22(monkeypatch, tmp_path, asked, version, kind):
    """Where a section takes the photograph profile the file is format 22 (refined across channels; format 21 or 20
    with --format 21 or 20:
    format 18's layout either way), with a 16-bit image's depth and an image's metadata as in formats 18 and 17, and
    `vaezip info` names it; --format 19 writes format 16's sections (18 with the 16-bit image, 17 with the
    metadata), and every file comes back."""
    from codec import bitsback

    for threshold in ("PHOTO_PROFILE_VALUES", "SMALL_PROFILE_VALUES"):  # these 40x56 images: photographs
        monkeypatch.setattr(bitsback, threshold, 1000)
    samples = deep("RGB", height=40, width=56, bits=12, seed=9)
    buffer = io.BytesIO()
    profile = bytes(range(16)) + b"RGB " + bytes(range(236)) * 3  # a colour profile's header says RGB
    Image.fromarray(smooth_rgb(40, 56, 3)).save(buffer, format="PNG", icc_profile=profile)
    tagged = Image.open(io.BytesIO(buffer.getvalue()))
    for image, feature in ((DeepImage(samples, "RGB"), container.DEPTH_VERSION),
                           (tagged, container.METADATA_VERSION)):
        newest = compress_images([("a.png", image)], **FAST, classical=False, format_version=asked)
        kinds = {coded for coded, _ in container.read(newest.data)[0].coder.schedule}
        assert newest.format_version == version and kind in kinds
        older = compress_images([("a.png", image)], **FAST, classical=False, format_version=19)
        assert older.format_version == feature
        assert {kind for kind, _ in container.read(older.data)[0].coder.schedule} <= {"predictive-sections",
                                                                                     "whitened"}
        for data in (newest.data, older.data):
            (_, back), = decompress_images(data)
            if isinstance(image, DeepImage):
                assert np.array_equal(back.samples, samples)
            else:
                assert np.array_equal(np.asarray(back), np.asarray(image)) and back.info[METADATA]
        info = file_info(newest.data)
        assert info.version == version and "photograph profile" in info.inference
        (tmp_path / "a.vz").write_bytes(newest.data)
        shown = run_cli("info", tmp_path / "a.vz")
        assert shown.returncode == 0 and f"format {version} (" in shown.stdout.decode()
