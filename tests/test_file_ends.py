"""What follows an image in its file (vaezip/file_ends.py): a second netpbm image is refused, other bytes are named
and keep the input under `compress --rm` (they were deleted without a word); padding and a file's own structures
(a JPEG's EXIF thumbnail, a TGA's footer and extension area, a BMP's embedded colour profile) are not claimed."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, smooth_rgb
from vaezip.errors import ImageError
from vaezip import file_ends
from vaezip.file_ends import ENDS_KNOWN, LOOK_AHEAD, beyond_pixels, following, is_after_image
from vaezip import png16
from vaezip.images import open_image, sniff_bits_per_channel
from vaezip.metadata import DROPPED, METADATA, not_metadata

PROFILE = bytes(range(16)) + b"RGB " + bytes(range(236)) * 3


def _images():
    rng = np.random.default_rng(5)
    for mode in ("1", "L", "P", "RGB", "RGBA", "LA"):
        for width, height in ((1, 1), (7, 5), (33, 17)):
            pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
            rgba = Image.fromarray(pixels, "RGBA")
            yield rgba.convert("RGB").quantize(16) if mode == "P" else rgba.convert(mode)


SAVED = (("PPM", {}), ("BMP", {}), ("DIB", {}), ("GIF", {}), ("WEBP", {"lossless": True}), ("JPEG", {}),
         ("JPEG", {"progressive": True, "exif": Image.Exif().tobytes()}), ("ICO", {}), ("QOI", {}), ("TGA", {}),
         ("TGA", {"compression": "tga_rle"}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
         ("TIFF", {"compression": "jpeg", "exif": Image.Exif().tobytes()}), ("TIFF", {"compression": "group4"}))


def _saved(image: Image.Image, format: str, options: dict) -> bytes | None:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format, **options)
    except (OSError, ValueError, KeyError):  # a mode the format does not hold
        return None
    return buffer.getvalue()


def test_each_format_s_end_is_found_in_every_file_pillow_writes():
    checked = set()
    for image in _images():
        for format, options in SAVED:
            data = _saved(image, format, options)
            if data is None:
                continue
            opened = Image.open(io.BytesIO(data))
            at = opened.tile[0][2] if len(opened.tile) == 1 else None
            assert following(data, opened.format, at) is None, (image.mode, image.size, format, options)
            assert following(data + b"\r\n\0 ", opened.format, at) is None, (image.mode, format)
            twice = following(data + data, opened.format, at)
            assert twice is not None and twice.count == len(data), (image.mode, format)
            assert twice.another_image == (format == "PPM")
            checked.add(opened.format)
    assert checked == ENDS_KNOWN - {"MPO", "CUR"}
    # a cursor is an icon of type 2 (Pillow writes none)
    options = {"sizes": [(16, 16)], "bitmap_format": "bmp"}
    cursor = bytearray(_saved(Image.fromarray(smooth_rgb(16, 16, 1)), "ICO", options))
    cursor[2] = 2
    assert Image.open(io.BytesIO(bytes(cursor))).format == "CUR"
    assert following(bytes(cursor), "CUR") is None and following(bytes(cursor) + b"PK", "CUR").count == 2


def test_files_pillow_reads_with_stray_bytes_and_tga_areas():
    jpeg = _saved(Image.fromarray(smooth_rgb(8, 8, 1)), "JPEG", {})
    stray = jpeg[:20] + b"\0\0" + jpeg[20:]  # between two segments: libjpeg warns and passes over them
    assert following(stray + b"PKzip", "JPEG").count == 5 and following(jpeg + b"\xff" * 16, "JPEG") is None
    assert following(jpeg + b"\xff\xd9", "JPEG") is None  # an end-of-image marker written twice
    gif = _saved(Image.fromarray(smooth_rgb(8, 8, 1)).quantize(8), "GIF", {})
    assert following(gif[:-1] + b"\0;" + b"PKzip", "GIF").count == 5  # a stray byte before the trailer
    # an RLE8 BMP without an end-of-bitmap code: Pillow stops when its pixels are filled, and so does the walk
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    rle = bytes([4, 9, 0, 0])  # a run of 4, end of line
    info = struct.pack("<IiiHHIIiiII", 40, 4, 1, 1, 8, 1, len(rle), 0, 0, 256, 0)
    offset = 14 + len(info) + len(palette)
    bmp = b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle
    assert np.asarray(Image.open(io.BytesIO(bmp))).tolist() == [[9, 9, 9, 9]]
    # (its last end-of-line code, which is not followed by an end of bitmap, counts with what follows)
    assert following(bmp, "BMP") is None and following(bmp + b"PK\0\1zip", "BMP").count == 9
    # ImageMagick codes each row out to its padded width, then ends the line: Pillow cuts the run at the row's end
    rle = bytes([4, 7, 0, 0, 4, 9, 0, 1])
    info = struct.pack("<IiiHHIIiiII", 40, 3, 2, 1, 8, 1, len(rle), 0, 0, 256, 0)
    bmp = b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle
    assert np.asarray(Image.open(io.BytesIO(bmp))).tolist() == [[9, 9, 9], [7, 7, 7]]
    assert following(bmp, "BMP") is None and following(bmp + b"PK", "BMP").count == 2
    # the last row's padding as a run of its own, and a literal run longer than the pixels left (Pillow stops in it)
    for codes, pixels in ((bytes([1, 5, 1, 6, 1, 7, 1, 0, 0, 0, 0, 1]), [5, 6, 7]),
                          (bytes([0, 8, 1, 2, 3, 4, 5, 9, 9, 9, 0, 0, 0, 1]), [1, 2, 3, 4, 5])):
        info = struct.pack("<IiiHHIIiiII", 40, len(pixels), 1, 1, 8, 1, len(codes), 0, 0, 256, 0)
        bmp = b"BM" + struct.pack("<IHHI", offset + len(codes), 0, 0, offset) + info + palette + codes
        assert np.asarray(Image.open(io.BytesIO(bmp))).tolist() == [pixels]
        assert following(bmp, "BMP") is None and following(bmp + b"PK", "BMP").count == 2
    # without an end code, a file after it that starts as one (a TGA's first bytes) is counted whole
    tga = _saved(Image.fromarray(smooth_rgb(2, 2, 3)), "TGA", {})
    assert tga[:2] == b"\0\0" and following(bmp[:-4] + tga, "BMP").count == len(tga)
    # A TGA 2.0 extension area (Photoshop writes one): the file's own, left out as metadata, not bytes after it
    tga = _saved(Image.fromarray(smooth_rgb(4, 4, 1)), "TGA", {})[:-26]
    area = struct.pack("<H", 495) + b"me".ljust(41, b"\0") + bytes(452)
    with_area = tga + area + struct.pack("<II", len(tga), 0) + b"TRUEVISION-XFILE.\0"
    assert following(with_area, "TGA") is None
    assert open_image(with_area).info[DROPPED] == ("TGA extension area (a TGA's own fields)",)
    # two such files one after the other: the first footer after the pixels is the first file's, and ends it
    assert beyond_pixels(with_area + with_area, "TGA").areas == ("TGA extension area (a TGA's own fields)",)
    assert following(with_area + with_area, "TGA").count == len(with_area)
    pillow_tga = _saved(Image.fromarray(smooth_rgb(4, 4, 2)), "TGA", {})  # its footer points to nothing
    # a TGA without a footer (ImageMagick writes none), then one with: the second's footer is not the first's
    bare = pillow_tga[:-26]
    assert following(bare + pillow_tga, "TGA").count == len(pillow_tga)
    assert following(bare + b"PKzip" + pillow_tga, "TGA").count == len(pillow_tga) + 5
    assert beyond_pixels(pillow_tga + with_area, "TGA").areas == ()
    assert following(pillow_tga + with_area, "TGA").count == len(with_area)
    # bytes after the footer: what follows
    assert open_image(with_area + b"PK").info[DROPPED] == ("TGA extension area (a TGA's own fields)",
                                                           "2 bytes after the image's end")


def test_plain_and_deep_pnm_ends_and_what_is_past_the_look_ahead():
    p3 = b"P3\n# a comment\n2 1\n255\n1 2 3\n4 5 6\n"
    assert following(p3, "PPM") is None
    assert following(p3 + b"junk", "PPM").count == 5  # from the last sample's end
    assert following(p3.replace(b"4 5", b"4 # why not\n5") + b"P3 1 1 255 0 0 0", "PPM").another_image
    p1 = b"P1 3 2 010\n1 1 0\n"
    assert following(p1, "PPM") is None and following(p1 + b"1", "PPM").count == 2
    deep = b"P6 1 1 65535\n" + bytes(6)
    assert following(deep, "PPM") is None and following(deep + b"x", "PPM").count == 1
    # numbers as Pillow reads them (Python's int), header comments where it reads them: after the last number, inside
    # a number
    for header in (b"P5 +2 1 255\n", b"P5 2 1 2_55\n"):
        assert following(header + b"\1\2", "PPM") is None and following(header + b"\1\2PK", "PPM").count == 2
    for header, pixels in ((b"P5 1 1 255#c\n\n", 1), (b"P5 1 1 255#xP5 \n\n", 1), (b"P5\n1#x\n0 1\n255\n", 10)):
        data = header + b"\x80" * pixels
        assert Image.open(io.BytesIO(data)).tile[0][2] == len(header)
        assert following(data, "PPM") is None and following(data + b"PK", "PPM").count == 2
    # a header's comment of any length; comments among the samples, across the reader's windows too
    assert following(b"P2 #" + b"c" * 5000 + b"\n2 1 255\n1 2\nPK", "PPM").count == 3
    samples = b" ".join(b"%d" % (k % 256) for k in range(3 * 700 * 700))
    noted = samples.replace(b" 7 ", b" 7 # seven\n ")
    assert len(noted) > 2**21
    for body in (samples, noted):
        plain = b"P3 700 700 255\n" + body
        assert following(plain + b"\n", "PPM") is None and following(plain + b" 12", "PPM").count == 3
    # a comment is taken out with its line's end, as Pillow takes it out: the numbers either side join
    joined = b"P2 2 1 255\n1 2#c\n3"
    assert np.asarray(Image.open(io.BytesIO(joined))).tolist() == [[1, 23]]
    assert following(joined, "PPM") is None and following(joined + b" 4", "PPM").count == 2
    # padding past the look-ahead is something; counts are exact
    assert following(b"P5 1 1 255\n\0" + bytes(LOOK_AHEAD + 1), "PPM").describe() == "1048577 bytes after the " \
        "image's end"
    # a file not as its format says claims nothing (Pillow, which reads it, says what is wrong)
    assert following(b"P6 1 1", "PPM") is None and following(b"GIF89a", "GIF") is None


def _reference_plain_end(data: bytes, start: int, count: int, single_digits: bool) -> int | None:
    """Where the count-th sample of a plain PNM ends, byte by byte: comments out with their line's end."""
    seen, position, last = 0, start, None
    while position < len(data):
        byte = data[position]
        if byte == ord("#"):
            while position < len(data) and data[position] not in b"\r\n":
                position += 1
            position += 1
            continue
        if byte in b" \t\n\v\f\r":
            if last is not None:
                seen, last = seen + 1, None
                if seen == count:
                    return ends
        elif single_digits:
            seen += 1
            if seen == count:
                return position + 1
        else:
            last = ends = position + 1
        position += 1
    return ends if last is not None and seen + 1 == count else None


