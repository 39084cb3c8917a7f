"""Receptive fields and strides of every node of a traced net (pure functions of the layers).

:class:`Field` records, per axis, which input pixels one cell of a tensor depends on;
:func:`compose` applies a sliding-window layer, :func:`merge` an element-wise or concatenating op,
and :func:`walk_fields` annotates a whole graph. :class:`densify.convert.geometry.Geometry` is
built from the output node's field.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from ..errors import ConversionError
from .graph import ADAPTIVE, SLIDING, global_pool_kind, is_map, pair, shape_of

__all__ = ["Field", "compose", "merge", "window_params", "stride_of", "walk_fields"]


@dataclass(frozen=True)
class Field:
    """Receptive-field bookkeeping of one tensor, per axis ``(H, W)``.

    Cell ``i`` of this tensor depends on input pixels ``[offset + i·stride, offset + i·stride + size)``.
    ``size`` is ``None`` when the tensor depends on the whole input (a global pooling layer that
    stays global, such as a squeeze-and-excitation block).
    """

    stride: tuple[int, int] = (1, 1)
    size: tuple[int, int] | None = (1, 1)
    offset: tuple[int, int] = (0, 0)


def compose(f: Field, kernel, stride, padding, dilation) -> Field:
    """The field after a sliding-window layer (convolution or pooling) applied to ``f``.

    ``kernel``, ``stride``, ``padding``, ``dilation``: pairs ``(h, w)`` as in ``nn.Conv2d``.
    """
    new_stride = (f.stride[0] * stride[0], f.stride[1] * stride[1])
    offset = tuple(f.offset[a] - padding[a] * f.stride[a] for a in (0, 1))
    if f.size is None:
        return Field(new_stride, None, offset)
    size = tuple(f.size[a] + (kernel[a] - 1) * dilation[a] * f.stride[a] for a in (0, 1))
    return Field(new_stride, size, offset)


def merge(fields: list[Field]) -> Field:
    """The field of an element-wise or concatenating op over tensors with ``fields``: their union."""
    first = fields[0]
    if any(f.stride != first.stride for f in fields):
        strides = sorted({f.stride for f in fields})
        raise ConversionError(f"inputs at different strides {strides} are combined; cannot map cells")
    if any(f.size is None for f in fields):
        return Field(first.stride, None, tuple(min(f.offset[a] for f in fields) for a in (0, 1)))
    lo = tuple(min(f.offset[a] for f in fields) for a in (0, 1))
    hi = tuple(max(f.offset[a] + f.size[a] for f in fields) for a in (0, 1))
    return Field(first.stride, (hi[0] - lo[0], hi[1] - lo[1]), lo)


def window_params(m: nn.Module):
    """``(kernel, stride, padding, dilation)`` pairs of a sliding-window layer."""
    kernel, stride = pair(m.kernel_size), pair(m.stride)
    dilation = pair(getattr(m, "dilation", 1))
    padding = m.padding
    if isinstance(padding, str):  # "same" / "valid"
        padding = (0, 0) if padding == "valid" else tuple(
            d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    return kernel, stride, pair(padding), dilation


def stride_of(gm: fx.GraphModule, node: fx.Node) -> int:
    if node.op != "call_module":
        return 1
    m = gm.get_submodule(node.target)
    return pair(m.stride)[0] if isinstance(m, SLIDING) else 1


def walk_fields(gm: fx.GraphModule, global_nodes: Collection[str] = ()) -> dict:
    """:class:`Field` (stride, receptive field) of every node, from the layers' parameters.

    ``global_nodes``: names of nodes whose every value depends on the whole input (global context,
    :mod:`densify.convert.context`: a GroupNorm, a pooled gate); their fields, and those of every
    node computed from them, have ``size=None``."""
    fields: dict[fx.Node, Field] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            fields[node] = Field()
            continue
        ins = [fields[a] for a in node.all_input_nodes if a in fields]
        if not ins:
            continue
        if node.name in global_nodes or global_pool_kind(gm, node) is not None:
            fields[node] = Field(ins[0].stride, None, ins[0].offset)
            continue
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, SLIDING):
                fields[node] = compose(ins[0], *window_params(m))
                continue
            if isinstance(m, ADAPTIVE):  # kept global: sees everything
                fields[node] = Field(ins[0].stride, None, ins[0].offset)
                continue
        # Tensors of sizes (shape arithmetic) carry no spatial meaning: merge maps only; a
        # per-image value computed from global context makes its result global.
        tensors = [a for a in node.all_input_nodes if a in fields and shape_of(a) is not None]
        maps = [fields[a] for a in tensors if is_map(a)]
        field = merge(maps) if maps else ins[0]
        if any(fields[a].size is None for a in tensors):
            field = Field(field.stride, None, field.offset)
        fields[node] = field
    return fields
