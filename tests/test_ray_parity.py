"""``densify heatmap|detect DIR --ray`` writes what the single-process run writes, and resumes.

One module-scoped local Ray (2 CPUs). The folder: 4 small digit scenes and a truncated JPEG.
Both paths run with ``--threads 1`` (one torch thread per scan on both sides, so the scans are
the same computation) and their output folders are compared file by file (:func:`same_folders`):

- the same file names;
- PNGs: the decoded pixels equal (exact);
- ``.npz`` result files: the same arrays, equal (exact; the arrays only, not the zip bytes,
  whose member timestamps differ);
- JSON and ``summary.jsonl``: equal after parsing, with every ``"seconds"`` (time taken)
  removed and the output folder's own path in the listed files replaced by a placeholder; the
  summary's records in input order (the Ray run appends them as they finish);
- ``report.html``: equal after removing the run's timing: the summary paragraph (total time and
  the time written) and each card's seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from badfiles import make_bad_inputs
from click.testing import CliRunner

from densify.cli import main

HAVE_RAY = find_spec("ray") is not None and find_spec("pyarrow") is not None
pytestmark = pytest.mark.skipif(not HAVE_RAY, reason="Ray Data is not installed: "
                                                     "pip install 'densify[ray]'")
SCAN = ["--scales", "2", "--threads", "1", "-q"]
HEATMAP = ["heatmap", *SCAN, "--sheet", "--report", "--full-maps"]
GOOD = 4


@pytest.fixture(scope="module")
def ray_local():
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import cv2

    from densify.digits.synth import make_scene

    root = tmp_path_factory.mktemp("images")
    for seed in range(GOOD):
        scene = make_scene(seed, (64 + 8 * seed, 80), heights=(14.0, 40.0), n_digits=3)
        cv2.imwrite(str(root / f"scene{seed}.png"), scene.image[..., ::-1])
    bad = make_bad_inputs(tmp_path_factory.mktemp("bad"))["truncated_jpeg"]
    shutil.copy(bad, root / bad.name)
    return root


def run(args: list[str]):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    return result


def _records(path: Path) -> list[dict]:
    from densify.io.records import read_records

    return read_records(path)  # skips the torn line of a killed run


def _json(path: Path, lines: bool = False):
    """The file parsed, with the output folder's path (in ``files``) replaced by ``OUT``."""
    text = path.read_text().replace(json.dumps(str(path.parent))[1:-1], "OUT")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if lines else \
        json.loads(text)


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _report(path: Path) -> str:
    text = re.sub(r"<p class='summary'>.*?</p>", "", path.read_text())
    return re.sub(r", \d+\.\d\d s</p>", "</p>", text)


def same_folders(a: Path, b: Path, order: list[str]) -> None:
    """Assert the outputs of ``a`` and ``b`` equal under the module docstring's rules."""
    import cv2

    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        x, y = a / name, b / name
        if name.endswith(".png"):
            assert np.array_equal(cv2.imread(str(x)), cv2.imread(str(y))), name
        elif name.endswith(".npz"):
            with np.load(x) as p, np.load(y) as q:
                assert sorted(p.files) == sorted(q.files), name
                for key in p.files:
                    assert np.array_equal(p[key], q[key]), f"{name}: {key}"
        elif name == "summary.jsonl":
            rank = {image: i for i, image in enumerate(order)}
            rx, ry = (sorted(_untimed(_json(f, lines=True)), key=lambda r: rank[r["image"]])
                      for f in (x, y))
            assert rx == ry
        elif name.endswith(".json"):
            assert _untimed(_json(x)) == _untimed(_json(y))
        elif name == "report.html":
            assert _report(x) == _report(y)
        else:
            raise AssertionError(f"{name}: no comparison rule for this file")


def test_ray_writes_what_the_single_process_run_writes(ray_local, folder, tmp_path):
    order = [str(p) for p in sorted(folder.iterdir())]
    ensemble = ["-m", "lenet5-digits", "-m", "lenet5-digits-pc"]  # the actors build it too
    for command in (HEATMAP + ["--json", "{out}/heatmap.json"], ["detect", *SCAN, *ensemble]):
        outs = []
        for how, extra in (("one", []), ("ray", ["--ray", "--workers", "1"])):
            out = tmp_path / f"{command[0]}-{how}"
            args = [a.replace("{out}", str(out)) for a in command]
            result = run([*args, str(folder), "-o", str(out), *extra])
            assert result.exit_code == 1  # the truncated JPEG
            assert "1 of 5 input(s) failed" in result.stderr
            assert "truncated.jpg" in result.stderr
            outs.append(out)
        same_folders(*outs, order)
    names = {p.name for p in (tmp_path / "heatmap-one").iterdir()}
    assert {"scene0_heatmap.png", "scene0_heatmap.npz", "scene0_sheet.png", "report.html",
            "heatmap.json", "summary.jsonl"} <= names
    assert not any(n.startswith("truncated") for n in names)
    coco = json.loads((tmp_path / "detect-ray" / "detections.json").read_text())
    assert coco and {"image_id", "category_id", "bbox", "score"} <= set(coco[0])


def test_a_partial_ray_run_resumes_and_overwrite_rescans(ray_local, folder, tmp_path):
    """Two images done earlier (here by the single-process run, the same job) are skipped by
    the Ray run, their files untouched; a torn last record and a temporary file left by a kill
    are dealt with; ``--overwrite`` scans every image again."""
    out = tmp_path / "out"
    first = [str(folder / "scene0.png"), str(folder / "scene1.png")]
    assert run([*HEATMAP, *first, "-o", str(out)]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("scene*")}
    with (out / "summary.jsonl").open("a") as f:
        f.write('{"image": "' + str(folder / "scene2.png") + '", "sta')  # killed mid-line
    stale = out / ".scene2_heatmap.png.0123abcd.tmp.png"
    stale.write_bytes(b"half a PNG")

    result = run([*HEATMAP, str(folder), "-o", str(out), "--ray", "--workers", "1"])
    assert result.exit_code == 1 and not stale.exists()
    latest = {r["image"]: r["status"] for r in _records(out / "summary.jsonl")}
    assert latest == {**{p: "skipped" for p in first}, str(folder / "truncated.jpg"): "error",
                      str(folder / "scene2.png"): "ok", str(folder / "scene3.png"): "ok"}
    assert {name: mtime for name, mtime in before.items()
            if (out / name).stat().st_mtime_ns == mtime} == before
    assert (out / "scene3_sheet.png").is_file()
    report = (out / "report.html").read_text()
    assert all(f"scene{i}.png" in report for i in range(GOOD)) and "truncated.jpg" in report

    count = len(_records(out / "summary.jsonl"))
    run([*HEATMAP, str(folder), "-o", str(out), "--ray", "--workers", "1", "--overwrite"])
    again = _records(out / "summary.jsonl")[count:]
    assert sorted(r["status"] for r in again) == ["error"] + ["ok"] * GOOD
    assert all(os.stat(out / name).st_mtime_ns > mtime for name, mtime in before.items())
