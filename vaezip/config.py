"""Frozen configuration dataclasses, presets, and their strict (de)serialisation.

Every checkpoint stores `FORMAT_VERSION` next to `config_to_dict(...)`; loading refuses unknown keys,
missing keys and other format versions instead of guessing. The one exception: TrainConfig fields listed in
`TRAIN_FIELDS_SINCE_FORMAT_2`, which only change how a run trains (never a model, a weights file or what the
coder reads), so they were added without a new format; a checkpoint written before them loads with the value
that reproduces what it did; and ModelConfig fields listed in `MODEL_FIELDS_SINCE_FORMAT_2`, new model options
whose default is the model as it was: a file without one loads with the default, and a config at the default is
written without it (byte for byte what was written before).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 2
# Format 1 had no pixel context; its files load as pixel_context = 0, train_only_context = False.
READABLE_FORMATS = (1, 2)
READABLE_FORMATS_TEXT = " and ".join(map(str, READABLE_FORMATS))  # for messages: "1 and 2"
# TrainConfig fields added after format 2 was fixed -> the value a checkpoint without them loads with (the
# behaviour of the vaezip that wrote it). Training-only: a model or a coded file never depends on them.
TRAIN_FIELDS_SINCE_FORMAT_2: dict[str, Any] = {"kl_balance": False, "importance_samples": 1, "binary_beta": 8.0}
# ModelConfig fields added after format 2 was fixed -> their default, the value that gives exactly the model of a
# file written before them. A file without one loads with that value; `config_to_dict` writes one only where it
# differs, so a model that does not use a new option is written byte for byte as before (the same sha256, and
# still readable by the vaezip before it), while a model that does is refused by that vaezip (an unknown key)
# instead of being run wrongly.
MODEL_FIELDS_SINCE_FORMAT_2: dict[str, Any] = {"residual_posterior": False, "likelihood": "logistic-mixture",
                                               "channel_coupling": True, "context_order": "rows", "binary_groups": 0,
                                               "global_latents": 0}
# The pixel likelihoods (model/likelihood.py; their integer twins in model/integer.py). sigma-VAE (paper 002)
# calibrated decoders beside the logistic mixture: a discretized Gaussian with one learned sigma per channel,
# the same Gaussian with the "optimal sigma" of each image (each tile a file codes: its analytic sigma per
# channel, computed by the encoder and stored in the file), and a 256-way categorical per subpixel.
LIKELIHOODS = ("logistic-mixture", "gaussian", "gaussian-optimal", "categorical")
# The pixel-context head's coding orders (model/context.py): rows (2H phases a tile) or DVAE++'s multi-scale
# coarse-to-fine grids (5 phases), and the neighbours each reads.
CONTEXT_OFFSETS = {"rows": 18, "scales": 24}

# Limits of a model config, checked (types first, then ranges, then the parameter count, all arithmetically)
# before any model is built: a weights file is untrusted input, and its config decides how much memory the
# model takes. Every shipped model and preset is far inside them. Integer fields must be ints (not bools,
# floats or strings); min_std must be a finite real number.
LIMITS: dict[str, tuple[float, float]] = {
    "width": (1, 1024),  # per stage
    "encoder_blocks": (0, 64),  # per stage
    "latent_groups": (0, 64),  # per stage (the model needs at least one group in all)
    "latent_channels": (1, 256),  # per stage
    "stages": (1, 8),
    "stem_factor": (1, 8),
    "num_mixtures": (1, 64),
    "pixel_context": (0, 1024),
    "global_latents": (0, 256),
    "min_std": (1e-6, 1.0),
}
IMAGE_CHANNELS = (1, 3)
MAX_PARAMETERS = 200_000_000  # total implied by a config (the gpu preset has 7.9 M, 32 MB in fp32)
# The most pixels of an image vaezip reads, refused from its header before any is decoded (compress, train, bench)
MAX_IMAGE_PIXELS = 100_000_000


class ConfigError(ValueError):
    """A configuration or checkpoint that does not match this version of vaezip."""


def short_repr(value: Any) -> str:
    """A short one-line rendering of a (possibly hostile) value for an error message: never a long string, a
    deep repr or a huge integer's decimal expansion."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value[:40])
        return text if len(value) <= 40 else text[:-1] + "..." + text[-1]
    return f"a {type(value).__name__}"


