"""``densify bench``: the dense net against what a user would write without it, in one process.

    result = run_bench("vgg19", size=(960, 1280), output_stride=32, baseline_windows=64)
    result["methods"]["dense"]["seconds"], result["speedup"]

Methods, timed on the same random image (median of ``repeat`` runs after one warm-up):

- ``dense``: one forward pass of the converted net over the whole image (one scale of a scan),
  optionally tiled to ``max_memory`` (:func:`densify.tiling.forward_tiled`);
- ``baseline``: every window the dense map covers, cropped at the dense map's stride and
  classified by the *original* model in batches; with ``baseline_windows`` a random subset is
  timed and the time extrapolated to all windows (the report says so). Its logits are compared
  with the dense cells: equal for unpadded nets (checked: a mismatch raises), different near the
  window borders for zero-padded ones (reported);
- ``timm_ttp``: timm's test-time pooling head (``timm.layers.apply_test_time_pool``) on the same
  image, for ResNet-family models with timm installed; it computes the same dense map internally
  and pools it to one vector (compared with the dense map pooled the same way).

Figures per method: seconds, windows per second, GFLOP (2 × multiply-adds of convolutions and
matrix products, counted by ``torch.utils.flop_counter.FlopCounterMode`` on fake tensors with the
real shapes; pooling, norms and activations are left out, < 1 % for these nets), achieved GFLOP/s
and its ratio to the machine's peak measured in the same run (best of several 3 × 3, 256 → 256
convolutions on 4 × 56 × 56 maps, same dtype and layout), and peak memory: the growth of the
process's peak resident set over the method's runs (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; ``ru_maxrss`` growth elsewhere, which only sees new maxima). The dense
net's time is also split into trunk and head (the converted fully connected layers) per node.

CPU notes (measured with this bench, 1 thread, fp32/bf16 at 960×1280):

- ``channels_last`` and ``torch.inference_mode`` are the defaults; bf16 runs under autocast, which
  uses the CPU's ``avx512_bf16`` instructions (oneDNN; this machine has no AMX).
- Batch norms are folded into the convolutions before them
  (:func:`densify.convert.fold.fold_batchnorm`, on by default, applied to the dense net and the
  baseline alike).
- VGG's converted fc6 (7 × 7, 512 → 4096; dilated by 2 at stride 16) runs at the trunk's rate in
  fp32 (88 vs 93 GFLOP/s) and at 0.7 of it in bf16. An exact unfold + GEMM formulation was
  measured at 0.9-0.95× oneDNN's direct convolution in fp32 and 0.85-1.0× in bf16, so the
  convolution stays; under autocast 15 % of fc6's time is re-casting its 411 MB weight each call.
- On a machine whose cores other processes keep busy, every parallel region waits for the
  descheduled OpenMP thread: ResNet-18 took 0.70 s with 2 threads against 0.10 s with 1. Pass
  ``threads`` below the number of idle cores there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import statistics
import time
from dataclasses import dataclass

import torch
import torch.fx as fx

from ..convert.dense import DenseNet, convolutionize
from ..convert.fold import fold_batchnorm
from ..convert.outputs import leaves
from ..convert.verify import TOLERANCE
from ..errors import ParameterError
from ..models.weights import Classifier, load_classifier
from ..runtime import allocator
from ..scan.memory import peak_rss_bytes, rss_bytes
from ..scan.scanner import resolve_device
from ..scan.tiling import estimate_bytes, format_bytes, forward_tiled, parse_bytes, plan_tiles

__all__ = ["run_bench", "PeakMemory", "count_flops", "node_flops",
           "conv_peak", "format_report"]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ------------------------------------------------------------------------------ measurement


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
        self.method = "VmHWM" if _reset_hwm() else "ru_maxrss"
        self.start = rss_bytes() if self.method == "VmHWM" else _maxrss()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = peak_rss_bytes() if self.method == "VmHWM" else _maxrss()
        self.bytes = max(0, peak - self.start)


def _reset_hwm() -> bool:
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
    with torch.inference_mode(), _autocast(precision, device), _autotune(device):
        _, times, _ = _timed(lambda: conv(x), repeat, device)
    return flops / min(times) / 1e9


def _cpu_seconds() -> tuple[float, float]:
    """This process's ``(user, system)`` CPU seconds so far (kernel time is mostly page faults
    and zeroing of freshly mapped activations)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _autocast(precision: str, device: torch.device | str = "cpu"):
    if PRECISIONS[precision] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])


