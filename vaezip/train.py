"""The training loop: random crops -> HVAE -> Adamax with warm-up, update skipping, EMA weights, periodic
validation of the bound, and atomic, resumable checkpoints. No argument parsing or printing here: progress
goes to a `TrainReporter` (the CLI draws it).

`train` runs five steps, each its own function: `resolve_run` (what to train, from what, on which data),
`build` (model, EMA copy, optimizer, sampler), `restore` (initial or checkpointed weights and state), then a
loop of `train_step`, `validate` and `save`. `compare_on_holdout` measures a trained model against others
and classical codecs on the held-out images, with real files."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from vaezip import data as datasets
from vaezip.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from vaezip.config import (
    ModelConfig,
    Preset,
    TrainConfig,
    config_to_dict,
    model_config_from_dict,
    train_config_from_dict,
)
from vaezip.devices import amx_available, resolve_device
from vaezip.evaluate import EvalResult, evaluate
from vaezip.files import Terminated, remove_stale_temporaries
from vaezip.model import HierarchicalVAE
from vaezip.model.layers import MAX_BINARY_BETA


# Validation also compresses this many held-out images for real (one archive), so training shows the
# achieved rate next to the bound.
CODED_VALIDATION_IMAGES = 64

# `init=DEFAULT_INIT`: start from the shipped default model for the data's mode (grey or colour), chosen once
# the data is loaded. '@' is not allowed in model names, so no model can be called this.
DEFAULT_INIT = "@default"
# A model that already codes photographs well only needs nudging towards a folder's statistics: the
# from-scratch rate (2e-3) knocks it out of its minimum within a few hundred steps, and a long warm-up wastes
# a short run. 2e-4 is the rate the shipped photo model's own fine-tunes use.
FINE_TUNE_OVERRIDES: dict[str, Any] = {"lr": 2e-4, "warmup_steps": 50}
# ModelConfig options a new run can set (train's model_options) -> the CLI flag that sets a value, for errors
MODEL_OPTION_FLAGS: dict[str, Any] = {
    "likelihood": lambda value: f"--likelihood {value}",
    "channel_coupling": lambda value: "--channel-coupling" if value else "--no-channel-coupling",
    "context_order": lambda value: f"--context-order {value}",
    "binary_groups": lambda value: f"--binary-groups {value}",
    "global_latents": lambda value: f"--global-latents {value}",
}

# The end-of-training comparison codes real files: bounded so that it takes seconds to a minute or two on a
# 2-core CPU, not a second training run. Held-out images are centre-cropped to at most this side.
COMPARISON_IMAGES = 50
COMPARISON_SIDE = 64
COMPARISON_CODECS = ("webp", "jpegxl-e7")


class TrainReporter(Protocol):
    def start(self, info: dict[str, Any]) -> None: ...
    def step(self, step: int, stats: dict[str, float]) -> None: ...
    def validation(self, step: int, result: EvalResult) -> None: ...
    def coded(self, step: int, achieved_bpsp: float, bound_bpsp: float, images: int) -> None: ...
    def checkpoint(self, step: int, path: Path) -> None: ...
    # Optional: `stopped(step, path, signum)` when a signal stopped the run after saving it.


class SilentReporter:
    def start(self, info): ...
    def step(self, step, stats): ...
    def validation(self, step, result): ...
    def coded(self, step, achieved_bpsp, bound_bpsp, images): ...
    def checkpoint(self, step, path): ...
    def stopped(self, step, path, signum): ...


@dataclass
class Counters:
    images_seen: int = 0
    skipped_nan: int = 0
    skipped_norm: int = 0
    grad_norm_mean: float = 0.0  # running mean of accepted gradient norms
    accepted: int = 0
    train_seconds: float = 0.0
    best_val_bpsp: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    # How far a time-planned run is through its learning-rate decay (0..1); unused by step-planned runs.
    schedule_progress: float = 0.0


@dataclass(frozen=True)
class Timing:
    """What a session does by the clock, besides what TrainConfig does by steps. All seconds of wall time.

    time_schedule: decay the learning rate over the time left (`time_limit`) rather than over decay_steps,
    so that a run of a few minutes ends its cosine when its time ends, whatever the machine's speed.
    A validation also comes `first_validation_seconds` after the start and then every `validation_seconds`,
    a checkpoint every `checkpoint_seconds`; `validate_at_start` validates a new run before its first step
    (the bound of the model it starts from)."""

    time_limit: float | None = None
    time_schedule: bool = False
    checkpoint_seconds: float | None = None
    first_validation_seconds: float | None = None
    validation_seconds: float | None = None
    validate_at_start: bool = False


def learning_rate(config: TrainConfig, step: int, progress: float | None = None) -> float:
    """Linear warm-up, then cosine decay to lr * lr_final_fraction: over decay_steps, or along `progress`
    (0..1, a time-planned run's share of its decay done)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if progress is None:
        if config.decay_steps <= 0:
            return config.lr * warm
        progress = step / config.decay_steps
    progress = min(1.0, max(0.0, progress))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warm * (config.lr_final_fraction + (1 - config.lr_final_fraction) * cosine)


def kl_weight(config: TrainConfig, step: int) -> float:
    """The weight of the KL term in the training loss at `step` (0-based, counted across resumes): it ramps
    linearly from 1/kl_warmup_steps to 1 over the first kl_warmup_steps steps (0: always 1). Only the loss
    is weighted: validation always reports the full bound."""
    if config.kl_warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / config.kl_warmup_steps)


def kl_balancing(config: TrainConfig, step: int) -> bool:
    """Whether the training loss at `step` weights each latent group's KL by its balancing coefficient
    (model/vae.py: kl_balance_coefficients): with `kl_balance`, during the KL warm-up (step < kl_warmup_steps).
    Afterwards every coefficient is 1: the loss is the plain ELBO."""
    return config.kl_balance and step < config.kl_warmup_steps


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use adamax or adamw")


