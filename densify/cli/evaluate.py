"""``densify evaluate``: COCO-style detection accuracy (pycocotools COCOeval: AP, AP50, AP75, AR)
of a digit spotter on generated held-out scenes (:mod:`densify.digits.evaluation`), or of any
COCO results file against COCO ground truth (``--gt`` and ``--detections``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import options
from .json_options import writable_file

__all__ = ["evaluate"]

_JSON_FILE = click.Path(dir_okay=False, path_type=Path)


def _print_report(report: dict, scales, threshold: float | None) -> None:
    if "scenes" in report:
        size = report["size"]
        click.echo(f"{report['scenes']} {report['split']} scenes {size[0]}x{size[1]} (seeds "
                   f"{report['seed']}-{report['seed'] + report['scenes'] - 1}), "
                   f"{report['ground_truth_boxes']} digits, scales {scales}")
    click.echo("AP50 per class  " + "  ".join(f"{c}:{ap:.3f}"
                                              for c, ap in report["ap50_per_class"].items()))
    click.echo(f"AP {report['AP']:.3f}   AP50 {report['AP50']:.3f}   AP75 {report['AP75']:.3f}   "
               f"AR {report['AR']:.3f}   (pycocotools COCOeval, bbox)")
    if "precision" in report:
        click.echo(f"at threshold {threshold}: precision {report['precision']:.3f} recall "
                   f"{report['recall']:.3f} (tp {report['tp']}, fp {report['fp']}, fn "
                   f"{report['fn']})   scan {report['scan_seconds'] / report['scenes']:.2f} s/scene")


def _read_json(path: Path, what: str):
    from ..errors import ParameterError

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}; give a COCO "
                             "JSON file") from None


@click.command()
@options.models
@options.scan_weights
@click.option("--scenes", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=90_000, show_default=True,
              help="First scene seed (training never used 90000 and up).")
@click.option("--split", type=click.Choice(["eval", "train", "all"]), default="eval",
              show_default=True, help="eval: only the held-out font family and textures.")
@options.image_size  # default 1200x1600
@options.scales
@options.flip
@options.device
@options.threshold
@options.nms_iou
@options.merge
@options.merge_threshold
@options.top_k
@options.boxes
@click.option("--save-gt", type=_JSON_FILE, default=None, callback=writable_file,
              help="Write the scenes' COCO ground truth here.")
@click.option("--save-detections", type=_JSON_FILE, default=None, callback=writable_file,
              help="Write the COCO detections here.")
@click.option("--gt", "gt_path", type=_JSON_FILE, default=None,
              help="Score this COCO ground truth against --detections instead of scanning scenes.")
@click.option("--detections", "det_path", type=_JSON_FILE, default=None,
              help="COCO results (e.g. from densify detect --json) to score against --gt.")
@options.threads
@options.keep_memory
@options.json_output("print a summary")
@options.quiet
@options.settings_options
def evaluate(model, settings, scenes, seed, split, size, threshold, nms_iou, merge,
             merge_threshold, top_k, boxes, save_gt, save_detections, gt_path,
             det_path, keep_memory, json_path, quiet) -> None:
    """COCO AP, AP50, AP75 and AR (pycocotools) on generated held-out digit scenes, or of
    --detections against --gt."""
    from .._extras import require_extra

    if (gt_path is None) != (det_path is None):
        raise click.UsageError("give both --gt and --detections, or neither (to scan scenes)")
    require_extra("eval", "densify evaluate")  # before any scan
    if gt_path is not None:
        from ..digits.coco import coco_metrics

        report = coco_metrics(_read_json(gt_path, "ground truth"), _read_json(det_path,
                                                                             "detections"))
    else:
        report = _scan_and_score(model, settings, scenes, seed, split, size, threshold, nms_iou,
                                 merge, merge_threshold, top_k, boxes, quiet, keep_memory)
        threshold = report["threshold"]
        _save(save_gt, report.pop("ground_truth"))
        _save(save_detections, report.pop("detections"))
    if options.write_json_output(json_path, report) and json_path == "-":
        return
    _print_report(report, settings.scales, threshold)


def _save(path: Path | None, data) -> None:
    from ..io.files import ensure_output_dir, write_json

    if path is not None:
        ensure_output_dir(path.parent)
        write_json(path, data)


def _scan_and_score(model, settings, scenes, seed, split, size, threshold, nms_iou, merge,
                    merge_threshold, top_k, boxes, quiet, keep_memory=False) -> dict:
    from ..digits.evaluation import evaluate_scenes
    from ._scanning import default_threshold, make_scanner, model_name, run_tuned

    if size is not None and min(size) < 28:
        raise click.BadParameter(f"{size[0]}x{size[1]} is smaller than a 28x28 window; give HxW "
                                 "of at least 28x28, e.g. 1200x1600", param_hint="--size")
    with run_tuned(settings, keep_memory) as threads:
        scanner = make_scanner(model, settings.replace(threads=threads))
        if scanner.background_class is None:
            raise click.ClickException(f"{model_name(model)} has no background class; evaluate "
                                       "needs a digit spotter such as lenet5-digits")
        detect_options = {"merge": merge, "merge_threshold": merge_threshold, "boxes": boxes,
                          "top_k": top_k}
        return evaluate_scenes(scanner, scenes, seed, split, size or (1200, 1600),
                               default_threshold(scanner, threshold), nms_iou,
                               progress=not quiet, detect_options=detect_options)
