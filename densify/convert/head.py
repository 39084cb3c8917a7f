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
are the spatial ones (``(2, 3)`` for ``(N, C, h, w)``; ``(1, 2)`` after ``permute(0, 2, 3, 1)``;
:mod:`densify.convert.axes`), and classifies each head start (:class:`Head`):

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

from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn

from ..errors import ConversionError
from .axes import NCHW, flatten_order, trunk_axes
from .context import broadcasts, describe, flows_back, statistic
from .graph import global_pool_kind, output_node, shape_of

__all__ = ["Head", "find_head", "feature_map", "GLOBAL"]

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


