"""Detection accuracy of a digit spotter on generated held-out scenes, scored by pycocotools.

Scenes come from :func:`densify.digits.synth.make_scene` with seeds from ``seed`` (default 90000;
training used 0-2 for windows and 10000-10039 for mined scenes, so these were never seen) and,
by default, the ``eval`` split: the font family and textures held out of training. Each scene is
scanned and detected exactly as ``densify detect`` does; the ground truth
(:func:`densify.digits.synth.coco_ground_truth`) and the detections are COCO JSON, and
:func:`densify.digits.coco.coco_metrics` (COCOeval) scores them: AP, AP50, AP75, AR.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from . import synth
from .coco import coco_metrics
from .metrics import precision_recall

__all__ = ["evaluate_scenes", "scan_scenes", "AP_FLOOR"]

#: AP is computed over every detection scoring at least this (the usual convention for detection
#: benchmarks); precision/recall use ``--threshold``.
AP_FLOOR = 0.05


def scan_scenes(scanner, scenes: int = 20, seed: int = 90_000, split: str = "eval",
                size: tuple[int, int] = (1200, 1600), iou: float = 0.3,
                detect_options: dict | None = None, progress: bool = False
                ) -> tuple[dict, list[dict], float]:
    """Generate and scan ``scenes`` scenes: ``(COCO ground truth, COCO detections, seconds
    scanning)``. ``image_id`` is the scene seed; ``detect_options`` go to
    :meth:`densify.scan.result.ScanResult.detections` (``merge``, ``refine``, ...)."""
    truth, found, seconds = [], [], 0.0
    for k in tqdm(range(scenes), desc="scenes", disable=not progress, leave=False):
        scene = synth.make_scene(seed + k, size=size, split=split)
        start = time.perf_counter()
        det = scanner(scene.image).detections(threshold=AP_FLOOR, iou=iou,
                                              **(detect_options or {}))
        seconds += time.perf_counter() - start
        truth.append((seed + k, f"scene_{seed + k}.png", scene))
        found.extend(det.to_coco(seed + k, scanner.categories))
    return synth.coco_ground_truth(truth), found, seconds


def evaluate_scenes(scanner, scenes: int = 20, seed: int = 90_000, split: str = "eval",
                    size: tuple[int, int] = (1200, 1600), threshold: float = 0.5,
                    iou: float = 0.3, progress: bool = False, detect_options: dict | None = None,
                    ) -> dict:
    """Scan ``scenes`` generated scenes and score the detections against their ground truth.

    Returns a dict with COCOeval's ``AP``, ``AP50``, ``AP75``, ``AR``, ``ap50_per_class``,
    precision/recall at ``threshold`` (IoU 0.5), counts, the seconds spent scanning (scene
    generation excluded), and the ``ground_truth`` and ``detections`` COCO JSON.
    """
    gt, dets, seconds = scan_scenes(scanner, scenes, seed, split, size, iou, detect_options,
                                    progress)
    metrics = coco_metrics(gt, dets)
    pr = precision_recall(*_by_image(gt, dets), threshold)
    return {
        "scenes": scenes, "seed": seed, "split": split, "size": list(size), **metrics,
        "threshold": threshold, "precision": pr.precision, "recall": pr.recall, "tp": pr.tp,
        "fp": pr.fp, "fn": pr.fn, "ground_truth_boxes": len(gt["annotations"]),
        "scan_seconds": round(seconds, 2), "ground_truth": gt, "detections": dets,
    }


def _by_image(gt: dict, dets: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCO JSON as per-image ``{"boxes" (x1, y1, x2, y2), "labels"[, "scores"]}`` lists."""
    ids = [im["id"] for im in gt["images"]]
    preds = {i: {"boxes": [], "scores": [], "labels": []} for i in ids}
    targets = {i: {"boxes": [], "labels": []} for i in ids}
    for entries, table in ((gt["annotations"], targets), (dets, preds)):
        for e in entries:
            x, y, w, h = e["bbox"]
            row = table[e["image_id"]]
            row["boxes"].append([x, y, x + w, y + h])
            row["labels"].append(e["category_id"])
            if "scores" in row:
                row["scores"].append(e["score"])
    return [preds[i] for i in ids], [targets[i] for i in ids]
