"""Time one image through the scanner: ``densify heatmap``'s work without the file output.

    python scripts/time_scan.py --model vgg19 --size 768x1024 --scales 6 --precision fp32 bf16

Random weights (timing does not depend on them), skimage's ``chelsea`` photo resized to
``--size``; prints the median of ``--repeat`` runs after one warm-up, per precision.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch

from densify.io.image import resize, sample_image
from densify.scan.scanner import Scanner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--size", default="768x1024", help="HxW")
    parser.add_argument("--scales", default="6")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    h, w = (int(v) for v in args.size.split("x"))
    image = resize(sample_image("chelsea"), (h, w))
    for precision in args.precision:
        scanner = Scanner(args.model, args.scales, args.output_stride, args.device, precision)
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
        print(f"{args.model} {h}x{w} scales [{sizes}] stride {scanner.output_stride} "
              f"{precision} on {scanner.device}: {statistics.median(times):.2f} s/image "
              f"(median of {args.repeat}; threads {torch.get_num_threads()})", flush=True)


if __name__ == "__main__":
    main()
