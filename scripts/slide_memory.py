"""Measure slide scans: peak memory against slide size, and the digit spotter's recall.

    # peak RSS (VmHWM) of scanning generated slides of growing size, one fresh process each
    python scripts/slide_memory.py memory 10000 20000 -m resnet18 -w random -s 32
    python scripts/slide_memory.py memory 10000 20000 40000 -m tiny     # a small stride-32 net
    python scripts/slide_memory.py memory 40000 --time-limit 1800     # stop after 30 min
    # the shipped digit spotter on a generated slide with digits at known places
    python scripts/slide_memory.py recall 8000

Slides are made by ``scripts/make_slide.py`` into ``--workdir`` (kept: reruns reuse them). Each
memory point runs in its own process (``python scripts/slide_memory.py child ...``): it builds
the scanner (start-up peak: ``VmHWM`` then), scans the whole slide with
:func:`densify.scan.stream.scan_slide` into a store in the work directory (scan peak: ``VmHWM``
at the end), and prints one JSON line; this script prints a table of them. Recall runs
``densify slide`` and matches its GeoJSON boxes to the ground truth one to one, best score first,
at IoU >= 0.5 and the same digit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

HERE = Path(__file__).resolve().parent


def _slide(workdir: Path, size: int, seed: int = 0) -> Path:
    """The generated ``size²`` slide in ``workdir`` (made once)."""
    path = workdir / f"slide{size}.ome.tif"
    if not path.exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "make_slide.py"), str(size), "-o", str(path),
                        "--seed", str(seed)], check=True, stdout=sys.stderr)
        click.echo(f"  (made {path.name} in {time.perf_counter() - start:.0f} s)", err=True)
    return path


def tiny_net():
    """A small stride-32 classifier (random weights, 64-px window, 10 classes): the streaming
    machinery's own cost, where the net's compute does not dominate."""
    from torch import nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 8), *block(8, 16), *block(16, 16), *block(16, 16),
                         *block(16, 16), nn.Flatten(), nn.Linear(16 * 2 * 2, 10)).eval()


def _scanner(model: str, weights: str, output_stride: int, threads: int | None):
    from densify.scan.scanner import Scanner

    if model == "tiny":
        return Scanner(tiny_net(), scales=[1.0], output_stride=None, input_size=(3, 64, 64),
                       device="cpu", threads=threads)
    return Scanner(model, scales=[1.0], output_stride=output_stride, weights=weights,
                   device="cpu", threads=threads)


@click.group()
def main() -> None:
    """Slide-scan measurements (module docstring)."""


@main.command()
@click.argument("slide", type=click.Path(exists=True, path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--model", "-m", default="resnet18", help="A catalogue name, or tiny (tiny_net).")
@click.option("--weights", "-w", default="random")
@click.option("--output-stride", "-s", type=int, default=32)
@click.option("--tile-cells", type=int, default=None)
@click.option("--threads", type=int, default=None)
def child(slide, store, model, weights, output_stride, tile_cells, threads) -> None:
    """One measurement in this process: prints a JSON line."""
    from densify.runtime import tuned

    with tuned(threads, rule=False):  # --threads set for the run (else torch's count)
        _child(slide, store, model, weights, output_stride, tile_cells, threads)


def _child(slide, store, model, weights, output_stride, tile_cells, threads) -> None:
    from densify.io.slides import open_slide
    from densify.scan.memory import peak_rss_bytes, rss_bytes
    from densify.scan.stream import scan_slide

    start = time.perf_counter()
    scanner = _scanner(model, weights, output_stride, threads)
    startup = peak_rss_bytes()
    ready = time.perf_counter()
    with open_slide(slide) as s:
        done = scan_slide(scanner, s, store, 0, tile_cells=tile_cells)
        pixels = s.levels[0].size[0] * s.levels[0].size[1]
    seconds = time.perf_counter() - ready
    print(json.dumps({
        "slide": slide.name, "pixels": pixels, "model": model, "stride": scanner.output_stride,
        "tiles": done.tiles, "cells": list(done.cells), "startup_peak": startup,
        "scan_peak": peak_rss_bytes(), "rss_end": rss_bytes(), "scan_seconds": round(seconds, 1),
        "startup_seconds": round(ready - start, 1), "mpx_per_s": round(pixels / 1e6 / seconds, 2),
        "store_bytes": sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())}))


@main.command()
@click.argument("sizes", nargs=-1, type=int, required=True)
@click.option("--model", "-m", default="resnet18", show_default=True)
@click.option("--weights", "-w", default="random", show_default=True)
@click.option("--output-stride", "-s", type=int, default=32, show_default=True)
@click.option("--tile-cells", type=int, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/tmp/densify-slides"), show_default=True)
@click.option("--time-limit", type=float, default=None,
              help="Stop a scan after this many seconds and report its peak then (VmHWM, "
                   "sampled every second) and the tiles it finished.")
@click.option("--keep-slides/--remove-slides", default=True, show_default=True,
              help="Keep the generated slides in --workdir for reruns.")
def memory(sizes, model, weights, output_stride, tile_cells, threads, workdir, time_limit,
           keep_slides) -> None:
    """Peak RSS of scanning generated SIZES² px slides, one process each."""
    workdir.mkdir(parents=True, exist_ok=True)
    click.echo(f"{'slide':>13} {'Mpx':>7} {'tiles':>6} {'start-up peak':>14} {'scan peak':>10} "
               f"{'scan s':>7} {'Mpx/s':>6} {'store MB':>9}")
    for size in sizes:
        path = _slide(workdir, size)
        store = workdir / f"slide{size}_{model}.ome.zarr"
        shutil.rmtree(store, ignore_errors=True)
        cmd = [sys.executable, __file__, "child", str(path), str(store), "-m", model, "-w",
               weights, "-s", str(output_stride)]
        cmd += ["--tile-cells", str(tile_cells)] if tile_cells else []
        cmd += ["--threads", str(threads)] if threads else []
        r = _watch(cmd, store, time_limit)
        if "tiles" in r:
            click.echo(f"{size:>6}x{size:<6} {r['pixels'] / 1e6:7.0f} {r['tiles']:6d} "
                       f"{r['startup_peak'] / 2**20:11.0f} MiB {r['scan_peak'] / 2**20:6.0f} MiB "
                       f"{r['scan_seconds']:7.0f} {r['mpx_per_s']:6.2f} "
                       f"{r['store_bytes'] / 1e6:9.1f}")
        else:
            click.echo(f"{size:>6}x{size:<6} {size * size / 1e6:7.0f} {r['done']:>6} "
                       f"{'':>15} {r['peak'] / 2**20:6.0f} MiB  stopped at {time_limit:.0f} s "
                       f"after {r['done']} tiles")
        shutil.rmtree(store, ignore_errors=True)
        if not keep_slides:
            path.unlink()
            path.with_name(f"slide{size}.json").unlink(missing_ok=True)


def _watch(cmd: list[str], store: Path, time_limit: float | None) -> dict:
    """Run a ``child`` command; its JSON line, or, when stopped at ``time_limit`` seconds,
    ``{"peak": VmHWM then, "done": tiles finished}``."""
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    start, peak = time.perf_counter(), 0
    while child.poll() is None:
        peak = max(peak, _hwm(child.pid))
        if time_limit is not None and time.perf_counter() - start > time_limit:
            progress = store / "densify_progress.jsonl"
            done = max(0, len(progress.read_text().splitlines()) - 1) if progress.is_file() else 0
            child.kill()
            child.wait()
            return {"peak": peak, "done": done}
        time.sleep(1)
    out = child.stdout.read()
    if child.returncode:
        raise SystemExit(f"child failed ({child.returncode}): {' '.join(cmd)}")
    return json.loads(out.strip().splitlines()[-1])


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _match(truth: np.ndarray, labels_t: list[str], boxes: np.ndarray, scores: np.ndarray,
           labels: list[str], iou: float = 0.5) -> int:
    """Ground-truth boxes matched one to one (best score first) at ``iou`` and the same label."""
    import torch
    from torchvision.ops import box_iou

    if not len(boxes) or not len(truth):
        return 0
    overlap = box_iou(torch.as_tensor(boxes), torch.as_tensor(truth)).numpy()
    taken = np.zeros(len(truth), bool)
    for i in np.argsort(-scores):
        ok = (overlap[i] >= iou) & ~taken & (np.array(labels_t) == labels[i])
        if ok.any():
            taken[np.flatnonzero(ok)[np.argmax(overlap[i][ok])]] = True
    return int(taken.sum())


@main.command()
@click.argument("size", type=int)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/tmp/densify-slides"), show_default=True)
@click.option("--seed", default=0, show_default=True)
def recall(size, workdir, seed) -> None:
    """The shipped digit spotter on a generated SIZE² slide: digits found at IoU >= 0.5."""
    from densify.io.geojson import read_boxes

    workdir.mkdir(parents=True, exist_ok=True)
    path = _slide(workdir, size, seed)
    out = workdir / f"recall{size}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "densify", "slide", str(path), "-o", str(out),
                          "-q", "--json"], check=True, capture_output=True, text=True)
    record = json.loads(run.stdout)
    stem = path.name.removesuffix(".ome.tif")
    boxes, scores, labels = read_boxes(json.loads((out / f"{stem}_detections.geojson").read_text()))
    gt = json.loads(path.with_name(f"{stem}.json").read_text())["annotations"]
    truth = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                       a["bbox"][1] + a["bbox"][3]] for a in gt], np.float64).reshape(-1, 4)
    found = _match(truth, [str(a["category_id"]) for a in gt], boxes, scores, labels)
    click.echo(f"{path.name}: {len(gt)} digits, {len(boxes)} detections, {found} found at "
               f"IoU >= 0.5 with the right digit: recall {found / max(1, len(gt)):.3f}, "
               f"precision {found / max(1, len(boxes)):.3f} ({record['tiles']} tiles, "
               f"{time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
