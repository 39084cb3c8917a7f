"""``densify heatmap`` and ``densify detect``: photos, weights files, bad inputs, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from badfiles import BAD_KEYS, GOOD_KEYS, make_bad_inputs
from click.testing import CliRunner

from densify.cli import main
from densify.io.image import read_image, resize, sample_image
from densify.io.records import read_records
from densify.models import archs
from densify.models import catalogue as zoo
from densify.models.card import ModelCard

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
FAST = ["--model", "squeezenet1_1", "--device", "cpu", "-q"]
LENET = ["--model", "lenet5", "--weights", "random", "--scales", "2", "-q"]
ROOT = Path(__file__).resolve().parent.parent


def _invoke(command: str, args: list) -> object:
    """``densify COMMAND ARGS...`` in-process, through the group (which turns errors into lines)."""
    return CliRunner().invoke(main, [command, *(str(a) for a in args)])


def _one_line_error(result, *words: str, status: int = 1) -> None:
    """One ``Error:`` line holding ``words``, exit ``status``: 1 for bad input, 2 for a usage
    error (which then names ``--help``); never a traceback or "bug" wording. Mutations caught:
    every user error reported as an internal error with exit 3; usage errors back to click's
    three lines (usage, hint, error)."""
    assert result.exit_code == status, (result.exit_code, result.output)
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()
             and not line.startswith(("WARNING:", "INFO:"))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "bug" not in lines[0] and "internal error" not in lines[0], lines[0]
    if status == 2:
        assert "--help" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The four skimage photos, shrunk to a 240 px short side to keep the scans fast."""
    root = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        rgb = sample_image(name)
        factor = 240 / min(rgb.shape[:2])
        size = (round(rgb.shape[0] * factor), round(rgb.shape[1] * factor))
        cv2.imwrite(str(root / f"{name}.jpg"), resize(rgb, size)[..., ::-1])
    return root


@pytest.fixture(scope="module")
def heatmap_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("heatmaps")
    torch.manual_seed(0)
    result = _invoke("heatmap", [photos, *FAST, "--weights", "random", "--scales", "2",
                                       "--json", "-", "-o", out])
    return result, out


def test_heatmap_writes_registered_maps_for_real_photos(heatmap_run, photos):
    result, out = heatmap_run
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    assert [Path(r["image"]).stem for r in records] == sorted(PHOTOS)
    for r in records:
        stem, height, width = Path(r["image"]).stem, *r["size"]
        assert read_image(photos / f"{stem}.jpg").shape[:2] == (height, width)
        assert read_image(out / f"{stem}_heatmap.png").shape[:2] == (height, width)
        assert len(r["top"]) == 5 and len(r["factors"]) == 2 and r["output_stride"] == 16
        assert r["class"] == r["top"][0]["name"]


