"""Slides scanned tile by tile from disk into a chunked store, in memory that does not grow with
the slide, resumable after a kill.

    scanner = Scanner("lenet5-digits", weights="DEFAULT", output_stride=None)
    with open_slide("slide.ome.tif") as slide:
        done = scan_slide(scanner, slide, "slide_heatmap.ome.zarr", level=0)
    done.detections                     # boxes in level-0 pixels, merged across tiles

What happens: one pyramid level of the slide is one scale, its own resolution (no resizing: a
coarser level of the file *is* the coarser scale). It is padded as :func:`densify.scan.pyramid.levels`
pads an image (centred, to ``window + k·stride``), so the cells are exactly the in-memory
:class:`~densify.scan.scanner.Scanner`'s at factor 1. The padded input is cut by
:func:`densify.scan.tiling.tile_boxes` into tiles of ``tile_cells × tile_cells`` output cells,
aligned to the stride and overlapping by the receptive field; per tile, in row-major order: the
region is read from the file (:meth:`densify.io.slides.Slide.read_region`), normalized and padded
(:func:`densify.scan.memory.level_input`), run through the dense net, turned into probabilities,
its own cells (:func:`densify.scan.tiling.own_cells`) written into level ``"0"`` of an OME-Zarr
store (:mod:`densify.io.omezarr`; one chunk per tile and class), its detections collected, and
everything freed. The next tile is read and decoded in a worker thread meanwhile (``prefetch``),
and a tile's chunks are compressed and written in another while the next tile computes. What stays
in memory: the net, two tiles' inputs, two tiles' maps, and the detections.

Resume: after each tile a line goes to ``densify_progress.jsonl`` in the store (the tile's index,
its detections, its missing cells), flushed to disk after the tile's chunks. A rerun with the
same slide, net and settings (the file's first line records them) skips the tiles listed; a tile
interrupted midway is computed again (its chunks are rewritten whole). Different settings refuse
to resume (one line: remove the store). The finished store gets its lower levels and metadata
(:func:`densify.io.omezarr.write_multiscales`) and loses the progress file.

Corrupt tiles: a file tile that cannot be decoded (:class:`densify.io.slides.CorruptTileError`) is
logged with its position; the scan goes on, and every cell whose receptive field touches it is
NaN in the store (missing, not zero) and yields no detection.

Exactness (tested): the stored probabilities equal the in-memory scan's at factor 1 (float32, up
to summation order: max difference below 1e-5). Detections: each tile keeps its proposals (cells
at or above the threshold, :func:`densify.scan.detect.candidates`) and per-class NMS runs over all
of them at the end, as the in-memory :func:`densify.scan.detect.detect` does, so the boxes are the
same. A tile with more than :data:`TILE_CANDIDATES` proposals (a low threshold on a 1000-class
net) merges them within the tile first, to keep the kept proposals bounded; suppression chains
that cross that tile's border can then differ from the in-memory result.

Convention: sizes ``(H, W)``; maps ``(K, h, w)``; boxes ``(x1, y1, x2, y2)`` in level-0 pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ParameterError
from ..io.omezarr import create_map_store, open_map_store, write_multiscales
from ..io.slides import CorruptTileError, Slide
from .detect import Detections, candidates, detect
from .maps import ScaleMap
from .memory import level_input
from .progress import PROGRESS_FILE, fingerprint, merge_tiles, record_tile, resume_state
from .pyramid import Level, grid_padding
from .scanner import PRECISIONS, Scanner, to_probabilities
from .tiling import (
    HEADROOM,
    Tile,
    TilingError,
    alignment,
    estimate_bytes,
    format_bytes,
    own_cells,
    tile_boxes,
)

__all__ = ["PROGRESS_FILE", "TILE_CANDIDATES", "SlideScan", "slide_level", "default_tile_cells",
           "tile_cells_for", "scan_slide", "store_transform"]

log = logging.getLogger(__name__)

#: A tile with more proposals than this merges them by NMS before they are kept.
TILE_CANDIDATES = 3000


@dataclass(frozen=True)
class SlideScan:
    """What :func:`scan_slide` did.

    Attributes:
        store: the OME-Zarr store written.
        level: the slide level scanned; ``scale``: its :class:`~densify.scan.pyramid.Level`.
        cells: ``(h, w)`` of the map.
        classes: class indices stored, in store order; ``categories``: every class's name.
        tiles: tiles in all; ``resumed``: those a previous run had finished.
        missing: ``(x1, y1, x2, y2)`` level pixels of each corrupt file tile.
        detections: boxes in level-0 pixels, scores, labels (class indices).
        seconds: time this call spent.
    """

    store: Path
    level: int
    scale: Level
    cells: tuple[int, int]
    classes: tuple[int, ...]
    categories: tuple[str, ...]
    tiles: int
    resumed: int
    missing: tuple[tuple[int, int, int, int], ...]
    detections: Detections
    seconds: float


def slide_level(slide: Slide, level: int, window: Sequence[int], stride: Sequence[int]) -> Level:
    """Level ``level`` of ``slide`` as a scale of the level-0 image, padded to the grid as
    :func:`densify.scan.pyramid.levels` pads (centred, to ``window + k·stride``)."""
    if not 0 <= level < len(slide.levels):
        raise ParameterError(f"{slide.path.name} has levels 0-{len(slide.levels) - 1}, not {level}")
    size, image = slide.levels[level].size, slide.levels[0].size
    pad = (*grid_padding(size[0], window[0], stride[0]), *grid_padding(size[1], window[1],
                                                                       stride[1]))
    return Level(size[0] / image[0], size, pad, image, tuple(window))


def default_tile_cells(stride: int, window: int, pixels: int = 2048) -> int:
    """Cells per tile side giving inputs of about ``pixels`` (at least 1; a multiple of 8 when
    that many fit, so tiles and the store's chunks line up)."""
    cells = max(1, (pixels - window) // stride + 1)
    return cells if cells < 8 else cells // 8 * 8


def tile_cells_for(net, room: int, dtype: torch.dtype = torch.float32, largest: int = 1024
                   ) -> int:
    """The most cells per tile side (up to ``largest``) whose forward pass, by
    :func:`densify.scan.tiling.estimate_bytes`, plus the prefetched next input, fits in
    ``(1 - HEADROOM) · room`` bytes; :class:`~densify.scan.tiling.TilingError` when one cell
    does not."""
    g = net.geometry
    margin = max(0, (g.rf_size or g.window)[0] - g.window[0]) + max(alignment(net))

    def need(cells: int) -> int:
        side = g.input_size(cells, cells)[0] + margin
        return estimate_bytes(net, side, side, dtype) + net.input_size[0] * side * side * 4

    budget = (1 - HEADROOM) * room
    if need(1) > budget:
        raise TilingError(f"max memory leaves {format_bytes(room)} for tiles; a one-cell tile "
                          f"needs {format_bytes(need(1) / (1 - HEADROOM))}; raise --max-memory")
    lo, hi = 1, largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo


def store_transform(level: Level, geometry, mpp: tuple[float, float] | None
                    ) -> tuple[tuple[float, float], tuple[float, float], str | None]:
    """``(scale, translation, unit)`` from map cells to the slide's level-0 pixel centres (pixel
    ``i`` at ``i``; microns when ``mpp`` is known): cell ``(i, j)`` is the centre of its window."""
    fy, fx = level.scale
    top, _, left, _ = level.padding
    scale = (geometry.stride[0] / fy, geometry.stride[1] / fx)
    centre = ((geometry.offset[0] + geometry.window[0] / 2 - top) / fy - 0.5,
              (geometry.offset[1] + geometry.window[1] / 2 - left) / fx - 0.5)
    if mpp is None:
        return scale, centre, None
    return ((scale[0] * mpp[0], scale[1] * mpp[1]), (centre[0] * mpp[0], centre[1] * mpp[1]),
            "micrometer")


def _tile_input(slide: Slide, index: int, scale: Level, box, scanner: Scanner
                ) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The net's input for the padded-input pixels ``box`` and the corrupt file tiles in it
    (``(x1, y1, x2, y2)`` in the level's pixels)."""
    x1, y1, x2, y2 = box
    top, _, left, _ = scale.padding
    (height, width), bad = scale.size, []
    iy1, iy2 = max(y1 - top, 0), min(y2 - top, height)
    ix1, ix2 = max(x1 - left, 0), min(x2 - left, width)
    try:
        rgb = slide.read_region(index, iy1, ix1, iy2 - iy1, ix2 - ix1)
    except CorruptTileError as exc:
        log.debug("%s", exc)
        rgb, bad = exc.region, [tuple(b) for b in exc.boxes]
    pad = (iy1 + top - y1, y2 - top - iy2, ix1 + left - x1, x2 - left - ix2)
    here = Level(1.0, rgb.shape[:2], pad, rgb.shape[:2], scale.window)
    x = level_input(rgb, here, scanner.mean, scanner.std, scanner.in_chans)
    return x.to(scanner.device, scanner.dtype).contiguous(memory_format=torch.channels_last), bad


def _missing_cells(t: Tile, geometry, scale: Level, bad) -> np.ndarray:
    """Bool ``(rows, cols)``: the tile's cells whose receptive field meets a corrupt tile
    (``bad``: boxes in the level's pixels)."""
    top, _, left, _ = scale.padding
    rows = np.arange(*t.rows) * geometry.stride[0] + geometry.rf_offset[0] - top
    cols = np.arange(*t.cols) * geometry.stride[1] + geometry.rf_offset[1] - left
    mask = np.zeros((rows.size, cols.size), bool)
    for x1, y1, x2, y2 in bad:
        ry = (rows < y2) & (rows + geometry.rf_size[0] > y1)
        rx = (cols < x2) & (cols + geometry.rf_size[1] > x1)
        mask |= ry[:, None] & rx[None, :]
    return mask


def _run_tile(scanner: Scanner, scale: Level, t: Tile, y: torch.Tensor, bad):
    """``(probabilities (K, rows, cols), regression or None)`` of one tile from the net's
    output ``y`` ``(1, C, h, w)`` on its input."""
    out = own_cells(y, t, scanner.geometry.stride)[0].float().cpu()
    num = scanner.scores_output.channels
    probs = to_probabilities(out[:num], scanner.scores_output.activation).contiguous()
    regression = out[num:] if scanner.boxes_output is not None else None
    if bad:
        probs[:, torch.from_numpy(_missing_cells(t, scanner.geometry, scale, bad))] = float("nan")
    return probs, regression


def _tile_detections(scanner: Scanner, scale: Level, t: Tile, probs, regression,
                     threshold: float, iou: float) -> Detections:
    """The tile's proposals (every cell at or above ``threshold``, before NMS), or, past
    :data:`TILE_CANDIDATES`, what per-class NMS keeps of them in the tile."""
    g = scanner.geometry
    shift = (t.rows[0] * g.stride[0], t.cols[0] * g.stride[1])
    here = dataclasses.replace(
        g, offset=(g.offset[0] + shift[0], g.offset[1] + shift[1]),
        rf_offset=(g.rf_offset[0] + shift[0], g.rf_offset[1] + shift[1]))
    m = ScaleMap(scale, here, probs, regression, scanner.box_format)
    background = scanner.background_class
    chosen = [c for c in range(probs.shape[0]) if c != background]
    boxes, scores, labels = candidates([m], threshold, chosen, scanner.object_box)
    if scores.numel() <= TILE_CANDIDATES:
        return Detections(boxes, scores, labels)
    log.info("tile %s: %d proposals; merged within the tile first", t.rows + t.cols,
             scores.numel())
    return detect([m], threshold, iou, None, background, scanner.object_box)


def _batches(tiles: list[Tile], todo: list[int], batch: int) -> list[list[int]]:
    """``todo`` cut into runs of at most ``batch`` consecutive tiles of one input size."""
    out: list[list[int]] = []
    for i in todo:
        if out and len(out[-1]) < batch and tiles[out[-1][-1]].size == tiles[i].size:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _computed(scanner: Scanner, slide: Slide, level: int, scale: Level, tiles: list[Tile],
              todo: list[int], threshold: float, iou: float, prefetch: bool, progress: bool,
              batch: int = 1):
    """Yield ``(tile index, probabilities (K, rows, cols) as numpy, proposals, corrupt boxes)``
    for the tiles ``todo``, in order, run ``batch`` tiles of one size at a time; the next batch
    is read in a worker thread if ``prefetch``."""
    precision = PRECISIONS[scanner.precision]
    autocast = (torch.autocast(scanner.device.type, dtype=precision) if precision is not None
                else contextlib.nullcontext())
    warned: set = set()
    groups = _batches(tiles, todo, batch)

    def load(group: list[int]):
        return [_tile_input(slide, level, scale, tiles[i].box, scanner) for i in group]

    def read(n: int):
        return pool.submit(load, groups[n]) if n < len(groups) else None

    with (ThreadPoolExecutor(1) as pool, torch.inference_mode(), autocast,
          tqdm(total=len(todo), desc="tiles", unit="tile", disable=not progress) as bar):
        ahead = read(0)
        for n, group in enumerate(groups):
            inputs = ahead.result()
            ahead = read(n + 1) if prefetch else None
            x = inputs[0][0] if len(inputs) == 1 else torch.cat([x for x, _ in inputs])
            bads = [bad for _, bad in inputs]
            del inputs
            y = scanner.scan_net(x)
            del x
            for k, (i, bad) in enumerate(zip(group, bads, strict=True)):
                probs, regression = _run_tile(scanner, scale, tiles[i], y[k:k + 1], bad)
                for box in set(bad) - warned:
                    log.warning("%s level %d: corrupt tile at x=%d y=%d (%dx%d px): the cells it "
                                "feeds are marked missing", slide.path.name, level, box[0],
                                box[1], box[3] - box[1], box[2] - box[0])
                    warned.add(box)
                det = _tile_detections(scanner, scale, tiles[i], probs, regression, threshold,
                                       iou)
                yield i, probs.numpy(), det, bad
                bar.update()
            del y
            ahead = ahead if prefetch else read(n + 1)


def scan_slide(scanner: Scanner, slide: Slide, store: str | Path, level: int = 0, *,
               tile_cells: int | None = None, classes: Sequence[int] | None = None,
               threshold: float = 0.5, iou: float = 0.3, attrs: dict | None = None,
               batch: int = 1, prefetch: bool = True, progress: bool = False) -> SlideScan:
    """Scan ``level`` of ``slide`` tile by tile into the OME-Zarr ``store`` (module docstring).

    Args:
        scanner: the converted net with its preprocessing, outputs and classes (its ``scales``,
            ``flip`` and ``max_memory`` do not apply: the tile size bounds the memory).
        slide: an open :class:`densify.io.slides.Slide`.
        store: the store's directory; an unfinished one with the same settings is resumed.
        level: the slide level to scan (0: full resolution).
        tile_cells: output cells per tile side (default :func:`default_tile_cells`); also the
            store's chunk side.
        classes: class indices to store (default: all, in order).
        threshold, iou: detection threshold and per-class NMS IoU (:func:`densify.scan.detect.detect`).
        attrs: extra attributes for the store (the CLI records the model and the slide).
        batch: tiles run together through the net (consecutive tiles of one size: a row of
            interior tiles), for a GPU's sake; memory grows with it.
        prefetch: read and decode the next tile (batch) in a worker thread while this one
            computes (one more tile input, or batch, in memory).
        progress: show a tqdm bar over tiles.

    Shape:
        the store's level ``"0"`` is ``(len(classes), h, w)`` float32, ``(h, w)`` the cells of
        the padded level (:meth:`densify.convert.geometry.Geometry.output_size`).
    """
    start, store = time.perf_counter(), Path(store)
    g = scanner.geometry
    scale = slide_level(slide, level, g.window, g.stride)
    if tile_cells is None:
        tile_cells = default_tile_cells(g.stride[0], g.window[0])
    if batch < 1:
        raise ParameterError(f"batch must be at least 1 tile, got {batch}")
    num = scanner.scores_output.channels
    chosen = tuple(range(num)) if classes is None else tuple(int(c) for c in classes)
    if not chosen or not all(0 <= c < num for c in chosen):
        raise ParameterError(f"classes must be indices in 0..{num - 1}, got {list(chosen)}")
    tiles = tile_boxes(scanner.scan_net, *scale.input_size, tile_cells)
    cells = (tiles[-1].rows[1], tiles[-1].cols[1])
    header = fingerprint(scanner, slide, level, tile_cells, chosen, threshold, iou)
    rows = resume_state(store, header)
    resumed = len(rows or {})
    if rows is None:
        create_map_store(store, (len(chosen), *cells), tile_cells)
        (store / PROGRESS_FILE).write_text(json.dumps(header) + "\n")
        rows = {}
    log.info("%s level %d (%dx%d): %d tiles of %d cells, %d done before", slide.path.name,
             level, *scale.size, len(tiles), tile_cells, resumed)
    todo = [i for i in range(len(tiles)) if i not in rows]
    array, keep = _level0(store), list(chosen)

    def store_tile(i: int, probs: np.ndarray, det, bad) -> None:
        t = tiles[i]
        array[:, t.rows[0]:t.rows[1], t.cols[0]:t.cols[1]] = probs[keep]
        rows[i] = record_tile(f, i, det, bad)  # logged once its cells are on disk

    # the store's writes (compression, one file per class and tile) run in a thread while the
    # next tile computes; at most one tile waits to be written
    with (open(store / PROGRESS_FILE, "a") as f,
          ThreadPoolExecutor(1, thread_name_prefix="densify-store") as writer):
        written = None
        for i, probs, det, bad in _computed(scanner, slide, level, scale, tiles, todo, threshold,
                                            iou, prefetch, progress, batch):
            if written is not None:
                written.result()
            written = writer.submit(store_tile, i, probs, det, bad)
        if written is not None:
            written.result()
    missing = tuple(sorted({tuple(b) for r in rows.values() for b in r["missing"]}))
    _finish(store, scanner, slide, scale, chosen, level, attrs, missing)
    return SlideScan(store, level, scale, cells, chosen, tuple(scanner.categories), len(tiles),
                     resumed, missing, merge_tiles([rows[i] for i in sorted(rows)], iou),
                     time.perf_counter() - start)


def _level0(store: Path):
    """Level ``"0"`` of an unfinished store, for writing."""
    import zarr

    return zarr.open_array(str(store / "0"), mode="r+")


def _finish(store: Path, scanner: Scanner, slide: Slide, scale: Level, chosen, level: int,
            attrs: dict | None, missing) -> None:
    g = scanner.geometry
    mpp = slide.levels[0].mpp
    scale_yx, translation, unit = store_transform(scale, g, mpp)
    names = [scanner.categories[c] for c in chosen]
    info = {"format": "densify-slide-heatmap", "version": 1, "slide": str(slide.path),
            "slide_format": slide.format, "level": level, "image_size": list(scale.image_size),
            "level_size": list(scale.size), "padding": list(scale.padding),
            "mpp": None if mpp is None else list(mpp), "categories": list(scanner.categories),
            "classes": list(chosen), "background_class": scanner.background_class,
            "geometry": {"window": list(g.window), "stride": list(g.stride),
                         "offset": list(g.offset), "rf_size": list(g.rf_size or ()),
                         "rf_offset": list(g.rf_offset)},
            "cell_to_level0": {"scale": list(scale_yx), "translation": list(translation),
                               "unit": unit or "pixel"},
            "missing_tiles": [list(b) for b in missing], **(attrs or {})}
    write_multiscales(store, names, scale_yx, translation, unit, {"densify": info},
                      name=slide.path.name)
    (store / PROGRESS_FILE).unlink()
    open_map_store(store)  # checks what was written
