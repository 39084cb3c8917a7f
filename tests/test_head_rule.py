"""The head rule (densify.convert.head): which ops are trunk, where the head starts, and how."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densify.convert.graph import prepare
from densify.convert.head import feature_map, find_head
from densify.errors import ConversionError


def _head(model: nn.Module, size: int = 16):
    gm, _ = prepare(model, (3, size, size))
    return gm, find_head(gm)


def _names(nodes) -> set[str]:
    return {n.name for n in nodes}


class Net(nn.Module):
    """A conv trunk and a head given as a function of the trunk map."""

    def __init__(self, head, trunk=None):
        super().__init__()
        self.trunk = trunk or nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU())
        self.fc = nn.Linear(8 * 7 * 7, 4)
        self.head = head

    def forward(self, x):
        return self.head(self, self.trunk(x))


def test_flatten_starts_the_head_and_reads_channel_major():
    gm, head = _head(Net(lambda m, x: m.fc(torch.flatten(x, 1))))
    assert list(head.flattens.values()) == [(1, 2, 3)] and not head.pools and not head.others
    assert feature_map(head, head.starts).name == "trunk_1"


@pytest.mark.parametrize("perm, order", [((0, 2, 3, 1), (2, 3, 1)), ((0, 3, 2, 1), (3, 2, 1))])
def test_permute_is_tracked_and_the_flatten_records_its_order(perm, order):
    gm, head = _head(Net(lambda m, x: m.fc(x.permute(*perm).reshape(x.shape[0], -1))))
    (flatten, got), = head.flattens.items()
    assert got == order and flatten.op in ("call_method", "call_function")
    permute = next(n for n in gm.graph.nodes if n.name.startswith("permute"))
    assert head.axes[permute] == (perm.index(2), perm.index(3))  # spatial axes after the permute


def test_global_pool_starts_the_head_but_squeeze_excitation_is_context():
    def se_then_pool(m, x):
        gate = torch.sigmoid(x.mean((2, 3), keepdim=True))
        return m.fc2((x * gate).mean((2, 3)))

    model = Net(se_then_pool)
    model.fc2 = nn.Linear(8, 4)
    gm, head = _head(model)
    assert len(head.context) == 1 and len(head.pools) == 1
    assert set(head.pools.values()) == {"avg"}


def test_channel_shuffle_and_channels_last_blocks_are_trunk():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.mlp = nn.LayerNorm(8), nn.Linear(8, 8)

        def forward(self, x):
            n, c, h, w = x.shape
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            y = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            return x + y

    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, 2), Block())
    gm, head = _head(Net(lambda m, x: m.fc(x.flatten(1)), trunk))
    assert not head.others and len(head.flattens) == 1
    assert feature_map(head, head.starts).name == "add"


@pytest.mark.parametrize("head_fn, start", [
    (lambda m, x: m.fc2(x.flatten(2).mean(-1)), "flatten"),  # reshape to (N, C, h·w)
    (lambda m, x: m.fc2(F.interpolate(x, size=(1, 1)).flatten(1)), "interpolate"),
    (lambda m, x: m.fc2(torch.softmax(x, dim=3).sum((2, 3))), "softmax"),  # over a spatial axis
    (lambda m, x: m.fc2(m.last(x).amax((1, 2))), "last"),  # Linear on the width axis
])
def test_ops_that_mix_positions_start_a_general_head(head_fn, start):
    model = Net(head_fn)
    model.fc2, model.last = nn.Linear(8, 4), nn.Linear(7, 8)
    gm, head = _head(model)
    assert [n.name for n in head.others] == [start]


def test_attention_inside_the_trunk_is_refused_naming_the_op():
    def non_local(m, x):
        flat = x.flatten(2)
        x = x + (flat @ torch.softmax(flat.transpose(1, 2) @ flat, -1)).view_as(x)
        return m.fc(x.flatten(1))

    with pytest.raises(ConversionError, match=r"^flatten \(flatten\) mixes positions"):
        _head(Net(non_local))


def test_indexing_a_spatial_axis_starts_the_head_and_a_convolutional_net_has_none():
    gm, head = _head(Net(lambda m, x: x[:, 0, 0, :]))
    assert [n.name for n in head.others] == ["getitem"]
    gm, head = _head(Net(lambda m, x: x))
    assert not head.starts


def test_a_gate_multiplied_first_is_still_trunk():
    """torchvision's SqueezeExcitation returns ``scale * input``: the 1×1 gate comes first."""
    def gated(m, x):
        return m.fc2((torch.sigmoid(x.mean((2, 3), keepdim=True)) * x).mean((2, 3)))

    model = Net(gated)
    model.fc2 = nn.Linear(8, 4)
    gm, head = _head(model)
    assert len(head.context) == 1 and len(head.pools) == 1 and not head.others