def test_the_plain_pnm_reader_s_windows_agree_with_a_byte_by_byte_reading(monkeypatch):
    rng = np.random.default_rng(3)
    pieces = [b" ", b"\n", b"\r\n", b"\r", b"\t", b"# c\n", b"#\r", b"#x#y\r\n", b"#"]
    for window in (1, 2, 3, 5, 8, 64):
        monkeypatch.setattr(file_ends, "_PLAIN_WINDOW", window)
        for _ in range(60):
            single = bool(rng.integers(0, 2))
            body = b"".join((b"01"[int(rng.integers(0, 2))] if single else b"%d" % rng.integers(0, 300)).to_bytes(
                1, "big") if single else b"%d" % rng.integers(0, 300)
                + pieces[int(rng.integers(0, len(pieces)))] * int(rng.integers(0, 2)) for _ in range(40))
            count = int(rng.integers(1, 30))
            assert file_ends._plain_end(body, 0, count, single) == _reference_plain_end(body, 0, count, single), (
                window, single, count, body)


def test_bmp_rle_and_its_embedded_colour_profile(tmp_path):
    # RLE8: a run of 2, a literal of 3 (padded to 4 bytes), end of line, end of bitmap
    rle = bytes([2, 7, 0, 3, 1, 2, 3, 0, 0, 0, 0, 1])
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, 5, 1, 1, 8, 1, len(rle), 0, 0, 256, 0)
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset)
    bmp = head + info + palette + rle
    opened = Image.open(io.BytesIO(bmp))
    at = opened.tile[0][2]
    assert np.asarray(opened).tolist() == [[7, 7, 1, 2, 3]]
    assert following(bmp, "BMP", at) is None and following(bmp, "BMP") is None
    assert following(bmp + b"more", "BMP", at).count == 4
    # A version-5 header embedding a colour profile after the pixels: Pillow reads none of it; vaezip keeps it
    pixels = smooth_rgb(3, 2, 1)
    rows = b"".join(pixels[y, :, ::-1].tobytes() + b"\0\0" for y in range(2, -1, -1))  # bottom-up BGR, 4-byte rows
    v5 = bytearray(struct.pack("<IiiHHIIiiII", 124, 2, 3, 1, 24, 0, len(rows), 0, 0, 0, 0) + bytes(84))
    v5[56:60] = b"DEBM"  # CSType PROFILE_EMBEDDED
    v5[112:120] = struct.pack("<II", 124 + len(rows), len(PROFILE))
    offset = 14 + 124
    bmp = b"BM" + struct.pack("<IHHI", offset + len(rows) + len(PROFILE), 0, 0, offset) + bytes(v5) + rows + PROFILE
    path = tmp_path / "profile.bmp"
    path.write_bytes(bmp)
    image = open_image(path)
    assert np.array_equal(np.asarray(image), pixels) and image.info[DROPPED] == ()
    assert [chunk.kind for chunk in image.info[METADATA]] == [b"iCCP"]
    path.write_bytes(bmp + b"appended")
    assert open_image(path).info[DROPPED] == ("8 bytes after the image's end",)
    # a linked profile: the name of a profile's file, which no .vz keeps (named: --rm keeps the input but --strip)
    v5[56:60] = b"KNIL"
    name = b"C:\\profiles\\sRGB.icc\0"
    v5[112:120] = struct.pack("<II", 124 + len(rows), len(name))
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(rows) + len(name), 0, 0, offset) + bytes(v5) + rows
                     + name)
    linked = open_image(path)
    assert np.array_equal(np.asarray(linked), pixels) and not linked.info[METADATA]
    assert linked.info[DROPPED] == ("BMP linked colour profile (the name of a profile's file, not kept)",)
    v5[112:120] = struct.pack("<II", 124 + len(rows), len(name) + 200)  # its size overstated: the file's end not its
    overstated = b"BM" + struct.pack("<IHHI", offset + len(rows) + len(name), 0, 0, offset) + bytes(v5) + rows + name
    assert following(overstated + b"PK\3\4 archive", "BMP").count == len(name) + 12


