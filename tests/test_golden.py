"""The golden files pin the .vz format: header, decode, byte-identical re-encoding, and old files decoding.

golden.vz is format 2 (JSON header, integer-exact model path); format3/*.vz (`python scripts/make_golden.py
--format3`) are format 3: one file of each kind the classical path takes, golden.png through the model, and an
archive that mixes both paths; format5/*.vz (`--format5`) are format 5: golden.png's model path with
predictor tiles whose residuals are coded with a Laplace; format6/*.vz (`--format6`) the same in format 6, whose
predictor tiles blend several predictions; format7/reordered.vz (`--format7`) a format-7 file, whose stream puts
the predictor's tiles first; format8/*.vz (`--format8`) the codings of format6 and format7 in format 8, whose
predictor tiles code their residuals with tables fitted on photographs; format9/*.vz (`--format9`) the
predictor's coding and format7's in format 9, whose predictor tiles adapt their contexts over the stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from PIL import Image

import pytest
from conftest import OTHER_KERNELS, run_cli
from typer.testing import CliRunner

from codec.container import VERSION, read, read_versioned
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.cli import app
from vaezip.errors import IntegrityError

GOLDEN = Path(__file__).parent / "data"
FORMAT3 = GOLDEN / "format3"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_golden import (  # noqa: E402
    FORMAT7_TILE, PREDICTOR_KINDS, format3_files, format7_estimates, format7_file, format11_files, format12_files,
    format13_files, format14_files, format15_files, format16_files, format19_files, format20_files, format21_files,
    format22_files, hopper_crops, mixed_files, photo_crop, photo_sections, predictor_files, small_sections,
)


def test_golden_header():
    version, header, words = read_versioned((GOLDEN / "golden.vz").read_bytes())
    assert version == 2 and VERSION == 3  # golden.vz: integer-exact inference, JSON header
    assert header.model_name == "tiny-rgb"
    assert [(im.name, im.mode, im.width, im.height) for im in header.images] == [("golden.png", "RGB", 24, 20)]
    assert header.coder.tile == 16
    assert header.coder.schedule[0][0] == "predictive-neighbours"
    assert {kind for kind, _ in header.coder.schedule} == {"predictive-neighbours", "bitsback"}
    assert len(words) > 0


def decode_float_file(data: bytes, model) -> Image.Image | None:
    """A format-1 (float inference) file: its image where this machine computes the floats of the machine that
    made it, else None, after checking that the refusal says exactly that (never a wrong image)."""
    try:
        (_, image), = decompress_images(data, model, device="cpu")
        return image
    except IntegrityError as error:
        message = str(error)
        assert "format-1 file (float inference)" in message and "kind of machine" in message, message
        return None


def test_a_float_inference_file_decodes_or_is_refused_with_what_it_needs(tiny_weights):
    """golden-v4.vz: format 1 (float inference), the last file written before integer-exact inference. It
    decodes on the kind of machine that made it (an AVX-512 CPU); elsewhere the message says so."""
    version, header, _ = read_versioned((GOLDEN / "golden-v4.vz").read_bytes())
    assert version == 1 and "bitsback" in {kind for kind, _ in header.coder.schedule}
    image = decode_float_file((GOLDEN / "golden-v4.vz").read_bytes(), load_model(tiny_weights[3]))
    assert image is None or np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_golden_decodes_to_the_golden_pixels_in_a_fresh_process_under_other_kernels(tiny_weights, tmp_path):
    """The format-2 golden file decodes exactly whatever kernels the CPU runs (see test_portability.py for the
    full matrix)."""
    for env in ({}, OTHER_KERNELS):
        result = run_cli("decompress", GOLDEN / "golden.vz", "-o", tmp_path / "out.png", "-f", "-m", tiny_weights[3],
                         env=env)
        assert result.returncode == 0, result.stderr
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(GOLDEN / "golden.png")))


@pytest.mark.parametrize("name, first_kind", [("golden-v1.vz", "raw"), ("golden-v2.vz", "whitened"),
                                              ("golden-v3.vz", "predictive")])
def test_files_of_earlier_releases_decode_or_are_refused_with_what_they_need(name, first_kind, tiny_weights, tmp_path):
    """v1: before pixel-context models and whitened raw tiles (format-1 weights); v2: before the predictor; v3:
    before predictive tiles had neighbours. All float inference, made on an AVX-512 CPU."""
    from conftest import make_format_1_weights

    header, _ = read((GOLDEN / name).read_bytes())
    assert header.coder.schedule[0][0] == first_kind
    weights = make_format_1_weights(tmp_path / "tiny-rgb.safetensors", 3, "tiny-rgb") if name == "golden-v1.vz" else tiny_weights[3]
    image = decode_float_file((GOLDEN / name).read_bytes(), load_model(weights))
    assert image is None or np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_encoding_reproduces_the_golden_bytes(tiny_weights):
    """Same image, same model: the same bytes, on any machine (integer-exact inference), in format 2 and 3
    (written on request), whose model paths hold the very same payload words, in format 5 (on request) and in
    format 6 (by default).
    A failure means the format or the integer model's rules changed."""
    image = Image.open(GOLDEN / "golden.png")
    model = load_model(tiny_weights[3])
    data = compress_images([("golden.png", image)], model, tile=16, device="cpu", predictor=False,
                           format_version=2).data
    assert data == (GOLDEN / "golden.vz").read_bytes()
    for version in PREDICTOR_KINDS:
        for file_name, ((pair,), options) in predictor_files(version).items():
            again = compress_images([pair], model, **{"tile": 16, "device": "cpu", **options})
            pinned = (GOLDEN / f"format{version}" / file_name).read_bytes()
            assert again.data == pinned and again.format_version == version, (version, file_name)
    result = compress_images([("golden.png", image)], model, tile=16, device="cpu", predictor=False, classical=False,
                             format_version=3)
    assert result.data == (FORMAT3 / "model.vz").read_bytes() and result.format_version == 3
    _, header, words = read_versioned(result.data)
    _, old_header, old_words = read_versioned(data)
    assert np.array_equal(words, old_words) and header.coder.schedule == old_header.coder.schedule
    assert len(result.data) < len(data) - 200  # the binary header: the same file, ~250 bytes less


