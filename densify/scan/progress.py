"""The resume log of a slide scan (:func:`densify.scan.stream.scan_slide`), and the merge of the
tiles' detection proposals it records.

``densify_progress.jsonl`` inside the partial store: the first line is the scan's
:func:`fingerprint` (slide, level, tile size, classes, thresholds, precision, geometry, a digest
of the weights); then one line per finished tile (:func:`record_tile`: its index, its proposals
as level-0 boxes, scores and labels, its missing file tiles), flushed to disk after the tile's
chunks. :func:`resume_state` reads it back (a last line cut short by a kill is ignored: that tile
runs again) and refuses, in one line, a store made with other settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.ops import batched_nms

from ..errors import ParameterError
from ..io.slides import Slide
from .detect import MAX_CANDIDATES, Detections

__all__ = ["PROGRESS_FILE", "fingerprint", "resume_state", "record_tile", "merge_tiles"]

#: The log's name inside the partial store.
PROGRESS_FILE = "densify_progress.jsonl"
_FORMAT = "densify-slide-progress"


def fingerprint(scanner, slide: Slide, level: int, tile_cells: int, classes: Sequence[int],
                threshold: float, iou: float) -> dict:
    """The log's header: what must match for a rerun to resume (``scanner``: a
    :class:`~densify.scan.scanner.Scanner`)."""
    digest = hashlib.sha256()
    for p in scanner.scan_net.parameters():  # cheap and exact: up to 4097 values per tensor
        flat = p.detach().reshape(-1)
        digest.update(flat[::max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    stat = slide.path.stat()
    return {"format": _FORMAT, "version": 1, "slide": slide.path.name, "bytes": stat.st_size,
            "sizes": [list(lv.size) for lv in slide.levels], "level": level,
            "tile_cells": tile_cells, "classes": list(classes), "threshold": threshold,
            "iou": iou, "weights": digest.hexdigest()[:16], "precision": scanner.precision,
            "window": list(scanner.geometry.window), "stride": list(scanner.geometry.stride)}


def resume_state(store: Path, header: dict) -> dict[int, dict] | None:
    """Finished tiles recorded in ``store`` for the same ``header``; None: start afresh."""
    progress = store / PROGRESS_FILE
    if not progress.is_file():
        if store.exists():
            raise ParameterError(f"{store} exists and is not a scan in progress; remove it or "
                                 "choose another output")
        return None
    lines = progress.read_text().splitlines()
    if not lines or json.loads(lines[0]) != header:
        raise ParameterError(f"{store} holds a scan with other settings (slide, model, level, "
                             "tile size or thresholds); remove it to start again")
    done = {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill: that tile runs again
            break
        done[row["tile"]] = row
    return done


def record_tile(f, i: int, det: Detections, bad) -> dict:
    """Append tile ``i``'s line (its proposals ``det``, its missing file tiles ``bad``) to the
    open log ``f``, on disk when this returns; the row written."""
    row = {"tile": i, "boxes": det.boxes.tolist(), "scores": det.scores.tolist(),
           "labels": det.labels.tolist(), "missing": [list(b) for b in bad]}
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
    return row


def merge_tiles(rows, iou: float) -> Detections:
    """Per-class NMS over every tile's proposals (``rows`` as :func:`record_tile` wrote them),
    as :func:`densify.scan.detect.detect` does.

    Examples:
        Two tiles propose the same object; the better box stays:

        >>> rows = [{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [3]},
        ...         {"boxes": [[1, 0, 11, 10]], "scores": [0.8], "labels": [3]}]
        >>> merge_tiles(rows, 0.5).boxes.tolist()
        [[0.0, 0.0, 10.0, 10.0]]
    """
    boxes = torch.tensor([b for r in rows for b in r["boxes"]], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([s for r in rows for s in r["scores"]], dtype=torch.float32)
    labels = torch.tensor([k for r in rows for k in r["labels"]], dtype=torch.long)
    if scores.numel() > MAX_CANDIDATES:
        top = scores.topk(MAX_CANDIDATES).indices
        boxes, scores, labels = boxes[top], scores[top], labels[top]
    keep = batched_nms(boxes, scores, labels, iou)
    return Detections(boxes[keep], scores[keep], labels[keep])
