"""Metadata (format 17): what an image's file held besides its pixels, a colour profile, EXIF, XMP, a PNG's text and
other ancillary chunks, comes back in the PNG that decompress writes; --strip and older formats keep none and say
so; a header that names a chunk no file may keep is refused."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import container, metadata
from codec.errors import HeaderError
from codec.header import Header, ImageEntry
from conftest import pngs_from_a_fresh_process, run_cli, smooth_rgb
from vaezip.api import compress_images, decompress_images, file_info, png_bytes
from vaezip.errors import ImageError
from vaezip.images import open_image
from vaezip.metadata import DROPPED, METADATA, image_chunks, read_png_chunks, walk_png_chunks

GOLDEN = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_golden import metadata_files  # noqa: E402

# A colour profile's bytes are opaque to vaezip but for its header's data colour space (bytes 16 to 20)
PROFILE = bytes(range(16)) + b"RGB " + bytes(range(236)) * 3
GREY_PROFILE = bytes(16) + b"GRAY" + bytes(100)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunks_of(png: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG file, (type, data), in order."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = [], 8
    while at < len(png):
        length, kind = struct.unpack_from(">I4s", png, at)
        found.append((kind, png[at + 8: at + 8 + length]))
        at += 12 + length
    return found


def with_chunks(png: bytes, before: list[tuple[bytes, bytes]], after: list[tuple[bytes, bytes]]) -> bytes:
    """A Pillow PNG with chunks put after its IHDR and before its IEND, as other writers place them."""
    header_end = 8 + 25
    return (png[:header_end] + b"".join(_chunk(k, d) for k, d in before) + png[header_end:-12]
            + b"".join(_chunk(k, d) for k, d in after) + png[-12:])


def ancillary(png: bytes) -> list[tuple[bytes, bytes, str]]:
    """The PNG's ancillary chunks but tRNS, each with where it lies: before or after the image data."""
    found, seen_data = [], False
    for kind, data in chunks_of(png):
        seen_data |= kind == b"IDAT"
        if kind[0] & 32 and kind != b"tRNS":
            found.append((kind, data, "after" if seen_data else "before"))
    return found


def photo_png(height: int = 40, width: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(height, width, 3)).save(buffer, format="PNG")
    exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0"  # orientation 6: turned in viewers
    before = [(b"iCCP", b"ICC profile\0\0" + zlib.compress(PROFILE)), (b"gAMA", (45455).to_bytes(4, "big")),
              (b"cHRM", bytes(32)), (b"eXIf", exif), (b"pHYs", (3780).to_bytes(4, "big") * 2 + b"\x01"),
              (b"tEXt", b"parameters\0steps: 20, seed: 1"), (b"iDOT", bytes(28)), (b"vpAg", bytes(9))]
    after = [(b"tIME", bytes([7, 234, 12, 6, 1, 2, 3])), (b"zTXt", b"Comment\0\0" + zlib.compress(b"later"))]
    return with_chunks(buffer.getvalue(), before, after)


def test_a_png_s_chunks_come_back_in_their_places_but_those_unsafe_to_copy(tmp_path):
    source = photo_png()
    (tmp_path / "photo.png").write_bytes(source)
    for options in ([], ["--fast"]):
        result = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "photo.vz", "-f", *options)
        assert result.returncode == 0, result.stderr
        report = result.stderr.decode()
        assert "metadata kept: iCCP, gAMA, cHRM, eXIf, pHYs, tEXt, vpAg, tIME, zTXt" in report
        assert "metadata left out: iDOT (unsafe to copy)" in report
        # 22 where a section of this small photograph codes for less in the small-image profile, refined
        assert container.read_versioned((tmp_path / "photo.vz").read_bytes())[0] in (container.METADATA_VERSION,
                                                                                    container.ACROSS_VERSION)
        result = run_cli("decompress", tmp_path / "photo.vz", "-o", tmp_path / "back.png", "-f")
        assert result.returncode == 0, result.stderr
        back = (tmp_path / "back.png").read_bytes()
        assert ancillary(back) == [chunk for chunk in ancillary(source) if chunk[0] != b"iDOT"]
        with Image.open(tmp_path / "back.png") as image:
            assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / "photo.png")))
            assert image.info["icc_profile"] == PROFILE  # as Pillow reads the PNG's iCCP
    info = run_cli("info", tmp_path / "photo.vz")
    assert "metadata iCCP, gAMA, cHRM, eXIf, pHYs, tEXt, vpAg, tIME, zTXt" in info.stdout.decode()


