"""Models by name: the shipped ones (pretrained/manifest.json) and the user's own (a user model directory).

A name resolves to a weights file and its sha256, from the shipped manifest first, then from the user's.
The user model directory is $VAEZIP_MODELS, else $XDG_DATA_HOME/vaezip/models, else
~/.local/share/vaezip/models. It holds `manifest.json` (and `.manifest.lock`, which installs and removals
lock) and one `NAME-SHA.safetensors` per model;
`vaezip export RUN --name NAME` (or `vaezip train ... --name NAME`) installs into it. Weights replaced or
removed stay there as retired (see RETIRED), for the files made with them. Loading a user model
is as safe as loading a shipped one: safetensors only (no code runs), the file's sha256 checked against the
manifest before anything is parsed.

Importing this module imports no torch (`vaezip models` only reads the manifests)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from vaezip.errors import CheckpointError

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
MANIFEST = PRETRAINED_DIR / "manifest.json"

USER_MODELS_ENV = "VAEZIP_MODELS"
USER_MANIFEST_NAME = "manifest.json"
# Installs and removals hold an exclusive lock on this file (next to the manifest, never deleted) while they
# read, change and replace the manifest, so that two at once cannot lose each other's entry.
USER_MANIFEST_LOCK_NAME = ".manifest.lock"
USER_MANIFEST_KIND = "vaezip-user-models"
USER_MANIFEST_FORMAT = 1
# The user's manifest is read on every decode by name: a damaged or hostile one is refused before parsing.
MAX_USER_MANIFEST_BYTES = 1 << 20
# A name goes into .vz headers, file names and command lines: plain characters only. It may not look like a
# path or a weights file, which `--model` would take as one.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_LIKE_SUFFIXES = (".pt", ".safetensors", ".vz", ".json")
FILE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------- shipped


def manifest() -> dict[str, Any]:
    """The shipped manifest ({"models": {}} if none is installed); a damaged one is one CheckpointError line."""
    if not MANIFEST.is_file():
        return {"models": {}}
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{MANIFEST}: cannot read the shipped manifest "
                              f"({getattr(error, 'strerror', None) or type(error).__name__})") from None
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{MANIFEST} is not valid JSON ({str(error)[:100]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{MANIFEST} has no 'models' mapping")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or not all(isinstance(value, str) for value in defaults.values()):
        raise CheckpointError(f"{MANIFEST}: 'defaults' is not a mapping of kinds to model names")
    for name, entry in data["models"].items():  # a damaged install (a hand edit): named, never a KeyError
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                or not FILE_PATTERN.fullmatch(entry["file"]) or not isinstance(entry.get("sha256"), str) \
                or not SHA256_PATTERN.fullmatch(entry["sha256"]):
            raise CheckpointError(f"{MANIFEST}: the entry of shipped model {short_text(name)} has no plain weights "
                                  f"file name and sha256 (a damaged install: install vaezip again)")
    return data


def short_text(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_shipped(name: str) -> bool:
    return name in manifest()["models"]


def default_for(mode: str) -> str:
    """The shipped model that `vaezip compress` uses for an image of this mode."""
    kind = "grey" if mode in ("L", "LA") else "colour"
    name = manifest().get("defaults", {}).get(kind)
    if name is None or not is_shipped(name):
        raise CheckpointError(f"no default {kind} model is installed: pass --model (a run folder or weights file)")
    return name


# ---------------------------------------------------------------------------------------------- user models


def user_models_dir() -> Path:
    """Where user models live: $VAEZIP_MODELS, else $XDG_DATA_HOME/vaezip/models, else
    ~/.local/share/vaezip/models (the XDG default)."""
    chosen = os.environ.get(USER_MODELS_ENV, "").strip()
    if chosen:
        try:
            folder = Path(chosen).expanduser()
        except RuntimeError:  # ~someone who has no home folder here
            raise CheckpointError(f"{USER_MODELS_ENV}={chosen!r}: no such home folder") from None
        if not folder.is_absolute():  # it would name another folder in every working directory
            raise CheckpointError(f"{USER_MODELS_ENV}={chosen!r} is a relative path: give an absolute one")
        return folder
    data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    # XDG says a relative $XDG_DATA_HOME is invalid and must be ignored.
    if data_home and os.path.isabs(data_home):
        return Path(data_home) / "vaezip" / "models"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no user entry (a container run under an arbitrary uid)
        home = Path()
    if not home.is_absolute():  # HOME relative, or empty
        raise CheckpointError(f"no home folder for the user models: set {USER_MODELS_ENV} (or XDG_DATA_HOME) to "
                              f"an absolute path")
    return home / ".local" / "share" / "vaezip" / "models"


def user_manifest_path() -> Path:
    return user_models_dir() / USER_MANIFEST_NAME


def _empty_user_manifest() -> dict[str, Any]:
    return {"kind": USER_MANIFEST_KIND, "format_version": USER_MANIFEST_FORMAT, "models": {}}


def user_manifest() -> dict[str, Any]:
    """The user's manifest (empty if there is none); a damaged one is one CheckpointError line."""
    path = user_manifest_path()
    try:
        if not path.exists():
            return _empty_user_manifest()
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would hang or flood the read
            raise CheckpointError(f"{path}: the user model manifest is not a regular file")
        with open(path, "rb") as file:
            raw = file.read(MAX_USER_MANIFEST_BYTES + 1)  # bounded whatever its size says
        if len(raw) > MAX_USER_MANIFEST_BYTES:
            raise CheckpointError(f"{path}: more than a user model manifest may hold ({MAX_USER_MANIFEST_BYTES:,} "
                                  f"bytes)")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise CheckpointError(f"{path}: cannot read the user model manifest ({reason})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: the user model manifest is not valid JSON ({str(error)[:100]})") from None
    if not isinstance(data, dict) or data.get("kind") != USER_MANIFEST_KIND or not isinstance(data.get("models"), dict):
        raise CheckpointError(f"{path} is not a vaezip user model manifest")
    if type(data.get("format_version")) is not int or data.get("format_version") != USER_MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: user model manifest format {str(data.get('format_version'))[:20]!r}, this "
                              f"vaezip reads {USER_MANIFEST_FORMAT}")
    return data


