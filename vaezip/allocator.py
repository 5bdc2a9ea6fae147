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

Only the command line (and the scripts that time it) call `retain_freed_memory`: a program that imports
vaezip keeps its own allocator's settings. Elsewhere than glibc it does nothing."""

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
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # no such confstr name (not glibc), no C library symbol
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 for each setting it took.
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])
