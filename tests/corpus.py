"""Classifier definitions in the styles public PyTorch code uses, small enough for CI.

Each entry of :data:`CORPUS` is ``name -> (factory, input_size (H, W), exact_crops)``;
``exact_crops`` says whether every dense cell must equal the classifier on its window's crop
(unpadded, non-ceil nets). Written from the published shapes of the styles they imitate: the
PyTorch examples (MNIST), the 60-minute CIFAR tutorial, CIFAR repositories, TensorFlow/Keras and
Caffe2 ports (channels-last flattens), detection-style heads (several outputs), fastai's concat
pooling, attention pooling.

The module is importable as ``corpus`` with ``tests`` on ``sys.path``, so the command line can
load any entry: ``PYTHONPATH=tests densify verify --model corpus:lenet_view --input-size 32x32``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def _features(cin: int = 3, width: int = 8) -> nn.Sequential:
    """Two unpadded conv + pool stages (stride 4)."""
    return nn.Sequential(nn.Conv2d(cin, width, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3), nn.ReLU(), nn.MaxPool2d(2))


class MnistFunctional(nn.Module):
    """pytorch/examples mnist: functional pools, ``torch.flatten``, log-softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, 1), nn.Conv2d(4, 8, 3, 1)
        self.fc1, self.fc2 = nn.Linear(8 * 12 * 12, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


class TutorialNet(nn.Module):
    """The CIFAR-10 tutorial net: ``x.view(-1, 16 * 5 * 5)``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 12), nn.Linear(12, 8), nn.Linear(8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        x = x.view(-1, 16 * 5 * 5)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CifarVGG(nn.Module):
    """CIFAR-repo VGG: BatchNorm2d, ``x.view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout in (8, 16, 16):
            layers += [nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.features, self.classifier = nn.Sequential(*layers), nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))


class KerasPort(nn.Module):
    """A TF/Keras port: the flatten reads ``(H, W, C)`` (``permute(0, 2, 3, 1)``) or, Caffe2
    style, ``(W, H, C)`` (``permute(0, 3, 2, 1)``). Rectangular input, so H and W differ."""

    def __init__(self, order=(0, 2, 3, 1)):
        super().__init__()
        self.order, self.features = order, _features()
        self.dense1, self.dense2 = nn.Linear(16 * 5 * 4, 12), nn.Linear(12, 5)

    def forward(self, x):
        x = self.features(x).permute(*self.order).contiguous()
        return self.dense2(F.relu(self.dense1(x.reshape(x.shape[0], -1))))


class ActivationHead(nn.Module):
    """PReLU (one weight per feature), ELU, Hardtanh modules and ``F.elu`` in the head."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.fc1, self.act1 = nn.Linear(16 * 4 * 4, 12), nn.PReLU(12)
        self.fc2, self.act2, self.act3 = nn.Linear(12, 12), nn.ELU(), nn.Hardtanh(-0.5, 0.5)
        self.fc3 = nn.Linear(12, 6)

    def forward(self, x):
        x = self.act1(self.fc1(torch.flatten(self.features(x), 1)))
        return self.fc3(self.act3(F.elu(self.act2(self.fc2(x)), alpha=0.7)))


class BatchNormHead(nn.Module):
    """BatchNorm1d after a flattened fully connected layer (non-trivial running statistics)."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.fc1, self.bn = nn.Linear(16 * 4 * 4, 12), nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 7)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(self.features(x).flatten(1)))))


class FunctionalLinear(nn.Module):
    """Raw parameters: ``F.linear``, ``x @ W.t() + b`` and ``torch.addmm``."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.w1, self.b1 = nn.Parameter(torch.randn(12, 256) * 0.1), nn.Parameter(torch.randn(12))
        self.w2, self.b2 = nn.Parameter(torch.randn(10, 12) * 0.3), nn.Parameter(torch.randn(10))
        self.w3, self.b3 = nn.Parameter(torch.randn(4, 10) * 0.3), nn.Parameter(torch.randn(4))

    def forward(self, x):
        x = F.relu(F.linear(torch.flatten(self.features(x), 1), self.w1, self.b1))
        x = torch.tanh(x @ self.w2.t() + self.b2)
        return torch.addmm(self.b3, x, self.w3.T)


class EinsumHead(nn.Module):
    """A global mean over ``h, w`` and an ``einsum`` classifier."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.weight = nn.Parameter(torch.randn(9, 16))

    def forward(self, x):
        return torch.einsum("nc,kc->nk", self.features(x).mean((2, 3)), self.weight)


