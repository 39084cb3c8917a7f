"""Result files: what a scan computed, saved compactly and read back as a :class:`ScanResult`.

A result file is an uncompressed-pickle-free ``.npz`` (zip, deflated) holding:

- ``format`` = ``"densify-result"`` and ``version`` = :data:`VERSION`;
- the image: ``image_size`` ``(H, W)``, ``source`` (``""`` when none), ``thumbnail`` (an RGB
  ``uint8`` copy, longer side at most :data:`FILE_THUMBNAIL_SIDE`, so that a reloaded result can
  be drawn on its image; absent in files of results without one);
- the classes: ``categories`` ``(K,)``, ``background_class`` (``-1`` when none), ``object_box``
  ``(4,)`` window pixels (empty when none);
- the geometry that registers cells to pixels: ``window``, ``stride``, ``offset``, ``rf_size``
  (empty when None), ``rf_offset``;
- the pyramid: ``factors`` ``(S,)``, ``sizes`` ``(S, 2)``, ``paddings`` ``(S, 4)``
  ``(top, bottom, left, right)``, ``level_window`` ``(2,)``, ``flipped`` ``(S,)`` (the map ran on
  the mirrored image);
- per scale ``i``: ``probs_i`` ``(K, h, w)`` uint16 cell probabilities in fixed point
  (``p = probs_i / 65535``; and ``regression_i`` float16 with ``box_format`` when the scan
  regressed boxes, kept at the cells where a class other than the background reaches
  :data:`REGRESSION_FLOOR` and 0 elsewhere: such cells yield no detection at thresholds from
  the floor up, and the zeros compress to nothing);
- the summary: ``top_index``, ``top_score``, ``top_box`` ``(k, 4)``, ``top_factor`` of
  :meth:`ScanResult.top_classes`, computed from the float32 maps;
- only on request (``full_maps=[classes]``): ``heatmaps`` ``(k, H, W)`` float16 at image
  resolution and ``heatmap_classes``;
- only for an ensemble's result (:mod:`densify.scan.ensemble`: maps of several models, each
  with its own geometry and share), written as version :data:`ENSEMBLE_VERSION` (which older
  readers refuse rather than misread): per map ``map_window``, ``map_stride``, ``map_offset``,
  ``map_rf_size`` (``-1`` when None), ``map_rf_offset``, ``map_level_window`` ``(S, 2)``,
  ``map_box_format`` ``(S,)``, and ``map_weights`` ``(S,)`` (:attr:`ScanResult.weights`; absent
  when every map counts the same).

Accuracy and size: 16 bits per probability in fixed point, so a probability comes back within
``0.5 / 65535 = 7.6e-6`` (absolute). That is tighter than float16 (whose error reaches 2.4e-4
near 1) for every ``p > 1/64``, where heat maps, scores and thresholds live; below ``7.6e-6``
values read back as 0 (float16 would keep them). The zeros are why: the demo scene's maps
compress to 0.53 MB this way, 1.69 MB as float16. Heat maps, scores and detection scores read
from a file match the scan to 7.6e-6; a cell that close to a detection threshold may fall on
either side of it.

Convention: as :mod:`densify.scan.result` (maps ``(K, h, w)``, boxes ``(x1, y1, x2, y2)``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..convert.geometry import Geometry
from ..errors import ResultError
from ..io.files import atomic_output
from ..io.image import thumbnail
from .maps import ScaleMap
from .pyramid import Level
from .result import ScanResult
from .slideresult import SlideResult, load_slide_result

__all__ = ["FORMAT", "VERSION", "ENSEMBLE_VERSION", "FILE_THUMBNAIL_SIDE", "save_result",
           "load_result", "result_arrays"]

FORMAT = "densify-result"
#: Longer side of the thumbnail a result file keeps (pixels): enough to draw on, a few dozen KB.
FILE_THUMBNAIL_SIDE = 320
#: Version 1 was the 0.2 layout (float32 maps at image resolution, no ``format`` key).
VERSION = 2
#: Files with per-map geometries and weights (an ensemble's result); this reader reads both.
ENSEMBLE_VERSION = 3
#: Fixed-point levels of a stored probability.
LEVELS = 65535
#: Box regression is stored where some non-background class reaches this probability.
REGRESSION_FLOOR = 0.01


def result_arrays(result: ScanResult, full_maps: Sequence[int | str] = (), top_k: int = 5
                  ) -> dict[str, np.ndarray]:
    """The arrays :func:`save_result` writes (module docstring), without pickled objects."""
    g, m0 = result.maps[0].geometry, result.maps[0]
    top = result.top_classes(top_k)
    arrays = {
        "format": np.array(FORMAT), "version": np.array(VERSION),
        "image_size": np.array(result.image_size, np.int64), "source": np.array(result.source or ""),
        "categories": np.array(result.categories, dtype=str),
        "background_class": np.array(-1 if result.background_class is None
                                     else result.background_class, np.int64),
        "object_box": np.array(result.object_box or (), np.float64),
        "window": np.array(g.window), "stride": np.array(g.stride), "offset": np.array(g.offset),
        "rf_size": np.array(g.rf_size or (), np.int64), "rf_offset": np.array(g.rf_offset),
        "factors": np.array(result.factors, np.float64),
        "sizes": np.array([m.size for m in result.maps], np.int64).reshape(-1, 2),
        "paddings": np.array([m.padding for m in result.maps], np.int64).reshape(-1, 4),
        "level_window": np.array(m0.level.window, np.int64),
        "flipped": np.array([m.flipped for m in result.maps], bool),
        "top_index": np.array([t.index for t in top], np.int64),
        "top_score": np.array([t.score for t in top], np.float64),
        "top_box": np.array([t.box for t in top], np.float64).reshape(-1, 4),
        "top_factor": np.array([t.factor for t in top], np.float64),
    }
    if result.thumbnail is not None:
        arrays["thumbnail"] = np.ascontiguousarray(thumbnail(result.thumbnail,
                                                             FILE_THUMBNAIL_SIDE))
    for i, m in enumerate(result.maps):
        arrays[f"probs_{i}"] = _fixed(m.probs)
        if m.regression is not None:
            arrays[f"regression_{i}"] = _regression(m, result.background_class)
            arrays["box_format"] = np.array(m.box_format)
    arrays.update(_per_map(result))
    if full_maps:
        idx = [result.class_index(c) for c in full_maps]
        arrays["heatmaps"] = result.heatmaps(idx).numpy().astype(np.float16)  # float16: 2 B/px
        arrays["heatmap_classes"] = np.array(idx, np.int64)
    return arrays


def _per_map(result: ScanResult) -> dict[str, np.ndarray]:
    """The per-map keys of an ensemble's result (module docstring); ``{}`` for one model's."""
    maps, m0 = result.maps, result.maps[0]
    if result.weights is None and all(m.geometry == m0.geometry and m.level.window ==
                                      m0.level.window and m.box_format == m0.box_format
                                      for m in maps):
        return {}
    arrays = {"version": np.array(ENSEMBLE_VERSION),
              "map_box_format": np.array([m.box_format for m in maps], dtype=str)}
    for key, value in (("window", lambda m: m.geometry.window),
                       ("stride", lambda m: m.geometry.stride),
                       ("offset", lambda m: m.geometry.offset),
                       ("rf_size", lambda m: m.geometry.rf_size or (-1, -1)),
                       ("rf_offset", lambda m: m.geometry.rf_offset),
                       ("level_window", lambda m: m.level.window)):
        arrays[f"map_{key}"] = np.array([value(m) for m in maps], np.int64).reshape(-1, 2)
    if result.weights is not None:
        arrays["map_weights"] = np.array(result.weights, np.float64)
    return arrays


def save_result(result: ScanResult, path: str | Path, full_maps: Sequence[int | str] = (),
                top_k: int = 5) -> Path:
    """Write ``result`` to ``path`` (``.npz``), atomically; ``full_maps`` adds image-resolution
    maps of those classes (large: ``2·H·W`` bytes each). Returns ``path``.

    Examples:
        >>> import tempfile, torch, densify
        >>> from densify.scan.resultfile import save_result, load_result
        >>> scan = densify.Scanner(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 4), torch.nn.Flatten()),
        ...                        scales=[1.0], output_stride=None, input_size=(1, 4, 4),
        ...                        mean=[0.5], std=[0.5], device="cpu")
        >>> result = scan(torch.zeros(1, 8, 8))
        >>> path = save_result(result, tempfile.mkdtemp() + "/r.npz")
        >>> load_result(path).top_classes(1)[0].name == result.top_classes(1)[0].name
        True
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ResultError(f"{path}: result files end in .npz; choose a name like scan.npz")
    arrays = result_arrays(result, full_maps, top_k)
    with atomic_output(path) as tmp:
        write_npz(tmp, arrays)
    return path


