"""Per-class box regression: ``(4·K, h, w)`` maps, each detection the box of its own class."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from densify.convert import verify
from densify.convert.dense import convolutionize
from densify.convert.geometry import Geometry
from densify.errors import ParameterError
from densify.models import archs
from densify.scan.detect import detect
from densify.scan.maps import ScaleMap
from densify.scan.pyramid import levels

GEOMETRY = Geometry(window=(8, 8), stride=(4, 4))


def _level():
    (level,) = levels((16, 16), (8, 8), (4, 4), [1.0])
    return level


def _probs() -> torch.Tensor:
    """3 classes on 3×3 cells: background everywhere but class 1 at (0, 0) and class 2 at
    (2, 2)."""
    probs = torch.zeros(3, 3, 3)
    probs[0] = 1.0
    probs[:, 0, 0] = torch.tensor([0.05, 0.9, 0.05])
    probs[:, 2, 2] = torch.tensor([0.1, 0.1, 0.8])
    return probs


def _regression() -> torch.Tensor:
    """Constant offsets per class (window units): background none, class 1 the window's left
    half, class 2 its bottom-right quarter."""
    per_class = torch.tensor([[0, 0, 0, 0], [0, 0, -0.5, 0], [0.5, 0.5, 0, 0]])
    return per_class.reshape(12, 1, 1).expand(12, 3, 3).clone()


@pytest.mark.parametrize("merge", ["nms", "overfeat"])
def test_each_detection_takes_its_own_class_box(merge):
    """Window of cell (0, 0) is [0, 0, 8, 8], of (2, 2) [8, 8, 16, 16]. Mutations caught: the
    first four channels for every class (the background's box: whole windows), one class's
    channels for all, or a label-index shift (class k reading k - 1 or k + 1)."""
    m = ScaleMap(_level(), GEOMETRY, _probs(), _regression())
    assert m.per_class
    det = detect([m], threshold=0.5, background_class=0, merge=merge)
    found = {int(c): b for c, b in zip(det.labels, det.boxes.tolist(), strict=True)}
    assert found == {1: [0.0, 0.0, 4.0, 8.0], 2: [12.0, 12.0, 16.0, 16.0]}
    windows = detect([m], threshold=0.5, background_class=0, regress=False)
    assert sorted(windows.boxes.tolist()) == [[0, 0, 8, 8], [8, 8, 16, 16]]


def test_class_agnostic_regression_is_shared():
    m = ScaleMap(_level(), GEOMETRY, _probs(), _regression()[4:8])  # class 1's offsets for all
    assert not m.per_class
    det = detect([m], threshold=0.5, background_class=0)
    found = {int(c): b for c, b in zip(det.labels, det.boxes.tolist(), strict=True)}
    assert found == {1: [0.0, 0.0, 4.0, 8.0], 2: [8.0, 8.0, 12.0, 16.0]}


@pytest.mark.parametrize("shape, words", [((8, 3, 3), "4 x 3"), ((12, 3), "4 x 3"),
                                          ((12, 2, 3), "cells")])
def test_regression_shape_errors_are_one_line(shape, words):
    with pytest.raises(ParameterError, match=words) as info:
        ScaleMap(_level(), GEOMETRY, _probs(), torch.zeros(shape))
    assert "\n" not in str(info.value)


def test_per_class_box_of_a_missing_class_is_refused():
    m = ScaleMap(_level(), GEOMETRY, _probs(), _regression())
    with pytest.raises(ParameterError, match="class 3 out of range 0..2"):
        m.regressed_boxes(3)


def test_per_class_lenet_converts_exactly():
    """The per-class digit spotter's architecture: the dense net equals the classifier and both
    heads on the canonical window, on every crop and in the head (densify's self-check)."""
    torch.manual_seed(0)
    model = archs.lenet5_boxes_per_class(11).double().eval()
    dense = convolutionize(model, (1, 28, 28))
    assert [o.channels for o in dense.outputs] == [11, 44]
    for check in (verify.check_canonical(model, dense), verify.check_head(model, dense),
                  verify.check_crops(model, dense)):
        assert check.passed and (check.count > 1 or check.name == "canonical"), check
    x = torch.randn(1, 1, 40, 36, dtype=torch.float64)
    torch.testing.assert_close(dense(x)[1][:, :, 2, 1], model(x[:, :, 8:36, 4:32])[1],
                               rtol=1e-12, atol=1e-12)


def test_shipped_per_class_spotter_shares_the_classifier():
    """``lenet5-digits-pc``: the default model's classifier bit for bit (the card's digest of
    the tensors), a 44-channel per-class box output the scanner reads, the background's box
    zeroed (never used)."""
    from densify.models.catalogue import MODELS, WEIGHTS_DIR
    from densify.scan.scanner import Scanner

    if "lenet5-digits-pc" not in MODELS:
        pytest.skip("lenet5_digits_pc.json absent")
    cards = [json.loads((WEIGHTS_DIR / f).read_text()) for f in ("lenet5_digits.json",
                                                                   "lenet5_digits_pc.json")]
    assert cards[1]["classifier_tensors_sha256"] == cards[0]["classifier_tensors_sha256"]
    state = torch.load(WEIGHTS_DIR / cards[1]["file"], weights_only=True)
    digest = hashlib.sha256()
    for _, key in sorted(archs.LeNet5Boxes.classifier_keys().items()):
        digest.update(state[key].numpy().tobytes())
    assert digest.hexdigest() == cards[1]["classifier_tensors_sha256"]
    assert not state["box_head.2.weight"][40:].any() and not state["box_head.2.bias"][40:].any()
    scanner = Scanner("lenet5-digits-pc", scales=[1.0], device="cpu")
    assert scanner.boxes_output.channels == 44 and scanner.box_format == "offsets"
    m = scanner(torch.rand(1, 40, 48)).maps[0]
    assert m.per_class and m.regression.shape == (44, *m.cells)


def test_per_class_regression_survives_the_result_file(tmp_path):
    """A saved scan of the per-class spotter reloads per-class and gives the same detections."""
    from pathlib import Path

    from densify.io.image import read_image
    from densify.models.catalogue import MODELS
    from densify.scan.resultfile import load_result, save_result
    from densify.scan.scanner import Scanner

    if "lenet5-digits-pc" not in MODELS:
        pytest.skip("lenet5_digits_pc.json absent")
    scene = read_image(Path(__file__).resolve().parent.parent / "demos" / "digits_scene.png")
    result = Scanner("lenet5-digits-pc", scales=2, device="cpu")(scene[100:500, 600:1000])
    loaded = load_result(save_result(result, tmp_path / "pc.npz"))
    assert all(m.per_class and m.regression.shape[0] == 44 for m in loaded.maps)
    want, got = result.detections(0.9), loaded.detections(0.9)
    assert len(want) >= 1 and torch.equal(got.labels.sort().values, want.labels.sort().values)
    assert torch.allclose(want.boxes.sort(dim=0).values, got.boxes.sort(dim=0).values, atol=0.05)
