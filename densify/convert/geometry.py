"""Where each output cell of a dense net looks in the input image (pure functions).

Convention (one axis; H and W are independent):

- A dense net has a **window** ``W`` (the canonical input the classifier was built for, e.g. 224),
  a **stride** ``S`` (32, or 16 with stride-1 final pooling) and an **offset** ``o`` (0 unless the
  input was padded). On an input of size ``W + k·S`` the output has ``k + 1`` cells, and cell ``j``
  is the classifier's answer for the window ``[o + j·S, o + j·S + W)``.
- The **receptive field** is larger than the window for zero-padded networks: cell ``j`` depends on
  input pixels ``[rf_offset + j·S, rf_offset + j·S + rf_size)``, where ``rf_offset`` is usually
  negative. Inside the window the dense cell and the classifier on the crop see the same pixels;
  outside it the classifier sees zero padding while the dense net sees the image: that is where
  dense outputs of padded networks differ from crops. For unpadded networks (LeNet-5) the two
  ranges coincide and the equality is exact.
- Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` input pixels, x2/y2 exclusive, ordered
  row-major over cells (``index = i * w + j``).

The numbers are derived from the network's layers by :mod:`densify.convert` (a walk over the graph)
and tested against the network itself by perturbing single pixels (``tests/test_geometry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError

__all__ = ["Geometry", "cell_count"]


def cell_count(size: int, offset: int, window: int, stride: int) -> int:
    """Cells along one axis of ``size`` pixels: ``floor((size - offset - window) / stride) + 1``,
    0 when the window does not fit (the one place this arithmetic lives; TorchScript-compatible).

    Examples:
        >>> cell_count(224 + 2 * 32, 0, 224, 32), cell_count(223, 0, 224, 32)
        (3, 0)
    """
    free = size - offset - window
    return 0 if free < 0 else free // stride + 1


@dataclass(frozen=True)
class Geometry:
    """Window, stride and receptive field of a dense net (see the module docstring).

    Attributes:
        window: ``(H, W)`` canonical input: the crop one output cell classifies.
        stride: ``(sy, sx)`` pixels between neighbouring cells.
        offset: ``(y, x)`` of cell (0, 0)'s window in input pixels.
        rf_size: ``(H, W)`` receptive field of one cell, or ``None`` if a cell depends on the whole
            input (global context layers).
        rf_offset: ``(y, x)`` of cell (0, 0)'s receptive field (negative with zero padding).
    """

    window: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int] = (0, 0)
    rf_size: tuple[int, int] | None = None
    rf_offset: tuple[int, int] = (0, 0)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Cells ``(h, w)`` on an input of ``height × width``: ``floor((size - W) / S) + 1``.

        Inputs smaller than the window give 0 cells along that axis.
        """
        return (cell_count(height, self.offset[0], self.window[0], self.stride[0]),
                cell_count(width, self.offset[1], self.window[1], self.stride[1]))

    def input_size(self, cells_h: int, cells_w: int) -> tuple[int, int]:
        """The smallest input ``(H, W)`` giving ``cells_h × cells_w`` cells."""
        return tuple(
            self.offset[a] + self.window[a] + (c - 1) * self.stride[a]
            for a, c in enumerate((cells_h, cells_w))
        )

    def cell_boxes(self, cells_h: int, cells_w: int, *, receptive_field: bool = False,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Boxes ``Tensor[cells_h * cells_w, 4]`` (x1, y1, x2, y2) of every cell's window, row-major.

        With ``receptive_field=True`` the boxes are the receptive fields instead.

        Examples:
            >>> Geometry(window=(224, 224), stride=(32, 32)).cell_boxes(2, 2)
            tensor([[  0.,   0., 224., 224.],
                    [ 32.,   0., 256., 224.],
                    [  0.,  32., 224., 256.],
                    [ 32.,  32., 256., 256.]])
        """
        if receptive_field and self.rf_size is None:
            raise ParameterError("this net has global context layers: a cell sees the whole input")
        size = self.rf_size if receptive_field else self.window
        off = self.rf_offset if receptive_field else self.offset
        ys = off[0] + torch.arange(cells_h, dtype=dtype) * self.stride[0]
        xs = off[1] + torch.arange(cells_w, dtype=dtype) * self.stride[1]
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        x1, y1 = x1.reshape(-1), y1.reshape(-1)
        return torch.stack([x1, y1, x1 + size[1], y1 + size[0]], dim=1)

    def cells_containing(self, y: int, x: int, cells_h: int, cells_w: int, *,
                         receptive_field: bool = False) -> torch.Tensor:
        """Bool mask ``(cells_h, cells_w)`` of the cells whose window (or receptive field) holds
        pixel ``(y, x)``."""
        boxes = self.cell_boxes(cells_h, cells_w, receptive_field=receptive_field)
        inside = (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])
        return inside.reshape(cells_h, cells_w)

    def interior_cells(self, height: int, width: int, cells_h: int, cells_w: int) -> torch.Tensor:
        """Bool mask of the cells whose receptive field lies inside a ``height × width`` input:
        the cells that zero padding at the input's border cannot reach."""
        boxes = self.cell_boxes(cells_h, cells_w, receptive_field=True)
        inside = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (
            boxes[:, 3] <= height)
        return inside.reshape(cells_h, cells_w)
