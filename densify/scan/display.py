"""How a scan looks: the notebook preview, contact-sheet panels, and a matplotlib figure.

Which image is drawn on: :attr:`ScanResult.thumbnail`, a copy of the scanned image shrunk to at
most :data:`densify.scan.result.THUMBNAIL_SIDE` px on its longer side that the scanner keeps
(about 3 MB at most; the full image is not kept); a result without one (built by hand, or loaded
from a file) re-reads :attr:`ScanResult.source` when that file still exists, and otherwise draws
the maps on a grey canvas.

Maps at display size are SAMPLED at the display pixels' centres with the scan's own registration
(:func:`densify.scan.heatmap.centre_weights`), never computed at full resolution and shrunk: a
sheet of a 12-megapixel photo costs thumbnails, not 12-megapixel maps. Per-scale panels show the
raw cells (each pixel takes the cell whose window centre is nearest, so the cell grid is
visible); the aggregate panel is the mean over scales of the bilinear maps, i.e.
:meth:`ScanResult.heatmaps` at those pixels.

matplotlib is needed only by :func:`figure` (the ``viz`` extra) and is imported there.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..errors import DensifyError, ParameterError
from ..io.draw import draw_boxes, draw_caption
from ..io.image import read_image, resize, thumbnail
from ..io.sheet import PANEL, blend, contact_sheet, panel_size
from .heatmap import centre_weights
from .maps import ScaleMap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .result import ScanResult

__all__ = ["display_image", "panel_maps", "panel_titles", "sheet", "preview", "caption",
           "png_bytes", "html_preview", "figure"]

log = logging.getLogger(__name__)

PREVIEW_SIDE = 768
"""Longer side of the notebook preview, in pixels."""


def display_image(result: ScanResult, max_side: int) -> np.ndarray:
    """The scanned image (module docstring for where it comes from), longer side <= ``max_side``."""
    rgb = result.thumbnail
    if rgb is None and result.source and Path(result.source).is_file():
        try:
            rgb = read_image(result.source)
        except DensifyError as exc:
            log.warning("cannot re-read %s for display: %s", result.source, exc)
    if rgb is None:
        height, width = result.image_size
        factor = min(1.0, max_side / max(height, width))
        return np.full((max(1, round(height * factor)), max(1, round(width * factor)), 3), 128,
                       np.uint8)
    return thumbnail(rgb, max_side)


def _axis_weights(m: ScaleMap, size_hw: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear weights ``(h_out, cells_y)`` and ``(w_out, cells_x)`` for a ``size_hw`` grid
    covering the whole image: pixel ``x`` of it sits at original ``(x + 0.5) * W / w_out``."""
    g, (h, w) = m.geometry, m.cells
    height, width = m.level.image_size
    top, _, left, _ = m.padding
    fy, fx = m.level.scale
    wy = centre_weights(size_hw[0], h, fy * height / size_hw[0], top, g.offset[0], g.window[0],
                        g.stride[0])
    wx = centre_weights(size_hw[1], w, fx * width / size_hw[1], left, g.offset[1], g.window[1],
                        g.stride[1])
    return wy, wx


def panel_maps(result: ScanResult, classes: Sequence[int], size_hw: Sequence[int]) -> np.ndarray:
    """``(k, S + 1, h, w)`` float32: per class, each scale's raw cells, then the aggregate.

    Shape:
        ``k = len(classes)``, ``S`` scales, ``(h, w) = size_hw`` covering the whole image.
    """
    out = np.zeros((len(classes), len(result.maps) + 1, *size_hw), np.float32)
    for s, m in enumerate(result.maps):
        wy, wx = _axis_weights(m, size_hw)
        probs = m.probs[list(classes)].float()
        nearest = probs[:, wy.argmax(1)][:, :, wx.argmax(1)]
        out[:, s] = nearest.numpy()
        out[:, -1] += torch.einsum("yi,kij,xj->kyx", wy, probs, wx).numpy()
    out[:, -1] /= max(1, len(result.maps))
    return out


def panel_titles(result: ScanResult, classes: Sequence[int]) -> list[list[str]]:
    """Two-line titles per panel: scale factor and cell grid; the class's best probability there
    (the aggregate: the image-level score, the mean over scales of those)."""
    scores = result.scores()
    rows = []
    for cls in classes:
        row = [f"x{m.factor:.3g}  {m.cells[0]}x{m.cells[1]} cells\n"
               f"best {float(m.probs[cls].max()):.3f}" for m in result.maps]
        row.append(f"mean of {len(result.maps)} scales\nscore {float(scores[cls]):.3f}")
        rows.append(row)
    return rows


