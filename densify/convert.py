"""Convolutionization: turn a classifier into a fully convolutional dense net.

``convolutionize(model)`` traces the classifier with ``torch.fx``, finds where its trunk's
``(N, C, h, w)`` feature map is collapsed into vectors (a flatten, or a global pooling layer), and
rewrites everything after that point to act on maps instead:

- the first fully connected layer after a flatten of a ``C × k × k`` map becomes a ``k × k``
  convolution (weights reshaped, every shape checked); later ones become ``1 × 1`` convolutions;
- a global average (max) pool becomes a stride-1 ``k × k`` average (max) pool, ``k`` being the
  trunk's feature size at the canonical input: the pool runs first and the ``1 × 1`` convolution
  after it, the classifier's own order, which keeps norms and activations between them exact
  (ConvNeXt, MobileNetV3) and costs ``C·k² + C·K`` per cell against ``C·K + K·k²`` the other way
  round (a 2 % difference for ResNet-50, in favour of pooling first whenever ``C ≤ K``);
- dropout goes; batch/layer norms over pooled features become per-cell norms;
- an ``AdaptiveAvgPool2d`` never stays in the dense path: at the canonical size it is the identity
  (AlexNet's 6 × 6, VGG's 7 × 7) and is dropped, or an exact uniform pool.

Global pooling *inside* the trunk (squeeze-and-excitation gates in EfficientNet, MobileNetV3,
RegNetY, SE-ResNet) is kept global: on a large input those gates see the whole image, so such a
dense net equals the classifier exactly at the canonical input and in its head, but not window by
window. ``DenseNet.global_context`` lists those layers and a warning is logged.

``output_stride`` applies OverFeat's stride-1 final pooling: the last strided layer(s) get stride 1
and every later sliding-window layer is dilated by the old stride (convolutions and max pools
natively, average pools through :class:`densify.layers.DilatedAvgPool2d`). Repeating the step
reaches 8 and below.
"""

from __future__ import annotations

import copy
import logging
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .geometry import Field, Geometry, compose, merge
from .layers import ChannelLayerNorm, DilatedAvgPool2d, DilatedMaxPool2d

__all__ = ["ConversionError", "DenseNet", "convolutionize", "available_strides"]

log = logging.getLogger(__name__)


class ConversionError(ValueError):
    """The model cannot be convolutionized; the message names the layer and what to do."""


_SLIDING = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, DilatedAvgPool2d, DilatedMaxPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_LEAVES = _SLIDING + _ADAPTIVE + (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
_DROPS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_POINTWISE_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, operator.truediv, operator.neg,
    torch.add, torch.mul, torch.sub, torch.div, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.sigmoid,
    F.tanh, F.elu, F.leaky_relu, F.softplus,
}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "mul", "sub", "div", "clamp", "float",
                      "to", "type_as", "contiguous"}
_SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_RESHAPES = {"flatten", "view", "reshape", "squeeze"}


