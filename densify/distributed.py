"""Scan many images on a Ray cluster with Ray Data: the single-process scan, run by an actor pool.

    from densify.distributed import scan_dataset
    rows = scan_dataset("photos/", "lenet5-digits", workers=4, output_dir="out/scan.parquet")
    rows.filter(lambda row: row["status"] == "error").show()

What happens: the inputs become a Ray dataset of paths (or an existing dataset is used as is);
``map_batches`` sends batches of ``batch_size`` rows to a fixed pool of ``workers`` actors. Each
actor builds one :class:`densify.scan.scanner.Scanner` when it starts (the model is converted once
per actor, on its GPU when ``gpus_per_worker > 0``), then reads every image of a batch with
densify's own reader (:func:`densify.io.image.read_image`, inside the actor: nothing but paths
crosses the cluster) and scans it with the same code as ``Scanner(...)(image)``. A bad image
(missing, truncated, not an image, too large, out of memory) becomes a row with
``status="error"`` and the one-line message; any other exception is a bug and fails the job.
The rows are written by Ray Data's own writers (``write_parquet`` or ``write_json``).

One row per input, in the fields of a scan record (``image``, ``status``, ``error``, ``size``,
``top``, ``files``, ``seconds``) plus ``detections`` (:data:`ROW_FIELDS`); ``files`` lists the
image's result file when ``results_dir`` is given:

- ``top``: the ``top_k`` classes of :meth:`densify.scan.result.ScanResult.top_classes`, each
  ``{"index", "name", "score", "box", "factor"}``;
- ``detections``: :meth:`ScanResult.detections` at ``threshold``/``iou``, each
  ``{"box": [x1, y1, x2, y2], "score", "label", "name"}``.

Convention:
    boxes are ``(x1, y1, x2, y2)`` float pixels of the ORIGINAL image; sizes are ``[H, W]``.

This module is the only one that imports Ray, and only when called; without it the calls raise
one line naming ``pip install 'densify[ray]'``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._extras import require_extra
from .errors import ImageError, MissingExtraError, OutputError, ParameterError
from .runtime import choose_threads
from .scan.settings import ScanSettings

if TYPE_CHECKING:
    import numpy as np
    import ray.data

    from .scan.scanner import Scanner

__all__ = ["RAY_HINT", "ROW_FIELDS", "ScanConfig", "ScanActor", "scan_dataset", "require_ray",
           "row_schema", "scan_row", "result_path", "image_paths", "input_dataset", "write_rows"]

RAY_HINT = "pip install 'densify[ray]'"
ROW_FIELDS = ("image", "status", "error", "size", "top", "detections", "files", "seconds")
FORMATS = ("parquet", "json")


def require_ray():
    """Import and return ``ray`` (with ``ray.data``), or raise one line naming the extra."""
    require_extra("ray", "scanning on Ray")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"Ray Data is not installed ({exc}); {RAY_HINT}") from None
    return ray


def row_schema():
    """The pyarrow schema of a row (every batch carries it, so error-only batches agree)."""
    import pyarrow as pa

    box = pa.list_(pa.float64())
    top = pa.struct([("index", pa.int64()), ("name", pa.string()), ("score", pa.float64()),
                     ("box", box), ("factor", pa.float64())])
    det = pa.struct([("box", box), ("score", pa.float64()), ("label", pa.int64()),
                     ("name", pa.string())])
    return pa.schema([("image", pa.string()), ("status", pa.string()), ("error", pa.string()),
                      ("size", pa.list_(pa.int64())), ("top", pa.list_(top)),
                      ("detections", pa.list_(det)), ("files", pa.list_(pa.string())),
                      ("seconds", pa.float64())])


@dataclass(frozen=True)
class ScanConfig:
    """What every actor needs: the model and settings of its :class:`Scanner`, exactly as the
    caller (or the command line) built them, and the per-image outputs.

    ``model`` is a :class:`densify.models.user.ModelChoice` (name or ``module:factory``, weights,
    card overrides) or a picklable module; ``settings`` a :class:`ScanSettings`; ``threshold``
    None means the model card's recommended threshold, else 0.5; ``classes`` are class indices
    (None: all); ``detection`` holds further keyword arguments of
    :meth:`ScanResult.detections` (``boxes``, ``merge``, ``merge_threshold``).
    """

    model: Any = None
    settings: ScanSettings = field(default_factory=ScanSettings)
    top_k: int = 5
    threshold: float | None = None
    iou: float = 0.3
    classes: tuple[int, ...] | None = None
    detection: dict[str, Any] = field(default_factory=dict)
    results_dir: str | None = None

    def detection_threshold(self, scanner: Scanner) -> float:
        return scanner.default_threshold if self.threshold is None else self.threshold

    def scanner(self, **overrides) -> Scanner:
        """The actor's scanner: ``Scanner(model, settings)``, with ``overrides``."""
        from .scan.scanner import Scanner

        return Scanner(self.model, self.settings.replace(**overrides))


