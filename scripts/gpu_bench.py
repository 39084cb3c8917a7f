"""Whole-scan figures on a GPU: dense pass vs crops, Scanner images/s (one at a time and batched),
and the CLI on a folder of JPEGs. Sized to run in under 5 minutes on one H100/H200-class GPU.

    PYTHONPATH=. python3 scripts/gpu_bench.py --out bench.json            # everything
    PYTHONPATH=. python3 scripts/gpu_bench.py --models resnet50 --parts scanner
    PYTHONPATH=. python3 scripts/gpu_bench.py --models resnet50,vgg19 --parts fuse    # conv+ReLU fusion
    PYTHONPATH=. python3 scripts/gpu_bench.py --models resnet50 --parts syncs   # host waits at launch
    PYTHONPATH=. python3 scripts/gpu_bench.py --models resnet50 --parts mixed   # two orientations

Images: skimage's ``chelsea`` (and friends) resized to 1080 x 1920; random weights (speed does
not depend on them); bf16 autocast; warm figures (the first calls, which autotune cuDNN, are not
timed). Each section prints one line per figure and the whole record goes to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

import densify
from densify.bench import count_flops
from densify.convert.fold import fold_batchnorm
from densify.convert.fuse import fuse_conv_relu

SIZE = (1080, 1920)
FUSE_SIZE = (1088, 1920)  # the largest pyramid level of a 1080p image at stride 32


def photos(n: int) -> list[np.ndarray]:
    """``n`` RGB 1080p photos: skimage's samples resized, cycled."""
    names = ["chelsea", "astronaut", "coffee", "rocket", "coins"]
    base = []
    for name in names:
        img = getattr(data, name)()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        base.append(cv2.resize(img, SIZE[::-1], interpolation=cv2.INTER_LINEAR))
    return [base[i % len(base)] for i in range(n)]


def bench_scanner(name: str, stride: int, **settings) -> densify.Scanner:
    """The scanner every whole-scan figure uses: 6 scales, bf16 on CUDA, random weights."""
    return densify.Scanner(name, scales=6, output_stride=stride, device="cuda", precision="bf16",
                           weights="random", **settings)