class _Tracer(fx.Tracer):
    """Keeps every convolution, pooling, linear and norm layer a leaf, subclasses included, so
    their attributes (stride, dilation) can be edited after tracing."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES + _POINTWISE_MODULES + _DROPS) or super().is_leaf_module(
            m, qualname)


@dataclass(frozen=True)
class _Head:
    """What the analysis found: how each collapse node is rewritten."""

    pools: dict  # node -> "avg" | "max": global pools that become stride-1 k×k pools
    flattens: set  # nodes that flatten an (N, C, h, w) map: become the identity
    context: set  # global pools that stay global (squeeze-and-excitation)


class DenseNet(nn.Module):
    """A convolutionized classifier: ``(N, C, H, W) -> (N, num_classes, h, w)`` logits.

    At the canonical input ``h = w = 1``; cell ``(i, j)`` on a larger input is the classifier's
    answer for the window described by :attr:`geometry`.

    Attributes:
        net: the rewritten ``torch.fx.GraphModule``.
        geometry: window, stride and receptive field (:class:`densify.geometry.Geometry`).
        input_size: canonical ``(C, H, W)``.
        output_stride: pixels between cells.
        global_context: names of layers that pool the whole input (SE gates); empty for nets whose
            every cell is a pure function of its receptive field.
        feature_node: name of the trunk's last feature map in :attr:`net`'s graph (and in the
            traced original), where the classifier head starts; used by :mod:`densify.verify`.
    """

    def __init__(self, net: fx.GraphModule, geometry: Geometry, input_size: tuple[int, int, int],
                 global_context: tuple[str, ...] = (), feature_node: str | None = None):
        super().__init__()
        self.net = net
        self.geometry = geometry
        self.input_size = tuple(input_size)
        self.output_stride = geometry.stride[0]
        self.global_context = tuple(global_context)
        self.feature_node = feature_node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Exact cells ``(h, w)`` this net produces on a ``height × width`` input (computed on
        fake tensors: no arithmetic). :meth:`Geometry.output_size` gives the cells whose windows
        fit entirely; a net whose canonical size has slack (AlexNet: 224 where 195 would do) can
        produce one more cell whose window overhangs the bottom/right border by less than that
        slack."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        param = next(self.parameters())
        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(1, self.input_size[0], height, width, dtype=param.dtype,
                            device=param.device)
            out = self.net(x)
        return int(out.shape[-2]), int(out.shape[-1])

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"window={g.window}, stride={g.stride}, receptive_field={g.rf_size}, "
                f"global_context={len(self.global_context)}")


# ----------------------------------------------------------------------------- public entry points


def convolutionize(model: nn.Module, input_size=None, output_stride: int | None = None
                   ) -> DenseNet:
    """Return a fully convolutional copy of ``model`` in eval mode; ``model`` is left untouched.

    Args:
        model: a CNN classifier mapping ``(N, C, H, W)`` at its canonical size to ``(N, K)``.
        input_size: canonical input: ``H``, ``(H, W)`` or ``(C, H, W)``. Taken from
            ``model.pretrained_cfg`` (timm) when omitted; otherwise required.
        output_stride: pixels between output cells; ``None`` keeps the classifier's own stride
            (32 for ImageNet CNNs). Halving it applies stride-1 final pooling (OverFeat).

    Returns:
        :class:`DenseNet` producing ``(N, K, h, w)`` logits.
    """
    size = _canonical_size(model, input_size)
    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    example = _example_input(gm, size)
    _propagate_shapes(gm, example)
    if size[0] != example.shape[1]:
        size = (example.shape[1],) + size[1:]
    _functional_pools_to_modules(gm)
    _remove_dropout(gm)
    head = _find_head(gm)
    _rewrite_trunk_adaptive_pools(gm, head)
    feature_node = _rewrite_head(gm, head)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    _propagate_shapes(gm, example)  # fresh shapes for the dense graph; fails loudly if broken
    out = _shape(_output_node(gm).args[0])
    if out is None or len(out) != 4 or out[-2:] != (1, 1):
        raise ConversionError(f"the converted net gives {out} at the canonical input, not "
                              "(1, K, 1, 1); is input_size the classifier's canonical size?")
    if output_stride is not None:
        _set_output_stride(gm, int(output_stride))
    field = _walk_fields(gm)[_output_node(gm)]
    geometry = Geometry(window=size[1:], stride=field.stride, rf_size=field.size,
                        rf_offset=field.offset)
    context = tuple(str(n.target) for n in head.context)
    if context:
        log.warning("%d global-context layer(s) (e.g. %s) pool the whole input: dense output is "
                    "exact at the canonical input, approximate window by window",
                    len(context), context[0])
    return DenseNet(gm, geometry, size, context, feature_node).eval()


def available_strides(model: nn.Module, input_size=None, limit: int | None = None) -> list[int]:
    """Output strides ``convolutionize`` can reach for ``model``, largest first, down to ``limit``
    (default: a quarter of the native stride, i.e. two halvings)."""
    gm = model.net if isinstance(model, DenseNet) else convolutionize(model, input_size).net
    fields = _walk_fields(gm)
    # De-striding the level that produces stride S leaves the stride of that level's input.
    inputs = {fields[a].stride[0] for n in gm.graph.nodes if _stride_of(gm, n) > 1
              for a in n.all_input_nodes}
    top = fields[_output_node(gm)].stride[0]
    limit = max(1, top // 4) if limit is None else limit
    return [top] + sorted((s for s in inputs if limit <= s < top), reverse=True)


# ----------------------------------------------------------------------------------- preparation


def _canonical_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        input_size = cfg.get("input_size")
    if input_size is None:
        raise ConversionError(
            f"cannot tell the canonical input size of {type(model).__name__}: pass input_size=(H, W),"
            " the size the classifier was trained at (e.g. 224)")
    if isinstance(input_size, int):
        return (0, input_size, input_size)
    input_size = tuple(int(v) for v in input_size)
    return input_size if len(input_size) == 3 else (0,) + input_size


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many types; report one line
        raise ConversionError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); make its forward traceable") from exc
    return fx.GraphModule(model, graph, type(model).__name__)


def _example_input(gm: fx.GraphModule, size) -> torch.Tensor:
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    chans = size[0] or next((m.in_channels for m in gm.modules() if isinstance(m, nn.Conv2d)), 3)
    return torch.zeros(1, chans, size[1], size[2], dtype=dtype, device=device)


def _propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Annotate every node with ``meta['tensor_meta']`` at the canonical input."""
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        ShapeProp(gm, fake_mode=mode).propagate(mode.from_tensor(example))
    except Exception:  # fake tensors unsupported by some op: fall back to a real forward pass
        with torch.no_grad():
            ShapeProp(gm).propagate(example)


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _new_module_node(gm: fx.GraphModule, node: fx.Node, module: nn.Module, args) -> fx.Node:
    """Insert ``module`` called on ``args`` after ``node``, taking over its uses and shape meta."""
    target = f"densify_{node.name}"
    gm.add_submodule(target, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(target, tuple(args))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _remove_dropout(gm: fx.GraphModule) -> None:
    """Dropout (and ``nn.Identity``) is the identity in eval mode: take it out of the graph."""
    for node in list(gm.graph.nodes):
        if (node.op == "call_module" and isinstance(gm.get_submodule(node.target), _DROPS)) or (
                node.op == "call_function" and node.target in (F.dropout, F.dropout2d)):
            _bypass(gm, node)


def _bypass(gm: fx.GraphModule, node: fx.Node) -> None:
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def _functional_pools_to_modules(gm: fx.GraphModule) -> None:
    """``F.max_pool2d`` / ``F.avg_pool2d`` / ``F.adaptive_*`` calls become modules, so that one
    code path edits strides and dilations."""
    makers = {
        F.max_pool2d: (nn.MaxPool2d, ["kernel_size", "stride", "padding", "dilation", "ceil_mode"]),
        F.avg_pool2d: (nn.AvgPool2d, ["kernel_size", "stride", "padding", "ceil_mode",
                                      "count_include_pad"]),
        F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ["output_size"]),
        F.adaptive_max_pool2d: (nn.AdaptiveMaxPool2d, ["output_size"]),
        torch.max_pool2d: (nn.MaxPool2d, ["kernel_size", "stride", "padding", "dilation",
                                          "ceil_mode"]),
    }
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in makers:
            continue
        cls, names = makers[node.target]
        kwargs = dict(zip(names, node.args[1:], strict=False))
        kwargs.update({k: v for k, v in node.kwargs.items() if k in names})
        if cls in (nn.MaxPool2d, nn.AvgPool2d) and kwargs.get("stride") in (None, [], ()):
            kwargs["stride"] = kwargs["kernel_size"]
        _new_module_node(gm, node, cls(**kwargs), [node.args[0]])