def result_path(results_dir: str | Path, image: str | None) -> Path:
    """``results_dir/<stem>-<8 hex of the path's SHA-1>.npz``: unique per path across folders
    (a random name for images without a path).

    Examples:
        >>> result_path("out", "a/photo.jpg") != result_path("out", "b/photo.jpg")
        True
    """
    tag = hashlib.sha1(image.encode()).hexdigest()[:8] if image else uuid.uuid4().hex[:8]
    return Path(results_dir) / f"{Path(image).stem if image else 'image'}-{tag}.npz"


def scan_row(scanner: Scanner, config: ScanConfig, image: str | None, array=None) -> dict:
    """One row: read ``image`` (a path) unless ``array`` is given, scan it, summarize it.

    A bad image or running out of memory on it gives ``status="error"`` and the message.
    """
    from .io.image import read_array, read_image
    from .scan.records import PER_IMAGE_ERRORS, error_message, error_record, ok_record
    from .scan.resultfile import save_result

    start = time.perf_counter()
    try:
        rgb = read_image(image) if array is None else read_array(array)
        result = replace(scanner(rgb, progress=False), source=image)
        det = result.detections(config.detection_threshold(scanner), config.iou,
                                config.classes, **config.detection)
        detections = [{"box": b, "score": s, "label": c, "name": result.categories[c]}
                      for b, s, c in zip(det.boxes.tolist(), det.scores.tolist(),
                                         det.labels.tolist(), strict=True)]
        files = [] if config.results_dir is None else [str(save_result(
            result, result_path(config.results_dir, image), top_k=config.top_k))]
        return ok_record(image, result, time.perf_counter() - start, config.top_k,
                         detections=detections, files=files)
    except PER_IMAGE_ERRORS as exc:
        return error_record(image, error_message(exc, image), time.perf_counter() - start,
                            detections=[])


class ScanActor:
    """The callable class of ``map_batches``: one converted model per actor, one row per image."""

    def __init__(self, config: ScanConfig):
        import torch

        # A worker process is an application: it sets its own thread count (densify.runtime)
        torch.set_num_threads(choose_threads(config.settings.threads))
        self.config = config
        self.scanner = config.scanner()

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        paths = batch.get("path")
        images = batch.get("image")
        count = len(paths if paths is not None else images)
        rows = [scan_row(self.scanner, self.config,
                          None if paths is None else str(paths[i]),
                          None if images is None else images[i]) for i in range(count)]
        return pa.Table.from_pylist(rows, schema=row_schema())


