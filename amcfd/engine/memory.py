"""CPU memory reuse between steps (``train.reuse_cpu_memory``).

glibc's malloc hands large blocks back to the operating system when they are freed (blocks above the mmap
threshold are unmapped; the top of the heap is trimmed above M_TRIM_THRESHOLD). A training step on CPU frees
gigabytes of activations at its end and allocates them again in the next one, so every step page-faults its
activations back in, which costs more than the arithmetic once a batch's activations reach gigabytes.
Raising both thresholds keeps freed memory in the process for the next step: the process holds its peak
memory instead of returning it between steps. Other C libraries (or other systems) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("amcfd")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8   # glibc's mallopt parameters


@functools.lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None    # glibc only (musl: no thresholds)


def keep_freed_memory(single_arena: bool = False) -> bool:
    """glibc: mmap threshold 1 GiB and no trimming (and one malloc arena if ``single_arena``), so freed memory
    is reused by the next step. False (nothing changed) where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    if ok and single_arena:
        ok = libc.mallopt(M_ARENA_MAX, 1)
    if not ok:
        log.warning("glibc's mallopt refused the memory-reuse settings; memory is returned between steps")
    return bool(ok)


def release_freed_memory() -> None:
    """Give memory kept by ``keep_freed_memory`` back to the operating system (glibc's malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


GLIBC_DEFAULT_THRESHOLD = 128 * 1024      # glibc's initial mmap and trim thresholds


def stop_keeping_freed_memory() -> None:
    """Undo ``keep_freed_memory`` when a training run ends: glibc's default thresholds again, and what was kept
    given back, so a process that goes on (the next stage, the denoising, a test session) does not hold its
    training peak to the end."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        libc.malloc_trim(0)
