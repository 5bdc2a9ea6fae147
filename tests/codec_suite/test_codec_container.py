""".vz container: round trip, and every kind of broken or hostile file raises its own FormatError, quickly."""

import dataclasses
import json
import struct
import zlib

import numpy as np
import pytest

from codec import container, header as vzheader
from codec.bitsback import BITSBACK, DIRECT
from codec.container import MAGIC, CoderSettings, Header, ImageEntry, pack_header, read, write
from codec.errors import (
    BadMagicError,
    CodingError,
    ChecksumError,
    FormatError,
    HeaderError,
    LimitError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
)

SHA = "ab" * 32


def make_header(**coder_changes) -> Header:
    coder = dict(
        grid_step=2.0**-8,
        grid_bound=16.0,
        tile=64,
        max_batch=16,
        schedule=((DIRECT, 1), (BITSBACK, 1), (BITSBACK, 2)) + ((BITSBACK, 16),) * 40,
        constriction="0.5.0",
        extra={"torch": "2.13.0", "device": "cpu"},
    )
    coder.update(coder_changes)
    images = (
        ImageEntry("kodim01.png", "RGB", 768, 512),
        ImageEntry(
            "ünïcödé ✓.png", "P", 7, 3, palette=bytes(range(30)),
            info={"alpha": {"values": "00ff", "counts": [20, 1]}},
        ),
    )
    return Header("vdvae-small", "0123456789abcdef", CoderSettings(**coder), images, SHA)


WORDS = np.array([1, 2**32 - 1, 0xDEADBEEF, 7], dtype=np.uint32)


def craft(obj, words=WORDS, version=1) -> bytes:
    """A file with correct checksums around an arbitrary header object (to reach the header checks)."""
    text = pack_header(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    prefix = struct.pack("<8sHI", MAGIC, version, len(text)) + text
    payload = struct.pack("<I", len(words)) + words.astype("<u4").tobytes()
    return prefix + struct.pack("<I", zlib.crc32(prefix)) + payload + struct.pack("<I", zlib.crc32(payload))


def valid_obj():
    return json.loads(vzheader.to_json(make_header()))


def test_round_trip():
    h = make_header()
    data = write(h, WORDS, 2)  # the JSON layout of formats 1 and 2 (format 3: tests/test_classic.py)
    assert data[:8] == b"\x89.VZ\r\n\x1a\n" and data[8:10] == b"\x02\x00"
    h2, words = read(data)
    assert h2 == h
    assert words.dtype == np.uint32 and list(words) == list(WORDS)
    assert read(write(h, np.zeros(0, np.uint32), 2))[1].size == 0
    assert len(json.dumps(vzheader.to_json(h).decode())) < 2000  # the 43-batch schedule is 4 runs


def test_schedule_is_run_length_coded():
    obj = valid_obj()
    assert obj["coder"]["schedule"] == [["d", 1, 1], ["b", 1, 1], ["b", 2, 1], ["b", 16, 40]]


def test_every_truncation_raises_truncated_error():
    data = write(make_header(), WORDS)
    for n in range(len(data)):
        with pytest.raises(TruncatedError):
            read(data[:n])


def test_every_flipped_byte_is_detected():
    data = write(make_header(), WORDS, 2)
    header_len = struct.unpack_from("<I", data, 10)[0]
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x04
        with pytest.raises(FormatError) as info:
            read(bytes(bad))
        if i < 8:
            assert info.type is BadMagicError
        elif i < 10:  # a version this reader knows (2 -> 6) fails as damage: its CRC
            flipped = struct.unpack_from("<H", bad, 8)[0]
            assert info.type is (ChecksumError if flipped in container.READABLE_VERSIONS else UnsupportedVersionError)
        elif 14 <= i < 18 + header_len or i >= 22 + header_len:  # header, its CRC, payload words, payload CRC
            assert info.type is ChecksumError, i


def test_messages_name_the_problem():
    data = write(make_header(), WORDS, 2)
    with pytest.raises(BadMagicError, match=r"^not a \.vz file \(bad magic\)$"):
        read(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(BadMagicError, match="line endings"):
        read(data.replace(b"\r\n", b"\n", 1))
    with pytest.raises(UnsupportedVersionError, match="version 24"):
        read(data[:8] + b"\x18\x00" + data[10:])
    with pytest.raises(TruncatedError, match=r"header claims \d+ bytes"):
        read(data[:40])
    with pytest.raises(TrailingDataError, match="3 bytes"):
        read(data + b"abc")
    for error in (BadMagicError, UnsupportedVersionError, TruncatedError, ChecksumError, HeaderError, LimitError):
        assert issubclass(error, FormatError) and issubclass(error, ValueError)


def test_hostile_lengths_are_refused_before_allocating():
    data = write(make_header(), WORDS, 2)
    huge_header = data[:10] + struct.pack("<I", 2**32 - 1) + data[14:]
    n = struct.unpack_from("<I", data, 10)[0]
    huge_payload = bytearray(data)
    struct.pack_into("<I", huge_payload, 18 + n, 2**32 - 1)
    with pytest.raises(LimitError, match="header too large"):
        read(huge_header)
    with pytest.raises(TruncatedError, match="payload claims"):
        read(bytes(huge_payload))


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda o: o["images"][0].update(width=10**6), LimitError),
        (lambda o: o["images"][0].update(width=65535, height=65535), LimitError),  # > MAX_PIXELS
        (lambda o: o["images"][0].update(width=0), LimitError),
        (lambda o: o["images"][0].update(width=True), HeaderError),
        (lambda o: o["images"][0].update(width=1.5), HeaderError),
        (lambda o: o.update(images=[o["images"][0]] * (vzheader.MAX_IMAGES + 1)), LimitError),
        (lambda o: o["coder"].update(schedule=[["b", 16, 10**12]]), LimitError),
        (lambda o: o["coder"].update(schedule=[["b", 17, 1]]), LimitError),  # n > max_batch
        (lambda o: o["coder"].update(schedule=[["x", 1, 1]]), HeaderError),
        (lambda o: o["coder"].update(schedule=[["b", 16, 100_000]]), HeaderError),  # more tiles than pixels
        (lambda o: o["coder"].update(grid_step=0.3), HeaderError),  # bound not a multiple of step
        (lambda o: o["coder"].update(grid_step=2**-30), HeaderError),  # too many bins for constriction
        (lambda o: o["coder"].update(tile=0), LimitError),
        (lambda o: o["model"].update(sha256="XYZ"), HeaderError),
        (lambda o: o["images"][1].update(palette="abc"), HeaderError),
        (lambda o: o.update(pixels_sha256="ab"), HeaderError),
        (lambda o: o.update(unexpected=1), HeaderError),
        (lambda o: o["coder"].pop("extra"), HeaderError),
        (lambda o: o.update(images={}), HeaderError),
        (lambda o: o["images"][0].update(info=[1]), HeaderError),
    ],
)
def test_bad_headers(change, error):
    obj = valid_obj()
    change(obj)
    with pytest.raises(error):
        read(craft(obj))