def test_a_palette_image_s_background_stays_after_its_palette(tmp_path):
    image = Image.fromarray(smooth_rgb(24, 24, 5)).quantize(8)
    image.info["transparency"] = 2
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=2)
    plain = buffer.getvalue()
    data_at = plain.index(b"IDAT") - 4
    source = plain[:data_at] + _chunk(b"bKGD", b"\x05") + plain[data_at:]  # after PLTE and tRNS, as PNG wants
    (tmp_path / "p.png").write_bytes(source)
    assert run_cli("compress", tmp_path / "p.png").returncode == 0
    assert run_cli("decompress", tmp_path / "p.vz", "-o", tmp_path / "back.png").returncode == 0
    kinds = [kind for kind, _ in chunks_of((tmp_path / "back.png").read_bytes())]
    assert kinds.index(b"PLTE") < kinds.index(b"tRNS") < kinds.index(b"bKGD") < kinds.index(b"IDAT")
    with Image.open(tmp_path / "back.png") as back, Image.open(tmp_path / "p.png") as original:
        assert np.array_equal(np.asarray(back), np.asarray(original)) and back.info["transparency"] == 2


@pytest.mark.parametrize("image_format", ["WEBP", "JPEG", "TIFF"])
def test_other_formats_keep_their_colour_profile_and_exif(tmp_path, image_format):
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: turned half round
    exif[0x010F] = "vaezip test camera"
    buffer = io.BytesIO()
    options = {"lossless": True} if image_format == "WEBP" else {"quality": 95} if image_format == "JPEG" else {}
    Image.fromarray(smooth_rgb(32, 40, 9)).save(buffer, format=image_format, icc_profile=PROFILE, exif=exif,
                                                 dpi=(300, 300), **options)
    path = tmp_path / f"photo.{image_format.lower()}"
    path.write_bytes(buffer.getvalue())
    made = run_cli("compress", path, "-o", tmp_path / "p.vz")
    assert made.returncode == 0
    # (Pillow turns a TIFF's pixels by its orientation tag as it loads them, and drops the tag: not left out)
    assert ("metadata left out: TIFF tags Make (a TIFF's own tags are not kept)" in made.stderr.decode()) == (
        image_format == "TIFF")
    assert run_cli("decompress", tmp_path / "p.vz", "-o", tmp_path / "back.png").returncode == 0
    with Image.open(tmp_path / "back.png") as back, Image.open(path) as original:
        assert np.array_equal(np.asarray(back), np.asarray(original.convert(back.mode)))
        assert back.info["icc_profile"] == PROFILE
        if image_format != "WEBP":  # WebP holds no pixel size
            assert [round(v) for v in back.info["dpi"]] == [300, 300]
        if image_format != "TIFF":  # a TIFF's EXIF is its own tags, which Pillow does not give as EXIF bytes
            assert back.getexif()[0x0112] == 3 and back.getexif()[0x010F] == "vaezip test camera"