def _autotune(device: torch.device):
    """cuDNN autotuning on CUDA (the bench's shapes repeat), the caller's flags restored."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    backend = torch.backends.cudnn
    return backend.flags(enabled=backend.enabled, benchmark=True,
                         deterministic=backend.deterministic, allow_tf32=backend.allow_tf32)


def _sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a timer must wait)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, repeat: int, device: torch.device | str = "cpu"):
    """``(median seconds, all run times, last result)`` after one warm-up run; on CUDA each run
    is timed until the device has finished it."""
    fn()
    _sync(device)
    times, out = [], None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def _figures(seconds: float, windows: int, flops: int, peak: float, memory: PeakMemory) -> dict:
    gflops = flops / seconds / 1e9 if seconds > 0 else float("nan")
    return {"seconds": seconds, "windows": windows, "windows_per_s": windows / seconds,
            "gflop": flops / 1e9, "gflops_per_s": gflops, "peak_fraction": gflops / peak,
            "peak_memory_bytes": memory.bytes}


# ---------------------------------------------------------------------------------- methods


def _bench_dense(dense: DenseNet, x: torch.Tensor, repeat: int, precision: str,
                 max_bytes: int | None, peak: float) -> tuple[dict, torch.Tensor]:
    """Method (a): the dense net on the whole image (tiled when ``max_bytes`` is given)."""
    h, w = dense.geometry.output_size(*x.shape[-2:])
    tiles = None
    if max_bytes is not None:
        act = PRECISIONS[precision]
        tiles = plan_tiles(dense, *x.shape[-2:], max_bytes, act)
        flops = sum(count_flops(dense, (1, x.shape[1], *t.size), device=x.device) for t in tiles)
    else:
        flops = count_flops(dense, tuple(x.shape), device=x.device)
    cpu_start = _cpu_seconds()
    with torch.inference_mode(), _autocast(precision, x.device), _autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, out = _timed(lambda: forward_tiled(dense, x, max_bytes=max_bytes)
                                     if max_bytes is not None else dense(x), repeat, x.device)
    passes = max(1, repeat) + 1  # the warm-up ran too
    user, system = ((b - a) / passes for a, b in zip(cpu_start, _cpu_seconds(), strict=True))
    fig = _figures(seconds, h * w, flops, peak, memory)
    fig.update(user_seconds=user, sys_seconds=system)
    fig.update(runs=times, tiles=len(tiles) if tiles else 1,
               largest_input=list(max((t.size for t in tiles), key=math.prod)) if tiles
               else list(x.shape[-2:]))
    return fig, out.float().cpu()


def _windows(h: int, w: int, limit: int | None, seed: int) -> list[tuple[int, int]]:
    """Cells ``(i, j)`` the baseline classifies: all, or ``limit`` drawn at random."""
    cells = [(i, j) for i in range(h) for j in range(w)]
    if limit is None or limit >= len(cells):
        return cells
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(cells), generator=gen)[:limit].sort().values
    return [cells[k] for k in pick.tolist()]


def _classify_crops(model, x: torch.Tensor, cells, dense: DenseNet, batch_size: int,
                    channels_last: bool) -> torch.Tensor:
    """``(len(cells), K)`` logits of the original classifier on each cell's window crop."""
    g = dense.geometry
    (wy, wx), (sy, sx), (oy, ox) = g.window, g.stride, g.offset
    outs = []
    for k in range(0, len(cells), batch_size):
        crops = torch.stack([x[0, :, oy + i * sy:oy + i * sy + wy, ox + j * sx:ox + j * sx + wx]
                             for i, j in cells[k:k + batch_size]])
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        outs.append(model(crops).float())
    return torch.cat(outs)


