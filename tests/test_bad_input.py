"""Bad input and faults: one clear line and exit 1, nothing lost, nothing written, nothing executed.

The exact messages are listed in docs/ERRORS.md. CLI tests run `python -m vaezip` in a subprocess; several bad
files go through one call where possible (a torch import costs seconds on a small CPU).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from codec.errors import (
    BadMagicError,
    ChecksumError,
    LimitError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
)
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.checkpoint import CheckpointError
from vaezip.errors import ImageError, IntegrityError
from vaezip.images import MAX_IMAGE_PIXELS, open_image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vaezip_fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["vaezip_fuzz"] = fuzz  # dataclasses look their module up while the module runs
_spec.loader.exec_module(fuzz)


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "60"}  # narrow: an error must stay on one line even so
    return subprocess.run([sys.executable, "-m", "vaezip", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=env)


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_error(result, *fragments: str) -> str:
    lines = error_lines(result)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("vaezip: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def image_rgb(seed=0, size=(12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.integers(0, 256, (size[1], size[0], 3)) // 64 * 64).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def rgb_model(tiny_weights):
    return tiny_weights[3]


@pytest.fixture(scope="module")
def good_vz(rgb_model) -> bytes:
    # Format 2 (JSON header, every image through the model): the surgery below edits its header as JSON; format
    # 3's broken files are in tests/test_classic.py.
    return compress_images([("a.png", image_rgb())], load_model(rgb_model), tile=8, format_version=2).data


def edit_header(data: bytes, edit) -> bytes:
    """Apply `edit(obj)` to the header JSON and rebuild the file with correct lengths and CRCs."""
    version, header, payload = fuzz.split_file(data)
    obj = json.loads(header)
    edit(obj)
    return fuzz.build_file(fuzz.canonical(obj), payload, version=version)


# ---------------------------------------------------------------------------------------------- decoder


def broken_files(good: bytes) -> dict[str, tuple[bytes, type, str]]:
    """name -> (file, exception class, message fragment)."""
    _, header, payload = fuzz.split_file(good)
    flipped = bytearray(good)
    flipped[-10] ^= 0x10
    huge = lambda obj: obj["images"][0].update(width=12000, height=10000)  # noqa: E731 - under 2^28, over vaezip's
    return {
        "empty": (b"", TruncatedError, "an empty file (0 bytes)"),
        "truncated": (good[: len(good) // 2], TruncatedError, "truncated file"),
        "flipped": (bytes(flipped), ChecksumError, "payload checksum mismatch"),
        "magic": (b"\x89PNG\r\n\x1a\n" + good[8:], BadMagicError, "not a .vz file"),
        "crlf": (good[:4] + b"\n" + good[6:], BadMagicError, "line endings"),
        "version": (fuzz.build_file(header, payload, version=99), UnsupportedVersionError, "format version 99"),
        "header-size": (fuzz.build_file(header, payload, n=2**32 - 1), LimitError, "header too large"),
        "payload-length": (fuzz.build_file(header, payload, w=len(payload) // 4 + 1), TruncatedError, "payload claims"),
        "payload-huge": (fuzz.build_file(header, payload, w=2**32 - 1), TruncatedError, "payload claims"),
        "trailing": (good + b"\0", TrailingDataError, "trailing data"),
        "too-wide": (edit_header(good, lambda o: o["images"][0].update(width=70000)), LimitError, "width = 70000"),
        "too-many-pixels": (edit_header(good, huge), LimitError, f"more than {MAX_IMAGE_PIXELS} pixels"),
        "checksum-edited": (edit_header(good, lambda o: o.update(pixels_sha256="0" * 64)), IntegrityError,
                            "decoded pixels do not match the checksum"),
    }


def test_broken_files_raise_their_error(good_vz, rgb_model):
    loaded = load_model(rgb_model)
    for name, (data, kind, fragment) in broken_files(good_vz).items():
        with pytest.raises(kind) as caught:
            decompress_images(data, loaded)
        assert fragment in str(caught.value), (name, str(caught.value))
        assert "\n" not in str(caught.value)


def test_info_refuses_what_the_decoder_refuses_from_the_header(good_vz, tmp_path):
    """`vaezip info` showed a 12000x10000 image, an image of mode 'x' and a schedule of no tiles, exit 0, where
    decompress refuses each from the header (a review); ERRORS.md promised info the pixel limit's message."""
    from vaezip.api import file_info

    def empty_schedule(obj):
        obj["coder"]["schedule"] = []

    forged = {"too-many-pixels": (broken_files(good_vz)["too-many-pixels"][0], f"more than {MAX_IMAGE_PIXELS} pixels"),
              "mode": (edit_header(good_vz, lambda o: o["images"][0].update(mode="x")), "unsupported image mode 'x'"),
              "schedule": (edit_header(good_vz, empty_schedule), "the schedule covers 0 tiles")}
    for name, (data, fragment) in forged.items():
        with pytest.raises(ValueError, match=fragment):
            file_info(data)
        (tmp_path / f"{name}.vz").write_bytes(data)
        done = subprocess.run([sys.executable, "-m", "vaezip", "info", str(tmp_path / f"{name}.vz")],
                              capture_output=True, text=True)
        assert done.returncode == 1 and done.stdout == "" and fragment in done.stderr, (name, done.stderr)
    assert file_info(good_vz).images  # the genuine file still shown