def test_a_resolution_that_pillow_makes_up_is_not_kept_and_a_tiff_s_own_tags_are_named(tmp_path):
    """Pillow gives a TIFF without resolution tags 1 dpi, and a JPEG whose EXIF holds no resolution 72: neither file
    states one, so no pHYs is made of it. A TIFF's tags beyond its pixels' layout (artist, copyright, description,
    software) are named as left out."""
    exif = Image.Exif()
    exif[0x0112] = 1
    Image.fromarray(smooth_rgb(8, 8, 1)).save(tmp_path / "plain.tif")
    Image.fromarray(smooth_rgb(8, 8, 2)).save(tmp_path / "exif.jpg", exif=exif, quality=95)
    unitless = Image.Exif()
    unitless[0x011A] = 300.0  # XResolution without ResolutionUnit: Pillow makes up 72 all the same
    Image.fromarray(smooth_rgb(8, 8, 2)).save(tmp_path / "unitless.jpg", exif=unitless, quality=95)
    for name in ("plain.tif", "exif.jpg", "unitless.jpg"):
        with Image.open(tmp_path / name) as pillow:
            assert pillow.info["dpi"] in ((1, 1), (72, 72))
        opened = open_image(tmp_path / name)
        assert b"pHYs" not in [chunk.kind for chunk in opened.info[METADATA]], name
        assert b"pHYs" not in [chunk.kind for chunk in image_chunks(Image.open(tmp_path / name))[0]], name
    tags = {270: "a description", 305: "a program", 315: "an artist", 33432: "a copyright"}
    Image.fromarray(smooth_rgb(8, 8, 3)).save(tmp_path / "tags.tif", tiffinfo=tags, dpi=(300, 300))
    opened = open_image(tmp_path / "tags.tif")
    assert [chunk.kind for chunk in opened.info[METADATA]] == [b"pHYs"]
    assert opened.info[DROPPED] == ("TIFF tags ImageDescription, Software, Artist, Copyright (a TIFF's own tags "
                                    "are not kept)",)
    made = run_cli("compress", tmp_path / "tags.tif", "-o", tmp_path / "t.vz")
    assert made.returncode == 0 and b"TIFF tags ImageDescription" in made.stderr
    # --rm deleted such a TIFF (two of them: without a word), its artist and copyright lost for good; it is kept,
    # unless --strip asked for the metadata to go
    (tmp_path / "other.tif").write_bytes((tmp_path / "tags.tif").read_bytes())
    removed = run_cli("compress", tmp_path / "tags.tif", tmp_path / "other.tif", "--fast", "--rm", "-f")
    assert removed.returncode == 0 and (tmp_path / "tags.tif").exists() and (tmp_path / "other.tif").exists()
    assert removed.stderr.decode().count("Artist, Copyright (a TIFF's own tags are not kept); the input is kept "
                                        "(--rm; --strip drops the metadata and lets --rm delete it)") == 2
    stripped = run_cli("compress", tmp_path / "tags.tif", "--fast", "--rm", "--strip", "-f")
    assert stripped.returncode == 0 and not (tmp_path / "tags.tif").exists() and b"warning" not in stripped.stderr
    # what a PNG editor drops too (iDOT, in every macOS screenshot: unsafe to copy) keeps no input
    png = (tmp_path / "back.png")
    Image.fromarray(smooth_rgb(8, 8, 4)).save(png)
    data = png.read_bytes()
    at = data.index(b"IDAT") - 4
    body = b"\0" * 28
    idot = struct.pack(">I", len(body)) + b"iDOT" + body + struct.pack(">I", zlib.crc32(b"iDOT" + body))
    png.write_bytes(data[:at] + idot + data[at:])
    removed = run_cli("compress", png, "--fast", "--rm", "-f")
    assert removed.returncode == 0 and not png.exists() and b"warning" not in removed.stderr, removed.stderr
    # but a private chunk unsafe to copy (Fireworks keeps its layers so) or a damaged tEXt is information: kept
    for kind, body, crc_change in ((b"mkBF", b"layers" * 100, 0), (b"tEXt", b"Copyright\0me", 1)):
        chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) ^ crc_change)
        png.write_bytes(data[:at] + chunk + data[at:])
        removed = run_cli("compress", png, "--fast", "--rm", "-f")
        assert removed.returncode == 0 and png.exists() and b"the input is kept (--rm" in removed.stderr, kind
    # as are bytes after IEND (an archive appended to the PNG): deleted without a word (a review)
    png.write_bytes(data + b"PK\x03\x04 an appended archive")
    removed = run_cli("compress", png, "--fast", "--rm", "-f")
    assert removed.returncode == 0 and png.exists() and b"24 bytes after IEND; the input is kept " \
        b"(--rm" in removed.stderr, removed.stderr
    # but not a newline or padding some tools append: nothing of the file's own
    png.write_bytes(data + b"\r\n\0\0")
    removed = run_cli("compress", png, "--fast", "--rm", "-f")
    assert removed.returncode == 0 and not png.exists() and b"warning" not in removed.stderr, removed.stderr


