"""Crafted weights and checkpoint files (issue 19, item 6): every one is a one-line CheckpointError or
ConfigError, through `vaezip.api.load_model` and through the CLI, and is refused before the model is built.

"Before allocation" is checked directly, not by timing: a spy replaces the model class in vaezip.checkpoint
and records every model built outside the meta device, and the CLI runs in a fresh process whose own peak
memory (its VmHWM, read as it exits) must stay far below what the crafted configs would take.
"""

from __future__ import annotations

import dataclasses
import json
import re
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
import torch

import vaezip.checkpoint as checkpoint_module
from vaezip.api import load_model
from vaezip.checkpoint import CheckpointError, load_weights
from vaezip.config import (
    MAX_PARAMETERS,
    PRESETS,
    ConfigError,
    ModelConfig,
    StageConfig,
    config_to_dict,
    get_preset,
    model_config_from_dict,
    parameter_count,
)
from vaezip.files import remove_stale_temporaries
from vaezip.model import HierarchicalVAE

TINY = dataclasses.replace(get_preset("tiny").model, image_channels=3)


def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {key: value.contiguous() for key, value in HierarchicalVAE(TINY).state_dict().items()}


STATE = _tiny_state()


def description(**changes) -> dict:
    out = {"kind": "vaezip-weights", "format_version": 2, "name": "crafted", "model_config": config_to_dict(TINY),
           "step": 0}
    out.update(changes)
    return out


def with_config(**changes) -> dict:
    return description(model_config={**config_to_dict(TINY), **changes})


def with_stage(**changes) -> dict:
    config = config_to_dict(TINY)
    config["stages"][0] = {**config["stages"][0], **changes}
    return description(model_config=config)


