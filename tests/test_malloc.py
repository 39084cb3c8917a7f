"""densify.scan.malloc: with glibc, freed activation memory is reused without new page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densify.scan import malloc

PROBE = """
import resource, torch
from densify.scan.malloc import allocator, retain_freed_memory

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
    monkeypatch.setattr(malloc, "_RETAINED", False)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert malloc.retain_freed_memory() is False and malloc.allocator() != "glibc (retained)"


def test_opt_in(monkeypatch):
    monkeypatch.delenv("DENSIFY_KEEP_MEMORY", raising=False)
    assert not malloc.requested()
    monkeypatch.setenv("DENSIFY_KEEP_MEMORY", "1")
    assert malloc.requested()