def test_a_jpeg_s_segments_that_no_chunk_holds_are_named():
    """IPTC (Photoshop's APP13) and other application segments are left out and named; the JFIF header, EXIF, XMP, the
    colour profile and the comment are kept, and not named."""
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(8, 8, 5)).save(buffer, format="JPEG", icc_profile=PROFILE, xmp=b"<x/>", comment=b"hi",
                                             exif=Image.Exif().tobytes())
    iptc = b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0\0\0\0\x05\x1c\x02\x05\0\x01A"
    ducky = b"Ducky\0" + bytes(8)
    segments = b"".join(marker + (len(data) + 2).to_bytes(2, "big") + data
                        for marker, data in ((b"\xff\xed", iptc), (b"\xff\xec", ducky)))
    data = buffer.getvalue()
    opened = open_image(data[:2] + segments + data[2:])
    assert {chunk.kind for chunk in opened.info[METADATA]} == {b"iCCP", b"eXIf", b"iTXt", b"tEXt"}
    assert opened.info[DROPPED] == ("JPEG segments APP13 Photoshop 3.0, APP12 Ducky (no chunk holds them)",)
    assert open_image(data).info[DROPPED] == ()
    # Pillow keeps a JPEG's last comment: one before it is named (it was lost without a word, a review)
    first = b"\xff\xfe" + (len(b"first") + 2).to_bytes(2, "big") + b"first"
    assert open_image(data[:2] + first + data[2:]).info[DROPPED] == ("JPEG segments COM (no chunk holds them)",)
    same = b"\xff\xfe" + (len(b"hi") + 2).to_bytes(2, "big") + b"hi"  # the same as the last one: nothing more
    assert open_image(data[:2] + same + data[2:]).info[DROPPED] == ()
    # a TGA's image ID field, which Pillow reads and no chunk keeps
    tga = io.BytesIO()
    Image.fromarray(smooth_rgb(4, 4, 5)).save(tga, format="TGA", id_section=b"Scan 12, J. Smith")
    assert open_image(tga.getvalue()).info[DROPPED] == ("TGA image ID (a TGA's own fields)",)


def test_a_damaged_chunk_before_the_image_data_is_left_out_and_named(tmp_path):
    """Pillow checks the CRCs of the chunks before the image data and refuses the file where one is wrong; a damaged
    ancillary chunk there is left out and named, as one after the image data is."""
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(8, 8, 4)).save(buffer, format="PNG")
    plain = buffer.getvalue()
    data_at = plain.index(b"IDAT") - 4
    bad = _chunk(b"tEXt", b"early\0x")[:-1] + b"\0"  # its CRC's last byte changed
    source = plain[:data_at] + _chunk(b"tEXt", b"kept\0y") + bad + plain[data_at:]
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError
        Image.open(io.BytesIO(source))
    opened = open_image(source)
    assert np.array_equal(np.asarray(opened), np.asarray(Image.open(io.BytesIO(plain))))
    assert [chunk.data for chunk in opened.info[METADATA] if chunk.kind == b"tEXt"] == [b"kept\0y"]
    assert opened.info[DROPPED] == ("tEXt (damaged: bad CRC)",)
    broken_pixels = bytearray(source)
    broken_pixels[source.index(b"IDAT") + 6] ^= 0xFF  # inside the image data: a critical chunk is not mended
    with pytest.raises(ImageError):
        open_image(bytes(broken_pixels))
    # nor a damaged tRNS (the pixels' transparency: left out, transparent pixels would come back opaque)
    buffer = io.BytesIO()
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "P").save(buffer, format="PNG", transparency=3)
    keyed = bytearray(buffer.getvalue())
    keyed[keyed.index(b"tRNS") + 4] ^= 0x01
    (tmp_path / "keyed.png").write_bytes(keyed)
    for damaged in (bytes(keyed), tmp_path / "keyed.png", io.BytesIO(bytes(keyed))):
        with pytest.raises(ImageError, match="not a readable image"):
            open_image(damaged)
    (tmp_path / "early.png").write_bytes(source)
    for other in (tmp_path / "early.png", io.BytesIO(source)):  # a path or a file object, as bytes
        assert open_image(other).info[DROPPED] == ("tEXt (damaged: bad CRC)",)


def test_strip_and_older_formats_keep_none_and_say_so(tmp_path):
    (tmp_path / "photo.png").write_bytes(photo_png())
    stripped = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "s.vz", "--strip")
    assert stripped.returncode == 0 and b"warning" not in stripped.stderr and b"metadata kept" not in stripped.stderr
    older = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "o.vz", "--format", "16")
    assert older.returncode == 0
    assert "warning: " in older.stderr.decode() and "--format 16 keeps no metadata: photo.png's iCCP" in \
        older.stderr.decode()
    quiet = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "q.vz", "--format", "16", "-q")
    assert quiet.returncode == 0 and quiet.stderr == b""
    # --rm with an older format keeps the input that holds what the file does not; with --strip it was asked for
    removed = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "r.vz", "--format", "16", "--rm")
    assert removed.returncode == 0 and (tmp_path / "photo.png").exists()
    assert "left out (without --format the file keeps it); the input is kept (--rm)" in removed.stderr.decode()
    # --strip: the newest format without metadata (22 where the small-image profile refined codes a section for
    # less, else 16's sections); --format 16: format 16's, never smaller
    for name, versions in (("s.vz", (container.SECTIONS_VERSION, container.ACROSS_VERSION)),
                           ("o.vz", (container.SECTIONS_VERSION,))):
        data = (tmp_path / name).read_bytes()
        assert container.read_versioned(data)[0] in versions
        assert run_cli("decompress", tmp_path / name, "-o", tmp_path / "back.png", "-f").returncode == 0
        assert ancillary((tmp_path / "back.png").read_bytes()) == []
    assert len((tmp_path / "s.vz").read_bytes()) <= len((tmp_path / "o.vz").read_bytes())
    kept = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "k.vz", "--format", "17")
    assert kept.returncode == 0 and container.read_versioned((tmp_path / "k.vz").read_bytes())[0] == 17
    asked = run_cli("compress", tmp_path / "photo.png", "-o", tmp_path / "a.vz", "--strip", "--rm")
    assert asked.returncode == 0 and not (tmp_path / "photo.png").exists()  # --strip: the user's choice


