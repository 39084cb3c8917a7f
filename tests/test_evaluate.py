"""densify.evaluate: VOC matching, all-point AP, mAP and precision/recall on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from densify.digits.metrics import average_precision, evaluate, match_image, precision_recall


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
    preds = [_pred([A, B, C], [0.9, 0.5, 0.2], [0, 0, 0])]
    gts = [_gt([A, B], [0, 0])]
    assert precision_recall(preds, gts, 0.5) == precision_recall(preds, gts, 0.5)
    high = precision_recall(preds, gts, 0.51)
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
