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
from densify.errors import SelfCheckError, UnforeseenError
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


@pytest.mark.parametrize("args, message, status", [
    (["verify", "-m", "resnet5"], "did you mean resnet50", 2),
    (["verify", "-m", "vit_b_16"], "self-attention", 2),
    (["verify", "-m", "lenet5", "-w", "random", "-s", "3"], "not reachable", 1),
    (["verify", "-m", "zfnet", "-w", "DEFAULT"], "no published pretrained weights", 1),
    (["verify", "-m", "lenet5", "-w", "missing.pt"], "no such weights file", 1),
    (["verify", "-m", "lenet5", "--input-size", "0"], "at least 1", 2),
    (["convert", "-m", "lenet5", "-o", "x.txt"], "must end in .pt", 2),
])
def test_bad_input_is_one_line_without_traceback(runner, args, message, status):
    """Bad option values are usage errors (2), bad input found while working is 1."""
    result = runner.invoke(main, args)
    assert _one_line(result, status) and message in result.output
    assert "Traceback" not in result.output


def _stderr_lines(result) -> list[str]:
    """stderr's lines, less log records (``WARNING: lenet5: random weights ...``)."""
    return [line for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING:", "INFO:"))]


def _one_line(result, status: int) -> str:
    """The run exited with ``status`` and wrote exactly one line on stderr: ``Error: ...``."""
    lines = _stderr_lines(result)
    assert result.exit_code == status, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["verify", "-m", "lenet5", "-w", "missing.pt"], ["missing.pt", "no such weights file"]),
    (["verify", "-m", "zfnet", "-w", "DEFAULT"], ["no published pretrained weights"]),
    (["verify", "-m", "lenet5", "-w", "random", "-s", "3"], ["not reachable"]),
])
def test_exit_classes_user_errors_exit_1_without_bug_wording(runner, args, words):
    """Bad input: exit 1, one line naming the problem, nothing that calls it a bug. Mutation
    caught: every DensifyError routed to the bug branch (exit 3, "internal error")."""
    line = _one_line(runner.invoke(main, args), 1)
    assert all(w in line for w in words), line
    assert "bug" not in line and "internal error" not in line, line


@pytest.mark.parametrize("args, words", [
    (["--bogus"], ["No such option '--bogus'", "'densify --help'"]),
    (["nosuchcommand"], ["No such command 'nosuchcommand'", "'densify --help'"]),
    (["verify", "-m", "lenet5", "--dtype", "int8"], ["--dtype", "'densify verify --help'"]),
    (["verify", "-m", "lenet5", "-s"], ["'-s' requires an argument", "'densify verify --help'"]),
    (["verify", "-m", "nosuchnet"], ["unknown model 'nosuchnet'", "'densify verify --help'"]),
    (["heatmap"], ["Missing argument", "'densify heatmap --help'"]),
    (["convert", "-m", "lenet5", "-o", "x.txt"], ["must end in .pt", "'densify convert --help'"]),
])
def test_exit_classes_usage_errors_exit_2_in_one_line(runner, args, words):
    """click's usage errors: exit 2 in ONE line naming the problem and the command's --help (click
    alone prints a usage line, a hint line and the error). Mutation caught: the UsageLine
    conversion removed from the group (three lines)."""
    line = _one_line(runner.invoke(main, args, prog_name="densify"), 2)
    assert all(w in line for w in words), line
    assert "bug" not in line and "Usage:" not in line, line


@pytest.mark.parametrize("raised", [RuntimeError("boom at cell 3"),
                                    SelfCheckError("self-check failed: output None cell (0, 0)"),
                                    UnforeseenError("converting Net failed (IndexError in f: )")])
def test_exit_classes_bugs_exit_3_with_the_traceback_under_v(runner, monkeypatch, raised):
    """A bug (any exception that is not bad input, and a conversion failing its own self-check)
    exits 3 with one line that says so; with ``-v`` its traceback comes first. Mutations caught:
    bugs exiting 1; ``-v`` no longer printing the traceback; SelfCheckError or UnforeseenError (an
    exception the converter did not foresee) reported as bad input (exit 1) like their base class
    ConversionError."""
    from densify.convert import dense

    def broken(*args, **kwargs):
        raise raised

    monkeypatch.setattr(dense, "convolutionize", broken)
    args = ["verify", "-m", "lenet5", "-w", "random"]
    line = _one_line(runner.invoke(main, args), 3)
    assert "internal error" in line and "bug in densify" in line and str(raised) in line, line
    assert type(raised).__name__ in line
    verbose = runner.invoke(main, ["-v", *args])
    assert verbose.exit_code == 3, verbose.output
    lines = _stderr_lines(verbose)
    assert lines[0] == "Traceback (most recent call last):", verbose.stderr
    assert any("in broken" in line for line in lines), verbose.stderr  # the raising frame
    assert lines[-1] == line  # the same one line closes it


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
    assert len(proc.stderr.splitlines()) == 1 and "--help" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["verify", "convert"])
