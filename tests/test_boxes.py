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


def test_shipped_digit_spotter_keeps_its_classifier_and_regresses_boxes():
    """The shipped weights: classifier tensors bit-identical to the box-less file (the card's
    digest of them), the card names the outputs, and the scanner decodes the box output."""
    import hashlib
    import json

    from densify.models.catalogue import WEIGHTS_DIR
    from densify.scan.scanner import Scanner

    card = json.loads((WEIGHTS_DIR / "lenet5_digits.json").read_text())
    state = torch.load(WEIGHTS_DIR / card["file"], weights_only=True)
    digest = hashlib.sha256()
    for _, key in sorted(archs.LeNet5Boxes.classifier_keys().items()):
        digest.update(state[key].numpy().tobytes())
    assert digest.hexdigest() == card["classifier_tensors_sha256"]
    assert card["outputs"] == {"scores": 0, "boxes": 1} and card["box_format"] == "offsets"
    scanner = Scanner("lenet5-digits", scales=[1.0], weights="DEFAULT", device="cpu")
    assert scanner.boxes_output is not None and scanner.box_format == "offsets"


def test_flipped_regressed_boxes_are_mirrored_back():
    from densify.convert.geometry import Geometry
    from densify.scan.maps import ScaleMap
    from densify.scan.pyramid import levels

    (level,) = levels((20, 24), (8, 8), (4, 4), [1.0])
    reg = torch.randn(4, 4, 5) * 0.1
    plain = ScaleMap(level, Geometry((8, 8), (4, 4)), torch.ones(2, 4, 5) / 2, reg)
    flipped = ScaleMap(level, Geometry((8, 8), (4, 4)), torch.ones(2, 4, 5) / 2, reg, flipped=True)
    a, b = plain.regressed_boxes(clip=False), flipped.regressed_boxes(clip=False)
    torch.testing.assert_close(b, torch.stack([24 - a[:, 2], a[:, 1], 24 - a[:, 0], a[:, 3]], 1))