@pytest.mark.parametrize(
    "text",
    [
        b'{"model": {}}',  # not canonical (space)
        b"[" * 100_000 + b"]" * 100_000,  # nesting bomb
        b'{"a":' + b"1" * 5000 + b"}",  # huge integer
        b'{"a":NaN}',
        b"\xff\xfe",  # not UTF-8
        b'{"a":1,"a":2}',  # duplicate key
    ],
)
def test_malformed_json_raises_header_error(text):
    prefix = struct.pack("<8sHI", MAGIC, 1, len(text)) + text
    payload = struct.pack("<I", 0)
    data = prefix + struct.pack("<I", zlib.crc32(prefix)) + payload + struct.pack("<I", zlib.crc32(payload))
    with pytest.raises(HeaderError):
        read(data)


def test_write_refuses_what_read_would_refuse():
    with pytest.raises(HeaderError):
        write(make_header(extra={"x": float("nan")}), WORDS)
    with pytest.raises(HeaderError):
        write(make_header(extra={"x": object()}), WORDS)
    with pytest.raises(FormatError):
        write(make_header(schedule=(("sometimes", 1),)), WORDS)
    with pytest.raises(ValueError):
        write(make_header(), WORDS.astype(np.int64))


def test_reads_from_bytearray_and_memoryview():
    data = write(make_header(), WORDS, 2)
    assert read(bytearray(data))[0] == read(memoryview(data))[0] == make_header()
    assert container.VERSION == 3 and container.READABLE_VERSIONS == tuple(range(1, 24))


def test_the_format_version_round_trips_and_older_versions_are_read():
    for version in container.READABLE_VERSIONS:
        assert container.read_versioned(write(make_header(), WORDS, version))[0] == version
    with pytest.raises(CodingError):
        write(make_header(), WORDS, max(container.READABLE_VERSIONS) + 1)


