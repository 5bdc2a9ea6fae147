"""The Python API that the CLI and users call: load a model; compress and decompress images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vaezip.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    load_weights,
    model_from_checkpoint,
    sha256_file,
)
from vaezip.model import HierarchicalVAE


@dataclass(frozen=True)
class LoadedModel:
    name: str  # what the .vz header records and `--model` accepts
    model: HierarchicalVAE
    sha256: str  # of the file the weights came from
    source: str  # where it was loaded from


def load_model(spec: str | Path) -> LoadedModel:
    """A run folder, a checkpoint (.pt), a weights file (.safetensors) or a shipped model's name."""
    path = Path(spec)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".safetensors" and path.is_file():
        model, metadata = load_weights(path)
        return LoadedModel(metadata.get("name", path.stem), model, sha256_file(path), str(path))
    if path.suffix == ".pt" and path.is_file():
        checkpoint = load_checkpoint(path)
        name = path.parent.name if path.name == CHECKPOINT_NAME else path.stem
        return LoadedModel(name, model_from_checkpoint(checkpoint), sha256_file(path), str(path))
    from vaezip import zoo

    if zoo.has_model(str(spec)):
        return zoo.load(str(spec))
    raise CheckpointError(f"no model {str(spec)!r}: not a run folder, .pt, .safetensors or shipped model name")
