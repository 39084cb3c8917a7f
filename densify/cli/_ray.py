"""``densify heatmap|detect --ray``: the same scan on Ray Data (:mod:`densify.distributed`).

Joins the cluster at ``--address`` (or starts a local Ray sized to the machine), scans every
image in an actor pool and writes one row per image to ``OUTDIR/<command>.parquet`` with Ray
Data's Parquet writer; Ray Data draws the progress bars. Then it prints the counts, one line per
failed image on stderr, and exits with status 1 if any failed, as without ``--ray``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import ParameterError
from .options import RayOptions

__all__ = ["scan_on_ray", "connect", "default_workers"]


def connect(ray, address: str | None) -> bool:
    """Join ``address`` or start a local instance; True if this call started Ray (to stop it)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ParameterError(f"cannot reach {where} ({str(exc).splitlines()[0]}); start one "
                             "with 'ray start --head' or leave out --address") from None
    return True


def default_workers(ray, options: RayOptions, cpus_per_worker: int) -> int:
    """``--workers``, else as many actors as the cluster's GPUs (or CPUs) hold."""
    if options.workers:
        return options.workers
    resources = ray.cluster_resources()
    if options.gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) / options.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) / cpus_per_worker))


def scan_on_ray(options: RayOptions, command: str, inputs, output_dir: Path, quiet: bool,
                model, settings, **rows) -> None:
    """Scan ``inputs`` with :func:`densify.distributed.scan_dataset`; report; exit 1 on failures.

    ``model`` (a :class:`densify.models.user.ModelChoice`) and ``settings`` (a
    :class:`densify.scan.settings.ScanSettings`) go to every worker as the options built them;
    ``rows`` holds scan_dataset's per-row keywords (top_k, threshold, ...).
    """
    import pyarrow.dataset as pads

    from ..distributed import require_ray, scan_dataset
    from ._scanning import expand, fail, finish

    ray = require_ray()
    target = Path(output_dir) / f"{command}.parquet"
    paths, failed = expand(inputs)
    if not paths:
        finish(failed, failed)
        return
    started = connect(ray, options.address)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = not quiet
        if quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = settings.threads or 1
        workers = default_workers(ray, options, cpus)
        scan_dataset([str(p) for p in paths], model, settings, **rows, workers=workers,
                     cpus_per_worker=cpus, gpus_per_worker=options.gpus_per_worker,
                     output_dir=target)
    finally:
        if started:
            ray.shutdown()
    written = pads.dataset(target, format="parquet")
    errors = written.to_table(columns=["error"], filter=pads.field("status") != "ok")
    for message in errors["error"].to_pylist():
        fail(message)
    total = written.count_rows()
    click.echo(f"{model.model}: {total} image(s) on Ray, {workers} worker(s): "
               f"{total - errors.num_rows} ok, {errors.num_rows} failed; wrote {target}")
    finish(failed + errors.num_rows, len(paths) + failed)