def binary_file(version: int, stored: bytes, payload: bytes = b"") -> bytes:
    """A binary-layout file of `version` whose stored header is `stored`, with a correct CRC."""
    body = MAGIC + struct.pack("<H", version) + container._varint(len(stored)) + stored + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_format_11_deflates_the_header_where_that_is_the_smaller():
    """write(deflate=True) stores the header as raw deflate, as format 11, where that saves DEFLATE_SAVING bytes
    or more (an archive of many images: their entries repeat); else the format asked for, byte for byte as
    without deflate. Format 11 holds whatever format 10 holds, and is read back to the same header."""
    many = Header("", "", None, tuple(ImageEntry(f"{k}.png", "RGB", 28, 28, coding="png", data=bytes([k % 256]) * 5)
                                      for k in range(300)), "cd" * vzheader.PIXEL_DIGEST_BYTES)
    plain = write(many, np.zeros(0, np.uint32), 3)
    packed = write(many, np.zeros(0, np.uint32), 3, deflate=True)
    version, back, words = container.read_versioned(packed)
    assert version == container.DEFLATED_VERSION == 11 and back == many and len(words) == 0
    assert len(packed) < len(plain) - 3000  # the entries' ~4 KB (their data, 1.5 KB, as it is)
    one = dataclasses.replace(make_header(), pixels_sha256="ab" * vzheader.PIXEL_DIGEST_BYTES)  # as binary keeps it
    tiny = Header("m", "0123456789abcdef", CoderSettings(2.0**-8, 16.0, 64, 16, ((DIRECT, 1),), "0.5.0"),
                  (ImageEntry("a.png", "RGB", 5, 5),), "3f9a1c7e5b2d8046")
    small = write(tiny, WORDS, 10, deflate=True)  # one short entry: deflate's own overhead is the more
    assert small == write(tiny, WORDS, 10) and container.read_versioned(small)[0] == 10
    assert len(container.deflate_header(vzheader.to_binary(tiny, len(WORDS), 11))) >= len(
        vzheader.to_binary(tiny, len(WORDS), 10))
    forced = write(one, WORDS, 11)  # asked for: deflated whatever it saves
    assert container.read_versioned(forced)[1] == one
    always = write(tiny, WORDS, 12)  # format 12's header is always stored deflated
    assert container.read_versioned(always)[:2] == (12, tiny) and len(always) >= len(small)
    assert write(tiny, WORDS, 12, deflate=True) == always
    for version in (13, 14):  # so are formats 13's and 14's
        always = write(tiny, WORDS, version)
        assert container.read_versioned(always)[:2] == (version, tiny)
        assert write(tiny, WORDS, version, deflate=True) == always
    for version in container.BINARY_VERSIONS:
        assert container.read_versioned(write(one, WORDS, version, deflate=True))[1] == one


def test_a_format_11_header_that_does_not_inflate_or_inflates_too_far_is_refused():
    one = dataclasses.replace(make_header(), pixels_sha256="ab" * vzheader.PIXEL_DIGEST_BYTES)
    good = container.deflate_header(vzheader.to_binary(one, len(WORDS), 11))
    assert container.read_versioned(binary_file(11, good, WORDS.astype("<u4").tobytes()))[1] == one
    with pytest.raises(HeaderError, match="not deflate data"):
        read(binary_file(11, b"\xff" * 40))
    with pytest.raises(HeaderError, match="incomplete"):
        read(binary_file(11, good[:-3]))
    with pytest.raises(HeaderError, match="extra bytes"):
        read(binary_file(11, good + b"\x00"))
    bomb = container.deflate_header(bytes(container.MAX_HEADER_BYTES + 1))  # ~16 KB stored
    with pytest.raises(LimitError, match="inflates to more"):
        read(binary_file(11, bomb))
    with pytest.raises(HeaderError):  # format 10 reads the same bytes as a (broken) plain header
        read(binary_file(10, good, WORDS.astype("<u4").tobytes()))


def test_format_7_holds_the_stream_order_and_earlier_formats_refuse_one():
    ordered = make_header(order=(0, 3, 7, 2, 31))
    data = write(ordered, WORDS, container.ORDER_VERSION)
    version, back, words = container.read_versioned(data)
    assert version == 7 and back.coder == ordered.coder and back.coder.order == (0, 3, 7, 2, 31)
    assert container.read_versioned(write(make_header(), WORDS, 7))[1].coder.order == ()  # raster order
    for version in (1, 2, 3, 6):
        with pytest.raises(HeaderError, match="stream order"):
            write(ordered, WORDS, version)
    assert container.binary_version(["bitsback"], ordered=True) == 7
    assert container.binary_version(["bitsback", "predictive-blend"]) == 6
    # format 8: the predictor's fitted tables, with or without an order
    assert container.binary_version(["bitsback", "predictive-fitted"]) == 8
    assert container.binary_version(["predictive-fitted"], ordered=True) == 8
    assert container.read_versioned(write(ordered, WORDS, container.FITTED_VERSION))[1].coder.order == (0, 3, 7, 2, 31)


@pytest.mark.parametrize("runs", [(0, 0, 5), (1, 2**28 + 1, 1), (4,), (1, 3), (0, 4)])
def test_format_7_refuses_order_runs_that_no_encoder_writes(runs):
    with pytest.raises((HeaderError, LimitError)):
        write(make_header(order=runs), WORDS, container.ORDER_VERSION)
