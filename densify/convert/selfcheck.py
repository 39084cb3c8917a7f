"""Comparison of dense cells with the classifier, and the self-check every conversion runs.

:func:`compare` measures the worst error between classifier outputs and dense cells (per output,
relative to its largest |value|) for :mod:`densify.convert.verify`. :func:`self_check` is what
:func:`densify.convert.convolutionize` runs before it returns: check 1 (the classifier's outputs
at the canonical input) and check 2 (on an input one stride larger each way: every cell vs the
classifier's own head on that cell's window of the trunk's feature map), in the model's dtype with
the :data:`TOLERANCE` table. A mismatch raises a one-line :class:`SelfCheckError` naming the
first output and cell that differ: a conversion is never returned wrong.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from ..errors import SelfCheckError
from .fields import walk_fields
from .graph import SLIDING, pair, shape_of
from .outputs import leaves

__all__ = ["TOLERANCE", "Check", "compare", "vectors", "cells", "batched", "random_input",
           "feature_windows", "trunk_and_output", "self_check"]

log = logging.getLogger(__name__)

#: Worst error allowed, relative to the largest |logit|, per dtype.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@dataclass(frozen=True)
class Check:
    """Outcome of one equivalence check.

    ``max_rel`` is the worst absolute error divided by the largest |logit| compared (the worst
    output's, for multi-output nets); ``count`` is the number of cells compared (0 means the
    check did not apply: see ``note``).
    """

    name: str
    max_abs: float
    max_rel: float
    tolerance: float
    count: int
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.count > 0 and self.max_rel <= self.tolerance


def vectors(value) -> list[torch.Tensor]:
    """The tensors of an output structure (or a list of tensors), in order."""
    return [t for _, t in leaves(value)]


def cells(x) -> list[torch.Tensor]:
    """Each ``(N, K, h, w)`` output map → ``(N·h·w, K)``, row-major over cells."""
    return [m.permute(0, 2, 3, 1).reshape(-1, m.shape[1]) for m in vectors(x)]


def batched(fn, x: torch.Tensor, chunk: int = 64) -> list[torch.Tensor]:
    """``fn`` on ``x`` in chunks of ``chunk`` samples, outputs concatenated per leaf."""
    parts = [vectors(fn(c)) for c in x.split(chunk)]
    return [torch.cat(p) for p in zip(*parts, strict=True)]


def compare(name: str, expected, actual, note: str = "") -> Check:
    """Worst errors between classifier outputs and dense cells: each a ``(cells, K)`` tensor, or
    a structure / list of them (one per output).

    A non-finite value on either side (NaN, inf) is a failure: both worst errors are then
    ``inf`` (a NaN would compare as neither larger nor smaller than the tolerance, and Python's
    ``max`` would drop it)."""
    exp, act = vectors(expected), vectors(actual)
    tol = TOLERANCE[act[0].dtype]
    if exp[0].numel() == 0:
        return Check(name, float("nan"), float("nan"), tol, 0, note)
    worst_abs, worst_rel = 0.0, 0.0
    for e, a in zip(exp, act, strict=True):
        diff = (e.double() - a.double()).abs().max().item()
        scale = e.double().abs().max().item() or 1.0
        rel = diff / scale if math.isfinite(diff) and math.isfinite(scale) else math.inf
        diff = diff if math.isfinite(diff) else math.inf  # NaN would vanish in max()
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
    return Check(name, worst_abs, worst_rel, tol, exp[0].shape[0], note)


def random_input(model: nn.Module, chans: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A reproducible ``(1, chans, h, w)`` normal input in ``model``'s dtype and device."""
    gen = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    return torch.randn(1, chans, h, w, generator=gen, dtype=torch.float64).to(p.device, p.dtype)


