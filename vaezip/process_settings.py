"""Settings that vaezip changes while it computes, put back as the host program had them.

torch's thread count is the calling thread's OpenMP count, lowered and put back in that thread alone
(torch_threads). cuDNN's flags and numpy's BLAS threads are the process's: calls that overlap in a host's threads
used to save and put back one another's changes (the host's BLAS stayed at one thread for good), so cuDNN's flags
are saved by the first call that holds them and put back by the last to let go, and the BLAS limit is held by the
first call alone. Nothing here imports torch until a torch setting is asked for.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Callable, Iterator

__all__ = ["SharedSetting", "blas_threads", "torch_threads", "set_torch_threads", "cudnn_flags"]


class SharedSetting:
    """One process-wide setting (`read()`, `write(value)`) held by any number of calls at once."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None]):
        self._read, self._write = read, write
        self._lock = threading.Lock()
        self._holders = 0
        self._host: Any = None

    @contextlib.contextmanager
    def held(self, value_of: Callable[[Any], Any]) -> Iterator[Any]:
        """Set the setting to `value_of(the host's value)` while the block runs; yields the host's value."""
        with self._lock:
            if self._holders == 0:
                self._host = self._read()
            self._holders += 1
            host = self._host
            self._write(value_of(host))
        try:
            yield host
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._host)


_made: dict[str, SharedSetting] = {}
_made_lock = threading.Lock()


def _setting(name: str, make: Callable[[], SharedSetting]) -> SharedSetting:
    with _made_lock:
        if name not in _made:
            _made[name] = make()
        return _made[name]


