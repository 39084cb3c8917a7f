"""Weights without copies (densify.convert.storage, densify.models.weights): the converted net
shares the classifier's storage, weights load into meta skeletons, large convolutions chunk."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from densify.convert.dense import convolutionize
from densify.convert.storage import ChunkedConv2d, chunk_convs, shared_copy, shares_storage, to_channels_last
from densify.models import catalogue as zoo
from densify.models.weights import assign_state, load_classifier
from densify.scan.tiling import estimate_bytes


def vgg_like(num_classes: int = 6, permute: bool = False) -> nn.Module:
    """VGG's shape in small: convolutions, a 4×4 map flattened into fc6, fc7, fc8 (optionally
    flattened channels-last, through a permute)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                          nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                                          nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 40), nn.ReLU(),
                                            nn.Linear(40, 24), nn.ReLU(),
                                            nn.Linear(24, num_classes))

        def forward(self, x):
            f = self.features(x)
            f = f.permute(0, 2, 3, 1) if permute else f
            return self.classifier(torch.flatten(f, 1))

    torch.manual_seed(0)
    return Net().double().eval()


@pytest.mark.parametrize("permute", [False, True])
def test_converted_weights_share_the_classifiers_storage(permute):
    model = vgg_like(permute=permute)
    before = copy.deepcopy(model.state_dict())
    dense = convolutionize(model, 16)  # self-checked: equal to the classifier
    mods = dict(dense.net.named_modules())
    for name, p in model.named_parameters():
        converted = mods[name.rpartition(".")[0]]
        mine = getattr(converted, name.rpartition(".")[2])
        assert shares_storage(mine, p), name
        assert mine is not p  # new Parameter objects: the classifier's are untouched
    fc6 = mods["classifier.0"]
    assert isinstance(fc6, nn.Conv2d) and fc6.weight.shape == (40, 16, 4, 4)
    assert fc6.weight.data_ptr() == model.classifier[0].weight.data_ptr()
    # the classifier is left as it was, and the dense net computes it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(dense(x)[:, :, 0, 0], model(x), rtol=0, atol=1e-12)
    # channels_last for the scanner: small weights re-laid out, fc6-sized ones stay shared
    to_channels_last(dense, keep_bytes=fc6.weight.nbytes - 1)
    assert shares_storage(fc6.weight, model.classifier[0].weight)
    assert not shares_storage(mods["features.3"].weight, model.features[3].weight)
    assert mods["features.3"].weight.is_contiguous(memory_format=torch.channels_last)


def test_shared_copy_is_a_new_module_on_the_same_storage():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    twin = shared_copy(model)
    assert twin[0] is not model[0]
    assert shares_storage(twin[0].weight, model[0].weight)
    assert shares_storage(twin[1].running_var, model[1].running_var)
    twin.half()  # replacing the copy's tensors leaves the original alone
    assert model[0].weight.dtype == torch.float32


def test_chunked_head_equals_unchunked_float64():
    model = vgg_like()
    dense = convolutionize(model, 16)
    x = torch.randn(1, 3, 61, 47, dtype=torch.float64)
    whole = dense(x)
    fc6 = dense.net.get_submodule("classifier.0")
    big = estimate_bytes(dense, 16, 16, torch.float64)  # fc6's re-laid-out weight dominates
    assert chunk_convs(dense, 20000) == 1  # fc6's 81920 bytes only
    chunked = dense.net.get_submodule("classifier.0")
    assert isinstance(chunked, ChunkedConv2d) and chunked.chunks == 5
    assert chunked.weight is fc6.weight  # the same parameters, no copy
    assert type(dense.net.get_submodule("features.0")) is nn.Conv2d  # small: left alone
    torch.testing.assert_close(dense(x), whole, rtol=0, atol=1e-12)
    assert estimate_bytes(dense, 16, 16, torch.float64) < big - 81920 // 2
    xl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dense(xl), whole, rtol=0, atol=1e-12)


def test_chunked_conv_output_channel_counts():
    conv = nn.Conv2d(4, 7, 3, stride=2, padding=1, dilation=1).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    for chunks in (1, 2, 3, 7, 50):
        c = ChunkedConv2d.from_conv(conv, chunks)
        assert c.chunks == min(chunks, 7)
        torch.testing.assert_close(c(x), conv(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="groups=1"):
        ChunkedConv2d.from_conv(nn.Conv2d(4, 8, 3, groups=2), 2)


def test_meta_skeleton_load_equals_the_cpu_build(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model("lenet5")
    path = tmp_path / "lenet5.pt"
    torch.save(model.state_dict(), path)
    loaded = load_classifier("lenet5", path).model
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    # assign: the state dict's tensors become the parameters, no copy
    state = model.state_dict()
    skeleton = zoo.build_skeleton("lenet5")
    assert next(skeleton.parameters()).is_meta
    assigned = assign_state(skeleton, state)
    first = next(iter(state))
    assert assigned.state_dict()[first].data_ptr() == state[first].data_ptr()
    # keys that differ: None (the caller builds on the CPU instead)
    assert assign_state(zoo.build_skeleton("lenet5"), {first: state[first]}) is None


def test_torchvision_weights_load_into_a_meta_skeleton(monkeypatch):
    """DEFAULT torchvision weights (the download replaced by a seeded state dict): assigned to a
    skeleton, no copy, and the model computes what torchvision's own build with them does."""
    import torchvision
    from torchvision.models import ResNet18_Weights

    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    state = reference.state_dict()
    monkeypatch.setattr(ResNet18_Weights, "get_state_dict", lambda self, *a, **k: state)
    model = load_classifier("resnet18", "DEFAULT").model
    assert model.conv1.weight.data_ptr() == state["conv1.weight"].data_ptr()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), reference(x))
