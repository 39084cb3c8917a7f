"""Where the head starts, and its rewrite from vectors to maps.

The rule (one place): the **trunk** is everything that commutes with sliding the window
(convolutions, pools, point-wise and per-channel ops, residual adds, concatenation of maps). The
**head** starts at the first op on the way to an output that is not such an op on an
``(N, C, h, w)`` map: a flatten/view/reshape to vectors, or a global pool over ``h, w``
(:func:`find_head`). A global pool that feeds back into a full-size map (squeeze-and-excitation)
is *context*, not head: it stays global.

:func:`rewrite_head` turns every op after that point into its map equivalent: a flatten of a
``C × k × k`` map becomes the identity and the Linear after it a ``k × k`` convolution (weights
reshaped: flatten order is channel-major, then rows, then columns, which is ``Conv2d``'s weight
layout); later Linears become ``1 × 1`` convolutions; a global pool becomes a stride-1 ``k × k``
pool; norms, softmax and activations act per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConversionError
from .graph import (
    ADAPTIVE,
    DROPS,
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
    RESHAPES,
    SOFTMAX_FUNCTIONS,
    bypass,
    descendants,
    device_of,
    dtype_of,
    global_pool_kind,
    is_flatten,
    output_node,
    replace_with_module,
    set_module,
    shape_of,
)
from .layers import ChannelLayerNorm
from .outputs import is_namedtuple_node

__all__ = ["Head", "find_head", "rewrite_trunk_adaptive_pools", "rewrite_head"]

@dataclass(frozen=True)
class Head:
    """What the analysis found: how each collapse node is rewritten."""

    pools: dict  # node -> "avg" | "max": global pools that become stride-1 k×k pools
    flattens: set  # nodes that flatten an (N, C, h, w) map: become the identity
    context: set  # global pools that stay global (squeeze-and-excitation)


def _is_context(node: fx.Node) -> bool:
    """A global pool whose result is combined with a full-size map (squeeze-and-excitation)."""
    below = descendants(node)
    for d in below:
        for other in d.all_input_nodes:
            shape = shape_of(other)
            if other is not node and other not in below and shape is not None and len(
                    shape) == 4 and shape[2] * shape[3] > 1:
                return True
    return False


def find_head(gm: fx.GraphModule) -> Head:
    pools, flattens, context = {}, set(), set()
    for node in gm.graph.nodes:
        kind = global_pool_kind(gm, node)
        if kind is not None:
            (context.add(node) if _is_context(node) else pools.__setitem__(node, kind))
        elif is_flatten(node):
            flattens.add(node)
    if not pools and not flattens:
        out = shape_of(output_node(gm).args[0])
        if out is not None and len(out) == 4:
            return Head(pools, flattens, context)  # already fully convolutional
        raise ConversionError(
            "found no flatten or global pooling between the trunk and the classifier; densify "
            "converts CNN classifiers whose head acts on a pooled or flattened feature map")
    return Head(pools, flattens, context)


def rewrite_trunk_adaptive_pools(gm: fx.GraphModule, head: Head) -> None:
    """Adaptive pools that are not global: identity at the canonical size, or an exact uniform
    pool; anything else cannot be made size-independent."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node in head.pools or node in head.context:
            continue
        m = gm.get_submodule(node.target)
        if not isinstance(m, ADAPTIVE):
            continue
        src, out = shape_of(node.args[0]), shape_of(node)
        if src[-2:] == out[-2:]:
            bypass(gm, node)
            continue
        if src[-2] % out[-2] or src[-1] % out[-1]:
            raise ConversionError(
                f"{node.target}: adaptive pooling from {src[-2:]} to {out[-2:]} at this input size "
                "is not a fixed sliding window; pass the classifier's canonical input_size")
        k = (src[-2] // out[-2], src[-1] // out[-1])
        pool = nn.AvgPool2d(k, k) if isinstance(m, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
        replace_with_module(gm, node, pool, node.args[:1])


def rewrite_head(gm: fx.GraphModule, head: Head) -> str | None:
    """Global pools → stride-1 k×k pools; flattens → identity; vector ops → map ops.

    Returns the name of the trunk's last feature map (the head's input), or ``None`` for a net
    that was already fully convolutional.
    """
    layout: dict[fx.Node, tuple[int, int, int]] = {}
    features = []
    for node in list(gm.graph.nodes):
        if node in head.pools:
            features.append(node.args[0])
            src = shape_of(node.args[0])
            k = (src[2], src[3])
            pool = nn.AvgPool2d(k, stride=1) if head.pools[node] == "avg" else nn.MaxPool2d(k, 1)
            new = replace_with_module(gm, node, pool, node.args[:1])
            layout[new] = (src[1], 1, 1)
        elif node in head.flattens:
            src = shape_of(node.args[0])
            prior = layout.get(node.args[0])
            # Flattening the (C, 1, 1) result of a head pool keeps that pool's layout.
            layout_here = prior if prior is not None else (src[1], src[2], src[3])
            arg = node.args[0]
            if prior is None:
                features.append(arg)
            bypass(gm, node)
            layout[arg] = layout_here
        else:
            ins = [a for a in node.all_input_nodes if a in layout]
            if ins and node.op != "output" and not is_namedtuple_node(node):
                _rewrite_vector_op(gm, node, layout, layout[ins[0]])
    names = {f.name for f in features}
    if len(names) > 1:
        raise ConversionError(f"the head reads several feature maps ({sorted(names)}); densify "
                              "converts heads that read one trunk output")
    return names.pop() if names else None


def _rewrite_vector_op(gm, node: fx.Node, layout: dict, lay: tuple[int, int, int]) -> None:
    """Rewrite one op that consumed flattened/pooled vectors so it consumes maps instead."""
    shape = shape_of(node)
    if shape is not None and len(shape) == 4:  # e.g. LayerNorm2d on the pooled (N, C, 1, 1) map
        layout[node] = lay
        return
    if node.op == "call_module":
        return _rewrite_vector_module(gm, node, layout, lay)
    if node.op == "call_function":
        if node.target is torch.flatten:
            layout[node.args[0]] = lay
            return bypass(gm, node)
        if node.target in SOFTMAX_FUNCTIONS:
            return _set_channel_dim(node, layout, lay)
        if node.target is torch.cat:
            return _rewrite_cat(node, layout)
        if node.target in POINTWISE_FUNCTIONS or node.target is getattr:
            layout[node] = lay
            return None
    if node.op == "call_method":
        if node.target in RESHAPES and shape is not None and len(shape) == 2:
            layout[node.args[0]] = lay
            return bypass(gm, node)
        if node.target in ("softmax", "log_softmax"):
            return _set_channel_dim(node, layout, lay)
        if node.target in POINTWISE_METHODS or node.target == "size":
            layout[node] = lay
            return None
    raise ConversionError(
        f"cannot convolutionize head op {node.format_node()}: densify maps linear layers, norms, "
        "dropout, softmax and point-wise activations; rewrite the head with these")


def _rewrite_vector_module(gm, node: fx.Node, layout: dict, lay) -> None:
    m = gm.get_submodule(node.target)
    c, kh, kw = lay
    if isinstance(m, nn.Linear):
        set_module(gm, node.target, _linear_to_conv(m, lay, node.target))
        layout[node] = (m.out_features, 1, 1)
    elif isinstance(m, DROPS) or type(m) is nn.Flatten:
        if type(m) is nn.Flatten:
            layout[node.args[0]] = lay
        bypass(gm, node)
    elif isinstance(m, POINTWISE_MODULES):
        layout[node] = lay
    elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        m.dim = 1
        layout[node] = lay
    elif isinstance(m, nn.BatchNorm1d) and (kh, kw) == (1, 1):
        set_module(gm, node.target, _batchnorm1d_to_2d(m))
        layout[node] = lay
    elif isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (c,) and (kh, kw) == (1, 1):
        norm = ChannelLayerNorm(c, eps=m.eps, elementwise_affine=m.elementwise_affine,
                                bias=m.bias is not None, device=device_of(m), dtype=dtype_of(m))
        norm.load_state_dict(m.state_dict())
        set_module(gm, node.target, norm)
        layout[node] = lay
    else:
        raise ConversionError(
            f"cannot convolutionize head layer {node.target} ({type(m).__name__}) on "
            f"{c}×{kh}×{kw} features; supported: Linear, BatchNorm1d/LayerNorm after global "
            "pooling, dropout, activations")


def _linear_to_conv(lin: nn.Linear, lay: tuple[int, int, int], name: str) -> nn.Conv2d:
    """``Linear(C·kh·kw → K)`` as ``Conv2d(C → K, (kh, kw))``: same weights, reshaped."""
    c, kh, kw = lay
    if lin.in_features != c * kh * kw:
        raise ConversionError(
            f"{name}: Linear expects {lin.in_features} features but the map before it flattens "
            f"to {c}×{kh}×{kw} = {c * kh * kw}; pass the classifier's canonical input_size")
    conv = nn.Conv2d(c, lin.out_features, (kh, kw), bias=lin.bias is not None,
                     device=device_of(lin), dtype=dtype_of(lin))
    with torch.no_grad():
        # Flatten order is channel-major, then rows, then columns: exactly Conv2d's weight layout.
        conv.weight.copy_(lin.weight.reshape(lin.out_features, c, kh, kw))
        if lin.bias is not None:
            conv.bias.copy_(lin.bias)
    assert conv.weight.shape == (lin.out_features, c, kh, kw)
    return conv


def _batchnorm1d_to_2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats, device=device_of(bn), dtype=dtype_of(bn))
    out.load_state_dict(bn.state_dict())
    return out.eval()


def _set_channel_dim(node: fx.Node, layout: dict, lay) -> None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dim not in (1, -1):
        raise ConversionError(f"{node.name}: softmax over dim {dim} of class vectors; use dim=1")
    if len(node.args) > 1:
        node.args = (node.args[0], 1) + tuple(node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "dim": 1}
    layout[node] = lay


def _rewrite_cat(node: fx.Node, layout: dict) -> None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    lays = [layout.get(a) for a in node.args[0]]
    if dim not in (1, -1) or any(lay is None or lay[1:] != (1, 1) for lay in lays):
        raise ConversionError(f"{node.name}: concatenation of class vectors along dim {dim}")
    node.args = (node.args[0], 1)
    node.kwargs = {}
    layout[node] = (sum(lay[0] for lay in lays), 1, 1)
