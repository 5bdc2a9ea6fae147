"""compress --fast: no network runs; every tile goes to the model-free predictor (or raw bytes), each image
keeps the smaller of that stream and its classical codings, and the file decodes without the model."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec import bitsback
from codec.container import read_versioned
from conftest import OTHER_KERNELS, SHARED_DATA, run_cli, smooth_rgb
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.coding import TorchLatentModel
from vaezip.unpack import needs_no_model

ROOT = Path(__file__).resolve().parents[1]


def _no_network(monkeypatch):
    """Make any use of the network fail the test: a tile bound, an estimate or a coding pass."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran under fast=True")

    original_bounds = TorchLatentModel.tile_bounds

    def bounds(self, tiles, *args, **kwargs):
        if len(tiles):
            refuse()
        return original_bounds(self, tiles, *args, **kwargs)

    monkeypatch.setattr(TorchLatentModel, "tile_bounds", bounds)
    monkeypatch.setattr(TorchLatentModel, "begin", refuse)


def test_fast_runs_no_network_and_its_file_decodes_without_the_model_or_torch(tiny_weights, monkeypatch,
                                                                               tmp_path):
    pixels = smooth_rgb(64, 80, seed=3)
    _no_network(monkeypatch)
    result = compress_images([("image.png", Image.fromarray(pixels, "RGB"))], load_model(tiny_weights[3]),
                             device="cpu", classical=False, fast=True, tile=32)
    report, = result.images
    assert report.coding == "model" and report.tiles == 6  # the stream, every tile without the network
    assert math.isnan(report.bound_bpsp) and math.isnan(result.bound_bpsp)  # no model bound to report
    assert 0 < report.payload_bits < 8 * pixels.size
    _, header, _ = read_versioned(result.data)
    assert header.uses_model and needs_no_model(header)
    (tmp_path / "image.vz").write_bytes(result.data)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from vaezip.api import decompress_images;"
        "(_, image), = decompress_images(open(sys.argv[2], 'rb').read());"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "np.save(sys.argv[3], np.asarray(image)); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "image.vz"),
                          str(tmp_path / "image.npy")], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
    assert np.array_equal(np.load(tmp_path / "image.npy"), pixels)


def test_fast_keeps_the_smallest_of_the_predictor_stream_and_the_classical_codings(tiny_weights, monkeypatch):
    _no_network(monkeypatch)
    model = load_model(tiny_weights[3])
    photo = np.asarray(Image.open(ROOT / "samples" / "hopper.png").convert("RGB"))[:96, :96]  # the predictor's case
    flat = np.zeros((40, 64, 3), np.uint8)
    flat[:, 32:] = 200  # two flat halves: a classical coding's case
    chosen = set()
    for image in (photo, flat, smooth_rgb(64, 80, seed=1)):
        result = compress_images([("image.png", Image.fromarray(np.ascontiguousarray(image), "RGB"))], model,
                                 device="cpu", fast=True)
        report, = result.images
        sizes = dict(report.candidate_bytes)
        assert {"predictor", "png", "webp"} <= set(sizes) and "model" not in sizes  # no model tile in the stream
        # The smaller file is kept: the predictor's stream (its header holds the coder's settings too) or the
        # smallest classical coding.
        stream = compress_images([("image.png", Image.fromarray(np.ascontiguousarray(image), "RGB"))], model,
                                 device="cpu", fast=True, classical=False).data
        if report.coding == "model":  # its header the larger, so its payload the smaller too
            assert result.data == stream and sizes["predictor"] == min(sizes.values()), sizes
        else:
            assert sizes[report.coding] == min(size for coding, size in sizes.items() if coding != "predictor")
            assert len(result.data) <= len(stream), (report.coding, sizes, len(stream))
        chosen.add(report.coding)
    assert "model" in chosen and len(chosen) > 1  # both kinds of choice were made


