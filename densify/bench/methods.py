"""The bench's methods, each timed on the same image: the dense pass, the crops of every window
through the original classifier, timm's test-time pooling, and the dense pass node by node."""

from __future__ import annotations

import math
import re
import time

import torch
import torch.fx as fx

from ..convert.dense import DenseNet
from ..convert.verify import TOLERANCE
from ..models.weights import Classifier
from ..scan.tiling import forward_tiled, plan_tiles
from .measure import (
    PRECISIONS,
    PeakMemory,
    autocast,
    autotune,
    count_flops,
    cpu_seconds,
    figures,
    node_flops,
    sync,
    timed,
)

__all__ = ["bench_dense", "bench_baseline", "bench_timm", "breakdown"]


def bench_dense(dense: DenseNet, x: torch.Tensor, repeat: int, precision: str,
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
    cpu_start = cpu_seconds()
    with torch.inference_mode(), autocast(precision, x.device), autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, out = timed(lambda: forward_tiled(dense, x, max_bytes=max_bytes)
                                     if max_bytes is not None else dense(x), repeat, x.device)
    passes = max(1, repeat) + 1  # the warm-up ran too
    user, system = ((b - a) / passes for a, b in zip(cpu_start, cpu_seconds(), strict=True))
    fig = figures(seconds, h * w, flops, peak, memory)
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


def bench_baseline(model, dense: DenseNet, x: torch.Tensor, dense_out: torch.Tensor, *,
                    repeat: int, precision: str, channels_last: bool, batch_size: int,
                    limit: int | None, seed: int, peak: float) -> dict:
    """Method (b): crops of every covered window through the original classifier, batched."""
    h, w = dense_out.shape[-2:]
    cells = _windows(h, w, limit, seed)
    per_window = count_flops(model, (1, *dense.input_size), device=x.device)
    with torch.inference_mode(), autocast(precision, x.device), autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, logits = timed(
            lambda: _classify_crops(model, x, cells, dense, batch_size, channels_last), repeat,
            x.device)
    scale = h * w / len(cells)
    fig = figures(seconds * scale, h * w, per_window * h * w, peak, memory)
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


def bench_timm(clf: Classifier, x: torch.Tensor, dense_full: torch.Tensor, *, repeat: int,
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
    with torch.inference_mode(), autocast(precision, x.device), autotune(x.device), \
            PeakMemory(x.device) as memory:
        seconds, times, out = timed(lambda: model(x), repeat, x.device)
    cells = dense_full.shape[-2] * dense_full.shape[-1]
    fig = figures(seconds, cells, flops, peak, memory)
    pooled = 0.5 * (dense_full.mean((2, 3)) + dense_full.amax((2, 3)))
    fig.update(runs=times, max_rel_vs_dense=float(
        (out.float().cpu() - pooled).abs().max() / pooled.abs().max()))
    return fig


def breakdown(dense: DenseNet, x: torch.Tensor, precision: str) -> dict:
    """One timed pass node by node: trunk vs head (converted FC layers), and the head's largest
    layer (VGG's fc6)."""
    flops = node_flops(dense.net, tuple(x.shape))
    seconds: dict[str, float] = {}

    class Timer(fx.Interpreter):
        def run_node(self, n):
            start = time.perf_counter()
            out = super().run_node(n)
            sync(x.device)
            seconds[n.name] = time.perf_counter() - start
            return out

    with torch.inference_mode(), autocast(precision, x.device), autotune(x.device):
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