def set_threads(count: int) -> int:
    """Use `count` CPU threads for torch's operators; returns the previous count."""
    if count < 1:
        raise ValueError(f"--threads must be at least 1, not {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    return previous


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun). Every rank draws its own random
    crops and latent noise (seeded by its rank); DistributedDataParallel averages the gradients, so the
    replicas take identical steps; rank 0 alone validates, saves checkpoints and reports."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    collective_device: str = "cpu"  # where tensors for collectives live (cuda for nccl)
    owns_group: bool = False  # init_distributed started the process group: close() ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, stop: bool, progress: float) -> tuple[bool, float]:
        """(whether any rank stops, rank 0's schedule progress): the clock and signals are per process, but
        every rank must leave the loop at the same step and use the same learning rate."""
        if self.world == 1:
            return stop, progress
        import torch.distributed as dist

        values = torch.tensor([float(stop), progress if self.main else 0.0], dtype=torch.float64,
                              device=self.collective_device)
        dist.all_reduce(values)
        return bool(values[0] > 0), float(values[1])

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(tensor)
        return float(tensor[0]) / self.world

    def close(self) -> None:
        """Wait for every rank (rank 0 saves last), then end the process group if this process started it."""
        if self.world == 1:
            return
        import torch.distributed as dist

        dist.barrier()
        if self.owns_group:
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process. The backend is gloo
    on CPUs, nccl on CUDA devices."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local,
                       collective_device=f"cuda:{local}" if device.type == "cuda" else "cpu", owns_group=owns)


def _pil_images(arrays) -> list:
    from PIL import Image

    return [(f"{index}.png", Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array))
            for index, array in enumerate(arrays)]


def coded_rate(model: HierarchicalVAE, images, crop: int, device: torch.device) -> tuple[float, float, int]:
    """Compress the first validation images (centre crops) as one archive, every tile by the model but the
    stream's first (no predictor or classical coding: how close the coder gets to this model's bound, as the end's
    comparison measures the model's own stream): (achieved, bound, count). The achieved rate is NaN where no tile
    went through the model (a few small held-out images: a stream's first tiles have no bits-back to pay for the
    model's latents, and the predictor codes them), which would be the same figure whatever the weights."""
    from codec.container import read_versioned
    from vaezip.api import LoadedModel, compress_images
    from vaezip.evaluate import batches_of
    from vaezip.unpack import needs_no_model

    arrays = []
    for batch in batches_of(images[:CODED_VALIDATION_IMAGES], CODED_VALIDATION_IMAGES, crop):
        arrays.extend(pixels.transpose(1, 2, 0) for pixels in batch)  # C, H, W -> H, W, C
    pil = _pil_images(arrays)
    was_training = model.training
    result = compress_images(pil, LoadedModel("validation", model, "0" * 64, "memory"), device=device.type,
                             predictor=False, classical=False)
    model.train(was_training)
    achieved = math.nan if needs_no_model(read_versioned(result.data)[1]) else result.achieved_bpsp
    return achieved, result.bound_bpsp, len(pil)


# A mixture part with fewer images than this gives none to validation: holding out one of six photographs
# would cost a sixth of the data that teaches the model camera-scale statistics.
MIN_IMAGES_FOR_HOLDOUT = 20


def _pixels_sha256(sets) -> str:
    digest = hashlib.sha256()
    for image_set in sets:
        for index in range(len(image_set)):
            image = np.ascontiguousarray(image_set.images[index])
            digest.update(repr(image.shape).encode())
            digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainingData:
    parts: tuple[datasets.ImageSet, ...]  # what the sampler crops from
    weights: tuple[float, ...]
    validation: datasets.ImageSet

    @property
    def channels(self) -> int:
        return self.parts[0].channels

    @property
    def images(self) -> int:
        """Every image read, the held-out ones with the others."""
        return sum(len(part) for part in self.parts) + len(self.validation)

    @functools.cached_property
    def held_out_sha256(self) -> str:
        """A digest of the held-out images' pixels (once: every checkpoint records it): a resumed run checks that
        it validates on the same ones (a file renamed in the folder moves which ones are held out, the count
        unchanged)."""
        return _pixels_sha256([self.validation])

    @functools.cached_property
    def images_sha256(self) -> str:
        """A digest of every image's pixels, the trained-on ones too: a resumed run checks that it trains on the
        same images (one replaced, the count unchanged, went on without a word)."""
        return _pixels_sha256([*self.parts, self.validation])

    def sampler(self, crop: int, seed: int):
        if len(self.parts) == 1:
            return datasets.CropSampler(self.parts[0], crop, seed=seed)
        return datasets.MixtureSampler(self.parts, self.weights, crop, seed=seed)


