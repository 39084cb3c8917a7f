"""The whole process's memory during a scan: a budget, what the process holds, and lean inputs.

``Scanner(max_memory=...)`` (``--max-memory``) bounds the peak resident memory (RSS) of the
WHOLE process, not one forward pass. At start-up, once the model is converted (the original
classifier released: the scanner keeps one copy of the weights), the process's resident size is
measured (``VmRSS``: interpreter, torch, weights, thread pools): the *fixed cost*. Per scale, the
scanner then counts what it holds on top of that (the decoded image, the scale's input tensor,
the maps of the scales already done and the output buffer of this one) and gives the tiling
(:func:`densify.scan.tiling.forward_tiled`) what remains; the tiling keeps 20 % of that for
allocator slack (:data:`densify.scan.tiling.HEADROOM`).

The minimum budget is the fixed cost plus the smallest tile (a window-sized input, with the
headroom): a smaller one is refused at start-up in one line that states the minimum. On CUDA the
same accounting uses the device's allocated memory instead of RSS. Under a budget, convolutions
with over :data:`CHUNK_BYTES` of weights (VGG's fc6) run in output-channel chunks
(:class:`densify.convert.storage.ChunkedConv2d`), so the per-call re-laid-out weight is a chunk.

The library changes no allocator setting: the command line, when given a budget, has glibc
return freed blocks of 1 MiB and more at once (:func:`densify.runtime.limit_heap_slack`), so that
the resident size follows what the scan holds.

Convention: sizes in bytes; inputs ``(1, C, H, W)`` float32 in ``channels_last`` layout.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .._parse import format_bytes
from ..convert.dense import DenseNet
from ..convert.storage import chunk_convs
from ..io.image import to_tensor
from .pyramid import Level
from .tiling import HEADROOM, TilingError, estimate_bytes

__all__ = ["rss_bytes", "peak_rss_bytes", "MemoryBudget", "CHUNK_BYTES", "chunk_large_convs",
           "level_input"]

log = logging.getLogger(__name__)

#: Under a budget, convolutions with more weight bytes than this run in output-channel chunks.
CHUNK_BYTES = 16 * 2**20


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes (0 where there is no /proc)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def rss_bytes() -> int:
    """The process's resident memory now (``VmRSS``; 0 where /proc is missing)."""
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (``VmHWM``; what ``time -v`` reports)."""
    return _status_bytes("VmHWM")


def chunk_large_convs(dense: DenseNet) -> DenseNet:
    """``dense`` with every convolution whose weight exceeds :data:`CHUNK_BYTES` set to run in
    output-channel chunks (in place, :func:`densify.convert.storage.chunk_convs`; equal outputs):
    a pass then re-lays out one chunk of VGG's 411 MB fc6 weight at a time, not all of it. The
    scanner does this under a memory budget, before measuring it."""
    if chunk_convs(dense, CHUNK_BYTES):
        log.info("large convolutions run in chunks of at most %s of weights",
                 format_bytes(CHUNK_BYTES))
    return dense


def _used_bytes(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_bytes()


@dataclass(frozen=True)
class MemoryBudget:
    """A whole-process memory budget for scans (module docstring).

    Attributes:
        total: the budget in bytes.
        fixed: the process's memory when the scanner was ready (RSS, or CUDA allocated memory).
        smallest_tile: :func:`estimate_bytes` of a window-sized input.
    """

    total: int
    fixed: int
    smallest_tile: int

    @classmethod
    def measure(cls, dense: DenseNet, total: int, dtype: torch.dtype, device: torch.device
                ) -> MemoryBudget:
        """Measure the fixed cost now (``dense`` as it will run: after
        :func:`chunk_large_convs`, under a budget); :class:`TilingError` if ``total`` is below
        the minimum. Changes nothing."""
        gc.collect()
        h, w = dense.input_size[1:]
        budget = cls(int(total), _used_bytes(device), estimate_bytes(dense, h, w, dtype))
        if budget.total < budget.minimum:
            raise TilingError(
                f"max memory {format_bytes(total)} is below the minimum of "
                f"{format_bytes(budget.minimum)} for this model (the process with its weights "
                f"{format_bytes(budget.fixed)} + the smallest tile "
                f"{format_bytes(budget.minimum - budget.fixed)}); raise --max-memory")
        log.info("memory budget %s: fixed %s, smallest tile %s; start-up peak %s",
                 format_bytes(total), format_bytes(budget.fixed),
                 format_bytes(budget.smallest_tile), format_bytes(peak_rss_bytes()))
        return budget

    @property
    def minimum(self) -> int:
        """The smallest budget a scan can run in: the fixed cost plus one smallest tile."""
        return self.fixed + int(self.smallest_tile / (1 - HEADROOM))

    def room(self, held: int, need: int, what: str) -> int:
        """Bytes left for a forward pass while the scan holds ``held`` bytes; ``need`` is what
        the pass needs at least (its input plus a smallest tile). Raises :class:`TilingError`
        (one line naming ``what``) when that does not fit."""
        room = self.total - self.fixed - int(held)
        if room < need + self.smallest_tile / (1 - HEADROOM):
            least = self.total - room + need + int(self.smallest_tile / (1 - HEADROOM))
            raise TilingError(
                f"{what} does not fit in max memory {format_bytes(self.total)}: the process "
                f"holds {format_bytes(self.fixed)}, the image and maps {format_bytes(held)}; "
                f"it needs at least {format_bytes(least)}; raise --max-memory or scan fewer "
                "or smaller scales")
        return room


def level_input(rgb: np.ndarray, level: Level, mean, std, in_chans: int = 3) -> torch.Tensor:
    """The net's input for one level: resized, normalized, padded, ``(1, C, H', W')`` float32
    in ``channels_last`` layout (``H', W' = level.input_size``).

    Equal, value for value, to ``F.pad(to_tensor(resize(rgb, level.size), ...), padding)``, but
    built in one pass: each channel's 256 possible values are normalized once, with the same
    float32 operations in the same order (``/ 255``, ``- mean``, ``/ std``), and OpenCV's
    ``LUT`` writes the looked-up values straight into the padded tensor's interior.
    """
    from ..io.image import resize

    resized = rgb if level.size == tuple(rgb.shape[:2]) else resize(rgb, level.size)
    top, bottom, left, right = level.padding
    if in_chans != 3:
        x = to_tensor(resized, mean, std, in_chans)
        x = F.pad(x, (left, right, top, bottom), value=0.0) if any(level.padding) else x
        return x.contiguous(memory_format=torch.channels_last)
    to_tensor(resized[:1, :1], mean, std, in_chans)  # validates mean and std
    m = torch.as_tensor(tuple(mean), dtype=torch.float32).expand(3)
    s = torch.as_tensor(tuple(std), dtype=torch.float32).expand(3)
    values = torch.arange(256, dtype=torch.float32).view(256, 1)
    lut = ((values / torch.full((3,), 255.0) - m) / s).numpy().reshape(256, 1, 3)
    (h, w), (ph, pw) = level.size, level.input_size
    out = np.zeros((ph, pw, 3), np.float32)  # HWC memory is NCHW channels_last
    inner = out[top:top + h, left:left + w]
    written = cv2.LUT(np.ascontiguousarray(resized), lut, dst=inner)
    if not np.shares_memory(written, out):  # OpenCV wrote elsewhere: copy it in
        inner[...] = written
    return torch.from_numpy(out).permute(2, 0, 1).unsqueeze(0)
