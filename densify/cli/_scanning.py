"""The flow shared by the scanning commands (``heatmap``, ``detect``).

Both take image files and directories (expanded to their images), convert the model once, and
process each image on its own: a bad image costs one line on stderr naming the file and the
problem, writes nothing, and makes the exit status 1 once the others are done. Usage errors
(unknown model, bad ``--scales``, unwritable ``-o``, weights for another architecture, an unknown
``--class``) stop before any image with one line and a non-zero status, no traceback. Outputs are
written atomically (:mod:`densify.io.files`). A bug (any other exception) stops the batch.

Batches resume: each image's record goes to ``OUTDIR/summary.jsonl`` (:mod:`densify.io.records`)
once its files are written, and a rerun of the same job (the command and every option that shapes
its output, :func:`job`) skips the images whose latest ``ok`` record's files all exist
(``--overwrite`` redoes them), recording them as ``"skipped"``. While one image is
scanned, a background thread decodes the next (``--no-prefetch`` turns that off; it is off with
``--max-memory``, whose budget does not count a second image).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
from tqdm.auto import tqdm

from ..errors import DensifyError, ImageError, OutputError
from ..io.files import remove_stale_temporaries
from ..io.image import expand_inputs, read_image
from ..io.records import append_record, finished, read_records
from ..models.user import ModelChoice
from ..runtime import trim_heap, tuned
from ..scan.records import PER_IMAGE_ERRORS, error_message, error_record, ok_record
from ..scan.result import ScanResult, class_index
from ..scan.scanner import Scanner
from ..scan.settings import ScanSettings

#: The per-image records of a batch, in the output directory (JSON Lines).
SUMMARY = "summary.jsonl"

#: Options that change how a run goes but not what it writes; a record is reused across them.
RUN_ONLY = frozenset({"inputs", "output_dir", "quiet", "overwrite", "prefetch", "threads",
                      "device", "max_memory", "ray", "json_path", "keep_memory"})


def current_job() -> dict:
    """The running command and the options that shape its output (each as text), from click's
    context: the key under which a batch's records are reused by a rerun."""
    ctx = click.get_current_context()
    settings = {k: str(v) for k, v in sorted(ctx.params.items()) if k not in RUN_ONLY}
    return {"command": ctx.info_name, "settings": settings}


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


def make_scanner(model: ModelChoice, settings: ScanSettings) -> Scanner:
    """The scanner every scanning command uses: the options' model and settings, unchanged."""
    return Scanner(model, settings)


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


def _read(path: Path) -> tuple[np.ndarray | None, DensifyError | None]:
    try:
        return read_image(path), None
    except DensifyError as exc:
        return None, exc


def read_ahead(paths: list[Path], prefetch: bool = True) -> Iterator[tuple]:
    """``(rgb, None)`` or ``(None, error)`` per path, in order; with ``prefetch`` the next image
    is decoded in a background thread while the caller works on the current one."""
    if not prefetch:
        yield from map(_read, paths)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="densify-read") as pool:
        pending = pool.submit(_read, paths[0]) if paths else None
        for i in range(len(paths)):
            current = pending.result()
            pending = pool.submit(_read, paths[i + 1]) if i + 1 < len(paths) else None
            yield current
            del current


def each_image(scanner: Scanner, paths: list[Path], quiet: bool, work: Callable[..., dict],
               errors: list[tuple[str, str]] | None = None, out: Path | None = None,
               overwrite: bool = False, prefetch: bool = True, job: dict | None = None
               ) -> tuple[list[dict], int]:
    """Read and scan each image, then ``work(path, stem, rgb, result)`` (its record); a failure
    is one line (appended to ``errors`` as ``(path, message)`` when given). With ``out``,
    records (tagged with ``job``) are appended to ``out/summary.jsonl`` and images done by an
    earlier run of the same job are skipped unless ``overwrite`` (module docstring). Returns
    the ``ok`` and ``skipped`` records, in input order, and the number of failures."""
    summary_path = None if out is None else out / SUMMARY
    if out is not None:
        remove_stale_temporaries(out)
    done = ({} if summary_path is None or overwrite else
            finished(read_records(summary_path), job or {}))
    items = list(zip(paths, stems(paths), strict=True))
    todo = [path for path, _ in items if str(path.resolve()) not in done]
    reader = read_ahead(todo, prefetch and scanner.budget is None)
    records, failed = [], 0
    for path, stem in tqdm(items, desc="images", unit="image", disable=quiet):
        start = time.perf_counter()
        previous = done.get(str(path.resolve()))
        if previous is not None:
            record = {**previous, "image": str(path), "status": "skipped", "seconds": 0.0}
        else:
            record = _scan_one(scanner, path, stem, next(reader), quiet, work, start)
        record["job"] = job or {}
        if summary_path is not None:
            append_record(summary_path, record)
        if record["status"] == "error":
            failed += 1
            if errors is not None:
                errors.append((str(path), record["error"]))
        else:
            records.append(record)
        trim_heap(collect=False)  # keeps RSS flat over long batches
    return records, failed


def _scan_one(scanner: Scanner, path: Path, stem: str, read: tuple, quiet: bool,
              work: Callable[..., dict], start: float) -> dict:
    rgb, error = read
    try:
        if error is not None:
            raise error
        result = dataclasses.replace(scanner(rgb, progress=not quiet), source=str(path))
        record = work(path, stem, rgb, result)
    except PER_IMAGE_ERRORS as exc:
        message = error_message(exc, path)
        fail(message)
        return error_record(path, message, round(time.perf_counter() - start, 4))
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


def notes(result: ScanResult, scanner: Scanner) -> list[str]:
    notes = []
    maps = [m for m in result.maps if not m.flipped]  # a flipped scale repeats its level
    if result.padded_to_window:
        small = [f"{m.factor:.3g}" for m in maps if m.level.padded_to_window]
        notes.append(f"smaller than the {scanner.geometry.window[1]} px window at factor(s) "
                     f"{', '.join(small)}: padded with the mean colour")
    if result.upscaled:
        big = [f"{m.factor:.3g}" for m in maps if m.level.upscaled]
        notes.append(f"upscaled at factor(s) {', '.join(big)}")
    return notes


def summary(path: Path, result: ScanResult, scanner: Scanner) -> dict:
    factors = [m.factor for m in result.maps if not m.flipped]  # one per scale, flips or not
    return {"image": str(path), "size": list(result.image_size), "factors": factors,
            "flip": scanner.flip, "output_stride": scanner.output_stride, "notes": notes(result, scanner),
            "padded_to_window": result.padded_to_window, "upscaled": result.upscaled}


def finish(failed: int, total: int) -> None:
    if failed:
        fail(f"{failed} of {total} input(s) failed")
        raise SystemExit(1)


def header(scanner: Scanner, weights: str | None = None) -> str:
    stride = scanner.output_stride
    asked = scanner.requested_stride
    fallback = f" (native; {asked} not reachable)" if asked and asked != stride else ""
    clf = scanner.classifier
    source = ("random weights" if clf.random else f"weights {clf.weights}") if clf else weights
    return f"model window {scanner.geometry.window[1]} px, stride {stride}{fallback}, {source}"
