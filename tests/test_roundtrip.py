"""Bit-exact round trips through the CLI, every decode in a fresh process."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import SHARED_DATA, run_cli
from PIL import Image

from vaezip.images import png_bytes

SIZES = [(1, 1), (1, 500), (7, 3), (33, 65), (300, 1), (1000, 3)]  # (height, width)


def smooth(rng, height, width, channels):
    """A photo-like test image: smooth gradients plus noise."""
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None] + rng.normal(0, 8, (height, width, channels))
    return np.clip(base, 0, 255).astype(np.uint8)


def make_image(rng, mode, height, width):
    if mode == "L":
        return Image.fromarray(smooth(rng, height, width, 1)[..., 0], "L")
    if mode == "LA":
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([smooth(rng, height, width, 1), alpha], -1), "LA")
    if mode == "RGB":
        return Image.fromarray(smooth(rng, height, width, 3), "RGB")
    if mode == "RGBA":
        alpha = np.where(rng.random((height, width, 1)) < 0.5, 255, 0).astype(np.uint8)
        return Image.fromarray(np.concatenate([smooth(rng, height, width, 3), alpha], -1), "RGBA")
    if mode == "P":
        image = Image.fromarray(smooth(rng, height, width, 3), "RGB").quantize(colors=37)
        image.info["transparency"] = 5
        return image
    if mode == "P-duplicates":  # two palette entries with one colour: coded through the index plane
        indices = rng.integers(0, 4, (height, width), dtype=np.uint8)
        image = Image.fromarray(indices, "P")
        image.putpalette([10, 20, 30, 10, 20, 30, 200, 0, 0, 0, 0, 255])
        return image
    raise ValueError(mode)


def assert_same(original: Image.Image, decoded_path):
    decoded = Image.open(decoded_path)
    assert decoded.mode == original.mode
    assert decoded.size == original.size
    assert np.array_equal(np.asarray(decoded), np.asarray(original))
    if original.mode == "P":
        assert decoded.getpalette() == original.getpalette()
        assert decoded.info.get("transparency") == original.info.get("transparency")


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "P-duplicates"])
def test_sizes_and_modes_round_trip_in_a_fresh_process(tmp_path, tiny_weights, mode):
    rng = np.random.default_rng(0)
    channels = 1 if mode in ("L", "LA") else 3
    originals = {}
    for height, width in SIZES:
        image = make_image(rng, mode, height, width)
        path = tmp_path / f"{mode}_{height}x{width}.png"
        image.save(path)
        originals[path] = Image.open(path)
    compressed = run_cli("compress", *originals, "-m", tiny_weights[channels], "--tile", "32")
    assert compressed.returncode == 0, compressed.stderr.decode()
    assert b"bound" in compressed.stderr and b"achieved" in compressed.stderr
    outputs = tmp_path / "out"
    vz_files = [path.with_suffix(".vz") for path in originals]
    decompressed = run_cli("decompress", *vz_files, "-m", tiny_weights[channels], "-d", outputs)
    assert decompressed.returncode == 0, decompressed.stderr.decode()
    for path, original in originals.items():
        assert_same(original, outputs / path.name)


def test_palette_indices_past_the_palette_come_back_as_they_were(tmp_path):
    """A GIF (or PNG) may hold indices, or a transparency entry, past its palette's end. Pillow would write
    them into a PNG cut down to the palette's bit depth (index 39 of 4 entries -> 3); the PNG written holds them,
    its palette extended with the opaque black entries viewers show there."""
    ramp = (np.arange(64).reshape(8, 8) % 40).astype(np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
    past = Image.fromarray(ramp, "P")
    past.putpalette(palette)
    past.save(tmp_path / "past.gif")
    keyed = Image.fromarray(ramp % 4, "P")
    keyed.putpalette(palette)
    keyed.save(tmp_path / "keyed.gif", transparency=10)
    for name in ("past", "keyed"):
        original = Image.open(tmp_path / f"{name}.gif")
        original.load()
        result = run_cli("compress", f"{name}.gif", "--fast", cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        result = run_cli("decompress", f"{name}.vz", cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        decoded = Image.open(tmp_path / f"{name}.png")
        assert decoded.mode == "P"
        assert np.array_equal(np.asarray(decoded), np.asarray(original))
        assert decoded.info.get("transparency") == original.info.get("transparency")
        assert decoded.getpalette()[: len(palette)] == palette
        assert np.array_equal(np.asarray(decoded.convert("RGBA")), np.asarray(original.convert("RGBA")))
    assert np.asarray(Image.open(tmp_path / "past.png")).max() == 39
    assert Image.open(tmp_path / "keyed.png").info["transparency"] == 10
    wide = Image.fromarray(ramp, "P")
    wide.putpalette(list(range(51)))  # 17 entries: Pillow writes 8 bits and every index exactly, so its PNG it is
    plain = io.BytesIO()
    wide.save(plain, format="PNG")
    assert png_bytes(wide) == plain.getvalue()
    with_alpha = Image.fromarray(ramp % 6, "P")  # an RGBA palette (quantize() of an RGBA image makes one)
    with_alpha.putpalette(bytes(range(16)), rawmode="RGBA")  # 4 entries, index 5
    back = Image.open(io.BytesIO(png_bytes(with_alpha)))
    assert np.array_equal(np.asarray(back), np.asarray(with_alpha))
    assert np.array_equal(np.asarray(back.convert("RGBA")), np.asarray(with_alpha.convert("RGBA")))


@pytest.mark.parametrize("mode, order", [("L", "rows"), ("RGBA", "rows"), ("RGB", "scales")])
def test_a_pixel_context_model_round_trips_in_a_fresh_process(tmp_path, context_weights, mode, order):
    """Pixels coded phase by phase from their coded neighbours: partial tiles, one-pixel rows and columns.
    Integer-exact like every other model: decoded under other CPU kernels than the encoder's."""
    rng = np.random.default_rng(2)
    channels = 1 if mode == "L" else 3
    if order == "scales":
        context_weights = {3: context_weights["scales"]}
    originals = {}
    for height, width in [(1, 1), (7, 3), (33, 65), (40, 1)]:
        path = tmp_path / f"{mode}_{height}x{width}.png"
        make_image(rng, mode, height, width).save(path)
        originals[path] = Image.open(path)
    archive = tmp_path / "set.vz"
    compressed = run_cli("compress", *originals, "-o", archive, "-m", context_weights[channels], "--tile", "16")
    assert compressed.returncode == 0, compressed.stderr.decode()
    single = run_cli("compress", *originals, "-m", context_weights[channels], "--tile", "32")
    assert single.returncode == 0, single.stderr.decode()
    for source in (archive, *(path.with_suffix(".vz") for path in originals)):
        restored = tmp_path / f"restored-{source.stem}"
        result = run_cli("decompress", source, "-d", restored, "-m", context_weights[channels],
                         env={"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"})
        assert result.returncode == 0, result.stderr.decode()
        for path, original in originals.items():
            if source == archive or source.stem == path.stem:
                assert_same(original, restored / path.name)


