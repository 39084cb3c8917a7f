"""The pyramid's input built with torch ops on the scanner's device: resize, normalize, pad.

The CPU scan resizes with OpenCV (:func:`densify.io.image.resize`: ``INTER_AREA`` when neither
side grows, ``INTER_LINEAR`` otherwise) and normalizes in NumPy (:func:`densify.scan.memory.level_input`).
On a GPU that host work costs more than the dense pass itself, so there the image goes to the
device once, as ``uint8``, and every level is built from it with the functions below. They
reproduce OpenCV's two filters as separable, gathered taps (each output pixel is a weighted sum
of at most ``ceil(1 / factor) + 1`` input pixels along each axis), so both paths scan the same
input:

- ``"area"`` (shrinking): each output pixel averages the input pixels it covers, a pixel cut by
  the cell's edge weighted by the part inside (OpenCV's ``INTER_AREA`` coverage table);
- ``"linear"`` (growing): bilinear interpolation with half-pixel centres, clamped at the borders
  (``INTER_LINEAR``).

The result is rounded to ``uint8`` values, as OpenCV's is, then normalized with the same float32
operations as the CPU path and padded with zeros (the mean colour). The taps, the mean and the
std are copied to the device once per shape and kept there (:func:`device_constants`): a copy
from ordinary (pageable) host memory may make the host wait for the device's queue, and the
pyramid's shapes repeat from image to image, so after the first image a level is built without
any transfer. Tolerance (tested in
``tests/test_preprocess.py``): OpenCV computes ``INTER_LINEAR`` in 11-bit fixed point and
``INTER_AREA`` in float32 with its own summation order, so a pixel whose exact value lies near
a rounding boundary may come out one grey level apart; no pixel differs by more than 1/255
before normalization, and the padding and the normalization are identical.

Shape:
    images ``(N, H, W, C)`` ``uint8`` (as decoded: RGB, channels last) on any device; levels
    ``(N, C', H', W')`` float32 in ``channels_last`` memory (``C'`` = the net's input channels,
    ``H', W'`` = :attr:`densify.scan.pyramid.Level.input_size`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from .pyramid import Level

__all__ = ["RESIZE_MODES", "resize_taps", "device_constants", "resize", "resize_grey_levels",
           "normalize", "level_batch", "upload"]

#: The filters :func:`resize` reproduces, named as in the module docstring.
RESIZE_MODES = ("area", "linear")

#: OpenCV's grey-level weights for ``RGB2GRAY`` (:func:`densify.io.image.to_tensor`).
_GRAY = (0.299, 0.587, 0.114)

#: OpenCV computes INTER_LINEAR on 8-bit images with coefficients in units of 1/2048.
_COEF_SCALE = 2048


@functools.lru_cache(maxsize=256)
def _taps(src: int, dst: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(index (dst, T) int64, weight (dst, T) float32)`` (see :func:`resize_taps`)."""
    scale = src / dst
    rows: list[list[tuple[int, float]]] = []
    if mode == "linear":
        for d in range(dst):
            pos = (d + 0.5) * scale - 0.5
            s = math.floor(pos)
            frac = pos - s
            if s < 0:
                s, frac = 0, 0.0
            if s >= src - 1:
                s, frac = src - 1, 0.0
            a = round((1.0 - frac) * _COEF_SCALE) / _COEF_SCALE  # OpenCV's 11-bit coefficients
            rows.append([(s, a), (min(s + 1, src - 1), 1.0 - a)])
    elif mode == "area":
        for d in range(dst):  # OpenCV's computeResizeAreaTab, one output pixel at a time
            f1 = d * scale
            f2 = f1 + scale
            s1, s2 = math.ceil(f1), math.floor(f2)
            s2 = min(s2, src - 1)
            s1 = min(s1, s2)
            cell = min(scale, src - f1)
            row = []
            if s1 - f1 > 1e-3:
                row.append((s1 - 1, (s1 - f1) / cell))
            row.extend((s, 1.0 / cell) for s in range(s1, s2))
            if f2 - s2 > 1e-3:
                row.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
            rows.append(row)
    else:
        raise ParameterError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    width = max(len(r) for r in rows)
    index = np.zeros((dst, width), np.int64)
    weight = np.zeros((dst, width), np.float32)
    for d, row in enumerate(rows):
        for t, (s, w) in enumerate(row):
            index[d, t], weight[d, t] = s, w
    return index, weight


