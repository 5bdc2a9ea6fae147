"""What a newcomer meets first (issue 16): the README's quick start on the shipped sample, and the habits of
gzip / zstd / cjxl (--version, -h, no binary data on a terminal, a summary for many files, --debug).

Every CLI call runs `python -m vaezip` in a fresh process. Only the quick start runs a real model (the
shipped default, on a 128x96 crop of the sample; the whole sample is the slow test); the other checks are
refusals made before any model loads, or the untrained tiny model on 12x10 images. No test measures time.
"""

from __future__ import annotations

import importlib.metadata
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

import vaezip

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLE = ROOT / "samples" / "hopper.png"
CROP = (64, 32, 192, 128)  # 128x96 around the face: 12 tiles, some of them coded by bits-back
TESTS_COMMAND = 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev,bench]" && .venv/bin/pytest -q'


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.strip()]


def one_error(result, code: int, *fragments: str) -> str:
    lines = error_lines(result)
    assert "Traceback" not in result.stderr.decode(), lines
    assert result.returncode == code, (result.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("vaezip: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image).copy()


def quick_start_commands() -> list[list[str]]:
    """The vaezip commands of the README's first quick-start line, as argument lists (without `vaezip`)."""
    block = re.search(r"^## Quick start\n.*?```bash\n(.*?)```", README.read_text(), re.S | re.M)
    assert block, "README.md has no bash block under '## Quick start'"
    first = block.group(1).strip().splitlines()[0]
    commands = [shlex.split(part) for part in first.split("&&")]
    return [command[1:] for command in commands if Path(command[0]).name == "vaezip"]


def run_quick_start(folder: Path) -> list[subprocess.CompletedProcess]:
    results = []
    for args in quick_start_commands():
        results.append(run_cli(*args, cwd=folder))
        assert results[-1].returncode == 0, (args, error_lines(results[-1]))
    return results


def restored_image(folder: Path) -> Path:
    """The image the quick start's last command wrote (its -o)."""
    last = quick_start_commands()[-1]
    return folder / last[last.index("-o") + 1]


# ---------------------------------------------------------------------------------------------- the sample


def test_the_sample_is_shipped_small_and_reproducible():
    with Image.open(SAMPLE) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (256, 256)
    assert SAMPLE.stat().st_size < 200_000
    assert "public domain" in (ROOT / "samples" / "README.md").read_text().lower()
    pytest.importorskip("matplotlib")  # the source photo ships with it
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample.py"), "--check"],
                            capture_output=True, text=True, timeout=600)
    # Another Pillow (its JPEG decoder or PNG encoder) may make other bytes: a reason to look, not a bug.
    if result.returncode != 0 and "differs" in result.stdout:
        pytest.skip(f"this Pillow makes other bytes from the source photo: {result.stdout.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_commands_are_the_ones_ci_and_users_run():
    text = README.read_text()
    assert TESTS_COMMAND in text
    commands = quick_start_commands()
    assert [command[0] for command in commands] == ["compress", "decompress"]
    assert "samples/hopper.png" in commands[0]
    assert not any("shared" in arg for command in commands for arg in command)  # a user's machine has none


@pytest.fixture(scope="module")
def quick_start_on_a_crop(tmp_path_factory):
    """The README's quick-start vaezip commands, verbatim, in a folder whose samples/hopper.png is a crop of
    the real sample (the whole one is test_quick_start_on_the_whole_sample, marked slow)."""
    folder = tmp_path_factory.mktemp("quick-start")
    (folder / "samples").mkdir()
    with Image.open(SAMPLE) as image:
        image.crop(CROP).save(folder / "samples" / "hopper.png")
    return folder, run_quick_start(folder)


def test_quick_start_round_trips_exactly(quick_start_on_a_crop):
    folder, results = quick_start_on_a_crop
    assert np.array_equal(pixels(restored_image(folder)), pixels(folder / "samples" / "hopper.png"))
    compressed = error_lines(results[0])
    assert compressed[-1].startswith("-> ") and "achieved" in compressed[-1] and "with model photo" in compressed[-1]
    assert "verified (checksum)" in error_lines(results[1])[-1]


def test_the_readme_python_example_runs_and_round_trips(quick_start_on_a_crop, tmp_path):
    """The README's API example, verbatim, in a fresh process, on the crop of the sample."""
    block = re.search(r"^From Python .*?```python\n(.*?)```", README.read_text(), re.S | re.M)
    assert block, "README.md has no python block after 'From Python'"
    folder, _ = quick_start_on_a_crop
    (tmp_path / "samples").mkdir()
    shutil.copy(folder / "samples" / "hopper.png", tmp_path / "samples" / "hopper.png")
    result = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr.decode()
    assert np.array_equal(pixels(tmp_path / "hopper.out.png"), pixels(tmp_path / "samples" / "hopper.png"))


@pytest.mark.slow
def test_quick_start_on_the_whole_sample(tmp_path):
    shutil.copytree(SAMPLE.parent, tmp_path / "samples")
    run_quick_start(tmp_path)
    assert np.array_equal(pixels(restored_image(tmp_path)), pixels(SAMPLE))


def test_a_kept_input_in_the_way_says_what_to_do(quick_start_on_a_crop, tmp_path):
    """The README's `vaezip compress photo.png`, then `vaezip decompress photo.vz`: photo.png is still there.
    Both refusals come before any model is loaded."""
    folder, _ = quick_start_on_a_crop
    vz = next(folder.glob("*.vz"))
    shutil.copy(vz, tmp_path / "photo.vz")
    shutil.copy(folder / "samples" / "hopper.png", tmp_path / "photo.png")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    one_error(run_cli("decompress", "photo.vz", cwd=tmp_path), 1,
              "photo.png already exists (use --force to overwrite, or -o to choose another name)")
    one_error(run_cli("compress", "photo.png", cwd=tmp_path), 1,
              "photo.vz already exists (use --force to overwrite, or -o to choose another name)")
    # With -o the user chose the name: only --force is the way out.
    one_error(run_cli("decompress", "photo.vz", "-o", "photo.png", cwd=tmp_path), 1,
              "photo.png already exists (use --force to overwrite)")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_piped_output_does_not_wrap(quick_start_on_a_crop):
    """In a pipe there is no terminal width: lines and table rows stay whole (also when $COLUMNS is narrow),
    so grep and cut see one line per file or model."""
    folder, _ = quick_start_on_a_crop
    vz = next(folder.glob("*.vz"))
    result = run_cli("info", vz, cwd=folder, env={"COLUMNS": "60"})
    assert result.returncode == 0, error_lines(result)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3 and len(lines[0]) > 80 and lines[0].startswith(f"{vz}: "), lines
    assert lines[1].startswith("  hopper.png: 128x96 RGB, "), lines  # then the path it took

    import json

    shipped = json.loads((ROOT / "pretrained" / "manifest.json").read_text())["models"]
    result = run_cli("models", env={"COLUMNS": "60"})
    assert result.returncode == 0, error_lines(result)
    rows = [line.split("\t") for line in result.stdout.decode().splitlines()]  # a header, then the models
    assert rows[0][0] == "name" and [row[0] for row in rows[1:]] == list(shipped), rows
    assert all(len(row) == len(rows[0]) for row in rows), rows  # one line per model, however long


# ---------------------------------------------------------------------------------------------- habits


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"vaezip {vaezip.__version__}\n"
    assert vaezip.__version__ == importlib.metadata.version("vaezip")  # pyproject.toml and the package agree
    assert run_cli("-V").stdout == result.stdout


def test_h_is_help_for_the_app_and_its_commands():
    for args, option in ((["-h"], "--version"), (["compress", "-h"], "--tile"), (["decompress", "-h"], "--dir"),
                         (["info", "-h"], "--help")):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        text = result.stdout.decode()
        assert "Usage: vaezip" in text and option in text, (args, text)
        assert text == run_cli(*args[:-1], "--help").stdout.decode()


def test_binary_output_to_a_terminal_is_refused(tmp_path):
    """As zstd: one line, exit 1, nothing on the terminal; refused before the input is even read (x.png does
    not exist, and the error is not about that)."""
    master, terminal = pty.openpty()
    try:
        for args in (["compress", "x.png", "-o", "-"], ["compress", "-"], ["decompress", "x.vz", "-o", "-"],
                     ["decompress", "-"]):
            result = subprocess.run([sys.executable, "-m", "vaezip", *args], stdin=subprocess.DEVNULL,
                                    stdout=terminal, stderr=subprocess.PIPE, cwd=tmp_path, timeout=600)
            one_error(result, 1, "refusing to write", "to a terminal")
        os.set_blocking(master, False)
        try:
            written = os.read(master, 1 << 16)
        except (BlockingIOError, OSError):  # nothing to read (Linux reports EIO once every writer is gone)
            written = b""
        assert written == b""
    finally:
        os.close(master)
        os.close(terminal)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("value", "message"), [("0", "--tile must be a positive number of pixels, not 0"),
                                               ("-32", "--tile must be a positive number of pixels, not -32"),
                                               ("257", "--tile must be at most 256 pixels (the largest tile")])
def test_a_tile_outside_what_decoders_read_is_a_usage_error(tmp_path, value, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    one_error(run_cli("compress", "a.png", f"--tile={value}", "--fast", cwd=tmp_path), 2, message)
    assert [path.name for path in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize("command", ["compress a.png", "decompress a.vz", "eval photo2 kodak", "train folder",
                                     "bench folder"])
def test_an_unknown_device_is_a_usage_error(tmp_path, command):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    one_error(run_cli(*command.split(), "--device", "tpu", cwd=tmp_path), 2,
              "--device must be auto, cpu or cuda, not 'tpu'")
    assert [path.name for path in tmp_path.iterdir()] == ["a.png"]


def test_bench_into_a_file_is_refused_before_the_run(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "results").write_bytes(b"kept")
    one_error(run_cli("bench", ".", "-o", "results", cwd=tmp_path), 1, "results: not a folder (bench writes")
    assert (tmp_path / "results").read_bytes() == b"kept"


def test_debug_shows_the_traceback_and_nothing_else_changes(tmp_path):
    (tmp_path / "bad.vz").write_bytes(b"not a vaezip file at all")
    plain = one_error(run_cli("info", "bad.vz", cwd=tmp_path), 1, "bad.vz: not a .vz file")
    for result in (run_cli("--debug", "info", "bad.vz", cwd=tmp_path),
                   run_cli("info", "bad.vz", cwd=tmp_path, env={"VAEZIP_DEBUG": "1"})):
        text = result.stderr.decode()
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in text
        # the exception the one-line message rewords, with where it was raised
        assert "BadMagicError" in text and "codec/container.py" in text, text
        assert error_lines(result)[-1] == plain
    one_error(run_cli("info", "bad.vz", cwd=tmp_path, env={"VAEZIP_DEBUG": "0"}), 1)


def test_many_files_get_a_summary_and_v_gives_every_line(tmp_path, tiny_weights):
    names = ["a.png", "b.png", "c.png"]
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), "RGB").save(tmp_path / name)
    model = tiny_weights[3]

    result = run_cli("compress", *names, "-m", model, cwd=tmp_path)
    assert result.returncode == 0, error_lines(result)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("compressed 3 files (3 images): "), lines

    result = run_cli("compress", *names, "-m", model, "-o", "set.vz", "-v", cwd=tmp_path)
    assert result.returncode == 0, error_lines(result)
    lines = error_lines(result)
    assert [line.split(":")[0] for line in lines] == [*names, "-> set.vz"], lines
    assert "3 images" in lines[-1]

    result = run_cli("decompress", "a.vz", "b.vz", "c.vz", "-m", model, "-d", "one-by-one", cwd=tmp_path)
    assert result.returncode == 0, error_lines(result)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("decompressed 3 files (3 images, "), lines

    result = run_cli("decompress", "set.vz", "-m", model, "-d", "archive", cwd=tmp_path)
    assert result.returncode == 0, error_lines(result)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].endswith("-> 3 files in archive (-v: their names)"), lines

    for name in names:
        original = np.asarray(Image.open(tmp_path / name))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one-by-one" / name)), original)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "archive" / name)), original)