def test_decoding_on_another_thread_count(tmp_path, tiny_weights):
    """Small batches once gave other floats on 1 thread than on 2: a file from one machine failed on another."""
    rng = np.random.default_rng(3)
    paths = []
    for index, (height, width) in enumerate([(20, 24), (40, 9)]):
        paths.append(tmp_path / f"img{index}.png")
        make_image(rng, "RGB", height, width).save(paths[-1])
    archive = tmp_path / "set.vz"
    result = run_cli("compress", *paths, "-o", archive, "-m", tiny_weights[3], "--tile", "16",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr.decode()
    result = run_cli("decompress", archive, "-d", tmp_path / "restored", "-m", tiny_weights[3],
                     env={"OMP_NUM_THREADS": "3"})
    assert result.returncode == 0, result.stderr.decode()
    for path in paths:
        assert_same(Image.open(path), tmp_path / "restored" / path.name)


def test_archive_round_trip(tmp_path, tiny_weights):
    rng = np.random.default_rng(1)
    paths = []
    for index in range(5):
        path = tmp_path / f"img{index}.png"
        make_image(rng, "RGB", 16 + 3 * index, 20).save(path)
        paths.append(path)
    archive = tmp_path / "set.vz"
    result = run_cli("compress", *paths, "-o", archive, "-m", tiny_weights[3])
    assert result.returncode == 0, result.stderr.decode()
    info = run_cli("info", archive)
    assert info.returncode == 0 and info.stdout.count(b"RGB") == 5
    result = run_cli("decompress", archive, "-d", tmp_path / "restored", "-m", tiny_weights[3])
    assert result.returncode == 0, result.stderr.decode()
    for path in paths:
        assert_same(Image.open(path), tmp_path / "restored" / path.name)


def test_stdin_to_stdout(tmp_path, tiny_weights):
    image = make_image(np.random.default_rng(2), "RGB", 12, 9)
    path = tmp_path / "a.png"
    image.save(path)
    packed = run_cli("compress", "-", "-m", tiny_weights[3], "-q", input=path.read_bytes())
    assert packed.returncode == 0, packed.stderr.decode()
    assert packed.stdout.startswith(b"\x89.VZ")
    unpacked = run_cli("decompress", "-", "-o", "-", "-m", tiny_weights[3], "-q", input=packed.stdout)
    assert unpacked.returncode == 0, unpacked.stderr.decode()
    (tmp_path / "b.png").write_bytes(unpacked.stdout)
    assert_same(image, tmp_path / "b.png")


NO_KODAK = pytest.mark.skipif(not (SHARED_DATA / "kodak").is_dir(), reason="../shared/data/kodak is absent")


@NO_KODAK
def test_a_kodak_image_round_trips(tmp_path, tiny_weights):
    path = SHARED_DATA / "kodak" / "kodim23.png"
    result = run_cli("compress", path, "-o", tmp_path / "k.vz", "-m", tiny_weights[3])
    assert result.returncode == 0, result.stderr.decode()
    result = run_cli("decompress", tmp_path / "k.vz", "-o", tmp_path / "k.png", "-m", tiny_weights[3])
    assert result.returncode == 0, result.stderr.decode()
    assert_same(Image.open(path), tmp_path / "k.png")


@NO_KODAK
@pytest.mark.slow  # ~9 minutes on the 2-core CPU: pytest -m slow
def test_every_kodak_image_round_trips(tmp_path, tiny_weights):
    """All 24 Kodak images in one archive (one encoder process), decoded in a fresh process."""
    paths = sorted((SHARED_DATA / "kodak").glob("kodim*.png"))
    assert len(paths) == 24
    archive = tmp_path / "kodak.vz"
    result = run_cli("compress", *paths, "-o", archive, "-m", tiny_weights[3], "--tile", "256")
    assert result.returncode == 0, result.stderr.decode()
    result = run_cli("decompress", archive, "-d", tmp_path / "out", "-m", tiny_weights[3])
    assert result.returncode == 0, result.stderr.decode()
    for path in paths:
        assert_same(Image.open(path), tmp_path / "out" / path.name)
