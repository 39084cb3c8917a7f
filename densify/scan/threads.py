"""Intra-op CPU threads for one scan: checked, set for the scan and restored after it.

The library applies only a count it is given (``Scanner(threads=N)``); with None it leaves torch's
setting alone. Choosing a count for a shared machine (the CPUs not busy with other processes'
work) is an application's business: :func:`densify.runtime.choose_threads`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from ..errors import ParameterError

__all__ = ["check_threads", "thread_limit"]

log = logging.getLogger(__name__)


def check_threads(threads: int) -> int:
    """``threads`` if it is a positive integer; one line otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ParameterError(f"threads must be a positive integer, got {threads!r}")
    return threads


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (None: torch's count, untouched); the
    previous count is restored on exit. Yields the count used."""
    previous = torch.get_num_threads()
    count = previous if threads is None else check_threads(threads)
    if count != previous:
        torch.set_num_threads(count)
        log.debug("scanning with %d thread(s) (was %d)", count, previous)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
