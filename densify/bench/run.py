"""One bench run: the options, the nets and image prepared alike, the methods in order, and the
record's header (:func:`run_bench`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..convert.dense import DenseNet, convolutionize
from ..convert.fold import fold_batchnorm
from ..convert.outputs import leaves
from ..errors import ParameterError
from ..models.weights import Classifier, load_classifier
from ..runtime import allocator
from ..scan.prepare import resolve_device
from ..scan.tiling import estimate_bytes, parse_bytes
from .measure import PRECISIONS, conv_peak, reset_hwm
from .methods import bench_baseline, bench_dense, bench_timm, breakdown

__all__ = ["BenchOptions", "run_bench"]


def _check_args(size, repeat: int, precision: str, window, device: torch.device) -> None:
    if precision != "fp32" and not torch.amp.is_autocast_available(device.type):
        raise ParameterError(f"{precision} autocast is not available on {device.type}; use fp32")
    if repeat < 1:
        raise ParameterError(f"repeat must be at least 1, got {repeat}")
    if size[0] < window[0] or size[1] < window[1]:
        raise ParameterError(f"image {size[0]}x{size[1]} is smaller than the {window[0]}x{window[1]} "
                         "window; pass a larger --size")


@dataclass(frozen=True)
class BenchOptions:
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
            weights: see :mod:`densify.models.weights`.
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
        raise ParameterError(f"bench times fp32 and bf16 only, not {precision!r}; use "
                             "--precision fp32 or bf16")
    clf = load_classifier(model, weights)
    window = clf.spec.input_size[1:]
    size = tuple(size) if size is not None else (4 * window[0], 4 * window[1])
    device = resolve_device(device)
    _check_args(size, repeat, precision, window, device)
    opts = BenchOptions(size, output_stride, repeat, precision, channels_last, baseline, timm,
                    parse_bytes(max_memory) if max_memory is not None else None,
                    baseline_windows, batch_size, breakdown, fold_bn, seed, head, device)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(clf, opts)
    finally:
        torch.set_num_threads(previous)


def _prepare(clf: Classifier, o: BenchOptions):
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


def _run(clf: Classifier, o: BenchOptions) -> dict:
    load_start = os.getloadavg()
    dense, original, x = _prepare(clf, o)
    peak = conv_peak(o.precision, o.channels_last, device=o.device)
    methods = {}
    methods["dense"], full = bench_dense(dense, x, o.repeat, o.precision, o.max_bytes, peak)
    h, w = dense.geometry.output_size(*o.size)
    result = _header(clf, dense, o, peak, (h, w))
    result["memory_model"] = _memory_model(dense, methods["dense"], PRECISIONS[o.precision],
                                           o.channels_last, 0 if o.max_bytes else x.nbytes)
    if o.breakdown:
        result["breakdown"] = breakdown(dense, x, o.precision)
    if o.baseline:
        methods["baseline"] = bench_baseline(
            original, dense, x, full[:, :, :h, :w], repeat=o.repeat, precision=o.precision,
            channels_last=o.channels_last, batch_size=o.batch_size, limit=o.baseline_windows,
            seed=o.seed, peak=peak)
        result["speedup"] = methods["baseline"]["seconds"] / methods["dense"]["seconds"]
        result["flop_ratio"] = methods["baseline"]["gflop"] / methods["dense"]["gflop"]
    if o.timm:
        methods["timm_ttp"] = bench_timm(clf, x, full, repeat=o.repeat, precision=o.precision,
                                          channels_last=o.channels_last, peak=peak)
    result["methods"] = methods
    result["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    return result


def _header(clf: Classifier, dense: DenseNet, o: BenchOptions, peak: float,
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
        "/proc/self/clear_refs)" if reset_hwm() else "growth of ru_maxrss (new maxima only)",
    }


def _memory_model(dense: DenseNet, fig: dict, act: torch.dtype, channels_last: bool,
                  held: int) -> dict:
    """:func:`densify.scan.tiling.estimate_bytes` for the largest pass against the measured peak
    (less the ``held`` bytes of an input allocated before the measurement began)."""
    est = estimate_bytes(dense, *fig["largest_input"], act, channels_last=channels_last) - held
    measured = fig["peak_memory_bytes"]
    return {"estimate_bytes": est, "measured_bytes": measured,
            "measured_over_estimate": measured / est if est else float("nan")}
