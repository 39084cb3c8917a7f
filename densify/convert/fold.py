"""Batch-norm folding: a convolution followed by an eval-mode ``BatchNorm`` becomes one convolution.

In eval mode a batch norm is a per-channel affine map, so ``bn(conv(x))`` equals a convolution
with weights ``w * g / sqrt(var + eps)`` and bias ``(b - mean) * g / sqrt(var + eps) + beta``
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). Folding saves one read and one write of every
normalized activation: ResNets scan faster (docs/performance.md), VGG has nothing to fold.

Only a norm whose input is a convolution used by nothing else is folded (the convolution's raw
output must not be needed elsewhere), and only the exact types ``BatchNorm1d/2d/3d`` after the
matching ``ConvNd`` (timm's ``BatchNormAct2d`` carries an activation and stays). The result is the
same function up to float rounding (within :data:`densify.convert.verify.TOLERANCE`).
"""

from __future__ import annotations

import copy
import logging

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .dense import DenseNet

__all__ = ["fold_batchnorm", "fold_graph"]

log = logging.getLogger(__name__)

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a :class:`DenseNet`, or any classifier ``torch.fx`` can trace) with every
    foldable batch norm (eval mode) folded into the convolution before it.

    A copy unless ``inplace`` (then a DenseNet's graph and modules are changed and the same
    object comes back). Node names are kept; a folded norm's name is replaced by its
    convolution's where the DenseNet refers to it (``feature_node``). A classifier that
    ``torch.fx`` cannot trace comes back unchanged (logged at INFO level).

    Examples:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> folded = fold_batchnorm(net)
        >>> any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        False
        >>> x = torch.randn(1, 3, 8, 8)
        >>> bool(torch.allclose(folded(x), net(x), atol=1e-6))
        True
    """
    if isinstance(model, DenseNet):
        dense = model if inplace else copy.deepcopy(model)
        renamed = fold_graph(dense.net)
        dense.feature_node = renamed.get(dense.feature_node, dense.feature_node)
        return dense
    try:
        gm = fx.symbolic_trace(model if inplace else copy.deepcopy(model))
    except Exception as exc:  # torch.fx cannot trace every classifier: keep it as it is
        log.info("not folding batch norms of %s (%s)", type(model).__name__, exc)
        return model
    fold_graph(gm)
    return gm


def fold_graph(gm: fx.GraphModule) -> dict[str, str]:
    """Fold in place every eval-mode batch norm of ``gm`` that directly follows a convolution
    used only by it; returns ``{folded norm's node name: its convolution's node name}``."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    renamed = {}
    for node in list(gm.graph.nodes):
        conv = _foldable_conv(node, modules)
        if conv is None or calls[conv.target] != 1 or calls[node.target] != 1:
            continue  # a module called twice cannot change for one call
        fused = fuse_conv_bn_eval(modules[conv.target], modules[node.target])
        _set_module(gm, conv.target, fused)
        modules[conv.target] = fused
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
        renamed[node.name] = conv.name
    if renamed:
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
        log.debug("folded %d batch norm(s)", len(renamed))
    return renamed


def _foldable_conv(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The convolution node ``node`` (a batch norm) can be folded into, or None."""
    if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    conv = node.args[0]
    if conv.op != "call_module" or len(conv.users) != 1 or len(node.args) != 1 or node.kwargs:
        return None
    bn, cv = modules.get(node.target), modules.get(conv.target)
    pair = (type(cv), type(bn))
    if pair not in _PAIRS or bn.training or cv.training or not bn.track_running_stats:
        return None
    return conv


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)
