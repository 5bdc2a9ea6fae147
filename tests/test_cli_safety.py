"""The CLI never loses an input (issue 19, items 3, 7, 8, 9 and `--rm` / `--verify`).

- an output that is an input, or that two inputs share, is refused before any work (whatever --force);
- `--rm` deletes an input only after its .vz was decoded in process and matched the input's pixels;
- FIFOs, devices and folders are refused unread, stdin and files are read with a size limit; as outputs they
  are never replaced, --force or not; `--rm` with stdout as the output is refused;
- SIGTERM / Ctrl-C during a write leave no temporary (exit 143 / 130); temporaries of killed processes are
  removed by the next write of that name (never files of other names);
- names are printed escaped (one line, no terminal control) and stored names become plain file names.

CLI runs go through `python -m vaezip` in a fresh process, except where a function of the running process is
replaced (CliRunner, in-process). No test measures time.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vaezip import files
from vaezip.api import compress_images, decompress_images, load_model
from vaezip.cli import app
from vaezip.files import png_file_name as _safe_name

HANG_GUARD_S = 600  # only against a hang (as the other CLI tests' subprocess timeout): never a speed check


def cli(*args, cwd=None, input=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "60"}  # narrow: an error must stay on one line even so
    return subprocess.run([sys.executable, "-m", "vaezip", *map(str, args)], capture_output=True, cwd=cwd,
                          timeout=HANG_GUARD_S, env=env, input=input)


def lines_of(result) -> list[str]:
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.strip()]


def one_error(result, *fragments: str) -> str:
    lines = lines_of(result)
    assert result.returncode == 1, (result.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("vaezip: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry of `folder` (hidden ones included) with its bytes (a symlink: its target)."""
    state = {}
    for path in sorted(folder.iterdir()):
        if path.is_symlink():
            state[path.name] = b"->" + os.readlink(path).encode()
        elif path.is_file() and path.stat().st_size < 1 << 20:
            state[path.name] = path.read_bytes()
        else:  # a folder, FIFO or huge sparse file: never read
            state[path.name] = f"<{path.stat().st_mode:o} {path.stat().st_size}>".encode()
    return state


