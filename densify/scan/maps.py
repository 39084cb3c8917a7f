"""One scale of a scan: a probability map that knows where each cell looks in the image.

Convention:
    ``ScaleMap.probs`` is ``(K, h, w)`` float32 on the CPU, a softmax over classes per cell; cell
    ``(i, j)`` is the classifier's answer for the window of :attr:`ScaleMap.geometry` at that
    cell, and :meth:`ScaleMap.boxes` maps every window back to ``(x1, y1, x2, y2)`` pixels of the
    ORIGINAL image: ``x = (x_input - pad_left) / fx`` with the realized factor ``fx = w' / W``
    (see :mod:`densify.scan.pyramid` for the rounding and the padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..convert.geometry import Geometry
from .pyramid import Level

__all__ = ["ScaleMap", "Region"]

#: ``(x1, y1, x2, y2)`` in window pixels.
Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class ScaleMap:
    """One scale of a scan.

    Attributes:
        level: factor, resized size, padding (:class:`densify.pyramid.Level`).
        geometry: window, stride and offset of the dense net, in pixels of the padded input.
        probs: ``(K, h, w)`` float32 softmax per cell.
    """

    level: Level
    geometry: Geometry
    probs: torch.Tensor

    @property
    def factor(self) -> float:
        return self.level.factor

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the resized image (before padding)."""
        return self.level.size

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` pixels of mean-colour padding."""
        return self.level.padding

    @property
    def cells(self) -> tuple[int, int]:
        return tuple(self.probs.shape[-2:])

    def boxes(self, region: Region | None = None, clip: bool = True) -> torch.Tensor:
        """``Tensor[h*w, 4]`` (x1, y1, x2, y2) in original image pixels, row-major over cells.

        ``region`` ``(x1, y1, x2, y2)`` in window pixels selects a part of each window (the
        object's extent, :func:`densify.detect.object_region`); ``None`` gives the whole window.
        ``clip`` clips to the image (windows reach into the padding).
        """
        g, (h, w) = self.geometry, self.cells
        boxes = g.cell_boxes(h, w, dtype=torch.float64)
        if region is not None:
            x1, y1, x2, y2 = region
            boxes = torch.stack([boxes[:, 0] + x1, boxes[:, 1] + y1, boxes[:, 0] + x2,
                                 boxes[:, 1] + y2], dim=1)
        top, _, left, _ = self.padding
        fy, fx = self.level.scale
        shift = torch.tensor([left, top, left, top], dtype=torch.float64)
        scale = torch.tensor([fx, fy, fx, fy], dtype=torch.float64)
        boxes = (boxes - shift) / scale
        if clip:
            height, width = self.level.image_size
            limit = torch.tensor([width, height, width, height], dtype=torch.float64)
            boxes = torch.minimum(boxes.clamp(min=0), limit)
        return boxes.float()
