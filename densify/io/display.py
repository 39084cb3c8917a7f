"""Pictures of a scan, drawn from arrays: the notebook preview, its HTML, PNG bytes, a figure.

As in torchvision's drawing utilities, every function here takes arrays (an RGB image, maps,
boxes, labels, titles) and returns an image, HTML or a figure; none knows what a scan is.
:class:`densify.scan.result.ScanResult` decides what to draw (which image, which classes, which
maps, at which size) and calls these; the contact sheet is :func:`densify.io.sheet.contact_sheet`.

matplotlib is needed only by :func:`figure` (the ``viz`` extra) and is imported there.

Convention:
    Images are RGB ``uint8`` ``(H, W, 3)``; maps are probabilities in ``[0, 1]``; boxes are
    ``(x1, y1, x2, y2)`` in the image's pixels.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import ParameterError
from .draw import draw_boxes, draw_caption
from .sheet import blend

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

__all__ = ["PREVIEW_SIDE", "preview", "png_bytes", "html_figure", "figure"]

PREVIEW_SIDE = 768
"""Longer side of the notebook preview, in pixels."""


def preview(rgb: np.ndarray, heat: np.ndarray | None = None,
            boxes: np.ndarray | torch.Tensor | None = None, labels: Sequence[str] = (),
            scores: Sequence[float] | None = None, caption: str | None = None,
            colormap: str = "jet") -> np.ndarray:
    """``rgb`` in grey with ``heat`` blended in (:func:`densify.io.sheet.blend`; ``(H, W)`` in
    ``[0, 1]``), ``boxes`` with their ``labels`` and ``scores`` drawn
    (:func:`densify.io.draw.draw_boxes`) and ``caption`` written at the top. RGB ``uint8``.

    Shape:
        ``rgb`` ``(H, W, 3)``; ``heat`` ``(H, W)``; ``boxes`` ``(N, 4)`` in ``rgb``'s pixels.
    """
    out = rgb if heat is None else blend(rgb, heat, colormap)
    if boxes is not None and len(boxes):
        out = draw_boxes(out, boxes, labels, scores)
    return draw_caption(out, caption) if caption else out


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG file bytes of an RGB ``uint8`` image."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ParameterError("OpenCV could not encode the preview as PNG")
    return data.tobytes()


def html_figure(rgb: np.ndarray, name: str, details: str,
                rows: Sequence[tuple[str, float, float]],
                alt: str = "heat map of the top class") -> str:
    """A ``<figure>``: ``rgb`` inline as PNG, then ``name`` (bold) and ``details`` as caption and
    a table of ``rows`` ``(class, score, best scale factor)``. Text is escaped; no external
    resources."""
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    body = "".join(f"<tr><td>{html.escape(cls)}</td><td style='text-align:right'>"
                   f"{score:.3f}</td><td>x{factor:.3g}</td></tr>" for cls, score, factor in rows)
    return (f"<figure style='margin:0'><img src='data:image/png;base64,{data}' "
            f"style='max-width:100%' alt='{html.escape(alt)}'>"
            f"<figcaption><b>{html.escape(name)}</b> {html.escape(details)}"
            f"<table><tr><th>class</th><th>score</th><th>best scale</th></tr>{body}</table>"
            f"</figcaption></figure>")


def figure(rgb: np.ndarray, maps: np.ndarray, titles: Sequence[Sequence[str]],
           row_labels: Sequence[str], colormap: str = "jet", alpha: float = 0.6) -> Figure:
    """A matplotlib figure of ``maps`` over ``rgb``: one row per label, one panel per map, each
    titled, with one colour bar for the probability.

    Shape:
        ``rgb`` ``(h, w, 3)``; ``maps`` ``(rows, cols, h, w)``; ``titles`` ``rows × cols``.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParameterError("ScanResult.show needs matplotlib: pip install 'densify[viz]'") from None
    rows, cols = maps.shape[:2]
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(2.6 * cols, 2.4 * rows),
                             layout="constrained")
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(rgb)
            shown = ax.imshow(maps[r, c], cmap=colormap, alpha=alpha, vmin=0, vmax=1)
            ax.set_title(titles[r][c], fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    fig.colorbar(shown, ax=axes, label="probability", shrink=0.8)
    return fig
