"""Files in and out for the CLI: bounded reads of regular files (or stdin), atomic writes that leave no
temporary behind on SIGTERM / Ctrl-C, removal of the temporaries that killed writers left, and names made
safe to print or to use as a file name.

No heavy imports here (no torch, numpy or Pillow): the CLI refuses bad arguments before loading a model.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import sys
import threading
import unicodedata
from contextlib import contextmanager
from pathlib import Path

# The largest input read into memory: a file (or stdin) past it is refused before it is read. An image of
# vaezip.images.MAX_IMAGE_PIXELS (10^8) pixels is at most ~400 MB even uncompressed (8-bit RGBA) or ~800 MB in a
# 16-bit TIFF; a .vz of that many pixels is smaller still. Documented in docs/ERRORS.md.
MAX_INPUT_BYTES = 1 << 30
_CHUNK = 1 << 20

# `.NAME.tmp-PID`: the temporary an atomic write of NAME by process PID uses (outputs, checkpoints, user models).
_PID_SUFFIX = re.compile(r"[0-9]{1,10}")
# Characters never printed raw nor used in a file name: controls (newline, ESC...), format characters (bidi
# overrides), lone surrogates (undecodable bytes of a file name), line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class InputError(ValueError):
    """An input the CLI will not read (missing, a folder, a FIFO or device, too large). One line, no path:
    the caller names the file."""


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived while `signals_as_exceptions` was active. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it; `finally` blocks (temporary files) run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# ---------------------------------------------------------------------------------------------- names


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def shown(text: str) -> str:
    """`text` with every control, format or undecodable character escaped as repr() would (`\\n`, `\\x1b`,
    `\\u202e`, `\\udcff`): one printable line whatever a file name holds."""
    if not any(_unsafe(char) for char in text):
        return text
    return "".join(repr(char)[1:-1] if _unsafe(char) else char for char in text)


def safe_file_name(name: str, replacement: str = "_") -> str:
    """`name` with every control, format or undecodable character replaced (no newline, NUL or ESC in a file
    name written from a .vz header)."""
    return "".join(replacement if _unsafe(char) else char for char in name)


def png_file_name(name: str) -> str:
    """A stored image name as a plain file name in the output folder (never a path outside it, no control
    characters: a newline, NUL or ESC becomes '_'), as PNG, of at most NAME_BYTES bytes."""
    base = Path(safe_file_name(name).replace("\\", "/")).name
    if base in ("", ".", ".."):
        base = "image"
    plain = str(Path(base).with_suffix(".png"))
    if len(plain.encode()) <= NAME_BYTES:
        return plain
    # A name longer than file systems take (one set through the API, or a long one given ".png"): cut at a
    # character's end.
    stem = plain[: -len(".png")].encode()[: NAME_BYTES - len(".png")].decode("utf-8", "ignore")
    return f"{stem}.png"


# Most file systems take names of 255 bytes: room is left for png_file_names's number (x-4096.png) and for the
# temporary that a file is written through (files.temporary_path: .NAME.tmp-PID).
NAME_BYTES = 255 - len("-4096") - len("..tmp-4194304")


def png_file_names(stored: list[str]) -> list[str]:
    """The file names an archive's images get in the --dir folder: each stored name as png_file_name makes it; where
    several images would get one name (x.png and x.jpg, or two x.png from two folders), the first keeps it and
    the others are numbered in the stored order (x-2.png, x-3.png), never a name another image has. Names are
    compared case-folded and in one Unicode form, as a case-insensitive file system (macOS's) would."""
    if isinstance(stored, (str, bytes)):  # one name, whose characters would each be taken for a name
        raise TypeError(f"png_file_names takes a list of stored names, not one {type(stored).__name__}")
    names = [png_file_name(name) for name in stored]
    taken = {_folded(name) for name in names}
    given: set[str] = set()
    next_number: dict[str, int] = {}  # a stem's next number to try: 4,096 images of one name stay linear
    unique = []
    for name in names:
        if _folded(name) in given:
            stem = name[: -len(".png")]
            number = next_number.get(_folded(stem), 2)
            while _folded(f"{stem}-{number}.png") in taken:
                number += 1
            next_number[_folded(stem)] = number + 1
            name = f"{stem}-{number}.png"
            taken.add(_folded(name))
        given.add(_folded(name))
        unique.append(name)
    return unique


def _folded(name: str) -> str:
    """`name` as a case-insensitive file system compares it: é typed in one character or two, any case."""
    return unicodedata.normalize("NFC", name).casefold()


# ---------------------------------------------------------------------------------------------- reading


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(mode: int) -> InputError:
    if stat.S_ISDIR(mode):
        return InputError("is a directory")
    return InputError(f"not a regular file ({_kind(mode)}); vaezip reads regular files, or '-' for stdin")


def _too_large(what: str, limit: int) -> InputError:
    size = f" ({limit >> 30} GiB)" if limit and limit % (1 << 30) == 0 else ""
    return InputError(f"{what} more than vaezip's input limit of {limit} bytes{size}")


def _os_error(error: OSError) -> InputError:
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return InputError("no such file")
    if isinstance(error, PermissionError):
        return InputError("permission denied")
    return InputError(error.strerror or type(error).__name__)


def read_limited(stream, limit: int | None = None, what: str = "stdin holds", start: bytes = b"") -> bytes:
    """Read a binary stream to its end (after `start`, what was read of it already), refusing it (`what` it holds,
    in the message) as soon as it holds more than `limit` bytes."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    chunks, total = [start], len(start)
    while total <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise _too_large(what, limit)


def check_input(path: str) -> None:
    """InputError where `path` names no regular file (missing, a folder, a FIFO or device): read_input's first
    look, which the CLI also takes before it looks at the output, so that an input's fault is the one named."""
    try:
        before = os.stat(path)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise _os_error(error) if isinstance(error, OSError) else InputError("no such file") from None
    if not stat.S_ISREG(before.st_mode):
        raise _refuse(before.st_mode)


def read_input(path: str, limit: int | None = None) -> tuple[bytes, os.stat_result | None]:
    """The bytes of a regular file (or of stdin for '-') and the file's stat (None for stdin).

    A FIFO, device, socket or folder is refused without reading it (a FIFO is opened non-blocking, so a FIFO
    nobody writes to cannot hang the CLI), and so is anything larger than `limit` (default MAX_INPUT_BYTES)."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    if path == "-":
        if sys.stdin is None:  # its descriptor was closed when the process started (`<&-`)
            raise InputError("standard input is closed")
        try:
            return read_limited(sys.stdin.buffer, limit), None
        except OSError as error:  # open, but not for reading (`0> file`)
            raise InputError(f"cannot read standard input ({error.strerror or type(error).__name__})") from None
    check_input(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise _os_error(error) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # what was opened, not what was looked at (it may have been swapped)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(info.st_mode)
        if info.st_size > limit:
            raise _too_large(f"{info.st_size} bytes,", limit)
        # As many bytes as it holds, and one more: read(limit + 1) took the whole limit's memory for every input
        # (1 GiB: a 140-byte file failed under `ulimit -v`).
        data = handle.read(info.st_size + 1)
        if len(data) > info.st_size:  # it grew since: the rest, within the limit
            data = read_limited(handle, limit, "grew while read to", start=data)
    return data, info


# What `compress -r` takes from a folder: lossless image formats. JPEGs are left alone (their decoded pixels take
# more room than the JPEG does), as are .vz files.
RECURSIVE_IMAGE_SUFFIXES = (".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")


def files_under(folder: str, suffixes: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """The regular files under `folder` whose names end in one of `suffixes` (any case), in the order of their
    paths relative to it: hidden names (a leading '.') and symbolic links (to files or folders) are passed
    over, as are vaezip's own temporaries (hidden too). Also (folder, reason) for each folder that could not be
    read: what it holds is not among the files, and the caller says so."""
    found, unread = [], []

    def refused(error: OSError) -> None:
        unread.append((error.filename or folder, _os_error(error).args[0]))

    for root, folders, names in os.walk(folder, onerror=refused, followlinks=False):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = os.path.join(root, name)
            if (not name.startswith(".") and name.lower().endswith(suffixes) and not os.path.islink(path)
                    and os.path.isfile(path)):
                found.append(path)
    return sorted(found, key=lambda path: Path(os.path.relpath(path, folder)).parts), unread


def file_identity(path: str) -> tuple:
    """What `path` names: (device, inode) of an existing file (so hard links, symlinks and other spellings of one
    file compare equal, as os.path.samefile does), else its resolved absolute path."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return ("path", os.path.normcase(os.path.realpath(path)))


# ---------------------------------------------------------------------------------------------- writing


def _temporary_prefix(path: Path) -> str:
    """`.NAME.tmp-`, or where that and a pid would pass a file name's 255 bytes (an output name of 249 bytes and
    more could not be written at all), `.H.tmp-` with H the first 16 hex digits of the name's sha256."""
    prefix = f".{path.name}.tmp-"
    if len(os.fsencode(prefix)) + 10 <= 255:  # a pid has at most 10 digits (_PID_SUFFIX)
        return prefix
    return f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}.tmp-"


