"""Where the head starts: the one rule that splits a classifier into trunk and head.

The rule:
    the **trunk** is everything that commutes with sliding the window: convolutions, pools,
    padding, point-wise and per-channel ops (activations, norms over channels, ``Linear`` or
    ``LayerNorm`` on a channels-last map's channel axis), residual adds, concatenations of maps
    along channels, and permutes/reshapes that keep both spatial axes whole (ConvNeXt's
    channels-last blocks, ShuffleNet's channel shuffle). The **head** starts at the first op, on
    the way to an output, that is not such an op on a map: a flatten/view/reshape that merges or
    drops a spatial axis, a global pool or a reduction over ``h, w``, a matmul/einsum or Linear
    acting on a spatial axis, an interpolation, a non-uniform adaptive pool — anything that mixes
    positions of the map.

:func:`find_head` walks the traced graph once, tracking for every trunk tensor which of its axes
are the spatial ones (``(2, 3)`` for ``(N, C, h, w)``; ``(1, 2)`` after ``permute(0, 2, 3, 1)``),
and classifies each head start (:class:`Head`):

- ``pools``: global pools of an ``(N, C, h, w)`` map; a global pool whose result is combined again
  with a full-size map (squeeze-and-excitation) is *context*, kept global, not a head start;
- ``flattens``: flattens of a 4-d map to ``(N, features)`` vectors, with the order in which the
  flatten reads the map's axes (``(1, 2, 3)`` = channels, rows, columns; a TF/Keras/Caffe2 port
  that permutes to ``(H, W, C)`` first reads ``(2, 3, 1)``);
- ``others``: every other head start; only the general path (:mod:`densify.convert.general`)
  evaluates those.

- ``context``: global context (:mod:`densify.convert.context`): a statistic over the map's
  spatial axes whose result flows back into the trunk (squeeze-and-excitation, ECA, split
  attention, CBAM), a norm by such statistics (GroupNorm, InstanceNorm, LayerNorm over
  ``(C, H, W)``), or another op that mixes positions and whose result comes back as a per-image
  value (a global-context block's attention pool). Those values have no spatial axes
  (:data:`GLOBAL`) and are not classified further; they are kept global in the dense net.

An op that mixes positions and whose result flows back into the trunk as a map (attention, a
non-local block), or that depends on absolute positions (a position embedding, a roll or flip of
a spatial axis, a split along one), cannot be slid: it is refused in one line naming it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from .context import REDUCTIONS, broadcasts, describe, flows_back, statistic
from .graph import ADAPTIVE, SLIDING, global_pool_kind, output_node, shape_of

__all__ = ["Head", "find_head", "feature_map", "GLOBAL", "MATMULS", "RESHAPE_METHODS",
           "PAD_MODULES"]

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
#: The "axes" of a per-image value computed by a global statistic: it has no spatial axes.
GLOBAL = ()


@dataclass(frozen=True)
class Head:
    """Where the head starts (module docstring).

    Attributes:
        pools: global-pool node -> ``"avg"`` | ``"max"``.
        flattens: flatten node -> the order of NCHW axes it reads, e.g. ``(1, 2, 3)``.
        others: any other head-start nodes (general path only).
        context: global-context node -> what it is (``"GroupNorm"``, ``"mean"``), in graph
            order: kept global in the dense net.
        axes: spatial axes ``(row, column)`` of every trunk tensor node; :data:`GLOBAL` for a
            per-image value computed from global context.
        origin: for a :data:`GLOBAL` value made by an op that mixes positions other than a
            statistic (an attention pool), that op: such a value must broadcast over the map it
            rejoins.
    """

    pools: dict = field(default_factory=dict)
    flattens: dict = field(default_factory=dict)
    others: list = field(default_factory=list)
    context: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)

    @property
    def starts(self) -> list:
        return [*self.pools, *self.flattens, *self.others]


def find_head(gm: fx.GraphModule) -> Head:
    """Classify every node of ``gm`` (shape-annotated) by the rule of the module docstring."""
    head = Head()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            head.axes[node] = NCHW
            continue
        trunk_in = [a for a in node.all_input_nodes if a in head.axes]
        if not trunk_in or node.op == "output":
            continue
        src = _source(node, [a for a in trunk_in if _is_spatial(a, head)])
        if src is None:  # sizes, tuples of maps, per-image context values: carry on
            _carry(node, trunk_in, head)
            continue
        _classify(gm, node, src, head)
        _check_rejoin(gm, node, trunk_in, head)
    if not head.starts:
        out = shape_of(output_node(gm).args[0])
        if out is None or len(out) != 4:
            raise ConversionError(
                "found no op that collapses the trunk's feature map between it and the "
                "classifier's output; densify converts CNN classifiers whose head reads a map")
    return head


def _source(node: fx.Node, maps: list) -> fx.Node | None:
    """The input ``node`` acts on: the one with ``node``'s own shape if any (``scale * x``
    broadcasts a squeeze-and-excitation gate over ``x``), else the first."""
    out = shape_of(node)
    return next((a for a in maps if shape_of(a) == out), maps[0] if maps else None)


def _is_spatial(node: fx.Node, head: Head) -> bool:
    shape = shape_of(node)
    return shape is not None and len(shape) >= 3 and head.axes.get(node, GLOBAL) != GLOBAL


def _carry(node: fx.Node, trunk_in: list, head: Head) -> None:
    """A node reading no map: global if it reads a global value, else it carries the axes of
    its first trunk input (a size, an item of a tuple of maps); a tensor computed from trunk
    sizes alone is not trunk."""
    if "tensor_meta" in node.meta and not any("tensor_meta" in a.meta for a in trunk_in):
        return  # a tensor shaped by trunk sizes only (a head reshape to (B, ...)): not trunk
    values = [a for a in trunk_in if head.axes[a] == GLOBAL]
    head.axes[node] = GLOBAL if values else head.axes[trunk_in[0]]
    origin = next((head.origin[a] for a in values if head.origin.get(a) is not None), None)
    if origin is not None:
        head.origin[node] = origin


def _check_rejoin(gm: fx.GraphModule, node: fx.Node, trunk_in: list, head: Head) -> None:
    """A per-image value made by mixing positions may rejoin a map only as a gate or bias that
    is constant over the map's positions (a global-context block); as a map it is attention."""
    axes = head.axes.get(node, GLOBAL)
    if axes == GLOBAL:
        return
    for value in trunk_in:
        origin = head.origin.get(value)
        if origin is not None and not broadcasts(value, node, axes):
            raise ConversionError(f"{describe(gm, origin)} {_why(gm, origin)}")