def test_the_untrained_model_loses_every_tile_of_the_golden_image_to_the_predictor(tiny_weights):
    """By default a tile goes to the predictor (or raw bytes) wherever that is cheaper than the model's bound:
    for the untrained tiny model, every tile; and the file is smaller than the model-only golden file. The
    Laplace residuals of format 5 code them for less than format 3's Gaussian ones, format 6's blend for less
    still."""
    image = Image.open(GOLDEN / "golden.png")
    sizes = {}
    kinds = {None: "predictive-small-refined-across-sections", 19: "predictive-small-sections",
             16: "predictive-sections", 15: "predictive-staged",
             14: "predictive-wide", 13: "predictive-parity", 12: "predictive-cascade",
             10: "predictive-least-squares", 9: "predictive-adaptive", 8: "predictive-fitted", 6: "predictive-blend",
             5: "predictive-laplace", 3: "predictive-neighbours"}
    for version, predictor_kind in kinds.items():
        result = compress_images([("golden.png", image)], load_model(tiny_weights[3]), tile=16, device="cpu",
                                 classical=False, format_version=version)
        header, _ = read(result.data)
        assert {kind for kind, _ in header.coder.schedule} <= {predictor_kind, "whitened"}
        assert result.images[0].tiles_without_bitsback == result.images[0].tiles == 4
        sizes[version] = result.images[0].payload_bits
        assert len(result.data) < len((GOLDEN / "golden.vz").read_bytes())
    assert sizes[6] < sizes[5] < sizes[3] and sizes[8] < sizes[5] and sizes[16] < sizes[15] < sizes[5]  # synthetic
    assert sizes[None] < sizes[16]  # a small image: the small-image profile where it costs less


@pytest.mark.parametrize("version", sorted(PREDICTOR_KINDS))
def test_predictor_golden_files_decode_exactly_in_a_fresh_process_under_other_kernels(version, tiny_weights, tmp_path):
    """The Laplace tables are built from exact operations only (codec/exact.py), the blend's means and stds
    from exactly rounded ones: the same on every machine."""
    folder = GOLDEN / f"format{version}"
    # numpy's SIMD kernels too: the predictor's arithmetic is numpy's (X86_V2 is its x86-64 baseline)
    plain_numpy = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1",
                   "NPY_DISABLE_CPU_FEATURES": "X86_V4 X86_V3 AVX512_ICL AVX512_SPR"}
    for file_name, (((_, image),), _) in predictor_files(version).items():
        read_version, header, _ = read_versioned((folder / file_name).read_bytes())
        assert read_version == version and header.coder.schedule[0][0] == PREDICTOR_KINDS[version], file_name
        expected = np.asarray(image)
        for env in ({}, plain_numpy):
            out = tmp_path / f"{file_name}.png"
            result = run_cli("decompress", folder / file_name, "-o", out, "-f", "-m", tiny_weights[3], env=env)
            assert result.returncode == 0, result.stderr
            assert np.array_equal(np.asarray(Image.open(out)), expected), (file_name, env)


@pytest.mark.parametrize("version", [7, 8, 9, 10])
def test_the_reordered_golden_files_hold_their_stream_order_and_reencode_to_their_bytes(version, tiny_weights):
    """formatN/reordered.vz: the predictor's tiles (the even ones, by the fixed estimates) first in the stream,
    then the model's in batches; encoding again gives the same bytes. A failure means the format changed."""
    from codec import bitsback
    from vaezip.unpack import count_tiles

    pinned = (GOLDEN / f"format{version}" / "reordered.vz").read_bytes()
    read_version, header, _ = read_versioned(pinned)
    tiles = count_tiles(20, 24, FORMAT7_TILE)
    order = bitsback.order_from_runs(header.coder.order, tiles)
    alone = [None if estimate == 0 else "predictor" for estimate in format7_estimates(tiles)]
    assert read_version == version and order == bitsback.model_last(alone) == [0, 2, 4, 6, 8, 1, 3, 5, 7]
    kinds = [kind for kind, n in header.coder.schedule for _ in range(n)]
    predictor_kind = {7: "predictive-blend", 8: "predictive-fitted", 9: "predictive-adaptive",
                      10: "predictive-least-squares"}[version]
    assert kinds[:5] == [predictor_kind] * 5 and "bitsback" in kinds[5:]
    assert format7_file(tiny_weights[3], version) == pinned