def safetensors_bytes(meta: dict | str | None, tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    from safetensors.torch import save

    metadata = None if meta is None else {"vaezip": meta if isinstance(meta, str) else json.dumps(meta)}
    return save(STATE if tensors is None else tensors, metadata=metadata)


def deep(depth: int) -> str:
    """Metadata whose model_config is `depth` nested arrays (the shape of a 100,000-deep JSON attack)."""
    return json.dumps(description())[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


def big_config() -> dict:
    """A valid config just under MAX_PARAMETERS: refused only because the file's tensors do not match it."""
    stages = [{"width": 512, "encoder_blocks": 2, "latent_groups": 2, "latent_channels": 16}] * 7
    return description(model_config={**config_to_dict(TINY), "stages": stages, "num_mixtures": 10})


def _drop_one() -> dict:
    return {key: value for key, value in list(STATE.items())[1:]}


def _retyped() -> dict:
    key = next(iter(STATE))
    return {**STATE, key: torch.zeros(STATE[key].shape, dtype=torch.int32)}


def _reshaped() -> dict:
    key = "decoder.head.weight"
    return {**STATE, key: torch.zeros(STATE[key].shape[::-1])}


# (id, file bytes, a fragment the one-line message must contain)
CASES = [
    ("negative-width", lambda: safetensors_bytes(with_stage(width=-5)), "width must be in 1..1024"),
    ("zero-width", lambda: safetensors_bytes(with_stage(width=0)), "width must be in"),
    ("string-width", lambda: safetensors_bytes(with_stage(width="64")), "width must be an integer"),
    ("float-width", lambda: safetensors_bytes(with_stage(width=32.0)), "width must be an integer"),
    ("bool-width", lambda: safetensors_bytes(with_stage(width=True)), "width must be an integer"),
    ("huge-width", lambda: safetensors_bytes(with_stage(width=10**12)), "width must be in"),
    ("300-digit-width", lambda: safetensors_bytes(with_stage(width=10**300)), "integer of 997 bits"),
    ("5000-digit-width", lambda: safetensors_bytes(json.dumps(description()).replace(
        '"width": 32', '"width": ' + "9" * 5000, 1)), "not valid JSON"),
    ("negative-blocks", lambda: safetensors_bytes(with_stage(encoder_blocks=-1)), "encoder_blocks must be in"),
    ("huge-latents", lambda: safetensors_bytes(with_stage(latent_channels=100000)), "latent_channels must be in"),
    ("huge-groups", lambda: safetensors_bytes(with_stage(latent_groups=10**6)), "latent_groups must be in"),
    ("stage-extra-key", lambda: safetensors_bytes(with_stage(depth=1)), "unknown keys ['depth']"),
    ("stage-not-mapping", lambda: safetensors_bytes(with_config(stages=[5])), "expected a mapping"),
    ("stages-not-list", lambda: safetensors_bytes(with_config(stages={"a": 1})), "stages must be a list"),
    ("no-stages", lambda: safetensors_bytes(with_config(stages=[])), "1..8 stages"),
    ("6000-stages", lambda: safetensors_bytes(with_config(stages=config_to_dict(TINY)["stages"] * 3000)),
     "more than 65,536"),  # 468 KB of metadata: refused by size before it is parsed
    ("600-stages", lambda: safetensors_bytes(with_config(stages=config_to_dict(TINY)["stages"] * 300)),
     "1..8 stages, not 600"),
    ("no-latent-groups", lambda: safetensors_bytes(description(model_config={
        **config_to_dict(TINY), "stages": [{**s, "latent_groups": 0} for s in config_to_dict(TINY)["stages"]]})),
     "at least one latent group"),
    ("mixtures-1e7", lambda: safetensors_bytes(with_config(num_mixtures=10**7)), "num_mixtures must be in 1..64"),
    ("mixtures-string", lambda: safetensors_bytes(with_config(num_mixtures="4")), "num_mixtures must be an integer"),
    ("stem-1000", lambda: safetensors_bytes(with_config(stem_factor=1000)), "stem_factor must be in 1..8"),
    ("context-1e9", lambda: safetensors_bytes(with_config(pixel_context=10**9)), "pixel_context must be in"),
    ("channels-2", lambda: safetensors_bytes(with_config(image_channels=2)), "image_channels must be 1 or 3"),
    ("channels-true", lambda: safetensors_bytes(with_config(image_channels=True)), "image_channels must be 1 or 3"),
    ("min-std-zero", lambda: safetensors_bytes(with_config(min_std=0.0)), "min_std must be in"),
    ("min-std-huge", lambda: safetensors_bytes(with_config(min_std=1e308)), "min_std must be in"),
    ("min-std-string", lambda: safetensors_bytes(with_config(min_std="0.02")), "min_std must be a number"),
    ("min-std-nan", lambda: safetensors_bytes(json.dumps(with_config(min_std=float("nan")))), "not valid JSON"),
    ("too-many-parameters", lambda: safetensors_bytes(with_config(
        stages=[{"width": 1024, "encoder_blocks": 64, "latent_groups": 64, "latent_channels": 256}] * 8)),
     "parameters, more than the limit"),
    ("config-missing", lambda: safetensors_bytes({k: v for k, v in description().items() if k != "model_config"}),
     "expected a mapping"),
    ("config-extra-key", lambda: safetensors_bytes(with_config(surprise=1)), "unknown keys ['surprise']"),
    ("metadata-100000-deep", lambda: safetensors_bytes(deep(100_000)), "more than 65,536"),
    ("metadata-20000-deep", lambda: safetensors_bytes(deep(20_000)), "nested deeper than 16"),
    ("metadata-config-deep", lambda: safetensors_bytes(json.dumps(with_stage(width=json.loads("[" * 18 + "]" * 18)))),
     "nested deeper"),
    ("metadata-1mb", lambda: safetensors_bytes(json.dumps(description()) + " " * 2**20), "more than 65,536"),
    ("metadata-not-json", lambda: safetensors_bytes("{not json"), "not valid JSON"),
    ("metadata-list", lambda: safetensors_bytes("[1, 2]"), "is not vaezip weights"),
    ("no-metadata", lambda: safetensors_bytes(None), "no vaezip metadata"),
    ("wrong-kind", lambda: safetensors_bytes(description(kind="vaezip-checkpoint")), "is not vaezip weights"),
    ("format-99", lambda: safetensors_bytes(description(format_version=99)), "weights format 99"),
    ("format-true", lambda: safetensors_bytes(description(format_version=True)), "weights format True"),
    ("format-1-with-context", lambda: safetensors_bytes(description(format_version=1)), "format 1 cannot have"),
    ("name-list", lambda: safetensors_bytes(description(name=[1])), "model name must be printable"),
    ("name-newline", lambda: safetensors_bytes(description(name="a\nb")), "model name must be printable"),
    ("name-1mb", lambda: safetensors_bytes(description(name="n" * 60000)), "model name must be printable"),
    ("big-config-small-tensors", lambda: safetensors_bytes(big_config()), "weights do not match the model config"),
    ("missing-tensor", lambda: safetensors_bytes(description(), _drop_one()), "missing"),
    ("extra-tensor", lambda: safetensors_bytes(description(), {**STATE, "evil": torch.zeros(3)}), "unexpected 'evil'"),
    ("wrong-shape", lambda: safetensors_bytes(description(), _reshaped()), "decoder.head.weight has shape"),
    ("integer-tensor", lambda: safetensors_bytes(description(), _retyped()), "not a floating-point tensor"),
    ("empty-file", lambda: b"", "not a readable safetensors file"),
    ("garbage", lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "safetensors"),
    ("header-length-2^62", lambda: (2**62).to_bytes(8, "little") + b"{}", "more than 4,194,304"),
    ("header-5mb", lambda: safetensors_bytes(json.dumps(description()) + " " * 5 * 2**20),
     "more than 4,194,304"),
    ("header-length-lies", lambda: (100).to_bytes(8, "little") + safetensors_bytes(description())[8:],
     "not a readable safetensors file"),
    ("truncated", lambda: safetensors_bytes(description())[:-100], "not a readable safetensors file"),
]
IDS = [case[0] for case in CASES]


class BuildSpy:
    """Stands in for HierarchicalVAE inside vaezip.checkpoint; records every model built with real memory."""

    def __init__(self):
        self.real_builds: list[ModelConfig] = []
        spy = self

        class Spied(HierarchicalVAE):
            def __init__(self, config):
                if torch.empty(0).device.type != "meta":
                    spy.real_builds.append(config)
                super().__init__(config)

        self.cls = Spied


@pytest.fixture
def spy(monkeypatch) -> BuildSpy:
    recorder = BuildSpy()
    monkeypatch.setattr(checkpoint_module, "HierarchicalVAE", recorder.cls)
    return recorder


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message.strip() and "\n" not in message.strip(), repr(message)
    assert len(message) < 400, message
    return message


@pytest.mark.parametrize("name,make,fragment", CASES, ids=IDS)
def test_crafted_weights_are_refused_before_building(name, make, fragment, tmp_path, spy):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(make())
    with pytest.raises((CheckpointError, ConfigError)) as caught:
        load_model(path)
    assert fragment in one_line(caught.value)
    assert spy.real_builds == [], "a model was built before the file was refused"


def test_the_spy_sees_a_genuine_build(tmp_path, spy):
    path = tmp_path / "good.safetensors"
    path.write_bytes(safetensors_bytes(description()))
    loaded = load_model(path)
    assert loaded.name == "crafted" and spy.real_builds == [TINY]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, STATE[key])


def _checkpoint(tmp_path, name, **changes):
    from vaezip.checkpoint import save_checkpoint

    payload = {"model_config": config_to_dict(TINY), "ema": STATE, "model": STATE, "step": 0}
    payload.update(changes)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, {k: v for k, v in payload.items() if v is not None})
    return path