def _is_constant(node: fx.Node, depth: int = 8) -> bool:
    """A parameter or buffer, or a value computed from them and sizes only (a blur filter cast
    to the input's dtype); not a map of the trunk."""
    if node.op == "get_attr":
        return True
    if node.op == "placeholder" or depth == 0 or not node.all_input_nodes:
        return False
    return all(_is_constant(a, depth - 1) or "tensor_meta" not in a.meta
               for a in node.all_input_nodes)


def _why(gm: fx.GraphModule, node: fx.Node) -> str:
    """The refusal of an op that mixes positions and rejoins the trunk as a map."""
    name = getattr(node.target, "__name__", node.target) if node.op != "call_module" else ""
    if name == "interpolate" or (node.op == "call_module" and isinstance(
            gm.get_submodule(node.target), nn.Upsample)):
        return ("resamples the feature map inside the trunk (upsampling: HRNet's fuse layers, "
                "GhostNetV2's attention); densify cannot slide a resampled map yet")
    return ("mixes positions of the feature map and its result flows back into the trunk as a "
            "map (attention or a non-local block); densify cannot slide such a net: it is not a "
            "CNN")


def _spatial_size(head: Head, node: fx.Node) -> int:
    """Positions of a map (1 for anything else): its two spatial axes, NCHW if unknown."""
    shape, axes = shape_of(node), head.axes.get(node)
    if shape is None or len(shape) < 4 or axes == GLOBAL or _is_constant(node):
        return 1
    a, b = axes if axes is not None else NCHW
    return shape[a] * shape[b]


