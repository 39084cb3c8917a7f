"""Output stride: OverFeat's stride-1 final pooling, generalised.

:func:`set_output_stride` de-strides the last strided level of the net and dilates every later
sliding-window layer by the old stride (convolutions and max pools natively, average pools through
:class:`densify.convert.layers.DilatedAvgPool2d`), repeating until the requested stride.
:func:`reachable_strides` lists the strides that step can reach.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from ..errors import ConversionError
from .fields import stride_of, walk_fields, window_params
from .graph import SLIDING, descendants, output_node, pair, set_module, unshare_modules
from .layers import DilatedAvgPool2d, DilatedMaxPool2d

__all__ = ["set_output_stride", "reachable_strides"]

def set_output_stride(gm: fx.GraphModule, target: int) -> None:
    """De-stride the last strided level and dilate everything after it, until ``target``."""
    unshare_modules(gm)
    while True:
        fields = walk_fields(gm)
        stride = fields[output_node(gm)].stride[0]
        if stride == target:
            return
        level = [n for n in gm.graph.nodes if stride_of(gm, n) > 1
                 and fields[n].stride[0] == stride]
        factors = {pair(gm.get_submodule(n.target).stride) for n in level}
        if target > stride or not level or len(factors) != 1 or stride // next(iter(factors))[
                0] < target:
            raise ConversionError(
                f"output_stride {target} is not reachable from stride {stride}; choose a stride "
                "listed by 'densify models'")
        factor = next(iter(factors))
        for n in level:
            gm.get_submodule(n.target).stride = (1, 1)
        below = set().union(*(descendants(n) for n in level))
        for n in gm.graph.nodes:
            if n in below and n.op == "call_module":
                _dilate(gm, n, factor)
        gm.recompile()


def _dilate(gm: fx.GraphModule, node: fx.Node, factor: tuple[int, int]) -> None:
    m = gm.get_submodule(node.target)
    if not isinstance(m, SLIDING):
        return
    kernel, _, padding, dilation = window_params(m)
    if kernel == (1, 1):
        return
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise ConversionError(f"{node.target}: {m.padding_mode} padding cannot be dilated exactly")
    new_dil = (dilation[0] * factor[0], dilation[1] * factor[1])
    new_pad = (padding[0] * factor[0], padding[1] * factor[1])
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode:
            raise ConversionError(f"{node.target}: ceil_mode average pooling cannot be dilated")
        set_module(gm, node.target, DilatedAvgPool2d(kernel, new_dil, new_pad,
                                                      m.count_include_pad))
        return
    if isinstance(m, (nn.MaxPool2d, DilatedMaxPool2d)) and max(
            new_pad[a] - kernel[a] // 2 for a in (0, 1)) > 0:
        # nn.MaxPool2d caps padding at half the undilated kernel: pad with -inf explicitly.
        set_module(gm, node.target, DilatedMaxPool2d(kernel, new_dil, new_pad, m.ceil_mode))
        return
    m.dilation = new_dil
    if not isinstance(m.padding, str):
        m.padding = new_pad


def reachable_strides(gm: fx.GraphModule, limit: int | None = None) -> list[int]:
    """Output strides :func:`set_output_stride` can reach on ``gm``, largest first, down to
    ``limit`` (default: a quarter of the native stride, i.e. two halvings)."""
    fields = walk_fields(gm)
    # De-striding the level that produces stride S leaves the stride of that level's input.
    inputs = {fields[a].stride[0] for n in gm.graph.nodes if stride_of(gm, n) > 1
              for a in n.all_input_nodes}
    top = fields[output_node(gm)].stride[0]
    limit = max(1, top // 4) if limit is None else limit
    return [top] + sorted((s for s in inputs if limit <= s < top), reverse=True)
