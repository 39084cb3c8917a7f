"""The flow shared by the scanning commands (``heatmap``, ``detect``).

Both take image files and directories (expanded to their images), convert the model once, and
process each image on its own: a bad image costs one line on stderr naming the file and the
problem, writes nothing, and makes the exit status 1 once the others are done. Usage errors
(unknown model, bad ``--scales``, unwritable ``-o``, weights for another architecture, an unknown
``--class``) stop before any image with one line and a non-zero status, no traceback. Outputs are
written atomically (:mod:`densify.io.files`). A bug (any other exception) stops the batch.

Batches resume: each image's record goes to ``OUTDIR/summary.jsonl`` (:mod:`densify.io.records`)
once its files are written, and a rerun of the same job (the command and every option that shapes
its output, :func:`current_job`) skips the images whose latest ``ok`` record's files all exist
(``--overwrite`` redoes them), recording them as ``"skipped"``. While one image is
scanned, a background thread decodes the next (``--no-prefetch`` turns that off; it is off with
``--max-memory``, whose budget does not count a second image). With ``--ray`` the same flow
runs with the scanning done by Ray actors (:mod:`densify.cli._ray`, through :func:`scan_one`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
from tqdm.auto import tqdm

from ..errors import DensifyError, ImageError, OutputError
from ..io.image import expand_inputs
from ..io.records import Recorder, already_done, skipped_record
from ..models.user import ModelChoice
from ..runtime import shared_threads, trim_heap, tuned
from ..scan.engine import PendingScan
from ..scan.ensemble import Ensemble
from ..scan.records import PER_IMAGE_ERRORS, error_message, error_record, ok_record
from ..scan.result import ScanResult, class_index
from ..scan.scanner import Scanner
from ..scan.settings import ScanSettings
from ._reading import read_ahead, read_or_error

log = logging.getLogger(__name__)

#: Chunks launched ahead: chunk k + 1 is launched before chunk k's results are taken
#: (:func:`each_image`); none under a memory budget.
LAUNCH_AHEAD = 1

#: Options that change how a run goes but not what it writes; a record is reused across them.
RUN_ONLY = frozenset({"inputs", "output_dir", "quiet", "overwrite", "prefetch", "threads",
                      "device", "max_memory", "ray", "json_path", "keep_memory", "batch_size",
                      "address", "workers", "gpus_per_worker"})


def current_job() -> dict:
    """The running command and the options that shape its output (each as text), from click's
    context: the key under which a batch's records are reused by a rerun."""
    ctx = click.get_current_context()
    settings = {k: str(_one(v) if k in ("model", "weights") else v)
                for k, v in sorted(ctx.params.items()) if k not in RUN_ONLY}
    return {"command": ctx.info_name, "settings": settings}


def _one(value):
    """A repeatable option's value as one model's was before ensembles (``"x"``, ``None``), so
    that records of one model's runs keep their key."""
    if isinstance(value, tuple) and len(value) <= 1:
        return value[0] if value else None
    return value


def fail(message: str) -> None:
    tqdm.write(f"error: {message}", file=sys.stderr)


def expand(inputs: Iterable[Path], errors: list[tuple[str, str]] | None = None
           ) -> tuple[list[Path], int]:
    """Image files of every input; a missing path or an empty directory is reported here (and
    appended to ``errors`` as ``(path, message)`` when given)."""
    found, failed = [], 0
    for path in inputs:
        try:
            found.extend(expand_inputs([path]))
        except ImageError as exc:
            fail(str(exc))
            failed += 1
            if errors is not None:
                errors.append((str(path), str(exc).splitlines()[0]))
    return found, failed


def finishing_threads(batch: int) -> int:
    """Threads that finish scanned images (maps painted, files encoded and written) when
    scanning in batches of ``batch``: one per image whose work can be under way at once (the
    chunk being finished and the one taken after it, :func:`each_image`), at most one per CPU
    core; 1 without batches. PNG and zlib encoding, most of the host's work per image
    (docs/gpu.md), release the GIL, so on a many-core GPU host these threads run in parallel.

    Examples:
        >>> finishing_threads(1), finishing_threads(8) <= 2 * 8
        (1, True)
    """
    if batch <= 1:
        return 1
    return max(1, min(os.cpu_count() or 1, (LAUNCH_AHEAD + 1) * batch))


