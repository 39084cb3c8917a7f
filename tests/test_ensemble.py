"""Ensembles (densify.scan.ensemble): several models of the same classes scanned as one.

Small random convolutional nets of different windows and strides on the CPU; the ensemble's
scores and heat maps are compared with the members' own, computed in float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from densify import Ensemble, Scanner, load_result, save_result
from densify.cli import main
from densify.errors import ParameterError
from densify.scan.ensemble import ensemble_result

SCENE = Path(__file__).resolve().parents[1] / "demos" / "digits_scene.png"


def _scanner(window: int, classes: int = 3, seed: int = 0, scales=(1.0, 0.5)) -> Scanner:
    """A random net on 1-channel windows: ``window`` 4 (stride 1) or 8 (stride 2)."""
    torch.manual_seed(seed)
    if window == 4:
        net = nn.Sequential(nn.Conv2d(1, classes, 4), nn.Flatten())
    else:  # 8 → conv 6 → pool 3 → conv 1: stride 2
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(4, classes, 3), nn.Flatten())
    return Scanner(net, input_size=(1, window, window), mean=(0.5,), std=(0.25,),
                   scales=list(scales), output_stride=None, device="cpu")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(7)
    return torch.rand(1, 24, 30)


def _f64(result, what: str) -> torch.Tensor:
    value = result.scores() if what == "scores" else result.heatmaps([0, 1, 2])
    return value.double()


def test_an_ensemble_of_one_is_the_model(image):
    scanner = _scanner(4)
    single, ensemble = scanner(image), Ensemble([scanner])(image)
    assert ensemble.weights is None and len(ensemble.maps) == len(single.maps)
    for a, b in zip(single.maps, ensemble.maps, strict=True):
        assert torch.equal(a.probs, b.probs) and a.geometry == b.geometry
    assert torch.equal(single.scores(), ensemble.scores())
    assert torch.equal(single.heatmaps([0, 2]), ensemble.heatmaps([0, 2]))
    d1, d2 = single.detections(0.4), ensemble.detections(0.4)
    assert len(d1) > 0 and torch.equal(d1.boxes, d2.boxes) and torch.equal(d1.scores, d2.scores)


@pytest.mark.parametrize("weights", [None, (3.0, 1.0)])
def test_scores_and_maps_are_the_weighted_mean_of_the_members(image, weights):
    a, b = _scanner(4, seed=1), _scanner(4, seed=2)
    ra, rb = a(image), b(image)
    assert not torch.allclose(ra.scores(), rb.scores(), atol=1e-3)  # two different models
    result = Ensemble([a, b], weights=weights)(image)
    wa, wb = (0.5, 0.5) if weights is None else (0.75, 0.25)
    for what in ("scores", "maps"):
        want = wa * _f64(ra, what) + wb * _f64(rb, what)
        torch.testing.assert_close(_f64(result, what), want, rtol=0, atol=1e-6)
    assert result.top_classes(1)[0].index == int((wa * ra.scores() + wb * rb.scores()).argmax())


def test_models_of_different_window_and_stride_average_registered_maps(image):
    """A 4-px window at stride 1 over two scales and an 8-px window at stride 2 over one: each
    model's maps are painted by its own geometry, then the two models weigh half each."""
    a, b = _scanner(4, seed=3), _scanner(8, seed=4, scales=(1.0,))
    ra, rb = a(image), b(image)
    assert ra.maps[0].cells != rb.maps[0].cells and b.output_stride == 2
    result = Ensemble([a, b])(image)
    assert result.weights == (0.25, 0.25, 0.5)
    assert [m.geometry for m in result.maps] == [m.geometry for m in (*ra.maps, *rb.maps)]
    for what in ("scores", "maps"):
        torch.testing.assert_close(_f64(result, what), (_f64(ra, what) + _f64(rb, what)) / 2,
                                   rtol=0, atol=1e-6)
    panel = result.panel_maps([1], (12, 15))[0, -1]  # the aggregate column of a contact sheet
    want = (ra.panel_maps([1], (12, 15))[0, -1] + rb.panel_maps([1], (12, 15))[0, -1]) / 2
    torch.testing.assert_close(torch.from_numpy(panel), torch.from_numpy(want), atol=1e-6, rtol=0)