def test_a_second_netpbm_image_is_refused_and_appended_bytes_keep_the_input(tmp_path):
    one = _saved(Image.fromarray(smooth_rgb(8, 8, 3)), "PPM", {})
    stream = tmp_path / "two.ppm"
    stream.write_bytes(one + one)
    with pytest.raises(ImageError, match="more than one image"):
        open_image(stream)
    refused = run_cli("compress", stream, "--fast", "--rm")
    assert refused.returncode != 0 and stream.exists() and not (tmp_path / "two.vz").exists()
    assert b"more than one image" in refused.stderr and b"Traceback" not in refused.stderr
    deep = b"P6 2 1 65535\n" + bytes(12)  # the 16-bit path too
    with pytest.raises(ImageError, match="more than one image"):
        open_image(deep + b"\nP6 2 1 65535\n" + bytes(12))
    # A motion photo: a phone's video after its JPEG, deleted by --rm without a word
    jpeg = tmp_path / "motion.jpg"
    jpeg.write_bytes(_saved(Image.fromarray(smooth_rgb(8, 8, 4)), "JPEG", {}) + b"\0\0\0\x18ftypmp42 a video")
    kept = run_cli("compress", jpeg, "--fast", "--rm")
    assert kept.returncode == 0 and jpeg.exists() and (tmp_path / "motion.vz").exists()
    assert b"20 bytes after the image's end; the input is kept (--rm" in kept.stderr, kept.stderr
    # not metadata: kept with --strip and with a format that keeps no metadata, where the hint is not given
    for options in (("--strip",), ("--format", "16")):
        kept = run_cli("compress", jpeg, "--fast", "--rm", "-f", "-v", *options)
        assert kept.returncode == 0 and jpeg.exists(), (options, kept.stderr)
        assert b"20 bytes after the image's end; the input is kept (--rm)\n" in kept.stderr, (options, kept.stderr)
        assert b"not kept (no .vz holds it): 20 bytes after the image's end" in kept.stdout + kept.stderr
    # padding is nothing of the file's: deleted as before
    bmp = tmp_path / "padded.bmp"
    bmp.write_bytes(_saved(Image.fromarray(smooth_rgb(8, 8, 5)), "BMP", {}) + b"\n")
    removed = run_cli("compress", bmp, "--fast", "--rm")
    assert removed.returncode == 0 and not bmp.exists() and b"warning" not in removed.stderr, removed.stderr


