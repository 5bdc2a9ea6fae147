"""Frozen configuration dataclasses, presets, and their strict (de)serialisation.

Every checkpoint stores `FORMAT_VERSION` next to `config_to_dict(...)`; loading refuses unknown keys,
missing keys and other format versions instead of guessing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 2
# Format 1 had no pixel context; its files load as pixel_context = 0, train_only_context = False.
READABLE_FORMATS = (1, 2)


class ConfigError(ValueError):
    """A configuration or checkpoint that does not match this version of vaezip."""


@dataclass(frozen=True)
class StageConfig:
    """One resolution of the hierarchy. Stages are listed from the highest resolution to the lowest."""

    width: int  # channels of the residual state at this resolution
    encoder_blocks: int  # bottom-up residual blocks
    latent_groups: int  # top-down blocks, each with one latent group z_l
    latent_channels: int  # channels of every latent group at this resolution


@dataclass(frozen=True)
class ModelConfig:
    image_channels: int = 3
    # Space-to-depth factor at the input: full-resolution 3x3 convs are the most expensive part of a small
    # image model on a CPU, so the first stage already runs at 1/stem_factor resolution.
    stem_factor: int = 2
    stages: tuple[StageConfig, ...] = (
        StageConfig(width=32, encoder_blocks=1, latent_groups=1, latent_channels=4),
        StageConfig(width=32, encoder_blocks=1, latent_groups=1, latent_channels=4),
    )
    num_mixtures: int = 4
    # Floor on every latent standard deviation: keeps the posterior wider than the coder's latent grid.
    min_std: float = 0.02
    # Hidden width of the causal pixel-context head (model/context.py) that refines each pixel's mixture from
    # already coded neighbours; 0: none, pixels are independent given the latents.
    pixel_context: int = 0

    def __post_init__(self) -> None:
        if self.image_channels not in (1, 3):
            raise ConfigError(f"image_channels must be 1 or 3, not {self.image_channels}")
        if not self.stages:
            raise ConfigError("a model needs at least one stage")
        if sum(s.latent_groups for s in self.stages) == 0:
            raise ConfigError("a model needs at least one latent group")
        if self.stem_factor < 1 or self.num_mixtures < 1 or self.min_std <= 0:
            raise ConfigError("stem_factor, num_mixtures and min_std must be positive")
        if self.pixel_context < 0:
            raise ConfigError(f"pixel_context must be >= 0, not {self.pixel_context}")

    @property
    def stride(self) -> int:
        """Height and width of every input must be multiples of this (the model pads otherwise)."""
        return self.stem_factor * 2 ** (len(self.stages) - 1)

    @property
    def num_groups(self) -> int:
        return sum(s.latent_groups for s in self.stages)


@dataclass(frozen=True)
class TrainConfig:
    crop: int = 32
    batch_size: int = 32
    optimizer: str = "adamax"  # or "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    # Cosine decay of the learning rate down to lr * lr_final_fraction at `decay_steps` (0: constant).
    decay_steps: int = 0
    lr_final_fraction: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 100.0
    # An update is skipped when its gradient norm is not finite or exceeds skip_factor times the running
    # mean of recent norms (the Efficient-VDVAE trick against rare exploding KL gradients).
    skip_factor: float = 10.0
    ema_decay: float = 0.999
    kl_warmup_steps: int = 0
    val_every: int = 500
    val_images: int = 1000
    checkpoint_every: int = 500
    seed: int = 0
    # Train only the pixel-context head, the VAE frozen: a fresh head added to a trained VAE learns fast at a
    # high rate without knocking the VAE out of its minimum.
    train_only_context: bool = False


@dataclass(frozen=True)
class Preset:
    description: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        description="unit tests: a forward pass in milliseconds; codes losslessly even untrained",
        model=ModelConfig(),
        train=TrainConfig(batch_size=8, val_every=50, checkpoint_every=50, val_images=64),
    ),
    "cpu": Preset(
        description="trains on a 2-core CPU: dense 64-128 channel 3x3 convs, no thin bottlenecks",
        model=ModelConfig(
            stem_factor=2,
            stages=(
                StageConfig(width=64, encoder_blocks=1, latent_groups=2, latent_channels=8),
                StageConfig(width=96, encoder_blocks=1, latent_groups=3, latent_channels=8),
                StageConfig(width=128, encoder_blocks=1, latent_groups=2, latent_channels=8),
            ),
            num_mixtures=8,
        ),
        train=TrainConfig(batch_size=32),
    ),
    "gpu": Preset(
        description="trains in 25-minute H100 windows; still ships (fp16 weights <= 25 MB) and decodes on a CPU",
        model=ModelConfig(
            stem_factor=2,
            stages=(
                StageConfig(width=128, encoder_blocks=2, latent_groups=3, latent_channels=8),
                StageConfig(width=128, encoder_blocks=2, latent_groups=5, latent_channels=16),
                StageConfig(width=128, encoder_blocks=2, latent_groups=3, latent_channels=16),
            ),
            num_mixtures=10,
        ),
        train=TrainConfig(batch_size=64, lr=1.5e-3, warmup_steps=500, val_every=2000, checkpoint_every=2000),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _strict_kwargs(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(data) - names, names - set(data)
    if unknown or missing:
        raise ConfigError(
            f"{cls.__name__} does not match this version: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
        )
    return dict(data)


def _upgrade(cls: type, data: Any, format_version: int, added: dict[str, Any]) -> Any:
    """`data` of `format_version` in the current format: format 1 lacks the fields `added` (name: value)."""
    if format_version not in READABLE_FORMATS:
        raise ConfigError(f"format {format_version} is not one this vaezip reads ({READABLE_FORMATS})")
    if format_version == 1 and isinstance(data, dict):
        for name in added:
            if name in data:
                raise ConfigError(f"{cls.__name__} of format 1 cannot have {name}")
        data = {**data, **added}
    return data


def model_config_from_dict(data: dict[str, Any], format_version: int = FORMAT_VERSION) -> ModelConfig:
    """A config as saved by `config_to_dict` in files of `format_version` (one of READABLE_FORMATS)."""
    data = _upgrade(ModelConfig, data, format_version, {"pixel_context": 0})
    kwargs = _strict_kwargs(ModelConfig, data)
    kwargs["stages"] = tuple(StageConfig(**_strict_kwargs(StageConfig, s)) for s in kwargs["stages"])
    return ModelConfig(**kwargs)


def train_config_from_dict(data: dict[str, Any], format_version: int = FORMAT_VERSION) -> TrainConfig:
    data = _upgrade(TrainConfig, data, format_version, {"train_only_context": False})
    kwargs = _strict_kwargs(TrainConfig, data)
    kwargs["adam_betas"] = tuple(kwargs["adam_betas"])
    return TrainConfig(**kwargs)


def config_to_dict(config: ModelConfig | TrainConfig) -> dict[str, Any]:
    return _to_plain(config)
