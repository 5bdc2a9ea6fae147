"""`vaezip bench`: folders of PNGs, untrained tiny models, classical and vaezip rows, report files.

Runs in-process (typer's CliRunner) and needs no ../shared/data and no shipped model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vaezip.bench import available_codecs, read_csv
from vaezip.bench.report import have_matplotlib
from vaezip.bench.suite import DEFAULT_CODECS, DEFAULT_LIMITS, DEFAULT_SETS, parse_codecs
from vaezip.cli import app

runner = CliRunner()
AVAILABLE = {n for n, ok in available_codecs().items() if ok}  # png at least (Pillow); the rest: bench extra
CHARTS = ("bpsp_bars.png", "scatter_vaezip.png") if have_matplotlib() else ()


def _images(folder, channels, sizes, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for k, (h, w) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w]
        a = (x * 5 + y * 3)[..., None] + np.arange(channels) * 50 + rng.integers(0, 6, (h, w, channels))
        a = (a % 256).astype(np.uint8)
        Image.fromarray(a[..., 0] if channels == 1 else a).save(folder / f"img{k}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data")
    return {
        "rgb": _images(root / "rgb", 3, [(16, 16), (16, 16), (12, 20)]),
        "grey": _images(root / "grey", 1, [(16, 16), (8, 24)], seed=1),
    }


@pytest.fixture()
def no_zoo(tmp_path, monkeypatch):
    """No shipped model installed (whatever pretrained/ holds right now)."""
    from vaezip import zoo

    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "missing-manifest.json")


def _bench(*args):
    result = runner.invoke(app, ["bench", *map(str, args)])
    return result


def test_bench_writes_report_with_vaezip_and_classical_rows(tmp_path, folders, tiny_weights):
    out = tmp_path / "out"
    result = _bench(folders["rgb"], folders["grey"], "--model", tiny_weights[3], "--model", tiny_weights[1],
                    "--codecs", "png,jpegls", "--codecs", "vaezip", "-c", "vaezip-archive", "--out", out)
    assert result.exit_code == 0, result.output
    classical = {"png", "jpegls"} & AVAILABLE
    for name in ("results.csv", "summary.csv", "results.md", *CHARTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_csv(out / "results.csv")
    for ds, n in (("rgb", 3), ("grey", 2)):
        mine = [r for r in rows if r.dataset == ds]
        assert {r.codec for r in mine} == classical | {"vaezip", "vaezip-archive"}
        for codec in (*classical, "vaezip"):
            rs = [r for r in mine if r.codec == codec]
            assert len(rs) == n and all(r.roundtrip_ok and r.bytes > 0 for r in rs), rs
        vz = [r for r in mine if r.codec == "vaezip"]
        assert all(math.isfinite(r.bound_bpsp) and r.bound_bpsp > 0 for r in vz)
        assert all(r.bpsp == pytest.approx(8 * r.bytes / r.subpixels) for r in vz)
        assert all(math.isnan(r.bound_bpsp) for r in mine if r.codec in classical)
        (arc,) = [r for r in mine if r.codec == "vaezip-archive"]
        assert arc.roundtrip_ok and arc.index == -1 and math.isfinite(arc.bound_bpsp)
        assert arc.subpixels == sum(r.subpixels for r in vz)
        assert arc.bpsp == pytest.approx(8 * arc.bytes / arc.subpixels)
    import csv

    with open(out / "summary.csv", newline="") as file:  # an archive's row counts the images it holds
        counted = {(row["dataset"], row["codec"]): int(row["images"]) for row in csv.DictReader(file)}
    assert counted[("rgb", "vaezip-archive")] == 3 and counted[("grey", "vaezip-archive")] == 2, counted
    md = (out / "results.md").read_text()
    assert "Rate bounds" in md and "vaezip-archive" in md and "tiny-rgb" in md and "tiny-grey" in md
    assert "vaezip bench" in md and "--codecs" in md  # the exact command
    assert "torch" in md and "total wall time" in md and "default limits" in md
    assert "vaezip" in result.stdout and "results.md" in result.stdout


def test_bench_model_path_codec_forces_the_model(tmp_path, folders, tiny_weights):
    """vaezip-model codes every image through the model (no classical path): with the untrained tiny model
    its files are larger than vaezip's, which keeps the classical coding where it is smaller; both decode."""
    out = tmp_path / "out"
    result = _bench(folders["rgb"], "-m", tiny_weights[3], "-c", "vaezip,vaezip-model", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "results.csv")
    plain = {r.index: r for r in rows if r.codec == "vaezip"}
    forced = {r.index: r for r in rows if r.codec == "vaezip-model"}
    assert plain and plain.keys() == forced.keys()
    assert all(r.roundtrip_ok for r in [*plain.values(), *forced.values()])
    assert all(forced[i].bytes > plain[i].bytes for i in plain)
    assert "classical=False" in (out / "results.md").read_text()


