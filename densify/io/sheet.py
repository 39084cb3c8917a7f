"""Contact sheets: a grid of heat-map panels with titles, row labels and a colour bar (OpenCV only).

A sheet has one row per class and one column per map (for a scan: each scale, then the
aggregate); every panel is the same thumbnail of the image, in grey, with that map's colour
(fixed probability scale 0..1, the colour bar's) blended over it with opacity ``0.15 + 0.75 p``:
where a class is absent the photo shows through, where it fires the colour is nearly solid
(:func:`blend`). :meth:`densify.scan.result.ScanResult.sheet` fills a sheet from a scan; this
module knows nothing of scans.

Size rule (:func:`panel_size`, :func:`sheet_layout`):
    A panel's longer side is ``panel`` pixels (default :data:`PANEL` = 240), whatever the image's
    size, the other side follows the aspect ratio; a column is at least :data:`MIN_COLUMN` = 180
    px wide so that its titles fit (a narrower panel is centred in it). Around the panels: a
    heading line, a label column of :data:`LABEL_W` px, a two-line title above each panel and a
    colour bar on the right. A 4000x3000 photo scanned at 6 scales with 5 classes gives 5 rows of
    7 panels of 240x180 px: a sheet of 2042x1222 (W x H) px. Text is ``cv2.FONT_HERSHEY_DUPLEX`` at a
    fixed size (about 13 px capitals), so every sheet reads the same at 100 % zoom.

Convention:
    Arrays are RGB ``uint8`` ``(H, W, 3)``; sizes are ``(H, W)``; boxes are ``(x, y, w, h)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ParameterError
from .draw import colormap_lut

__all__ = ["PANEL", "MIN_COLUMN", "LABEL_W", "LEGEND", "SheetLayout", "panel_size", "sheet_layout",
           "blend", "contact_sheet"]

PANEL = 240
"""Default longer side of a panel, in pixels."""
MIN_COLUMN = 180
"""Smallest column width: two title lines of about 20 characters."""
LABEL_W = 170
"""Width of the row-label column (class name, wrapped, and its score)."""

LEGEND = ("rows: classes (image score) | panels: scale factor, cells (w x h), the class's best "
          "probability at that scale | last column: the mean of the scales")
_MARGIN, _GAP, _HEADING_H, _TITLE_H, _BAR_W = 16, 10, 40, 42, 100
_FONT, _SCALE, _LINE_H = cv2.FONT_HERSHEY_DUPLEX, 0.45, 17
_INK, _MUTED, _PAPER = (20, 20, 20), (90, 90, 90), (255, 255, 255)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on a sheet of ``rows`` x ``cols`` panels of ``panel`` ``(h, w)``."""

    rows: int
    cols: int
    panel: tuple[int, int]

    @property
    def column_w(self) -> int:
        return max(self.panel[1], MIN_COLUMN)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the whole sheet."""
        height = 2 * _MARGIN + _HEADING_H + self.rows * (_TITLE_H + self.panel[0]) + \
            (self.rows - 1) * _GAP
        width = 2 * _MARGIN + LABEL_W + self.cols * self.column_w + (self.cols - 1) * _GAP + _BAR_W
        return height, width

    def panel_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of panel ``(row, col)`` on the sheet."""
        x = _MARGIN + LABEL_W + col * (self.column_w + _GAP) + (self.column_w - self.panel[1]) // 2
        y = _MARGIN + _HEADING_H + row * (_TITLE_H + self.panel[0] + _GAP) + _TITLE_H
        return x, y, self.panel[1], self.panel[0]

    def bar_box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the colour bar: beside the panels, from the first row's top to the
        last row's bottom."""
        _, top, _, _ = self.panel_box(0, 0)
        _, y, _, h = self.panel_box(self.rows - 1, 0)
        x = self.size[1] - _MARGIN - _BAR_W + 20
        return x, top, 18, y + h - top


def panel_size(image_hw: Sequence[int], panel: int = PANEL) -> tuple[int, int]:
    """``(h, w)`` of a panel for an image of ``image_hw``: the longer side is ``panel`` px.

    Examples:
        >>> panel_size((3000, 4000))
        (180, 240)
        >>> panel_size((28, 20))
        (240, 171)
    """
    height, width = (int(v) for v in image_hw)
    if height < 1 or width < 1 or panel < 1:
        raise ParameterError(f"panel_size: image size and panel must be positive, got "
                             f"{tuple(image_hw)} and {panel}")
    factor = panel / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def sheet_layout(rows: int, cols: int, image_hw: Sequence[int], panel: int = PANEL) -> SheetLayout:
    """The layout of a ``rows`` x ``cols`` sheet for an image of ``image_hw`` (module docstring).

    Examples:
        >>> sheet_layout(5, 7, (3000, 4000)).size
        (1222, 2042)
    """
    if rows < 1 or cols < 1:
        raise ParameterError(f"a contact sheet needs at least one row and one column, got "
                             f"{rows} x {cols}")
    return SheetLayout(rows, cols, panel_size(image_hw, panel))