# ---------------------------------------------------------------------------- finding the head


def _global_pool_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """``"avg"``/``"max"`` if ``node`` reduces an ``(N, C, h, w)`` map over all of ``h, w``."""
    src, out = _shape(node.args[0]) if node.args else None, _shape(node)
    if src is None or out is None or len(src) != 4:
        return None
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, _ADAPTIVE) and out[-2:] == (1, 1):
            return "avg" if isinstance(m, nn.AdaptiveAvgPool2d) else "max"
        return None
    if (node.op == "call_method" and node.target in ("mean", "amax")) or (
            node.op == "call_function" and node.target in (torch.mean, torch.amax)):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = {d % 4 for d in ((dims,) if isinstance(dims, int) else tuple(dims or ()))}
        if dims == {2, 3}:
            return "avg" if node.target in ("mean", torch.mean) else "max"
    return None


def _is_flatten(node: fx.Node) -> bool:
    """An op turning an ``(N, C, h, w)`` map into ``(N, C·h·w)`` vectors."""
    src, out = (_shape(node.args[0]) if node.args else None), _shape(node)
    if src is None or out is None or len(src) != 4 or len(out) != 2:
        return False
    if node.op == "call_function" and node.target is torch.flatten:
        return True
    if node.op == "call_method" and node.target in _RESHAPES:
        return True
    return node.op == "call_module" and type(node.graph.owning_module.get_submodule(
        node.target)) is nn.Flatten


