"""Third-party classifier styles (tests/corpus.py) convert exactly or are refused, never wrong.

Every corpus model passes checks 1-3 in float64 through the fast or the general path, and on
unpadded, non-ceil nets every cell equals the classifier on its crop (check 4). Both paths are run
on every model. A deliberately wrong weight reshape is caught by convolutionize's self-check. The
command line loads a corpus model as ``corpus:factory`` (tests/ is on sys.path under pytest; from a
shell: ``PYTHONPATH=tests python -m densify verify --model corpus:lenet_view --input-size 32x32``).
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import HAVE_TIMM
from corpus import CORPUS

from densify.cli import main
from densify.convert import fast, verify
from densify.convert.dense import convolutionize
from densify.errors import ConversionError

#: Heads the fast path cannot rewrite: the general path converts them.
GENERAL = {"channels_last_linear", "attention_pool", "interpolated_head"}


def _model(name: str) -> tuple[torch.nn.Module, tuple[int, int], bool]:
    factory, size, exact = CORPUS[name]
    torch.manual_seed(sum(map(ord, name)))
    return factory().double().eval(), size, exact


def _assert_checks(model, size, dense, exact: bool) -> None:
    checks = [verify.check_canonical(model, dense), verify.check_head(model, dense),
              verify.check_output_stride(model, size)]
    if exact:
        checks.append(verify.check_crops(model, dense))
    for c in checks:
        assert c.passed and c.max_rel <= 1e-9, c
    assert checks[1].count >= 9  # a real dense map, not one cell


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_converts_exactly(name):
    model, size, exact = _model(name)
    dense = convolutionize(model, size)
    assert {o.path for o in dense.outputs} == {"general" if name in GENERAL else "fast"}
    _assert_checks(model, size, dense, exact)


@pytest.mark.parametrize("name", list(CORPUS))
def test_general_path_is_exact_on_every_head(name):
    model, size, exact = _model(name)
    dense = convolutionize(model, size, head="general")
    assert all(o.path == "general" for o in dense.outputs)
    for c in (verify.check_canonical(model, dense), verify.check_head(model, dense)):
        assert c.passed and c.max_rel <= 1e-9, c
    if exact:
        assert verify.check_crops(model, dense).passed


def test_fast_only_refuses_in_one_line():
    model, size, _ = _model("attention_pool")
    with pytest.raises(ConversionError, match="fast path cannot convert") as info:
        convolutionize(model, size, head="fast")
    assert "\n" not in str(info.value)


def test_permuted_flatten_is_folded_not_left_in_the_graph():
    """A Keras-port head: the permute leaves the dense graph, and larger inputs stay exact."""
    model, size, _ = _model("keras_hwc")
    dense = convolutionize(model, size)
    targets = [n.target for n in dense.net.graph.nodes]
    assert "permute" not in targets and dense.outputs[0].path == "fast"
    x = torch.randn(1, 3, size[0] + 12, size[1] + 20, dtype=torch.float64)
    crop = model(x[:, :, 8:8 + size[0], 16:16 + size[1]])
    torch.testing.assert_close(dense(x)[:, :, 2, 4], crop, rtol=1e-12, atol=1e-12)


def test_a_wrong_weight_reshape_is_caught(monkeypatch):
    """Today's bug reintroduced (the flatten order ignored): the self-check raises, naming the
    output and cell; with verify=False the same wrong net would be returned."""
    def wrong(lin, lay, name):
        return right(lin, fast.Layout(*lay[:3]), name)

    right = fast._linear_to_conv
    monkeypatch.setattr(fast, "_linear_to_conv", wrong)
    model, size, _ = _model("keras_hwc")
    with pytest.raises(ConversionError, match=r"self-check failed: output None cell \(0, 0\)"):
        convolutionize(model, size)
    dense = convolutionize(model, size, verify=False)
    assert not verify.check_canonical(model, dense).passed


def test_attention_inside_the_trunk_is_refused():
    class NonLocal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            f = self.conv(x)
            flat = f.flatten(2)  # (N, C, h·w)
            attn = torch.softmax(flat.transpose(1, 2) @ flat, dim=-1)
            f = f + (flat @ attn).view_as(f)
            return self.fc(f.flatten(1))

    with pytest.raises(ConversionError, match="flows back into the trunk") as info:
        convolutionize(NonLocal(), 8)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- timm families

#: timm families beyond the catalogue's three, with the small input each is tested at.
TIMM = {"cs3darknet_s": 64, "dla46_c": 64, "res2net50_14w_8s": 32, "legacy_xception": 64}


@pytest.mark.skipif(not HAVE_TIMM, reason="needs the timm extra")
@pytest.mark.parametrize("name", list(TIMM))
def test_timm_families(name):
    import timm

    if name not in timm.list_models():
        pytest.skip(f"timm {timm.__version__} has no {name}")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7).double().eval()
    dense = convolutionize(model, TIMM[name])
    for c in (verify.check_canonical(model, dense), verify.check_head(model, dense)):
        assert c.passed and c.max_rel <= 1e-9, c


# -------------------------------------------------------------------------------- command line


def test_cli_verifies_a_corpus_model():
    result = CliRunner().invoke(main, ["verify", "--model", "corpus:lenet_view",
                                       "--input-size", "32x32", "--crops"])
    assert result.exit_code == 0, result.output
    assert "head path      fast" in result.output
    lines = [line for line in result.output.splitlines() if line[:14].strip() in
             ("canonical", "head", "output_stride", "crops")]
    assert len(lines) == 4 and all(line.split()[1] == "ok" for line in lines)


def test_cli_reports_multi_output_paths():
    result = CliRunner().invoke(main, ["verify", "--model", "corpus:detection_dict",
                                       "--input-size", "22x22", "--head", "general"])
    assert result.exit_code == 0, result.output
    assert "scores: general, boxes: general" in result.output


@pytest.mark.parametrize("target, size, message", [
    ("nosuchmodule_xyz:factory", "32x32", "cannot import 'nosuchmodule_xyz'"),
    ("corpus:nope", "32x32", "has no attribute 'nope'"),
    ("corpus:CORPUS", "32x32", "not callable"),
    ("corpus:lenet_view", "40x40", "pass the --input-size it was trained at"),
    ("corpus:lenet_view", None, "pass --input-size"),
])
def test_cli_model_errors_are_one_line(target, size, message):
    args = ["verify", "--model", target] + (["--input-size", size] if size else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output



def test_cli_detect_reads_scores_and_regressed_boxes_of_a_user_model(tmp_path):
    """detect on corpus:detection_dict: softmax scores kept, 4×K box channels decoded."""
    import cv2
    import numpy as np

    image = tmp_path / "noise.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8))
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\n")
    base = ["detect", str(image), "--model", "corpus:detection_dict", "--input-size", "22x22",
            "--classes", str(tmp_path / "names.txt"), "--scales", "1.0", "--output-stride", "4",
            "--threshold", "0.01", "--nms-iou", "1", "-q"]
    result = CliRunner().invoke(main, base + ["-o", str(tmp_path / "o1")])
    assert result.exit_code != 0 and "2 outputs" in result.output  # which one is the scores?
    # separate output directories: a rerun into the same one would resume (skip the image)
    regressed = CliRunner().invoke(main, base + ["--scores-output", "scores", "--boxes-output",
                                                 "boxes", "--json", str(tmp_path / "r.json"),
                                                 "-o", str(tmp_path / "o2")])
    windows = CliRunner().invoke(main, base + ["--scores-output", "scores", "--boxes", "window",
                                               "--json", str(tmp_path / "w.json"),
                                               "-o", str(tmp_path / "o3")])
    assert regressed.exit_code == 0 and windows.exit_code == 0, regressed.output + windows.output
    import json

    reg, win = (json.loads((tmp_path / f).read_text()) for f in ("r.json", "w.json"))
    assert len(reg) == len(win) > 0 and {e["category_name"] for e in reg} <= set("abcd")
    assert all(max(e["bbox"][2:]) <= 22 for e in win)  # whole windows (clipped to the image)
    assert {tuple(e["bbox"]) for e in reg} != {tuple(e["bbox"]) for e in win}  # edges moved


def test_general_path_exports_to_onnx_and_torchscript(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from densify.convert.export import export

    factory, size, _ = CORPUS["attention_pool"]
    torch.manual_seed(0)
    dense = convolutionize(factory().eval(), size)
    export(dense, tmp_path / "net.pt")  # more in tests/test_export.py
    export(dense, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"))
    scripted = torch.jit.load(str(tmp_path / "net.pt"))
    for h, w in ((size[0] + 8, size[1] + 4), (size[0] + 20, size[1] + 12)):
        x = torch.randn(1, 3, h, w)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), dense(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(scripted(x), dense(x), rtol=1e-5, atol=1e-6)
