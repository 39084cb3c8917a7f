"""Multi-output classifiers: dense nets returning the same structure, and the scanner reading
their scores and box-regression outputs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from densify.convert import verify
from densify.convert.dense import convolutionize
from densify.errors import ParameterError
from densify.io.image import to_tensor
from densify.scan.scanner import Scanner

WINDOW = 16


class Pair(NamedTuple):
    scores: torch.Tensor
    boxes: torch.Tensor


class TwoHeads(nn.Module):
    """A trunk (2 convs, stride 4, unpadded) and two heads on its flattened 16×3×3 features:
    ``classes`` scores and ``box_channels`` box regressions, returned as ``kind``."""

    def __init__(self, kind: str = "tuple", classes: int = 3, box_channels: int = 4,
                 scores_end: str | None = None):
        super().__init__()
        self.kind, self.scores_end = kind, scores_end
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 4, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2),
                                   nn.ReLU())
        self.cls = nn.Linear(16 * 3 * 3, classes)
        self.box = nn.Linear(16 * 3 * 3, box_channels)

    def forward(self, x):
        f = torch.flatten(self.trunk(x), 1)
        s, b = self.cls(f), self.box(f)
        if self.scores_end == "softmax":
            s = s.softmax(dim=1)
        elif self.scores_end == "log_softmax":
            s = torch.log_softmax(s, 1)
        elif self.scores_end == "sigmoid":
            s = torch.sigmoid(s)
        if self.kind == "dict":
            return {"scores": s, "boxes": b}
        if self.kind == "namedtuple":
            return Pair(s, b)
        return [s, b] if self.kind == "list" else (s, b)


KEYS = {"tuple": (0, 1), "list": (0, 1), "dict": ("scores", "boxes"),
        "namedtuple": ("scores", "boxes")}


@pytest.mark.parametrize("kind", list(KEYS))
@pytest.mark.parametrize("end", [None, "softmax", "log_softmax", "sigmoid"])
def test_structure_keys_activations_and_exactness(kind, end):
    """Every output kind converts exactly (checks 1, 2, 4). Mutation caught: check 1's dense
    outputs offset by 1 (the old ``passed and count > 1 or name == "canonical"`` skipped check 1's
    verdict)."""
    torch.manual_seed(0)
    model = TwoHeads(kind, scores_end=end).double()
    dense = convolutionize(model, (WINDOW, WINDOW))
    assert [o.key for o in dense.outputs] == list(KEYS[kind])
    assert [(o.channels, o.activation, o.path) for o in dense.outputs] == [
        (3, end, "fast"), (4, None, "fast")]
    x = torch.randn(1, 3, WINDOW + 12, WINDOW + 8, dtype=torch.float64)
    out = dense(x)
    assert type(out) is type(model(x[:, :, :WINDOW, :WINDOW]))
    for check in (verify.check_canonical(model, dense), verify.check_head(model, dense),
                  verify.check_crops(model, dense)):
        assert check.passed and (check.count > 1 or check.name == "canonical"), check
    # Cell (2, 1) is the classifier on the crop at (2·4, 1·4): for both outputs.
    crop = model(x[:, :, 8:8 + WINDOW, 4:4 + WINDOW])
    for key in KEYS[kind]:
        got = out[key] if kind != "namedtuple" else getattr(out, key)
        want = crop[key] if kind != "namedtuple" else getattr(crop, key)
        torch.testing.assert_close(got[:, :, 2, 1], want, rtol=1e-12, atol=1e-12)


def test_subset_concatenates_the_chosen_outputs():
    torch.manual_seed(0)
    dense = convolutionize(TwoHeads("dict").double(), WINDOW)
    x = torch.randn(1, 3, 30, 26, dtype=torch.float64)
    both, out = dense.subset("boxes", "scores"), dense(x)
    assert torch.equal(both(x), torch.cat([out["boxes"], out["scores"]], 1))
    assert both.outputs[0].channels == 7 and both.output_size(30, 26) == dense.output_size(30, 26)


# ---------------------------------------------------------------------------------- scanner


def _scanner(model, **kw):
    return Scanner(model, scales=[1.0], output_stride=None, device="cpu", input_size=(WINDOW, WINDOW),
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kw)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (28, 36, 3), dtype=np.uint8)


def test_scores_output_must_be_chosen_when_ambiguous():
    model = TwoHeads("dict")
    with pytest.raises(ParameterError, match="2 outputs.*scores"):
        _scanner(model)
    with pytest.raises(ParameterError, match="no output 'logits'"):
        _scanner(model, scores="logits")
    with pytest.raises(ParameterError, match="4 or 4 x 4"):
        _scanner(TwoHeads("tuple", classes=4, box_channels=6), scores=0, boxes=1)
    with pytest.raises(ParameterError, match="box format"):
        _scanner(model, scores="scores", boxes="boxes", box_format="xyxy")


@pytest.mark.parametrize("end", [None, "softmax", "log_softmax", "sigmoid"])
def test_probabilities_without_double_softmax(end, image):
    torch.manual_seed(1)
    model = TwoHeads("tuple", scores_end=end)
    scanner = _scanner(model, scores="0")  # a digit string selects by position (CLI values)
    probs = scanner(image).maps[0].probs
    x = to_tensor(image, scanner.mean, scanner.std, 3)
    with torch.no_grad():
        raw = scanner.dense(x)[0][0, :, :probs.shape[1], :probs.shape[2]]
    want = {None: raw.softmax(0), "softmax": raw, "log_softmax": raw.exp(), "sigmoid": raw}[end]
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    if end != "sigmoid":
        torch.testing.assert_close(probs.sum(0), torch.ones(probs.shape[1:]))


def _constant_boxes(model: TwoHeads, values) -> TwoHeads:
    """Make the box output the constant ``values`` at every cell (a known regression)."""
    with torch.no_grad():
        model.box.weight.zero_()
        model.box.bias.copy_(torch.tensor(values))
    return model


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_regressed_boxes_offsets_in_image_pixels(factor, image):
    torch.manual_seed(2)
    model = _constant_boxes(TwoHeads("dict"), [0.25, -0.125, -0.5, 0.5])
    scanner = Scanner(model, scales=[factor], output_stride=None, device="cpu",
                      input_size=WINDOW, scores="scores", boxes="boxes")
    m = scanner(image).maps[0]
    assert m.regression.shape == (4, *m.cells)
    h, w = m.cells
    top, _, left, _ = m.padding
    fy, fx = m.level.scale
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wx1, wy1 = (j.ravel() * 4 - left) / fx, (i.ravel() * 4 - top) / fy  # stride 4, offset 0
    size_x, size_y = WINDOW / fx, WINDOW / fy
    want = np.stack([wx1 + 0.25 * size_x, wy1 - 0.125 * size_y, wx1 + size_x * 0.5,
                     wy1 + size_y * 1.5], 1)
    got = m.regressed_boxes(clip=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_deltas_and_per_class_boxes_feed_detections(image):
    torch.manual_seed(3)
    model = TwoHeads("tuple", classes=2, box_channels=8, scores_end="sigmoid")
    # Class 0 keeps its window; class 1's box is centred on it, twice as wide, half as tall.
    _constant_boxes(model, [0, 0, 0, 0, 0, 0, np.log(2), -np.log(2)])
    with torch.no_grad():
        model.cls.weight.zero_()
        model.cls.bias.copy_(torch.tensor([-20.0, 20.0]))  # every cell: class 1, probability ~1
    scanner = _scanner(model, scores=0, boxes=1, box_format="deltas")
    result = scanner(image)
    m = result.maps[0]
    windows = m.boxes(clip=False)
    cx, cy = (windows[:, 0] + windows[:, 2]) / 2, (windows[:, 1] + windows[:, 3]) / 2
    want = torch.stack([cx - WINDOW, cy - WINDOW / 4, cx + WINDOW, cy + WINDOW / 4], 1)
    torch.testing.assert_close(m.regressed_boxes(1, clip=False), want)
    torch.testing.assert_close(m.regressed_boxes(0, clip=False), windows)
    det = result.detections(threshold=0.5, iou=1.0)
    assert len(det) == m.cells[0] * m.cells[1] and set(det.labels.tolist()) == {1}
    assert torch.allclose(det.boxes.sort(0).values, m.regressed_boxes(1).sort(0).values)
    plain = result.detections(threshold=0.5, iou=1.0, boxes="window")
    assert torch.allclose(plain.boxes.sort(0).values, m.boxes().sort(0).values)
