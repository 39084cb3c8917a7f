"""densify.layers against independent references (dilated convolutions, unfold)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densify.convert.layers import ChannelLayerNorm, DilatedAvgPool2d, DilatedMaxPool2d, dilated_avg_pool2d


@pytest.mark.parametrize("k, d, p", [(3, 2, 2), (7, 2, 0), (3, 3, 3), (2, 2, 0), (7, 4, 12)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_dilated_avg_pool_equals_a_dilated_box_filter(k, d, p, count_include_pad):
    x = torch.randn(2, 3, 31, 26, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(3, 1, k, k, dtype=torch.float64)
    ref = F.conv2d(x, ones, padding=p, dilation=d, groups=3)
    if count_include_pad:
        ref = ref / (k * k)
    else:
        ref = ref / F.conv2d(torch.ones_like(x[:, :1]), ones[:1], padding=p, dilation=d)
    out = DilatedAvgPool2d(k, d, p, count_include_pad)(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="multiple of dilation"):
        dilated_avg_pool2d(x, 3, 2, 1)


@pytest.mark.parametrize("k, d, p", [(3, 2, 2), (3, 4, 4), (2, 2, 0), (5, 2, 4)])
def test_dilated_max_pool_equals_unfold_max_with_minus_inf_padding(k, d, p):
    x = torch.randn(1, 2, 19, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (p, p, p, p), value=float("-inf"))
    cols = F.unfold(padded, k, dilation=d)  # (1, 2·k·k, L)
    h, w = padded.shape[2] - d * (k - 1), padded.shape[3] - d * (k - 1)
    ref = cols.view(1, 2, k * k, h * w).amax(2).view(1, 2, h, w)
    assert torch.equal(DilatedMaxPool2d(k, d, p)(x), ref)


def test_channel_layer_norm_normalizes_every_cell_over_channels():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(5).double()
    norm.weight.data.uniform_(0.5, 2)
    norm.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), ref, atol=1e-14)
    assert torch.allclose(norm(x)[0, :, 1, 2], F.layer_norm(x[0, :, 1, 2], (5,), norm.weight,
                                                          norm.bias), atol=1e-14)
