"""Give the pages of freed batch tensors back to the OS between attribution batches.

Each batch allocates tensors of new sizes (cotangents over its positions, cone rows over its cone). glibc
serves them from its heap once its dynamic mmap threshold has grown past them, and the holes freed
tensors leave there stay resident: on a 128-token prompt the resident peak was 4.5x the live memory
(0.87 GB against 0.19 GB with a fixed threshold). `malloc_trim(0)` after a batch returns every free page
inside the heap to the OS, so the resident set follows what is alive. Elsewhere than glibc: nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (glibc malloc_trim); a no-op where there is none."""
    trim = _trim()
    if trim is not None:
        trim(0)