def _descendants(node: fx.Node) -> set:
    seen, stack = set(), [node]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


def _is_context(node: fx.Node) -> bool:
    """A global pool whose result is combined with a full-size map (squeeze-and-excitation)."""
    below = _descendants(node)
    for d in below:
        for other in d.all_input_nodes:
            shape = _shape(other)
            if other is not node and other not in below and shape is not None and len(
                    shape) == 4 and shape[2] * shape[3] > 1:
                return True
    return False


def _find_head(gm: fx.GraphModule) -> _Head:
    pools, flattens, context = {}, set(), set()
    for node in gm.graph.nodes:
        kind = _global_pool_kind(gm, node)
        if kind is not None:
            (context.add(node) if _is_context(node) else pools.__setitem__(node, kind))
        elif _is_flatten(node):
            flattens.add(node)
    if not pools and not flattens:
        out = _shape(_output_node(gm).args[0])
        if out is not None and len(out) == 4:
            return _Head(pools, flattens, context)  # already fully convolutional
        raise ConversionError(
            "found no flatten or global pooling between the trunk and the classifier; densify "
            "converts CNN classifiers whose head acts on a pooled or flattened feature map")
    return _Head(pools, flattens, context)


def _output_node(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


# -------------------------------------------------------------------------------- rewriting


def _rewrite_trunk_adaptive_pools(gm: fx.GraphModule, head: _Head) -> None:
    """Adaptive pools that are not global: identity at the canonical size, or an exact uniform
    pool; anything else cannot be made size-independent."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node in head.pools or node in head.context:
            continue
        m = gm.get_submodule(node.target)
        if not isinstance(m, _ADAPTIVE):
            continue
        src, out = _shape(node.args[0]), _shape(node)
        if src[-2:] == out[-2:]:
            _bypass(gm, node)
            continue
        if src[-2] % out[-2] or src[-1] % out[-1]:
            raise ConversionError(
                f"{node.target}: adaptive pooling from {src[-2:]} to {out[-2:]} at this input size "
                "is not a fixed sliding window; pass the classifier's canonical input_size")
        k = (src[-2] // out[-2], src[-1] // out[-1])
        pool = nn.AvgPool2d(k, k) if isinstance(m, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
        _new_module_node(gm, node, pool, node.args[:1])


def _rewrite_head(gm: fx.GraphModule, head: _Head) -> str | None:
    """Global pools → stride-1 k×k pools; flattens → identity; vector ops → map ops.

    Returns the name of the trunk's last feature map (the head's input), or ``None`` for a net
    that was already fully convolutional.
    """
    layout: dict[fx.Node, tuple[int, int, int]] = {}
    features = []
    for node in list(gm.graph.nodes):
        if node in head.pools:
            features.append(node.args[0])
            src = _shape(node.args[0])
            k = (src[2], src[3])
            pool = nn.AvgPool2d(k, stride=1) if head.pools[node] == "avg" else nn.MaxPool2d(k, 1)
            new = _new_module_node(gm, node, pool, node.args[:1])
            layout[new] = (src[1], 1, 1)
        elif node in head.flattens:
            src = _shape(node.args[0])
            prior = layout.get(node.args[0])
            # Flattening the (C, 1, 1) result of a head pool keeps that pool's layout.
            layout_here = prior if prior is not None else (src[1], src[2], src[3])
            arg = node.args[0]
            if prior is None:
                features.append(arg)
            _bypass(gm, node)
            layout[arg] = layout_here
        else:
            ins = [a for a in node.all_input_nodes if a in layout]
            if ins and node.op != "output":
                _rewrite_vector_op(gm, node, layout, layout[ins[0]])
    names = {f.name for f in features}
    if len(names) > 1:
        raise ConversionError(f"the head reads several feature maps ({sorted(names)}); densify "
                              "converts heads that read one trunk output")
    return names.pop() if names else None


def _rewrite_vector_op(gm, node: fx.Node, layout: dict, lay: tuple[int, int, int]) -> None:
    """Rewrite one op that consumed flattened/pooled vectors so it consumes maps instead."""
    shape = _shape(node)
    if shape is not None and len(shape) == 4:  # e.g. LayerNorm2d on the pooled (N, C, 1, 1) map
        layout[node] = lay
        return
    if node.op == "call_module":
        return _rewrite_vector_module(gm, node, layout, lay)
    if node.op == "call_function":
        if node.target is torch.flatten:
            layout[node.args[0]] = lay
            return _bypass(gm, node)
        if node.target in _SOFTMAX_FUNCTIONS:
            return _set_channel_dim(node, layout, lay)
        if node.target is torch.cat:
            return _rewrite_cat(node, layout)
        if node.target in _POINTWISE_FUNCTIONS or node.target is getattr:
            layout[node] = lay
            return None
    if node.op == "call_method":
        if node.target in _RESHAPES and shape is not None and len(shape) == 2:
            layout[node.args[0]] = lay
            return _bypass(gm, node)
        if node.target in ("softmax", "log_softmax"):
            return _set_channel_dim(node, layout, lay)
        if node.target in _POINTWISE_METHODS or node.target == "size":
            layout[node] = lay
            return None
    raise ConversionError(
        f"cannot convolutionize head op {node.format_node()}: densify maps linear layers, norms, "
        "dropout, softmax and point-wise activations; rewrite the head with these")


def _rewrite_vector_module(gm, node: fx.Node, layout: dict, lay) -> None:
    m = gm.get_submodule(node.target)
    c, kh, kw = lay
    if isinstance(m, nn.Linear):
        _set_module(gm, node.target, _linear_to_conv(m, lay, node.target))
        layout[node] = (m.out_features, 1, 1)
    elif isinstance(m, _DROPS) or type(m) is nn.Flatten:
        if type(m) is nn.Flatten:
            layout[node.args[0]] = lay
        _bypass(gm, node)
    elif isinstance(m, _POINTWISE_MODULES):
        layout[node] = lay
    elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        m.dim = 1
        layout[node] = lay
    elif isinstance(m, nn.BatchNorm1d) and (kh, kw) == (1, 1):
        _set_module(gm, node.target, _batchnorm1d_to_2d(m))
        layout[node] = lay
    elif isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (c,) and (kh, kw) == (1, 1):
        norm = ChannelLayerNorm(c, eps=m.eps, elementwise_affine=m.elementwise_affine,
                                bias=m.bias is not None, device=_device(m), dtype=_dtype(m))
        norm.load_state_dict(m.state_dict())
        _set_module(gm, node.target, norm)
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
                     device=_device(lin), dtype=_dtype(lin))
    with torch.no_grad():
        # Flatten order is channel-major, then rows, then columns: exactly Conv2d's weight layout.
        conv.weight.copy_(lin.weight.reshape(lin.out_features, c, kh, kw))
        if lin.bias is not None:
            conv.bias.copy_(lin.bias)
    assert conv.weight.shape == (lin.out_features, c, kh, kw)
    return conv


def _batchnorm1d_to_2d(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats, device=_device(bn), dtype=_dtype(bn))
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


def _device(m: nn.Module):
    return next(m.parameters()).device if any(True for _ in m.parameters()) else None


def _dtype(m: nn.Module):
    return next(m.parameters()).dtype if any(True for _ in m.parameters()) else None


# ------------------------------------------------------------------------- geometry and strides


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window_params(m: nn.Module):
    """``(kernel, stride, padding, dilation)`` pairs of a sliding-window layer."""
    kernel, stride = _pair(m.kernel_size), _pair(m.stride)
    dilation = _pair(getattr(m, "dilation", 1))
    padding = m.padding
    if isinstance(padding, str):  # "same" / "valid"
        padding = (0, 0) if padding == "valid" else tuple(
            d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    return kernel, stride, _pair(padding), dilation


def _stride_of(gm: fx.GraphModule, node: fx.Node) -> int:
    if node.op != "call_module":
        return 1
    m = gm.get_submodule(node.target)
    return _pair(m.stride)[0] if isinstance(m, _SLIDING) else 1


def _walk_fields(gm: fx.GraphModule) -> dict:
    """:class:`Field` (stride, receptive field) of every node, from the layers' parameters."""
    fields: dict[fx.Node, Field] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            fields[node] = Field()
            continue
        ins = [fields[a] for a in node.all_input_nodes if a in fields]
        if not ins:
            continue
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, _SLIDING):
                fields[node] = compose(ins[0], *_window_params(m))
                continue
            if isinstance(m, _ADAPTIVE):  # kept global: sees everything
                fields[node] = Field(ins[0].stride, None, ins[0].offset)
                continue
        if _global_pool_kind(gm, node) is not None:
            fields[node] = Field(ins[0].stride, None, ins[0].offset)
            continue
        # Tensors of sizes (shape arithmetic) carry no spatial meaning: merge tensors only.
        tensors = [fields[a] for a in node.all_input_nodes if a in fields and _is_map(a)]
        fields[node] = merge(tensors) if tensors else ins[0]
    return fields


