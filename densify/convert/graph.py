"""The torch.fx toolkit every converter step uses: tracing, shapes, node classification, edits.

A classifier is traced with :class:`Tracer` (convolutions, pools, linear layers, norms and
activations stay leaf modules, so their attributes can be edited), annotated with shapes at its
canonical input by :func:`propagate_shapes` (fake tensors: no memory, no arithmetic), and edited
with :func:`replace_with_module`, :func:`bypass` and :func:`set_module`. The predicates
(:func:`global_pool_kind`, :func:`is_flatten`, ...) classify nodes for :mod:`densify.convert.head`.
:func:`prepare` and :func:`subgraph` give :mod:`densify.convert.verify` the same graph the
converter started from, and any part of it.
"""

from __future__ import annotations

import contextlib
import io
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConversionError
from .layers import DilatedAvgPool2d, DilatedMaxPool2d, WindowLayer

__all__ = [
    "SLIDING", "ADAPTIVE", "DROPS", "POINTWISE_MODULES", "POINTWISE_FUNCTIONS", "POINTWISE_METHODS",
    "SOFTMAX_FUNCTIONS", "RESHAPES", "Tracer", "trace", "example_input", "propagate_shapes",
    "shape_of", "output_node", "descendants", "set_module", "replace_with_module", "bypass",
    "remove_dropout", "functional_pools_to_modules", "global_pool_kind", "is_flatten", "is_map",
    "device_of", "dtype_of", "pair", "prepare", "subgraph", "unshare_modules",
]

SLIDING = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, DilatedAvgPool2d, DilatedMaxPool2d, WindowLayer)
ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
LEAVES = SLIDING + ADAPTIVE + (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
DROPS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
POINTWISE_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, operator.truediv, operator.neg,
    torch.add, torch.mul, torch.sub, torch.div, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.sigmoid,
    F.tanh, F.elu, F.leaky_relu, F.softplus, F.selu, F.celu, F.logsigmoid, F.softsign,
    F.tanhshrink, F.hardshrink, F.softshrink, F.threshold, torch.exp, torch.abs, torch.square,
    torch.sqrt, torch.pow, operator.pow, torch.maximum, torch.minimum, torch.erf,
}
POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "mul", "sub", "div", "clamp", "float",
                      "to", "type_as", "contiguous", "exp", "abs", "pow", "sqrt", "neg", "square",
                      "clamp_min", "clamp_max"}
SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
RESHAPES = {"flatten", "view", "reshape", "squeeze"}


class Tracer(fx.Tracer):
    """Keeps every convolution, pooling, linear and norm layer a leaf, subclasses included, so
    their attributes (stride, dilation) can be edited after tracing."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES + POINTWISE_MODULES + DROPS) or super().is_leaf_module(
            m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        graph = Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many types; report one line
        raise ConversionError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); make its forward traceable") from exc
    return fx.GraphModule(model, graph, type(model).__name__)


def example_input(gm: fx.GraphModule, size) -> torch.Tensor:
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    chans = size[0] or next((m.in_channels for m in gm.modules() if isinstance(m, nn.Conv2d)), 3)
    return torch.zeros(1, chans, size[1], size[2], dtype=dtype, device=device)


def propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Annotate every node with ``meta['tensor_meta']`` at the canonical input.

    ShapeProp prints the traceback of a node that fails before raising; that print is swallowed
    (the failure is raised as one :class:`ConversionError` line).
    """
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm, fake_mode=mode).propagate(mode.from_tensor(example))
    except Exception:  # fake tensors unsupported by some op: fall back to a real forward pass
        try:
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(example)
        except RuntimeError as exc:
            root = exc
            while root.__cause__ is not None:  # ShapeProp wraps the model's own error
                root = root.__cause__
            size = "x".join(str(v) for v in example.shape[1:])
            first = str(root).splitlines()[0] if str(root) else ""
            raise ConversionError(f"the classifier fails on a {size} input ({type(root).__name__}"
                                  f": {first}); pass its canonical input_size") from None


