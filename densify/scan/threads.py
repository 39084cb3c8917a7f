"""The intra-op CPU thread count of a scan, checked.

The library never changes torch's thread count: :attr:`densify.scan.settings.ScanSettings.threads`
is the count an application runs its scans with, and the application sets it and restores it
(:func:`densify.runtime.tuned`: the command line, the bench and the Ray workers do). Choosing a
count for a shared machine (the CPUs not busy with other processes' work) is the application's
business too: :func:`densify.runtime.choose_threads`.
"""

from __future__ import annotations

from ..errors import ParameterError

__all__ = ["check_threads"]


def check_threads(threads: int) -> int:
    """``threads`` if it is a positive integer; one line otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ParameterError(f"threads must be a positive integer, got {threads!r}")
    return threads