def resize_taps(src: int, dst: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The taps that resize one axis from ``src`` to ``dst`` pixels: ``(index, weight)``, both
    ``(dst, T)``; output pixel ``d`` is ``sum_t weight[d, t] · input[index[d, t]]``. Each row
    sums to 1.

    Examples:
        Halving averages pixel pairs; doubling interpolates with half-pixel centres:

        >>> resize_taps(4, 2, "area")[0].tolist(), resize_taps(4, 2, "area")[1].tolist()
        ([[0, 1], [2, 3]], [[0.5, 0.5], [0.5, 0.5]])
        >>> resize_taps(2, 4, "linear")[1].tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0]]
    """
    if src < 1 or dst < 1:
        raise ParameterError(f"resize: sizes must be positive, got {src} -> {dst}")
    index, weight = _taps(int(src), int(dst), mode)
    return torch.from_numpy(index), torch.from_numpy(weight)


@functools.lru_cache(maxsize=512)
def device_constants(key: tuple, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The constant tensors a level is built with, on ``device``, made and copied there once per
    ``key`` and kept (at most 512 keys, the least recently used dropped first); the caller must
    not change them. Keys: ``("taps", src, dst, mode)`` (:func:`resize_taps`),
    ``("coef", src, dst)`` (the linear taps' index and 11-bit integer coefficients),
    ``("channels", values, in_chans)`` (one mean or std value per channel, ``(1, C, 1, 1)``),
    ``("gray",)`` (OpenCV's grey weights, ``(1, 3, 1, 1)``).

    Examples:
        >>> cpu = torch.device("cpu")
        >>> index, weight = device_constants(("taps", 4, 2, "area"), cpu)
        >>> device_constants(("taps", 4, 2, "area"), cpu)[1] is weight   # kept, not remade
        True
    """
    with torch.inference_mode(False):  # ordinary tensors, usable outside a scan's inference mode
        return _constants(key, device)


def _constants(key: tuple, device: torch.device) -> tuple[torch.Tensor, ...]:
    kind, *args = key
    if kind == "taps":
        tensors = resize_taps(*args)
    elif kind == "coef":
        index, weight = resize_taps(*args, "linear")
        tensors = index, (weight * _COEF_SCALE).round().int()
    elif kind == "channels":
        values, in_chans = args
        tensors = (torch.tensor(values, dtype=torch.float32).expand(in_chans)
                   .reshape(1, in_chans, 1, 1),)
    elif kind == "gray":
        tensors = (torch.tensor(_GRAY, dtype=torch.float32).view(1, 3, 1, 1),)
    else:
        raise ValueError(f"unknown constant {key!r}")
    if device.type == "cuda":  # through pinned memory: the copy does not wait for the queue
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    return tuple(t.to(device) for t in tensors)


def _resize_axis(x: torch.Tensor, dim: int, dst: int, mode: str) -> torch.Tensor:
    src = x.shape[dim]
    if src == dst:
        return x
    index, weight = device_constants(("taps", src, dst, mode), x.device)
    taps = x.index_select(dim, index.flatten())  # the axis becomes dst·T long
    shape = list(x.shape)
    shape[dim:dim + 1] = [dst, index.shape[1]]
    taps = taps.view(shape)
    view = [1] * taps.ndim
    view[dim], view[dim + 1] = dst, index.shape[1]
    return (taps * weight.view(view)).sum(dim + 1)


