"""Convolution + ReLU fusion: ``relu(conv(x))`` and ``relu(conv(x) + z)`` as one module each.

On a GPU, PyTorch adds a convolution's bias in a kernel of its own, then runs the ReLU (and a
ResNet's residual addition) in more kernels, each reading and writing the whole activation: the
dense ResNet-50 pass spends more time there than in the convolutions (docs/gpu.md). cuDNN has the
fused forms, ``torch.cudnn_convolution_relu`` (``relu(conv(x) + b)``) and
``torch.cudnn_convolution_add_relu`` (``relu(conv(x) + alpha * z + b)``), CUDA-only kernels.

:func:`fuse_conv_relu` rewrites a net in place so that each such site is one module:
:class:`ConvReLU2d` (``x -> relu(conv(x))``) or :class:`ConvAddReLU2d` (``(x, z) ->
relu(conv(x) + z)``). Their forward calls the cuDNN op where :func:`uses_cudnn` says it applies
(a CUDA input, a plain zero-padded ``Conv2d``, no autograd); anywhere else it runs the original
ops in the original order (the convolution module, ``+ z`` with the operands as written, ReLU),
so on the CPU a fused net equals the unfused one bit for bit. On a GPU the fused kernels round
differently (one rounding for ``conv + b + z`` instead of three): same function, float rounding.

The scanner does not fuse by default (the gain on a GPU is not measured yet);
``scripts/gpu_bench.py --parts fuse`` measures it.
"""

from __future__ import annotations

import logging
import operator
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .dense import DenseNet

__all__ = ["fuse_conv_relu", "ConvReLU2d", "ConvAddReLU2d", "uses_cudnn"]

log = logging.getLogger(__name__)

_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu)
_ADD_FUNCTIONS = (operator.add, torch.add)


def uses_cudnn(conv: nn.Conv2d, x: Tensor, z: Tensor | None = None) -> bool:
    """Whether the fused modules run ``conv`` on ``x`` (and ``z``) with cuDNN's fused kernels.

    True for a batched input ``(N, C_in, H, W)`` on a CUDA device with cuDNN enabled, a
    convolution with zero padding given as numbers (``padding="same"``/``"valid"`` and other
    padding modes take the original path), autograd not needed (the fused ops have no
    backward), and ``z`` (the residual, if any) of the convolution's output shape
    ``(N, C_out, h, w)`` (the fused op does not broadcast).
    """
    if x.device.type != "cuda" or not torch.backends.cudnn.enabled or x.dim() != 4:
        return False
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in conv.parameters()) or (z is not None and z.requires_grad)):
        return False
    if z is None:
        return True
    n, _, h, w = x.shape
    size = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in zip(
        (h, w), conv.padding, conv.dilation, conv.kernel_size, conv.stride, strict=True)]
    return tuple(z.shape) == (n, conv.out_channels, *size)


