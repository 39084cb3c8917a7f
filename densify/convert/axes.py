"""Which axes of a trunk tensor are its spatial ones, op by op (the bookkeeping behind
:func:`densify.convert.head.find_head`).

A map ``(N, C, h, w)`` has its spatial axes at ``(2, 3)`` (:data:`NCHW`); after
``permute(0, 2, 3, 1)`` they are ``(1, 2)``. :func:`trunk_axes` gives the spatial axes of an
op's result when the op commutes with sliding the window (point-wise, per-channel, sliding
windows, permutes and reshapes that keep both spatial axes whole, reductions and splits along
other axes), and None when it mixes positions: there the head starts. :func:`flatten_order`
says in which order a flatten of a 4-d map reads its axes.

Shapes: ``s_in``/``s_out`` are the traced shapes of an op's input map and result; ``axes`` a
pair of axis indices into ``s_in``.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .context import REDUCTIONS, statistic
from .graph import ADAPTIVE, SLIDING, shape_of

__all__ = ["trunk_axes", "flatten_order", "is_flatten_op", "MATMULS", "RESHAPE_METHODS",
           "RESHAPE_FUNCTIONS", "PAD_MODULES", "NCHW", "DIM_OPS", "SPLITS"]

MATMULS = {operator.matmul, torch.matmul, torch.mm, torch.bmm, torch.einsum, torch.addmm,
           F.linear, torch.tensordot, torch.inner}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten"}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
NCHW = (2, 3)
#: Ops whose ``dim`` argument mixes positions when it names a spatial axis.
DIM_OPS = {"softmax", "log_softmax", "softmin", "cumsum", "cumprod", "normalize", "logcumsumexp",
           "flip"}
#: Ops that return pieces of a map along ``dim`` (third argument; ``unbind``: second).
SPLITS = {"split", "chunk", "tensor_split", "split_with_sizes", "unbind"}

def trunk_axes(gm: fx.GraphModule, node: fx.Node, src: fx.Node, axes: tuple[int, int]
               ) -> tuple[int, int] | None:
    """The spatial axes of ``node``'s result if it is a trunk op on ``src`` (a map whose spatial
    axes are ``axes``), else None: ``node`` starts the head."""
    s_in, s_out = shape_of(src), shape_of(node)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op in ("call_method", "call_function") and name in REDUCTIONS | SPLITS | {
            "stack", "roll"}:
        return _indexed_axes(gm, node, name, len(s_in), axes)
    if s_out is None:
        return axes
    if node.op == "call_module":
        return _module_axes(gm.get_submodule(node.target), s_in, s_out, axes)
    if node.target is F.linear:  # on a channels-last map's channels: per cell
        return axes if len(s_in) - 1 not in axes and len(s_out) == len(s_in) else None
    if node.target in MATMULS:
        return None
    if name in DIM_OPS and _dims(node, len(s_in)) & set(axes):
        return None
    if name in ("permute", "transpose", "swapaxes", "movedim"):
        return _permuted_axes(node, len(s_in), axes)
    if node.target in RESHAPE_FUNCTIONS or (node.op == "call_method" and name in RESHAPE_METHODS):
        return _reshaped_axes(s_in, s_out, axes)
    if node.target is F.pad and axes == NCHW:
        return axes
    return _same_axes(s_in, s_out, axes)


def _module_axes(m: nn.Module, s_in, s_out, axes):
    if isinstance(m, SLIDING + PAD_MODULES):
        return axes if axes == NCHW else None
    if isinstance(m, ADAPTIVE):
        uniform = all(s_in[a] % s_out[a] == 0 for a in axes) and len(s_out) == len(s_in)
        return axes if uniform and axes == NCHW else None
    if isinstance(m, nn.Linear) or (type(m) is nn.LayerNorm and len(m.normalized_shape) == 1):
        return axes if len(s_in) - 1 not in axes and len(s_out) == len(s_in) else None
    if type(m) is nn.LayerNorm:  # over several trailing axes: mixes positions
        return None
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return _reshaped_axes(s_in, s_out, axes)
    if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)) and m.dim is not None and (
            m.dim % len(s_in)) in axes:
        return None
    return _same_axes(s_in, s_out, axes)


def _indexed_axes(gm: fx.GraphModule, node: fx.Node, name: str, ndim: int, axes):
    """Reductions over, stacks along, splits along and rolls of non-spatial axes keep the
    spatial ones (shifted where an axis is removed or inserted); along a spatial axis: None."""
    if name == "stack":
        dim = int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % (ndim + 1)
        return None if dim == 0 else tuple(a + (a >= dim) for a in axes)
    if name == "roll":
        dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims")
        dims = set(range(ndim)) if dims is None else {int(d) % ndim for d in (
            (dims,) if isinstance(dims, int) else dims)}
        return None if dims & set(axes) else axes
    if name in SPLITS:
        index = 1 if name == "unbind" else 2
        dim = int(node.args[index] if len(node.args) > index else node.kwargs.get("dim", 0)) % ndim
        if dim in axes or dim == 0:
            return None
        return tuple(a - (a > dim) for a in axes) if name == "unbind" else axes
    stat = statistic(gm, node, ndim)
    if stat is None or stat.dims & set(axes) or 0 in stat.dims:
        return None
    s_out = shape_of(node)
    keep = (len(s_out) == ndim) if s_out is not None else bool(
        node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
    return axes if keep else tuple(a - sum(d < a for d in stat.dims) for a in axes)


def _dims(node: fx.Node, ndim: int) -> set:
    """The ``dim`` argument of a softmax-like op (second positional or keyword), as a set."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dim is None:
        return set()
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return {int(d) % ndim for d in dims if isinstance(d, int)}