def test_npz_is_a_compact_result_file_that_loads_back(heatmap_run):
    """The .npz holds per-scale cell maps (no image-resolution maps unless --full-maps), no
    pickles, and loads back as a ScanResult whose summary is the one printed."""
    from densify.scan.resultfile import load_result

    result, out = heatmap_run
    with np.load(out / "coffee_heatmap.npz", allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    assert "heatmaps" not in data and data["probs_0"].dtype == np.uint16
    assert len(data["categories"]) == 1000 and data["top_index"].shape == (5,)
    assert data["window"].tolist() == [224, 224] and data["stride"].tolist() == [16, 16]
    loaded = load_result(out / "coffee_heatmap.npz")
    record = next(r for r in json.loads(result.stdout) if r["image"].endswith("coffee.jpg"))
    assert data["top_index"].tolist() == [t["index"] for t in record["top"]]
    scores = loaded.scores()  # from 16-bit maps: random weights' near-ties may swap places
    assert all(abs(float(scores[t["index"]]) - t["score"]) < 1e-5 for t in record["top"])
    for m in loaded.maps:
        # 1000 probabilities, each rounded to 1/65535: their sum is 1 within 1000 half-steps
        assert torch.allclose(m.probs.sum(0), torch.ones(1), atol=1000 * 0.5 / 65535)


def test_heatmap_with_a_weights_file_and_a_class(photos, tmp_path):
    torch.manual_seed(3)
    weights = tmp_path / "squeeze.pt"
    torch.save(zoo.build_model("squeezenet1_1").state_dict(), weights)
    result = _invoke("heatmap", [photos / "chelsea.jpg", photos / "coffee.jpg", *FAST,
                                       "--weights", weights, "--scales", "0.9,1.1", "--class",
                                       "Egyptian", "--top-k", "2", "--full-maps", "-o",
                                       tmp_path / "o"])
    assert result.exit_code == 0, result.stderr
    assert "Egyptian cat" in result.stdout and "random" not in result.stdout
    assert "scale(s) 0.9-1.1" in result.stdout
    with np.load(tmp_path / "o" / "chelsea_heatmap.npz") as npz:
        assert npz["categories"][npz["heatmap_classes"][0]] == "Egyptian cat"
        assert npz["heatmaps"].shape[0] == 3


def test_bad_inputs_cost_one_line_each(tmp_path):
    paths = make_bad_inputs(tmp_path)
    out = tmp_path / "out"
    result = _invoke("heatmap", [*paths.values(), *LENET, "-o", out])
    assert result.exit_code == 1
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BAD_KEYS) + 1  # one per bad input, then the count
    for key in BAD_KEYS:
        assert sum(str(paths[key]) in line for line in errors) == 1, key
    for key in GOOD_KEYS:
        stem = paths[key].stem
        assert read_image(out / f"{stem}_heatmap.png").shape == read_image(paths[key]).shape
        assert (out / f"{stem}_heatmap.npz").is_file()
    written = {p.name.split("_heatmap")[0] for p in out.iterdir() if p.name != "summary.jsonl"}
    assert written == {paths[k].stem for k in GOOD_KEYS}
    statuses = {r["image"]: r["status"] for r in read_records(out / "summary.jsonl")}
    # Files that exist get a record each; a missing path or an empty directory is no image.
    expected = {str(paths[k]): "error" if k in BAD_KEYS else "ok" for k in paths
                if k not in ("missing", "empty_dir")}
    assert statuses == expected
    assert "upscaled" in result.stdout  # the 16 x 24 images are smaller than the window


def test_bad_inputs_as_a_subprocess(tmp_path):
    paths = make_bad_inputs(tmp_path)
    args = [str(paths["truncated_jpeg"]), str(paths["normal_jpeg"]), *LENET, "-o",
            str(tmp_path / "out")]
    cmd = [sys.executable, "-m", "densify", "heatmap", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if str(paths["truncated_jpeg"]) in line]
    assert len(errors) == 1 and "truncated JPEG" in errors[0]
    assert (tmp_path / "out" / "normal_heatmap.png").is_file()
    assert not (tmp_path / "out" / "truncated_heatmap.png").exists()


@pytest.mark.parametrize("args, words", [
    (["--scales", "0"], ["--scales", "positive"]),
    (["--scales", "0.5,-1"], ["--scales", "positive"]),
    (["--scales", "x"], ["--scales"]),
    (["--model", "squeezenet1_2"], ["--model", "squeezenet1_1"]),
    (["--class", "zebraa"], ["--class", "'zebra'"]),
    (["--class", "5000"], ["--class", "out of range"]),
    (["--device", "cuda:99x"], ["--device"]),
    (["--colormap", "rainbow-ish"], ["--colormap"]),
])
def test_usage_errors_are_one_line(photos, tmp_path, args, words):
    base = ["--model", "squeezenet1_1", "--weights", "random", "-q", "-o", tmp_path]
    result = _invoke("heatmap", [photos / "coffee.jpg", *base, *args])
    _one_line_error(result, *words, status=2)
    assert not list(tmp_path.glob("*_heatmap.*"))


