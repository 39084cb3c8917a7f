"""``densify.distributed`` on a local Ray instance: the same rows as the single-process scan.

One module-scoped Ray (2 CPUs) scans 22 generated digit scenes and 2 bad files with the shipped
digits model: every row equals ``Scanner(...)(path)`` of the same file, bad files are error rows,
nothing is lost, and the output reads back with ``ray.data.read_parquet``. The tests that need no
Ray (the core does not import it; the missing-extra message) run without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from badfiles import make_bad_inputs
from click.testing import CliRunner

from densify.cli import main
from densify.errors import MissingExtraError, OutputError, ParameterError

HAVE_RAY = find_spec("ray") is not None and find_spec("pyarrow") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray Data is not installed: "
                                                    "pip install 'densify[ray]'")
MODEL = "lenet5-digits"
SCAN = {"scales": 2, "output_stride": 16, "weights": "DEFAULT"}
GOOD, BAD = 22, ("truncated_jpeg", "not_an_image")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """22 small digit scenes of different sizes, plus a truncated JPEG and a text file."""
    import cv2

    from densify.digits.synth import make_scene

    root = tmp_path_factory.mktemp("images")
    for seed in range(GOOD):
        size = (72 + 8 * (seed % 4), 96 + 16 * (seed % 3))
        scene = make_scene(seed, size, heights=(14.0, 40.0), n_digits=4)
        cv2.imwrite(str(root / f"scene{seed:02d}.png"), scene.image[..., ::-1])
    bad = make_bad_inputs(tmp_path_factory.mktemp("bad"))
    for key in BAD:
        shutil.copy(bad[key], root / bad[key].name)
    return root


@pytest.fixture(scope="module")
def ray_local():
    if not HAVE_RAY:
        pytest.skip("Ray Data is not installed: pip install 'densify[ray]'")
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def written(ray_local, images, tmp_path_factory) -> Path:
    from densify.distributed import scan_dataset

    out = tmp_path_factory.mktemp("rows") / "scan.parquet"
    scan_dataset(str(images), MODEL, **SCAN, workers=2, batch_size=4, output_dir=out)
    return out


@pytest.fixture(scope="module")
def rows(ray_local, written) -> dict[str, dict]:
    """The written rows, read back with Ray Data's Parquet reader, by file name."""
    return {Path(r["image"]).name: r for r in ray_local.data.read_parquet(str(written)).take_all()}


def _single_process(images: Path) -> dict[str, tuple]:
    from densify.scan.scanner import Scanner

    scanner = Scanner(MODEL, device="cpu", **SCAN)
    out = {}
    for path in sorted(images.glob("scene*.png")):
        result = scanner(path)
        threshold = scanner.default_threshold
        out[path.name] = (result.top_classes(5), result.detections(threshold, 0.3))
    return out


@needs_ray
def test_rows_equal_the_single_process_scan(rows, images):
    reference = _single_process(images)
    assert len(reference) == GOOD
    found = 0
    for name, (top, det) in reference.items():
        row = rows[name]
        assert row["status"] == "ok" and row["error"] is None
        assert [t["index"] for t in row["top"]] == [t.index for t in top]
        assert [t["name"] for t in row["top"]] == [t.name for t in top]
        np.testing.assert_allclose([t["score"] for t in row["top"]], [t.score for t in top],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.array([t["box"] for t in row["top"]]),
                                   np.array([t.box for t in top]), atol=1e-4)
        assert [d["label"] for d in row["detections"]] == det.labels.tolist()
        np.testing.assert_allclose([d["score"] for d in row["detections"]], det.scores.numpy(),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.array([d["box"] for d in row["detections"]]).reshape(-1, 4),
                                   det.boxes.numpy(), atol=1e-3)
        found += len(det)
    assert found > 0  # the comparison covered real detections, not only empty lists


@needs_ray
def test_bad_files_are_error_rows_and_no_row_is_lost(rows, images):
    assert len(rows) == GOOD + len(BAD)
    errors = {name: r for name, r in rows.items() if r["status"] != "ok"}
    assert sorted(errors) == ["notes.jpg", "truncated.jpg"]
    for name, row in errors.items():
        assert row["status"] == "error"
        assert str(images / name) in row["error"] and "\n" not in row["error"]
        assert row["top"] == [] and row["detections"] == [] and row["size"] is None
    assert "truncated" in errors["truncated.jpg"]["error"]


@needs_ray
def test_output_reads_back_with_read_parquet(ray_local, written):
    from densify.distributed import ROW_FIELDS

    dataset = ray_local.data.read_parquet(str(written))
    assert dataset.count() == GOOD + len(BAD)
    assert tuple(dataset.schema().names) == ROW_FIELDS
    assert not any(p.name.startswith(".") for p in written.parent.iterdir())  # no temp dir left


