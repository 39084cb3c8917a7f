"""``densify convert``: save a dense net as TorchScript or ONNX."""

from __future__ import annotations

from pathlib import Path

import click

from . import options

__all__ = ["convert"]


@click.command()
@options.model
@options.weights
@options.output_stride
@options.input_size
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="FILE.pt (TorchScript) or FILE.onnx (dynamic height and width).")
def convert(model, weights, output_stride, input_size, output) -> None:
    """Convert a classifier to a dense net and save it (TorchScript or ONNX)."""
    if output.suffix not in (".pt", ".onnx"):
        raise click.BadParameter("must end in .pt (TorchScript) or .onnx", param_hint="--output")
    from ..convert.dense import convolutionize
    from ..convert.export import export
    from ..io.files import atomic_output
    from ..models.weights import load_classifier

    clf = load_classifier(model, weights)
    size = clf.spec.input_size if input_size is None else (clf.spec.input_size[0], *input_size)
    dense = convolutionize(clf.model, size, output_stride=output_stride)
    with atomic_output(output) as tmp:
        export(dense, tmp)
    g = dense.geometry
    click.echo(f"wrote {output}: window {g.window[0]}x{g.window[1]}, stride {g.stride[0]}, "
               f"{len(clf.categories)} classes")
