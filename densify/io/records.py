"""Scan records in JSON Lines: appended one whole line per image, read back torn lines and all.

A batch (``densify heatmap DIR``, ``densify detect DIR``) appends one record per image to
``OUTDIR/summary.jsonl`` as soon as the image is done, so that a run killed at any moment leaves
every finished image recorded and a rerun can skip them. Fields (the "Scan records" interface):
``{"image": path, "status": "ok" | "error" | "skipped", "error": str | None, "size": [H, W] |
None, "top": [{"index", "name", "score", "box", "factor"}, ...], "files": [paths], "seconds":
float, "job": {"command": str, "settings": {option: str}}}`` plus command-specific keys
(``"detections"`` for detect). ``job`` names the command and the options that shape its output:
one output directory can hold ``heatmap`` and ``detect`` runs (or runs with other ``--scales``)
side by side, and a rerun reuses only the records of the same job.

Atomicity: each record is one ``write`` of one line to a file opened for appending
(``O_APPEND``), flushed and ``fsync``-ed before the next image starts. A kill can at worst leave
the LAST line torn (no newline, not JSON); :func:`read_records` skips lines that do not parse, and
:func:`append_record` first ends a torn line so the next record starts on its own line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import OutputError
from .files import remove_stale_temporaries

__all__ = ["SUMMARY", "append_record", "read_records", "finished", "already_done",
           "skipped_record", "Recorder"]

log = logging.getLogger(__name__)

#: The per-image records of a batch, in the output directory (JSON Lines).
SUMMARY = "summary.jsonl"


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created if missing), durably.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "summary.jsonl"
        >>> append_record(path, {"image": "a.png", "status": "ok"})
        >>> _ = path.open("a").write('{"image": "b.png", "sta')   # a kill mid-line
        >>> append_record(path, {"image": "c.png", "status": "ok"})
        >>> [r["image"] for r in read_records(path)]
        ['a.png', 'c.png']
    """
    path = Path(path)
    line = (json.dumps(record, allow_nan=False, default=str) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _torn(path):
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot append to the summary ({exc.strerror}); choose "
                          "another output directory with -o") from None


def _torn(path: Path) -> bool:
    """True when the file's last byte is not a newline (a line cut short by a kill)."""
    size = path.stat().st_size
    if size == 0:
        return False
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) != b"\n"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record in ``path`` in file order; lines that do not parse (a torn last line) are
    skipped with a warning; a missing file gives ``[]``."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict) and "image" in record:
            records.append(record)
        elif line.strip():
            log.warning("%s:%d: skipping a line that is not a whole record", path, number)
    return records


def finished(records: list[dict[str, Any]], job: dict[str, Any] | None = None
             ) -> dict[str, dict[str, Any]]:
    """The images already done by ``job``: resolved image path -> its latest ``ok``/``skipped``
    record of that job whose output files all exist (outputs are written atomically, so existing
    means complete). ``job=None`` takes the records of any job.

    Examples:
        >>> heatmap, detect = {"command": "heatmap"}, {"command": "detect"}
        >>> records = [{"image": "/a.png", "status": "ok", "job": heatmap}]
        >>> list(finished(records, heatmap)), list(finished(records, detect))
        (['/a.png'], [])
    """
    done = {}
    for record in records:
        if job is not None and record.get("job") != job:
            continue
        if record.get("status") in ("ok", "skipped") and all(
                Path(f).is_file() for f in record.get("files", [])):
            done[str(Path(record["image"]).resolve())] = record
    return done


def already_done(out: str | Path | None, overwrite: bool = False,
                 job: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The images a batch writing into ``out`` can skip: :func:`finished` on
    ``out/summary.jsonl`` for ``job`` (none with ``overwrite`` or without ``out``), after
    removing the temporary files a killed run left in ``out``
    (:func:`densify.io.files.remove_stale_temporaries`). Both the single-process and the Ray
    folder runs decide with it.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> append_record(out / SUMMARY, {"image": "/a.png", "status": "ok", "job": {}})
        >>> list(already_done(out)), list(already_done(out, overwrite=True))
        (['/a.png'], [])
    """
    if out is None:
        return {}
    remove_stale_temporaries(out)
    return {} if overwrite else finished(read_records(Path(out) / SUMMARY), job or {})


def skipped_record(image: str | Path, previous: dict[str, Any]) -> dict[str, Any]:
    """The record of an image done by an earlier run: its earlier record, marked ``skipped``.

    Examples:
        >>> skipped_record("a.png", {"image": "/x/a.png", "status": "ok", "seconds": 1.5})
        {'image': 'a.png', 'status': 'skipped', 'seconds': 0.0}
    """
    return {**previous, "image": str(image), "status": "skipped", "seconds": 0.0}


class Recorder:
    """Takes each image's record as it is done: tags it with ``job``, appends it to
    ``out/summary.jsonl`` (when ``out``), counts a failure (appending ``(image, message)`` to
    ``errors`` when given) or keeps the record (:attr:`records`), and moves a progress bar.

    Examples:
        >>> recorder = Recorder(None, {"command": "detect"}, None, 2, quiet=True)
        >>> recorder.add({"image": "a.png", "status": "ok"})
        >>> recorder.add({"image": "b.png", "status": "error", "error": "b.png: not an image"})
        >>> [r["image"] for r in recorder.records], recorder.failed
        (['a.png'], 1)
    """

    def __init__(self, out: str | Path | None, job: dict[str, Any] | None, errors: list | None,
                 total: int, quiet: bool):
        self.summary = None if out is None else Path(out) / SUMMARY
        self.job, self.errors = job or {}, errors
        self.records: list[dict[str, Any]] = []
        self.failed = 0
        self.bar = tqdm(total=total, desc="images", unit="image", disable=quiet)

    def add(self, record: dict[str, Any]) -> None:
        record["job"] = self.job
        if self.summary is not None:
            append_record(self.summary, record)
        if record["status"] == "error":
            self.failed += 1
            if self.errors is not None:
                self.errors.append((record["image"], record["error"]))
        else:
            self.records.append(record)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
