"""Convolutionization: turn a classifier into a fully convolutional dense net.

``convolutionize(model)`` traces the classifier with ``torch.fx``, splits it into trunk and head
by the one rule of :mod:`densify.convert.head`, and converts the head to act on maps:

- the fast path (:mod:`densify.convert.fast`) rewrites every head op into its map equivalent:
  the first fully connected layer after a flatten of a ``C × k × k`` map becomes a ``k × k``
  convolution (weights reshaped in the order the flatten read the map, a permute before it
  folded in), later ones ``1 × 1`` convolutions; a global average (max) pool becomes a stride-1
  ``k × k`` pool, ``k`` being the trunk's feature size at the canonical input: the pool runs
  first and the ``1 × 1`` convolution after it, the classifier's own order, which keeps norms
  and activations between them exact (ConvNeXt, MobileNetV3); dropout goes; norms,
  activations and softmax act per cell;
- the general path (:mod:`densify.convert.general`), for heads with ops the fast path does not
  know, runs the classifier's own head subgraph on every window;
- an ``AdaptiveAvgPool2d`` never stays in the dense path: at the canonical size it is the identity
  (AlexNet's 6 × 6, VGG's 7 × 7) and is dropped, or an exact uniform pool.

Multi-output classifiers give a dense net with the same output structure
(:mod:`densify.convert.outputs`), and every conversion is checked before it is returned
(:func:`densify.convert.selfcheck.self_check`).

Global context *inside* the trunk (:mod:`densify.convert.context`: squeeze-and-excitation gates
in EfficientNet, MobileNetV3, RegNetY, SE-ResNet; ECA; ResNeSt/SK split attention; GroupNorm in
BiT and PoolFormer) is kept global: on a large input it sees the whole image, so such a dense net
equals the classifier exactly at the canonical input and in its head, but not window by window.
``DenseNet.global_context`` lists those nodes, the receptive field is reported as global
(``geometry.rf_size is None``) and a warning is logged.

``output_stride`` applies OverFeat's stride-1 final pooling: the last strided layer(s) get stride 1
and every later sliding-window layer is dilated by the old stride (convolutions and max pools
natively, average pools through :class:`densify.convert.layers.DilatedAvgPool2d`). Repeating the step
reaches 8 and below.
"""

from __future__ import annotations

import logging
import traceback

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConversionError, DensifyError, ParameterError, UnforeseenError
from .context import layer_of
from .fast import UnsupportedHead, rewrite_head, rewrite_trunk_adaptive_pools
from .fields import walk_fields
from .general import build_general, original_head
from .geometry import Geometry, cell_count
from .graph import ADAPTIVE, output_node, prepare, propagate_shapes, shape_of
from .head import Head, feature_map, find_head
from .outputs import OutputInfo, activation_of, crop_outputs, leaf_nodes, leaves, pick, select_key
from .selfcheck import self_check
from .stride import reachable_strides, set_output_stride

__all__ = ["DenseNet", "convolutionize", "available_strides", "canonical_size", "HEAD_PATHS",
           "describe_outputs"]

#: ``convolutionize(head=...)``: which path converts the head.
HEAD_PATHS = ("auto", "fast", "general")

log = logging.getLogger(__name__)


