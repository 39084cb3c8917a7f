"""The outputs of a classifier: one tensor, or a tuple, list, dict or NamedTuple of them.

A multi-output model (class scores and box regressions, say) is converted into a dense net that
returns the SAME structure, every ``(N, K_i)`` vector becoming an ``(N, K_i, h, w)`` map. This
module names the leaves of such a structure (:func:`leaves` for values, :func:`leaf_nodes` for the
traced graph), tells which activation an output already ends in (:func:`activation_of`), and
describes each output of a :class:`densify.convert.DenseNet` (:class:`OutputInfo`).

Convention:
    an output's ``key`` is ``None`` for a plain tensor, the position for a tuple or list, the
    field name for a NamedTuple and the key for a dict; leaves are listed in structure order.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError

__all__ = ["ACTIVATIONS", "OutputInfo", "is_namedtuple_node", "leaf_nodes", "set_leaves", "leaves",
           "activation_of", "select_key", "pick", "crop_outputs"]

#: What an output may already end in; ``None`` means raw scores (logits, regressions).
ACTIVATIONS = (None, "softmax", "log_softmax", "sigmoid")

_FUNCTIONS = {F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax",
              torch.log_softmax: "log_softmax", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid"}
_MODULES = ((nn.Softmax, "softmax"), (nn.LogSoftmax, "log_softmax"), (nn.Sigmoid, "sigmoid"))


@dataclass(frozen=True)
class OutputInfo:
    """One output of a dense net.

    Attributes:
        key: where it sits in the output structure (see the module's convention).
        channels: ``K_i``, its channels (classes, or box coordinates).
        activation: ``None``, ``"softmax"``, ``"log_softmax"`` or ``"sigmoid"``: the op the
            classifier's output already ends in.
        path: ``"fast"`` (head rewritten into convolutions) or ``"general"`` (the original head
            evaluated on every window, :mod:`densify.convert.general`).
    """

    key: Hashable | None
    channels: int
    activation: str | None
    path: str = "fast"


def is_namedtuple_node(node) -> bool:
    """A traced ``SomeNamedTuple(a, b)`` call (fx records the constructor as a function)."""
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and isinstance(node.target, type) and issubclass(node.target, tuple)
            and hasattr(node.target, "_fields"))


def leaf_nodes(gm: fx.GraphModule) -> list[tuple[Hashable | None, fx.Node]]:
    """``(key, node)`` for every output of ``gm``'s graph, in structure order."""
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    if is_namedtuple_node(out):
        names = out.target._fields
        values = dict(zip(names, out.args, strict=False)) | dict(out.kwargs)
        return [(name, values[name]) for name in names]
    return _items(out)


def set_leaves(gm: fx.GraphModule, source: fx.Node) -> None:
    """Make ``gm``'s outputs ``source[0], source[1], ...`` (a node returning a tuple of maps, one
    per output in structure order), keeping the output structure."""
    out_node = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    old = out_node.args[0]
    keys = [k for k, _ in leaf_nodes(gm)]
    graph = gm.graph
    with graph.inserting_before(out_node):
        items = [graph.call_function(operator.getitem, (source, i)) for i in range(len(keys))]
        if is_namedtuple_node(old):
            new = graph.call_function(old.target, tuple(items))
        elif isinstance(old, dict):
            new = dict(zip(keys, items, strict=True))
        elif isinstance(old, (tuple, list)):
            new = type(old)(items)
        else:
            new = items[0]
    out_node.args = (new,)


def leaves(value) -> list[tuple[Hashable | None, torch.Tensor]]:
    """``(key, tensor)`` for every tensor of an output structure, in structure order."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value, strict=True))
    return _items(value)


def _items(value) -> list:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (tuple, list)):
        return list(enumerate(value))
    return [(None, value)]


@torch.jit.unused
def crop_outputs(value, h: int, w: int):
    """The same output structure with every ``(N, K, H, W)`` map cut to its first ``h × w``
    cells."""
    maps = [t[:, :, :h, :w] for _, t in leaves(value)]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*maps)
    if isinstance(value, dict):
        return dict(zip(value, maps, strict=True))
    return type(value)(maps)


def activation_of(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The probability-making op ``node`` is (softmax, log-softmax, sigmoid), or None."""
    if node.op == "call_function":
        return _FUNCTIONS.get(node.target)
    if node.op == "call_method" and node.target in ("softmax", "log_softmax", "sigmoid"):
        return node.target
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return next((name for cls, name in _MODULES if type(m) is cls), None)
    return None


def select_key(outputs: tuple[OutputInfo, ...], key, what: str = "scores") -> OutputInfo:
    """The output named by ``key`` (an index or key; ``None``: the only output).

    A string of digits also selects by position (command-line values are strings).
    """
    keys = [o.key for o in outputs]
    if key is None:
        if len(outputs) == 1:
            return outputs[0]
        raise ParameterError(f"the model has {len(outputs)} outputs {keys}: choose the {what} "
                             f"output by key or index (--{what}-output)")
    for o in outputs:
        if o.key == key or str(o.key) == str(key):
            return o
    if str(key).lstrip("-").isdigit() and -len(outputs) <= int(key) < len(outputs):
        return outputs[int(key)]
    raise ParameterError(f"no output {key!r} for {what}; the model's outputs are {keys}")


def pick(value, info: OutputInfo) -> torch.Tensor:
    """The tensor of output ``info`` in an output structure ``value``."""
    return next(t for k, t in leaves(value) if k == info.key)
