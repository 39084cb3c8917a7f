"""Global context: ops whose value at one position depends on the whole feature map.

Squeeze-and-excitation, ECA (a ``Conv1d`` over the pooled vector), split attention (ResNeSt,
SK), CBAM and global-context blocks reduce the map over its spatial axes and feed the result back
into the trunk; GroupNorm, InstanceNorm and a LayerNorm over ``(C, H, W)`` normalise every
position by statistics of the whole map. On an input larger than the canonical one each of them
sees the whole image, not one window: a dense net that keeps them is exact at the canonical input
and in its head (checks 1 and 2), but a cell is not a function of its window alone.
:func:`densify.convert.convolutionize` therefore lists them in ``DenseNet.global_context`` (node
names), logs a warning, and reports the receptive field as global (``Geometry.rf_size = None``).

:func:`statistic` says over which axes an op takes statistics (a reduction or a norm);
:func:`flows_back` whether a node's result is combined again with a full-size map (then it is
context, not the head); :func:`broadcasts` whether a per-image value can be combined with a map
without mixing its positions (a gate of shape ``(N, C, 1, 1)`` can, a non-local block's
``(N, C, h·w)`` cannot); :func:`describe` names a node for messages.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .graph import descendants, shape_of

__all__ = ["Statistic", "REDUCTIONS", "statistic", "flows_back", "broadcasts", "describe",
           "layer_of"]

#: Reductions (method names / ``torch`` function names) that take a statistic over ``dim``.
REDUCTIONS = {"mean", "nanmean", "sum", "nansum", "amax", "amin", "max", "min", "var", "std",
              "var_mean", "std_mean", "norm", "logsumexp", "prod", "median", "argmax", "argmin",
              "all", "any", "count_nonzero", "vector_norm"}
#: Reductions whose ``dim`` is their third positional argument (after ``p`` / ``ord``).
_DIM_THIRD = {"norm", "vector_norm"}


class Statistic(NamedTuple):
    """An op taking statistics over ``dims`` of its input (axis numbers of an ``ndim`` tensor).

    ``norm``: the result keeps the input's shape (a norm), else it is a reduction.
    ``what``: how messages name it (``"GroupNorm"``, ``"mean"``).
    """

    dims: frozenset
    norm: bool
    what: str


def statistic(gm: fx.GraphModule, node: fx.Node, ndim: int) -> Statistic | None:
    """The statistic ``node`` takes of its first input (an ``ndim``-d tensor), or None."""
    if node.op == "call_module":
        return _module_statistic(gm.get_submodule(node.target), ndim)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op not in ("call_method", "call_function"):
        return None
    if node.target in (F.group_norm, torch.group_norm):
        return Statistic(frozenset(range(1, ndim)), True, "GroupNorm")
    if node.target in (F.instance_norm, torch.instance_norm):
        stats = _arg(node, 5, "use_input_stats", True)
        return Statistic(frozenset(range(2, ndim)), True, "InstanceNorm") if stats else None
    if node.target in (F.layer_norm, torch.layer_norm):
        shape = _arg(node, 1, "normalized_shape", ())
        # a shape computed in the graph (``x.shape[1:]``): assume the worst, every non-batch axis
        count = ndim - 1 if isinstance(shape, fx.Node) else 1 if isinstance(shape, int) else len(
            shape)
        return Statistic(frozenset(range(ndim - count, ndim)), True, "LayerNorm")
    if name in REDUCTIONS and not _elementwise(node):
        dim = _arg(node, 2 if name in _DIM_THIRD else 1, "dim", None)
        if dim is None:
            return Statistic(frozenset(range(ndim)), False, name)
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        return Statistic(frozenset(int(d) % ndim for d in dims), False, name)
    return None


def _module_statistic(m: nn.Module, ndim: int) -> Statistic | None:
    if isinstance(m, nn.GroupNorm):
        return Statistic(frozenset(range(1, ndim)), True, type(m).__name__)
    if isinstance(m, nn.modules.instancenorm._InstanceNorm) and (
            m.training or not m.track_running_stats):
        return Statistic(frozenset(range(2, ndim)), True, type(m).__name__)
    if isinstance(m, nn.LayerNorm) and (type(m) is nn.LayerNorm or len(m.normalized_shape) > 1):
        # a subclass over one axis is assumed per position (timm's LayerNorm2d: over channels)
        count = len(m.normalized_shape)
        return Statistic(frozenset(range(ndim - count, ndim)), True, type(m).__name__)
    return None


def _arg(node: fx.Node, index: int, key: str, default):
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def _elementwise(node: fx.Node) -> bool:
    """``torch.max(a, b)`` / ``a.max(b)``: element-wise, not a reduction."""
    other = _arg(node, 1, "other", None)
    return isinstance(other, fx.Node) and shape_of(other) is not None


def flows_back(node: fx.Node, spatial_size) -> bool:
    """Whether a value computed from ``node`` is combined with a map that is not (a full-size
    map: ``spatial_size(other)`` > 1 positions), i.e. ``node`` feeds back into the trunk."""
    below = descendants(node)
    for d in below:
        if d.op == "output":
            continue
        for other in d.all_input_nodes:
            if other is not node and other not in below and spatial_size(other) > 1:
                return True
    return False


def broadcasts(value: fx.Node, out: fx.Node, axes: tuple[int, ...]) -> bool:
    """Whether ``value`` (a per-image tensor) broadcast against ``out`` (a map whose spatial axes
    are ``axes``) is constant along those axes: right-aligned, its size there is 1 or absent."""
    vs, os_ = shape_of(value), shape_of(out)
    if vs is None or os_ is None:
        return True
    shift = len(os_) - len(vs)
    return all(a - shift < 0 or vs[a - shift] == 1 for a in axes)


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """``target (Type)`` for a layer, ``name (op)`` for a function or method node."""
    if node.op == "call_module":
        return f"{node.target} ({type(gm.get_submodule(node.target)).__name__})"
    return f"{node.name} ({getattr(node.target, '__name__', node.target)})"


def layer_of(node: fx.Node) -> str:
    """The qualified name of the layer whose code ran ``node`` (its target for a layer call; the
    innermost module of torch.fx's ``nn_module_stack`` otherwise), or the node's name."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return path or node.name
