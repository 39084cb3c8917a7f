"""Detection accuracy of a digit spotter on generated held-out scenes.

Scenes come from :func:`densify.digits.synth.make_scene` with seeds from ``seed`` (default 90000;
training used 0-2 for windows and 10000-10039 for mined scenes, so these were never seen) and,
by default, the ``eval`` split: the font family and textures held out of training. Each scene is
scanned and detected exactly as ``densify detect`` does.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from . import synth
from .metrics import evaluate, precision_recall

__all__ = ["evaluate_scenes", "AP_FLOOR"]

#: AP is computed over every detection scoring at least this (the usual convention for detection
#: benchmarks); precision/recall use ``--threshold``.
AP_FLOOR = 0.05


def evaluate_scenes(scanner, scenes: int = 20, seed: int = 90_000, split: str = "eval",
                    size: tuple[int, int] = (1200, 1600), threshold: float = 0.5,
                    iou: float = 0.3, progress: bool = False) -> dict:
    """Scan ``scenes`` generated scenes and score the detections against their ground truth.

    Returns a dict with ``ap`` (per class name), ``map``, ``precision``, ``recall``, counts and the
    seconds spent scanning (scene generation excluded).
    """
    predictions, targets, seconds = [], [], 0.0
    for k in tqdm(range(scenes), desc="scenes", disable=not progress, leave=False):
        scene = synth.make_scene(seed + k, size=size, split=split)
        start = time.perf_counter()
        det = scanner(scene.image).detections(threshold=AP_FLOOR, iou=iou)
        seconds += time.perf_counter() - start
        predictions.append({"boxes": det.boxes, "scores": det.scores, "labels": det.labels})
        targets.append({"boxes": scene.boxes, "labels": scene.labels})
    classes = [c for i, c in enumerate(scanner.categories) if i != scanner.background_class]
    metrics = evaluate(predictions, targets, num_classes=len(classes))
    pr = precision_recall(predictions, targets, threshold)
    return {
        "scenes": scenes, "seed": seed, "split": split, "size": list(size),
        "ap": {c: float(metrics.ap[i]) for i, c in enumerate(classes)},
        "map": metrics.mean_ap, "threshold": threshold, "precision": pr.precision,
        "recall": pr.recall, "tp": pr.tp, "fp": pr.fp, "fn": pr.fn,
        "ground_truth": int(metrics.num_gt.sum()), "scan_seconds": round(seconds, 2),
    }
