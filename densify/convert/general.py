"""The general path: the classifier's own head code evaluated on every window, exactly.

When the fast path (:mod:`densify.convert.fast`) meets a head op it cannot turn into a
convolution, the dense net keeps the trunk and replaces the whole head by a :class:`WindowHead`:
it unfolds the trunk's ``(N, C, h, w)`` feature map into its ``k × k`` windows (``k`` = the
feature map's size at the canonical input), batches them in chunks of bounded size, runs the
ORIGINAL head subgraph on each chunk and folds the results back into ``(N, K_i, h', w')`` maps.
Every cell is the classifier's head applied to that cell's window, by construction.

For a head that starts with one global pool, the pool becomes a stride-1 ``k × k`` pool in the
trunk (exact, as on the fast path) and the head runs on the pooled vectors (``1 × 1`` windows),
which costs ``k²`` times less than unfolding the windows.

:class:`WindowHead` is a sliding-window layer like a convolution (``kernel_size``, ``stride``,
``dilation``, ``padding``): receptive fields, geometry and stride-1 final pooling
(:mod:`densify.convert.stride` dilates it) treat it as one.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from .graph import descendants, output_node, pair, replace_with_module, shape_of, subgraph
from .head import Head, feature_map
from .layers import WindowLayer
from .outputs import leaf_nodes, set_leaves

__all__ = ["CHUNK_ELEMENTS", "WindowHead", "build_general", "flat_outputs"]

#: Window elements per chunk (16 MiB of float32): bounds the general path's extra memory.
CHUNK_ELEMENTS = 1 << 22


class WindowHead(WindowLayer):
    """``head`` on every ``kh × kw`` window (stride 1, ``dilation``) of an ``(N, C, H, W)`` map.

    Args:
        head: the classifier's head: ``(B, *in_shape)`` windows → its output structure.
        kernel_size: the window ``(kh, kw)`` in feature cells.
        in_shape: what the head reads per window, e.g. ``(C, kh, kw)``, or ``(C,)`` for pooled
            vectors (the window's ``C·kh·kw`` values in channel-major order, reshaped).
        chunk_elements: window elements evaluated at once (an exported graph evaluates all
            windows at once: its height and width stay symbolic).

    Shape:
        ``(N, C, H, W) -> list of (N, K_i, H - dh·(kh - 1), W - dw·(kw - 1))``, one map per
        output of ``head`` in structure order.
    """

    def __init__(self, head: fx.GraphModule, kernel_size, in_shape, chunk_elements: int =
                 CHUNK_ELEMENTS):
        super().__init__()
        self.head = flat_outputs(head)
        self.kernel_size: tuple[int, int] = pair(kernel_size)
        self.stride: tuple[int, int] = (1, 1)
        self.dilation: tuple[int, int] = (1, 1)
        self.padding: tuple[int, int] = (0, 0)
        self.in_shape = tuple(int(v) for v in in_shape)
        self.window_shape: list[int] = [-1, *self.in_shape]  # for reshape (TorchScript: no *)
        self.chunk_elements = int(chunk_elements)

    # Written in the TorchScript subset (torch.jit.script compiles it for `densify convert -o
    # x.pt`): lists rather than variable-length tuples, no star-args, no zip(*...).
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n, c, height, width = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        kh, kw = self.kernel_size
        dh, dw = self.dilation
        h, w = height - dh * (kh - 1), width - dw * (kw - 1)
        if not torch.jit.is_scripting():
            if _exporting():  # one chunk: the exported graph keeps height and width symbolic
                return self._maps(x, n, h, w)
        if h < 1 or w < 1:
            raise RuntimeError(f"a {height}x{width} feature map is smaller than the head's "
                               f"{kh}x{kw} window (dilation {dh}x{dw})")
        rows = max(1, self.chunk_elements // (n * w * c * kh * kw))
        parts: list[list[torch.Tensor]] = []
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            parts.append(self._maps(x[:, :, r0:r1 + dh * (kh - 1)], n, r1 - r0, w))
        if len(parts) == 1:
            return parts[0]
        return [torch.cat([part[i] for part in parts], dim=2) for i in range(len(parts[0]))]

    def _maps(self, band: torch.Tensor, n: int, rows: int, w: int) -> list[torch.Tensor]:
        """The head on every window of ``band`` (``rows × w`` cells): one map per output."""
        cols = F.unfold(band, self.kernel_size, dilation=self.dilation)  # (n, c·kh·kw, cells)
        windows = cols.transpose(1, 2).reshape(self.window_shape)
        maps: list[torch.Tensor] = []
        for t in self.head(windows):  # a tuple of tensors (flat_outputs)
            maps.append(t.reshape(n, rows, w, -1).permute(0, 3, 1, 2))
        return maps

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"in_shape={self.in_shape}")


def flat_outputs(head: fx.GraphModule) -> fx.GraphModule:
    """``head`` returning the tuple of its output tensors in structure order
    (:func:`densify.convert.outputs.leaf_nodes`) instead of its dict, named tuple or tensor:
    what :class:`WindowHead` folds into maps, and a type TorchScript can compile."""
    out = output_node(head)
    out.args = (tuple(node for _, node in leaf_nodes(head)),)
    head.recompile()
    return head


def _exporting() -> bool:
    compiler = torch.compiler
    return compiler.is_compiling() or bool(getattr(compiler, "is_exporting", lambda: False)())


def build_general(gm: fx.GraphModule, head: Head) -> str:
    """Rewrite ``gm`` (prepared, shape-annotated, classified by :func:`find_head`, trunk adaptive
    pools rewritten) in place: the trunk stays and a :class:`WindowHead` computes every output.
    Returns the feature map's name."""
    features = feature_map(head, head.starts)
    start, window = _pooled_start(gm, head)
    if start is None:
        start, window = features, shape_of(features)[2:]
    original = original_head(gm, start)
    module = WindowHead(original, window, shape_of(start)[1:])
    if start is not features:  # the global pool: a stride-1 k×k pool in the trunk
        k = tuple(shape_of(features)[2:])
        pool = nn.AvgPool2d(k, stride=1) if head.pools[start] == "avg" else nn.MaxPool2d(k, 1)
        start = replace_with_module(gm, start, pool, start.args[:1])
    gm.add_submodule("densify_head", module)
    with gm.graph.inserting_before(output_node(gm)):
        call = gm.graph.call_module("densify_head", (start,))
        set_leaves(gm, call)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    return features.name


def _pooled_start(gm: fx.GraphModule, head: Head):
    """``(pool node, (1, 1))`` when the head is one global pool whose result is all it reads."""
    if len(head.starts) != 1 or not head.pools:
        return None, None
    pool = next(iter(head.pools))
    try:
        original_head(gm, pool)
    except ConversionError:
        return None, None
    return pool, (1, 1)


def original_head(gm: fx.GraphModule, start: fx.Node) -> fx.GraphModule:
    """The classifier's head from ``start`` (its only input) to its outputs."""
    try:
        return subgraph(gm, start.name, None)
    except KeyError:
        other = _other_input(start)
        raise ConversionError(
            f"the head from {start.name} also reads {other}, computed before it; densify "
            "converts classifiers whose head reads one feature map (a transformer's blocks read "
            "its tokens and sizes: not a CNN)") from None


def _other_input(start: fx.Node) -> str:
    """The first value (not a constant) that a node after ``start`` reads and that is neither
    ``start`` nor computed from it."""
    below = descendants(start) | {start}
    for node in start.graph.nodes:
        if node in below and node is not start:
            for a in node.all_input_nodes:
                if a not in below and a.op != "get_attr":
                    return a.name
    return "another value"
