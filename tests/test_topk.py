"""OverFeat's top-k classes per scale (``detect(top_k=K)``, ``--top-k``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densify.convert.geometry import Geometry
from densify.errors import ParameterError
from densify.scan.detect import detect, top_classes
from densify.scan.maps import ScaleMap
from densify.scan.pyramid import levels
from densify.scan.result import ScanResult

GEOMETRY = Geometry(window=(8, 8), stride=(4, 4))
CATEGORIES = ("background", "one", "two", "three")


def _map(cells: dict[tuple[int, int], tuple[int, float]], flipped: bool = False) -> ScaleMap:
    """3×3 cells of a 16×16 image, 4 classes: background (probability 1, the highest peak of
    every map) except ``{(i, j): (class, p)}``."""
    (level,) = levels((16, 16), (8, 8), (4, 4), [1.0])
    probs = torch.zeros(4, 3, 3)
    probs[0] = 1.0
    for (i, j), (cls, p) in cells.items():
        probs[:, i, j] = (1 - p) / 3
        probs[cls, i, j] = p
    return ScaleMap(level, GEOMETRY, probs, flipped=flipped)


@pytest.fixture
def maps() -> list[ScaleMap]:
    """Class 1 leads the first scale, class 2 the second (flipped) one; both classes reach the
    threshold in both, at cells whose boxes do not overlap."""
    return [_map({(0, 0): (1, 0.9), (2, 2): (2, 0.7)}),
            _map({(0, 0): (2, 0.95), (2, 2): (1, 0.6)}, flipped=True)]


def _found(det) -> set[tuple[int, float, tuple[float, ...]]]:
    return {(int(c), round(float(s), 4), tuple(b)) for c, s, b in
            zip(det.labels, det.scores, det.boxes.tolist(), strict=True)}


def test_top_k_keeps_each_scales_best_classes(maps):
    """Mutations caught: ranking over all scales at once (only class 2 would survive), ranking
    the background (it leads every map: nothing would survive), ignoring top_k (4 boxes)."""
    every = detect(maps, threshold=0.5, background_class=0)
    assert len(every) == 4
    top1 = detect(maps, threshold=0.5, background_class=0, top_k=1)
    # First scale: class 1 at cell (0, 0); flipped scale: class 2 at cell (0, 0), mirrored.
    assert _found(top1) == {(1, 0.9, (0.0, 0.0, 8.0, 8.0)), (2, 0.95, (8.0, 0.0, 16.0, 8.0))}
    assert _found(top1) < _found(every)
    merged = detect(maps, threshold=0.5, background_class=0, top_k=1, merge="overfeat")
    assert sorted(merged.labels.tolist()) == [1, 2] and len(merged) == 2


def test_top_k_at_least_the_object_classes_changes_nothing(maps):
    every = detect(maps, threshold=0.5, background_class=0)
    for k in (3, 4, 100, np.int64(3)):  # 3 object classes; NumPy integers count
        got = detect(maps, threshold=0.5, background_class=0, top_k=k)
        for a, b in ((got.boxes, every.boxes), (got.scores, every.scores),
                     (got.labels, every.labels)):
            assert torch.equal(a, b)


def test_classes_filter_after_the_preselection(maps):
    """Asking for class 2 reports only the scale where it is among the top k."""
    det = detect(maps, threshold=0.5, classes=[2], background_class=0, top_k=1)
    assert _found(det) == {(2, 0.95, (8.0, 0.0, 16.0, 8.0))}
    assert len(detect(maps, threshold=0.5, classes=[2], background_class=0)) == 2


def test_top_classes_ranks_map_maxima_ties_to_the_lower_index():
    probs = torch.zeros(4, 2, 2)
    probs[0] = 1.0
    probs[3, 0, 0] = probs[2, 1, 1] = 0.5  # a tie: class 2 first
    probs[1, 0, 1] = 0.2
    assert top_classes(probs, 2, background=0) == [2, 3]
    assert top_classes(probs, 9, background=0) == [2, 3, 1]
    assert top_classes(probs, 1) == [0]  # without a background class it is ranked too


def test_scan_result_passes_top_k(maps):
    result = ScanResult((16, 16), CATEGORIES, tuple(maps), background_class=0)
    got = result.detections(threshold=0.5, boxes="window", top_k=1)
    assert _found(got) == _found(detect(maps, threshold=0.5, background_class=0, top_k=1))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_bad_top_k_is_one_line(maps, bad):
    with pytest.raises(ParameterError, match="top_k must be a positive integer") as info:
        detect(maps, threshold=0.5, background_class=0, top_k=bad)
    assert "\n" not in str(info.value)


def test_cli_top_k_reaches_the_detections(tmp_path):
    """``densify detect --top-k 1`` writes what the library gives with top_k=1, which differs
    from no top-k on a scene of several digits (one scale: one class survives)."""
    import json

    from click.testing import CliRunner

    from densify.cli import main
    from densify.digits import synth
    from densify.io.files import write_image
    from densify.scan.scanner import Scanner

    scene = synth.make_scene(90_000, size=(120, 200), split="eval", heights=(19.0, 21.0),
                             n_digits=8)
    path = tmp_path / "scene.png"
    write_image(path, scene.image)
    runner = CliRunner()
    args = ["detect", str(path), "--scales", "1.0", "-q", "-o", str(tmp_path / "out"),
            "--threshold", "0.3"]
    bad = runner.invoke(main, [*args, "--top-k", "0"])
    assert bad.exit_code == 2 and "--top-k" in bad.output
    ran = runner.invoke(main, [*args, "--top-k", "1", "--json", str(tmp_path / "k1.json")])
    assert ran.exit_code == 0, ran.output
    got = json.loads((tmp_path / "k1.json").read_text())
    result = Scanner("lenet5-digits", scales=[1.0], device="cpu")(scene.image)
    want = result.detections(0.3, top_k=1).to_coco("scene", result.categories)
    assert got == want and len({d["category_id"] for d in got}) == 1
    assert len({d["category_id"] for d in result.detections(0.3).to_coco("s", result.categories)}) > 1
