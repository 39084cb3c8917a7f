"""``densify evaluate``: detection accuracy of a digit spotter on generated held-out scenes.

Scenes come from :func:`densify.synth.make_scene` with seeds from ``--seed`` (default 90000;
training used 0-2 for windows and 10000-10039 for mined scenes, so these were never seen) and,
by default, the ``eval`` split: the font family and textures held out of training. Each scene is
scanned and detected exactly as ``densify detect`` does; the command reports per-class AP at
IoU 0.5 (PASCAL VOC all-point interpolation, :mod:`densify.evaluate`), mAP, and precision/recall
at the detection threshold.
"""

from __future__ import annotations

import json
import time

import click
from tqdm.auto import tqdm

from .evaluate import evaluate, precision_recall

__all__ = ["evaluate_command", "evaluate_scenes", "AP_FLOOR"]

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
    from . import synth

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


def _size(ctx, param, value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 28 or w < 28:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"cannot read {value!r}; give HxW pixels, e.g. 1200x1600") from None
    return h, w


@click.command("evaluate")
@click.option("--model", "-m", default="lenet5-digits", show_default=True,
              help="A digit model (its categories must be 0-9 and a background class).")
@click.option("--weights", "-w", default="DEFAULT", show_default=True)
@click.option("--scenes", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=90_000, show_default=True,
              help="First scene seed (training never used 90000 and up).")
@click.option("--split", type=click.Choice(["eval", "train", "all"]), default="eval",
              show_default=True, help="eval: only the held-out font family and textures.")
@click.option("--size", default="1200x1600", show_default=True, callback=_size, help="HxW.")
@click.option("--scales", default="6", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--nms-iou", type=click.FloatRange(0, 1), default=0.3, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def evaluate_command(model, weights, scenes, seed, split, size, scales, threshold, nms_iou,
                     as_json, quiet) -> None:
    """Per-class AP@0.5, mAP and precision/recall on generated held-out digit scenes."""
    from .scan import Scanner

    try:
        scanner = Scanner(model, scales, None, "auto", "fp32", weights)
    except ValueError as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    if scanner.background_class is None:
        raise click.ClickException(f"{model} has no background class; evaluate needs a digit "
                                   "spotter such as lenet5-digits")
    report = evaluate_scenes(scanner, scenes, seed, split, size, threshold, nms_iou,
                             progress=not quiet)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{scenes} {split} scenes {size[0]}x{size[1]} (seeds {seed}-{seed + scenes - 1}), "
               f"{report['ground_truth']} digits, scales {scales}")
    click.echo("  ".join(f"{c}:{ap:.3f}" for c, ap in report["ap"].items()))
    click.echo(f"mAP@0.5 {report['map']:.3f}   at threshold {threshold}: precision "
               f"{report['precision']:.3f} recall {report['recall']:.3f} "
               f"(tp {report['tp']}, fp {report['fp']}, fn {report['fn']})   "
               f"scan {report['scan_seconds'] / scenes:.2f} s/scene")