def _check_int(owner: str, name: str, value: Any) -> None:
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}.{name} must be an integer, not {type(value).__name__} {short_repr(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{owner}.{name} must be in {low}..{high}, not {short_repr(value)}")


@dataclass(frozen=True)
class StageConfig:
    """One resolution of the hierarchy. Stages are listed from the highest resolution to the lowest."""

    width: int  # channels of the residual state at this resolution
    encoder_blocks: int  # bottom-up residual blocks
    latent_groups: int  # top-down blocks, each with one latent group z_l
    latent_channels: int  # channels of every latent group at this resolution

    def __post_init__(self) -> None:
        for name in ("width", "encoder_blocks", "latent_groups", "latent_channels"):
            _check_int("StageConfig", name, getattr(self, name))


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
    # NVAE's residual normal posterior: the posterior head outputs a shift of the prior mean and a factor on
    # the prior std, q = N(mean_p + dmu, max(std_p * positive(raw), min_std)) with positive = layers.std_ratio;
    # False: absolute posterior parameters (every model before it).
    residual_posterior: bool = False
    # How a pixel's values are distributed given the latents (LIKELIHOODS); num_mixtures applies to the mixture.
    likelihood: str = "logistic-mixture"
    # The mixture's R -> G -> B coupling (each channel's means shifted by the channels before it); False: the
    # channels are independent given the latents and the component.
    channel_coupling: bool = True
    # The order in which a pixel-context head's pixels are coded, hence which neighbours it reads
    # (CONTEXT_OFFSETS; only with pixel_context > 0).
    context_order: str = "rows"
    # DVAE++'s binary latents (paper 000): the first `binary_groups` latent groups of the top-down order
    # (lowest resolution first) are Bernoulli variables, z in {0, 1}, each group's prior and posterior a
    # sigmoid of a logit per latent; the other groups stay Gaussian. 0: every group Gaussian (every model
    # before it). Trained through the overlapping relaxation (TrainConfig.binary_beta), coded as z itself.
    binary_groups: int = 0
    # DVAE++'s global latents (paper 000, tables 6 and 8), per tile: a group of this many latents (1x1) before
    # the top-down groups, prior N(0, I) (conditioned on nothing), posterior from the mean of the encoder's
    # lowest-resolution activation, its projection added to the top-down path's starting state. 0: none.
    global_latents: int = 0

    def __post_init__(self) -> None:
        """Types, then ranges (LIMITS), then the parameter count (MAX_PARAMETERS): nothing is allocated."""
        channels = self.image_channels
        if isinstance(channels, bool) or not isinstance(channels, int) or channels not in IMAGE_CHANNELS:
            raise ConfigError(f"ModelConfig.image_channels must be 1 or 3, not {short_repr(channels)}")
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.stages, tuple):
            raise ConfigError(f"ModelConfig.stages must be a sequence of stages, not {type(self.stages).__name__}")
        low, high = LIMITS["stages"]
        if not low <= len(self.stages) <= high:
            raise ConfigError(f"a model needs {low}..{high} stages, not {len(self.stages)}")
        for stage in self.stages:
            if not isinstance(stage, StageConfig):
                raise ConfigError(f"ModelConfig.stages must hold StageConfigs, not {type(stage).__name__}")
        for name in ("stem_factor", "num_mixtures", "pixel_context", "global_latents"):
            _check_int("ModelConfig", name, getattr(self, name))
        for name in ("residual_posterior", "channel_coupling"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"ModelConfig.{name} must be true or false, not {type(value).__name__} "
                                  f"{short_repr(value)}")
        if not isinstance(self.likelihood, str) or self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"ModelConfig.likelihood must be one of {', '.join(LIKELIHOODS)}, not "
                              f"{short_repr(self.likelihood)}")
        if not isinstance(self.context_order, str) or self.context_order not in CONTEXT_OFFSETS:
            raise ConfigError(f"ModelConfig.context_order must be one of {', '.join(CONTEXT_OFFSETS)}, not "
                              f"{short_repr(self.context_order)}")
        if self.context_order != "rows" and not self.pixel_context:
            raise ConfigError("ModelConfig.context_order applies to a pixel-context head (pixel_context > 0)")
        if self.likelihood == "gaussian-optimal" and self.pixel_context:
            # the head would refine the means after the encoder chose each tile's sigma from them
            raise ConfigError("ModelConfig.likelihood gaussian-optimal does not combine with a pixel-context head")
        if not self.channel_coupling and (self.likelihood != "logistic-mixture" or channels != 3):
            # one way to write each model: an option that changes nothing is not written
            raise ConfigError("ModelConfig.channel_coupling applies to the logistic mixture of a colour model only")
        std = self.min_std
        low, high = LIMITS["min_std"]
        if isinstance(std, bool) or not isinstance(std, (int, float)):
            raise ConfigError(f"ModelConfig.min_std must be a number, not {type(std).__name__} {short_repr(std)}")
        if (isinstance(std, float) and not math.isfinite(std)) or not low <= std <= high:
            raise ConfigError(f"ModelConfig.min_std must be in {low}..{high}, not {short_repr(std)}")
        if sum(s.latent_groups for s in self.stages) == 0:
            raise ConfigError("a model needs at least one latent group")
        groups = self.binary_groups
        if isinstance(groups, bool) or not isinstance(groups, int) or not 0 <= groups <= self.num_groups:
            raise ConfigError(f"ModelConfig.binary_groups must be an integer in 0..{self.num_groups} (the model's "
                              f"latent groups), not {short_repr(groups)}")
        if groups and self.residual_posterior:
            # a residual posterior is a Gaussian's (shift and std ratio); a Bernoulli's has no such form here
            raise ConfigError("ModelConfig.binary_groups does not combine with residual_posterior")
        count = parameter_count(self)
        if count > MAX_PARAMETERS:
            raise ConfigError(f"this config implies {count:,} parameters, more than the limit of {MAX_PARAMETERS:,}")

    @property
    def stride(self) -> int:
        """Height and width of every input must be multiples of this (the model pads otherwise)."""
        return self.stem_factor * 2 ** (len(self.stages) - 1)

    @property
    def num_groups(self) -> int:
        """The top-down latent groups (a global group, where there is one, comes on top of these)."""
        return sum(s.latent_groups for s in self.stages)