def blend(rgb: np.ndarray, heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """``rgb`` in grey with ``heat``'s colour over it at opacity ``0.15 + 0.75 * p``.

    Shape:
        ``rgb`` ``(h, w, 3)`` uint8, ``heat`` ``(h, w)`` probabilities (clipped to [0, 1]).
    """
    p = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    colour = colormap_lut(colormap)[np.rint(p * 255).astype(np.uint8)]
    opacity = (0.15 + 0.75 * p)[..., None]
    return np.rint(grey * (1.0 - opacity) + colour * opacity).astype(np.uint8)


def contact_sheet(rgb: np.ndarray, heat: np.ndarray, titles: Sequence[Sequence[str]],
                  row_labels: Sequence[str], heading: str = "", colormap: str = "jet"
                  ) -> np.ndarray:
    """Draw a sheet: ``heat[r, c]`` blended over ``rgb`` in panel ``(r, c)``.

    Shape:
        ``rgb`` ``(h, w, 3)`` uint8, the image already at panel size (:func:`panel_size`);
        ``heat`` ``(rows, cols, h, w)`` float probabilities in [0, 1], registered to ``rgb``;
        ``titles`` ``rows`` lists of ``cols`` strings (``\\n`` splits two lines);
        ``row_labels`` ``rows`` strings (first line: the class, wrapped; the rest: muted).

    Returns:
        RGB ``uint8`` ``SheetLayout.size + (3,)``.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 4 or heat.shape[2:] != rgb.shape[:2]:
        raise ParameterError(f"contact_sheet: heat must be (rows, cols, h, w) with (h, w) = the "
                             f"panel image's {rgb.shape[:2]}, got {heat.shape}")
    rows, cols = heat.shape[:2]
    if len(row_labels) != rows or len(titles) != rows or any(len(t) != cols for t in titles):
        raise ParameterError(f"contact_sheet: need {rows} row labels and {rows} x {cols} titles")
    layout = SheetLayout(rows, cols, rgb.shape[:2])
    sheet = np.full((*layout.size, 3), _PAPER, np.uint8)
    _put(sheet, heading, (_MARGIN, _MARGIN + 22), scale=0.6)
    left = _MARGIN + _width(heading, 0.6) + 24
    _put(sheet, _fit(LEGEND, layout.size[1] - left - _MARGIN), (left, _MARGIN + 22), color=_MUTED)
    for r in range(rows):
        for c in range(cols):
            x, y, w, h = layout.panel_box(r, c)
            sheet[y:y + h, x:x + w] = blend(rgb, heat[r, c], colormap)
            for i, line in enumerate(titles[r][c].splitlines()[:2]):
                _put(sheet, _fit(line, layout.column_w), (x, y - _TITLE_H + 14 + i * _LINE_H),
                     color=_INK if i == 0 else _MUTED)
        _row_label(sheet, row_labels[r], layout.panel_box(r, 0)[1])
    _colour_bar(sheet, layout, colormap)
    return sheet


def _row_label(sheet: np.ndarray, label: str, top: int) -> None:
    first, *rest = label.splitlines() or [""]
    lines = _wrap(first, LABEL_W - 12)[:3] + rest
    for i, line in enumerate(lines):
        _put(sheet, _fit(line, LABEL_W - 12), (_MARGIN, top + 14 + i * (_LINE_H + 2)),
             scale=0.5 if i < len(lines) - len(rest) else _SCALE,
             color=_INK if i < len(lines) - len(rest) else _MUTED)


def _colour_bar(sheet: np.ndarray, layout: SheetLayout, colormap: str) -> None:
    x, y, w, h = layout.bar_box()
    lut = colormap_lut(colormap)
    ramp = np.linspace(1.0, 0.0, h)  # top = 1
    sheet[y:y + h, x:x + w] = lut[np.rint(ramp * 255).astype(np.uint8)][:, None, :]
    cv2.rectangle(sheet, (x - 1, y - 1), (x + w, y + h), _MUTED, 1)
    _put(sheet, "probability", (x - 20, y - 10), color=_MUTED)
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        ty = y + int(round((1.0 - value) * (h - 1)))
        cv2.line(sheet, (x + w, ty), (x + w + 5, ty), _INK, 1)
        _put(sheet, f"{value:.2f}", (x + w + 8, ty + 5))


def _put(image: np.ndarray, text: str, org: tuple[int, int], scale: float = _SCALE,
         color: tuple[int, int, int] = _INK) -> None:
    cv2.putText(image, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _width(text: str, scale: float = 0.5) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def _fit(text: str, width: int) -> str:
    """``text``, cut with ``..`` so that it is at most ``width`` px wide at the label size."""
    if _width(text) <= width:
        return text
    while text and _width(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _wrap(text: str, width: int) -> list[str]:
    """Words of ``text`` in lines of at most ``width`` px (a longer word gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _width(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]
