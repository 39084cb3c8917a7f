"""Tiling: tiled equals untiled (padded and unpadded nets, both output strides), tiles are
bounded, seams are exact, the plan is pure arithmetic, global-context nets are refused."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from densify.convert.dense import convolutionize
from densify.models import catalogue as zoo
from densify.scan.tiling import (
    TilingError,
    alignment,
    estimate_bytes,
    forward_tiled,
    parse_bytes,
    plan_tiles,
    tile_boxes,
)

#: (model, canonical size, output stride, image (H, W), tile cells): padded and unpadded nets,
#: native and halved strides, cell counts that are not multiples of the tile.
CASES = [
    ("lenet5", 28, None, (97, 75), 3),
    ("lenet5", 28, 2, (61, 58), (4, 5)),
    ("minivgg", 32, None, (150, 133), (3, 4)),
    ("minivgg", 32, 4, (97, 120), 5),
    ("resnet18", 64, None, (224, 256), 3),
    ("resnet18", 64, 16, (160, 176), (4, 3)),
    ("alexnet", 224, None, (288, 320), 2),
]


def minivgg(num_classes: int = 5) -> nn.Sequential:
    """A small zero-padded CNN (window 32, stride 8, receptive field 58): VGG's layer types, a
    strided convolution and a batch norm, at a size that keeps the tests fast."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, num_classes))


def _dense(name: str, size: int, stride: int | None):
    torch.manual_seed(0)
    model = minivgg() if name == "minivgg" else zoo.build_model(name)
    if name == "minivgg":  # non-trivial batch-norm statistics
        model[4].running_mean.uniform_(-1, 1)
        model[4].running_var.uniform_(0.5, 2)
    return convolutionize(model.to(DEVICE).eval(), size, output_stride=stride)


def _image(dense, hw, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, dense.input_size[0], *hw, generator=g).to(DEVICE)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class _Recorder:
    """Wraps ``dense.net``'s forward to record the input shapes the net saw."""

    def __init__(self, dense):
        self.shapes: list[tuple[int, ...]] = []
        self.forward = dense.net.forward
        dense.net.forward = self

    def __call__(self, x):
        if not isinstance(x, FakeTensor):  # output_size() and estimate_bytes() run fake ones
            self.shapes.append(tuple(x.shape))
        return self.forward(x)


@pytest.mark.parametrize("name,size,stride,hw,cells", CASES,
                         ids=[f"{c[0]}-s{c[2] or 'native'}" for c in CASES])
def test_tiled_equals_untiled(name, size, stride, hw, cells):
    dense = _dense(name, size, stride)
    x = _image(dense, hw)
    with torch.inference_mode():
        expected = dense(x)
        rec = _Recorder(dense)
        actual = forward_tiled(dense, x, tile_cells=cells)
    assert actual.shape == expected.shape
    assert _rel(actual, expected) < 1e-5
    tiles = tile_boxes(dense, *hw, cells)
    assert len(rec.shapes) == len(tiles) > 1
    assert all(s[-2:] == t.size for s, t in zip(rec.shapes, tiles, strict=True))
    # Cells on both sides of every seam, separately: the overlap is what makes them exact.
    seam_rows = {r for t in tiles for r in (t.rows[0] - 1, t.rows[0]) if r >= 0}
    seam_cols = {c for t in tiles for c in (t.cols[0] - 1, t.cols[0]) if c >= 0}
    rows, cols = sorted(seam_rows), sorted(seam_cols)
    assert _rel(actual[..., rows, :], expected[..., rows, :]) < 1e-5
    assert _rel(actual[..., cols], expected[..., cols]) < 1e-5


def test_cuts_without_overlap_break_seams():
    """Negative control: cut a padded net's input at cell boundaries with no context, and the
    cells at the seams change; so the test above would catch a missing overlap."""
    dense = _dense("resnet18", 64, None)
    x = _image(dense, (224, 224))
    with torch.inference_mode():
        expected = dense(x)
        left = dense(x[..., :, :128])  # cells 0..2 per the window arithmetic (64 + 2·32)
    assert _rel(left[..., :, :2], expected[..., :, :2]) > 1e-3