def _bench_baseline(model, dense: DenseNet, x: torch.Tensor, dense_out: torch.Tensor, *,
                    repeat: int, precision: str, channels_last: bool, batch_size: int,
                    limit: int | None, seed: int, peak: float) -> dict:
    """Method (b): crops of every covered window through the original classifier, batched."""
    h, w = dense_out.shape[-2:]
    cells = _windows(h, w, limit, seed)
    per_window = count_flops(model, (1, *dense.input_size), device=x.device)
    with torch.inference_mode(), _autocast(precision, x.device), _autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, logits = _timed(
            lambda: _classify_crops(model, x, cells, dense, batch_size, channels_last), repeat,
            x.device)
    scale = h * w / len(cells)
    fig = _figures(seconds * scale, h * w, per_window * h * w, peak, memory)
    fig.update(runs=times, measured_windows=len(cells), extrapolated=scale != 1,
               batch_size=batch_size)
    fig["agreement"] = _agreement(dense, dense_out, logits.cpu(), cells, precision)
    return fig


def _agreement(dense: DenseNet, dense_out: torch.Tensor, logits: torch.Tensor, cells,
               precision: str) -> dict:
    """Dense cells vs crop logits; raises when an unpadded net's differ beyond the tolerance."""
    rows = torch.tensor([i for i, _ in cells])
    cols = torch.tensor([j for _, j in cells])
    cell_logits = dense_out[0][:, rows, cols].t()
    max_rel = float((cell_logits - logits).abs().max() / cell_logits.abs().max())
    g = dense.geometry
    exact = g.rf_size == g.window and g.rf_offset == g.offset
    tol = TOLERANCE[PRECISIONS[precision]]
    if exact and not max_rel <= tol:
        raise RuntimeError(f"dense cells and window crops differ by {max_rel:.2e} (tolerance "
                           f"{tol:.0e}) on an unpadded net: the conversion is wrong")
    note = ("unpadded: must be equal" if exact else
            "zero-padded: crops see padding where the dense net sees the image")
    return {"max_rel": max_rel, "tolerance": tol, "exact_expected": exact, "cells": len(cells),
            "note": note}


_TIMM_RESNETS = re.compile(r"^(se)?(resnet|resnext|wide_resnet)")


def _timm_ttp_model(clf: Classifier, size: tuple[int, int, int]):
    """timm's test-time pooling head around this classifier (same weights), or a reason why
    not."""
    try:
        import timm
        from timm.layers import apply_test_time_pool
    except ImportError:
        return None, "timm is not installed (pip install 'densify[timm]')"
    name = clf.spec.name
    if not _TIMM_RESNETS.match(name) or not timm.is_model(name):
        return None, f"{name} is not a timm ResNet-family model"
    if clf.spec.family == "timm":
        model = clf.model
    else:  # torchvision and timm ResNets share parameter names: same weights, same function
        model = timm.create_model(name, pretrained=False, num_classes=clf.spec.num_classes)
        try:
            model.load_state_dict(clf.model.state_dict())
        except RuntimeError as exc:
            return None, f"timm's {name} does not take torchvision's weights ({exc!s:.80})"
    model, applied = apply_test_time_pool(model.eval(), {"input_size": size})
    if not applied:
        return None, "the image is not larger than the canonical input: no test-time pooling"
    return model.eval(), ""


def _bench_timm(clf: Classifier, x: torch.Tensor, dense_full: torch.Tensor, *, repeat: int,
                precision: str, channels_last: bool, peak: float) -> dict:
    """Method (c): timm's test-time pooling (ResNet family), compared with the dense map pooled
    the same way (mean and max over cells, averaged)."""
    model, reason = _timm_ttp_model(clf, tuple(x.shape[1:]))
    if model is None:
        return {"skipped": reason}
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(x.device)
    flops = count_flops(model, tuple(x.shape), device=x.device)
    with torch.inference_mode(), _autocast(precision, x.device), _autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, out = _timed(lambda: model(x), repeat, x.device)
    cells = dense_full.shape[-2] * dense_full.shape[-1]
    fig = _figures(seconds, cells, flops, peak, memory)
    pooled = 0.5 * (dense_full.mean((2, 3)) + dense_full.amax((2, 3)))
    fig.update(runs=times, max_rel_vs_dense=float(
        (out.float().cpu() - pooled).abs().max() / pooled.abs().max()))
    return fig