def image(seed: int, size=(12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.integers(0, 256, (size[1], size[0], 3)) // 64 * 64).astype(np.uint8), "RGB")


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def model(tiny_weights) -> Path:
    return tiny_weights[3]


@pytest.fixture()
def folder(tmp_path, model) -> Path:
    image(1).save(tmp_path / "a.png")
    image(2).save(tmp_path / "a.jpg", format="PNG")  # a PNG called .jpg: both map to a.vz
    image(3).save(tmp_path / "pic.vz", format="PNG")  # a PNG called .vz: its output name is itself
    os.link(tmp_path / "a.png", tmp_path / "hard.png")
    return tmp_path


# ---------------------------------------------------------------------------------------------- item 3


def test_compress_output_that_is_an_input_is_refused_before_any_work(folder, model):
    before = snapshot(folder)
    cases = {
        ("a.png", "-o", "a.png"): "a.png: this output would overwrite the input;",
        ("pic.vz",): "pic.vz: already a .vz file; left as it is (vaezip decompress it)",
        ("a.png", "a.jpg"): "a.vz: the output of both a.png and a.jpg; nothing done",
        ("a.png", "-o", "hard.png"): "hard.png: this output would overwrite the input a.png",  # a hard link
        ("a.png", "b.png", "-o", "a.png"): "a.png: this output would overwrite the input",  # archive over an input
    }
    for args, message in cases.items():
        one_error(cli("compress", *args, "--force", "--rm", "-m", model, cwd=folder), message)
        assert snapshot(folder) == before, args  # nothing deleted, nothing written
    # the same through a symlink to an input
    os.symlink("a.png", folder / "link.vz")
    one_error(cli("compress", "a.png", "-o", "link.vz", "-f", "--rm", "-m", model, cwd=folder),
              "link.vz: this output would overwrite the input a.png")
    assert (folder / "a.png").read_bytes() == before["a.png"] and (folder / "link.vz").is_symlink()


def test_a_file_named_twice_goes_once_into_its_output(tmp_path):
    """`compress a.png ./a.png` was refused as two inputs of one output, told to rename one: the file is coded once,
    with a warning for each time it is named again, as an archive takes it once; a second name of it (a link) has
    an output of its own. Likewise decompress."""
    image(0).save(tmp_path / "a.png")
    os.link(tmp_path / "a.png", tmp_path / "hard.png")
    result = cli("compress", "--fast", "a.png", "./a.png", "hard.png", "a.png", cwd=tmp_path)
    lines = lines_of(result)
    assert result.returncode == 0 and lines[:2] == ["vaezip: warning: ./a.png: the same file as a.png: compressed once",
                                                    "vaezip: warning: a.png: named again: compressed once"], lines
    assert lines[2].startswith("compressed 2 files (2 images)"), lines
    assert [name for name, _ in decompress_images((tmp_path / "hard.vz").read_bytes())] == ["hard.png"]
    (tmp_path / "a.png").rename(tmp_path / "source.png")
    result = cli("decompress", "a.vz", "a.vz", cwd=tmp_path)
    assert result.returncode == 0 and lines_of(result)[0] == "vaezip: warning: a.vz: named again: decompressed once"
    assert same_pixels(Image.open(tmp_path / "a.png"), image(0))
    quiet = cli("decompress", "-q", "-f", "a.vz", "./a.vz", cwd=tmp_path)
    assert quiet.returncode == 0 and lines_of(quiet) == []


def test_a_vz_among_the_inputs_is_left_as_it_is_and_the_others_are_compressed(tmp_path):
    """As gzip with a .gz: `vaezip compress *` in a folder holding one .vz refused every file."""
    for name, seed in (("a.png", 0), ("b.png", 1)):
        image(seed).save(tmp_path / name)
    (tmp_path / "old.vz").write_bytes(b"anything")
    result = cli("compress", "--fast", "a.png", "old.vz", "b.png", cwd=tmp_path)
    lines = lines_of(result)
    assert result.returncode == 1 and lines[0] == "vaezip: error: old.vz: already a .vz file; left as it is " \
                                                   "(vaezip decompress it)", lines
    assert lines[-1] == "vaezip: 2 of 3 succeeded, 1 failed"
    assert (tmp_path / "old.vz").read_bytes() == b"anything"
    for name, seed in (("a", 0), ("b", 1)):
        assert same_pixels(decompress_images((tmp_path / f"{name}.vz").read_bytes())[0][1], image(seed))
    # a.png's output would be a.vz, an input left as it is: --force or not, it stays
    (tmp_path / "a.vz").write_bytes(b"kept")
    result = cli("compress", "--fast", "-f", "a.png", "a.vz", "b.png", cwd=tmp_path)
    lines = lines_of(result)
    assert result.returncode == 1 and (tmp_path / "a.vz").read_bytes() == b"kept"
    assert "vaezip: error: a.png: its output a.vz is an input of this command, left as it is; nothing done " \
           "(choose another output name with -o)" in lines and lines[-1] == "vaezip: 1 of 3 succeeded, 2 failed"


def test_decompress_output_that_is_an_input_is_refused(folder, model):
    loaded = load_model(model)
    vz = compress_images([("a.png", image(1))], loaded).data
    (folder / "one.vz").write_bytes(vz)
    (folder / "one.bin").write_bytes(vz)  # one.vz and one.bin both decode to one.png
    (folder / "named.png").write_bytes(vz)  # a .vz called .png: its output name is itself
    before = snapshot(folder)
    one_error(cli("decompress", "one.vz", "-o", "one.vz", "-f", "-m", model, cwd=folder),
              "one.vz: this output would overwrite the input")
    one_error(cli("decompress", "named.png", "-f", "-m", model, cwd=folder), "named.png: this output would overwrite")
    one_error(cli("decompress", "one.vz", "one.bin", "-f", "-m", model, cwd=folder),
              "one.png: the output of both one.vz and one.bin; nothing done")
    assert snapshot(folder) == before

    # --dir: a stored name that is an input in that folder, and two archives holding the same name
    archive = compress_images([("a.png", image(1)), ("b.png", image(2))], loaded).data
    other = compress_images([("b.png", image(5))], loaded).data
    (folder / "sub").mkdir()
    (folder / "sub" / "a.png").write_bytes(archive)  # an archive called a.png, holding an image named a.png
    (folder / "all.vz").write_bytes(archive)
    (folder / "other.vz").write_bytes(other)
    one_error(cli("decompress", "sub/a.png", "--dir", "sub", "-f", "-m", model, cwd=folder),
              "vaezip: error: sub/a.png: this output would overwrite an input; nothing written")
    assert (folder / "sub" / "a.png").read_bytes() == archive and sorted(os.listdir(folder / "sub")) == ["a.png"]
    result = cli("decompress", "all.vz", "other.vz", "--dir", "out", "-f", "-m", model, "-q", cwd=folder)
    lines = lines_of(result)
    assert result.returncode == 1 and len(lines) == 2, lines
    assert lines[0] == "vaezip: error: other.vz: out/b.png: already written by this run from another input; nothing written"
    assert lines[1] == "vaezip: 1 of 2 succeeded, 1 failed"
    assert same_pixels(Image.open(folder / "out" / "b.png"), image(2))  # the first archive's b.png stays


# ---------------------------------------------------------------------------------------------- --rm, --verify


def test_rm_and_verify_decode_and_compare_before_deleting(tmp_path, model):
    image(1).save(tmp_path / "a.png")
    image(2).save(tmp_path / "b.png")
    result = cli("compress", "a.png", "--verify", "-m", model, cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert "verified (decoded and compared) in " in lines_of(result)[-1]
    assert (tmp_path / "a.png").exists() and (tmp_path / "a.vz").exists()  # --verify deletes nothing
    result = cli("compress", "b.png", "--rm", "-m", model, cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert "verified (decoded and compared) in " in lines_of(result)[-1]  # --rm implies the check
    assert not (tmp_path / "b.png").exists()
    assert cli("decompress", "b.vz", "-m", model, "-q", cwd=tmp_path).returncode == 0  # a fresh process
    assert same_pixels(Image.open(tmp_path / "b.png"), image(2))


@pytest.mark.parametrize(("flag", "fault"), [("--rm", "other pixels"), ("--verify", "other pixels"),
                                             ("--rm", "decoder error"), ("--rm", "fewer images")])
def test_a_failed_verification_keeps_the_input_and_writes_nothing(tmp_path, model, monkeypatch, fault, flag):
    """The decoder is replaced in this process by one that goes wrong: the input must survive."""
    import vaezip.api

    real = vaezip.api.decompress_images

    def faulty(data, *args, **kwargs):
        decoded = real(data, *args, **kwargs)
        if fault == "decoder error":
            raise RuntimeError("simulated decoder bug")
        if fault == "fewer images":
            return decoded[:-1]
        name, picture = decoded[0]
        pixels = np.asarray(picture).copy()
        pixels[0, 0, 0] ^= 1
        return [(name, Image.fromarray(pixels, picture.mode))] + decoded[1:]

    monkeypatch.setattr(vaezip.api, "decompress_images", faulty)
    image(1).save(tmp_path / "a.png")
    image(2).save(tmp_path / "b.png")
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    for args in (["a.png"], ["a.png", "b.png", "-o", "all.vz"]):
        result = CliRunner().invoke(app, ["compress", *args, flag, "-m", str(model)])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, (result.exit_code, result.stderr, result.exception)
        assert lines[0].startswith("vaezip: error: ") and "verification failed" in lines[0], lines[0]
        assert lines[0].endswith("nothing written, input kept"), lines[0]
        assert snapshot(tmp_path) == before  # inputs kept, no .vz, no temporary


# ---------------------------------------------------------------------------------------------- item 7


def test_non_regular_inputs_are_refused_unread(tmp_path, model):
    os.mkfifo(tmp_path / "fifo.png")  # nobody writes to it: reading it would hang (the guard would fire)
    os.mkfifo(tmp_path / "pipe.vz")
    with open(tmp_path / "huge.png", "wb") as handle:  # sparse: 1 GiB + 1 of nothing, costs no disk
        handle.truncate(files.MAX_INPUT_BYTES + 1)
    (tmp_path / "big.vz").symlink_to("huge.png")
    before = snapshot(tmp_path)
    result = cli("compress", "fifo.png", "/dev/zero", "huge.png", "--rm", "-m", model, cwd=tmp_path)
    lines = lines_of(result)
    assert result.returncode == 1 and lines == [
        "vaezip: error: fifo.png: not a regular file (a FIFO); vaezip reads regular files, or '-' for stdin",
        "vaezip: error: /dev/zero: not a regular file (a character device); vaezip reads regular files, or '-' for stdin",
        f"vaezip: error: huge.png: {files.MAX_INPUT_BYTES + 1} bytes, more than vaezip's input limit of "
        f"{files.MAX_INPUT_BYTES} bytes (1 GiB)",
        "vaezip: 0 of 3 succeeded, 3 failed",
    ], lines
    for command in ("decompress", "info"):
        result = cli(command, "pipe.vz", "/dev/zero", "big.vz", *(["-m", model] if command == "decompress" else []),
                     cwd=tmp_path)
        lines = lines_of(result)
        assert result.returncode == 1 and len(lines) == 4, lines
        assert lines[0].startswith("vaezip: error: pipe.vz: not a regular file (a FIFO)")
        assert lines[1].startswith("vaezip: error: /dev/zero: not a regular file (a character device)")
        assert lines[2].startswith("vaezip: error: big.vz: 1073741825 bytes, more than vaezip's input limit")
    assert snapshot(tmp_path).keys() == before.keys()
    one_error(cli("compress", tmp_path, "-m", model), f"{tmp_path}: is a directory")


def test_stdin_is_read_with_a_limit(tmp_path, model, monkeypatch):
    import io

    assert files.MAX_INPUT_BYTES == 1 << 30
    assert files.read_limited(io.BytesIO(b"x" * 10), limit=10) == b"x" * 10
    with pytest.raises(files.InputError, match="stdin holds more than vaezip's input limit of 10 bytes"):
        files.read_limited(io.BytesIO(b"x" * 11), limit=10)
    png = io.BytesIO()
    image(1).save(png, format="PNG")
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", len(png.getvalue()) - 1)  # the CLI reads with the module's limit
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["compress", "-", "-o", "out.vz", "-m", str(model)], input=png.getvalue())
    assert result.exit_code == 1, (result.stderr, result.exception)
    assert result.stderr.strip() == (f"vaezip: error: -: stdin holds more than vaezip's input limit of "
                                     f"{len(png.getvalue()) - 1} bytes")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", len(png.getvalue()))
    result = CliRunner().invoke(app, ["compress", "-", "-o", "out.vz", "-m", str(model), "-q"], input=png.getvalue())
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert same_pixels(decompress_images((tmp_path / "out.vz").read_bytes(), load_model(model))[0][1], image(1))


# ---------------------------------------------------------------------------------------------- item 8

# Runs the real CLI with os.fsync replaced by one that marks "the temporary is written" and then waits for the
# test's signal: the signal lands inside the write, deterministically, without any timing.
DRIVER = """
import os, sys, time
marker = sys.argv[1]
def stuck_fsync(fd):
    open(marker, "w").close()
    while True:
        time.sleep(0.05)
os.fsync = stuck_fsync
from vaezip.cli import app
app(sys.argv[2:], prog_name="vaezip")
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_stuck_write(tmp_path: Path, work: Path, *args) -> subprocess.Popen:
    driver, marker = tmp_path / "driver.py", tmp_path / "written.marker"
    driver.write_text(DRIVER)
    marker.unlink(missing_ok=True)
    # Started as from a shell, with Ctrl-C at its default: a test worker may run with SIGINT ignored, which a
    # child inherits (and rightly keeps: nohup).
    process = subprocess.Popen([sys.executable, str(driver), str(marker), *map(str, args)], cwd=work,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    guard = time.monotonic() + HANG_GUARD_S
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the CLI ended before writing: {process.communicate()[1].decode()}")
        if time.monotonic() > guard:
            process.kill()
            pytest.fail("the CLI never reached the write")
        time.sleep(0.05)
    return process


def temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".tmp-" in name)


@pytest.mark.parametrize(("signum", "code", "line"), [(signal.SIGTERM, 143, "vaezip: terminated"),
                                                      (signal.SIGINT, 130, "vaezip: interrupted")])
def test_a_signal_during_the_write_leaves_nothing(tmp_path, model, signum, code, line):
    work = tmp_path / "work"
    work.mkdir()
    image(1).save(work / "a.png")
    before = snapshot(work)
    process = start_stuck_write(tmp_path, work, "compress", "a.png", "--rm", "-m", model)
    assert temporaries(work) == [f".a.vz.tmp-{process.pid}"]  # caught in the middle of the write
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == code, stderr.decode()
    assert "Traceback" not in stderr.decode() and stderr.decode().strip().splitlines()[-1] == line
    assert snapshot(work) == before  # no temporary, no output, the input kept


def test_a_killed_write_leaves_a_temporary_that_the_next_write_of_that_name_removes(tmp_path, model):
    work = tmp_path / "work"
    work.mkdir()
    image(1).save(work / "a.png")
    image(2).save(work / "b.png")
    process = start_stuck_write(tmp_path, work, "compress", "a.png", "-m", model)
    process.kill()  # SIGKILL: no cleanup can run
    process.communicate(timeout=HANG_GUARD_S)
    stale = f".a.vz.tmp-{process.pid}"
    assert temporaries(work) == [stale]
    alive = f".a.vz.tmp-{os.getpid()}"  # another process's write in progress (this test's pid is alive)
    (work / alive).write_bytes(b"half")
    result = cli("compress", "b.png", "-m", model, "-q", cwd=work)
    assert result.returncode == 0, lines_of(result)
    assert temporaries(work) == sorted([stale, alive])  # another name's write leaves them alone
    result = cli("compress", "a.png", "-m", model, "-q", cwd=work)
    assert result.returncode == 0, lines_of(result)
    assert temporaries(work) == [alive]  # the dead process's temporary is gone, the live one's kept
    assert sorted(os.listdir(work)) == sorted(["a.png", "b.png", "a.vz", "b.vz", alive])


def test_remove_stale_temporaries(tmp_path):
    dead, dead_too = (subprocess.Popen([sys.executable, "-c", ""]) for _ in range(2))
    dead.wait()  # reaped: its pid names no process
    dead_too.wait()
    names = {
        f".a.vz.tmp-{dead.pid}": False,  # removed
        f".a.vz.tmp-{os.getpid()}": True,  # this process: kept
        ".a.vz.tmp-1": True,  # pid 1 is alive: kept
        ".a.vz.tmp-0": True,  # 0 is never a writer's pid: kept (and never signalled)
        ".a.vz.tmp-abc": True,  # not a pid
        f"a.vz.tmp-{dead.pid}": True,  # not hidden: not a temporary of ours
        f".a.vz.tmp-{dead.pid}.bak": True,
        f".b.vz.tmp-{dead.pid}": True,  # another name's: left for a write of b.vz
        f".report.odt.tmp-{dead.pid}": True,  # anybody's
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".a.vz.tmp-{dead_too.pid}").mkdir()  # a folder is never removed
    removed = files.remove_stale_temporaries(tmp_path / "a.vz")
    assert [p.name for p in removed] == [name for name, kept in names.items() if not kept]
    assert sorted(os.listdir(tmp_path)) == sorted([name for name, kept in names.items() if kept] +
                                                  [f".a.vz.tmp-{dead_too.pid}"])
    newline = tmp_path / "line\nbreak.png"  # a name with a newline: its temporaries too
    (tmp_path / f".{newline.name}.tmp-{dead.pid}").write_bytes(b"x")
    assert [p.name for p in files.remove_stale_temporaries(newline)] == [f".{newline.name}.tmp-{dead.pid}"]
    # A name of 249 bytes or more: `.NAME.tmp-PID` would pass 255 bytes, and such an output could not be written
    # at all (a review); its temporary is named by the name's digest, and found again as stale
    long = tmp_path / ("b" * 250 + ".vz")
    assert len(files.temporary_path(long).name.encode()) <= 255
    files.atomic_write(long, b"data", overwrite=False)
    assert long.read_bytes() == b"data" and not files.temporary_path(long).exists()
    stale = files.temporary_path(long, pid=dead.pid)
    stale.write_bytes(b"x")
    assert files.remove_stale_temporaries(long) == [stale] and not stale.exists()


def test_atomic_write_never_replaces_without_overwrite(tmp_path):
    (tmp_path / "old.vz").write_bytes(b"precious")
    os.symlink("nowhere", tmp_path / "dangling.vz")
    for name in ("old.vz", "dangling.vz"):
        with pytest.raises(FileExistsError, match="already exists"):
            files.atomic_write(tmp_path / name, b"new", overwrite=False)
    assert (tmp_path / "old.vz").read_bytes() == b"precious" and (tmp_path / "dangling.vz").is_symlink()
    files.atomic_write(tmp_path / "new.vz", b"new", overwrite=False)
    files.atomic_write(tmp_path / "old.vz", b"replaced", overwrite=True)
    assert (tmp_path / "new.vz").read_bytes() == b"new" and (tmp_path / "old.vz").read_bytes() == b"replaced"
    with pytest.raises(files.FolderMissing, match="nodir: no such folder"):
        files.atomic_write(tmp_path / "nodir" / "x.vz", b"x", overwrite=True)
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------------------------------------- item 9


def test_labels_are_not_doubled_and_a_missing_folder_is_named(tmp_path, model):
    image(1).save(tmp_path / "a.png")
    (tmp_path / "a.vz").write_bytes(compress_images([("a.png", image(1))], load_model(model)).data)
    expected = {
        ("compress", "missing.png", "-m", model): "vaezip: error: missing.png: no such file",
        ("decompress", "missing.vz", "-m", model): "vaezip: error: missing.vz: no such file",
        ("info", "missing.vz"): "vaezip: error: missing.vz: no such file",
        ("compress", "a.png", "-o", "nodir/a.vz", "-m", model): "vaezip: error: a.png: nodir: no such folder",
        ("decompress", "a.vz", "-o", "nodir/a.png", "-m", model): "vaezip: error: a.vz: nodir: no such folder",
    }
    for args, line in expected.items():
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 1 and lines_of(result) == [line], (args, lines_of(result))
    assert sorted(os.listdir(tmp_path)) == ["a.png", "a.vz"]


def test_names_are_printed_escaped_and_stored_names_become_plain_file_names(tmp_path, model):
    odd = "line\nbreak.png"
    image(1).save(tmp_path / odd, format="PNG")
    (tmp_path / "e\x1b[31mvil.png").write_bytes(b"not an image")
    result = cli("compress", odd, "-m", model, cwd=tmp_path)
    lines = lines_of(result)
    assert result.returncode == 0 and len(lines) == 2, lines
    assert lines[0].startswith("line\\nbreak.png: 12x10 RGB") and lines[1].startswith("-> line\\nbreak.vz: ")
    one_error(cli("compress", "e\x1b[31mvil.png", "-m", model, cwd=tmp_path),
              "vaezip: error: e\\x1b[31mvil.png: not a readable image")
    result = cli("info", "line\nbreak.vz", cwd=tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0 and out.startswith("line\\nbreak.vz: ") and "  line\\nbreak.png: 12x10 RGB" in out

    result = cli("decompress", "line\nbreak.vz", "--dir", "out", "-m", model, cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert os.listdir(tmp_path / "out") == ["line_break.png"]
    assert lines_of(result)[-1].endswith("-> out/line_break.png")
    assert same_pixels(Image.open(tmp_path / "out" / "line_break.png"), image(1))


def test_images_of_one_name_in_an_archive_all_come_back(tmp_path, model):
    """x.png and x.jpg, or x.png from two folders, are both stored; --dir writes every one of them (the archive
    could not be extracted before, and --rm had deleted its inputs)."""
    (tmp_path / "d").mkdir()
    # X-2.png: the name the second x would get, taken (names compared case-folded), so that one is x-3
    originals = {name: image(seed) for seed, name in enumerate(("x.png", "x.bmp", "d/x.png", "X-2.png"))}
    for name, picture in originals.items():
        picture.save(tmp_path / name)
    result = cli("compress", *originals, "-o", "set.vz", "--rm", "-m", model, "-q", cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    result = cli("decompress", "set.vz", "-d", "out", "-m", model, cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert lines_of(result)[0] == "set.vz: 2 images share a name with an earlier one, written as x-3.png, x-4.png"
    assert sorted(os.listdir(tmp_path / "out")) == ["X-2.png", "x-3.png", "x-4.png", "x.png"]
    for written, name in [("x.png", "x.png"), ("x-3.png", "x.bmp"), ("x-4.png", "d/x.png"), ("X-2.png", "X-2.png")]:
        assert same_pixels(Image.open(tmp_path / "out" / written), originals[name])


def test_output_names_are_unique_case_folded_and_numbered_in_stored_order():
    from vaezip.files import png_file_names as _output_names

    assert _output_names(["x.png", "x.jpg", "X-2.png", "d/x.png", "X.PNG", "y.bmp"]) == [
        "x.png", "x-3.png", "X-2.png", "x-4.png", "X-5.png", "y.png"]
    many = _output_names(["a.png"] * 4096)  # the most an archive holds
    assert len({name.casefold() for name in many}) == 4096 and many[:2] == ["a.png", "a-2.png"]


def test_safe_name_keeps_stored_names_plain():
    assert _safe_name("line\nbreak.png") == "line_break.png"
    assert _safe_name("a\x00b\x1b[2J.png") == "a_b_[2J.png"
    assert _safe_name("../../etc/passwd") == "passwd.png"
    assert _safe_name("..\\..\\x.jpg") == "x.png"
    assert _safe_name("\u202egnp.exe") == "_gnp.png"
    assert _safe_name("..") == "image.png"
    assert files.shown("a\nb\x1b\udcff\u202e.png") == "a\\nb\\x1b\\udcff\\u202e.png"
    assert files.shown("plain name é.png") == "plain name é.png"


def test_a_dangling_symlink_output_needs_force(tmp_path, model):
    image(1).save(tmp_path / "a.png")
    os.symlink("nowhere.vz", tmp_path / "link.vz")
    one_error(cli("compress", "a.png", "-o", "link.vz", "-m", model, cwd=tmp_path),
              "a.png: link.vz already exists (use --force to overwrite)")
    assert (tmp_path / "link.vz").is_symlink() and not (tmp_path / "nowhere.vz").exists()
    result = cli("compress", "a.png", "-o", "link.vz", "-f", "-m", model, "-q", cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert not (tmp_path / "link.vz").is_symlink()  # the link itself is replaced, nothing written through it
    assert sorted(os.listdir(tmp_path)) == ["a.png", "link.vz"]


def test_a_fifo_or_device_output_is_never_replaced(tmp_path, model):
    """A rename would put a regular file where the FIFO or device was, even with --force (as root, `-o /dev/null
    -f` would have replaced the null device): refused, before any work; `-o - > PATH` writes into it. The CLI is
    run only on a FIFO here: names in /dev are checked by the function (a regression must not replace them)."""
    image(1).save(tmp_path / "a.png")
    assert cli("compress", "a.png", "-m", model, "-q", cwd=tmp_path).returncode == 0
    os.mkfifo(tmp_path / "fifo")  # nobody reads it: a write into it would hang (the guard would fire)
    os.symlink("fifo", tmp_path / "link")  # a link to it: --force would replace the link, so it is refused too
    before = snapshot(tmp_path)
    for command, source in (("compress", "a.png"), ("decompress", "a.vz")):
        for target, why in (("fifo", "not a regular file (a FIFO)"), ("link", "not a regular file (a FIFO, through "
                                                                             "a link)")):
            for force in ([], ["--force"]):
                one_error(cli(command, source, "-o", target, *force, "-m", model, cwd=tmp_path),
                          f"{source}: {target}: {why}; vaezip writes regular files, or '-' for stdout (-o - > "
                          f"{target})")
    with pytest.raises(files.OutputError, match="a FIFO"):
        files.atomic_write(tmp_path / "fifo", b"data", overwrite=True)
    assert snapshot(tmp_path) == before and (tmp_path / "fifo").is_fifo()

    (tmp_path / "dev").symlink_to("/dev")
    (tmp_path / "out").symlink_to("/dev/stdout")  # -> /proc/self/fd/1: whatever stdout is, a regular file too
    (tmp_path / "through").symlink_to("dev/fd/1")  # /dev reached through a linked folder
    for target, message in [("/dev/null", "/dev/null: not a regular file (a character device)"),
                            ("/dev/stdout", "/dev/stdout: names a device or an open file (/dev/stdout)"),
                            (tmp_path / "out", "out: names a device or an open file (/dev/stdout)"),
                            (tmp_path / "through", "through: names a device or an open file (/proc/"),
                            ("/dev/x.vz", "/dev/x.vz: in /dev, a folder of devices or open files: choose an output "
                                          "elsewhere"),
                            (tmp_path / "dev" / "y.vz", "y.vz: in /dev, a folder of devices or open files")]:
        with pytest.raises(files.OutputError) as refused:
            files.refuse_special_output(target)
        assert message in str(refused.value), (target, str(refused.value))
    (tmp_path / "dangling").symlink_to("gone.vz")
    for fine in (tmp_path / "new.vz", tmp_path / "a.vz", tmp_path / "dangling"):
        files.refuse_special_output(fine)  # a missing name, a regular file, a dangling link: --force's to decide
    one_error(cli("compress", "a.png", "-o", "new.vz/", "-m", model, cwd=tmp_path),
              "new.vz/: ends in '/' but is not a folder: give a file name")
    assert not (tmp_path / "new.vz").exists()


def test_rm_with_stdout_output_is_refused(tmp_path, model):
    """As gzip -c keeps its input: what a pipe did with the bytes (`| cat > /dev/full`, `| head -c 10`) is
    unknown, so --rm cannot know the output is safe."""
    image(1).save(tmp_path / "a.png")
    before = snapshot(tmp_path)
    result = cli("compress", "a.png", "-o", "-", "--rm", "-m", model, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == b"", lines_of(result)
    assert lines_of(result) == ["vaezip: error: --rm deletes inputs only once their output file reads back as "
                                "written: not with -o - or -c (stdout)"]
    assert snapshot(tmp_path) == before


def test_stdin_among_files_goes_to_stdout_and_is_read_once(tmp_path, model):
    """`compress a.png -` (no -o) wrote stdin's file as './-.vz'; it goes to stdout, as decompress's does."""
    image(1).save(tmp_path / "a.png")
    piped = io.BytesIO()
    image(2).save(piped, format="PNG")
    result = cli("compress", "a.png", "-", "-m", model, "-q", cwd=tmp_path, input=piped.getvalue())
    assert result.returncode == 0, lines_of(result)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "a.vz"]
    (_, decoded), = decompress_images(result.stdout, load_model(model))
    assert same_pixels(decoded, image(2))
    result = cli("decompress", "a.vz", "-", "--force", "-m", model, "-q", cwd=tmp_path, input=result.stdout)
    assert result.returncode == 0, lines_of(result)
    assert same_pixels(Image.open(io.BytesIO(result.stdout)), image(2))
    assert same_pixels(Image.open(tmp_path / "a.png"), image(1))
    before = snapshot(tmp_path)
    for command in ("compress", "decompress"):
        result = cli(command, "-", "-", "-m", model, cwd=tmp_path, input=b"")
        assert result.returncode == 2 and lines_of(result) == [
            "vaezip: error: '-' (stdin) is given more than once: it can be read once"]
    assert snapshot(tmp_path) == before


def test_decompress_test_decodes_and_verifies_every_file_and_writes_nothing(tmp_path):
    """`decompress --test` (as gzip -t): each file decoded and checked against its checksum; nothing written;
    exit 1 where a file fails (the others still tested), 2 with an output option."""
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    assert cli("compress", "a.png", "b.png", "--fast", cwd=tmp_path).returncode == 0
    data = (tmp_path / "b.vz").read_bytes()
    (tmp_path / "cut.vz").write_bytes(data[: len(data) // 2])
    before = snapshot(tmp_path)
    tested = cli("decompress", "-t", "a.vz", "b.vz", cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert tested.stderr.decode().startswith("tested 2 files (2 images, ")
    assert "nothing written" in tested.stderr.decode() and snapshot(tmp_path) == before
    one = cli("decompress", "--test", "-", cwd=tmp_path, input=(tmp_path / "a.vz").read_bytes())
    assert one.returncode == 0 and one.stdout == b"" and "-: 1 image, " in one.stderr.decode()
    assert "OK: decoded and verified (checksum)" in one.stderr.decode()
    broken = cli("decompress", "-t", "cut.vz", "a.vz", cwd=tmp_path)
    assert broken.returncode == 1 and "vaezip: error: cut.vz: truncated file" in broken.stderr.decode()
    assert "1 of 2 succeeded, 1 failed" in broken.stderr.decode() and snapshot(tmp_path) == before
    for option in (["-o", "x.png"], ["--dir", "out"], ["--force"], ["--rm"]):
        refused = cli("decompress", "-t", "a.vz", *option, cwd=tmp_path)
        assert refused.returncode == 2
        assert "--test writes nothing: not with -o (or -c), --dir, --force or --rm" in refused.stderr.decode()
    assert snapshot(tmp_path) == before


def test_recursive_inputs_are_the_lossless_images_under_a_folder_in_path_order(tmp_path):
    """-r: a folder stands for its PNG, GIF, BMP, TIFF, WebP and PNM images (any case) at any depth, in the order
    of their paths; JPEGs, other files, hidden names and links are passed over."""
    tree = tmp_path / "tree"
    for folder in ("sub/deeper", ".hidden", "sub/.cache"):
        (tree / folder).mkdir(parents=True)
    rng = np.random.default_rng(4)
    colour = lambda: Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))  # noqa: E731
    for name in ("b.png", "sub/g.PNG", "sub/deeper/c.bmp", "sub/t.tiff", "a.gif", "sub/j.jpg", ".hidden/h.png",
                 "sub/.dot.png", "sub/.cache/k.png"):
        colour().save(tree / name)
    colour().convert("1").save(tree / "sub" / "bits.pbm")  # 1-bit: coded as grey
    (tree / "notes.txt").write_text("not an image")
    (tree / "sub" / "link.png").symlink_to(tree / "b.png")
    expected = ["a.gif", "b.png", "sub/bits.pbm", "sub/deeper/c.bmp", "sub/g.PNG", "sub/t.tiff"]
    found, unread = files.files_under(str(tree), files.RECURSIVE_IMAGE_SUFFIXES)
    assert [Path(path).relative_to(tree).as_posix() for path in found] == expected and unread == []
    made = cli("compress", "-r", "tree", "--fast", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "compressed 6 files (6 images)" in made.stderr.decode()
    written = sorted(path.relative_to(tree).as_posix() for path in tree.rglob("*.vz"))
    assert written == sorted(str(Path(name).with_suffix(".vz")) for name in expected)
    archive = cli("compress", "-r", "tree", "-o", "all.vz", "--fast", cwd=tmp_path)
    assert archive.returncode == 0, archive.stderr
    assert [name for name, _ in decompress_images((tmp_path / "all.vz").read_bytes())] == [
        Path(name).name for name in expected]
    tested = cli("decompress", "-r", "-t", "tree", cwd=tmp_path)
    assert tested.returncode == 0 and "tested 6 files (6 images" in tested.stderr.decode(), tested.stderr
    # --dir keeps the tree as given, as zstd's --output-dir-mirror: tree/sub/g.vz -> out/tree/sub/g.png
    (tree / "sub" / "deeper" / "b.vz").write_bytes((tree / "b.vz").read_bytes())  # a second b.png, elsewhere
    mirrored = cli("decompress", "-r", "tree", str(tree / "sub"), "--dir", "out", cwd=tmp_path)  # absolute: sub
    assert mirrored.returncode == 0, mirrored.stderr
    restored = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.png"))
    others = [str(Path(name).with_suffix(".png")) for name in expected if name != "b.png"]
    assert restored == sorted(["tree/b.png", "tree/sub/deeper/b.png"] + [f"tree/{name}" for name in others])
    again = cli("decompress", "-r", str(tree / "sub"), "--dir", "out2", cwd=tmp_path)
    mirrored_sub = tmp_path / "out2" / str(tree / "sub").lstrip(os.sep)  # an absolute folder: its whole path
    assert again.returncode == 0 and (mirrored_sub / "deeper" / "b.png").exists(), again.stderr
    # a folder given through '..': its whole path under --dir's folder, never outside it
    before = set(tmp_path.rglob("*.png"))
    up = cli("decompress", "-r", "..", "--dir", "out3", cwd=tree / "sub")
    assert up.returncode == 0, up.stderr
    made = set(tmp_path.rglob("*.png")) - before
    assert made and all(tree / "sub" / "out3" in path.parents for path in made), made
    assert (tree / "sub" / "out3" / str(tree).lstrip(os.sep) / "b.png") in made
    (tmp_path / "empty").mkdir()
    one_error(cli("compress", "-r", "empty", cwd=tmp_path),
              "empty: no PNG, GIF, BMP, TIFF, WebP or PNM image under this folder")
    one_error(cli("decompress", "-r", "empty", cwd=tmp_path), "empty: no .vz file under this folder")
    one_error(cli("compress", "tree", cwd=tmp_path), "tree: is a directory")  # without -r, as before


def test_recursive_inputs_take_each_file_once_and_pass_over_a_folder_without_any(tmp_path):
    """Overlapping inputs (a folder and its subfolder, a file and its folder) give each file once; a folder
    without images is passed over with a warning where other inputs remain."""
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    rng = np.random.default_rng(5)
    for name in ("a/1.png", "a/sub/2.png"):
        Image.fromarray(rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(tmp_path / name)
    made = cli("compress", "-r", "a", "a/sub", "./a/1.png", "empty", "--fast", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    said = lines_of(made)
    assert said[0] == "vaezip: warning: empty: no PNG, GIF, BMP, TIFF, WebP or PNM image under this folder"
    assert said[1].startswith("compressed 2 files (2 images)")
    archive = cli("compress", "-r", "a", "a/sub", "empty", "-o", "all.vz", "--fast", cwd=tmp_path)
    assert archive.returncode == 0, archive.stderr
    assert [name for name, _ in decompress_images((tmp_path / "all.vz").read_bytes())] == ["1.png", "2.png"]


def test_recursive_inputs_report_a_folder_they_cannot_read(tmp_path, monkeypatch):
    """A folder os.walk cannot read is an error naming it (the other files are still done, exit 1); into an
    archive, which would leave its files out, nothing is done. (Root reads any folder: the refusal is made.)"""
    (tmp_path / "tree" / "locked").mkdir(parents=True)
    Image.fromarray(np.full((6, 7, 3), 40, np.uint8)).save(tmp_path / "tree" / "ok.png")
    Image.fromarray(np.full((6, 7, 3), 90, np.uint8)).save(tmp_path / "tree" / "locked" / "in.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.chdir(tmp_path)
    found, unread = files.files_under("tree", files.RECURSIVE_IMAGE_SUFFIXES)
    assert found == [os.path.join("tree", "ok.png")]
    assert unread == [(os.path.join("tree", "locked"), "permission denied")]
    result = CliRunner().invoke(app, ["compress", "-r", "tree", "--fast"])
    assert result.exit_code == 1
    assert "vaezip: error: tree/locked: permission denied: the files under it are left out" in result.output
    assert "1 of 2 succeeded, 1 failed" in result.output and (tmp_path / "tree" / "ok.vz").exists()
    result = CliRunner().invoke(app, ["compress", "-r", "tree", "--fast", "-o", "all.vz"])
    assert result.exit_code == 1 and not (tmp_path / "all.vz").exists()
    assert ("tree/locked: permission denied: the archive would leave out the files under it; nothing done"
            in result.output)


def test_more_images_than_an_archive_holds_are_refused_before_any_is_read(tmp_path):
    for k in range(4097):
        (tmp_path / f"{k}.png").write_bytes(b"")  # never read: the count is refused first
    one_error(cli("compress", "-r", ".", "-o", "all.vz", cwd=tmp_path),
              "4097 images, more than 4096 in one archive: compress them into several archives")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_stdin_from_a_terminal_is_refused(tmp_path):
    """'-' with stdin on a terminal would wait for typed binary data: refused, as gzip does."""
    import pty

    for args, what in ((["decompress", "-t", "-"], "compressed data"), (["compress", "-", "-o", "x.vz"], "image data"),
                       (["info", "-"], "compressed data")):
        leader, follower = pty.openpty()
        try:
            done = subprocess.run([sys.executable, "-m", "vaezip", *args], stdin=follower, capture_output=True,
                                  cwd=tmp_path, timeout=HANG_GUARD_S)
        finally:
            os.close(leader)
            os.close(follower)
        assert done.returncode == 1
        said = done.stderr.decode()
        assert f"refusing to read {what} from a terminal: redirect stdin (< FILE) or name a file" in said
    assert not (tmp_path / "x.vz").exists()


def test_a_file_name_that_is_not_utf8_is_stored_with_replacement_characters(tmp_path):
    """An archive keeps names in UTF-8: the bytes of a name that are not UTF-8 become U+FFFD there (the header
    could not be written before); the file decompressed beside it keeps the real name."""
    name = os.fsdecode(b"bad\xff.png")
    try:
        Image.fromarray(np.full((5, 6, 3), 70, np.uint8)).save(tmp_path / name, format="PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    made = cli("compress", "--fast", name, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    vz = tmp_path / os.fsdecode(b"bad\xff.vz")
    assert [stored for stored, _ in decompress_images(vz.read_bytes())] == ["bad\ufffd.png"]
    (tmp_path / name).unlink()
    back = cli("decompress", vz.name, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / name)), np.full((5, 6, 3), 70, np.uint8))


def test_recursive_inputs_sharing_an_output_are_left_out_and_the_rest_goes_on(tmp_path):
    """x.png and x.gif in one folder both want x.vz: under -r each is an error and left out, and the rest of the
    tree is done (named one by one they are refused together before any work, as before)."""
    (tmp_path / "tree").mkdir()
    rng = np.random.default_rng(6)
    for name in ("x.png", "x.gif", "y.png"):
        Image.fromarray(rng.integers(0, 256, (7, 8, 3), dtype=np.uint8)).save(tmp_path / "tree" / name)
    done = cli("compress", "-r", "tree", "--fast", cwd=tmp_path)
    said = lines_of(done)
    assert done.returncode == 1
    assert said[0] == "vaezip: error: tree/x.vz: the output of both tree/x.gif and tree/x.png: all left out (rename " \
                      "all but one)"
    assert said[-1] == "vaezip: 1 of 3 succeeded, 2 failed"
    assert sorted(path.name for path in (tmp_path / "tree").iterdir()) == ["x.gif", "x.png", "y.png", "y.vz"]
    one_error(cli("compress", "tree/x.png", "tree/x.gif", "--fast", cwd=tmp_path),
              "tree/x.vz: the output of both tree/x.png and tree/x.gif; nothing done")


def test_decompress_rm_deletes_each_vz_once_its_images_are_written_and_read_back(tmp_path):
    """decompress --rm: a .vz goes once its images are on disk as written; where writing fails (an output that
    exists), or where a PNG cannot hold the image exactly (a palette index past the palette's end), it stays;
    stdin may be given, and --rm with -o - is a usage error."""
    rng = np.random.default_rng(7)
    pixels = {name: rng.integers(0, 256, (9, 8, 3), dtype=np.uint8) for name in ("a", "b", "c")}
    for name, array in pixels.items():
        Image.fromarray(array).save(tmp_path / f"{name}.png")
    assert cli("compress", "--fast", "a.png", "b.png", cwd=tmp_path).returncode == 0
    assert cli("compress", "--fast", "a.png", "c.png", "-o", "ac.vz", cwd=tmp_path).returncode == 0
    (tmp_path / "a.png").unlink()
    (tmp_path / "c.png").unlink()
    done = cli("decompress", "--rm", "a.vz", "b.vz", cwd=tmp_path)  # b.png exists: b.vz is kept
    assert done.returncode == 1 and "b.png already exists" in done.stderr.decode()
    assert not (tmp_path / "a.vz").exists() and (tmp_path / "b.vz").exists()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels["a"])
    assert cli("decompress", "--rm", "ac.vz", "-d", "out", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "ac.vz").exists()
    for name in ("a", "c"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), pixels[name])
    single = (tmp_path / "b.vz").read_bytes()
    piped = cli("decompress", "--rm", "-", "-o", "from-stdin.png", cwd=tmp_path, input=single)
    assert piped.returncode == 0 and (tmp_path / "from-stdin.png").exists()
    palette = Image.fromarray((np.arange(80).reshape(8, 10) % 40).astype(np.uint8), "P")
    palette.putpalette(list(range(12)))  # 4 entries, indices up to 39: the PNG's palette is extended
    (tmp_path / "p.vz").write_bytes(compress_images([("p.png", palette)], fast=True).data)
    near = cli("decompress", "--rm", "p.vz", cwd=tmp_path)
    assert near.returncode == 1 and (tmp_path / "p.vz").exists() and (tmp_path / "p.png").exists()
    assert "p.png: a PNG cannot hold this image exactly as the .vz does" in near.stderr.decode()
    refused = cli("decompress", "--rm", "b.vz", "-o", "-", cwd=tmp_path)
    assert refused.returncode == 2 and (tmp_path / "b.vz").exists()
    assert "--rm deletes inputs only once their output files read back as written: not with -o - or -c (stdout)" in \
        refused.stderr.decode()


def test_rm_never_deletes_a_symbolic_link_or_what_it_points_to(tmp_path):
    """--rm on an input that is a symbolic link (as /dev/stdin is) deletes neither the link nor its target: an
    error after the output is written (compress and decompress alike)."""
    Image.fromarray(np.full((6, 5, 3), 33, np.uint8)).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to("real.png")
    done = cli("compress", "--fast", "--rm", "link.png", cwd=tmp_path)
    assert done.returncode == 1 and (tmp_path / "link.vz").exists()
    assert "link.png is a symbolic link: not deleted, nor what it points to (link.vz is written and verified)" in \
        done.stderr.decode()
    assert (tmp_path / "link.png").is_symlink() and (tmp_path / "real.png").exists()
    (tmp_path / "real.vz").symlink_to("link.vz")
    (tmp_path / "real.png").unlink()
    back = cli("decompress", "--rm", "real.vz", cwd=tmp_path)
    assert back.returncode == 1 and "real.vz is a symbolic link: not deleted" in back.stderr.decode()
    assert (tmp_path / "real.vz").is_symlink() and (tmp_path / "link.vz").exists()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "real.png")), np.full((6, 5, 3), 33, np.uint8))


def test_rm_with_workers_keeps_an_input_given_twice_that_was_replaced_between_its_reads(tmp_path, monkeypatch):
    """With -j 2 both readings of `a.vz a.vz` come before either is decoded; replaced between them, a.vz holds an
    image that was not written (the second is refused: the first wrote its name), so it is kept."""
    for name, value in (("a", 10), ("b", 200)):
        Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(tmp_path / "img.png")
        assert cli("compress", "--fast", "img.png", "-o", f"{name}.vz", cwd=tmp_path).returncode == 0
    (tmp_path / "img.png").unlink()
    real_read_input = files.read_input
    reads = []

    def read_input(path, limit=None):
        reads.append(path)
        if len(reads) == 2:  # a.vz replaced by another file between the two readings
            os.replace(tmp_path / "b.vz", tmp_path / "a.vz")
        return real_read_input(path, limit)

    monkeypatch.setattr(files, "read_input", read_input)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["decompress", "--rm", "-j", "2", "-d", "out", "a.vz", "a.vz"])
    assert reads == ["a.vz", "a.vz"] and result.exit_code == 1, result.output
    assert (tmp_path / "a.vz").exists() and "a.vz changed while it was decompressed: kept" in result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "img.png")), np.full((6, 5, 3), 10, np.uint8))
    assert decompress_images((tmp_path / "a.vz").read_bytes())[0][1].getpixel((0, 0)) == (200, 200, 200)


def test_a_file_rewritten_in_place_with_its_size_and_mtime_kept_counts_as_changed(tmp_path):
    """--rm's check before deleting: ctime moves even where a rewrite kept the size and set the mtime back."""
    from vaezip.cli import _same_file_still

    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    before = os.stat(path)
    assert _same_file_still(str(path), before)
    for _ in range(500):  # a later ctime needs the clock to move past the file system's granularity
        with open(path, "r+b") as file:
            file.write(b"y")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        now = os.stat(path)
        if now.st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.01)
    else:
        pytest.skip("this file system's ctime did not move")
    assert (now.st_size, now.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not _same_file_still(str(path), before)


def test_compress_never_replaces_an_output_this_run_wrote(tmp_path, monkeypatch):
    """Where the up-front clash check misses two inputs sharing an output (Photo.png and photo.gif on a file system
    that folds case: Photo.vz is photo.vz), the second is refused after the first is written, even with --force
    and --rm: the first input's only copy is never replaced."""
    import vaezip.cli

    Image.fromarray(np.full((6, 5, 3), 44, np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.full((6, 5, 3), 45, np.uint8)).save(tmp_path / "x.gif")
    monkeypatch.setattr(vaezip.cli, "_refuse_clashes", lambda *args: None)  # as on such a file system
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["compress", "--fast", "--force", "--rm", "x.png", "x.gif"])
    assert result.exit_code == 1 and "x.vz: already written by this run from another input" in result.output
    assert (tmp_path / "x.vz").exists() and (tmp_path / "x.gif").exists() and not (tmp_path / "x.png").exists()


def test_an_output_named_as_another_format_is_refused_before_any_work(tmp_path):
    """compress writes .vz and decompress PNG, whatever -o says: a .vz named photo.png or a PNG named photo.jpg
    would be misread by whatever goes by the name (a web server, a file manager). Usage errors, nothing written."""
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "a.png")
    before = snapshot(tmp_path)
    for command, name, hint in (("compress", "b.png", "compress writes .vz files; name it b.vz"),
                                ("compress", "b.WEBP", "name it b.vz"),
                                ("compress", "b.vz.png", "name it b.vz"),  # not b.vz.vz
                                ("compress", "b.VZ.jpg", "name it b.VZ")):
        result = cli(command, "a.png", "-o", name, cwd=tmp_path)
        assert result.returncode == 2 and lines_of(result)[0].endswith(hint), lines_of(result)
    assert snapshot(tmp_path) == before
    assert cli("compress", "a.png", "--fast", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path)
    for name in ("c.jpg", "c.webp", "c.vz", "c.png.vz"):
        result = cli("decompress", "a.vz", "-o", name, cwd=tmp_path)
        assert result.returncode == 2 and lines_of(result)[0].endswith("decompress writes PNG files; name it c.png")
    assert snapshot(tmp_path) == before
    assert cli("decompress", "a.vz", "-o", "c", cwd=tmp_path).returncode == 0  # no suffix: a name of one's own


def test_an_archive_takes_each_file_once_and_rm_keeps_what_it_would_lose(tmp_path):
    """A file named twice for one archive (or under a second name: a hard link) is archived once, with a warning each
    time: its image twice made the archive about twice its size, and --rm deleted the input, its size check counting
    the file twice (from a QA pass)."""
    Image.open(Path(__file__).parent.parent / "samples" / "hopper.png").save(tmp_path / "a.png")
    os.link(tmp_path / "a.png", tmp_path / "b.png")
    image(3, (40, 30)).save(tmp_path / "c.png")
    result = cli("compress", "--fast", "a.png", "c.png", "a.png", "b.png", "-o", "all.vz", cwd=tmp_path)
    assert result.returncode == 0, lines_of(result)
    assert lines_of(result)[:2] == ["vaezip: warning: a.png: named again: archived once",
                                    "vaezip: warning: b.png: the same file as a.png: archived once"]
    assert lines_of(result)[2].startswith("-> all.vz: 2 images, ")
    assert [name for name, _ in decompress_images((tmp_path / "all.vz").read_bytes())] == ["a.png", "c.png"]
    alone = cli("compress", "--fast", "-q", "a.png", "a.png", "-o", "one.vz", cwd=tmp_path)
    assert alone.returncode == 0 and lines_of(alone) == []  # -q: no warning
    result = cli("compress", "--fast", "--rm", "a.png", "a.png", "-o", "rm.vz", cwd=tmp_path)
    assert result.returncode == 0 and "a.png: named again: archived once" in lines_of(result)[0]
    assert (tmp_path / "rm.vz").read_bytes() == (tmp_path / "one.vz").read_bytes()
    assert not (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()  # its one image, checked, then gone


def test_pillows_warnings_name_their_file_in_its_turn_and_q_quiets_them(tmp_path):
    """A damaged part Pillow reads past (an EXIF block cut short) was warned of in lines that named no file, with -q
    too, and before a failure besides its one error line (from a QA pass): now `FILE: ...`, none with -q, and a file
    that fails has its error line only."""
    exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x05" + b"\x01\x0f\0\x02\0\0\0\x50\0\0\0\x80"
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "x.jpg", exif=exif)
    image(1).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "ok.tif")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:60])
    for jobs in ("1", "2"):
        result = cli("compress", "--fast", "-f", "-j", jobs, "a.png", "x.jpg", cwd=tmp_path)
        lines = lines_of(result)
        assert result.returncode == 0 and lines[:2] == [
            "vaezip: warning: x.jpg: Tag data larger than file. Skipping tag 271",
            "vaezip: warning: x.jpg: Corrupt EXIF data.  Expecting to read 12 bytes but only got 0."], lines
        assert len(lines) == 3 and lines[2].startswith("compressed 2 files")
        quiet = cli("compress", "--fast", "-f", "-q", "-j", jobs, "a.png", "x.jpg", cwd=tmp_path)
        assert quiet.returncode == 0 and lines_of(quiet) == []
    failed = cli("compress", "--fast", "cut.tif", cwd=tmp_path)
    assert failed.returncode == 1 and lines_of(failed) == [
        "vaezip: error: cut.tif: not a readable image (unknown or damaged format)"]


