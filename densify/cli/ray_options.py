"""``--ray``, ``--address``, ``--workers``, ``--gpus-per-worker``: one ``ray`` parameter.

Re-exported by :mod:`densify.cli.options`, where every shared option is listed; the run itself
is :mod:`densify.cli._ray`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import click

__all__ = ["RayOptions", "ray_options"]


class RayOptions(NamedTuple):
    """``--ray`` and its settings, as the scanning commands receive them (``ray=None``: no --ray)."""

    address: str | None
    workers: int | None
    gpus_per_worker: float


# Used by: heatmap, detect. One ``ray`` parameter (RayOptions or None) instead of four.
def ray_options(fn: Callable) -> Callable:
    """``--ray``, ``--address``, ``--workers``, ``--gpus-per-worker``, passed on as ``ray``."""

    @functools.wraps(fn)
    def command(*args, ray: bool, address, workers, gpus_per_worker, **kwargs):
        if not ray and (address or workers or gpus_per_worker):
            raise click.UsageError("--address, --workers and --gpus-per-worker need --ray")
        if ray:  # before any work
            from .._extras import require_extra

            require_extra("ray", "--ray")
        return fn(*args, ray=RayOptions(address, workers, gpus_per_worker) if ray else None,
                  **kwargs)

    stack = [
        click.option("--ray", is_flag=True,
                     help="Scan on Ray Data (pip install 'densify[ray]'): a pool of actors "
                          "scans the images and writes their files; the same outputs, records "
                          "and resuming as without --ray."),
        click.option("--address", default=None, metavar="auto|ray://HOST:PORT",
                     help="With --ray: the cluster to join (default: start a local Ray)."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="With --ray: actors, each with its own model (default: one per CPU, "
                          "or per GPU share with --gpus-per-worker)."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0,
                     help="With --ray: GPUs per actor (fractions share a GPU)."),
    ]
    for option in reversed(stack):
        command = option(command)
    return command