def test_fast_makes_the_quicker_webp_beside_the_predictor_and_the_default_the_full_one(tiny_weights, monkeypatch):
    """--fast makes its classical codings at FAST_WEBP_QUALITY (in threads beside the predictor); the default makes
    those first, then WebP at WEBP_QUALITY too where they come within CLASSICAL_SCREEN of the quick stream (here
    made to, then made not to); either WebP decodes to the image."""
    from codec import classic
    from vaezip import archive

    qualities = []
    encode_webp = classic._encode_webp
    monkeypatch.setattr(classic, "_encode_webp", lambda samples, quality: qualities.append(quality) or
                        encode_webp(samples, quality))
    model = load_model(tiny_weights[3])
    image = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 64, 48))
    for fast, screen, made in ((True, 1.0, [classic.FAST_WEBP_QUALITY]),
                               (False, math.inf, [classic.FAST_WEBP_QUALITY, classic.WEBP_QUALITY]),
                               (False, 0.0, [classic.FAST_WEBP_QUALITY])):
        monkeypatch.setattr(archive, "CLASSICAL_SCREEN", screen)
        qualities.clear()
        result = compress_images([("image.png", image)], model, device="cpu", fast=fast)
        assert qualities == made, (fast, qualities)
        assert decompress_images(result.data)[0][1].tobytes() == image.tobytes()
    samples = np.asarray(image)
    quick, full = classic.encode(samples, "webp", fast=True), classic.encode(samples, "webp")
    assert classic.FAST_WEBP_QUALITY < classic.WEBP_QUALITY
    for data in (quick, full):
        assert np.array_equal(classic.decode("webp", data, 48, 64, 3), samples)


def test_fast_cuts_larger_tiles_unless_told(tiny_weights):
    """--fast's tiles are FAST_TILE pixels a side (no model to fit; the predictor starts from its context less
    often), --tile still chooses; either file decodes to the image."""
    from vaezip.api import decompress_images
    from vaezip.archive import DEFAULT_TILE, FAST_TILE

    model = load_model(tiny_weights[3])
    pixels = smooth_rgb(FAST_TILE + 2, FAST_TILE + 32, seed=4)
    for tile, side, count in ((None, FAST_TILE, 4), (64, 64, 25)):
        result = compress_images([("image.png", Image.fromarray(pixels, "RGB"))], model, device="cpu",
                                 classical=False, fast=True, tile=tile)
        _, header, _ = read_versioned(result.data)
        assert header.coder.tile == side == result.tile and result.images[0].tiles == count
        (_, image), = decompress_images(result.data, model)
        assert np.array_equal(np.asarray(image), pixels)
    assert FAST_TILE > DEFAULT_TILE


def test_fast_refuses_what_needs_a_network(tiny_weights):
    image = [("image.png", Image.fromarray(smooth_rgb(32, 32, seed=0), "RGB"))]
    model = load_model(tiny_weights[3])
    for options in (dict(format_version=2), dict(samples=4), dict(predictor=False)):
        with pytest.raises(ValueError, match="no network"):
            compress_images(image, model, device="cpu", fast=True, **options)


def test_the_command_line_fast_option(tiny_weights, tmp_path):
    Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 96, 64)).save(tmp_path / "a.png")
    done = run_cli("compress", tmp_path / "a.png", "--fast", "-m", tiny_weights[3], "-v")
    assert done.returncode == 0, done.stderr.decode()
    assert "predictor (no model tile)" in done.stderr.decode()  # this photograph's tiles: the predictor's stream
    assert "no model bound (--fast" in done.stderr.decode()
    done = run_cli("info", tmp_path / "a.vz")
    assert b"model tiny-rgb" in done.stdout and b"(not needed to decode: no tile went through it)" in done.stdout
    # The model is not needed to decode: no -m, and tiny-rgb is not installed.
    done = run_cli("decompress", tmp_path / "a.vz", "-o", tmp_path / "b.png")
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(Image.open(tmp_path / "a.png")))
    # Several files in worker processes: byte for byte the files of one process.
    for jobs in ("1", "2"):
        folder = tmp_path / f"j{jobs}"
        folder.mkdir()
        Image.open(tmp_path / "a.png").save(folder / "a.png")
        Image.fromarray(smooth_rgb(40, 56, seed=6), "RGB").save(folder / "d.png")
        done = run_cli("compress", folder / "a.png", folder / "d.png", "--fast", "-m", tiny_weights[3], "-j", jobs)
        assert done.returncode == 0, done.stderr.decode()
    for name in ("a.vz", "d.vz"):
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes()
    # A --tile the model cuts otherwise (to a multiple of its stride) is said, not rounded in silence.
    done = run_cli("compress", tmp_path / "a.png", "-o", tmp_path / "e.vz", "--fast", "-m", tiny_weights[3],
                   "--tile", "65")
    assert done.returncode == 0 and b"--tile 65: tiles are a multiple of tiny-rgb's stride: tiles of 64" in \
        done.stderr, done.stderr.decode()
    assert read_versioned((tmp_path / "e.vz").read_bytes())[1].coder.tile == 64
    done = run_cli("compress", tmp_path / "a.png", "-o", tmp_path / "f.vz", "--fast", "-m", tiny_weights[3],
                   "--tile", "64")
    assert done.returncode == 0 and b"--tile" not in done.stderr, done.stderr.decode()
    for refused in (["--samples", "4"], ["--format", "2"]):
        done = run_cli("compress", tmp_path / "a.png", "-o", tmp_path / "c.vz", "--fast", *refused)
        assert done.returncode == 2 and b"--fast" in done.stderr, done.stderr.decode()
        assert not (tmp_path / "c.vz").exists()


