"""Detections from a scan: boxes, scores, labels, non-maximum suppression and COCO results JSON.

Rule:
    every cell, at every scale, whose probability of a class is at least ``threshold`` proposes
    one box for that class: its window mapped back to the original image
    (:meth:`densify.scan.maps.ScaleMap.boxes`), with the probability as score. The proposals of all
    scales are merged per class by greedy non-maximum suppression
    (``torchvision.ops.batched_nms``, IoU above ``iou`` suppressed), or, with
    ``merge="overfeat"``, by OverFeat's greedy merge (:mod:`densify.scan.merge`: overlapping
    boxes averaged, their scores summed). The background class (the
    model card's ``background_class``) never proposes a box, and asking for it is an error.

Top-k classes per scale (OverFeat's preselection, ``top_k=K``):
    at each scale (a flipped scale counts as its own), only the ``K`` classes with the highest
    image-level score at that scale propose boxes: the score is the spatial maximum of the class's
    map, the background class is never ranked, ties go to the lower class index. ``classes``
    then filters what is reported (so a class outside a scale's top ``K`` proposes nothing there
    even when asked for). ``K`` at least the number of object classes is the same as None.

Regressed boxes:
    a scan with a box-regression output (``Scanner(boxes=...)``) proposes each cell's regressed
    box for the class (:meth:`densify.scan.maps.ScaleMap.regressed_boxes`) instead of its window;
    ``regress=False`` goes back to windows. A per-class regression (``4·K`` channels) gives each
    proposal the box of its own class; a class-agnostic one (4 channels), the same box for all.

Boxes smaller than the window (``region``):
    a classifier answers for its whole window, but when its training data fixes the object's
    size inside the window, the box can say so. The digits model saw digits about
    ``object_height`` = 20 px tall, centred, in its 28 px window, and its ground truth boxes are
    ``box_aspect`` = 0.6 times as wide as tall (:func:`densify.digits.synth.digit_box`), so each window
    proposes the centred 12 × 20 box :func:`object_region` gives instead of the 28 × 28 window.
    Models without such a card entry get the whole window.

Shape:
    ``boxes`` ``Tensor[N, 4]`` float32 ``(x1, y1, x2, y2)`` in original image pixels, ``scores``
    ``Tensor[N]`` float32, ``labels`` ``Tensor[N]`` int64, sorted by decreasing score.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from ..errors import ParameterError
from .maps import ScaleMap
from .merge import MERGE_THRESHOLD, greedy_merge

__all__ = ["MAX_CANDIDATES", "MERGES", "Detections", "object_region", "candidates", "detect",
           "coco_results", "top_classes", "check_top_k"]

log = logging.getLogger(__name__)

MAX_CANDIDATES = 30_000
"""Proposals kept (the highest scoring) before NMS, whose cost grows with their square."""

#: How overlapping proposals become detections: torchvision's NMS or OverFeat's greedy merge.
MERGES = ("nms", "overfeat")


@dataclass(frozen=True)
class Detections:
    """Boxes, scores and labels of one image (see the module docstring for shapes)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to_coco(self, image_id: str | int, categories: Sequence[str]) -> list[dict]:
        """COCO results entries (:func:`coco_results`)."""
        return coco_results(self, image_id, categories)


def object_region(window_hw: Sequence[int], height: float, aspect: float = 1.0
                  ) -> tuple[float, float, float, float]:
    """The centred object box ``(x1, y1, x2, y2)`` in window pixels: ``height`` tall and
    ``aspect · height`` wide (both at most the window)."""
    wh, ww = (float(v) for v in window_hw)
    if not (0 < height and 0 < aspect):
        raise ParameterError(f"object height and aspect must be positive, got {height}, {aspect}")
    h, w = min(float(height), wh), min(float(aspect) * float(height), ww)
    return (ww - w) / 2, (wh - h) / 2, (ww + w) / 2, (wh + h) / 2


def _selected(num_classes: int, classes: Sequence[int] | None, background: int | None
              ) -> list[int]:
    if classes is None:
        return [c for c in range(num_classes) if c != background]
    chosen = sorted({int(c) for c in classes})
    if background is not None and background in chosen:
        raise ParameterError(f"class {background} is the background class and never yields boxes; "
                         "choose object classes")
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ParameterError(f"class index {bad[0]} out of range 0..{num_classes - 1}")
    return chosen


def check_top_k(top_k: int | None) -> int | None:
    """``top_k`` if it is None or a positive integer; a :class:`ParameterError` otherwise."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ParameterError(f"top_k must be a positive integer (classes kept per scale), got "
                             f"{top_k!r}; e.g. 5, or None for every class")
    return int(top_k)


def top_classes(probs: torch.Tensor, k: int, background: int | None = None) -> list[int]:
    """The ``k`` classes of a ``(K, h, w)`` map with the highest spatial maximum, the
    ``background`` class left out, best first (ties: the lower index first).

    Examples:
        >>> probs = torch.zeros(3, 2, 2)
        >>> probs[0, 0, 0], probs[1, 1, 1], probs[2, 0, 1] = 0.9, 0.6, 0.7
        >>> top_classes(probs, 1, background=0), top_classes(probs, 5, background=0)
        ([2], [2, 1])
    """
    peak = probs.flatten(1).amax(dim=1).double()
    if background is not None:
        peak[background] = float("-inf")
    order = peak.argsort(descending=True, stable=True).tolist()
    return [c for c in order if c != background][:k]


def candidates(maps: Sequence[ScaleMap], threshold: float, classes: Sequence[int],
               region: tuple[float, float, float, float] | None = None, regress: bool = True,
               top_k: int | None = None, background_class: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Proposals ``(boxes, scores, labels)`` of all scales, before NMS (module docstring);
    ``regress``: a map's regressed boxes where it has them; ``top_k``: only each map's ``top_k``
    best classes (:func:`top_classes`, ``background_class`` not ranked) propose."""
    boxes, scores, labels = [], [], []
    every = list(classes)
    for m in maps:
        mine = every
        if top_k is not None:
            best = set(top_classes(m.probs, top_k, background_class))
            mine = [c for c in every if c in best]
        if not mine:
            continue
        index = torch.as_tensor(mine, dtype=torch.long)
        probs = m.probs[index].flatten(1)  # (k, h*w)
        k, cell = (probs >= threshold).nonzero(as_tuple=True)
        if k.numel():
            boxes.append(_proposal_boxes(m, index, k, cell, region, regress))
            scores.append(probs[k, cell].float())
            labels.append(index[k])
    if not boxes:
        return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(boxes), torch.cat(scores), torch.cat(labels)


