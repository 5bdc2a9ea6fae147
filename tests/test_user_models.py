"""User models: `vaezip export RUN --name NAME` installs a run's weights into the user model directory
($VAEZIP_MODELS here, a tmp folder), `vaezip models` lists them, and `compress -m NAME` / `decompress` find
them by name and sha256 in a fresh process, as they do shipped models. Tiny untrained models only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import run_cli
from vaezip import zoo
from vaezip.cli import app
from vaezip.config import get_preset
from vaezip.train import train

OVERRIDES = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
runner = CliRunner()


def p_duplicates(size: int = 24, seed: int = 20) -> Image.Image:
    """A P image whose palette repeats a colour, indices i.i.d. 0.6 / 0.25 / 0.1 / 0.05: the model path codes it
    below PNG and WebP even with an untrained model, so its file names the model."""
    draws = np.random.default_rng(seed).integers(0, 20, (size, size))
    image = Image.fromarray(((draws >= 12).astype(np.uint8) + (draws >= 17) + (draws >= 19)).astype(np.uint8), "P")
    image.putpalette([10, 20, 30, 10, 20, 30, 200, 0, 0, 0, 0, 255])
    return image


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """Two tiny colour runs (different seeds: different weights) of two steps each."""
    folder = tmp_path_factory.mktemp("runs")
    x = np.random.default_rng(0).integers(90, 160, size=(40, 8, 8, 3), dtype=np.uint8)
    np.savez(folder / "colour.npz", x=x)
    made = {}
    for key, seed in (("a", 0), ("b", 1)):
        train(folder / key, str(folder / "colour.npz"), get_preset("tiny"), steps=2,
              train_overrides={**OVERRIDES, "seed": seed})
        made[key] = str(folder / key)
    return made


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("VAEZIP_MODELS", str(folder))
    return folder


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def files(folder) -> list[str]:
    """The user model directory's files but its lock file."""
    return sorted(path.name for path in folder.iterdir() if path.name != zoo.USER_MANIFEST_LOCK_NAME)