def _same_axes(s_in, s_out, axes):
    """Shape-preserving on the spatial axes (point-wise, per-channel, channel concatenation)."""
    if len(s_out) != len(s_in) or any(s_out[a] != s_in[a] for a in axes):
        return None
    return axes


def _permuted_axes(node: fx.Node, ndim: int, axes):
    dims = list(range(ndim))
    args = [a for a in node.args[1:]] or list(node.kwargs.values())
    if node.target in ("permute",) or getattr(node.target, "__name__", "") == "permute":
        perm = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        dims = [int(p) % ndim for p in perm]
    elif node.target in ("transpose", "swapaxes") or getattr(node.target, "__name__", "") in (
            "transpose", "swapaxes"):
        a, b = (int(d) % ndim for d in args[:2])
        dims[a], dims[b] = dims[b], dims[a]
    else:
        return None
    return dims.index(axes[0]), dims.index(axes[1])


def _reshaped_axes(s_in, s_out, axes):
    """A reshape keeps the spatial axes when everything from the first of them on is unchanged
    (the trailing dims), and the batch stays first."""
    first = min(axes)
    shift = len(s_out) - len(s_in)
    if first + shift < 1 or tuple(s_out[first + shift:]) != tuple(s_in[first:]):
        return None
    return axes[0] + shift, axes[1] + shift


def flatten_order(node: fx.Node, src: fx.Node, axes) -> tuple[int, int, int] | None:
    """For a flatten of a 4-d map to ``(N, features)``: the NCHW axes in the order the flatten
    reads them (``(1, 2, 3)`` for an ``(N, C, h, w)`` map, ``(2, 3, 1)`` for ``(N, h, w, C)``)."""
    s_in, s_out = shape_of(src), shape_of(node)
    if s_in is None or s_out is None or len(s_in) != 4 or len(s_out) != 2:
        return None
    if not is_flatten_op(node) or s_out[0] != s_in[0]:
        return None
    channel = next(a for a in (1, 2, 3) if a not in axes)
    to_nchw = {channel: 1, axes[0]: 2, axes[1]: 3}
    return tuple(to_nchw[a] for a in (1, 2, 3))


def is_flatten_op(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in RESHAPE_FUNCTIONS
    if node.op == "call_method":
        return node.target in RESHAPE_METHODS
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)) is nn.Flatten
    return False
