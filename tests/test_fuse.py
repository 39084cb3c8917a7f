"""Convolution + ReLU fusion (densify.convert.fuse): exact on the CPU (bit for bit), the sites a
ResNet's architecture implies and no others, idempotent, and the cuDNN branch taken only where
:func:`uses_cudnn` says so, with the arguments the original ops had."""

from __future__ import annotations

import copy
import importlib.util
import operator
import types
from pathlib import Path

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from densify.convert import fuse
from densify.convert.dense import convolutionize
from densify.convert.fold import fold_batchnorm
from densify.convert.fuse import ConvAddReLU2d, ConvReLU2d, fuse_conv_relu, uses_cudnn
from densify.models import catalogue as zoo


def counts(net: nn.Module) -> tuple[int, int]:
    """(ConvReLU2d, ConvAddReLU2d) modules called in ``net``'s graph."""
    gm = net.net
    mods = dict(gm.named_modules())
    called = [type(mods[n.target]) for n in gm.graph.nodes if n.op == "call_module"]
    return called.count(ConvReLU2d), called.count(ConvAddReLU2d)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = zoo.build_model("resnet18").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics: biases after folding
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def expected_sites(model: nn.Module) -> tuple[int, int]:
    """From the architecture: the stem's conv -> relu, and per residual block one conv -> relu
    per inner conv but the last, whose output goes through ``+ identity`` into a ReLU."""
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]
    inner = sum(1 if isinstance(b, BasicBlock) else 2 for b in blocks)
    return 1 + inner, len(blocks)


@pytest.mark.parametrize("stride, size", [(32, (259, 291)), (16, (231, 263))])
def test_resnet18_fused_equals_unfused(resnet18, stride, size):
    dense = fold_batchnorm(convolutionize(resnet18, (3, 224, 224), stride)).double()
    fused = copy.deepcopy(dense)
    n = fuse_conv_relu(fused)
    assert counts(fused) == expected_sites(resnet18)
    assert n == sum(expected_sites(resnet18))
    assert fused.feature_node in {node.name for node in fused.net.graph.nodes}
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    with torch.inference_mode():
        assert torch.equal(fused(x), dense(x))
    # the convolutions moved, none was copied or left behind
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in dense.parameters())


def test_resnet18_fusing_twice_changes_nothing(resnet18):
    dense = fold_batchnorm(convolutionize(resnet18, (3, 224, 224), 32))
    assert fuse_conv_relu(dense) > 0
    code, names = dense.net.code, [n for n, _ in dense.named_modules()]
    assert fuse_conv_relu(dense) == 0
    assert dense.net.code == code and [n for n, _ in dense.named_modules()] == names


def test_nodes_a_dense_net_names_stay(resnet18):
    dense = fold_batchnorm(convolutionize(resnet18, (3, 224, 224), 32))
    last_add = [n for n in dense.net.graph.nodes if n.target is operator.add][-1]
    dense.feature_node = last_add.name  # as if the trunk ended before the last ReLU
    assert fuse_conv_relu(dense) == sum(expected_sites(resnet18)) - 1
    assert last_add.name in {n.name for n in dense.net.graph.nodes}


def test_fused_module_shares_the_convolution():
    conv = nn.Conv2d(3, 4, 3)
    gm = fx.symbolic_trace(nn.Sequential(conv, nn.ReLU()))
    assert fuse_conv_relu(gm) == 1
    (module,) = [m for m in gm.modules() if isinstance(m, ConvReLU2d)]
    assert module.conv is conv
    assert sum(p.numel() for p in gm.parameters()) == sum(p.numel() for p in conv.parameters())


