"""OverFeat's greedy merge: the match score, the merge against a direct transcription of the
paper's loop, and its use in detections."""

from __future__ import annotations

import pytest
import torch

from densify.convert.geometry import Geometry
from densify.errors import ParameterError
from densify.scan.detect import detect
from densify.scan.maps import ScaleMap
from densify.scan.merge import greedy_merge, match_scores
from densify.scan.pyramid import levels


def _map(cells: dict[tuple[int, int], tuple[int, float]]) -> ScaleMap:
    """A 16×16 image at factor 1, 8 px windows, stride 4: 3×3 cells, class 0 (background)
    everywhere except ``{(i, j): (class, p)}``."""
    probs = torch.zeros(3, 3, 3)
    probs[0] = 1.0
    for (i, j), (cls, p) in cells.items():
        probs[:, i, j] = (1 - p) / 2
        probs[cls, i, j] = p
    (level,) = levels((16, 16), (8, 8), (4, 4), [1.0])
    return ScaleMap(level, Geometry(window=(8, 8), stride=(4, 4)), probs)


def _paper_merge(boxes, scores, threshold):
    """Section 4.3 as written: argmin over all pairs, stop above t, replace the pair by its
    average with the summed score. O(N^3), for checking."""
    items = [(b.double(), float(s)) for b, s in zip(boxes, scores, strict=True)]
    while len(items) > 1:
        stacked = torch.stack([b for b, _ in items])
        match = match_scores(stacked, stacked)
        match.fill_diagonal_(float("inf"))
        flat = int(match.argmin())
        i, j = divmod(flat, len(items))
        if match[i, j] > threshold:
            break
        merged = ((items[i][0] + items[j][0]) / 2, items[i][1] + items[j][1])
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [merged]
    return items


def _random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 60
    sizes = 8 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 20
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    return boxes.float(), torch.rand(n, generator=gen).float()


def test_match_score_terms():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert float(match_scores(box, box)) == 0.0
    shifted = box + torch.tensor([5.0, 0.0, 5.0, 0.0])
    expected = 5 / 10 + (1 - 50 / 150)  # half a side apart, IoU 1/3
    assert float(match_scores(box, shifted)) == pytest.approx(expected)
    # Scale-free: the same configuration ten times larger scores the same.
    assert float(match_scores(box * 10, shifted * 10)) == pytest.approx(expected)
    far = box + 11
    assert float(match_scores(box, far)) >= 1.0  # disjoint: never merged below t = 1
    a, b = _random_boxes(5, 0)[0], _random_boxes(4, 1)[0]
    torch.testing.assert_close(match_scores(a, b), match_scores(b, a).T)


@pytest.mark.parametrize("seed, threshold", [(0, 0.8), (1, 1.2), (2, 0.5)])
def test_merge_equals_the_papers_loop(seed, threshold):
    boxes, scores = _random_boxes(40, seed)
    labels = torch.zeros(40, dtype=torch.long)
    got_boxes, got_scores, _ = greedy_merge(boxes, scores, labels, threshold)
    expected = sorted(_paper_merge(boxes, scores, threshold), key=lambda it: -it[1])
    assert 1 < len(expected) < 40  # the threshold stops it part-way: the test can tell
    assert len(got_scores) == len(expected)
    want = torch.tensor([s for _, s in expected], dtype=torch.float64)
    torch.testing.assert_close(got_scores.double(), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_boxes.double(), torch.stack([b for b, _ in expected]),
                               rtol=1e-5, atol=1e-4)


def test_merge_keeps_classes_apart_and_accumulates_confidence():
    box = torch.tensor([10.0, 10.0, 30.0, 30.0])
    boxes = torch.stack([box, box + 2, box - 2, box + 1, box + 200])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, 1, 1, 2, 1])
    out_boxes, out_scores, out_labels = greedy_merge(boxes, scores, labels)
    assert out_labels.tolist() == [1, 2, 1]  # by decreasing accumulated score
    assert out_scores.tolist() == pytest.approx([2.4, 0.6, 0.5])
    # (box, box+2) merge first (closest), then their average box+1 with box-2: mean box - 0.5.
    torch.testing.assert_close(out_boxes[0], box - 0.5)
    torch.testing.assert_close(out_boxes[2], box + 200)


def test_threshold_zero_merges_only_identical_boxes_and_is_checked():
    boxes, scores = _random_boxes(10, 3)
    boxes = torch.cat([boxes, boxes[:1]])
    scores = torch.cat([scores, scores[:1]])
    _, out, _ = greedy_merge(boxes, scores, torch.zeros(11, dtype=torch.long), 0.0)
    assert len(out) == 10
    with pytest.raises(ParameterError, match="merge threshold"):
        greedy_merge(boxes, scores, torch.zeros(11, dtype=torch.long), -1.0)


def test_detect_with_the_overfeat_merge():
    scale = _map({(0, 0): (1, 0.9), (0, 1): (1, 0.8), (2, 2): (2, 0.7)})
    nms = detect([scale], threshold=0.5, iou=0.3, background_class=0)
    merged = detect([scale], threshold=0.5, background_class=0, merge="overfeat",
                    merge_threshold=1.2)
    # Windows (0,0) and (0,1): 8 px windows 4 px apart, match 0.5 + 2/3 <= 1.2: one box, 1.7.
    assert merged.labels.tolist() == [1, 2]
    assert merged.scores.tolist() == pytest.approx([1.7, 0.7])
    torch.testing.assert_close(merged.boxes[0], torch.tensor([2.0, 0.0, 10.0, 8.0]))
    assert len(nms) == 2 and nms.boxes[0].tolist() == [0, 0, 8, 8]
    with pytest.raises(ParameterError, match="unknown merge"):
        detect([scale], merge="mean")
