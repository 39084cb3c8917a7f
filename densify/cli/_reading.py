"""Images decoded ahead of the scanner for the scanning commands
(:func:`densify.cli._scanning.each_image`): each path's image or its error, in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DensifyError
from ..io.image import read_image

__all__ = ["read_or_error", "read_ahead"]


def read_or_error(path: Path) -> tuple[np.ndarray | None, DensifyError | None]:
    """``(rgb, None)``, or ``(None, error)`` for a file that is not a readable image."""
    try:
        return read_image(path), None
    except DensifyError as exc:
        return None, exc


def read_ahead(paths: list[Path], prefetch: bool = True, workers: int = 1, ahead: int = 1
               ) -> Iterator[tuple]:
    """``(rgb, None)`` or ``(None, error)`` per path, in order; with ``prefetch`` up to ``ahead``
    images are decoded in ``workers`` background threads (OpenCV releases the GIL while it
    decodes) while the caller works on the current one."""
    if not prefetch:
        yield from map(read_or_error, paths)
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="densify-read") as pool:
        pending = deque(pool.submit(read_or_error, p) for p in paths[:max(1, ahead)])
        queued = len(pending)
        while pending:
            current = pending.popleft().result()
            if queued < len(paths):
                pending.append(pool.submit(read_or_error, paths[queued]))
                queued += 1
            yield current
            del current