def one_error(result, *fragments: str, code: int = 1) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("vaezip: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_the_default_folder_follows_xdg_and_the_variable_wins(monkeypatch, tmp_path):
    monkeypatch.delenv("VAEZIP_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert zoo.user_models_dir() == tmp_path / "data" / "vaezip" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: a relative path is invalid
    assert zoo.user_models_dir() == zoo.Path.home() / ".local" / "share" / "vaezip" / "models"
    monkeypatch.setenv("VAEZIP_MODELS", str(tmp_path / "mine"))
    assert zoo.user_models_dir() == tmp_path / "mine"


def test_export_name_installs_and_models_lists_it(runs, models_dir):
    result = invoke("export", runs["a"], "--name", "mine")
    assert result.exit_code == 0, result.stderr
    data = json.loads((models_dir / "manifest.json").read_text())
    entry = data["models"]["mine"]
    weights = models_dir / entry["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry["sha256"]
    assert entry["channels"] == 3 and entry["steps"] == 2 and "figures" in entry
    assert "installed user model 'mine'" in result.stdout and "-m mine" in result.stdout

    listed = invoke("models")
    assert listed.exit_code == 0, listed.stderr
    # Not a terminal: one tab-separated line per model, under a header line.
    lines = [line.split("\t") for line in listed.stdout.splitlines() if "\t" in line]
    assert lines[0] == ["name", "kind", "channels", "default for", "trained on", "figures", "file"]
    rows = {cells[0]: "\t".join(cells) for cells in lines[1:] if len(cells) == len(lines[0])}
    assert "user" in rows["mine"] and "validation bound" in rows["mine"]
    for name in zoo.manifest()["models"]:
        assert "shipped" in rows[name]
    assert str(models_dir) in listed.stdout

    # `export RUN OUT` still writes a file and installs nothing
    assert invoke("export", runs["b"], models_dir.parent / "b.safetensors", "--name", "other").exit_code == 0
    assert set(zoo.user_models()) == {"mine"}


def test_compress_and_decompress_by_name_in_fresh_processes(runs, models_dir, tmp_path):
    from vaezip.api import compress_images, load_model, read_header

    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    # A file whose image the model codes, tiles after the first through bits-back (a file whose every tile went
    # without the model, a palette image's indices among them, decodes without it).
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    result = compress_images([("dup.png", image)], load_model("mine"), device="cpu", classical=False,
                             predictor=False)
    assert result.model == "mine" and any(kind == "bitsback" for kind, _ in read_header(result.data).coder.schedule)
    (tmp_path / "dup.vz").write_bytes(result.data)
    p_duplicates().save(tmp_path / "dup.png")  # what the CLI codes by the model's name
    env = {"VAEZIP_MODELS": str(models_dir)}
    made = run_cli("compress", "dup.png", "-m", "mine", "-o", "cli.vz", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    decoded = run_cli("decompress", "dup.vz", "-o", "back.png", cwd=tmp_path, env=env)
    assert decoded.returncode == 0, decoded.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(image))

    # Without the user model installed, the file names what it needs.
    missing = run_cli("decompress", "dup.vz", "-o", "none.png", cwd=tmp_path,
                      env={"VAEZIP_MODELS": str(tmp_path / "empty")})
    message = missing.stderr.decode()
    assert missing.returncode == 1 and "'mine'" in message and "not installed" in message, message
    assert "Traceback" not in message and not (tmp_path / "none.png").exists()


def test_names_that_shadow_shipped_models_or_look_like_paths_are_refused(runs, models_dir):
    shipped = next(iter(zoo.manifest()["models"]), None)
    if shipped is not None:
        one_error(invoke("export", runs["a"], "--name", shipped), "shipped model")
        one_error(invoke("export", runs["a"], "--name", shipped.upper()), "shipped model")
    for bad in ("../up", "a/b", "mine.safetensors", "-x", "", "x" * 65, "caf\u00e9"):
        one_error(invoke("export", runs["a"], f"--name={bad}"))
    assert not (models_dir / "manifest.json").exists()


def test_a_models_name_wins_over_a_run_folder_of_that_name_in_the_working_directory(runs, models_dir, tmp_path,
                                                                                    monkeypatch):
    """`vaezip train FOLDER --out pets --name pets`, then `-m pets` in that directory: the installed model, not the
    run folder (whose weights a file would record under the name with another sha256, which then decodes nowhere
    else); `./pets` names the folder. The same for a shipped model's name."""
    import shutil

    from vaezip.api import load_model

    assert invoke("export", runs["a"], "--name", "pets").exit_code == 0
    shutil.copytree(runs["b"], tmp_path / "pets")
    shipped = next(iter(zoo.manifest()["models"]))
    shutil.copytree(runs["b"], tmp_path / shipped)
    monkeypatch.chdir(tmp_path)
    installed, folder = load_model("pets"), load_model("./pets")
    assert installed.sha256 == zoo.user_models()["pets"]["sha256"] and installed.source != folder.source
    assert folder.sha256 != installed.sha256 and folder.name == "pets"
    assert load_model(shipped).sha256 == zoo.manifest()["models"][shipped]["sha256"]


def test_export_writes_only_a_safetensors_file(runs, models_dir, tmp_path):
    """A weights file named otherwise (out.pt, a .png) was written, and `-m` then read it as what its suffix says."""
    (tmp_path / "photo.png").write_bytes(b"an image")
    for name in ("out.pt", "photo.png", "weights"):
        one_error(invoke("export", runs["a"], tmp_path / name, "--name", "mine", "--force"), "must end in "
                  ".safetensors", code=2)
    assert (tmp_path / "photo.png").read_bytes() == b"an image" and not (tmp_path / "out.pt").exists()
    assert invoke("export", runs["a"], tmp_path / "w.safetensors", "--name", "mine").exit_code == 0


def test_a_file_finds_its_weights_by_sha256_where_its_name_holds_others(runs, models_dir, tmp_path):
    """A file made with 'mine', then 'mine' installed again with other weights: the replaced weights stay as
    retired and the file decodes with them (replacing deleted them: no file made with them ever decoded again).
    Once they are purged, decompress uses the installed model whose weights the file's sha256 names (here 'kept',
    the same weights file), and where none has them says the 'mine' here has other weights."""
    from vaezip.api import compress_images, decompress_images, load_model

    weights = tmp_path / "mine.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "mine").exit_code == 0
    assert invoke("export", weights, "--name", "mine").exit_code == 0
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    data = compress_images([("x.png", image)], load_model("mine"), device="cpu", classical=False,
                           predictor=False).data
    replaced = invoke("export", runs["b"], "--name", "mine", "--force")
    assert replaced.exit_code == 0 and "'mine' had other weights" in replaced.stderr
    assert "stay as retired weights, so files made with them still decode" in replaced.stderr
    (tmp_path / "x.vz").write_bytes(data)
    back = run_cli("decompress", tmp_path / "x.vz", "-o", tmp_path / "back.png")  # a fresh process
    assert back.returncode == 0, back.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), np.asarray(image))
    listed = invoke("models").stdout
    assert "mine\tretired\t3\t" in listed and "vaezip models --purge mine deletes it" in listed
    purged = invoke("models", "--purge", "mine")
    assert purged.exit_code == 0 and "files made with them will no longer decode" in purged.stdout
    assert [entry["name"] for entry in zoo.retired_entries()] == []
    result = invoke("decompress", tmp_path / "x.vz", "-o", tmp_path / "none.png")
    one_error(result, "this file was made with model 'mine' (sha256 ", "the 'mine' here has other weights")
    assert invoke("export", weights, "--name", "kept").exit_code == 0
    assert np.array_equal(np.asarray(decompress_images(data)[0][1]), np.asarray(image))


def test_overwriting_an_installed_model_needs_force(runs, models_dir):
    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    first = zoo.user_models()["mine"]
    one_error(invoke("export", runs["b"], "--name", "mine"), "already installed", "--force")
    assert zoo.user_models()["mine"] == first
    assert invoke("export", runs["b"], "--name", "mine", "--force").exit_code == 0
    second = zoo.user_models()["mine"]
    assert second["sha256"] != first["sha256"]
    # the new weights in place, the replaced ones kept as retired (files made with them need them)
    assert files(models_dir) == sorted(["manifest.json", first["file"], second["file"]])
    assert [(entry["name"], entry["file"]) for entry in zoo.retired_entries()] == [("mine", first["file"])]
    assert invoke("export", runs["a"], "--name", "mine", "--force").exit_code == 0  # back: retired no more
    assert [(entry["name"], entry["file"]) for entry in zoo.retired_entries()] == [("mine", second["file"])]


def test_a_weights_file_installs_byte_for_byte_and_can_be_removed(runs, models_dir, tmp_path):
    weights = tmp_path / "given.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "given").exit_code == 0
    assert invoke("export", weights, "--name", "given").exit_code == 0
    assert zoo.user_models()["given"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert zoo.user_models()["given"]["channels"] == 3
    file = zoo.user_models()["given"]["file"]
    assert invoke("export", weights, "--name", "same").exit_code == 0  # the same weights under a second name
    removed = invoke("models", "--remove", "same")
    assert removed.exit_code == 0 and "its weights stay installed as 'given'" in removed.stdout
    removed = invoke("models", "--remove", "given")
    assert removed.exit_code == 0, removed.stderr
    assert "stay as retired weights" in removed.stdout and "vaezip models --purge given deletes them" in removed.stdout
    assert zoo.user_models() == {} and files(models_dir) == sorted(["manifest.json", file])
    one_error(invoke("models", "--remove", "given"), "no user model")
    one_error(invoke("models", "--purge", "same"), "no retired weights of 'same'")
    assert invoke("models", "--purge", "given").exit_code == 0
    assert zoo.retired_entries() == [] and files(models_dir) == ["manifest.json"]
    one_error(invoke("models", "--purge", "given", "--remove", "given"), "one at a time", code=2)


def test_tampered_weights_and_crafted_entries_are_refused_in_one_line(runs, models_dir, tmp_path):
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "x.png")
    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    entry = zoo.user_models()["mine"]
    weights = models_dir / entry["file"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    one_error(invoke("compress", tmp_path / "x.png", "-m", "mine", "-o", tmp_path / "x.vz"),
              "sha256", "does not match the manifest")
    assert not (tmp_path / "x.vz").exists()

    manifest = json.loads((models_dir / "manifest.json").read_text())
    for crafted, fragment in (
        ({**entry, "file": "../../outside.safetensors"}, "plain .safetensors file name"),
        ({**entry, "file": "/etc/passwd"}, "plain .safetensors file name"),
        ({**entry, "sha256": "not hex"}, "sha256"),
        ("just a string", "not a mapping"),
    ):
        manifest["models"]["mine"] = crafted
        (models_dir / "manifest.json").write_text(json.dumps(manifest))
        one_error(invoke("compress", tmp_path / "x.png", "-m", "mine", "-o", tmp_path / "x.vz"), fragment)
        listed = invoke("models")  # listed as unusable, not a crash
        assert listed.exit_code == 0 and "UNUSABLE" in listed.stdout, listed.stderr

    (models_dir / "manifest.json").write_text("{not json")
    one_error(invoke("compress", tmp_path / "x.png", "-m", "mine", "-o", tmp_path / "x.vz"), "not valid JSON")
    listed = invoke("models")  # the shipped models are still listed, with a warning
    assert listed.exit_code == 0 and "not valid JSON" in listed.stderr
    assert not (tmp_path / "x.vz").exists()


# Installs `count` models named PREFIX-i as fast as it can, once the file `go` exists.
INSTALLER = """
import pathlib, sys, time
from vaezip import zoo
prefix, count, go = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for index in range(count):
    zoo.install(f"{prefix}-{index}", f"weights of {prefix}-{index}".encode())
"""


def test_concurrent_installs_keep_every_entry(models_dir, tmp_path):
    count, go = 25, tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", INSTALLER, prefix, str(count), str(go)],
                                  stderr=subprocess.PIPE, text=True) for prefix in ("left", "right")]
    time.sleep(0.5)  # both started (vaezip.zoo imports no torch)
    go.touch()
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    names = {f"{prefix}-{index}" for prefix in ("left", "right") for index in range(count)}
    assert set(zoo.user_models()) == names
    assert files(models_dir) == sorted(["manifest.json", *(entry["file"] for entry in zoo.user_models().values())])


