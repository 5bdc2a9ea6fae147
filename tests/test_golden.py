"""The golden files pin the .vz format: header, decode, byte-identical re-encoding, and old files decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import pytest
from conftest import run_cli

from codec.container import VERSION, read, read_versioned
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.errors import IntegrityError

GOLDEN = Path(__file__).parent / "data"


def test_golden_header():
    version, header, words = read_versioned((GOLDEN / "golden.vz").read_bytes())
    assert version == VERSION == 2  # integer-exact inference
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
    for env in ({}, {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}):
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
    """Same image, same model: the same bytes, on any machine (integer-exact inference). A failure means the
    format or the integer model's rules changed."""
    image = Image.open(GOLDEN / "golden.png")
    data = compress_images(
        [("golden.png", image)], load_model(tiny_weights[3]), tile=16, device="cpu", predictor=False
    ).data
    assert data == (GOLDEN / "golden.vz").read_bytes()


def test_the_untrained_model_loses_every_tile_of_the_golden_image_to_the_predictor(tiny_weights):
    """By default a tile goes to the predictor (or raw bytes) wherever that is cheaper than the model's bound:
    for the untrained tiny model, every tile; and the file is smaller than the model-only golden file."""
    image = Image.open(GOLDEN / "golden.png")
    result = compress_images([("golden.png", image)], load_model(tiny_weights[3]), tile=16, device="cpu")
    header, _ = read(result.data)
    assert {kind for kind, _ in header.coder.schedule} <= {"predictive-neighbours", "whitened"}
    assert len(result.data) < len((GOLDEN / "golden.vz").read_bytes())
    assert result.images[0].tiles_without_bitsback == result.images[0].tiles == 4


def test_info_says_how_each_file_was_coded():
    result = run_cli("info", GOLDEN / "golden.vz", GOLDEN / "golden-v4.vz")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.decode().splitlines() if not line.startswith(" ")]
    assert "format 2 (integer-exact inference: decodes on any machine)" in lines[0]
    assert "format 1 (float inference: decodes on the kind of machine that made it)" in lines[1]


def test_info_needs_no_model_and_imports_no_torch():
    """`vaezip info` reads headers only: it must not pay for importing torch (seconds on a small CPU)."""
    import subprocess
    import sys

    script = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
              f"result = CliRunner().invoke(app, ['info', {str(GOLDEN / 'golden.vz')!r}]); "
              "print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], (done.stdout, done.stderr)