def _tiff(entries: dict[int, tuple[int, list[int]]], data: bytes, tail: bytes = b"", next_directory: int = 0) -> bytes:
    """A little-endian TIFF: its header, `data` at offset 8, then one directory of `entries` (tag: (type, values),
    each of type 3, 4, 7, 9 or 13, inline where it fits), its values, then `tail`; `next_directory` -1 points the
    chain back to the directory itself."""
    directory = 8 + len(data)
    values_at = directory + 2 + 12 * len(entries) + 4
    table, values = b"", b""
    for tag, (kind, numbers) in sorted(entries.items()):
        packed = struct.pack(f"<{len(numbers)}{ {3: 'H', 7: 'B', 9: 'i'}.get(kind, 'I')}", *numbers)
        if len(packed) <= 4:
            table += struct.pack("<HHI", tag, kind, len(numbers)) + packed.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, len(numbers), values_at + len(values))
            values += packed
    chain = directory if next_directory == -1 else next_directory
    return (b"II*\0" + struct.pack("<I", directory) + data + struct.pack("<H", len(entries)) + table
            + struct.pack("<I", chain) + values + tail)


def test_a_tiff_s_end_is_after_every_directory_and_what_its_entries_point_to(tmp_path):
    """A TIFF's structures lie anywhere in its file: its end is after the last byte any directory of its chain, or
    one an entry points to (SubIFDs, Exif), takes with its values and strips; bytes after that keep the input."""
    image = Image.fromarray(smooth_rgb(9, 7, 6))
    for options in ({"big_tiff": True}, {"compression": "tiff_deflate", "tiffinfo": {270: "a description"}}):
        data = _saved(image, "TIFF", options)
        assert following(data, "TIFF") is None and following(data + b"\0\0", "TIFF") is None, options
        assert following(data + b"PK\3\4", "TIFF").count == 4, options
        assert "4 bytes after the image's end" in open_image(data + b"PK\3\4").info[DROPPED], options
    deep = np.arange(6 * 5, dtype=np.uint16).reshape(5, 6) * 2000
    data = _saved(Image.fromarray(deep), "TIFF", {})
    assert open_image(data).info.get(DROPPED, ()) == ()
    assert open_image(data + b"PK").info[DROPPED] == ("2 bytes after the image's end",)
    grey = {256: (3, [4]), 257: (3, [2]), 258: (3, [8]), 259: (3, [1]), 262: (3, [1]), 273: (4, [8]),
            277: (3, [1]), 278: (3, [2]), 279: (4, [8])}
    pixels = bytes(range(8))
    plain = _tiff(grey, pixels)
    assert np.array_equal(np.asarray(open_image(plain)), np.arange(8, dtype=np.uint8).reshape(2, 4))
    assert following(plain, "TIFF") is None and following(plain + b"more", "TIFF").count == 4
    # strips after the directory and a second directory pointed to (as a SubIFD, and an Exif one) past them
    moved = {**grey, 273: (4, [0])}
    head = len(_tiff(moved, b""))
    second = _tiff(grey, b"")[8:]  # a second directory (its strip offset, 8, points into the first's header)
    for tag, kind in ((330, 13), (34665, 4)):
        pointing = {**moved, 273: (4, [head]), tag: (kind, [head + len(pixels)])}
        assert len(_tiff(pointing, b"")) == head + 12
        pointing = {**pointing, 273: (4, [head + 12]), tag: (kind, [head + 12 + len(pixels)])}
        data = _tiff(pointing, b"", pixels + second)
        assert following(data, "TIFF") is None, tag
        # the second directory cut short is passed over (as Pillow passes over what it cannot read): named
        assert following(data[:-1], "TIFF").count == len(second) - 1, tag
        assert following(data + b"PK", "TIFF").count == 2, tag
    # strips by the million are read a part at a time; a million SubIFDs are not walked, but what the walk found so
    # far holds (what follows it keeps the input: a review)
    many = (1 << 20) + 5
    counts = (4, [1] * (many - 1) + [len(pixels)])
    last = len(_tiff({**grey, 273: (4, [8] * many), 279: counts}, b""))  # the last strip after the directory's values
    strips = _tiff({**grey, 273: (4, [8] * (many - 1) + [last]), 279: counts}, b"", pixels)
    assert following(strips, "TIFF") is None and following(strips + b"PK", "TIFF").count == 2
    assert following(_tiff({**grey, 330: (4, list(range(8, 8 + many)))}, pixels) + b"PK", "TIFF").count == 2
    # a SubIFDs array of more entries than a walk reads (one offset 70,000 times): walked so far
    target = _tiff(grey, b"")[8:]  # a directory whose values are all inline: the same bytes anywhere
    at = len(_tiff({**grey, 330: (4, [0] * 70_000)}, pixels))
    assert following(_tiff({**grey, 330: (4, [at] * 70_000)}, pixels, target), "TIFF").count == len(target)
    # one SubIFDs array that two directories share is read once (else twice its 40,000 entries end the walk early)
    values_at = 8 + len(pixels) + 2 + 12 * (len(grey) + 1) + 4
    at = len(_tiff({**grey, 330: (4, [0] * 40_000)}, pixels))
    sharing = struct.pack("<HHHII", 1, 330, 4, 40_000, values_at) + bytes(4)  # a directory pointing to that array
    shared = _tiff({**grey, 330: (4, [at + len(sharing)] + [at] * 39_999)}, pixels, sharing + target)
    assert following(shared, "TIFF") is None and following(shared + b"PK", "TIFF").count == 2
    big = {tag: (3, [0]) for tag in range(1000, 41000)}  # two such directories: more entries than a walk reads
    at = len(_tiff({**grey, **big, 330: (4, [0])}, pixels))
    second = _tiff(big, b"")[8:]
    budget = _tiff({**grey, **big, 330: (4, [at])}, pixels, second)
    assert following(budget + b"PK", "TIFF").count == len(second) + 2
    # a signed directory offset below 0 points nowhere (it read the file's end: a review)
    negative = _tiff({**grey, 34665: (9, [-18])}, pixels)
    assert following(negative, "TIFF") is None
    tail = struct.pack("<HHHII", 1, 270, 2, 8, len(negative) + 10) + bytes(4)  # a directory whose text ends the file
    assert following(negative + tail, "TIFF").count == 18
    # GDAL's cloud-optimised files repeat each tile's last 4 bytes after it, as their header says
    ghost = b"GDAL_STRUCTURAL_METADATA_SIZE=000040 bytes\nBLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
    at = len(_tiff(grey, ghost))  # the pixels after the directory, as GDAL lays them out
    cog = _tiff({**grey, 273: (4, [at])}, ghost, pixels + pixels[-4:])
    assert following(cog, "TIFF") is None and following(cog + b"PK", "TIFF").count == 2
    assert following(_tiff({**grey, 273: (4, [at])}, bytes(len(ghost)), pixels + pixels[-4:]), "TIFF").count == 4
    # a strip's byte count overstated past the file's end (old writers; Pillow reads what it needs) is passed over:
    # appended bytes are not its (a review)
    over = _tiff({**moved, 273: (4, [head]), 279: (4, [len(pixels) + 64])}, b"", pixels)
    assert following(over + b"PK\3\4 secret", "TIFF").count == len(pixels) + 11
    # a chain back to its own directory ends; strip offsets of a signed type are read (as Pillow reads them)
    assert following(_tiff(grey, pixels, next_directory=-1) + b"PK", "TIFF").count == 2
    signed = {**moved, 273: (9, [head]), 279: (9, [len(pixels)])}
    assert following(_tiff(signed, b"", pixels), "TIFF") is None
    assert following(_tiff(signed, b"", pixels) + b"PK", "TIFF").count == 2
    # what points past the file's end is passed over, as Pillow passes over it (a review: appended bytes were then
    # claimed by no one): strips, a private tag's value, an Exif directory's next link
    assert following(_tiff({**grey, 273: (4, [4096])}, pixels) + b"PK", "TIFF").count == 2
    private = bytearray(_tiff({**grey, 65000: (7, [0] * 100)}, pixels))
    struct.pack_into("<I", private, 8 + len(pixels) + 2 + 12 * len(grey) + 8, 0xFFFFFF00)  # its value's offset
    assert following(bytes(private) + b"PK", "TIFF").count == 2 + 100  # (the value no one points to now)
    exif = {**moved, 273: (4, [head + 12]), 34665: (4, [head + 12 + len(pixels)])}
    assert len(_tiff(exif, b"")) == head + 12
    linked = _tiff(exif, b"", pixels + _tiff(grey, b"", next_directory=0xDEADBEEF)[8:])
    assert following(linked, "TIFF") is None and following(linked + b"PK", "TIFF").count == 2
    path = tmp_path / "appended.tif"
    path.write_bytes(plain + b"PK\3\4 an archive")
    kept = run_cli("compress", path, "--fast", "--rm")
    assert kept.returncode == 0 and path.exists() and (tmp_path / "appended.vz").exists(), kept.stderr
    assert b"15 bytes after the image's end; the input is kept (--rm" in kept.stderr, kept.stderr


