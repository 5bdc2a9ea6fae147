"""Never bigger than the classics (issue 15): each image goes through the model or through the smallest classical
coding (raw, PNG or WebP samples), recorded in a format-3 file with a binary header; classically coded images
decode without the model, exactly, and hostile format-3 files fail with one line like any other."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mutate, run_cli
from PIL import Image, features

from codec import classic, container
from codec.errors import (
    BadMagicError,
    ChecksumError,
    CodingError,
    FormatError,
    HeaderError,
    LimitError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from codec.header import CoderSettings, Header, ImageEntry, from_binary, to_binary
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.errors import USER_ERRORS, ImageError, IntegrityError
from vaezip.images import pixel_checksum

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_golden import classic_images, p_duplicates, palette_image, rgba_smooth, tiny_image  # noqa: E402

pytestmark = pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")


def pillow_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def classical_files(image: Image.Image) -> dict[str, int]:
    """The sizes of the image as Pillow's optimized PNG and lossless WebP (of its colours for P and LA)."""
    image = image.copy()  # converting a P image with a transparency table changes its core palette in place
    source = image
    if image.mode in ("P", "LA", "L"):
        source = image.convert("RGBA" if image.mode == "LA" or "transparency" in image.info else "RGB")
    return {"png": len(pillow_bytes(image, "PNG", optimize=True)),
            "webp": len(pillow_bytes(source, "WEBP", lossless=True, quality=100, method=4, exact=True))}


@pytest.fixture(scope="module")
def models(tiny_weights):
    return {1: load_model(tiny_weights[1]), 3: load_model(tiny_weights[3])}


def model_for(models, image: Image.Image):
    return models[1 if image.mode in ("L", "LA") else 3]


@pytest.fixture(scope="module")
def coded(models) -> dict[str, tuple[Image.Image, object]]:
    """Every kind of test_classic_images, compressed with the (untrained) tiny model: name -> (image, result)."""
    return {kind: (image, compress_images([(f"{kind}.png", image)], model_for(models, image), tile=16, device="cpu"))
            for kind, image in classic_images().items()}


# ---------------------------------------------------------------------------------------------- sizes


def test_every_kind_takes_its_smallest_path_and_is_never_larger_than_a_classical_one_plus_the_header(coded):
    """The untrained model loses every kind to a classical coding, but for the LA and RGBA images: their tiles
    are all first tiles (nothing to pop yet), which the predictor's tiles (format 16's sections of the staged
    cascade's, or format 22's of its small-image profile refined) code in fewer bytes than WebP."""
    model_coded = set()
    for kind, (image, result) in coded.items():
        report = result.images[0]
        tried = dict(report.candidate_bytes)
        assert set(tried) == {"model", *classic.CODINGS}, kind
        if report.coding == "model":
            model_coded.add(kind)
            header = container.read(result.data)[0]
            assert result.format_version in (16, 22)  # 22 where the small-image profile, refined, codes for less
            assert {k for k, _ in header.coder.schedule} <= {"predictive-sections",
                                                             "predictive-small-refined-across-sections"}
            assert tried["model"] < min(tried[coding] for coding in classic.CODINGS), kind
            continue
        assert result.format_version == 3 and report.coding in classic.CODINGS, kind
        assert report.payload_bits == 8 * tried[report.coding], kind
        assert [size for _, size in report.candidate_bytes] == sorted(tried.values()), kind
        assert len(result.data) == result.header_bytes + tried[report.coding], kind
        # never more than the best classical coding vaezip knows plus its header, nor than Pillow's own files
        assert len(result.data) <= min(tried[coding] for coding in classic.CODINGS) + result.header_bytes, kind
        for name, size in classical_files(image).items():
            assert len(result.data) <= size + result.header_bytes, (kind, name)
    assert model_coded == {"la", "rgba"}


def test_issue_targets_for_graphics_palettes_and_a_5x5_image(coded):
    for kind in ("screenshot", "palette"):
        image, result = coded[kind]
        assert len(result.data) <= 1.05 * min(classical_files(image).values()) + 64, kind
    assert len(coded["tiny"][1].data) <= 120  # 5x5 RGB (before format 3: ~406 bytes, 326 of them header)
    assert coded["tiny"][1].header_bytes <= 45


def test_the_model_path_is_kept_where_it_wins(models):
    """An index plane that the model path codes at its entropy (a palette with a repeated colour) stays there,
    in an archive whose other images take classical paths: one file, both paths, the choice per image."""
    images = [("dup.png", p_duplicates()), ("tiny.png", tiny_image()), ("palette.png", palette_image())]
    result = compress_images(images, models[3], tile=16, device="cpu")
    assert result.codings == ("model", "raw", "webp")
    assert len(result.data) < min(
        len(compress_images(images, models[3], tile=16, device="cpu", classical=False).data),
        sum(len(compress_images([pair], models[3], tile=16, device="cpu").data) for pair in images))
    restored = decompress_images(result.data, models[3], device="cpu")
    assert [pixel_checksum(image) for _, image in restored] == [pixel_checksum(image) for _, image in images]


