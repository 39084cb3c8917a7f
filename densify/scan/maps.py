"""One scale of a scan: a probability map that knows where each cell looks in the image.

Convention:
    ``ScaleMap.probs`` is ``(K, h, w)`` float32 on the CPU, a softmax over classes per cell; cell
    ``(i, j)`` is the classifier's answer for the window of :attr:`ScaleMap.geometry` at that
    cell, and :meth:`ScaleMap.boxes` maps every window back to ``(x1, y1, x2, y2)`` pixels of the
    ORIGINAL image: ``x = (x_input - pad_left) / fx`` with the realized factor ``fx = w' / W``
    (see :mod:`densify.scan.pyramid` for the rounding and the padding).

Flipped scales (``Scanner(flip=True)``, OverFeat's horizontal flips): the net ran on the
mirrored image, so ``probs`` is laid out in the mirrored frame: cell ``j`` is the window that
starts at ``x`` in the mirrored (resized, padded) input. :meth:`ScaleMap.boxes` registers it back:
a mirrored box ``[x1, x2)`` of an image ``W`` wide is ``[W - x2, W - x1)`` in the original, i.e. a
window starts at ``W - window - x``. Heat maps flip the painted map (:mod:`densify.scan.heatmap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..convert.geometry import Geometry
from ..errors import ParameterError
from .pyramid import Level

__all__ = ["ScaleMap", "Region", "BOX_FORMATS"]

#: How a box-regression output reads (:meth:`ScaleMap.regressed_boxes`).
BOX_FORMATS = ("offsets", "deltas")

#: ``(x1, y1, x2, y2)`` in window pixels.
Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class ScaleMap:
    """One scale of a scan.

    Attributes:
        level: factor, resized size, padding (:class:`densify.scan.pyramid.Level`).
        geometry: window, stride and offset of the dense net, in pixels of the padded input.
        probs: ``(K, h, w)`` float32 softmax per cell.
        regression: ``(4, h, w)`` (class-agnostic) or ``(4·K, h, w)`` (class-major: channels
            ``4k..4k+3`` for class ``k``) raw float32 box regression per cell, or None.
        box_format: how :attr:`regression` reads (:data:`BOX_FORMATS`, :meth:`regressed_boxes`).
        flipped: the scale ran on the horizontally mirrored image (module docstring).
    """

    level: Level
    geometry: Geometry
    probs: torch.Tensor
    regression: torch.Tensor | None = None
    box_format: str = "offsets"
    flipped: bool = False

    def __post_init__(self) -> None:
        reg = self.regression
        if reg is None:
            return
        num, cells = self.probs.shape[0], tuple(self.probs.shape[-2:])
        if reg.dim() != 3 or reg.shape[0] not in (4, 4 * num):
            raise ParameterError(
                f"box regression of shape {tuple(reg.shape)} for {num} classes; give (4, h, w) "
                f"(one box per cell) or ({4 * num}, h, w) (4 x {num}: one box per class, "
                "class-major): make the box head output 4 or 4 x classes channels")
        if tuple(reg.shape[-2:]) != cells:
            raise ParameterError(f"box regression covers {tuple(reg.shape[-2:])} cells, the "
                                 f"class map {cells}; give both outputs of the same scan")

    @property
    def per_class(self) -> bool:
        """Whether :attr:`regression` holds one box per class (``4·K`` channels)."""
        return self.regression is not None and self.regression.shape[0] != 4

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
        object's extent, :func:`densify.scan.detect.object_region`); ``None`` gives the whole window.
        ``clip`` clips to the image (windows reach into the padding). Boxes of a flipped scale
        are registered back onto the original image (module docstring).
        """
        g, (h, w) = self.geometry, self.cells
        boxes = g.cell_boxes(h, w, dtype=torch.float64)
        if region is not None:
            x1, y1, x2, y2 = region
            boxes = torch.stack([boxes[:, 0] + x1, boxes[:, 1] + y1, boxes[:, 0] + x2,
                                 boxes[:, 1] + y2], dim=1)
        return self._to_image(boxes, clip)

    def regressed_boxes(self, cls: int = 0, clip: bool = True) -> torch.Tensor:
        """``Tensor[h*w, 4]`` (x1, y1, x2, y2) of class ``cls``'s regressed box per cell, in
        original image pixels, row-major over cells (same mapping as :meth:`boxes`). A
        class-agnostic regression (4 channels) gives every class the same box; a per-class one
        (``4·K``) class ``cls``'s channels ``4·cls .. 4·cls+3``.

        ``box_format="offsets"``: ``(dx1, dy1, dx2, dy2)`` move each edge of the cell's window
        ``(wx1, wy1, wx2, wy2)`` by that fraction of the window size (``x1 = wx1 + dx1·ww``,
        ``y1 = wy1 + dy1·wh``, ``x2 = wx2 + dx2·ww``, ``y2 = wy2 + dy2·wh``); ``"deltas"``:
        R-CNN ``(dx, dy, log dw, log dh)``: centre ``(cx + dx·ww, cy + dy·wh)``, size
        ``(ww·e^dw, wh·e^dh)``.
        """
        if self.regression is None:
            raise ParameterError("this scan has no box regression; scan with boxes= (the "
                                 "box-regression output)")
        reg = self.regression.double()
        if self.per_class:
            num = self.probs.shape[0]
            if not 0 <= cls < num:
                raise ParameterError(f"class {cls} out of range 0..{num - 1} for the per-class "
                                     "box regression; give a class index of the model")
            reg = reg[4 * cls:4 * cls + 4]
        d = reg.flatten(1).T  # (h*w, 4)
        win = self.geometry.cell_boxes(*self.cells, dtype=torch.float64)
        ww, wh = win[:, 2] - win[:, 0], win[:, 3] - win[:, 1]
        if self.box_format == "offsets":
            boxes = win + d * torch.stack([ww, wh, ww, wh], dim=1)
        elif self.box_format == "deltas":
            cx = (win[:, 0] + win[:, 2]) / 2 + d[:, 0] * ww
            cy = (win[:, 1] + win[:, 3]) / 2 + d[:, 1] * wh
            w, h = ww * d[:, 2].exp(), wh * d[:, 3].exp()
            boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        else:
            raise ParameterError(f"unknown box format {self.box_format!r}; use one of "
                                 f"{', '.join(BOX_FORMATS)}")
        return self._to_image(boxes, clip)

    def _to_image(self, boxes: torch.Tensor, clip: bool) -> torch.Tensor:
        """Boxes in padded-input pixels (float64) → original image pixels (float32)."""
        top, _, left, _ = self.padding
        fy, fx = self.level.scale
        shift = torch.tensor([left, top, left, top], dtype=torch.float64)
        scale = torch.tensor([fx, fy, fx, fy], dtype=torch.float64)
        boxes = (boxes - shift) / scale
        height, width = self.level.image_size
        if self.flipped:
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                                 boxes[:, 3]], dim=1)
        if clip:
            limit = torch.tensor([width, height, width, height], dtype=torch.float64)
            boxes = torch.minimum(boxes.clamp(min=0), limit)
        return boxes.float()