def shape_of(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, args) -> fx.Node:
    """Insert ``module`` called on ``args`` after ``node``, taking over its uses and shape meta."""
    target = f"densify_{node.name}"
    gm.add_submodule(target, module)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(target, tuple(args))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def unshare_modules(gm: fx.GraphModule) -> None:
    """Give every call of a module reused at several places (``self.pool`` called twice) its
    own copy, so that editing one call's stride or dilation leaves the others alone."""
    import copy

    seen = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        if node.target in seen:
            target = f"densify_{node.name}"
            gm.add_submodule(target, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = target
        seen.add(node.target)
    gm.recompile()


def remove_dropout(gm: fx.GraphModule) -> None:
    """Dropout (and ``nn.Identity``) is the identity in eval mode: take it out of the graph."""
    for node in list(gm.graph.nodes):
        if (node.op == "call_module" and isinstance(gm.get_submodule(node.target), DROPS)) or (
                node.op == "call_function" and node.target in (F.dropout, F.dropout2d)):
            bypass(gm, node)


def bypass(gm: fx.GraphModule, node: fx.Node) -> None:
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def functional_pools_to_modules(gm: fx.GraphModule) -> None:
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
        replace_with_module(gm, node, cls(**kwargs), [node.args[0]])


def global_pool_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """``"avg"``/``"max"`` if ``node`` reduces an ``(N, C, h, w)`` map over all of ``h, w``."""
    src, out = shape_of(node.args[0]) if node.args else None, shape_of(node)
    if src is None or out is None or len(src) != 4:
        return None
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, ADAPTIVE) and out[-2:] == (1, 1):
            return "avg" if isinstance(m, nn.AdaptiveAvgPool2d) else "max"
        return None
    if (node.op == "call_method" and node.target in ("mean", "amax")) or (
            node.op == "call_function" and node.target in (torch.mean, torch.amax)):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = {d % 4 for d in ((dims,) if isinstance(dims, int) else tuple(dims or ()))}
        if dims == {2, 3}:
            return "avg" if node.target in ("mean", torch.mean) else "max"
    return None


def is_flatten(node: fx.Node) -> bool:
    """An op turning an ``(N, C, h, w)`` map into ``(N, C·h·w)`` vectors."""
    src, out = (shape_of(node.args[0]) if node.args else None), shape_of(node)
    if src is None or out is None or len(src) != 4 or len(out) != 2:
        return False
    if node.op == "call_function" and node.target is torch.flatten:
        return True
    if node.op == "call_method" and node.target in RESHAPES:
        return True
    return node.op == "call_module" and type(node.graph.owning_module.get_submodule(
        node.target)) is nn.Flatten


def descendants(node: fx.Node) -> set:
    seen, stack = set(), [node]
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


def output_node(gm: fx.GraphModule) -> fx.Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


def is_map(node: fx.Node) -> bool:
    shape = shape_of(node)
    return shape is not None and len(shape) >= 4


def device_of(m: nn.Module):
    return next(m.parameters()).device if any(True for _ in m.parameters()) else None


def dtype_of(m: nn.Module):
    return next(m.parameters()).dtype if any(True for _ in m.parameters()) else None


def pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def prepare(model: nn.Module, size: tuple[int, int, int]) -> tuple[fx.GraphModule, torch.Tensor]:
    """``model`` (deep-copied, eval mode) traced, shape-annotated at the canonical ``size``
    (``(C, H, W)``; ``C = 0``: from the first convolution), functional pools made modules and
    dropout removed: the graph the converter rewrites. Returns it with the example input. The
    copy's weights view ``model``'s storage (:func:`densify.convert.storage.shared_copy`)."""
    from .storage import shared_copy

    gm = trace(shared_copy(model).eval())
    example = example_input(gm, size)
    propagate_shapes(gm, example)
    functional_pools_to_modules(gm)
    remove_dropout(gm)
    gm.recompile()
    return gm, example


def subgraph(gm: fx.GraphModule, start: str | None, end: str | None) -> fx.GraphModule:
    """The part of ``gm`` from node ``start`` (a new input; ``None``: the graph's own inputs) to
    node ``end`` (the output; ``None``: the graph's own output)."""
    graph, env = fx.Graph(), {}
    for node in gm.graph.nodes:
        if node.name == start:
            env[node] = graph.placeholder("features")
        elif node.op == "placeholder":
            if start is None:
                env[node] = graph.node_copy(node)
        elif node.op == "output":
            if end is None:
                graph.output(fx.map_arg(node.args[0], lambda a: env[a]))
        elif node.op == "get_attr" or all(a in env for a in node.all_input_nodes) and (
                node.all_input_nodes or start is None):
            env[node] = graph.node_copy(node, lambda a: env[a])
        if end is not None and node.name == end:
            graph.output(env[node])
            break
    out = fx.GraphModule(gm, graph)
    out.graph.eliminate_dead_code()
    out.recompile()
    return out
