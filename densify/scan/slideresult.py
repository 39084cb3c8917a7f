"""A slide scan's heat-map store read back lazily, and its overview picture.

    result = load_slide_result("slide_heatmap.ome.zarr")   # opens; reads no map yet
    result.categories                                      # the stored classes' names
    heat = result.heatmap("tumour", level=2)               # (h, w) float32: one class, one level
    png = overview(slide, result)                          # RGB: the slide with the map over it

The store is what :func:`densify.scan.stream.scan_slide` writes (:mod:`densify.io.omezarr`):
levels ``"0"``, ``"1"``, ... of ``(K, h, w)`` float32 probabilities (NaN where a corrupt tile left
cells missing) and, under the attribute ``densify``, the geometry, the class names and the
transform from cells to the slide's level-0 pixels.

Convention: maps ``(h, w)`` per class; pixel coordinates with pixel ``i`` centred at ``i``
(napari's), in level-0 pixels (microns when the store's unit is ``micrometer``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ResultError
from ..io.draw import draw_boxes, overlay_heatmap
from ..io.image import resize, thumbnail
from ..io.omezarr import open_map_store
from ..io.slides import CorruptTileError, Slide
from .result import class_index

__all__ = ["SlideResult", "load_slide_result", "slide_thumbnail", "overview"]


@dataclass(frozen=True)
class SlideResult:
    """A heat-map store opened lazily.

    Attributes:
        path: the store.
        group: the zarr group (arrays read chunk by chunk on indexing).
        info: the ``densify`` attributes (geometry, classes, slide, transform, missing tiles).
    """

    path: Path
    group: object
    info: dict

    @property
    def categories(self) -> tuple[str, ...]:
        """Names of the stored classes, in store order."""
        return tuple(self.info["categories"][c] for c in self.info["classes"])

    @property
    def levels(self) -> int:
        return len(self.group.attrs["multiscales"][0]["datasets"])

    def array(self, level: int = 0):
        """The zarr array of ``level``: ``(K, h, w)``, not read."""
        return self.group[str(level)]

    def channel(self, cls: int | str) -> int:
        """The store channel of a class name (or any unambiguous part) or a store index."""
        return class_index(self.categories, cls)

    def heatmap(self, cls: int | str, level: int = 0) -> np.ndarray:
        """``(h, w)`` float32 probabilities of one class at ``level`` (reads only those chunks)."""
        return np.asarray(self.array(level)[self.channel(cls)])

    def transform(self, level: int = 0) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translation)`` ``(y, x)`` of ``level``'s cells in slide coordinates."""
        t = self.group.attrs["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        return tuple(t[0]["scale"][1:]), tuple(t[1]["translation"][1:])


def load_slide_result(path: str | Path) -> SlideResult:
    """Open a store :func:`densify.scan.stream.scan_slide` wrote; :class:`ResultError` (one
    line) for anything else."""
    group = open_map_store(path)
    info = dict(group.attrs).get("densify")
    if not isinstance(info, dict) or info.get("format") != "densify-slide-heatmap":
        raise ResultError(f"{path}: an OME-Zarr store without densify's slide attributes; it was "
                          "not written by densify slide")
    return SlideResult(Path(path), group, info)


def slide_thumbnail(slide: Slide, side: int, block: int = 4096) -> np.ndarray:
    """``(h, w, 3)`` uint8 of the whole slide, longer side ``side`` (or less when the slide is
    smaller), from the coarsest level at least that large, read ``block`` px at a time (a slide
    without a pyramid is never decoded whole).

    Shape: ``h / w`` follows level 0's aspect, rounded. Corrupt file tiles are black (the scan
    marked their cells missing; :class:`~densify.io.slides.CorruptTileError`).
    """
    fit = [lv.index for lv in slide.levels if max(lv.size) >= side]
    level = max(fit) if fit else 0
    height, width = slide.levels[level].size
    if max(height, width) <= 2 * side:
        return thumbnail(_read_region(slide, level, 0, 0, height, width), side)
    f = side / max(height, width)
    out = np.zeros((max(1, round(height * f)), max(1, round(width * f)), 3), np.uint8)
    step = max(1, round(block * f))  # output pixels per block; the source spans follow them
    for y0 in range(0, out.shape[0], step):
        y1 = min(out.shape[0], y0 + step)
        sy0, sy1 = math.floor(y0 / f), min(height, math.ceil(y1 / f))
        for x0 in range(0, out.shape[1], step):
            x1 = min(out.shape[1], x0 + step)
            sx0, sx1 = math.floor(x0 / f), min(width, math.ceil(x1 / f))
            region = _read_region(slide, level, sy0, sx0, sy1 - sy0, sx1 - sx0)
            out[y0:y1, x0:x1] = resize(region, (y1 - y0, x1 - x0))
    return out


def _read_region(slide: Slide, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
    """``slide.read_region``, corrupt tiles left black."""
    try:
        return slide.read_region(level, y, x, h, w)
    except CorruptTileError as exc:
        return exc.region


def _heat_on(result: SlideResult, shape: tuple[int, int], image_size: tuple[int, int],
             channels: Sequence[int]) -> np.ndarray:
    """The maximum over ``channels`` of the map, resampled onto a ``shape`` picture of the
    level-0 image (bilinear between cell centres; NaN outside the map and where missing)."""
    level = max((k for k in range(result.levels)
                 if max(result.array(k).shape[1:]) >= max(shape) // 2), default=0)
    (sy, sx), (ty, tx) = result.transform(level)
    mpp = result.info.get("mpp") if result.info["cell_to_level0"]["unit"] == "micrometer" else None
    my, mx = (1.0, 1.0) if mpp is None else mpp
    h, w = shape
    py = ((np.arange(h) + 0.5) * image_size[0] / h - 0.5) * my
    px = ((np.arange(w) + 0.5) * image_size[1] / w - 0.5) * mx
    map_y = np.broadcast_to(((py - ty) / sy)[:, None], shape).astype(np.float32)
    map_x = np.broadcast_to(((px - tx) / sx)[None, :], shape).astype(np.float32)
    arr = result.array(level)
    heat = np.full(shape, np.nan, np.float32)
    for c in channels:
        plane = cv2.remap(np.asarray(arr[c], np.float32), map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
        heat = np.fmax(heat, plane)
    return heat


def overview(slide: Slide, result: SlideResult, classes: Sequence[int | str] | None = None,
             side: int = 2048, alpha: float = 0.5, colormap: str = "jet", boxes=None,
             labels: Sequence[str] = (), scores=None, max_boxes: int = 500) -> np.ndarray:
    """The slide at about ``side`` px (longer side) with the map over it: per pixel the
    maximum over ``classes`` (default: every stored class but the background), and ``boxes``
    ``(N, 4)`` in level-0 pixels drawn when at most ``max_boxes``.

    Shape: returns ``(h, w, 3)`` uint8 RGB, ``max(h, w) <= side``.
    """
    rgb = slide_thumbnail(slide, side)
    image_size = tuple(slide.levels[0].size)
    if classes is None:
        background = result.info.get("background_class")
        stored = result.info["classes"]
        channels = [i for i, c in enumerate(stored) if c != background] or list(range(len(stored)))
    else:
        channels = [result.channel(c) for c in classes]
    heat = _heat_on(result, rgb.shape[:2], image_size, channels)
    vis = overlay_heatmap(rgb, heat, alpha, colormap)
    if boxes is not None and 0 < len(boxes) <= max_boxes:
        f = np.array([rgb.shape[1] / image_size[1], rgb.shape[0] / image_size[0]] * 2)
        vis = draw_boxes(vis, np.asarray(boxes, np.float64).reshape(-1, 4) * f, list(labels),
                         scores)
    return vis
