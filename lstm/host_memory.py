"""Keeps the host memory XLA's CPU runtime frees after a step, so the next step reuses it.

Each run of a compiled program on the CPU allocates its temporary buffers with malloc (one
block of 209 MB for the bigger model's training step) and frees them when it ends. glibc serves
a block that large with a fresh mmap and unmaps it on free, so every step writes to pages the
kernel must first fault in and zero: 56,000 page faults a step at the bigger shape, 0.15 s of
system time in a 0.4 s step (2-core AMD EPYC, docs/performance.md). It is also why dropout
masks (more buffers) slowed the two-device Shakespeare step far more than their arithmetic.

`keep_freed_memory()` tells glibc to serve every thread from its one main heap, never through
mmap, and not to give freed memory back: the blocks a step frees stay mapped and the next
step's allocations reuse them without a fault. Nothing computed changes. The price: the
process keeps the heap it grew to, and it grows by a block more than one step needs, since a
step's buffers are sometimes allocated before the last step's are freed (on another thread):
906 MB resident against 739 MB at the bigger shape, after 40 steps.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# One arena: glibc's per-thread arenas are 64 MB heaps, and a block larger than that in one of
# them is mmapped whatever M_MMAP_MAX says. XLA allocates from its own threads, so they must
# share the main heap. No mmap, and freed memory trimmed only beyond 2 GiB (mallopt takes an int).
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))

_kept = False


def keep_freed_memory() -> bool:
    """Applies the settings above to this process; returns whether they hold (False where the C
    library is not glibc, which has its own allocator's behaviour). Call it before JAX starts its
    backend: a thread that already has its own arena keeps it, and its large blocks still come
    from mmap (no harm, no gain)."""
    global _kept
    if not _kept and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        _kept = all(libc.mallopt(option, value) == 1 for option, value in _SETTINGS)
    return _kept


def state() -> str:
    """'kept' once keep_freed_memory() has taken effect in this process, else 'system'."""
    return "kept" if _kept else "system"