def _breakdown(dense: DenseNet, x: torch.Tensor, precision: str) -> dict:
    """One timed pass node by node: trunk vs head (converted FC layers), and the head's largest
    layer (VGG's fc6)."""
    flops = node_flops(dense.net, tuple(x.shape))
    seconds: dict[str, float] = {}

    class Timer(fx.Interpreter):
        def run_node(self, n):
            start = time.perf_counter()
            out = super().run_node(n)
            _sync(x.device)
            seconds[n.name] = time.perf_counter() - start
            return out

    with torch.inference_mode(), _autocast(precision, x.device), _autotune(x.device):
        Timer(dense.net).run(x)
    names = [n.name for n in dense.net.graph.nodes]
    split = names.index(dense.feature_node) + 1 if dense.feature_node in names else len(names)
    parts = {"trunk": names[:split], "head": names[split:]}
    out = {}
    for part, members in parts.items():
        t, f = sum(seconds[m] for m in members), sum(flops[m] for m in members)
        out[part] = {"seconds": t, "gflop": f / 1e9, "gflops_per_s": f / t / 1e9 if t else 0.0}
    if parts["head"]:
        top = max(parts["head"], key=lambda m: flops[m])
        out["head_top_layer"] = {"node": top, "seconds": seconds[top], "gflop": flops[top] / 1e9,
                                 "gflops_per_s": flops[top] / seconds[top] / 1e9}
    return out


# ------------------------------------------------------------------------------- the bench


def _check_args(size, repeat: int, precision: str, window, device: torch.device) -> None:
    if precision != "fp32" and not torch.amp.is_autocast_available(device.type):
        raise ParameterError(f"{precision} autocast is not available on {device.type}; use fp32")
    if repeat < 1:
        raise ParameterError(f"repeat must be at least 1, got {repeat}")
    if size[0] < window[0] or size[1] < window[1]:
        raise ParameterError(f"image {size[0]}x{size[1]} is smaller than the {window[0]}x{window[1]} "
                         "window; pass a larger --size")


@dataclass(frozen=True)
class _Options:
    """Everything :func:`run_bench` was asked for (see its docstring)."""

    size: tuple[int, int]
    output_stride: int | None
    repeat: int
    precision: str
    channels_last: bool
    baseline: bool
    timm: bool
    max_bytes: int | None
    baseline_windows: int | None
    batch_size: int
    breakdown: bool
    fold_bn: bool
    seed: int
    head: str = "auto"
    device: torch.device = torch.device("cpu")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def run_bench(model: str, size: tuple[int, int] | None = None, output_stride: int | None = None,
              repeat: int = 3, precision: str = "fp32", channels_last: bool = True, *,
              baseline: bool = True, timm: bool = True, max_memory: int | str | None = None,
              baseline_windows: int | None = None, batch_size: int = 16,
              breakdown: bool = True, fold_bn: bool = True, weights: str | None = None,
              seed: int = 0, threads: int | None = None, head: str = "auto",
              device: str | torch.device = "cpu") -> dict:
    """Time the dense net, the crop baseline and timm's test-time pooling on one random image.

    Args:
        model: catalogue name. size: image ``(H, W)``, default four canonical windows per side.
        output_stride: as in :func:`densify.convert.convolutionize`. repeat: timed runs per
            method after one warm-up (the median is reported). precision: ``"fp32"`` or
            ``"bf16"`` (autocast). channels_last: layout of the nets and images.
        baseline, timm, breakdown: run those parts. max_memory: tile the dense pass to this
            budget (bytes or ``"3GB"``). baseline_windows: time this many random windows and
            extrapolate. batch_size: crops per batch. fold_bn: fold batch norms into the
            convolutions before them (:func:`densify.convert.fold.fold_batchnorm`), in the dense
            net and the baseline's classifier alike (timm's model runs as timm builds it).
            weights: see :mod:`densify.weights`.
        threads: intra-op threads for the whole bench (default: torch's); on a machine shared
            with other busy processes fewer threads than cores avoids OpenMP threads waiting for
            each other at every layer.
        head: ``"auto"``, ``"fast"`` or ``"general"`` (:func:`densify.convert.convolutionize`):
            time the general path against the fast one.
        device: where the nets run (``"cpu"``, ``"cuda"``, ``"auto"``, ...); on CUDA every
            timed run waits for the device, cuDNN autotunes, and memory figures are the device
            memory torch allocated. Whole scans on a GPU: ``scripts/gpu_bench.py``.

    Returns:
        A JSON-serialisable dict (see the module docstring for the figures).
    """
    if precision not in PRECISIONS:
        raise ParameterError(f"unknown precision {precision!r}; use fp32 or bf16")
    clf = load_classifier(model, weights)
    window = clf.spec.input_size[1:]
    size = tuple(size) if size is not None else (4 * window[0], 4 * window[1])
    device = resolve_device(device)
    _check_args(size, repeat, precision, window, device)
    opts = _Options(size, output_stride, repeat, precision, channels_last, baseline, timm,
                    parse_bytes(max_memory) if max_memory is not None else None,
                    baseline_windows, batch_size, breakdown, fold_bn, seed, head, device)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(clf, opts)
    finally:
        torch.set_num_threads(previous)


