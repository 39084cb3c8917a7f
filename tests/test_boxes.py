"""LeNet-5 with a box head (the shipped digit spotter's architecture)."""

from __future__ import annotations

import torch

from densify.models import archs


def test_classifier_path_is_lenet5_layer_for_layer():
    torch.manual_seed(0)
    plain = archs.lenet5(11).double().eval()
    boxed = archs.lenet5_boxes(11).double().eval()
    state = {archs.LeNet5Boxes.classifier_keys()[k]: v for k, v in plain.state_dict().items()}
    missing = boxed.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["box_head.0.bias", "box_head.0.weight", "box_head.2.bias",
                               "box_head.2.weight"]
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    scores, boxes = boxed(x)
    assert torch.equal(scores, plain(x)) and boxes.shape == (5, 4)
    # The box head reads the same flattened features as the classifier.
    assert torch.equal(boxes, boxed.box_head(plain[:7](x)))