def _classify(gm: fx.GraphModule, node: fx.Node, src: fx.Node, head: Head) -> None:
    """Trunk op (record the spatial axes of its result), global context, or head start (record
    its kind)."""
    if _classify_statistic(gm, node, src, head):
        return
    axes = trunk_axes(gm, node, src, head.axes[src])
    if axes is not None and not _position_dependent(node, axes, head):
        head.axes[node] = axes
        return
    if flows_back(node, lambda n: _spatial_size(head, n)):
        head.context[node] = "mixes positions"  # _check_rejoin refuses it if it rejoins as a map
        head.axes[node], head.origin[node] = GLOBAL, node
        return
    order = flatten_order(node, src, head.axes[src])
    if order is not None:
        head.flattens[node] = order
    else:
        head.others.append(node)


def _classify_statistic(gm: fx.GraphModule, node: fx.Node, src: fx.Node, head: Head) -> bool:
    """A global pool or a statistic over a spatial axis: a norm is context (its map keeps its
    axes); a reduction is context if it flows back into the trunk, else it starts the head."""
    axes = head.axes[src]
    kind = global_pool_kind(gm, node) if axes == NCHW else None
    stat = statistic(gm, node, len(shape_of(src)))
    if kind is None and (stat is None or not stat.dims & set(axes)):
        return False
    if stat is not None and stat.norm:
        head.context[node], head.axes[node] = stat.what, axes
    elif flows_back(node, lambda n: _spatial_size(head, n)):
        head.context[node], head.axes[node] = (stat.what if stat else f"global {kind} pool"), GLOBAL
    elif kind is not None:
        head.pools[node] = kind
    else:
        head.others.append(node)
    return True


def _position_dependent(node: fx.Node, axes, head: Head) -> bool:
    """A constant operand (not from the trunk) that varies along a spatial axis: a position
    embedding, which a sliding window cannot reproduce."""
    return any(a not in head.axes and not broadcasts(a, node, axes)
               for a in node.all_input_nodes if shape_of(a) is not None)


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
    if not _is_flatten_op(node) or s_out[0] != s_in[0]:
        return None
    channel = next(a for a in (1, 2, 3) if a not in axes)
    to_nchw = {channel: 1, axes[0]: 2, axes[1]: 3}
    return tuple(to_nchw[a] for a in (1, 2, 3))


def _is_flatten_op(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in RESHAPE_FUNCTIONS
    if node.op == "call_method":
        return node.target in RESHAPE_METHODS
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)) is nn.Flatten
    return False


def feature_map(head: Head, nodes) -> fx.Node:
    """The ``(N, C, h, w)`` trunk map the head-start ``nodes`` read: for each, the nearest NCHW
    trunk map behind it (through trunk ops on other layouts, e.g. a channels-last map); if they
    read several, the nearest map all of them are computed from (the head then includes the
    trunk ops between, evaluated per window on the general path)."""
    order = {n: i for i, n in enumerate(next(iter(head.axes)).graph.nodes)}
    found = {_nearest_map(head, _trunk_input(head, n)) for n in nodes}
    while len(found) > 1:
        last = max(found, key=order.__getitem__)
        found.remove(last)
        found.add(_nearest_map(head, _trunk_input(head, last)))
    return found.pop()


def _trunk_input(head: Head, node: fx.Node) -> fx.Node:
    found = next((a for a in node.all_input_nodes if head.axes.get(a, GLOBAL) != GLOBAL), None)
    if found is None:
        raise ConversionError(f"{node.name} reads no feature map of the trunk; densify converts "
                              "CNN classifiers whose head reads one (N, C, h, w) map")
    return found


def _nearest_map(head: Head, node: fx.Node) -> fx.Node:
    while not (head.axes.get(node) == NCHW and len(shape_of(node) or ()) == 4):
        node = _trunk_input(head, node)
    return node