def test_detections_pool_the_members_boxes(image):
    """Twice the same model detects what the model detects (its cells averaged with
    themselves); two models of different geometry find the union of their boxes, merged."""
    a, b = _scanner(4, seed=5), _scanner(8, seed=6)
    single = a(image).detections(0.45)
    twice = Ensemble([a, a])(image).detections(0.45)
    assert len(single) > 0
    assert torch.equal(single.boxes, twice.boxes) and torch.equal(single.scores, twice.scores)
    both = Ensemble([a, b])(image).detections(0.45, iou=1.0)  # nothing suppressed
    ra, rb = a(image).detections(0.45, iou=1.0), b(image).detections(0.45, iou=1.0)
    assert len(both) == len(ra) + len(rb)
    torch.testing.assert_close(both.scores.sort().values,
                               torch.cat([ra.scores, rb.scores]).sort().values)


class ScoresAndBoxes(nn.Module):
    """Scores of 3 classes and a class-agnostic box per 4-px window."""

    def __init__(self):
        super().__init__()
        self.scores, self.boxes = nn.Conv2d(1, 3, 4), nn.Conv2d(1, 4, 4)

    def forward(self, x):
        return self.scores(x).flatten(1), 0.1 * self.boxes(x).flatten(1)


def _boxed_and_plain(window: int):
    torch.manual_seed(8)
    common = {"mean": (0.5,), "std": (0.25,), "scales": [1.0], "output_stride": None,
              "device": "cpu", "object_box": (1.0, 0.5, 3.0, 3.5)}
    boxed = Scanner(ScoresAndBoxes().eval(), scores=0, boxes=1, input_size=(1, 4, 4), **common)
    net = (nn.Sequential(nn.Conv2d(1, 3, 4), nn.Flatten()) if window == 4 else
           _scanner(8, seed=9).dense)
    return boxed, Scanner(net, input_size=(1, window, window), **common)


def test_members_of_other_geometry_keep_their_own_boxes(image):
    """``boxes="auto"``: the box head's member proposes regressed boxes, the other (an 8-px
    window at stride 2: no cells in common) its object box, not whole windows, as each alone."""
    boxed, plain = _boxed_and_plain(8)
    alone = [s(image).detections(0.45, iou=1.0) for s in (boxed, plain)]
    both = Ensemble([boxed, plain])(image).detections(0.45, iou=1.0)
    assert all(len(d) > 0 for d in alone) and len(both) == sum(len(d) for d in alone)
    got = {tuple(b) for b in both.boxes.tolist()}
    for d in alone:
        assert {tuple(b) for b in d.boxes.tolist()} <= got
    sizes = alone[1].boxes[:, 2:] - alone[1].boxes[:, :2]
    assert torch.all(sizes <= torch.tensor([2.0, 3.0]))  # object boxes, not 8-px windows


def test_members_of_one_geometry_detect_on_averaged_cells(image):
    """Cells that see the same windows are averaged before proposing: a detection's score is
    the members' mean probability there, and a member without a box head takes the box head's
    boxes."""
    a, b = _scanner(4, seed=1), _scanner(4, seed=2)
    ra, rb = a(image), b(image)
    found = Ensemble([a, b])(image).detections(0.4, iou=1.0)
    means = [(ma.probs.double() + mb.probs.double()) / 2 for ma, mb in
             zip(ra.maps, rb.maps, strict=True)]
    want = torch.cat([p[p >= 0.4] for p in means]).sort(descending=True).values
    assert len(found) == want.numel() > 0
    torch.testing.assert_close(found.scores.double(), want, atol=1e-6, rtol=0)
    boxed, plain = _boxed_and_plain(4)
    regressed = {tuple(b) for b in boxed(image).detections(1e-6, iou=1.0).boxes.tolist()}
    mixed = Ensemble([boxed, plain])(image).detections(0.4, iou=1.0)
    assert len(mixed) > 0 and {tuple(b) for b in mixed.boxes.tolist()} <= regressed


