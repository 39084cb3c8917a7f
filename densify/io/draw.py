"""Overlays on RGB images: heat maps through OpenCV colormaps, captions and labelled boxes.

Convention:
    Every function takes and returns RGB ``uint8`` ``(H, W, 3)`` arrays and never modifies its
    input. OpenCV's colormaps produce BGR; they are converted to RGB here (:func:`colormap_lut`).
    Boxes are ``(x1, y1, x2, y2)`` in pixels of the image drawn on. Text size and line widths
    scale with the image's shorter side.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..errors import ParameterError
from .image import read_array

__all__ = ["COLORMAPS", "colormap_lut", "overlay_heatmap", "draw_caption", "draw_boxes"]

log = logging.getLogger(__name__)

COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_"):].lower(): getattr(cv2, name)
    for name in sorted(dir(cv2)) if name.startswith("COLORMAP_")
}
"""Name (``"jet"``, ``"turbo"``, ``"inferno"``, ``"viridis"``, ...) -> ``cv2.COLORMAP_*``."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PALETTE = (  # RGB, distinguishable on photos; a label always gets the same one
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
)


def colormap_lut(colormap: str = "jet") -> np.ndarray:
    """The colormap as a ``(256, 3)`` RGB ``uint8`` table: row ``v`` is the colour of ``v``."""
    if colormap not in COLORMAPS:
        raise ParameterError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, COLORMAPS[colormap]).reshape(256, 3)[:, ::-1].copy()


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray | torch.Tensor, alpha: float = 0.5,
                    colormap: str = "jet", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Blend a colour-mapped heat map over the image.

    Shape:
        ``rgb`` ``(H, W, 3)`` uint8; ``heat`` ``(H, W)`` float, the SAME size as the image (resize
        it first with :func:`densify.io.image.resize`).

    Blending: ``v = clip((heat - vmin) / (vmax - vmin), 0, 1)`` is looked up in the colormap
    (256 levels, NaN as ``vmin``) and ``out = (1 - alpha) * rgb + alpha * colour``, rounded.
    ``alpha = 0`` returns the image, ``alpha = 1`` the colour-mapped heat map alone.
    """
    image = read_array(rgb)
    heat = _as_numpy(heat)
    if heat.shape != image.shape[:2]:
        raise ParameterError(f"heat map is {_hw(heat.shape)} but the image is {_hw(image.shape)} "
                         f"(H x W); resize it with densify.io.image.resize(heat, "
                         f"{image.shape[:2]}) first")
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must lie in [0, 1], got {alpha}")
    if not vmax > vmin:
        raise ParameterError(f"vmax must be greater than vmin, got vmin={vmin}, vmax={vmax}")
    lut = colormap_lut(colormap)
    scaled = np.nan_to_num((heat.astype(np.float32) - vmin) / (vmax - vmin), nan=0.0)
    index = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    colour = cv2.applyColorMap(index, lut.reshape(256, 1, 3))  # lut[index], 10x faster
    return cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)


def draw_caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` (``\\n`` splits lines) in white on a dark box at the top-left corner."""
    image = read_array(rgb).copy()
    scale, thickness = _text_style(image)
    lines = text.splitlines() or [""]
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    text_h = max(h for (_, h), _ in sizes)
    pad = max(2, int(round(6 * scale)))
    line_h = text_h + max(base for _, base in sizes) + pad
    box_w = max(w for (w, _), _ in sizes) + 2 * pad
    cv2.rectangle(image, (0, 0), (box_w, pad + line_h * len(lines)), (24, 24, 24), cv2.FILLED)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (pad, pad + i * line_h + text_h), _FONT, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return image


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray | torch.Tensor, labels: Sequence[str],
               scores: np.ndarray | torch.Tensor | Sequence[float] | None = None,
               color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Draw labelled rectangles.

    Shape:
        ``boxes`` ``Tensor[N, 4]`` or ndarray in ``(x1, y1, x2, y2)`` image pixels (rounded, then
        clipped to the image; boxes wholly outside are skipped); ``labels`` ``N`` strings;
        ``scores`` ``N`` values shown after the label as ``cat 0.87``.

    ``color`` is RGB for every box; ``None`` gives each label its own stable palette colour.
    """
    image = read_array(rgb).copy()
    boxes_np = _as_numpy(boxes).astype(np.float64).reshape(-1, 4)
    scores_np = None if scores is None else _as_numpy(scores).reshape(-1)
    if len(labels) != len(boxes_np) or (scores_np is not None and len(scores_np) != len(boxes_np)):
        raise ParameterError(f"draw_boxes: got {len(boxes_np)} boxes, {len(labels)} labels and "
                         f"{'no' if scores_np is None else len(scores_np)} scores; pass one of "
                         "each per box")
    height, width = image.shape[:2]
    scale, thickness = _text_style(image)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(boxes_np)):
        if x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1 or x2 < x1 or y2 < y1:
            continue
        p1 = (int(max(x1, 0)), int(max(y1, 0)))
        p2 = (int(min(x2, width - 1)), int(min(y2, height - 1)))
        box_color = color if color is not None else _label_color(labels[i])
        cv2.rectangle(image, p1, p2, box_color, thickness)
        text = labels[i] if scores_np is None else f"{labels[i]} {float(scores_np[i]):.2f}"
        # Tags no taller than about half the box, so small boxes are not buried under text.
        tag = min(scale, max(0.3, (p2[1] - p1[1]) / 60))
        _draw_label(image, text, p1, box_color, tag, max(1, round(thickness * tag / scale) // 2))
    return image


def _draw_label(image: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, ...],
                scale: float, thickness: int) -> None:
    """A filled tag above the box corner (inside the box when there is no room above)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = corner
    top = y - h - base - 2 if y - h - base - 2 >= 0 else y
    cv2.rectangle(image, (x, top), (x + w + 2, top + h + base + 2), color, cv2.FILLED)
    ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255,) * 3
    cv2.putText(image, text, (x + 1, top + h + 1), _FONT, scale, ink, thickness, cv2.LINE_AA)


def _text_style(image: np.ndarray) -> tuple[float, int]:
    """Font scale and line thickness for an image: readable from 64 px to 8000 px photos."""
    short = min(image.shape[:2])
    scale = max(0.35, short / 800)
    return scale, max(1, int(round(scale * 2)))


def _label_color(label: str) -> tuple[int, int, int]:
    return _PALETTE[zlib.crc32(label.encode("utf-8")) % len(_PALETTE)]


def _as_numpy(values: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape[:2])