def test_channels_last_input_is_kept():
    dense = _dense("minivgg", 32, None).to(memory_format=torch.channels_last)
    x = _image(dense, (120, 100)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = dense(x)
        rec = _Recorder(dense)
        actual = forward_tiled(dense, x, tile_cells=3)
    assert len(rec.shapes) > 1 and _rel(actual, expected) < 1e-5


def test_max_bytes_bounds_every_tile():
    dense = _dense("minivgg", 32, None)
    hw = (256, 320)
    budget = estimate_bytes(dense, *hw) // 3
    tiles = plan_tiles(dense, *hw, budget, headroom=0.0)
    assert len(tiles) > 1
    x = _image(dense, hw)
    with torch.inference_mode():
        expected = dense(x)
        rec = _Recorder(dense)
        actual = forward_tiled(dense, x, max_bytes=budget * 10 // 8)  # default headroom 0.2
    assert _rel(actual, expected) < 1e-5
    assert len(rec.shapes) > 1
    for shape in rec.shapes:
        assert shape[-2] < hw[0] or shape[-1] < hw[1]
        assert estimate_bytes(dense, *shape[-2:]) <= budget


@pytest.mark.parametrize("name,size,stride", [("lenet5", 28, None), ("minivgg", 32, 4),
                                              ("resnet18", 64, 16), ("alexnet", 224, None)])
def test_plan_partitions_cells_with_aligned_origins(name, size, stride):
    dense = _dense(name, size, stride)
    hw = (301, 517)
    h, w = dense.output_size(*hw)
    uy, ux = alignment(dense)
    assert (uy, ux) == dense.geometry.stride  # chains of strides: the lcm is the output stride
    for cells in [1, 2, (3, 5), 1000]:
        tiles = tile_boxes(dense, *hw, cells)
        seen = torch.zeros(h, w, dtype=torch.int64)
        for t in tiles:
            seen[t.rows[0]:t.rows[1], t.cols[0]:t.cols[1]] += 1
            x1, y1, x2, y2 = t.box
            assert x1 % ux == 0 and y1 % uy == 0
            assert 0 <= x1 < x2 <= hw[1] and 0 <= y1 < y2 <= hw[0]
        assert bool((seen == 1).all())
    (whole,) = tile_boxes(dense, *hw, 1000)  # pixels past the last window are left out
    assert whole.rows == (0, h) and whole.cols == (0, w) and whole.box[:2] == (0, 0)
    assert 0 <= hw[0] - whole.box[3] < uy and 0 <= hw[1] - whole.box[2] < ux


def test_plan_tiles_fits_budget_and_refuses_too_small():
    dense = _dense("minivgg", 32, None)
    hw = (480, 640)
    whole = estimate_bytes(dense, *hw)
    assert len(plan_tiles(dense, *hw, whole, headroom=0.0)) == 1
    tiles = plan_tiles(dense, *hw, whole // 4, headroom=0.0)
    assert 4 <= len(tiles) <= 12
    assert max(estimate_bytes(dense, *t.size) for t in tiles) <= whole // 4
    with pytest.raises(TilingError, match="too small.*raise --max-memory"):
        plan_tiles(dense, *hw, 1000)


def test_estimate_bytes_counts_live_tensors_by_hand():
    # LeNet-5 at 28×28, float32, channels_last. Live at pool1: the held input (1·28·28), conv1's
    # output shared with its in-place ReLU (6·24·24) and pool1's output (6·12·12). At fc1 (the
    # 16×4×4 convolution) the input, pool2's output (16·4·4), fc1's output (120) and fc1's
    # re-laid-out weight (120·256) as work buffer: the larger of the two is the peak.
    dense = _dense("lenet5", 28, None)
    pool1 = 4 * (784 + 3456 + 864)
    fc1 = 4 * (784 + 256 + 120 + 120 * 256)
    assert estimate_bytes(dense, 28, 28, channels_last=True) == max(pool1, fc1) == fc1
    # bf16 autocast: activations and weight copies (cast, then re-laid out) in 2 bytes; the
    # caller's input stays float32.
    assert estimate_bytes(dense, 28, 28, torch.bfloat16, channels_last=True) == (
        4 * 784 + 2 * (256 + 120) + 2 * 2 * 120 * 256)
    # On large inputs activations dominate and scale with the pixels; without channels_last
    # every convolution also re-lays out its output.
    big = estimate_bytes(dense, 560, 560, channels_last=True)
    assert 3.5 < big / estimate_bytes(dense, 280, 280, channels_last=True) < 4.5
    assert estimate_bytes(dense, 560, 560, channels_last=False) > big * 1.3


class _SENet(nn.Module):
    """Conv → squeeze-and-excitation gate → global pool → linear: a global-context net."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv(x)
        x = x * self.gate(x)
        return self.fc(x.mean((2, 3)))


def test_global_context_refused():
    dense = convolutionize(_SENet(), 33)
    assert dense.global_context
    x = torch.zeros(1, 3, 99, 99)
    with pytest.raises(TilingError, match="cannot tile exactly.*run untiled"):
        forward_tiled(dense, x, tile_cells=1)
    with pytest.raises(TilingError, match="cannot tile exactly"):
        plan_tiles(dense, 99, 99, 10**9)


@pytest.mark.parametrize("text,expected", [
    ("3GB", 3 * 10**9), ("512MiB", 512 * 2**20), ("2.5G", int(2.5 * 2**30)), ("1000", 1000),
    (" 64 kb ", 64000), ("1t", 2**40), (4096, 4096),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "3 parsecs", "-1GB", "0", "1e9", "3.5.1G", None])
def test_parse_bytes_refuses_garbage(text):
    with pytest.raises(ValueError, match=r"cannot read memory size .*e\.g\. 3GB"):
        parse_bytes(text)


def test_forward_tiled_needs_exactly_one_bound():
    dense = _dense("lenet5", 28, None)
    x = _image(dense, (40, 40))
    with pytest.raises(ValueError, match="exactly one"):
        forward_tiled(dense, x)
    with pytest.raises(ValueError, match="exactly one"):
        forward_tiled(dense, x, max_bytes="1GB", tile_cells=2)