def _checked_entry(name: str, entry: Any) -> dict[str, Any]:
    """A user manifest entry that is safe to follow: a plain file name inside the directory and a sha256. The
    manifest is a file anyone with write access to the folder could have edited: never follow a path out."""
    where = f"user model {name!r} ({user_manifest_path()})"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: the manifest entry is not a mapping")
    file, sha = entry.get("file"), entry.get("sha256")
    if not isinstance(file, str) or not FILE_PATTERN.fullmatch(file):
        raise CheckpointError(f"{where}: the manifest entry's file is not a plain .safetensors file name")
    if not isinstance(sha, str) or not SHA256_PATTERN.fullmatch(sha):
        raise CheckpointError(f"{where}: the manifest entry has no valid sha256")
    return entry


def user_models() -> dict[str, dict[str, Any]]:
    return user_manifest()["models"]


def is_user_model(name: str) -> bool:
    return not is_shipped(name) and name in user_models()


# ---------------------------------------------------------------------------------------------- by name


def has_model(name: str) -> bool:
    """Whether `name` is a shipped or an installed user model (the shipped one wins: installs never shadow)."""
    return is_shipped(name) or name in user_models()


def names_with_sha256(prefix: str, data: dict[str, Any] | None = None) -> list[str]:
    """The names of the shipped and installed models whose weights' sha256 starts with `prefix` (a .vz header's),
    shipped first (`data`: the user manifest, read where needed otherwise). The same weights under another name
    (installed again, or renamed) code the same."""
    shipped = manifest()["models"]
    names = [name for name, entry in shipped.items() if entry["sha256"].startswith(prefix)]
    models = (user_manifest() if data is None else data)["models"]
    for name, entry in models.items():
        if name in shipped or not isinstance(entry, dict) or not str(entry.get("sha256", "")).startswith(prefix):
            continue  # (a name a shipped model shadows would load the shipped weights)
        try:
            _checked_entry(name, entry)
        except CheckpointError:  # a damaged entry: another may hold the same weights
            continue
        names.append(name)
    return names


