"""What a scan returns: per-scale probability maps that know where each cell looks in the image.

Convention:
    ``ScaleMap.probs`` is ``(K, h, w)`` float32 on the CPU, a softmax over classes per cell; cell
    ``(i, j)`` is the classifier's answer for the window of :attr:`ScaleMap.geometry` at that
    cell, and :meth:`ScaleMap.boxes` maps every window back to ``(x1, y1, x2, y2)`` pixels of the
    ORIGINAL image: ``x = (x_input - pad_left) / fx`` with the realized factor ``fx = w' / W``
    (see :mod:`densify.scan.pyramid` for the rounding and the padding).

The aggregation rules live beside the data they read: :mod:`densify.scan.heatmap` (maps at image
resolution, image-level scores) and :mod:`densify.scan.detect` (boxes, NMS, COCO JSON). The methods of
:class:`ScanResult` call them.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import DensifyError, ParameterError
from ..io import display as _display
from ..io.image import read_image, resize, thumbnail
from ..io.sheet import PANEL, contact_sheet, panel_size
from . import detect as _detect
from . import heatmap as _heatmap
from .cellmean import average_maps
from .maps import Region, ScaleMap

log = logging.getLogger(__name__)

__all__ = ["ScanResult", "ClassScore", "class_index", "THUMBNAIL_SIDE", "BOX_SOURCES"]

THUMBNAIL_SIDE = 1024
"""Longer side, in pixels, of the copy of the image a scan keeps for display."""

#: Where detection boxes come from (:meth:`ScanResult.detections`).
BOX_SOURCES = ("auto", "regressed", "object", "window")


class ClassScore(NamedTuple):
    """One line of :meth:`ScanResult.top_classes`."""

    index: int
    name: str
    score: float
    box: tuple[float, float, float, float]
    factor: float


@dataclass(frozen=True)
class ScanResult:
    """A scanned image: per-scale maps plus what is needed to read them.

    Attributes:
        image_size: ``(H, W)`` of the original image.
        categories: class names, index-aligned with ``probs``.
        maps: one :class:`ScaleMap` per scale, in scan order.
        background_class: index of the "nothing here" class, which never yields boxes, or None.
        object_box: the object's extent inside the window, ``(x1, y1, x2, y2)`` window pixels,
            when the model card says how large objects are; None: the whole window.
        source: the file the image came from, if any.
        thumbnail: RGB ``uint8`` copy of the image, longer side at most :data:`THUMBNAIL_SIDE`,
            for display only (notebook preview, :meth:`sheet`, :meth:`show`); None: re-read
            ``source`` when needed (:meth:`display_image`).
        weights: each map's share of heat maps and image scores, summing to 1: an ensemble's
            (:func:`densify.scan.ensemble.ensemble_result`, its models' maps together); None:
            every map counts the same (one model).

    In Jupyter a result shows itself: the image with the top class's map and the detections, the
    top classes as a caption (``_repr_html_``, ``_repr_png_``).

    Examples:
        >>> import torch, densify
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 4), torch.nn.Flatten())
        >>> scan = densify.Scanner(net, input_size=(1, 4, 4), mean=(0.5,), std=(0.5,),
        ...                        scales=[1.0, 0.5], output_stride=None, device="cpu")
        >>> result = scan(torch.rand(1, 8, 12))
        >>> result.image_size, [m.cells for m in result.maps]
        ((8, 12), [(5, 9), (1, 3)])
        >>> tuple(result.maps[0].probs.shape), result.maps[0].boxes()[0].tolist()
        ((3, 5, 9), [0.0, 0.0, 4.0, 4.0])
        >>> result.heatmap(0).shape, len(result.top_classes(2))
        ((8, 12), 2)
        >>> found = result.detections(threshold=0.3)   # a softmax over 3 classes: every cell has one
        >>> found.boxes.shape[1], len(found) > 0
        (4, True)
    """

    image_size: tuple[int, int]
    categories: tuple[str, ...]
    maps: tuple[ScaleMap, ...]
    background_class: int | None = None
    object_box: Region | None = None
    source: str | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)
    weights: tuple[float, ...] | None = None

    def __repr__(self) -> str:
        """One line: the image, classes, scales and best class (never the maps' values)."""
        flips = sum(m.flipped for m in self.maps)
        scales = [m.factor for m in self.maps if not m.flipped]
        span = f"{min(scales):.3g}-{max(scales):.3g}" if scales else "-"
        top = self.top_classes(1) if self.maps else []
        best = f", top {top[0].name!r} {top[0].score:.3f}" if top else ""
        return (f"ScanResult({self.image_size[0]}x{self.image_size[1]} px (HxW), "
                f"{len(self.categories)} classes, {len(scales)} scale(s) {span}"
                f"{' with flips' if flips else ''}{best}, source={self.source!r})")

    @property
    def factors(self) -> tuple[float, ...]:
        return tuple(m.factor for m in self.maps)

    @property
    def padded_to_window(self) -> bool:
        """Some scale was smaller than the window and was padded (see :mod:`densify.scan.pyramid`)."""
        return any(m.level.padded_to_window for m in self.maps)

    @property
    def upscaled(self) -> bool:
        return any(m.level.upscaled for m in self.maps)

    def class_index(self, query: int | str) -> int:
        """Index of a class given by index, name or unambiguous substring (:func:`class_index`)."""
        return class_index(self.categories, query)

    def heatmaps(self, classes: Sequence[int | str]) -> torch.Tensor:
        """``(k, H, W)`` float32 maps at image resolution (:func:`densify.scan.heatmap.heatmaps`)."""
        idx = [self.class_index(c) for c in classes]
        return _heatmap.heatmaps(self.maps, idx, self.image_size, self.weights)

    def heatmap(self, cls: int | str) -> np.ndarray:
        """``(H, W)`` float32 map of one class, registered to the original image."""
        return self.heatmaps([cls])[0].numpy()

    def scores(self) -> torch.Tensor:
        """``Tensor[K]`` image-level scores (OverFeat, :func:`densify.scan.heatmap.image_scores`)."""
        return _heatmap.image_scores(self.maps, self.weights)

    def top_classes(self, k: int = 5, background: bool = False) -> list[ClassScore]:
        """The ``k`` best classes by image-level score, each with the box of its best window.

        The background class is left out unless ``background=True``.
        """
        scores = self.scores()
        if self.background_class is not None and not background:
            scores[self.background_class] = -1.0
        k = max(0, min(int(k), int((scores >= 0).sum())))
        return [self.best(cls, float(scores[cls])) for cls in scores.topk(k).indices.tolist()]

    def best(self, cls: int | str, score: float | None = None) -> ClassScore:
        """Class ``cls`` with its image-level score and the window where it peaks."""
        cls = self.class_index(cls)
        scale, cell, _ = _heatmap.peak(self.maps, cls)
        box = tuple(self.maps[scale].boxes()[cell].tolist())
        score = float(self.scores()[cls]) if score is None else score
        return ClassScore(cls, self.categories[cls], score, box, self.maps[scale].factor)

    def detections(self, threshold: float = 0.5, iou: float = 0.3,
                   classes: Sequence[int | str] | None = None, boxes: str = "auto",
                   merge: str = "nms", merge_threshold: float | None = None, *,
                   top_k: int | None = None, refine: bool | None = None,
                   window_boxes: bool | None = None
                   ) -> _detect.Detections:
        """Boxes of cells with probability >= ``threshold``, merged by NMS or, with
        ``merge="overfeat"``, OverFeat's greedy merge (:func:`densify.scan.detect.detect`). An
        ensemble's maps that see the same windows are averaged cell by cell first
        (:func:`densify.scan.cellmean.average_maps`).

        ``boxes`` says where a cell's box comes from (:data:`BOX_SOURCES`): ``"regressed"`` (the
        scan's box-regression output), ``"object"`` (the model card's :attr:`object_box` inside
        maps = average_maps(self.maps, self.weights)  # an ensemble's, where cells coincide
        return _detect.detect(maps, threshold, iou, idx, self.background_class, region,
                              regress=regress, merge=merge, top_k=top_k, **extra)
        """
        region, regress = self._box_source(boxes, refine, window_boxes)
        idx = None if classes is None else [self.class_index(c) for c in classes]
        extra = {} if merge_threshold is None else {"merge_threshold": merge_threshold}
        maps = average_maps(self.maps, self.weights)  # an ensemble's, where cells coincide
        return _detect.detect(maps, threshold, iou, idx, self.background_class, region,
                              regress=regress, merge=merge, top_k=top_k, **extra)

    @property
    def regressed(self) -> bool:
        """Whether the scan has a box-regression output."""
        return any(m.regression is not None for m in self.maps)

    def _box_source(self, boxes: str, refine: bool | None, window_boxes: bool | None):
        """``(region, regress)`` of :func:`densify.scan.detect.detect` for ``boxes``."""
        if refine is not None or window_boxes is not None:
            warnings.warn("detections(refine=..., window_boxes=...) is deprecated; use boxes="
                          "'auto', 'regressed', 'object' or 'window'", DeprecationWarning,
                          stacklevel=3)
            if window_boxes:
                boxes = "window"
            elif refine is False:
                boxes = "regressed" if self.regressed else "window"
        if boxes not in BOX_SOURCES:
            raise ParameterError(f"unknown boxes {boxes!r}; use one of {', '.join(BOX_SOURCES)}")
        if boxes == "auto":  # regressed maps ignore the region; maps without (an ensemble's
            return self.object_box, self.regressed  # members may differ) use the object box
        if boxes == "regressed" and not self.regressed:
            raise ParameterError("this scan has no box-regression output; use boxes 'object' or "
                                 "'window' (or scan with a boxes output)")
        if boxes == "object" and self.object_box is None:
            raise ParameterError("the model card gives no object box (object_height); use boxes "
                                 "'window', or give the scanner object_box=(x1, y1, x2, y2)")
        return (self.object_box if boxes == "object" else None), boxes == "regressed"

    # What to draw: the image, maps sampled at the drawing's pixels (densify.scan.heatmap),
    # titles and labels; densify.io.display and densify.io.sheet draw them from arrays.

    def display_image(self, max_side: int) -> np.ndarray:
        """The scanned image for drawing, longer side at most ``max_side``: the
        :attr:`thumbnail`, else :attr:`source` re-read if that file still exists, else a grey
        canvas of the image's aspect. RGB ``uint8``."""
        rgb = self.thumbnail
        if rgb is None and self.source and Path(self.source).is_file():
            try:
                rgb = read_image(self.source)
            except DensifyError as exc:
                log.warning("cannot re-read %s for display: %s", self.source, exc)
        if rgb is None:
            height, width = self.image_size
            factor = min(1.0, max_side / max(height, width))
            return np.full((max(1, round(height * factor)), max(1, round(width * factor)), 3),
                           128, np.uint8)
        return thumbnail(rgb, max_side)

    def panel_maps(self, classes: Sequence[int], size_hw: Sequence[int]) -> np.ndarray:
        """``(k, S + 1, h, w)`` float32 on a ``size_hw`` grid over the whole image: per class,
        each scale's raw cells, then the aggregate (:func:`densify.scan.heatmap.sampled_maps`)."""
        return _heatmap.sampled_maps(self.maps, list(classes), size_hw, self.weights).numpy()

    def panel_titles(self, classes: Sequence[int]) -> list[list[str]]:
        """Two-line titles per panel: scale factor and cell grid; the class's best probability
        there (the aggregate: the image-level score, the mean over scales of those)."""
        scores = self.scores()
        return [[f"x{m.factor:.3g}  {m.cells[0]}x{m.cells[1]} cells\n"
                 f"best {float(m.probs[cls].max()):.3f}" for m in self.maps]
                + [f"{'weighted ' if self.weights else ''}mean of {len(self.maps)} "
                   f"{'maps' if self.weights else 'scales'}\nscore {float(scores[cls]):.3f}"]
                for cls in classes]

    def caption(self, k: int = 3) -> str:
        """``"tabby 0.912, tiger cat 0.051, ..."``: the top ``k`` classes with their scores."""
        return ", ".join(f"{t.name} {t.score:.3f}" for t in self.top_classes(k)) or "no classes"

    def preview(self, max_side: int = _display.PREVIEW_SIDE, threshold: float = 0.5,
                max_boxes: int = 20, with_caption: bool = True, colormap: str = "jet"
                ) -> np.ndarray:
        """The notebook picture, RGB ``uint8``: the image (grey) with the top class's aggregate
        map, the ``max_boxes`` best detections at ``threshold`` and (``with_caption``) the top
        classes written on it (:func:`densify.io.display.preview`)."""
        rgb = self.display_image(max_side)
        top = self.top_classes(1)
        heat = self.panel_maps([top[0].index], rgb.shape[:2])[0, -1] if top else None
        found = self.detections(threshold)
        keep = found.scores.argsort(descending=True)[:max_boxes]
        fy, fx = rgb.shape[0] / self.image_size[0], rgb.shape[1] / self.image_size[1]
        return _display.preview(
            rgb, heat, found.boxes[keep] * torch.tensor([fx, fy, fx, fy]),
            [self.categories[int(c)] for c in found.labels[keep]], found.scores[keep],
            self.caption() if with_caption else None, colormap)

    def sheet(self, classes: Sequence[int | str] | None = None, k: int = 5, panel: int = PANEL,
              colormap: str = "jet", heading: str | None = None) -> np.ndarray:
        """Contact sheet, RGB ``uint8`` (:func:`densify.io.sheet.contact_sheet`): rows
        ``classes`` (default: the top ``k``), columns each scale's raw cells and the aggregate,
        each panel ``panel`` px on its longer side."""
        idx = ([t.index for t in self.top_classes(k)] if classes is None
               else [self.class_index(c) for c in classes])
        if not idx:
            raise ParameterError("no class to draw a contact sheet of; pass classes=[...]")
        size = panel_size(self.image_size, panel)
        rgb = resize(self.display_image(max(size)), size)
        scores = self.scores()
        labels = [f"{self.categories[c]}\nscore {float(scores[c]):.3f}" for c in idx]
        if heading is None:
            name = Path(self.source).name if self.source else "image"
            heading = f"{name}  {self.image_size[0]}x{self.image_size[1]} px (HxW)"
        return contact_sheet(rgb, self.panel_maps(idx, size), self.panel_titles(idx), labels,
                             heading, colormap)

    def show(self, classes: Sequence[int | str] | None = None, scales: Sequence[int] | None = None,
             colormap: str = "jet", alpha: float = 0.6):
        """A matplotlib figure (:func:`densify.io.display.figure`; the ``viz`` extra): rows
        ``classes`` (default: top 3), columns the scales at indices ``scales`` (default: all)
        and the aggregate, the same panels as :meth:`sheet`."""
        idx = ([t.index for t in self.top_classes(3)] if classes is None
               else [self.class_index(c) for c in classes])
        cols = list(range(len(self.maps))) if scales is None else [int(s) for s in scales]
        if not idx or any(not 0 <= s < len(self.maps) for s in cols):
            raise ParameterError(f"show: need at least one class and scale indices in 0.."
                                 f"{len(self.maps) - 1}, got classes={classes}, scales={scales}")
        rgb = self.display_image(512)
        cols = cols + [len(self.maps)]
        maps = self.panel_maps(idx, rgb.shape[:2])[:, cols]
        titles = [[row[c] for c in cols] for row in self.panel_titles(idx)]
        return _display.figure(rgb, maps, titles, [self.categories[c] for c in idx], colormap,
                               alpha)

    def _repr_png_(self) -> bytes:
        return _display.png_bytes(self.preview())

    def _repr_html_(self) -> str:
        name = Path(self.source).name if self.source else "image"
        height, width = self.image_size
        rows = [(t.name, t.score, t.factor) for t in self.top_classes(5)]
        return _display.html_figure(self.preview(with_caption=False), name,
                                    f"{width}x{height} px, {len(self.maps)} scales", rows)


def class_index(categories: Sequence[str], query: int | str) -> int:
    """Resolve ``query`` to a class index.

    In order: an exact name (case-insensitive), an integer index, a name containing ``query``
    (case-insensitive) if exactly one does. Raises a one-line ``ValueError`` listing close names.
    """
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        if 0 <= int(query) < len(categories):
            return int(query)
        raise ParameterError(f"class index {query} out of range; the model has {len(categories)} "
                         f"classes (0 to {len(categories) - 1})")
    text = str(query).strip()
    lowered = [c.lower() for c in categories]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        return class_index(categories, int(text))
    hits = [i for i, name in enumerate(lowered) if text.lower() in name]
    if len(hits) == 1:
        return hits[0]
    if hits:
        names = ", ".join(repr(categories[i]) for i in hits[:6])
        more = f" and {len(hits) - 6} more" if len(hits) > 6 else ""
        raise ParameterError(f"class {text!r} is ambiguous: {names}{more}; give the full name or "
                         "the index")
    close = difflib.get_close_matches(text.lower(), lowered, n=4, cutoff=0.5)
    hint = (f"did you mean {', '.join(repr(categories[lowered.index(c)]) for c in close)}?"
            if close else "give a class name or an index")
    raise ParameterError(f"unknown class {text!r}; {hint}")
