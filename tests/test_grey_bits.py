"""Grey images of 1, 2 and 4 bits (format 23): coded as the 8-bit grey Pillow reads, and written back by decompress
in their own bit depth, with their colour key and background grey in it (vaezip/images.py grey_bits)."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import container
from codec.classic import png_chunk
from codec.errors import HeaderError
from codec.header import from_binary, to_binary
from codec.metadata import AFTER_HEADER, BEFORE_DATA, Chunk
from conftest import pngs_from_a_fresh_process, run_cli, smooth_rgb
from vaezip.api import compress_images, decompress_images, file_info, png_bytes
from vaezip.images import GREY_BITS, grey_bits, open_image, pixel_checksum
from vaezip.metadata import METADATA

GOLDEN = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_golden import grey_bits_files  # noqa: E402

FAST = {"fast": True, "tile": 16}


def grey_png(bits: int, height: int = 12, width: int = 20, seed: int = 0, chunks: bytes = b"", **options) -> bytes:
    """A grey PNG of `bits` bits (Pillow's), smooth content quantised to that depth, `chunks` before its data."""
    levels = smooth_rgb(height, width, seed)[..., 0].astype(np.int64) * ((1 << bits) - 1) // 255
    image = Image.fromarray((levels * (255 // ((1 << bits) - 1))).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **({"bits": bits} if bits < 8 else {}), **options)
    png = buffer.getvalue()
    at = png.index(b"IDAT") - 4
    return png[:at] + chunks + png[at:]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_low_bit_grey_png_comes_back_as_the_same_file_in_a_fresh_process(bits, tmp_path):
    """compress then decompress (a fresh process under other kernels) gives back Pillow's PNG byte for byte: its bit
    depth, its colour key and background in that depth; -v and info say the depth. `--format 22` writes a file that
    an older vaezip reads, which decompresses as 8-bit grey: said, and --rm keeps the input."""
    source = grey_png(bits, chunks=png_chunk(b"bKGD", (1).to_bytes(2, "big")), transparency=(1 << bits) - 1)
    (tmp_path / "a.png").write_bytes(source)
    done = run_cli("compress", "-v", "a.png", cwd=tmp_path)
    assert done.returncode == 0 and f"a.png: 20x12 L {bits}-bit, " in done.stderr.decode(), done.stderr
    assert file_info((tmp_path / "a.vz").read_bytes()).version == 23
    info = run_cli("info", "a.vz", cwd=tmp_path).stdout.decode()
    assert f"a.png: 20x12 L {bits}-bit, " in info and "grey images' bit depths below 8" in info, info
    (tmp_path / "a.png").rename(tmp_path / "source.png")
    assert run_cli("decompress", "a.vz", cwd=tmp_path).returncode == 0
    assert (tmp_path / "a.png").read_bytes() == source

    older = run_cli("compress", "--format", "22", "--rm", "-o", "old.vz", "source.png", cwd=tmp_path)
    told = older.stderr.decode()
    assert older.returncode == 0 and f"20x12 L {bits}-bit" not in told and (tmp_path / "source.png").exists()
    assert (f"old.vz: --format 22 keeps no bit depth below 8: source.png is {bits}-bit grey, decompressed as 8-bit "
            f"grey (without --format the file keeps it); the input is kept (--rm)") in told, told
    assert file_info((tmp_path / "old.vz").read_bytes()).version < 23
    assert run_cli("decompress", "old.vz", cwd=tmp_path).returncode == 0
    eight = Image.open(tmp_path / "old.png")
    assert (tmp_path / "old.png").read_bytes()[24] == 8 and eight.mode == "L"
    assert np.array_equal(np.asarray(eight), np.asarray(Image.open(io.BytesIO(source)).convert("L")))


def test_classical_and_stream_entries_keep_their_depth_beside_colour_and_eight_bit_images():
    """An archive of a 2-bit grey image (as its classical coding and as the stream's), an 8-bit grey one whose values
    a 1-bit image could hold and a colour one: only the one read from 2 bits is written back in 2."""
    two = open_image(grey_png(2, 16, 16, seed=1))
    eight = Image.fromarray(np.where(smooth_rgb(16, 16, 2)[..., 0] > 128, 255, 0).astype(np.uint8))
    colour = Image.fromarray(smooth_rgb(16, 16, 3))
    for images, options in (([two, eight, colour], {"fast": True}), ([two, eight], {"fast": True, "classical": False})):
        named = [(f"{k}.png", image) for k, image in enumerate(images)]
        result = compress_images(named, **options)
        assert [report.grey_bits for report in result.images] == [2, 0, 0][:len(images)]
        assert result.format_version == 23
        first = container.read_versioned(result.data)[1].images[0]  # a 16x16 2-bit image: PNG's, or the stream's
        assert (first.coding == "model") == ("classical" in options) and first.info["bits"] == 2, first.coding
        back = decompress_images(result.data)
        assert [png_bytes(image)[24] for _, image in back] == [2, 8, 8][:len(images)]
        assert [pixel_checksum(image) for _, image in back] == [pixel_checksum(image) for image in images]
    plain = compress_images([("eight.png", eight)], **FAST)
    assert plain.format_version < 23 and plain.images[0].grey_bits == 0


def test_a_depth_that_no_longer_holds_the_image_is_not_kept():
    """GREY_BITS where a sample or the colour key is not one that depth holds (an image changed since it was read):
    coded and written as 8-bit grey, never cut down. A background grey or significant bits that a 1-bit PNG cannot
    hold write the decoded image as 8-bit grey too."""
    image = open_image(grey_png(1))
    assert grey_bits(image) == 1
    changed = image.copy()
    changed.info = dict(image.info)
    changed.putpixel((0, 0), 128)
    assert grey_bits(changed) == 0
    result = compress_images([("changed.png", changed)], **FAST)
    assert result.format_version < 23
    keyed = image.copy()
    keyed.info = dict(image.info, transparency=17)
    assert grey_bits(keyed) == 0
    coloured = Image.fromarray(smooth_rgb(4, 4, 0))
    coloured.info[GREY_BITS] = 1
    assert grey_bits(coloured) == 0
    for chunk in (Chunk(BEFORE_DATA, b"bKGD", (128).to_bytes(2, "big")), Chunk(AFTER_HEADER, b"sBIT", b"\x04")):
        odd = image.copy()
        odd.info = dict(image.info)
        odd.info[METADATA] = (chunk,)
        written = png_bytes(odd)
        assert written[24] == 8 and chunk.kind in written, chunk
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(written))), np.asarray(image))


def test_a_png_whose_key_background_or_significant_bits_pass_its_depth_keeps_8_bits(tmp_path):
    """PNG allows a grey key, background and significant bits within the depth only, yet files hold others: Pillow
    writes a 1-bit image's key as 255, leaves a 2- or 4-bit key past the depth as it is (and compares it with the
    pixels it scaled up). Written back in the depth, such a key made other pixels transparent; a large background
    overflowed as it was scaled (a traceback). Such a file keeps 8 bits, as before format 23, with what Pillow reads
    of it (from a QA pass)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return png_chunk(kind, data)

    cases = {"key4.png": grey_png(4, transparency=34), "key2.png": grey_png(2, transparency=170),
             "key1.png": grey_png(1, transparency=255),
             "background4.png": grey_png(4, chunks=chunk(b"bKGD", b"\xff\xff")),
             "background1.png": grey_png(1, chunks=chunk(b"bKGD", b"\x01\x02")),
             "significant2.png": grey_png(2, chunks=chunk(b"sBIT", b"\x08"))}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        image = open_image(data)
        assert GREY_BITS not in image.info and grey_bits(image) == 0, name
    assert run_cli("compress", "--fast", *cases, "-o", "all.vz", cwd=tmp_path).returncode == 0
    assert "-bit" not in run_cli("info", "all.vz", cwd=tmp_path).stdout.decode()
    for (name, data), (_, back) in zip(cases.items(), decompress_images((tmp_path / "all.vz").read_bytes())):
        written = png_bytes(back)
        assert written[24] == 8, name
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(written)).convert("RGBA")),
                              np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))), name
    within = open_image(grey_png(1, transparency=1))  # a key in the depth: kept, written back as 1
    assert grey_bits(within) == 1 and b"\0\0\0\2tRNS\0\1" in png_bytes(within)


def test_the_header_holds_a_bit_depth_only_for_grey_images_from_format_23():
    """Refused both ways: a depth in a format before 23, of a colour image, or other than 1, 2 or 4."""
    result = compress_images([("a.png", open_image(grey_png(4)))], **FAST)
    version, header, words = container.read_versioned(result.data)
    assert version == 23 and header.images[0].info["bits"] == 4
    raw = to_binary(header, len(words), 23)
    assert from_binary(raw, 23)[0].images[0].info == {"bits": 4}
    with pytest.raises(HeaderError, match="format 22 does not"):
        to_binary(header, len(words), 22)
    with pytest.raises(HeaderError, match="format 22 does not"):
        from_binary(raw, 22)
    for bits in (3, 8, 0):
        entry = dataclasses.replace(header.images[0], info=header.images[0].info | {"bits": bits})
        with pytest.raises(HeaderError, match=f"has bit depth {bits}"):
            to_binary(dataclasses.replace(header, images=(entry,)), len(words), 23)
    assert raw.endswith(b"\x04\x00\x00")  # the image's last info field (its bits), no chunks, depth 0 (8 bits)
    with pytest.raises(HeaderError, match="has bit depth 3"):
        from_binary(raw[:-3] + b"\x03\x00\x00", 23)
    rgb = dataclasses.replace(header.images[0], mode="RGB")
    with pytest.raises(HeaderError, match="is a RGB image with a bit depth of 4"):
        to_binary(dataclasses.replace(header, images=(rgb,)), len(words), 23)


@pytest.mark.parametrize("file_name", sorted(grey_bits_files()))
def test_format_23_goldens_decode_in_a_fresh_process(file_name, tmp_path):
    """format23/*.vz: the first files with grey images of fewer than 8 bits. A fresh process under other kernels
    decodes them without torch to their images, each PNG in its image's depth with its chunks; coding the images
    again gives the same file."""
    images, options = grey_bits_files()[file_name]
    path = GOLDEN / "format23" / file_name
    pngs_from_a_fresh_process(path, tmp_path)
    for k, (_, image) in enumerate(images):
        written = (tmp_path / f"{k}.png").read_bytes()
        assert written[24] == (image.info.get(GREY_BITS) or 8), (file_name, k)
        back = open_image(written)
        assert pixel_checksum(back) == pixel_checksum(image), (file_name, k)
        assert back.info[METADATA] == image.info[METADATA], (file_name, k)
    assert compress_images(images, **options).data == path.read_bytes()