def importance_coding_obstacle(config: ModelConfig) -> str | None:
    """Why Monte-Carlo bits-back (`compress --samples K`) cannot code a model of `config`, or None if it can:
    it needs pixel tables that follow from the latents alone and Gaussian latents to weigh."""
    if config.pixel_context:
        return "it has a pixel-context head"
    if config.likelihood == "gaussian-optimal":
        return "it stores each tile's sigma"
    if config.binary_groups:
        return "it has binary latent groups"
    return None


def _conv(inputs: int, outputs: int, kernel: int) -> int:
    return inputs * outputs * kernel * kernel + outputs


def mixture_param_count(channels: int, num_mixtures: int, coupling: bool = True) -> int:
    """A logistic mixture's outputs per pixel: logits, means and log scales, and 3 coupling coefficients per
    component where coupled (model/likelihood.py splits them in this order)."""
    return num_mixtures * (1 + 2 * channels + (3 if channels == 3 and coupling else 0))


def pixel_param_count(config: ModelConfig) -> int:
    """Network outputs per pixel that the likelihood reads (model/likelihood.py)."""
    channels = config.image_channels
    if config.likelihood in ("gaussian", "gaussian-optimal"):
        return channels  # the means; the sigmas are shared parameters, or each image's own
    if config.likelihood == "categorical":
        return 256 * channels  # one logit per value
    return mixture_param_count(channels, config.num_mixtures, config.channel_coupling)


def parameter_count(config: ModelConfig) -> int:
    """The number of parameters of `HierarchicalVAE(config)`, by arithmetic (tests check it against the model).

    Mirrors model/vae.py, layers.py, context.py and likelihood.py."""
    channels, f = config.image_channels, config.stem_factor
    pixel_params = pixel_param_count(config)
    stages = config.stages
    res_block = lambda w: 2 * _conv(w, w, 3)  # noqa: E731
    total = _conv(channels * f * f, stages[0].width, 3)  # encoder stem
    total += sum(s.encoder_blocks * res_block(s.width) for s in stages)
    total += sum(_conv(a.width, b.width, 2) for a, b in zip(stages, stages[1:]))  # downsamples
    total += stages[-1].width  # decoder.initial
    binary = config.binary_groups  # the first groups top-down (the lowest-resolution stage's first)
    for s in reversed(stages):
        w, z = s.width, s.latent_channels
        for _ in range(s.latent_groups):
            outputs = z if binary > 0 else 2 * z  # a Bernoulli's logit, or a Gaussian's mean and std
            total += _conv(w, outputs + w, 3) + _conv(2 * w, outputs, 3) + _conv(z, w, 1) + res_block(w)
            binary -= 1
    total += sum(_conv(b.width, a.width, 1) for a, b in zip(stages, stages[1:]))  # upsamples
    if config.global_latents:  # the global group's posterior head and projection
        total += _conv(stages[-1].width, 2 * config.global_latents, 1) + _conv(config.global_latents, stages[-1].width, 1)
    total += stages[0].width * pixel_params * f * f + pixel_params  # head (transposed conv)
    if config.likelihood == "gaussian":
        total += channels  # one learned log sigma per channel
    hidden = config.pixel_context
    if hidden:
        offsets = CONTEXT_OFFSETS[config.context_order]
        features = pixel_params + offsets * (channels + 1)
        total += _conv(features, hidden, 1) + _conv(hidden, hidden, 1) + _conv(hidden, pixel_params, 1)
    return total


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
    # During the KL warm-up (step < kl_warmup_steps) weight each latent group's KL term by a balancing
    # coefficient (NVAE; model/vae.py: kl_balance_coefficients), so that no group is switched off early;
    # afterwards the plain ELBO. Needs kl_warmup_steps > 0 (without a warm-up it never applies).
    kl_balance: bool = False
    # K > 1: the training loss is DVAE##'s annealed importance-weighted bound over K posterior samples per image
    # (model/vae.py: HierarchicalVAE.forward), the KL warm-up's weight as its annealing scalar; the bound that
    # Monte-Carlo bits-back coding with K samples pays. Each step costs about K times the model's work.
    importance_samples: int = 1
    # The inverse temperature of DVAE++'s overlapping relaxation of binary latents (ModelConfig.binary_groups):
    # each z in {0, 1} is smoothed by a mixture of two exponentials on [0, 1] of rate beta; larger is closer to
    # the binary z that the coder uses. The paper trains at 8 (appendix G). Unused without binary groups.
    binary_beta: float = 8.0
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
        shown = sorted(map(short_repr, unknown))
        raise ConfigError(
            f"{cls.__name__} does not match this version: unknown keys [{', '.join(shown[:5])}"
            f"{', ...' if len(shown) > 5 else ''}], missing {sorted(missing)}"
        )
    return dict(data)


