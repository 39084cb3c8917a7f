"""``densify heatmap|detect --ray``: the single-process folder run, its scanning done on Ray Data.

:func:`each_image_on_ray` keeps the contract of :func:`densify.cli._scanning.each_image`, so the
command does everything else as without ``--ray``: the driver decides which images an earlier
run of the same job already did (the same :func:`densify.io.records.already_done`, with
``--overwrite`` redoing them) and records those as ``skipped``; the others go, as paths, to a
pool of actors (Ray Data ``map_batches``; each actor converts the model once, as
:class:`densify.distributed.ScanActor` does). An actor reads, scans and writes each image's
files with the command's own per-image function (``work``: the PNG overlays, result files and
contact sheets, atomically, into the output directory) and sends back the image's record; the
driver appends the records to ``OUTDIR/summary.jsonl`` as they arrive and reports bad files.
The command then writes the folder's outputs (report, COCO JSON, ``--json``) from the records,
in input order, exactly as without ``--ray``.

Paths cross the cluster absolute (workers run in other directories; on several machines the
images and the output directory must be on a file system every node sees); the records come
back with the paths as the driver was given them, so both paths write the same records.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ParameterError
from ..runtime import choose_threads
from .ray_options import RayOptions

if TYPE_CHECKING:
    from ..scan.scanner import Scanner
    from ..scan.settings import ScanSettings

__all__ = ["scan_images", "each_image_on_ray", "WorkActor", "connect", "default_workers"]


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


class WorkActor:
    """The callable class of ``map_batches``: one scanner (or ensemble) per actor, built from the
    options' ``model`` and ``settings`` as the command builds its own
    (:func:`densify.cli._scanning.make_scanner`); per row (``index``, ``path``, ``stem``) it
    reads, scans and works the image (:func:`densify.cli._scanning.scan_one`) and returns
    ``index`` and the record as JSON."""

    def __init__(self, model, settings, work):
        import torch

        from ._scanning import make_scanner

        torch.set_num_threads(choose_threads(settings.threads))
        self.scanner = make_scanner(model, settings)
        self.work = functools.partial(work, scanner=self.scanner)

    def __call__(self, batch):
        import pyarrow as pa

        from ._scanning import scan_one

        rows = [{"index": int(index), "record": json.dumps(
                    scan_one(self.scanner, Path(str(path)), str(stem), self.work), default=str)}
                for index, path, stem in zip(batch["index"], batch["path"], batch["stem"],
                                             strict=True)]
        return pa.Table.from_pylist(rows, schema=pa.schema([("index", pa.int64()),
                                                            ("record", pa.string())]))


def each_image_on_ray(options: RayOptions, model, settings, paths: list[Path], quiet: bool,
                      work, errors: list | None, out: Path, overwrite: bool = False,
                      job: dict | None = None) -> tuple[list[dict], int]:
    """:func:`densify.cli._scanning.each_image` on Ray (module docstring): ``(ok and skipped
    records in input order, failures)``.

    ``model`` (a :class:`densify.models.user.ModelChoice`) and ``settings`` (a
    :class:`densify.scan.settings.ScanSettings`) build every actor's scanner as the options
    built them; ``work(path, stem, rgb, result, scanner=..., out=...)`` is the command's
    per-image function (picklable: a ``functools.partial`` of a module-level function).
    """
    from ..distributed import require_ray
    from ..io.records import Recorder, already_done, skipped_record
    from ._scanning import fail, stems

    ray = require_ray()
    done = already_done(out, overwrite, job)
    recorder = Recorder(out, job, errors, len(paths), quiet=True)  # Ray Data draws the bars
    arrived: list[tuple[int, dict]] = []
    todo = []
    for index, (path, stem) in enumerate(zip(paths, stems(paths), strict=True)):
        previous = done.get(str(path.resolve()))
        if previous is None:
            todo.append({"index": index, "path": str(path.resolve()), "stem": stem})
        else:
            arrived.append((index, skipped_record(path, previous)))
            recorder.add(arrived[-1][1])
    if todo:
        started = connect(ray, options.address)
        try:
            for index, record in _scan(ray, options, model, settings, todo, quiet,
                                       functools.partial(work, out=out.resolve())):
                record = _as_given(record, paths[index], out)
                if record["status"] == "error":
                    fail(record["error"])
                arrived.append((index, record))
                recorder.add(record)
        finally:
            if started:
                ray.shutdown()
    recorder.close()
    if errors is not None:  # in input order, after the inputs that were not found
        order = {str(p): i for i, p in enumerate(paths)}
        errors.sort(key=lambda e: order.get(e[0], -1))
    records = [r for _, r in sorted(arrived, key=lambda pair: pair[0]) if r["status"] != "error"]
    return records, recorder.failed


def scan_images(ray, scanner: Scanner, model, settings: ScanSettings, paths: list[Path],
                quiet: bool, work: Callable[..., dict], errors: list | None, out: Path,
                overwrite: bool, prefetch: bool) -> tuple[list[dict], int]:
    """The folder run of ``heatmap`` and ``detect``: :func:`densify.cli._scanning.each_image`
    with ``work(..., scanner=scanner)``, or with ``--ray`` (``ray`` a
    :class:`densify.cli.ray_options.RayOptions`) the same records and files scanned by Ray
    actors (:func:`each_image_on_ray`, which builds each actor's scanner from ``model`` and
    ``settings``)."""
    from ._scanning import current_job, each_image

    if ray is None:
        return each_image(scanner, paths, quiet, functools.partial(work, scanner=scanner), errors,
                          out, overwrite, prefetch, current_job())
    return each_image_on_ray(ray, model, settings, paths, quiet, work, errors, out, overwrite,
                             current_job())


def _scan(ray, options: RayOptions, model, settings, todo: list[dict], quiet: bool, work):
    """``(index, record)`` of every image of ``todo``, as the actors finish them."""
    ray.data.DataContext.get_current().enable_progress_bars = not quiet
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    cpus = settings.threads or 1
    workers = default_workers(ray, options, cpus)
    batch = max(1, min(8, -(-len(todo) // workers)))
    inputs = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // batch)))
    rows = inputs.map_batches(
        WorkActor, fn_constructor_args=(model, settings.replace(threads=cpus), work),
        batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus, num_gpus=options.gpus_per_worker or None)
    for table in rows.iter_batches(batch_format="pyarrow", batch_size=None):
        for index, text in zip(table["index"].to_pylist(), table["record"].to_pylist(),
                               strict=True):
            yield index, json.loads(text)
    if not quiet:
        click.echo(f"scanned {len(todo)} image(s) on Ray, {workers} worker(s)", err=True)


def _as_given(record: dict, path: Path, out: Path) -> dict:
    """The actor's record (absolute paths) with the image and output paths as the driver has
    them, so that it equals the record of the single-process run."""
    absolute, given = str(path.resolve()), str(path)
    record["image"] = given
    if record.get("error"):
        record["error"] = record["error"].replace(absolute, given)
    root = out.resolve()
    record["files"] = [str(out / Path(f).relative_to(root)) if Path(f).is_relative_to(root)
                       else f for f in record.get("files", [])]
    return record
