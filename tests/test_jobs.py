"""`vaezip compress/decompress -j N`: several files coded at once in worker processes (vaezip/parallel.py).
The files are byte for byte those of -j 1; failures, --rm and the reports work as file by file. Every CLI call
runs in a fresh process, with the untrained tiny model on small images; no test measures time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from vaezip.api import decompress_images

HANG_GUARD_S = 600  # only against a hang: never a speed check


def _images(folder, count: int = 4) -> list:
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        y, x = np.mgrid[0:24, 0:20 + 4 * index]
        pixels = 120 + 60 * np.sin(x / (3.0 + index))[..., None] + rng.normal(0, 6, (*x.shape, 3))
        paths.append(folder / f"im{index}.png")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_files_coded_by_workers_are_those_of_one_process_verified_and_decode(tmp_path, tiny_weights):
    """-j 2 --rm: byte-identical files, each verified in its worker before its input is deleted, reported in
    the order given; a broken input fails alone and is kept; -j 0 decodes them all exactly."""
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    serial.mkdir()
    parallel.mkdir()
    paths = _images(serial)
    for path in paths:
        (parallel / path.name).write_bytes(path.read_bytes())
    (parallel / "broken.png").write_bytes(b"not an image")
    weights = tiny_weights[3]
    done = run_cli("compress", *paths, "-m", weights, "-q")
    assert done.returncode == 0, done.stderr.decode()
    inputs = [parallel / p.name for p in paths[:2]] + [parallel / "broken.png"] + [parallel / p.name for p in paths[2:]]
    done = run_cli("compress", *inputs, "-m", weights, "-j", "2", "--rm", "-v")
    assert done.returncode == 1  # one input failed, the others were written
    report = done.stderr.decode()
    assert "broken.png: not a readable image" in report and "4 of 5 succeeded, 1 failed" in report, report
    assert report.index("im1.vz") < report.index("broken.png") < report.index("im2.vz") < report.index("im3.vz")
    assert report.count("verified") == 4, report
    assert (parallel / "broken.png").exists()
    for path in paths:
        assert not (parallel / path.name).exists()  # verified, then deleted
        assert (parallel / path.with_suffix(".vz").name).read_bytes() == path.with_suffix(".vz").read_bytes()
    coded = [parallel / p.with_suffix(".vz").name for p in paths]
    done = run_cli("decompress", *coded, "-m", weights, "-j", "0", "-d", tmp_path / "out")
    assert done.returncode == 0, done.stderr.decode()
    assert "decompressed 4 files" in done.stderr.decode() and "workers" in done.stderr.decode()
    for path in paths:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / path.name)), np.asarray(Image.open(path)))


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_a_negative_job_count_is_refused_in_one_line(tmp_path, command):
    done = run_cli(command, tmp_path / ("x.png" if command == "compress" else "x.vz"), "-j", "-1")
    assert done.returncode == 2
    lines = [line for line in done.stderr.decode().splitlines() if line.strip()]
    assert lines == ["vaezip: error: --jobs must be 0 (one per core) or more, not -1"], lines


def test_a_model_that_does_not_load_fails_each_file_as_without_workers(tmp_path):
    paths = _images(tmp_path, 2)
    done = run_cli("compress", *paths, "-m", tmp_path / "missing.safetensors", "-j", "2")
    assert done.returncode == 1
    lines = [line for line in done.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 3 and lines[-1] == "vaezip: 0 of 2 succeeded, 2 failed", lines
    assert all(line.startswith(f"vaezip: error: {path}: no model") for line, path in zip(lines, paths)), lines


def _workers_of(pid: int) -> list[int]:
    """The pool's worker processes among `pid`'s children (not multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                found.append(int(child))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_worker_killed_mid_run_fails_no_file(tmp_path):
    """One worker killed (the out-of-memory killer, say) broke the pool: every file still queued failed with it,
    where -j 1 would have failed none. The pool starts afresh and those files are tried once more."""
    import signal

    rng = np.random.default_rng(5)
    names = []
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)).save(tmp_path / f"f{k}.png")
        names.append(f"f{k}.png")
    process = subprocess.Popen([sys.executable, "-m", "vaezip", "compress", "--fast", "-j", "2", *names],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    for _ in range(6000):  # until a worker has started (a bound against a hang, not a time measured)
        workers = _workers_of(process.pid) if process.poll() is None else []
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed = True
            break
        if process.poll() is not None:
            break
        time.sleep(0.01)
    _, stderr = process.communicate(timeout=HANG_GUARD_S)
    if not killed:
        pytest.skip("the run ended before a worker could be killed")
    assert process.returncode == 0, stderr.decode()
    for k in range(8):
        (_, back), = decompress_images((tmp_path / f"f{k}.vz").read_bytes())
        assert np.array_equal(np.asarray(back), np.asarray(Image.open(tmp_path / f"f{k}.png")))