@pytest.mark.parametrize("version", [7, 8, 9, 10])
def test_the_reordered_golden_files_decode_exactly_in_a_fresh_process_under_other_kernels(version, tiny_weights,
                                                                                          tmp_path):
    expected = np.asarray(Image.open(GOLDEN / "golden.png"))
    for env in ({}, OTHER_KERNELS):
        out = tmp_path / "out.png"
        result = run_cli("decompress", GOLDEN / f"format{version}" / "reordered.vz", "-o", out, "-f", "-m",
                         tiny_weights[3], env=env)
        assert result.returncode == 0, result.stderr
        assert np.array_equal(np.asarray(Image.open(out)), expected), env


def test_info_says_how_each_file_was_coded():
    from codec.container import READABLE_VERSIONS
    from vaezip.api import INFERENCE

    assert sorted(INFERENCE) == list(READABLE_VERSIONS)  # every format a reader reads, named
    result = run_cli("info", GOLDEN / "golden.vz", GOLDEN / "golden-v4.vz", GOLDEN / "format6" / "model.vz",
                     GOLDEN / "format7" / "reordered.vz", GOLDEN / "format8" / "reordered.vz",
                     GOLDEN / "format9" / "reordered.vz", GOLDEN / "format10" / "reordered.vz")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.decode().splitlines() if not line.startswith(" ")]
    assert "format 2 (integer-exact inference: decodes on any machine)" in lines[0]
    assert "format 1 (float inference: decodes on the kind of machine that made it)" in lines[1]
    assert "format 6 (integer-exact inference with blend predictor tiles," in lines[2]
    assert "format 7 (integer-exact inference with blend predictor tiles first in the stream" in lines[3]
    assert "format 8 (integer-exact inference with blend predictor tiles coded by fitted residual tables" in lines[4]
    assert "format 9 (integer-exact inference with adaptive blend predictor tiles first in the stream" in lines[5]
    assert "format 10 (integer-exact inference with adaptive least-squares predictor tiles first in the stream" in \
        lines[6]
    from codec.container import read_versioned

    schedule = read_versioned((GOLDEN / "format6" / "model.vz").read_bytes())[1].coder.schedule
    batches, tiles = len(schedule), sum(count for _, count in schedule)
    assert batches < tiles and f", {tiles} tiles in {batches} batches (" in lines[2]  # the kinds count tiles
    # the file's bytes split as compress reports them: its header is everything but the words and classical codings
    from vaezip.archive import _header_bytes

    paths = [GOLDEN / "golden.vz", GOLDEN / "golden-v4.vz", GOLDEN / "format6" / "model.vz",
             GOLDEN / "format17" / "archive-fast.vz", GOLDEN / "format18" / "photo-fast.vz"]
    result = run_cli("info", *paths)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.decode().splitlines() if not line.startswith(" ")]
    for path, line in zip(paths, lines):
        data = path.read_bytes()
        version, header, words = read_versioned(data)
        classical = sum(len(entry.data) for entry in header.images)
        metadata = sum(len(chunk.data) for entry in header.images for chunk in entry.metadata)
        assert (f"{len(data)} bytes (header {_header_bytes(data, version)} B, ANS stream {4 * len(words)} B, "
                f"classical codings {classical} B" + (f", metadata {metadata} B)" if metadata else ")")) in line, line
    assert ", metadata " in lines[3] and ", metadata " in lines[4]  # the metadata files' own share


def test_info_needs_no_model_and_imports_no_torch():
    """`vaezip info` reads headers only: it must not pay for importing torch (seconds on a small CPU)."""
    import subprocess
    import sys

    script = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
              f"result = CliRunner().invoke(app, ['info', {str(GOLDEN / 'golden.vz')!r}]); "
              "print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], (done.stdout, done.stderr)


# ---------------------------------------------------------------------------------------------- format 3

DECODER = """
import json, sys
from pathlib import Path
import numpy as np
from vaezip.api import decompress_images, read_header
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.vz")):
    data = path.read_bytes()
    needs_model = read_header(data).uses_model
    model = None
    if needs_model:
        from vaezip.api import load_model
        model = load_model(sys.argv[2])
    images = decompress_images(data, model, device="cpu")
    out[path.name] = {"torch": "torch" in sys.modules, "images": [
        {"name": n, "mode": im.mode, "pixels": np.asarray(im).tolist(), "transparency": repr(im.info.get("transparency")),
         "palette": [im.palette.mode, im.palette.tobytes().hex()] if im.mode == "P" else None}
        for n, im in images]}
print(json.dumps(out))
"""


