"""Keep freed activation memory in the process instead of returning it to the kernel (glibc).

A dense pass allocates its activations fresh each time: VGG19 on 960×1280 maps 2.1 GiB of new
pages per pass. glibc serves every block above 32 MiB (its largest mmap threshold) with ``mmap``
and returns it with ``munmap`` when freed, so the next pass page-faults and the kernel zeroes
every page again: about 1 s of system time per 5 s pass on one core (README, "Efficiency").
:func:`retain_freed_memory` turns that off (``mallopt``: no ``mmap`` for large blocks, never trim
the heap), so the second pass reuses the first's pages; the results are bit-identical (only where
the bytes live changes). The costs: the process keeps its peak memory until it exits (or until
``malloc_trim``), and the heap fragments: a freed block is reused only by a request that fits in
it with ``posix_memalign``'s slack, so the same large size allocated again after small objects
landed behind it takes new memory (measured: 256 MiB more per repetition of a 256 MiB
allocation). It is therefore opt-in: the scanning commands call it when ``DENSIFY_KEEP_MEMORY=1``
is set (:func:`requested`); a preloaded ``tcmalloc`` gives the same saving without the growth.

A preloaded ``tcmalloc`` (``LD_PRELOAD=.../libtcmalloc_minimal.so.4``) keeps freed memory too;
then nothing is changed here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["retain_freed_memory", "requested", "allocator"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_RETAINED = False


def allocator() -> str:
    """The malloc this process runs with: ``tcmalloc`` or ``jemalloc`` when preloaded, ``glibc
    (retained)`` after :func:`retain_freed_memory`, else ``system``."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = ""
    preloaded = next((name for name in ("tcmalloc", "jemalloc") if name in maps), None)
    return preloaded or ("glibc (retained)" if _RETAINED else "system")


def requested() -> bool:
    """Whether the environment asks the scanning commands to keep memory
    (``DENSIFY_KEEP_MEMORY=1``)."""
    return os.environ.get("DENSIFY_KEEP_MEMORY") == "1"


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring); process-wide.

    Returns whether it changed anything: not on other C libraries, not with a preloaded
    tcmalloc/jemalloc, and not when ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_`` is set in
    the environment (the user's choice stands).
    """
    global _RETAINED
    if _RETAINED:
        return True
    if allocator() != "system" or {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The largest int keeps the heap untrimmed; mallopt returns 1 on success.
    _RETAINED = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc keeps freed memory: %s", _RETAINED)
    return _RETAINED