def test_the_api_keeps_what_pillow_read_and_gives_it_back():
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(24, 32, 1)).save(buffer, format="PNG", icc_profile=PROFILE)
    opened = Image.open(io.BytesIO(buffer.getvalue()))  # not vaezip's open_image: Pillow's info alone
    result = compress_images([("a.png", opened)], fast=True)
    # 22 where the small-image profile, refined, codes this small image for less
    assert result.format_version in (container.METADATA_VERSION, container.ACROSS_VERSION) and result.images[0].metadata
    (_, image), = decompress_images(result.data)
    assert image.info[METADATA] == result.images[0].metadata
    with Image.open(io.BytesIO(png_bytes(image))) as back:
        assert back.info["icc_profile"] == PROFILE
    assert [kind for kind, _ in chunks_of(png_bytes(image))][:2] == [b"IHDR", b"iCCP"]
    assert file_info(result.data).images[0].metadata == result.images[0].metadata
    plain = compress_images([("a.png", opened)], fast=True, metadata=False)
    assert plain.format_version in (container.SECTIONS_VERSION, container.ACROSS_VERSION)  # no metadata field
    assert plain.format_version == result.format_version or result.format_version == container.METADATA_VERSION
    assert plain.images[0].metadata_left_out == ("iCCP",)
    assert METADATA not in decompress_images(plain.data)[0][1].info
    # the same payload either way: metadata live in the header alone
    assert np.array_equal(container.read(result.data)[1], container.read(plain.data)[1])


def test_open_image_reads_the_chunks_and_sets_aside_those_unsafe_to_copy():
    source = photo_png()
    image = open_image(source)
    assert [chunk.kind for chunk in image.info[METADATA]] == [
        b"iCCP", b"gAMA", b"cHRM", b"eXIf", b"pHYs", b"tEXt", b"vpAg", b"tIME", b"zTXt"]
    assert [chunk.place for chunk in image.info[METADATA]][-2:] == [metadata.AFTER_DATA] * 2
    assert image.info[DROPPED] == ("iDOT (unsafe to copy)",)
    stream = io.BytesIO(source[:60])  # cut short: what was read before the cut, the position put back
    stream.seek(5)
    kept, _ = read_png_chunks(stream)
    assert stream.tell() == 5 and [chunk.kind for chunk in kept] == []


def test_only_chunks_an_editor_may_copy_are_kept():
    for kind in (b"iCCP", b"tEXt", b"eXIf", b"vpAg", b"prVt", b"cICP"):
        assert metadata.keepable(kind), kind
    for kind in (b"IDAT", b"IEND", b"PLTE", b"tRNS", b"hIST", b"acTL", b"fcTL", b"fdAT", b"iDOT", b"prvt", b"ab1c",
                 b"abc", b"abcde"):
        assert not metadata.keepable(kind), kind


def _entry(chunks) -> ImageEntry:
    return ImageEntry("a.png", "L", 2, 2, None, {}, "raw", b"abcd", tuple(chunks))


GOOD_TABLE = [metadata.Chunk(0, b"gAMA", b"WXYZ"), metadata.Chunk(1, b"tEXt", b"a\0bc")]