def test_a_model_stream_whose_tiles_the_predictor_coded_is_reported_as_info_says(tiny_weights, tmp_path):
    """--tile 32 on a one-tile image: the model's stream, whose only tile (a stream's first: no bits-back to pay
    for the model's) the predictor coded. The report said `model: bound ... (1 of 1 tiles without bits-back ...)`
    where `vaezip info` says no tile went through the model (from a QA pass): now both say the predictor's."""
    Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 32, 32)).save(tmp_path / "a.png")
    done = run_cli("compress", tmp_path / "a.png", "--tile", "32", "-m", tiny_weights[3])
    report = done.stderr.decode()
    assert done.returncode == 0, report
    info = run_cli("info", tmp_path / "a.vz").stdout.decode()
    assert "(not needed to decode: no tile went through it)" in info and "predictor (no model tile)" in info
    assert "a.png: 32x32 RGB, predictor (no model tile): payload" in report and "bits-back" not in report, report
    assert "vs bound" in report  # the network ran: its bound stands beside the achieved rate


def test_fast_compress_with_a_shipped_model_imports_no_torch(tmp_path):
    """The shipped model's identity (name, sha256, stride) comes from the manifest: no weights are read, torch
    is never imported, and the file is the one that compress with the model loaded makes."""
    Image.fromarray(smooth_rgb(48, 64, seed=7), "RGB").save(tmp_path / "a.png")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from PIL import Image; from vaezip.api import compress_images;"
        "result = compress_images([('a.png', Image.open(sys.argv[2]))], 'photo2', fast=True);"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "open(sys.argv[3], 'wb').write(result.data); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "a.png"), str(tmp_path / "a.vz")],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
    loaded = compress_images([("a.png", Image.open(tmp_path / "a.png"))], load_model("photo2"), fast=True)
    assert (tmp_path / "a.vz").read_bytes() == loaded.data


