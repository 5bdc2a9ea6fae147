"""Several files coded at once in worker processes (`vaezip compress/decompress -j N`).

Each file is an independent stream, so N workers code N files at a time; what they compute does not depend on
their number or their threads (integer-exact inference), so a file made with -j 4 is byte for byte the file
made with -j 1. Workers are spawned (not forked: torch's thread pools do not survive a fork), ignore Ctrl-C
(the CLI ends them when it stops early), load the model once (when a file first needs it) and share the
machine's cores among them. Everything else (reading inputs, checks, writing outputs, reports) stays in the
calling process, file by file in the order given.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor

from vaezip.allocator import retain_freed_memory

_WORKER: dict = {}


def _start_worker(model_spec: str | None, threads: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _end_with_parent(parent)  # the parent's pid as it gave it: one killed while this started is gone already
    retain_freed_memory()  # as the command's own process does (a spawned worker starts with glibc's defaults)
    # Read by torch when (if) it is imported: a file coded classically needs no torch, and no model.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER["spec"] = model_spec


def _end_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker once its parent is gone: a parent killed outright (SIGKILL, the OOM killer) left its workers
    running for ever, holding both ends of their queue and the command's standard streams (a pipeline or CI job
    waiting on them hung). A daemon thread that looks every `every_s` seconds; a worker holds nothing to clean."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="vaezip-parent-watch", daemon=True).start()


def _model():
    """The -m model, loaded by the first file that needs one (None: each file's own)."""
    if _WORKER.get("spec") is not None and "model" not in _WORKER:
        from vaezip.models import load_model

        _WORKER["model"] = load_model(_WORKER["spec"])
    return _WORKER.get("model")


def _identity():
    """What --fast needs of the -m model, once (None: each file's own): a shipped model's identity reads no
    weights and imports no torch (models.identify_model); the model itself where it is loaded already."""
    if _WORKER.get("spec") is not None and "identity" not in _WORKER:
        from vaezip.models import identify_model

        _WORKER["identity"] = identify_model(_WORKER.get("model") or _WORKER["spec"])
    return _WORKER.get("identity")


def decoded_checksums(data: bytes, model, device: str):
    """The pixel checksums of the images `data` decodes to, or the exception decoding raised (the caller
    reports it as a file that does not decode)."""
    from vaezip.api import decompress_images
    from vaezip.images import pixel_checksum

    try:
        return [pixel_checksum(image) for _, image in decompress_images(data, model, device=device)]
    except Exception as error:  # noqa: BLE001 - whatever goes wrong, the file does not restore its inputs
        return error


def _compress(images, options: dict, verify: bool):
    """(CompressResult, decoded_checksums of the file, seconds decoding) of one file, the last two None
    without `verify`."""
    import time

    from vaezip.api import compress_images

    model = _identity() if options.get("fast") else _model()
    result = compress_images(images, model, **options)
    if not verify:
        return result, None, None
    started = time.perf_counter()
    decoded = decoded_checksums(result.data, model, options.get("device", "auto"))
    return result, decoded, time.perf_counter() - started


def _decompress(data: bytes, device: str):
    """(the file's images, seconds decoding)."""
    import time

    from vaezip.api import decompress_images

    started = time.perf_counter()
    # the -m model as a name, as -j 1 passes it: loaded only for a file coded with a model
    images = decompress_images(data, _WORKER.get("model") or _WORKER.get("spec"), device=device)
    return images, time.perf_counter() - started


def _tracker_deaf_to_hangups() -> None:
    """Start multiprocessing's resource tracker (the pool's queues register with it) with SIGHUP blocked, a mask it
    keeps through its exec; it ignores SIGINT and SIGTERM itself. A closed terminal signals the whole process group:
    the tracker died and was started again while the pool was being torn down, and its tracebacks followed the
    command's one line `vaezip: terminated`. This process's own SIGHUP, held meanwhile, comes when it is unblocked."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is None or not hasattr(signal, "pthread_sigmask"):
        return
    from multiprocessing import resource_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {hangup})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Workers:
    """A pool of `jobs` worker processes holding the model `model_spec` (None: each file's default or the
    model its header names)."""

    def __init__(self, jobs: int, model_spec: str | None):
        self.count = jobs
        self._model_spec = model_spec
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        _tracker_deaf_to_hangups()
        threads = max(1, (os.cpu_count() or 1) // self.count)
        return ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self._model_spec, threads, os.getpid()))

    @property
    def broken(self) -> bool:
        """Whether a worker died and took the pool with it (every file in it or queued for it failed)."""
        return bool(getattr(self._pool, "_broken", False))

    def restart(self) -> None:
        """A fresh pool: one worker that died (killed, out of memory) broke the pool and failed every file in it
        and queued for it. The broken pool's other workers are ended: left alone, one waited for ever on the
        pool's queue after the command had ended, holding its standard streams open."""
        self._end_workers()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def compress(self, images, options: dict, verify: bool) -> Future:
        return self._pool.submit(_compress, images, options, verify)

    def decompress(self, data: bytes, device: str) -> Future:
        return self._pool.submit(_decompress, data, device)

    def close(self, cancel: bool = False) -> None:
        """Wait for the workers (or, with `cancel`, drop queued files and end the running ones now)."""
        if cancel:
            self._end_workers()
        try:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
        except RuntimeError:  # a pool stopped (SIGTERM) before its manager thread started: nothing to wait for
            pass

    def _end_workers(self) -> None:
        processes = getattr(self._pool, "_processes", None) or {}  # pid -> process (CPython's pool)
        for process in list(processes.values()):
            process.terminate()


def default_jobs(requested: int) -> int:
    """-j 0: one worker per core."""
    return requested if requested > 0 else (os.cpu_count() or 1)