#: zlib level of result files: level 1 writes a 1000-class result four times faster than
#: ``np.savez_compressed``'s level 6, for files about 7 % larger (manual, "Speed and memory").
COMPRESS_LEVEL = 1


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], level: int = COMPRESS_LEVEL) -> None:
    """``np.savez_compressed`` with a chosen zlib ``level``: the same ``.npz`` layout (one
    ``NAME.npy`` member per array), read back by ``np.load``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def load_result(path: str | Path) -> ScanResult | SlideResult:
    """The :class:`ScanResult` saved at ``path`` (maps as float32 from their 16-bit copies), or,
    for a slide's ``*.ome.zarr`` store (``densify slide``), a lazily read
    :class:`densify.scan.slideresult.SlideResult`.

    Raises :class:`ResultError` (one line) for a missing, corrupt, truncated, old-format or
    foreign file.
    """
    path = Path(path)
    if path.is_dir() or path.name.endswith(".zarr"):
        return load_slide_result(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ResultError(f"{path}: no such result file; check the path") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ResultError(f"{path}: not a readable result file ({type(exc).__name__}: {exc}); "
                          "it is corrupt or truncated: scan the image again") from None
    _check_version(path, data)
    try:
        return _result(data)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ResultError(f"{path}: damaged result file ({type(exc).__name__}: {exc}); scan the "
                          "image again") from None


def _fixed(probs: torch.Tensor) -> np.ndarray:
    """``round(p · 65535)`` as uint16, computed in slices (a 1000-class map can be 750 MB)."""
    out = np.empty(tuple(probs.shape), np.uint16)
    for k in range(0, probs.shape[0], 64):
        block = probs[k:k + 64].numpy().clip(0.0, 1.0) * np.float32(LEVELS)
        out[k:k + 64] = np.rint(block)
    return out


def _regression(m: ScaleMap, background: int | None) -> np.ndarray:
    """``m.regression`` as float16, zeroed at cells no class but the background reaches
    :data:`REGRESSION_FLOOR` in."""
    probs = m.probs.clone()
    if background is not None:
        probs[background] = 0.0
    keep = (probs.amax(dim=0) >= REGRESSION_FLOOR).numpy()
    return np.where(keep, m.regression.float().numpy(), 0.0).astype(np.float16)


def _check_version(path: Path, data: dict) -> None:
    if "format" not in data:
        what = "a densify 0.2 heatmap file" if "heatmaps" in data else "not a densify result"
        raise ResultError(f"{path}: {what} (no format version); scan the image again to write "
                          f"a version {VERSION} result")
    if str(data["format"]) != FORMAT or int(data["version"]) not in (VERSION, ENSEMBLE_VERSION):
        raise ResultError(f"{path}: {data['format']} version {int(data['version'])} is not "
                          f"readable here (this densify reads {FORMAT} version {VERSION}); scan "
                          "the image again")


def _pair(a: np.ndarray) -> tuple[int, int]:
    return int(a[0]), int(a[1])


def _geometry(data: dict, i: int) -> tuple[Geometry, tuple[int, int], str]:
    """``(geometry, level window, box format)`` of map ``i``: the file's, or the map's own in an
    ensemble's file."""
    if "map_window" not in data:
        rf = data["rf_size"]
        return (Geometry(_pair(data["window"]), _pair(data["stride"]), _pair(data["offset"]),
                         _pair(rf) if rf.size else None, _pair(data["rf_offset"])),
                _pair(data["level_window"]), str(data.get("box_format", "offsets")))
    rf = _pair(data["map_rf_size"][i])
    return (Geometry(_pair(data["map_window"][i]), _pair(data["map_stride"][i]),
                     _pair(data["map_offset"][i]), None if rf[0] < 0 else rf,
                     _pair(data["map_rf_offset"][i])),
            _pair(data["map_level_window"][i]), str(data["map_box_format"][i]))


def _result(data: dict) -> ScanResult:
    image_size = _pair(data["image_size"])
    maps = []
    for i, factor in enumerate(data["factors"].tolist()):
        geometry, window, box_format = _geometry(data, i)
        level = Level(float(factor), _pair(data["sizes"][i]),
                      tuple(int(v) for v in data["paddings"][i]), image_size, window)
        probs = torch.from_numpy(data[f"probs_{i}"].astype(np.float32) / np.float32(LEVELS))
        regression = data.get(f"regression_{i}")
        maps.append(ScaleMap(level, geometry, probs,
                             None if regression is None else torch.from_numpy(
                                 regression.astype(np.float32)),
                             box_format, bool(data["flipped"][i])))
    background = int(data["background_class"])
    box = data["object_box"]
    return ScanResult(image_size, tuple(str(c) for c in data["categories"]), tuple(maps),
                      None if background < 0 else background,
                      tuple(float(v) for v in box) if box.size else None,
                      str(data["source"]) or None, data.get("thumbnail"),
                      tuple(data["map_weights"].tolist()) if "map_weights" in data else None)