def test_unwritable_output_dir(photos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _invoke("heatmap", [photos / "coffee.jpg", *LENET, "-o", blocker / "sub"])
    _one_line_error(result, "file is in the way", "-o")


def test_weights_for_another_architecture(photos, tmp_path):
    weights = tmp_path / "lenet.pt"
    torch.save(zoo.build_model("lenet5").state_dict(), weights)
    result = _invoke("heatmap", [photos / "coffee.jpg", "--model", "squeezenet1_1",
                                       "--weights", weights, "-q", "-o", tmp_path])
    _one_line_error(result, "another architecture", "--model")


def test_missing_default_model_names_the_fix(photos, tmp_path, monkeypatch):
    monkeypatch.delitem(zoo.MODELS, "lenet5-digits", raising=False)
    result = _invoke("heatmap", [photos / "coffee.jpg", "-q", "-o", tmp_path])
    _one_line_error(result, "--model", status=2)


def test_progress_bars_unless_quiet(photos, tmp_path):
    args = [photos / "coffee.jpg", "--model", "lenet5", "--weights", "random", "--scales", "1",
            "-o", tmp_path]
    assert "images" in _invoke("heatmap", args).stderr
    assert "images" not in _invoke("heatmap", [*args, "-q"]).stderr


def test_same_stems_do_not_overwrite(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "x.png"), np.full((30, 40, 3), 90, np.uint8))
    result = _invoke("heatmap", [tmp_path / "a", tmp_path / "b", *LENET, "-o",
                                       tmp_path / "out"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "x_heatmap.png").is_file()
    assert (tmp_path / "out" / "x-2_heatmap.png").is_file()


def test_detect_writes_coco_results_and_drawings(photos, tmp_path):
    paths = make_bad_inputs(tmp_path)
    results_file = tmp_path / "results" / "coco.json"
    (tmp_path / "results").mkdir()
    result = _invoke("detect", [photos / "rocket.jpg", paths["zero_byte"], *LENET,
                                      "--threshold", "0.05", "--json", results_file, "-o",
                                      tmp_path / "out"])
    assert result.exit_code == 1 and "zero.jpg" in result.stderr
    entries = json.loads(results_file.read_text())
    assert entries and {e["image_id"] for e in entries} == {"rocket"}
    for e in entries:
        assert set(e) == {"image_id", "category_id", "category_name", "bbox", "score"}
        assert len(e["bbox"]) == 4 and e["bbox"][2] > 0 and 0.05 <= e["score"] <= 1
        assert e["category_name"] == str(e["category_id"])
    drawn = read_image(tmp_path / "out" / "rocket_detections.png")
    assert drawn.shape == read_image(photos / "rocket.jpg").shape
    assert not (tmp_path / "out" / "zero_detections.png").exists()


@pytest.fixture()
def digits_card(monkeypatch):
    """A stand-in for the trained ``lenet5-digits`` entry (random weights, same card keys)."""
    categories = [str(d) for d in range(10)] + ["background"]
    spec = zoo.ModelSpec(
        "lenet5-digits", "project", lambda k: archs.lenet5(k), (1, 28, 28), 11, (0.5,),
        (0.5,), weights="missing_digits.pt", categories_from="card",
        card=ModelCard((1, 28, 28), (0.5,), (0.5,), tuple(categories), background_class=10,
                       object_height=20.0, box_aspect=0.6))
    monkeypatch.setitem(zoo.MODELS, "lenet5-digits", spec)
    return spec


def test_default_model_boxes_objects_never_background(digits_card, photos, tmp_path):
    torch.manual_seed(0)
    result = _invoke("detect", [photos / "coffee.jpg", "--weights", "random", "--scales",
                                      "0.1,0.2", "--threshold", "0.09", "-q", "-o", tmp_path])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("lenet5-digits:")
    entries = json.loads((tmp_path / "detections.json").read_text())
    assert entries and all(e["category_id"] != 10 for e in entries)
    height, width = read_image(photos / "coffee.jpg").shape[:2]
    for e in entries:  # 12 x 20 window pixels: 0.6 times as wide as tall, unless clipped
        x, y, w, h = e["bbox"]
        clipped = x <= 0 or y <= 0 or x + w >= width - 0.01 or y + h >= height - 0.01
        assert w == pytest.approx(0.6 * h, abs=0.05) or clipped
    refused = _invoke("detect", [photos / "coffee.jpg", "--weights", "random", "--class",
                                       "background", "-q", "-o", tmp_path])
    _one_line_error(refused, "background", status=2)


def test_default_weights_missing_is_one_line(digits_card, photos, tmp_path):
    result = _invoke("heatmap", [photos / "coffee.jpg", "-q", "-o", tmp_path])
    _one_line_error(result, "missing_digits.pt")


def test_heatmap_flip_and_explicit_sizes(photos, tmp_path):
    """``--scales HxW,HxW --flip``: each size exactly, mirrored maps saved and flagged."""
    result = _invoke("heatmap", [photos / "coffee.jpg", "--model", "lenet5", "--weights", "random",
                                 "--scales", "40x60,64x48", "--flip", "-q", "--json", "-", "-o", tmp_path])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["flip"] is True and len(record["factors"]) == 2
    saved = np.load(tmp_path / "coffee_heatmap.npz")
    assert saved["flipped"].tolist() == [False, True, False, True]
    assert saved["sizes"].tolist() == [[40, 60], [40, 60], [64, 48], [64, 48]]


def test_bad_size_scales_are_one_line_usage_errors(photos, tmp_path):
    result = _invoke("heatmap", [photos / "coffee.jpg", *LENET[:4], "--scales", "40x", "-o", tmp_path])
    _one_line_error(result, "--scales", "HxW", status=2)


@pytest.mark.parametrize("command", ["heatmap", "detect"])
def test_threads_reach_the_scanner(photos, tmp_path, monkeypatch, command):
    from densify.cli import _scanning
    from densify.scan.scanner import Scanner

    made = []

    def recording(*args, **kwargs):
        made.append(Scanner(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(_scanning, "Scanner", recording)
    result = _invoke(command, [photos / "coffee.jpg", *LENET, "--threads", 1, "-o", tmp_path])
    assert result.exit_code == 0, result.output
    assert [s.threads for s in made] == [1]
    _one_line_error(_invoke(command, [photos / "coffee.jpg", *LENET, "--threads", 0]), "--threads",
                    status=2)


@pytest.mark.parametrize("std", ["0", "1,-1,1", "inf"])
def test_a_std_that_is_not_positive_is_a_usage_error(photos, tmp_path, std):
    """It was accepted, then every image failed on it in turn (exit 1, a line per image)."""
    result = _invoke("heatmap", [photos / "coffee.jpg", *LENET, "--std", std, "-o", tmp_path])
    _one_line_error(result, "--std", "must be positive", status=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("factory, words", [
    ("def factory():\n    raise RuntimeError('no such layer size')\n",
     ["factory() raised RuntimeError: no such layer size", "fix the factory"]),
    ("def factory(width):\n    return None\n", ["factory() raised TypeError", "without arguments"]),
])
def test_a_user_factory_that_raises_is_bad_input_with_its_traceback_under_v(
        photos, tmp_path, monkeypatch, caplog, factory, words):
    """The user's own code failing is not a bug in densify (it was: exit 3, "internal error");
    -v still shows where it failed (an INFO record with the traceback; pytest's log capture
    holds it here, a plain run prints it on stderr)."""
    module = f"mine_factory_{len(factory)}"  # one per case: imported modules stay cached
    (tmp_path / f"{module}.py").write_text(factory)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [photos / "coffee.jpg", "--model", f"{module}:factory", "--input-size", "32",
            "-q", "-o", tmp_path / "out"]
    _one_line_error(_invoke("heatmap", args), *words)
    caplog.set_level("INFO")
    verbose = CliRunner().invoke(main, ["-v", "heatmap", *(str(a) for a in args)])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in caplog.text
    assert not list((tmp_path / "out").iterdir())
