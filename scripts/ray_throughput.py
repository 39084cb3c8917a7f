"""Images per second: the single-process loop against Ray Data with 1 and 2 workers.

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/ray_throughput.py --images 64 --size 600x800

Writes ``--images`` copies of 8 generated digit scenes (``densify.digits.synth.make_scene``) to a
temporary directory, then times the same work three ways, reading each file with densify's reader
and scanning it with the shipped ``lenet5-digits`` model (6 scales, top-5 classes, detections):

- ``single``: one process, one ``Scanner``, a Python loop (torch threads: ``--threads``);
- ``ray N``: :func:`densify.distributed.scan_dataset` with ``workers=N`` on a local Ray instance
  (one CPU and one torch thread per actor), written to Parquet. The time runs from the call to
  the last row written: it includes starting the actors and converting the model in each.

Also prints the mean scan time per image inside the actors (the rows' ``seconds``), which
separates the per-image cost from Ray's fixed costs.

With ``--cli ARGS`` it times the command line instead, each run a fresh process, end to end
(start-up, model conversion, every output file, summary, report):
``python -m densify ARGS DIR -o OUT --threads 1`` without and with ``--ray --workers N`` (a
local Ray started by the command), and checks that both runs wrote the same file names::

    PYTHONPATH=. python scripts/ray_throughput.py --images 20 --workers 1,2 \
        --cli "heatmap -m lenet5-digits --scales 6 -q --sheet --report"
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from densify._parse import parse_hw
from densify.digits.synth import make_scene
from densify.distributed import require_ray, scan_dataset
from densify.io.image import read_image
from densify.scan.scanner import Scanner

MODEL, SCALES = "lenet5-digits", 6


def make_images(root: Path, count: int, size: tuple[int, int]) -> list[Path]:
    scenes = []
    for seed in range(8):
        scenes.append(root / f"scene{seed}.png")
        cv2.imwrite(str(scenes[-1]), make_scene(seed, size).image[..., ::-1])
    paths = [root / f"image{i:05d}.png" for i in range(count)]
    for i, path in enumerate(paths):
        shutil.copy(scenes[i % len(scenes)], path)
    for scene in scenes:
        scene.unlink()
    return paths


def single_process(paths: list[Path], threads: int) -> float:
    torch.set_num_threads(threads)
    scanner = Scanner(MODEL, scales=SCALES, output_stride=16, device="cpu")
    scanner(read_image(paths[0]))  # warm-up, as the actors' first image is not timed apart
    start = time.perf_counter()
    for path in paths:
        result = scanner(read_image(path))
        result.top_classes(5)
        result.detections(0.9, 0.3)
    return len(paths) / (time.perf_counter() - start)


def on_ray(root: Path, out: Path, workers: int, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    rows = scan_dataset(str(root), MODEL, scales=SCALES, workers=workers, output_dir=out)
    rate = count / (time.perf_counter() - start)
    seconds = rows.select_columns(["seconds"]).to_pandas()["seconds"]
    assert len(seconds) == count
    return rate, float(seconds.mean())


def on_cli(root: Path, out: Path, args: str, extra: list[str]) -> float:
    """Seconds of one ``python -m densify`` run, end to end."""
    command = [sys.executable, "-m", "densify", *shlex.split(args), str(root), "-o", str(out),
               "--threads", "1", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare_cli(root: Path, tmp: Path, count: int, args: str, workers: list[int]) -> None:
    seconds = on_cli(root, tmp / "one", args, [])
    print(f"densify {args} (single process, 1 thread): {seconds:.1f} s, "
          f"{count / seconds:.2f} images/s end to end")
    names = sorted(p.name for p in (tmp / "one").iterdir())
    for n in workers:
        seconds = on_cli(root, tmp / f"ray{n}", args, ["--ray", "--workers", str(n)])
        same = names == sorted(p.name for p in (tmp / f"ray{n}").iterdir())
        print(f"densify {args} --ray --workers {n}: {seconds:.1f} s, {count / seconds:.2f} "
              f"images/s end to end (Ray start-up included); same files: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", default="600x800", help="HxW of the generated images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loop")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to time")
    parser.add_argument("--cli", default=None, metavar="ARGS",
                        help="time 'python -m densify ARGS DIR' without and with --ray instead")
    args = parser.parse_args()
    ray = require_ray()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        paths = make_images(root, args.images, parse_hw(args.size, "size"))
        print(f"{args.images} images {args.size}, "
              f"{args.cli or f'{MODEL}, {SCALES} scales'}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        if args.cli is not None:
            compare_cli(root, Path(tmp), args.images, args.cli,
                        [int(w) for w in args.workers.split(",")])
            print(f"load average at the end {os.getloadavg()[0]:.1f} (1 min)")
            return
        print(f"single process ({args.threads} thread(s)): "
              f"{single_process(paths, args.threads):.2f} images/s")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        for workers in (int(w) for w in args.workers.split(",")):
            rate, mean = on_ray(root, Path(tmp) / f"rows{workers}", workers, args.images)
            print(f"ray, {workers} worker(s): {rate:.2f} images/s end to end "
                  f"(scan inside the actors: {mean * 1000:.0f} ms/image)")
        ray.shutdown()
    print(f"load average at the end {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