def test_a_result_file_keeps_each_models_geometry(tmp_path, image):
    a, b = _scanner(4, seed=3), _scanner(8, seed=4, scales=(1.0,))
    result = Ensemble([a, b])(image)
    loaded = load_result(save_result(result, tmp_path / "e.npz"))
    assert loaded.weights == result.weights
    assert [m.geometry for m in loaded.maps] == [m.geometry for m in result.maps]
    torch.testing.assert_close(loaded.heatmaps([0, 1]), result.heatmaps([0, 1]), atol=2e-5,
                               rtol=0)
    assert [t.index for t in loaded.top_classes(3)] == [t.index for t in result.top_classes(3)]


def test_models_with_different_classes_are_refused_in_one_line():
    with pytest.raises(ParameterError, match=r"models 1 and 2 have different classes: 3 .* vs "
                                             r"4 .*same classes") as info:
        Ensemble([_scanner(4, classes=3), _scanner(4, classes=4)])
    assert "\n" not in str(info.value)
    with pytest.raises(ParameterError, match="2 non-negative numbers"):
        Ensemble([_scanner(4), _scanner(4)], weights=[1.0])
    with pytest.raises(ParameterError, match="different images"):
        ensemble_result([_scanner(4)(torch.rand(1, 9, 9)), _scanner(4)(torch.rand(1, 9, 10))])


def test_cli_detect_with_two_models(tmp_path):
    """``--model a --model b`` end to end on the demo scene; two copies of the shipped model
    detect what it detects alone (the library's single-model scan)."""
    result = CliRunner().invoke(main, ["detect", str(SCENE), "-m", "lenet5-digits", "-m",
                                       "lenet5-digits", "--scales", "1", "-o", str(tmp_path),
                                       "-q"])
    assert result.exit_code == 0, result.output
    assert "ensemble of 2" in result.output
    found = json.loads((tmp_path / "detections.json").read_text())
    scanner = Scanner("lenet5-digits", scales=1, device="cpu")
    single = scanner(SCENE).detections(scanner.default_threshold)
    assert len(found) == len(single) > 0
    assert [d["score"] for d in found] == [round(float(s), 5) for s in single.scores]


def test_cli_refuses_mismatched_weights_and_classes(tmp_path):
    models = ["-m", "lenet5-digits", "-m", "lenet5"]
    result = CliRunner().invoke(main, ["heatmap", str(SCENE), *models, "-w", "DEFAULT", "-w",
                                       "random", "-w", "random", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "3 values for 2 models" in result.output
    result = CliRunner().invoke(main, ["heatmap", str(SCENE), *models, "-o", str(tmp_path)])
    assert result.exit_code != 0 and "different classes: 11 (" in result.output
    assert not list(tmp_path.glob("*.png"))


def test_cli_heatmap_pairs_each_model_with_its_weights(tmp_path):
    """``-m a -w DEFAULT -m b -w random``: the first model's maps in the result file are the
    trained model's (the files store probabilities to 7.6e-6)."""
    result = CliRunner().invoke(main, ["heatmap", str(SCENE), "-m", "lenet5-digits", "-w",
                                       "DEFAULT", "-m", "lenet5-digits", "-w", "random",
                                       "--scales", "1", "--sheet", "-o", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "2 models, 2 maps" in result.output and (tmp_path / "digits_scene_sheet.png").is_file()
    saved = load_result(tmp_path / "digits_scene_heatmap.npz")
    trained = Scanner("lenet5-digits", scales=1, device="cpu")(SCENE)
    assert len(saved.maps) == 2 and saved.weights is None
    torch.testing.assert_close(saved.maps[0].probs, trained.maps[0].probs, atol=1e-5, rtol=0)
    assert not torch.allclose(saved.maps[1].probs, trained.maps[0].probs, atol=1e-2)