def test_bench_limit_and_default_codecs(tmp_path, folders, tiny_weights):
    out = tmp_path / "out"
    result = _bench(folders["rgb"], "-m", tiny_weights[3], "--limit", "1", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "results.csv")
    per_image = [r for r in rows if r.codec != "vaezip-archive"]
    assert {r.image for r in per_image} == {"img0.png"}
    # one image: the archive would be the vaezip file itself, so it is not coded twice
    assert {r.codec for r in rows} == {n for n in DEFAULT_CODECS if n in AVAILABLE or n == "vaezip"}
    assert "no vaezip-archive row for rgb" in (out / "results.md").read_text()
    assert all(r.roundtrip_ok for r in rows), [r.error for r in rows if not r.roundtrip_ok]


def test_classical_only_needs_no_model(tmp_path, folders, no_zoo):
    out = tmp_path / "out"
    result = _bench(folders["grey"], "--codecs", "classical", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "results.csv")
    assert rows and not any(r.codec.startswith("vaezip") for r in rows)
    assert (out / "results.md").is_file()


def test_missing_default_model_is_one_line(tmp_path, folders, no_zoo):
    result = _bench(folders["rgb"], "--codecs", "vaezip", "--out", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaezip: error:") and "--model" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["no-such-data-set"], "unknown data set"),
    (["--codecs", "gif"], "unknown codec"),
])
def test_user_errors_are_one_line(tmp_path, folders, args, message):
    if args[0] == "--codecs":
        args = [str(folders["rgb"]), *args]
    result = _bench(*args, "--out", tmp_path / "out")
    assert result.exit_code == (2 if "--codecs" in args else 1)  # a bad option value is a usage error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_two_models_for_one_mode_is_an_error(tmp_path, folders, tiny_weights):
    result = _bench(folders["rgb"], "-m", tiny_weights[3], "-m", tiny_weights[3], "--out", tmp_path / "o")
    assert result.exit_code == 1 and "two --model" in result.stderr


def test_defaults_are_consistent():
    assert set(DEFAULT_SETS) <= set(DEFAULT_LIMITS)
    assert parse_codecs(None) == list(DEFAULT_CODECS)
    assert parse_codecs(["png, qoi", "png", "vaezip"]) == ["png", "qoi", "vaezip"]
    assert "webp-q75" in parse_codecs(["all"]) and "vaezip-archive" in parse_codecs(["all"])
    with pytest.raises(ValueError, match="unknown codec"):
        parse_codecs(["png,nope"])
    result = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    help_text = " ".join(result.stdout.split())
    for name in DEFAULT_SETS:
        assert name in help_text


