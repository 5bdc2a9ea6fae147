"""The training loop: random crops -> HVAE -> Adamax with warm-up, update skipping, EMA weights, periodic
validation of the bound, and atomic, resumable checkpoints. No argument parsing or printing here: progress
goes to a `TrainReporter` (the CLI draws it)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vaezip import data as datasets
from vaezip.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_writes,
    save_checkpoint,
)
from vaezip.config import (
    Preset,
    TrainConfig,
    config_to_dict,
    model_config_from_dict,
    train_config_from_dict,
)
from vaezip.evaluate import EvalResult, evaluate
from vaezip.model import HierarchicalVAE


# Validation also compresses this many held-out images for real (one archive), so training shows the
# achieved rate next to the bound.
CODED_VALIDATION_IMAGES = 64


class TrainReporter(Protocol):
    def start(self, info: dict[str, Any]) -> None: ...
    def step(self, step: int, stats: dict[str, float]) -> None: ...
    def validation(self, step: int, result: EvalResult) -> None: ...
    def coded(self, step: int, achieved_bpsp: float, bound_bpsp: float, images: int) -> None: ...
    def checkpoint(self, step: int, path: Path) -> None: ...


class SilentReporter:
    def start(self, info): ...
    def step(self, step, stats): ...
    def validation(self, step, result): ...
    def coded(self, step, achieved_bpsp, bound_bpsp, images): ...
    def checkpoint(self, step, path): ...


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def learning_rate(config: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    if config.decay_steps <= 0:
        return config.lr * warm
    progress = min(1.0, step / config.decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warm * (config.lr_final_fraction + (1 - config.lr_final_fraction) * cosine)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use adamax or adamw")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return Distributed(rank=dist.get_rank(), world=world, local_rank=local)


def coded_rate(model: HierarchicalVAE, images, crop: int, device: torch.device) -> tuple[float, float, int]:
    """Compress the first validation images (centre crops) as one archive: (achieved, bound, count)."""
    from PIL import Image

    from vaezip.api import LoadedModel, compress_images
    from vaezip.evaluate import batches_of

    pil = []
    for batch in batches_of(images[:CODED_VALIDATION_IMAGES], CODED_VALIDATION_IMAGES, crop):
        for pixels in batch:  # C, H, W
            array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
            pil.append((f"{len(pil)}.png", Image.fromarray(array)))
    was_training = model.training
    result = compress_images(pil, LoadedModel("validation", model, "0" * 64, "memory"), device=device.type)
    model.train(was_training)
    return result.achieved_bpsp, result.bound_bpsp, len(pil)


# A mixture part with fewer images than this gives none to validation: holding out one of six photographs
# would cost a sixth of the data that teaches the model camera-scale statistics.
MIN_IMAGES_FOR_HOLDOUT = 20


@dataclass(frozen=True)
class TrainingData:
    parts: tuple[datasets.ImageSet, ...]  # what the sampler crops from
    weights: tuple[float, ...]
    validation: datasets.ImageSet

    @property
    def channels(self) -> int:
        return self.parts[0].channels

    def sampler(self, crop: int, seed: int):
        if len(self.parts) == 1:
            return datasets.CropSampler(self.parts[0], crop, seed=seed)
        return datasets.MixtureSampler(self.parts, self.weights, crop, seed=seed)


def _load_data(source: str, channels: int | None, val_images: int) -> TrainingData:
    mixture = datasets.parse_mixture(source)
    if len(mixture) == 1:
        train_set, val_set = datasets.split_holdout(datasets.load(source, channels=channels), max_count=val_images)
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


def train(
    run_dir: Path,
    data_source: str,
    preset: Preset,
    *,
    steps: int,
    resume: bool = False,
    device_name: str = "auto",
    reporter: TrainReporter | None = None,
    train_overrides: dict[str, Any] | None = None,
    time_limit: float | None = None,
    init: str | None = None,
    channels: int | None = None,
    pixel_context: int | None = None,
) -> dict[str, Any]:
    """Train until `steps` (a total, counted across resumes) or `time_limit` seconds; returns a summary.

    `init` warm-starts a new run from a model (run folder, .pt, .safetensors or shipped name): its
    architecture replaces the preset's and its (EMA) weights start both the trained and the EMA copy; a colour
    model starting a grey run is converted first (`grey_from_colour`). `channels` (1 or 3) converts the data
    (grey: Pillow's luma); by default a set with any colour image trains a colour model. `pixel_context`
    sets the width of the causal pixel-context head of a new run; added to an `init` model, the head starts
    at zero, so the run starts from exactly that model."""
    reporter = reporter or SilentReporter()
    run_dir = Path(run_dir)
    device = resolve_device(device_name)
    dist_info = init_distributed(device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
    checkpoint_path = run_dir / CHECKPOINT_NAME

    saved = None
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path, map_location="cpu")
        model_config = model_config_from_dict(saved["model_config"])
        train_config = train_config_from_dict(saved["train_config"])
        data_source = data_source or saved["data_source"]
    else:
        if resume:
            raise CheckpointError(f"--resume: no checkpoint at {checkpoint_path}")
        if checkpoint_path.exists():
            raise FileExistsError(f"{checkpoint_path} exists: use --resume to continue it or another --out")
        train_config = dataclasses.replace(preset.train, **(train_overrides or {}))
        model_config = preset.model
    initial = None
    if saved is not None:
        init_record = saved.get("init")
    elif init:
        from vaezip.api import load_model

        initial = load_model(init)
        model_config = initial.model.config
        init_record = {"name": initial.name, "sha256": initial.sha256}
    else:
        init_record = None

    training_data = _load_data(data_source, channels if saved is None else model_config.image_channels,
                               train_config.val_images)
    val_set = training_data.validation
    if initial is not None and initial.model.config.image_channels == 3 and training_data.channels == 1:
        from vaezip.model.convert import grey_from_colour

        initial = dataclasses.replace(initial, model=grey_from_colour(initial.model))
        model_config = initial.model.config
    if saved is None and initial is None:
        model_config = dataclasses.replace(model_config, image_channels=training_data.channels)
    elif training_data.channels != model_config.image_channels:
        raise CheckpointError("the data's channel count differs from the model's")
    if saved is None and pixel_context is not None:
        if initial is not None and initial.model.config.pixel_context not in (0, pixel_context):
            raise CheckpointError("--pixel-context: the --init model already has a context head of another width")
        model_config = dataclasses.replace(model_config, pixel_context=pixel_context)

    torch.manual_seed(train_config.seed + dist_info.rank)
    sampler = training_data.sampler(train_config.crop, seed=train_config.seed + 1000 * dist_info.rank)
    model = HierarchicalVAE(model_config).to(device)
    if train_config.train_only_context:
        if model.context is None:
            raise CheckpointError("train_only_context needs a model with a pixel-context head (--pixel-context)")
        model.requires_grad_(False)
        model.context.requires_grad_(True)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, train_config)
    counters = Counters()
    step = 0
    if initial is not None:
        # Strict but for a context head the initial model lacks (it starts at zero: the same function).
        for replica in (model, ema):
            missing, unexpected = replica.load_state_dict(initial.model.state_dict(), strict=False)
            if unexpected or any(not key.startswith("context.") for key in missing):
                raise CheckpointError(f"--init weights do not match the model: {(missing + unexpected)[:3]}")
    if saved is not None:
        model.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
        counters = Counters(**saved["counters"])
        torch.random.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        sampler.set_state(saved["rng"]["sampler"])
    if run_dir and dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_writes(checkpoint_path)

    trained = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    seconds_before = counters.train_seconds
    session_start = time.perf_counter()

    def save() -> None:
        if not dist_info.main:
            return
        counters.train_seconds = seconds_before + time.perf_counter() - session_start
        payload = {
            "model_config": config_to_dict(model_config),
            "train_config": config_to_dict(train_config),
            "data_source": str(data_source),
            "init": init_record,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "counters": dataclasses.asdict(counters),
            "rng": {
                "torch": torch.random.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "sampler": sampler.state(),
            },
            "torch_version": str(torch.__version__),
        }
        save_checkpoint(checkpoint_path, payload)
        reporter.checkpoint(step, checkpoint_path)

    def validate() -> EvalResult:
        result = evaluate(ema, val_set.images, batch_size=64, device=device, crop=train_config.crop)
        counters.best_val_bpsp = min(counters.best_val_bpsp, result.bound_bpsp)
        counters.history.append({"step": step, "val_bpsp": result.bound_bpsp, "images_seen": counters.images_seen})
        reporter.validation(step, result)
        achieved, bound, count = coded_rate(ema, val_set.images, train_config.crop, device)
        counters.history[-1].update(achieved_bpsp=achieved, coded_bound_bpsp=bound)
        reporter.coded(step, achieved, bound, count)
        return result

    reporter.start(
        {
            "device": str(device),
            "world": dist_info.world,
            "train_images": sum(len(part) for part in training_data.parts),
            "val_images": len(val_set),
            "crop": sampler.crop,
            "channels": model_config.image_channels,
            "parameters": sum(p.numel() for p in model.parameters()),
            "start_step": step,
            "init": init_record,
            "steps": steps,
            "model_config": model_config,
            "train_config": train_config,
        }
    )
    use_bf16 = device.type == "cuda"
    started = time.perf_counter()
    window_start, window_images = time.perf_counter(), 0
    last_val: EvalResult | None = None
    model.train()
    while step < steps:
        if time_limit is not None and time.perf_counter() - started > time_limit:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train_config, step)
        batch = torch.from_numpy(sampler.sample(train_config.batch_size)).to(device, non_blocking=True)
        kl_weight = 1.0
        if train_config.kl_warmup_steps > 0:
            kl_weight = min(1.0, (step + 1) / train_config.kl_warmup_steps)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            out = trained(batch, kl_weight=kl_weight)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip))
        threshold = train_config.skip_factor * counters.grad_norm_mean
        if not math.isfinite(grad_norm) or not math.isfinite(float(out.loss.detach())):
            counters.skipped_nan += 1
        elif counters.accepted > 50 and grad_norm > threshold:
            counters.skipped_norm += 1
        else:
            optimizer.step()
            counters.accepted += 1
            rate = 1.0 / min(counters.accepted, 100)
            counters.grad_norm_mean += rate * (grad_norm - counters.grad_norm_mean)
            # Early on the average would be dominated by the random initialisation: ramp the decay up.
            decay = min(train_config.ema_decay, (1 + counters.accepted) / (10 + counters.accepted))
            with torch.no_grad():
                for ema_param, param in zip(ema.parameters(), model.parameters()):
                    ema_param.lerp_(param, 1.0 - decay)
        step += 1
        images = train_config.batch_size * dist_info.world
        counters.images_seen += images
        window_images += images
        now = time.perf_counter()
        if dist_info.main:
            reporter.step(
                step,
                {
                    "loss": float(out.loss.detach()),
                    "images_per_s": window_images / max(now - window_start, 1e-9),
                    "grad_norm": grad_norm,
                    "skipped": counters.skipped_nan + counters.skipped_norm,
                    "lr": optimizer.param_groups[0]["lr"],
                },
            )
        if now - window_start > 20:
            window_start, window_images = now, 0
        if dist_info.main and step % train_config.val_every == 0:
            last_val = validate()
            model.train()
        if step % train_config.checkpoint_every == 0:
            save()
    if dist_info.main and (last_val is None or counters.history[-1]["step"] != step):
        last_val = validate()
    save()
    return {
        "step": step,
        "val_bpsp": last_val.bound_bpsp if last_val else None,
        "best_val_bpsp": counters.best_val_bpsp,
        "skipped_nan": counters.skipped_nan,
        "skipped_norm": counters.skipped_norm,
        "images_seen": counters.images_seen,
        "checkpoint": str(checkpoint_path),
    }