class MatmulHead(nn.Module):
    """``torch.matmul`` with a (features, classes) parameter after ``amax`` pooling."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.proj = nn.Parameter(torch.randn(16, 6))

    def forward(self, x):
        return torch.matmul(self.features(x).amax(dim=(2, 3)), self.proj)


class ChannelsLastLinear(nn.Module):
    """A Linear on the last axis of a channels-last map (timm/ConvNeXt style), then a flatten."""

    def __init__(self):
        super().__init__()
        self.features, self.mix = _features(), nn.Linear(16, 6)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = F.gelu(self.mix(self.features(x).permute(0, 2, 3, 1)))
        return self.fc(x.flatten(1))


class Detection(NamedTuple):
    scores: torch.Tensor
    boxes: torch.Tensor


class TwoHeads(nn.Module):
    """A shared FC feeding a class head and a box head, returned as ``kind``."""

    def __init__(self, kind: str = "tuple", probabilities: bool = False):
        super().__init__()
        self.kind, self.probabilities = kind, probabilities
        self.features, self.shared = _features(), nn.Linear(16 * 4 * 4, 12)
        self.cls, self.box = nn.Linear(12, 4), nn.Linear(12, 16)

    def forward(self, x):
        h = F.relu(self.shared(torch.flatten(self.features(x), 1)))
        scores, boxes = self.cls(h), self.box(h)
        if self.probabilities:
            scores = F.softmax(scores, dim=1)
        if self.kind == "dict":
            return {"scores": scores, "boxes": torch.sigmoid(boxes)}
        if self.kind == "namedtuple":
            return Detection(scores, boxes)
        return scores, boxes


class ResidualFC(nn.Module):
    """Residual connections between fully connected layers."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 12), nn.Linear(12, 12), nn.Linear(12, 12)
        self.out = nn.Linear(12, 5)

    def forward(self, x):
        h = self.fc1(torch.flatten(self.features(x), 1))
        h = h + self.fc2(F.relu(h))
        h = h + self.fc3(F.relu(h))
        return self.out(h)


class CeilMode(nn.Module):
    """A Caffe-style ceil-mode pool (GoogLeNet, SqueezeNet ports) before the last stage."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.fc = nn.Linear(16 * 4 * 4, 6)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Rectangular(nn.Module):
    """A 64×32 (H×W) window, e.g. a pedestrian classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_features(), nn.Conv2d(16, 16, 3, 2), nn.ReLU())
        self.fc = nn.Linear(16 * 6 * 2, 2)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class Grouped(nn.Module):
    """Grouped and depthwise convolutions (ResNeXt/MobileNet style), global average pool."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1, groups=16),
            nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1, groups=4), nn.ReLU())
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 8)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def sequential_flatten() -> nn.Module:
    """Everything in one ``nn.Sequential`` with ``nn.Flatten(start_dim=1)``."""
    return nn.Sequential(_features(), nn.Flatten(start_dim=1), nn.Linear(16 * 4 * 4, 12),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 10), nn.Softmax(dim=1))


class ConcatPool(nn.Module):
    """fastai's ``AdaptiveConcatPool2d``: max and average pools concatenated."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.max, self.avg = nn.AdaptiveMaxPool2d(1), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 6)

    def forward(self, x):
        x = self.features(x)
        return self.fc(torch.cat([self.max(x), self.avg(x)], 1).flatten(1))


class AttentionPool(nn.Module):
    """Attention pooling over positions (the general path: softmax over ``h·w``)."""

    def __init__(self):
        super().__init__()
        self.features, self.score = _features(), nn.Conv2d(16, 1, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        f = self.features(x)
        weights = torch.softmax(self.score(f).flatten(2), dim=-1)  # (N, 1, h·w)
        pooled = (f.flatten(2) * weights).sum(-1)
        return self.fc(pooled)


class InterpolatedHead(nn.Module):
    """A head that resizes the map to a fixed grid before flattening (general path)."""

    def __init__(self):
        super().__init__()
        self.features, self.fc = _features(), nn.Linear(16 * 2 * 2, 4)

    def forward(self, x):
        x = F.interpolate(self.features(x), size=(2, 2), mode="bilinear", align_corners=False)
        return self.fc(x.flatten(1))


def lenet_view() -> nn.Module:
    return TutorialNet()


def keras_hwc() -> nn.Module:
    return KerasPort((0, 2, 3, 1))


def caffe2_whc() -> nn.Module:
    return KerasPort((0, 3, 2, 1))


def detection_dict() -> nn.Module:
    return TwoHeads("dict", probabilities=True)


CORPUS = {
    "mnist_functional": (MnistFunctional, (28, 28), True),
    "lenet_view": (TutorialNet, (32, 32), True),
    "cifar_vgg_size_view": (CifarVGG, (30, 30), True),
    "keras_hwc": (keras_hwc, (28, 24), True),
    "caffe2_whc": (caffe2_whc, (28, 24), True),
    "activation_head": (ActivationHead, (22, 22), True),
    "batchnorm1d_head": (BatchNormHead, (22, 22), True),
    "functional_linear": (FunctionalLinear, (22, 22), True),
    "einsum_head": (EinsumHead, (22, 22), True),
    "matmul_amax_head": (MatmulHead, (22, 22), True),
    "channels_last_linear": (ChannelsLastLinear, (22, 22), True),
    "tuple_outputs": (TwoHeads, (22, 22), True),
    "dict_outputs_softmax": (detection_dict, (22, 22), True),
    "namedtuple_outputs": (lambda: TwoHeads("namedtuple"), (22, 22), True),
    "residual_fc": (ResidualFC, (22, 22), True),
    "ceil_mode": (CeilMode, (24, 24), False),
    "rectangular_64x32": (Rectangular, (64, 32), True),
    "grouped_convs": (Grouped, (32, 32), False),
    "sequential_flatten": (sequential_flatten, (22, 22), True),
    "concat_pool": (ConcatPool, (22, 22), True),
    "attention_pool": (AttentionPool, (22, 22), True),
    "interpolated_head": (InterpolatedHead, (22, 22), True),
}
