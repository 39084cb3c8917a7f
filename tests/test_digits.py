"""The shipped default model, ``lenet5-digits``, with its trained weights shipped in ``densify/models/data/``.

Exactness on trained weights (LeNet-5 has no padding: every dense cell equals LeNet on the crop),
detection quality on the demo scene and on held-out generated scenes, and the weights card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import pytest
import torch
from click.testing import CliRunner

from densify.cli import main
from densify.convert import verify
from densify.convert.dense import convolutionize
from densify.digits import synth
from densify.digits.evaluation import evaluate_scenes
from densify.digits.metrics import evaluate
from densify.io.image import read_image, to_tensor
from densify.models import catalogue as zoo
from densify.models.weights import load_classifier
from densify.scan.scanner import Scanner

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif("lenet5-digits" not in zoo.MODELS,
                                reason="densify/models/data/lenet5_digits.json not trained")


@pytest.fixture(scope="module")
def clf():
    return load_classifier("lenet5-digits", "DEFAULT")


def test_card_matches_the_weights_file():
    card = json.loads((zoo.WEIGHTS_DIR / "lenet5_digits.json").read_text())
    digest = hashlib.sha256((zoo.WEIGHTS_DIR / card["file"]).read_bytes()).hexdigest()
    assert digest == card["sha256"]
    spec = zoo.MODELS["lenet5-digits"]
    assert spec.card.categories[spec.card.background_class] == "background"
    assert spec.input_size == (1, 28, 28)


@pytest.mark.parametrize("stride", [None, 2])
def test_dense_cells_equal_lenet_on_crops_of_real_scenes(clf, stride):
    """Trained weights, float64, every cell of a held-out scene and of the demo scene."""
    model = clf.model.double()
    dense = convolutionize(model, (1, 28, 28), output_stride=stride)
    scene = synth.make_scene(90_123, size=(120, 160), split="eval", heights=(24.0, 60.0)).image
    demo = read_image(ROOT / "demos" / "digits_scene.png")[300:420, 560:720]
    for rgb in (scene, demo):
        x = to_tensor(rgb, clf.spec.mean, clf.spec.std, 1).double()
        check = verify.check_crops(model, dense, x=x)
        assert check.passed and check.count > 500, check


def test_demo_scene_digits_are_found(clf):
    truth = json.loads((ROOT / "demos" / "digits_scene.json").read_text())
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                          (a["bbox"] for a in truth["annotations"])])
    labels = torch.tensor([a["category_id"] for a in truth["annotations"]])
    result = Scanner(clf, device="cpu")(ROOT / "demos" / "digits_scene.png")
    det = result.detections(threshold=0.05)
    metrics = evaluate([{"boxes": det.boxes, "scores": det.scores, "labels": det.labels}],
                       [{"boxes": boxes, "labels": labels}], num_classes=10)
    assert metrics.mean_ap >= 0.85, metrics
    assert (det.labels != 10).all()


def test_held_out_scenes_and_the_evaluate_command(clf, tmp_path):
    report = evaluate_scenes(Scanner(clf, device="cpu"), scenes=2, size=(480, 640))
    assert report["AP50"] >= 0.75 and 0 < report["recall"] <= 1
    assert report["AP75"] <= report["AP50"] and report["AP"] <= report["AP50"]
    result = CliRunner().invoke(main, ["evaluate", "--scenes", "1", "--size", "240x320",
                                       "--threads", "1", "--json", "-", "-q", "--save-gt",
                                       tmp_path / "gt.json", "--save-detections",
                                       tmp_path / "det.json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["ap50_per_class"]) == {str(d) for d in range(10)}
    assert out["ground_truth_boxes"] > 0 and {"AP", "AP50", "AP75", "AR"} <= set(out)
    # The saved COCO files score the same through --gt/--detections.
    again = CliRunner().invoke(main, ["evaluate", "--gt", tmp_path / "gt.json", "--detections",
                                      tmp_path / "det.json", "--json", "-"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["AP50"] == out["AP50"]
    half = CliRunner().invoke(main, ["evaluate", "--gt", tmp_path / "gt.json"])
    assert half.exit_code == 2 and "--detections" in half.output
    bad = CliRunner().invoke(main, ["evaluate", "--size", "12x12"])
    assert bad.exit_code == 2 and "HxW" in bad.output
    # An ensemble of the model with itself scores as the model does.
    twice = CliRunner().invoke(main, ["evaluate", "--scenes", "1", "--size", "240x320",
                                      "--threads", "1", "--json", "-", "-q", "-m",
                                      "lenet5-digits", "-m", "lenet5-digits"])
    assert twice.exit_code == 0, twice.output
    assert {k: json.loads(twice.output)[k] for k in ("AP", "AP50", "tp", "fp")} == {
        k: out[k] for k in ("AP", "AP50", "tp", "fp")}


def test_detect_with_the_greedy_merge_on_the_demo_scene(tmp_path):
    """``densify detect --merge overfeat``: fewer, accumulated-score boxes, on a crop of the demo."""
    rgb = read_image(ROOT / "demos" / "digits_scene.png")[:400, :600]
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    runs = {}
    for merge in ("nms", "overfeat"):
        result = CliRunner().invoke(main, ["detect", str(path), "--merge", merge, "-q", "-o",
                                           str(tmp_path / merge)])
        assert result.exit_code == 0, result.output
        runs[merge] = json.loads((tmp_path / merge / "detections.json").read_text())
    assert runs["overfeat"] and runs["nms"]
    assert max(d["score"] for d in runs["overfeat"]) > 1  # summed over merged windows
    for d in runs["overfeat"]:
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 600 and y + h <= 400 and w > 0 and h > 0