@needs_ray
def test_dataset_of_arrays_and_json_output(ray_local, rows, images, tmp_path):
    """A dataset with an ``image`` column (RGB arrays of different sizes) and a ``path`` label;
    a class filter keeps exactly the detections of those classes."""
    from densify.distributed import scan_dataset
    from densify.io.image import read_image
    from densify.scan.resultfile import load_result

    paths = [str(p) for p in sorted(images.glob("scene0*.png"))[:3]]
    source = ray_local.data.from_items([{"path": p, "image": read_image(p), "other": 1}
                                        for p in paths])
    found = sorted({d["name"] for p in paths for d in rows[Path(p).name]["detections"]})
    assert len(found) >= 2
    keep = found[:-1]  # a class filter that drops some detections, by class name
    back = scan_dataset(source, MODEL, **SCAN, workers=1, classes=keep,
                        output_dir=tmp_path / "rows", output_format="json",
                        results_dir=tmp_path / "results").take_all()
    assert sorted(r["image"] for r in back) == paths
    assert len({tuple(r["size"]) for r in back}) == 3
    for row in back:
        expected = rows[Path(row["image"]).name]
        assert row["size"] == expected["size"]
        assert [t["index"] for t in row["top"]] == [t["index"] for t in expected["top"]]
        np.testing.assert_allclose([t["score"] for t in row["top"]],
                                   [t["score"] for t in expected["top"]], rtol=1e-6)
        (saved,) = row["files"]  # the compact result file reads back as the same scan
        top = load_result(saved).top_classes(5)
        assert [t.index for t in top] == [t["index"] for t in row["top"]]
        np.testing.assert_allclose([t.score for t in top], [t["score"] for t in row["top"]],
                                   atol=1e-5)
        kept = [d for d in expected["detections"] if d["name"] in keep]
        assert [d["name"] for d in row["detections"]] == [d["name"] for d in kept]
        np.testing.assert_allclose([d["score"] for d in row["detections"]],
                                   [d["score"] for d in kept], rtol=1e-6)


@needs_ray
def test_usage_errors_stop_before_any_image(ray_local, images, written):
    from densify.distributed import scan_dataset

    with pytest.raises(OutputError, match="not an empty directory"):
        scan_dataset(str(images), MODEL, **SCAN, output_dir=written)
    with pytest.raises(ParameterError, match="background class"):
        scan_dataset(str(images), MODEL, **SCAN, classes=["background"])
    with pytest.raises(ParameterError, match="bad detection option"):
        scan_dataset(str(images), MODEL, **SCAN, detection_options={"bogus": 1})
    with pytest.raises(ParameterError, match="threshold"):
        scan_dataset(str(images), MODEL, **SCAN, threshold=1.5)
    with pytest.raises(ParameterError, match="output format"):
        scan_dataset(str(images), MODEL, **SCAN, output_format="csv")
    with pytest.raises(ParameterError, match="'path'"):
        scan_dataset(ray_local.data.from_items([{"file": "x.png"}]), MODEL, **SCAN)


@needs_ray
def test_cli_detect_ray_writes_records_and_reports_bad_files(ray_local, images, tmp_path):
    import json

    result = CliRunner().invoke(main, ["detect", str(images), "--ray", "--workers", "2",
                                       "--scales", "2", "-q", "-o", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "2 of 24 input(s) failed" in errors[-1]
    records = [json.loads(line) for line in (tmp_path / "summary.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records).count("ok") == GOOD
    assert len(records) == GOOD + len(BAD)
    coco = json.loads((tmp_path / "detections.json").read_text())
    assert coco and len(list(tmp_path.glob("*_detections.png"))) == GOOD


def test_cli_ray_takes_every_option_and_a_factory(ray_local, tmp_path, monkeypatch):
    """--ray with a module:factory model from the current directory and the reading options
    gives the records of the single-process scan (it said "unknown model" and dropped them)."""
    import json

    import cv2
    from test_settings import FACTORY

    name = f"raynet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(0).integers(
        0, 255, (40, 48, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    args = ["detect", "a.png", "-m", f"{name}:factory", "--input-size", "16x16", "--mean",
            "0.1,0.2,0.3", "--std", "0.4,0.5,0.6", "--classes", "classes.txt", "--scores-output",
            "scores", "--boxes-output", "boxes", "--box-format", "deltas", "--scales", "1,1.5",
            "--output-stride", "4", "--threads", "1", "--threshold", "0.2", "-q"]
    ray = CliRunner().invoke(main, [*args, "--ray", "--workers", "1", "-o", "ray"])
    assert ray.exit_code == 0, ray.output
    one = CliRunner().invoke(main, [*args, "-o", "one", "--json", "-"])
    assert one.exit_code == 0, one.output
    row, record = (json.loads((tmp_path / d / "summary.jsonl").read_text().splitlines()[0])
                   for d in ("ray", "one"))
    assert [t["name"] for t in row["top"]] == [t["name"] for t in record["top"]]
    assert {t["name"] for t in row["top"]} == {"cat", "dog", "bird"}
    np.testing.assert_allclose([t["score"] for t in row["top"]],
                               [t["score"] for t in record["top"]], atol=1e-5)
    assert len(row["detections"]) == len(json.loads(one.stdout))
    assert json.loads((tmp_path / "ray" / "detections.json").read_text()) == \
        json.loads(one.stdout)
    sys.modules.pop(name, None)


def test_ray_options_need_ray(tmp_path):
    result = CliRunner().invoke(main, ["heatmap", str(tmp_path), "--workers", "2"])
    assert result.exit_code != 0 and "need --ray" in result.stderr


def test_core_and_cli_do_not_import_ray():
    code = ("import sys, densify, densify.scan.scanner, densify.cli, densify.cli.heatmap, "
            "densify.cli.detect; sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    from densify.distributed import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'densify\[ray\]'"):
        require_ray()
    (tmp_path / "a.png").write_bytes(b"")
    result = CliRunner().invoke(main, ["heatmap", str(tmp_path), "--ray", "-o", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output + result.stderr
    assert "pip install 'densify[ray]'" in result.stderr


def test_default_workers_fill_the_cluster():
    from densify.cli._ray import default_workers
    from densify.cli.options import RayOptions

    class Cluster:
        @staticmethod
        def cluster_resources():
            return {"CPU": 16.0, "GPU": 2.0}

    assert default_workers(Cluster, RayOptions(None, None, 0), 1) == 16
    assert default_workers(Cluster, RayOptions(None, None, 0), 4) == 4
    assert default_workers(Cluster, RayOptions(None, None, 0.25), 1) == 8
    assert default_workers(Cluster, RayOptions(None, 3, 0.25), 1) == 3
