"""The ``densify`` command line: one click group, shared options defined once.

Commands: ``models``, ``verify``, ``convert`` (here) and ``heatmap``, ``detect``, ``bench``
(registered from their modules). Every user error is one line on stderr and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click
import torch

from . import zoo
from .convert import ConversionError, convolutionize
from .files import OutputError, atomic_output
from .weights import WeightsError, load_classifier

log = logging.getLogger(__name__)

USER_ERRORS = (ConversionError, WeightsError, OutputError, ValueError, OSError)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ------------------------------------------------------------------------------ shared options


def _check_model(ctx, param, value):
    if value is None:
        return value
    try:
        zoo.get_spec(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def model_option(default: str | None = None, required: bool = True):
    return click.option("--model", "-m", default=default, required=required and default is None,
                        callback=_check_model, show_default=default is not None,
                        help="Catalogue name (densify models lists them).")


weights_option = click.option(
    "--weights", "-w", default="random", show_default=True,
    help="random, DEFAULT (torchvision/timm pretrained, or the project's file), or a PATH to a "
         "state dict.")
output_stride_option = click.option(
    "--output-stride", "-s", type=click.IntRange(min=1), default=None,
    help="Pixels between output cells; half the native stride applies stride-1 final pooling.")


def _check_input_size(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be a positive number of pixels, e.g. 224")
    return value


input_size_option = click.option(
    "--input-size", type=int, default=None, callback=_check_input_size,
    help="Canonical input size to convert at (default: the model's own).")


def user_errors(fn):
    """Turn library errors into one-line click errors (exit status 1), never tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else
                                       type(exc).__name__) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log progress details.")
@click.version_option(package_name="densify")
def main(verbose: bool) -> None:
    """densify: dense prediction by convolutionization."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")


# ------------------------------------------------------------------------------------ models


@main.command()
@click.option("--family", type=click.Choice(["torchvision", "seed", "timm", "project"]),
              default=None, help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def models(family: str | None, as_json: bool) -> None:
    """List the supported models: canonical input, output strides, parameter count."""
    from tqdm import tqdm

    from .convert import available_strides

    rows = []
    names = zoo.model_names(family)
    for name in tqdm(names, desc="models", disable=not sys.stderr.isatty(), leave=False):
        spec = zoo.MODELS[name]
        try:
            model = zoo.build_skeleton(name)
            strides = available_strides(model, spec.input_size)
            params = sum(p.numel() for p in model.parameters())
        except ImportError as exc:  # e.g. timm not installed
            strides, params = [], 0
            log.warning("%s: %s", name, exc)
        rows.append({"name": name, "family": spec.family, "input": list(spec.input_size),
                     "strides": strides, "params": params})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':22s} {'family':11s} {'input':>11s} {'strides':>10s} {'params':>9s}")
    for r in rows:
        size = "x".join(str(v) for v in r["input"])
        strides = "/".join(str(s) for s in r["strides"])
        click.echo(f"{r['name']:22s} {r['family']:11s} {size:>11s} {strides:>10s} "
                   f"{r['params'] / 1e6:8.1f}M")
    click.echo(f"refused: {', '.join(sorted(zoo.REFUSED))} (vision transformers)")


# ------------------------------------------------------------------------------------ verify


def _load(model: str, weights: str, dtype: torch.dtype, input_size: int | None):
    clf = load_classifier(model, weights)
    size = clf.spec.input_size if input_size is None else (clf.spec.input_size[0], input_size,
                                                            input_size)
    return clf, clf.model.to(dtype), size


@main.command()
@model_option()
@weights_option
@output_stride_option
@input_size_option
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float64", show_default=True)
@click.option("--crops", is_flag=True, help="Also measure dense cells against window crops.")
@user_errors
def verify(model, weights, output_stride, input_size, dtype, crops) -> None:
    """Prove the dense net equals the classifier: checks 1-3 (exit 1 if any fails)."""
    from . import verify as checks

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    _, net, size = _load(model, weights, DTYPES[dtype], input_size)
    dense = convolutionize(net, size)
    results = [checks.check_canonical(net, dense), checks.check_head(net, dense),
               checks.check_output_stride(net, size, output_stride)]
    if crops:
        results.append(checks.check_crops(net, dense))
    failed = False
    for r in results:
        applies = r.count > 0
        status = ("ok" if r.passed else "FAIL") if applies else "n/a"
        informational = r.name == "crops" and dense.geometry.rf_size != dense.geometry.window
        failed |= applies and not r.passed and not informational
        click.echo(f"{r.name:14s} {status:4s} max_rel {r.max_rel:9.2e}  max_abs {r.max_abs:9.2e}  "
                   f"tol {r.tolerance:.0e}  cells {r.count:5d}  {r.note}")
    if failed:
        raise SystemExit(1)


# ----------------------------------------------------------------------------------- convert


@main.command()
@model_option()
@weights_option
@output_stride_option
@input_size_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="FILE.pt (TorchScript) or FILE.onnx (dynamic height and width).")
@user_errors
def convert(model, weights, output_stride, input_size, output) -> None:
    """Convert a classifier to a dense net and save it (TorchScript or ONNX)."""
    from .export import export

    if output.suffix not in (".pt", ".onnx"):
        raise click.BadParameter("must end in .pt (TorchScript) or .onnx", param_hint="--output")
    clf, net, size = _load(model, weights, torch.float32, input_size)
    dense = convolutionize(net, size, output_stride=output_stride)
    with atomic_output(output) as tmp:
        export(dense, tmp)
    g = dense.geometry
    click.echo(f"wrote {output}: window {g.window[0]}x{g.window[1]}, stride {g.stride[0]}, "
               f"{len(clf.categories)} classes")


def _register() -> None:
    """Commands that live in their own modules."""
    for module, names in (("cli_scan", ("heatmap", "detect")), ("bench", ("bench",)),
                          ("cli_eval", ("evaluate",))):
        try:
            mod = __import__(f"densify.{module}", fromlist=list(names))
        except ImportError:
            continue
        for name in names:
            cmd = getattr(mod, f"{name}_command", None) or getattr(mod, name, None)
            if isinstance(cmd, click.Command):
                main.add_command(cmd, name)


_register()