def _upgrade(cls: type, data: Any, format_version: int, added: dict[str, Any]) -> Any:
    """`data` of `format_version` in the current format: format 1 lacks the fields `added` (name: value)."""
    if isinstance(format_version, bool) or format_version not in READABLE_FORMATS:
        raise ConfigError(f"format {short_repr(format_version)} is not one this vaezip reads ({READABLE_FORMATS_TEXT})")
    if format_version == 1 and isinstance(data, dict):
        for name in added:
            if name in data:
                raise ConfigError(f"{cls.__name__} of format 1 cannot have {name}")
        data = {**data, **added}
    return data


def model_config_from_dict(data: dict[str, Any], format_version: int = FORMAT_VERSION) -> ModelConfig:
    """A config as saved by `config_to_dict` in files of `format_version` (one of READABLE_FORMATS)."""
    data = _upgrade(ModelConfig, data, format_version, {"pixel_context": 0, **MODEL_FIELDS_SINCE_FORMAT_2})
    if isinstance(data, dict):
        data = {**MODEL_FIELDS_SINCE_FORMAT_2, **data}
    kwargs = _strict_kwargs(ModelConfig, data)
    stages = kwargs["stages"]
    if not isinstance(stages, list):
        raise ConfigError(f"ModelConfig.stages must be a list, not {type(stages).__name__}")
    low, high = LIMITS["stages"]
    if not low <= len(stages) <= high:  # before building thousands of stages
        raise ConfigError(f"a model needs {low}..{high} stages, not {len(stages)}")
    kwargs["stages"] = tuple(StageConfig(**_strict_kwargs(StageConfig, s)) for s in stages)
    return ModelConfig(**kwargs)


def train_config_from_dict(data: dict[str, Any], format_version: int = FORMAT_VERSION) -> TrainConfig:
    data = _upgrade(TrainConfig, data, format_version, {"train_only_context": False})
    if isinstance(data, dict):
        data = {**TRAIN_FIELDS_SINCE_FORMAT_2, **data}
    kwargs = _strict_kwargs(TrainConfig, data)
    betas = kwargs["adam_betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigError(f"TrainConfig: adam_betas must be two numbers, not {short_repr(betas)}")
    kwargs["adam_betas"] = tuple(betas)
    for field_ in dataclasses.fields(TrainConfig):  # a checkpoint's values, of the types the fields declare
        value, kind = kwargs[field_.name], field_.type
        values = value if field_.name == "adam_betas" else (value,)
        if kind in ("int", int):
            fits = all(type(v) is int for v in values)
        elif kind in ("float", float) or field_.name == "adam_betas":
            fits = all(type(v) in (int, float) and math.isfinite(v) for v in values)
        elif kind in ("bool", bool):
            fits = type(value) is bool
        else:
            fits = isinstance(value, str)
        if not fits:
            wanted = "two numbers" if field_.name == "adam_betas" else f"a {field_.type}"
            raise ConfigError(f"TrainConfig: {field_.name} must be {wanted}, not {short_repr(value)}")
    return TrainConfig(**kwargs)


def config_to_dict(config: ModelConfig | TrainConfig) -> dict[str, Any]:
    """The plain dict a checkpoint or weights file stores; a ModelConfig's fields of MODEL_FIELDS_SINCE_FORMAT_2
    only where they differ from their default (what files before them hold)."""
    data = _to_plain(config)
    if isinstance(config, ModelConfig):
        for name, default in MODEL_FIELDS_SINCE_FORMAT_2.items():
            if data[name] == default and type(data[name]) is type(default):
                del data[name]
    return data
