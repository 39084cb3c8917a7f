"""``densify heatmap`` and ``densify detect``: scan images, write maps, boxes and COCO results.

Both commands take image files and directories (expanded to their images), convert the model
once, and process each image on its own: a bad image costs one line on stderr naming the file
and the problem, writes nothing, and makes the exit status 1 once the others are done. Usage
errors (unknown model, bad ``--scales``, unwritable ``-o``, weights for another architecture, an
unknown ``--class``) stop before any image with one line and a non-zero status, no traceback.
Outputs are written atomically (:mod:`densify.files`). Registered on the ``densify`` group as
``heatmap_command`` and ``detect_command``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from . import zoo
from .convert import ConversionError
from .detect import Detections
from .draw import COLORMAPS, draw_boxes, draw_caption, overlay_heatmap
from .files import OutputError, atomic_output, ensure_output_dir, write_image, write_json
from .image import ImageError, expand_inputs, read_image
from .pyramid import object_range, parse_scales
from .result import ScanResult, class_index
from .scan import PRECISIONS, Scanner, resolve_device
from .tiling import parse_bytes
from .weights import WeightsError

__all__ = ["heatmap_command", "detect_command", "DEFAULT_MODEL"]

DEFAULT_MODEL = "lenet5-digits"
IMAGE_ERRORS = (ImageError, OutputError, ValueError, torch.OutOfMemoryError)


# ------------------------------------------------------------------------- option callbacks


def _callback(check: Callable) -> Callable:
    """A click callback: ``check(value)``'s result, its ``ValueError`` as ``BadParameter``."""

    def callback(ctx, param, value):
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _model_name(value: str | None) -> str:
    if value is not None:
        return zoo.get_spec(value).name
    if DEFAULT_MODEL not in zoo.MODELS:
        raise ValueError(f"no model given and the default {DEFAULT_MODEL} is not trained "
                         "(weights/lenet5_digits.json is missing); pass --model NAME (densify "
                         "models lists them)")
    return DEFAULT_MODEL


def _object_sizes(value: str | None):
    if value is None:
        return None
    try:
        small, large = (float(v) for v in value.split(":"))
    except ValueError:
        raise ValueError(f"cannot read object sizes {value!r}; give MIN:MAX pixels, e.g. 24:120"
                         ) from None
    object_range(1.0, (small, large))  # validates
    return small, large


def _memory(value: str | None):
    return None if value is None else parse_bytes(value)


def _device_name(value: str) -> str:
    resolve_device(value)
    return value


def _check_colormap(ctx, param, value):
    if value not in COLORMAPS:
        raise click.BadParameter(f"unknown colormap {value!r}; e.g. jet, turbo, inferno, viridis")
    return value


