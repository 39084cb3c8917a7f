"""The per-image record of a scan, built in one place for the CLI's ``summary.jsonl`` and the
Ray rows (:mod:`densify.io.records` reads and writes them; :mod:`densify.distributed` adds
``detections``).

Fields: ``{"image", "status": "ok" | "error", "error", "size": [H, W] | None, "top": [{"index",
"name", "score", "box", "factor"}...], "files", "seconds"}`` plus what the caller adds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DensifyError
from .result import ScanResult

__all__ = ["PER_IMAGE_ERRORS", "top_rows", "ok_record", "error_record", "error_message"]

#: What costs one image, not the batch: bad input and running out of memory on one image.
PER_IMAGE_ERRORS = (DensifyError, torch.OutOfMemoryError)


def top_rows(result: ScanResult, k: int = 5) -> list[dict]:
    """The ``top`` field (:meth:`ScanResult.top_classes`)."""
    return [{"index": t.index, "name": t.name, "score": t.score, "box": list(t.box),
             "factor": t.factor} for t in result.top_classes(k)]


def ok_record(image: str | Path | None, result: ScanResult, seconds: float, top_k: int = 5, /,
              **fields) -> dict:
    """The record of a scanned image; ``fields`` (``files``, ``detections``, a ready ``top``,
    ...) are added or replace the defaults."""
    record = {"image": None if image is None else str(image), "status": "ok", "error": None,
              "size": list(result.image_size), "top": top_rows(result, top_k), "files": []}
    record.update(fields)
    record["seconds"] = seconds
    return record


def error_message(exc: BaseException, image: str | Path | None) -> str:
    """One line naming the image and the problem."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return message if image is None or str(image) in message else f"{image}: {message}"


def error_record(image: str | Path | None, message: str, seconds: float | None, /, **fields
                 ) -> dict:
    """The record of an image that failed: no size, no classes, no files."""
    record = {"image": None if image is None else str(image), "status": "error",
              "error": message, "size": None, "top": [], "files": []}
    record.update(fields)
    record["seconds"] = seconds
    return record
