"""Every option shared by two or more commands, defined once (rasterio's ``rio/options.py``).

Each option's docstring-comment lists the commands that use it. Values are parsed by callbacks
that raise :class:`click.BadParameter`, so a bad value stops the command before any work with one
line naming the option and the fix. Nothing here imports torch: ``densify --help`` stays fast;
callbacks that need the library import it when they run. ``--json`` (:mod:`densify.cli.json_options`),
``--ray`` (:mod:`densify.cli.ray_options`) and the step from parsed options to one model and one
:class:`densify.scan.settings.ScanSettings` (:mod:`densify.cli.option_values`) have modules of
their own and are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from .._parse import parse_bytes, parse_hw
from ..errors import DensifyError
from .json_options import json_output, write_json_output
from .option_values import model_choices, settings_options
from .ray_options import RayOptions, ray_options

__all__ = [
    "DEFAULT_MODEL", "callback", "model", "weights", "output_stride", "input_size", "scales",
    "object_sizes", "device", "precision", "output_dir", "max_memory", "quiet", "json_output",
    "threshold", "nms_iou", "merge", "merge_threshold", "top_k", "boxes", "image_size", "threads",
    "keep_memory", "batch_size",
    "sheet", "report", "flip", "overwrite", "prefetch", "mean", "std", "classes", "scores_output",
    "boxes_output", "box_format", "model_options", "scan_options", "head", "RayOptions",
    "ray_options", "settings_options", "write_json_output", "models", "scan_weights",
    "model_choices",
]

#: The model every command uses when ``--model`` is not given: the project's digit spotter,
#: shipped inside the package (``densify/models/data``).
DEFAULT_MODEL = "lenet5-digits"


def callback(parse: Callable) -> Callable:
    """A click callback: ``parse(value)`` (skipped for ``None``), its errors as ``BadParameter``."""

    def run(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value)
        except (DensifyError, ValueError) as exc:
            raise click.BadParameter(str(exc).splitlines()[0]) from None

    return run


def _model_name(value: str) -> str:
    from ..models.catalogue import get_spec

    return value if ":" in value else get_spec(value).name  # module:factory: checked on load


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"cannot read {value!r}; give comma-separated numbers, e.g. "
                         "0.485,0.456,0.406") from None


def _positive_floats(value: str) -> tuple[float, ...]:
    values = _floats(value)
    if not all(v > 0 and v != float("inf") for v in values):
        raise ValueError(f"standard deviations must be positive, got {value!r}; e.g. "
                         "0.229,0.224,0.225")
    return values


def _classes(value: str) -> tuple[str, ...]:
    from ..models.user import read_classes

    return tuple(read_classes(value))


def _scales(value: str):
    from ..scan.pyramid import parse_scales

    return parse_scales(value)


def _object_sizes(value: str) -> tuple[float, float]:
    from ..scan.pyramid import object_range

    try:
        small, large = (float(v) for v in value.split(":"))
    except ValueError:
        raise ValueError(f"cannot read object sizes {value!r}; give MIN:MAX pixels, e.g. 24:120"
                         ) from None
    object_range(1.0, (small, large))  # validates
    return small, large


def _device(value: str) -> str:
    from ..scan.scanner import resolve_device

    resolve_device(value)
    return value


# Used by: verify, convert, slide, bench (one model; heatmap, detect, evaluate: `models`).
model = click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True, callback=callback(_model_name),
    help="Catalogue name (densify models lists them), or your own classifier as "
         "package.module:factory (an importable callable returning the nn.Module; verify, "
         "convert, heatmap and detect; give --input-size).")

# Used by: verify, convert, slide, bench (heatmap, detect, evaluate: `scan_weights`).
weights = click.option(
    "--weights", "-w", default=None, show_default="DEFAULT (random for a model without any)",
    help="DEFAULT (torchvision/timm pretrained, or the project's shipped file), random, or a "
         "PATH to a state dict.")

# Used by: heatmap, detect, evaluate. Repeatable: several --model scan as an ensemble
# (densify.scan.ensemble); --weights then gives one file for all or one per --model, in order.
models = click.option(
    "--model", "-m", multiple=True, default=(DEFAULT_MODEL,), show_default=True,
    callback=callback(lambda names: tuple(_model_name(n) for n in names)),
    help="Catalogue name (densify models lists them), or your own classifier as "
         "package.module:factory (give --input-size). Repeat it to scan with an ensemble of "
         "models of the same classes: their heat maps and scores are averaged, their boxes "
         "merged.")
scan_weights = click.option(
    "--weights", "-w", multiple=True, show_default="DEFAULT (random for a model without any)",
    help="DEFAULT, random, or a PATH to a state dict; with several --model, once for all or "
         "once per --model, in order.")


# Used by: verify, convert, heatmap, detect, bench.
output_stride = click.option(
    "--output-stride", "-s", type=click.IntRange(min=1), default=None,
    help="Pixels between output cells; half the native stride applies stride-1 final pooling. "
         "Default when scanning: the largest reachable stride up to 16 (16 for ImageNet nets, "
         "12 for overfeat_accurate; else the native stride); the native "
         "stride for convert and bench; verify's check 3 tests the next reachable one (half, or "
         "a third for overfeat_accurate).")

# Used by: verify, convert, bench, heatmap, detect.
input_size = click.option(
    "--input-size", default=None, metavar="HxW", callback=callback(
        lambda v: parse_hw(v, "input size")),
    help="Canonical input to convert at, HxW or N (default: the model's own).")

# Used by: verify, convert, bench.
head = click.option(
    "--head", type=click.Choice(["auto", "fast", "general"]), default="auto", show_default=True,
    help="How the head is converted: fast (rewritten into convolutions), general (the "
         "classifier's own head run on every window), auto (fast where possible).")

# Used by: heatmap, detect, evaluate.
scales = click.option(
    "--scales", default="6", show_default=True, callback=callback(_scales),
    help="N scales (from the card's object sizes, or from 'short side = window' up; "
         "densify.scan.pyramid), factors 0.5,1,2, a range lo:hi:n, exact sizes HxW,HxW "
         "(e.g. 245x245,281x317), or 'overfeat' (the paper's six sizes).")

# Used by: heatmap, detect.
object_sizes = click.option(
    "--object-sizes", default=None, metavar="MIN:MAX", callback=callback(_object_sizes),
    help="Heights in pixels of the objects to find: N scales then map them onto the model's "
         "trained object size (default: the model card's).")

# Used by: heatmap, detect, evaluate, bench.
device = click.option(
    "--device", default="auto", show_default=True, callback=callback(_device),
    help="auto (CUDA if available), cpu, cuda, cuda:N.")

# Used by: heatmap, detect, bench.
precision = click.option(
    "--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32",
    show_default=True, help="Autocast precision of the dense pass (softmax stays float32).")

# Used by: heatmap, detect.
output_dir = click.option(
    "--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
    default="out", show_default=True, help="Where the images, maps and summaries go.")

# Used by: heatmap, detect, bench.
max_memory = click.option(
    "--max-memory", default=None, metavar="SIZE", callback=callback(parse_bytes),
    help="Memory budget, e.g. 3GB or 512MiB. heatmap/detect: the peak resident memory of the "
         "whole process (weights, image, maps; a budget below the minimum is refused, stating "
         "it); bench: one dense pass. What does not fit is computed in exact overlapping tiles.")

# Used by: heatmap, detect, evaluate.
quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")

# Used by: detect, evaluate.
threshold = click.option(
    "--threshold", "-t", type=click.FloatRange(0, 1, min_open=True), default=None,
    help="Smallest probability of a cell that proposes a box (default: the model card's "
         "recommended threshold, else 0.5).")

# Used by: detect, evaluate.
nms_iou = click.option(
    "--nms-iou", type=click.FloatRange(0, 1), default=0.3, show_default=True,
    help="Boxes overlapping a better one of the same class by more are dropped.")

# Used by: detect, evaluate.
merge = click.option(
    "--merge", type=click.Choice(["nms", "overfeat"]), default="nms", show_default=True,
    help="How overlapping boxes become one: NMS (keep the best, drop those over --nms-iou) or "
         "OverFeat's greedy merge (average the closest pair, add their scores, repeat; "
         "densify.scan.merge).")

# Used by: detect, evaluate.
merge_threshold = click.option(
    "--merge-threshold", type=click.FloatRange(min=0), default=1.0, show_default=True,
    help="--merge overfeat stops when the closest pair's match score (centre distance in box "
         "sides + 1 - IoU) exceeds this.")

# Used by: detect, evaluate (issue 21: top-k per scale).
top_k = click.option(
    "--top-k", type=click.IntRange(min=1), default=None,
    help="At each scale only the K classes with the highest map maximum (background excluded) "
         "propose boxes, as OverFeat does before merging. Default: every class.")

def boxes(fn: Callable) -> Callable:
    """``--boxes`` (detect, evaluate): where each box comes from, passed on as ``boxes``; the
    old ``--window-boxes`` (= window) and ``--no-regress`` (= object) still work, hidden."""

    @functools.wraps(fn)
    def command(*args, boxes: str, window_boxes: bool, no_regress: bool, **kwargs):
        if window_boxes or no_regress:
            if boxes != "auto" or (window_boxes and no_regress):
                raise click.UsageError("give --boxes alone (--window-boxes and --no-regress are "
                                       "its old spellings)")
            boxes = "window" if window_boxes else "object"
        return fn(*args, boxes=boxes, **kwargs)

    stack = [
        click.option("--boxes", type=click.Choice(["auto", "regressed", "object", "window"]),
                     default="auto", show_default=True,
                     help="Where boxes come from: the model's box regression, the model card's "
                          "object box inside each window, the whole window, or auto (regressed "
                          "when the model has a box output, else object when the card gives one, "
                          "else window)."),
        click.option("--window-boxes", is_flag=True, hidden=True),
        click.option("--no-regress", is_flag=True, hidden=True),
    ]
    for option in reversed(stack):
        command = option(command)
    return command

# Used by: evaluate, bench.
image_size = click.option(
    "--size", "size", default=None, metavar="HxW", callback=callback(
        lambda v: parse_hw(v, "image size")),
    help="Image HxW in pixels, e.g. 960x1280.")

# Used by: heatmap, detect, evaluate, bench.
threads = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="Intra-op CPU threads (scans default to the CPUs not busy with other processes' work, "
         "at least 1; bench defaults to torch's; OMP_NUM_THREADS set wins; densify.runtime).")

# Used by: heatmap, detect.
batch_size = click.option(
    "--batch-size", type=click.IntRange(min=1), default=None,
    help="Images of one size per forward pass (default: 1 on the CPU and with --max-memory; on a "
         "GPU as many 1080p images as half its free memory holds, at most 8). Outputs are the "
         "same as one image at a time.")

# Used by: heatmap, detect, evaluate, bench.
keep_memory = click.option(
    "--keep-memory", is_flag=True,
    help="Keep freed activation memory for the next pass instead of returning it to the system "
         "(glibc; densify.runtime): faster repeated passes, a higher resident size until exit. "
         "Ignored with --max-memory.")

# Used by: heatmap.
sheet = click.option(
    "--sheet", is_flag=True,
    help="Also write OUTDIR/<stem>_sheet.png, a contact sheet: rows the top-k classes (the --class "
         "pick first), columns each scale's map and their mean, 240 px panels.")

# Used by: heatmap.
report = click.option(
    "--report", is_flag=True,
    help="Also write OUTDIR/report.html (implies --sheet): a card per image with links to its "
         "files, the failed inputs with their errors, the settings and the timing. Static; "
         "opens from disk.")

# Used by: heatmap, detect.
overwrite = click.option(
    "--overwrite", is_flag=True,
    help="Redo images whose outputs exist (default: a rerun skips the images OUTDIR/summary.jsonl "
         "records as done, so a killed batch resumes).")

# Used by: heatmap, detect.
prefetch = click.option(
    "--prefetch/--no-prefetch", default=True, show_default=True,
    help="Decode the next image in a background thread while scanning the current one (off "
         "with --max-memory).")


# Used by: heatmap, detect, evaluate.
flip = click.option(
    "--flip", is_flag=True,
    help="Also scan every scale on the mirrored image (OverFeat): maps registered back, image "
         "scores averaged over scales and flips.")

# Used by: heatmap, detect.
mean = click.option(
    "--mean", default=None, metavar="M1,M2,M3", callback=callback(_floats),
    help="Per-channel normalization mean of [0, 1] pixel values (default: the model's; ImageNet "
         "for your own 3-channel model).")

# Used by: heatmap, detect.
std = click.option(
    "--std", default=None, metavar="S1,S2,S3", callback=callback(_positive_floats),
    help="Per-channel normalization standard deviation (default as --mean).")

# Used by: heatmap, detect.
classes = click.option(
    "--classes", "classes_file", default=None, metavar="FILE", callback=callback(_classes),
    help="Class names, one per line (default: the model's; indices for your own model).")

# Used by: heatmap, detect.
scores_output = click.option(
    "--scores-output", default=None, metavar="KEY",
    help="For models with several outputs: the one holding class scores (index or key; "
         "default: the model card's, else the only output).")

# Used by: heatmap, detect.
boxes_output = click.option(
    "--boxes-output", default=None, metavar="KEY",
    help="A box-regression output (index or key; 4 or 4 x classes channels): its boxes replace "
         "the windows (default: the model card's, else none).")

# Used by: heatmap, detect.
box_format = click.option(
    "--box-format", type=click.Choice(["offsets", "deltas"]), default=None,
    help="offsets: (dx1, dy1, dx2, dy2) edge shifts in window units; deltas: R-CNN (dx, dy, "
         "log dw, log dh) around the window centre (default: the model card's, else offsets).")


def model_options(fn: Callable) -> Callable:
    """How to read a model's input and outputs (heatmap, detect), in --help order."""
    for option in reversed([input_size, mean, std, classes, scores_output, boxes_output,
                            box_format]):
        fn = option(fn)
    return fn


def scan_options(fn: Callable) -> Callable:
    """The options of every scanning command (heatmap, detect), in --help order."""
    stack = [
        click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...",
                       type=click.Path(path_type=Path)),
        models, scan_weights, scales, flip, object_sizes, output_stride, device, precision,
        output_dir, max_memory, threads, batch_size, keep_memory, quiet, overwrite, prefetch,
        model_options,
    ]
    for option in reversed(stack):
        fn = option(fn)
    return fn