def make_scanner(model: ModelChoice | tuple[ModelChoice, ...], settings: ScanSettings
                 ) -> Scanner | Ensemble:
    """The scanner every scanning command uses: the options' model and settings, unchanged; for
    several ``--model`` an :class:`Ensemble` of their scanners, each at the ``--output-stride``
    given, else its own :func:`default_stride`."""
    if isinstance(model, ModelChoice):
        return Scanner(model, settings)
    return Ensemble([Scanner(m, settings if settings.output_stride else settings.replace(
        output_stride=default_stride(m.model))) for m in model])


def model_name(model: ModelChoice | tuple[ModelChoice, ...]) -> str:
    """``lenet5-digits``, or ``a + b`` for an ensemble."""
    return model.model if isinstance(model, ModelChoice) else " + ".join(m.model for m in model)


def on_driver(ray) -> dict:
    """Settings overrides for the command's own scanner: with ``--ray`` (``ray`` not None) it
    only names classes and describes the run, on the CPU (the actors scan); none without."""
    return {} if ray is None else {"device": "cpu"}


def run_tuned(settings: ScanSettings, keep_memory: bool = False):
    """The process tuned for a scanning command (:func:`densify.runtime.tuned`: the thread rule
    unless ``--threads``, heap settings for ``--max-memory`` or ``--keep-memory``), restored when
    it ends; yields the thread count."""
    return tuned(settings.threads, keep_memory=keep_memory, max_memory=settings.max_memory)


def default_stride(model: str) -> int:
    """The scanning stride without ``--output-stride``: the largest reachable one up to 16 (16
    for ImageNet nets, OverFeat-accurate's 12 from its native 36), else 16 (the scanner then
    keeps the native stride: LeNet-5's 4; a user's ``module:factory`` model: 16 when
    reachable)."""
    from ..models.catalogue import get_spec

    if ":" in model:
        return 16
    fine = [s for s in get_spec(model).strides if s <= 16]
    return max(fine) if fine else 16


def default_threshold(scanner: Scanner, threshold: float | None) -> float:
    """``--threshold``, else the model card's recommended one, else 0.5."""
    return scanner.default_threshold if threshold is None else threshold


def resolve_class(scanner: Scanner, query: str | None) -> int | None:
    if query is None:
        return None
    try:
        return class_index(scanner.categories, query)
    except DensifyError as exc:
        raise click.BadParameter(str(exc), param_hint="--class") from None


