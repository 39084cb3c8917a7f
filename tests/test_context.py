"""Global context (densify.convert.context) is recognised in every form and flagged, attention is
refused, and the receptive field is honest: a locality probe on an input larger than the field.

Small hand-written nets (no timm): each block below is what a timm family does, reduced to its
op. The probe replaces every pixel below cell row 0's reported receptive field; row 0 must not
move unless the net is flagged (then it must move, or the flag would be a false alarm).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densify.convert import convolutionize
from densify.errors import ConversionError, DensifyError

SIZE = 16


class Net(nn.Module):
    """conv(3→8, stride 2) → ``block`` → conv(8→8) → global average pool → Linear(8→4)."""

    def __init__(self, block):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1)
        self.block, self.fc = block, nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv(self.block(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class ECA(nn.Module):
    """timm's EcaModule: a Conv1d over the pooled (N, 1, C) vector gates the map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1)


class SplitAttention(nn.Module):
    """ResNeSt/SK: two branches stacked on a new axis, a pooled gate, summed over the branches."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 16, 1)

    def forward(self, x):
        paths = torch.stack([self.a(x), self.b(x)], dim=1)  # (N, 2, C, h, w)
        gate = self.fc(paths.sum(1).mean((2, 3), keepdim=True)).view(x.shape[0], 2, 8, 1, 1)
        return (paths * gate.softmax(1)).sum(dim=1)


class Branches(nn.Module):
    """The same stack and sum over branches with no gate: plain trunk, no global context."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return torch.stack([self.a(x), self.b(x)], dim=1).sum(dim=1)


class Coordinate(nn.Module):
    """Coordinate attention: means over one spatial axis gate the map."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean(3, keepdim=True)) * torch.sigmoid(x.mean(2, keepdim=True))


class GlobalContextBlock(nn.Module):
    """GCNet: a softmax attention pool over h·w added back as a per-image bias."""

    def __init__(self):
        super().__init__()
        self.attn, self.mlp = nn.Conv2d(8, 1, 1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        attn = self.attn(x).reshape(n, 1, h * w).softmax(-1).unsqueeze(-1)  # (N, 1, hw, 1)
        context = (x.reshape(n, c, h * w).unsqueeze(1) @ attn).view(n, c, 1, 1)
        return x + self.mlp(context)


class Wrap(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


GLOBAL = {
    "eca": ECA,
    "split_attention": SplitAttention,
    "coordinate": Coordinate,
    "gc_block": GlobalContextBlock,
    "group_norm": lambda: nn.GroupNorm(2, 8),
    "group_norm_function": lambda: Wrap(lambda x: F.group_norm(x, 1)),  # timm's GroupNorm1
    "instance_norm": lambda: nn.InstanceNorm2d(8, affine=True),
    "layer_norm_chw": lambda: Wrap(lambda x: F.layer_norm(x, x.shape[1:])),
    "var_gate": lambda: Wrap(lambda x: x / (x.var((2, 3), keepdim=True) + 1).sqrt()),
}
LOCAL = {
    "branches": Branches,
    "instance_norm_running_stats": lambda: nn.InstanceNorm2d(8, track_running_stats=True),
    "channel_mean": lambda: Wrap(lambda x: x - x.mean(1, keepdim=True)),  # CBAM's spatial gate
}


def _net(block) -> Net:
    torch.manual_seed(0)
    net = Net(block()).double().eval()
    for m in net.modules():  # running statistics that are not the identity
        if getattr(m, "running_var", None) is not None:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return net


def probe(dense) -> float:
    """Row 0's largest change when every input row below its receptive field (below its window,
    for a global net) is replaced, on an input taller than the field."""
    g, s = dense.geometry, dense.output_stride
    end = SIZE if g.rf_size is None else g.rf_offset[0] + g.rf_size[0]
    height = SIZE + s * (-(-(end - SIZE) // s) + 2)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, height, SIZE + 2 * s, generator=gen, dtype=torch.float64)
    y = x.clone()
    y[:, :, end:] = torch.randn(1, 3, height - end, SIZE + 2 * s, generator=gen,
                                dtype=torch.float64)
    with torch.no_grad():
        return (dense(y)[:, :, 0] - dense(x)[:, :, 0]).abs().max().item()


@pytest.mark.parametrize("name", list(GLOBAL))
def test_global_context_is_flagged_and_the_field_is_global(name, caplog):
    """Mutation caught: dropping GroupNorm from ``context.statistic`` (or the stack/sum axis
    tracking) makes the GroupNorm net convert unflagged with a finite field, and the probe
    moves row 0."""
    net = _net(GLOBAL[name])
    dense = convolutionize(net, SIZE)  # self-check: exact at the canonical input and per window
    assert dense.global_context and dense.geometry.rf_size is None
    assert "global-context" in caplog.text
    nodes = {n.name for n in dense.net.graph.nodes}
    assert set(dense.global_context) <= nodes  # node names of the dense graph
    assert probe(dense) > 1e-9  # the flag is true: row 0 sees pixels outside its window


@pytest.mark.parametrize("name", list(LOCAL))
def test_local_ops_are_trunk_and_the_probe_cannot_move_row_0(name):
    """Mutation caught: treating a reduction over the channel axis (or a stack of branches) as
    mixing positions refuses these nets; an underestimated field moves row 0."""
    dense = convolutionize(_net(LOCAL[name]), SIZE)
    assert not dense.global_context and dense.geometry.rf_size is not None
    assert probe(dense) == 0.0


@pytest.mark.parametrize("block, op", [
    (lambda: Wrap(lambda x: x + (x.flatten(2) @ torch.softmax(
        x.flatten(2).transpose(1, 2) @ x.flatten(2), -1)).view_as(x)), "flatten"),
    (lambda: Wrap(lambda x: x + torch.roll(x, 1, 3)), "roll"),
    (lambda: Wrap(lambda x: x + torch.cat(torch.split(x, 4, dim=2)[::-1], 2)), "split"),
])
def test_attention_and_position_dependent_ops_are_refused_in_one_line(block, op):
    """Mutation caught: accepting a value that rejoins the trunk as a map (``_check_rejoin``)
    converts the non-local block, wrong on every larger input."""
    with pytest.raises(ConversionError, match=rf"^{op}\S* \(\w+\) mixes positions") as info:
        convolutionize(_net(block), SIZE)
    assert "\n" not in str(info.value)


def test_a_position_embedding_in_the_trunk_is_refused():
    """(In the head it is fine: the general path adds it to every window.)"""
    class Embedded(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.randn(1, 8, 8, 8))

        def forward(self, x):
            return x + torch.tanh(x + self.pos)

    with pytest.raises(ConversionError, match="mixes positions"):
        convolutionize(_net(Embedded), SIZE)


class ConvHead(nn.Module):
    """MobileNetV3's head: pool → 1×1 conv_head (channels 8 → 12) → activation → flatten → fc."""

    def __init__(self, conv_head=None):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = conv_head or nn.Conv2d(8, 12, 1)
        self.flatten, self.fc = nn.Flatten(1), nn.Linear(12, 4)

    def forward(self, x):
        x = F.hardswish(self.conv_head(self.pool(self.stem(x))))
        return self.fc(self.flatten(x).view(x.shape[0], -1, 1).squeeze(-1))


