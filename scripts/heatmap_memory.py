"""Run ``densify -v heatmap`` as a child process and print its start-up peak and scan peak RSS.

    python scripts/heatmap_memory.py IMAGE -- --model vgg19 -w random --scales 2 --max-memory 2GB

Arguments after ``--`` go to ``densify heatmap IMAGE -o TMPDIR``. The child's ``VmHWM`` (peak
resident memory, what ``/usr/bin/time -v`` reports) is read when it logs that its memory budget
is set (the model loaded, converted and the classifier released: the *start-up peak*) and
sampled every 20 ms until it exits; the final peak is the kernel's ``ru_maxrss`` of the child
(the *scan peak*: the whole run's maximum). Both in MiB and GB (10^9 bytes).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    with tempfile.TemporaryDirectory(prefix="heatmap_memory_") as out:
        cmd = [sys.executable, "-m", "densify", "-v", "heatmap", args.image, "-o", out, "-q",
               *extra]
        print("$", " ".join(cmd[2:]), flush=True)
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        startup = {}

        def read_log() -> None:
            for line in child.stderr:
                sys.stderr.write(line)
                if "memory budget" in line and "startup" not in startup:
                    startup["startup"] = _hwm(child.pid)
                    startup["at"] = time.perf_counter() - start

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        sampled = 0
        while child.poll() is None:
            sampled = max(sampled, _hwm(child.pid))
            time.sleep(0.02)
        reader.join()
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if "startup" in startup:
        s = startup["startup"]
        print(f"start-up peak: {s / 2**20:.0f} MiB = {s / 1e9:.3f} GB (at {startup['at']:.1f} s)")
    else:
        print("start-up peak: not seen (no --max-memory, or the child failed first)")
    print(f"scan peak:     {peak / 2**20:.0f} MiB = {peak / 1e9:.3f} GB (sampled {sampled / 2**20:.0f}"
          f" MiB); exit status {child.returncode}; wall {wall:.0f} s")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