def stems(paths: list[Path]) -> list[str]:
    """File stems, made unique (``photo``, ``photo-2``) so outputs never overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        out.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return out


def each_image(scanner: Scanner | Ensemble, paths: list[Path], quiet: bool,
               work: Callable[..., dict], errors: list[tuple[str, str]] | None = None,
               out: Path | None = None, overwrite: bool = False, prefetch: bool = True,
               job: dict | None = None) -> tuple[list[dict], int]:
    """Read and scan each image, then ``work(path, stem, rgb, result)`` (its record); a failure
    is one line (appended to ``errors`` as ``(path, message)`` when given). With ``out``,
    records (tagged with ``job``) are appended to ``out/summary.jsonl`` and images done by an
    earlier run of the same job are skipped unless ``overwrite`` (module docstring).

    Images go through the scanner in chunks of :attr:`Scanner.batch_size`, decoded ahead in
    worker threads (:mod:`densify.cli._reading`). Each chunk is launched
    (:meth:`Scanner.launch_batch`) before the previous chunk's results are taken and their
    ``work`` started (:data:`LAUNCH_AHEAD`), so on a GPU the device scans a chunk while the host
    builds, paints and writes the one before (the gain is not yet measured on a GPU); on the
    CPU the launch computes the maps, so this only holds one more chunk's maps. Under a memory
    budget each chunk is finished before the next is launched (the budget counts one image).
    With batches ``work`` runs in threads. Returns the ``ok`` and ``skipped`` records in input
    order and the number of failures (``densify.cli._ray.each_image_on_ray``: the same on Ray)."""
    done = already_done(out, overwrite, job)
    items = list(zip(paths, stems(paths), strict=True))
    todo = [path for path, _ in items if str(path.resolve()) not in done]
    batch = max(1, scanner.batch_size)
    workers = finishing_threads(batch)
    reader = read_ahead(todo, prefetch and scanner.budget is None, min(4, workers), 2 * batch)
    recorder = Recorder(out, job, errors, len(items), quiet)
    ahead = LAUNCH_AHEAD if scanner.budget is None else 0

    def emit(chunk_records) -> None:
        for record in chunk_records:
            recorder.add(record.result() if isinstance(record, Future) else record)

    # on a GPU the host's torch ops are the workers' (heat maps): its threads are shared out
    on_host = workers > 1 and scanner.device.type != "cpu"
    with (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="densify-work") as pool,
          shared_threads(workers if on_host else 1)):
        launched: deque = deque()  # chunks on the device whose results are not taken yet
        pending: deque = deque()  # the previous chunk's work runs while this one is taken
        for chunk in itertools.chain(_chunks(items, done, batch), [None]):  # None: the end
            if chunk is not None:
                launched.append(_launch_chunk(scanner, chunk, reader, quiet))
            while len(launched) > (ahead if chunk is not None else 0):
                pending.append(_take_chunk(scanner, launched.popleft(), quiet, work, pool,
                                           batch > 1))
                while len(pending) > 1:
                    emit(pending.popleft())
                    trim_heap(collect=False)  # keeps RSS flat over long batches
        while pending:
            emit(pending.popleft())
    recorder.close()
    return recorder.records, recorder.failed


def scan_one(scanner: Scanner, path: Path, stem: str, work: Callable[..., dict]) -> dict:
    """Read, scan and ``work`` one image (as :func:`each_image` does): its record, or the error
    record of a bad image (not printed: the caller reports it)."""
    start = time.perf_counter()
    rgb, error = read_or_error(path)
    if error is not None:
        return _failure(path, error, start, report=False)
    try:
        result = scanner(rgb, progress=False)
    except PER_IMAGE_ERRORS as exc:
        return _failure(path, exc, start, report=False)
    return _finish_one(path, stem, rgb, result, work, start, report=False)


def _chunks(items: list[tuple[Path, str]], done: dict, size: int) -> Iterator[list[tuple]]:
    """``(path, stem, previous record or None)`` in input order, cut into runs of at most
    ``size`` images to scan (an image done earlier ends the run it interrupts)."""
    chunk, todo = [], 0
    for path, stem in items:
        previous = done.get(str(path.resolve()))
        chunk.append((path, stem, previous))
        todo += previous is None
        if todo == size or previous is not None:
            yield chunk
            chunk, todo = [], 0
    if chunk:
        yield chunk


@dataclasses.dataclass
class _Launched:
    """A launched chunk: records of skipped or unreadable images, ``(k, path, stem, rgb)`` to
    scan (``k``: place in the chunk), their :class:`PendingScan` or launch error, seconds."""

    chunk: list[tuple]
    records: dict[int, dict]
    scan: list[tuple]
    pending: PendingScan | BaseException | None
    seconds: float


def _launch_chunk(scanner: Scanner | Ensemble, chunk: list[tuple], reader: Iterator[tuple],
                  quiet: bool) -> _Launched:
    """Read a chunk's images and launch those to scan together (:meth:`Scanner.launch_batch`);
    skipped and unreadable images get their records here."""
    start = time.perf_counter()
    records: dict[int, dict] = {}
    scan = []
    for k, (path, stem, previous) in enumerate(chunk):
        if previous is not None:
            records[k] = skipped_record(path, previous)
            continue
        rgb, error = next(reader)
        if error is not None:
            records[k] = _failure(path, error, start)
        else:
            scan.append((k, path, stem, rgb))
    pending = None
    if scan:
        try:
            # each result is written and dropped soon: on a GPU its maps may stay pinned
            pending = scanner.launch_batch([rgb for *_, rgb in scan], batch_size=len(scan),
                                           progress=not quiet and len(scan) == 1,
                                           pinned_results=True)
        except PER_IMAGE_ERRORS as exc:
            pending = exc
    return _Launched(chunk, records, scan, pending, time.perf_counter() - start)


def _take_chunk(scanner: Scanner | Ensemble, launched: _Launched, quiet: bool,
                work: Callable[..., dict], pool: ThreadPoolExecutor, parallel: bool
                ) -> list[dict | Future]:
    """The records of a launched chunk, in its order: its results taken (:func:`_results`),
    then each image's ``work``: done here, or with ``parallel`` submitted to ``pool`` (the list
    then holds futures of those records)."""
    start = time.perf_counter()
    scan, records = launched.scan, launched.records
    results = _results(scanner, [rgb for *_, rgb in scan], launched.pending, quiet) if scan else []
    share = (launched.seconds + time.perf_counter() - start) / max(1, len(scan))

    def finish(item, result) -> dict:
        k, path, stem, rgb = item
        return _finish_one(path, stem, rgb, result, work, time.perf_counter() - share)

    for item, result in zip(scan, results, strict=True):
        records[item[0]] = pool.submit(finish, item, result) if parallel else finish(item, result)
    return [records[k] for k in range(len(launched.chunk))]


def _results(scanner: Scanner | Ensemble, rgbs: list[np.ndarray],
             pending: PendingScan | BaseException, quiet: bool) -> list:
    """Results (or the per-image error) of the images launched together; if the launch or its
    results failed, the images are scanned one at a time, so that one image's problem costs
    only that image."""
    if not isinstance(pending, BaseException):
        try:
            return pending.results()
        except PER_IMAGE_ERRORS as exc:
            pending = exc
    if len(rgbs) == 1:
        return [pending]
    log.info("a batch of %d images failed (%s); scanning them one at a time", len(rgbs),
             error_message(pending, None))
    results = []
    for rgb in rgbs:
        try:
            results.append(scanner(rgb, progress=not quiet))
        except PER_IMAGE_ERRORS as exc:
            results.append(exc)
    return results


def _failure(path: Path, exc: BaseException, start: float, report: bool = True) -> dict:
    message = error_message(exc, path)
    if report:
        fail(message)
    return error_record(path, message, round(time.perf_counter() - start, 4))


def _finish_one(path: Path, stem: str, rgb: np.ndarray, result, work: Callable[..., dict],
                start: float, report: bool = True) -> dict:
    """The record of one scanned image (``result``, or the error it raised) after ``work``."""
    if isinstance(result, BaseException):
        return _failure(path, result, start, report)
    try:
        result = dataclasses.replace(result, source=str(path))
        record = work(path, stem, rgb, result)
    except PER_IMAGE_ERRORS as exc:
        return _failure(path, exc, start, report)
    return ok_record(path, result, round(time.perf_counter() - start, 4), **record)


def write_all(outputs: dict[Path, Callable[[Path], object]]) -> list[str]:
    """Write every output (each atomically); if one fails, remove those already written."""
    done: list[Path] = []
    try:
        for path, write in outputs.items():
            write(path)
            done.append(path)
    except OSError as exc:
        for path in done:
            path.unlink(missing_ok=True)
        raise exc if isinstance(exc, OutputError) else OutputError(f"{path}: {exc}") from None
    return [str(p) for p in done]


def notes(result: ScanResult, scanner: Scanner | Ensemble) -> list[str]:
    notes = []
    maps = [m for m in result.maps if not m.flipped]  # a flipped scale repeats its level
    if result.padded_to_window:
        small = [f"{m.factor:.3g}" for m in maps if m.level.padded_to_window]
        window = "/".join(sorted({str(m.geometry.window[1]) for m in maps
                                  if m.level.padded_to_window}))
        notes.append(f"smaller than the {window} px window at factor(s) "
                     f"{', '.join(small)}: padded with the mean colour")
    if result.upscaled:
        big = [f"{m.factor:.3g}" for m in maps if m.level.upscaled]
        notes.append(f"upscaled at factor(s) {', '.join(big)}")
    return notes


def summary(path: Path, result: ScanResult, scanner: Scanner | Ensemble) -> dict:
    factors = [m.factor for m in result.maps if not m.flipped]  # one per scale, flips or not
    return {"image": str(path), "size": list(result.image_size), "factors": factors,
            "flip": scanner.flip, "output_stride": scanner.output_stride, "notes": notes(result, scanner),
            "padded_to_window": result.padded_to_window, "upscaled": result.upscaled,
            **({"models": len(scanner)} if isinstance(scanner, Ensemble) else {})}


def finish(failed: int, total: int) -> None:
    if failed:
        fail(f"{failed} of {total} input(s) failed")
        raise SystemExit(1)


def header(scanner: Scanner | Ensemble, weights: str | None = None) -> str:
    if isinstance(scanner, Ensemble):
        return f"ensemble of {len(scanner)}, equal weights: " + "; ".join(
            header(m, weights) for m in scanner.members)
    stride = scanner.output_stride
    asked = scanner.requested_stride
    fallback = f" (native; {asked} not reachable)" if asked and asked != stride else ""
    clf = scanner.classifier
    source = ("random weights" if clf.random else f"weights {clf.weights}") if clf else weights
    return f"model window {scanner.geometry.window[1]} px, stride {stride}{fallback}, {source}"