def test_format_3_golden_files_decode_exactly_in_a_fresh_process(tiny_weights, tmp_path):
    """Each file gives back the images make_golden.py made it from; the classically coded ones without a model
    and without importing torch (decoded first, in a process that has loaded nothing else)."""
    expected = format3_files()
    assert sorted(expected) == sorted(p.name for p in FORMAT3.glob("*.vz"))
    classical_first = tmp_path / "classical"
    classical_first.mkdir()
    for name in expected:
        if not read_versioned((FORMAT3 / name).read_bytes())[1].uses_model:
            (classical_first / name).write_bytes((FORMAT3 / name).read_bytes())
    decoded = {}
    for folder in (classical_first, FORMAT3):
        done = subprocess.run([sys.executable, "-c", DECODER, str(folder), str(tiny_weights[3])], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        decoded[folder] = json.loads(done.stdout)
    assert not any(entry["torch"] for entry in decoded[classical_first].values())
    assert len(decoded[classical_first]) == 7
    for file_name, images in expected.items():
        got = decoded[FORMAT3][file_name]["images"]
        assert [image["name"] for image in got] == [name for name, _ in images]
        for image, (_, original) in zip(got, images):
            assert image["mode"] == original.mode, file_name
            assert np.array_equal(np.array(image["pixels"], dtype=np.uint8), np.asarray(original)), file_name
            if original.mode == "P":
                assert image["palette"] == [original.palette.mode, original.palette.tobytes().hex()], file_name
            assert image["transparency"] == repr(original.info.get("transparency")), file_name


def test_format_3_golden_files_say_how_each_image_was_coded():
    from vaezip.api import file_info

    codings = {name: [image.coding for image in file_info((FORMAT3 / name).read_bytes()).images]
               for name in format3_files()}
    assert codings == {"screenshot.vz": ["webp"], "palette.vz": ["webp"], "tiny.vz": ["raw"], "rgba.vz": ["webp"],
                       "la.vz": ["webp"], "p-transparency.vz": ["png"], "l-key.vz": ["png"], "model.vz": ["model"],
                       "model-alpha.vz": ["model"],
                       "archive.vz": ["model", "raw", "webp"]}
    info = file_info((FORMAT3 / "archive.vz").read_bytes())
    assert info.version == 3 and info.model == "tiny-rgb" and info.images[1].coded_bytes == 75
    assert file_info((FORMAT3 / "tiny.vz").read_bytes()).model is None
    alpha = read_versioned((FORMAT3 / "model-alpha.vz").read_bytes())[1].images[0]
    assert alpha.info["planes"]["alpha"] == {"coding": "webp", "length": len(alpha.data)}
    assert len((FORMAT3 / "tiny.vz").read_bytes()) <= 120  # issue 15: a 5x5 RGB image


def test_the_cli_writes_an_older_format_on_request(tiny_weights, tmp_path):
    """--format 15 for readers before format 16 (the staged cascade's tiles in one chain, not in sections), 14 for
    readers before format 15 (the wide cascade's tiles, without the third stage), 13 for readers
    before format 14 (the cascade's tiles with parity, their blends not reading the errors two away), 12 for
    readers before format 13 (the cascade's tiles without parity), 11 for readers before format 12 (format 10's
    least-squares tiles, not the cascade's), 10 for those before format 11 (the same, the header as it is), 9 for
    readers before format 10 (the adaptive tiles without least squares), 8 for those before format 9 (the fitted
    tiles without adapting), 7 or 6 for those before format 8 (the blend's Laplace tiles), 5 for those before format
    6, 3 (and 2) for those before format 5: the predictor's Laplace or Gaussian tiles; the same bytes in a worker
    process (-j 2); --format 21, 20 and 19 write one file for this small image (no photograph sections; the
    small-image profile unrefined, never smaller than the default's), 18 and 16 format 16's sections without the
    small-image profile; --format with --samples, or a
    format it cannot write, is a usage error."""
    image = np.asarray(Image.open(GOLDEN / "golden.png"))
    formats = {"new": [], "twenty-one": ["--format", "21"], "twenty": ["--format", "20"],
               "nineteen": ["--format", "19"], "eighteen": ["--format", "18"],
               "sixteen": ["--format", "16"],
               "fifteen": ["--format", "15"], "fourteen": ["--format", "14"],
               "thirteen": ["--format", "13"], "twelve": ["--format", "12"], "eleven": ["--format", "11"],
               "ten": ["--format", "10"],
               "nine": ["--format", "9"], "eight": ["--format", "8"],
               "seven": ["--format", "7"], "six": ["--format", "6"], "five": ["--format", "5"],
               "three": ["--format", "3"], "two": ["--format", "2"]}
    # The writes in this process (typer's CliRunner: each fresh process cost ~2.5 s, nineteen of them), the reads
    # in a fresh one, and the same bytes from a worker process below
    for name, extra in formats.items():
        done = CliRunner().invoke(app, ["compress", str(GOLDEN / "golden.png"), "-o", str(tmp_path / f"{name}.vz"),
                                        "-m", str(tiny_weights[3]), "--tile", "16", *extra])
        assert done.exit_code == 0, done.output
    # one command decodes them all (each beside its file), as a user's `vaezip decompress *.vz` would
    back = run_cli("decompress", *(tmp_path / f"{name}.vz" for name in formats), "-m", tiny_weights[3])
    assert back.returncode == 0, back.stderr.decode()
    for name in formats:
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), image), name
    versions = {name: read_versioned((tmp_path / f"{name}.vz").read_bytes())[0] for name in formats}
    assert versions["three"] == 3 and versions["two"] == 2 and versions["five"] in (3, 5)
    assert versions["new"] in (3, 16, 22) and versions["sixteen"] in (3, 16) and versions["nineteen"] in (3, 16, 19)
    assert versions["six"] == versions["seven"] in (3, 6)  # nothing for the stream order to move here
    assert versions["eight"] in (3, 8) and versions["nine"] in (3, 9)
    assert versions["ten"] in (3, 10) and versions["eleven"] in (3, 10, 11)  # 11 where deflating pays
    assert (tmp_path / "twenty.vz").read_bytes() == (tmp_path / "nineteen.vz").read_bytes()
    assert (tmp_path / "twenty-one.vz").read_bytes() == (tmp_path / "nineteen.vz").read_bytes()
    assert len((tmp_path / "new.vz").read_bytes()) <= len((tmp_path / "nineteen.vz").read_bytes())
    assert (tmp_path / "eighteen.vz").read_bytes() == (tmp_path / "sixteen.vz").read_bytes()
    assert versions["twelve"] in (3, 12) and versions["thirteen"] in (3, 13) and versions["fourteen"] in (3, 14)
    assert versions["fifteen"] in (3, 15)  # 3: without the initial statistics PNG codes this image for less
    fifteen_coder = read_versioned((tmp_path / "fifteen.vz").read_bytes())[1].coder
    assert fifteen_coder is None or "predictive-sections" not in {kind for kind, _ in fifteen_coder.schedule}
    fourteen_kinds = {kind for kind, _ in read_versioned((tmp_path / "fourteen.vz").read_bytes())[1].coder.schedule}
    assert "predictive-staged" not in fourteen_kinds
    thirteen_kinds = {kind for kind, _ in read_versioned((tmp_path / "thirteen.vz").read_bytes())[1].coder.schedule}
    assert "predictive-wide" not in thirteen_kinds
    twelve_kinds = {kind for kind, _ in read_versioned((tmp_path / "twelve.vz").read_bytes())[1].coder.schedule}
    assert "predictive-parity" not in twelve_kinds
    (_, ten_header, ten_words), (_, eleven_header, eleven_words) = (
        read_versioned((tmp_path / f"{name}.vz").read_bytes()) for name in ("ten", "eleven"))
    assert ten_header == eleven_header and np.array_equal(ten_words, eleven_words)
    assert (tmp_path / "seven.vz").read_bytes() == (tmp_path / "six.vz").read_bytes()
    kinds = {kind for kind, _ in read_versioned((tmp_path / "two.vz").read_bytes())[1].coder.schedule}
    assert "predictive-laplace" not in kinds and "predictive-neighbours" in kinds
    copies = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        copies.append(tmp_path / folder / "golden.png")
        copies[-1].write_bytes((GOLDEN / "golden.png").read_bytes())
    done = run_cli("compress", *copies, "-m", tiny_weights[3], "--tile", "16", "--format", "3", "-j", "2")
    assert done.returncode == 0, done.stderr.decode()
    for copy in copies:
        assert copy.with_suffix(".vz").read_bytes() == (tmp_path / "three.vz").read_bytes()
    done = run_cli("compress", GOLDEN / "golden.png", "-o", tmp_path / "twelve-samples.vz", "-m", tiny_weights[3],
                   "--tile", "16", "--format", "12", "--samples", "2")  # 12 holds importance-weighted batches
    assert done.returncode == 0, done.stderr.decode()
    assert read_versioned((tmp_path / "twelve-samples.vz").read_bytes())[0] in (4, 12)
    for bad in (["--format", "4"], ["--format", "3", "--samples", "2"]):
        done = run_cli("compress", GOLDEN / "golden.png", "-o", tmp_path / "bad.vz", "-m", tiny_weights[3], *bad)
        assert done.returncode == 2 and not (tmp_path / "bad.vz").exists(), done.stderr
        assert len(done.stderr.decode().strip().splitlines()) == 1 and b"--format" in done.stderr


