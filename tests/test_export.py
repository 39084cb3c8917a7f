"""TorchScript export of both conversion paths (densify.convert.export).

Every saved module is loaded back and compared with the dense net it came from at two input
sizes beyond the canonical one, in float64: scripting keeps sizes symbolic (a trace would bake
them). A head op TorchScript cannot compile is refused in one line naming it.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
from click.testing import CliRunner
from corpus import CORPUS
from torch import nn

from densify.cli import main
from densify.convert.dense import convolutionize
from densify.convert.export import export
from densify.errors import ConversionError

#: corpus models and the head path taken: general-path heads (attention pooling, a resize to a
#: fixed grid, a channels-last linear, a dict of outputs forced onto the general path) and fast.
CASES = [("attention_pool", "auto", "general"), ("interpolated_head", "auto", "general"),
         ("channels_last_linear", "auto", "general"), ("dict_outputs_softmax", "general", "general"),
         ("namedtuple_outputs", "general", "general"), ("lenet_view", "auto", "fast"),
         ("dict_outputs_softmax", "auto", "fast")]


def _dense(name: str, head: str, output_stride: int | None = None):
    factory, size, _ = CORPUS[name]
    torch.manual_seed(sum(map(ord, name)))
    model = factory().double().eval()
    return convolutionize(model, size, head=head, output_stride=output_stride), size


def _assert_same(loaded, dense, size, stride):
    """The loaded module equals the dense net's maps (outputs concatenated) at two sizes."""
    c = dense.input_size[0]
    for dh, dw in ((stride, 3 * stride), (5 * stride + 1, 2 * stride + 3)):
        x = torch.randn(2, c, size[0] + dh, size[1] + dw, dtype=torch.float64)
        with torch.no_grad():
            want = torch.cat(dense.output_maps(dense(x)), dim=1)
            got = loaded(x)
        assert got.shape == want.shape and want.shape[-1] > 1
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, head, path", CASES)
def test_torchscript_export_of_both_paths_equals_the_dense_net(tmp_path, name, head, path):
    dense, size = _dense(name, head)
    assert {o.path for o in dense.outputs} == {path}
    export(dense, tmp_path / "net.pt")
    _assert_same(torch.jit.load(str(tmp_path / "net.pt")), dense, size, dense.output_stride)


@pytest.mark.slow  # 30 s here: float64 resnet18, both paths
def test_torchscript_export_of_a_torchvision_net_at_a_small_input(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).double().eval()
    for head, path in (("auto", "fast"), ("general", "general")):
        dense = convolutionize(model, (64, 64), head=head)
        assert dense.outputs[0].path == path
        export(dense, tmp_path / f"{head}.pt")
        _assert_same(torch.jit.load(str(tmp_path / f"{head}.pt")), dense, (64, 64), 32)


def odd_scale(x, *factors):
    """A head op TorchScript cannot compile (variable arguments)."""
    return x * sum(factors)


torch.fx.wrap("odd_scale")


class OddHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return odd_scale(self.fc(self.conv(x).flatten(1)), 1.0, 2.0)


def test_torchscript_export_of_a_dilated_window_head(tmp_path):
    """Stride-1 final pooling dilates the general path's WindowHead: still exported exactly."""
    dense, size = _dense("attention_pool", "auto", output_stride=2)
    assert dense.outputs[0].path == "general" and dense.output_stride == 2
    assert dense.net.densify_head.dilation == (2, 2)
    export(dense, tmp_path / "net.pt")
    _assert_same(torch.jit.load(str(tmp_path / "net.pt")), dense, size, 2)


def test_a_head_torchscript_cannot_compile_is_refused_in_one_line(tmp_path):
    dense = convolutionize(OddHead().eval(), (6, 6))
    assert dense.outputs[0].path == "general"
    with pytest.raises(ConversionError, match=r"cannot compile 'def odd_scale.*\.onnx") as info:
        export(dense, tmp_path / "net.pt")
    assert "\n" not in str(info.value) and not (tmp_path / "net.pt").exists()


def test_cli_converts_a_general_path_head_to_torchscript(tmp_path):
    factory, size, _ = CORPUS["attention_pool"]
    torch.manual_seed(1)
    model = factory().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "attention.pt"
    result = CliRunner().invoke(main, ["convert", "--model", "corpus:AttentionPool", "-w",
                                       str(tmp_path / "w.pt"), "--input-size", "22x22",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "general path" in result.output
    dense = convolutionize(model, size)
    x = torch.randn(1, 3, 22 + 12, 22 + 20)
    with torch.no_grad():
        want, got = dense(x), torch.jit.load(str(out))(x)
    assert got.shape[-2:] == (4, 6)  # 12 / 4 + 1 by 20 / 4 + 1 cells: the net's stride is 4
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