def with_sha256(prefix: str) -> str | None:
    """The first of names_with_sha256, or None."""
    return next(iter(names_with_sha256(prefix)), None)


def weights_file(name: str) -> tuple[Path, str]:
    """The weights file of the model called `name` and the sha256 that the manifest it is listed in records
    (vaezip/models.py loads it, checking that sha256 before parsing anything)."""
    shipped = manifest()["models"]
    if name in shipped:
        entry = shipped[name]
        path = PRETRAINED_DIR / entry["file"]
    else:
        models = user_models()
        if name not in models:
            raise CheckpointError(f"no model {name!r}: not a shipped or installed user model (vaezip models)")
        entry = _checked_entry(name, models[name])
        path = user_models_dir() / entry["file"]
    return path, entry["sha256"]


def check_name(name: str) -> None:
    """Refuse a name that cannot be installed: not plain, path-like, or a shipped model's (also in another
    case: on a case-insensitive disk or in a user's mind, Photo is photo)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CheckpointError(
            f"model name {name[:40]!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name.lower().endswith(PATH_LIKE_SUFFIXES):
        raise CheckpointError(f"model name {name!r} looks like a file name: choose one without "
                              f"{'.' + name.rsplit('.', 1)[-1]!r}")
    check_not_shipped(name)


def check_not_shipped(name: str, label: str = "") -> None:
    """Refuse a shipped model's name, in any case (on a case-insensitive disk or in a user's mind, Photo is photo):
    a model under it would pass for the shipped one. `label`: what gave it ("--name "), before the name."""
    clash = shipped_name_like(name)
    if clash is not None:
        raise CheckpointError(f"{label}{name!r} is the name of a shipped model ({clash}): choose another name")


def shipped_name_like(name: str) -> str | None:
    """The shipped model whose name is `name` in any case (on a case-insensitive disk or in a user's mind, Photo is
    photo), or None."""
    return next((shipped for shipped in manifest()["models"] if shipped.lower() == str(name).lower()), None)


def check_installable(name: str, force: bool) -> None:
    """Everything that would make `install(name, ...)` refuse, checked before hours of training: the folder is
    made now if it must be, and must take files."""
    check_name(name)
    folder = user_models_dir()
    there = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if there is not None and not there.is_dir():  # a file where the folder, or one above it, would go
        raise CheckpointError(f"{folder}: cannot create the user model directory ({there} is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"{folder}: cannot create the user model directory "
                              f"({error.strerror or type(error).__name__})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"{folder}: the user model directory does not take files (no write permission)")
    installed = user_models()
    other_case = next((other for other in installed if other.lower() == name.lower() and other != name), None)
    if other_case is not None:  # their files would be one on a case-insensitive disk (macOS's, Windows')
        raise CheckpointError(f"user model {other_case!r} is installed: a name that differs from it in case only "
                              f"is refused (vaezip models --remove {other_case} first, or choose another name)")
    if name in installed and not force:
        raise FileExistsError(f"user model {name!r} is already installed in {user_models_dir()} (use --force to "
                              f"replace it)")


def install(name: str, weights: bytes, *, info: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Install safetensors `weights` (already checked by the caller) as user model `name`; returns its entry.

    The weights go to a file named after their content, then the manifest is replaced: at every moment the
    manifest names a complete file whose sha256 it records, and a replaced model's old file is removed last."""
    check_installable(name, force)  # refused before creating anything
    folder = user_models_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"{folder}: cannot create the user model directory "
                              f"({error.strerror or type(error).__name__})") from None
    with _manifest_lock(folder):
        check_installable(name, force)  # again: another process may have installed it meanwhile
        return _install_locked(folder, name, weights, info)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _install_locked(folder: Path, name: str, weights: bytes, info: dict[str, Any] | None) -> dict[str, Any]:
    """The entry installed; a replaced model's weights are kept as retired (see RETIRED), and its entry is returned
    under "replaced"."""
    from vaezip.files import atomic_write

    data = user_manifest()
    previous = data["models"].get(name)
    sha = hashlib.sha256(weights).hexdigest()
    file = f"{name}-{sha[:12]}.safetensors"
    entry = {**(info or {}), "file": file, "sha256": sha, "bytes": len(weights), "installed": _now()}
    data["models"][name] = entry
    # Installed again: retired no more (copies of the same bytes under other names deleted once it is written)
    copies = [kept for kept in retired_entries(data) if kept.get("sha256") == sha]
    data[RETIRED] = [kept for kept in retired_entries(data) if kept.get("sha256") != sha]
    replaced = _retire(name, previous, data) if isinstance(previous, dict) else None
    text = _manifest_text(data)  # before any file is written: what cannot be recorded leaves no weights behind
    atomic_write(folder / file, weights, overwrite=True)  # same name, same bytes
    atomic_write(folder / USER_MANIFEST_NAME, text, overwrite=True)
    if isinstance(previous, dict) and replaced is None:
        _remove_unreferenced(previous.get("file"), data)
    for copy in copies:
        _remove_unreferenced(copy.get("file"), data)
    return {**entry, "replaced": replaced} if replaced is not None else entry