def _proposal_boxes(m: ScaleMap, index: torch.Tensor, k: torch.Tensor, cell: torch.Tensor,
                    region, regress: bool) -> torch.Tensor:
    """Boxes of the proposals ``(index[k], cell)``: regressed per class, or windows."""
    if not regress or m.regression is None:
        return m.boxes(region)[cell]
    out = torch.empty(cell.numel(), 4)
    for i in k.unique().tolist():
        sel = k == i
        out[sel] = m.regressed_boxes(int(index[i]))[cell[sel]]
    return out


def detect(maps: Sequence[ScaleMap], threshold: float = 0.5, iou: float = 0.3,
           classes: Sequence[int] | None = None, background_class: int | None = None,
           region: tuple[float, float, float, float] | None = None, regress: bool = True,
           merge: str = "nms", merge_threshold: float = MERGE_THRESHOLD,
           top_k: int | None = None) -> Detections:
    """Thresholded cells of every scale merged by per-class NMS, or by OverFeat's greedy merge
    (module docstring).

    Args:
        maps: the scales of one scan.
        threshold: minimum probability, in (0, 1].
        iou: boxes overlapping a better box of the same class by more than this are removed.
        classes: class indices to report; None: every class but the background.
        background_class: never reported.
        region: the object's box inside the window (:func:`object_region`); None: the window.
        regress: use the maps' regressed boxes (:meth:`ScaleMap.regressed_boxes`) when the scan
            has a box-regression output (``region`` then does not apply).
        merge: ``"nms"`` (``iou`` applies) or ``"overfeat"`` (:func:`densify.scan.merge.greedy_merge`
            with ``merge_threshold``; scores are then accumulated, not probabilities).
        top_k: at each scale only the ``top_k`` classes with the highest spatial maximum
            propose boxes (module docstring); None: every class.

    Examples:
        One confident cell of class 1 on a 64 × 64 image (28 px windows, stride 4):

        >>> import torch
        >>> from densify.convert.geometry import Geometry
        >>> from densify.scan.maps import ScaleMap
        >>> from densify.scan.pyramid import levels
        >>> level = levels((64, 64), (28, 28), (4, 4), scales=[1.0])[0]
        >>> probs = torch.zeros(2, 10, 10)
        >>> probs[0] = 1.0
        >>> probs[:, 3, 5] = torch.tensor([0.1, 0.9])
        >>> det = detect([ScaleMap(level, Geometry((28, 28), (4, 4)), probs)], background_class=0)
        >>> det.boxes, det.scores, det.labels
        (tensor([[20., 12., 48., 40.]]), tensor([0.9000]), tensor([1]))
    """
    if not 0 < threshold <= 1:
        raise ParameterError(f"threshold must lie in (0, 1], got {threshold}")
    if not 0 <= iou <= 1:
        raise ParameterError(f"NMS IoU must lie in [0, 1], got {iou}")
    if not maps:
        raise ParameterError("no scales to detect on; scan with at least one scale")
    if merge not in MERGES:
        raise ParameterError(f"unknown merge {merge!r}; use {' or '.join(MERGES)}")
    top_k = check_top_k(top_k)
    chosen = _selected(maps[0].probs.shape[0], classes, background_class)
    boxes, scores, labels = candidates(maps, threshold, chosen, region, regress, top_k,
                                       background_class)
    if scores.numel() > MAX_CANDIDATES:
        log.info("%d proposals at threshold %.3g; keeping the best %d before NMS (raise the "
                 "threshold for fewer)", scores.numel(), threshold, MAX_CANDIDATES)
        top = scores.topk(MAX_CANDIDATES).indices
        boxes, scores, labels = boxes[top], scores[top], labels[top]
    if merge == "overfeat":
        return Detections(*greedy_merge(boxes, scores, labels, merge_threshold))
    keep = batched_nms(boxes, scores, labels, iou)  # sorted by decreasing score
    return Detections(boxes[keep], scores[keep], labels[keep])


def coco_results(det: Detections, image_id: str | int, categories: Sequence[str]) -> list[dict]:
    """COCO results entries: ``{"image_id", "category_id", "category_name", "bbox": [x, y, w,
    h], "score"}``, ``category_id`` the class index, coordinates rounded to 0.01 px."""
    out = []
    for (x1, y1, x2, y2), score, label in zip(det.boxes.tolist(), det.scores.tolist(),
                                              det.labels.tolist(), strict=True):
        out.append({
            "image_id": image_id, "category_id": int(label),
            "category_name": categories[label],
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        })
    return out
