"""``densify evaluate``: detection accuracy of a digit spotter on generated held-out scenes
(:mod:`densify.digits.evaluation`): per-class AP at IoU 0.5 (PASCAL VOC all-point interpolation),
mAP, and precision/recall at the detection threshold."""

from __future__ import annotations

import json

import click

from . import options

__all__ = ["evaluate"]


@click.command()
@options.model
@options.weights
@click.option("--scenes", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=90_000, show_default=True,
              help="First scene seed (training never used 90000 and up).")
@click.option("--split", type=click.Choice(["eval", "train", "all"]), default="eval",
              show_default=True, help="eval: only the held-out font family and textures.")
@options.image_size  # default 1200x1600
@options.scales
@options.device
@options.threshold
@options.nms_iou
@options.as_json
@options.quiet
def evaluate(model, weights, scenes, seed, split, size, scales, device, threshold, nms_iou,
             as_json, quiet) -> None:
    """Per-class AP@0.5, mAP and precision/recall on generated held-out digit scenes."""
    from ..digits.evaluation import evaluate_scenes
    from ..scan.scanner import Scanner
    from ._scanning import default_threshold

    if size is not None and min(size) < 28:
        raise click.BadParameter(f"{size[0]}x{size[1]} is smaller than a 28x28 window; give HxW "
                                 "of at least 28x28, e.g. 1200x1600", param_hint="--size")
    scanner = Scanner(model, scales, None, device, "fp32", weights)
    size = size or (1200, 1600)
    threshold = default_threshold(scanner, threshold)
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