def test_by_default_the_predictors_own_stream_is_kept_where_it_is_the_smaller_file(tiny_weights, monkeypatch):
    """By default compress also codes the image as --fast does without its classical codings (the predictor's
    tiles of FAST_TILE, no model tile) and keeps the smaller file; the report keeps the model's bound (the network
    ran) and names what the other stream cost. The untrained tiny model loses every tile of the sample photograph
    to the predictor, whose larger tiles then code it for less: the model's estimate rules its own stream out,
    which is then not coded at all. Where the quick stream is made larger than the model's, the model's is coded
    (its predictor tiles format 9's adaptive ones) and kept. (The early exit, which would skip the full pricing
    here, is kept out: test_the_early_exit_...)"""
    from vaezip import archive

    monkeypatch.setattr(archive, "GATE_RATIO", math.inf)
    image = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 256, 160))
    loaded = load_model(tiny_weights[3])
    # a tile and a format asked for: no quick stream; the model stream as the default codes it
    model_stream = compress_images([("a.png", image)], loaded, device="cpu", tile=32, format_version=9)
    quick = compress_images([("a.png", image)], loaded, device="cpu", fast=True, classical=False)
    coded = []
    encode_model = archive._encode_model
    monkeypatch.setattr(archive, "_encode_model", lambda *a, **k: coded.append(a[1]) or encode_model(*a, **k))
    default = compress_images([("a.png", image)], loaded, device="cpu")
    assert len(quick.data) < len(model_stream.data) and default.data == quick.data
    assert coded == [[0]]  # the quick stream's own coding only: the model's stream was ruled out
    # the images are read once: an iterator of them codes both streams too
    assert compress_images(iter([("a.png", image)]), loaded, device="cpu").data == default.data
    report, = default.images
    # the float network's estimate (its sample priced first, then the other tiles: batches of other sizes)
    assert math.isclose(report.bound_bits, model_stream.images[0].bound_bits, rel_tol=1e-4)
    candidates = dict(report.candidate_bytes)
    assert candidates["predictor"] == math.ceil(quick.images[0].payload_bits / 8) < candidates["model"]
    assert {"png", "webp", "raw"} <= set(candidates)

    original = archive._encode_archive

    def larger_quick(*args, **kwargs):  # the quick stream made larger than the model's
        result = original(*args, **kwargs)
        if not kwargs["fast"]:
            return result
        larger = tuple(archive.dataclasses.replace(one, payload_bits=one.payload_bits + 8e6) for one in result.images)
        return archive.dataclasses.replace(result, data=result.data + bytes(10**6), images=larger)

    monkeypatch.setattr(archive, "_encode_archive", larger_quick)
    kept = compress_images([("a.png", image)], loaded, device="cpu")
    assert kept.data == model_stream.data and "predictor" in dict(kept.images[0].candidate_bytes)
    assert dict(kept.images[0].candidate_bytes)["model"] == math.ceil(model_stream.images[0].payload_bits / 8)
    for options in (dict(tile=32), dict(format_version=8), dict(classical=False), dict(predictor=False)):
        calls = []
        monkeypatch.setattr(archive, "_encode_archive", lambda *a, **k: calls.append(k["fast"]) or original(*a, **k))
        compress_images([("a.png", image)], loaded, device="cpu", **options)
        assert calls == [False], options  # something asked for: that alone is coded


def test_the_early_exit_prices_a_sample_of_the_tiles_and_writes_the_full_paths_file(tiny_weights, monkeypatch):
    """By default the model first prices a lattice sample of one tile in GATE_EVERY; where that projects the model
    far behind the quick stream on every image (the untrained tiny model on a photograph), nothing more is priced
    or coded by the model and the file is the one the full path keeps (the quick stream's); the report's bound
    and model candidate are the projection, marked as such. Where the exit is not taken, the full path prices
    the other tiles only."""
    from vaezip import archive
    from vaezip.coding import TorchLatentModel

    image = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 256, 160))
    loaded = load_model(tiny_weights[3])
    monkeypatch.setattr("vaezip.estimate.unsupported", lambda config: "a network numpy leaves to torch, here")
    priced, coded = [], []
    tile_bounds, encode_model = TorchLatentModel.tile_bounds, archive._encode_model
    monkeypatch.setattr(TorchLatentModel, "tile_bounds",
                        lambda self, tiles, *a, **k: priced.append(len(tiles)) or tile_bounds(self, tiles, *a, **k))
    monkeypatch.setattr(archive, "_encode_model", lambda *a, **k: coded.append(a[1]) or encode_model(*a, **k))
    early = compress_images([("a.png", image)], loaded, device="cpu")
    sample = archive.gate_sample(160, 256, 32, archive.GATE_EVERY)
    assert priced == [len(sample)] and coded == [[0]]  # the sample; the quick stream's coding only
    report, = early.images
    assert report.bound_sample == (len(sample), 40) and report.coding == "model"
    assert dict(report.candidate_bytes)["model"] == math.ceil(report.bound_bits / 8)

    priced.clear()
    monkeypatch.setattr(archive, "GATE_RATIO", math.inf)  # the exit never taken: the full path
    full = compress_images([("a.png", image)], loaded, device="cpu")
    assert priced == [len(sample), 40 - len(sample)]  # each tile priced once
    assert full.data == early.data and full.images[0].bound_sample == ()
    # the projection from 5 of 40 tiles against the sum over all of them
    assert abs(report.bound_bits / full.images[0].bound_bits - 1) < 0.1