def temporary_path(path: Path, pid: int | None = None) -> Path:
    return path.with_name(f"{_temporary_prefix(path)}{os.getpid() if pid is None else pid}")


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never signal a process group (0) or every process (-1): not a temporary of ours
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # someone else's process, or not a pid at all: leave the file alone
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the `.NAME.tmp-PID` regular files of `path` (NAME its name, in its folder) whose process PID no
    longer runs: a writer of `path` killed by SIGKILL cannot clean up. Only `path`'s own: a file of another name
    that only looks like a temporary (`.report.odt.tmp-4000`) may be anybody's, and is never touched. Files of a
    live process (another vaezip writing the same name, a training run) are kept. Returns what was removed; a
    folder that cannot be listed is left alone."""
    path = Path(path)
    prefix = _temporary_prefix(path)
    removed = []
    try:
        entries = [entry for entry in os.scandir(path.parent) if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        suffix = entry.name[len(prefix):]
        if not _PID_SUFFIX.fullmatch(suffix) or int(suffix) == os.getpid():
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or _process_alive(int(suffix)):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextmanager
def signals_as_exceptions():
    """While the block runs, SIGTERM and SIGHUP raise Terminated (Ctrl-C already raises KeyboardInterrupt), so
    that `finally` clauses remove temporaries and the CLI exits with 128 + the signal number. A signal the
    parent set to be ignored (nohup) stays ignored; outside the main thread nothing is installed.

    C code can swallow the exception a handler raises (compile() and a Cython module's initialisation, run by an
    import): the command went on, wrote its output and exited 0, and every later signal was ignored. So a signal
    is also kept (raise_if_terminated: before an output is put in place), the block's end raises it where the
    command got that far, and a later signal raises again, unless a termination is being handled (`timeout`
    signals both the process and its group, and a second Terminated raised inside the clean-up of the first cut it
    short: workers not ended, the message printed twice)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    _received.clear()

    def raise_terminated(signum, frame):
        _received.append(signum)
        if len(_received) == 1 or sys.exc_info()[1] is None:  # the first, or one that came while nothing unwinds
            raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is None:
            continue
        handler = signal.getsignal(number)
        if handler is signal.SIG_IGN:
            continue
        previous[number] = signal.signal(number, raise_terminated)
    try:
        yield
    except (Terminated, KeyboardInterrupt):
        raise
    except BaseException as ending:  # an error, or the command's exit (typer.Exit): the signal's exit code instead
        if _received and not _after_a_stop(ending):  # not where a stop was told already (`vaezip: terminated`)
            raise Terminated(_received[0]) from None
        raise
    else:
        raise_if_terminated()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        _received.clear()