def test_models_imports_no_torch(models_dir):
    code = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
            "result = CliRunner().invoke(app, ['models']); assert result.exit_code == 0, result.output; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_crafted_runs_and_entries_are_refused_or_harmless(runs, models_dir, tmp_path):
    """From a review of how models are trusted: an export with a name the weights would refuse writes nothing (and
    a --force keeps the file it would have replaced); a checkpoint's crafted 'init' and history install as plain
    text, leaving no stray weights; an entry calling itself shipped is listed as the user's; a weights' sha256
    installed under a name a shipped model shadows is not taken for it; a FIFO as the manifest is refused, not
    read."""
    import os

    import torch

    for bad in ("", "a\tb"):
        out = tmp_path / "e.safetensors"
        assert invoke("export", runs["a"], out, "--name", bad).exit_code != 0 and not out.exists()
        out.write_bytes(b"good")
        assert invoke("export", runs["a"], out, "--name", bad, "--force").exit_code != 0
        assert out.read_bytes() == b"good" and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
        out.unlink()

    checkpoint = torch.load(f"{runs['a']}/last.pt", weights_only=True)
    checkpoint["init"] = {"name": torch.zeros(2), "sha256": b"\x00"}
    checkpoint["counters"] = [1]
    torch.save(checkpoint, tmp_path / "crafted.pt")
    assert invoke("export", tmp_path / "crafted.pt", "--name", "crafted").exit_code == 0
    entry = zoo.user_models()["crafted"]
    assert all(isinstance(value, str) for value in entry["init"].values()) and entry["figures"] == {}
    assert files(models_dir) == sorted(["manifest.json", entry["file"]])

    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["models"]["spoof"] = {**entry, "kind": "shipped", "name": "photo2", "default_for": "colour"}
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    rows = {row["name"]: row for row in zoo.listing() if row["kind"] == "user"}
    assert rows["spoof"]["default_for"] == "" and "photo2" not in rows
    shipped = zoo.manifest()["models"]["mnist"]
    manifest["models"]["mnist"] = {**entry, "sha256": "ab" * 32}
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    assert zoo.with_sha256("ab" * 8) is None and zoo.with_sha256(shipped["sha256"][:16]) == "mnist"

    (models_dir / "manifest.json").unlink()
    os.mkfifo(models_dir / "manifest.json")
    with pytest.raises(zoo.CheckpointError, match="not a regular file"):
        zoo.user_manifest()


