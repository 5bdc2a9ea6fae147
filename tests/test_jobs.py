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


@pytest.mark.skipif(not hasattr(os, "link"), reason="no hard links here")
def test_hard_links_to_one_file_go_with_rm_as_without_workers(tmp_path):
    """Deleting one link to a file moves the file's ctime: with -j 2 the second link, read before the first was
    deleted, was kept as "changed while it was compressed" (exit 1), where -j 1 deleted both."""
    first, = _images(tmp_path, 1)
    os.link(first, tmp_path / "link.png")
    done = run_cli("compress", first, tmp_path / "link.png", "--fast", "--rm", "-j", "2")
    assert done.returncode == 0, done.stderr.decode()
    assert not first.exists() and not (tmp_path / "link.png").exists()
    assert (tmp_path / "im0.vz").exists() and (tmp_path / "link.vz").exists()


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


# Loaded by every Python process started with this folder on PYTHONPATH: in a worker (spawned with
# --multiprocessing-fork), a file whose name starts with "bomb" kills the worker each time it is coded, one whose
# name starts with "once" the first time only (as the out-of-memory killer would).
_KILLER = """
import os, signal, sys
if "--multiprocessing-fork" in sys.argv:
    import vaezip.parallel as parallel
    coded = parallel._compress
    def _compress(images, options, verify):
        for name, _ in images:
            marker = os.path.join(os.environ["KILLER_DIR"], "killed-" + os.path.basename(name))
            if os.path.basename(name).startswith("bomb") or (
                    os.path.basename(name).startswith("once") and not os.path.exists(marker)):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return coded(images, options, verify)
    parallel._compress = _compress
"""


def test_a_worker_killed_on_a_file_fails_that_file_alone(tmp_path):
    """One worker killed (the out-of-memory killer, say) broke the pool: every file still queued failed with it,
    where -j 1 would have failed none or one. The pool starts afresh and those files are tried once more: a file
    killed once comes out, one that kills its worker each time fails alone, and every other file comes out."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_KILLER)
    rng = np.random.default_rng(5)
    names = ["f0.png", "once.png", "f1.png", "bomb.png", "f2.png", "f3.png", "f4.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), root]), "KILLER_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "vaezip", "compress", "--fast", "-j", "2", *names], cwd=tmp_path,
                            env=env, capture_output=True, timeout=HANG_GUARD_S)
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert (tmp_path / "killed-once.png").exists() and (tmp_path / "killed-bomb.png").exists()
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode(), lines
    assert len(lines) == 3 and lines[0] == ("vaezip: error: bomb.png: a worker process ended abruptly on this file "
                                            "twice (killed, or out of memory?); try fewer --jobs"), lines
    assert lines[1].startswith("compressed 6 files (6 images): ") and lines[2] == "vaezip: 6 of 7 succeeded, 1 failed"
    for name in names:
        if name != "bomb.png":
            (_, back), = decompress_images((tmp_path / name.replace(".png", ".vz")).read_bytes())
            assert np.array_equal(np.asarray(back), np.asarray(Image.open(tmp_path / name)))
    assert not (tmp_path / "bomb.vz").exists()


_SLOW = """
import os, sys, time
if "--multiprocessing-fork" in sys.argv:
    import vaezip.parallel as parallel
    coded = parallel._compress
    def _compress(images, options, verify):
        open(os.path.join(os.environ["SLOW_DIR"], "worker-%d" % os.getpid()), "w").close()
        time.sleep(60)
        return coded(images, options, verify)
    parallel._compress = _compress
"""


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie no one has reaped yet has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_when_the_command_is_killed_outright(tmp_path):
    """SIGKILL (the OOM killer, `timeout -s KILL`) on the command left its workers running for ever, holding its
    standard streams: a pipeline or CI job waiting on them hung (a review). They end within seconds."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW)
    for k in range(3):
        Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(tmp_path / f"f{k}.png")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), root]), "SLOW_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "vaezip", "compress", "--fast", "-j", "2", "f0.png", "f1.png",
                                "f2.png"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(path.name.split("-")[1]) for path in tmp_path.glob("worker-*")]
        assert len(workers) == 2
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + HANG_GUARD_S  # a worker looks for its parent every second
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in workers), "a worker outlived the command"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.skipif(not hasattr(os, "killpg") or sys.platform == "win32", reason="POSIX process groups")
def test_the_pools_resource_tracker_outlives_a_hangup_to_the_group():
    """A closed terminal sends SIGHUP to the whole group: multiprocessing's resource tracker (which ignores only
    SIGINT and SIGTERM) died, was started again while the pool was torn down, and printed tracebacks under the
    command's one line `vaezip: terminated` (from a QA pass). Started by the workers' pool, it now keeps SIGHUP
    blocked; the command's own SIGHUP still ends the command."""
    script = (
        "import os, signal, sys, time\n"
        "from multiprocessing import resource_tracker\n"
        "from vaezip.parallel import _tracker_deaf_to_hangups\n"
        "_tracker_deaf_to_hangups()\n"
        "tracker = resource_tracker._resource_tracker._pid\n"
        "os.kill(tracker, signal.SIGHUP)\n"
        "time.sleep(0.5)\n"
        "print(os.waitpid(tracker, os.WNOHANG) == (0, 0))\n"  # (0, 0): still running
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "time.sleep(5)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "True" and result.returncode == -1, (result.stdout, result.stderr)