def _is_map(node: fx.Node) -> bool:
    shape = _shape(node)
    return shape is not None and len(shape) >= 4


def _set_output_stride(gm: fx.GraphModule, target: int) -> None:
    """De-stride the last strided level and dilate everything after it, until ``target``."""
    while True:
        fields = _walk_fields(gm)
        stride = fields[_output_node(gm)].stride[0]
        if stride == target:
            return
        level = [n for n in gm.graph.nodes if _stride_of(gm, n) > 1
                 and fields[n].stride[0] == stride]
        factors = {_pair(gm.get_submodule(n.target).stride) for n in level}
        if target > stride or not level or len(factors) != 1 or stride // next(iter(factors))[
                0] < target:
            raise ConversionError(
                f"output_stride {target} is not reachable from stride {stride}; choose a stride "
                "listed by 'densify models'")
        factor = next(iter(factors))
        for n in level:
            gm.get_submodule(n.target).stride = (1, 1)
        below = set().union(*(_descendants(n) for n in level))
        for n in gm.graph.nodes:
            if n in below and n.op == "call_module":
                _dilate(gm, n, factor)
        gm.recompile()


def _dilate(gm: fx.GraphModule, node: fx.Node, factor: tuple[int, int]) -> None:
    m = gm.get_submodule(node.target)
    if not isinstance(m, _SLIDING):
        return
    kernel, _, padding, dilation = _window_params(m)
    if kernel == (1, 1):
        return
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise ConversionError(f"{node.target}: {m.padding_mode} padding cannot be dilated exactly")
    new_dil = (dilation[0] * factor[0], dilation[1] * factor[1])
    new_pad = (padding[0] * factor[0], padding[1] * factor[1])
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode:
            raise ConversionError(f"{node.target}: ceil_mode average pooling cannot be dilated")
        _set_module(gm, node.target, DilatedAvgPool2d(kernel, new_dil, new_pad,
                                                      m.count_include_pad))
        return
    if isinstance(m, (nn.MaxPool2d, DilatedMaxPool2d)) and max(
            new_pad[a] - kernel[a] // 2 for a in (0, 1)) > 0:
        # nn.MaxPool2d caps padding at half the undilated kernel: pad with -inf explicitly.
        _set_module(gm, node.target, DilatedMaxPool2d(kernel, new_dil, new_pad, m.ceil_mode))
        return
    m.dilation = new_dil
    if not isinstance(m.padding, str):
        m.padding = new_pad