def test_the_model_runs_only_where_its_estimate_comes_within_the_skip_ratio(models, monkeypatch):
    """Whether the model path runs at all is decided on its estimate, each tile priced as the coder will code
    it (the model's bound or its exact cost without the model): with the ratio at 0 the model never runs and
    the report's model candidate is that estimate, with a huge ratio it always runs. The estimate comes within
    a few per cent of the real model path, and never so far above it that the margin would skip a model that
    wins (skip_ratio of its tiles)."""
    from vaezip import archive

    monkeypatch.setattr(archive, "SPECULATE", False)  # the decision alone (the bet is tested below)
    image = smooth_photo(0)
    calls = []
    real_encode = archive._encode_model
    monkeypatch.setattr(archive, "_encode_model", lambda *args, **kwargs: calls.append(1) or real_encode(*args, **kwargs))
    candidates = {}
    margin = archive.skip_ratio
    for ratio in (0.0, 1e9):
        monkeypatch.setattr(archive, "skip_ratio", lambda tiles, ratio=ratio: ratio)
        calls.clear()
        result = compress_images([("x.png", image)], models[3], tile=16, device="cpu")
        assert bool(calls) == (ratio > 1), ratio
        candidates[ratio] = dict(result.images[0].candidate_bytes)
    estimate, real = candidates[0.0]["model"], candidates[1e9]["model"]
    assert abs(estimate - real) <= 0.03 * real, (estimate, real)
    assert estimate <= margin(12) * real, (estimate, real)  # 12 tiles of 16x16
    assert {k: v for k, v in candidates[0.0].items() if k != "model"} == {
        k: v for k, v in candidates[1e9].items() if k != "model"}


def test_the_quick_stream_rules_the_model_out_by_the_whole_files_margin():
    """The model's file is not coded where, each image at the cheaper of its estimate and its classical coding,
    it would still be larger than the quick stream, with the margin of all the file's tiles: an estimate 3 %
    above each one-tile image's share of the quick stream is within that image's own margin (7.5 %) but not
    within a 100-image file's (1.2 %), and an image that goes classical can tip the file back."""
    from vaezip import archive

    quick, one_tile = [1000.0] * 10, {k: 1 for k in range(10)}
    far = {k: 4000 for k in range(10)}
    above = {k: 1030.0 for k in range(10)}
    assert archive.skip_ratio(1) > 1.03 > archive.skip_ratio(10) > 1.0 + archive.SKIP_MARGIN
    assert archive.quick_file_wins(above, one_tile, far, quick)
    assert not archive.quick_file_wins({0: 1030.0}, {0: 1}, {0: 4000}, [1000.0])  # one image: its own margin
    assert not archive.quick_file_wins({k: 1005.0 for k in range(10)}, one_tile, far, quick)
    assert not archive.quick_file_wins(above, one_tile, far | {0: 500}, quick)  # image 0 goes classical
    many = range(100)
    assert archive.quick_file_wins({k: 1030.0 for k in many}, {k: 1 for k in many}, {k: 4000 for k in many},
                                   [1000.0] * 100)
    # images the model cannot code count at their classical coding
    assert not archive.quick_file_wins(above, one_tile, far | {10: 0}, quick + [1000.0])


def test_within_reusing_each_coding_of_the_same_samples_is_made_once(monkeypatch):
    """classic.reusing(): the default compress makes some images' classical codings twice (its screened codings,
    then the file of the others' predictor stream beside them); within it a coding of the same samples (any array
    holding them) with the same settings is made once and gives the same bytes, and nothing outlives it."""
    from codec import classic

    made = []
    real_webp, real_png = classic._made_webp, classic._made_png
    monkeypatch.setattr(classic, "_made_webp", lambda samples, quality: made.append(("webp", quality))
                        or real_webp(samples, quality))
    monkeypatch.setattr(classic, "_made_png", lambda samples, quick: made.append(("png", quick))
                        or real_png(samples, quick))
    samples = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    webp, png = classic.encode(samples, "webp"), classic.encode(samples, "png")
    classic.encode(samples, "webp")
    assert made == [("webp", 100), ("png", False), ("webp", 100)]  # outside: made each time
    made.clear()
    with classic.reusing():
        assert classic.encode(samples.copy(), "webp") == webp and classic.encode(samples, "png") == png
        with classic.reusing():  # nested (compress calls in threads of one program): the same store
            assert classic.encode(samples, "webp") == webp
        assert classic.encode(samples, "webp") == webp
        classic.encode(samples, "webp", fast=True)  # other settings
        classic.encode(samples[::-1], "webp")  # other samples
        assert made == [("webp", 100), ("png", False), ("webp", 50), ("webp", 100)]
    assert not classic._reused and classic._reused_bytes == 0
    classic.encode(samples, "webp")
    assert made[-1] == ("webp", 100) and len(made) == 5


