"""glibc malloc tuning: the operator's memory should follow what it manages, not its past bursts.

Both calls are no-ops where glibc is absent (musl, macOS) or already configured through the environment.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives busy threads malloc arenas of their own; with dozens of worker threads memory
    fragments and RSS grows with the thread count. Call before the threads start."""
    libc = _libc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ and hasattr(libc, "mallopt"):
        libc.mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (after a burst of reconciles glibc keeps them otherwise)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