def test_weights_that_are_not_finite_are_refused_when_loaded(runs, tmp_path):
    import torch

    from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    checkpoint = load_checkpoint(f"{runs['a']}/last.pt")
    key = next(iter(checkpoint["ema"]))
    checkpoint["ema"][key] = torch.full_like(checkpoint["ema"][key], float("nan"))
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        model_from_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "nan.pt")
    one_error(invoke("export", tmp_path / "nan.pt", tmp_path / "nan.safetensors", "--name", "nan"),
              "NaN or infinite")
    assert not (tmp_path / "nan.safetensors").exists()


def test_compressing_with_a_training_checkpoint_warns_that_only_it_decodes_the_file(runs, models_dir, tmp_path,
                                                                                   monkeypatch):
    """Said once where a file needs the model (some tile coded by it), not where no tile of it did."""
    from vaezip import cli
    from vaezip.api import compress_images, load_model

    picture = Image.fromarray(np.random.default_rng(1).integers(90, 160, (64, 64, 3), dtype=np.uint8))
    by_model = compress_images([("x.png", picture)], load_model(runs["a"]), predictor=False, classical=False,
                               device="cpu").data
    assert cli._needs_model(by_model) and not cli._needs_model(compress_images([("x.png", picture)], fast=True).data)
    picture.save(tmp_path / "x.png")
    picture.save(tmp_path / "z.png")
    made = invoke("compress", tmp_path / "x.png", "-m", runs["a"], "-o", tmp_path / "w.vz")  # no model tile
    assert made.exit_code == 0 and "training checkpoint" not in made.stderr
    monkeypatch.setattr(cli, "_needs_model", lambda data: True)
    made = invoke("compress", tmp_path / "x.png", tmp_path / "z.png", "-m", runs["a"])
    assert made.exit_code == 0 and made.stderr.count("a training checkpoint") == 1 and "vaezip export" in made.stderr
    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    made = invoke("compress", tmp_path / "x.png", "-m", "mine", "-o", tmp_path / "y.vz")
    assert made.exit_code == 0 and "training checkpoint" not in made.stderr


