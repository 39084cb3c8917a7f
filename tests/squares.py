"""A hand-built square detector with known answers (a helper module for the scan tests).

:func:`square_detector` is a plain ``nn.Sequential`` classifier on ``(N, 3, 32, 32)``: classes
``("background", "square")``. Its trunk is linear and lossless: a brightness ``1×1`` convolution,
then three space-to-depth convolutions (strides 4, 2, 2: native output stride 16, and 8 or 4
after de-striding) that only move pixels into channels. The ``Linear`` head is a matched filter:
``logit(square) = alpha · <brightness, gaussian centred in the window> - 4``, ``logit(background)
= 0``. Correlating a centred Gaussian with a square peaks exactly where the square is centred in
the window, strictly, so the best cell is the one whose window centre is nearest the square.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

WINDOW = 32
SIDE = 12
CATEGORIES = ("background", "square")


def _space_to_depth(in_chans: int, k: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_chans, in_chans * k * k, k, stride=k, bias=False)
    weight = torch.zeros_like(conv.weight)
    for c in range(in_chans):
        for dy in range(k):
            for dx in range(k):
                weight[c * k * k + dy * k + dx, c, dy, dx] = 1.0
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def gaussian(sigma: float = 5.0) -> torch.Tensor:
    """``(32, 32)`` Gaussian centred at the window centre (pixel centres at ``i + 0.5``)."""
    r = torch.arange(WINDOW, dtype=torch.float64) + 0.5 - WINDOW / 2
    return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2)).float()


@torch.no_grad()
def square_detector(sigma: float = 5.0) -> nn.Sequential:
    """The detector (module docstring), in eval mode."""
    bright = nn.Conv2d(3, 1, 1, bias=False)
    bright.weight.fill_(1 / 3)
    trunk = nn.Sequential(bright, _space_to_depth(1, 4), _space_to_depth(16, 2),
                          _space_to_depth(64, 2))
    template = gaussian(sigma)
    # The trunk only permutes pixels, so the head weights are the template pushed through it.
    head_weight = trunk[1:](template.view(1, 1, WINDOW, WINDOW)).flatten()
    centred = torch.zeros(WINDOW, WINDOW)
    lo = (WINDOW - SIDE) // 2
    centred[lo:lo + SIDE, lo:lo + SIDE] = 1
    alpha = 8.0 / float((template * centred).sum())
    head = nn.Linear(head_weight.numel(), 2)
    head.weight.zero_()
    head.bias.zero_()
    head.weight[1] = alpha * head_weight
    head.bias[1] = -4.0
    return nn.Sequential(*trunk, nn.Flatten(1), head).eval()


def square_image(height: int, width: int, centre: tuple[int, int], side: int = SIDE
                 ) -> np.ndarray:
    """Black RGB ``uint8`` image with a white ``side``-pixel square whose top-left pixel is
    ``centre - side // 2``; its continuous centre is ``centre`` (for even ``side``)."""
    image = np.zeros((height, width, 3), np.uint8)
    y0, x0 = centre[0] - side // 2, centre[1] - side // 2
    image[y0:y0 + side, x0:x0 + side] = 255
    return image