def feature_windows(dense, feats: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N·h·w, C, kh, kw)``: the trunk feature window each of the ``h × w`` cells reads, in
    row-major cell order (``kh × kw`` = the feature map's size at the canonical input; taps
    ``dilation`` apart after stride-1 final pooling)."""
    node = next(n for n in dense.net.graph.nodes if n.name == dense.feature_node)
    kh, kw = shape_of(node)[-2:]
    s, fs = dense.geometry.stride, walk_fields(dense.net)[node].stride
    step = (s[0] // fs[0], s[1] // fs[1])
    dh, dw = _head_dilation(dense.net, node, (kh, kw))
    return torch.cat([feats[:, :, i * step[0]:i * step[0] + dh * (kh - 1) + 1:dh,
                            j * step[1]:j * step[1] + dw * (kw - 1) + 1:dw]
                      for i in range(h) for j in range(w)])


def _head_dilation(gm: fx.GraphModule, node: fx.Node, kernel) -> tuple[int, int]:
    for user in node.users:
        if user.op == "call_module":
            m = gm.get_submodule(user.target)
            if isinstance(m, SLIDING) and pair(m.kernel_size) == tuple(kernel):
                return pair(getattr(m, "dilation", 1))
    return (1, 1)


def trunk_and_output(dense) -> fx.GraphModule:
    """``dense.net`` returning ``(trunk feature map, outputs)`` in one pass."""
    graph, env = fx.Graph(), {}
    out = graph.graph_copy(dense.net.graph, env)
    feature = next(env[n] for n in dense.net.graph.nodes if n.name == dense.feature_node)
    graph.output((feature, out))
    return fx.GraphModule(dense.net, graph)


@torch.no_grad()
def self_check(model: nn.Module, dense, head: fx.GraphModule | None) -> None:
    """Checks 1 and 2 (module docstring); raises :class:`SelfCheckError` on a mismatch.

    ``head`` is the classifier's own head from ``dense.feature_node`` (None: no head). A model on
    the meta device (a shape-only skeleton) has no values to compare: nothing is checked."""
    if any(p.is_meta for p in model.parameters()):
        log.info("%s has meta parameters: the self-check needs values, skipped",
                 type(model).__name__)
        return
    training = model.training
    model.eval()
    try:
        x = random_input(model, *dense.input_size, seed=0)
        expected = [v[:1] for v in vectors(model(x))]
        _raise_on_mismatch("the canonical input", expected, [m[:, :, :1, :1] for m in
                                                             vectors(dense(x))], dense)
    finally:
        model.train(training)
    if head is None:
        return
    chans, wh, ww = dense.input_size
    s = dense.geometry.stride
    x = random_input(model, chans, wh + s[0], ww + s[1], seed=1)
    feats, out = trunk_and_output(dense)(x)
    h, w = dense.output_size(wh + s[0], ww + s[1])  # the cells whose window fits
    maps = [m[:, :, :h, :w] for m in vectors(out)]
    windows = feature_windows(dense, feats, h, w)
    _raise_on_mismatch(f"a {wh + s[0]}x{ww + s[1]} input", batched(head, windows, 256), maps,
                       dense)


def _raise_on_mismatch(where: str, expected: list, maps: list, dense) -> None:
    """``expected`` ``(cells, K_i)`` per output vs dense ``maps`` ``(1, K_i, h, w)``."""
    for info, e, m in zip(dense.outputs, expected, maps, strict=True):
        h, w = m.shape[-2:]
        a = m.permute(0, 2, 3, 1).reshape(-1, m.shape[1])
        if e.shape != a.shape:
            raise SelfCheckError(f"self-check: output {info.key!r} has {tuple(a.shape)} cells x "
                                  f"channels on {where}, the classifier {tuple(e.shape)}")
        tol = TOLERANCE.get(a.dtype, 1e-4)
        scale = e.double().abs().max().item() or 1.0
        err = (e.double() - a.double()).abs().amax(1) / scale
        bad = (~(err <= tol)).nonzero()
        if bad.numel():
            i, j = divmod(int(bad[0, 0]), w)
            raise SelfCheckError(
                f"self-check failed: output {info.key!r} cell ({i}, {j}) on {where} differs from "
                f"the classifier by {err[bad[0, 0]].item():.2e} (relative; tolerance {tol:.0e}) "
                f"on the {info.path} path; this is a densify bug, please report it (head='general'"
                " may avoid it)")
