"""Shipped models: pretrained/manifest.json lists each model's weights file, sha256 and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaezip.checkpoint import CheckpointError, load_weights

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MANIFEST = PRETRAINED_DIR / "manifest.json"


def manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        return {"models": {}}
    try:
        data = json.loads(MANIFEST.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{MANIFEST} is not valid JSON ({error})") from None
    if not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{MANIFEST} has no 'models' mapping")
    return data


def has_model(name: str) -> bool:
    return name in manifest()["models"]


def load(name: str):
    from vaezip.api import LoadedModel

    entry = manifest()["models"][name]
    path = PRETRAINED_DIR / entry["file"]
    model, _ = load_weights(path, expected_sha256=entry["sha256"])
    return LoadedModel(name, model, entry["sha256"], str(path))


def default_for(mode: str) -> str:
    """The shipped model that `vaezip compress` uses for an image of this mode."""
    kind = "grey" if mode in ("L", "LA") else "colour"
    name = manifest().get("defaults", {}).get(kind)
    if name is None or not has_model(name):
        raise CheckpointError(f"no default {kind} model is installed: pass --model (a run folder or weights file)")
    return name
