"""Process-wide tuning, for applications only: the CLI, the bench and the Ray workers.

The library never changes the process (torch's thread count, the C allocator); an application
does, here, in one place, and :func:`tuned` restores what it changed when it ends.

Threads (:func:`choose_threads`): the CPUs this process may run on (``os.sched_getaffinity``)
minus the cores other processes keep busy right now, at least 1 (:func:`default_threads`).
"Busy right now" is the number of runnable threads in the system (``procs_running`` in
``/proc/stat``) minus this process's own, averaged over a few samples a millisecond apart
(:func:`busy_cores`; ``os.getloadavg()`` where ``/proc`` is missing). ``OMP_NUM_THREADS`` set in
the environment wins (torch's count is kept). Why not torch's default (one thread per physical
core): every parallel region of a convolution waits for its slowest OpenMP thread; when another
process holds a core, the thread scheduled on it runs only in that process's time slices and the
whole layer waits (measured in docs/performance.md, *Efficiency*). When several threads of the
application run torch ops at once, each gets its own OpenMP team of that many threads:
:func:`shared_threads` divides the count among them.

Allocator (glibc): with a memory budget, blocks of 1 MiB and more are served by ``mmap`` so that
freed activations leave the process at once (:func:`limit_heap_slack`); with ``keep_memory``
(``--keep-memory``) freed memory is kept for the next pass instead (:func:`retain_freed_memory`:
no ``mmap`` for large blocks, no trimming; what fresh pages cost per pass is measured in
docs/performance.md). Keeping memory costs peak memory until exit
and fragments the heap (the same large size allocated again after small objects landed behind
it takes new memory), hence opt-in; a preloaded tcmalloc/jemalloc, or ``MALLOC_MMAP_MAX_`` /
``MALLOC_TRIM_THRESHOLD_`` in the environment, is left alone. :func:`trim_heap` hands freed heap
memory back (``malloc_trim``) between the images of a batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import math
import os
import time
from collections.abc import Iterator

__all__ = ["default_threads", "available_cpus", "busy_cores", "choose_threads", "allocator",
           "retain_freed_memory", "limit_heap_slack", "trim_heap", "restore_allocator", "tuned",
           "shared_threads"]

log = logging.getLogger(__name__)

#: A core counts as busy when other processes' runnable threads average more than this over it.
SLACK = 0.2

# glibc's mallopt parameters and their defaults (restored by restore_allocator)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_state = {"retained": False, "changed": set()}


# ------------------------------------------------------------------------------------ threads


def default_threads(cpus: int, busy: float) -> int:
    """Threads for a scan on ``cpus`` usable CPUs while others keep ``busy`` cores busy.

    A partly busy core counts as busy (beyond :data:`SLACK`): a thread that must share its core
    stalls every other thread at each layer's barrier.

    Examples:
        >>> default_threads(2, 0.0), default_threads(2, 1.0), default_threads(2, 0.5)
        (2, 1, 1)
        >>> default_threads(8, 2.1), default_threads(2, 5.0), default_threads(4, 0.1)
        (6, 1, 4)
    """
    return max(1, cpus - math.ceil(max(0.0, busy - SLACK)))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores(samples: int = 5, interval: float = 0.001) -> float:
    """Cores kept busy by other processes now: runnable threads in the system minus this
    process's own, averaged over ``samples`` readings ``interval`` seconds apart (Linux);
    elsewhere the 1-minute load average (which counts this process too)."""
    counts = []
    for k in range(samples):
        running = _procs_running()
        if running is None:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        counts.append(max(0, running - _own_running()))
        if k + 1 < samples:
            time.sleep(interval)
    return sum(counts) / len(counts)


def _procs_running() -> int | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _own_running() -> int:
    """This process's threads in state R (the reading thread is one of them)."""
    count = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/stat") as f:
                count += f.read().rsplit(")", 1)[-1].split()[0] == "R"
    return max(count, 1)


def choose_threads(threads: int | None = None) -> int:
    """``threads`` (checked), or the rule's count (module docstring); with ``OMP_NUM_THREADS``
    in the environment, torch's current count."""
    import torch

    from .scan.threads import check_threads

    if threads is not None:
        return check_threads(threads)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return default_threads(available_cpus(), busy_cores())


# ---------------------------------------------------------------------------------- allocator


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def allocator() -> str:
    """The malloc this process runs with: ``tcmalloc`` or ``jemalloc`` when preloaded, ``glibc
    (retained)`` after :func:`retain_freed_memory`, else ``system``."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = ""
    preloaded = next((name for name in ("tcmalloc", "jemalloc") if name in maps), None)
    return preloaded or ("glibc (retained)" if _state["retained"] else "system")


def _user_allocator() -> bool:
    """A preloaded malloc or the user's own glibc settings: leave the allocator alone."""
    return allocator() not in ("system", "glibc (retained)") or bool(
        {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"} & set(os.environ))


def _mallopt(param: int, value: int) -> bool:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(param, int(value)))
    if ok:
        _state["changed"].add(param)
    return ok


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (module docstring); returns whether it did."""
    if _state["retained"]:
        return True
    if _user_allocator():
        return False
    # The largest int keeps the heap untrimmed; mallopt returns 1 on success.
    _state["retained"] = _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    log.debug("glibc keeps freed memory: %s", _state["retained"])
    return _state["retained"]


def limit_heap_slack(threshold: int = 1 << 20) -> bool:
    """Serve blocks of ``threshold`` bytes and more by ``mmap`` (glibc), so that freed ones
    leave the process at once (what a whole-process memory budget needs)."""
    return False if _user_allocator() else _mallopt(_M_MMAP_THRESHOLD, threshold)


def restore_allocator() -> None:
    """Put back glibc's defaults for every setting this module changed."""
    for param in sorted(_state["changed"]):
        _mallopt(param, _DEFAULTS[param])
    _state["changed"].clear()
    _state["retained"] = False


def trim_heap(collect: bool = True) -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``), after collecting
    garbage if ``collect``; between the images of a batch this keeps the resident size flat."""
    if collect:
        gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[int]:
    """Torch's intra-op thread count set to ``count`` for the block, the previous one restored
    after it; yields ``count``."""
    import torch

    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def tuned(threads: int | None = None, *, keep_memory: bool = False, max_memory=None,
          rule: bool = True) -> Iterator[int]:
    """Tune the process for a run, restoring it on exit; yields the thread count.

    ``threads``: a count, or None for the rule (:func:`choose_threads`; ``rule=False`` keeps
    torch's count). ``max_memory``: a budget is in force (:func:`limit_heap_slack`);
    ``keep_memory``: keep freed memory (:func:`retain_freed_memory`; not with a budget).
    """
    import torch

    count = choose_threads(threads) if (threads is not None or rule) else torch.get_num_threads()
    with _torch_threads(count):
        if max_memory is not None:
            limit_heap_slack()
            trim_heap()
        elif keep_memory:
            retain_freed_memory()
        try:
            yield count
        finally:
            restore_allocator()


@contextlib.contextmanager
def shared_threads(workers: int) -> Iterator[int]:
    """Torch's intra-op thread count divided among ``workers`` threads that run torch ops at
    once (each gets its own OpenMP team), at least 1, restored on exit; yields the count.

    The command line uses it while a GPU scan's images are finished (heat maps painted,
    files encoded) in worker threads: without it, 16 workers on a 16-core host would start
    16 teams of 16 threads.

    Examples:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with shared_threads(2 * before) as count:
        ...     count, torch.get_num_threads()
        (1, 1)
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    with _torch_threads(max(1, torch.get_num_threads() // max(1, int(workers)))) as count:
        yield count
