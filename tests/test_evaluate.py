"""Detection metrics on hand-made cases: COCOeval (pycocotools, what ``densify evaluate`` reports)
and the VOC matching/all-point AP code kept as its cross-check, precision/recall."""

from __future__ import annotations

import math

import pytest
import torch

from densify.digits import synth
from densify.digits.coco import coco_metrics
from densify.digits.metrics import average_precision, evaluate, match_image, precision_recall
from densify.errors import ParameterError


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]


def test_perfect_predictions_give_ap_one():
    gts = [_gt([A, B], [0, 1]), _gt([C], [2])]
    preds = [_pred([B, A], [0.3, 0.9], [1, 0]), _pred([C], [0.5], [2])]
    result = evaluate(preds, gts)
    assert result.ap.tolist() == [1.0, 1.0, 1.0]
    assert result.mean_ap == 1.0


def test_hand_computed_ap_uses_all_point_envelope():
    # Scores in order: TP, FP, TP, TP over 3 objects. Precisions 1, 1/2, 2/3, 3/4; the envelope at
    # the three recall steps is 1, 3/4, 3/4, so AP = (1 + 3/4 + 3/4) / 3 = 5/6. Without the
    # envelope it would be (1 + 2/3 + 3/4) / 3.
    far = [100, 100, 110, 110]
    preds = [_pred([A, far, B, C], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]
    result = evaluate(preds, [_gt([A, B, C], [0, 0, 0])])
    assert result.ap[0].item() == pytest.approx(5 / 6)


def test_missed_object_caps_ap():
    # TP (precision 1), FP, TP (precision 2/3), and the third object is never found:
    # AP = (1 + 2/3 + 0) / 3.
    far = [100, 100, 110, 110]
    preds = [_pred([A, far, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap = evaluate(preds, [_gt([A, B, C], [0, 0, 0])]).ap[0].item()
    assert ap == pytest.approx((1 + 2 / 3) / 3)


def test_false_positive_above_a_true_positive_lowers_ap_and_precision():
    gts = [_gt([A], [0])]
    clean = evaluate([_pred([A], [0.9], [0])], gts).ap[0].item()
    noisy = evaluate([_pred([A, C], [0.5, 0.9], [0, 0])], gts).ap[0].item()
    assert clean == 1.0 and noisy == pytest.approx(0.5)
    pr = precision_recall([_pred([A, C], [0.5, 0.9], [0, 0])], gts, score_threshold=0.0)
    assert (pr.tp, pr.fp, pr.fn, pr.precision, pr.recall) == (1, 1, 0, 0.5, 1.0)


def test_duplicate_detections_are_false_positives():
    preds = [_pred([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    gts = [_gt([A, B], [0, 0])]
    tp = match_image(preds[0]["boxes"], preds[0]["scores"], preds[0]["labels"],
                     gts[0]["boxes"], gts[0]["labels"])
    assert tp.tolist() == [True, False, True]
    assert evaluate(preds, gts).ap[0].item() == pytest.approx((1 + 2 / 3) / 2)


def test_iou_threshold_is_inclusive():
    gts = [_gt([[0, 0, 10, 10]], [0])]
    exactly_half = _pred([[0, 0, 10, 20]], [1.0], [0])  # IoU 100 / 200
    below_half = _pred([[0, 0, 10, 21]], [1.0], [0])  # IoU 100 / 210
    assert evaluate([exactly_half], gts).ap[0].item() == 1.0
    assert evaluate([below_half], gts).ap[0].item() == 0.0


def test_wrong_label_matches_nothing():
    result = evaluate([_pred([A], [0.9], [1])], [_gt([A], [0])], num_classes=2)
    assert result.ap[0].item() == 0.0
    assert math.isnan(result.ap[1].item())  # class 1 has no ground truth: left out of the mean
    assert result.mean_ap == 0.0


def test_voc_rule_matches_best_overlap_only():
    # Two overlapping objects; both predictions overlap the first best. VOC counts the second as
    # a duplicate (COCO would give it the second object).
    g1, g2 = [0, 0, 10, 10], [0, 1, 10, 11]
    tp = match_image(torch.tensor([g1, g1], dtype=torch.float32), torch.tensor([0.9, 0.8]),
                     torch.tensor([0, 0]), torch.tensor([g1, g2], dtype=torch.float32),
                     torch.tensor([0, 0]))
    assert tp.tolist() == [True, False]


def test_scores_are_ranked_across_images():
    # Image 0: an unmatched prediction at 0.9; image 1: a hit at 0.8. Precision at the hit: 1/2.
    preds = [_pred([C], [0.9], [0]), _pred([A], [0.8], [0])]
    gts = [_gt([], []), _gt([A], [0])]
    assert evaluate(preds, gts).ap[0].item() == pytest.approx(0.5)


def test_no_predictions_give_zero_ap_and_nan_precision():
    gts = [_gt([A], [0])]
    empty = _pred([], [], [])
    assert evaluate([empty], gts).mean_ap == 0.0
    pr = precision_recall([empty], gts, score_threshold=0.5)
    assert math.isnan(pr.precision) and pr.recall == 0.0 and pr.fn == 1


def test_precision_recall_threshold_keeps_scores_at_or_above():
    """A score equal to the threshold is kept, one just above it is not. Mutation caught:
    ``scores > score_threshold`` (``mid`` loses the 0.5 box; the old first line compared a value
    with itself)."""
    preds = [_pred([A, B, C], [0.9, 0.5, 0.2], [0, 0, 0])]
    gts = [_gt([A, B], [0, 0])]
    high = precision_recall(preds, gts, 0.51)
    assert precision_recall(preds, gts, 0.5 + 1e-6) == high  # just above the 0.5 score
    mid = precision_recall(preds, gts, 0.5)
    low = precision_recall(preds, gts, 0.0)
    assert (high.tp, high.fp, high.recall) == (1, 0, 0.5)
    assert (mid.tp, mid.fp, mid.precision, mid.recall) == (2, 0, 1.0, 1.0)
    assert (low.tp, low.fp, low.precision) == (2, 1, pytest.approx(2 / 3))


def test_average_precision_edge_cases():
    assert math.isnan(average_precision(torch.tensor([True]), 0))
    assert average_precision(torch.zeros(0, dtype=torch.bool), 3) == 0.0
    assert average_precision(torch.tensor([False, True]), 1) == pytest.approx(0.5)


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="one .* entry per image"):
        evaluate([_pred([A], [0.9], [0])], [])
    with pytest.raises(ValueError, match="shape"):
        evaluate([{"boxes": torch.zeros(1, 5), "scores": [1.0], "labels": [0]}], [_gt([A], [0])])
    with pytest.raises(ValueError, match="lacks"):
        evaluate([{"boxes": [A], "labels": [0]}], [_gt([A], [0])])
    with pytest.raises(ValueError, match="num_classes"):
        evaluate([_pred([A], [0.9], [3])], [_gt([A], [0])], num_classes=2)


# --- COCO evaluation (pycocotools), cross-checked against the VOC code above ----------------------


def _coco_gt(boxes_per_image: list[list[list[float]]], labels_per_image: list[list[int]]) -> dict:
    images, annotations = [], []
    for i, (boxes, labels) in enumerate(zip(boxes_per_image, labels_per_image, strict=True)):
        images.append({"id": i, "file_name": f"{i}.png", "height": 200, "width": 200})
        for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in range(3)]}


def _coco_det(image_id, boxes, scores, labels) -> list[dict]:
    return [{"image_id": image_id, "category_id": lab, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": s} for (x1, y1, x2, y2), s, lab in zip(boxes, scores, labels, strict=True)]


def test_coco_ap50_agrees_with_the_voc_envelope():
    """The hand-computed VOC case above (AP 5/6): COCOeval's 101-point AP50 is within 0.01."""
    far = [100, 100, 110, 110]
    gt = _coco_gt([[A, B, C]], [[0, 0, 0]])
    dets = _coco_det(0, [A, far, B, C], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])
    metrics = coco_metrics(gt, dets)
    voc = evaluate([_pred([A, far, B, C], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])],
                   [_gt([A, B, C], [0, 0, 0])]).ap[0].item()
    assert metrics["AP50"] == pytest.approx(voc, abs=0.01) and voc == pytest.approx(5 / 6)
    assert metrics["ap50_per_class"]["0"] == pytest.approx(metrics["AP50"])


def test_coco_ap75_separates_loose_from_tight_boxes():
    gt = _coco_gt([[[0, 0, 10, 10]], [[0, 0, 10, 10]]], [[1], [1]])
    loose = [0, 0, 10, 16]  # IoU 100/160 = 0.625: a hit at 0.5, a miss at 0.75
    tight = [0, 0, 10, 11]  # IoU 0.91
    both = _coco_det(0, [loose], [0.8], [1]) + _coco_det(1, [tight], [0.9], [1])
    metrics = coco_metrics(gt, both)
    assert metrics["AP50"] == pytest.approx(1.0)
    # At 0.75 the tight box (ranked first) is found, the loose one missed: precision 1 up to
    # recall 1/2, 51 of COCO's 101 recall points.
    assert metrics["AP75"] == pytest.approx(51 / 101)
    # AP: both hit at IoU 0.50-0.60 (3 of 10 thresholds), the tight one to 0.90 (6), none at 0.95.
    assert metrics["AP"] == pytest.approx((3 + 6 * 51 / 101) / 10)
    assert math.isnan(metrics["ap50_per_class"]["0"])  # no ground truth of class 0


def test_coco_metrics_refuse_unknown_images_and_handle_no_detections():
    gt = _coco_gt([[A]], [[0]])
    with pytest.raises(ParameterError, match="image_id"):
        coco_metrics(gt, _coco_det(7, [A], [0.9], [0]))
    assert coco_metrics(gt, [])["AP50"] == 0.0
    with pytest.raises(ParameterError, match="annotations"):
        coco_metrics({"images": []}, [])


def test_scene_ground_truth_is_coco_json_of_its_boxes():
    scene = synth.make_scene(5, size=(240, 320), heights=(24.0, 60.0), n_digits=6)
    truth = synth.coco_ground_truth([(5, "s.png", scene)])
    assert truth["images"] == [{"id": 5, "file_name": "s.png", "height": 240, "width": 320}]
    assert len(truth["annotations"]) == len(scene.labels) > 0
    for ann, box, label in zip(truth["annotations"], scene.boxes.tolist(), scene.labels.tolist(),
                               strict=True):
        x, y, w, h = ann["bbox"]
        assert [x, y, x + w, y + h] == pytest.approx(box) and ann["category_id"] == label
    dets = _coco_det(5, scene.boxes.tolist(), [1.0] * len(scene.labels), scene.labels.tolist())
    assert coco_metrics(truth, dets)["AP"] == pytest.approx(1.0)
