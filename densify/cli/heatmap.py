"""``densify heatmap``: class heat maps registered to each image."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import options

if TYPE_CHECKING:
    from ..scan.ensemble import Ensemble
    from ..scan.result import ScanResult
    from ..scan.scanner import Scanner

__all__ = ["heatmap"]



def _colormap(value: str) -> str:
    from ..io.draw import COLORMAPS

    if value not in COLORMAPS:
        raise ValueError(f"unknown colormap {value!r}; e.g. jet, turbo, inferno, viridis")
    return value


def _heatmap_one(path: Path, stem: str, rgb, result: ScanResult, *, scanner: Scanner | Ensemble,
                 out: Path, chosen: int | None, top_k: int, alpha: float, colormap: str,
                 sheet: bool, full_maps: bool) -> dict:
    from ..io.draw import draw_boxes, draw_caption, overlay_heatmap
    from ..io.files import write_image
    from ..scan.records import top_rows
    from ..scan.resultfile import save_result
    from ._scanning import summary, write_all

    top = result.top_classes(top_k)
    cls = chosen if chosen is not None else (top[0].index if top else 0)
    classes = [cls] + [t.index for t in top if t.index != cls]
    best = result.best(cls)
    vis = overlay_heatmap(rgb, result.heatmap(cls), alpha, colormap)
    vis = draw_boxes(vis, [best.box], [best.name], [best.score])
    vis = draw_caption(vis, f"{best.name} {best.score:.3f}")
    outputs = {
        out / f"{stem}_heatmap.png": lambda p: write_image(p, vis),
        out / f"{stem}_heatmap.npz": lambda p: save_result(
            result, p, classes if full_maps else (), top_k),
    }
    if sheet:
        heading = f"{path.name}  {rgb.shape[0]}x{rgb.shape[1]} px (HxW)"
        outputs[out / f"{stem}_sheet.png"] = lambda p: write_image(
            p, result.sheet(classes[:top_k], heading=heading, colormap=colormap))
    files = write_all(outputs)
    return {**summary(path, result, scanner), "class": best.name, "top": top_rows(result, top_k),
            "files": files}


def _heatmap_table(records: list[dict]) -> str:
    lines = []
    for r in records:
        factors = r["factors"]
        maps = (f"{r['models']} models, {len(factors)} maps" if r.get("models") else
                f"{len(factors)} scale(s)")
        lines.append(f"{r['image']} ({r['size'][0]}x{r['size'][1]}): {maps} "
                     f"{min(factors):.3g}-{max(factors):.3g}{' and flips' if r['flip'] else ''}, "
                     f"map of {r['class']!r}")
        lines.append(f"  {'#':>2}  {'class':24s} {'score':>6}  {'best window x1,y1,x2,y2':24s} "
                     "scale")
        for i, t in enumerate(r["top"], 1):
            lines.append(f"  {i:2d}  {t['name'][:24]:24s} {t['score']:6.3f}  "
                         f"{','.join(f'{v:.0f}' for v in t['box']):24s} {t['factor']:.3g}")
        lines.extend(f"  note: {n}" for n in r["notes"])
        done = "kept (done by an earlier run)" if r["status"] == "skipped" else "wrote"
        lines.append(f"  {done} {', '.join(r['files'])}")
    return "\n".join(lines)


def _write_report(out: Path, scanner: Scanner | Ensemble, model: str, top_k: int,
                  records: list[dict], errors: list[tuple[str, str]], seconds: float) -> Path:
    from ..io.report import write_report
    from ..scan.ensemble import Ensemble
    from ..scan.records import error_record

    failed = [error_record(path, message, None) for path, message in errors]
    members = scanner.members if isinstance(scanner, Ensemble) else (scanner,)
    each = [_model_settings(m) for m in members]  # an ensemble: each model's, joined by " | "
    settings = {"command": "densify heatmap", "model": model,
                **{key: " | ".join(dict.fromkeys(e[key] for e in each)) for key in each[0]},
                "classes listed": top_k}
    return write_report(out / "report.html", [*records, *failed], settings, seconds,
                        title=f"densify heatmap: {len(records) + len(failed)} input(s), {model}")


def _model_settings(scanner: Scanner) -> dict[str, str]:
    """What the report says of one scanner: weights, window, stride, scales, precision, device."""
    clf = scanner.classifier
    source = ("random (maps are meaningless)" if clf.random else str(clf.weights)) if clf else "?"
    stride = scanner.output_stride
    asked = scanner.requested_stride
    return {"weights": source,
            "window": f"{scanner.geometry.window[0]}x{scanner.geometry.window[1]} px (HxW)",
            "output stride": f"{stride} px" + (f" (native; {asked} not reachable)"
                                               if asked and asked != stride else ""),
            "scales": _scales_text(scanner), "precision": scanner.precision,
            "device": str(scanner.device)}


def _scales_text(scanner: Scanner) -> str:
    spec = scanner.scales
    if isinstance(spec, int):
        where = ("from the model card's object sizes" if scanner.scale_range else
                 "from 'short side = window' up")
        return f"{spec} per image, {where}"
    return ", ".join(f"{f:.3g}" for f in spec) if isinstance(spec, (list, tuple)) else str(spec)


@click.command()
@options.scan_options
@click.option("--class", "class_", default=None,
              help="Class to paint: a name (any case; an unambiguous part is enough) or an "
                   "index. Default: the top class.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes listed (and stored as the .npz's summary).")
@click.option("--full-maps", is_flag=True,
              help="Also store the listed classes' maps at image resolution in the .npz (float16, "
                   "2 bytes per pixel and class; default: only the per-scale cell maps).")
@options.json_output()
@options.sheet
@options.report
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the heat map over the image in the PNG overlay (0: the image "
                   "alone, 1: the colour-mapped map alone).")
@click.option("--colormap", default="jet", show_default=True, callback=options.callback(
    _colormap), help="Any OpenCV colormap: jet, turbo, inferno, viridis, ...")
@options.ray_options
@options.settings_options
def heatmap(inputs, model, settings, output_dir, keep_memory, quiet, overwrite, prefetch, class_,
            top_k, full_maps, json_path, sheet, report, alpha, colormap, ray) -> None:
    """Class heat maps registered to each image: a PNG overlay and the scan's result file.

    Writes OUTDIR/<stem>_heatmap.png and OUTDIR/<stem>_heatmap.npz per image (the per-scale cell
    maps; read it back with densify.load_result; and <stem>_sheet.png with --sheet,
    OUTDIR/report.html with --report) and a line per image to OUTDIR/summary.jsonl; a rerun
    skips the images done (--overwrite redoes them). A window's
    probability sits at the window's centre, interpolated between centres and averaged over
    scales (the manual's "The scanner and OverFeat" page). Scores are OverFeat's: the best
    window per scale, averaged over scales.
    """
    from ..io.files import ensure_output_dir
    from ._scanning import (
        expand,
        finish,
        header,
        make_scanner,
        model_name,
        on_driver,
        resolve_class,
        run_tuned,
    )

    start = time.perf_counter()
    from ._ray import scan_images

    out = ensure_output_dir(output_dir)
    with run_tuned(settings, keep_memory) as threads:
        # with --ray the driver's scanner only names classes and describes the run
        scanner = make_scanner(model, settings.replace(threads=threads, **on_driver(ray)))
        chosen = resolve_class(scanner, class_)
        errors: list[tuple[str, str]] = []
        paths, failed = expand(inputs, errors)
        work = functools.partial(_heatmap_one, out=out, chosen=chosen, top_k=top_k, alpha=alpha,
                                 colormap=colormap, sheet=sheet or report, full_maps=full_maps)
        records, bad = scan_images(ray, scanner, model, settings, paths, quiet, work,
                                   errors, out, overwrite, prefetch)
    page = _write_report(out, scanner, model_name(model), top_k, records, errors,
                         time.perf_counter() - start) if report else None
    if not options.write_json_output(json_path, records) or json_path != "-":
        click.echo(f"{model_name(model)}: {header(scanner)}")
        if records:
            click.echo(_heatmap_table(records))
        if page:
            click.echo(f"report: {page}")
        if json_path is not None:
            click.echo(f"wrote {json_path}")
    finish(failed + bad, len(paths) + failed)