def test_a_gif_without_its_trailer_ends_after_its_last_whole_block(tmp_path):
    """Pillow reads a GIF without its trailer (it passes over stray bytes to the file's end): bytes appended to one
    were claimed by no one (the walk ran off the file's end) and --rm deleted them."""
    image = Image.fromarray(smooth_rgb(30, 20, 8)).quantize(64)
    whole = _saved(image, "GIF", {"comment": b"a comment"})
    assert whole.endswith(b";") and following(whole, "GIF") is None
    cut = whole[:-1]
    assert following(cut, "GIF") is None and following(cut + b"\0\0", "GIF") is None
    assert following(cut + b"\0;", "GIF") is None  # a stray terminator before the trailer: padding
    for tail in (b"PK\3\4 an archive", b"PK\3\4 an archive with ; inside", b"PK!\x01\x05abc",
                 b"!\xfe\x40cut short", b"!\n\x05a tar" + bytes(600), b"!\n\x05a tar" + bytes(600) + b";" + bytes(9)):
        assert following(cut + tail, "GIF").count == len(tail), tail
    assert following(cut[:-1], "GIF") is None  # the image's terminator missing too: Pillow reads it whole
    # (the image's only: an extension's last sub-block ending the file is appended bytes, a review)
    assert following(cut + b"!\xf9\x0bsecret data", "GIF").count == 14
    # blocks by the million are not walked (nor named) one by one to the end: what follows keeps the input
    crafted = beyond_pixels(cut + b"!\xfe\x00" * 100_000 + b";", "GIF")  # empty comments
    assert crafted.following is not None and 0 < crafted.following.count < 300_000 and not crafted.areas
    crafted = beyond_pixels(cut + b"!\x02\x00" * 100_000 + b";", "GIF")  # named once
    assert crafted.following.count == 300_001 and crafted.areas == ("GIF extension 0x02 (not kept)",)
    many = beyond_pixels(cut + b"".join(b"!\xff\x0bAPP%08d\x00" % k for k in range(40)) + b";", "GIF")
    assert many.following is None and len(many.areas) == 16
    assert following(cut + bytes(1 << 22) + b"x", "GIF").count == (1 << 22) + 1  # past the look-ahead's padding
    path = tmp_path / "no-trailer.gif"
    path.write_bytes(cut + b"PK\3\4 an archive")
    assert np.array_equal(np.asarray(open_image(path)), np.asarray(Image.open(io.BytesIO(whole))))
    kept = run_cli("compress", path, "--fast", "--rm")
    assert kept.returncode == 0 and path.exists() and (tmp_path / "no-trailer.vz").exists(), kept.stderr
    assert b"15 bytes after the image's end; the input is kept (--rm" in kept.stderr, kept.stderr


