"""Atomic checkpoint saving and strict, code-free loading.

A checkpoint is a plain dict of tensors and primitive values written with `torch.save` and read with
`torch.load(weights_only=True)`, so loading never executes code from the file. It describes itself
(format version, model and training configs, step), so a model can be rebuilt from it alone.
Saving writes a temporary file in the same folder, fsyncs it and renames it over the old one: a save killed
half-way never replaces the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from vaezip import process_settings
from vaezip.config import (
    FORMAT_VERSION,
    READABLE_FORMATS,
    READABLE_FORMATS_TEXT,
    ModelConfig,
    short_repr,
    config_to_dict,
    model_config_from_dict,
    train_config_from_dict,
)
from vaezip.errors import CheckpointError  # defined there: catching user errors must not import torch
from vaezip.files import atomic_write, sha256_file
from vaezip.model import HierarchicalVAE

CHECKPOINT_NAME = "last.pt"
KIND = "vaezip-checkpoint"
WEIGHTS_KIND = "vaezip-weights"
# A weights file is untrusted input: its metadata JSON is refused above these (shipped ones: ~400 chars,
# depth 4) before it is parsed, and its tensors must have exactly the names and shapes of the model its
# config describes (config.LIMITS bound that model) before any of them is loaded or the model is built.
MAX_METADATA_CHARS = 64 * 1024
MAX_METADATA_DEPTH = 16
MAX_MODEL_NAME_CHARS = 256
# The safetensors header (tensor names, shapes, offsets and the metadata): ~10 KB for the shipped models,
# ~0.5 MB for the largest model config.LIMITS allow. safetensors itself would parse up to 100 MB.
MAX_SAFETENSORS_HEADER_BYTES = 4 * 2**20
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import io

    buffer = io.BytesIO()
    torch.save({"kind": KIND, "format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write(path, buffer.getvalue(), overwrite=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        odd = _not_saved_by_torch(path)
        if odd is not None:
            raise CheckpointError(f"{path} is not a readable vaezip checkpoint ({odd})")
        # TorchVersion is a plain str subclass (no code runs when it is rebuilt); early runs stored it.
        # The allowed globals are a process-wide list, put back as found: one load at a time, or two in a host's
        # threads put back each other's (a load refused).
        with _LOADING, torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as error:  # torch raises several types for damaged or hostile files
        raise CheckpointError(f"{path} is not a readable vaezip checkpoint ({type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a vaezip checkpoint")
    _readable_format(data.get("format_version"), path, "checkpoint")
    try:
        # Older formats are upgraded explicitly here, so everything downstream sees the current one.
        config = model_config_from_dict(data["model_config"], data["format_version"])
        if "train_config" in data:
            data["train_config"] = config_to_dict(train_config_from_dict(data["train_config"], data["format_version"]))
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: bad config ({_one_line(error)})") from None
    data["model_config"] = config_to_dict(config)
    data["format_version"] = FORMAT_VERSION
    return data


def _readable_format(version, label, kind: str) -> None:
    """Refuse a format version this vaezip does not read (an int's: a bool or a float 2.0 is not a version)."""
    if type(version) is not int or version not in READABLE_FORMATS:
        raise CheckpointError(f"{label} has {kind} format {short_repr(version)}; this vaezip reads "
                              f"{READABLE_FORMATS_TEXT}")


_LOADING = threading.Lock()  # load_checkpoint's, see there


def _not_saved_by_torch(path: Path) -> str | None:
    """Why `path` is not an archive as torch.save writes it (a zip whose one data.pkl is pickle protocol 2 and
    which is no TorchScript archive), or None. torch warns before it refuses such files: a warning filter to
    silence it would be the whole process's, and hide a host's other threads' warnings while a model loads."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                return "no torch archive"
            if any(name.endswith("/constants.pkl") for name in names):
                return "a TorchScript archive"
            with archive.open(pickles[0]) as pickled:
                if pickled.read(2) != b"\x80\x02":
                    return "not pickle protocol 2"
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as error:
        return "no torch archive" if isinstance(error, zipfile.BadZipFile) else type(error).__name__
    return None


def _fresh_lock_after_fork() -> None:
    global _LOADING  # a child forked while another thread loaded has that thread's lock, not the thread
    _LOADING = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def _one_line(error: BaseException, limit: int = 200) -> str:
    # Torch's errors about odd tensors (sparse, meta) say what went wrong past their first line: every line.
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of `HierarchicalVAE(config)`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = HierarchicalVAE(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_tensors(config: ModelConfig, found: dict[str, tuple[tuple[int, ...], bool]], label: str = "weights") -> None:
    """Refuse tensors (name -> (shape, is floating point)) that are not exactly those of the model `config`
    builds: the same names, the same shapes, floating point. Runs before anything is allocated."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted((short_repr(key) for key in set(found) - set(expected)))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' and more' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' and more' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{label}: weights do not match the model config: {'; '.join(parts)}")
    for key, shape in expected.items():
        actual, floating = found[key]
        if tuple(actual) != shape:
            raise CheckpointError(
                f"{label}: weights do not match the model config: {key} has shape {_show_shape(actual)}, "
                f"the config needs {list(shape)}"
            )
        if not floating:
            raise CheckpointError(f"{label}: {key} is not a floating-point tensor")


