"""Training: resumable, atomic checkpoints, and a run that survives SIGKILL."""

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


@pytest.fixture()
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(90, 160, size=(48, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x)
    return str(path)


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