PT_CASES = [
    ("6000-stages", {"model_config": {**config_to_dict(TINY), "stages": config_to_dict(TINY)["stages"] * 3000}},
     "1..8 stages"),
    ("mixtures-1e7", {"model_config": {**config_to_dict(TINY), "num_mixtures": 10**7}}, "num_mixtures must be in"),
    ("width-string", {"model_config": {**config_to_dict(TINY), "stages": [
        {**s, "width": "32"} for s in config_to_dict(TINY)["stages"]]}}, "width must be an integer"),
    ("no-ema", {"ema": None}, "checkpoint lacks"),
    ("ema-not-tensors", {"ema": {"a": 1}}, "not a mapping of names to tensors"),
    ("ema-wrong-shape", {"ema": {**STATE, "decoder.head.bias": torch.zeros(7)}}, "decoder.head.bias has shape"),
    ("config-not-mapping", {"model_config": [1, 2]}, "expected a mapping"),
    ("big-config-small-tensors", {"model_config": big_config()["model_config"]}, "do not match the model config"),
]


@pytest.mark.parametrize("name,changes,fragment", PT_CASES, ids=[c[0] for c in PT_CASES])
def test_crafted_checkpoints_are_refused_before_building(name, changes, fragment, tmp_path, spy):
    path = _checkpoint(tmp_path, name, **changes)
    with pytest.raises((CheckpointError, ConfigError)) as caught:
        load_model(path)
    assert fragment in one_line(caught.value)
    assert spy.real_builds == []


def test_checkpoint_format_must_be_an_int(tmp_path):
    path = tmp_path / "bool.pt"
    torch.save({"kind": "vaezip-checkpoint", "format_version": True, "model_config": config_to_dict(TINY),
                "ema": STATE}, path)
    with pytest.raises(CheckpointError, match="checkpoint format True"):
        load_model(path)
    torch.save({"kind": "vaezip-checkpoint", "format_version": 2.0, "model_config": config_to_dict(TINY),
                "ema": STATE}, path)
    with pytest.raises(CheckpointError, match="checkpoint format 2.0"):
        load_model(path)