def sheet(result: ScanResult, classes: Sequence[int | str] | None = None, k: int = 5,
          panel: int = PANEL, colormap: str = "jet", heading: str | None = None) -> np.ndarray:
    """The contact sheet (:mod:`densify.io.sheet`): rows ``classes`` (default: the top ``k``),
    columns each scale then the aggregate. RGB ``uint8``."""
    idx = ([t.index for t in result.top_classes(k)] if classes is None
           else [result.class_index(c) for c in classes])
    if not idx:
        raise ParameterError("no class to draw a contact sheet of; pass classes=[...]")
    size = panel_size(result.image_size, panel)
    rgb = resize(display_image(result, max(size)), size)
    scores = result.scores()
    labels = [f"{result.categories[c]}\nscore {float(scores[c]):.3f}" for c in idx]
    if heading is None:
        name = Path(result.source).name if result.source else "image"
        heading = f"{name}  {result.image_size[0]}x{result.image_size[1]} px (HxW)"
    return contact_sheet(rgb, panel_maps(result, idx, size), panel_titles(result, idx), labels,
                         heading, colormap)


def caption(result: ScanResult, k: int = 3) -> str:
    """``"tabby 0.912, tiger cat 0.051, ..."``: the top ``k`` classes with their scores."""
    return ", ".join(f"{t.name} {t.score:.3f}" for t in result.top_classes(k)) or "no classes"


def preview(result: ScanResult, max_side: int = PREVIEW_SIDE, threshold: float = 0.5,
            max_boxes: int = 20, with_caption: bool = True, colormap: str = "jet") -> np.ndarray:
    """The image (grey) with the top class's aggregate map (:func:`densify.io.sheet.blend`), the
    ``max_boxes`` best detections at ``threshold`` and (``with_caption``) the top classes written
    on it. RGB ``uint8``."""
    rgb = display_image(result, max_side)
    top = result.top_classes(3)
    if top:
        heat = panel_maps(result, [top[0].index], rgb.shape[:2])[0, -1]
        rgb = blend(rgb, heat, colormap)
    found = result.detections(threshold)
    keep = found.scores.argsort(descending=True)[:max_boxes]
    if len(keep):
        fy, fx = rgb.shape[0] / result.image_size[0], rgb.shape[1] / result.image_size[1]
        boxes = found.boxes[keep] * torch.tensor([fx, fy, fx, fy])
        names = [result.categories[int(c)] for c in found.labels[keep]]
        rgb = draw_boxes(rgb, boxes, names, found.scores[keep])
    return draw_caption(rgb, caption(result)) if with_caption else rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG file bytes of an RGB ``uint8`` image."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ParameterError("OpenCV could not encode the preview as PNG")
    return data.tobytes()


def html_preview(result: ScanResult) -> str:
    """A ``<figure>``: the preview (without drawn text) inline as PNG, and the top classes as a
    caption table; no external resources."""
    data = base64.b64encode(png_bytes(preview(result, with_caption=False))).decode("ascii")
    rows = "".join(f"<tr><td>{html.escape(t.name)}</td><td style='text-align:right'>"
                   f"{t.score:.3f}</td><td>x{t.factor:.3g}</td></tr>"
                   for t in result.top_classes(5))
    name = html.escape(Path(result.source).name) if result.source else "image"
    height, width = result.image_size
    return (f"<figure style='margin:0'><img src='data:image/png;base64,{data}' "
            f"style='max-width:100%' alt='heat map of the top class'>"
            f"<figcaption><b>{name}</b> {width}x{height} px, {len(result.maps)} scales"
            f"<table><tr><th>class</th><th>score</th><th>best scale</th></tr>{rows}</table>"
            f"</figcaption></figure>")


def figure(result: ScanResult, classes: Sequence[int | str] | None = None,
           scales: Sequence[int] | None = None, colormap: str = "jet", alpha: float = 0.6
           ) -> Figure:
    """A matplotlib figure: rows ``classes`` (default: the top 3), columns the scales at indices
    ``scales`` (default: all) and the aggregate, the same panels as :func:`sheet`."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParameterError("ScanResult.show needs matplotlib: pip install 'densify[viz]'") from None
    idx = ([t.index for t in result.top_classes(3)] if classes is None
           else [result.class_index(c) for c in classes])
    cols = list(range(len(result.maps))) if scales is None else [int(s) for s in scales]
    if not idx or any(not 0 <= s < len(result.maps) for s in cols):
        raise ParameterError(f"show: need at least one class and scale indices in 0.."
                             f"{len(result.maps) - 1}, got classes={classes}, scales={scales}")
    rgb = display_image(result, 512)
    maps = panel_maps(result, idx, rgb.shape[:2])[:, cols + [len(result.maps)]]
    titles = panel_titles(result, idx)
    fig, axes = plt.subplots(len(idx), len(cols) + 1, squeeze=False,
                             figsize=(2.6 * (len(cols) + 1), 2.4 * len(idx)), layout="constrained")
    for r, cls in enumerate(idx):
        for c, col in enumerate(cols + [len(result.maps)]):
            ax = axes[r, c]
            ax.imshow(rgb)
            shown = ax.imshow(maps[r, c], cmap=colormap, alpha=alpha, vmin=0, vmax=1)
            ax.set_title(titles[r][col], fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(result.categories[cls], fontsize=9)
    fig.colorbar(shown, ax=axes, label="probability", shrink=0.8)
    return fig