def cuda_time(fn, repeat: int, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def wall_time(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def conv_peak() -> float:
    """TFLOP/s of a 3x3 256->256 convolution, bf16, channels_last, batch 32 at 56x56."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(32, 256, 56, 56, device="cuda").contiguous(memory_format=torch.channels_last)
    flops = 2 * x.numel() * 256 * 9
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16), \
            torch.backends.cudnn.flags(enabled=True, benchmark=True):
        seconds = cuda_time(lambda: conv(x), 20)
    return flops / seconds / 1e12


def dense_vs_crops(name: str, stride: int, peak: float, record: dict) -> None:
    clf = densify.load_classifier(name, "random")
    dense = densify.convolutionize(clf.model, clf.spec.input_size, stride)
    dense, original = fold_batchnorm(dense), fold_batchnorm(clf.model.eval())
    fmt = torch.channels_last
    dense = dense.cuda().eval().to(memory_format=fmt)
    original = original.cuda().eval().to(memory_format=fmt)
    x = torch.randn(1, 3, *SIZE, device="cuda").contiguous(memory_format=fmt)
    g = dense.geometry
    h, w = g.output_size(*SIZE)
    flops = count_flops(dense.cpu(), (1, 3, *SIZE))
    dense.cuda()
    window_flops = count_flops(original.cpu(), (1, *clf.spec.input_size))
    original.cuda()
    (wy, wx), (sy, sx), (oy, ox) = g.window, g.stride, g.offset
    cells = [(i, j) for i in range(h) for j in range(w)]

    def crops():
        for k in range(0, len(cells), 256):
            batch = torch.stack([x[0, :, oy + i * sy:oy + i * sy + wy, ox + j * sx:ox + j * sx + wx]
                                 for i, j in cells[k:k + 256]]).contiguous(memory_format=fmt)
            original(batch)

    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16), \
            torch.backends.cudnn.flags(enabled=True, benchmark=True):
        t_dense = cuda_time(lambda: dense(x), 20)
        t_crops = cuda_time(crops, 3, warmup=1)
    row = {"model": name, "stride": stride, "cells": h * w, "dense_ms": t_dense * 1e3,
           "dense_tflops": flops / t_dense / 1e12, "dense_peak_fraction": flops / t_dense / 1e12 / peak,
           "crops_ms": t_crops * 1e3, "crops_tflops": window_flops * h * w / t_crops / 1e12,
           "speedup": t_crops / t_dense, "flop_ratio": window_flops * h * w / flops}
    record.setdefault("dense_vs_crops", []).append(row)
    print(f"  {name} s{stride}: dense {row['dense_ms']:.2f} ms ({row['dense_tflops']:.0f} TFLOP/s, "
          f"{100 * row['dense_peak_fraction']:.0f}% of peak), crops {row['crops_ms']:.1f} ms "
          f"({row['crops_tflops']:.0f} TFLOP/s): speed-up {row['speedup']:.1f}x for a FLOP ratio "
          f"of {row['flop_ratio']:.1f}x", flush=True)


def profile_dense(name: str, stride: int, record: dict) -> None:
    clf = densify.load_classifier(name, "random")
    dense = fold_batchnorm(densify.convolutionize(clf.model, clf.spec.input_size, stride))
    dense = dense.cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, *SIZE, device="cuda").contiguous(memory_format=torch.channels_last)
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16), \
            torch.backends.cudnn.flags(enabled=True, benchmark=True):
        for _ in range(3):
            dense(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                dense(x)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70)
    record.setdefault("profile", {})[f"{name}_s{stride}"] = table
    print(table, flush=True)


def scanner_rates(name: str, stride: int, images: list[np.ndarray], record: dict,
                  preprocess: str = "auto", batch: int = 8) -> None:
    scanner = bench_scanner(name, stride, preprocess=preprocess)
    one = wall_time(lambda: [scanner(im) for im in images[:10]], 2, warmup=1) / 10
    row = {"model": name, "stride": stride, "preprocess": preprocess,
           "one_at_a_time_images_per_s": 1 / one}
    if batch:
        many = images[:4 * batch]
        t = wall_time(lambda: scanner.scan_batch(many, batch_size=batch), 2, warmup=1) / len(many)
        row.update(batch=batch, batched_images_per_s=1 / t)
    record.setdefault("scanner", []).append(row)
    print(f"  Scanner {name} s{stride} ({preprocess}): {row['one_at_a_time_images_per_s']:.1f} "
          f"img/s one at a time" + (f", {row['batched_images_per_s']:.1f} img/s batched ({batch})"
                                    if batch else ""), flush=True)


def mixed_rates(name: str, stride: int, images: list[np.ndarray], record: dict,
                batch: int = 8) -> None:
    """``scan_batch`` images/s on a folder of two orientations (landscape and portrait 1080p,
    shuffled), against the same number of landscape images: groups of varying size are new
    shapes for cuDNN's autotuning and the CUDA graphs (docs/gpu.md, "Not done")."""
    rng = np.random.default_rng(0)
    mixed = [np.ascontiguousarray(im.transpose(1, 0, 2)) if rng.random() < 0.5 else im
             for im in images[:4 * batch]]
    scanner = bench_scanner(name, stride)
    row = {"model": name, "stride": stride, "batch": batch}
    for label, folder in (("one_size", images[:4 * batch]), ("mixed", mixed)):
        t = wall_time(lambda f=folder: scanner.scan_batch(f, batch_size=batch), 2, warmup=1)
        row[f"{label}_images_per_s"] = len(folder) / t
    record.setdefault("mixed", []).append(row)
    print(f"  Scanner {name} s{stride} batched ({batch}): one size {row['one_size_images_per_s']:.1f}"
          f" img/s, two orientations {row['mixed_images_per_s']:.1f} img/s", flush=True)


def launch_syncs(name: str, stride: int, images: list[np.ndarray], record: dict,
                 batch: int = 8) -> None:
    """Host synchronisations while a warm batch is launched (torch's sync debug mode): the
    device path should queue every level of every image, and the copy of the maps, without one;
    the only wait is in ``results()``."""
    import warnings

    scanner = bench_scanner(name, stride)
    for _ in range(3):  # warm: cuDNN autotuned, graphs captured, constants on the device
        scanner.scan_batch(images[:batch], batch_size=batch)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pending = scanner.launch_batch(images[:batch], batch_size=batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    pending.results()
    found = sorted({str(w.message).splitlines()[0] for w in caught})
    record.setdefault("launch_syncs", []).append(
        {"model": name, "stride": stride, "batch": batch, "count": len(caught), "kinds": found})
    print(f"  host syncs while launching {batch} images ({name} s{stride}): {len(caught)}"
          + "".join(f"\n    {kind}" for kind in found), flush=True)


def host_profile(name: str, stride: int, images: list[np.ndarray], record: dict) -> None:
    """Where one-at-a-time Scanner calls spend host time (cProfile, top functions)."""
    import cProfile
    import io
    import pstats

    scanner = bench_scanner(name, stride)
    for im in images[:3]:
        scanner(im)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for im in images[:10]:
        scanner(im)
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
    record.setdefault("host_profile", {})[f"{name}_s{stride}"] = text.getvalue()
    print(text.getvalue()[-4500:], flush=True)


def graphs_and_compile(name: str, stride: int, record: dict, compile_too: bool) -> None:
    """Per pyramid level of a 1080p image: eager wall time of the dense pass vs a CUDA graph
    replay (and, with ``compile_too``, torch.compile on the largest level)."""
    scanner = bench_scanner(name, stride)
    net = scanner.scan_net
    rows = []
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16), \
            torch.backends.cudnn.flags(enabled=True, benchmark=True):
        for level in scanner.levels(SIZE):
            x = torch.randn(1, 3, *level.input_size, device="cuda").contiguous(
                memory_format=torch.channels_last)
            row, _ = pass_ms(net, x, 20)
            eager = row["eager_ms"] / 1e3
            rows.append({"input": level.input_size, **row})
            print(f"  {name} s{stride} level {level.input_size}: eager {row['eager_ms']:.2f} ms, "
                  f"CUDA graph {row['graph_ms']:.2f} ms", flush=True)
        if compile_too:
            start = time.perf_counter()
            compiled = torch.compile(net, dynamic=False)
            compiled(x)
            torch.cuda.synchronize()
            took = time.perf_counter() - start
            t = wall_time(lambda: compiled(x), 20, warmup=2)
            diff = float((compiled(x).float() - net(x).float()).abs().max())
            rows.append({"compile_s": took, "compiled_ms": t * 1e3, "max_diff": diff})
            print(f"  torch.compile on {tuple(x.shape)}: {took:.0f} s to compile, "
                  f"{t * 1e3:.2f} ms per pass (eager {eager * 1e3:.2f}), max diff {diff:.2e}",
                  flush=True)
    record.setdefault("graphs", {})[f"{name}_s{stride}"] = rows


def pass_ms(net, x: torch.Tensor, repeat: int) -> tuple[dict, torch.Tensor]:
    """Milliseconds per ``net(x)``, eager and (on CUDA) as a CUDA graph replay, and the output.
    Runs on any device (the CPU for a smoke test); call it inside the precision's context."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def ms(fn) -> float:
        for _ in range(min(3, repeat)):
            fn()
        sync()
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync()
        return (time.perf_counter() - start) / repeat * 1e3

    out = net(x)
    row = {"eager_ms": ms(lambda: net(x))}
    if x.is_cuda:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                net(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(x)
        row["graph_ms"] = ms(graph.replay)
        del graph
    return row, out


def fused_vs_plain(name: str, stride: int, record: dict, device: str = "cuda",
                   size: tuple[int, int] = FUSE_SIZE, repeat: int = 20) -> dict:
    """The scanner's dense net on one ``size`` input, as it is and with its convolutions and
    ReLUs (and residual additions) fused (:func:`densify.convert.fuse.fuse_conv_relu`): ms eager
    and as a CUDA graph replay, and the max |difference| of the outputs (float). On CUDA: bf16
    autocast, channels_last, cuDNN benchmark, plus the fused net with bf16 weights (no per-call
    weight casts); elsewhere float32, for a smoke test."""
    cuda = device == "cuda"
    scanner = densify.Scanner(name, scales=1, output_stride=stride, device=device,
                              precision="bf16" if cuda else "fp32", weights="random")
    plain = scanner.scan_net
    fused = copy.deepcopy(plain)
    variants = {"plain": plain, "fused": fused}
    row = {"model": name, "stride": stride, "input": size, "sites": fuse_conv_relu(fused)}
    if cuda:
        variants["fused_bf16_weights"] = copy.deepcopy(fused).to(torch.bfloat16)
    x = torch.randn(1, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    precision = torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext()
    outs = {}
    with torch.inference_mode(), precision, torch.backends.cudnn.flags(enabled=True, benchmark=True):
        for label, net in variants.items():
            try:
                times, outs[label] = pass_ms(net, x, repeat)
            except Exception as exc:  # a fused op that fails is one line, not the end of the bench
                row[label] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  fuse {name} s{stride} {label} failed: {row[label]['error']}", flush=True)
                continue
            if label != "plain" and "plain" in outs:
                times["max_abs_diff"] = float((outs[label].float() - outs["plain"].float()).abs().max())
            row[label] = times
    if "plain" in outs:
        row["max_abs_output"] = float(outs["plain"].float().abs().max())
    record.setdefault("fuse", []).append(row)
    print(f"  fuse {name} s{stride} {size[0]}x{size[1]} ({row['sites']} sites): " + "; ".join(
        f"{label} " + ", ".join(f"{k.removesuffix('_ms')} {v:.3g}{' ms' * k.endswith('_ms')}"
                                for k, v in row[label].items() if k != "error")
        for label in variants if "error" not in row[label]), flush=True)
    return row


def agreement(name: str, images: list[np.ndarray], record: dict) -> None:
    """Max |difference| of the maps: CUDA graphs vs eager, batched vs one at a time, device vs
    host pyramid (fp32, stride 32, so that only the path differs)."""
    def maps(scanner, batch=False):
        results = scanner.scan_batch(images[:4], batch_size=4) if batch else [
            scanner(im) for im in images[:4]]
        return [m.probs for r in results for m in r.maps]

    def worst(a, b):
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    torch.manual_seed(0)
    base = densify.Scanner(name, scales=6, output_stride=32, device="cuda", weights="random",
                           cuda_graphs=False)
    dense = base.dense
    variants = {"graphs": dict(), "host": dict(preprocess="host", cuda_graphs=False)}
    eager = maps(base)
    maps(base)
    row = {"model": name, "batched_vs_one": worst(maps(base, batch=True), eager)}
    for label, kwargs in variants.items():
        other = densify.Scanner(dense, scales=6, device="cuda", categories=base.categories,
                                **kwargs)
        for _ in range(2):
            got = maps(other)
        row[f"{label}_vs_eager_device"] = worst(got, eager)
    record.setdefault("agreement", []).append(row)
    print(f"  agreement {name} (fp32, max |dprob|): " + ", ".join(
        f"{k} {v:.2e}" for k, v in row.items() if k != "model"), flush=True)


def cli_folder(name: str, n: int, record: dict, extra: list[str]) -> None:
    folder = Path(tempfile.mkdtemp())
    for i, im in enumerate(photos(n)):
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    out = Path(tempfile.mkdtemp())
    cmd = [sys.executable, "-m", "densify", "heatmap", str(folder), "--model", name, "-w", "random",
           "--device", "cuda", "--precision", "bf16", "-o", str(out), "-q", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()] \
        if (out / "summary.jsonl").exists() else []
    scan_s = sum(r.get("seconds", 0) for r in records)
    row = {"model": name, "images": n, "extra": extra, "rc": proc.returncode, "wall_s": seconds,
           "sum_of_per_image_s": scan_s, "stderr_tail": proc.stderr[-400:]}
    record.setdefault("cli", []).append(row)
    print(f"  CLI heatmap {name} {n} JPEGs {' '.join(extra)}: rc {proc.returncode}, {seconds:.1f} s "
          f"wall ({n / seconds:.1f} img/s with start-up), per-image records sum {scan_s:.1f} s",
          flush=True)
    if proc.returncode:
        print(proc.stderr[-2000:])
    shutil.rmtree(folder)
    shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,vgg19")
    parser.add_argument("--parts", default="dense,profile,scanner,syncs,cli")
    parser.add_argument("--cli-images", type=int, default=200)
    parser.add_argument("--cli-args", default="", help="extra arguments for the CLI run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    record = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "size": SIZE}
    print(f"{record['gpu']}, torch {torch.__version__}", flush=True)
    record["conv_peak_tflops"] = peak = conv_peak()
    print(f"  conv peak (3x3, 256->256, bf16): {peak:.0f} TFLOP/s", flush=True)
    images = photos(32)
    for name in args.models.split(","):
        for stride in (32, 16):
            sections = (("dense", dense_vs_crops, (name, stride, peak, record)),
                        ("scanner", scanner_rates, (name, stride, images, record)),
                        ("syncs", launch_syncs, (name, stride, images, record)),
                        ("mixed", mixed_rates, (name, stride, images, record)),
                        ("profile", profile_dense, (name, stride, record)),
                        ("hostprofile", host_profile, (name, stride, images, record)),
                        ("graphs", graphs_and_compile, (name, stride, record, "compile" in parts)),
                        ("fuse", fused_vs_plain, (name, stride, record)))
            for part, fn, fn_args in sections:
                if part not in parts or (part in ("profile", "hostprofile", "graphs") and stride != 32):
                    continue
                try:
                    fn(*fn_args)
                except Exception as exc:  # a benchmark reports and goes on
                    print(f"  {part} {name} s{stride} failed: {type(exc).__name__}: {exc}")
        if "host" in parts:
            scanner_rates(name, 32, images, record, preprocess="host", batch=0)
        if "check" in parts:
            agreement(name, images, record)
        if "cli" in parts and name == "resnet50":
            cli_folder(name, 8, record, args.cli_args.split())
            cli_folder(name, args.cli_images, record, args.cli_args.split())
            small, big = record["cli"][-2:]
            rate = (big["images"] - small["images"]) / (big["wall_s"] - small["wall_s"])
            record["cli_images_per_s_after_startup"] = rate
            print(f"  CLI after start-up: {rate:.1f} img/s", flush=True)
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