def test_export_to_a_file_takes_names_as_loading_does_and_never_replaces_a_fifo(runs, models_dir, tmp_path):
    """From a review of the export changes: OUTPUT takes any name its weights load with (spaces, accents), a FIFO is
    refused as before, a link is replaced (with --force), not what it points to; a checkpoint whose history holds an
    infinite figure installs without it; a damaged entry is passed over for another holding the same weights."""
    import os

    import torch

    out = tmp_path / "w.safetensors"
    assert invoke("export", runs["a"], out, "--name", "my modèle").exit_code == 0 and out.is_file()
    os.mkfifo(tmp_path / "fifo.safetensors")
    one_error(invoke("export", runs["a"], tmp_path / "fifo.safetensors", "--name", "x", "--force"), "FIFO")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "t.safetensors").write_bytes(b"kept")
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "target" / "t.safetensors")
    assert invoke("export", runs["a"], tmp_path / "link.safetensors", "--name", "x", "--force").exit_code == 0
    assert not (tmp_path / "link.safetensors").is_symlink()
    assert (tmp_path / "target" / "t.safetensors").read_bytes() == b"kept"

    checkpoint = torch.load(f"{runs['a']}/last.pt", weights_only=True)
    checkpoint["counters"]["history"].append({"step": 2, "val_bpsp": float("inf")})
    torch.save(checkpoint, tmp_path / "inf.pt")
    assert invoke("export", tmp_path / "inf.pt", "--name", "inf").exit_code == 0
    assert zoo.user_models()["inf"]["figures"] == {}

    for name in ("ua", "ub"):
        assert invoke("export", out, "--name", name).exit_code == 0
    sha = zoo.user_models()["ua"]["sha256"]
    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["models"]["ua"]["file"] = "missing/../ua.safetensors"
    (models_dir / "manifest.json").write_text(json.dumps(manifest))
    assert zoo.with_sha256(sha[:16]) == "ub"


def test_export_to_a_file_refuses_a_shipped_name_a_path_and_a_folder_before_reading_the_run(runs, models_dir, tmp_path):
    """A file exported under a shipped model's name passed for that model beside every figure (eval's table,
    compress's line, info); a name with '/' read as a path; OUTPUT a folder failed with a raw error naming a
    temporary file, after the export. Each is refused first, and nothing is written."""
    for name, fragment in (("photo2", "is the name of a shipped model (photo2)"),
                           ("Photo2", "is the name of a shipped model (photo2)"),
                           ("a/b", "a model name holds no '/'")):
        one_error(invoke("export", runs["a"], tmp_path / "w.safetensors", "--name", name), fragment)
    (tmp_path / "d.safetensors").mkdir()
    one_error(invoke("export", runs["a"], tmp_path / "d.safetensors", "--name", "x", "--force"), "is a folder")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["d.safetensors"] + (
        ["user-models"] if (tmp_path / "user-models").exists() else [])


