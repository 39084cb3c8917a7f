"""Small layers the dense networks need that torch lacks: dilated average pooling and a
channel-wise layer norm for ``(N, C, H, W)`` maps.

Both have a function and a thin ``nn.Module`` beside it (the timm ``layers/`` pattern).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError

__all__ = ["dilated_avg_pool2d", "DilatedAvgPool2d", "DilatedMaxPool2d", "ChannelLayerNorm",
           "WindowLayer"]


class WindowLayer(nn.Module):
    """Base of densify's own sliding-window layers that are not pools: subclasses have
    ``kernel_size``, ``stride``, ``dilation`` and ``padding`` pairs, which receptive fields and
    stride-1 final pooling read and edit as for a convolution."""


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def dilated_avg_pool2d(x: torch.Tensor, kernel_size, dilation, padding=0,
                       count_include_pad: bool = True) -> torch.Tensor:
    """Stride-1 average pooling whose taps are ``dilation`` pixels apart (``nn.AvgPool2d`` has no
    dilation argument).

    Shape: ``(N, C, H, W) -> (N, C, H + 2·p - d·(k - 1), W + ...)``, per axis, as for a dilated
    convolution. ``padding`` is in input pixels and must be a multiple of ``dilation``.

    Computed by phase decomposition: the input is split into its ``dh × dw`` interleaved sub-grids,
    each is pooled by the ordinary ``F.avg_pool2d`` with padding ``p / d``, and the results are
    interleaved back. Every output value is therefore computed by exactly the same arithmetic as
    the undilated pooling applied to the corresponding shifted sub-grid, which is what makes
    stride-1 "offset" pooling exact.
    """
    k, d, p = _pair(kernel_size), _pair(dilation), _pair(padding)
    if p[0] % d[0] or p[1] % d[1]:
        raise ParameterError(f"padding {p} must be a multiple of dilation {d}")
    return _dilated_avg(x, k, d, p, count_include_pad)


def _dilated_avg(x: torch.Tensor, k: tuple[int, int], d: tuple[int, int], p: tuple[int, int],
                 count_include_pad: bool) -> torch.Tensor:
    if not count_include_pad:
        # Average over in-image taps only: ratio of two zero-padded averages.
        ones = torch.ones_like(x[:1, :1])
        return _dilated_avg_zero_padded(x, k, d, p) / _dilated_avg_zero_padded(ones, k, d, p)
    return _dilated_avg_zero_padded(x, k, d, p)


def _dilated_avg_zero_padded(x: torch.Tensor, k: tuple[int, int], d: tuple[int, int],
                             p: tuple[int, int]) -> torch.Tensor:
    """Core of :func:`dilated_avg_pool2d` with zero padding counted (TorchScript-compatible)."""
    kh, kw = k
    dh, dw = d
    ph, pw = p
    if dh == 1 and dw == 1:
        return F.avg_pool2d(x, [kh, kw], [1, 1], [ph, pw])
    n, c, h, w = x.shape
    hq, wq = (h + dh - 1) // dh, (w + dw - 1) // dw  # phase lengths, rounded up
    # Zeros appended at the bottom/right only reach outputs that are cropped below, or act as the
    # zero padding they replace (padding taps are counted either way).
    x = F.pad(x, [0, wq * dw - w, 0, hq * dh - h])
    # (N, C, Hq·dh, Wq·dw) -> (N, C·dh·dw, Hq, Wq): element (i·dh + r) belongs to phase r, index i.
    x = x.reshape(n, c, hq, dh, wq, dw).permute(0, 1, 3, 5, 2, 4).reshape(n, c * dh * dw, hq, wq)
    y = F.avg_pool2d(x, [kh, kw], [1, 1], [ph // dh, pw // dw])
    oh, ow = y.shape[-2], y.shape[-1]
    y = y.reshape(n, c, dh, dw, oh, ow).permute(0, 1, 4, 2, 5, 3).reshape(n, c, oh * dh, ow * dw)
    out_h = h + 2 * ph - dh * (kh - 1)
    out_w = w + 2 * pw - dw * (kw - 1)
    return y[:, :, :out_h, :out_w]


class DilatedAvgPool2d(nn.Module):
    """Module form of :func:`dilated_avg_pool2d` (stride 1)."""

    def __init__(self, kernel_size, dilation=1, padding=0, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size: tuple[int, int] = _pair(kernel_size)
        self.dilation: tuple[int, int] = _pair(dilation)
        self.padding: tuple[int, int] = _pair(padding)
        self.stride: tuple[int, int] = (1, 1)
        self.count_include_pad = count_include_pad
        if self.padding[0] % self.dilation[0] or self.padding[1] % self.dilation[1]:
            raise ParameterError(f"padding {self.padding} must be a multiple of dilation "
                             f"{self.dilation}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dilated_avg(x, self.kernel_size, self.dilation, self.padding,
                            self.count_include_pad)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, count_include_pad={self.count_include_pad}")


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels of an ``(N, C, H, W)`` map, independently at every cell.

    It replaces a ``LayerNorm(C)`` that a classifier head applied to pooled ``(N, C)`` features.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DilatedMaxPool2d(nn.Module):
    """Stride-1 dilated max pooling with padding larger than half the kernel.

    ``nn.MaxPool2d`` refuses ``padding > kernel_size // 2`` even when dilation makes the effective
    kernel larger (a 3×3 pool with padding 1 dilated by 2 needs padding 2). Max pooling pads with
    ``-inf``, so padding explicitly with ``-inf`` and pooling without padding is the same operation.
    """

    def __init__(self, kernel_size, dilation=1, padding=0, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size: tuple[int, int] = _pair(kernel_size)
        self.dilation: tuple[int, int] = _pair(dilation)
        self.padding: tuple[int, int] = _pair(padding)
        self.stride: tuple[int, int] = (1, 1)
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        x = F.pad(x, [pw, pw, ph, ph], value=float("-inf"))
        return F.max_pool2d(x, list(self.kernel_size), [1, 1], [0, 0], list(self.dilation),
                            self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}"
