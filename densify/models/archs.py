"""Seed architectures that torchvision lacks, with their published layer shapes.

Every builder returns a plain classifier ``nn.Module`` mapping ``(N, C, H, W)`` at its canonical
input size to logits ``(N, num_classes)``; :func:`densify.convolutionize` turns them into dense nets
like any torchvision model.

- :func:`lenet5`: LeCun et al. 1998, on 1×28×28 (MNIST) inputs, **no padding** anywhere, so the dense
  net equals the classifier on every crop exactly (check 4 of the equivalence suite).
- :func:`lenet5_boxes`: LeNet-5 with a box-regression head beside its classifier (OverFeat's
  regressor, scaled down): returns ``(scores, boxes)``.
- :func:`lenet5_boxes_per_class`: the same with one box per class (OverFeat's per-class
  regressors): ``boxes`` is ``(N, 4·num_classes)``, class-major.
- :func:`zfnet`: Zeiler & Fergus 2013, the larger variant of their Table 2 (conv3-5 with 512/1024/512
  filters); AlexNet with a 7×7 stride-2 conv1 and a stride-2 conv2.
- :func:`nin`: Network in Network (Lin et al. 2013), ImageNet layout of the Caffe model zoo / d2l:
  mlpconv blocks and a global-average-pool head, no fully connected layer.
- :func:`overfeat_fast` and :func:`overfeat_accurate`: the two networks of OverFeat (Sermanet et
  al. 2014, Tables 1 and 3), no local response normalization, dropout in the FC layers. Their
  parameter counts are 145.9M and 144.7M (the paper: "about 145M" and "144M").
"""

from __future__ import annotations

from torch import nn

__all__ = ["lenet5", "LeNet5Boxes", "lenet5_boxes", "lenet5_boxes_per_class", "zfnet", "nin", "overfeat_fast",
           "overfeat_accurate"]


