"""``densify bench``: the dense net against batched window crops (:mod:`densify.bench`)."""

from __future__ import annotations

import json

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
@options.precision
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@options.as_json
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
@click.option("--keep-memory", is_flag=True,
              help="Keep freed activation memory for reuse, as the scanning commands do (glibc; "
                   "densify.scan.malloc); the peak-memory figures then miss reused memory.")
def bench(model, weights, size, output_stride, repeat, precision, channels_last, as_json,
          baseline, baseline_windows, batch_size, use_timm, max_memory, breakdown, fold_bn,
          threads, head, keep_memory) -> None:
    """Time the dense net against batched window crops and timm's test-time pooling."""
    from ..bench import format_report, run_bench
    from ..scan.malloc import retain_freed_memory

    if keep_memory:
        retain_freed_memory()
    result = run_bench(model, size, output_stride, repeat, precision, channels_last,
                       baseline=baseline, timm=use_timm, max_memory=max_memory,
                       baseline_windows=baseline_windows, batch_size=batch_size,
                       breakdown=breakdown, fold_bn=fold_bn, weights=weights, threads=threads, head=head)
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))
