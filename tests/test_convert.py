"""The equivalence suite (checks 1-3) over every supported model, random weights, float64.

Check 4 (crops) and 5 (geometry probe) are in test_geometry.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    ALL_MODELS,
    COSTLY_STRIDE_CHECK,
    DEVICE,
    GLOBAL_CONTEXT,
    REPRESENTATIVE,
    SLOW_STRIDE_CHECK,
    build,
    dtype_params,
    full_tier_unless,
    model_params,
    size_for,
)
from torch import nn

from densify.convert import verify
from densify.convert.dense import DenseNet, available_strides, convolutionize
from densify.convert.layers import DilatedAvgPool2d
from densify.errors import ConversionError
from densify.models import catalogue as zoo


@pytest.mark.parametrize("name, dtype", dtype_params(ALL_MODELS))
def test_canonical_and_head(name, dtype, record):
    """Check 1 at the (small) canonical input and check 2 on a 3-cells-larger input; the crop
    gap (check 4) is measured alongside (exact only for unpadded nets: test_geometry.py) and must
    be finite. Mutation caught: check 4's crops made NaN (``expected * nan`` in check_crops): the
    gap is then ``inf``, which the old ``c4.max_rel == c4.max_rel`` let through."""
    model = build(name, dtype)
    dense = convolutionize(model, size_for(name))
    c1 = verify.check_canonical(model, dense)
    c2 = verify.check_head(model, dense)
    c4 = verify.check_crops(model, dense)
    for c in (c1, c2, c4):
        record(name, dtype, c, size_for(name))
    assert c1.passed, c1
    assert c2.passed and c2.count >= 16, c2
    assert c4.count == 9 and math.isfinite(c4.max_rel), c4  # measured, finite (not NaN/inf)


@pytest.mark.parametrize("name", model_params(ALL_MODELS, full_tier_unless(ALL_MODELS)))
def test_canonical_true_size_float32(name, record):
    """Check 1 at the model's real canonical input in float32 (dtype tolerance table)."""
    model = build(name, torch.float32)
    dense = convolutionize(model, zoo.MODELS[name].input_size)
    c1 = verify.check_canonical(model, dense)
    record(name, torch.float32, c1, zoo.MODELS[name].input_size)
    assert c1.passed, c1
    assert dense.geometry.window == zoo.MODELS[name].input_size[1:]


def _stride_models():
    """Models without global-context layers (SE gates make check 3 inapplicable)."""
    return [n for n in ALL_MODELS if n not in _CONTEXT]


_CONTEXT = {n for n in ALL_MODELS if n.startswith(GLOBAL_CONTEXT)}


@pytest.mark.parametrize("name", model_params(
    _stride_models(), full_tier_unless(_stride_models(), set(REPRESENTATIVE) - set(COSTLY_STRIDE_CHECK)),
    huge=SLOW_STRIDE_CHECK))
def test_output_stride_halved(name, record):
    """Check 3: stride S/2 equals stride S on the image shifted by S/2, on interior cells."""
    dtype = torch.float64 if name in {"lenet5", "alexnet", "zfnet", "nin", "resnet18",
                                      "squeezenet1_1", "vgg11"} else torch.float32
    model = build(name, dtype)
    c3 = verify.check_output_stride(model, size_for(name))
    record(name, dtype, c3, size_for(name))
    assert c3.passed, c3
    assert c3.count >= 4


@pytest.mark.parametrize("name", model_params(sorted(_CONTEXT)))
def test_global_context_is_reported(name, caplog):
    """SE nets convert exactly at the canonical input but say that windows share context."""
    dense = convolutionize(build(name, torch.float32), size_for(name))
    assert dense.global_context and dense.geometry.rf_size is None
    assert "global-context" in caplog.text


def test_output_stride_eight_on_vgg():
    """Repeating the step: stride 8 equals stride 16 on shifted inputs."""
    model = build("vgg11", torch.float32)
    dense8 = convolutionize(model, (3, 224, 224), output_stride=8)
    assert dense8.output_stride == 8
    c = verify.check_output_stride(model, (3, 224, 224), output_stride=8)
    assert c.passed and c.count > 0, c


