"""``densify convert``: save a dense net as TorchScript or ONNX."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from . import options

__all__ = ["convert"]


@click.command()
@options.model
@options.weights
@options.output_stride
@options.input_size
@options.head
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="FILE.pt (TorchScript) or FILE.onnx (dynamic height and width).")
def convert(model, weights, output_stride, input_size, head, output) -> None:
    """Convert a classifier to a dense net and save it (TorchScript or ONNX)."""
    if output.suffix not in (".pt", ".onnx"):
        raise click.BadParameter("must end in .pt (TorchScript) or .onnx", param_hint="--output")
    if output.suffix == ".onnx":
        from .._extras import require_extra

        require_extra("onnx", "ONNX export")
    from ..convert.dense import convolutionize
    from ..convert.export import export
    from ..io.files import atomic_output, ensure_output_dir
    from ..models.user import load_model

    if output.parent.is_dir():  # refused before converting (a missing one: atomic_output's line)
        ensure_output_dir(output.parent)
    clf = load_model(model, weights, input_size=input_size)
    dense = convolutionize(clf.model, clf.spec.input_size, output_stride=output_stride, head=head)
    with atomic_output(output) as tmp, warnings.catch_warnings():
        # torch 2.9+ deprecates TorchScript (FutureWarning): the .pt output stays TorchScript
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        export(dense, tmp)
    g = dense.geometry
    click.echo(f"wrote {output}: window {g.window[0]}x{g.window[1]}, stride {g.stride[0]}, "
               f"{sum(o.channels for o in dense.outputs)} output channels, {dense.outputs[0].path} path")