class Blocks(nn.Module):
    """Every form the rewrite knows, and the ones it must leave alone."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.c = nn.Conv2d(6, 6, 1)
        self.d = nn.Conv2d(6, 6, 3, padding="same")
        self.e = nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect")
        self.twice = nn.Conv2d(6, 6, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.a(x))  # module ReLU (in place)
        x = F.relu(x + self.b(x))  # z + conv(x), functional ReLU
        x = torch.relu(torch.add(self.c(x), x))  # conv(x) + z through torch.add
        x = self.d(x).relu()  # string padding: fused, original path everywhere
        x = F.relu(self.e(x) + 1.0)  # a constant, not a tensor: not fused
        y = self.twice(x)
        return torch.relu(y) + y  # two users: not fused


def test_hand_made_graph():
    torch.manual_seed(0)
    gm = fx.symbolic_trace(Blocks().double())
    reference = copy.deepcopy(gm)
    a, b, c, d = (gm.get_submodule(k) for k in "abcd")
    assert fuse_conv_relu(gm) == 4
    mods = dict(gm.named_modules())
    fused = {mods[n.target].conv: mods[n.target] for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(mods[n.target], ConvReLU2d | ConvAddReLU2d)}
    assert set(fused) == {a, b, c, d}  # the graph's own convolutions, no copies
    assert isinstance(fused[a], ConvReLU2d) and isinstance(fused[d], ConvReLU2d)
    assert not fused[b].conv_first and fused[c].conv_first  # the operand order as written
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64) - 0.5
    assert torch.equal(gm(x), reference(x))
    assert fuse_conv_relu(gm) == 0


class TwoUsers(nn.Module):
    def __init__(self, conv_used_twice: bool):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
        self.conv_used_twice = conv_used_twice

    def forward(self, x):
        y = self.conv(x)
        s = y + x
        if self.conv_used_twice:
            return self.relu(s) * y  # the convolution's output has two users
        return self.relu(s) + s  # the addition has two users


def test_two_users_not_fused():
    models = (TwoUsers(True), TwoUsers(False), nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid(),
                                                             nn.ReLU()))
    for model in models:
        gm = fx.symbolic_trace(model)
        code = gm.code
        assert fuse_conv_relu(gm) == 0
        assert gm.code == code


def test_sequential_runs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), nn.Conv2d(4, 2, 1))
    reference = copy.deepcopy(net)
    assert fuse_conv_relu(net) == 2
    assert [type(m).__name__ for m in net] == ["ConvReLU2d", "Identity", "ReLU", "Conv2d",
                                               "Sequential", "Conv2d"]
    x = torch.randn(1, 3, 11, 9)
    assert torch.equal(net(x), reference(x))


def fake_cuda(shape, requires_grad=False):
    """What :func:`uses_cudnn` reads of a tensor, for a CUDA tensor on a machine without one."""
    return types.SimpleNamespace(device=torch.device("cuda"), shape=torch.Size(shape),
                                 requires_grad=requires_grad, dim=lambda: len(shape))


def test_uses_cudnn_decision():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1)
    x = fake_cuda((2, 3, 17, 20))
    with torch.inference_mode():
        assert uses_cudnn(conv, x)
        assert uses_cudnn(conv, x, fake_cuda((2, 8, 9, 10)))
        assert not uses_cudnn(conv, x, fake_cuda((2, 8, 1, 1)))  # broadcasting z
        assert not uses_cudnn(conv, torch.zeros(2, 3, 17, 20))  # CPU
        assert not uses_cudnn(conv, fake_cuda((3, 17, 20)))  # unbatched
        assert not uses_cudnn(nn.Conv2d(3, 8, 3, padding="same"), x)
        assert not uses_cudnn(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), x)
        with torch.backends.cudnn.flags(enabled=False):
            assert not uses_cudnn(conv, x)
    assert not uses_cudnn(conv, x)  # autograd on and the weights require it
    with torch.no_grad():
        assert uses_cudnn(conv, x)


def reference_relu(x, weight, bias, stride, padding, dilation, groups):
    return torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))


def reference_add_relu(x, weight, z, alpha, bias, stride, padding, dilation, groups):
    return torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + alpha * z)


@pytest.fixture
def spies(monkeypatch):
    """The cuDNN branch taken on the CPU: the fused ops replaced by their definitions."""
    calls = []

    def spy(name, reference):
        def op(*args):
            calls.append((name, args))
            return reference(*args)
        monkeypatch.setattr(torch, name, op)

    spy("cudnn_convolution_relu", reference_relu)
    spy("cudnn_convolution_add_relu", reference_add_relu)
    monkeypatch.setattr(fuse, "uses_cudnn", lambda conv, x, z=None: True)
    return calls


def test_cudnn_branch_arguments(resnet18, spies):
    dense = fold_batchnorm(convolutionize(resnet18, (3, 224, 224), 16))
    fused = copy.deepcopy(dense)
    fuse_conv_relu(fused)
    x = torch.rand(1, 3, 233, 240)
    with torch.inference_mode():
        assert torch.equal(fused(x), dense(x))
    plain, added = expected_sites(resnet18)
    assert [name for name, _ in spies].count("cudnn_convolution_relu") == plain
    assert [name for name, _ in spies].count("cudnn_convolution_add_relu") == added
    convs = {id(m.conv.weight): m.conv for m in fused.modules() if hasattr(m, "conv")}
    for name, args in spies:
        conv = convs[id(args[1])]  # same dtype: the parameter itself, no cast
        assert args[2 if name == "cudnn_convolution_relu" else 4] is conv.bias
        tail = args[-4:]
        assert tail == (conv.stride, conv.padding, conv.dilation, conv.groups)
        if name == "cudnn_convolution_add_relu":
            assert args[3] == 1.0 and args[2].shape[1] == conv.out_channels


def test_cudnn_branch_casts_to_autocast_dtype_and_keeps_memory_format(spies, monkeypatch):
    conv = nn.Conv2d(4, 4, 3, padding=1).to(memory_format=torch.channels_last)
    gm = fx.symbolic_trace(nn.Sequential(conv, nn.ReLU()))
    fuse_conv_relu(gm)
    block = ConvAddReLU2d(conv)
    x = torch.rand(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    z = torch.rand(1, 4, 8, 8)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device="cuda": device == "cuda")
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.bfloat16)
    with torch.inference_mode():
        gm(x)
        block(x, z)
    for _, args in spies:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        assert all(t.dtype == torch.bfloat16 for t in tensors)
        assert args[0].is_contiguous(memory_format=torch.channels_last)
        assert args[1].is_contiguous(memory_format=torch.channels_last)
    assert len(spies) == 2


def test_gpu_bench_fuse_part_runs_on_the_cpu():
    """scripts/gpu_bench.py --parts fuse, on the CPU: it runs, records, and fusion changes
    nothing there (the GPU figures come from the same function on CUDA)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = {}
    row = bench.fused_vs_plain("resnet18", 32, record, device="cpu", size=(224, 256), repeat=1)
    assert record["fuse"] == [row]
    assert row["sites"] == sum(expected_sites(zoo.build_model("resnet18")))
    assert row["fused"]["max_abs_diff"] == 0.0 and row["max_abs_output"] > 0
    assert row["plain"]["eager_ms"] > 0 and row["fused"]["eager_ms"] > 0


@pytest.mark.slow
def test_vgg11_fused_equals_unfused():
    """VGG: a plain chain; every convolution (fc6 and fc7 as convolutions too) before a ReLU."""
    torch.manual_seed(0)
    model = zoo.build_model("vgg11").eval()
    dense = convolutionize(model, (3, 224, 224), 32)
    fused = copy.deepcopy(dense)
    pairs = sum(isinstance(m, nn.Conv2d) for m in model.features) + sum(
        isinstance(a, nn.Linear) and isinstance(b, nn.ReLU)
        for a, b in zip(model.classifier, model.classifier[1:], strict=False))
    assert fuse_conv_relu(fused) == pairs == counts(fused)[0]
    x = torch.rand(1, 3, 257, 290)
    with torch.inference_mode():
        assert torch.equal(fused(x), dense(x))