def test_original_untouched_and_no_fc_left():
    model = build("vgg11", torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = convolutionize(model, (3, 224, 224), output_stride=16)
    assert isinstance(model.classifier[0], nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kinds = {type(m) for m in dense.modules()}
    assert nn.Linear not in kinds and nn.AdaptiveAvgPool2d not in kinds
    assert not any(isinstance(m, nn.Dropout) for m in dense.modules())
    assert not dense.training
    fc6 = dense.net.get_submodule("classifier.0")
    assert isinstance(fc6, nn.Conv2d) and fc6.kernel_size == (7, 7) and fc6.dilation == (2, 2)


def test_global_pool_head_becomes_stride1_pool_then_1x1():
    dense = convolutionize(build("resnet18", torch.float32), (3, 224, 224))
    pools = [m for m in dense.modules() if isinstance(m, nn.AvgPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [((7, 7), 1)]
    assert dense.net.get_submodule("fc").kernel_size == (1, 1)
    dense16 = convolutionize(build("resnet18", torch.float32), (3, 224, 224), output_stride=16)
    assert any(isinstance(m, DilatedAvgPool2d) and m.dilation == (2, 2) for m in dense16.modules())
    assert dense16.net.get_submodule("layer4.0.conv2").stride == (1, 1)
    assert dense16.net.get_submodule("layer4.1.conv1").dilation == (2, 2)


@pytest.mark.parametrize("name", ["alexnet", "lenet5", "inception_v3", "resnet18"])
def test_output_size_grows_one_cell_per_stride(name):
    """Input ``W + k·S`` gives ``k + 1`` cells; in between, only the cells whose windows fit (the
    net's overhanging cell, from slack in the canonical size, is dropped): one count everywhere."""
    dense = convolutionize(build(name, torch.float32), zoo.MODELS[name].input_size)
    c, wh, ww = dense.input_size
    s = dense.output_stride
    for k in range(3):
        h, w = wh + s * k, ww + s * k
        out = dense(torch.zeros(1, c, h, w + s - 1, device=DEVICE))
        assert out.shape[-2:] == (k + 1, k + 1) == dense.output_size(h, w + s - 1)
        assert dense.geometry.output_size(h, w) == (k + 1, k + 1) == dense.output_size(h, w)
        assert dense.net(torch.zeros(1, c, h, w + s - 1)).shape[-1] in (k + 1, k + 2)


def test_available_strides():
    assert available_strides(build("lenet5", torch.float32), (1, 28, 28)) == [4, 2, 1]
    assert available_strides(build("vgg11", torch.float32), (3, 224, 224)) == [32, 16, 8]


@pytest.mark.parametrize("head", ["batchnorm", "layernorm", "softmax", "mean"])
def test_head_variants(head):
    """Heads with norms after pooling and softmax convert exactly."""
    torch.manual_seed(0)
    layers = {
        "batchnorm": [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(8), nn.Linear(8, 5)],
        "layernorm": [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(8), nn.Linear(8, 5)],
        "softmax": [nn.Flatten(), nn.Linear(8 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 5),
                    nn.Softmax(dim=-1)],
        "mean": None,
    }[head]
    trunk = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    model = _MeanHead() if layers is None else nn.Sequential(*trunk, *layers)
    if head == "batchnorm":
        model[5].running_mean.uniform_(-1, 1)
        model[5].running_var.uniform_(0.5, 2)
    model = model.double().eval()
    dense = convolutionize(model, (3, 8, 8))
    assert verify.check_canonical(model, dense).passed
    assert verify.check_head(model, dense).passed
    assert verify.check_crops(model, dense).count > 0


class _MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean([2, 3]))


def test_errors_are_one_line_and_name_the_fix():
    with pytest.raises(ConversionError, match="pass input_size"):
        convolutionize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ConversionError, match="not reachable"):
        convolutionize(build("lenet5", torch.float32), (1, 28, 28), output_stride=3)
    with pytest.raises(ConversionError, match="fails on a 1x36x36 input .*canonical input_size"):
        convolutionize(build("lenet5", torch.float32), (1, 36, 36))


def test_a_non_canonical_size_warns_and_takes_the_general_path(caplog):
    """VGG's 7×7 adaptive pool is not a sliding window at 200 px: exact per window (general
    path), with a warning naming the fix."""
    with caplog.at_level("WARNING", logger="densify.convert"):
        dense = convolutionize(build("vgg11", torch.float32), (3, 200, 200))
    assert dense.outputs[0].path == "general" and "canonical input_size" in caplog.text


def test_untraceable_is_one_line():
    class Untraceable(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(ConversionError) as err:
        convolutionize(Untraceable(), 32)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "maxvit_t"])
def test_transformers_refused(name):
    with pytest.raises(ValueError, match="self-attention"):
        zoo.get_spec(name)


def test_dense_net_is_a_module_with_geometry():
    dense = convolutionize(build("lenet5", torch.float32), (1, 28, 28))
    assert isinstance(dense, DenseNet)
    assert dense.geometry.window == (28, 28) and dense.geometry.stride == (4, 4)
    assert dense.geometry.rf_size == (28, 28) and dense.geometry.rf_offset == (0, 0)
