"""Batch-norm folding (densify.convert.fold): exact within the dtype's tolerance, no norm left,
nothing folded that must stay, and the scanner folding by default without touching its input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from densify.convert.dense import convolutionize
from densify.convert.fold import fold_batchnorm
from densify.convert.verify import TOLERANCE
from densify.models import catalogue as zoo
from densify.scan.scanner import Scanner


def norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def max_rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = zoo.build_model("resnet18").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics and affine parameters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_folded_dense_resnet18_is_exact(resnet18, dtype):
    dense = convolutionize(copy.deepcopy(resnet18).to(dtype), 64)
    before = norms(dense)
    folded = fold_batchnorm(dense)
    assert before == 20 and norms(folded) == 0 and norms(dense) == before  # input untouched
    assert folded.geometry == dense.geometry and folded.outputs == dense.outputs
    assert folded.feature_node in {n.name for n in folded.net.graph.nodes}
    x = torch.randn(1, 3, 96, 128, dtype=dtype)
    with torch.inference_mode():
        assert max_rel(folded(x), dense(x)) <= TOLERANCE[dtype]


def test_folded_classifier_is_exact(resnet18):
    folded = fold_batchnorm(resnet18)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert max_rel(folded(x), resnet18(x)) <= TOLERANCE[torch.float32]
    assert norms(folded) == 0 and norms(resnet18) == 20


class Shared(nn.Module):
    """A conv whose raw output is used twice (the norm cannot absorb it) and one that folds."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.a(x)
        return self.bn_b(self.b(self.bn_a(y) + y))


def test_only_foldable_pairs_fold():
    torch.manual_seed(0)
    model = Shared().eval()
    model.bn_a.running_var.fill_(3.0)
    model.bn_b.running_mean.fill_(0.7)
    folded = fold_batchnorm(model)
    assert [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)] == ["bn_a"]
    x = torch.randn(1, 3, 9, 9)
    with torch.inference_mode():
        assert max_rel(folded(x), model(x)) <= TOLERANCE[torch.float32]
    train = Shared().train()  # training-mode norms use batch statistics: never folded
    assert norms(fold_batchnorm(train)) == 2


def test_scanner_folds_by_default_and_matches_unfolded(resnet18):
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    args = {"scales": [1.0], "output_stride": None, "device": "cpu", "input_size": (64, 64)}
    plain = Scanner(resnet18, fold_bn=False, **args)
    folded = Scanner(resnet18, **args)
    assert norms(plain.dense) == 20 and norms(folded.dense) == 0
    expected, actual = plain(image).maps[0].probs, folded(image).maps[0].probs
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-6)
    dense = convolutionize(resnet18, 64)
    assert norms(Scanner(dense, **args).dense) == 0 and norms(dense) == 20  # given net kept
