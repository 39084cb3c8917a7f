"""Weights without copies: a converted net that shares the classifier's storage, and large
convolutions run in output-channel chunks.

A convolutionized VGG19 holds 548 MB of weights, 411 MB of them in fc6 (a ``7 × 7``
convolution once converted). Three things keep a scan from holding them twice:

- :func:`shared_copy` is the deep copy the converter rewrites: its modules are new, its
  parameters and buffers are new tensors *viewing the classifier's storage* (so the classifier
  is left untouched, and the dense net costs no weight memory while both are alive, as during the
  self-check). A linear layer becomes a convolution whose weight is a view of the linear weight
  (:mod:`densify.convert.fast`). Changing the classifier's weights *in place* afterwards changes
  the dense net's too: ``copy.deepcopy(dense)`` decouples them.
- :func:`to_channels_last` lays the convolution weights out ``channels_last`` (as the scanner runs
  them) one at a time, leaving those above a size as they are: re-laying out fc6 would copy it.
- :class:`ChunkedConv2d` runs a convolution in pieces of its output channels, so the per-call
  re-laid-out copy of the weight (oneDNN's, on the CPU) is one piece, not the whole weight;
  :func:`chunk_convs` swaps it in for every convolution above a size (``--max-memory`` does this,
  :mod:`densify.scan.memory`). Each output channel is the same sum as before, so the result
  equals the unchunked convolution's up to float rounding (the tests compare in float64).

Shapes: convolutions ``(N, C, H, W) -> (N, K, H', W')``; chunks split ``K``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["shared_copy", "shares_storage", "ChunkedConv2d", "chunk_convs", "to_channels_last"]


def shared_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are new tensors on the same storage.

    Examples:
        >>> m = nn.Linear(4, 2)
        >>> c = shared_copy(m)
        >>> c is m, c.weight is m.weight, shares_storage(c.weight, m.weight)
        (False, False, True)
    """
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach()
    return copy.deepcopy(model, memo)


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether tensors ``a`` and ``b`` view the same memory (``untyped_storage``).

    Examples:
        >>> t = torch.zeros(4, 6)
        >>> shares_storage(t.view(2, 12), t), shares_storage(t.clone(), t)
        (True, False)
    """
    if a.is_meta or b.is_meta:
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class ChunkedConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` run ``chunks`` output-channel pieces at a time.

    Built by :meth:`from_conv` on the convolution's own parameters (no copy); ``chunks = 1``
    is the plain convolution. The output is allocated once and each piece written into it.

    Examples:
        >>> conv = nn.Conv2d(3, 10, 3).double()
        >>> x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
        >>> chunked = ChunkedConv2d.from_conv(conv, 4)
        >>> chunked.weight is conv.weight, bool(torch.allclose(chunked(x), conv(x)))
        (True, True)
    """

    chunks: int = 1

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, chunks: int) -> ChunkedConv2d:
        """``conv`` as a :class:`ChunkedConv2d` of ``chunks`` pieces sharing its parameters."""
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta", dtype=conv.weight.dtype)
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("ChunkedConv2d splits plain (groups=1, zero-padded) convolutions only")
        out.weight = conv.weight
        out.bias = conv.bias
        out.chunks = max(1, min(int(chunks), conv.out_channels))
        out.train(conv.training)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunks <= 1:
            return super().forward(x)
        k = self.out_channels
        step = math.ceil(k / self.chunks)
        out = None
        for k0 in range(0, k, step):
            b = None if self.bias is None else self.bias[k0:k0 + step]
            piece = F.conv2d(x, self.weight[k0:k0 + step], b, self.stride, self.padding,
                             self.dilation)
            if out is None:
                layout = (torch.channels_last if piece.is_contiguous(
                    memory_format=torch.channels_last) else torch.contiguous_format)
                out = torch.empty((piece.shape[0], k, *piece.shape[2:]), dtype=piece.dtype,
                                  device=piece.device, memory_format=layout)
            out[:, k0:k0 + step] = piece
            del piece
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunks={self.chunks}"


def _convs(gm: nn.Module):
    for name, m in gm.named_modules():
        if type(m) in (nn.Conv2d, ChunkedConv2d):
            yield name, m


def chunk_convs(net: nn.Module, max_bytes: int) -> int:
    """Run every plain convolution of ``net`` whose weight exceeds ``max_bytes`` in output-channel
    chunks of at most ``max_bytes`` (in place: the module is swapped for a :class:`ChunkedConv2d`
    on the same parameters). Returns how many were chunked.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(64, 256, 7), nn.Conv2d(256, 10, 1))
        >>> chunk_convs(net, 2**20), net[0].chunks, type(net[1]).__name__
        (1, 4, 'Conv2d')
    """
    count = 0
    for name, m in list(_convs(net)):
        size = m.weight.numel() * m.weight.element_size()
        if size <= max_bytes or m.groups != 1 or m.padding_mode != "zeros":
            continue
        chunked = ChunkedConv2d.from_conv(m, math.ceil(size / max_bytes))
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, chunked)
        count += 1
    if count:
        net.__dict__.pop("_densify_live_bytes", None)  # the tiling's per-size estimates
    return count


@torch.no_grad()
def to_channels_last(net: nn.Module, keep_bytes: int = 64 * 2**20) -> nn.Module:
    """``net`` (in place) with each 4-d convolution weight up to ``keep_bytes`` laid out
    ``channels_last``, one at a time; larger ones on the CPU stay as they are (still shared,
    re-laid out per call or per chunk; on a GPU, where the weights were copied to the device
    anyway, all are laid out). Returns ``net``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
        >>> _ = to_channels_last(net, keep_bytes=1000)
        >>> [m.weight.is_contiguous(memory_format=torch.channels_last) for m in net]
        [True, False]
    """
    for _, m in _convs(net):
        w = m.weight
        if w.device.type != "cpu" or w.numel() * w.element_size() <= keep_bytes:
            m.weight = nn.Parameter(w.detach().contiguous(memory_format=torch.channels_last),
                                    requires_grad=w.requires_grad)
    return net
