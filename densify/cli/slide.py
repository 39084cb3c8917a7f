"""``densify slide``: a whole-slide image scanned tile by tile into slide-tool outputs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from . import options

__all__ = ["slide"]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _level(slide, level: int | None, mpp: float | None) -> int:
    from ..errors import ParameterError

    if level is not None and mpp is not None:
        raise ParameterError("give --level or --mpp, not both")
    if mpp is not None:
        return slide.level_for_mpp(mpp)
    level = 0 if level is None else level
    if not 0 <= level < len(slide.levels):
        raise ParameterError(f"{slide.path.name} has levels 0-{len(slide.levels) - 1}; "
                             f"--level {level} is not one of them")
    return level


def _classes(scanner, names: tuple[str, ...]) -> list[int] | None:
    from ..scan.result import class_index

    return [class_index(scanner.categories, n) for n in names] if names else None


def _write_outputs(out: Path, stem: str, src, done, scanner, overview_side: int) -> dict:
    """GeoJSON and overview PNG (atomic files), then the store renamed into place."""
    from ..io.files import write_image
    from ..io.geojson import detection_features, write_geojson
    from ..scan.slideresult import load_slide_result, overview

    det, cats = done.detections, scanner.categories
    names = [cats[k] for k in det.labels.tolist()]
    files = {"geojson": out / f"{stem}_detections.geojson", "overview": out / f"{stem}_overview.png",
             "store": out / f"{stem}_heatmap.ome.zarr"}
    picture = overview(src, load_slide_result(done.store), side=overview_side, boxes=det.boxes,
                       labels=names, scores=det.scores)
    write_geojson(files["geojson"], detection_features(det.boxes, det.scores, det.labels, cats))
    write_image(files["overview"], picture)
    if files["store"].exists():
        shutil.rmtree(files["store"])
    done.store.rename(files["store"])
    return {k: str(v) for k, v in files.items()}


@click.command()
@click.argument("slide_path", metavar="SLIDE", type=click.Path(path_type=Path))
@options.model
@options.weights
@options.output_stride
@click.option("--level", type=click.IntRange(min=0), default=None,
              help="Pyramid level of the slide to scan (0: full resolution; default 0).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Scan the level nearest this many microns per pixel (when the file records "
                   "it) instead of --level.")
@click.option("--tile-cells", type=click.IntRange(min=1), default=None,
              help="Output cells per tile side (default: inputs of about 2048 px); also the "
                   "store's chunk side.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tiles of one size run through the net together (for a GPU).")
@click.option("--class", "class_names", multiple=True,
              help="Store only this class's map (repeatable; default: every class).")
@options.threshold
@options.nms_iou
@click.option("--overview-side", type=click.IntRange(min=64), default=2048, show_default=True,
              help="Longer side of the overview PNG in pixels.")
@options.max_memory
@options.device
@options.precision
@options.threads
@options.output_dir
@options.overwrite
@options.quiet
@options.json_output()
def slide(slide_path, model, weights, output_stride, level, mpp, tile_cells, batch, class_names,
          threshold, nms_iou, overview_side, max_memory, device, precision, threads, output_dir,
          overwrite, quiet, json_path) -> None:
    """Scan a whole-slide image (tiled/pyramidal TIFF, OME-TIFF, SVS; other vendor formats with
    pip install 'densify[slide]') tile by tile, in memory that does not grow with the slide
    (--max-memory sizes the tiles to fit a budget for the whole process; --tile-cells fixes
    them).

    Writes OUTDIR/<stem>_heatmap.ome.zarr (per-class maps, multiscale OME-Zarr: napari opens it;
    densify.load_result reads it lazily), OUTDIR/<stem>_detections.geojson (QuPath: File >
    Import objects) and OUTDIR/<stem>_overview.png (the map over the slide). The store is built
    in OUTDIR/.<stem>_heatmap.ome.zarr.partial: a killed scan rerun with the same command resumes
    from its last finished tile. A rerun after success keeps the outputs (--overwrite redoes).
    """
    from .._parse import format_bytes
    from ..io.files import ensure_output_dir
    from ..io.slides import open_slide
    from ..scan.memory import peak_rss_bytes
    from ..scan.scanner import PRECISIONS, Scanner
    from ..scan.settings import ScanSettings
    from ..scan.stream import scan_slide, tile_cells_for
    from ._scanning import default_stride, default_threshold, run_tuned

    start = time.perf_counter()
    out = ensure_output_dir(output_dir)
    stem = _stem(slide_path)
    final = out / f"{stem}_heatmap.ome.zarr"
    if final.exists() and not overwrite:
        skipped = {"slide": str(slide_path), "status": "skipped", "files": [str(final)]}
        if not options.write_json_output(json_path, skipped) or json_path != "-":
            click.echo(f"{slide_path}: kept {final} (done by an earlier run; --overwrite redoes "
                       "it)")
        return
    stride = default_stride(model) if output_stride is None else output_stride
    settings = ScanSettings(scales=[1.0], output_stride=stride, device=device,
                            precision=precision, max_memory=max_memory, threads=threads)
    with open_slide(slide_path) as src, run_tuned(settings) as chosen_threads:
        index = _level(src, level, mpp)
        scanner = Scanner(model, settings.replace(threads=chosen_threads), weights=weights)
        startup_peak = peak_rss_bytes()
        if tile_cells is None and scanner.budget is not None:
            tile_cells = tile_cells_for(scanner.scan_net, scanner.budget.total -
                                        scanner.budget.fixed, PRECISIONS[precision] or
                                        scanner.dtype)
        partial = out / f".{stem}_heatmap.ome.zarr.partial"
        if overwrite and partial.exists():
            shutil.rmtree(partial)
        done = scan_slide(scanner, src, partial, index, tile_cells=tile_cells,
                          classes=_classes(scanner, class_names),
                          threshold=default_threshold(scanner, threshold), iou=nms_iou,
                          attrs={"model": model, "weights": str(weights)}, batch=batch,
                          progress=not quiet)
        files = _write_outputs(out, stem, src, done, scanner, overview_side)
        lv = src.levels[index]
    record = {"slide": str(slide_path), "status": "ok", "format": src.format, "level": index,
              "level_size": list(lv.size), "mpp": None if lv.mpp is None else list(lv.mpp),
              "cells": list(done.cells), "tiles": done.tiles, "resumed": done.resumed,
              "missing_tiles": [list(b) for b in done.missing],
              "detections": len(done.detections), "seconds": round(time.perf_counter() - start, 2),
              "startup_peak_rss": startup_peak, "peak_rss": peak_rss_bytes(), "files": files}
    if options.write_json_output(json_path, record) and json_path == "-":
        return
    where = f" ({lv.mpp[1]:.3g} um/px)" if lv.mpp else ""
    click.echo(f"{slide_path} ({src.format}): level {index}, {lv.size[0]}x{lv.size[1]} px{where}, "
               f"{done.cells[0]}x{done.cells[1]} cells in {done.tiles} tiles"
               + (f" ({done.resumed} resumed)" if done.resumed else "")
               + f", {len(done.detections)} detections, {record['seconds']:.1f} s")
    click.echo(f"  peak memory (RSS): {format_bytes(startup_peak)} at start-up, "
               f"{format_bytes(record['peak_rss'])} in all")
    if done.missing:
        click.echo(f"  note: {len(done.missing)} corrupt tile(s); their cells are NaN in the map")
    click.echo(f"  wrote {', '.join(files.values())}")
