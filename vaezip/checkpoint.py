"""Atomic checkpoint saving and strict, code-free loading.

A checkpoint is a plain dict of tensors and primitive values written with `torch.save` and read with
`torch.load(weights_only=True)`, so loading never executes code from the file. It describes itself
(format version, model and training configs, step), so a model can be rebuilt from it alone.
Saving writes a temporary file in the same folder, fsyncs it and renames it over the old one: a save killed
half-way never replaces the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from vaezip.config import (
    FORMAT_VERSION,
    READABLE_FORMATS,
    ConfigError,
    ModelConfig,
    config_to_dict,
    model_config_from_dict,
    train_config_from_dict,
)
from vaezip.model import HierarchicalVAE

CHECKPOINT_NAME = "last.pt"
KIND = "vaezip-checkpoint"
WEIGHTS_KIND = "vaezip-weights"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used."""


def _temporary(path: Path, pid: int | str) -> Path:
    return path.with_name(f".{path.name}.tmp-{pid}")


def remove_stale_writes(path: Path) -> None:
    """Delete the temporary files that writers of `path` killed mid-write (SIGKILL skips cleanup) left."""
    path = Path(path)
    for stale in path.parent.glob(_temporary(path, "*").name):
        stale.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = _temporary(path, os.getpid())
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import io

    buffer = io.BytesIO()
    torch.save({"kind": KIND, "format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # TorchVersion is a plain str subclass (no code runs when it is rebuilt); early runs stored it.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for damaged or hostile files
        raise CheckpointError(f"{path} is not a readable vaezip checkpoint ({type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a vaezip checkpoint")
    if data.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has checkpoint format {data.get('format_version')}, this vaezip reads {READABLE_FORMATS}"
        )
    try:
        # Older formats are upgraded explicitly here, so everything downstream sees the current one.
        config = model_config_from_dict(data["model_config"], data["format_version"])
        if "train_config" in data:
            data["train_config"] = config_to_dict(train_config_from_dict(data["train_config"], data["format_version"]))
    except (KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad config ({error})") from None
    data["model_config"] = config_to_dict(config)
    data["format_version"] = FORMAT_VERSION
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor]) -> HierarchicalVAE:
    model = HierarchicalVAE(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"weights do not match the model config: {first}") from None
    return model.eval()


def export_weights(checkpoint: dict[str, Any], path: Path, name: str, use_ema: bool = True) -> str:
    """Write the (EMA) weights as safetensors with the config in its metadata; returns the file's sha256."""
    from safetensors.torch import save

    state = checkpoint["ema" if use_ema else "model"]
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
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))
    return sha256_file(Path(path))


def load_weights(path: Path, expected_sha256: str | None = None) -> tuple[HierarchicalVAE, dict[str, str]]:
    """Load a safetensors weights file written by `export_weights` (never executes code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    raw = path.read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise CheckpointError(
                f"{path.name}: sha256 {actual[:16]}... does not match the manifest's {expected_sha256[:16]}..."
            )
    try:
        tensors = load(raw)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, ValueError, OSError) as error:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({error})") from None
    try:
        description = json.loads(metadata["vaezip"])
        valid = description["kind"] == WEIGHTS_KIND and description["format_version"] in READABLE_FORMATS
    except (KeyError, TypeError, json.JSONDecodeError):
        valid = False
    if not valid:
        raise CheckpointError(f"{path.name} is not vaezip weights of a format this vaezip reads {READABLE_FORMATS}")
    try:
        config = model_config_from_dict(description["model_config"], description["format_version"])
    except (KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{path.name}: bad model config in metadata ({error})") from None
    return build_model(config, tensors), description


def model_from_checkpoint(data: dict[str, Any], use_ema: bool = True) -> HierarchicalVAE:
    config = model_config_from_dict(data["model_config"])
    return build_model(config, data["ema" if use_ema else "model"])


__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "atomic_write_bytes",
    "remove_stale_writes",
    "build_model",
    "config_to_dict",
    "export_weights",
    "load_checkpoint",
    "load_weights",
    "model_from_checkpoint",
    "save_checkpoint",
    "sha256_file",
]
