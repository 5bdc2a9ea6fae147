"""How the C allocator keeps the memory the coder frees: for reuse, instead of handing it back to the system.

The coder allocates and frees arrays of megabytes many times a second (im2col columns, activations, probability
tables). glibc's malloc maps blocks above its threshold fresh from the kernel and unmaps them when freed, and
gives the top of its heap back beyond a trim threshold, so every such array is touched page by page again,
one page fault per 4 KiB. On the 2-core machine a fresh megabyte costs ~2 ms that way (an int64 table of
43 MB: 0.1 s), and kodim23's compress spent ~0.3 s of its ~4 s in page faults. With blocks below
MMAP_THRESHOLD taken from the heap, the heap never trimmed below TRIM_THRESHOLD and grown TOP_PAD at a time,
freed memory is reused: `python scripts/coding_speed.py kodim23.png` 4.07-4.34 s -> 3.78-4.04 s to compress
(2026-12-03). Setting only some of them is worse than none (they switch off glibc's adaptive threshold:
compress took 4.6-7 s). A process ends holding its peak memory; the command ends soon after.

Only the command line (its process and its -j workers; and scripts/coding_speed.py, which times what it does)
calls `retain_freed_memory`: a program that imports vaezip keeps its own allocator's settings, and so does a
user who set glibc's malloc variables (MALLOC_*_ or GLIBC_TUNABLES). Elsewhere than glibc it does nothing."""

from __future__ import annotations

import ctypes
import os

# mallopt's parameters (malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit); larger blocks are still mapped
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim, in effect
TOP_PAD = 256 * 2**20


def retain_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module's docstring); whether it was set."""
    if any(name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" for name in os.environ):
        return False  # the user's settings
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc (no such name, or no os.confstr), no symbol
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 for a setting it took. The threshold first: a glibc that refuses it (a 32-bit one caps it
    # at 512 KiB) gets none of the others, which alone would only slow it down.
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_TOP_PAD, TOP_PAD) == 1
