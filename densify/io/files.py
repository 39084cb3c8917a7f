"""Output files that appear whole or not at all, and output directories checked up front.

Convention:
    Every file densify writes goes through :func:`atomic_output`: the writer fills a hidden
    temporary file in the destination directory (same suffix, so writers that look at the
    extension, like ``cv2.imwrite`` or ``np.savez``, behave), which is then ``os.replace``-d onto
    the destination. An interrupted run never leaves a half-written image or JSON file behind;
    only a process killed outright can leave a stale ``.name.<random>.tmp.suffix`` file.

Errors:
    :class:`OutputError` (an ``OSError``) for anything that stops writing: a directory that cannot
    be created or written, a file that cannot be written, an image suffix OpenCV cannot encode.
    Its message is one line naming the path and saying to choose another directory with ``-o``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import OutputError
from .image import read_array

__all__ = ["OutputError", "atomic_output", "ensure_output_dir", "write_image", "write_json",
           "remove_stale_temporaries"]

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The names :func:`atomic_output` gives its temporary files.
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp(\.[^.]*)?")


def ensure_output_dir(path: str | Path) -> Path:
    """Create directory ``path`` (and its parents) if missing and check that files can be written.

    The check is ``os.access`` plus a real probe (a temporary file created and removed), since
    access bits alone are wrong for root, read-only mounts and some network file systems.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: the directory cannot be created or is not writable.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if path.exists() or _blocked_by_file(path) else exc.strerror
        raise OutputError(f"{path}: cannot create the output directory ({reason}); "
                          "choose another with -o") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output directory is not writable; choose another with -o")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in the output directory ({exc.strerror}); "
                          "choose another with -o") from None
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix. The block must create the file (the name is
    reserved by randomness, not by creating it, so the file gets the usual umask permissions).
    If the block raises, the temporary file is deleted and ``path`` is left as it was.
    A ``path`` without a suffix does not work with ``np.savez``, which would append ``.npz``.

    Raises:
        OutputError: the destination directory does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        problem = "is not a directory" if path.parent.exists() else "does not exist"
        raise OutputError(f"{path.parent}: output directory {problem}; create it or choose "
                          "another with -o")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("wrote %s", path)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``directory`` (names as
    :func:`atomic_output` makes them); returns them. Do not run it while another process writes
    into the same directory.
    """
    stale = [p for p in Path(directory).iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted run", path)
    return stale


def write_image(path: str | Path, rgb: np.ndarray, params: Sequence[int] = ()) -> Path:
    """Write RGB ``uint8`` ``(H, W, 3)`` (anything :func:`~densify.io.image.read_array` accepts).

    The format follows ``path``'s suffix (``.png``, ``.jpg``, ``.bmp``, ``.tif``, ``.webp``);
    ``params`` go to ``cv2.imencode`` (e.g. ``(cv2.IMWRITE_JPEG_QUALITY, 95)``).
    """
    path = Path(path)
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        raise OutputError(f"{path}: cannot write {path.suffix or 'suffix-less'} images; use one "
                          f"of {', '.join(_IMAGE_SUFFIXES)}")
    bgr = cv2.cvtColor(read_array(rgb), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix, bgr, list(params))
    if not ok:
        raise OutputError(f"{path}: OpenCV failed to encode the image; try a .png output")
    _write_bytes(path, encoded.tobytes())
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (with a final newline), atomically.

    NumPy scalars and arrays, tensors and paths are converted (``.tolist()`` / ``str``). NaN and
    infinity are refused (``ValueError``): they are not JSON and break COCO tools downstream.
    """
    path = Path(path)
    text = json.dumps(obj, indent=indent, allow_nan=False, default=_jsonable)
    _write_bytes(path, (text + "\n").encode("utf-8"))
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror}); choose another output "
                          "directory with -o") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"write_json: cannot encode {type(value).__name__} as JSON")


def _blocked_by_file(path: Path) -> bool:
    """True when some ancestor of ``path`` is a regular file (so no directory can be made)."""
    return any(parent.is_file() for parent in path.parents)