def _torchs_openmp():
    """threadpoolctl's controller of torch's own OpenMP library (not another one a host loaded), or None (no
    threadpoolctl, or no OpenMP library under torch's folder). torch sets a thread's count when that thread first
    uses torch, from the last torch.set_num_threads of any thread: asked for here first, so that setting it up
    later cannot undo a count set below."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a dependency; an environment installed before it codes the same, a little slower
        return None
    import torch

    torch.get_num_threads()  # this thread's count set up now (see above)
    folder = os.path.join(os.path.dirname(os.path.realpath(torch.__file__)), "")
    controller = ThreadpoolController()
    own = [lib.filepath for lib in controller.lib_controllers
           if lib.user_api == "openmp" and os.path.realpath(lib.filepath).startswith(folder)]
    return controller.select(filepath=own) if own else None


@contextlib.contextmanager
def torch_threads(value_of: Callable[[int], int]) -> Iterator[int | None]:
    """The calling thread's OpenMP thread count (torch's convolutions and tables run on it) set to `value_of(its
    count)` while the block runs, and put back after; yields the count it had (None: left alone, without
    threadpoolctl or torch's OpenMP library). OpenMP keeps a count per thread; torch.set_num_threads also sets the
    count that threads which first touch torch afterwards start from: calls in a host's threads put back one
    another's lowered counts, and threads started meanwhile kept one for good."""
    openmp = _torchs_openmp()
    if openmp is None:
        yield None
        return
    host = min(lib["num_threads"] for lib in openmp.info())
    with openmp.limit(limits=_possible(value_of(host))):  # this thread's own count (libgomp keeps one per thread)
        yield host


def set_torch_threads(count: int) -> None:
    """The calling thread's OpenMP count set to `count` inside torch_threads (a thread given back mid-coding)."""
    openmp = _torchs_openmp()
    if openmp is not None:
        openmp.limit(limits=_possible(count))


def cudnn_flags() -> SharedSetting:
    """cuDNN's determinism, autotuning and TF32 flags, and CUDA matmul's TF32 flag, as one tuple."""
    import torch

    def read() -> tuple[bool, bool, bool, bool]:
        return (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)

    def write(flags: tuple[bool, bool, bool, bool]) -> None:
        (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) = flags

    return _setting("cudnn flags", lambda: SharedSetting(read, write))


_blas_lock = threading.Lock()
_blas_held = False
_blas_limiter = None  # the held limit (a forked child puts the host's counts back through it)


@contextlib.contextmanager
def _first_holder_limits_blas(threads: int) -> Iterator[None]:
    global _blas_held, _blas_limiter
    with _blas_lock:
        mine, _blas_held = not _blas_held, True
    if not mine:  # another call holds the limit: this one runs under it, or after it under the host's count
        yield
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    try:
        counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        if all(count <= threads for count in counts):  # nothing to lower (a host's own limit, say): left alone
            yield
            return
        # threadpoolctl lets only the thread that set OpenBLAS's count change it again, and puts it back as it
        # found it: set and put back in this one thread, by this one call.
        with threadpool_limits(limits=threads, user_api="blas") as limiter:
            _blas_limiter = limiter
            yield
    finally:
        with _blas_lock:
            _blas_held, _blas_limiter = False, None


def blas_threads(threads: int | None):
    """A context in which numpy's BLAS runs `threads` threads, put back as the host had them after. Calls that
    overlap in a host's threads leave the limit to the first of them (each saving and putting back its own left
    the host's count at one thread: the later ones saved the first's limit, and threadpoolctl lets only the thread
    that set OpenBLAS's count set it again). Without threadpoolctl, or with `threads` None, nothing is changed."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:  # a dependency; an environment installed before it codes the same, a little slower
        return contextlib.nullcontext()
    return _first_holder_limits_blas(threads)


_threads_lost_in_fork = False  # this process was forked from one that had imported torch (see below)


def threads_lost_in_fork() -> bool:
    """Whether this process runs torch on one thread because it was forked from one that had imported torch (whose
    threads it may have started: nothing tells)."""
    return _threads_lost_in_fork


def _possible(count: int) -> int:
    """A thread count torch can run here: one in a child that lost its parent's threads (see below)."""
    return 1 if _threads_lost_in_fork else count


def _single_threaded_torch_after_fork() -> None:
    """In a child forked from a process whose torch had started its OpenMP threads (loading a model does, and any
    parallel operation of the host's), torch's next parallel region waits for threads the child does not have: it
    hangs (torch's own limit; a host that loads a model, then forks workers, as gunicorn's preload does). One
    thread needs none of them, and the integer-exact coder computes the same integers on any count. vaezip's own
    counts (torch_threads) stay at one there too: the float coder of format-1 files pins two, and hung; on one it
    decodes where one thread computes the same floats, and refuses the file as made on another kind of machine where
    not."""
    global _threads_lost_in_fork
    torch = sys.modules.get("torch")
    if torch is None:
        return
    # The host's own torch work starts the threads as well (a review: a few convolutions, then a fork, and any
    # torch operation in the child hung, vaezip's first), and no API tells whether they were: one thread wherever
    # torch was imported, as torch's own DataLoader workers run. (A format-1 float file, made on two, is then
    # refused there: decoded in a fresh process.)
    _threads_lost_in_fork = True
    torch.set_num_threads(1)


def _fresh_state_after_fork() -> None:
    """A child forked while another thread held a setting has that thread's lock and count, not the thread: new
    locks, each setting put back as the host had it and held by no one."""
    global _made_lock, _blas_lock, _blas_held, _blas_limiter
    _made_lock, _blas_lock = threading.Lock(), threading.Lock()
    for setting in _made.values():
        if setting._holders:
            setting._write(setting._host)
        setting._lock, setting._holders = threading.Lock(), 0
    if _blas_limiter is not None:
        try:  # the thread that set the count is gone in the child: threadpoolctl lets this one set it back
            _blas_limiter.restore_original_limits()
        except Exception:  # noqa: BLE001 - a child that cannot is left as it is
            pass
    _blas_held, _blas_limiter = False, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_state_after_fork)
    os.register_at_fork(after_in_child=_single_threaded_torch_after_fork)
