"""Host time per image outside the dense net: what the command line spends around the net.

    PYTHONPATH=scripts python scripts/host_time.py /tmp/jpg8 --make 8 --model host_time:free_net \
        -- --input-size 224x224 --scales 6 --output-stride 32
    python scripts/host_time.py /tmp/jpg8 --model resnet18 --profile -- --scales 6 --output-stride 32

``--make N`` first writes N 1080x1920 JPEGs made from skimage's sample photos into the folder.
Runs ``densify heatmap DIR -w random -q -o TMP EXTRA...`` in this process on DIR and on its first
image alone (after one warm-up run) and takes the difference per image, so start-up (the model's
conversion and self-check) is left out; every call of the outermost ``nn.Module`` (the dense
net) is timed with global forward hooks. Prints, per image: wall time, time inside the dense net,
the rest (the host's share: decoding, on the CPU the pyramid, softmax, maps, heat map, overlay,
PNG and result-file encoding, records) and the process's CPU time (all threads; steadier than
wall time on a busy machine). ``--profile`` adds the densify and OpenCV functions that take the
most of it; ``--results`` adds what a scan's result costs on the host once its maps are there
(its image scores, one heat map at image size, detections), timed on the first image's result.

On a GPU the host's work is what bounds a folder scan's images/s once the net is fast
(docs/gpu.md): about cores / CPU time per image. ``free_net`` (``-m host_time:free_net`` with
``scripts`` on ``PYTHONPATH``) has ResNet-50's geometry at stride 32 (224-px window, 1000
classes) and costs next to nothing, so the figures are the host's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from densify import cli


def free_net() -> nn.Module:
    """A classifier with ResNet-50's geometry at stride 32 (224-px window, 1000 classes) that
    costs next to nothing: ``-m host_time:free_net`` (with ``scripts`` on ``PYTHONPATH``) makes
    a folder scan's images/s the host's own ceiling."""
    return nn.Sequential(nn.AvgPool2d(32), nn.Conv2d(3, 1000, 7), nn.Flatten()).eval()


def make_photos(folder: Path, n: int) -> None:
    """``n`` 1080x1920 JPEGs (quality 90) of skimage's colour sample photos in ``folder``."""
    import cv2
    import skimage.data

    names = ["astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry",
             "hubble_deep_field", "retina"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = getattr(skimage.data, names[i % len(names)])()[..., :3]
        bgr = cv2.resize(rgb[..., ::-1], (1920, 1080), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"{i:03d}_{names[i % len(names)]}.jpg"), bgr,
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


class NetTimer:
    """Wall time spent inside outermost ``nn.Module`` calls (hooks on every module, counted
    only at depth 0)."""

    def __init__(self):
        self.depth, self.start, self.total = 0, 0.0, 0.0

    def pre(self, module, args):
        if self.depth == 0:
            self.start = time.perf_counter()
        self.depth += 1

    def post(self, module, args, output):
        self.depth -= 1
        if self.depth == 0:
            self.total += time.perf_counter() - self.start


def run(folder: Path, model: str, extra: list[str], timer: NetTimer
        ) -> tuple[float, float, float]:
    """(wall seconds, seconds in the net, CPU seconds of all threads) of one ``densify heatmap``
    run over ``folder``."""
    with tempfile.TemporaryDirectory() as out:
        timer.total = 0.0
        start, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["heatmap", str(folder), "-m", model, "-w", "random", "-q", "-o", out, *extra],
                     standalone_mode=False)
        return time.perf_counter() - start, timer.total, time.process_time() - cpu


def result_costs(image: Path, model: str, extra: list[str], repeat: int = 5) -> dict[str, float]:
    """Milliseconds the host spends on a scan result of ``image`` once its maps are there:
    ``top_classes(5)``, the top class's heat map at image size, ``detections()``; and the
    maps' size in MB (float32)."""
    import densify

    with tempfile.TemporaryDirectory() as out:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["heatmap", str(image), "-m", model, "-w", "random", "-q", "-o", out,
                      *extra], standalone_mode=False)
        result = densify.load_result(next(Path(out).glob("*.npz")))
    top = result.top_classes(1)[0].name
    costs = {"maps (MB, float32)": sum(4 * m.probs.numel() for m in result.maps) / 1e6}
    for name, work in [("top_classes(5)", lambda: result.top_classes(5)),
                       (f"heatmap({top!r})", lambda: result.heatmap(top)),
                       ("detections()", result.detections)]:
        work()
        start = time.perf_counter()
        for _ in range(repeat):
            work()
        costs[name + " ms"] = 1e3 * (time.perf_counter() - start) / repeat
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--results", action="store_true",
                        help="also time a result's scores, heat map and detections on the host")
    parser.add_argument("--make", type=int, default=0, metavar="N",
                        help="first write N 1080x1920 JPEGs of skimage's photos into FOLDER")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]  # options for densify heatmap
    if args.make:
        make_photos(args.folder, args.make)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder; give one of images, or --make N to fill one")
    images = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if len(images) < 2:
        parser.error(f"{args.folder} needs at least 2 .jpg/.png images (or --make N)")
    timer = NetTimer()
    hooks = [nn.modules.module.register_module_forward_pre_hook(timer.pre),
             nn.modules.module.register_module_forward_hook(timer.post)]
    profiler = cProfile.Profile() if args.profile else None
    rows = []
    with tempfile.TemporaryDirectory() as one:
        (Path(one) / images[0].name).symlink_to(images[0].resolve())
        run(Path(one), args.model, args.extra, timer)  # warm-up: imports, first calls
        for _ in range(args.repeat):
            base = run(Path(one), args.model, args.extra, timer)
            if profiler:
                profiler.enable()
            full = run(args.folder, args.model, args.extra, timer)
            if profiler:
                profiler.disable()
            rows.append(tuple(f - b for f, b in zip(full, base, strict=True)))
    for h in hooks:
        h.remove()
    n = len(images)
    wall, net, cpu = (statistics.median(r[k] for r in rows) / (n - 1) for k in range(3))
    print(f"densify heatmap {args.folder} -m {args.model} {' '.join(args.extra)}: {n} images, "
          f"threads {torch.get_num_threads()}, median of {args.repeat} runs")
    print(f"  per image: {1e3 * wall:.0f} ms wall, {1e3 * net:.0f} ms in the dense net, "
          f"{1e3 * (wall - net):.0f} ms outside it (host); {1e3 * cpu:.0f} ms of CPU time "
          "(all threads)")
    if args.results:
        costs = result_costs(images[0], args.model, args.extra)
        print(f"  a result of {images[0].name} on the host: " + ", ".join(
            f"{name} {value:.1f}" for name, value in costs.items()))
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime")
        print(f"  where the host's time goes (tottime per image over {args.repeat} runs, "
              "start-up included, torch's own ops left out):")
        keep = [(key, value) for key, value in stats.stats.items()
                if "densify" in key[0] or (key[0] == "~" and "torch" not in key[2])]
        keep.sort(key=lambda kv: -kv[1][2])
        for (file, line, name), (_, calls, tottime, *_rest) in keep[:15]:
            where = name if file == "~" else f"{Path(file).name}:{line} {name}"
            print(f"    {1e3 * tottime / (n * args.repeat):7.1f} ms  {where}  "
                  f"({calls // (n * args.repeat)} calls)")


if __name__ == "__main__":
    main()