def test_a_name_that_is_not_utf8_is_said_to_be_stored_otherwise(tmp_path):
    """An archive stores names in UTF-8: a name's bytes that are not UTF-8 become U+FFFD there, and `decompress
    --dir` writes that name. Compress now says so (-q: not)."""
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    name = os.fsdecode(b"caf\xe9.png")
    try:
        image(2).save(tmp_path / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    image(4).save(tmp_path / "b.png")
    result = cli("compress", "--fast", name, "b.png", "-o", "all.vz", cwd=tmp_path)
    assert result.returncode == 0
    assert "vaezip: warning: caf\\udce9.png: its name is not UTF-8: the file stores it as caf\ufffd.png" in \
        lines_of(result), lines_of(result)
    assert [stored for stored, _ in decompress_images((tmp_path / "all.vz").read_bytes())] == ["caf\ufffd.png",
                                                                                              "b.png"]
    quiet = cli("compress", "--fast", "-q", "-f", name, "b.png", "-o", "all.vz", cwd=tmp_path)
    assert quiet.returncode == 0 and lines_of(quiet) == []
    plain = cli("compress", "--fast", "-f", "b.png", "-o", "b.vz", cwd=tmp_path)
    assert not any("UTF-8" in line for line in lines_of(plain))


def test_q_draws_no_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    """-q printed nothing but the progress bar, which a terminal still showed (from a QA pass); as zstd and xz, -q
    now draws none, compressing or decompressing. The bar is drawn where stderr is a terminal: one that says so."""
    from rich.console import Console

    import vaezip.cli

    image(5, (40, 36)).save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    for quiet in (True, False):
        drawn = {}
        for command, name in (("compress", "a.png"), ("decompress", "a.vz")):
            screen = io.StringIO()
            monkeypatch.setattr(vaezip.cli, "err", Console(file=screen, force_terminal=True, width=100))
            result = CliRunner().invoke(app, [command] + ["--fast"] * (command == "compress") + ["-f", name]
                                        + ["-q"] * quiet)
            assert result.exit_code == 0, result.output
            drawn[command] = "\u2501" in screen.getvalue()  # the bar's line
        assert drawn == {"compress": not quiet, "decompress": not quiet}, (quiet, drawn)


def test_c_writes_to_stdout_as_gzip_does(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / "a.png")
    packed = cli("compress", "-c", "a.png", "--fast", "-q", cwd=tmp_path)
    assert packed.returncode == 0 and packed.stdout[:8] == b"\x89.VZ\r\n\x1a\n"
    assert not (tmp_path / "a.vz").exists()
    back = cli("decompress", "-c", "-", cwd=tmp_path, input=packed.stdout)
    assert back.returncode == 0 and np.array_equal(np.asarray(Image.open(io.BytesIO(back.stdout))),
                                                   np.asarray(Image.open(tmp_path / "a.png")))
    refused = cli("compress", "-c", "-o", "b.vz", "a.png", cwd=tmp_path)
    assert refused.returncode == 2 and "-c writes to stdout: not with -o b.vz" in lines_of(refused)[0]


def test_a_stored_name_too_long_for_a_file_is_cut_and_a_failed_archive_leaves_none_of_its_images(tmp_path,
                                                                                              monkeypatch):
    """An archive made through the API may name an image beyond the file system's 255 bytes: --dir cuts it (at a
    character's end, room left for a number and the temporary it is written through). Where writing one image of
    an archive fails, the ones written before it are removed: a failure leaves no output file."""
    from vaezip.files import NAME_BYTES as _NAME_BYTES, png_file_name as _safe_name, png_file_names as _output_names

    long_name = "é" * 200 + ".png"  # 404 bytes
    cut = _safe_name(long_name)
    assert cut.endswith(".png") and len(cut.encode()) <= _NAME_BYTES and cut[:-4] == "é" * ((_NAME_BYTES - 4) // 2)
    assert len(_output_names([long_name, long_name])[1].encode()) <= 255 - len("..tmp-4194304")
    grey = Image.fromarray(np.zeros((4, 5), np.uint8))
    (tmp_path / "set.vz").write_bytes(compress_images([("first.png", grey), (long_name, grey)], fast=True).data)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["decompress", "set.vz", "-d", "out"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["first.png", cut])

    atomic_write, calls = files.atomic_write, []

    def fails_the_second(path, data, **options):
        calls.append(path)
        if len(calls) == 2:
            raise files.OutputError(f"{path.parent}: cannot write there (No space left on device)")
        atomic_write(path, data, **options)

    monkeypatch.setattr(files, "atomic_write", fails_the_second)
    result = CliRunner().invoke(app, ["decompress", "set.vz", "-d", "again"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    # said, and the folders the run made for them removed too (a review found both left in silence)
    assert "(the 1 of its images written before it removed)" in result.output, result.output
    assert len(calls) == 2 and not (tmp_path / "again").exists()
    # with --force, an image that replaced a file stays (what it replaced is gone either way)
    calls.clear()
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "first.png").write_bytes(b"an older file")
    result = CliRunner().invoke(app, ["decompress", "set.vz", "-d", "again", "--force"])
    assert result.exit_code == 1 and os.listdir(tmp_path / "again") == ["first.png"]
    assert "(1 written over files (--force) stay)" in result.output, result.output
    assert same_pixels(Image.open(tmp_path / "again" / "first.png"), grey)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no file size limits here")
def test_a_write_that_fails_names_its_file(tmp_path):
    """`ulimit -f`: the error said `set.vz: [Errno 27] File too large`, naming neither the image nor the folder."""
    import resource

    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    (tmp_path / "set.vz").write_bytes(compress_images([("a.png", grey.crop((0, 0, 8, 8))), ("big.png", grey)],
                                                      fast=True).data)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "vaezip", "decompress", "set.vz", "-d", "out/sub"], cwd=tmp_path,
                          capture_output=True, text=True, preexec_fn=small_files)
    assert done.returncode == 1 and "out/sub/big.png: cannot write it (File too large) (the 1 of its images " \
        "written before it removed)" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_file_is_read_in_what_it_holds_and_running_out_of_memory_is_one_line(tmp_path, monkeypatch):
    """read_input asked for the whole input limit at once (1 GiB: every command failed under `ulimit -v`); a
    limit far beyond the memory there is reads a small file all the same. A MemoryError is one line, exit 1."""
    (tmp_path / "small.bin").write_bytes(b"x" * 1000)
    assert files.read_input(str(tmp_path / "small.bin"), limit=1 << 45)[0] == b"x" * 1000
    image(1).save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(files, "read_input", no_memory)
    result = CliRunner().invoke(app, ["compress", "a.png", "--fast"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == "vaezip: error: a.png: out of memory (the image, or the limit on this process's " \
                                    "memory, too large)"
    assert not (tmp_path / "a.vz").exists()


def test_a_library_warning_is_shown_with_one_vaezip_prefix(capsys, monkeypatch):
    """The coder's warnings name vaezip for the API's readers; the CLI's line names it once, not twice."""
    from vaezip import cli as cli_module

    monkeypatch.delenv("VAEZIP_DEBUG", raising=False)
    cli_module._one_line_warning("vaezip: the compiled blend coder is off (test)", RuntimeWarning, "x.py", 1)
    cli_module._one_line_warning("photos: skipped 1 image file(s)", UserWarning, "x.py", 1)
    assert capsys.readouterr().err.splitlines() == ["vaezip: warning: the compiled blend coder is off (test)",
                                                    "vaezip: warning: photos: skipped 1 image file(s)"]


def _noise_png(path: Path, side: int = 600) -> Path:
    """Incompressible: its .vz is larger than a pipe's buffer (~1 MB), so a reader that stops early shows."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_output_to_a_reader_that_stops_early_ends_as_sigpipe_would_not_as_success(tmp_path):
    """A buffered write to a pipe closed part-way returned a short count and raised nothing: the command said it
    wrote all 1 MB and exited 0. Now 141 (gzip's status when SIGPIPE ends it), nothing on stderr, for the data
    and for reports alike (rich exited 1)."""
    _noise_png(tmp_path / "big.png")
    env = {**os.environ, "COLUMNS": "60"}
    for args in (["compress", "--fast", "-c", "big.png"], ["info", *["big.vz"] * 400]):
        if args[0] == "info":
            assert cli("compress", "--fast", "big.png", cwd=tmp_path).returncode == 0
        process = subprocess.Popen([sys.executable, "-m", "vaezip", *args], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert len(process.stdout.read(10)) == 10
        process.stdout.close()  # the reader goes away, as `| head -c 10` does
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=HANG_GUARD_S) == 141, (args[0], stderr)
        assert "Traceback" not in stderr and "error" not in stderr, stderr


def test_a_short_write_to_standard_output_is_an_error(tmp_path):
    """A file size limit (or a full disk) stops the write part-way: one line and exit 1, not success."""
    resource = pytest.importorskip("resource")
    _noise_png(tmp_path / "big.png")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    with open(tmp_path / "big.vz", "wb") as target:
        result = subprocess.run([sys.executable, "-m", "vaezip", "compress", "--fast", "-c", "big.png"],
                                cwd=tmp_path, stdout=target, stderr=subprocess.PIPE, timeout=HANG_GUARD_S,
                                preexec_fn=small_files)
    one_error(result, "big.png: standard output: cannot write all of", "File too large")


def test_a_closed_standard_output_or_error_is_no_failure_unless_the_data_goes_there(tmp_path):
    image(0).save(tmp_path / "a.png")

    def run(*args, closed: int):
        return subprocess.run([sys.executable, "-m", "vaezip", *args], cwd=tmp_path, capture_output=True,
                              timeout=HANG_GUARD_S, preexec_fn=lambda: os.close(closed))

    assert run("compress", "--fast", "a.png", closed=1).returncode == 0  # a traceback and exit 1 before
    assert decompress_images((tmp_path / "a.vz").read_bytes())[0][1].tobytes() == image(0).tobytes()
    assert run("compress", "--fast", "-f", "a.png", closed=2).returncode == 0
    result = run("compress", "--fast", "-c", "a.png", closed=1)
    one_error(result, "a.png: standard output is closed")
    one_error(run("info", "a.vz", closed=1), "a.vz: standard output is closed")  # its output is the point
    assert run("--version", closed=1).returncode == 0  # as any command whose output is no data


def test_a_closed_or_unreadable_standard_input_is_one_error(tmp_path):
    """'-' with stdin closed (`<&-`: sys.stdin is None) was a traceback; open for writing only (`0> file`) a raw
    errno. Each is one line and exit 1, and nothing is written."""
    image(0).save(tmp_path / "a.png")

    def run(*args, stdin=None):
        return subprocess.run([sys.executable, "-m", "vaezip", *args], cwd=tmp_path, capture_output=True,
                              timeout=HANG_GUARD_S, stdin=stdin, preexec_fn=None if stdin else lambda: os.close(0))

    for args in (("compress", "-", "-o", "x.vz"), ("decompress", "-", "-o", "x.png"), ("decompress", "-t", "-"),
                 ("info", "-")):
        one_error(run(*args), "-: standard input is closed")
        with open(tmp_path / "w.bin", "wb") as write_only:
            one_error(run(*args, stdin=write_only), "-: cannot read standard input (Bad file descriptor)")
        assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "w.bin"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_info_to_a_full_standard_output_blames_the_output(tmp_path):
    image(0).save(tmp_path / "a.png")
    assert subprocess.run([sys.executable, "-m", "vaezip", "compress", "--fast", "-q", "a.png"], cwd=tmp_path,
                          timeout=HANG_GUARD_S).returncode == 0
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "vaezip", "info", "a.vz"], cwd=tmp_path, stdout=full,
                                stderr=subprocess.PIPE, timeout=HANG_GUARD_S)
    one_error(result, "a.vz: standard output: cannot write (No space left on device)")


def test_an_empty_output_or_folder_name_is_a_usage_error(tmp_path):
    """-o '' said ': is a directory'; --dir '' and bench's or train's --out '' were taken for the current folder."""
    image(0).save(tmp_path / "a.png")
    for args, line in ((("compress", "a.png", "-o", ""), "-o '' names no file: give a file name, or '-' for stdout"),
                       (("decompress", "a.vz", "-o", ""), "-o '' names no file: give a file name, or '-' for stdout"),
                       (("decompress", "a.vz", "--dir", ""), "--dir '' names no folder: give one ('.' for the current "
                                                             "folder)"),
                       (("bench", ".", "-c", "png", "-o", ""), "--out '' names no folder: give one ('.' for the "
                                                               "current folder)"),
                       (("train", ".", "-o", "", "--steps", "1"), "--out '' names no folder: give one ('.' for the "
                                                                  "current folder)")):
        result = subprocess.run([sys.executable, "-m", "vaezip", *args], cwd=tmp_path, capture_output=True,
                                timeout=HANG_GUARD_S)
        assert result.returncode == 2 and lines_of(result) == [f"vaezip: error: {line}"], lines_of(result)
    assert [path.name for path in tmp_path.iterdir()] == ["a.png"]


def test_a_missing_input_fails_alone_whatever_its_name(tmp_path):
    """An audit: `decompress good.vz nosuch.png` said 'nosuch.png: this output would overwrite the input' and did
    nothing (a missing input's output named as itself); `compress nosuch.vz` said it was already a .vz file."""
    image(0).save(tmp_path / "a.png")
    assert subprocess.run([sys.executable, "-m", "vaezip", "compress", "--fast", "-q", "a.png"], cwd=tmp_path,
                          timeout=HANG_GUARD_S).returncode == 0
    (tmp_path / "a.png").unlink()
    for args, missing in ((("decompress", "a.vz", "nosuch.png"), "nosuch.png"),
                          (("compress", "nosuch.vz"), "nosuch.vz")):
        result = subprocess.run([sys.executable, "-m", "vaezip", *args], cwd=tmp_path, capture_output=True,
                                timeout=HANG_GUARD_S)
        assert result.returncode == 1 and f"vaezip: error: {missing}: no such file" in lines_of(result), \
            lines_of(result)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "a.vz"]  # a.vz's image written


# A Ctrl-C at any moment: while the command line's modules load (the entry point's guard), while typer parses the
# command line (it exits 130 without a word), or before the app runs. Each stands in for the signal where it lands.
INTERRUPTED_AT = {
    "import": "import builtins; real = builtins.__import__\n"
              "def imported(name, *args, **kwargs):\n"
              "    if name == 'vaezip.cli': raise KeyboardInterrupt\n"
              "    return real(name, *args, **kwargs)\n"
              "builtins.__import__ = imported\n"
              "from vaezip.command import main; main()",
    "typer": "import vaezip.cli as cli\n"
             "def app(**kwargs): raise SystemExit(130)\n"
             "cli.app = app; cli.main()",
    "before the app": "import vaezip.cli as cli\n"
                      "def app(**kwargs): raise KeyboardInterrupt\n"
                      "cli.app = app; cli.main()",
}


@pytest.mark.parametrize("where", INTERRUPTED_AT)
def test_a_ctrl_c_before_the_command_runs_is_one_line_and_exit_130(where):
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_AT[where]], capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 130 and lines_of(result) == ["vaezip: interrupted"], (result.returncode,
                                                                                       result.stderr)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_a_second_sigterm_does_not_cut_the_first_ones_clean_up_short():
    """`timeout` signals the process and its group: the second SIGTERM raised again inside the clean-up of the
    first (workers left running, `vaezip: terminated` twice)."""
    cleaned = False
    with pytest.raises(files.Terminated):
        with files.signals_as_exceptions():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs between bytecodes: soon
                    time.sleep(0.001)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # the second, during the clean-up
                for _ in range(100):
                    time.sleep(0.001)
                cleaned = True
    assert cleaned


def _swallowed_sigterm() -> None:
    """A SIGTERM whose Terminated is lost, as C code run by an import loses it (compile(), a Cython module's set-up)."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            time.sleep(0.001)
    except files.Terminated:
        pass


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_whose_exception_was_swallowed_still_ends_the_command_with_no_output(tmp_path):
    """Where an import's C code swallowed the exception of a SIGTERM that came early, the command wrote its output and
    exited 0, and a second SIGTERM was ignored too (from a QA pass): now no output is put in place, the command
    exits as the signal asks, and a later signal raises again."""
    with pytest.raises(files.Terminated):
        with files.signals_as_exceptions():
            _swallowed_sigterm()
            files.atomic_write(tmp_path / "out.vz", b"data", overwrite=False)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary
    with pytest.raises(files.Terminated) as ended:
        with files.signals_as_exceptions():
            _swallowed_sigterm()  # and the command ends as if nothing had come: a test, an info
    assert ended.value.exit_code == 128 + signal.SIGTERM
    with pytest.raises(files.Terminated):
        with files.signals_as_exceptions():
            _swallowed_sigterm()
            raise SystemExit(0)  # the command's own exit (typer.Exit): the signal's code instead
    second = []
    with pytest.raises(files.Terminated):
        with files.signals_as_exceptions():
            _swallowed_sigterm()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    time.sleep(0.001)
            except files.Terminated:
                second.append(True)
                raise
    assert second == [True]
    files.atomic_write(tmp_path / "after.vz", b"data", overwrite=False)  # outside the block: nothing kept
    assert (tmp_path / "after.vz").read_bytes() == b"data"


def test_the_help_to_a_reader_that_stops_or_a_full_disk_is_no_traceback(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "vaezip", "compress", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "60"})
    process.stdout.close()  # before the help is written (smaller than a pipe's buffer, it would all fit)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=HANG_GUARD_S) == 141 and stderr == "", stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "vaezip", "--help"], stdout=full, stderr=subprocess.PIPE,
                                    timeout=HANG_GUARD_S)
        one_error(result, "cannot write (No space left on device)")


def test_a_name_the_system_refuses_is_said_in_its_words_not_pythons(tmp_path):
    """A .vz of a 252-character stem (255 with `.vz`) decompresses to a name one too long: the error read
    `[Errno 36] File name too long: '....png'`. Now `NAME.vz: NAME.png: File name too long`, nothing written."""
    stem = "a" * 252
    try:
        (tmp_path / f"{stem}.vz").write_bytes(compress_images([("a.png", image(1))], fast=True).data)
    except OSError:
        pytest.skip("this file system holds no 255-byte names")
    result = cli("decompress", f"{stem}.vz", cwd=tmp_path)
    line = one_error(result, f"{stem}.vz: {stem}.png: ")
    assert "Errno" not in line and "'" not in line, line
    assert sorted(os.listdir(tmp_path)) == [f"{stem}.vz"]
    image(1).save(tmp_path / "a.png")
    one_error(cli("compress", "--fast", "a.png", "-o", f"{stem}.png.vz", cwd=tmp_path),
              f"a.png: {stem}.png.vz: File name too long")
    assert sorted(os.listdir(tmp_path)) == sorted([f"{stem}.vz", "a.png"])


def test_an_error_of_two_names_says_which_way():
    """A rename's error names its source and target: `A: B: ...` read as if B were inside A."""
    from vaezip.cli import _error_message

    assert _error_message(FileNotFoundError(2, "No such file or directory", "a.tmp", None, "b.png")) == \
        "a.tmp -> b.png: No such file or directory"
    assert _error_message(OSError(5, "Input/output error")) == "Input/output error"
    assert _error_message(OSError(9, "Bad file descriptor", 3)) == "Bad file descriptor"  # a descriptor: no name
