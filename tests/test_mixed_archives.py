"""Archives that mix grey and colour images: the default model of the kind with most pixels codes that kind, the
other kind's images go by their classical codings, and every image comes back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from codec.container import DEFLATED_VERSION, LEAST_SQUARES_VERSION, read_versioned
from conftest import OTHER_KERNELS, run_cli, smooth_rgb
from vaezip.api import compress_images, decompress_images
from vaezip.errors import ImageError


def _colour(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(smooth_rgb(height, width, seed))


def _grey(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(smooth_rgb(height, width, seed)[..., 1])


def _assert_same_images(decoded, images) -> None:
    assert [name for name, _ in decoded] == [name for name, _ in images]
    for (_, restored), (_, original) in zip(decoded, images):
        assert restored.mode == original.mode
        assert np.array_equal(np.asarray(restored), np.asarray(original))
        assert restored.info.get("transparency") == original.info.get("transparency")


@pytest.mark.parametrize("fast", [True, False])
def test_grey_among_colour_images_goes_classically_and_the_colour_stream_is_the_one_coded_alone(fast):
    colour = [("a.png", _colour(40, 48, 1)), ("c.png", _colour(36, 44, 2))]
    images = [colour[0], ("b.png", _grey(30, 30, 3)), colour[1]]
    mixed = compress_images(images, fast=fast)
    alone = compress_images(colour, fast=fast)
    assert mixed.model == alone.model == "photo2"
    assert mixed.codings[1] in ("raw", "png", "webp")
    assert [image.other_kind for image in mixed.images] == ["", "grey", ""]
    assert mixed.other_kind_images == 1 and np.isnan(mixed.images[1].bound_bits)
    assert mixed.images[1].payload_bits > 0 and mixed.images[1].candidate_bytes
    # The colour images' stream and entries are those of the colour images coded without the grey one.
    version, header, words = read_versioned(mixed.data)
    alone_version, alone_header, alone_words = read_versioned(alone.data)
    assert version == alone_version and np.array_equal(words, alone_words)
    assert (header.images[0], header.images[2]) == alone_header.images
    assert header.coder == alone_header.coder
    _assert_same_images(decompress_images(mixed.data), images)


def test_the_kind_with_most_pixels_keeps_the_model_colour_on_a_tie():
    grey_most = [("small.png", _colour(16, 16, 4)), ("big.png", _grey(40, 40, 5))]
    result = compress_images(grey_most, fast=True)
    assert result.model == "photo-gray2" and result.images[0].other_kind == "colour"
    _assert_same_images(decompress_images(result.data), grey_most)
    tie = [("g.png", _grey(20, 20, 6)), ("c.png", _colour(20, 20, 7))]
    result = compress_images(tie, fast=True)
    assert result.model == "photo2" and [image.other_kind for image in result.images] == ["grey", ""]
    _assert_same_images(decompress_images(result.data), tie)


def test_alpha_and_palette_images_mix_with_the_other_kind():
    rgba = np.dstack([smooth_rgb(24, 28, 8), np.full((24, 28), 200, np.uint8)])
    grey_alpha = Image.fromarray(smooth_rgb(20, 20, 9)[..., :2].copy(), "LA")
    palette = _colour(20, 24, 10).quantize(16)
    images = [("rgba.png", Image.fromarray(rgba, "RGBA")), ("la.png", grey_alpha), ("p.png", palette),
              ("l.png", _grey(12, 12, 11))]
    result = compress_images(images, fast=True)
    assert result.model == "photo2"
    assert [image.other_kind for image in result.images] == ["", "grey", "", "grey"]
    _assert_same_images(decompress_images(result.data), images)


def test_an_older_format_holds_a_mixed_archive_where_it_holds_classical_codings():
    images = [("a.png", _colour(24, 24, 12)), ("b.png", _grey(24, 24, 13))]
    result = compress_images(images, format_version=LEAST_SQUARES_VERSION, fast=True)
    assert read_versioned(result.data)[0] in (LEAST_SQUARES_VERSION, 3)  # never format 11's deflated header
    _assert_same_images(decompress_images(result.data), images)
    many = [(f"{k}.png", _colour(8, 8, k) if k % 3 else _grey(8, 8, k)) for k in range(60)]
    result = compress_images(many, fast=True)  # a long header of repeated keys: deflated (format 11 or later)
    assert read_versioned(result.data)[0] >= DEFLATED_VERSION
    _assert_same_images(decompress_images(result.data), many)


def test_without_classical_codings_or_with_a_named_model_mixing_is_refused(tiny_weights):
    images = [("a.png", _colour(16, 16, 14)), ("b.png", _grey(16, 16, 15))]
    with pytest.raises(ImageError, match=r"b.png: an L image in an archive of colour images .* without classical "
                                         r"codings \(--format 2\) one archive holds grey or colour images, not both"):
        compress_images(images, classical=False, fast=False, tile=16)
    with pytest.raises(ImageError, match="without classical codings"):
        compress_images(images, format_version=2)
    with pytest.raises(ImageError, match=r"b.png: an L image needs a 1-channel model, but tiny-rgb codes 3-channel "
                                         r"images \(mixed grey and colour need separate files, or no model named"):
        compress_images(images, str(tiny_weights[3]), fast=True)


def test_the_command_line_writes_a_mixed_archive_and_restores_every_image(tmp_path):
    _colour(40, 48, 16).save(tmp_path / "colour.png")
    _grey(30, 32, 17).save(tmp_path / "grey.png")
    made = run_cli("compress", "colour.png", "grey.png", "-o", "all.vz", "-v", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    said = made.stderr.decode()
    assert "grey.png: 32x30 L, coded as " in said
    assert "(a grey image, no model bound: photo2 codes colour images" in said
    assert "vs no bound for the whole file (1 image of the kind the model does not code went classically;" in said
    (tmp_path / "out").mkdir()
    restored = run_cli("decompress", "all.vz", "--dir", "out", cwd=tmp_path, env=OTHER_KERNELS)
    assert restored.returncode == 0, restored.stderr
    for name in ("colour.png", "grey.png"):
        original, back = Image.open(tmp_path / name), Image.open(tmp_path / "out" / name)
        assert back.mode == original.mode and np.array_equal(np.asarray(back), np.asarray(original))


def test_a_palette_image_coding_its_indices_first_does_not_choose_the_model():
    """A palette image whose used indices share a colour codes its indices (no model plane): any model's file holds
    it, so grey images after it take the grey model, as they do before it."""
    palette = Image.fromarray((np.arange(480).reshape(20, 24) % 4).astype(np.uint8), "P")
    palette.putpalette([10, 20, 30, 10, 20, 30, 50, 60, 70, 80, 90, 100])
    grey = _grey(30, 30, 18)
    for images in ([("p.png", palette), ("g.png", grey)], [("g.png", grey), ("p.png", palette)]):
        result = compress_images(images, fast=True)
        assert result.model == "photo-gray2" and result.other_kind_images == 0
        _assert_same_images(decompress_images(result.data), images)


def test_a_mixed_archive_over_the_files_pixel_limit_is_refused_before_it_is_written(monkeypatch):
    """The limit counts every image, the classical ones too: the decoder would refuse the file."""
    from vaezip import classical

    monkeypatch.setattr(classical, "MAX_FILE_PIXELS", 5000)
    images = [("c.png", _colour(50, 60, 19)), ("g.png", _grey(50, 50, 20))]  # 3,000 + 2,500 pixels
    with pytest.raises(ImageError, match="5500 pixels in one file, more than vaezip's limit of 5000"):
        compress_images(images, fast=True)


def test_a_grey_palette_image_among_grey_ones_is_named_a_palette_image(tmp_path):
    """A palette image's model plane is its colours, so a grey model's archive codes it classically: the report
    calls it a palette image, not a colour one."""
    palette = _grey(24, 24, 21).convert("RGB").quantize(8)
    _grey(40, 40, 22).save(tmp_path / "grey.png")
    palette.save(tmp_path / "palette.png")
    made = run_cli("compress", "grey.png", "palette.png", "-o", "all.vz", "-v", "--fast", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    said = made.stderr.decode()
    assert "(a palette image, no model bound: photo-gray2 codes grey images" in said
    assert ("vs no bound for the whole file (--fast; 1 image of the kind the model does not code went "
            "classically;") in said
