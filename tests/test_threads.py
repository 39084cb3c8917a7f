"""The thread rule (densify.scan.threads) and the scanner applying it for each scan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densify.errors import ParameterError
from densify.scan import threads
from densify.scan.scanner import Scanner


@pytest.mark.parametrize("cpus,busy,expected", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 1.9, 1), (2, 7.0, 1),
    (1, 0.0, 1), (16, 3.0, 13), (16, 3.3, 12), (4, 0.0, 4),
])
def test_default_threads_rule(cpus, busy, expected):
    assert threads.default_threads(cpus, busy) == expected


def test_busy_cores_counts_other_processes(monkeypatch):
    monkeypatch.setattr(threads, "_procs_running", lambda: 4)
    monkeypatch.setattr(threads, "_own_running", lambda: 1)
    assert threads.busy_cores(samples=3, interval=0) == 3.0
    monkeypatch.setattr(threads, "_procs_running", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert threads.busy_cores() == 1.5


def test_own_running_threads_include_the_caller():
    assert threads._own_running() >= 1


def test_resolve_threads(monkeypatch):
    assert threads.resolve_threads(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="positive integer"):
            threads.resolve_threads(bad)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve_threads(None) == torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)
    assert threads.resolve_threads(None) == 1


def test_thread_limit_sets_and_restores():
    previous = torch.get_num_threads()
    wanted = 2 if previous == 1 else 1
    with threads.thread_limit(wanted) as count:
        assert count == wanted and torch.get_num_threads() == wanted
    assert torch.get_num_threads() == previous


def test_scanner_scans_with_its_threads():
    seen = []
    scanner = Scanner("lenet5", scales=[1.0], device="cpu", threads=2)
    scanner.dense.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    previous = torch.get_num_threads()
    scanner(np.zeros((40, 40, 3), dtype=np.uint8))
    assert seen == [2] and torch.get_num_threads() == previous
    with pytest.raises(ParameterError, match="threads"):
        Scanner("lenet5", device="cpu", threads=0)