def test_changed_pixels_claim_nothing_and_damaged_files_raise_nothing_but_image_errors():
    """A raw file's pixels changed leave its end where it was; flipped, cut and inserted bytes in every format's file
    never make following() raise or walk for ever, and open_image refuses with an ImageError where it refuses."""
    rng = np.random.default_rng(12)
    image = Image.fromarray(smooth_rgb(9, 13, 2))
    for format in ("PPM", "BMP", "TGA"):
        data = bytearray(_saved(image, format, {}))
        pixels = slice(len(data) - 9 * 13 * 3 - (26 if format == "TGA" else 0), len(data) - (26 if format == "TGA"
                                                                                           else 0))
        assert following(bytes(data), format) is None
        data[pixels] = rng.integers(0, 256, 9 * 13 * 3, dtype=np.uint8).tobytes()
        assert following(bytes(data), format) is None, format
        assert following(bytes(data) + b"PK", format).count == 2, format
    rng = np.random.default_rng(11)
    image = Image.fromarray(smooth_rgb(9, 13, 2))
    for format, options in SAVED:
        data = _saved(image, format, options)
        if data is None:  # a mode the format does not hold (a group 4 TIFF's is 1-bit)
            continue
        for _ in range(40):
            damaged = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, len(damaged)))
                choice = rng.integers(0, 3)
                if choice == 0:
                    damaged[at] = int(rng.integers(0, 256))
                elif choice == 1:
                    del damaged[at:at + int(rng.integers(1, 64))]
                else:
                    damaged[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
            following(bytes(damaged), format)
            try:
                open_image(bytes(damaged))
            except ImageError:
                pass


def test_metadata_no_file_keeps_keeps_the_input_with_an_older_format_too(tmp_path):
    """--format 16 keeps no metadata; an input with metadata no .vz keeps (a private chunk unsafe to copy) was then
    deleted by --rm without a word, where the default format's warning kept it (a review)."""
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(8, 8, 6)).save(buffer, format="PNG")
    data, body = buffer.getvalue(), b"private"
    chunk = struct.pack(">I", len(body)) + b"prVT" + body + struct.pack(">I", zlib.crc32(b"prVT" + body))
    png = tmp_path / "private.png"
    for options, kept in ((("--format", "16"), True), (("--strip",), False)):
        png.write_bytes(data[:33] + chunk + data[33:])
        done = run_cli("compress", png, "--fast", "--rm", "-f", *options)
        assert done.returncode == 0 and png.exists() == kept, (options, done.stderr)
        assert (b"cannot keep private.png's prVT (unsafe to copy); the input is kept" in done.stderr) == kept


