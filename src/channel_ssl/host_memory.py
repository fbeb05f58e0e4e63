"""Freed host memory kept for reuse while training or extracting on CPU (glibc's malloc).

A CPU training step allocates and frees the same large temporaries every step: the (tokens x
prototypes) scores and their gradients, the (prototypes x bottleneck) prototype gradient,
activations. glibc serves every block above its mmap threshold (128 KiB, rising with use to at
most 32 MiB) with fresh pages from the kernel and returns them on free, so each step faults
them in again and zeroes them: at ViT-S/16 with 65,536 prototypes on 2 cores this was ~15 % of
a step (docs/bench.md). :func:`keep_freed_host_memory` turns off mmap for the process's
allocations and heap trimming up to 2 GiB, so freed blocks stay in the heap and the next step
reuses them. Memory in use stays at a step's peak, which every step reaches anyway. What is
computed does not change (an allocator setting). CUDA runs do not need it: torch's caching
allocator already reuses device memory. :func:`freed_host_memory_kept` applies it for a block
and then restores glibc's default limits (glibc no longer adapts its mmap threshold after
that, a difference of speed only); nested blocks restore them only when the outermost ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

# glibc's mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: free heap tops under 2 GiB are kept
# glibc's defaults (mallopt(3)), restored after a block
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024


def _mallopt():
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
    except (AttributeError, ValueError, OSError):  # not glibc
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_host_memory() -> bool:
    """Apply the setting to this process; False (nothing changed) where libc is not glibc."""
    mallopt = _mallopt()
    # mallopt returns 1 on success
    return (
        mallopt is not None
        and mallopt(M_MMAP_MAX, 0) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )


_depth = 0  # blocks of freed_host_memory_kept open in this process


@contextlib.contextmanager
def freed_host_memory_kept(enabled: bool = True):
    """:func:`keep_freed_host_memory` for the block (when ``enabled``), then glibc's defaults."""
    global _depth
    applied = enabled and keep_freed_host_memory()
    _depth += applied
    try:
        yield applied
    finally:
        _depth -= applied
        if applied and _depth == 0:
            mallopt = _mallopt()
            mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
