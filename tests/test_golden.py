"""The golden files pin the .vz format: header, decode, byte-identical re-encoding, and old files decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from codec.container import VERSION, read
from vaezip.api import compress_images, decompress_images, load_model

GOLDEN = Path(__file__).parent / "data"


def test_golden_header():
    header, words = read((GOLDEN / "golden.vz").read_bytes())
    assert VERSION == 1
    assert header.model_name == "tiny-rgb"
    assert [(im.name, im.mode, im.width, im.height) for im in header.images] == [("golden.png", "RGB", 24, 20)]
    assert header.coder.tile == 16
    assert header.coder.schedule[0][0] == "predictive-neighbours"
    assert len(words) > 0


def test_golden_decodes_to_the_golden_pixels(tiny_weights):
    (name, image), = decompress_images((GOLDEN / "golden.vz").read_bytes(), load_model(tiny_weights[3]), device="cpu")
    assert name == "golden.png"
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_a_file_of_the_first_release_still_decodes(tmp_path):
    """golden-v1.vz: written before pixel-context models and whitened raw tiles, by format-1 weights."""
    from conftest import make_format_1_weights

    header, _ = read((GOLDEN / "golden-v1.vz").read_bytes())
    assert header.coder.schedule[0][0] == "raw"
    weights = make_format_1_weights(tmp_path / "tiny-rgb.safetensors", 3, "tiny-rgb")
    (_, image), = decompress_images((GOLDEN / "golden-v1.vz").read_bytes(), load_model(weights), device="cpu")
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_a_file_written_before_the_predictor_still_decodes(tiny_weights):
    """golden-v2.vz: the same image coded before first tiles could be predictive (its first tile is whitened)."""
    header, _ = read((GOLDEN / "golden-v2.vz").read_bytes())
    assert header.coder.schedule[0][0] == "whitened"
    (_, image), = decompress_images((GOLDEN / "golden-v2.vz").read_bytes(), load_model(tiny_weights[3]), device="cpu")
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_a_file_written_before_predictive_tiles_had_neighbours_still_decodes(tiny_weights):
    """golden-v3.vz: the same image, its first tile coded by the predictor without its neighbours ("p")."""
    header, _ = read((GOLDEN / "golden-v3.vz").read_bytes())
    assert header.coder.schedule[0][0] == "predictive"
    (_, image), = decompress_images((GOLDEN / "golden-v3.vz").read_bytes(), load_model(tiny_weights[3]), device="cpu")
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(GOLDEN / "golden.png")))


def test_encoding_reproduces_the_golden_bytes(tiny_weights):
    """Same image, same model: the same bytes. A failure means the format or the model's floats changed."""
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
