"""Training on several processes: torchrun + DistributedDataParallel, tested on the CPU with gloo (two ranks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaezip.checkpoint import load_checkpoint, model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch without distributed / gloo")


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 ARGS` (the torchrun next to this Python), one thread per rank."""
    script = Path(sys.executable).with_name("torchrun")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([*launcher, "--standalone", "--nproc_per_node=2", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# Each rank trains 3 steps, then resumes the checkpoint to 5, recording its weights at every save and a digest
# of every batch it drew. The process group is the script's: train() must use it and leave it alone.
HARNESS = """
import hashlib, sys
import torch, torch.distributed as dist
import vaezip.train as T
from vaezip import data
from vaezip.config import get_preset

npz, run, out = sys.argv[1:4]
dist.init_process_group("gloo")
rank = dist.get_rank()
record = {"saves": [], "batches": []}
sample = data.CropSampler.sample
def recorded_sample(self, batch_size):
    batch = sample(self, batch_size)
    record["batches"].append(hashlib.sha256(batch.tobytes()).hexdigest())
    return batch
data.CropSampler.sample = recorded_sample
save = T.save
def recorded_save(session, reporter):
    save(session, reporter)
    record["saves"].append((session.step, {k: v.clone() for k, v in session.model.state_dict().items()}))
T.save = recorded_save
overrides = dict(batch_size=4, crop=8, val_every=1000, checkpoint_every=1000, val_images=8)
first = T.train(run, npz, get_preset("tiny"), steps=3, train_overrides=overrides, coded_validation=None)
second = T.train(run, npz, get_preset("tiny"), steps=5, resume=True, coded_validation=None)
record["summaries"] = [(s["rank"], s["step"], s["images_seen"]) for s in (first, second)]
torch.save(record, f"{out}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
"""


def test_two_ranks_take_identical_steps_on_different_batches_and_resume(tmp_path, tiny_npz):
    (tmp_path / "harness.py").write_text(HARNESS)
    result = torchrun("harness.py", str(tiny_npz), str(tmp_path / "run"), str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert [r["summaries"] for r in ranks] == [[(0, 3, 24), (0, 5, 40)], [(1, 3, 24), (1, 5, 40)]]
    # (rank 0 saves again after its last validation, the same weights: one entry a step)
    saves = [list({step: weights for step, weights in r["saves"]}.items()) for r in ranks]
    for (step0, weights0), (step1, weights1) in zip(*saves, strict=True):
        assert step0 == step1
        for key in weights0:
            assert torch.equal(weights0[key], weights1[key]), (step0, key)
    # Before and after the resume, every batch of one rank differs from the other's.
    batches0, batches1 = ranks[0]["batches"], ranks[1]["batches"]
    assert len(batches0) == len(batches1) == 5 and not set(batches0) & set(batches1)
    saved = load_checkpoint(tmp_path / "run")
    assert saved["step"] == 5 and saved["counters"]["images_seen"] == 40
    for key, value in ranks[0]["saves"][-1][1].items():
        assert torch.equal(saved["model"][key], value), key


def test_torchrun_vaezip_train(tmp_path, tiny_npz):
    """The command the README gives: one report, one checkpoint, exit 0."""
    result = torchrun("-m", "vaezip", "train", str(tiny_npz), "--preset", "tiny", "--out", "run", "--steps", "4",
                      "--batch-size", "4", "--crop", "8", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("training on cpu (x2") == 1 and result.stdout.count("stopped at step 4") == 1
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]
    saved = load_checkpoint(tmp_path / "run")
    assert saved["step"] == 4 and saved["counters"]["images_seen"] == 4 * 4 * 2
    model_from_checkpoint(saved)
