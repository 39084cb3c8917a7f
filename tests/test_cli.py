"""The models / verify / convert commands, in-process (CliRunner) and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from densify.cli import main
from densify.models import catalogue as zoo


@pytest.fixture
def runner():
    return CliRunner()


def test_models_lists_every_family_with_strides(runner):
    result = runner.invoke(main, ["models", "--family", "seed", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["lenet5"]["strides"] == [4, 2, 1] and rows["lenet5"]["input_size"] == [1, 28, 28]
    assert rows["zfnet"]["strides"] == [32, 16, 8]
    assert rows["nin"]["params"] == sum(p.numel() for p in zoo.build_model("nin").parameters())


def test_verify_passes_and_prints_each_check(runner):
    result = runner.invoke(main, ["verify", "--model", "lenet5", "-w", "random"])
    assert result.exit_code == 0, result.output
    for name in ("canonical", "head", "output_stride"):
        assert f"{name}" in result.output
    assert "FAIL" not in result.output


def test_verify_crops_exact_for_lenet_measured_for_padded(runner):
    result = runner.invoke(main, ["verify", "--model", "lenet5", "-w", "random", "--crops"])
    assert result.exit_code == 0 and "crops          ok" in result.output
    result = runner.invoke(main, ["verify", "-m", "nin", "-w", "random", "--input-size", "96", "--crops",
                                  "--dtype", "float32"])
    assert result.exit_code == 0, result.output  # padded: the crop gap is reported, not failed
    assert "crops" in result.output


def test_verify_fails_with_exit_1_when_a_check_fails(runner, monkeypatch):
    from densify.convert import verify

    def broken(model, dense, seed=0):
        return verify.Check("canonical", 1.0, 1.0, 1e-9, 1)

    monkeypatch.setattr(verify, "check_canonical", broken)
    result = runner.invoke(main, ["verify", "--model", "lenet5", "-w", "random"])
    assert result.exit_code == 1 and "FAIL" in result.output


@pytest.mark.parametrize("args, message", [
    (["verify", "-m", "resnet5"], "did you mean resnet50"),
    (["verify", "-m", "vit_b_16"], "self-attention"),
    (["verify", "-m", "lenet5", "-w", "random", "-s", "3"], "not reachable"),
    (["verify", "-m", "zfnet", "-w", "DEFAULT"], "no published pretrained weights"),
    (["verify", "-m", "lenet5", "-w", "missing.pt"], "no such weights file"),
    (["verify", "-m", "lenet5", "--input-size", "0"], "at least 1"),
    (["convert", "-m", "lenet5", "-o", "x.txt"], "must end in .pt"),
])
def test_bad_input_is_one_line_without_traceback(runner, args, message):
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_weights_for_another_architecture(runner, tmp_path):
    path = tmp_path / "nin.pt"
    torch.save(zoo.build_model("nin").state_dict(), path)
    result = runner.invoke(main, ["verify", "-m", "lenet5", "-w", str(path)])
    assert result.exit_code == 1
    assert "another architecture" in result.output and "features" not in result.output.split(
        "Error:")[0]


def test_weights_file_round_trip_and_checkpoint_wrappers(tmp_path):
    from densify.models.weights import load_classifier

    model = zoo.build_model("lenet5")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    clf = load_classifier("lenet5", tmp_path / "ckpt.pth")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(clf.model(x), model(x)) and not clf.random


def test_convert_torchscript_and_onnx_match_torch(runner, tmp_path):
    import onnxruntime as ort

    from densify.convert.dense import convolutionize

    torch.manual_seed(0)
    model = zoo.build_model("nin")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    for suffix in (".pt", ".onnx"):
        out = tmp_path / f"nin{suffix}"
        result = runner.invoke(main, ["convert", "-m", "nin", "-s", "16", "--input-size", "96",
                                      "-w", str(tmp_path / "w.pt"), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.exists() and not list(tmp_path.glob(".*tmp*"))
    dense = convolutionize(model, 96, output_stride=16)
    ts = torch.jit.load(str(tmp_path / "nin.pt"))
    sess = ort.InferenceSession(str(tmp_path / "nin.onnx"))
    for h, w in [(96 + 32, 96 + 64), (200, 150)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = dense(x)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == tuple(ref.shape) == tuple(ts(x).shape)
        scale = ref.abs().max().item()
        assert torch.allclose(ts(x), ref, rtol=0, atol=1e-5 * scale)
        assert np.abs(got - ref.numpy()).max() <= 1e-4 * scale


def test_subprocess_entry_point_errors_cleanly():
    proc = subprocess.run([sys.executable, "-m", "densify", "verify", "-m", "nosuchnet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown model 'nosuchnet'" in proc.stderr and "Traceback" not in proc.stderr