def _manifest_text(data: dict[str, Any]) -> bytes:
    """The user manifest as written, refused where it could not be read back (too large: every retired weights
    file adds an entry)."""
    try:
        text = (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the model's description cannot be recorded ({str(error)[:100]})") from None
    if len(text) > MAX_USER_MANIFEST_BYTES:
        raise CheckpointError(f"the user model manifest would hold more than {MAX_USER_MANIFEST_BYTES:,} bytes: "
                              f"vaezip models --purge NAME deletes retired weights")
    return text


def remove(name: str) -> dict[str, Any]:
    """Uninstall user model `name`: its name goes, its weights stay as retired (see RETIRED); returns the entry it
    had."""
    if is_shipped(name):
        raise CheckpointError(f"{name!r} is a shipped model: only user models can be removed")
    folder = user_models_dir()
    if not folder.is_dir():
        raise CheckpointError(f"no user model {name!r} in {folder}")
    with _manifest_lock(folder):
        return _remove_locked(name)


def _remove_locked(name: str) -> dict[str, Any]:
    from vaezip.files import atomic_write

    data = user_manifest()
    if name not in data["models"]:
        raise CheckpointError(f"no user model {name!r} in {user_models_dir()}")
    entry = data["models"].pop(name)
    retired = _retire(name, entry, data) if isinstance(entry, dict) else None
    atomic_write(user_manifest_path(), _manifest_text(data), overwrite=True)
    if isinstance(entry, dict) and retired is None:
        _remove_unreferenced(entry.get("file"), data)
    return entry


# ---------------------------------------------------------------------------------------------- retired weights
# A .vz file made with a user model decodes only with those very weights. Replacing the model (--force) or
# removing its name deleted them, and every file made with them could never be decoded again. They are kept
# instead, listed in the manifest as retired: `decompress` finds them by the sha256 a file records, `vaezip
# models` lists them, and only `vaezip models --purge NAME` deletes them, saying what it costs.
RETIRED = "retired"


def retired_entries(data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The retired weights the user manifest (or `data`) lists, oldest first (entries that are no mapping left
    out: an older vaezip ignores the list, a hand edit may break it)."""
    entries = (user_manifest() if data is None else data).get(RETIRED, [])
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _retire(name: str, entry: dict[str, Any], data: dict[str, Any]) -> dict[str, Any] | None:
    """Record `entry` (user model `name`'s, just replaced or removed) in `data` as retired; the entry recorded, or
    None where no file needs keeping: another installed name holds the same weights (the file is then a copy to
    delete once the manifest is written: _remove_unreferenced), the entry names no plain file, or its file is
    missing."""
    file = entry.get("file")
    if not isinstance(file, str) or not FILE_PATTERN.fullmatch(file):
        return None
    if any(isinstance(other, dict) and _same_file(other.get("file"), file) for other in data["models"].values()):
        return None
    if usable_holder(str(entry.get("sha256", "")), data) is not None:
        return None
    if not (user_models_dir() / file).is_file():  # gone already: a retired entry would list weights that are not there
        return None
    kept = [other for other in retired_entries(data) if not _same_file(other.get("file"), file)]
    retired = {**entry, "name": name, "retired": _now()}
    data[RETIRED] = [*kept, retired]
    return retired


def usable_holder(sha256: str, data: dict[str, Any]) -> str | None:
    """The name of an installed user model (in `data`) that holds the weights `sha256` and that a decode would
    load: not shadowed by a shipped name, a plain file name, its file there and of that sha256. Only such a copy
    lets another be deleted."""
    if not SHA256_PATTERN.fullmatch(sha256):
        return None
    shipped = manifest()["models"]
    for name in names_with_sha256(sha256, data):
        if name not in shipped and _file_problem(user_models_dir() / data["models"][name]["file"], sha256) is None:
            return name
    return None


def _same_file(a: Any, b: Any) -> bool:
    """Whether two plain file names of the user model folder name one file: the same name, or names that differ
    in case only where the disk does not tell them apart (macOS's and Windows' do not: Foo-x.safetensors is
    foo-x.safetensors there, and deleting one deleted the other)."""
    if not isinstance(a, str) or not isinstance(b, str) or a.lower() != b.lower():
        return False
    if a == b:
        return True
    try:
        return os.path.samefile(user_models_dir() / a, user_models_dir() / b)
    except (OSError, CheckpointError):  # one of them is not there: two names, two files (or none)
        return False


def retired_weights(sha256_prefix: str) -> list[tuple[Path, str]]:
    """The retired weights files whose sha256 starts with `sha256_prefix` (a .vz header's), newest first, each with
    the sha256 the manifest records (checked before the file is parsed: a damaged copy is passed over)."""
    try:
        entries = retired_entries()
    except CheckpointError:  # a damaged manifest: the error that names it comes from the model's name
        return []
    found = []
    for entry in reversed(entries):
        try:
            _checked_entry(retired_name(entry), entry)
        except CheckpointError:
            continue
        path = user_models_dir() / entry["file"]
        if entry["sha256"].startswith(sha256_prefix) and path.is_file():
            found.append((path, entry["sha256"]))
    return found


def retired_name(entry: dict[str, Any]) -> str:
    """The name a retired entry is listed and purged by."""
    return str(entry.get("name", "?"))


def purge(name: str) -> list[dict[str, Any]]:
    """Delete the retired weights recorded under `name` (files made with them will no longer decode); returns
    their entries. An installed model of that name is left alone."""
    folder = user_models_dir()
    if not folder.is_dir():
        raise CheckpointError(f"no retired weights of {name!r} in {folder}")
    with _manifest_lock(folder):
        from vaezip.files import atomic_write

        data = user_manifest()
        entries = retired_entries(data)
        purged = [entry for entry in entries if retired_name(entry) == name]
        if not purged:
            raise CheckpointError(f"no retired weights of {name!r} in {folder} (vaezip models lists them)")
        data[RETIRED] = [entry for entry in entries if retired_name(entry) != name]
        atomic_write(user_manifest_path(), _manifest_text(data), overwrite=True)
        for entry in purged:
            _remove_unreferenced(entry.get("file"), data)
    return purged


@contextlib.contextmanager
def _manifest_lock(folder: Path):
    """Hold an exclusive lock on `folder`'s manifest lock file: fcntl.flock where it exists (POSIX), else
    msvcrt.locking (Windows). Either is released when the file is closed, also when the process dies; it only
    excludes other vaezip installs and removals (readers need none: the manifest is replaced atomically)."""
    path = folder / USER_MANIFEST_LOCK_NAME
    try:  # never through a link: the lock file would be made wherever it points
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644), "r+b")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open the user model lock file "
                              f"({error.strerror or type(error).__name__})") from None
    with handle:
        import errno

        try:
            import fcntl
        except ImportError:  # Windows
            fcntl = None
            import msvcrt
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        else:
            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # tries for 10 s, then raises
                    break
                except OSError as error:
                    if error.errno != errno.EDEADLOCK:  # EDEADLOCK: still held by another install, wait on
                        raise
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            else:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def _remove_unreferenced(file: Any, data: dict[str, Any]) -> None:
    """Delete a user model file that no manifest entry, installed or retired, names any more (only a plain name in
    the folder)."""
    if not isinstance(file, str) or not FILE_PATTERN.fullmatch(file):
        return
    if any(isinstance(entry, dict) and _same_file(entry.get("file"), file)
           for entry in (*data["models"].values(), *retired_entries(data))):
        return
    try:
        (user_models_dir() / file).unlink()
    except OSError:
        pass  # already gone, or not ours to delete: a stray file costs disk space, nothing else


def _file_problem(path: Path, sha256: Any) -> str | None:
    """What keeps a listed weights file from loading: missing, or not the bytes its manifest records (every load
    refuses it then; the listing said it was fine)."""
    from vaezip.files import sha256_file

    if not path.is_file():
        return f"its file {path.name} is missing"
    try:
        actual = sha256_file(path)
    except OSError as error:
        return f"its file {path.name} cannot be read ({error.strerror or type(error).__name__})"
    if actual != sha256:
        return f"its file {path.name} is damaged or replaced (not the sha256 the manifest records)"
    return None


def listing() -> list[dict[str, Any]]:
    """Every model by name for `vaezip models`: shipped first, then the user's, then retired weights, each with
    `kind` ("shipped", "user" or "retired"), and `problem` where an entry cannot be used (listed, not hidden):
    each weights file is read and checked against its sha256, as loading it would."""
    rows = []
    shipped = manifest()
    defaults = {value: key for key, value in shipped.get("defaults", {}).items()}
    for name, entry in shipped["models"].items():
        row = {**entry, "name": name, "kind": "shipped", "default_for": defaults.get(name, "")}
        problem = _file_problem(PRETRAINED_DIR / entry["file"], entry["sha256"])
        if problem is not None:
            row["problem"] = f"{problem} (a damaged install: install vaezip again)"
        rows.append(row)
    entries = [(str(name), "user", entry) for name, entry in user_models().items()]
    entries += [(retired_name(entry), "retired", entry) for entry in retired_entries()]
    for name, kind, entry in entries:
        row = {"name": name, "kind": kind, "default_for": ""}
        # the entry's own fields, but never its name, kind or defaults (an entry saying "shipped" is not one); a user
        # entry's only once it checks out, a retired one's always (its date is the listing's text)
        fields = {key: value for key, value in entry.items() if key not in row} if isinstance(entry, dict) else {}
        if kind == "retired":
            row.update(fields)
        try:
            _checked_entry(name, entry)
            if kind == "user":
                row.update(fields)
            problem = ("shadowed by the shipped model of that name (not used)" if kind == "user" and
                       name in shipped["models"] else _file_problem(user_models_dir() / entry["file"], entry["sha256"]))
        except CheckpointError as error:
            problem = str(error)
        if problem is not None:
            row["problem"] = problem
        rows.append(row)
    return rows
