"""``densify verify``: prove the dense net equals the classifier (checks 1-3, optionally 4)."""

from __future__ import annotations

import math

import click

from . import options

__all__ = ["verify"]

DTYPES = ("float64", "float32")


@click.command()
@options.model
@options.weights
@options.output_stride
@options.input_size
@click.option("--dtype", type=click.Choice(DTYPES), default="float64", show_default=True)
@click.option("--crops", is_flag=True, help="Also measure dense cells against window crops.")
@options.head
def verify(model, weights, output_stride, input_size, dtype, crops, head) -> None:
    """Prove the dense net equals the classifier: checks 1-3 (exit 1 if any fails).

    Prints which path converted the head (fast: rewritten into convolutions; general: the
    classifier's own head run on every window) for each output."""
    import torch

    from ..convert import verify as checks
    from ..convert.dense import convolutionize
    from ..models.user import load_model

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    clf = load_model(model, weights, input_size=input_size)
    net = clf.model.to(getattr(torch, dtype))
    size = clf.spec.input_size
    dense = convolutionize(net, size, head=head)
    click.echo(f"{'head path':14s} " + ", ".join(
        o.path if o.key is None else f"{o.key}: {o.path}" for o in dense.outputs))
    results = [checks.check_canonical(net, dense), checks.check_head(net, dense),
               checks.check_output_stride(net, size, output_stride)]
    if crops:
        results.append(checks.check_crops(net, dense))
    failed = False
    for r in results:
        applies = r.count > 0
        status = ("ok" if r.passed else "FAIL") if applies else "n/a"
        # Padded nets' crop gap is a measurement, not a failure, unless it is NaN/inf.
        informational = (r.name == "crops" and dense.geometry.rf_size != dense.geometry.window
                         and math.isfinite(r.max_rel))
        failed |= applies and not r.passed and not informational
        click.echo(f"{r.name:14s} {status:4s} max_rel {r.max_rel:9.2e}  max_abs {r.max_abs:9.2e}  "
                   f"tol {r.tolerance:.0e}  cells {r.count:5d}  {r.note}")
    if failed:
        raise SystemExit(1)
