"""Detection metrics: IoU-matched average precision per class, mAP, precision and recall.

Protocol (PASCAL VOC 2010-2012, the devkit's ``VOCevaldet``):

- Matching, per image and class, in descending score order: a prediction is a true positive when
  its best-overlapping ground-truth box of the same class has IoU ≥ ``iou_threshold`` (0.5) and was
  not matched by a higher-scoring prediction; otherwise it is a false positive, so duplicate
  detections of one object count as false positives. Ties in score keep the input order (stable).
- Average precision: the area under the precision-recall curve with **all-point interpolation**:
  precision is replaced by its running maximum from the right (the precision envelope) and summed
  over every recall step; no 11-point or 101-point sampling (that is VOC 2007 / COCO).
- mAP: the mean AP over the classes that have at least one ground-truth box. A class with
  predictions but no ground truth has AP ``nan`` and does not enter the mean (VOC and COCO both
  skip it); its false positives show in :func:`precision_recall`.

Inputs follow torchvision's detection format, one mapping per image:
``{"boxes": Tensor[N, 4], "scores": Tensor[N], "labels": Tensor[N]}`` for predictions and
``{"boxes": Tensor[M, 4], "labels": Tensor[M]}`` for ground truth, boxes in (x1, y1, x2, y2) pixels
of that image. NumPy arrays and lists are accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..errors import ParameterError

__all__ = ["DetectionMetrics", "PrecisionRecall", "match_image", "average_precision",
           "evaluate", "precision_recall"]


@dataclass(frozen=True)
class DetectionMetrics:
    """Result of :func:`evaluate`.

    Attributes:
        ap: Tensor[C] float64, AP per class (``nan`` for classes without ground truth).
        mean_ap: mean of ``ap`` over classes with ground truth (``nan`` if there is none).
        num_gt: Tensor[C] int64, ground-truth boxes per class.
        num_pred: Tensor[C] int64, predictions per class.
    """

    ap: torch.Tensor
    mean_ap: float
    num_gt: torch.Tensor
    num_pred: torch.Tensor


@dataclass(frozen=True)
class PrecisionRecall:
    """Counts over all classes and images at one score threshold (see :func:`precision_recall`).

    ``precision`` = tp / (tp + fp) and ``recall`` = tp / (tp + fn), ``nan`` when the denominator
    is 0 (no kept prediction, or no ground truth).
    """

    precision: float
    recall: float
    tp: int
    fp: int
    fn: int


def _tensor(value, dtype: torch.dtype, shape_tail: tuple[int, ...], what: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.numel() == 0:
        t = t.reshape(0, *shape_tail)
    if t.dim() != 1 + len(shape_tail) or tuple(t.shape[1:]) != shape_tail:
        expected = "[N" + "".join(f", {s}" for s in shape_tail) + "]"
        raise ParameterError(f"{what} must have shape {expected}, got {tuple(t.shape)}")
    return t


def _unpack(item: Mapping, with_scores: bool, where: str) -> tuple[torch.Tensor, ...]:
    missing = {"boxes", "labels", *(["scores"] if with_scores else [])} - set(item)
    if missing:
        raise ParameterError(f"{where} lacks {sorted(missing)}; pass a dict with boxes, labels"
                         + (", scores" if with_scores else ""))
    boxes = _tensor(item["boxes"], torch.float64, (4,), f"{where} boxes")
    labels = _tensor(item["labels"], torch.int64, (), f"{where} labels")
    out = [boxes, labels]
    if with_scores:
        out.append(_tensor(item["scores"], torch.float64, (), f"{where} scores"))
    if any(len(t) != len(boxes) for t in out):
        raise ParameterError(f"{where}: boxes, labels{', scores' if with_scores else ''} differ in "
                         f"length ({', '.join(str(len(t)) for t in out)})")
    return tuple(out)


def match_image(pred_boxes: torch.Tensor, pred_scores: torch.Tensor, pred_labels: torch.Tensor,
                gt_boxes: torch.Tensor, gt_labels: torch.Tensor, iou_threshold: float = 0.5
                ) -> torch.Tensor:
    """True-positive flags of one image's predictions under the VOC matching rule.

    Shape: ``pred_boxes`` Tensor[N, 4], ``pred_scores`` and ``pred_labels`` Tensor[N],
    ``gt_boxes`` Tensor[M, 4] and ``gt_labels`` Tensor[M]; boxes in (x1, y1, x2, y2).
    Returns Tensor[N] bool, in the input order of the predictions.
    """
    tp = torch.zeros(len(pred_boxes), dtype=torch.bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(pred_boxes.double(), gt_boxes.double())
    iou[pred_labels[:, None] != gt_labels[None, :]] = -1.0  # only same-class boxes can match
    best_iou, best_gt = iou.max(dim=1)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in torch.argsort(pred_scores, descending=True, stable=True).tolist():
        j = int(best_gt[i])
        if best_iou[i] >= iou_threshold and not taken[j]:
            tp[i] = taken[j] = True
    return tp


def average_precision(tp: torch.Tensor, num_gt: int) -> float:
    """All-point interpolated AP of predictions already sorted by descending score.

    Args:
        tp: Tensor[N] bool, true-positive flag of each prediction in score order.
        num_gt: ground-truth boxes of the class (``nan`` is returned when 0).
    """
    if num_gt == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    tps = torch.cumsum(tp.double(), 0)
    precision = tps / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    # Envelope: the best precision at this recall or any higher one.
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    # Recall rises by 1/num_gt exactly at each true positive: sum the envelope there.
    return float(envelope[tp.bool()].sum() / num_gt)


def _matched(predictions: Sequence[Mapping], targets: Sequence[Mapping], iou_threshold: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores, labels and tp flags of all predictions (image order), and all target labels."""
    if len(predictions) != len(targets):
        raise ParameterError(f"got {len(predictions)} prediction entries for {len(targets)} images; "
                         "pass one (possibly empty) entry per image")
    scores, labels, tps, gt_labels = [], [], [], []
    for k, (pred, gt) in enumerate(zip(predictions, targets, strict=True)):
        pb, pl, ps = _unpack(pred, True, f"predictions[{k}]")
        gb, gl = _unpack(gt, False, f"targets[{k}]")
        tps.append(match_image(pb, ps, pl, gb, gl, iou_threshold))
        scores.append(ps)
        labels.append(pl)
        gt_labels.append(gl)
    return (_cat(scores, torch.float64), _cat(labels, torch.int64), _cat(tps, torch.bool),
            _cat(gt_labels, torch.int64))


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def evaluate(predictions: Sequence[Mapping], targets: Sequence[Mapping],
             num_classes: int | None = None, iou_threshold: float = 0.5) -> DetectionMetrics:
    """Per-class AP and mAP at ``iou_threshold`` over a set of images (see the module protocol).

    Args:
        predictions, targets: one mapping per image, in the same image order.
        num_classes: classes are ``0 .. num_classes - 1``; default: the largest label seen + 1.
    """
    scores, labels, tp, gt_labels = _matched(predictions, targets, iou_threshold)
    seen = int(max(labels.max().item() if len(labels) else -1,
                   gt_labels.max().item() if len(gt_labels) else -1)) + 1
    num_classes = seen if num_classes is None else num_classes
    if seen > num_classes or (len(labels) and labels.min() < 0) or (
            len(gt_labels) and gt_labels.min() < 0):
        raise ParameterError(f"labels must lie in 0..{num_classes - 1}; raise num_classes or fix them")
    num_gt = torch.bincount(gt_labels, minlength=num_classes)
    ap = torch.full((num_classes,), math.nan, dtype=torch.float64)
    for c in range(num_classes):
        mine = labels == c
        order = torch.argsort(scores[mine], descending=True, stable=True)
        ap[c] = average_precision(tp[mine][order], int(num_gt[c]))
    valid = num_gt > 0
    mean_ap = float(ap[valid].mean()) if valid.any() else math.nan
    return DetectionMetrics(ap, mean_ap, num_gt, torch.bincount(labels, minlength=num_classes))


def precision_recall(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                     score_threshold: float, iou_threshold: float = 0.5) -> PrecisionRecall:
    """Precision and recall over all classes, keeping predictions with score ≥ ``score_threshold``.

    Matching is the same greedy, score-ordered rule as for AP, so a kept prediction is a true
    positive here exactly when it is one in :func:`evaluate`.
    """
    scores, _, tp, gt_labels = _matched(predictions, targets, iou_threshold)
    kept = scores >= score_threshold
    n_tp = int(tp[kept].sum())
    n_fp = int(kept.sum()) - n_tp
    n_fn = len(gt_labels) - n_tp
    precision = n_tp / (n_tp + n_fp) if n_tp + n_fp else math.nan
    recall = n_tp / len(gt_labels) if len(gt_labels) else math.nan
    return PrecisionRecall(precision, recall, n_tp, n_fp, n_fn)
