"""``densify detect``: boxes from every window above the threshold, merged."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import options

if TYPE_CHECKING:
    from ..scan.result import ScanResult
    from ..scan.scanner import Scanner

__all__ = ["detect"]



def _detect_one(path: Path, stem: str, rgb, result: ScanResult, *, scanner: Scanner, out: Path,
                opts: dict) -> dict:
    from ..io.draw import draw_boxes
    from ..io.files import write_image
    from ._scanning import summary, write_all

    det = result.detections(opts["threshold"], opts["iou"], opts["classes"], opts["boxes"],
                            opts["merge"], opts["merge_threshold"], top_k=opts["top_k"])
    names = [result.categories[c] for c in det.labels.tolist()]
    vis = draw_boxes(rgb, det.boxes, names, det.scores)
    files = write_all({out / f"{stem}_detections.png": lambda p: write_image(p, vis)})
    return {**summary(path, result, scanner), "detections": det.to_coco(stem, result.categories),
            "files": files}


def _detect_lines(records: list[dict]) -> str:
    lines = []
    for r in records:
        found = r["detections"]
        best = ", ".join(f"{d['category_name']} {d['score']:.2f}" for d in found[:5])
        more = f", ... ({len(found) - 5} more)" if len(found) > 5 else ""
        lines.append(f"{r['image']}: {len(found)} detection(s){': ' + best if found else ''}"
                     f"{more}")
        lines.extend(f"  note: {n}" for n in r["notes"])
    return "\n".join(lines)


@click.command()
@options.scan_options
@options.threshold
@options.nms_iou
@options.merge
@options.merge_threshold
@options.top_k
@click.option("--class", "classes", multiple=True, help="Only this class (repeatable).")
@options.boxes
@options.json_output("OUTDIR/detections.json")
@options.ray_options
@options.settings_options
def detect(inputs, model, settings, output_dir, keep_memory, quiet, overwrite, prefetch, threshold,
           nms_iou, merge, merge_threshold, top_k, classes, boxes, json_path, ray) -> None:
    """Detect objects: boxes from every window above --threshold, merged by NMS (or --merge
    overfeat: OverFeat's greedy merge, whose scores are sums over the merged windows).

    Writes OUTDIR/<stem>_detections.png per image and one COCO results file (image_id = file
    stem, category_id = class index, bbox = [x, y, w, h] pixels). The background class never
    yields boxes. A line per image goes to OUTDIR/summary.jsonl; a rerun skips the images done
    (--overwrite redoes them) and the COCO file holds every image's boxes.
    """
    from ..io.files import ensure_output_dir
    from ._ray import scan_images
    from ._scanning import (
        default_threshold,
        expand,
        finish,
        header,
        make_scanner,
        model_name,
        on_driver,
        resolve_class,
        run_tuned,
    )

    out = ensure_output_dir(output_dir)
    json_path = json_path or str(out / "detections.json")
    with run_tuned(settings, keep_memory) as threads:
        # with --ray the driver's scanner only resolves classes and the threshold
        scanner = make_scanner(model, settings.replace(threads=threads, **on_driver(ray)))
        chosen = [resolve_class(scanner, c) for c in classes] or None
        if chosen and scanner.background_class in chosen:
            raise click.BadParameter("the background class never yields boxes",
                                     param_hint="--class")
        opts = {"threshold": default_threshold(scanner, threshold), "iou": nms_iou,
                "classes": chosen, "boxes": boxes, "merge": merge,
                "merge_threshold": merge_threshold, "top_k": top_k}
        paths, failed = expand(inputs)
        work = functools.partial(_detect_one, out=out, opts=opts)
        records, bad = scan_images(ray, scanner, model, settings, paths, quiet, work,
                                   None, out, overwrite, prefetch)
    options.write_json_output(json_path, [d for r in records for d in r["detections"]])
    if json_path != "-":
        click.echo(f"{model_name(model)}: {header(scanner)}")
        if records:
            click.echo(_detect_lines(records))
        click.echo(f"wrote {json_path}")
    finish(failed + bad, len(paths) + failed)