def test_what_pillow_does_not_read_keeps_the_input_whatever_the_options(tmp_path):
    """Formats Pillow reads in part or through a conversion (an EPS rendered, a DDS's first surface, a PSD's
    composite, an SGI...: only the formats vaezip reads whole are deleted by --rm), a TIFF's extra samples, a PNM of
    a maximum value below 255 (its samples scaled), an icon of two images of one size (Pillow reads one: refused)."""
    for entry in (file_ends.describe_unread("TIFF extra samples"), file_ends.describe_unread("X", "why (and more)"),
                  file_ends.describe_unread("EPS file as it is", "--rm deletes PNG files only", whole=True)):
        assert not_metadata(entry) and not is_after_image(entry), entry
    assert not not_metadata("TIFF tags Artist (a TIFF's own tags are not kept)")
    pixels = smooth_rgb(8, 8, 7)
    files = {"x.sgi": _saved(Image.fromarray(pixels), "SGI", {}), "m.pgm": b"P5 4 1 100\n\x10\x20\x30\x40"}
    rgba = _saved(Image.fromarray(np.dstack([pixels, pixels[..., :1]]), "RGBA"), "TIFF", {})
    directory = struct.unpack_from("<I", rgba, 4)[0]
    tiff = bytearray(rgba)
    for entry in range(struct.unpack_from("<H", tiff, directory)[0]):  # ExtraSamples 2 (alpha) -> 0 (unspecified)
        if struct.unpack_from("<H", tiff, directory + 2 + 12 * entry)[0] == 338:
            struct.pack_into("<H", tiff, directory + 2 + 12 * entry + 8, 0)
    files["x.tif"] = bytes(tiff)
    expected = {"x.sgi": "SGI file as it is (not read whole: --rm deletes PNG, TIFF, JPEG, WebP, GIF, BMP, PNM, QOI, "
                         "TGA and ICO files only)",
                "m.pgm": "PNM maximum value 100 (not read: samples scaled to 255)",
                "x.tif": "TIFF extra samples (not read)"}
    for name, data in files.items():
        assert open_image(data).info[DROPPED] == (expected[name],), name
        (tmp_path / name).write_bytes(data)
        done = run_cli("compress", tmp_path / name, "--fast", "--rm", "--strip", "-o", tmp_path / f"{name}.vz")
        assert done.returncode == 0 and (tmp_path / name).exists(), (name, done.stderr)
        assert f"cannot keep {name}'s {expected[name]}; the input is kept (--rm)".encode() in done.stderr, done.stderr
    assert open_image(_saved(Image.fromarray(pixels), "PPM", {})).info[DROPPED] == ()
    # image data in a TIFF's tags (a DNG's full image in a SubIFD, Photoshop's layers): not metadata either
    layers = io.BytesIO()
    Image.fromarray(pixels).save(layers, format="TIFF", tiffinfo={37724: b"Adobe Photoshop Document Data Block\0"})
    assert open_image(layers.getvalue()).info[DROPPED] == ("TIFF ImageSourceData (not read: Photoshop's layers)",)
    # a GIF's extensions Pillow passes over are named (metadata); a PNM's header comments are kept
    gif = bytearray(_saved(Image.fromarray(pixels).quantize(8), "GIF", {}))
    xmp = b"\x21\xff\x0bXMP DataXMP\x03<x>\x00"
    text = b"\x21\x01\x0c" + bytes(12) + b"\x02hi\x00"
    gif[-1:] = b"\x21\xfe\x05later\x00;"  # a comment after the image
    magick = b"\x21\xff\x0bImageMagick\x0dgamma=0.45455\x00"  # what ImageMagick writes in every GIF: nothing
    gif[13 + 3 * 8: 13 + 3 * 8] = xmp + magick + text  # after the global colours, before the image
    assert open_image(bytes(gif)).info[DROPPED] == ("GIF application extension XMP DataXMP (not kept)",
                                                    "GIF plain text (not read: text drawn onto the image)",
                                                    "GIF comment after the image (not kept)")
    gif[-10:] = b"\x21\xfe\x00;"  # an empty comment holds nothing
    assert "GIF comment after the image (not kept)" not in open_image(bytes(gif)).info[DROPPED]
    gif[13 + 3 * 8: 13 + 3 * 8] = b"\x21\x02\x01x\x00"  # an extension of a label no writer uses, before the image
    assert "GIF extension 0x02 (not kept)" in open_image(bytes(gif)).info[DROPPED]
    gif[-1:] = b"\x21\x02\x01x\x00;"  # after it: bytes appended (an archive's, read as blocks), whatever follows
    assert open_image(bytes(gif)).info[DROPPED][-1:] == ("6 bytes after the image's end",)
    assert open_image(b"P5\n# Created by GIMP\n#\n2 1\n255\n\x01\x02").info["comment"] == b"Created by GIMP"
    assert "comment" not in open_image(b"P5\n#\n#\n2 1\n255\n\x01\x02").info
    # two entries of one size in an icon: Pillow reads one of them
    icon = bytearray(_saved(Image.fromarray(pixels), "ICO", {"sizes": [(8, 8)]}))
    (entry_size, entry_offset) = struct.unpack_from("<II", icon, 6 + 8)
    second = icon[entry_offset: entry_offset + entry_size]
    twice = bytearray(icon[:6 + 16]) + icon[6:6 + 16] + icon[6 + 16:]
    struct.pack_into("<H", twice, 4, 2)
    struct.pack_into("<I", twice, 6 + 12, entry_offset + 16)
    struct.pack_into("<I", twice, 6 + 16 + 12, len(twice))
    twice += second
    with pytest.raises(ImageError, match="icon holds 2 images"):
        open_image(bytes(twice))


