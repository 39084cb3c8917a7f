"""Class maps at image resolution, aggregated across scales, and image-level scores.

Painting rule (one scale), and why:
    Each cell's probability is placed at the CENTRE of its window, mapped to original image
    pixels, and the map is interpolated bilinearly between those centres (clamped to the nearest
    centre beyond the outermost ones). A pixel's value is thus the probability that an object is
    centred there, at the resolution of the stride. Classifiers are trained on objects centred in
    the window (ImageNet centre crops, the digits model's ±3 px), so the centre is where a
    window's answer belongs. Painting the whole window instead (max or mean over the windows
    covering a pixel) smears every peak over a window (224 px for ImageNet nets) and moves the
    peak of an off-centre object by up to half a window; the centre rule keeps it within half a
    stride (tested with a hand-built detector in ``tests/test_heatmap.py``).

Across scales: the mean of the per-scale maps (each scale is one vote; a class seen at only one
scale of six keeps a sixth of its probability). A flipped scale (``Scanner(flip=True)``) is
painted in the mirrored image's frame and then mirrored back, pixel ``x`` to ``W - 1 - x``: it is
one more vote, registered to the original image.

Image-level scores (OverFeat, Sermanet et al. 2013, section 4.2): the spatial maximum of each
class at each scale (and flip), averaged over all of them: 6 scales × 2 flips = 12 vectors in
the paper. They rank :meth:`ScanResult.top_classes`.

Weights: an ensemble's result (:mod:`densify.scan.ensemble`) holds every model's maps, each
with its share of the average (``weights``, summing to 1); heat maps and scores are then the
weighted means instead of the plain ones (``weights=None``).

Shape:
    maps at image resolution are ``(k, H, W)`` float32 for ``k`` chosen classes: never all
    classes at once (1000 ImageNet maps of a 12-megapixel photo would need 48 GB).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ParameterError
from .maps import ScaleMap

__all__ = ["centre_weights", "axis_weights", "scale_heatmap", "nearest_cells", "heatmaps",
           "sampled_maps", "image_scores", "peak"]


def centre_weights(pixels: int, cells: int, scale: float, pad: int, offset: int, window: int,
                   stride: int) -> torch.Tensor:
    """Bilinear interpolation weights ``(pixels, cells)`` along one axis (module docstring).

    Row ``x`` holds the weights of the cells for original pixel ``x`` (centre ``x + 0.5``),
    whose position in the padded input is ``(x + 0.5)·scale + pad``; cell ``j``'s window centre
    is ``offset + j·stride + window / 2``. Each row sums to 1.
    """
    if cells < 1:
        raise ParameterError(f"a scale with {cells} cells along an axis cannot be painted")
    pos = (torch.arange(pixels, dtype=torch.float64) + 0.5) * scale + pad
    u = ((pos - offset - window / 2) / stride).clamp(0, cells - 1)
    lo = u.floor().long().clamp(max=cells - 1)
    hi = (lo + 1).clamp(max=cells - 1)
    frac = (u - lo).float()
    weights = torch.zeros(pixels, cells)
    rows = torch.arange(pixels)
    weights.index_put_((rows, lo), 1 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


def axis_weights(m: ScaleMap, size_hw: Sequence[int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(wy (h, cells_y), wx (w, cells_x))``: :func:`centre_weights` of one scale along each
    axis for a grid of ``size_hw = (h, w)`` pixels covering the whole image (default: the image's
    own pixels); ``wx`` is mirrored for a flipped scale (painting in the mirrored frame, then
    mirroring the map back, is the same as painting with mirrored column weights).

    Pixel ``x`` of the grid sits at original ``(x + 0.5)·W / w``: the one place that registers a
    grid of any size to a scale's cells (heat maps, contact-sheet panels, notebook previews).
    """
    g, (h, w) = m.geometry, m.cells
    height, width = m.level.image_size
    size_hw = (height, width) if size_hw is None else (int(size_hw[0]), int(size_hw[1]))
    top, _, left, _ = m.padding
    fy, fx = m.level.scale
    wy = centre_weights(size_hw[0], h, fy * (height / size_hw[0]), top, g.offset[0], g.window[0],
                        g.stride[0])
    wx = centre_weights(size_hw[1], w, fx * (width / size_hw[1]), left, g.offset[1], g.window[1],
                        g.stride[1])
    return wy, wx.flip(0) if m.flipped else wx