def _show_shape(shape) -> str:
    shape = list(shape)
    text = str(shape[:8])[:-1] + (", ...]" if len(shape) > 8 else "]")
    return text if len(text) <= 80 else text[:77] + "..."


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor], label: str = "weights") -> HierarchicalVAE:
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{label}: the weights are not a mapping of names to tensors")
    check_tensors(config, {k: (tuple(v.shape), v.is_floating_point()) for k, v in state_dict.items()}, label)
    broken = next((key for key, value in state_dict.items() if not bool(torch.isfinite(value).all())), None)
    if broken is not None:  # a diverged run's: every estimate NaN, and the coder's integers undefined
        raise CheckpointError(f"{label}: {short_repr(broken)} holds NaN or infinite values")
    model = HierarchicalVAE(config)  # (its random initial weights draw from torch's generator: README)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{label}: weights do not match the model config: {_one_line(error)}") from None
    return model.eval()


def export_weights(checkpoint: dict[str, Any], path: Path, name: str, use_ema: bool = True,
                   half: bool = False) -> str:
    """Write the (EMA) weights as safetensors with the config in its metadata; returns the file's sha256.

    half: the floating-point tensors as float16, a file half the size. The model is then the one of those
    float16 values (loading widens them to float32 exactly; the integer model is derived from them), a
    slightly different model from the float32 run, so measure it from the file, as ship_model.py does."""
    from safetensors.torch import save

    state = checkpoint["ema" if use_ema else "model"]
    if half:
        narrowed = {}
        for key, value in state.items():
            if value.is_floating_point():
                value = value.detach().to(torch.float16)
                if not torch.isfinite(value).all():
                    raise ValueError(f"{key} has values beyond float16's range: export it without half")
            narrowed[key] = value
        state = narrowed
    description = {
        "kind": WEIGHTS_KIND,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model_config": checkpoint["model_config"],
        "step": int(checkpoint.get("step", 0)),
    }
    # One key of canonical JSON: safetensors writes several keys in hash-map order, so the same weights
    # would get a different sha256 on every export.
    metadata = {"vaezip": json.dumps(description, sort_keys=True, separators=(",", ":"))}
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    atomic_write(path, save(tensors, metadata=metadata), overwrite=True)
    return sha256_file(Path(path))


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def parse_weights_metadata(metadata: Any, label: str) -> dict[str, Any]:
    """The `vaezip` description of a weights file's metadata, checked: size, depth, JSON, kind, format, name."""
    text = metadata.get("vaezip") if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise CheckpointError(f"{label} is not vaezip weights (no vaezip metadata)")
    if len(text) > MAX_METADATA_CHARS:
        raise CheckpointError(f"{label}: vaezip metadata of {len(text):,} chars, more than {MAX_METADATA_CHARS:,}")
    if _json_depth(text) > MAX_METADATA_DEPTH:
        raise CheckpointError(f"{label}: vaezip metadata nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        description = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{label}: vaezip metadata is not valid JSON ({_one_line(error, 100)})") from None
    if not isinstance(description, dict) or description.get("kind") != WEIGHTS_KIND:
        raise CheckpointError(f"{label} is not vaezip weights")
    _readable_format(description.get("format_version"), label, "weights")
    unknown = sorted(short_repr(key) for key in set(description) - _WEIGHTS_KEYS)
    if unknown:  # strict, as the configs are: what this vaezip does not know it does not silently pass over
        raise CheckpointError(f"{label}: vaezip metadata holds unknown keys [{', '.join(unknown[:5])}"
                              f"{', ...' if len(unknown) > 5 else ''}]")
    step = description.get("step", 0)
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{label}: vaezip metadata's step must be a whole number, not {short_repr(step)}")
    if description.get("name") is not None:
        check_model_name(description["name"], label)
    return description