def test_an_alpha_mask_a_colour_map_an_icon_s_16_bit_png_and_an_avif_brand_pillow_narrows():
    """Pillow reads an ARGB1555 BMP as RGB, a TIFF colour map's 16-bit entries as value // 256, an icon's 16-bit PNG
    in 8 bits, and vaezip took a 10-bit AVIF of major brand mif1 for an 8-bit one: named or refused."""
    pixels = struct.pack("<HH", 0x8000 | 0x7C00, 0x001F)
    for colours, alpha, dropped in ((0x1F, 0x8000, ("BMP alpha (not read: Pillow reads its alpha mask's bits as no "
                                                    "alpha)",)),
                                    (0x1F, 0, ()), (0x1F, 0x10000, ())):  # no bits within the pixel: no alpha
        info = struct.pack("<IiiHHIIiiII", 56, 2, 1, 1, 16, 3, len(pixels), 0, 0, 0, 0) + struct.pack(
            "<IIII", 0x7C00, 0x3E0, colours, alpha)
        offset = 14 + len(info)
        bmp = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels
        assert Image.open(io.BytesIO(bmp)).mode == "RGB" and open_image(bmp).info[DROPPED] == dropped
    for palette, dropped in ((list(range(256)) * 3, ()), ([258] * 768, ("TIFF colour map (not read: its 16-bit entries "
                                                                        "narrowed to 8)",)),
                             ([1 << 8] * 768, ()),  # v * 256, as Pillow writes its own
                             ([256, 257] * 384, ("TIFF colour map (not read: its 16-bit entries narrowed to 8)",))):
        image = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "P")
        image.putpalette(list(range(256)) * 3)
        buffer = io.BytesIO()
        image.save(buffer, format="TIFF")
        data = bytearray(buffer.getvalue())
        directory = struct.unpack_from("<I", data, 4)[0]
        for entry in range(struct.unpack_from("<H", data, directory)[0]):
            at = directory + 2 + 12 * entry
            if struct.unpack_from("<H", data, at)[0] == 320:  # ColorMap: its 768 shorts where the entry points
                struct.pack_into("<768H", data, struct.unpack_from("<I", data, at + 8)[0], *[v * 257 % 65536 if
                                                                                             v < 256 else v
                                                                                             for v in palette])
        assert open_image(bytes(data)).info[DROPPED] == dropped
    deep = png16.write(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000, "L")
    icon = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 8, 8, 0, 0, 1, 16, len(deep), 22) + deep
    with pytest.raises(ImageError, match="icon holds a 16-bit PNG"):
        open_image(icon)
    head = b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf" + b"av1C\x81\x00\x4c\x00"
    assert sniff_bits_per_channel(head) == 10 and sniff_bits_per_channel(head.replace(b"avif", b"heic")) == 8