def scan_options(fn: Callable) -> Callable:
    """Options shared by ``heatmap`` and ``detect``, defined once."""
    options = [
        click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...",
                       type=click.Path(path_type=Path)),
        click.option("--model", "-m", default=None, callback=_callback(_model_name),
                     help=f"Catalogue name (densify models); default {DEFAULT_MODEL}."),
        click.option("--weights", "-w", default="DEFAULT", show_default=True,
                     help="DEFAULT (pretrained / the project's file), random, or a PATH."),
        click.option("--scales", default="6", show_default=True, callback=_callback(parse_scales),
                     help="N scales (from the card's object sizes, or from 'short side = window' "
                          "up; densify.pyramid), factors 0.5,1,2, or a range lo:hi:n."),
        click.option("--object-sizes", default=None, callback=_callback(_object_sizes),
                     metavar="MIN:MAX",
                     help="Heights in pixels of the objects to find: N scales then map them "
                          "onto the model's trained object size (default: the model card's)."),
        click.option("--output-stride", "-s", type=click.IntRange(min=1), default=16,
                     show_default=True, help="Pixels between cells (native if unreachable)."),
        click.option("--device", default="auto", show_default=True,
                     callback=_callback(_device_name),
                     help="auto (CUDA if available), cpu, cuda, cuda:N."),
        click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32",
                     show_default=True),
        click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=Path("out"),
                     show_default=True, help="Where the images and maps go."),
        click.option("--max-memory", default=None, callback=_callback(_memory), metavar="SIZE",
                     help="Bound one forward pass's memory (e.g. 3GB): larger scales are computed "
                          "in exact overlapping tiles."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# -------------------------------------------------------------------------------- the flow


def _fail(message: str) -> None:
    tqdm.write(f"error: {message}", file=sys.stderr)


def _expand(inputs: Iterable[Path]) -> tuple[list[Path], int]:
    """Image files of every input; a missing path or an empty directory is reported here."""
    found, failed = [], 0
    for path in inputs:
        try:
            found.extend(expand_inputs([path]))
        except ImageError as exc:
            _fail(str(exc))
            failed += 1
    return found, failed


def _scanner(model, weights, scales, output_stride, device, precision,
             object_sizes=None, max_memory=None) -> Scanner:
    try:
        return Scanner(model, scales, output_stride, device, precision, weights,
                       object_sizes=object_sizes, max_memory=max_memory)
    except (WeightsError, ConversionError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None


def _default_threshold(scanner: Scanner, threshold: float | None) -> float:
    """``--threshold``, else the model card's recommended one, else 0.5."""
    if threshold is not None:
        return threshold
    spec = scanner.classifier.spec if scanner.classifier else None
    return float(spec.extra.get("threshold", 0.5)) if spec else 0.5


def _resolve_class(scanner: Scanner, query: str | None) -> int | None:
    if query is None:
        return None
    try:
        return class_index(scanner.categories, query)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--class") from None


def _stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (``photo``, ``photo-2``) so outputs never overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        out.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return out


def _each_image(scanner: Scanner, paths: list[Path], quiet: bool, work: Callable[..., dict]
                ) -> tuple[list[dict], int]:
    """Read and scan each image, then ``work(path, stem, rgb, result)``; a failure is one line."""
    records, failed = [], 0
    for path, stem in tqdm(list(zip(paths, _stems(paths), strict=True)), desc="images",
                           unit="image", disable=quiet):
        try:
            rgb = read_image(path)
            records.append(work(path, stem, rgb, scanner(rgb, progress=not quiet)))
        except IMAGE_ERRORS as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _fail(message if str(path) in message else f"{path}: {message}")
            failed += 1
    return records, failed


def _write_all(outputs: dict[Path, Callable[[Path], object]]) -> list[str]:
    """Write every output (each atomically); if one fails, remove those already written."""
    done: list[Path] = []
    try:
        for path, write in outputs.items():
            write(path)
            done.append(path)
    except OSError as exc:
        for path in done:
            path.unlink(missing_ok=True)
        raise exc if isinstance(exc, OutputError) else OutputError(f"{path}: {exc}") from None
    return [str(p) for p in done]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_output(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _notes(result: ScanResult, scanner: Scanner) -> list[str]:
    notes = []
    if result.padded_to_window:
        small = [f"{m.factor:.3g}" for m in result.maps if m.level.padded_to_window]
        notes.append(f"smaller than the {scanner.geometry.window[1]} px window at factor(s) "
                     f"{', '.join(small)}: padded with the mean colour")
    if result.upscaled:
        big = [f"{m.factor:.3g}" for m in result.maps if m.level.upscaled]
        notes.append(f"upscaled at factor(s) {', '.join(big)}")
    return notes


def _summary(path: Path, result: ScanResult, scanner: Scanner) -> dict:
    return {"image": str(path), "size": list(result.image_size), "factors": list(result.factors),
            "output_stride": scanner.output_stride, "notes": _notes(result, scanner),
            "padded_to_window": result.padded_to_window, "upscaled": result.upscaled}


def _finish(failed: int, total: int) -> None:
    if failed:
        _fail(f"{failed} of {total} input(s) failed")
        raise SystemExit(1)


def _header(scanner: Scanner, weights: str) -> str:
    stride = scanner.output_stride
    asked = scanner.requested_stride
    fallback = f" (native; {asked} not reachable)" if asked and asked != stride else ""
    clf = scanner.classifier
    source = ("random weights" if clf.random else f"weights {clf.weights}") if clf else weights
    return f"model window {scanner.geometry.window[1]} px, stride {stride}{fallback}, {source}"


def command_errors(fn: Callable) -> Callable:
    """Output-directory and other setup errors as one line (exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OutputError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


# ----------------------------------------------------------------------------------- heatmap


def _heatmap_one(scanner: Scanner, out: Path, chosen: int | None, top_k: int, alpha: float,
                 colormap: str, path: Path, stem: str, rgb: np.ndarray, result: ScanResult
                 ) -> dict:
    top = result.top_classes(top_k)
    cls = chosen if chosen is not None else (top[0].index if top else 0)
    classes = [cls] + [t.index for t in top if t.index != cls]
    maps = result.heatmaps(classes).numpy()
    best = result.best(cls)
    vis = overlay_heatmap(rgb, maps[0], alpha, colormap)
    vis = draw_boxes(vis, [best.box], [best.name], [best.score])
    vis = draw_caption(vis, f"{best.name} {best.score:.3f}")
    files = _write_all({
        out / f"{stem}_heatmap.png": lambda p: write_image(p, vis),
        out / f"{stem}_heatmap.npz": lambda p: _save_npz(p, result.arrays(classes, maps)),
    })
    rows = [{"index": t.index, "name": t.name, "score": t.score, "box": list(t.box),
             "factor": t.factor} for t in top]
    return {**_summary(path, result, scanner), "class": best.name, "top": rows, "files": files}


def _heatmap_table(records: list[dict]) -> str:
    lines = []
    for r in records:
        factors = r["factors"]
        lines.append(f"{r['image']} ({r['size'][0]}x{r['size'][1]}): {len(factors)} scale(s) "
                     f"{min(factors):.3g}-{max(factors):.3g}, map of {r['class']!r}")
        lines.append(f"  {'#':>2}  {'class':24s} {'score':>6}  {'best window x1,y1,x2,y2':24s} "
                     "scale")
        for i, t in enumerate(r["top"], 1):
            lines.append(f"  {i:2d}  {t['name'][:24]:24s} {t['score']:6.3f}  "
                         f"{','.join(f'{v:.0f}' for v in t['box']):24s} {t['factor']:.3g}")
        lines.extend(f"  note: {n}" for n in r["notes"])
        lines.append(f"  wrote {', '.join(r['files'])}")
    return "\n".join(lines)


@click.command("heatmap")
@scan_options
@click.option("--class", "class_", default=None,
              help="Class to paint: a name (any case; an unambiguous part is enough) or an "
                   "index. Default: the top class.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes listed and kept in the .npz.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--colormap", default="jet", show_default=True, callback=_check_colormap)
@command_errors
def heatmap_command(inputs, model, weights, scales, object_sizes, output_stride, device, precision,
                    max_memory,
                    output_dir, quiet, class_, top_k, as_json, alpha, colormap) -> None:
    """Class heat maps registered to each image: a PNG overlay and an NPZ of the maps.

    Writes OUTDIR/<stem>_heatmap.png and OUTDIR/<stem>_heatmap.npz per image. A window's
    probability sits at the window's centre, interpolated between centres and averaged over
    scales (densify.heatmap). Scores are OverFeat's: the best window per scale, averaged over
    scales.
    """
    out = ensure_output_dir(output_dir)
    scanner = _scanner(model, weights, scales, output_stride, device, precision, object_sizes,
                       max_memory)
    chosen = _resolve_class(scanner, class_)
    paths, failed = _expand(inputs)
    work = functools.partial(_heatmap_one, scanner, out, chosen, top_k, alpha, colormap)
    records, bad = _each_image(scanner, paths, quiet, work)
    if as_json:
        click.echo(json.dumps(records, indent=2, allow_nan=False))
    else:
        click.echo(f"{model}: {_header(scanner, weights)}")
        if records:
            click.echo(_heatmap_table(records))
    _finish(failed + bad, len(paths) + failed)


# ------------------------------------------------------------------------------------ detect


def _detect_one(scanner: Scanner, out: Path, opts: dict, path: Path, stem: str,
                rgb: np.ndarray, result: ScanResult) -> dict:
    det: Detections = result.detections(opts["threshold"], opts["iou"], opts["classes"],
                                        refine=not opts["window_boxes"])
    names = [result.categories[c] for c in det.labels.tolist()]
    vis = draw_boxes(rgb, det.boxes, names, det.scores)
    files = _write_all({out / f"{stem}_detections.png": lambda p: write_image(p, vis)})
    return {**_summary(path, result, scanner), "detections": det.to_coco(stem, result.categories),
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


@click.command("detect")
@scan_options
@click.option("--threshold", "-t", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Smallest probability of a cell that proposes a box (default: the model "
                   "card's recommended threshold, else 0.5).")
@click.option("--nms-iou", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Boxes overlapping a better one of the same class by more are dropped.")
@click.option("--class", "classes", multiple=True, help="Only this class (repeatable).")
@click.option("--window-boxes", is_flag=True,
              help="Whole windows as boxes, even where the model card gives the object's size.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="COCO results file [default: OUTDIR/detections.json].")
@command_errors
def detect_command(inputs, model, weights, scales, object_sizes, output_stride, device, precision,
                   max_memory,
                   output_dir, quiet, threshold, nms_iou, classes, window_boxes, json_path
                   ) -> None:
    """Detect objects: boxes from every window above --threshold, merged by NMS.

    Writes OUTDIR/<stem>_detections.png per image and one COCO results file (image_id = file
    stem, category_id = class index, bbox = [x, y, w, h] pixels). The background class never
    yields boxes.
    """
    out = ensure_output_dir(output_dir)
    json_path = json_path or out / "detections.json"
    ensure_output_dir(json_path.parent)
    scanner = _scanner(model, weights, scales, output_stride, device, precision, object_sizes,
                       max_memory)
    chosen = [_resolve_class(scanner, c) for c in classes] or None
    if chosen and scanner.background_class in chosen:
        raise click.BadParameter("the background class never yields boxes", param_hint="--class")
    opts = {"threshold": _default_threshold(scanner, threshold), "iou": nms_iou, "classes": chosen,
            "window_boxes": window_boxes}
    paths, failed = _expand(inputs)
    work = functools.partial(_detect_one, scanner, out, opts)
    records, bad = _each_image(scanner, paths, quiet, work)
    write_json(json_path, [d for r in records for d in r["detections"]])
    click.echo(f"{model}: {_header(scanner, weights)}")
    if records:
        click.echo(_detect_lines(records))
    click.echo(f"wrote {json_path}")
    _finish(failed + bad, len(paths) + failed)