def _forged(entry: bytes) -> bytes:
    """A format-17 file of an L image with GOOD_TABLE's chunks, its second chunk's table entry (place, type, length)
    replaced by `entry` in the header, the header's length and the file's CRC made right again."""
    good = container.write(Header("", "", None, (_entry(GOOD_TABLE),), "0" * 64), np.zeros(0, np.uint32),
                           container.METADATA_VERSION)
    length = good[10]
    assert length < 128  # a one-byte varint
    raw = container.inflate_header(good[11: 11 + length])
    assert raw.count(b"\x01tEXt\x04") == 1
    packed = container.deflate_header(raw.replace(b"\x01tEXt\x04", entry))
    body = good[:10] + bytes([len(packed)]) + packed + good[11 + length: -4]
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("entry", [b"\x00IDAT\x04", b"\x01tRNS\x04", b"\x00iDOT\x04", b"\x03tEXt\x04",
                                   b"\x02pHYs\x04", b"\x00gAMA\x04", b"\x01bKGD\x04", b"\x00sBIT\x04"])
def test_a_header_whose_chunk_no_file_keeps_or_is_out_of_place_is_refused(entry):
    """An unsafe or critical type, a place above 2 or not one its type allows, a second gAMA, a background or
    significant bits of another colour type's length: refused by the reader (and never written)."""
    with pytest.raises(HeaderError, match="bad header: image 0: "):
        container.read(_forged(entry))
    chunk = metadata.Chunk(entry[0], entry[1:5], b"abcd")
    with pytest.raises(HeaderError):
        container.write(Header("", "", None, (_entry([GOOD_TABLE[0], chunk]),), "0" * 64), np.zeros(0, np.uint32),
                        container.METADATA_VERSION)
    header, words = container.read(_forged(b"\x02tEXt\x04"))  # the same at a place tEXt may take: read
    assert header.images[0].metadata == (GOOD_TABLE[0], metadata.Chunk(2, b"tEXt", b"a\0bc"))


def test_metadata_need_format_17_and_have_limits():
    header = Header("", "", None, (_entry(GOOD_TABLE),), "0" * 64)
    with pytest.raises(HeaderError, match="format 17"):
        container.write(header, np.zeros(0, np.uint32), container.SECTIONS_VERSION)
    many = Image.fromarray(smooth_rgb(8, 8, 2))
    many.info[METADATA] = (metadata.Chunk(2, b"tEXt", b"k\0v"),) * (metadata.MAX_CHUNKS + 1)
    with pytest.raises(ImageError, match="--strip"):
        compress_images([("many.png", many)], fast=True)
    assert compress_images([("many.png", many)], fast=True, metadata=False).format_version < 17
    # The chunks' bytes lie in the file's data part, not in its header: no header limit holds them.
    big = Image.fromarray(smooth_rgb(8, 8, 2))
    big.info[METADATA] = (metadata.Chunk(2, b"zTXt", b"k\0\0" + os.urandom(20 * 2**20)),)
    result = compress_images([("big.png", big)], fast=True)
    assert result.header_bytes < 200 and decompress_images(result.data)[0][1].info[METADATA] == big.info[METADATA]


def test_chunks_that_no_longer_fit_the_image_are_left_out_and_named():
    """An API caller's image converted since it was opened: its background, significant bits and colour profile
    belong to another colour type."""
    source = photo_png()
    image = open_image(source)
    grey = image.convert("L")
    kept, left_out = image_chunks(grey)
    assert b"iCCP" not in [chunk.kind for chunk in kept] and "iCCP (a RGB profile does not fit a L image)" in left_out
    assert [chunk.kind for chunk in image_chunks(image)[0]][0] == b"iCCP"
    paletted = Image.fromarray(smooth_rgb(8, 8, 3)).quantize(4)
    paletted.info[METADATA] = (metadata.Chunk(1, b"bKGD", b"\x01"), metadata.Chunk(0, b"sBIT", b"\x05\x05\x05"))
    assert image_chunks(paletted)[0] == paletted.info[METADATA]
    kept, left_out = image_chunks(paletted.convert("RGB"))
    assert [chunk.kind for chunk in kept] == [b"sBIT"] and left_out == ("bKGD (1 bytes do not fit a RGB image)",)
    grey_profiled = Image.fromarray(smooth_rgb(8, 8, 3)[..., 0])
    grey_profiled.info["icc_profile"] = GREY_PROFILE
    assert [chunk.kind for chunk in image_chunks(grey_profiled)[0]] == [b"iCCP"]