_received: list[int] = []  # the SIGTERM and SIGHUP signals_as_exceptions took, in order


def _after_a_stop(error: BaseException) -> bool:
    """Whether `error` was raised while a Terminated or KeyboardInterrupt was handled (its context chain holds one)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (Terminated, KeyboardInterrupt)):
            return True
        seen.add(id(error))
        error = error.__context__
    return False


def raise_if_terminated() -> None:
    """Terminated where signals_as_exceptions took a SIGTERM or SIGHUP and the command goes on as if it had not (the
    exception its handler raised was swallowed): called before an output is put in place, and as the block ends.
    Nothing where an exception is being handled: the clean-up of a termination (a training's last checkpoint)."""
    if _received and sys.exc_info()[1] is None:
        raise Terminated(_received[0])


@contextmanager
def _signals_deferred():
    """Hold SIGTERM / SIGINT / SIGHUP back for a few system calls (delivered when the block ends)."""
    held = {signal.SIGTERM, signal.SIGINT} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class OutputError(ValueError):
    """An output that cannot be written where asked (one line, names the folder)."""


class FolderMissing(OutputError):
    """The folder an output goes to does not exist."""


def refuse_special_output(path: Path | str) -> None:
    """OutputError where `path` is something a write would not write into: a FIFO, a device or a socket, a link
    to one, or a name in /dev or /proc on the way through its links (/dev/stdout -> /proc/self/fd/1, which leads
    to whatever stdout is, a regular file too). A rename would put a regular file in its place, even with --force
    (as root, `-o /dev/null -f` would replace the null device); the CLI's `-o - > PATH` writes into it instead.
    A folder is the caller's to name; a dangling link, or one to a regular file elsewhere, is replaced with
    --force."""
    for follow in (False, True):
        try:
            mode = os.stat(path, follow_symlinks=follow).st_mode
        except OSError:
            break
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
            link = ", through a link" if follow else ""
            raise OutputError(f"{path}: not a regular file ({_kind(mode)}{link}); vaezip writes regular files, or "
                              f"'-' for stdout (-o - > {path})")
    system = _system_name(path)
    if system is not None and os.path.lexists(path):
        raise OutputError(f"{path}: names a device or an open file ({system}); vaezip writes regular files, or "
                          f"'-' for stdout (-o - > {path})")
    if system is not None:  # nothing there yet: no file to make in /dev or /proc either
        raise OutputError(f"{path}: in {os.path.dirname(system)}, a folder of devices or open files: choose an "
                          f"output elsewhere")


def _system_name(path: Path | str) -> str | None:
    """The first name on the way from `path` through its symlinks that lies in /dev itself (not in a folder of it
    such as /dev/shm, where files are files) or in /dev/fd or /proc; None if there is none."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        # each name's folder resolved (a link to /dev on the way), the name itself looked at as it is
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        folder = os.path.dirname(current)
        if folder == "/dev" or folder.startswith("/dev/fd") or current.startswith("/proc/"):
            return current
        try:
            target = os.readlink(current)
        except OSError:  # not a link (or gone): the end of the way
            return None
        current = os.path.join(folder, target)
    return None


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path | str, data: bytes, *, overwrite: bool, like: os.stat_result | None = None) -> None:
    """Write `data` to `path` through `.NAME.tmp-PID` in the same folder (written, fsynced, renamed): `path` is
    either untouched or complete. Stale temporaries of `path` by dead processes are removed first; the
    temporary is removed on every failure, Ctrl-C and SIGTERM included (see signals_as_exceptions). Without
    `overwrite`, an existing `path` (a dangling symlink included) is never replaced, even one created while
    this wrote (the rename is then a hard link, which fails on an existing name). A FIFO, device or socket at `path`
    is refused (refuse_special_output), with `overwrite` too. `like`: the stat of the file `path` is made from,
    whose permission bits and access and modification times `path` takes, as gzip, xz and zstd give their
    outputs (where the file system allows; a file system that refuses keeps the new file's own)."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FolderMissing(f"{folder}: no such folder")
    refuse_special_output(path)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    created = False
    try:
        with _signals_deferred():  # the temporary exists exactly when `created` says so
            if os.path.lexists(tmp):
                os.unlink(tmp)  # ours: the pid is this process's (a previous holder of this pid was killed)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                # Owner-only until `like`'s bits are given: an input only its owner may read was readable by
                # others through its output's temporary between the write and the chmod (gzip creates 0600 too)
                fd = os.open(tmp, flags, 0o600 if like is not None else 0o666)
            except OSError as error:
                raise OutputError(f"{folder}: cannot write there ({error.strerror or type(error).__name__})") from None
            created = True
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if like is not None:
                _take_attributes(handle.fileno(), like)
            os.fsync(handle.fileno())
        raise_if_terminated()  # the temporary is removed below: a terminated command leaves no output
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with _signals_deferred():
            if created and os.path.lexists(tmp):
                os.unlink(tmp)
    fsync_dir(folder)


def _take_attributes(fd: int, like: os.stat_result) -> None:
    """The open file `fd` given `like`'s owner and group where this process may (root may; a user may give it one
    of their groups), its permission bits (not set-user-ID and the like) with the owner's read bit always set (the
    output of an input its owner could not read is read back), and its times, after its last write (a write would
    move its modification time again). As gzip: the owner first, so that the bits never apply to the wrong one."""
    for owner in ((like.st_uid, like.st_gid), (-1, like.st_gid)):
        try:
            os.fchown(fd, *owner)
            break
        except (OSError, AttributeError):  # not this process's to give, or Windows
            continue
    try:
        os.fchmod(fd, stat.S_IMODE(like.st_mode) & 0o777 | stat.S_IRUSR)
    except (OSError, AttributeError):  # a file system without permissions (FAT), or Windows
        pass
    try:
        os.utime(fd, ns=(like.st_atime_ns, like.st_mtime_ns))
    except (OSError, NotImplementedError, TypeError):  # no utime through a descriptor here
        pass


def _link_no_clobber(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # fails with FileExistsError if `path` appeared meanwhile: nothing is replaced
    except FileExistsError:
        raise FileExistsError(f"{path} already exists (use --force to overwrite)") from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists (use --force to overwrite)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems cannot fsync a folder)."""
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