def resize(images: torch.Tensor, size_hw: Sequence[int], mode: str | None = None) -> torch.Tensor:
    """Resize float ``(N, C, H, W)`` images to ``size_hw`` with OpenCV's filter (module
    docstring); ``mode`` defaults as :func:`densify.io.image.resize` chooses: ``"area"`` when
    neither side grows, else ``"linear"``. Values are not rounded.

    Examples:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> resize(x, (2, 2)).squeeze().tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    height, width = (int(v) for v in size_hw)
    if images.ndim != 4 or not images.is_floating_point():
        raise ParameterError(f"resize: expected float (N, C, H, W) images, got "
                             f"{tuple(images.shape)} {images.dtype}")
    if mode is None:
        mode = "area" if height <= images.shape[2] and width <= images.shape[3] else "linear"
    out = _resize_axis(images, 2, height, mode)
    return _resize_axis(out, 3, width, mode)


def resize_grey_levels(images: torch.Tensor, size_hw: Sequence[int]) -> torch.Tensor:
    """``uint8`` ``(N, C, H, W)`` images resized as OpenCV resizes 8-bit images, as float32 grey
    levels (whole numbers in [0, 255]); the same size is returned as is (converted to float).

    ``"area"``: the coverage average, rounded half up (OpenCV's integer-factor path; its
    fractional path rounds half to even, which differs only on exact halves). ``"linear"``:
    OpenCV's fixed-point arithmetic, emulated in int32: 11-bit coefficients, the horizontal pass
    exact, the vertical one as its SIMD code computes it (``((h >> 4) · beta) >> 16`` per row,
    summed, then ``(y + 2) >> 2``).
    """
    height, width = (int(v) for v in size_hw)
    if (height, width) == tuple(images.shape[-2:]):
        return images.float()
    if height <= images.shape[2] and width <= images.shape[3]:
        return resize(images.float(), (height, width), "area").add_(0.5).floor_().clamp_(0, 255)
    rows = _fixed_point_pass(images.int(), 3, width)  # grey levels x 2048
    return _fixed_point_pass(rows >> 4, 2, height, vertical=True).clamp_(0, 255).float()


def _fixed_point_pass(x: torch.Tensor, dim: int, dst: int, vertical: bool = False) -> torch.Tensor:
    index, coef = device_constants(("coef", x.shape[dim], dst), x.device)
    view = [1] * (x.ndim + 1)
    view[dim], view[dim + 1] = dst, 2
    shape = list(x.shape)
    shape[dim:dim + 1] = [dst, 2]
    taps = x.index_select(dim, index.flatten()).view(shape) * coef.view(view)
    if not vertical:
        return taps.sum(dim + 1)
    return ((taps >> 16).sum(dim + 1) + 2) >> 2


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              in_chans: int = 3) -> torch.Tensor:
    """``(x / 255 - mean) / std`` of float ``(N, 3, H, W)`` RGB grey levels, in float32, with the
    CPU path's operations in its order; ``in_chans == 1`` first takes OpenCV's grey
    (0.299 R + 0.587 G + 0.114 B, in float32)."""
    if in_chans not in (1, 3):
        raise ParameterError(f"in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")
    x = images.float() / 255.0
    if in_chans == 1:
        x = (x * device_constants(("gray",), x.device)[0]).sum(1, keepdim=True)
    m = _channel_values(mean, in_chans, "mean", x.device)
    s = _channel_values(std, in_chans, "std", x.device)
    return (x - m) / s


def _channel_values(values: Sequence[float], in_chans: int, what: str, device) -> torch.Tensor:
    flat = tuple(float(v) for v in torch.as_tensor(tuple(values), dtype=torch.float32).flatten())
    if len(flat) not in (1, in_chans):
        raise ParameterError(f"{what} has {len(flat)} values but the model takes {in_chans} "
                             "channels; give one value per channel")
    if what == "std" and any(v <= 0 for v in flat):
        raise ParameterError(f"std must be positive, got {tuple(values)}")
    return device_constants(("channels", flat, in_chans), device)[0]


def level_batch(images: torch.Tensor, level: Level, mean: Sequence[float], std: Sequence[float],
                in_chans: int = 3) -> torch.Tensor:
    """The net's input for one level of every image in ``images``: resized (OpenCV's filter,
    rounded to grey levels), normalized and padded with zeros, ``(N, in_chans, H', W')`` float32
    in ``channels_last`` memory, on ``images``' device.

    Shape:
        ``images``: ``(N, H, W, 3)`` ``uint8`` RGB, all of ``level.image_size``.

    Examples:
        >>> from densify.scan.pyramid import levels
        >>> level = levels((60, 80), (28, 28), (4, 4), scales=[0.5])[0]
        >>> rgb = torch.full((2, 60, 80, 3), 255, dtype=torch.uint8)
        >>> x = level_batch(rgb, level, mean=(0.5,), std=(0.5,))
        >>> tuple(x.shape), level.padding, float(x[0, 0, 0, 0]), float(x[0, 0, 14, 20])
        ((2, 3, 32, 40), (1, 1, 0, 0), 0.0, 1.0)
    """
    if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[-1] != 3:
        raise ParameterError(f"expected (N, H, W, 3) uint8 RGB images, got {tuple(images.shape)} "
                             f"{images.dtype}")
    if tuple(images.shape[1:3]) != tuple(level.image_size):
        raise ParameterError(f"images are {tuple(images.shape[1:3])}, the level was planned for "
                             f"{level.image_size}")
    x = resize_grey_levels(images.permute(0, 3, 1, 2), level.size)
    x = normalize(x, mean, std, in_chans)
    top, bottom, left, right = level.padding
    if any(level.padding):
        x = F.pad(x, (left, right, top, bottom), value=0.0)
    return x.contiguous(memory_format=torch.channels_last)


def upload(rgb: np.ndarray | Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """``(N, H, W, 3)`` ``uint8`` on ``device`` from one ``(H, W, 3)`` array or several of one
    size: on CUDA through pinned host memory, asynchronously (the copy overlaps the work already
    queued); elsewhere without a copy where possible."""
    arrays = [rgb] if isinstance(rgb, np.ndarray) else list(rgb)
    if device.type != "cuda":
        return torch.from_numpy(np.stack(arrays) if len(arrays) > 1 else arrays[0][None]).to(device)
    host = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8, pin_memory=True)
    for i, array in enumerate(arrays):  # each image copied once, straight into pinned memory
        host[i].numpy()[...] = array
    return host.to(device, non_blocking=True)
