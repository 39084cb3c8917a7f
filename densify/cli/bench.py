"""``densify bench``: the dense net against batched window crops (:mod:`densify.bench`)."""

from __future__ import annotations

import click

from . import options

__all__ = ["bench"]


@click.command()
@options.model
@options.weights
@options.image_size  # default: 4 windows per side
@options.output_stride
@click.option("--repeat", "-n", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs per method after one warm-up; the median is reported.")
@options.device
@options.precision
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@options.json_output()
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Time the crop-by-crop baseline.")
@click.option("--baseline-windows", type=click.IntRange(min=1), default=None,
              help="Time this many random windows and extrapolate (default: all).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Crops per batch in the baseline.")
@click.option("--timm/--no-timm", "use_timm", default=True, show_default=True,
              help="Time timm's test-time pooling (ResNet family).")
@options.max_memory
@click.option("--breakdown/--no-breakdown", default=True, show_default=True,
              help="Time the dense net node by node (trunk vs head).")
@click.option("--fold-bn/--no-fold-bn", default=True, show_default=True,
              help="Fold batch norms into convolutions (dense net and baseline alike).")
@options.threads
@options.head
@options.keep_memory
def bench(model, weights, size, output_stride, repeat, device, precision, channels_last, json_path,
          baseline, baseline_windows, batch_size, use_timm, max_memory, breakdown, fold_bn,
          threads, head, keep_memory) -> None:
    """Time the dense net against batched window crops and timm's test-time pooling."""
    from ..bench import format_report, run_bench
    from ..runtime import tuned

    with tuned(threads, keep_memory=keep_memory, rule=False):
        result = run_bench(model, size, output_stride, repeat, precision, channels_last,
                           baseline=baseline, timm=use_timm, max_memory=max_memory,
                           baseline_windows=baseline_windows, batch_size=batch_size,
                           breakdown=breakdown, fold_bn=fold_bn, weights=weights,
                           threads=threads, head=head, device=device)
    if not options.write_json_output(json_path, result) or json_path != "-":
        click.echo(format_report(result))
