"""How many intra-op CPU threads a scan uses, and a context that sets them for one scan.

Rule (``threads=None``): the CPUs this process may run on (``os.sched_getaffinity``) minus the
cores other processes keep busy right now, at least 1 (:func:`default_threads`). "Busy right now"
is the number of runnable threads in the system (``procs_running`` in ``/proc/stat``) minus this
process's own runnable threads, averaged over a few samples a millisecond apart
(:func:`busy_cores`; ``os.getloadavg()`` where ``/proc`` is missing). ``OMP_NUM_THREADS`` set in
the environment wins over the rule (torch's count is then kept).

Why not torch's default (one thread per physical core): every parallel region of a convolution
waits for its slowest OpenMP thread; when another process holds a core, the thread scheduled on
it runs only in that process's time slices and the whole layer waits. Measured on the 2-core
machine of this project (README, "Efficiency"): a ResNet-18 scan with 2 threads was several
times slower than with 1 while a busy loop held one core, and faster when both cores were free.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator

import torch

from ..errors import ParameterError

__all__ = ["default_threads", "available_cpus", "busy_cores", "resolve_threads", "thread_limit"]

log = logging.getLogger(__name__)

#: A core counts as busy when other processes' runnable threads average more than this over it.
SLACK = 0.2


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


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked, or (None) the rule's choice; ``OMP_NUM_THREADS`` in the environment
    keeps torch's current count."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError(f"threads must be a positive integer, got {threads!r}")
        return threads
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return default_threads(available_cpus(), busy_cores())


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[int]:
    """Run the block with :func:`resolve_threads` intra-op threads; torch's previous count is
    restored on exit. Yields the count used."""
    previous = torch.get_num_threads()
    count = resolve_threads(threads)
    if count != previous:
        torch.set_num_threads(count)
        log.debug("scanning with %d thread(s) (was %d)", count, previous)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