# ---------------------------------------------------------------------------------------------- configs


def test_parameter_count_is_the_models():
    import random

    rng = random.Random(0)
    configs = [preset.model for preset in PRESETS.values()]
    for _ in range(40):
        stages = tuple(StageConfig(rng.randint(1, 24), rng.randint(0, 2), rng.randint(0, 2), rng.randint(1, 6))
                       for _ in range(rng.randint(1, 4)))
        if sum(s.latent_groups for s in stages):
            configs.append(ModelConfig(image_channels=rng.choice([1, 3]), stem_factor=rng.randint(1, 4),
                                       stages=stages, num_mixtures=rng.randint(1, 5),
                                       pixel_context=rng.choice([0, 5, 16])))
    for config in configs:
        with torch.device("meta"):
            model = HierarchicalVAE(config)
        assert parameter_count(config) == sum(p.numel() for p in model.state_dict().values()), config


def test_presets_and_shipped_models_are_inside_the_limits():
    from vaezip import zoo

    for preset in PRESETS.values():
        assert parameter_count(preset.model) < MAX_PARAMETERS
        assert model_config_from_dict(config_to_dict(preset.model)) == preset.model
    for name, entry in zoo.manifest()["models"].items():
        version = 2 if "pixel_context" in entry["config"] else 1
        model_config_from_dict(entry["config"], version)
        model, _ = load_weights(zoo.PRETRAINED_DIR / entry["file"], expected_sha256=entry["sha256"])
        assert model.config.num_groups > 0


def test_configs_refuse_bad_types_in_python_too():
    stage = get_preset("tiny").model.stages[0]
    for bad in ({"width": True}, {"width": 2.0}, {"latent_channels": "4"}, {"encoder_blocks": -1}):
        with pytest.raises(ConfigError):
            dataclasses.replace(stage, **bad)
    for bad in ({"num_mixtures": 0}, {"stem_factor": 9}, {"min_std": float("inf")}, {"min_std": False},
                {"image_channels": 3.0}, {"stages": (1,)}, {"stages": ()}, {"pixel_context": -1}):
        with pytest.raises(ConfigError):
            dataclasses.replace(get_preset("tiny").model, **bad)
    # A list of stages is accepted and stored as a tuple (the config stays hashable).
    config = dataclasses.replace(get_preset("tiny").model, stages=list(get_preset("tiny").model.stages))
    assert config == get_preset("tiny").model and hash(config) == hash(get_preset("tiny").model)


# ---------------------------------------------------------------------------------------------- the CLI

CLI_CASES = ["negative-width", "string-width", "mixtures-1e7", "6000-stages", "metadata-100000-deep",
             "big-config-small-tensors", "garbage"]
MEMORY_LIMIT = 2 * 2**30  # a fresh vaezip process peaks near 0.5 GB; num_mixtures 10^7 alone would take 12 GB


# `python -m vaezip` that writes its own peak RSS (VmHWM: the high-water mark of the memory it has held since it
# started, not of the forked test process it began as) to the file named by VAEZIP_PEAK_FILE as it ends (vaezip's
# main ends by os._exit). os.wait4's ru_maxrss counts the process it was forked from: a worker that had compiled
# the coder's kernels (~1.8 GB then) made a child that peaked at 0.3 GB report 2.6 GB.
MEASURED_CLI = """
import os, runpy, sys
def record():
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    with open(os.environ["VAEZIP_PEAK_FILE"], "w") as out:
        out.write(str(peak))
real_exit = os._exit
def exit_recording(code):
    record()
    real_exit(code)
os._exit = exit_recording
sys.argv[0] = "vaezip"
runpy.run_module("vaezip", run_name="__main__", alter_sys=True)
"""