def test_an_input_s_odd_chunks_are_mended_or_left_out(tmp_path):
    """Out of its place (a background before the palette, a colour chunk after it), a second of a type PNG allows
    once, a damaged one after the image data (Pillow does not check those), a 2-bit grey's background (scaled as
    Pillow scales the pixels); tRNS is the pixels' and never named."""
    image = Image.fromarray((smooth_rgb(12, 12, 2)[..., 0] // 64).astype(np.uint8) * 85)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", bits=2, transparency=170)
    plain = buffer.getvalue()
    assert plain[24] == 2  # IHDR's bit depth
    data_at = plain.index(b"IDAT") - 4
    bad = _chunk(b"tEXt", b"late\0x")[:-1] + b"\0"  # its CRC's last byte changed
    source = (plain[:33] + _chunk(b"bKGD", (3).to_bytes(2, "big")) + _chunk(b"gAMA", bytes(4))
              + plain[33:data_at] + _chunk(b"gAMA", bytes([0, 0, 1, 0])) + plain[data_at:-12] + bad + plain[-12:])
    opened = open_image(source)
    assert np.array_equal(np.asarray(opened), np.asarray(Image.open(io.BytesIO(source))))
    kept = opened.info[METADATA]
    assert kept == (metadata.Chunk(1, b"bKGD", (255).to_bytes(2, "big")), metadata.Chunk(0, b"gAMA", bytes(4)))
    assert opened.info[DROPPED] == ("gAMA (a second one)", "tEXt (damaged: bad CRC)")
    (tmp_path / "g.png").write_bytes(source)
    result = run_cli("compress", tmp_path / "g.png")
    assert result.returncode == 0 and b"tRNS" not in result.stderr
    assert run_cli("decompress", tmp_path / "g.vz", "-o", tmp_path / "back.png").returncode == 0
    kinds = [kind for kind, _ in chunks_of((tmp_path / "back.png").read_bytes())]
    assert kinds == [b"IHDR", b"gAMA", b"tRNS", b"bKGD", b"IDAT", b"IEND"]


def test_a_jpeg_s_comment_and_density_come_back():
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(16, 16, 4)).save(buffer, format="JPEG", comment=b"caf\xe9 du matin", dpi=(300, 300))
    kept, _ = image_chunks(open_image(buffer.getvalue()))
    assert metadata.Chunk(1, b"tEXt", b"Comment\0caf\xe9 du matin") in kept  # Latin-1, as the JPEG held it
    assert metadata.Chunk(0, b"pHYs", struct.pack(">IIB", 11811, 11811, 1)) in kept


def test_several_files_in_worker_processes_keep_theirs(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(photo_png(16 + len(name), 20))
    assert run_cli("compress", tmp_path / "a.png", tmp_path / "b.png", "-j", "2", "--rm").returncode == 0
    assert run_cli("decompress", tmp_path / "a.vz", tmp_path / "b.vz", "--rm").returncode == 0
    for name in ("a.png", "b.png"):
        assert [kind for kind, _, _ in ancillary((tmp_path / name).read_bytes())] == [
            b"iCCP", b"gAMA", b"cHRM", b"eXIf", b"pHYs", b"tEXt", b"vpAg", b"tIME", b"zTXt"]


@pytest.mark.parametrize("file_name", sorted(metadata_files()))
def test_format_17_goldens_decode_in_a_fresh_process_with_their_metadata(file_name, tmp_path):
    """format17/*.vz: the first files with metadata. A fresh process under other kernels decodes them without
    torch to their images, each PNG holding its chunks in their places; coding the images again gives the same
    header entries' metadata and the same stream."""
    images, options = metadata_files()[file_name]
    path = GOLDEN / "format17" / file_name
    pngs_from_a_fresh_process(path, tmp_path)
    for k, (_, image) in enumerate(images):
        png = (tmp_path / f"{k}.png").read_bytes()
        with Image.open(io.BytesIO(png)) as back:
            assert np.array_equal(np.asarray(back), np.asarray(image)), (file_name, k)
        places = {metadata.AFTER_HEADER: "before", metadata.BEFORE_DATA: "before", metadata.AFTER_DATA: "after"}
        expected = [(chunk.kind, chunk.data, places[chunk.place]) for chunk in image_chunks(image)[0]]
        assert len(expected) == len(image.info.get(METADATA, ()))  # every chunk of the golden's images kept
        assert ancillary(png) == expected, (file_name, k)
    pinned = container.read(path.read_bytes())
    again = container.read(compress_images(images, **options).data)
    assert [entry.metadata for entry in again[0].images] == [entry.metadata for entry in pinned[0].images]
    assert np.array_equal(again[1], pinned[1])


def test_the_chunk_walk_goes_on_from_each_chunks_end_whatever_its_reader_read():
    """One walk serves the metadata reader and the damaged-chunk cutter: at each chunk the file sits at its data,
    and the next chunk is found from the chunk's end however much of it the caller read; a head cut short or a
    length past PNG's bound ends it."""
    body = b"".join(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
                    for kind, data in ((b"IHDR", bytes(13)), (b"tEXt", b"a\0bc"), (b"IDAT", b"xyz")))
    file = io.BytesIO(b"\x89PNG\r\n\x1a\n" + body + b"\0\0")
    file.seek(8)
    seen = []
    for start, length, kind in walk_png_chunks(file):
        seen.append((start, length, kind, file.read(1 if kind == b"tEXt" else 0)))
    assert seen == [(8, 13, b"IHDR", b""), (33, 4, b"tEXt", b"a"), (49, 3, b"IDAT", b"")]
    file = io.BytesIO(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 2**31, b"tEXt") + bytes(16))
    file.seek(8)
    assert list(walk_png_chunks(file)) == []


def test_decompress_names_a_crafted_file_s_chunk_that_fits_no_png_and_keeps_the_file(tmp_path, monkeypatch):
    """A colour profile of another colour space goes into no PNG. compress never stores one, so a file holding one
    was made otherwise: decompress said nothing of the chunk it left out, and --rm deleted the only copy of it."""
    import vaezip.metadata as vaezip_metadata

    image = Image.fromarray(smooth_rgb(16, 24, 5))
    image.info[METADATA] = (metadata.Chunk(0, b"iCCP", b"grey\0\0" + zlib.compress(GREY_PROFILE)),
                            metadata.Chunk(2, b"tEXt", b"Title\0crafted"))
    monkeypatch.setattr(vaezip_metadata, "_unfit", lambda chunk, mode: "")  # a writer that does not check
    (tmp_path / "crafted.vz").write_bytes(compress_images([("crafted.png", image)], fast=True).data)
    monkeypatch.undo()
    done = run_cli("decompress", tmp_path / "crafted.vz", "--rm")
    assert done.returncode == 0, done.stderr.decode()
    assert "warning: " in done.stderr.decode() and "crafted.png's iCCP (a GRAY profile does not fit a RGB image): " \
        "left out of its PNG; the input is kept (--rm)" in done.stderr.decode(), done.stderr.decode()
    assert (tmp_path / "crafted.vz").exists()
    png = (tmp_path / "crafted.png").read_bytes()
    assert [kind for kind, _ in chunks_of(png) if kind in (b"iCCP", b"tEXt")] == [b"tEXt"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(image))
    # a file whose chunks all fit: nothing said, and --rm deletes it
    (tmp_path / "plain.vz").write_bytes(compress_images([("plain.png", Image.open(io.BytesIO(png)))],
                                                        fast=True).data)
    done = run_cli("decompress", tmp_path / "plain.vz", "--rm")
    assert done.returncode == 0 and b"warning" not in done.stderr, done.stderr.decode()
    assert not (tmp_path / "plain.vz").exists()


def test_an_exif_block_prefixed_twice_is_kept():
    """An audit: a WebP whose EXIF chunk held 'Exif\\0\\0' before a block that already began so (Pillow's
    Exif.tobytes()) lost its EXIF as 'not a TIFF structure'; both prefixes go, the TIFF structure stays."""
    exif = Image.Exif()
    exif[0x010E] = "twice"
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    image.info["exif"] = b"Exif\0\0" + exif.tobytes()
    result = compress_images([("a", image)], fast=True)
    assert result.images[0].metadata_unkept == ()
    back = decompress_images(result.data)[0][1]
    kept = [chunk.data for chunk in back.info[METADATA] if chunk.kind == b"eXIf"]
    assert kept == [exif.tobytes()[len(b"Exif\0\0"):]]


def test_a_jpegs_unitless_pixel_aspect_is_kept():
    """An audit: a JFIF density without a unit (pixels 2:1) was left out without a word; a pHYs of unit 0 holds it."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.find(b"JFIF\0") + 7
    data[at:at + 5] = b"\0\0\2\0\1"  # unit 0, density 2 x 1
    result = compress_images([("a", open_image(bytes(data)))], fast=True)
    assert result.images[0].metadata_unkept == ()
    back = decompress_images(result.data)[0][1]
    assert [(chunk.kind, chunk.data) for chunk in back.info[METADATA]] == [(b"pHYs", struct.pack(">IIB", 2, 1, 0))]