def test_a_large_images_sample_is_priced_in_two_stages_the_second_only_where_the_first_does_not_rule_out(
        tiny_weights, monkeypatch):
    """A large image's sample is priced first on a sub-lattice of one tile in GATE_FIRST (made here the hopper
    crop's one tile of it): where that projects the model more than GATE_FIRST_RATIO times the quick stream, the
    rest of the sample is not priced and the report says from how few tiles the bound is projected; else the rest
    is priced and the exit decided as before, each tile priced once whatever is decided. The file is the same."""
    from vaezip import archive
    from vaezip.coding import TorchLatentModel

    image = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 256, 160))
    loaded = load_model(tiny_weights[3])
    monkeypatch.setattr("vaezip.estimate.unsupported", lambda config: "a network numpy leaves to torch, here")
    monkeypatch.setattr(archive, "GATE_FIRST_LEAST", 1)
    first, second = archive.gate_stages(160, 256, 32)
    assert len(first) == 1 and sorted(first + second) == sorted(archive.gate_tiles(160, 256, 32))
    priced = []
    tile_bounds = TorchLatentModel.tile_bounds
    monkeypatch.setattr(TorchLatentModel, "tile_bounds",
                        lambda self, tiles, *a, **k: priced.append(len(tiles)) or tile_bounds(self, tiles, *a, **k))
    early = compress_images([("a.png", image)], loaded, device="cpu")
    assert priced == [1] and early.images[0].bound_sample == (1, 40)  # the untrained model: far behind

    files = {early.data}
    for ratios, expected in (((math.inf, archive.GATE_RATIO), [1, 4]), ((math.inf, math.inf), [1, 4, 35])):
        monkeypatch.setattr(archive, "GATE_FIRST_RATIO", ratios[0])
        monkeypatch.setattr(archive, "GATE_RATIO", ratios[1])
        priced.clear()
        result = compress_images([("a.png", image)], loaded, device="cpu")
        assert priced == expected, ratios
        assert result.images[0].bound_sample == ((5, 40) if len(expected) == 2 else ())
        files.add(result.data)
    assert len(files) == 1


def test_a_loaded_model_is_priced_as_its_file_is(monkeypatch):
    """The early exit's sample of a model loaded already (the API's, bench's) is priced by numpy from the weights
    it holds (NumpyEstimator.from_model), as the shipped model named is priced from its file (from_file, without
    torch): the same estimates, bound and file either way (bench and compress reported two bounds for one file)."""
    from vaezip.estimate import NumpyEstimator

    image = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 256, 160))
    made = []
    for way in ("from_file", "from_model"):
        original = getattr(NumpyEstimator, way).__func__
        monkeypatch.setattr(NumpyEstimator, way, classmethod(
            lambda cls, *a, _way=way, _original=original: made.append(_way) or _original(cls, *a)))
    by_name = compress_images([("a.png", image)], "photo2", device="cpu")
    loaded = compress_images([("a.png", image)], load_model("photo2"), device="cpu")
    assert made == ["from_file", "from_model"]
    assert loaded.data == by_name.data and loaded.images[0].bound_bits == by_name.images[0].bound_bits
    assert loaded.images[0].bound_sample == by_name.images[0].bound_sample != ()