def lenet5(num_classes: int = 10, in_chans: int = 1) -> nn.Sequential:
    """LeNet-5 for ``(N, in_chans, 28, 28)``: conv5 6, pool 2, conv5 16, pool 2, FC 256-120-84.

    Shape: 28 → conv 24 → pool 12 → conv 8 → pool 4; the flattened 16×4×4 = 256 features feed the
    fully connected layers. Output stride 4, window 28, no padding.
    """
    return nn.Sequential(
        nn.Conv2d(in_chans, 6, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(1),
        nn.Linear(16 * 4 * 4, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


class LeNet5Boxes(nn.Module):
    """LeNet-5 whose flattened features feed two heads: the classifier and a box regressor.

    ``forward(x)`` returns ``(scores (N, num_classes), boxes (N, 4))``. ``boxes`` are edge
    offsets in window units, ``(dx1, dy1, dx2, dy2)``: the object's box in the window is
    ``(dx1·W, dy1·H, W + dx2·W, H + dy2·H)`` (the "offsets" box format of the scanner). The
    classifier path (``features`` then ``classifier``) is :func:`lenet5` layer for layer; the
    regressor reads the same 16×4×4 features (OverFeat's reads its pooled layer 5): FC ``hidden``
    → ReLU → FC 4.

    ``per_class=True``: the last layer is FC ``4·num_classes`` and ``boxes`` is
    ``(N, 4·num_classes)``, class-major (columns ``4k..4k+3`` are class ``k``'s offsets), as the
    scanner reads a per-class regression (:class:`densify.scan.maps.ScaleMap`).
    """

    def __init__(self, num_classes: int = 11, in_chans: int = 1, hidden: int = 128,
                 per_class: bool = False):
        super().__init__()
        layers = list(lenet5(num_classes, in_chans))
        self.features = nn.Sequential(*layers[:7])
        self.classifier = nn.Sequential(*layers[7:])
        self.box_head = nn.Sequential(nn.Linear(16 * 4 * 4, hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, 4 * num_classes if per_class else 4))

    def forward(self, x):
        f = self.features(x)
        return self.classifier(f), self.box_head(f)

    @staticmethod
    def classifier_keys() -> dict[str, str]:
        """:func:`lenet5` state-dict keys → this module's (``"7.weight"`` → ``"classifier.0.weight"``)."""
        names = {0: "features.0", 3: "features.3", 7: "classifier.0", 9: "classifier.2",
                 11: "classifier.4"}
        return {f"{i}.{p}": f"{n}.{p}" for i, n in names.items() for p in ("weight", "bias")}


def lenet5_boxes(num_classes: int = 11, in_chans: int = 1) -> LeNet5Boxes:
    """:class:`LeNet5Boxes` on ``(N, in_chans, 28, 28)``: ``(scores, boxes)``."""
    return LeNet5Boxes(num_classes, in_chans)


def lenet5_boxes_per_class(num_classes: int = 11, in_chans: int = 1) -> LeNet5Boxes:
    """:class:`LeNet5Boxes` with one box per class: ``(scores (N, K), boxes (N, 4·K))``.

    Examples:
        >>> import torch
        >>> scores, boxes = lenet5_boxes_per_class(11).eval()(torch.zeros(2, 1, 28, 28))
        >>> tuple(scores.shape), tuple(boxes.shape)
        ((2, 11), (2, 44))
    """
    return LeNet5Boxes(num_classes, in_chans, per_class=True)


class _AlexLike(nn.Module):
    """``features`` trunk, then ``avgpool`` and a three-layer ``classifier`` (torchvision's AlexNet)."""

    def __init__(self, features: nn.Module, feat_chans: int, num_classes: int, dropout: float):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(feat_chans * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        return self.classifier(x)


def zfnet(num_classes: int = 1000, dropout: float = 0.5) -> nn.Module:
    """ZFNet on ``(N, 3, 224, 224)``.

    Shape: 224 → conv1 7×7/2 110 → pool 55 → conv2 5×5/2 26 → pool 13 → conv3-5 (512, 1024, 512) 13
    → pool 6; fc6 over 512×6×6, fc7 4096, fc8 ``num_classes``. Output stride 32.
    """
    features = nn.Sequential(
        nn.Conv2d(3, 96, 7, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(96, 256, 5, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(256, 512, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, 1024, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 512, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
    )
    return _AlexLike(features, 512, num_classes, dropout)


def _mlpconv(in_chans: int, out_chans: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """One NiN block: a k×k convolution followed by two 1×1 convolutions ("micro network")."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_chans, out_chans, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_chans, out_chans, 1),
        nn.ReLU(inplace=True),
    )


def nin(num_classes: int = 1000, dropout: float = 0.5) -> nn.Sequential:
    """Network in Network on ``(N, 3, 224, 224)``.

    Shape: 224 → mlpconv 11×11/4 54 → pool 26 → mlpconv 5×5 26 → pool 12 → mlpconv 3×3 12 → pool 5
    → mlpconv 3×3 to ``num_classes`` maps → global average pool. Output stride 32.
    """
    return nn.Sequential(
        _mlpconv(3, 96, 11, 4, 0),
        nn.MaxPool2d(3, stride=2),
        _mlpconv(96, 256, 5, 1, 2),
        nn.MaxPool2d(3, stride=2),
        _mlpconv(256, 384, 3, 1, 1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(dropout),
        _mlpconv(384, num_classes, 3, 1, 1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(1),
    )


def _conv_relu(in_chans: int, out_chans: int, kernel: int, stride: int = 1, padding: int = 0
               ) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, kernel, stride=stride, padding=padding),
            nn.ReLU(inplace=True)]


def _overfeat_head(features: list[nn.Module], feat: int, hidden: tuple[int, int],
                   num_classes: int, dropout: float) -> nn.Sequential:
    """``features``, flatten, then FC ``hidden[0]``, FC ``hidden[1]`` (ReLU and dropout after
    each) and FC ``num_classes``."""
    return nn.Sequential(
        nn.Sequential(*features),
        nn.Flatten(1),
        nn.Dropout(dropout), nn.Linear(feat, hidden[0]), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True),
        nn.Linear(hidden[1], num_classes),
    )


def overfeat_fast(num_classes: int = 1000, dropout: float = 0.5, width: float = 1.0
                  ) -> nn.Sequential:
    """OverFeat's fast model on ``(N, 3, 231, 231)`` (Sermanet et al. 2014, Table 1).

    Shape: 231 → conv1 11×11/4 56 → pool 2×2/2 28 → conv2 5×5 24 → pool 12 → conv3-5 3×3 pad 1
    (512, 1024, 1024) 12 → pool 2×2/2 6; FC 3072 over 1024×6×6, FC 4096, FC ``num_classes``.
    Output stride 32 (4·2·2·2); stride-1 final pooling gives 16. ``width`` multiplies every
    channel and hidden count (1 is the paper's; tests use a narrow copy of the same layers).
    """
    c = _widths(width)
    features = [
        *_conv_relu(3, c(96), 11, stride=4), nn.MaxPool2d(2),
        *_conv_relu(c(96), c(256), 5), nn.MaxPool2d(2),
        *_conv_relu(c(256), c(512), 3, padding=1),
        *_conv_relu(c(512), c(1024), 3, padding=1),
        *_conv_relu(c(1024), c(1024), 3, padding=1), nn.MaxPool2d(2),
    ]
    return _overfeat_head(features, c(1024) * 6 * 6, (c(3072), c(4096)), num_classes, dropout)


def overfeat_accurate(num_classes: int = 1000, dropout: float = 0.5, width: float = 1.0
                      ) -> nn.Sequential:
    """OverFeat's accurate model on ``(N, 3, 221, 221)`` (Sermanet et al. 2014, Table 3).

    Shape: 221 → conv1 7×7/2 108 → pool 3×3/3 36 → conv2 7×7 30 → pool 2×2/2 15 → conv3-6 3×3
    pad 1 (512, 512, 1024, 1024) 15 → pool 3×3/3 5; FC 4096 over 1024×5×5, FC 4096, FC
    ``num_classes``. Output stride 36 (2·3·2·3); the paper's 3×3 offset pooling (the last pool
    at stride 1, everything after it dilated by 3) gives 12. ``width`` as for
    :func:`overfeat_fast`.
    """
    c = _widths(width)
    features = [
        *_conv_relu(3, c(96), 7, stride=2), nn.MaxPool2d(3),
        *_conv_relu(c(96), c(256), 7), nn.MaxPool2d(2),
        *_conv_relu(c(256), c(512), 3, padding=1),
        *_conv_relu(c(512), c(512), 3, padding=1),
        *_conv_relu(c(512), c(1024), 3, padding=1),
        *_conv_relu(c(1024), c(1024), 3, padding=1), nn.MaxPool2d(3),
    ]
    return _overfeat_head(features, c(1024) * 5 * 5, (c(4096), c(4096)), num_classes, dropout)


def _widths(width: float):
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    return lambda n: max(1, round(n * width))
