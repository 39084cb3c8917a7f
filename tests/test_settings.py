"""One settings path from flag to scanner (issue 18): the library behaves like the command line,
every option reaches the scanner on the single-process and the Ray path, and the user-visible
slips of a fresh install stay fixed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from densify.cli import main
from densify.errors import ModelError, ParameterError
from densify.models.catalogue import get_spec
from densify.scan.settings import SETTING_NAMES, ScanSettings

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "demos" / "digits_scene.png"

#: A user's two-output classifier (16x16 RGB window, 3 classes and a box), as a module file.
FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.trunk = nn.Sequential(nn.Conv2d(3, 8, 4, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2),
                                       nn.ReLU())
            self.cls = nn.Linear(16 * 3 * 3, 3)
            self.box = nn.Linear(16 * 3 * 3, 4)

        def forward(self, x):
            f = torch.flatten(self.trunk(x), 1)
            return {"scores": self.cls(f), "boxes": self.box(f)}

    def factory():
        return TwoHeads()
''')


@pytest.fixture
def user_model(tmp_path, monkeypatch) -> str:
    """``<module>:factory`` in a fresh module of the current directory (not on sys.path)."""
    name = f"mynet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 48, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))  # whatever pytest put first, not the cwd
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))
    yield f"{name}:factory"
    sys.modules.pop(name, None)


# ------------------------------------------------------------------ 1: library defaults = CLI's


def test_the_readme_snippet_finds_the_digits():
    """``Scanner(name)`` gets the trained weights, as the CLI does (it found 0 digits)."""
    import densify

    found = densify.Scanner("lenet5-digits", scales=6, device="cpu")(SCENE).detections(
        threshold=0.9, iou=0.3)
    assert len(found) >= 40
    assert not densify.load_classifier("lenet5-digits").random
    assert densify.load_classifier("lenet5").random  # no trained weights exist: random, said so
    assert densify.load_classifier("lenet5-digits", "random").random


# --------------------------------------------------- 2: every option, single-process and Ray


CLI_OPTIONS = ["--input-size", "16x16", "--mean", "0.1,0.2,0.3", "--std", "0.4,0.5,0.6",
               "--classes", "classes.txt", "--scores-output", "scores", "--boxes-output",
               "boxes", "--box-format", "deltas", "--scales", "1,1.5", "--flip",
               "--output-stride", "4", "--device", "cpu", "--precision", "bf16",
               "--max-memory", "64GB", "--threads", "1", "-q"]


def _check_scanner(scanner) -> None:
    """Each option arrived where it acts."""
    assert scanner.dense.input_size == (3, 16, 16)
    assert scanner.mean == (0.1, 0.2, 0.3) and scanner.std == (0.4, 0.5, 0.6)
    assert scanner.categories == ("cat", "dog", "bird")
    assert scanner.scores_output.key == "scores" and scanner.boxes_output.key == "boxes"
    assert scanner.box_format == "deltas"
    assert list(scanner.scales) == [1.0, 1.5] and scanner.flip
    assert scanner.output_stride == 4 and scanner.device == torch.device("cpu")
    assert scanner.precision == "bf16" and scanner.max_memory == 64 * 10**9
    assert scanner.threads == 1


def test_every_option_reaches_the_scanner(user_model, monkeypatch):
    """The options become one ModelChoice and one ScanSettings; the scanner built from them
    (single process) and the one a Ray worker builds from what it is sent are configured
    alike: every option arrives, also with a module:factory model."""
    import densify.cli._ray as ray_cli
    import densify.cli._scanning as scanning
    import densify.distributed as distributed
    from densify.scan.scanner import Scanner

    made = []
    monkeypatch.setattr(scanning, "Scanner", lambda *a, **k: made.append(Scanner(*a, **k))
                        or made[-1])
    result = CliRunner().invoke(main, ["detect", "a.png", "-m", user_model, *CLI_OPTIONS,
                                       "-o", "out"])
    assert result.exit_code == 0, result.output
    _check_scanner(made[0])
    assert isinstance(made[0].settings, ScanSettings)

    sent = {}

    class Stop(Exception):
        pass

    def scan_on_actors(ray, options, model, settings, todo, quiet, work):
        sent.update(model=model, settings=settings, todo=todo)
        raise Stop

    class FakeRay:
        @staticmethod
        def is_initialized():
            return True

    monkeypatch.setattr(ray_cli, "_scan", scan_on_actors)
    monkeypatch.setattr(distributed, "require_ray", lambda: FakeRay)
    result = CliRunner().invoke(main, ["detect", "a.png", "-m", user_model, *CLI_OPTIONS,
                                       "-o", "out_ray", "--ray", "--workers", "1"])
    assert result.exit_code == 3 and sent, result.output  # Stop: a bug, as far as the CLI knows
    assert sent["settings"] == made[0].settings  # the same settings, unchanged
    config = distributed.ScanConfig(sent["model"], sent["settings"])
    _check_scanner(config.scanner())  # what ScanActor builds


def test_settings_are_one_list():
    """ScanSettings names every scan option once; every field but the library-only ones has a
    CLI option; a misspelt one is one line."""
    from densify.cli.option_values import SETTING_OPTIONS

    assert {"scales", "flip", "output_stride", "device", "precision", "max_memory", "threads",
            "fold_bn", "object_sizes"} <= set(SETTING_NAMES)
    library_only = {"fold_bn", "progress", "object_box",  # always on; -q; --boxes object
                    "preprocess", "autotune", "cuda_graphs"}  # GPU-path switches for comparisons
    assert set(SETTING_OPTIONS.values()) == set(SETTING_NAMES) - library_only
    with pytest.raises(ParameterError, match="unknown scan setting"):
        ScanSettings().replace(scale=3)


def test_the_catalogue_options_and_the_runtime_flags_arrive(tmp_path, monkeypatch):
    """--object-sizes and --weights PATH reach the scanner; --keep-memory and the thread rule
    reach densify.runtime, which puts everything back when the command ends."""
    import densify.cli._scanning as scanning
    from densify import runtime
    from densify.models.catalogue import WEIGHTS_DIR
    from densify.scan.scanner import Scanner

    made, kept = [], []
    monkeypatch.setattr(scanning, "Scanner", lambda *a, **k: made.append(Scanner(*a, **k))
                        or made[-1])
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: kept.append(True))
    monkeypatch.setattr(runtime, "choose_threads", lambda threads: 1 if threads is None else
                        threads)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((60, 80, 3), 200, np.uint8))
    weights = WEIGHTS_DIR / "lenet5_digits.pt"
    previous = torch.get_num_threads()
    result = CliRunner().invoke(main, ["heatmap", str(tmp_path / "a.png"), "--object-sizes",
                                       "30:90", "--weights", str(weights), "--keep-memory",
                                       "-q", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (scanner,) = made
    assert scanner.scale_range == pytest.approx((20 / 90, 20 / 30))
    assert scanner.classifier.weights == str(weights) and scanner.threads == 1
    assert kept == [True] and torch.get_num_threads() == previous


# --------------------------------------------------- 3: the default model through convert/bench


def test_the_default_model_converts_to_torchscript_and_benches(tmp_path):
    out = tmp_path / "x.pt"
    result = CliRunner().invoke(main, ["convert", "-o", str(out)])
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(out))
    assert scripted(torch.zeros(1, 1, 60, 60)).shape == (1, 15, 9, 9)  # 11 scores + 4 box
    result = CliRunner().invoke(main, ["bench", "--size", "64x64", "--repeat", "1", "--no-timm",
                                       "--no-breakdown"])
    assert result.exit_code == 0, result.output
    assert "crops vs dense" in result.output


# ------------------------------------------------------------------- 4: a missing extra


@pytest.mark.parametrize("args,module,extra", [
    (["convert", "-o", "x.onnx"], "onnxscript", "onnx"),
    (["evaluate", "--scenes", "1"], "pycocotools", "eval"),
    (["heatmap", "a.png", "--ray", "-o", "out"], "ray", "ray"),
])
def test_a_missing_extra_is_named_before_any_work(args, module, extra, tmp_path, monkeypatch):
    import densify.cli._scanning as scanning

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.setattr(scanning, "Scanner", None)  # scanning would fail differently
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"pip install 'densify[{extra}]'" in result.output
    assert "internal error" not in result.output and not (tmp_path / "x.onnx").exists()
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------- 5: module:factory from the cwd


def test_a_factory_imports_from_the_current_directory(user_model, tmp_path):
    result = CliRunner().invoke(main, ["convert", "-m", user_model, "--input-size", "16x16",
                                       "-o", "net.onnx" if False else "net.pt"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "net.pt").is_file()
    assert str(tmp_path) not in sys.path  # only for the import
    from densify.models.user import load_factory

    with pytest.raises(ModelError, match="run densify from the directory"):
        load_factory("no_such_module_here:factory")


# ------------------------------------------------------------------------- 6: --json FILE


def test_json_means_a_file_everywhere(user_model, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["detect", "a.png", "-m", user_model, "--input-size", "16x16",
                               "--scores-output", "scores", "--json", "-q", "-o", "out"])
    assert bad.exit_code == 2 and "--json takes a FILE" in bad.output
    assert not Path("-q").exists()
    args = ["-m", user_model, "--input-size", "16x16", "--scores-output", "scores", "-q",
            "--device", "cpu", "--scales", "1"]
    ok = runner.invoke(main, ["heatmap", "a.png", *args, "--json", "h.json", "-o", "out"])
    assert ok.exit_code == 0, ok.output
    import json

    assert json.loads(Path("h.json").read_text())[0]["image"] == "a.png"
    ok = runner.invoke(main, ["detect", "a.png", *args, "--json", "-", "-o", "out"])
    assert ok.exit_code == 0 and isinstance(json.loads(ok.stdout), list), ok.output
    ok = runner.invoke(main, ["models", "lenet5-digits", "--json", "-"])
    assert json.loads(ok.stdout)["name"] == "lenet5-digits"
    ok = runner.invoke(main, ["models", "--json", "m.json"])
    assert ok.exit_code == 0 and len(json.loads(Path("m.json").read_text())) > 10


# ------------------------------------------------------------------------ 8: smaller slips


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m densify models | head -1", shell=True,
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.startswith("name") and proc.stderr == ""


def test_model_names_ignore_case():
    assert get_spec("VGG19").name == "vgg19" and get_spec("LeNet5-Digits").name == "lenet5-digits"
    result = CliRunner().invoke(main, ["models", "VGG19"])
    assert result.exit_code == 0 and "vgg19" in result.output


def test_a_cli_result_file_keeps_its_image_and_prints_short(tmp_path):
    from densify import load_result

    rgb = cv2.imread(str(SCENE))[:300, :400]
    cv2.imwrite(str(tmp_path / "scene.png"), rgb)
    result = CliRunner().invoke(main, ["heatmap", str(tmp_path / "scene.png"), "--scales", "2",
                                       "-q", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    back = load_result(tmp_path / "out" / "scene_heatmap.npz")
    assert back.source == str(tmp_path / "scene.png")
    assert back.thumbnail is not None and back.thumbnail.shape[:2] == (240, 320)
    text = repr(back)
    assert len(text) < 200 and "300x400 px (HxW)" in text and "tensor" not in text


# ------------------------------------------------------------------- the typed model card


def test_the_card_is_typed_and_overridden_by_replace():
    from densify.models.card import ModelCard
    from densify.models.user import load_model

    card = get_spec("lenet5-digits").card
    assert isinstance(card, ModelCard) and card.background_class == 10 and card.threshold == 0.9
    assert (card.scores_output, card.boxes_output, card.box_format) == (0, 1, "offsets")
    assert card.object_sizes == (24.0, 120.0) and card.categories[10] == "background"
    clf = load_model("lenet5-digits", mean=(0.3,), categories=[str(i) for i in range(11)])
    assert clf.card == card.replace(mean=(0.3,), categories=tuple(str(i) for i in range(11)))
    assert clf.card.std == card.std and clf.spec.mean == (0.3,)
    with pytest.raises(ModelError, match="bad model card"):
        ModelCard.from_dict({"mean": [0.5]})


# ----------------------------------------------------------- one switch for where boxes come from


def test_one_boxes_switch():
    from densify.scan.scanner import Scanner

    scene = cv2.imread(str(SCENE))[:400, :500, ::-1].copy()
    result = Scanner("lenet5-digits", scales=2, device="cpu")(scene)
    found = {b: result.detections(0.9, 0.3, boxes=b) for b in ("auto", "regressed", "object",
                                                              "window")}
    assert torch.equal(found["auto"].boxes, found["regressed"].boxes) and len(found["auto"])
    assert not torch.equal(found["object"].boxes, found["window"].boxes)
    with pytest.warns(DeprecationWarning, match="boxes="):
        old = result.detections(0.9, 0.3, window_boxes=True)
    assert torch.equal(old.boxes, found["window"].boxes)
    with pytest.raises(ParameterError, match="unknown boxes"):
        result.detections(boxes="windows")
    plain = Scanner("lenet5", scales=[1.0], device="cpu")(scene)
    with pytest.raises(ParameterError, match="no box-regression output"):
        plain.detections(boxes="regressed")
    with pytest.raises(ParameterError, match="no object box"):
        plain.detections(boxes="object")


def test_sizes_read_height_by_width_in_the_report(tmp_path):
    from densify.io.report import write_report

    record = {"image": "a.png", "status": "ok", "error": None, "size": [300, 400], "top": [],
              "files": [], "seconds": 0.1}
    page = write_report(tmp_path / "report.html", [record], {"command": "x"}, 1.0).read_text()
    assert "300x400 px (HxW)" in page and "400x300" not in page