def test_a_folder_benched_twice_into_itself_measures_its_images_only_and_the_report_is_replaced(tmp_path, folders,
                                                                                               monkeypatch):
    """`vaezip bench .` writes bench-results/ inside the folder: a second run measured its charts too; and a report
    folder kept the last run's charts beside the new tables (a review found both)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(folders["rgb"], work)
    monkeypatch.chdir(work)
    for codecs, force in (("png,webp", ()), ("png,webp", ("--force",)), ("png", ("-f",))):
        result = _bench(".", "-c", codecs, *force)
        assert result.exit_code == 0, result.stderr
        assert ".: 3 images (all)" in result.stderr, result.stderr
    rows = read_csv(work / "bench-results" / "results.csv")
    assert {row.image for row in rows} == {"img0.png", "img1.png", "img2.png"} and {row.codec for row in rows} == {
        "png"}
    assert not list((work / "bench-results").glob("scatter_webp.png"))
    assert not list((work / "bench-results").glob(".partial-*"))


def test_bench_says_what_reading_changed_and_names_sets_apart(tmp_path, folders):
    """The loader gives every codec grey or RGB samples: a grey image among colour ones (repeated into RGB) or an
    RGBA one (its alpha dropped) is named in a warning and the report's notes; two folders of one name are two
    columns; an archive's row counts its images."""
    mixed = tmp_path / "a" / "set"
    mixed.mkdir(parents=True)
    for name in ("img0.png", "img1.png"):
        (mixed / name).write_bytes((folders["rgb"] / name).read_bytes())
    (mixed / "grey.png").write_bytes((folders["grey"] / "img0.png").read_bytes())
    Image.fromarray(np.full((8, 8, 4), 90, np.uint8)).save(mixed / "alpha.png")
    other = tmp_path / "b" / "set"
    other.mkdir(parents=True)
    (other / "x.png").write_bytes((folders["rgb"] / "img2.png").read_bytes())
    result = _bench(mixed, other, "-c", "png", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert f"vaezip: warning: {mixed}: grey repeated into RGB: grey.png (1 of 4)" in result.stderr, result.stderr
    assert f"{mixed}: alpha dropped: alpha.png (1 of 4)" in result.stderr
    notes = (tmp_path / "out" / "results.md").read_text()
    assert "grey repeated into RGB: grey.png (1 of 4)" in notes
    assert {row.dataset for row in read_csv(tmp_path / "out" / "results.csv")} == {str(mixed), str(other)}


def test_bench_refuses_an_out_inside_a_file_before_the_run(tmp_path, folders):
    (tmp_path / "file.png").write_bytes(b"x")
    result = _bench(folders["rgb"], "-c", "png", "--out", tmp_path / "file.png" / "sub")
    assert result.exit_code == 1 and result.stderr.startswith("vaezip: error: --out ") and "not a folder" in \
        result.stderr, result.stderr
    assert f"{folders['rgb'].name}: 3 images" not in result.stderr  # refused before loading anything


def test_bench_refuses_a_model_that_no_codec_of_its_uses(tmp_path, folders):
    """-m with only classical codecs was taken without a word, a mistyped name too (QA): a usage error, before any
    work; with a vaezip codec an unknown name is refused as before."""
    result = _bench(folders["rgb"], "-m", "nosuch", "-c", "png,webp", "--out", tmp_path / "r")
    assert result.exit_code == 2 and result.stderr == (
        "vaezip: error: --model applies to vaezip's codecs (vaezip, vaezip-archive, vaezip-model, vaezip-fast), and "
        "-c names none of them\n"), result.stderr
    assert not (tmp_path / "r").exists()
    result = _bench(folders["rgb"], "-m", "nosuch", "-c", "png,vaezip-fast", "--out", tmp_path / "r")
    assert result.exit_code == 1 and "no model 'nosuch'" in result.stderr, result.stderr


def test_eval_says_when_it_converts_the_images_and_refuses_a_batch_of_none(tmp_path, folders, tiny_weights):
    """A grey folder under a colour model is evaluated as grey repeated into RGB: per subpixel of those (a third of
    a figure per grey subpixel), so a warning says so; --batch-size 0 was a Python error, -1 "no images"."""
    result = runner.invoke(app, ["eval", str(tiny_weights[3]), str(folders["grey"])])
    assert result.exit_code == 0, result.stderr
    assert "vaezip: warning: grey: grey repeated into RGB" in result.stderr, result.stderr
    for flag, size in (("--batch-size", "0"), ("--batch-size", "-1"), ("--limit", "0")):
        refused = runner.invoke(app, ["eval", str(tiny_weights[3]), str(folders["rgb"]), flag, size])
        assert refused.exit_code == 2 and refused.stderr == f"vaezip: error: {flag} must be at least 1, not {size}\n", \
            refused.output  # one line, not typer's usage box
    # a --tile the model cuts otherwise (to a multiple of its stride) is said, not rounded in silence
    from vaezip.api import load_model

    stride = load_model(tiny_weights[3]).model.config.stride
    rounded = runner.invoke(app, ["eval", str(tiny_weights[3]), str(folders["rgb"]), "--tile", str(stride + 1)])
    assert rounded.exit_code == 0 and f"--tile {stride + 1}: " in rounded.stderr, rounded.stderr
    assert f"multiple of its stride {stride}: tiles of {stride}" in rounded.stderr


def test_eval_of_images_of_several_sizes_gives_each_groups_scale_and_mean_dims(tiny_weights):
    """The latent grid and the dims per image were the first batch's: for images of several sizes the table now
    gives each group's scale and its mean dims per image."""
    from vaezip.api import load_model
    from vaezip.evaluate import _group_shapes, evaluate

    model = load_model(tiny_weights[3]).model
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((16, 16, 3), (32, 16, 3))]
    result = evaluate(model, images, batch_size=1)
    each = [_group_shapes(model, image.shape[0], image.shape[1]) for image in images]
    for group, small, large in zip(result.groups, *each):
        assert group.resolution == f"1/{16 // small[1]}", group
        assert group.latent_dims == round((small[3] + large[3]) / 2), group
    alike = evaluate(model, images[:1] * 2, batch_size=1)
    assert [group.resolution for group in alike.groups] == [f"{h}x{w}" for _, h, w, _ in each[0]]


