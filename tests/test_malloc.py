"""densify.runtime's allocator settings: freed memory reused without page faults, the user's
settings left alone, and every change undone when the run ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densify import runtime

PROBE = """
import resource, torch
from densify.runtime import allocator, retain_freed_memory

def faults_of_second_allocation():
    big = torch.ones(64, 2**20)  # 256 MiB, every page touched, then freed
    del big
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    small = torch.ones(32, 2**20)  # 128 MiB: fits in the freed block
    del small
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults_of_second_allocation()
changed = retain_freed_memory()
after = faults_of_second_allocation()
print(before, changed, after, allocator())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux only")
def test_retained_memory_is_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "PYTHONPATH": ":".join(sys.path)})
    before, changed, after, *name = out.stdout.split()
    assert changed == "True" and " ".join(name) == "glibc (retained)"
    assert int(before) > 30_000  # 128 MiB of fresh 4 KiB pages: glibc mapped them anew
    assert int(after) < 1_000


def test_the_users_malloc_settings_stand(monkeypatch):
    monkeypatch.setitem(runtime._state, "retained", False)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert runtime.retain_freed_memory() is False and runtime.allocator() != "glibc (retained)"
    assert runtime.limit_heap_slack() is False


def test_tuned_restores_what_it_changed(monkeypatch):
    """keep_memory and a budget change glibc only inside the run; the defaults come back."""
    calls = []
    monkeypatch.setattr(runtime, "_user_allocator", lambda: False)
    monkeypatch.setattr(runtime, "_mallopt", lambda param, value: calls.append((param, value))
                        or runtime._state["changed"].add(param) or True)
    with runtime.tuned(1, keep_memory=True):
        assert runtime.allocator() == "glibc (retained)"
    assert runtime.allocator() != "glibc (retained)" and not runtime._state["changed"]
    changed = {param for param, _ in calls[:2]}
    assert {(p, runtime._DEFAULTS[p]) for p in changed} <= set(calls[2:])
    calls.clear()
    with runtime.tuned(1, max_memory=10**9):
        pass
    assert calls == [(runtime._M_MMAP_THRESHOLD, 1 << 20),
                     (runtime._M_MMAP_THRESHOLD, runtime._DEFAULTS[runtime._M_MMAP_THRESHOLD])]