# What export_weights writes (every weights file since the one-key JSON metadata)
_WEIGHTS_KEYS = {"kind", "format_version", "name", "model_config", "step"}


def check_model_name(name, label: str) -> None:
    """The name a weights file records (and a .vz header then), as loading takes it: printable text of 1 to
    MAX_MODEL_NAME_CHARS characters."""
    if not (isinstance(name, str) and 0 < len(name) <= MAX_MODEL_NAME_CHARS and name.isprintable()):
        raise CheckpointError(
            f"{label}: model name must be printable text of 1..{MAX_MODEL_NAME_CHARS} chars, not {short_repr(name)}"
        )


def load_weights(path: Path, expected_sha256: str | None = None) -> tuple[HierarchicalVAE, dict[str, str]]:
    """Load a safetensors weights file written by `export_weights` (never executes code).

    Every failure is one CheckpointError line, and the checks run in the order that keeps a hostile file
    cheap: the header alone (metadata size and depth, JSON, config types, ranges and parameter count, tensor
    names, shapes and dtypes), then the tensors, then the model."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    label = path.name
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise CheckpointError(
                f"{label}: sha256 {actual[:16]}... does not match the manifest's {expected_sha256[:16]}..."
            )
    with open(path, "rb") as handle:
        prefix = handle.read(8)
    if len(prefix) == 8 and int.from_bytes(prefix, "little") > MAX_SAFETENSORS_HEADER_BYTES:
        raise CheckpointError(
            f"{label}: safetensors header of {int.from_bytes(prefix, 'little'):,} bytes, more than "
            f"{MAX_SAFETENSORS_HEADER_BYTES:,}"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            found = {}
            for key in handle.keys():
                piece = handle.get_slice(key)
                found[key] = (tuple(piece.get_shape()), piece.get_dtype() in FLOAT_DTYPES)
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for damaged or hostile files
        raise CheckpointError(f"{label} is not a readable safetensors file ({_one_line(error, 120)})") from None
    description = parse_weights_metadata(metadata, label)
    try:
        config = model_config_from_dict(description.get("model_config"), description["format_version"])
    except (KeyError, TypeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{label}: bad model config in metadata ({_one_line(error)})") from None
    check_tensors(config, found, label)
    try:
        tensors = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - a file changed or damaged after its header was read
        raise CheckpointError(f"{label} is not a readable safetensors file ({_one_line(error, 120)})") from None
    return build_model(config, tensors, label), description


def model_from_checkpoint(data: dict[str, Any], use_ema: bool = True) -> HierarchicalVAE:
    key = "ema" if use_ema else "model"
    try:
        config = model_config_from_dict(data["model_config"])
        state = data[key]
    except KeyError as error:
        raise CheckpointError(f"checkpoint lacks {_one_line(error)}") from None
    except TypeError as error:
        raise CheckpointError(f"checkpoint is not a mapping of a config and weights ({_one_line(error)})") from None
    return build_model(config, state, f"checkpoint {key}")


__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "build_model",
    "check_tensors",
    "expected_shapes",
    "config_to_dict",
    "export_weights",
    "load_checkpoint",
    "load_weights",
    "model_from_checkpoint",
    "parse_weights_metadata",
    "save_checkpoint",
    "sha256_file",
]
