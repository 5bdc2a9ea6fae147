"""Loading a model to code with: a run folder, a checkpoint, a weights file or a model's name (vaezip/zoo.py).

Importing it imports no torch (vaezip/checkpoint.py is imported when a model is loaded), so that the API can
re-export these names and a file that needs no model still decodes without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaezip import zoo
from vaezip.errors import CheckpointError

if TYPE_CHECKING:
    from vaezip.config import ModelConfig
    from vaezip.model import HierarchicalVAE


@dataclass(frozen=True)
class LoadedModel:
    """A model and the weights file it came from. Its weights must not be changed in place: a file it codes names
    the weights file's sha256, and a decoder elsewhere loads that file."""

    name: str  # what the .vz header records and `--model` accepts
    model: HierarchicalVAE
    sha256: str  # of the file the weights came from
    source: str  # where it was loaded from

    @property
    def config(self) -> ModelConfig:
        return self.model.config


@dataclass(frozen=True)
class ModelIdentity:
    """A model as a file names it, without its network: all that coding with no network (compress --fast)
    needs, the header's name and sha256 and the tiles' stride, so that it reads no weights and imports no torch."""

    name: str
    sha256: str
    config: ModelConfig
    source: str


def _model_name(spec) -> str | None:
    """`spec` where it names a shipped or user model: a str (not a Path) that one holds. A name wins over a folder
    or file of that name in the working directory (`./NAME` names those): run with `--out pets --name pets`, the
    folder would otherwise stand for the installed model and files record its name with another sha256."""
    if not isinstance(spec, str) or "/" in spec or "\\" in spec or spec.endswith((".pt", ".safetensors")):
        return None  # a path
    try:
        return spec if zoo.has_model(spec) else None
    except CheckpointError:  # a damaged user manifest: a folder or file of that name still loads
        if Path(spec).exists():
            return None
        raise


def identify_model(spec: str | Path | LoadedModel | ModelIdentity) -> LoadedModel | ModelIdentity:
    """A shipped model's name, or an installed user model's: its identity from the manifest (no weights read, no
    torch); a loaded model as it is; anything else loaded (load_model), whose weights files and run folders only
    torch reads."""
    from vaezip.config import model_config_from_dict

    if isinstance(spec, (LoadedModel, ModelIdentity)):
        return spec
    name = _model_name(spec)
    if name is not None and zoo.is_shipped(name):
        entry = zoo.manifest()["models"][name]
        path, sha256 = zoo.weights_file(name)
        try:
            config = model_config_from_dict(entry["config"], entry["weights_format"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"the manifest's entry for {name!r} has no valid config ({error})") from None
        return ModelIdentity(name, sha256, config, str(path))
    if name is not None and zoo.is_user_model(name):
        path, sha256 = zoo.weights_file(name)
        config = _recorded_config(path, sha256)
        return ModelIdentity(name, sha256, config, str(path)) if config is not None else load_model(spec)
    return load_model(spec)


def _recorded_config(path: Path, sha256: str):
    """The model config a weights file records in its safetensors header, read without torch, where the file is
    the one the manifest names (its sha256); None for anything else, which load_model then loads or names."""
    import hashlib
    import json

    from vaezip.config import model_config_from_dict

    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        length = int.from_bytes(data[:8], "little")
        if not 0 < length <= min(len(data) - 8, 1 << 24):
            return None
        description = json.loads(json.loads(data[8: 8 + length])["__metadata__"]["vaezip"])
        return model_config_from_dict(description["model_config"], description["format_version"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # CheckpointError is a ValueError
        return None


def load_model(spec: str | Path) -> LoadedModel:
    """A shipped or user model's name, a run folder, a checkpoint (.pt) or a weights file (.safetensors)."""
    from vaezip.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_weights, model_from_checkpoint, sha256_file

    name = _model_name(spec)
    if name is not None:
        # The file's sha256 is checked against the manifest that lists it before anything in it is parsed.
        path, sha256 = zoo.weights_file(name)
        model, _ = load_weights(path, expected_sha256=sha256)
        return LoadedModel(name, model, sha256, str(path))
    path = Path(spec)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".safetensors" and path.is_file():
        model, metadata = load_weights(path)
        sha256 = sha256_file(path)
        return LoadedModel(_own_name(metadata.get("name", path.stem), sha256, path), model, sha256, str(path))
    if path.suffix == ".pt" and path.is_file():
        checkpoint = load_checkpoint(path)
        sha256 = sha256_file(path)
        name = path.parent.name if path.name == CHECKPOINT_NAME else path.stem
        return LoadedModel(_own_name(name, sha256, path), model_from_checkpoint(checkpoint), sha256, str(path))
    raise CheckpointError(f"no model {str(spec)!r}: not a shipped or installed model's name, a run folder, .pt or "
                          f".safetensors")


def _own_name(name: str, sha256: str, path: Path) -> str:
    """The name a model loaded from `path` goes by (in .vz headers, reports): the one it records, unless that is a
    shipped model's (in any case) and these are other weights, which would then pass for that model beside every
    figure and be blamed on it by decompress: its file's name instead."""
    from vaezip.checkpoint import CHECKPOINT_NAME

    try:
        clash = zoo.shipped_name_like(name)
        if clash is None or zoo.manifest()["models"][clash]["sha256"] == sha256:
            return name
    except CheckpointError:  # a damaged install: a weights file given by its path loads all the same
        return name
    return f"{path.parent.name}/{path.name}" if path.name == CHECKPOINT_NAME else path.name


def load_by_sha256(sha256_prefix: str) -> LoadedModel | None:
    """A model whose weights' sha256 starts with `sha256_prefix` (a .vz header's): an installed one (shipped
    first), else retired user weights (vaezip/zoo.py: RETIRED), newest first; a copy that does not load (its file
    gone or damaged) is passed over for the next. None where there is none; where none of them loads, the first
    one's error (a damaged copy is named, not called missing)."""
    from vaezip.checkpoint import load_weights

    first_error = None
    for name in zoo.names_with_sha256(sha256_prefix):
        try:
            return load_model(name)
        except CheckpointError as error:
            first_error = first_error or error
    for path, sha256 in zoo.retired_weights(sha256_prefix):
        try:
            model, metadata = load_weights(path, expected_sha256=sha256)
        except CheckpointError as error:
            first_error = first_error or error
            continue
        return LoadedModel(str(metadata.get("name", path.stem)), model, sha256, str(path))
    if first_error is not None:
        raise first_error
    return None


def default_model(mode: str) -> str:
    """The shipped model's name that codes an image of this mode when no model is given."""
    return zoo.default_for(mode)
