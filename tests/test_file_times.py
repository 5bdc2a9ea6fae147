"""Outputs take their input's modification time and permissions, as gzip's, xz's and zstd's do: a photograph
compressed with --rm and decompressed again keeps its date, by which file managers sort photographs."""

from __future__ import annotations

import os
import stat

import pytest
from PIL import Image

from conftest import run_cli, smooth_rgb

OLD = 981173106_123456789  # 2001-02-03, in nanoseconds


@pytest.mark.skipif(os.name != "posix", reason="permission bits as POSIX has them")
def test_a_round_trip_keeps_the_image_s_time_and_permissions(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(smooth_rgb(24, 32, 4)).save(image)
    os.chmod(image, 0o640)
    os.utime(image, ns=(OLD, OLD))
    assert run_cli("compress", image, "--rm", "--fast").returncode == 0
    packed = os.stat(tmp_path / "photo.vz")
    assert packed.st_mtime_ns == OLD and stat.S_IMODE(packed.st_mode) == 0o640
    assert run_cli("decompress", tmp_path / "photo.vz", "--rm").returncode == 0
    back = os.stat(image)
    assert back.st_mtime_ns == OLD and stat.S_IMODE(back.st_mode) == 0o640


def test_an_archive_of_several_images_has_its_own_time_and_its_images_the_archive_s(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(smooth_rgb(16, 16, len(name))).save(tmp_path / name)
        os.utime(tmp_path / name, ns=(OLD, OLD))
    assert run_cli("compress", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "set.vz",
                   "--fast").returncode == 0
    assert os.stat(tmp_path / "set.vz").st_mtime_ns != OLD  # made now, from two files
    os.utime(tmp_path / "set.vz", ns=(OLD + 10**9, OLD + 10**9))
    assert run_cli("decompress", tmp_path / "set.vz", "--dir", tmp_path / "out").returncode == 0
    assert [os.stat(tmp_path / "out" / name).st_mtime_ns for name in ("a.png", "b.png")] == [OLD + 10**9] * 2


def test_an_input_from_stdin_has_no_times_to_give(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(smooth_rgb(16, 16, 1)).save(png)
    os.utime(png, ns=(OLD, OLD))
    result = run_cli("compress", "-", "-o", tmp_path / "a.vz", "--fast", input=png.read_bytes())
    assert result.returncode == 0 and os.stat(tmp_path / "a.vz").st_mtime_ns != OLD


def test_rm_keeps_an_input_smaller_than_its_output_and_says_so(tmp_path):
    """A JPEG's decoded pixels take more room than the JPEG: replacing it by its .vz would only cost room."""
    Image.fromarray(smooth_rgb(64, 96, 7)).save(tmp_path / "photo.jpg", quality=80)
    result = run_cli("compress", tmp_path / "photo.jpg", "--rm", "--fast")
    assert result.returncode == 0
    assert (tmp_path / "photo.jpg").exists() and (tmp_path / "photo.vz").exists()
    assert os.path.getsize(tmp_path / "photo.vz") > os.path.getsize(tmp_path / "photo.jpg")
    assert "warning: " in result.stderr.decode() and "a JPEG's decoded pixels take more room than the JPEG; " \
        "the input is kept (--rm)" in result.stderr.decode()
    quiet = run_cli("compress", tmp_path / "photo.jpg", "--rm", "--fast", "-q", "-f")
    assert quiet.returncode == 0 and quiet.stderr == b"" and (tmp_path / "photo.jpg").exists()


def test_rm_keeps_inputs_smaller_together_than_their_archive(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(smooth_rgb(48, 64, len(name))).save(tmp_path / name, quality=70)
    result = run_cli("compress", tmp_path / "a.jpg", tmp_path / "b.jpg", "-o", tmp_path / "set.vz", "--rm", "--fast")
    assert result.returncode == 0 and (tmp_path / "a.jpg").exists() and (tmp_path / "b.jpg").exists()
    assert "is larger than its 2 inputs" in result.stderr.decode() and "the inputs are kept (--rm)" in \
        result.stderr.decode()


def test_rm_counts_stdin_among_an_archive_s_inputs(tmp_path):
    Image.fromarray(smooth_rgb(48, 64, 3)).save(tmp_path / "a.jpg", quality=70)
    buffer = __import__("io").BytesIO()
    Image.fromarray(smooth_rgb(40, 40, 5)).save(buffer, format="JPEG", quality=70)
    result = run_cli("compress", tmp_path / "a.jpg", "-", "-o", tmp_path / "set.vz", "--rm", "--fast",
                     input=buffer.getvalue())
    assert result.returncode == 0 and (tmp_path / "a.jpg").exists(), result.stderr
    assert "is larger than its 2 inputs" in result.stderr.decode()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="giving a file to another user takes root")
def test_as_root_an_output_goes_to_its_input_s_owner_who_can_read_it(tmp_path):
    """Root compressing a user's 0600 image: the .vz is the user's (gzip's way), not root's with the user's 0600; an
    input its owner cannot read (0244) still gives an output its owner can read (0644)."""
    image = tmp_path / "mine.png"
    Image.fromarray(smooth_rgb(16, 16, 2)).save(image)
    os.chown(image, 65534, 65534)
    os.chmod(image, 0o600)
    assert run_cli("compress", image, "--fast").returncode == 0
    packed = os.stat(tmp_path / "mine.vz")
    assert (packed.st_uid, packed.st_gid, stat.S_IMODE(packed.st_mode)) == (65534, 65534, 0o600)
    os.chmod(image, 0o244)
    assert run_cli("compress", image, "--fast", "-f", "--verify").returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "mine.vz").st_mode) == 0o644


@pytest.mark.skipif(os.name != "posix", reason="permission bits as POSIX has them")
def test_an_output_is_never_readable_by_others_before_it_takes_its_input_s_bits(tmp_path, monkeypatch):
    """The temporary was made 0666 (less the umask) and written before it took an owner-only input's 0600:
    another user could open it meanwhile and read on (a review). It is 0600 until then."""
    from vaezip import files

    seen = []
    take = files._take_attributes

    def recorded(fd, like):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        take(fd, like)

    monkeypatch.setattr(files, "_take_attributes", recorded)
    source = tmp_path / "private.png"
    source.write_bytes(b"x")
    os.chmod(source, 0o600)
    previous = os.umask(0o022)
    try:
        files.atomic_write(tmp_path / "out.vz", b"secret" * 1000, overwrite=False, like=os.stat(source))
    finally:
        os.umask(previous)
    assert seen == [0o600] and stat.S_IMODE(os.stat(tmp_path / "out.vz").st_mode) == 0o600
