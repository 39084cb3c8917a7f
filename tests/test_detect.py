"""Detections: thresholds, background, NMS, box refinement and COCO results JSON."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from squares import CATEGORIES, SIDE, WINDOW, square_detector, square_image

from densify.convert.geometry import Geometry
from densify.scan import detect as detect_module
from densify.scan.detect import coco_results, detect, object_region
from densify.scan.pyramid import levels
from densify.scan.result import ScaleMap
from densify.scan.scanner import Scanner

GEOMETRY = Geometry(window=(8, 8), stride=(4, 4))


def _map(probs: torch.Tensor, image_hw=(16, 16)) -> ScaleMap:
    """A one-scale map at factor 1 over a ``image_hw`` image (3×3 cells for 16×16)."""
    (level,) = levels(image_hw, (8, 8), (4, 4), [1.0])
    assert GEOMETRY.output_size(*level.input_size) == tuple(probs.shape[1:])
    return ScaleMap(level, GEOMETRY, probs)


def _probs(cells: dict[tuple[int, int], tuple[int, float]], classes: int = 3) -> torch.Tensor:
    """3×3 cells, class 0 (background) everywhere except ``{(i, j): (class, p)}``."""
    probs = torch.zeros(classes, 3, 3)
    probs[0] = 1.0
    for (i, j), (cls, p) in cells.items():
        probs[:, i, j] = (1 - p) / (classes - 1)
        probs[cls, i, j] = p
    return probs


def test_background_never_yields_boxes():
    probs = _probs({(1, 1): (2, 0.9)})  # every other cell: background with probability 1
    det = detect([_map(probs)], threshold=0.5, background_class=0)
    assert det.labels.tolist() == [2] and det.boxes[0].tolist() == [4, 4, 12, 12]
    with pytest.raises(ValueError, match="background class"):
        detect([_map(probs)], classes=[0, 2], background_class=0)


def test_without_a_background_class_every_class_counts():
    det = detect([_map(_probs({}))], threshold=0.5)
    assert len(det) > 0 and set(det.labels.tolist()) == {0}


def test_threshold_is_inclusive_and_checked():
    probs = _probs({(0, 0): (1, 0.6)})
    assert len(detect([_map(probs)], threshold=0.6, background_class=0)) == 1
    assert len(detect([_map(probs)], threshold=0.61, background_class=0)) == 0
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            detect([_map(probs)], threshold=bad)


def test_nms_merges_duplicates_of_one_class_only():
    probs = _probs({(1, 1): (1, 0.9), (1, 2): (1, 0.8), (2, 2): (2, 0.7)})
    det = detect([_map(probs)], threshold=0.5, iou=0.3, background_class=0)
    # (1, 1) and (1, 2) overlap with IoU 1/3 > 0.3: one box; class 2 overlaps but is kept.
    assert det.labels.tolist() == [1, 2] and det.scores.tolist() == pytest.approx([0.9, 0.7])
    loose = detect([_map(probs)], threshold=0.5, iou=0.5, background_class=0)
    assert len(loose) == 3 and loose.scores.tolist() == sorted(loose.scores.tolist(), reverse=True)


def test_classes_restrict_the_output():
    probs = _probs({(0, 0): (1, 0.9), (2, 2): (2, 0.9)})
    det = detect([_map(probs)], threshold=0.5, classes=[2], background_class=0)
    assert det.labels.tolist() == [2]


def test_candidates_are_capped_before_nms(monkeypatch, caplog):
    monkeypatch.setattr(detect_module, "MAX_CANDIDATES", 4)
    probs = torch.full((2, 3, 3), 0.5)
    with caplog.at_level(logging.INFO, logger="densify.scan.detect"):
        det = detect([_map(probs)], threshold=0.5, iou=1.0)
    assert len(det) == 4 and "keeping the best 4" in caplog.text


def test_object_region_is_centred():
    assert object_region((28, 28), 20, 0.6) == pytest.approx((8, 4, 20, 24))
    assert object_region((28, 28), 40, 1.0) == (0, 0, 28, 28)  # never beyond the window
    with pytest.raises(ValueError):
        object_region((28, 28), 0)


def test_region_shrinks_the_boxes():
    probs = _probs({(1, 1): (1, 0.9)})
    det = detect([_map(probs)], background_class=0, region=object_region((8, 8), 4, 0.5))
    assert det.boxes[0].tolist() == [7, 6, 9, 10]  # window (4, 4, 12, 12), centred 2 x 4 box


def test_coco_results_format():
    probs = _probs({(1, 1): (2, 0.9)})
    det = detect([_map(probs)], background_class=0)
    entries = coco_results(det, "scene", ["bg", "cat", "dog"])
    assert entries == [{"image_id": "scene", "category_id": 2, "category_name": "dog",
                        "bbox": [4.0, 4.0, 8.0, 8.0], "score": 0.9}]
    assert json.loads(json.dumps(entries)) == entries
    assert det.to_coco("scene", ["bg", "cat", "dog"]) == entries


def test_scanner_finds_the_square_once_across_scales():
    region = object_region((WINDOW, WINDOW), SIDE, 1.0)
    scanner = Scanner(square_detector(), scales=[0.85, 1.0, 1.2], output_stride=8, device="cpu",
                      input_size=(WINDOW, WINDOW), mean=(0, 0, 0), std=(1, 1, 1),
                      categories=CATEGORIES, background_class=0, object_box=region)
    result = scanner(square_image(120, 160, (50, 90)))
    det = result.detections(threshold=0.5, iou=0.3)
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    assert (centres - torch.tensor([90.0, 50.0])).abs().max() <= 8  # all on the square
    x1, y1, x2, y2 = det.boxes[0].tolist()
    assert abs((x1 + x2) / 2 - 90) <= 5 and abs((y1 + y2) / 2 - 50) <= 5
    assert 8 <= x2 - x1 <= 16  # the square's size, not the 32 px window
    # Neighbouring cells (8 px apart) give 12 px boxes that overlap little: a low IoU merges.
    assert len(result.detections(threshold=0.5, iou=0.1)) == 1
    whole = result.detections(threshold=0.5, iou=0.3, boxes="window")
    assert (whole.boxes[0, 2] - whole.boxes[0, 0]) > 25
    with pytest.raises(ValueError, match="background class"):
        result.detections(classes=["background"])