def test_forged_huge_image_with_empty_payload_is_refused_before_any_model_run(good_vz, rgb_model, monkeypatch):
    """A header claiming 10000x10000 pixels with a consistent bits-back schedule and (almost) no payload: a
    genuine stream with bits-back batches holds at least the encoder's margin of bits, so it is refused from
    the payload size alone: no tile spec list, no model pass (counted, not timed)."""
    from vaezip import unpack
    from vaezip.coding import TorchLatentModel

    def forge(obj):
        obj["images"][0].update(width=10000, height=10000)
        obj["coder"]["tile"] = 32
        obj["coder"]["schedule"] = [["d", 1, 1], ["b", 16, (313 * 313 - 1) // 16]]  # 313 * 313 - 1 = 16 * 6123

    passes = []
    monkeypatch.setattr(TorchLatentModel, "begin", lambda self, *a, **k: passes.append(a) or pytest.fail("model ran"))
    specs = []
    real_specs = unpack.LazyTileSpecs
    monkeypatch.setattr(unpack, "LazyTileSpecs", lambda *a: specs.append(real_specs(*a)) or specs[-1])
    version, header, _ = fuzz.split_file(edit_header(good_vz, forge))
    for payload in (b"", struct.pack("<I", 12345)):
        with pytest.raises(IntegrityError, match="payload too small"):
            decompress_images(fuzz.build_file(header, payload, version=version), load_model(rgb_model))
    assert passes == [] and len(specs[0]) == 313 * 313  # the claim was counted lazily, never expanded


def test_more_tiles_than_the_limit_are_refused_from_the_header(good_vz, rgb_model):
    def forge(obj):  # 1250 x 1250 tiles of 8x8: more than MAX_TILES
        obj["images"][0].update(width=10000, height=10000)
        obj["coder"]["schedule"] = [["d", 1, 1], ["b", 16, (1250 * 1250 - 1) // 16], ["b", (1250 * 1250 - 1) % 16, 1]]

    with pytest.raises(LimitError, match="tiles, more than vaezip's limit"):
        decompress_images(edit_header(good_vz, forge), load_model(rgb_model))


def test_a_truncated_payload_is_one_line_error(good_vz, rgb_model):
    """Payload words cut off either end of a real stream: refused (too small for its bits-back batches, run dry
    before one of them, or a checksum mismatch), never a traceback or a wrong image."""
    version, header, payload = fuzz.split_file(good_vz)
    for cut in (payload[4:], payload[:-4], payload[: len(payload) // 2], payload[:4]):
        with pytest.raises(IntegrityError) as caught:
            decompress_images(fuzz.build_file(header, cut, version=version), load_model(rgb_model))
        assert "\n" not in str(caught.value)


def test_wrong_and_missing_model(good_vz, tiny_weights, tmp_path):
    other = fuzz.make_model(tmp_path / "other.safetensors", seed=1, name="other")  # same shape, other weights
    with pytest.raises(CheckpointError, match="not installed here: pass --model"):
        decompress_images(good_vz, None)
    with pytest.raises(CheckpointError, match="was made with model 'tiny-rgb'"):
        decompress_images(good_vz, load_model(other))
    with pytest.raises(CheckpointError, match="was made with model"):
        decompress_images(good_vz, load_model(tiny_weights[1]))


def test_cli_decoder_errors_are_one_line_and_write_nothing(good_vz, rgb_model, tmp_path):
    cases = broken_files(good_vz)
    names = []
    for name, (data, _, _) in cases.items():
        (tmp_path / f"{name}.vz").write_bytes(data)
        names.append(f"{name}.vz")
    before = files_in(tmp_path)
    result = cli("decompress", *names, "-m", rgb_model, cwd=tmp_path)
    lines = error_lines(result)
    assert result.returncode == 1
    assert files_in(tmp_path) == before  # no output, no temporary file
    assert lines[-1] == f"vaezip: 0 of {len(cases)} succeeded, {len(cases)} failed"
    assert len(lines) == len(cases) + 1
    for line, (name, (_, _, fragment)) in zip(lines, cases.items()):
        assert line.startswith("vaezip: error: ") and fragment in line, (name, line)


def test_cli_single_errors(good_vz, rgb_model, tmp_path):
    (tmp_path / "a.vz").write_bytes(good_vz)
    (tmp_path / "other.safetensors").write_bytes(b"")
    fuzz.make_model(tmp_path / "other.safetensors", seed=1, name="other")
    assert_one_error(cli("decompress", "a.vz", cwd=tmp_path), "model 'tiny-rgb' (sha256 ",
                     "which is not installed here: pass --model")
    assert_one_error(cli("decompress", "a.vz", "-m", "other.safetensors", cwd=tmp_path), "not with 'other'")
    assert_one_error(cli("decompress", "missing.vz", cwd=tmp_path), "missing.vz: no such file")
    assert files_in(tmp_path) == ["a.vz", "other.safetensors"]


# ---------------------------------------------------------------------------------------------- images in


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (8-bit RGB) with one tiny IDAT: nothing like that is allocated here."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b"")


def crafted_icon(width: int, height: int) -> bytes:
    """An ICO holding one crafted_png: Pillow decodes an icon's picture as it opens the file."""
    picture = crafted_png(width, height)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(picture), 22) + picture


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bad_images() -> dict[str, tuple[bytes, str]]:
    good = encoded(image_rgb(), "PNG")
    return {
        "text.png": (b"hello, not an image\n", "not a readable image"),
        "truncated.png": (good[: len(good) // 2], "not a readable image"),
        "deep.ppm": (b"P6 8 8 1023\n" + (np.arange(192, dtype=np.uint16) * 5).astype(">u2").tobytes(), "10-bit"),
        "cmyk.jpg": (encoded(Image.new("CMYK", (8, 8), (1, 2, 3, 4)), "JPEG"), "unsupported image mode CMYK"),
        "cmyk-tiff.tif": (encoded(Image.new("CMYK", (8, 8), (1, 2, 3, 4)), "TIFF"), "unsupported image mode CMYK"),
        "zero.png": (crafted_png(0, 0), "not a readable image"),
        "bomb.png": (crafted_png(20000, 20000), f"image has more than {MAX_IMAGE_PIXELS} pixels"),
        "bomb-lower.png": (crafted_png(12000, 10000), f"image has more than {MAX_IMAGE_PIXELS} pixels"),
        # past Pillow's limit while vaezip opens it (codec.classic.PILLOW_PIXELS), short of its refusal: its warning
        # is not shown (one line an image)
        "bomb-middle.png": (crafted_png(14000, 14000), f"image has more than {MAX_IMAGE_PIXELS} pixels"),
        "icon-bomb.ico": (crafted_icon(16383, 16383), f"image has more than {MAX_IMAGE_PIXELS} pixels"),
    }


def test_an_icon_that_claims_a_huge_picture_is_refused_before_it_is_decoded(tmp_path):
    """Pillow decodes an icon's picture as it opens the file: a 90-byte ICO claiming 16383x16383 took 1 GB before
    vaezip could look at its size (a review). Under a 600 MB address-space limit it is refused in vaezip's words."""
    import resource

    (tmp_path / "bomb.ico").write_bytes(crafted_icon(16383, 16383))
    script = ("import sys; from vaezip.images import open_image; from vaezip.errors import ImageError\n"
              "try:\n    open_image(sys.argv[1])\nexcept ImageError as error:\n    print(error)")

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (600 * 2**20, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bomb.ico")], capture_output=True, text=True,
                          preexec_fn=limited, timeout=120)
    assert done.stdout.strip() == f"image has more than {MAX_IMAGE_PIXELS} pixels (vaezip's limit)", \
        (done.stdout, done.stderr[-2000:])


def test_open_image_refuses_bombs_before_decoding():
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ImageError, match="more than"):
        open_image(crafted_png(12000, 10000))  # 1.2e8 px: between our limit and Pillow's own 2x error limit
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6


def test_cli_compress_bad_images_and_partial_batch(rgb_model, tmp_path):
    """good.png bad... good2.png: the good ones are written, each bad one reported, exit 1, nothing else."""
    image_rgb(1).save(tmp_path / "good.png")
    image_rgb(2).save(tmp_path / "good2.png")
    bad = bad_images()
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
    before = set(files_in(tmp_path))
    result = cli("compress", "good.png", *bad, "good2.png", "-m", rgb_model, "-q", cwd=tmp_path)
    lines = error_lines(result)
    assert result.returncode == 1
    assert set(files_in(tmp_path)) - before == {"good.vz", "good2.vz"}
    assert lines[-1] == f"vaezip: 2 of {len(bad) + 2} succeeded, {len(bad)} failed"
    assert len(lines) == len(bad) + 1
    for line, (name, (_, fragment)) in zip(lines, bad.items()):
        assert line.startswith(f"vaezip: error: {name}: ") and fragment in line, line
    for name in ("good", "good2"):  # and they decode
        decoded = decompress_images((tmp_path / f"{name}.vz").read_bytes(), load_model(rgb_model))
        assert np.array_equal(np.asarray(decoded[0][1]), np.asarray(Image.open(tmp_path / f"{name}.png")))


def test_cli_archive_with_a_bad_image_writes_nothing(rgb_model, tmp_path):
    image_rgb(1).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert_one_error(cli("compress", "good.png", "bad.png", "-o", "all.vz", "-m", rgb_model, "--rm", cwd=tmp_path),
                     "bad.png: not a readable image")
    assert files_in(tmp_path) == ["bad.png", "good.png"]  # inputs kept: --rm only after success


def test_an_archive_of_grey_and_colour_images_with_a_model_of_one_kind_is_refused_with_its_reason(rgb_model,
                                                                                                 tmp_path):
    image_rgb(1).save(tmp_path / "colour.png")
    Image.fromarray(np.full((6, 5), 90, np.uint8), "L").save(tmp_path / "grey.png")
    assert_one_error(cli("compress", "colour.png", "grey.png", "-o", "all.vz", "-m", rgb_model, cwd=tmp_path),
                     "all.vz: grey.png: an L image needs a 1-channel model, but ")
    assert files_in(tmp_path) == ["colour.png", "grey.png"]


def test_the_api_refuses_a_tile_outside_what_decoders_read():
    image = Image.fromarray(np.full((6, 5, 3), 90, np.uint8))
    for tile in (0, -5, 257):  # 0 was taken as "the default"
        with pytest.raises(ValueError, match=f"tile must be between 1 and 256 pixels, not {tile}"):
            compress_images([("a.png", image)], None, tile=tile, fast=True)


# ---------------------------------------------------------------------------------------------- nothing lost


def test_no_overwrite_without_force_and_rm(rgb_model, tmp_path):
    image_rgb(1).save(tmp_path / "a.png")
    (tmp_path / "a.vz").write_bytes(b"precious")
    assert_one_error(cli("compress", "a.png", "-m", rgb_model, cwd=tmp_path), "a.vz already exists (use --force")
    assert (tmp_path / "a.vz").read_bytes() == b"precious"
    result = cli("compress", "a.png", "-m", rgb_model, "--force", "--rm", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path) == ["a.vz"]  # --rm removed the input after success
    Image.new("RGB", (3, 3)).save(tmp_path / "a.png")
    assert_one_error(cli("decompress", "a.vz", "-m", rgb_model, cwd=tmp_path), "a.png already exists (use --force")
    assert Image.open(tmp_path / "a.png").size == (3, 3)
    assert cli("decompress", "a.vz", "-m", rgb_model, "-f", "-q", cwd=tmp_path).returncode == 0
    assert files_in(tmp_path) == ["a.png", "a.vz"]  # decompress keeps its input
    assert Image.open(tmp_path / "a.png").size == image_rgb(1).size


def test_write_output_is_atomic(tmp_path, monkeypatch):
    from vaezip import cli as cli_module

    target = tmp_path / "out.vz"
    target.write_bytes(b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(cli_module.Failure, match=f"^{target}: cannot write it \\(disk full\\)$"):
        cli_module._write_output(str(target), b"new data", force=True)
    assert target.read_bytes() == b"old"
    assert files_in(tmp_path) == ["out.vz"]  # no temporary file left


# ---------------------------------------------------------------------------------------------- weights


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"kind": "vaezip-checkpoint", "format_version": 1, "x": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable vaezip checkpoint"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
    result = cli("compress", "x.png", "-m", "evil.pt", cwd=tmp_path)  # x.png missing: model load comes later
    assert result.returncode == 1 and not marker.exists()
    image_rgb().save(tmp_path / "x.png")
    assert_one_error(cli("compress", "x.png", "-m", "evil.pt", cwd=tmp_path), "evil.pt is not a readable vaezip checkpoint")
    assert not marker.exists() and files_in(tmp_path) == ["evil.pt", "x.png"]
    with open(tmp_path / "evil4.pt", "wb") as handle:  # a newer pickle protocol: torch warned before the refusal
        pickle.dump(Payload(marker), handle, protocol=4)
    assert_one_error(cli("compress", "x.png", "-m", "evil4.pt", cwd=tmp_path), "evil4.pt is not a readable vaezip")
    assert not marker.exists()


def test_odd_torch_archives_are_refused_in_one_line_and_loading_leaves_the_warnings_filters_alone(tmp_path,
                                                                                                   monkeypatch):
    """torch warns about a newer pickle protocol or a TorchScript archive before it refuses them; silencing that
    changed the process's warnings filters while a model loaded, and hid a host's other threads' warnings."""
    import warnings

    from vaezip import checkpoint

    torch.save({"kind": "vaezip-checkpoint"}, tmp_path / "protocol4.pt", pickle_protocol=4)
    torch.save({"kind": "vaezip-checkpoint"}, tmp_path / "script.pt")
    with zipfile.ZipFile(tmp_path / "script.pt", "a") as archive:  # what marks a TorchScript archive for torch
        archive.writestr("script/constants.pkl", pickle.dumps((), protocol=2))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, why in (("protocol4.pt", "not pickle protocol 2"), ("script.pt", "a TorchScript archive"),
                      ("empty.pt", "no torch archive")):
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError, match=rf"{name} is not a readable vaezip checkpoint \({why}\)"):
                checkpoint.load_checkpoint(tmp_path / name)
        assert not shown, [str(w.message) for w in shown]
    filters_seen = []
    real_load = torch.load

    def load_and_look(*args, **kwargs):
        filters_seen.append(list(warnings.filters))
        return real_load(*args, **kwargs)

    torch.save({"kind": "vaezip-checkpoint", "format_version": 0}, tmp_path / "old.pt")
    monkeypatch.setattr(torch, "load", load_and_look)
    before = list(warnings.filters)
    with pytest.raises(CheckpointError, match="format 0"):
        checkpoint.load_checkpoint(tmp_path / "old.pt")
    assert filters_seen == [before]


def test_manifest_sha256_mismatch(tiny_weights, tmp_path, monkeypatch):
    from vaezip import zoo

    (tmp_path / "tiny.safetensors").write_bytes(tiny_weights[3].read_bytes())
    manifest = {"models": {"tiny": {"file": "tiny.safetensors", "sha256": "ab" * 32, "channels": 3}},
                "defaults": {"colour": "tiny"}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match the manifest's abababab"):
        load_model("tiny")
    with pytest.raises(CheckpointError, match="does not match the manifest"):
        compress_images([("a.png", image_rgb())], None)


def test_damaged_weights_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_model(tmp_path / "bad.safetensors")


def test_a_failed_file_is_named_once_by_the_path_given(rgb_model, tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((8, 8), 7, np.uint8), "L").save(tmp_path / "sub" / "grey.png")
    result = cli("compress", "sub/grey.png", "-m", rgb_model, "-q", cwd=tmp_path)
    line = error_lines(result)[0]
    assert result.returncode == 1
    assert line.startswith("vaezip: error: sub/grey.png: ") and line.count("grey.png") == 1, line


def test_names_are_printed_as_they_are_never_as_markup_or_emoji(tmp_path):
    """rich reads "[red]" as markup and ":x:" as an emoji code: a file name holding them is printed as it is, in
    the report and in an error."""
    name = "a:x:[red]b:smile:.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8), "L").save(tmp_path / name)
    result = cli("compress", "--fast", "-v", name, "no:x:[bold]such.png", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{name}: 8x8 L" in result.stderr and "a:x:[red]b:smile:.vz" in result.stderr, result.stderr
    assert "vaezip: error: no:x:[bold]such.png: no such file" in result.stderr, result.stderr


def test_the_api_refuses_a_name_that_is_no_text_and_names_every_format_it_writes():
    image = Image.new("RGB", (4, 4))
    for name in (None, 3, b"a.png"):
        with pytest.raises(ImageError, match="an image's name must be a str"):
            compress_images([(name, image)], fast=True)
    with pytest.raises(ValueError, match=r"one of 2, .*, 16, 17, 18, 19, 20, 21, 22, 23, not 99"):
        compress_images([("a.png", image)], format_version=99)


def _png_file(width: int, height: int, rows: bytes, crc_of_data: int | None = None) -> bytes:
    """An 8-bit grey PNG of `width` x `height` whose image data holds `rows` (filter bytes included), its IDAT's
    CRC `crc_of_data` where given."""
    data = png_chunk(b"IDAT", zlib.compress(rows))
    if crc_of_data is not None:
        data = data[:-4] + struct.pack(">I", crc_of_data)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + data + png_chunk(b"IEND", b""))


def test_an_8_bit_png_whose_image_data_is_short_or_damaged_is_refused_and_kept(tmp_path):
    """An audit: image data that ends at a row's end (a whole zlib stream, rows missing), or an IDAT whose CRC is
    wrong, Pillow reads without a word, filling the missing rows with black: compress --rm then deleted an image it
    had not read. Refused as the 16-bit reader refuses them."""
    row = b"\0" + bytes(range(20))
    (tmp_path / "whole.png").write_bytes(_png_file(20, 4, row * 4))
    (tmp_path / "short.png").write_bytes(_png_file(20, 4, row))
    (tmp_path / "long.png").write_bytes(_png_file(20, 4, row * 5))
    (tmp_path / "crc.png").write_bytes(_png_file(20, 4, row * 4, crc_of_data=12345))
    with Image.open(tmp_path / "short.png") as pillow:  # what made it dangerous: Pillow reads it whole
        pillow.load()
    for name, why in (("short.png", "image data shorter or longer than the image"),
                      ("long.png", "image data shorter or longer than the image"),
                      ("crc.png", "IDAT chunk damaged (CRC)")):
        assert_one_error(cli("compress", "--fast", "--rm", name, cwd=tmp_path), f"{name}: not a readable image ({why})")
        assert (tmp_path / name).exists() and not (tmp_path / name).with_suffix(".vz").exists()
    assert cli("compress", "--fast", "--rm", "-q", "whole.png", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "whole.png").exists() and (tmp_path / "whole.vz").exists()


def test_an_icons_png_keeps_nothing_it_cannot_say(tmp_path):
    """An audit: an icon holding a PNG lost that PNG's transparent colour, profile and text (Pillow reads the
    pixels without them), unreported, and compress --rm deleted the icon. Its tRNS (pixels) is refused; other chunks
    are named and the input kept."""
    def icon(png: bytes) -> bytes:
        return struct.pack("<3H", 0, 1, 1) + struct.pack("<4B2H2I", 16, 16, 0, 0, 1, 8, len(png), 22) + png

    palette = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16) % 8, "P")
    palette.putpalette(list(range(24)))
    keyed, texted, plain = io.BytesIO(), io.BytesIO(), io.BytesIO()
    palette.save(keyed, "PNG", transparency=2)
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", "x")
    image_rgb(size=(16, 16)).save(texted, "PNG", pnginfo=text)
    image_rgb(size=(16, 16)).save(plain, "PNG")
    for name, png in (("keyed.ico", keyed), ("texted.ico", texted), ("plain.ico", plain)):
        (tmp_path / name).write_bytes(icon(png.getvalue()))
    assert_one_error(cli("compress", "--fast", "--rm", "keyed.ico", cwd=tmp_path),
                     "keyed.ico: icon holds a PNG with a transparent colour (tRNS)")
    texted_run = cli("compress", "--fast", "--rm", "texted.ico", cwd=tmp_path)
    assert texted_run.returncode == 0 and "ICO's PNG chunks tEXt" in texted_run.stderr, texted_run.stderr
    assert cli("compress", "--fast", "--rm", "plain.ico", cwd=tmp_path).returncode == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keyed.ico", "plain.vz", "texted.ico", "texted.vz"]