class DenseNet(nn.Module):
    """A convolutionized classifier: ``(N, C, H, W) -> (N, num_classes, h, w)`` logits.

    At the canonical input ``h = w = 1``; cell ``(i, j)`` on a larger input is the classifier's
    answer for the window described by :attr:`geometry`.

    Attributes:
        net: the rewritten ``torch.fx.GraphModule``.
        geometry: window, stride and receptive field (:class:`densify.convert.geometry.Geometry`).
        input_size: canonical ``(C, H, W)``.
        output_stride: pixels between cells.
        global_context: names of the graph nodes (in :attr:`net`) that take statistics of the
            whole feature map (SE gates, GroupNorm, ...); empty for nets whose every cell is a pure
            function of its receptive field.
        feature_node: name of the trunk's last feature map in :attr:`net`'s graph (and in the
            traced original), where the classifier head starts; used by :mod:`densify.convert.verify`.
        outputs: one :class:`densify.convert.outputs.OutputInfo` per output, in the order of the
            classifier's output structure (one for a single-output classifier).

    Shape:
        ``forward`` returns what the classifier returns, each ``(N, K_i)`` vector an
        ``(N, K_i, h, w)`` map: a Tensor, or the same tuple/list/dict/NamedTuple of maps.
    """

    # TorchScript compiles forward only: the Python-side descriptions stay out of it.
    __jit_ignored_attributes__ = ["outputs"]
    __jit_unused_properties__ = ["multi_output"]

    def __init__(self, net: fx.GraphModule, geometry: Geometry, input_size: tuple[int, int, int],
                 global_context: tuple[str, ...] = (), feature_node: str | None = None,
                 outputs: tuple[OutputInfo, ...] = ()):
        super().__init__()
        self.outputs = tuple(outputs) or describe_outputs(net)
        self.net = net
        self.geometry = geometry
        self.input_size = tuple(input_size)
        self.output_stride = geometry.stride[0]
        self.global_context = tuple(global_context)
        self.feature_node = feature_node
        g = geometry  # plain ints for forward (TorchScript cannot call the dataclass)
        self._cells_params = (g.offset[0], g.offset[1], g.window[0], g.window[1], g.stride[0],
                              g.stride[1])

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        oy, ox, wy, wx, sy, sx = self._cells_params
        h = cell_count(x.shape[-2], oy, wy, sy)
        w = cell_count(x.shape[-1], ox, wx, sx)
        if isinstance(out, torch.Tensor):
            return out[:, :, :h, :w]  # drop cells whose window overhangs the input (output_size)
        return crop_outputs(out, h, w)

    @property
    def multi_output(self) -> bool:
        """Whether the classifier returns a structure of outputs rather than one tensor."""
        return len(self.outputs) != 1 or self.outputs[0].key is not None

    def output(self, key=None) -> OutputInfo:
        """The :class:`OutputInfo` of output ``key`` (index or key; ``None``: the only one)."""
        return select_key(self.outputs, key, "selected")

    def select(self, value, key=None) -> torch.Tensor:
        """Output ``key`` of a forward result ``value`` (``None``: the only output)."""
        return pick(value, self.output(key))

    def subset(self, *keys) -> DenseNet:
        """A dense net computing only outputs ``keys`` (indices or keys), concatenated along
        channels in that order into one ``(N, sum K_i, h, w)`` Tensor; it shares this net's
        modules. A single-output net asked for its output is returned as is."""
        infos = [self.output(k) for k in keys]
        if not self.multi_output:
            return self
        nodes = dict(leaf_nodes(self.net))
        graph, env = fx.Graph(), {}
        graph.graph_copy(self.net.graph, env)
        chosen = [env[nodes[o.key]] for o in infos]
        graph.output(chosen[0] if len(chosen) == 1 else graph.call_function(torch.cat, (chosen, 1)))
        gm = fx.GraphModule(self.net, graph)
        gm.graph.eliminate_dead_code()
        gm.recompile()
        param = next(self.parameters())
        propagate_shapes(gm, torch.zeros(1, *self.input_size, dtype=param.dtype, device=param.device))
        single = OutputInfo(None, sum(o.channels for o in infos),
                            infos[0].activation if len(infos) == 1 else None,
                            "fast" if all(o.path == "fast" for o in infos) else "general")
        return DenseNet(gm, self.geometry, self.input_size, self.global_context, self.feature_node,
                        (single,)).eval()

    def output_maps(self, value) -> list[torch.Tensor]:
        """The maps of a forward result ``value``, in the order of :attr:`outputs`."""
        return [t for _, t in leaves(value)]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Cells ``(h, w)`` on a ``height × width`` input: those whose window fits entirely,
        ``floor((size - window) / stride) + 1`` per axis (:meth:`Geometry.output_size`).

        The one count everything uses: :meth:`forward` returns exactly these cells. A net whose
        canonical size has slack (AlexNet: 224 where 195 would do) computes one more cell on some
        inputs, whose window overhangs the bottom/right border; :meth:`forward` drops it.
        """
        return self.geometry.output_size(height, width)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"window={g.window}, stride={g.stride}, receptive_field={g.rf_size}, "
                f"global_context={len(self.global_context)}")


def convolutionize(model: nn.Module, input_size=None, output_stride: int | None = None, *,
                   verify: bool = True, head: str = "auto") -> DenseNet:
    """Return a fully convolutional copy of ``model`` in eval mode; ``model`` is left untouched.

    The copy's modules are new, but its weights share ``model``'s storage (views, no copy:
    :mod:`densify.convert.storage`; a linear layer's weight becomes its convolution's), so
    converting costs no weight memory. Changing ``model``'s weights in place later changes the
    dense net's too; ``copy.deepcopy`` the dense net to keep it apart.

    Args:
        model: a CNN classifier mapping ``(N, C, H, W)`` at its canonical size to ``(N, K)``
            vectors, or to a tuple/list/dict/NamedTuple of them (:attr:`DenseNet.outputs`).
        input_size: canonical input: ``H``, ``(H, W)`` or ``(C, H, W)``. Taken from
            ``model.pretrained_cfg`` (timm) when omitted; otherwise required.
        output_stride: pixels between output cells; ``None`` keeps the classifier's own stride
            (32 for ImageNet CNNs). Halving it applies stride-1 final pooling (OverFeat).
        verify: run the self-check (checks 1 and 2, :func:`densify.convert.selfcheck.self_check`)
            before returning; a mismatch raises :class:`ConversionError`.
        head: ``"auto"`` (the fast path where it knows every head op, else the general path),
            ``"fast"`` (refuse what the fast path does not know) or ``"general"``.

    Returns:
        :class:`DenseNet` producing ``(N, K, h, w)`` maps (the same structure of them for
        multi-output classifiers).

    Examples:
        LeNet-5 (28 px window, native stride 4) at output stride 2 on a 40 × 36 input: cell
        ``(i, j)`` classifies the window at ``(2i, 2j)``, ``(40 - 28) / 2 + 1 = 7`` rows of them:

        >>> import torch
        >>> from densify.models.archs import lenet5
        >>> dense = convolutionize(lenet5(), (1, 28, 28), output_stride=2)
        >>> dense.geometry
        Geometry(window=(28, 28), stride=(2, 2), offset=(0, 0), rf_size=(28, 28), rf_offset=(0, 0))
        >>> dense(torch.zeros(1, 1, 40, 36)).shape
        torch.Size([1, 10, 7, 5])
        >>> dense.outputs
        (OutputInfo(key=None, channels=10, activation=None, path='fast'),)
    """
    if head not in HEAD_PATHS:
        raise ParameterError(f"unknown head path {head!r}; use one of {', '.join(HEAD_PATHS)}")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convolutionize takes a torch.nn.Module, not {type(model).__name__}")
    try:
        return _convolutionize(model, canonical_size(model, input_size), output_stride, verify,
                               head)
    except DensifyError:
        raise
    except Exception as exc:  # a bug or an unforeseen op: still one line, naming it
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise UnforeseenError(
            f"converting {type(model).__name__} failed ({type(exc).__name__} in "
            f"{where.name}: {str(exc).splitlines()[0] if str(exc) else ''}); if it is a CNN, "
            "head='general' may convert it; otherwise please report it") from exc


def _convolutionize(model: nn.Module, size, output_stride, verify: bool, head: str) -> DenseNet:
    gm, example = prepare(model, size)
    size = (example.shape[1],) + size[1:]
    activations = [activation_of(gm, n) for _, n in leaf_nodes(gm)]
    gm, found, feature_node, path, original = _rewrite(model, size, gm, example, head)
    outputs = tuple(OutputInfo(o.key, o.channels, a, path)
                    for o, a in zip(describe_outputs(gm), activations, strict=True))
    if output_stride is not None:
        set_output_stride(gm, int(output_stride))
    context = tuple(n.name for n in found.context)
    field = walk_fields(gm, context)[output_node(gm)]
    geometry = Geometry(window=size[1:], stride=field.stride, rf_size=field.size,
                        rf_offset=field.offset)
    if context:
        named = ", ".join(f"{what} in {layer_of(n)}" for n, what in list(found.context.items())[:3])
        log.warning("%d global-context op(s) (%s%s) take statistics of the whole feature map: "
                    "the dense output is exact at the canonical input, but each cell also depends "
                    "on pixels outside its window (receptive field: global)", len(context), named,
                    ", ..." if len(context) > 3 else "")
    dense = DenseNet(gm, geometry, size, context, feature_node, outputs).eval()
    if verify:
        self_check(model, dense, original)
    return dense


def _rewrite(model, size, gm: fx.GraphModule, example: torch.Tensor, head: str):
    """Rewrite ``gm`` into a dense net: ``(graph module, head found, feature node name, path,
    the classifier's own head from that node)``. In automatic mode any failure of the fast path
    (an op it does not know, a graph it built wrong) falls back to the general path."""
    found = find_head(gm)
    if not found.starts:
        return _finish(gm, example), found, None, "fast", None
    rewrite_trunk_adaptive_pools(gm, found)
    feature = feature_map(found, found.starts)
    original = original_head(gm, feature)  # before the rewrite edits gm
    if head != "general":
        try:
            rewrite_head(gm, found)
            gm = _finish(gm, example)
            describe_outputs(gm)  # (1, K, 1, 1) at the canonical input, or fall back
            return gm, found, feature.name, "fast", original
        except (UnsupportedHead, ConversionError) as exc:
            if head == "fast":
                raise ConversionError(f"the fast path cannot convert this head: {exc}; use "
                                      "head='auto' or 'general'") from None
            log.info("general path: the fast path stopped at %s", exc)
            _warn_adaptive(gm, found)
            gm, _ = prepare(model, size)  # the rewrite stopped half-way: start again
            found = find_head(gm)
            rewrite_trunk_adaptive_pools(gm, found)
    name = build_general(gm, found)
    return _finish(gm, example), found, name, "general", original


def _warn_adaptive(gm: fx.GraphModule, found: Head) -> None:
    """A non-uniform adaptive pool usually means an input size other than the canonical one."""
    for node in found.others:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), ADAPTIVE):
            src, out = shape_of(node.args[0])[-2:], shape_of(node)[-2:]
            log.warning("%s: adaptive pooling from %s to %s at this input size is not a fixed "
                        "sliding window, so the general path runs it on every window; pass the "
                        "classifier's canonical input_size for the fast path", node.target,
                        tuple(src), tuple(out))


def _finish(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    propagate_shapes(gm, example)  # fresh shapes for the dense graph; fails loudly if broken
    return gm


def describe_outputs(gm: fx.GraphModule) -> tuple[OutputInfo, ...]:
    """One :class:`OutputInfo` per output of the converted graph; each must be ``(1, K, 1, 1)``
    at the canonical input."""
    infos = []
    for key, node in leaf_nodes(gm):
        out = shape_of(node)
        if out is None or len(out) != 4 or out[-2:] != (1, 1):
            where = "" if key is None else f"output {key!r}: "
            raise ConversionError(f"{where}the converted net gives {out} at the canonical input, "
                                  "not (1, K, 1, 1); is input_size the classifier's canonical size?")
        infos.append(OutputInfo(key, int(out[1]), activation_of(gm, node)))
    return tuple(infos)


def available_strides(model: nn.Module, input_size=None, limit: int | None = None) -> list[int]:
    """Output strides ``convolutionize`` can reach for ``model``, largest first, down to ``limit``
    (default: a quarter of the native stride, i.e. two halvings)."""
    if isinstance(model, DenseNet):
        return reachable_strides(model.net, limit)
    # The strides depend on the layers alone: no self-check (``model`` may be a meta skeleton).
    return reachable_strides(convolutionize(model, input_size, verify=False).net, limit)


def canonical_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``input_size`` (``H``, ``(H, W)`` or ``(C, H, W)``) or from timm's
    ``pretrained_cfg``; ``C`` not given: timm's, else ``0`` (the first convolution's input
    channels, wrong for a space-to-depth stem such as TResNet's)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if input_size is None:
        input_size = cfg.get("input_size")
    if input_size is None:
        raise ConversionError(
            f"cannot tell the canonical input size of {type(model).__name__}: pass input_size=(H, W),"
            " the size the classifier was trained at (e.g. 224)")
    chans = int(cfg["input_size"][0]) if len(cfg.get("input_size") or ()) == 3 else 0
    if isinstance(input_size, int):
        return (chans, input_size, input_size)
    input_size = tuple(int(v) for v in input_size)
    return input_size if len(input_size) == 3 else (chans,) + input_size
