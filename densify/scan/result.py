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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ParameterError
from . import detect as _detect
from . import display as _display
from . import heatmap as _heatmap
from .maps import Region, ScaleMap

__all__ = ["ScanResult", "ClassScore", "class_index", "THUMBNAIL_SIDE"]

THUMBNAIL_SIDE = 1024
"""Longer side, in pixels, of the copy of the image a scan keeps for display."""


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
            ``source`` when needed (:mod:`densify.scan.display`).

    In Jupyter a result shows itself: the image with the top class's map and the detections, the
    top classes as a caption (``_repr_html_``, ``_repr_png_``).
    """

    image_size: tuple[int, int]
    categories: tuple[str, ...]
    maps: tuple[ScaleMap, ...]
    background_class: int | None = None
    object_box: Region | None = None
    source: str | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)

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
        return _heatmap.heatmaps(self.maps, idx, self.image_size)

    def heatmap(self, cls: int | str) -> np.ndarray:
        """``(H, W)`` float32 map of one class, registered to the original image."""
        return self.heatmaps([cls])[0].numpy()

    def scores(self) -> torch.Tensor:
        """``Tensor[K]`` image-level scores (OverFeat, :func:`densify.scan.heatmap.image_scores`)."""
        return _heatmap.image_scores(self.maps)

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
                   classes: Sequence[int | str] | None = None, refine: bool = True,
                   window_boxes: bool = False, merge: str = "nms",
                   merge_threshold: float | None = None) -> _detect.Detections:
        """Boxes of cells with probability >= ``threshold``, merged by NMS or, with
        ``merge="overfeat"``, OverFeat's greedy merge (:func:`densify.scan.detect.detect`). The boxes
        are the regressed ones when the scan has a box-regression output, unless
        ``window_boxes``; otherwise the windows, or with ``refine`` the :attr:`object_box` inside
        them when known."""
        idx = None if classes is None else [self.class_index(c) for c in classes]
        extra = {} if merge_threshold is None else {"merge_threshold": merge_threshold}
        return _detect.detect(self.maps, threshold, iou, idx, self.background_class,
                              self.object_box if refine else None, regress=not window_boxes,
                              merge=merge, **extra)

    def sheet(self, classes: Sequence[int | str] | None = None, k: int = 5, panel: int = 240
              ) -> np.ndarray:
        """Contact sheet, RGB ``uint8``: rows ``classes`` (default: top ``k``), columns each
        scale's raw map and the aggregate (:func:`densify.scan.display.sheet`)."""
        return _display.sheet(self, classes, k, panel)

    def show(self, classes: Sequence[int | str] | None = None, scales: Sequence[int] | None = None):
        """A matplotlib figure of ``classes`` (default: top 3) at scale indices ``scales``
        (default: all) and their aggregate; needs the ``viz`` extra (matplotlib)."""
        return _display.figure(self, classes, scales)

    def _repr_png_(self) -> bytes:
        return _display.png_bytes(_display.preview(self))

    def _repr_html_(self) -> str:
        return _display.html_preview(self)


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