# Pinned files whose model stream went without the model tile by tile (predictor tiles, or no tiles at all).
MODEL_FREE = ["format16/predictor.vz", "format16/fast.vz", "format16/photo-fast.vz", "format16/archive-fast.vz",
              "format16/odd-fast.vz",
              # formats 12 to 15: the same code decodes each one's files; two of each (the rest decode in
              # test_format_11_to_16_golden_files_..., with the model loaded)
              "format15/predictor.vz", "format15/archive-fast.vz", "format14/fast.vz", "format14/odd-fast.vz",
              "format13/photo-fast.vz", "format13/archive-fast.vz", "format12/predictor.vz", "format12/fast.vz",
              "format11/archive-fast.vz", "format10/predictor.vz", "format10/fast.vz", "format10/photo-fast.vz",
              "format9/predictor.vz",
              "format8/predictor.vz", "format6/predictor.vz", "format5/predictor.vz", "format3/model-alpha.vz",
              "format3/archive.vz"]


@pytest.mark.parametrize("name", MODEL_FREE)
def test_a_file_whose_tiles_all_went_without_the_model_decodes_without_it_or_torch(name, tiny_weights, tmp_path):
    """The model the header names is not installed, no model is given, and torch is never imported: the same
    images as the model's decoder gives."""
    from vaezip.archive import decode_archive
    from vaezip.unpack import needs_no_model

    data = (GOLDEN / name).read_bytes()
    header = read(data)[0]
    assert header.uses_model and needs_no_model(header)
    expected = decode_archive(data, load_model(tiny_weights[3]), device="cpu", progress=None)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from vaezip.api import decompress_images;"
        "images = decompress_images(open(sys.argv[2], 'rb').read());"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "np.savez(sys.argv[3], *[np.asarray(image) for _, image in images]); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", script, str(GOLDEN.parents[1]), str(GOLDEN / name),
                          str(tmp_path / "images.npz")], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
    got = np.load(tmp_path / "images.npz")
    assert len(got.files) == len(expected)
    for k, (_, image) in enumerate(expected):
        assert np.array_equal(got[f"arr_{k}"], np.asarray(image)), (name, k)


