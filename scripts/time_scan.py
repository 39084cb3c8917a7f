"""Time one image through the scanner: ``densify heatmap``'s work without the file output.

    python scripts/time_scan.py --model vgg19 --size 768x1024 --scales 6 --precision fp32 bf16
    python scripts/time_scan.py --model resnet18 --precision fp32 --threads 1 2 auto --busy 1
    python scripts/time_scan.py --model resnet50 --precision fp32 --fold-bn on off

Random weights (timing does not depend on them), skimage's ``chelsea`` photo resized to
``--size``; prints the median of ``--repeat`` runs after one warm-up, per combination of
precision, ``--threads`` (``auto``: the command line's rule, :func:`densify.runtime.tuned`) and
``--fold-bn``. ``--busy N`` starts N busy-loop processes for the duration (another user holding
N cores) and stops them at the end.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import subprocess
import sys
import time

import torch

from densify.io.image import resize, sample_image
from densify.runtime import tuned
from densify.scan.scanner import Scanner


def time_one(args, image, precision: str, threads: str, fold_bn: str) -> str:
    # the CLI's rule (or the count), set for this run and restored after it
    with tuned(None if threads == "auto" else int(threads)) as count:
        return _timed(args, image, precision, threads, count, fold_bn)


def _timed(args, image, precision: str, threads: str, count: int, fold_bn: str) -> str:
    scanner = Scanner(args.model, scales=args.scales, output_stride=args.output_stride,
                      device=args.device, precision=precision, threads=count,
                      fold_bn=fold_bn == "on")
    used = []
    scanner.dense.register_forward_pre_hook(lambda *_: used.append(torch.get_num_threads()))
    scanner(image)  # warm-up (and oneDNN kernel selection)
    times = []
    for _ in range(args.repeat):
        if scanner.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = scanner(image)
        if scanner.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    sizes = ", ".join(f"{m.size[0]}x{m.size[1]}" for m in result.maps)
    return (f"{args.model} {image.shape[0]}x{image.shape[1]} scales [{sizes}] stride "
            f"{scanner.output_stride} {precision} on {scanner.device}, threads {threads} "
            f"(used {sorted(set(used))}), fold_bn {fold_bn}: {statistics.median(times):.3f} "
            f"s/image (median of {args.repeat}: {', '.join(f'{t:.3f}' for t in times)}; "
            f"load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--size", default="768x1024", help="HxW")
    parser.add_argument("--scales", default="6")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--threads", nargs="+", default=["auto"], help="counts or auto")
    parser.add_argument("--fold-bn", nargs="+", default=["on"], choices=["on", "off"])
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes to start")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    h, w = (int(v) for v in args.size.split("x"))
    image = resize(sample_image("chelsea"), (h, w))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for combo in itertools.product(args.precision, args.threads, args.fold_bn):
            print(time_one(args, image, *combo), flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