def smooth_photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([120 + 50 * np.sin(x / 7.0), 100 + 40 * np.cos(y / 5.0), 90 + 0.5 * x + 0.5 * y], -1)
    return Image.fromarray(np.clip(pixels + rng.normal(0, 3, pixels.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("outcome", ["won", "lost", "raised"])
def test_coding_while_the_classical_codings_finish_gives_the_file_made_without_the_bet(models, monkeypatch, outcome):
    """compress runs the model while the classical codings finish, on the bet that no image will be ruled out.
    Here the classical codings wait until the model has coded a batch, so the bet is always taken (on one
    thread fewer until they are done): the file
    is byte for byte the one made without it, whether the bet is won or lost (a skip ratio of 0 rules every
    image out), and an error of the classical coding is the same error."""
    import threading

    from vaezip import archive
    from vaezip.errors import ImageError

    images = [("a.png", smooth_photo(1)), ("b.png", smooth_photo(2).transpose(Image.FLIP_LEFT_RIGHT))]
    # Every image ruled in (won: the model path is kept) or out (lost) by the classical codings' sizes.
    monkeypatch.setattr(archive, "skip_ratio", lambda tiles: 0.0 if outcome == "lost" else 1e9)
    real_smallest = archive.smallest_entry

    def classical(*args):
        if outcome == "raised":
            raise ImageError("a.png: no classical coding")
        return real_smallest(*args)

    monkeypatch.setattr(archive, "smallest_entry", classical)
    monkeypatch.setattr(archive, "SPECULATE", False)
    try:
        expected = compress_images(images, models[3], tile=16, max_batch=4, predictor=False, device="cpu").data
    except ImageError as error:
        expected = error
    monkeypatch.setattr(archive, "SPECULATE", True)
    batch_done = threading.Event()
    monkeypatch.setattr(archive, "smallest_entry", lambda *args: batch_done.wait(60) and classical(*args))
    coded, threads_seen = [], []
    real_encode = archive._encode_model
    monkeypatch.setattr(archive, "_encode_model", lambda split, indices, *rest, **options: coded.append(
        list(indices)) or real_encode(split, indices, *rest, **options))

    def after_each_batch(*_) -> None:
        threads_seen.append(torch.get_num_threads())
        if not batch_done.is_set():
            batch_done.set()
            # The classical codings finish now, before the next batch (their worker ends after its one task).
            for thread in threading.enumerate():
                if thread.name.startswith("vaezip-classical"):
                    thread.join(60)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        data = compress_images(images, models[3], tile=16, max_batch=4, predictor=False, device="cpu", progress=after_each_batch).data
    except ImageError as error:
        data = error
    finally:
        threads_after = torch.get_num_threads()
        torch.set_num_threads(threads)
    assert coded[0] == [0, 1]  # the bet: every image through the model, before the classical codings were in
    # The bet's batches left the classical codings a core until they were done, and compress gave it back.
    assert threads_seen[0] == 1 and set(threads_seen[1:]) <= {2} and threads_after == 2
    if outcome == "won":
        assert len(threads_seen) >= 2 and threads_seen[1:] == [2] * (len(threads_seen) - 1)
    if outcome == "raised":
        assert isinstance(data, ImageError) and str(data) == str(expected)
    else:
        assert data == expected
        assert coded == [[0, 1]]  # won: that coding is the file's; lost: every image ruled out, nothing more


def test_an_alpha_plane_beside_the_model_is_coded_with_spatial_context(models):
    """On the model path an alpha plane is coded classically where that beats its i.i.d. histogram, which sees
    no spatial context: here 4.4 bits a pixel as a histogram, 1.9 as WebP."""
    from codec.planes import fit_histogram

    image = rgba_smooth()
    result = compress_images([("a.png", image)], models[3], tile=16, device="cpu", classical=False)
    entry = container.read(result.data)[0].images[0]
    plane = entry.info["planes"]["alpha"]
    assert result.codings == ("model",) and plane["coding"] in ("png", "webp") and plane["length"] == len(entry.data)
    assert len(entry.data) < 0.5 * fit_histogram(np.asarray(image)[..., 3]).ideal_bits() / 8
    old = compress_images([("a.png", image)], models[3], tile=16, device="cpu", format_version=2)  # histogram
    assert "coding" not in container.read(old.data)[0].images[0].info["planes"]["alpha"]
    assert len(result.data) < len(old.data) - 800
    for data in (result.data, old.data):
        assert pixel_checksum(decompress_images(data, models[3], device="cpu")[0][1]) == pixel_checksum(image)


def test_classical_false_and_format_2_keep_the_model_path(models):
    image = tiny_image()
    model_only = compress_images([("t.png", image)], models[3], tile=16, device="cpu", classical=False)
    assert model_only.codings == ("model",) and model_only.format_version == 3
    old = compress_images([("t.png", image)], models[3], tile=16, device="cpu", format_version=2)
    assert old.codings == ("model",) and old.format_version == 2 and old.data[8:10] == b"\x02\x00"
    assert len(old.data) > len(model_only.data) + 250  # the JSON header
    for data in (model_only.data, old.data):
        assert pixel_checksum(decompress_images(data, models[3], device="cpu")[0][1]) == pixel_checksum(image)
    with pytest.raises(ValueError, match="format_version"):
        compress_images([("t.png", image)], models[3], format_version=1)


# ---------------------------------------------------------------------------------------------- round trips


DECODER = """
import json, sys
from pathlib import Path
import numpy as np
from vaezip.api import decompress_images
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.vz")):
    (name, image), = decompress_images(path.read_bytes(), None)
    out[path.stem] = {"name": name, "mode": image.mode, "pixels": np.asarray(image).tolist(),
                      "palette": [image.palette.mode, image.palette.tobytes().hex()] if image.mode == "P" else None,
                      "transparency": repr(image.info.get("transparency"))}
out["torch imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_every_kind_round_trips_exactly_in_a_fresh_process_without_model_or_torch(coded, tmp_path):
    """(The LA and RGBA images' model-path files need their model: test_the_model_path_is_kept_where_it_wins
    decodes such files; tests/data/format3/la.vz and rgba.vz pin their classical codings.)"""
    classical = {kind for kind, (_, result) in coded.items() if result.images[0].coding != "model"}
    for kind in classical:
        (tmp_path / f"{kind}.vz").write_bytes(coded[kind][1].data)
    done = subprocess.run([sys.executable, "-c", DECODER, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    decoded = json.loads(done.stdout)
    assert decoded.pop("torch imported") is False
    assert set(decoded) == classical == set(classic_images()) - {"la", "rgba"}
    for kind, image in classic_images().items():
        if kind not in classical:
            continue
        got = decoded[kind]
        assert got["name"] == f"{kind}.png" and got["mode"] == image.mode, kind
        assert np.array_equal(np.array(got["pixels"], dtype=np.uint8), np.asarray(image)), kind
        if image.mode == "P":
            assert got["palette"] == [image.palette.mode, image.palette.tobytes().hex()], kind
        assert got["transparency"] == repr(image.info.get("transparency")), kind


def test_the_cli_decodes_a_classical_file_without_any_model(coded, tmp_path):
    """No -m and no installed model of that name: the file names none."""
    image, result = coded["l-key"]
    (tmp_path / "key.vz").write_bytes(result.data)
    done = run_cli("decompress", "key.vz", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    back = Image.open(tmp_path / "key.png")
    assert back.mode == "L" and back.info.get("transparency") == 77
    assert np.array_equal(np.asarray(back), np.asarray(image))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 5), (13, 17, 2), (3, 4, 3), (6, 5, 4), (2, 70, 3)])
def test_every_coding_round_trips_every_shape(shape):
    rng = np.random.default_rng(sum(shape))
    for samples in (rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 3, shape, dtype=np.uint8),
                    np.zeros(shape, np.uint8)):
        for coding in classic.CODINGS:
            data = classic.encode(samples, coding)
            back = classic.decode(coding, data, shape[0], shape[1], classic.channels_of(samples))
            assert np.array_equal(back, samples), (coding, shape)


def test_webp_keeps_the_colour_of_transparent_pixels():
    rgba = np.random.default_rng(0).integers(0, 256, (9, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    assert np.array_equal(classic.decode("webp", classic.encode(rgba, "webp"), 9, 8, 4), rgba)


def test_low_index_planes_are_packed_below_8_bits():
    indices = np.random.default_rng(1).integers(0, 4, (40, 40), dtype=np.uint8)
    data = classic.encode(indices, "png")
    assert classic.LAYOUTS[data[0]] == (3, 2)  # 2-bit palette layout
    assert np.array_equal(classic.decode("png", data, 40, 40, 1), indices)


def test_png_at_its_best_is_made_only_where_its_quick_form_comes_near_the_smallest(monkeypatch):
    """A photograph (the quick start's sample: quick PNG 1.4 times WebP's size): PNG's level-9 form is not made and
    its quick one is what smallest reports; a 2-bit index plane (PNG within a few % of WebP): it is made, and the
    result is what it was when every PNG was made at its best (PNG_SCREEN unbounded)."""
    made = []
    encode_png = classic._encode_png
    monkeypatch.setattr(classic, "_encode_png", lambda samples, quick=False: made.append(quick) or
                        encode_png(samples, quick))
    photo = np.asarray(Image.open(ROOT / "samples" / "hopper.png"))
    coding, data, sizes = classic.smallest(photo, fast=True)
    assert made == [True] and coding == "webp"
    assert sizes["png"] == len(encode_png(photo, quick=True)) > classic.PNG_SCREEN * sizes["webp"]
    indices = np.random.default_rng(1).integers(0, 4, (40, 40), dtype=np.uint8)
    made.clear()
    screened = classic.smallest(indices)
    assert made == [True, False] and screened[2]["png"] == len(classic.encode(indices, "png"))
    monkeypatch.setattr(classic, "PNG_SCREEN", float("inf"))
    assert classic.smallest(indices) == screened and classic.smallest(photo, fast=True)[:2] == (coding, data)


def test_raw_bytes_are_made_only_where_they_are_the_smallest(monkeypatch):
    """Raw bytes are measured, not made, unless they win (a 25-Mpixel photograph's would be 75 MB): noise takes
    them, a photograph does not, and both report raw's size as before."""
    encode_calls = []
    real_encode = classic.encode
    monkeypatch.setattr(classic, "encode", lambda samples, coding, fast=False: encode_calls.append(coding) or
                        real_encode(samples, coding, fast))
    noise = np.random.default_rng(2).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    coding, data, sizes = classic.smallest(noise)
    assert coding == "raw" and data == noise.tobytes() and sizes["raw"] == noise.size < min(sizes["png"], sizes["webp"])
    photo = np.asarray(Image.open(ROOT / "samples" / "hopper.png"))
    coding, data, sizes = classic.smallest(photo, fast=True)
    assert coding == "webp" and sizes["raw"] == photo.size
    assert "raw" not in encode_calls and encode_calls  # WebP went through encode, raw never did


def test_a_large_images_codings_are_made_one_after_the_other_with_the_same_result(monkeypatch):
    """From SERIAL_SAMPLES on, the pool's threads are not used (WebP's and PNG's working memory would add up)."""

    class NoThreads:
        def map(self, *_):
            raise AssertionError("made in threads at once")

    photo = np.asarray(Image.open(ROOT / "samples" / "hopper.png"))
    alone = classic.smallest(photo, fast=True)
    monkeypatch.setattr(classic, "SERIAL_SAMPLES", photo.size)
    assert classic.smallest(photo, pool=NoThreads(), fast=True) == alone
    monkeypatch.setattr(classic, "SERIAL_SAMPLES", photo.size + 1)
    with pytest.raises(AssertionError, match="made in threads at once"):
        classic.smallest(photo, pool=NoThreads(), fast=True)


# ---------------------------------------------------------------------------------------------- hostile data


def test_declared_sizes_are_checked_before_pillow_decodes():
    """A VP8L bitstream must be the header's size; a PNG is rebuilt around the header's size."""
    big = np.zeros((300, 200, 3), np.uint8)
    webp = classic.encode(big, "webp")
    with pytest.raises(CodingError, match="VP8L bitstream of 200x300"):
        classic.decode("webp", webp, 5, 5, 3)
    # A zlib stream of far more rows than the header's 5x5, or a deflate bomb: Pillow fills the image the
    # header declares and stops there (or fails): never more pixels.
    bomb = bytes([0]) + zlib.compress(b"\0" * (50 << 20), 9)  # 50 MiB of zeros in ~50 KiB
    for data, shape in ((classic.encode(big, "png"), (5, 5, 3)), (bomb, (4, 4))):
        try:
            assert classic.decode("png", data, *shape[:2], 3 if len(shape) == 3 else 1).shape == shape
        except CodingError:
            pass


@pytest.mark.parametrize("coding, data, channels, message", [
    ("raw", b"\0" * 74, 3, "raw samples hold 74 bytes"),
    ("png", b"", 3, "bad PNG layout"),
    ("png", bytes([9]) + zlib.compress(b"\0" * 80), 3, "bad PNG layout"),
    ("png", bytes([6]) + zlib.compress(b"\0" * 80), 1, "bad PNG layout"),  # RGB layout for one channel
    ("png", bytes([6]) + b"not zlib", 3, "PNG data does not decode"),
    ("webp", b"", 3, "not a VP8L bitstream"),
    ("webp", b"\x2f\x04\x00\x01\x00" + b"\xff" * 20, 3, "does not decode"),
    ("webp", b"\x2f\x04\x00\x01\xe0", 3, "version 7"),
    ("webp", b"\x2f\x04\x00\x02\x00", 3, "VP8L bitstream of 5x9"),
    ("jpeg", b"", 3, "unknown classical coding"),
])
def test_bad_classical_data_is_a_coding_error(coding, data, channels, message):
    with pytest.raises(CodingError, match=message):
        classic.decode(coding, data, 5, 5, channels)


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def header_part(data: bytes) -> tuple[int, int]:
    """(start, length) of a format-3 file's header (its length: a one-byte varint in these small files)."""
    assert data[10] < 0x80
    return 11, data[10]


def forged(data: bytes, change) -> bytes:
    """The file with its header rewritten by change(Header) and the CRC recomputed, past the writer's checks."""
    from codec.header import _encode_binary

    version, header, words = container.read_versioned(data)
    header = change(header)
    raw = _encode_binary(header, len(words), [len(image.data) for image in header.images], version)
    body = data[:10] + container._varint(len(raw)) + raw + b"".join(image.data for image in header.images)
    body += words.astype("<u4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def rebuilt(data: bytes, raw_header: bytes) -> bytes:
    start, length = header_part(data)
    body = data[:10] + bytes([len(raw_header)]) + raw_header + data[start + length : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def broken_format_3_files(good: bytes) -> dict[str, tuple[bytes, type, str]]:
    start, length = header_part(good)
    flipped = bytearray(good)
    flipped[-6] ^= 0x10
    padded_varint = bytearray(good[start : start + length])  # the image count (1) as a two-byte varint
    at = padded_varint.index(b"\x01\x08tiny.png")
    return {
        "empty": (b"", TruncatedError, "an empty file (0 bytes)"),
        "short": (good[:9], TruncatedError, "10-byte prefix"),
        "truncated": (good[: len(good) // 2], TruncatedError, "truncated file"),
        "flipped": (bytes(flipped), ChecksumError, "checksum mismatch"),
        "magic": (b"\x89PNG\r\n\x1a\n" + good[8:], BadMagicError, "not a .vz file"),
        "crlf": (good[:4] + b"\n" + good[6:], BadMagicError, "line endings"),
        "version": (recrc(good[:8] + b"\x63\x00" + good[10:]), UnsupportedVersionError, "format version 99"),
        "header-size": (recrc(good[:10] + b"\xff\xff\xff\xff\x0f" + good[11:]), LimitError, "header too large"),
        "trailing": (good + b"\0", TrailingDataError, "trailing data: 1 bytes"),
        "payload-short": (recrc(good[:-5] + good[-4:]), TruncatedError, "payload claims 75 bytes, only 74"),
        "too-wide": (forged(good, lambda h: dataclasses.replace(h, images=(dataclasses.replace(h.images[0], width=70000),))),
                     LimitError, "width = 70000"),
        "too-many-pixels": (forged(good, lambda h: dataclasses.replace(
            h, images=(dataclasses.replace(h.images[0], width=12000, height=10000),))), LimitError, "more than 100000000"),
        "not-canonical": (rebuilt(good, bytes(padded_varint[:at]) + b"\x81\x00" + bytes(padded_varint[at + 1 :])),
                          HeaderError, "canonical"),
        "checksum-edited": (forged(good, lambda h: dataclasses.replace(h, pixels_sha256="0" * 16)), IntegrityError,
                            "decoded pixels do not match the checksum; the file is damaged"),
        "raw-edited": (recrc(good[:-10] + bytes([good[-10] ^ 1]) + good[-9:]), IntegrityError, "do not match the checksum"),
    }


def test_broken_format_3_files_raise_their_error_in_one_line(coded, tmp_path):
    good = coded["tiny"][1].data
    assert container.read_versioned(good)[0] == 3 and coded["tiny"][1].codings == ("raw",)
    cases = broken_format_3_files(good)
    for name, (data, kind, fragment) in cases.items():
        with pytest.raises(kind) as caught:
            decompress_images(data)
        assert fragment in str(caught.value) and "\n" not in str(caught.value), (name, str(caught.value))
        (tmp_path / f"{name}.vz").write_bytes(data)
    result = run_cli("decompress", *(f"{name}.vz" for name in cases), cwd=tmp_path)
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode()
    assert lines[-1] == f"vaezip: 0 of {len(cases)} succeeded, {len(cases)} failed"
    for line, (name, (_, _, fragment)) in zip(lines, cases.items()):
        assert line.startswith(f"vaezip: error: {name}.vz: ") and fragment in line, (name, line)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".vz"] * len(cases)  # nothing written


def test_every_truncation_and_flip_of_a_format_3_file_is_an_error(coded):
    good = coded["p-transparency"][1].data
    for n in range(len(good)):
        with pytest.raises(TruncatedError):
            container.read(good[:n])
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x04
        with pytest.raises(FormatError):
            container.read(bytes(bad))


def test_mutated_format_3_files_fail_with_user_errors_or_decode_exactly(coded, models):
    """A small fuzz of format 3 (scripts/fuzz.py edits format 2's JSON): bit flips, byte edits, cuts and
    insertions, half of them with the CRC recomputed so that they reach the header parser and the decoders."""
    rng = random.Random(15)
    corpus = [(coded[kind][1].data, [(f"{kind}.png", coded[kind][0])]) for kind in coded]
    outcomes = {"refused": 0, "identical": 0, "renamed": 0}
    for case in range(400):
        data, originals = corpus[case % len(corpus)]
        body = bytearray(data[:-4])
        where = rng.randrange(len(body))
        kind = mutate(body, rng, where, cut=3, inserted=3)
        mutated = bytes(body) + (struct.pack("<I", zlib.crc32(bytes(body))) if case % 2 else data[-4:])
        try:
            decoded = decompress_images(mutated, models[3], device="cpu")
        except USER_ERRORS as error:
            assert "\n" not in str(error), (case, kind, str(error))
            outcomes["refused"] += 1
            continue
        # Names are header data, not pixels: an edit there (with the CRC fixed) may decode, under its new name.
        assert [pixel_checksum(im) for _, im in decoded] == [pixel_checksum(im) for _, im in originals], \
            (case, kind, where)
        outcomes["identical" if [n for n, _ in decoded] == [n for n, _ in originals] else "renamed"] += 1
    assert outcomes["refused"] > 300


# ---------------------------------------------------------------------------------------------- the binary header


def a_header(**changes) -> Header:
    fields = dict(model_name="photo", model_sha256="0123456789abcdef", pixels_sha256="ab" * 8)
    coder = CoderSettings(2.0**-8, 16.0, 32, 16, (("direct", 1), ("bitsback", 1), ("bitsback", 2)) + (("bitsback", 16),) * 9,
                          "0.5.0", {})
    images = (
        ImageEntry("a.png", "RGBA", 40, 30, None, {"planes": {"alpha": {"values": "00ff", "counts": [1100, 100]}}}),
        ImageEntry("b.png", "P", 9, 7, bytes(range(12)), {"palette_mode": "RGB", "transparency": "00ff80", "used": "000203"},
                   "png", b"\x01"),
        ImageEntry("ключ.png", "RGB", 5, 5, None, {"transparency": [1, 2, 3]}, "raw", bytes(75)),
        ImageEntry("l.png", "L", 5, 5, None, {"transparency": 77}, "webp", b"\x2f"),
        ImageEntry("odd.png", "L", 5, 5, None, {"anything": [1, "x"]}, "raw", bytes(25)),  # outside the typed fields
    )
    return Header(**{**fields, "coder": coder, "images": images, **changes})


def test_the_binary_header_round_trips_and_is_small():
    header = a_header()
    raw = to_binary(header, 123)
    parsed, lengths, words = from_binary(raw)
    assert words == 123 and lengths == [0, 1, 75, 1, 25]
    assert parsed == a_header(images=tuple(dataclasses.replace(image, data=b"") for image in header.images))
    data = container.write(header, np.arange(1, 124, dtype=np.uint32))
    read_header, read_words = container.read(data)
    assert read_header == header and np.array_equal(read_words, np.arange(1, 124))
    one = Header("", "", None, (ImageEntry("tiny.png", "RGB", 5, 5, None, {}, "raw", bytes(75)),), "cd" * 32)
    assert len(container.write(one, np.zeros(0, np.uint32))) == 75 + 40  # 5x5 RGB raw: 40 bytes around its pixels


@pytest.mark.parametrize("change, error", [
    (lambda raw: raw + b"\0", HeaderError),  # bytes after the last image
    (lambda raw: raw[:-1], HeaderError),  # runs past its end
    (lambda raw: b"\x03" + raw[1:], HeaderError),  # unknown flag
])
def test_bad_binary_headers(change, error):
    with pytest.raises(error):
        from_binary(change(to_binary(a_header(), 5)))


def test_binary_headers_have_one_form():
    """Forms that the writer never produces are refused: a padded varint, a grid as floats that fits the short
    form, info as JSON that fits the typed fields, an empty JSON object."""
    good = to_binary(a_header(), 5)
    first = good.index(b"\x05a.png")  # the image count, then the first name
    with pytest.raises(HeaderError, match="canonical"):
        from_binary(good[:first] + b"\x85\x00" + good[first + 1 :])
    grid = good.index(b"\x01\x08\x10")  # short grid form: step 2**-8, bound 16
    with pytest.raises(HeaderError, match="canonical"):
        from_binary(good[:grid] + b"\x00" + struct.pack("<dd", 2.0**-8, 16.0) + good[grid + 3 :])
    one = Header("", "", None, (ImageEntry("x", "L", 1, 1, None, {"transparency": 3}, "raw", b"\0"),), "00" * 8)
    raw = to_binary(one, 0)
    typed = raw.index(b"\x02\x00\x03")  # info mask (transparency), kind int, 3
    as_json = json.dumps({"transparency": 3}, separators=(",", ":")).encode()
    with pytest.raises(HeaderError, match="canonical"):
        from_binary(raw[:typed] + b"\x80" + bytes([len(as_json)]) + as_json)
    with pytest.raises(HeaderError):
        from_binary(raw[:typed] + b"\x80\x02{}")


def test_a_padded_header_length_is_refused_too():
    """The header's length field is a varint in its shortest form like every other: padded (0x85 0x00 for 5),
    the same file would have two byte strings."""
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    good = compress_images([("a.png", image)], None, fast=True, format_version=3).data
    assert container.read_versioned(good)[0] == 3 and good[10] < 0x80  # a one-byte length
    body = good[:10] + bytes([good[10] | 0x80, 0]) + good[11:-4]
    with pytest.raises(HeaderError, match="canonical binary form"):
        container.read_versioned(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(ChecksumError):  # a damaged file is the likelier story where the checksum fails too
        container.read_versioned(body + good[-4:])


def test_what_the_binary_header_refuses_to_write():
    with pytest.raises(HeaderError, match="names no model"):
        to_binary(a_header(images=(ImageEntry("x", "L", 1, 1, None, {}, "raw", b"\0"),)), 0)
    with pytest.raises(HeaderError):
        to_binary(a_header(images=(ImageEntry("x", "CMYK", 1, 1),)), 0)
    with pytest.raises(HeaderError):
        to_binary(a_header(images=(ImageEntry("x", "L", 1, 1, None, {"a": float("nan")}),)), 0)
    with pytest.raises(HeaderError):
        to_binary(a_header(images=(ImageEntry("x", "L", 1, 1, b"\0\0\0"),)), 0)  # a palette outside P
    with pytest.raises(LimitError):
        to_binary(a_header(images=(ImageEntry("x", "L", 70000, 1),)), 0)


def test_an_image_without_a_model_plane_reports_no_model_bound(models):
    """A palette whose used indices share a colour codes its indices, with no model plane: no model bound,
    with or without --fast (the fast path used to report its index plane's histogram as one)."""
    import math

    images = [("dup.png", p_duplicates()), ("palette.png", palette_image())]
    for fast in (False, True):
        result = compress_images(images, models[3], tile=16, device="cpu", fast=fast)
        assert math.isnan(result.images[0].bound_bpsp), (fast, result.images[0])


def test_a_crafted_transparency_or_planes_entry_is_a_one_line_error(coded):
    """A palette image's transparency index was unbounded: 2**30 made a decode build a gigabyte of alpha bytes
    (2**63: a traceback); a model-coded image's 'planes' that is no mapping was a TypeError traceback."""
    def with_info(data: bytes, **info) -> bytes:
        version, header, words = container.read_versioned(data)
        changed = dataclasses.replace(header.images[0], info={**header.images[0].info, **info})
        return container.write(dataclasses.replace(header, images=(changed,)), words, version)

    palette = coded["p-transparency"][1].data
    assert container.read(palette)[0].images[0].mode == "P"
    for index in (256, 2**30, 2**63 - 1):
        with pytest.raises(IntegrityError, match=f"transparency {index} is no palette index or alpha table"):
            decompress_images(with_info(palette, transparency=index))
    with pytest.raises(ImageError, match="transparency .* is neither a palette index nor at most 256 alpha bytes"):
        image = coded["p-transparency"][0].copy()
        image.info["transparency"] = 300
        compress_images([("p.png", image)], None, fast=True)
    alpha = coded["rgba"][1].data
    assert "alpha" in container.read(alpha)[0].images[0].info["planes"]
    for planes in (1, None, ["alpha"]):
        with pytest.raises(HeaderError, match="'planes' must map plane names to histograms"):
            decompress_images(with_info(alpha, planes=planes))