def test_bench_replaces_a_report_only_with_force(tmp_path, folders):
    """A folder that holds a report (or a chart named like one) is refused before the run, its files untouched;
    --force replaces the report and drops the charts this run did not draw."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    (out / "scatter_holiday.png").write_text("x")
    (out / "other.txt").write_text("kept")
    result = _bench(folders["rgb"], "-c", "png", "--out", out)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"vaezip: error: {out}: holds a report already (results.md, scatter_holiday.png); --force replaces it, or "
        f"choose another --out"]
    assert (out / "results.md").read_text() == "my notes" and (out / "scatter_holiday.png").exists()
    result = _bench(folders["rgb"], "-c", "png", "--out", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert "my notes" not in (out / "results.md").read_text() and not (out / "scatter_holiday.png").exists()
    assert (out / "other.txt").read_text() == "kept"
    assert "--force" in (out / "results.md").read_text()  # the command that made it, as given


def test_bench_of_classical_codecs_names_what_it_passed_over_and_imports_no_torch(tmp_path, folders):
    """Classical codecs alone need no model: the run imports no torch (its report used to, for a thread count).
    A file the loader passes over is named in the report, which no longer says "all images"."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / "set"
    shutil.copytree(folders["rgb"], work)
    Image.fromarray(np.zeros((4, 4), np.uint16) + 300).save(work / "deep.png")  # 16-bit: passed over
    script = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
              f"result = CliRunner().invoke(app, ['bench', {str(work)!r}, '-c', 'png', '-o', {str(tmp_path / 'o')!r}]);"
              " print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["0", "False"], (done.stdout, done.stderr)
    report = (tmp_path / "o" / "results.md").read_text()
    assert "3 images (all images it could read;" in report, report
    assert "set: 1 file(s) passed over, measured by no codec: deep.png (not 8-bit)" in report, report


def test_bench_of_vaezip_fast_reads_no_weights_and_imports_no_torch(tmp_path, folders):
    """vaezip-fast runs no network: a shipped model's identity is all it needs (its name, sha256 and stride), as
    `compress --fast` needs; the files decode and the report names the model."""
    import subprocess
    import sys

    script = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
              f"result = CliRunner().invoke(app, ['bench', {str(folders['rgb'])!r}, '-c', 'vaezip-fast,png', '-o', "
              f"{str(tmp_path / 'o')!r}]); print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["0", "False"], (done.stdout, done.stderr)
    rows = read_csv(tmp_path / "o" / "results.csv")
    assert {row.codec for row in rows} == {"png", "vaezip-fast"} and all(row.roundtrip_ok for row in rows)
    assert "model='photo2'" in (tmp_path / "o" / "results.md").read_text()


def test_bench_refuses_what_made_an_empty_or_doubled_report_or_failed_after_the_run(tmp_path, folders, monkeypatch):
    """A review: a data set given twice was measured twice in one column; with no codec available here the run
    wrote an empty report and exit 0; a dangling link as --out, or a folder named like a report file in it, failed
    after the whole run (the report half replaced)."""
    twice = _bench(folders["rgb"], folders["rgb"], "-c", "png", "--out", tmp_path / "a")
    assert twice.exit_code == 2 and "given twice" in twice.output, twice.output
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    dangling = _bench(folders["rgb"], "-c", "png", "--out", tmp_path / "dangling")
    assert dangling.exit_code == 1 and "a link to nothing" in dangling.stderr, dangling.stderr
    (tmp_path / "b" / "results.md").mkdir(parents=True)
    folder = _bench(folders["rgb"], "-c", "png", "--out", tmp_path / "b", "--force")
    assert folder.exit_code == 1 and "a folder where the report has a file" in folder.stderr, folder.stderr
    assert f"{folders['rgb'].name}: 3 images" not in folder.stderr  # refused before loading anything
    from vaezip.bench import suite

    monkeypatch.setattr(suite, "get_codecs", lambda names: [])  # as where imagecodecs is not installed
    nothing = _bench(folders["rgb"], "-c", "webp", "--out", tmp_path / "c")
    assert nothing.exit_code == 1 and "no codec to run: webp is not available here" in nothing.stderr, \
        nothing.stderr
    assert not (tmp_path / "c" / "results.md").exists()
