"""The thread rule (densify.runtime, for applications) and the scanner applying only the count
it is given: a library call leaves torch's thread count alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densify import runtime
from densify.errors import ParameterError
from densify.scan import threads
from densify.scan.scanner import Scanner


@pytest.mark.parametrize("cpus,busy,expected", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 1.9, 1), (2, 7.0, 1),
    (1, 0.0, 1), (16, 3.0, 13), (16, 3.3, 12), (4, 0.0, 4),
])
def test_default_threads_rule(cpus, busy, expected):
    assert runtime.default_threads(cpus, busy) == expected


def test_busy_cores_counts_other_processes(monkeypatch):
    monkeypatch.setattr(runtime, "_procs_running", lambda: 4)
    monkeypatch.setattr(runtime, "_own_running", lambda: 1)
    assert runtime.busy_cores(samples=3, interval=0) == 3.0
    monkeypatch.setattr(runtime, "_procs_running", lambda: None)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert runtime.busy_cores() == 1.5


def test_own_running_threads_include_the_caller():
    assert runtime._own_running() >= 1


def test_choose_threads(monkeypatch):
    assert runtime.choose_threads(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="positive integer"):
            runtime.choose_threads(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.choose_threads(None) == torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 1.0)
    assert runtime.choose_threads(None) == 1


def test_tuned_sets_a_given_count_and_restores():
    previous = torch.get_num_threads()
    wanted = 2 if previous == 1 else 1
    with runtime.tuned(wanted) as count:
        assert count == wanted and torch.get_num_threads() == wanted
    assert torch.get_num_threads() == previous
    with runtime.tuned(None, rule=False) as count:
        assert count == previous
    with pytest.raises(ParameterError, match="positive integer"):
        threads.check_threads(0)


def test_tuned_applies_the_rule_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cpus", lambda: 3)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    previous = torch.get_num_threads()
    with runtime.tuned() as count:
        assert count == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == previous


def test_scanner_scans_with_the_applications_threads(monkeypatch):
    """The application sets the count for its run (runtime.tuned); the scanner only checks
    ``threads`` and never changes torch's count itself."""
    seen = []
    scanner = Scanner("lenet5", scales=[1.0], device="cpu", threads=2)
    scanner.dense.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    previous = torch.get_num_threads()
    with runtime.tuned(scanner.threads):
        scanner(np.zeros((40, 40, 3), dtype=np.uint8))
    assert seen == [2] and torch.get_num_threads() == previous

    def refuse(*args, **kwargs):
        raise AssertionError("the scanner changed torch's thread count")

    monkeypatch.setattr(torch, "set_num_threads", refuse)
    scanner(np.zeros((40, 40, 3), dtype=np.uint8))
    assert seen[-1] == previous
    with pytest.raises(ParameterError, match="threads"):
        Scanner("lenet5", device="cpu", threads=0)


def test_a_library_scan_changes_nothing_process_wide(monkeypatch):
    """threads=None: torch's count is used as it is, no /proc sampling; a memory budget sets no
    allocator option (nothing loads the C library)."""
    import ctypes

    def refuse(*args, **kwargs):
        raise AssertionError("the library touched the process")

    monkeypatch.setattr(runtime, "busy_cores", refuse)
    monkeypatch.setattr(ctypes, "CDLL", refuse)
    monkeypatch.setattr(torch, "set_num_threads", refuse)
    seen = []
    scanner = Scanner("lenet5", scales=[1.0], device="cpu", max_memory="64GB")
    scanner.dense.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    scanner(np.zeros((40, 40, 3), dtype=np.uint8))
    assert seen == [torch.get_num_threads()]