def image_paths(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Paths of ``source``: a directory (its images, :func:`densify.io.image.expand_inputs`), a
    glob (``**`` recursive), one file, or a list of paths taken as given (not checked here: a
    missing one becomes an error row). Relative paths are made absolute: the workers run in
    other directories.

    Examples:
        >>> import os
        >>> image_paths(["/data/a.png", Path("b/c.jpg")]) == ["/data/a.png",
        ...                                                   os.path.abspath("b/c.jpg")]
        True
    """
    return [p if "://" in p else os.path.abspath(p) for p in _image_paths(source)]


def _image_paths(source) -> list[str]:
    from .io.image import expand_inputs

    if isinstance(source, (str, Path)):
        text = str(source)
        if Path(text).is_dir():
            return [str(p) for p in expand_inputs([text])]
        if glob.has_magic(text):
            found = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise ImageError(f"{text}: no files match this pattern; check the glob")
            return found
        return [text]
    paths = [str(p) for p in source]
    if not paths:
        raise ParameterError("no input paths given; pass a directory, a glob or a list of paths")
    return paths


def input_dataset(source, batch_size: int, workers: int = 1, max_blocks: int = 10_000
                  ) -> tuple[ray.data.Dataset, int]:
    """``(dataset, batch size)``: a Ray dataset with a ``path`` and/or an ``image`` column (RGB
    arrays) from ``source``, and the batch size to map it with.

    Paths are split into blocks of one batch (at most ``max_blocks`` blocks), and the batch
    shrinks so that every one of the ``workers`` actors gets some (Ray Data bundles blocks up to
    a batch, and one bundle goes to one actor).
    """
    ray = require_ray()
    if isinstance(source, ray.data.Dataset):
        names = source.schema().names
        kept = [c for c in ("path", "image") if c in names]
        if not kept:
            raise ParameterError(f"the dataset has columns {names}; scan_dataset needs a 'path' "
                                 "(file paths) or an 'image' (RGB arrays) column: rename one")
        return source.select_columns(kept), batch_size
    paths = image_paths(source)
    batch = max(1, min(batch_size, -(-len(paths) // workers)))
    blocks = max(1, min(max_blocks, -(-len(paths) // batch)))
    return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks), batch


def _checked_config(config: ScanConfig, classes) -> ScanConfig:
    """Build the scanner once here, on the CPU, and detect on a blank window with it, so that a
    bad model, weights file, class, threshold or detection option stops the call with one line
    before any actor starts; classes become indices."""
    import numpy as np

    from .scan.result import class_index

    if config.top_k < 1:
        raise ParameterError(f"top_k must be at least 1, got {config.top_k}")
    probe = config.scanner(device="cpu")
    chosen = None if classes is None else tuple(class_index(probe.categories, c) for c in classes)
    config = replace(config, classes=chosen)
    blank = np.zeros((*probe.geometry.window, 3), np.uint8)
    try:
        probe(blank, scales=[1.0]).detections(config.detection_threshold(probe), config.iou,
                                              chosen, **config.detection)
    except TypeError as exc:
        raise ParameterError(f"bad detection option ({exc}); use the keywords of "
                             "ScanResult.detections") from None
    return config


def scan_dataset(source, model: Any = "lenet5-digits", settings: ScanSettings | None = None, *,
                 weights: str | Path | None = None, top_k: int = 5,
                 threshold: float | None = None, iou: float = 0.3, classes=None,
                 detection_options: dict[str, Any] | None = None, workers: int = 1,
                 gpus_per_worker: float = 0, cpus_per_worker: float = 1, batch_size: int = 8,
                 output_dir: str | Path | None = None, output_format: str = "parquet",
                 results_dir: str | Path | None = None, **overrides) -> ray.data.Dataset:
    """Scan every image of ``source`` on Ray Data; one row per image (module docstring).

    Args:
        source: a directory, a glob, a file, a list of paths, or a ``ray.data.Dataset`` with a
            ``path`` column (files read in the workers) or an ``image`` column (RGB arrays,
            e.g. from ``ray.data.read_images``).
        model: a catalogue name, ``module:factory`` (imported from the current directory), a
            :class:`densify.models.user.ModelChoice`, or a module Ray can pickle.
        settings, overrides: the :class:`densify.scan.settings.ScanSettings` of every worker's
            scanner (keywords such as ``scales=2`` override its fields); ``threads`` None: each
            worker uses ``cpus_per_worker`` threads.
        weights: as :class:`densify.scan.scanner.Scanner` (None: the trained weights).
        top_k: classes per row. threshold, iou, classes, detection_options (e.g. ``{"merge":
            "overfeat"}``): as :meth:`densify.scan.result.ScanResult.detections` (threshold
            None: the model card's, else 0.5).
        workers: actors in the pool, each with its own copy of the converted model.
        gpus_per_worker: GPUs per actor (fractions share a GPU); 0: CPU only.
        cpus_per_worker: CPUs reserved per actor; also its torch threads (at least 1).
        batch_size: images handed to an actor at a time.
        output_dir: where Ray Data writes the rows (``output_format`` ``"parquet"`` or
            ``"json"``, JSON Lines); a local directory must not hold files yet and appears only
            once complete. None: nothing is written.
        results_dir: also write each image's compact result file there
            (:func:`densify.scan.resultfile.save_result`, :func:`result_path` names), listed in
            the row's ``files``; on a cluster, a directory every node sees.

    Returns:
        The rows as a lazy ``ray.data.Dataset`` (None ``output_dir``), or the written rows read
        back from ``output_dir``.

    Raises:
        DensifyError: bad arguments, before any image is scanned; a missing extra.
    """
    ray = require_ray()
    if output_format not in FORMATS:
        raise ParameterError(f"unknown output format {output_format!r}; use parquet or json")
    if workers < 1 or batch_size < 1 or gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ParameterError("workers and batch_size must be at least 1, gpus_per_worker at least "
                             "0 and cpus_per_worker above 0")
    from .models.user import ModelChoice

    settings = (settings or ScanSettings()).replace(**overrides)
    if settings.threads is None:
        settings = settings.replace(threads=max(1, int(cpus_per_worker)))
    if isinstance(model, str):
        model = ModelChoice(model, None if weights is None else str(weights))
    elif weights is not None and isinstance(model, ModelChoice):
        model = replace(model, weights=str(weights))
    if results_dir is not None:
        from .io.files import ensure_output_dir

        results_dir = str(ensure_output_dir(results_dir).resolve())
    config = _checked_config(ScanConfig(model, settings, top_k, threshold, iou, None,
                                        dict(detection_options or {}), results_dir), classes)
    inputs, batch = input_dataset(source, batch_size, workers)
    rows = inputs.map_batches(
        ScanActor, fn_constructor_args=(config,), batch_size=batch, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None)
    if output_dir is None:
        return rows
    where = write_rows(rows, output_dir, output_format)
    reader = ray.data.read_parquet if output_format == "parquet" else ray.data.read_json
    return reader(where)


def write_rows(rows: ray.data.Dataset, output_dir: str | Path, output_format: str = "parquet"
               ) -> str:
    """Write ``rows`` with Ray Data's writer; returns where.

    A local ``output_dir`` is filled under a hidden temporary name beside it and renamed when
    complete (it must be empty or absent; on a multi-node cluster it must be on a file system
    every node sees). A URI (``s3://...``) is written in place.
    """
    write = getattr(rows, f"write_{output_format}")
    if "://" in str(output_dir):
        write(str(output_dir))
        return str(output_dir)
    target = Path(output_dir).resolve()  # workers run in other directories
    if target.is_file() or (target.is_dir() and any(target.iterdir())):
        raise OutputError(f"{target}: already exists and is not an empty directory; remove it or "
                          "choose another output directory")
    from .io.files import ensure_output_dir

    ensure_output_dir(target.parent)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        write(str(tmp))
        if target.is_dir():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)