def run_measured(*args: str) -> tuple[int, str, str, int]:
    """`python -m vaezip ARGS` in a fresh process: (exit code, stdout, stderr, that process's peak RSS bytes)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("the child's own peak memory is read from /proc (Linux)")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as folder:
        peak_file = os.path.join(folder, "peak")
        proc = subprocess.Popen([sys.executable, "-c", MEASURED_CLI, *args], stdout=out, stderr=err,
                                env={**os.environ, "VAEZIP_PEAK_FILE": peak_file})
        killer = threading.Timer(900, proc.kill)
        killer.start()
        try:
            proc.wait()
        finally:
            killer.cancel()
        out.seek(0)
        err.seek(0)
        with open(peak_file) as recorded:
            peak = int(recorded.read())
        return proc.returncode, out.read().decode(), err.read().decode(), peak


@pytest.fixture(scope="module")
def genuine_vz(tiny_weights, tmp_path_factory):
    from vaezip.api import compress

    folder = tmp_path_factory.mktemp("crafted-cli")
    pixels = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = folder / "genuine.vz"
    # The model path forced, bits-back tiles in it: a classical coding (smaller for noise), or a file whose
    # every tile went without the model (raw bytes, the predictor), would decode without any weights.
    path.write_bytes(compress(pixels, load_model(tiny_weights[3]), classical=False, predictor=False))
    return path


@pytest.mark.parametrize("name", CLI_CASES)
def test_crafted_weights_through_the_cli(name, genuine_vz, tmp_path):
    make, fragment = {case[0]: case[1:] for case in CASES}[name]
    weights = tmp_path / "crafted.safetensors"
    weights.write_bytes(make())
    out = tmp_path / "out"
    code, stdout, stderr, peak = run_measured("decompress", str(genuine_vz), "-m", str(weights), "-d", str(out))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("vaezip: error: ") and fragment in lines[0], stderr
    assert "Traceback" not in stderr + stdout
    assert not out.exists() or not any(out.iterdir())
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.0f} MiB"


def test_crafted_weights_through_eval(tmp_path):
    weights = tmp_path / "crafted.safetensors"
    weights.write_bytes(safetensors_bytes(with_config(num_mixtures=10**7)))
    code, stdout, stderr, peak = run_measured("eval", str(weights), str(tmp_path / "no-data"))
    assert code == 1 and stderr.strip().count("\n") == 0 and "num_mixtures must be in 1..64" in stderr, stderr
    assert peak < MEMORY_LIMIT


# ---------------------------------------------------------------------------------------------- temporaries


def test_remove_stale_temporaries_of_a_checkpoint_keeps_live_writers(tmp_path):
    target = tmp_path / "last.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".last.pt.tmp-{dead.pid}",
            "live": f".last.pt.tmp-{live.pid}",
            "self": f".last.pt.tmp-{os.getpid()}",
            "parent": f".last.pt.tmp-{os.getppid()}",
            "not-a-pid": ".last.pt.tmp-abc",
            "zero": ".last.pt.tmp-0",
            "other-file": ".other.pt.tmp-999999999",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        (tmp_path / f".last.pt.tmp-{dead.pid}0").mkdir()  # not a file: left alone, and no error
        remove_stale_temporaries(target)
        assert (tmp_path / f".last.pt.tmp-{dead.pid}0").is_dir()
        left = {key for key, name in names.items() if (tmp_path / name).exists()}
    finally:
        live.kill()
        live.wait()
    assert left == set(names) - {"dead"}


def test_a_checkpoints_training_settings_must_have_their_types():
    """`train --resume` reads them from the checkpoint: a crafted one was a traceback mid-run ('<=' between a float
    and a str)."""
    from vaezip.config import ConfigError, TrainConfig, train_config_from_dict

    good = config_to_dict(TrainConfig())
    assert train_config_from_dict(good) == TrainConfig()
    for key, value in (("lr", "fast"), ("seed", True), ("crop", 32.0), ("adam_betas", [0.9]),
                       ("adam_betas", [0.9, "x"]), ("kl_balance", 1), ("optimizer", 3), ("lr", float("nan"))):
        with pytest.raises(ConfigError, match=key):
            train_config_from_dict({**good, key: value})


@pytest.mark.parametrize("changes, fragment", [
    ({"comment": "hello"}, "unknown keys ['comment']"),
    ({"step": "12"}, "step must be a whole number"),
    ({"step": -1}, "step must be a whole number"),
    ({"step": 1.5}, "step must be a whole number"),
])
def test_weights_metadata_is_read_strictly(changes, fragment, tmp_path):
    """As the configs are: unknown keys and a step that is no whole number are refused, not passed over."""
    path = tmp_path / "strict.safetensors"
    path.write_bytes(safetensors_bytes(description(**changes)))
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        load_model(path)
    path.write_bytes(safetensors_bytes(description()))
    assert load_model(path).name == "crafted"


def test_a_refusal_keeps_every_line_of_the_error_it_quotes():
    """Torch's errors about odd tensors say what went wrong past their first line: the one-line refusal keeps
    every line (joined, cut at its limit), not the first alone."""
    quoted = checkpoint_module._one_line(RuntimeError("Could not run 'aten::x' with arguments\n\n  from 'Meta'"))
    assert quoted == "Could not run 'aten::x' with arguments from 'Meta'"
    assert checkpoint_module._one_line(ValueError("")) == "ValueError"
    assert checkpoint_module._one_line(ValueError("x\n" * 300), limit=50) == "x " * 23 + "x..."
