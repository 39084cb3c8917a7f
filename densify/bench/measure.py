"""Measuring for the bench: peak memory, FLOPs, the machine's convolution peak, timed runs.

Figures: FLOPs are 2 × multiply-adds of convolutions and matrix products, counted by
``torch.utils.flop_counter.FlopCounterMode`` on fake tensors with the real shapes (pooling, norms
and activations are left out, < 1 % for these nets); peak memory is the growth of the process's
peak resident set over a block (``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
``ru_maxrss`` growth elsewhere, which only sees new maxima; on CUDA the device memory torch
allocated); the peak is the best of several 3 × 3, 256 → 256 convolutions in the same dtype and
layout. On CUDA every timed run waits for the device.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
import torch.fx as fx

from ..scan.engine import autotune  # the scanner's: cuDNN autotuning, flags restored
from ..scan.memory import peak_rss_bytes, rss_bytes

__all__ = ["PRECISIONS", "PeakMemory", "count_flops", "node_flops", "conv_peak", "cpu_seconds",
           "autocast", "autotune", "sync", "timed", "figures", "reset_hwm"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class PeakMemory:
    """Context manager: ``.bytes`` is the growth of peak resident memory inside the block.

    On Linux the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so the
    figure is the block's own peak above the resident memory at entry; elsewhere ``ru_maxrss``
    growth, which is zero unless the block beats the process's earlier maximum (``.method`` says
    which). Memory freed inside the block lowers the resident size under the entry level and can
    hide the block's peak: collect garbage before entering. On a CUDA ``device`` the figure is
    the growth of the device memory torch allocated (``torch.cuda.max_memory_allocated``).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":  # the device's allocator, not the host's memory
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method, self.start = "cuda", torch.cuda.memory_allocated(self.device)
            return self
        self.method = "VmHWM" if reset_hwm() else "ru_maxrss"
        self.start = rss_bytes() if self.method == "VmHWM" else _maxrss()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = peak_rss_bytes() if self.method == "VmHWM" else _maxrss()
        self.bytes = max(0, peak - self.start)


def reset_hwm() -> bool:
    """Reset the kernel's high-water mark; True only if it took (some kernels ignore the write:
    the mark then stays at an earlier peak, and the block's own peak cannot be read from it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm, rss = peak_rss_bytes(), rss_bytes()
    return 0 < hwm <= rss + 8 * 2**20


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def count_flops(fn, *shapes: tuple[int, ...], dtype=torch.float32, device="cpu") -> int:
    """FLOPs (2 × multiply-adds of convolutions and matmuls) of ``fn`` on inputs of ``shapes``
    (on ``device``, where ``fn``'s parameters are), counted on fake tensors: shapes only, nothing
    is computed."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        args = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
        with FlopCounterMode(display=False) as counter:
            fn(*args)
    return int(counter.get_total_flops())


def node_flops(gm: fx.GraphModule, shape: tuple[int, ...]) -> dict[str, int]:
    """FLOPs of every node of ``gm`` (by node name) on an input of ``shape`` (fake tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    flops: dict[str, int] = {}

    class Counter(fx.Interpreter):
        def run_node(self, n):
            with FlopCounterMode(display=False) as c:
                out = super().run_node(n)
            flops[n.name] = int(c.get_total_flops())
            return out

    param = next(gm.parameters())
    with FakeTensorMode(allow_non_fake_inputs=True):
        Counter(gm).run(torch.empty(shape, dtype=param.dtype, device=param.device))
    return flops


def conv_peak(precision: str = "fp32", channels_last: bool = True, repeat: int = 5,
              device: torch.device | str = "cpu") -> float:
    """Best GFLOP/s of a 3 × 3, 256 → 256 convolution on ``(N, 256, 56, 56)`` (padding 1; N = 4
    on the CPU, 32 on a GPU) in ``precision`` (bf16 through autocast, as the dense path runs) and
    layout on ``device``: the machine's practical peak for the convolutions these nets are made
    of."""
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, memory_format=fmt)
    x = torch.randn(4 if device.type == "cpu" else 32, 256, 56, 56, device=device)
    x = x.contiguous(memory_format=fmt)
    flops = 2 * x.numel() * 256 * 9
    with torch.inference_mode(), autocast(precision, device), autotune(device):
        _, times, _ = timed(lambda: conv(x), repeat, device)
    return flops / min(times) / 1e9


def cpu_seconds() -> tuple[float, float]:
    """This process's ``(user, system)`` CPU seconds so far (kernel time is mostly page faults
    and zeroing of freshly mapped activations)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def autocast(precision: str, device: torch.device | str = "cpu"):
    if PRECISIONS[precision] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a timer must wait)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeat: int, device: torch.device | str = "cpu"):
    """``(median seconds, all run times, last result)`` after one warm-up run; on CUDA each run
    is timed until the device has finished it."""
    fn()
    sync(device)
    times, out = [], None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def figures(seconds: float, windows: int, flops: int, peak: float, memory: PeakMemory) -> dict:
    gflops = flops / seconds / 1e9 if seconds > 0 else float("nan")
    return {"seconds": seconds, "windows": windows, "windows_per_s": windows / seconds,
            "gflop": flops / 1e9, "gflops_per_s": gflops, "peak_fraction": gflops / peak,
            "peak_memory_bytes": memory.bytes}