def _load_data(source: str, channels: int | None, val_images: int) -> TrainingData:
    mixture = datasets.parse_mixture(source)
    if len(mixture) == 1:  # (`imgs@2`: one part, its weight no matter)
        train_set, val_set = datasets.split_holdout(datasets.load(mixture[0][0], channels=channels),
                                                    max_count=val_images)
        if len(val_set) == 0:  # validation, the end's comparison and --name's check all need held-out images
            count = len(train_set)
            asked = "" if val_images >= 1 else f" (and val_images 1 or more, not {val_images})"  # the API's
            raise datasets.DataError(f"{source}: {count} image{'' if count == 1 else 's'}, none held out: a run holds "
                                     f"some out to measure the model on, so it needs at least 2{asked}")
        return TrainingData((train_set,), (1.0,), val_set)
    loaded = [datasets.load(name, channels=channels) for name, _ in mixture]
    if channels is None and len({part.channels for part in loaded}) > 1:
        loaded = [part if part.channels == 3 else datasets.load(name, channels=3)
                  for (name, _), part in zip(mixture, loaded)]
    parts, held_out = [], []
    for part in loaded:
        if len(part) >= MIN_IMAGES_FOR_HOLDOUT:
            part, holdout = datasets.split_holdout(part, max_count=max(1, val_images // len(loaded)))
            held_out.append(holdout)
        parts.append(part)
    if not held_out:
        raise datasets.DataError(
            f"{source}: no mixture part has {MIN_IMAGES_FOR_HOLDOUT} images to hold out for validation")
    images = [image for holdout in held_out for image in holdout]
    stacked = images if len({image.shape for image in images}) > 1 else np.stack(images)
    validation = datasets.ImageSet(f"{source}:val", stacked)
    return TrainingData(tuple(parts), tuple(weight for _, weight in mixture), validation)


def is_user_data(source: str) -> bool:
    """Whether `source` is the user's own images (a folder, an image or an .npz file) rather than a named
    data set or a mixture: those are what a run starts from the shipped model for by default."""
    if datasets.names_data_set(source) or len(datasets.parse_mixture(source)) != 1:
        return False
    return Path(source).expanduser().exists()


# ---------------------------------------------------------------------------------------------- resolve


@dataclass
class RunPlan:
    """What a session trains, from what, on which data: the arguments and the checkpoint reconciled."""

    run_dir: Path
    checkpoint_path: Path
    data_source: str
    model_config: ModelConfig
    train_config: TrainConfig
    training_data: TrainingData
    saved: dict[str, Any] | None  # the checkpoint resumed
    # (inode, size, mtime) of the run's checkpoint as this run last saw it (None: there was none): a save finding
    # another refuses to write over it (two runs given one --out)
    checkpoint_seen: tuple[int, int, int] | None
    initial: Any  # the LoadedModel a new run starts from (None: random weights or resumed)
    init_record: dict[str, str] | None  # {"name", "sha256"} of the model the run started from
    time_schedule: bool


def _load_initial(init: str, channels: int):
    from vaezip.api import load_model

    if init == DEFAULT_INIT:
        from vaezip import zoo

        init = zoo.default_for("L" if channels == 1 else "RGB")
    return load_model(init)


def _resumed_data(run_dir: Path, given: str | None, saved: str) -> str:
    """The data a resumed run continues on: the run's own. Other data (which would also hold out other images) is
    refused; a path the run recorded (not a data set's name, a mixture or an .npz's key) that is not found from
    here is taken as `given` says, with a warning."""
    if not given or given == saved:
        return saved
    here, there = Path(given).expanduser(), Path(saved).expanduser()
    if here.exists() and there.exists() and here.resolve() == there.resolve():
        return given
    a_path = not datasets.names_data_set(saved) and len(datasets.parse_mixture(saved)) == 1 and ":" not in there.name
    if there.exists() or not here.exists() or not a_path:
        raise CheckpointError(f"--resume continues {run_dir} on {saved}, not on {given}: to train it on other "
                              f"images, start a new run from it (--init {run_dir} --out NEW)")
    warnings.warn(f"--resume: {run_dir} was trained on {saved}, not found from here; continuing on {given}",
                  stacklevel=2)
    return given


def resolve_run(
    run_dir: Path,
    data_source: str,
    preset: Preset,
    *,
    resume: bool,
    train_overrides: dict[str, Any] | None,
    init: str | None,
    channels: int | None,
    pixel_context: int | None,
    time_schedule: bool,
    residual_posterior: bool = False,
    model_options: dict[str, Any] | None = None,
) -> RunPlan:
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    saved = None
    checkpoint_seen = checkpoint_identity(checkpoint_path)
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path, map_location="cpu")
        model_config = model_config_from_dict(saved["model_config"])
        train_config = train_config_from_dict(saved["train_config"])
        data_source = _resumed_data(run_dir, data_source, saved["data_source"])
        # A resumed run continues exactly: what it was set up with stays (its held-out images, its schedule).
        # How often it checkpoints or validates changes neither the model nor the images: given, it is taken.
        bookkeeping = {key: value for key, value in (train_overrides or {}).items()
                       if key in ("checkpoint_every", "val_every")}
        train_config = dataclasses.replace(train_config, **bookkeeping)
        changed = {key: value for key, value in (train_overrides or {}).items()
                   if key not in bookkeeping and getattr(train_config, key) != value}
        if channels is not None and channels != model_config.image_channels:
            changed["channels"] = channels
        if changed:
            was = ", ".join(f"{key} {getattr(train_config, key, model_config.image_channels)}" for key in changed)
            raise CheckpointError(f"--resume continues {run_dir} as it was set up ({was}), not with "
                                  f"{', '.join(f'{key} {value}' for key, value in changed.items())}: to change "
                                  f"them, start a new run from it (--init {run_dir} --out NEW)")
        time_schedule = saved.get("schedule") == "time"
    else:
        if resume:
            raise CheckpointError(f"--resume: no checkpoint at {checkpoint_path}")
        if checkpoint_path.exists():
            raise FileExistsError(f"{checkpoint_path} exists: use --resume to continue it or another --out")
        train_config = dataclasses.replace(preset.train, **(train_overrides or {}))
        if train_config.kl_balance and train_config.kl_warmup_steps <= 0:
            raise ValueError("kl_balance needs a KL warm-up (kl_warmup_steps > 0): it only applies during one")
        if train_config.importance_samples < 1:
            raise ValueError(f"importance_samples must be at least 1, not {train_config.importance_samples}")
        if train_config.kl_balance and train_config.importance_samples > 1:
            raise ValueError("kl_balance weights the analytic KL terms of the ELBO: it does not combine with "
                             "importance_samples > 1")
        if not 0 < train_config.binary_beta <= MAX_BINARY_BETA:
            raise ValueError(f"binary_beta must be in (0, {MAX_BINARY_BETA:g}], not {train_config.binary_beta}")
        model_config = preset.model
    initial = None
    if saved is not None:
        init_record = saved.get("init")
    elif init and init != DEFAULT_INIT:  # a named start fails before the data is read
        initial = _load_initial(init, 3)
    training_data = _load_data(data_source, channels if saved is None else model_config.image_channels,
                               train_config.val_images)
    if saved is not None and saved.get("data_images", training_data.images) != training_data.images:
        raise CheckpointError(f"--resume: {data_source} holds {training_data.images} images now, "
                              f"{saved['data_images']} when {run_dir} began (the held-out ones would be others): to "
                              f"train on them, start a new run from it (--init {run_dir} --out NEW)")
    if saved is not None and saved.get("held_out_sha256") not in (None, training_data.held_out_sha256):
        raise CheckpointError(f"--resume: {data_source} holds other images than when {run_dir} began (the held-out "
                              f"ones are others now: a file renamed, replaced or added with another removed): to "
                              f"train on them, start a new run from it (--init {run_dir} --out NEW)")
    if saved is not None and saved.get("images_sha256") not in (None, training_data.images_sha256):
        raise CheckpointError(f"--resume: {data_source} holds other images than when {run_dir} began (one changed or "
                              f"replaced): to train on them, start a new run from it (--init {run_dir} --out NEW)")
    if saved is None and init == DEFAULT_INIT:
        initial = _load_initial(init, training_data.channels)
    if initial is not None:
        model_config = initial.model.config
        init_record = {"name": initial.name, "sha256": initial.sha256}
    elif saved is None:
        init_record = None
    if initial is not None and initial.model.config.image_channels == 3 and training_data.channels == 1:
        from vaezip.model.convert import grey_from_colour

        initial = dataclasses.replace(initial, model=grey_from_colour(initial.model))
        model_config = initial.model.config
    if saved is None and initial is None:
        model_config = dataclasses.replace(model_config, image_channels=training_data.channels)
    elif training_data.channels != model_config.image_channels:
        start = f"--init {init}" if saved is None else f"the run in {run_dir}"
        kinds = {1: "grey", 3: "colour"}
        raise CheckpointError(f"{data_source}: {kinds.get(training_data.channels)} images, but {start} is a "
                              f"{kinds.get(model_config.image_channels)} model (--channels "
                              f"{model_config.image_channels} converts the images)")
    if saved is not None and pixel_context is not None and pixel_context != model_config.pixel_context:
        # as every other model option: a run's model is the one it started with (this one was passed over in silence)
        raise CheckpointError(f"--pixel-context {pixel_context}: the run to resume trains a model with pixel_context "
                              f"= {model_config.pixel_context!r}")
    if saved is None and pixel_context is not None:
        if initial is not None and initial.model.config.pixel_context not in (0, pixel_context):
            raise CheckpointError("--pixel-context: the --init model already has a context head of another width")
        model_config = dataclasses.replace(model_config, pixel_context=pixel_context)
    if residual_posterior and not model_config.residual_posterior:
        if saved is not None:
            raise CheckpointError("--residual-posterior: the run to resume trains a model with an absolute posterior")
        if initial is not None:
            # Its posterior heads output absolute (mean, std): read as (shift, ratio) they would be garbage.
            raise CheckpointError(f"--residual-posterior: the start model {initial.name!r} has an absolute "
                                  "posterior; a residual-posterior model starts from scratch (--preset, or "
                                  "--from-scratch for a folder of your images) or from a residual-posterior model")
        model_config = dataclasses.replace(model_config, residual_posterior=True)
    for option, value in (model_options or {}).items():
        if getattr(model_config, option) == value:
            continue
        if option == "channel_coupling" and model_config.image_channels == 1:
            continue  # a grey mixture has no coupling to switch off
        flag = MODEL_OPTION_FLAGS[option](value)
        if option == "global_latents" and saved is None and initial is not None \
                and not initial.model.config.global_latents:
            # a global group added to a model without one starts as nothing (restore: start_global_group), so the
            # run starts from exactly that model
            model_config = dataclasses.replace(model_config, global_latents=value)
            continue
        if option == "context_order":
            if not model_config.pixel_context:
                raise CheckpointError(f"{flag}: the model has no pixel-context head: give --pixel-context WIDTH too")
            if saved is None and initial is not None and not initial.model.config.pixel_context:
                # the head is new (--pixel-context on a model without one): any order
                model_config = dataclasses.replace(model_config, context_order=value)
                continue
        if saved is not None:
            raise CheckpointError(f"{flag}: the run to resume trains a model with {option} = "
                                  f"{getattr(model_config, option)!r}")
        if initial is not None:
            # Its head's outputs mean something else under another likelihood
            raise CheckpointError(f"{flag}: the start model {initial.name!r} has {option} = "
                                  f"{getattr(model_config, option)!r}; start from scratch (--preset, or "
                                  "--from-scratch for a folder of your images) or from a model with the same")
        model_config = dataclasses.replace(model_config, **{option: value})
    if model_config.binary_groups and train_config.importance_samples > 1:
        raise ValueError("binary latent groups train on the ELBO: a relaxed binary sample has no probability for "
                         "importance_samples > 1 to weigh")
    return RunPlan(run_dir, checkpoint_path, data_source, model_config, train_config, training_data, saved,
                   checkpoint_seen, initial, init_record, time_schedule)


def checkpoint_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of the file at `path`, None where there is none: what a save compares."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


# ---------------------------------------------------------------------------------------------- build


@dataclass
class Session:
    """One training session: the plan, the live objects, and where the loop is."""

    plan: RunPlan
    device: torch.device
    dist: Distributed
    model: HierarchicalVAE
    ema: HierarchicalVAE
    optimizer: torch.optim.Optimizer
    sampler: Any
    trained: torch.nn.Module  # the model, or its DDP wrapper
    counters: Counters = field(default_factory=Counters)
    step: int = 0
    seconds_before: float = 0.0  # training time of earlier sessions
    session_start: float = field(default_factory=time.perf_counter)
    checkpoint_seen: tuple[int, int, int] | None = None  # the run's checkpoint as this session last saw it
    # What the session was asked for (a checkpoint records it: `--resume` alone goes on to the same target)
    target: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.checkpoint_seen is None:
            self.checkpoint_seen = self.plan.checkpoint_seen

    @property
    def config(self) -> TrainConfig:
        return self.plan.train_config


def build(plan: RunPlan, device: torch.device, dist: Distributed) -> Session:
    config = plan.train_config
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    sampler = plan.training_data.sampler(config.crop, seed=config.seed + 1000 * dist.rank)
    model = HierarchicalVAE(plan.model_config).to(device)
    if dist.rank:
        torch.manual_seed(config.seed + dist.rank)  # each rank its own latent noise
    if config.train_only_context:
        if model.context is None:
            raise CheckpointError("train_only_context needs a model with a pixel-context head (--pixel-context)")
        model.requires_grad_(False)
        model.context.requires_grad_(True)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, config)
    return Session(plan, device, dist, model, ema, optimizer, sampler, trained=model)