def scale_heatmap(m: ScaleMap, classes: Sequence[int], size_hw: Sequence[int] | None = None
                  ) -> torch.Tensor:
    """``(k, h, w)`` maps of ``classes`` from one scale, painted by the centre rule on a grid of
    ``size_hw`` pixels (default: the image's; :func:`axis_weights`), a flipped scale registered
    back onto the image."""
    wy, wx = axis_weights(m, size_hw)
    probs = m.probs[list(classes)].float()
    return torch.matmul(wy, torch.matmul(probs, wx.T))


def nearest_cells(m: ScaleMap, classes: Sequence[int], size_hw: Sequence[int]) -> torch.Tensor:
    """``(k, h, w)``: each pixel of a ``size_hw`` grid takes the cell whose window centre is
    nearest (the raw cells, so the cell grid stays visible), registered like
    :func:`scale_heatmap`."""
    wy, wx = axis_weights(m, size_hw)
    probs = m.probs[list(classes)].float()
    return probs[:, wy.argmax(1)][:, :, wx.argmax(1)]


def heatmaps(maps: Sequence[ScaleMap], classes: Sequence[int], image_size: Sequence[int],
             weights: Sequence[float] | None = None) -> torch.Tensor:
    """``(k, H, W)`` float32: the mean over scales of :func:`scale_heatmap`, at ``image_size``
    (the image's own size, or any grid covering the whole image: a panel, a preview).

    Computed as one product: each scale's columns are painted first (``probs · wxᵀ``, ``(k, h,
    W)``), the scales are stacked along the cell rows, and one ``(H, Σh) · (Σh, W)`` product
    paints and sums every scale at once: no image-sized map per scale. ``weights``: each map's
    share (summing to 1; module docstring), None: ``1 / len(maps)`` each.
    """
    if not maps:
        raise ParameterError("no scales to aggregate; scan with at least one scale")
    size_hw = (int(image_size[0]), int(image_size[1]))
    rows, cols = [], []
    for i, m in enumerate(maps):
        wy, wx = axis_weights(m, size_hw)
        rows.append(wy if weights is None else wy * (float(weights[i]) * len(maps)))
        cols.append(torch.matmul(m.probs[list(classes)].float(), wx.T))
    out = torch.matmul(torch.cat(rows, dim=1) / len(maps), torch.cat(cols, dim=1))
    return out.contiguous()


def sampled_maps(maps: Sequence[ScaleMap], classes: Sequence[int], size_hw: Sequence[int],
                 weights: Sequence[float] | None = None) -> torch.Tensor:
    """``(k, S + 1, h, w)`` float32 on a ``size_hw`` grid covering the whole image: per class,
    each scale's raw cells (:func:`nearest_cells`), then the aggregate (:func:`heatmaps` at the
    grid's pixels).

    Maps are sampled at the grid's pixel centres, never computed at full resolution and shrunk:
    a contact sheet of a 12-megapixel photo costs panels, not 12-megapixel maps.
    """
    if not maps:
        raise ParameterError("no scales to draw; scan with at least one scale")
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    out = torch.empty(len(classes), len(maps) + 1, *size_hw)
    for s, m in enumerate(maps):
        out[:, s] = nearest_cells(m, classes, size_hw)
    out[:, -1] = heatmaps(maps, classes, size_hw, weights)
    return out


def image_scores(maps: Sequence[ScaleMap], weights: Sequence[float] | None = None
                 ) -> torch.Tensor:
    """``Tensor[K]``: per class, the spatial max at each scale and flip, averaged over them
    (weighted by ``weights``, each map's share, when given)."""
    if not maps:
        raise ParameterError("no scales to score; scan with at least one scale")
    peaks = torch.stack([m.probs.flatten(1).amax(dim=1) for m in maps])
    if weights is None:
        return peaks.mean(dim=0)
    return (torch.as_tensor(weights, dtype=peaks.dtype)[:, None] * peaks).sum(dim=0)


def peak(maps: Sequence[ScaleMap], cls: int) -> tuple[int, int, float]:
    """``(scale index, cell index, probability)`` of the most probable cell of ``cls``.

    The cell index is row-major (``i·w + j``), as in :meth:`ScaleMap.boxes`. Ties go to the
    first scale, then the first cell.
    """
    best = (0, 0, -1.0)
    for s, m in enumerate(maps):
        values = m.probs[cls].flatten()
        cell = int(values.argmax())
        if float(values[cell]) > best[2]:
            best = (s, cell, float(values[cell]))
    return best
