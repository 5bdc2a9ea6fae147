"""Training: resumable, atomic checkpoints, and a run that survives SIGKILL."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from vaezip.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from vaezip.config import get_preset
from vaezip.train import train

OVERRIDES = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)


def test_resume_continues_exactly(tmp_path, tiny_npz):
    preset = get_preset("tiny")
    straight = train(tmp_path / "a", tiny_npz, preset, steps=12, train_overrides=OVERRIDES)
    train(tmp_path / "b", tiny_npz, preset, steps=6, train_overrides=OVERRIDES)
    resumed = train(tmp_path / "b", tiny_npz, preset, steps=12, resume=True)
    assert straight["step"] == resumed["step"] == 12
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["counters"]["images_seen"] == b["counters"]["images_seen"] == 48
    model = model_from_checkpoint(b)
    assert model.config.image_channels == 3


def test_a_stop_during_the_last_validation_loses_no_step(tmp_path, tiny_npz, monkeypatch):
    """The run's end validated (minutes, with real files) before it saved: Ctrl-C or SIGTERM then lost every step
    since the last checkpoint (a review: step 300 reached, 240 saved)."""
    from vaezip import train as training

    real = training.validate

    def interrupted(session, *args, **kwargs):
        if session.step == 5:
            raise KeyboardInterrupt
        return real(session, *args, **kwargs)

    class Told(training.SilentReporter):
        stops = []

        def stopped(self, step, path, signum):
            self.stops.append((step, signum))

    monkeypatch.setattr(training, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=5, train_overrides=OVERRIDES, reporter=Told())
    assert load_checkpoint(tmp_path / "run")["step"] == 5
    assert Told.stops == [(5, signal.SIGINT)]  # said as any stop is: saved, --resume continues it (an audit)
    monkeypatch.undo()
    # the resumed run, at its target already, does the validation the stop cut short (it reported none: an audit)
    resumed = train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=5, resume=True)
    assert resumed["step"] == 5 and resumed["val_bpsp"] is not None
    assert "val_bpsp" in load_checkpoint(tmp_path / "run")["counters"]["history"][-1]
    finished = train(tmp_path / "whole", tiny_npz, get_preset("tiny"), steps=5, train_overrides=OVERRIDES)
    assert load_checkpoint(tmp_path / "whole")["counters"]["history"][-1]["step"] == 5 == finished["step"]
    assert "val_bpsp" in load_checkpoint(tmp_path / "whole")["counters"]["history"][-1]  # its last validation kept


def test_a_second_signal_during_a_validation_stops_the_run_saved(tmp_path, tiny_npz, monkeypatch):
    """An audit: a second Ctrl-C or SIGTERM while a validation ran (minutes, with real files) stopped at once: the
    steps since the last checkpoint lost, and a run folder left empty. Between steps the weights are whole: saved,
    and the run ends as the second signal says. A validation cut short leaves no entry in the history (a review:
    its bound without its real files), so the resumed run at its target does all of it again."""
    from vaezip import train as training
    from vaezip.files import Terminated

    def signalled(*signals):
        for signum in signals:
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # the handler runs in this thread between bytecodes: each in its turn

    class Told(training.SilentReporter):
        def __init__(self):
            self.stops = []

        def stopped(self, step, path, signum):
            self.stops.append((step, signum))

    def coded_signalled(model, images, crop, device):
        signalled(signal.SIGTERM, signal.SIGHUP)
        return 1.0, 1.0, len(images)

    told = Told()
    with pytest.raises(Terminated) as stopped:
        train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=10, stop_on_signals=True, reporter=told,
              train_overrides={**OVERRIDES, "val_every": 3}, coded_validation=coded_signalled)
    assert stopped.value.signum == signal.SIGHUP and told.stops == [(3, signal.SIGHUP)]
    saved = load_checkpoint(tmp_path / "run")
    assert saved["step"] == 3 and saved["counters"]["history"] == []
    resumed = train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=3, resume=True,
                    coded_validation=lambda model, images, crop, device: (2.0, 1.5, len(images)))
    assert resumed["step"] == 3 and resumed["val_bpsp"] is not None
    last = load_checkpoint(tmp_path / "run")["counters"]["history"]
    assert [(entry["step"], entry["achieved_bpsp"]) for entry in last] == [(3, 2.0)]


def test_refuses_to_overwrite_a_run(tmp_path, tiny_npz):
    preset = get_preset("tiny")
    train(tmp_path / "run", tiny_npz, preset, steps=2, train_overrides=OVERRIDES)
    with pytest.raises(FileExistsError):
        train(tmp_path / "run", tiny_npz, preset, steps=4, train_overrides=OVERRIDES)
    with pytest.raises(CheckpointError):
        train(tmp_path / "other", tiny_npz, preset, steps=4, resume=True)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_sigkill_then_resume(tmp_path, tiny_npz):
    """Kill a training run at an arbitrary moment (possibly mid-save); --resume picks up the last good one."""
    run = tmp_path / "run"

    def command(steps, *extra):
        return [sys.executable, "-m", "vaezip", "train", tiny_npz, "--preset", "tiny", "--out", str(run),
                "--steps", str(steps), "--batch-size", "4", "--crop", "8", "--checkpoint-every", "3", *extra]

    process = subprocess.Popen(command(100_000), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = load_checkpoint(run)  # the file in place is always complete
    assert saved["step"] >= 3
    # Whether or not this kill landed mid-save, a writer killed mid-save leaves its temporary file behind.
    (run / ".last.pt.tmp-999999").write_bytes(b"half a checkpoint")
    result = subprocess.run(command(saved["step"] + 3, "--resume"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not [p for p in run.iterdir() if p.name != "last.pt"], "temporary files left behind"
    assert load_checkpoint(run)["step"] == saved["step"] + 3


def test_a_format_1_checkpoint_is_upgraded_on_load_and_resumes(tmp_path, tiny_npz):
    train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=2, train_overrides=OVERRIDES)
    saved = load_checkpoint(tmp_path / "run")
    # What format 1 wrote: no pixel-context fields.
    del saved["model_config"]["pixel_context"], saved["train_config"]["train_only_context"]
    torch.save({**saved, "format_version": 1}, tmp_path / "run" / "last.pt")
    upgraded = load_checkpoint(tmp_path / "run")
    assert upgraded["model_config"]["pixel_context"] == 0 and upgraded["train_config"]["train_only_context"] is False
    assert train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=3, resume=True)["step"] == 3
    torch.save({**saved, "format_version": 1, "model_config": {**saved["model_config"], "pixel_context": 4}},
               tmp_path / "run" / "last.pt")
    with pytest.raises(CheckpointError, match="pixel_context"):
        load_checkpoint(tmp_path / "run")


# ---------------------------------------------------------------------------------------------- the train command

from conftest import run_cli  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vaezip import zoo  # noqa: E402
from vaezip.cli import app  # noqa: E402
from vaezip.train import FINE_TUNE_OVERRIDES, is_user_data, kl_weight, learning_rate  # noqa: E402

TINY_CLI = ["--batch-size", "4", "--crop", "8"]


@pytest.fixture()
def png_folder(tmp_path):
    """30 small colour PNGs: a user's folder (one or two are held out)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(30):
        base = rng.integers(60, 200, 3)
        pixels = np.clip(base + rng.integers(-12, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:02d}.png")
    return folder


def invoke(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


@pytest.fixture()
def tiny_default(tmp_path, monkeypatch, tiny_weights):
    """A tiny model installed as a user model and made the 'shipped default' for every mode, so that the
    default fine-tune (and the end-of-training comparison) run without the real models."""
    monkeypatch.setenv("VAEZIP_MODELS", str(tmp_path / "user-models"))
    zoo.install("tiny-start", tiny_weights[3].read_bytes())
    monkeypatch.setattr(zoo, "default_for", lambda mode: "tiny-start")
    return "tiny-start"


def test_learning_rate_can_follow_a_planned_progress():
    config = get_preset("tiny").train
    assert learning_rate(config, 10_000, progress=0.0) == pytest.approx(config.lr)
    assert learning_rate(config, 10_000, progress=1.0) == pytest.approx(config.lr * config.lr_final_fraction)
    assert learning_rate(config, 10_000, progress=0.5) == pytest.approx(config.lr * (1 + config.lr_final_fraction) / 2)
    assert learning_rate(config, 0, progress=0.0) == pytest.approx(config.lr / config.warmup_steps)  # still warms up


def test_the_kl_weight_ramps_linearly_to_one_and_only_weights_the_loss():
    config = dataclasses.replace(get_preset("tiny").train, kl_warmup_steps=4)
    assert [kl_weight(config, step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(get_preset("tiny").train, 0) == 1.0  # default: no warm-up
    from vaezip.model import HierarchicalVAE

    model = HierarchicalVAE(get_preset("tiny").model)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    outputs = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)  # the same latent noise
        with torch.no_grad():
            outputs.append(model(pixels, kl_weight=weight))
    nothing, full = outputs
    subpixels = float(full.subpixels.sum())
    assert float(nothing.loss) == pytest.approx(float(full.nll_bits) / subpixels, rel=1e-5)
    assert float(full.loss) == pytest.approx(float(full.bound_bits.sum()) / subpixels, rel=1e-5)
    assert torch.equal(nothing.bound_bits, full.bound_bits)  # the bound is always the full-weight one


def test_the_default_thread_count_is_small_and_positive():
    from vaezip.cli import MAX_DEFAULT_THREADS, default_threads

    assert 1 <= default_threads() <= MAX_DEFAULT_THREADS


def test_user_data_is_a_path_not_a_named_set_or_a_mixture(png_folder, tiny_npz):
    assert is_user_data(str(png_folder)) and is_user_data(tiny_npz)
    assert not is_user_data("mnist-train") and not is_user_data(f"{png_folder}@1+{tiny_npz}@1")
    assert not is_user_data(str(png_folder / "missing"))


def test_a_folder_fine_tunes_the_shipped_default_unless_told_otherwise(tmp_path, png_folder, tiny_default):
    result = invoke(png_folder, "--out", tmp_path / "ft", "--steps", "2", "--threads", "1", *TINY_CLI)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "started from tiny-start" in result.stdout and "1 CPU thread(s)" in result.stdout
    assert "step 0: validation bound" in result.stdout  # the starting model's bound, before any step
    saved = load_checkpoint(tmp_path / "ft")
    assert saved["init"]["name"] == "tiny-start"
    assert saved["train_config"]["lr"] == FINE_TUNE_OVERRIDES["lr"]
    assert saved["train_config"]["decay_steps"] == 2  # planned over --steps
    # the end: the new model next to the start and the codecs, on held-out images, real files
    assert "held-out images, coded for real" in result.stdout and "tiny-start" in result.stdout
    assert "webp" in result.stdout

    for other in (["--from-scratch", "--preset", "tiny"], ["--preset", "tiny"]):
        out = tmp_path / f"scratch{len(other)}"
        result = invoke(png_folder, "--out", out, "--steps", "1", *other, *TINY_CLI)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        assert load_checkpoint(out)["init"] is None
    # --init names the trained start: its low rate too, unless --lr says otherwise (the preset's 2e-3 was used)
    result = invoke(png_folder, "--out", tmp_path / "init", "--steps", "1", "--init", "tiny-start", *TINY_CLI)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert load_checkpoint(tmp_path / "init")["train_config"]["lr"] == FINE_TUNE_OVERRIDES["lr"]
    result = invoke(png_folder, "--out", tmp_path / "init-lr", "--steps", "1", "--init", "tiny-start", "--lr",
                    "0.001", *TINY_CLI)
    assert result.exit_code == 0 and load_checkpoint(tmp_path / "init-lr")["train_config"]["lr"] == 0.001


def test_bad_train_options_are_usage_errors_before_any_work(tmp_path, png_folder):
    for args in (["--threads", "0"], ["--from-scratch", "--init", "photo"], ["--minutes", "0"],
                 ["--kl-warmup", "-1"]):
        result = invoke(png_folder, "--out", tmp_path / "run", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert result.stderr.count("vaezip: error:") == 1, result.stderr
    for channels in ("0", "2", "4"):  # was the data loader's `channels must be 1, 3 or None, got 2`, exit 1 (QA)
        result = invoke(png_folder, "--out", tmp_path / "run", "--channels", channels)
        assert result.exit_code == 2 and result.stderr == f"vaezip: error: --channels must be 1 or 3, not {channels}\n"
    shipped = next(iter(zoo.manifest()["models"]), None)
    if shipped is not None:
        result = invoke(png_folder, "--out", tmp_path / "run", "--name", shipped, "--preset", "tiny")
        assert result.exit_code == 1 and "shipped model" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_folder_of_one_image_is_refused_before_any_work(tmp_path, png_folder):
    """A run holds images out for validation, the end's comparison and --name's check: with one image there is
    none to hold out (it failed at the first validation; from scratch, after its steps, saving nothing)."""
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(png_folder.iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    for other in ([], ["--from-scratch", "--preset", "tiny"]):
        result = invoke(one, "--out", tmp_path / "run", "--steps", "2", *other, *TINY_CLI)
        assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
        assert result.stderr.strip() == (f"vaezip: error: {one}: 1 image, none held out: a run holds some out to "
                                         f"measure the model on, so it needs at least 2")
    assert not (tmp_path / "run").exists()


def test_a_folder_of_images_smaller_than_the_crop_is_named_as_given(tmp_path):
    """It said `tiny:train: all 8 images are smaller...` of a folder of 9 (one held out; QA): the folder's name and
    the images counted as such."""
    small = tmp_path / "tiny"
    small.mkdir()
    for k in range(9):
        Image.fromarray(np.full((4 + k, 5 + 2 * k, 3), 20 * k, np.uint8)).save(small / f"{k}.png")
    result = invoke(small, "--out", tmp_path / "run", "--steps", "1", "--crop", "32", "--from-scratch", "--preset",
                    "tiny")
    assert result.exit_code == 1 and result.stderr.strip() == (
        "vaezip: error: tiny: all 8 images not held out are smaller than the training crop 32x32 (--crop takes "
        "smaller crops)"), result.stderr
    # Images of one size below the crop on a side were cropped smaller without a word, beside the refusal above
    same = tmp_path / "same"
    same.mkdir()
    for k in range(9):
        Image.fromarray(np.full((8, 40, 3), 20 * k, np.uint8)).save(same / f"{k}.png")  # 40 wide, 8 high
    result = invoke(same, "--out", tmp_path / "run2", "--steps", "1", "--crop", "32", "--batch-size", "4",
                    "--from-scratch", "--preset", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "vaezip: warning: --crop 32: the images are 40x8 (width x height), so the crops are 32x8" in \
        result.stderr.splitlines(), result.stderr
    # The preset's crop, not asked for: a data set's own smaller size (MNIST's 28 of 32) goes unsaid
    result = invoke(same, "--out", tmp_path / "run3", "--steps", "1", "--batch-size", "4", "--from-scratch",
                    "--preset", "tiny")
    assert result.exit_code == 0 and "--crop" not in result.stderr, result.stderr


def test_files_it_cannot_train_on_are_named_in_a_one_line_warning(tmp_path, png_folder):
    """A broken file and a 16-bit image in one's folder are passed over, never narrowed, and named; the
    command's warning is one line, as its errors are (not Python's two, with a source line)."""
    (png_folder / "text.png").write_text("not an image")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(png_folder / "deep.png")
    result = run_cli("train", png_folder, "--out", tmp_path / "run", "--steps", "1", "--from-scratch", "--preset",
                     "tiny", *TINY_CLI)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    assert lines[0] == ("vaezip: warning: photos: skipped 2 image file(s) it cannot use: deep.png (not 8-bit), "
                        "text.png (unreadable)"), lines
    assert "Warning" not in result.stderr.decode() and "training on cpu" in result.stdout.decode()


def test_name_installs_only_a_model_no_worse_than_the_shipped_one(tmp_path, png_folder, tiny_default, monkeypatch):
    from vaezip import train as training

    real = training.compare_on_holdout

    def worse(trained, others, images, **options):
        comparison = real(trained, others, images, **options)
        rows = tuple(dataclasses.replace(row, achieved_bpsp=row.achieved_bpsp + 1.0,
                                         payload_bpsp=row.payload_bpsp + 1.0) if row.kind == "trained"
                     else row for row in comparison.rows)
        return dataclasses.replace(comparison, rows=rows)

    monkeypatch.setattr(training, "compare_on_holdout", worse)
    result = invoke(png_folder, "--out", tmp_path / "run", "--steps", "1", "--preset", "tiny", "--name", "mine",
                    *TINY_CLI)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "WARNING" in result.stderr and "not installed as 'mine'" in result.stderr and "--force" in result.stderr
    assert "mine" not in zoo.user_models()
    result = invoke(png_folder, "--out", tmp_path / "run2", "--steps", "1", "--preset", "tiny", "--name", "mine",
                    "--force", *TINY_CLI)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert zoo.user_models()["mine"]["figures"]["held-out achieved"] > 0


def test_files_of_one_size_leave_the_bounds_to_decide_the_install(tmp_path, png_folder, tiny_default, monkeypatch):
    """A few small held-out images: every tile goes raw, every model's file is the same size, and an untrained
    model was installed as "as small as" the shipped one (a review). The bounds decide then."""
    from vaezip import train as training

    real = training.compare_on_holdout

    def tied(higher_bound: bool):
        def compare(trained, others, images, **options):
            comparison = real(trained, others, images, **options)
            shipped = next(row for row in comparison.rows if row.kind == "model")
            rows = tuple(dataclasses.replace(row, payload_bpsp=shipped.payload_bpsp,
                                             bound_bpsp=shipped.bound_bpsp + (0.5 if higher_bound else -0.5))
                         if row.kind == "trained" else row for row in comparison.rows)
            return dataclasses.replace(comparison, rows=rows)
        return compare

    monkeypatch.setattr(training, "compare_on_holdout", tied(True))
    result = invoke(png_folder, "--out", tmp_path / "run", "--steps", "1", "--preset", "tiny", "--name", "mine",
                    *TINY_CLI)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "WARNING: the trained model codes the held-out images no smaller than" in result.stderr
    assert "every model's stream the same size" in result.stderr and "not installed as 'mine'" in result.stderr
    assert "mine" not in zoo.user_models()
    monkeypatch.setattr(training, "compare_on_holdout", tied(False))
    result = invoke(png_folder, "--out", tmp_path / "run2", "--steps", "1", "--preset", "tiny", "--name", "mine",
                    *TINY_CLI)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "as small as" in result.stdout and "every model's stream the same size" in result.stdout
    assert "mine" in zoo.user_models()


def test_a_model_worse_than_the_shipped_one_is_not_installed_though_the_predictor_codes_both_files(
        tmp_path, png_folder, monkeypatch):
    """The end's comparison codes the held-out images with each model's own stream: a model of random weights
    (two steps from scratch) is worse than the shipped one, and --name refuses it, though `vaezip compress` would
    give both the model-free predictor's file (a review found such a model installed, "0.10 % smaller")."""
    monkeypatch.setenv("VAEZIP_MODELS", str(tmp_path / "user-models"))
    result = invoke(png_folder, "--out", tmp_path / "run", "--steps", "2", "--from-scratch", "--preset", "tiny",
                    "--name", "mine", *TINY_CLI)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert "WARNING: the trained model codes the held-out images" in result.stderr, result.stderr
    assert "not installed as 'mine'" in result.stderr and "mine" not in zoo.user_models()
    assert "vaezip compress with the trained model: " in result.stdout, result.stdout


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--batch-size", "-1"], ["--checkpoint-every", "0"],
                                    ["--val-every", "0"], ["--seed", "-1"], ["--force"], ["--out", "TAKEN"],
                                    ["--crop", "0"], ["--lr", "-1"], ["--lr", "nan"], ["--preset", "huge"],
                                    ["--decay-steps", "-5"], ["--out", "TAKEN/sub"]])
def test_options_that_cannot_be_are_usage_errors_before_any_work(tmp_path, png_folder, option):
    """A review found --batch-size 0 and --checkpoint-every 0 failing after the run began, with tracebacks, an
    --out that is a file failing with Python's words, and --force without --name ignored; an audit --crop 0 and
    --lr -1 failing (exit 1) after the data loaded, --preset huge exit 1, --decay-steps -5 taken as none, and
    typer's own range checks (--val-every 0) a usage box, not one line."""
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"a file")
    given = [value.replace("TAKEN", str(taken)) for value in option]
    out = [] if option[0] == "--out" else ["--out", tmp_path / "run"]
    result = invoke(png_folder, *out, "--steps", "2", *given)
    assert result.exit_code == 2 and option[0] in result.output, result.output
    assert result.stderr.startswith("vaezip: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    assert taken.read_bytes() == b"a file"


def test_resume_alone_goes_on_to_the_run_s_own_target(tmp_path, tiny_npz, capsys):
    """The stop message's `--resume --out RUN` went on to the default 10,000 steps, not the run's --steps (a
    review): the checkpoint records its target; one saved without it says so and takes the default."""
    run = tmp_path / "run"
    train(run, tiny_npz, get_preset("tiny"), steps=2, train_overrides=OVERRIDES)
    saved = load_checkpoint(run)
    assert saved["target"] == {"steps": 2, "minutes": None}
    resumed = invoke(tiny_npz, "--out", run, "--resume")
    assert resumed.exit_code == 0, (resumed.stdout, resumed.stderr)
    assert "10000" not in resumed.stdout and "10,000" not in resumed.stderr
    assert load_checkpoint(run)["step"] == 2  # at its target already: nothing more
    from vaezip.checkpoint import save_checkpoint

    del saved["target"]
    save_checkpoint(run / "last.pt", {key: value for key, value in saved.items()
                                      if key not in ("kind", "format_version")})
    from vaezip import cli

    assert cli._saved_target(run) == (None, None)  # the default then, said
    assert "checkpoint records no step target or time" in capsys.readouterr().err


def test_resume_continues_the_run_as_it_was_set_up_or_refuses(tmp_path, png_folder):
    """--resume on other images (which would also hold out others) or with other settings is refused in one line,
    naming what differs (a review found both taken silently); the same command line again, its preset named,
    continues the run, with a warning that the preset has no effect."""
    run = tmp_path / "run"
    assert invoke(png_folder, "--out", run, "--steps", "2", "--from-scratch", "--preset", "tiny", *TINY_CLI
                  ).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(png_folder.iterdir())[:5]:
        (other / path.name).write_bytes(path.read_bytes())
    refused = invoke(other, "--out", run, "--steps", "3", "--resume")
    assert refused.exit_code == 1 and refused.stderr.startswith(f"vaezip: error: --resume continues {run} on "
                                                                f"{png_folder}, not on {other}"), refused.stderr
    refused = invoke(png_folder, "--out", run, "--steps", "3", "--resume", "--lr", "0.5", "--crop", "8")
    assert refused.exit_code == 1 and "not with lr 0.5:" in refused.stderr and "crop" not in refused.stderr, \
        refused.stderr
    assert invoke(png_folder, "--out", run, "--steps", "3", "--resume", "--init", "photo2").exit_code == 2
    refused = invoke(png_folder, "--out", run, "--steps", "3", "--resume", "--pixel-context", "8")  # was taken
    assert refused.exit_code == 1 and refused.stderr == (
        "vaezip: error: --pixel-context 8: the run to resume trains a model with pixel_context = 0\n"), refused.stderr
    assert load_checkpoint(run)["step"] == 2
    again = invoke(png_folder, "--out", run, "--steps", "3", "--resume", "--preset", "tiny", *TINY_CLI)
    assert again.exit_code == 0, (again.stdout, again.stderr)
    assert "vaezip: warning: --resume continues the run in" in again.stderr and load_checkpoint(run)["step"] == 3


def test_a_time_planned_run_records_its_schedule(tmp_path, png_folder, tiny_default):
    result = invoke(png_folder, "--out", tmp_path / "run", "--minutes", "0.01", "--preset", "tiny", "--kl-warmup",
                    "7", *TINY_CLI)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "for 0.01 minutes (learning rate decays over that time)" in result.stdout
    saved = load_checkpoint(tmp_path / "run")
    assert saved["schedule"] == "time" and saved["step"] >= 1
    assert saved["train_config"]["kl_warmup_steps"] == 7


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_empty_folder(tmp_path, png_folder, monkeypatch):
    """An audit: a run stopped at once (a second Ctrl-C mid-step) before anything was saved left its run folder
    behind, empty; a folder that was there before stays."""
    from vaezip import train as training

    def stopped_at_once(run_dir, *args, **kwargs):
        run_dir.mkdir(parents=True, exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", stopped_at_once)
    (tmp_path / "kept").mkdir()
    for run, left in ((tmp_path / "new" / "run", False), (tmp_path / "kept", True)):
        result = invoke(png_folder, "--out", run, "--steps", "3", "--from-scratch", "--preset", "tiny")
        assert result.exit_code == 130 and result.stderr == "vaezip: interrupted\n", result.stderr
        assert run.is_dir() == left
    assert not (tmp_path / "new").exists()  # a folder made above it too


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, png_folder):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "vaezip", "train", str(png_folder), "--preset", "tiny", "--out", str(run),
               "--steps", "100000", "--threads", "1", *TINY_CLI]
    # As from a shell, with Ctrl-C at its default (a test worker may run with SIGINT ignored; a child keeps that)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:  # the plain reporter logs the first step at once
            if line.startswith("step 1"):
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "stopped at step" in stdout and "Traceback" not in stderr
    # the whole command that continues it: it named no data (which the command needs)
    assert f"(vaezip train {png_folder} --resume --out {run} continues it)" in stdout, stdout
    saved = load_checkpoint(run)
    assert saved["step"] >= 1
    assert not [p for p in run.iterdir() if p.name != "last.pt"], "temporary files left behind"
    resumed = train(run, str(png_folder), get_preset("tiny"), steps=saved["step"] + 2, resume=True)
    assert resumed["step"] == saved["step"] + 2


def test_a_reader_that_goes_away_stops_the_run_saved(tmp_path, png_folder):
    """`vaezip train ... | head -2`: the first print after the reader left ended the process (141) without saving,
    the steps since the last checkpoint lost (a review). It stops as on Ctrl-C: saved, then 141 quietly."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "vaezip", "train", str(png_folder), "--preset", "tiny", "--out", str(run),
               "--steps", "100000", "--threads", "1", "--val-every", "2", "--checkpoint-every", "100000", *TINY_CLI]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("step 2: validation bound"):
                break
        process.stdout.close()  # the reader goes away
        stderr = process.stderr.read()
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 141, stderr
    assert "Traceback" not in stderr and "error" not in stderr, stderr
    assert load_checkpoint(run)["step"] >= 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_stops_the_run_saved(tmp_path, png_folder):
    """`vaezip train ... > /dev/full` ended with a bare errno and no checkpoint (a review): it stops as on Ctrl-C,
    saved, and says what failed (exit 1)."""
    run = tmp_path / "run"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "vaezip", "train", str(png_folder), "--preset", "tiny", "--out",
                               str(run), "--steps", "100000", "--threads", "1", *TINY_CLI], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("vaezip: error: standard output: cannot write (No space "
                                                           "left on device); the run stopped and saved"), done.stderr
    assert load_checkpoint(run)["step"] >= 0


@pytest.mark.parametrize("limit", [None, "AVX2"], ids=["default", "onednn-avx2"])
def test_cpu_training_steps_run_in_bfloat16_where_onednn_has_amx(tmp_path, tiny_npz, monkeypatch, limit):
    """On a CPU with AMX tiles the steps' convolutions run in bfloat16 (autocast, as on CUDA); a oneDNN kept
    below AMX (or a CPU without them) trains in float32."""
    from vaezip import devices

    if limit:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    dtypes = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=3, train_overrides=OVERRIDES)
    finally:
        handle.remove()
    assert result["step"] == 3 and dtypes
    assert dtypes == ({torch.bfloat16} if limit is None and devices.amx_available() else {torch.float32})


def test_resume_refuses_a_folder_whose_images_changed_in_number(tmp_path, png_folder):
    """The held-out images are drawn from the folder's count: a resumed run on a folder that gained images would
    train on some it held out (the checkpoint records the count)."""
    run = tmp_path / "run"
    assert invoke(png_folder, "--out", run, "--steps", "1", "--from-scratch", "--preset", "tiny", *TINY_CLI
                  ).exit_code == 0
    assert load_checkpoint(run)["data_images"] == 30
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(png_folder / "new.png")
    refused = invoke(png_folder, "--out", run, "--steps", "2", "--resume")
    assert refused.exit_code == 1 and "holds 31 images now, 30 when" in refused.stderr, refused.stderr
    (png_folder / "new.png").unlink()
    resumed = invoke(png_folder, "--out", run, "--steps", "2", "--resume", "--checkpoint-every", "5")
    assert resumed.exit_code == 0, resumed.stderr
    assert load_checkpoint(run)["train_config"]["checkpoint_every"] == 5  # bookkeeping may change
    saved = (run / "last.pt").stat()
    again = invoke(png_folder, "--out", run, "--steps", "1", "--resume")  # it said "steps 2 -> 1"
    assert again.exit_code == 0 and "at step 2 already (--steps 1): no step to train" in again.stdout, again.stdout
    # nothing trained: the checkpoint and its history as they were (it was validated and written again)
    assert (run / "last.pt").stat().st_mtime_ns == saved.st_mtime_ns and (run / "last.pt").stat().st_ino == \
        saved.st_ino
    # one trained-on image replaced, the held-out ones the same: it went on without a word (a review)
    from vaezip.train import _load_data

    held_out = _load_data(str(png_folder), 3, load_checkpoint(run)["train_config"]["val_images"]).validation
    trained_on = next(path for path in sorted(png_folder.glob("*.png")) if not any(
        np.array_equal(np.asarray(Image.open(path).convert("RGB")), image) for image in held_out.images))
    original = trained_on.read_bytes()
    Image.fromarray(255 - np.asarray(Image.open(trained_on))).save(trained_on)
    refused = invoke(png_folder, "--out", run, "--steps", "3", "--resume")
    assert refused.exit_code == 1 and "holds other images than when" in refused.stderr and "(one changed or " \
        "replaced)" in refused.stderr, refused.stderr
    trained_on.write_bytes(original)
    # as many images, but others: the held-out ones would be others too
    for path in sorted(png_folder.glob("*.png")):
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
    refused = invoke(png_folder, "--out", run, "--steps", "3", "--resume")
    assert refused.exit_code == 1 and "holds other images than when" in refused.stderr, refused.stderr


def test_a_run_refuses_to_save_over_a_checkpoint_another_run_wrote(tmp_path, tiny_npz, monkeypatch):
    """Two runs given one --out: the one that saves second finds a checkpoint it did not write or resume and stops
    with an error instead of writing over the other's work (it used to, silently)."""
    import vaezip.train as train_module

    run = tmp_path / "run"
    train(run, tiny_npz, get_preset("tiny"), steps=2, train_overrides=OVERRIDES)
    before, written = load_checkpoint(run)["step"], []
    original = train_module.save

    def another_run_saves_first(session, reporter):
        if not written:  # between this run's resume and its first save, another run saves into the same folder
            written.append((run / "last.pt").read_bytes())
            (run / "last.pt").unlink()
            (run / "last.pt").write_bytes(written[0])
        return original(session, reporter)

    monkeypatch.setattr(train_module, "save", another_run_saves_first)
    with pytest.raises(CheckpointError, match="was written by another run meanwhile"):
        train(run, tiny_npz, get_preset("tiny"), steps=4, resume=True)
    assert written and (run / "last.pt").read_bytes() == written[0] and load_checkpoint(run)["step"] == before


def test_a_resumed_run_of_a_named_set_a_mixture_or_an_npz_key_refuses_a_folder(tmp_path, png_folder):
    """Only a folder the run recorded that is gone from here may be given anew (with a warning): a data set's
    name, a mixture or an .npz's key is no path, and another folder is not it."""
    from vaezip.train import _resumed_data

    for saved in ("mnist-train", "mnist-train@1+cifar4k-train@1", "digits.npz:x"):
        with pytest.raises(CheckpointError, match="--resume continues"):
            _resumed_data(tmp_path / "run", str(png_folder), saved)
    with pytest.warns(UserWarning, match="not found from here"):
        assert _resumed_data(tmp_path / "run", str(png_folder), str(tmp_path / "moved")) == str(png_folder)


def test_images_smaller_than_the_crop_are_said_not_trained_on(tmp_path, png_folder):
    """Images smaller than the crop are never cropped from: the count of images to train on leaves them out and a
    warning says so (a folder of mostly small images trained on its few large ones without a word)."""
    import re

    for index in range(3):
        Image.fromarray(np.full((5, 6, 3), 40 * index, np.uint8)).save(png_folder / f"small{index}.png")
    result = invoke(png_folder, "--out", tmp_path / "run", "--steps", "1", "--from-scratch", "--preset", "tiny",
                    *TINY_CLI)
    assert result.exit_code == 0, result.stderr
    small = re.search(r"vaezip: warning: (\d) images? smaller than the crop not trained on", result.stderr)
    counted = re.search(r"(\d+) images to train on \((\d+) more held out\)", result.stdout)
    assert small and counted, (result.stdout, result.stderr)
    assert int(counted[1]) + int(small[1]) + int(counted[2]) == 33 and int(small[1]) >= 2


def test_no_achieved_rate_is_shown_or_kept_where_no_tile_went_through_the_model(tiny_weights, tmp_path, tiny_npz):
    """A few small held-out images: every tile is a stream's first, which the predictor codes, and the "compressed for
    real: achieved" figure was the same whatever the weights (a random model "achieved" 0.319x its bound), printed at
    every validation and kept in the user manifest as "validation achieved" (from a QA pass). Now no such figure."""
    import io
    import math
    from pathlib import Path

    from rich.console import Console

    from vaezip.api import load_model
    from vaezip.cli import RichTrainReporter
    from vaezip.train import coded_rate

    model = load_model(tiny_weights[3]).model
    # Noise: the second tile goes through the model by bits-back, and its file's rate is the model's to show
    noise = np.random.default_rng(3).integers(60, 200, size=(2, 32, 32, 3), dtype=np.uint8)
    achieved, bound, count = coded_rate(model, noise, 32, torch.device("cpu"))
    assert 7 < achieved < 9 and bound > 0 and count == 2
    photo = np.asarray(Image.open(Path(__file__).parent.parent / "samples" / "hopper.png").convert("RGB"))
    crops = np.stack([photo[:32, :32], photo[32:64, 32:64]])  # the predictor codes both tiles
    achieved, bound, count = coded_rate(model, crops, 32, torch.device("cpu"))
    assert math.isnan(achieved) and bound > 0 and count == 2
    screen = io.StringIO()
    RichTrainReporter(Console(file=screen, width=200)).coded(7, achieved, bound, count)
    assert screen.getvalue().strip() == ("step 7: 2 validation images compressed for real: no tile went through the "
                                         "model (the held-out images too few or small: a stream's first tiles are "
                                         "the predictor's)")
    train(tmp_path / "run", tiny_npz, get_preset("tiny"), steps=2, train_overrides={**OVERRIDES, "val_every": 1},
          coded_validation=lambda model, images, crop, device: (math.nan, 3.0, len(images)))
    history = load_checkpoint(tmp_path / "run")["counters"]["history"]
    assert history and all("val_bpsp" in entry and "achieved_bpsp" not in entry for entry in history)
    from vaezip.cli import _run_info  # what export writes into the user manifest

    info = _run_info(load_checkpoint(tmp_path / "run"), tmp_path / "run")
    assert list(info["figures"]) == ["validation bound (step 2)"]