def test_usage_errors_of_eval_and_export_come_before_torch(tmp_path):
    """A wrong --tile, --samples or OUTPUT needs no model: refused before torch is imported (~1 s on a small CPU)."""
    import subprocess
    import sys

    calls = [["eval", "photo2", str(tmp_path), "--tile", "0"], ["eval", "photo2", str(tmp_path), "--samples", "3"],
             ["export", str(tmp_path), str(tmp_path / "x.txt"), "--name", "a"]]
    script = ("import sys; from typer.testing import CliRunner; from vaezip.cli import app; "
              f"codes = [CliRunner().invoke(app, args).exit_code for args in {calls!r}]; "
              "print(*codes, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["2", "2", "2", "False"], (done.stdout, done.stderr)


def test_a_user_model_folder_that_cannot_be_made_is_refused_before_the_export(runs, tmp_path, monkeypatch):
    """VAEZIP_MODELS naming a file (or a folder under one) was found only after the checkpoint was read and its
    weights written and checked."""
    (tmp_path / "afile").write_text("x")
    for where in (tmp_path / "afile", tmp_path / "afile" / "models"):
        monkeypatch.setenv("VAEZIP_MODELS", str(where))
        one_error(invoke("export", runs["a"], "--name", "zz"), f"({tmp_path / 'afile'} is a file)")
    if os.path.isdir("/proc/self"):  # a folder no one may make, root included
        monkeypatch.setenv("VAEZIP_MODELS", "/proc/vaezip-models")
        one_error(invoke("export", runs["a"], "--name", "zz"), "/proc/vaezip-models: cannot create the user model "
                                                               "directory")


def test_a_relative_or_homeless_models_folder_is_one_line_and_models_still_lists_the_shipped(monkeypatch, tmp_path):
    """A relative VAEZIP_MODELS named another folder in every working directory (a model installed in one was
    'not installed' in the next); '~nosuchuser/m', or no home folder at all, was a traceback."""
    for value, message in (("relmodels", "is a relative path: give an absolute one"),
                           ("~vaezip-no-such-user/m", "no such home folder")):
        monkeypatch.setenv("VAEZIP_MODELS", value)
        one_error(invoke("export", tmp_path / "w.safetensors", "--name", "zz"), f"VAEZIP_MODELS={value!r}", message)
        listed = invoke("models")
        assert listed.exit_code == 0 and "photo2\tshipped" in listed.stdout, listed.stderr
        assert listed.stderr.count("vaezip: warning: ") == 1 and "error" not in listed.stderr
    monkeypatch.delenv("VAEZIP_MODELS")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(zoo.Path, "home", staticmethod(no_home))
    with pytest.raises(zoo.CheckpointError, match="no home folder for the user models: set VAEZIP_MODELS"):
        zoo.user_models_dir()


def test_a_damaged_shipped_manifest_is_one_line(monkeypatch, tmp_path):
    shipped = json.loads(zoo.MANIFEST.read_text())
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    for damage in ("no sha256", "a string", "a list"):
        data = json.loads(json.dumps(shipped))
        if damage == "no sha256":
            del data["models"]["photo2"]["sha256"]
        elif damage == "a string":
            data["models"]["photo2"] = "photo2.safetensors"
        (tmp_path / "manifest.json").write_text(json.dumps([1] if damage == "a list" else data))
        for args in (("models",), ("compress", tmp_path / "x.png")):
            result = invoke(*args)
            assert result.exit_code == 1 and "Traceback" not in result.stderr, (damage, result.stderr)
            assert str(tmp_path / "manifest.json") in result.stderr


def test_models_reads_every_listed_file_as_loading_would(runs, models_dir, tmp_path, monkeypatch):
    """A damaged user weights file, or a shipped one gone, was listed as usable."""
    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    entry = zoo.user_models()["mine"]
    path = models_dir / entry["file"]
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    listed = invoke("models").stdout
    assert "UNUSABLE: its file " in listed and "is damaged or replaced (not the sha256 the manifest records)" in listed
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    monkeypatch.setattr(zoo, "PRETRAINED_DIR", pretrained)  # the manifest's files are not there
    listed = invoke("models").stdout
    assert "UNUSABLE: its file photo2.safetensors is missing (a damaged install" in listed, listed[-3000:]


def test_the_lock_file_is_never_made_through_a_link(models_dir, tmp_path):
    models_dir.mkdir()
    (models_dir / zoo.USER_MANIFEST_LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(zoo.CheckpointError, match="cannot open the user model lock file"):
        zoo.install("linked", b"weights")
    assert not (tmp_path / "elsewhere").exists()


def _model_file(runs, models_dir, tmp_path, name: str) -> bytes:
    """A .vz file that needs the user model `name` (its tile coded by the model)."""
    from vaezip.api import compress_images, load_model

    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return compress_images([("x.png", image)], load_model(name), device="cpu", classical=False,
                           predictor=False).data


def test_weights_are_deleted_only_where_a_copy_that_loads_is_installed(runs, models_dir, tmp_path):
    """Removing 'a' deleted its weights because 'b' listed the same sha256, though b's file was gone: a file made
    with 'a' could never be decoded again. A damaged copy is not taken for a holder either."""
    from vaezip.api import decompress_images

    weights = tmp_path / "w.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "a").exit_code == 0
    for name in ("a", "b"):
        assert invoke("export", weights, "--name", name).exit_code == 0
    data = _model_file(runs, models_dir, tmp_path, "a")
    (models_dir / zoo.user_models()["b"]["file"]).unlink()
    assert invoke("models", "--remove", "a").exit_code == 0
    assert [entry["name"] for entry in zoo.retired_entries()] == ["a"]
    assert len(decompress_images(data)) == 1
    assert invoke("export", weights, "--name", "c").exit_code == 0
    assert not zoo.retired_entries()  # installed again: the retired copy is deleted, not kept twice
    assert len(decompress_images(data)) == 1
    assert invoke("models", "--remove", "c").exit_code == 0 and invoke("export", weights, "--name", "d").exit_code == 0
    copy = models_dir / zoo.user_models()["d"]["file"]
    copy.write_bytes(copy.read_bytes()[:-1] + b"x")
    assert [entry["name"] for entry in zoo.retired_entries()] == []
    assert invoke("models", "--remove", "d").exit_code == 0  # d's copy is damaged: not deleted for another
    assert [entry["name"] for entry in zoo.retired_entries()] == ["d"]


def test_the_manifest_never_grows_past_what_can_be_read_back(runs, models_dir, tmp_path, monkeypatch):
    weights = tmp_path / "w.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "a").exit_code == 0
    assert invoke("export", weights, "--name", "a").exit_code == 0
    size = zoo.user_manifest_path().stat().st_size
    monkeypatch.setattr(zoo, "MAX_USER_MANIFEST_BYTES", size + 100)  # room for no retired entry
    one_error(invoke("export", runs["b"], "--name", "a", "--force"), "would hold more than",
              "vaezip models --purge NAME deletes retired weights")
    assert zoo.user_models()["a"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_hand_edited_retired_entries_and_shipped_defaults_are_handled_in_one_line(models_dir, monkeypatch, tmp_path):
    models_dir.mkdir()
    manifest = {"kind": zoo.USER_MANIFEST_KIND, "format_version": zoo.USER_MANIFEST_FORMAT, "models": {},
                "retired": [{"file": "x-0.safetensors", "sha256": "0" * 64}, "not a mapping"]}
    zoo.user_manifest_path().write_text(json.dumps(manifest))
    listed = invoke("models")
    assert listed.exit_code == 0 and "?\tretired" in listed.stdout and "1 retired weights file listed" in listed.stderr
    purged = invoke("models", "--purge", "?")  # the name it is listed by
    assert purged.exit_code == 0, purged.stderr
    monkeypatch.setenv("HOME", "relhome")
    monkeypatch.delenv("VAEZIP_MODELS")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    with pytest.raises(zoo.CheckpointError, match="no home folder for the user models"):
        zoo.user_models_dir()
    shipped = json.loads(zoo.MANIFEST.read_text())
    shipped["defaults"]["colour"] = ["photo2"]
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    zoo.MANIFEST.write_text(json.dumps(shipped))
    one_error(invoke("models"), "'defaults' is not a mapping of kinds to model names")


def test_export_of_a_weights_file_to_a_file_says_what_to_do(tmp_path):
    """It said the weights file is not a vaezip checkpoint, true but no help."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not even read")
    one_error(invoke("export", weights, tmp_path / "out.safetensors", "--name", "n"),
              "w.safetensors is a weights file already: copy it as it is, or install it without OUTPUT", code=2)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_weights_file_that_claims_a_shipped_name_goes_by_its_file_name(runs, tmp_path):
    """Weights recording 'photo2' (or 'Photo2') but not photo2's passed for it beside every figure, and decompress
    blamed the shipped model for a file they made."""
    from conftest import make_tiny_weights
    from vaezip.api import load_model

    for claimed in ("photo2", "Photo2"):
        path = make_tiny_weights(tmp_path / f"{claimed}-fake.safetensors", 3, claimed)
        assert load_model(path).name == path.name
    assert load_model(zoo.PRETRAINED_DIR / "photo2.safetensors").name == "photo2"  # the very weights: their name
    import shutil

    shutil.copytree(runs["a"], tmp_path / "photo2")  # a run folder of that name: its checkpoint
    assert load_model(tmp_path / "photo2").name == "photo2/last.pt"
    assert load_model(runs["a"]).name == "a"


def test_a_damaged_copy_is_passed_over_for_a_good_one_and_named_where_it_is_the_only_one(runs, models_dir, tmp_path):
    from vaezip.api import decompress_images

    weights = tmp_path / "w.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "a").exit_code == 0
    for name in ("a", "b"):
        assert invoke("export", weights, "--name", name).exit_code == 0
    data = _model_file(runs, models_dir, tmp_path, "a")
    damaged = models_dir / zoo.user_models()["a"]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    assert len(decompress_images(data)) == 1  # a's own copy is damaged: b's is used
    assert invoke("models", "--remove", "a").exit_code == 0  # retired (damaged), b still installed
    held = models_dir / zoo.user_models()["b"]["file"]
    held.write_bytes(held.read_bytes()[:-1] + b"x")
    (tmp_path / "x.vz").write_bytes(data)
    message = one_error(invoke("decompress", tmp_path / "x.vz", "-o", tmp_path / "x.png"))
    assert "does not match" in message and "not installed here" not in message, message


def test_a_name_that_differs_from_an_installed_one_in_case_only_is_refused(runs, models_dir, tmp_path):
    """On macOS's and Windows' disks Mine-x.safetensors is mine-x.safetensors: removing one deleted the other."""
    weights = tmp_path / "w.safetensors"
    assert invoke("export", runs["a"], weights, "--name", "Mine").exit_code == 0
    assert invoke("export", weights, "--name", "Mine").exit_code == 0
    one_error(invoke("export", weights, "--name", "mine", "--force"), "user model 'Mine' is installed: a name that "
              "differs from it in case only is refused")
    assert list(zoo.user_models()) == ["Mine"]


def test_fast_with_a_user_model_imports_no_torch(runs, models_dir, tmp_path):
    """--fast with a user model loaded its weights into torch, though no tile goes through the network: its
    identity (name, sha256, the config its weights record) is read without torch now, as a shipped model's."""
    from codec.container import read

    assert invoke("export", runs["a"], "--name", "mine").exit_code == 0
    entry = zoo.user_models()["mine"]
    Image.open(zoo.PRETRAINED_DIR.parent / "samples" / "hopper.png").convert("RGB").crop((0, 0, 48, 48)).save(
        tmp_path / "x.png")  # the predictor's: a file that names its model
    made = run_cli("compress", "--fast", tmp_path / "x.png", "-m", "mine")
    assert made.returncode == 0, made.stderr
    header = read((tmp_path / "x.vz").read_bytes())[0]
    assert header.model_name == "mine" and entry["sha256"].startswith(header.model_sha256)
    probe = subprocess.run([sys.executable, "-c", "import sys\nfrom vaezip.models import identify_model\n"
                            "identify_model('mine')\nprint('torch' in sys.modules)"], capture_output=True, text=True,
                           timeout=300)
    assert probe.stdout.strip() == "False", probe.stderr


def test_a_model_whose_stride_is_past_the_largest_tile_is_refused_before_any_file(models_dir, tmp_path):
    """Its tiles are a multiple of its stride: compress wrote tile 512, which every decoder refuses (exit 0, and
    the image lost once the input was deleted)."""
    from conftest import make_tiny_weights
    from vaezip.config import get_preset

    stages = (get_preset("tiny").model.stages[0],) * 7
    weights = make_tiny_weights(tmp_path / "big.safetensors", 3, "big", stem_factor=8, stages=stages)
    one_error(invoke("export", weights, "--name", "big"), "its stride 512 is more than vaezip's largest tile 256")
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "x.png")
    for fast in ((), ("--fast",)):
        result = run_cli("compress", tmp_path / "x.png", "-m", weights, *fast)
        assert result.returncode == 1 and b"stride 512 is more than vaezip's largest tile 256" in result.stderr, \
            result.stderr
        assert not (tmp_path / "x.vz").exists()


def test_removing_a_damaged_manifest_entry_is_said_in_one_line(models_dir):
    """An audit: an entry that is not a mapping (`vaezip models` warns of it) made `models --remove` print a
    traceback after it had written the manifest; it removes the entry, which named no weights."""
    models_dir.mkdir()
    (models_dir / zoo.USER_MANIFEST_NAME).write_text(json.dumps(
        {"format_version": 1, "kind": "vaezip-user-models", "models": {"weird": 5}, "retired": []}))
    result = invoke("models", "--remove", "weird")
    assert result.exit_code == 0 and "Traceback" not in result.output, (result.output, result.exception)
    assert result.stdout.strip() == ("removed user model 'weird' (its manifest entry named no weights: it was not a "
                                     "mapping)"), result.stdout
    assert json.loads((models_dir / zoo.USER_MANIFEST_NAME).read_text())["models"] == {}


def test_removing_a_model_whose_weights_are_gone_says_so_and_lists_no_retired_weights(runs, models_dir):
    """It said `its weights ... stay as retired weights, so files made with them still decode` of a file that was
    not there, and `vaezip models` then listed those weights as retired."""
    assert invoke("export", runs["a"], "--name", "gone").exit_code == 0
    file = zoo.user_models()["gone"]["file"]
    (models_dir / file).unlink()
    removed = invoke("models", "--remove", "gone")
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout.strip() == f"removed user model 'gone' (its weights file {file} was already missing: " \
                                     f"none kept as retired)", removed.stdout
    assert zoo.retired_entries() == [] and "gone" not in zoo.user_models()
    assert "retired" not in invoke("models").stdout