def test_the_first_stage_is_a_sub_lattice_of_the_sample_on_large_images_only():
    from vaezip.archive import GATE_FIRST, GATE_FIRST_LEAST, gate_stages, gate_tiles

    assert gate_stages(512, 768, 32) == (gate_tiles(512, 768, 32), [])  # a Kodak image: one stage
    first, second = gate_stages(4096, 6144, 32)
    assert sorted(first + second) == sorted(gate_tiles(4096, 6144, 32)) and not set(first) & set(second)
    assert len(first) >= GATE_FIRST_LEAST and abs(len(first) * GATE_FIRST / (len(first) + len(second)) - 1) < 0.05
    rows, columns = 128, 192
    assert len({t // columns for t in first}) > rows // 2 and len({t % columns for t in first}) > columns // 2


def test_the_early_exits_sample_is_a_lattice_over_every_row_and_column_of_tiles():
    from vaezip.archive import gate_sample

    rows, columns = 16, 24  # a 768x512 photograph in tiles of 32
    chosen = gate_sample(512, 768, 32, 8)
    assert len(chosen) == rows * columns // 8 == len(set(chosen))
    assert {t // columns for t in chosen} == set(range(rows)) and {t % columns for t in chosen} == set(range(columns))
    assert gate_sample(32, 32, 32, 8) == [0] and gate_sample(100, 40, 32, 8) == [0]  # a small image: its first tile
    assert gate_sample(64, 64, 32, 1) == [0, 1, 2, 3]


def test_a_large_photographs_sample_is_about_gate_most_tiles_over_every_row_and_column():
    """Past GATE_EVERY * GATE_MOST tiles the lattice thins to about GATE_MOST (one in 8 of a 25-Mpixel image's
    tiles took 22 s to price), its step no multiple of 3, so that it still meets every row and column."""
    from vaezip.archive import GATE_EVERY, GATE_MOST, gate_sample, gate_tiles

    assert gate_tiles(512, 768, 32) == gate_sample(512, 768, 32, GATE_EVERY)  # a Kodak image: one in 8, as before
    rows, columns = 128, 192  # 6144x4096 in tiles of 32
    chosen = gate_tiles(4096, 6144, 32)
    assert 0.9 * GATE_MOST <= len(chosen) <= GATE_MOST and len(chosen) == len(set(chosen))
    assert {t // columns for t in chosen} == set(range(rows)) and {t % columns for t in chosen} == set(range(columns))


def test_the_early_exit_prices_small_images_whole_and_projects_by_pixels():
    """An image of fewer than GATE_WHOLE tiles is priced whole; a projection counts pixels, not tiles, so that
    an edge tile's fewer pixels (and bits) do not stand for a whole tile's."""
    from vaezip.archive import GATE_EVERY, GATE_WHOLE, gate_projection, gate_sample, gate_tiles

    assert gate_tiles(40, 40, 32) == [0, 1, 2, 3] and gate_tiles(100, 40, 32) == list(range(8))
    assert gate_tiles(512, 768, 32) == gate_sample(512, 768, 32, GATE_EVERY) and GATE_WHOLE > GATE_EVERY
    # a 40x40 image: a full tile (1024 pixels) at 2 bits a pixel and an edge tile of 8x32 pixels at 4
    assert gate_projection({0: 2048.0, 1: 1024.0}, {0: 1024, 1: 256}, 1600) == 3072.0 * 1600 / 1280


def test_an_archive_whose_graphic_goes_classical_keeps_the_models_file_where_that_is_the_smaller(tiny_weights):
    """The quick stream holds no classical coding: in an archive of a graphic (WebP's) and a photograph whose
    model estimate is above the quick stream's share of each, the model's file (the graphic classical) is still
    the smaller, so the model is not ruled out image by image, and that file is kept."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_golden import screenshot

    photo = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").crop((0, 0, 256, 160))
    images = [("graphic.png", screenshot(256, 192).convert("RGB")), ("photo.png", photo)]
    loaded = load_model(tiny_weights[3])
    default = compress_images(images, loaded, device="cpu")
    quick = compress_images(images, loaded, device="cpu", fast=True, classical=False)
    graphic, photograph = default.images
    assert graphic.coding in ("webp", "png") and photograph.coding == "model"
    # each image alone: the quick stream's share below the model's (the estimate's, or the coded size)
    assert all(dict(report.candidate_bytes)["predictor"] < dict(report.candidate_bytes)["model"]
               for report in default.images)
    assert len(default.data) < len(quick.data) / 1.5


def test_a_photograph_sized_image_is_cut_into_sections_decoded_side_by_side(tiny_weights, tmp_path):
    """--fast on a 768x512 image (2 rows of 3 tiles of 256, 1.2 million values): format 22, two sections of a row
    of tiles each (bitsback.section_runs) in the photograph profile refined (format 16's with --format 19); a fresh
    process decodes it the same on one thread under other kernel settings as this one does on every core. Where a
    tile would cost raw bytes less (noise), the stream is format 15's chain."""
    image = smooth_rgb(512, 768, seed=5)
    result = compress_images([("big.png", Image.fromarray(image))], load_model(tiny_weights[3]), device="cpu",
                             fast=True)
    version, header, _ = read_versioned(result.data)
    assert version == 22 and header.coder.schedule == (("predictive-refined-across-sections", 3),) * 2
    older = compress_images([("big.png", Image.fromarray(image))], load_model(tiny_weights[3]), device="cpu",
                            fast=True, format_version=19)
    version, header, _ = read_versioned(older.data)
    assert version == 16 and header.coder.schedule == (("predictive-sections", 3),) * 2
    (_, back), = decompress_images(older.data)
    assert np.array_equal(np.asarray(back), image) and len(result.data) < len(older.data)
    path = tmp_path / "big.vz"
    path.write_bytes(result.data)
    script = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from codec import bitsback;"
              "bitsback.section_workers = lambda: int(sys.argv[3]);"
              "from vaezip.api import decompress_images;"
              "(_, image), = decompress_images(open(sys.argv[2], 'rb').read());"
              "np.save(sys.argv[4], np.asarray(image)); print('ok')")
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(path), "1", str(tmp_path / "out.npy")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **OTHER_KERNELS})
    assert out.stdout.strip() == "ok", out.stderr
    assert np.array_equal(np.load(tmp_path / "out.npy"), image)
    (_, back), = decompress_images(result.data)  # here, one section a core
    assert np.array_equal(np.asarray(back), image)
    reported = []  # the sections' pricing shows (most of the work), then their coding (pushing their words)
    compress_images([("big.png", Image.fromarray(image))], load_model(tiny_weights[3]), device="cpu", fast=True,
                    progress=lambda done, total: reported.append((done, total)))
    assert reported == [(3, 6), (6, 6)] * 2
    noise = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mixed = np.concatenate([image[:64, :64], noise], axis=1)
    result = compress_images([("mixed.png", Image.fromarray(mixed))], load_model(tiny_weights[3]), device="cpu",
                             fast=True, classical=False, tile=32)
    version, header, _ = read_versioned(result.data)
    assert version == 15 and "predictive-sections" not in {kind for kind, _ in header.coder.schedule}
    (_, back), = decompress_images(result.data)
    assert np.array_equal(np.asarray(back), mixed)



def test_a_large_image_takes_a_section_for_each_large_section_values(tiny_weights, monkeypatch):
    """Beyond SECTIONS_NEAR sections, one a LARGE_SECTION_VALUES values (lowered here so that a 384x1024 image, 4
    rows of 2 tiles of 256 and 1.2 million values, counts as large): four sections of a row each, in the photograph
    profile, decoded exactly."""
    monkeypatch.setattr(bitsback, "LARGE_SECTION_VALUES", 2**18)
    image = smooth_rgb(1024, 384, seed=7)
    result = compress_images([("tall.png", Image.fromarray(image))], load_model(tiny_weights[3]), device="cpu",
                             fast=True)
    version, header, _ = read_versioned(result.data)
    assert version == 22 and header.coder.schedule == (("predictive-refined-across-sections", 2),) * 4
    (_, back), = decompress_images(result.data)
    assert np.array_equal(np.asarray(back), image)


def test_a_photograph_archived_with_thumbnails_is_coded_in_the_photograph_profile(monkeypatch):
    """Each section takes the kinds its own images call for (bitsback.sections_kinds): a photograph archived before
    thumbnails in the photograph profile alone, the thumbnails in it or the small-image profile, not all of them by
    the archive's average image (which would code the photograph as thumbnails are). Thresholds and section sizes
    lowered so that a 128x128 image counts as a photograph and the archive holds several sections."""
    monkeypatch.setattr(bitsback, "PHOTO_PROFILE_VALUES", 64 * 64 * 3)
    monkeypatch.setattr(bitsback, "SMALL_PROFILE_VALUES", 64 * 64 * 3)
    monkeypatch.setattr(bitsback, "SECTION_VALUES", 128 * 128 * 3 // 8)
    photograph = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").reduce(2)  # 128x128
    archive = [("photo.png", photograph), *_thumbnails(16)[:32]]
    result = compress_images(archive, fast=True, classical=False)
    version, header, _ = read_versioned(result.data)
    schedule = header.coder.schedule
    assert version == 22 and len(schedule) >= 2
    assert schedule[0][0] == "predictive-refined-across-sections" and {kind for kind, _ in schedule} <= {
        "predictive-refined-across-sections", "predictive-small-refined-across-sections"}
    photograph_last = [*archive[1:], archive[0]]
    assert read_versioned(compress_images(photograph_last, fast=True, classical=False).data)[1].coder.schedule[-1][
        0] == "predictive-refined-across-sections"
    for (_, image), (_, back) in zip(archive, decompress_images(result.data)):
        assert np.array_equal(np.asarray(back), np.asarray(image))


def _thumbnails(size: int = 32) -> list[tuple[str, Image.Image]]:
    """samples/hopper.png box-downsampled by 2 (128x128) cut into size x size crops: an archive of thumbnails."""
    reduced = Image.open(ROOT / "samples" / "hopper.png").convert("RGB").reduce(2)
    return [(f"{y}-{x}.png", reduced.crop((x, y, x + size, y + size)))
            for y in range(0, reduced.height, size) for x in range(0, reduced.width, size)]


def test_small_images_take_the_small_image_profile_where_it_costs_less_and_older_formats_never(tmp_path):
    """An archive of small photographs: by default its sections are priced in format 16's and the small-image profile
    refined (format 22's), each kept in the one of fewer words (format 22 where any takes it); --format 21 (or 20, 19)
    prices format 19's small-image profile, unrefined, instead (a format-19 file, larger); --format 18 (or 16) writes
    format 16's sections only, and no smaller file; metadata kept do not turn a format-22 file into 17; all
    decode."""
    from vaezip.metadata import METADATA
    from codec.metadata import BEFORE_DATA, Chunk

    thumbnails = _thumbnails()
    newest = compress_images(thumbnails, fast=True, classical=False)
    older = {version: compress_images(thumbnails, fast=True, classical=False, format_version=version)
             for version in (16, 18, 19, 21)}
    kinds = {kind for kind, _ in read_versioned(newest.data)[1].coder.schedule}
    assert newest.format_version == 22 and "predictive-small-refined-across-sections" in kinds
    assert kinds <= {"predictive-sections", "predictive-small-refined-across-sections"}
    nineteen = {kind for kind, _ in read_versioned(older[21].data)[1].coder.schedule}
    assert older[21].data == older[19].data and older[19].format_version == 19
    assert "predictive-small-sections" in nineteen and nineteen <= {"predictive-sections", "predictive-small-sections"}
    assert older[16].data == older[18].data and older[18].format_version == 16
    assert {kind for kind, _ in read_versioned(older[18].data)[1].coder.schedule} == {"predictive-sections"}
    assert len(newest.data) < len(older[19].data) < len(older[18].data)
    for data in (newest.data, older[19].data, older[18].data):
        for (_, image), (_, back) in zip(thumbnails, decompress_images(data)):
            assert np.array_equal(np.asarray(back), np.asarray(image))
    tagged = [(name, image.copy()) for name, image in thumbnails]
    tagged[0][1].info[METADATA] = (Chunk(BEFORE_DATA, b"tEXt", b"Title\0a thumbnail"),)
    kept = compress_images(tagged, fast=True, classical=False)
    assert kept.format_version == 22 and kept.images[0].metadata
    (_, back), *_ = decompress_images(kept.data)
    assert np.array_equal(np.asarray(back), np.asarray(thumbnails[0][1]))
    asked = compress_images(tagged, fast=True, classical=False, format_version=17)
    assert asked.format_version == 17 and asked.images[0].metadata


IMAGENETTE = SHARED_DATA / "imagenette_lowres" / "imagenette_32x32_box7.npz"


@pytest.mark.skipif(not IMAGENETTE.is_file(), reason="../shared/data/imagenette_lowres is absent")
def test_thumbnails_whose_quick_stream_wins_load_no_torch_and_give_the_same_file(tmp_path):
    """The default compress of an archive of Imagenette's thumbnails with the shipped model: the early exit lets the
    full path run (some thumbnail's sample comes near its share of the quick stream), whose estimate then rules the
    model out for the whole file (quick_file_wins): no tile needs the network, so torch is never imported; the file
    is the one `--fast` makes."""
    script = (
        "import sys, pickle; sys.path.insert(0, sys.argv[1]); from PIL import Image; from vaezip import archive, data;"
        "from vaezip.api import compress_images;"
        "images = [(f'{k}.png', Image.fromarray(a)) for k, a in enumerate(data.load('imagenette32-val', limit=100)"
        ".images)];"
        "calls = []; full = archive._encode_archive;"
        "archive._encode_archive = lambda *a, **k: calls.append(k['fast']) or full(*a, **k);"
        "made = compress_images(images).data; fast = compress_images(images, fast=True).data;"
        "pickle.dump((made == fast, calls, 'torch' in sys.modules), open(sys.argv[2], 'wb'))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "out.pkl")], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "VAEZIP_DATA": str(SHARED_DATA)})
    assert out.returncode == 0, out.stderr
    import pickle

    same, calls, torch_imported = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert False in calls  # the full path ran (beside the quick stream's calls, fast)
    assert not torch_imported and same