def test_a_file_with_model_tiles_still_needs_its_model():
    from vaezip.unpack import needs_no_model

    data = (GOLDEN / "format6" / "model.vz").read_bytes()
    assert not needs_no_model(read(data)[0])
    result = run_cli("decompress", GOLDEN / "format6" / "model.vz", "-o", "-")
    assert result.returncode != 0 and b"not installed here: pass --model" in result.stderr


WITHOUT_NUMBA = ["format9/predictor.vz", "format9/reordered.vz", "format10/predictor.vz", "format10/fast.vz",
                 "format10/photo-fast.vz", "format12/photo-fast.vz", "format13/photo-fast.vz", "format14/photo-fast.vz",
                 "format15/photo-fast.vz", "format16/photo-fast.vz"]


def decode_in_a_fresh_process(jobs: dict, folder: Path, env: dict[str, str] | None = None,
                              without_numba: bool = False) -> dict[str, str]:
    """Decode each job (key -> (.vz path, weights path)) in ONE fresh process (one per file cost ~2-4 s each, torch's
    import included), its images saved as `folder`/KEY.npz; returns {key: what went wrong} for the files that did not
    decode (the traceback). `without_numba`: numba cannot be imported there, and the kernels must run as plain
    Python."""
    script = """if True:
        import json, sys, traceback, numpy as np
        if sys.argv[3] == 'without-numba':
            sys.modules['numba'] = None
        sys.path.insert(0, sys.argv[1])
        from vaezip.api import decompress_images, load_model; from codec import kernels
        models = {}
        for source, weights, target in json.loads(sys.argv[2]):
            try:
                if weights not in models:
                    models[weights] = load_model(weights)
                images = decompress_images(open(source, 'rb').read(), models[weights], device='cpu')
                assert sys.argv[3] != 'without-numba' or (kernels.compiled() is None
                                                          and kernels.always() is kernels.PLAIN_FORMS)
                np.savez(target, *[np.asarray(image) for _, image in images])
            except Exception:
                open(target + '.failed', 'w').write(traceback.format_exc())
        print('ok')"""
    targets = {key: folder / f"{key}.npz" for key in jobs}
    listed = [[str(source), str(weights), str(targets[key])] for key, (source, weights) in jobs.items()]
    out = subprocess.run([sys.executable, "-c", script, str(GOLDEN.parents[1]), json.dumps(listed),
                          "without-numba" if without_numba else "with-numba"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    assert out.stdout.strip() == "ok", out.stderr
    return {key: Path(f"{target}.failed").read_text() for key, target in targets.items()
            if Path(f"{target}.failed").exists()}


def decoded_images(folder: Path, key: str) -> list[np.ndarray]:
    """The images decode_in_a_fresh_process saved for `key`, in order."""
    got = np.load(folder / f"{key}.npz")
    return [got[f"arr_{k}"] for k in range(len(got.files))]


def test_format_9_to_16_files_decode_in_a_fresh_process_without_numba(tiny_weights, tmp_path):
    """Format 9's adaptive predictor tiles, format 10's least-squares ones and the cascade's of formats 12 to 16
    have no numpy coder: where numba cannot be imported the kernels run as plain Python (codec/kernels.py
    PLAIN_FORMS, _borrowed the array itself), the same pixels."""
    jobs = {name.replace("/", "-"): (GOLDEN / name, tiny_weights[3]) for name in WITHOUT_NUMBA}
    failures = decode_in_a_fresh_process(jobs, tmp_path, without_numba=True)
    assert not failures, failures
    for name in WITHOUT_NUMBA:
        expected = np.asarray(photo_crop() if name.endswith("photo-fast.vz") else Image.open(GOLDEN / "golden.png"))
        got = decoded_images(tmp_path, name.replace("/", "-"))
        assert len(got) == 1 and np.array_equal(got[0], expected), name


# ---------------------------------------------------------------------------------------------- formats 11 to 16

DEFLATED_FILES = {11: format11_files, 12: format12_files, 13: format13_files, 14: format14_files,
                  15: format15_files, 16: format16_files, 19: format19_files, 20: format20_files,
                  21: format21_files, 22: format22_files}
DEFLATED_GOLDENS = [(version, name) for version, files in DEFLATED_FILES.items() for name in sorted(files())]


def _weights_of(images: list, tiny_weights: dict[int, Path]) -> Path:
    """The tiny model that codes `images` (name, image): grey or colour, as their first."""
    return tiny_weights[1 if images[0][1].mode == "L" else 3]


@pytest.mark.parametrize("version, file_name", DEFLATED_GOLDENS)
def test_format_11_to_22_golden_files_reencode_to_their_bytes(version, file_name, tiny_weights):
    """format11/*.vz: archives of twelve small images whose header is stored deflated (format 11), through the
    model and as --fast codes them; format12/*.vz: images and an archive through the predictor's cascade tiles
    (format 12, its header always deflated); format13/*.vz: the same through the cascade's tiles with parity;
    format14/*.vz: the same through the wide cascade's tiles; format15/*.vz: the same through the staged cascade's;
    format16/*.vz: the same in sections (cut at a few hundred values: make_golden.small_sections); format19/*.vz:
    small images in sections, some coded by the small-image profile; format20/*.vz: images taken for photographs
    (make_golden.photo_sections) in sections coded by the photograph profile (and, in the archive, the small-image
    one); format21/*.vz: the same images, the photograph profile's sections refined bit by bit; format22/*.vz: the
    same, the refinement reading the earlier channels' gradients too. Encoding again gives the same bytes (the next
    test decodes them in a fresh process). A failure means the format changed."""
    from codec.container import inflate_header
    from codec.header import to_binary

    images, options = DEFLATED_FILES[version]()[file_name]
    weights = _weights_of(images, tiny_weights)
    pinned = (GOLDEN / f"format{version}" / file_name).read_bytes()
    with small_sections(), photo_sections() if version in (20, 21, 22) else nullcontext():  # cuts only sections
        again = compress_images(images, load_model(weights), device="cpu", **options)
    assert again.format_version == version
    # byte for byte where this zlib deflates as the one that wrote it (zlib-ng, say, may not): else the same
    # header and the same words
    if again.data != pinned:
        (_, header, words), (_, pinned_header, pinned_words) = read_versioned(again.data), read_versioned(pinned)
        assert header == pinned_header and np.array_equal(words, pinned_words)
    read_version, header, words = read_versioned(pinned)
    assert read_version == version and [image.name for image in header.images] == [name for name, _ in images]
    if version >= 12:
        assert {12: "predictive-cascade", 13: "predictive-parity", 14: "predictive-wide",
                15: "predictive-staged", 16: "predictive-sections", 19: "predictive-small-sections",
                20: "predictive-photo-sections", 21: "predictive-refined-sections",
                22: "predictive-refined-across-sections"}[version] in {
            kind for kind, _ in header.coder.schedule}
    position, length, shift = 10, 0, 0
    while True:  # the stored header's length, a varint
        length |= (pinned[position] & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not pinned[position - 1] & 0x80:
            break
    plain = to_binary(header, len(words), version)
    assert inflate_header(pinned[position : position + length]) == plain
    assert length < len(plain) or not file_name.startswith("archive")  # 12 and 13 deflate a single image's too
    info = run_cli("info", GOLDEN / f"format{version}" / file_name)
    assert info.returncode == 0 and f"format {version} (" in info.stdout.decode() and "its header deflated" in \
        info.stdout.decode()


def test_format_11_to_22_golden_files_decode_in_a_fresh_process_under_other_kernels(tiny_weights, tmp_path):
    """Every file of test_format_11_to_22_golden_files_reencode_to_their_bytes decodes to its images in a fresh
    process, as the encoder ran and under generic ATen kernels on one thread: the same images whatever kernels the
    CPU runs."""
    files = {version: make() for version, make in DEFLATED_FILES.items()}
    wanted, jobs = {}, {}
    for version, name in DEFLATED_GOLDENS:
        key = f"{version}-{name}"
        wanted[key] = files[version][name][0]
        jobs[key] = (GOLDEN / f"format{version}" / name, _weights_of(wanted[key], tiny_weights))
    for setting, env in {"as-encoded": {}, "other-kernels": OTHER_KERNELS}.items():
        folder = tmp_path / setting
        folder.mkdir()
        failures = decode_in_a_fresh_process(jobs, folder, env)
        assert not failures, (setting, failures)
        for key, images in wanted.items():
            got = decoded_images(folder, key)
            assert len(got) == len(images), (setting, key)
            for k, (_, image) in enumerate(images):
                assert np.array_equal(got[k], np.asarray(image)), (setting, key, k)


def test_formats_10_to_15_asked_for_are_the_defaults_coding_with_their_predictor_tiles(tiny_weights):
    """--format 11 (format_version=11) codes as the default does, the quick stream and the early exit included,
    with format 10's least-squares predictor tiles instead of the staged cascade's (format 15's), the header
    deflated; --format 10 writes the same header and words plainly; --format 12 the cascade's tiles without
    parity, --format 13 those with parity, --format 14 the wide cascade's, --format 15 the staged cascade's in one
    chain, not in sections (format 16's), and nothing else changes."""
    images = hopper_crops()
    model = load_model(tiny_weights[3])
    newest = compress_images(images, model, device="cpu", classical=True)
    nineteen = compress_images(images, model, device="cpu", classical=True, format_version=19)
    # 22 and 19 where the small-image profile pays, refined and not
    assert newest.format_version in (16, 22) and nineteen.format_version in (16, 19)
    assert {kind for kind, _ in read(newest.data)[0].coder.schedule} <= {"predictive-sections",
                                                                         "predictive-small-refined-across-sections"}
    assert {kind for kind, _ in read(nineteen.data)[0].coder.schedule} <= {"predictive-sections",
                                                                           "predictive-small-sections"}
    sixteen = compress_images(images, model, device="cpu", classical=True, format_version=16)
    eighteen = compress_images(images, model, device="cpu", classical=True, format_version=18)
    assert sixteen.format_version == 16 and eighteen.data == sixteen.data
    assert {kind for kind, _ in read(sixteen.data)[0].coder.schedule} == {"predictive-sections"}
    newest = compress_images(images, model, device="cpu", classical=True, format_version=15)
    fourteen = compress_images(images, model, device="cpu", classical=True, format_version=14)
    thirteen = compress_images(images, model, device="cpu", classical=True, format_version=13)
    twelve = compress_images(images, model, device="cpu", classical=True, format_version=12)
    deflated = compress_images(images, model, device="cpu", classical=True, format_version=11)
    plain = compress_images(images, model, device="cpu", classical=True, format_version=10)
    assert (newest.format_version, fourteen.format_version, thirteen.format_version, twelve.format_version,
            deflated.format_version, plain.format_version) == (15, 14, 13, 12, 11, 10)
    newest_kinds = {kind for kind, _ in read(newest.data)[0].coder.schedule}
    assert "predictive-staged" in newest_kinds and not {"predictive-least-squares", "predictive-cascade",
                                                        "predictive-parity", "predictive-wide"} & newest_kinds
    for older, kind in ((fourteen, "predictive-wide"), (thirteen, "predictive-parity"), (twelve, "predictive-cascade"),
                        (deflated, "predictive-least-squares")):
        assert {k for k, _ in read(older.data)[0].coder.schedule} == newest_kinds - {"predictive-staged"} | {kind}
    (_, header, words), (_, plain_header, plain_words) = read_versioned(deflated.data), read_versioned(plain.data)
    assert header == plain_header and np.array_equal(words, plain_words) and len(deflated.data) < len(plain.data)


# ---------------------------------------------------------------------------------------------- mixed archives


@pytest.mark.parametrize("file_name", sorted(mixed_files()))
def test_archives_mixing_grey_and_colour_decode_in_a_fresh_process_and_their_stream_codes_again_the_same(
        file_name, tmp_path):
    """mixed/*.vz: the first archives of grey and colour images (the kind with most pixels through its model's
    stream, --fast; the other kind classical). A fresh process under other kernels decodes them to their images
    without torch; coding them again gives the same stream and model entries (the classical entries' bytes are
    Pillow's, which another Pillow may make otherwise)."""
    from codec.header import MODEL

    images, options = mixed_files()[file_name]
    pinned = (GOLDEN / "mixed" / file_name).read_bytes()
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from vaezip.api import decompress_images;"
        "images = decompress_images(open(sys.argv[2], 'rb').read());"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported';"
        "np.savez(sys.argv[3], *[np.asarray(image) for _, image in images]);"
        "print(' '.join(image.mode for _, image in images))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(GOLDEN.parents[1]), str(GOLDEN / "mixed" / file_name),
                          str(tmp_path / "images.npz")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **OTHER_KERNELS})
    assert out.stdout.split() == [image.mode for _, image in images], out.stderr
    got = np.load(tmp_path / "images.npz")
    for k, (_, image) in enumerate(images):
        assert np.array_equal(got[f"arr_{k}"], np.asarray(image)), (file_name, k)
    again = compress_images(images, **options)
    (_, header, words), (_, pinned_header, pinned_words) = read_versioned(again.data), read_versioned(pinned)
    assert np.array_equal(words, pinned_words) and header.coder == pinned_header.coder
    assert (header.model_name, header.model_sha256) == (pinned_header.model_name, pinned_header.model_sha256)
    assert [entry.coding == MODEL for entry in pinned_header.images] == [not report.other_kind
                                                                          for report in again.images]
    for entry, pinned_entry in zip(header.images, pinned_header.images):
        if pinned_entry.coding == MODEL:
            assert entry == pinned_entry