def test_an_input_size_too_small_is_one_line_without_torchs_tracebacks(runner, tmp_path, command):
    """torch.fx's ShapeProp prints the traceback of the failing node before raising; densify
    raises one ConversionError line and nothing else reaches stderr."""
    args = [command, "-m", "lenet5", "-w", "random", "--input-size", "10"]
    if command == "convert":
        args += ["-o", str(tmp_path / "x.pt")]
    result = runner.invoke(main, args)
    line = _one_line(result, 1)
    assert "fails on a 1x10x10 input" in line and "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, words", [
    (b"this is text, not tensors\n", ["not a PyTorch weights file"]),
    (None, ["holds a pickled torch.nn.modules.linear.Linear", "not a state dict"]),
    ("cut", ["not a PyTorch weights file (PytorchStreamReader failed reading zip archive: "
             "failed finding central directory)"]),
])
def test_a_file_that_is_not_a_state_dict_names_the_fix(runner, tmp_path, content, words):
    """torch.load's own message (a paragraph about weights_only) is not passed on, nor cut
    mid-word, and the line says how to save a state dict."""
    path = tmp_path / "w.pt"
    if content is None:
        torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled model
    elif content == "cut":  # a state dict cut in half (an interrupted download)
        torch.save(zoo.build_model("lenet5").state_dict(), path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    line = _one_line(runner.invoke(main, ["verify", "-m", "lenet5", "-w", str(path)]), 1)
    assert all(w in line for w in words), line
    assert "torch.save(model.state_dict(), path)" in line and "weights_only" not in line, line


def test_convert_into_an_unwritable_directory_is_bad_input_before_converting(runner, tmp_path,
                                                                            monkeypatch):
    """An output directory that refuses files is exit 1 naming -o (it was torch.jit.save's
    RuntimeError: exit 3, "a bug in densify"), found before the model is converted. Simulated:
    root writes through permission bits."""
    import tempfile

    from densify.models import user

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output directory was checked")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(user, "load_model", never)
    line = _one_line(runner.invoke(main, ["convert", "-m", "lenet5", "-w", "random", "-o",
                                          str(tmp_path / "x.pt")]), 1)
    assert str(tmp_path) in line and "Permission denied" in line and "-o" in line, line
    assert not list(tmp_path.iterdir())


def test_convert_to_torchscript_writes_no_deprecation_warnings(runner, tmp_path):
    """torch 2.9+ deprecates torch.jit.script and save (FutureWarning, four lines on stderr);
    the .pt output is TorchScript on purpose, so the warnings are not shown."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a plain run shows them (pytest would catch them)
        result = runner.invoke(main, ["convert", "-m", "lenet5", "-w", "random", "-o",
                                      str(tmp_path / "x.pt")])
    assert result.exit_code == 0, result.output
    assert _stderr_lines(result) == [], result.stderr
    assert not [w for w in caught if "torch.jit" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "x.pt").stat().st_size > 0


@pytest.mark.parametrize("target, words", [
    ("file/x.json", ["is a file, not a directory"]),
    (".", ["it is a directory"]),
])
def test_an_unwritable_json_target_is_refused_before_any_work(runner, tmp_path, target, words):
    """--json to a path that cannot be written: one usage line naming --json (it was found
    after the work, blamed on -o)."""
    (tmp_path / "file").write_text("x")
    line = _one_line(runner.invoke(main, ["models", "--json", str(tmp_path / target)]), 2)
    assert "'--json'" in line and all(w in line for w in words), line
    assert "with -o" not in line, line


def test_bench_fp16_names_the_precisions_it_times(runner):
    line = _one_line(runner.invoke(main, ["bench", "-m", "lenet5", "-w", "random", "--precision",
                                          "fp16", "--device", "cpu"]), 1)
    assert "fp16" in line and "--precision fp32 or bf16" in line and "unknown" not in line, line


@pytest.mark.parametrize("option", ["--save-gt", "--save-detections"])
def test_evaluate_refuses_an_unwritable_save_path_before_scanning(runner, tmp_path, monkeypatch,
                                                                 option):
    """--save-gt / --save-detections were written after every scene was scanned and scored."""
    from densify.digits import evaluation

    def never(*args, **kwargs):
        raise AssertionError("scanned before the save path was checked")

    monkeypatch.setattr(evaluation, "evaluate_scenes", never)
    (tmp_path / "file").write_text("x")
    line = _one_line(runner.invoke(main, ["evaluate", "--scenes", "1", option,
                                          str(tmp_path / "file" / "x.json")]), 2)
    assert f"'{option}'" in line and "is a file, not a directory" in line, line


def test_evaluate_size_too_small_for_the_scenes_names_the_size_to_give(runner):
    line = _one_line(runner.invoke(main, ["evaluate", "--scenes", "1", "--size", "100x100",
                                          "-q"]), 1)
    assert "over 180 px on the short side" in line and "--size" in line, line


@pytest.mark.parametrize("detections, words", [
    ({"image_id": 1}, ["detections are a dict, not a list"]),
    ([1, 2], ["detection 0 is not a COCO result"]),
    ([{"image_id": 1, "category_id": 1, "bbox": "x", "score": 0.9}],
     ["detection 0 is not a COCO result", "bbox [x, y, w, h]"]),
    ("gt", ["ground truth is not COCO JSON", "annotations with image_id"]),
])
def test_evaluate_malformed_coco_files_are_bad_input(runner, tmp_path, detections, words):
    """Malformed --detections or --gt reached pycocotools: TypeError or KeyError, exit 3 ("a bug
    in densify")."""
    pytest.importorskip("pycocotools")
    gt = {"images": [{"id": 1, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5],
                           "area": 25, "iscrowd": 0}]}
    if detections == "gt":
        gt["annotations"] = [{"id": 1}]
        detections = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "det.json").write_text(json.dumps(detections))
    line = _one_line(runner.invoke(main, ["evaluate", "--gt", str(tmp_path / "gt.json"),
                                          "--detections", str(tmp_path / "det.json")]), 1)
    assert all(w in line for w in words), line
