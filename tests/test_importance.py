"""Importance-weighted (Monte-Carlo) bits-back through vaezip: `compress_images(samples=K)` and `vaezip
compress --samples K` write format 4 files that decode exactly in a fresh process under other kernels; every
other file stays format 3; what cannot be coded so is refused in one line. (The coder itself:
tests/codec_suite/test_codec_importance.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from codec import container, tilekinds
from vaezip import cli
from vaezip.api import compress_images, file_info, load_model, read_header


def _image(seed: int, height: int = 36, width: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    return np.clip(120 + 60 * np.sin(x / 5.0)[..., None] + 40 * np.cos(y / 4.0)[..., None]
                   + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def test_the_cli_offers_the_sample_counts_the_coder_has():
    assert cli.IMPORTANCE_SAMPLES == tilekinds.SAMPLE_COUNTS


@pytest.mark.parametrize("samples", [2, 4])
def test_an_archive_decodes_exactly_in_a_fresh_process_under_other_kernels(tmp_path, tiny_weights, samples):
    loaded = load_model(tiny_weights[3])
    pixels = [_image(1), _image(2, 20, 52)]
    items = [(f"{i}.png", Image.fromarray(p, "RGB")) for i, p in enumerate(pixels)]
    result = compress_images(items, loaded, tile=16, device="cpu", predictor=False, classical=False,
                             samples=samples)
    header = read_header(result.data)
    kinds = {kind for kind, _ in header.coder.schedule}
    assert tilekinds.importance_kind(samples) in kinds
    # format 4's kinds, and format 8's where the stream's first tile went to the blend predictor
    assert result.format_version == (8 if tilekinds.PREDICTIVE_FITTED in kinds else 4)
    assert header.coder.max_batch == 16 // samples  # the B * K rows of a batch: no more than plain bits-back's
    assert "importance-weighted" in file_info(result.data).inference
    (tmp_path / "two.vz").write_bytes(result.data)
    done = run_cli("decompress", tmp_path / "two.vz", "--dir", tmp_path / "out", "-m", tiny_weights[3],
                   env={"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr.decode()
    for i, original in enumerate(pixels):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{i}.png")), original)


def test_one_sample_writes_no_importance_weighted_batch(tiny_weights):
    """Format 8 for its blend predictor tile (the stream's first), format 6, 5 or 3 where that format is asked
    for."""
    for version, expected in ((None, container.FITTED_VERSION), (6, container.BLEND_VERSION),
                              (5, container.LAPLACE_VERSION), (3, container.VERSION)):
        result = compress_images([("a.png", Image.fromarray(_image(3), "RGB"))], load_model(tiny_weights[3]),
                                 tile=16, device="cpu", predictor=False, classical=False, format_version=version)
        kinds = {kind for kind, _ in read_header(result.data).coder.schedule}
        assert result.format_version == expected and tilekinds.BITSBACK in kinds
        assert not any(kind.startswith("bitsback-iw") for kind in kinds)


def test_a_file_without_an_importance_weighted_batch_holds_no_kind_of_format_4(tiny_weights):
    """One tile: nothing on the stack to pop K samples with, so no importance-weighted batch is coded and the
    file takes the format of what it holds (its one tile, coded without bits: format 8 for the predictor)."""
    loaded = load_model(tiny_weights[3])
    result = compress_images([("a.png", Image.fromarray(_image(5, 16, 16), "RGB"))], loaded, tile=16,
                             device="cpu", predictor=False, classical=False, samples=8)
    kinds = [kind for kind, _ in read_header(result.data).coder.schedule]
    assert not any(kind.startswith("bitsback-iw") for kind in kinds)
    assert result.format_version == container.binary_version(kinds)
    assert result.format_version == (8 if tilekinds.PREDICTIVE_FITTED in kinds else 3)
    with pytest.raises(ValueError, match="format 4"):
        compress_images([("a.png", Image.fromarray(_image(5), "RGB"))], loaded, samples=2, format_version=3)


def test_the_cli_compresses_with_samples_and_refuses_what_it_cannot(tmp_path, tiny_weights, context_weights):
    # (a small image: the classical codings win it, as they do where the model's first tiles cannot pop)
    Image.fromarray(_image(4), "RGB").save(tmp_path / "a.png")
    done = run_cli("compress", tmp_path / "a.png", "--samples", "2", "-m", tiny_weights[3], "--tile", "16",
                   "--verify")
    assert done.returncode == 0, done.stderr.decode()
    done = run_cli("decompress", tmp_path / "a.vz", "-o", tmp_path / "back.png")
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(Image.open(tmp_path / "a.png")))
    done = run_cli("compress", tmp_path / "a.png", "-o", tmp_path / "b.vz", "--samples", "3")
    assert done.returncode == 2 and b"--samples must be 1, 2, 4, 8, 16, not 3" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1 and not (tmp_path / "b.vz").exists()
    done = run_cli("compress", tmp_path / "a.png", "-o", tmp_path / "c.vz", "--samples", "4", "-m",
                   context_weights[3], "--tile", "16")
    assert done.returncode != 0 and b"pixel-context head" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1 and not (tmp_path / "c.vz").exists()


def test_the_decoder_refuses_importance_weighted_batches_beyond_its_pixel_limit(tiny_weights):
    """Four 64x64 tiles with 16 samples each are 2**18 pixels of model rows in one pass (plain batches are held
    to 2**16): refused before the model runs, as a batch too large is."""
    from codec.errors import LimitError
    from codec.header import CoderSettings, Header, ImageEntry
    from vaezip.api import decompress_images

    loaded = load_model(tiny_weights[3])
    coder = CoderSettings(2.0**-8, 16.0, 64, 4, ((tilekinds.importance_kind(16), 4),), "0.5.0", {})
    header = Header(loaded.name, loaded.sha256[:16], coder, (ImageEntry("a.png", "RGB", 256, 64),), "0" * 16)
    data = container.write(header, np.ones(100, np.uint32), container.IMPORTANCE_VERSION)
    with pytest.raises(LimitError, match="16 samples each"):
        decompress_images(data, loaded, device="cpu")
