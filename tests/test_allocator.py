"""vaezip.allocator: the command keeps freed memory for reuse instead of mapping every large array afresh (the
probe sees the first of the settings, the threshold under which blocks come from the heap)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process (the settings are the process's): is a 20 MiB array a block mapped on its own, as glibc
# maps anything above its (initial) 128 KiB threshold, or taken from the heap?
PROBE = """
import ctypes, sys
import numpy as np
from vaezip.allocator import retain_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] != "default":  # "retain": it is set; "user": the user's MALLOC_ variable stands
    assert retain_freed_memory() == (sys.argv[1] == "retain")
before = mallinfo2().hblkhd
array = np.ones(20 * 2**20 // 8)
print("mapped" if mallinfo2().hblkhd - before >= 20 * 2**20 else "heap")
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc 2.33 or later only (mallinfo2)")
def test_large_arrays_come_from_the_heap_once_the_allocator_retains_freed_memory():
    # glibc's own defaults, whatever this environment sets
    environment = {name: value for name, value in os.environ.items()
                   if not (name.startswith("MALLOC_") or name == "GLIBC_TUNABLES")}

    def probe(mode: str, extra: dict | None = None) -> str:
        return subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                              check=True, env={**environment, **(extra or {})}).stdout.strip()

    assert probe("default") == "mapped"
    assert probe("retain") == "heap"
    # A user's own malloc settings are left as they are (here: the mmap threshold at 1 MiB).
    assert probe("user", {"MALLOC_MMAP_THRESHOLD_": str(2**20)}) == "mapped"


def test_the_command_sets_the_allocator_before_its_app(monkeypatch):
    from vaezip import cli

    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(cli, "app", lambda **_: calls.append("app"))
    monkeypatch.setattr(cli.os, "_exit", lambda code: calls.append(code))
    cli.main()
    assert calls == ["allocator", "app", 0]


def test_a_worker_of_several_jobs_sets_the_allocator_as_the_command_does(monkeypatch):
    """-j N workers are spawned, fresh processes with glibc's defaults: each sets it at its start."""
    from vaezip import parallel

    calls = []
    monkeypatch.setattr(parallel, "retain_freed_memory", lambda: calls.append("allocator"))
    monkeypatch.setattr(parallel.signal, "signal", lambda *_: None)  # this process keeps its Ctrl-C
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # restored afterwards
    monkeypatch.setattr(parallel, "_WORKER", {})  # nor does it keep a worker's state
    monkeypatch.setattr(parallel, "_end_with_parent", lambda parent: calls.append(("watch", parent)))
    parallel._start_worker(None, 1, 4321)
    assert calls.pop(0) == ("watch", 4321)  # a worker ends with the parent that started it
    assert calls == ["allocator"]
