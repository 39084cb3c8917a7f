"""The fast path: a head rewritten from vectors to maps, op by op (exact, and as fast as the
convolutions it becomes).

A flatten of a ``C × k × k`` map becomes the identity and the linear layer after it a ``k × k``
convolution, its weights reshaped in the order the flatten read the map (channel-major, then
rows, then columns for ``(N, C, h, w)``; a TF/Keras/Caffe2 port that permutes to ``(h, w, C)``
first is folded into the same reshape, and the permute leaves the graph). Later linear layers
become ``1 × 1`` convolutions: ``nn.Linear``, ``F.linear``, ``matmul``/``mm``/``@``/``addmm``/``einsum``
with a constant (parameter) operand. A global pool becomes a stride-1 ``k × k`` pool; norms,
per-channel modules (``PReLU``, ``BatchNorm1d``, ``LayerNorm`` over features), every activation,
softmax/log-softmax/sigmoid act per cell; constant vectors added or multiplied in the head are
broadcast over cells.

Any op it does not know raises :class:`UnsupportedHead`, and :func:`densify.convert.convolutionize`
takes the general path (:mod:`densify.convert.general`) instead.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from .axes import MATMULS, NCHW
from .graph import (
    ADAPTIVE,
    DROPS,
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
    RESHAPES,
    SOFTMAX_FUNCTIONS,
    bypass,
    device_of,
    dtype_of,
    pair,
    replace_with_module,
    set_module,
    shape_of,
)
from .head import GLOBAL, Head
from .layers import ChannelLayerNorm
from .outputs import is_namedtuple_node

__all__ = ["UnsupportedHead", "Layout", "rewrite_trunk_adaptive_pools", "rewrite_head"]


class UnsupportedHead(ConversionError):
    """The fast path does not know a head op (the general path takes over)."""


class Layout(NamedTuple):
    """What a head tensor holds per cell: ``c`` channels over a ``kh × kw`` window, flattened in
    ``order`` (NCHW axes, slowest first: ``(1, 2, 3)`` = channel-major)."""

    c: int
    kh: int
    kw: int
    order: tuple[int, int, int] = (1, 2, 3)


def rewrite_trunk_adaptive_pools(gm: fx.GraphModule, head: Head) -> None:
    """Adaptive pools of the trunk (:func:`find_head` left only uniform ones there): the identity
    at the canonical size, or an exact uniform pool."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or head.axes.get(node, GLOBAL) == GLOBAL or (
                node in head.context):
            continue
        m = gm.get_submodule(node.target)
        if not isinstance(m, ADAPTIVE):
            continue
        src, out = shape_of(node.args[0]), shape_of(node)
        if src[-2:] == out[-2:]:
            bypass(gm, node)
            continue
        k = (src[-2] // out[-2], src[-1] // out[-1])
        pool = nn.AvgPool2d(k, k) if isinstance(m, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
        head.axes[replace_with_module(gm, node, pool, node.args[:1])] = NCHW


def rewrite_head(gm: fx.GraphModule, head: Head) -> str | None:
    """Global pools → stride-1 k×k pools; flattens → identity; vector ops → map ops.

    Returns the name of the trunk's last feature map (the head's input), or ``None`` for a net
    that was already fully convolutional. Raises :class:`UnsupportedHead` at the first op it
    cannot rewrite.
    """
    if head.others:
        raise UnsupportedHead(f"head starts at {head.others[0].format_node()}")
    layout: dict[fx.Node, Layout] = {}
    features = set()
    for node in list(gm.graph.nodes):
        if node in head.pools:
            features.add(node.args[0].name)
            _rewrite_pool(gm, node, head.pools[node], layout)
        elif node in head.flattens:
            features.add(_rewrite_flatten(gm, node, head, layout).name)
        else:
            ins = [a for a in node.all_input_nodes if a in layout]
            if ins and node.op != "output" and not is_namedtuple_node(node):
                _rewrite_vector_op(gm, node, layout, layout[ins[0]])
    if len(features) > 1:
        raise UnsupportedHead(f"the head reads several feature maps ({sorted(features)})")
    return features.pop() if features else None


def _rewrite_pool(gm, node: fx.Node, kind: str, layout: dict) -> None:
    src = shape_of(node.args[0])
    k = (src[2], src[3])
    pool = nn.AvgPool2d(k, stride=1) if kind == "avg" else nn.MaxPool2d(k, 1)
    new = replace_with_module(gm, node, pool, node.args[:1])
    layout[new] = Layout(src[1], 1, 1)


def _rewrite_flatten(gm, node: fx.Node, head: Head, layout: dict) -> fx.Node:
    """A flatten becomes the identity on the NCHW map it reads (a permute before it folded into
    the layout); returns that map."""
    order, arg = head.flattens[node], node.args[0]
    source = arg
    while head.axes.get(source) != NCHW or len(shape_of(source)) != 4:
        if not _is_layout_only(source):
            raise UnsupportedHead(f"{node.name} flattens a map that is not (N, C, h, w)")
        source = source.args[0]
    c, h, w = shape_of(source)[1:]
    node.replace_all_uses_with(source)
    gm.graph.erase_node(node)
    layout[source] = Layout(c, h, w, order)
    return source


def _is_layout_only(node: fx.Node) -> bool:
    """A permute/transpose/contiguous: moves axes, computes nothing."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return node.op in ("call_method", "call_function") and name in (
        "permute", "transpose", "contiguous", "swapaxes")


def _rewrite_vector_op(gm, node: fx.Node, layout: dict, lay: Layout) -> None:
    """Rewrite one op that consumed flattened/pooled vectors so it consumes maps instead."""
    shape = shape_of(node)
    if node.op == "call_function" and node.target is torch.cat:
        return _rewrite_cat(node, layout)
    if lay[1:3] == (1, 1) and _is_vector_reshape(node, lay):
        layout[node.args[0]] = lay  # (N, C) <-> (N, C, 1, 1): the map stays (N, C, h, w)
        return bypass(gm, node)
    if shape is not None and len(shape) == 4 and lay[1:3] == (1, 1):
        return _rewrite_pooled_map_op(gm, node, layout, lay)
    if node.op == "call_module":
        return _rewrite_vector_module(gm, node, layout, lay)
    if node.op == "call_function" and node.target in MATMULS:
        return _rewrite_matmul(gm, node, layout, lay)
    if node.op == "call_function":
        return _rewrite_vector_function(node, layout, lay)
    if node.op == "call_method":
        if node.target in ("softmax", "log_softmax"):
            return _set_channel_dim(node, layout, lay)
        if node.target in POINTWISE_METHODS or node.target == "size":
            return _pointwise(node, layout, lay)
    raise UnsupportedHead(f"head op {node.format_node()}")


def _is_vector_reshape(node: fx.Node, lay: Layout) -> bool:
    """A flatten/view/reshape/squeeze/unsqueeze of per-cell vectors that keeps the batch first
    and the ``lay.c`` features second, every other axis of size 1: ``(N, C)``, ``(N, C, 1, 1)``."""
    shape = shape_of(node)
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    is_reshape = (node.op in ("call_method", "call_function") and name in RESHAPES | {
        "unsqueeze"}) or (node.op == "call_module" and type(
            node.graph.owning_module.get_submodule(node.target)) in (nn.Flatten, nn.Unflatten))
    return is_reshape and shape is not None and len(shape) >= 2 and shape[1] == lay.c and all(
        v == 1 for v in shape[2:])


def _rewrite_pooled_map_op(gm, node: fx.Node, layout: dict, lay: Layout) -> None:
    """An op on the pooled ``(N, C, 1, 1)`` map (MobileNetV3's ``conv_head``): exact on every
    cell of the dense map if it is per cell: a ``1 × 1`` stride-1 unpadded convolution, a
    per-channel or point-wise op (then the channel count follows its result)."""
    c = shape_of(node)[1]
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            if not (pair(m.kernel_size) == (1, 1) and pair(m.stride) == (1, 1) and m.padding in (
                    0, (0, 0), "valid", "same")):
                raise UnsupportedHead(f"head layer {node.target} ({m}) on the pooled map")
        elif not (isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.PReLU) + DROPS)
                  or is_activation(m) or _channel_norm(m, lay.c)):
            raise UnsupportedHead(f"head layer {node.target} ({type(m).__name__}) on the pooled "
                                  "map")
    elif not (node.target in POINTWISE_FUNCTIONS or node.target in POINTWISE_METHODS
              or node.target in SOFTMAX_FUNCTIONS and _arg_dim(node) in (1, -3)
              or node.target in ("softmax", "log_softmax") and _arg_dim(node) in (1, -3)):
        raise UnsupportedHead(f"head op {node.format_node()} on the pooled map")
    if any(shape_of(a) is not None and len(shape_of(a)) == 4 and shape_of(a)[2:] != (1, 1)
           for a in node.all_input_nodes):
        raise UnsupportedHead(f"head op {node.format_node()} mixes the pooled map with a map")
    layout[node] = Layout(c, 1, 1)


def _channel_norm(m: nn.Module, c: int) -> bool:
    """A LayerNorm subclass over the ``c`` channels of an NCHW map (timm's ``LayerNorm2d``):
    a plain ``nn.LayerNorm((c,))`` would normalise the last axis, of size 1 here."""
    return isinstance(m, nn.LayerNorm) and type(m) is not nn.LayerNorm and tuple(
        m.normalized_shape) == (c,) and c > 1


def _arg_dim(node: fx.Node):
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")


def _rewrite_vector_function(node: fx.Node, layout: dict, lay: Layout) -> None:
    if node.target in SOFTMAX_FUNCTIONS:
        return _set_channel_dim(node, layout, lay)
    if node.target is torch.cat:
        return _rewrite_cat(node, layout)
    if node.target in POINTWISE_FUNCTIONS or node.target is getattr or (
            node.target is operator.getitem and shape_of(node) is None and node.args[1] in (0, 1)):
        return _pointwise(node, layout, lay)  # getattr/getitem: ``x.shape[0]``, the batch
    raise UnsupportedHead(f"head op {node.format_node()}")


def _pointwise(node: fx.Node, layout: dict, lay: Layout) -> None:
    """Element-wise op: exact per cell once its constant vector operands (a bias ``(K,)``) are
    given two trailing unit axes to broadcast over cells. Before the first linear layer (a
    ``k × k`` window per vector) only operands without per-feature values are exact."""
    graph = node.graph
    for arg in node.all_input_nodes:
        shape = shape_of(arg)
        if arg in layout or shape is None or len(shape) == 0 or (len(shape) == 1 and shape[0] == 1):
            continue
        if lay[1:3] != (1, 1) or len(shape) > 2:
            raise UnsupportedHead(f"{node.name}: per-feature operand {arg.name} on a k×k window")
        with graph.inserting_before(node):
            wide = graph.call_method("reshape", (arg, (*shape, 1, 1)))
        node.replace_input_with(arg, wide)
    layout[node] = lay


def _rewrite_matmul(gm, node: fx.Node, layout: dict, lay: Layout) -> None:
    """``F.linear``/``matmul``/``mm``/``@``/``addmm``/``einsum`` of head vectors with constant
    operands: a convolution with the same weights."""
    x = next(a for a in node.all_input_nodes if a in layout)
    weight, bias = affine_weights(gm, node, x, lay[0] * lay[1] * lay[2])
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    new = replace_with_module(gm, node, _linear_to_conv(lin, lay, node.name), [x])
    layout[new] = Layout(weight.shape[0], 1, 1)


def affine_weights(gm, node: fx.Node, x: fx.Node, features: int):
    """``(weight (K, F), bias (K,) | None)`` of a matmul-like op that is linear in ``x`` (vectors
    of ``features``), every other operand a constant; checked on random vectors."""
    def value(a, probe):
        return probe if a is x else constant(gm, a)

    if node.target is F.linear and node.args[0] is x:
        args = [constant(gm, a) for a in node.args[1:]]
        weight, bias = args[0], (args[1] if len(args) > 1 else constant(gm, node.kwargs.get("bias")))
    elif node.target is torch.addmm and node.args[1] is x and not node.kwargs:
        bias, weight = constant(gm, node.args[0]), constant(gm, node.args[2]).T
    elif node.target in (operator.matmul, torch.matmul, torch.mm, torch.einsum):
        const = next(constant(gm, a) for a in node.all_input_nodes if a is not x)
        eye = torch.eye(features, dtype=const.dtype, device=const.device)
        weight, bias = _call(node, lambda a: value(a, eye)).T, None  # rows: each unit vector
    else:
        raise UnsupportedHead(f"head op {node.format_node()}")
    probe = torch.randn(2, features, dtype=weight.dtype, device=weight.device)
    got = _call(node, lambda a: value(a, probe))
    want = probe @ weight.T + (0 if bias is None else bias)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise UnsupportedHead(f"head op {node.format_node()} is not linear in its input vectors")
    return weight.contiguous(), bias


def _call(node: fx.Node, value) -> torch.Tensor:
    with torch.no_grad():
        return node.target(*fx.node.map_arg(node.args, value),
                           **fx.node.map_arg(node.kwargs, value))


def constant(gm, node):
    """The value of a node computed from parameters/buffers only (``W.t()``, ``W.T``)."""
    if not isinstance(node, fx.Node):
        return node
    if node.op == "get_attr":
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj.detach() if isinstance(obj, torch.Tensor) else obj
    if node.op in ("call_function", "call_method"):
        args = fx.node.map_arg(node.args, lambda a: constant(gm, a))
        kwargs = fx.node.map_arg(node.kwargs, lambda a: constant(gm, a))
        with torch.no_grad():
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)
    raise UnsupportedHead(f"{node.name} is not a constant operand")


def _rewrite_vector_module(gm, node: fx.Node, layout: dict, lay: Layout) -> None:
    m = gm.get_submodule(node.target)
    c, kh, kw, _ = lay
    window = (kh, kw) == (1, 1)
    if isinstance(m, nn.Linear):
        set_module(gm, node.target, _linear_to_conv(m, lay, node.target))
        layout[node] = Layout(m.out_features, 1, 1)
    elif isinstance(m, DROPS) or type(m) is nn.Flatten:
        if type(m) is nn.Flatten:
            layout[node.args[0]] = lay
        bypass(gm, node)
    elif is_activation(m) or (isinstance(m, nn.PReLU) and (m.num_parameters == 1 or (
            window and m.num_parameters == c))):
        layout[node] = lay
    elif isinstance(m, (nn.Softmax, nn.LogSoftmax)) and m.dim in (1, -1, None):
        set_module(gm, node.target, type(m)(dim=1))
        layout[node] = lay
    elif isinstance(m, nn.BatchNorm1d) and window:
        set_module(gm, node.target, _batchnorm1d_to_2d(m))
        layout[node] = lay
    elif isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (c,) and window:
        norm = ChannelLayerNorm(c, eps=m.eps, elementwise_affine=m.elementwise_affine,
                                bias=m.bias is not None, device=device_of(m), dtype=dtype_of(m))
        norm.load_state_dict(m.state_dict())
        set_module(gm, node.target, norm)
        layout[node] = lay
    else:
        raise UnsupportedHead(f"head layer {node.target} ({type(m).__name__}) on {c}×{kh}×{kw} "
                              "features")


def is_activation(m: nn.Module) -> bool:
    """An element-wise activation module without per-feature parameters."""
    if isinstance(m, POINTWISE_MODULES):
        return True
    return type(m).__module__ == "torch.nn.modules.activation" and not isinstance(
        m, (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.PReLU, nn.GLU,
            nn.MultiheadAttention))


def _linear_to_conv(lin: nn.Linear, lay: Layout, name: str) -> nn.Conv2d:
    """``Linear(C·kh·kw → K)`` as ``Conv2d(C → K, (kh, kw))``: the same weights (a view of them,
    sharing their storage), reshaped in the order the flatten read the window (``lay.order``),
    then indexed as ``(K, C, kh, kw)``."""
    c, kh, kw, order = lay
    if lin.in_features != c * kh * kw:  # an op between pool and Linear the layout missed
        raise UnsupportedHead(
            f"{name}: Linear expects {lin.in_features} features but the fast path tracked "
            f"{c}×{kh}×{kw} = {c * kh * kw} before it")
    conv = nn.Conv2d(c, lin.out_features, (kh, kw), bias=lin.bias is not None,
                     device="meta", dtype=dtype_of(lin))
    size = {1: c, 2: kh, 3: kw}
    # A view of the linear weight, no copy (a permuted flatten gives channels_last strides).
    weight = lin.weight.detach().reshape(lin.out_features, *(size[a] for a in order))
    weight = weight.permute(0, *(order.index(a) + 1 for a in (1, 2, 3)))
    conv.weight = nn.Parameter(weight, requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        conv.bias = nn.Parameter(lin.bias.detach(), requires_grad=lin.bias.requires_grad)
    return conv.train(lin.training)


def _batchnorm1d_to_2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats, device=device_of(bn), dtype=dtype_of(bn))
    out.load_state_dict(bn.state_dict())
    return out.eval()


def _set_channel_dim(node: fx.Node, layout: dict, lay) -> None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dim not in (1, -1) or lay[1:3] != (1, 1):
        raise UnsupportedHead(f"{node.name}: softmax over dim {dim} of head vectors")
    if len(node.args) > 1:
        node.args = (node.args[0], 1) + tuple(node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "dim": 1}
    layout[node] = lay


def _rewrite_cat(node: fx.Node, layout: dict) -> None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    lays = [layout.get(a) for a in node.args[0]]
    if dim not in (1, -1) or any(lay is None or lay[1:3] != (1, 1) for lay in lays):
        raise UnsupportedHead(f"{node.name}: concatenation of head vectors along dim {dim}")
    node.args = (node.args[0], 1)
    node.kwargs = {}
    layout[node] = Layout(sum(lay[0] for lay in lays), 1, 1)