def test_the_fast_path_follows_a_conv_head_after_the_pool():
    """Mutation caught: keeping the pooled channel count (8) through ``conv_head`` makes the fast
    path fail; with the fallback the net would still convert, on the general path."""
    torch.manual_seed(0)
    net = ConvHead().double().eval()
    dense = convolutionize(net, SIZE, head="fast")
    assert dense.outputs[0].path == "fast"
    s = dense.output_stride
    x = torch.randn(1, 3, SIZE + 3 * s, SIZE + s, dtype=torch.float64)
    with torch.no_grad():  # an unpadded net: cell (3, 1) is the classifier on its window's crop
        torch.testing.assert_close(dense(x)[:, :, 3, 1], net(x[:, :, 3 * s:3 * s + SIZE, s:]),
                                   rtol=0, atol=1e-12)


def test_a_head_op_the_fast_path_cannot_slide_falls_back_to_the_general_path():
    """A 3×3 padded conv on the pooled 1×1 map sees zeros; on the dense map it would see the
    neighbours: the fast path must not rewrite it, and automatic mode takes the general path."""
    torch.manual_seed(0)
    net = ConvHead(nn.Conv2d(8, 12, 3, padding=1)).double().eval()
    with pytest.raises(ConversionError, match="fast path cannot convert"):
        convolutionize(net, SIZE, head="fast")
    assert convolutionize(net, SIZE).outputs[0].path == "general"


class Unrolled(nn.Module):
    """Python control flow on a traced value: torch.fx cannot trace it."""

    def forward(self, x):
        return x.mean() if x.sum() > 0 else x


@pytest.mark.parametrize("model", [
    nn.Identity(),  # no head: not a classifier
    Unrolled(),
    nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.LSTM(196, 4)),  # a tuple of tensors out
    Wrap(lambda x: x.sum().item()),  # not a tensor
])
def test_every_error_on_any_module_is_one_densify_error(model):
    """Mutation caught: removing the catch-all in ``convolutionize`` lets an unforeseen failure
    escape as a bare Python exception (a StopIteration, a TypeError)."""
    with pytest.raises(DensifyError) as info:
        convolutionize(model, SIZE)
    assert "\n" not in str(info.value)


def test_an_unforeseen_failure_inside_densify_is_still_one_densify_error(monkeypatch):
    """Mutation caught: removing the catch-all in ``convolutionize`` lets this IndexError (as
    ``eca_resnet33ts`` raised in ``axes._same_axes``) escape bare."""
    from densify.convert import dense

    def broken(gm):
        return [][0]

    monkeypatch.setattr(dense, "find_head", broken)
    with pytest.raises(ConversionError, match=r"IndexError in broken.*head='general'") as info:
        convolutionize(_net(Branches), SIZE)
    assert isinstance(info.value.__cause__, IndexError) and "\n" not in str(info.value)
