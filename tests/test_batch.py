"""Batches: records per image in summary.jsonl, resuming after a kill, prefetching reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from densify.io.records import append_record, finished, read_records

ROOT = Path(__file__).resolve().parent.parent
RECORD_KEYS = {"image", "status", "error", "size", "top", "files", "seconds", "job"}


def _images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    paths = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(90, 160, 2))
        rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2)
        paths.append(folder / f"img{i:02d}.png")
        cv2.imwrite(str(paths[-1]), rgb)
    return paths


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "densify", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _killed_mid_write(target: Path) -> Path:
    """A process SIGKILL-ed inside :func:`atomic_output` while writing ``target``: its temporary
    file (named by densify itself, half written) stays behind. Returns that file."""
    code = ("import os, signal, sys; from densify.io.files import atomic_output\n"
            "tmp = atomic_output(sys.argv[1]).__enter__()\n"
            "tmp.write_bytes(b'\\x89PNG half an image'); print(tmp, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = Path(proc.stdout.strip())
    assert left.is_file() and left.parent == target.parent and left != target
    return left


def test_a_killed_batch_resumes_and_does_every_image_exactly_once(tmp_path):
    """SIGKILL a batch, leave a half-written temporary file as a kill inside a write does, rerun:
    every image done exactly once, the temporary file gone, a user's own dotfile kept. Mutation
    caught: ``remove_stale_temporaries`` made a no-op (the kill of the batch itself lands between
    images, so without the planted file no temporary existed to clean)."""
    paths = _images(tmp_path / "in", 30)
    out = tmp_path / "out"
    summary = out / "summary.jsonl"
    args = ["heatmap", tmp_path / "in", "-o", out, "-q", "--scales", "2"]
    proc = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (summary.exists() and summary.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_records(summary)
    assert 1 <= len(first) < len(paths), "the kill came after the batch ended: nothing to resume"
    stale = _killed_mid_write(out / f"{paths[-1].stem}_heatmap.png")
    (out / ".notes.tmp").write_text("the user's, not densify's")

    done = subprocess.run(_cli(*args, "--json", "-"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = read_records(summary)
    ok = Counter(r["image"] for r in records if r["status"] == "ok")
    assert set(ok) == {str(p) for p in paths} and set(ok.values()) == {1}
    skipped = [r["image"] for r in records[len(first):] if r["status"] == "skipped"]
    assert sorted(skipped) == sorted(r["image"] for r in first)
    assert all(RECORD_KEYS <= set(r) for r in records)
    assert not stale.exists()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["summary.jsonl", ".notes.tmp"] + [f"{p.stem}_heatmap{s}" for p in paths
                                                              for s in (".png", ".npz")])
    assert len(json.loads(done.stdout)) == len(paths)  # skipped ones are reported too


def test_overwrite_redoes_finished_images_and_detect_keeps_skipped_boxes(tmp_path):
    from click.testing import CliRunner

    from densify.cli import main

    scene = cv2.imread(str(ROOT / "demos" / "digits_scene.png"))
    (tmp_path / "in").mkdir()
    for i, (y, x) in enumerate([(100, 600), (450, 700), (250, 750)]):
        cv2.imwrite(str(tmp_path / "in" / f"crop{i}.png"), scene[y:y + 400, x:x + 400])
    out = tmp_path / "out"
    args = ["detect", str(tmp_path / "in"), "-o", str(out), "-q", "--scales", "3"]
    runner = CliRunner()
    assert runner.invoke(main, args).exit_code == 0
    coco = json.loads((out / "detections.json").read_text())
    assert coco  # the crops hold digits
    assert runner.invoke(main, args).exit_code == 0  # all skipped
    assert json.loads((out / "detections.json").read_text()) == coco
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0
    statuses = [r["status"] for r in read_records(out / "summary.jsonl")]
    assert statuses == ["ok"] * 3 + ["skipped"] * 3 + ["ok"] * 3
    assert all("detections" in r and len(r["top"]) == 5 for r in read_records(out / "summary.jsonl"))


def test_heatmap_then_detect_in_one_directory_each_do_their_own_job(tmp_path):
    """The README's first command: heatmap, then detect, into the same OUTDIR. Detect must not take
    heatmap's records as its own (they carry no boxes), and other --scales redo the image."""
    from click.testing import CliRunner

    from densify.cli import main

    scene = cv2.imread(str(ROOT / "demos" / "digits_scene.png"))
    image = tmp_path / "crop.png"
    cv2.imwrite(str(image), scene[100:500, 600:1000])
    out = tmp_path / "out"
    runner = CliRunner()
    heat = runner.invoke(main, ["heatmap", str(image), "-o", str(out), "-q", "--scales", "2"])
    assert heat.exit_code == 0, heat.output
    det = runner.invoke(main, ["detect", str(image), "-o", str(out), "-q", "--scales", "2"])
    assert det.exit_code == 0, det.output
    coco = json.loads((out / "detections.json").read_text())
    assert coco and {d["image_id"] for d in coco} == {"crop"}
    again = runner.invoke(main, ["detect", str(image), "-o", str(out), "-q", "--scales", "3"])
    assert again.exit_code == 0, again.output
    jobs = [(r["job"]["command"], r["job"]["settings"]["scales"], r["status"])
            for r in read_records(out / "summary.jsonl")]
    assert jobs == [("heatmap", "2", "ok"), ("detect", "2", "ok"), ("detect", "3", "ok")]


def test_a_missing_output_makes_the_image_count_as_not_done(tmp_path):
    out_file = tmp_path / "a_heatmap.png"
    out_file.write_bytes(b"x")
    append_record(tmp_path / "s.jsonl", {"image": "a.png", "status": "ok", "files": [str(out_file)]})
    append_record(tmp_path / "s.jsonl", {"image": "b.png", "status": "ok",
                                         "files": [str(tmp_path / "gone.png")]})
    append_record(tmp_path / "s.jsonl", {"image": "c.png", "status": "error", "files": []})
    assert list(finished(read_records(tmp_path / "s.jsonl"))) == [str(Path("a.png").resolve())]


def test_prefetching_reads_in_order_and_reports_bad_files(tmp_path):
    from densify.cli._scanning import read_ahead
    from densify.errors import ImageError

    paths = _images(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    paths.insert(1, tmp_path / "in" / "bad.png")
    with_thread = list(read_ahead(paths, prefetch=True))
    without = list(read_ahead(paths, prefetch=False))
    assert isinstance(with_thread[1][1], ImageError) and with_thread[1][0] is None
    for (a, _), (b, _) in zip(with_thread, without, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)
    assert list(read_ahead([], prefetch=True)) == []


@pytest.mark.parametrize("torn", [b'{"image": "x.png", "sta', b"\xff\xfe"])
def test_a_torn_last_line_is_skipped_and_the_next_record_starts_clean(tmp_path, torn):
    path = tmp_path / "summary.jsonl"
    append_record(path, {"image": "a.png", "status": "ok"})
    with path.open("ab") as f:
        f.write(torn)
    assert [r["image"] for r in read_records(path)] == ["a.png"]
    append_record(path, {"image": "b.png", "status": "ok"})
    assert [r["image"] for r in read_records(path)] == ["a.png", "b.png"]