@torch.no_grad()
def start_global_group(model: HierarchicalVAE) -> None:
    """A global group new to a trained model starts as nothing: its projection at zero (every pixel
    distribution is the model's) and its posterior at its prior N(0, 1) (its KL ~0: the integer std table
    gives 1 within a unit of 2**-14), so the run starts from that model's bound."""
    decoder, dims = model.decoder, model.config.global_latents
    decoder.global_projection.weight.zero_()
    decoder.global_projection.bias.zero_()
    decoder.global_posterior.weight.zero_()
    decoder.global_posterior.bias[:dims] = 0.0
    # smooth_std(raw) = log2(1 + 2**raw) + min_std = 1
    decoder.global_posterior.bias[dims:] = math.log2(2.0 ** (1.0 - model.config.min_std) - 1.0)


def restore(session: Session) -> None:
    """Start weights: the initial model's (new run) or the checkpoint's, with the optimizer, counters and every
    random stream (resume: the run continues exactly as if never stopped)."""
    plan, device = session.plan, session.device
    if plan.initial is not None:
        # Strict but for a context head or a global group the initial model lacks (each starts as a zero
        # function: the same model).
        new_parts = ("context.", "decoder.global_")
        for replica in (session.model, session.ema):
            missing, unexpected = replica.load_state_dict(plan.initial.model.state_dict(), strict=False)
            if unexpected or any(not key.startswith(new_parts) for key in missing):
                raise CheckpointError(f"--init weights do not match the model: {(missing + unexpected)[:3]}")
            if any(key.startswith("decoder.global_") for key in missing):
                start_global_group(replica)
    saved = plan.saved
    if saved is not None:
        session.model.load_state_dict(saved["model"])
        session.ema.load_state_dict(saved["ema"])
        session.optimizer.load_state_dict(saved["optimizer"])
        session.step = int(saved["step"])
        session.counters = Counters(**saved["counters"])
        torch.random.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        session.sampler.set_state(saved["rng"]["sampler"])
        if session.dist.rank:
            # The checkpoint holds rank 0's random streams: the other ranks go on with streams of their own,
            # seeded by rank and step, so that they keep drawing other crops than rank 0.
            seed = int(np.random.SeedSequence([session.config.seed, session.dist.rank, session.step])
                       .generate_state(1)[0])
            torch.manual_seed(seed)
            session.sampler = plan.training_data.sampler(session.config.crop, seed=seed)
    session.seconds_before = session.counters.train_seconds
    if session.dist.main:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(plan.checkpoint_path)  # a run killed mid-save left its temporary
    if session.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        session.trained = DistributedDataParallel(
            session.model, device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------------------------------------- step


def bfloat16_steps(device: torch.device) -> bool:
    """Whether the training steps' forward passes run under bfloat16 autocast (convolutions and matmuls in
    bfloat16, the rest float32): on CUDA, and on a CPU that multiplies bfloat16 in AMX tiles, where a step of
    the `cpu` preset (batch 32 of 32x32, forward, backward and Adam) took 0.135 s against float32's 0.19 (the
    quiet 2-core Xeon, 2026-12-03; `python scripts/train_step_speed.py`). Elsewhere, or with ONEDNN_MAX_CPU_ISA
    below AMX (which is how to keep a CPU run in float32), float32."""
    return device.type == "cuda" or (device.type == "cpu" and amx_available())


def train_step(session: Session, progress: float | None) -> dict[str, float]:
    """One optimizer step (skipped if its gradient is not finite or far above the recent norms), the EMA
    update; returns the step's loss, gradient norm and learning rate."""
    config, counters, model = session.config, session.counters, session.model
    lr = learning_rate(config, session.step, progress)
    for group in session.optimizer.param_groups:
        group["lr"] = lr
    batch = torch.from_numpy(session.sampler.sample(config.batch_size)).to(session.device, non_blocking=True)
    bfloat16 = bfloat16_steps(session.device)
    with torch.autocast(device_type=session.device.type, dtype=torch.bfloat16, enabled=bfloat16):
        out = session.trained(batch, kl_weight=kl_weight(config, session.step),
                              kl_balance=kl_balancing(config, session.step),
                              importance_samples=config.importance_samples, binary_beta=config.binary_beta)
    session.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    # Under DDP the gradients (so the norm) are already averaged over the ranks; the loss is too, so that
    # every rank makes the same decision to skip or take the step.
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
    threshold = config.skip_factor * counters.grad_norm_mean
    loss = session.dist.mean(float(out.loss.detach()))
    if not math.isfinite(grad_norm) or not math.isfinite(loss):
        counters.skipped_nan += 1
    elif counters.accepted > 50 and grad_norm > threshold:
        counters.skipped_norm += 1
    else:
        session.optimizer.step()
        counters.accepted += 1
        rate = 1.0 / min(counters.accepted, 100)
        counters.grad_norm_mean += rate * (grad_norm - counters.grad_norm_mean)
        # Early on the average would be dominated by the random initialisation: ramp the decay up.
        decay = min(config.ema_decay, (1 + counters.accepted) / (10 + counters.accepted))
        with torch.no_grad():
            for ema_param, param in zip(session.ema.parameters(), model.parameters()):
                ema_param.lerp_(param, 1.0 - decay)
    session.step += 1
    images = config.batch_size * session.dist.world
    counters.images_seen += images
    return {"loss": loss, "grad_norm": grad_norm, "lr": lr, "images": images}


# ---------------------------------------------------------------------------------------------- validate / save

CodedValidation = Callable[[HierarchicalVAE, Any, int, torch.device], "tuple[float, float, int]"]


def validate(session: Session, reporter: TrainReporter, coded: CodedValidation | None = coded_rate) -> EvalResult:
    """The EMA model's bound on the held-out images (centre crops), then `coded` (compressing some for
    real; None: skip) for the achieved rate."""
    counters, val_set, crop = session.counters, session.plan.training_data.validation, session.config.crop
    result = evaluate(session.ema, val_set.images, batch_size=64, device=session.device, crop=crop)
    entry = {"step": session.step, "val_bpsp": result.bound_bpsp, "images_seen": counters.images_seen}
    reporter.validation(session.step, result)
    if coded is not None:
        achieved, bound, count = coded(session.ema, val_set.images, crop, session.device)
        if not math.isnan(achieved):  # NaN: no tile went through the model, no figure of it to keep
            entry.update(achieved_bpsp=achieved, coded_bound_bpsp=bound)
        reporter.coded(session.step, achieved, bound, count)
    # Recorded once whole: a validation that a stop cut short leaves no entry, so the run's end (or the resumed run
    # at its target) does all of it again
    counters.best_val_bpsp = min(counters.best_val_bpsp, result.bound_bpsp)
    counters.history.append(entry)
    session.model.train()
    return result


def save(session: Session, reporter: TrainReporter) -> None:
    if not session.dist.main:
        return
    plan, counters = session.plan, session.counters
    counters.train_seconds = session.seconds_before + time.perf_counter() - session.session_start
    payload = {
        "model_config": config_to_dict(plan.model_config),
        "train_config": config_to_dict(plan.train_config),
        "data_source": str(plan.data_source),
        "data_images": plan.training_data.images,  # a resumed run checks it: its held-out images depend on it
        "held_out_sha256": plan.training_data.held_out_sha256,  # and that they are the same
        "images_sha256": plan.training_data.images_sha256,  # and that it trains on the same images
        "init": plan.init_record,
        "model": session.model.state_dict(),
        "ema": session.ema.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "step": session.step,
        "counters": dataclasses.asdict(counters),
        "rng": {
            "torch": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if session.device.type == "cuda" else None,
            "sampler": session.sampler.state(),
        },
        "torch_version": str(torch.__version__),
        "target": dict(session.target),  # {"steps": total or None, "minutes": a session's or None}
    }
    if plan.time_schedule:
        payload["schedule"] = "time"  # a resumed run goes on decaying along the time it is given
    if checkpoint_identity(plan.checkpoint_path) != session.checkpoint_seen:
        raise CheckpointError(f"{plan.checkpoint_path} was written by another run meanwhile (two runs given one "
                              f"--out?): this run's step {session.step} is not saved over it")
    save_checkpoint(plan.checkpoint_path, payload)
    session.checkpoint_seen = checkpoint_identity(plan.checkpoint_path)
    reporter.checkpoint(session.step, plan.checkpoint_path)


# ---------------------------------------------------------------------------------------------- signals


class StopRequests:
    """While active (main thread only), Ctrl-C, SIGTERM and SIGHUP ask the loop to stop after the current
    step, so that the checkpoint it then saves is consistent (a step interrupted half-way would leave weights
    and counters disagreeing). A second signal stops at once, as without this."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            self._raise(signum)
        self.signum = signum

    @staticmethod
    def _raise(signum: int):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == getattr(signal, "SIGPIPE", None):
            raise BrokenPipeError("the reader of the training's output went away")
        raise Terminated(signum)

    def request(self, signum: int) -> None:
        """Ask the loop to stop as this signal would (SIGPIPE: the reporter's reader went away)."""
        if self.signum is None:
            self.signum = signum

    def raise_requested(self) -> None:
        if self.signum is not None:
            self._raise(self.signum)

    def __enter__(self) -> "StopRequests":
        if self.enabled:
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is None or signal.getsignal(number) is signal.SIG_IGN:  # nohup: stays ignored
                    continue
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def _signum(stop: BaseException) -> int:
    """The signal a KeyboardInterrupt or vaezip.files.Terminated stands for."""
    return stop.signum if isinstance(stop, Terminated) else signal.SIGINT


# ---------------------------------------------------------------------------------------------- the loop


class _Clock:
    """When the next validation and checkpoint are due by the clock, and how many steps the time left holds."""

    WARM_STEPS = 2  # the first steps of a session allocate and warm caches: too slow to plan from

    def __init__(self, timing: Timing, start_step: int):
        self.timing = timing
        self.started = time.perf_counter()
        self.last_save = self.started
        first = timing.first_validation_seconds or timing.validation_seconds
        self.next_validation = None if first is None else self.started + first
        self.start_step = start_step
        self.rate_from: tuple[float, int] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return self.timing.time_limit is not None and self.elapsed() > self.timing.time_limit

    def stepped(self, step: int) -> None:
        if self.rate_from is None and step - self.start_step >= self.WARM_STEPS:
            self.rate_from = (time.perf_counter(), step)

    def remaining_steps(self, step: int, steps: int | None) -> float | None:
        """Steps left before the step target or the time limit, whichever is first (None: not known yet).
        The rate is the session's average since its warm-up, validations and checkpoints included."""
        left = []
        if steps is not None:
            left.append(max(0, steps - step))
        if self.timing.time_limit is not None and self.rate_from is not None and step > self.rate_from[1]:
            since, from_step = self.rate_from
            seconds_per_step = (time.perf_counter() - since) / (step - from_step)
            left.append(max(0.0, self.timing.time_limit - self.elapsed()) / seconds_per_step)
        return min(left) if left else None

    def validation_due(self) -> bool:
        return self.next_validation is not None and time.perf_counter() >= self.next_validation

    def validated(self) -> None:
        if self.timing.validation_seconds is not None:
            self.next_validation = time.perf_counter() + self.timing.validation_seconds
        elif self.next_validation is not None and time.perf_counter() >= self.next_validation:
            self.next_validation = None

    def checkpoint_due(self) -> bool:
        seconds = self.timing.checkpoint_seconds
        return seconds is not None and time.perf_counter() - self.last_save >= seconds

    def saved(self) -> None:
        self.last_save = time.perf_counter()


def train(
    run_dir: Path,
    data_source: str,
    preset: Preset,
    *,
    steps: int | None,
    resume: bool = False,
    device_name: str = "auto",
    reporter: TrainReporter | None = None,
    train_overrides: dict[str, Any] | None = None,
    time_limit: float | None = None,
    init: str | None = None,
    channels: int | None = None,
    pixel_context: int | None = None,
    residual_posterior: bool = False,
    model_options: dict[str, Any] | None = None,
    timing: Timing | None = None,
    stop_on_signals: bool = False,
    coded_validation: CodedValidation | None = coded_rate,
) -> dict[str, Any]:
    """Train until `steps` (a total, counted across resumes; None: no step limit) or `time_limit` seconds;
    returns a summary, the held-out ImageSet included (`held_out`).

    `init` warm-starts a new run from a model (run folder, .pt, .safetensors or model name; DEFAULT_INIT: the
    shipped default for the data's mode): its architecture replaces the preset's and its (EMA) weights start
    both the trained and the EMA copy; a colour model starting a grey run is converted first
    (`grey_from_colour`). `channels` (1 or 3) converts the data (grey: Pillow's luma); by default a set with
    any colour image trains a colour model. `pixel_context` sets the width of the causal pixel-context head of
    a new run; added to an `init` model, the head starts at zero, so the run starts from exactly that model.
    `residual_posterior` makes a new model's posterior relative to its prior (ModelConfig.residual_posterior):
    refused with an `init` model (or a run to resume) whose posterior is absolute. `model_options`: other
    ModelConfig fields of a new model (MODEL_OPTION_FLAGS: likelihood, channel_coupling, context_order,
    binary_groups, global_latents), refused
    where an `init` model or the run to resume has another value (a context order also goes with a context head
    new to an `init` model).
    `timing` adds clock-driven validations, checkpoints and learning-rate planning (its time_limit, if set,
    replaces `time_limit`). `stop_on_signals`: Ctrl-C / SIGTERM save a checkpoint after the current step, then
    raise KeyboardInterrupt / vaezip.files.Terminated. `coded_validation` compresses held-out images for real
    at each validation (None: only the bound)."""
    reporter = reporter or SilentReporter()
    timing = timing or Timing()
    if timing.time_limit is None and time_limit is not None:
        timing = dataclasses.replace(timing, time_limit=time_limit)
    if steps is None and timing.time_limit is None:
        raise ValueError("train needs a step target or a time limit")
    device = resolve_device(device_name)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    if not dist.main:
        reporter = SilentReporter()  # one rank reports
    plan = resolve_run(run_dir, data_source, preset, resume=resume, train_overrides=train_overrides, init=init,
                       channels=channels, pixel_context=pixel_context, residual_posterior=residual_posterior,
                       model_options=model_options,
                       time_schedule=timing.time_schedule and timing.time_limit is not None)
    session = build(plan, device, dist)
    session.target = {"steps": steps, "minutes": None if timing.time_limit is None else timing.time_limit / 60}
    restore(session)
    config, counters = plan.train_config, session.counters
    val_set = plan.training_data.validation

    reporter.start(
        {
            "device": str(device),
            "world": dist.world,
            "train_images": session.sampler.num_images,  # those the crops are drawn from
            "too_small": session.sampler.skipped,  # images smaller than the crop, never drawn from
            "val_images": len(val_set),
            "crop": session.sampler.crop,
            "clipped": session.sampler.clipped,  # (height, width) of each set of one size below the crop
            "channels": plan.model_config.image_channels,
            "parameters": sum(p.numel() for p in session.model.parameters()),
            "start_step": session.step,
            "init": plan.init_record,
            "steps": steps,
            "time_limit": timing.time_limit,
            "time_schedule": plan.time_schedule,
            "threads": torch.get_num_threads(),
            "model_config": plan.model_config,
            "train_config": config,
        }
    )
    clock = _Clock(timing, session.step)
    cut_short: BaseException | None = None  # a second signal that cut a validation short
    window_start, window_images = time.perf_counter(), 0
    last_val: EvalResult | None = None
    if timing.validate_at_start and plan.saved is None and dist.main:
        last_val = validate(session, reporter, coded_validation)
        clock.validated()
    session.model.train()
    with StopRequests(stop_on_signals) as stop:
        while steps is None or session.step < steps:
            progress = counters.schedule_progress
            remaining = clock.remaining_steps(session.step, steps) if plan.time_schedule else None
            if remaining is not None:
                # Each step takes its share of the decay still to go: the cosine ends with the run, however
                # the machine's speed changes on the way (a fixed plan from the first minute would not).
                progress += (1.0 - progress) / max(1.0, remaining)
            if getattr(reporter, "closed", False) and hasattr(signal, "SIGPIPE"):
                stop.request(signal.SIGPIPE)  # its output's reader went away (`| head`): saved, as on Ctrl-C
            stopping, progress = dist.agree(stop.signum is not None or clock.out_of_time(), progress)
            if stopping:
                break
            counters.schedule_progress = progress
            stats = train_step(session, counters.schedule_progress if plan.time_schedule else None)
            clock.stepped(session.step)
            window_images += stats["images"]
            now = time.perf_counter()
            if dist.main:
                planned = clock.remaining_steps(session.step, steps)
                reporter.step(
                    session.step,
                    {
                        "loss": stats["loss"],
                        "images_per_s": window_images / max(now - window_start, 1e-9),
                        "grad_norm": stats["grad_norm"],
                        "skipped": counters.skipped_nan + counters.skipped_norm,
                        "lr": stats["lr"],
                        "planned_steps": None if planned is None else session.step + round(planned),
                        "seconds_left": None if timing.time_limit is None
                        else max(0.0, timing.time_limit - clock.elapsed()),
                    },
                )
            if now - window_start > 20:
                window_start, window_images = now, 0
            if dist.main and (session.step % config.val_every == 0 or clock.validation_due()):
                try:
                    last_val = validate(session, reporter, coded_validation)
                except (KeyboardInterrupt, Terminated) as second:
                    if stop.signum is None or dist.world > 1:  # not asked to stop, or ranks that must agree first
                        raise
                    # A second signal while a validation (minutes, with its real files) ran: the weights are those
                    # of a whole step, so the run stops saved, where it stopped at once and lost the steps since its
                    # last checkpoint (or left an empty run folder); it ends as that second signal says
                    cut_short = second
                    break
                clock.validated()
            if session.step % config.checkpoint_every == 0 or clock.checkpoint_due():
                save(session, reporter)
                clock.saved()
    if stop.signum is not None:
        save(session, reporter)
        stopped = getattr(reporter, "stopped", None)
        if stopped is not None:
            stopped(session.step, plan.checkpoint_path, stop.signum if cut_short is None else _signum(cut_short))
        # The other ranks may have stopped only because this one did (dist.agree): they end in close()'s
        # barrier, which this rank must reach too before it leaves.
        dist.close()
        if cut_short is not None:
            raise cut_short
        stop.raise_requested()
    # A resumed run already at its target: its checkpoint and history stay as they are (no step, nothing to save),
    # but for the last validation where a stop cut it short
    untouched = plan.saved is not None and session.step == plan.saved["step"]
    if not untouched:  # first: a stop during the last validation (minutes, with its real files) loses no step
        save(session, reporter)
    validated_last = bool(counters.history) and counters.history[-1]["step"] == session.step
    if dist.main and not validated_last:
        try:
            last_val = validate(session, reporter, coded_validation)
        except (KeyboardInterrupt, Terminated) as stopping:  # saved just before: said as any stop is
            stopped = getattr(reporter, "stopped", None)
            if stopped is not None:
                stopped(session.step, plan.checkpoint_path, _signum(stopping))
            raise
        save(session, reporter)  # with the validation in its history
    dist.close()
    validated = [entry for entry in counters.history if "val_bpsp" in entry]
    return {
        "rank": dist.rank,  # only rank 0's summary (and its checkpoint) counts
        "step": session.step,
        "val_bpsp": last_val.bound_bpsp if last_val else validated[-1]["val_bpsp"] if validated else None,
        "best_val_bpsp": counters.best_val_bpsp,
        "skipped_nan": counters.skipped_nan,
        "skipped_norm": counters.skipped_norm,
        "images_seen": counters.images_seen,
        "checkpoint": str(plan.checkpoint_path),
        "channels": plan.model_config.image_channels,
        "init": plan.init_record,
        "data_source": str(plan.data_source),
        "held_out": val_set,
    }


# ---------------------------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    kind: str  # "trained", "model" (another model) or "codec" (a classical codec)
    achieved_bpsp: float  # real bytes of the file(s) per subpixel (a model's: its own stream, every tile by it)
    bound_bpsp: float = math.nan  # the model's negative ELBO (nan for a codec)
    payload_bpsp: float = math.nan  # a model's: its stream without the header (which names the model)


@dataclass(frozen=True)
class Comparison:
    images: int
    side: int  # images were centre-cropped to at most side x side
    subpixels: int
    rows: tuple[ComparisonRow, ...]
    skipped: tuple[str, ...] = ()  # codecs not available here
    default_bpsp: float = math.nan  # `vaezip compress` with the trained model: the smallest of its paths
    default_uses_model: bool = True  # whether some tile of that file went through the trained model

    @property
    def trained(self) -> ComparisonRow:
        return next(row for row in self.rows if row.kind == "trained")

    def worse_than(self) -> list[ComparisonRow]:
        """The other models whose own streams code these images in fewer bits than the trained one's (headers left
        out: they differ by the model's name only), or as many with a lower bound: where every tile of a few small
        held-out images goes raw, every model's stream is the same size, and an untrained model passed."""
        mine = self.trained
        return [row for row in self.rows if row.kind == "model" and (
            row.payload_bpsp < mine.payload_bpsp
            or (row.payload_bpsp == mine.payload_bpsp and row.bound_bpsp < mine.bound_bpsp))]


def holdout_sample(images, max_images: int = COMPARISON_IMAGES, side: int = COMPARISON_SIDE) -> list[np.ndarray]:
    """The first `max_images` held-out images (already a random choice), centre-cropped to side x side."""
    sample = []
    for image in list(images[:max_images]):
        top, left = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
        sample.append(np.ascontiguousarray(image[top: top + side, left: left + side]))
    return sample


def _webp_with_pillow():
    """Lossless WebP through Pillow where imagecodecs is missing (the same libwebp settings as `bench`)."""
    import io

    from PIL import Image, features

    if not features.check("webp"):
        return None

    def encode(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        image = Image.fromarray(np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array)
        image.save(buffer, format="WEBP", lossless=True, quality=100, method=6)
        return buffer.getvalue()

    return encode


def _codec_encoders(names: Sequence[str]) -> tuple[list[tuple[str, Callable]], list[str]]:
    from vaezip.bench.classical import make_codec

    found, skipped = [], []
    for name in names:
        codec = make_codec(name)
        if codec.is_available:
            found.append((name, codec.encode))
        elif name == "webp" and _webp_with_pillow() is not None:
            found.append((name, _webp_with_pillow()))
        else:
            skipped.append(name)
    return found, skipped


def compare_on_holdout(
    trained,
    others: Sequence[Any],
    images,
    *,
    device: str = "auto",
    max_images: int = COMPARISON_IMAGES,
    side: int = COMPARISON_SIDE,
    codecs: Sequence[str] = COMPARISON_CODECS,
) -> Comparison:
    """`trained` and each of `others` (LoadedModels) code the held-out `images` (centre crops, one archive per
    model: real files of the model's own stream, every tile by the model but the first, which no bits-back can
    code, so that the files compare the models; `vaezip compress` keeps the smaller of that and the model-free
    predictor's, which on photographs codes every tile whatever the model: a random-weight model's files came out
    as small as the shipped one's); the trained model's also as `vaezip compress` writes them; each codec of
    `codecs` available here codes each image as its own file. Models with another channel count are left out."""
    from codec.container import read_versioned
    from vaezip.api import compress_images
    from vaezip.unpack import needs_no_model

    sample = holdout_sample(images, max_images, side)
    if not sample:
        raise ValueError("no held-out images to compare on")
    subpixels = sum(image.size for image in sample)
    stacked = np.stack(sample) if len({image.shape for image in sample}) == 1 else sample
    pil = _pil_images(sample)
    target = resolve_device(device)
    channels = trained.model.config.image_channels
    rows = []
    for loaded, kind in [(trained, "trained"), *((other, "model") for other in others)]:
        if loaded.model.config.image_channels != channels:
            continue
        bound = evaluate(loaded.model.to(target), stacked, batch_size=64, device=target).bound_bpsp
        own = compress_images(pil, loaded, device=target.type, predictor=False, classical=False)
        payload = sum(report.payload_bits for report in own.images)
        rows.append(ComparisonRow(loaded.name, kind, own.achieved_bpsp, bound, payload / subpixels))
    default = compress_images(pil, trained, device=target.type)
    encoders, skipped = _codec_encoders(codecs)
    for name, encode in encoders:
        total = sum(len(encode(image)) for image in sample)
        rows.append(ComparisonRow(name, "codec", 8 * total / subpixels))
    header = read_versioned(default.data)[1]  # no coder where every image went classically
    return Comparison(len(sample), side, subpixels, tuple(rows), tuple(skipped), default.achieved_bpsp,
                      header.coder is not None and not needs_no_model(header))
