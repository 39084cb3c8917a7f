"""Where one dense pass's wall time goes: CPU user vs kernel time, page faults, torch.profiler.

    python scripts/profile_dense.py --model vgg19 --size 960x1280 --output-stride 32 --threads 1
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python scripts/profile_dense.py ...

Random weights, random image; one warm-up pass, then ``--repeat`` timed passes, each reported
with its wall time, the process's user and system CPU seconds and minor page faults over the pass
(``getrusage``) and a checksum of the output (seeded weights and image: equal checksums across
allocators or settings mean identical results), then (``--profile``) one pass under
``torch.profiler`` with its top operators by self CPU time and the sum of all operators' self
time against the pass's wall time.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import torch

from densify.convert.dense import convolutionize
from densify.convert.fold import fold_batchnorm
from densify.models.weights import load_classifier
from densify.runtime import allocator, retain_freed_memory


def usage() -> tuple[float, float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt


def timed_pass(dense, x) -> str:
    start = usage()
    out = dense(x)
    end = usage()
    wall, user, system, faults = (b - a for a, b in zip(start, end, strict=True))
    return (f"wall {wall:.2f} s  user {user:.2f} s  sys {system:.2f} s  "
            f"minor faults {faults} ({faults * 4096 / 2**30:.1f} GiB of 4 KiB pages)  "
            f"output checksum {out.double().sum().item():.12e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--size", default="960x1280", help="HxW")
    parser.add_argument("--output-stride", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep-memory", action="store_true",
                        help="densify.runtime.retain_freed_memory() first, as the CLI does")
    args = parser.parse_args()
    if args.keep_memory:
        retain_freed_memory()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same random weights in every run: checksums comparable
    h, w = (int(v) for v in args.size.split("x"))
    clf = load_classifier(args.model, "random")
    dense = fold_batchnorm(convolutionize(clf.model, clf.spec.input_size, args.output_stride))
    dense = dense.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    print(f"{args.model} {h}x{w} stride {dense.output_stride}, {args.threads} thread(s), "
          f"malloc {allocator()}, load {os.getloadavg()[0]:.1f}")
    with torch.inference_mode():
        dense(x)  # warm-up
        for k in range(args.repeat):
            print(f"pass {k + 1}: {timed_pass(dense, x)}", flush=True)
        if args.profile:
            profile(dense, x)


def profile(dense, x) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        dense(x)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"profiled pass: wall {wall:.2f} s, operators' self time {total:.2f} s "
          f"({total / wall:.0%} of wall)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