def _cudnn_args(conv: nn.Conv2d, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x, weight, bias)`` in the dtype the convolution computes in: autocast's on CUDA when
    it is on (the fused ops are not on autocast's lists), else ``x``'s. Casts keep memory format."""
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return x.to(dtype), conv.weight.to(dtype), bias


class ConvReLU2d(nn.Module):
    """``relu(conv(x))`` as one module; ``conv`` is the original ``nn.Conv2d`` (shared, not copied).

    Shape:
        ``x``: ``(N, C_in, H, W)`` -> ``(N, C_out, h, w)``, as ``conv``.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if uses_cudnn(conv, x):
            x, weight, bias = _cudnn_args(conv, x)
            return torch.cudnn_convolution_relu(x, weight, bias, conv.stride, conv.padding,
                                                conv.dilation, conv.groups)
        return torch.relu(conv(x))


class ConvAddReLU2d(nn.Module):
    """``relu(conv(x) + z)`` as one module (a ResNet block's end: ``z`` is the shortcut).

    ``conv_first`` keeps the addition's operand order as the original net wrote it
    (``conv(x) + z`` if True, ``z + conv(x)`` if False) for the non-cuDNN path.

    Shape:
        ``x``: ``(N, C_in, H, W)``; ``z``: ``(N, C_out, h, w)`` (or anything that broadcasts to
        it, which takes the original path) -> ``(N, C_out, h, w)``.
    """

    def __init__(self, conv: nn.Conv2d, conv_first: bool = True):
        super().__init__()
        self.conv = conv
        self.conv_first = conv_first

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        conv = self.conv
        if uses_cudnn(conv, x, z):
            x, weight, bias = _cudnn_args(conv, x)
            return torch.cudnn_convolution_add_relu(x, weight, z.to(x.dtype), 1.0, bias,
                                                    conv.stride, conv.padding, conv.dilation,
                                                    conv.groups)
        y = conv(x)
        return torch.relu(y + z if self.conv_first else z + y)

    def extra_repr(self) -> str:
        return f"conv_first={self.conv_first}"


class _Site(NamedTuple):
    conv: fx.Node  # the Conv2d call
    add: fx.Node | None  # the addition, for relu(conv(x) + z)
    z: object  # the other operand of the addition


def fuse_conv_relu(net: nn.Module) -> int:
    """Fuse, in place, every ``Conv2d -> ReLU`` and ``Conv2d -> add -> ReLU`` of ``net``;
    returns the number of sites fused.

    Looks into every ``torch.fx.GraphModule`` inside ``net`` (a :class:`DenseNet`'s ``net``,
    for one) and into every ``nn.Sequential`` outside them:

    - in a graph, a call of a plain ``nn.Conv2d`` whose output only a ReLU uses (an ``nn.ReLU``
      module, ``torch.relu``, ``F.relu``, ``.relu()``) becomes one :class:`ConvReLU2d` call; a
      convolution whose output only an addition uses (``+`` or ``torch.add``, either operand
      order), whose result only a ReLU uses, becomes one :class:`ConvAddReLU2d` call on
      ``(x, z)``. The fused call keeps the ReLU node's name (so names such as
      :attr:`DenseNet.feature_node` stay valid; a site whose convolution or addition a
      DenseNet names is left alone); modules no longer called are removed, so the
      convolution's parameters move under the fused module's name (``fused_<relu node>.conv``);
    - in an ``nn.Sequential``, a ``Conv2d`` directly followed by an ``nn.ReLU`` becomes a
      :class:`ConvReLU2d` and the ReLU an ``nn.Identity`` (indices are kept).

    A convolution whose output anything else uses (two users) is left alone, and so is a
    subclass of ``Conv2d`` (its forward may differ). Fusing twice fuses nothing more. On the CPU
    the fused net computes exactly what it did; on CUDA it uses cuDNN's fused kernels. A fused
    net is for running in Python: ``torch.jit.script`` does not compile it (export the unfused
    net, :mod:`densify.convert.export`), and ``torch.jit.trace`` records one device's path.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU())
        >>> x = torch.randn(1, 3, 16, 16)
        >>> before = net(x)
        >>> fuse_conv_relu(net)
        2
        >>> [type(m).__name__ for m in net]
        ['ConvReLU2d', 'Identity', 'ConvReLU2d', 'Identity']
        >>> torch.equal(net(x), before)
        True
        >>> fuse_conv_relu(net)
        0
    """
    graphs = [m for m in net.modules() if isinstance(m, fx.GraphModule)]
    inside = {id(sub) for gm in graphs for sub in gm.modules()}
    named = {id(m.net): {m.feature_node, *m.global_context} for m in net.modules()
             if isinstance(m, DenseNet)}  # nodes a DenseNet refers to by name stay
    fused = sum(_fuse_graph(gm, named.get(id(gm), set())) for gm in graphs)
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential) and id(module) not in inside:
            fused += _fuse_sequential(module)
    if fused:
        log.debug("fused %d convolution + ReLU site(s)", fused)
    return fused


def _fuse_sequential(seq: nn.Sequential) -> int:
    fused = 0
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, relu = seq._modules[a], seq._modules[b]
        if type(conv) is nn.Conv2d and type(relu) is nn.ReLU:
            seq._modules[a], seq._modules[b] = ConvReLU2d(conv), nn.Identity()
            fused += 1
    return fused


def _fuse_graph(gm: fx.GraphModule, keep: set[str]) -> int:
    """Fuse the sites of ``gm`` in place, leaving the nodes named in ``keep``."""
    modules = dict(gm.named_modules())
    fused = 0
    for node in list(gm.graph.nodes):
        if not _is_relu(node, modules):
            continue
        site = _site(node.args[0], modules)
        if site is None or {site.conv.name, getattr(site.add, "name", None)} & keep:
            continue
        conv = modules[site.conv.target]
        name = f"fused_{node.name}"
        while hasattr(gm, name):
            name += "_"
        if site.add is None:
            module, args = ConvReLU2d(conv), (site.conv.args[0],)
        else:
            first = site.add.args[0] is site.conv
            module, args = ConvAddReLU2d(conv, conv_first=first), (site.conv.args[0], site.z)
        gm.add_submodule(name, module)
        # the ReLU node becomes the fused call: its name and users stay
        node.op, node.target, node.args, node.kwargs = "call_module", name, args, {}
        for dead in (site.add, site.conv):
            if dead is not None:
                gm.graph.erase_node(dead)
        fused += 1
    if fused:
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return fused


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``node`` is a ReLU of one tensor argument (an in-place ReLU included)."""
    if len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU and not node.kwargs
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and set(node.kwargs) <= {"inplace"}
    return node.op == "call_method" and node.target in ("relu", "relu_") and not node.kwargs


def _site(node: fx.Node, modules: dict[str, nn.Module]) -> _Site | None:
    """The fusable site whose output is ``node`` (the ReLU's input), or None."""
    if len(node.users) != 1:
        return None
    if _is_conv(node, modules):
        return _Site(node, None, None)
    if node.op != "call_function" or node.target not in _ADD_FUNCTIONS or len(node.args) != 2 \
            or node.kwargs:
        return None
    a, b = node.args
    for conv, z in ((a, b), (b, a)):
        if isinstance(conv, fx.Node) and conv is not z and len(conv.users) == 1 \
                and _is_conv(conv, modules) and isinstance(z, fx.Node):
            return _Site(conv, node, z)
    return None


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (node.op == "call_module" and type(modules.get(node.target)) is nn.Conv2d
            and len(node.args) == 1 and isinstance(node.args[0], fx.Node) and not node.kwargs)
