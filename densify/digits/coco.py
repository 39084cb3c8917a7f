"""COCO-style detection accuracy with the field's tool: ``pycocotools`` (COCOeval).

Ground truth is COCO JSON (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]``, ``area``,
``iscrowd``, and ``categories``), as :func:`densify.digits.synth.coco_ground_truth` writes for
generated scenes; detections are COCO results (``image_id``, ``category_id``, ``bbox``,
``score``), as ``densify detect --json`` and :meth:`densify.scan.detect.Detections.to_coco` write.

:func:`coco_metrics` runs COCOeval's ``bbox`` protocol unchanged: AP averaged over IoU 0.50:0.05:
0.95 (101-point interpolated precision), AP50, AP75 and AR (recall averaged over the same IoUs,
at most 100 detections per image), plus AP50 per category. Needs the ``eval`` extra
(``pip install 'densify[eval]'``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence

from .._extras import require_extra
from ..errors import ParameterError

__all__ = ["coco_metrics"]


def _cocoeval():
    require_extra("eval", "COCO evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def _load_gt(ground_truth: dict):
    COCO, _ = _cocoeval()
    missing = {"images", "annotations", "categories"} - set(ground_truth)
    if missing:
        raise ParameterError(f"ground truth lacks {sorted(missing)}; give COCO JSON with images, "
                             "annotations and categories")
    gt = COCO()
    gt.dataset = copy.deepcopy(ground_truth)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt.createIndex()
        names = {c["id"]: c["name"] for c in ground_truth["categories"]}
    except (KeyError, TypeError, AttributeError) as exc:  # only the user's JSON is read here
        raise ParameterError(f"ground truth is not COCO JSON ({type(exc).__name__}: {exc}); give "
                             "images with id, annotations with image_id, category_id and bbox, "
                             "categories with id and name") from None
    return gt, names


_RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def _check_detections(detections) -> None:
    """Refuse, in one line, detections that are not a list of COCO results."""
    if not isinstance(detections, (list, tuple)):
        raise ParameterError(f"detections are a {type(detections).__name__}, not a list of COCO "
                             "results; give the list densify detect --json writes")
    for i, d in enumerate(detections):
        ok = isinstance(d, dict) and all(k in d for k in _RESULT_KEYS)
        box = d.get("bbox") if ok else None
        if not (ok and isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) for v in (*box, d["score"]))):
            raise ParameterError(f"detection {i} is not a COCO result ({str(d)[:60]}): each needs "
                                 "image_id, category_id, bbox [x, y, w, h] and score; give the "
                                 "list densify detect --json writes")


def coco_metrics(ground_truth: dict, detections: Sequence[dict]) -> dict:
    """``{"AP", "AP50", "AP75", "AR", "ap50_per_class": {name: AP50}}`` from COCOeval (``nan``
    where undefined: no detections at all gives 0 for every metric).

    Args:
        ground_truth: COCO ground-truth JSON (a dict).
        detections: COCO results entries; their ``image_id``/``category_id`` must occur in
            ``ground_truth``.
    """
    _, COCOeval = _cocoeval()
    gt, names = _load_gt(ground_truth)
    _check_detections(detections)
    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR": 0.0,
                "ap50_per_class": {n: 0.0 for n in names.values()}}
    unknown = {d["image_id"] for d in detections} - set(gt.getImgIds())
    if unknown:
        raise ParameterError(f"detections name image_id {sorted(unknown, key=str)[0]!r}, which the "
                             "ground truth lacks; use the ground truth's image ids")
    results = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats]
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]
    precision = ev.eval["precision"][0, :, :, 0, -1]
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        valid = precision[:, k][precision[:, k] > -1]
        per_class[names[cat]] = float(valid.mean()) if valid.size else math.nan
    return {"AP": _undefined(stats[0]), "AP50": _undefined(stats[1]), "AP75": _undefined(stats[2]),
            "AR": _undefined(stats[8]), "ap50_per_class": per_class}


def _undefined(value: float) -> float:
    """COCOeval writes -1 where a metric is undefined (no ground truth)."""
    return math.nan if value < 0 else value