def _prepare(clf: Classifier, o: _Options):
    """The dense net and the baseline's classifier, optimised alike, and the random image."""
    dense = convolutionize(clf.model, clf.spec.input_size, o.output_stride, head=o.head).eval()
    original = clf.model.eval()
    if o.fold_bn:
        dense, original = fold_batchnorm(dense), fold_batchnorm(original)
    if dense.multi_output:  # every output, concatenated along channels, on both sides
        dense = dense.subset(*(info.key for info in dense.outputs))
        original = _Concatenated(original)
    dense = dense.to(o.device, memory_format=o.memory_format)
    original = original.to(o.device, memory_format=o.memory_format)
    gen = torch.Generator().manual_seed(o.seed)
    x = torch.randn(1, clf.spec.input_size[0], *o.size, generator=gen).to(o.device)
    return dense, original, x.contiguous(memory_format=o.memory_format)


class _Concatenated(torch.nn.Module):
    """A multi-output classifier's outputs as one ``(N, sum K_i)`` tensor, in output order (what
    :meth:`DenseNet.subset` computes per cell)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.flatten(1) for _, t in leaves(self.model(x))], dim=1)


def _run(clf: Classifier, o: _Options) -> dict:
    load_start = os.getloadavg()
    dense, original, x = _prepare(clf, o)
    peak = conv_peak(o.precision, o.channels_last, device=o.device)
    methods = {}
    methods["dense"], full = _bench_dense(dense, x, o.repeat, o.precision, o.max_bytes, peak)
    h, w = dense.geometry.output_size(*o.size)
    result = _header(clf, dense, o, peak, (h, w))
    result["memory_model"] = _memory_model(dense, methods["dense"], PRECISIONS[o.precision],
                                           o.channels_last, 0 if o.max_bytes else x.nbytes)
    if o.breakdown:
        result["breakdown"] = _breakdown(dense, x, o.precision)
    if o.baseline:
        methods["baseline"] = _bench_baseline(
            original, dense, x, full[:, :, :h, :w], repeat=o.repeat, precision=o.precision,
            channels_last=o.channels_last, batch_size=o.batch_size, limit=o.baseline_windows,
            seed=o.seed, peak=peak)
        result["speedup"] = methods["baseline"]["seconds"] / methods["dense"]["seconds"]
        result["flop_ratio"] = methods["baseline"]["gflop"] / methods["dense"]["gflop"]
    if o.timm:
        methods["timm_ttp"] = _bench_timm(clf, x, full, repeat=o.repeat, precision=o.precision,
                                          channels_last=o.channels_last, peak=peak)
    result["methods"] = methods
    result["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    return result


def _header(clf: Classifier, dense: DenseNet, o: _Options, peak: float,
            cells: tuple[int, int]) -> dict:
    return {
        "model": clf.spec.name, "weights": clf.weights, "size": list(o.size),
        "window": list(dense.geometry.window), "output_stride": dense.output_stride,
        "cells": list(cells), "windows": cells[0] * cells[1], "precision": o.precision,
        "channels_last": o.channels_last, "fold_bn": o.fold_bn,
        "head_path": dense.outputs[0].path, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "device": str(o.device) if o.device.type != "cuda" else torch.cuda.get_device_name(o.device),
        "allocator": allocator(), "peak_gflops_per_s": peak,
        "flop_method": "FlopCounterMode on fake tensors: 2 x multiply-adds of convolutions and "
                       "matrix products",
        "memory_method": "growth of the device memory torch allocated (max_memory_allocated)"
        if o.device.type == "cuda" else "growth of peak RSS (VmHWM reset via "
        "/proc/self/clear_refs)" if _reset_hwm() else "growth of ru_maxrss (new maxima only)",
    }


def _memory_model(dense: DenseNet, fig: dict, act: torch.dtype, channels_last: bool,
                  held: int) -> dict:
    """:func:`densify.tiling.estimate_bytes` for the largest pass against the measured peak
    (less the ``held`` bytes of an input allocated before the measurement began)."""
    est = estimate_bytes(dense, *fig["largest_input"], act, channels_last=channels_last) - held
    measured = fig["peak_memory_bytes"]
    return {"estimate_bytes": est, "measured_bytes": measured,
            "measured_over_estimate": measured / est if est else float("nan")}


# ------------------------------------------------------------------------------- reporting


def format_report(r: dict) -> str:
    """The bench result as a short text table."""
    lines = [f"{r['model']} on {r['size'][0]}x{r['size'][1]}, window {r['window'][0]}, stride "
             f"{r['output_stride']}, {r.get('head_path', 'fast')} head: {r['windows']} windows; "
             f"{r['precision']}, channels_last="
             f"{r['channels_last']}, {r['threads']} threads, {r['cpu_capability']}, "
             f"{r['allocator']} malloc",
             f"peak 3x3 conv: {r['peak_gflops_per_s']:.0f} GFLOP/s; load average "
             f"{r['load_average']['start'][0]:.2f} -> {r['load_average']['end'][0]:.2f}",
             f"{'method':10s} {'seconds':>9s} {'windows/s':>10s} {'GFLOP':>9s} {'GFLOP/s':>8s} "
             f"{'of peak':>7s} {'peak mem':>10s}"]
    for name, m in r["methods"].items():
        if "skipped" in m:
            lines.append(f"{name:10s} skipped: {m['skipped']}")
            continue
        lines.append(f"{name:10s} {m['seconds']:9.3f} {m['windows_per_s']:10.1f} "
                     f"{m['gflop']:9.1f} {m['gflops_per_s']:8.1f} {m['peak_fraction']:7.0%} "
                     f"{format_bytes(m['peak_memory_bytes']):>10s}")
    lines += _notes(r)
    return "\n".join(lines)


def _notes(r: dict) -> list[str]:
    m, notes = r["methods"], []
    if m["dense"]["tiles"] > 1:
        notes.append(f"dense: {m['dense']['tiles']} tiles, largest input "
                     f"{m['dense']['largest_input'][0]}x{m['dense']['largest_input'][1]}")
    d = m["dense"]
    notes.append(f"dense CPU time per pass: user {d['user_seconds']:.2f} s, sys "
                 f"{d['sys_seconds']:.2f} s (sys: page faults and zeroing of new activations)")
    mm = r["memory_model"]
    notes.append(f"memory model: estimated {format_bytes(mm['estimate_bytes'])}, measured "
                 f"{format_bytes(mm['measured_bytes'])} ({mm['measured_over_estimate']:.2f}x)")
    if "baseline" in m:
        b = m["baseline"]
        if b["extrapolated"]:
            notes.append(f"baseline: timed {b['measured_windows']} random windows of "
                         f"{r['windows']}, extrapolated")
        a = b["agreement"]
        notes.append(f"speed-up dense vs baseline: {r['speedup']:.1f}x (FLOP ratio "
                     f"{r['flop_ratio']:.1f}x); crops vs dense max rel diff {a['max_rel']:.1e} "
                     f"({a['note']})")
    if "timm_ttp" in m and "max_rel_vs_dense" in m["timm_ttp"]:
        notes.append(f"timm_ttp vs pooled dense map: max rel diff "
                     f"{m['timm_ttp']['max_rel_vs_dense']:.1e}")
    if "breakdown" in r:
        b = r["breakdown"]
        parts = [f"{k} {v['seconds']:.3f} s at {v['gflops_per_s']:.0f} GFLOP/s"
                 for k, v in b.items() if k != "head_top_layer"]
        if "head_top_layer" in b:
            t = b["head_top_layer"]
            parts.append(f"largest head layer {t['node']} {t['seconds']:.3f} s at "
                         f"{t['gflops_per_s']:.0f} GFLOP/s")
        total = sum(v["seconds"] for k, v in b.items() if k != "head_top_layer")
        parts.append(f"node sum {total:.3f} s = {total / m['dense']['seconds']:.0%} of the dense "
                     "median")
        notes.append("breakdown (one pass, node by node): " + "; ".join(parts))
    return notes
