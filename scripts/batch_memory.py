"""Run ``densify heatmap DIR`` as a child process and record its memory and speed per image.

    python scripts/batch_memory.py /tmp/batch --make 500 -- -q
    python scripts/batch_memory.py /tmp/photos -- -q --no-prefetch

``--make N`` first fills DIR with N generated images (blurred noise with random digits from the
demo scene pasted in, sides drawn from ``--sides MIN:MAX`` px). The child's resident memory
(``VmRSS``) and its anonymous part (``RssAnon``: the heap and tensors, not the mapped library
files, which the kernel may evict under memory pressure) are sampled every 20 ms and paired with
the number of records in ``OUT/summary.jsonl``, so the report gives both when image 1, 50, 100,
... was done, the peak (``VmHWM``), and images per second between the first record and the last
(start-up excluded).
Arguments after ``--`` go to ``densify heatmap``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_images(folder: Path, count: int, sides: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    scene = cv2.imread(str(ROOT / "demos" / "digits_scene.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        y, x = int(rng.integers(0, scene.shape[0] - h)), int(rng.integers(0, scene.shape[1] - w))
        cv2.imwrite(str(folder / f"img{i:04d}.png"), scene[y:y + h, x:x + w])


def _status(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def run(folder: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "densify", "heatmap", str(folder), "-o", str(out), *extra]
    start = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    rss_at, anon_at, times, peak = {}, {}, {}, 0
    while child.poll() is None:
        n = _count(out / "summary.jsonl")
        rss = _status(child.pid, "VmRSS")
        peak = max(peak, _status(child.pid, "VmHWM"))
        if n and n not in rss_at:
            rss_at[n], anon_at[n], times[n] = rss, _status(child.pid, "RssAnon"), time.monotonic()
        time.sleep(0.02)
    n = _count(out / "summary.jsonl")
    marks = sorted({1, *range(50, n + 1, 50), n} & set(rss_at))
    first, last = min(times, default=0), max(times, default=0)  # record counts
    return {"command": " ".join(cmd), "returncode": child.returncode, "images": n,
            "wall_s": round(time.monotonic() - start, 1), "peak_rss_mb": round(peak / 2**20),
            "rss_mb_at_image": {m: round(rss_at[m] / 2**20) for m in marks},
            "anon_rss_mb_at_image": {m: round(anon_at[m] / 2**20) for m in marks},
            "images_per_s": round((last - first) / (times[last] - times[first]), 2)
            if last > first else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--make", type=int, default=0, help="generate this many images first")
    parser.add_argument("--sides", default="200:600", help="MIN:MAX side of generated images")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: a temp dir)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1:]  # for densify heatmap
    if args.make:
        low, high = (int(v) for v in args.sides.split(":"))
        make_images(args.folder, args.make, (low, high))
    out = args.out or Path(tempfile.mkdtemp(prefix="densify-batch-"))
    print(json.dumps(run(args.folder, out, args.extra), indent=2))


if __name__ == "__main__":
    main()
