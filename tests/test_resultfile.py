"""Result files: a scan saved compactly reads back as the same result; bad files are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from squares import CATEGORIES, WINDOW, square_detector, square_image

from densify.errors import ResultError
from densify.scan.resultfile import LEVELS, REGRESSION_FLOOR, load_result, save_result
from densify.scan.scanner import Scanner

TOL = 0.5 / LEVELS + 1e-7  # the fixed-point step (resultfile docstring)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Two squares at two sizes, scanned at three scales; saved and loaded back."""
    scanner = Scanner(square_detector(), scales=[0.7, 1.0, 1.4], output_stride=8,
                      input_size=(WINDOW, WINDOW), mean=(0, 0, 0), std=(1, 1, 1),
                      categories=CATEGORIES, background_class=0, object_box=(10, 10, 22, 22),
                      device="cpu")
    image = np.maximum(square_image(90, 120, (30, 40)), square_image(90, 120, (60, 85), 16))
    result = scanner(image)
    path = save_result(result, tmp_path_factory.mktemp("r") / "scan.npz")
    return result, load_result(path), path


def test_round_trip_keeps_geometry_classes_and_maps(scanned):
    result, loaded, _ = scanned
    assert loaded.image_size == result.image_size and loaded.categories == result.categories
    assert loaded.background_class == 0 and loaded.object_box == result.object_box
    for a, b in zip(result.maps, loaded.maps, strict=True):
        assert a.level == b.level and a.geometry == b.geometry
        assert torch.allclose(a.probs, b.probs, atol=TOL, rtol=0)
        assert torch.equal(a.boxes(), b.boxes())


def test_round_trip_heatmap_top_classes_and_detections_agree(scanned):
    result, loaded, _ = scanned
    assert np.allclose(result.heatmap("square"), loaded.heatmap("square"), atol=TOL, rtol=0)
    for a, b in zip(result.top_classes(2, background=True), loaded.top_classes(2, background=True),
                    strict=True):
        assert (a.index, a.box, a.factor) == (b.index, b.box, b.factor)
        assert abs(a.score - b.score) <= TOL
    want, got = result.detections(0.5), loaded.detections(0.5)
    assert len(want.boxes) >= 2  # the two squares are found
    # The same boxes, labels and scores; equal scores may come in either order.
    assert np.allclose(sorted(_rows(want)), sorted(_rows(got)), atol=TOL, rtol=0)


def _rows(det) -> list[tuple[float, ...]]:
    return [(*b, float(lab), s) for b, lab, s in zip(det.boxes.tolist(), det.labels.tolist(),
                                                     det.scores.tolist(), strict=True)]


def test_summary_and_full_maps_are_stored(scanned, tmp_path):
    result, _, path = scanned
    with np.load(path) as npz:
        assert npz["top_index"].tolist() == [t.index for t in result.top_classes(5)]
        assert "heatmaps" not in npz.files
    full = save_result(result, tmp_path / "full.npz", full_maps=["square"])
    with np.load(full) as npz:
        assert npz["heatmaps"].shape == (1, *result.image_size)
        assert np.allclose(npz["heatmaps"][0], result.heatmap("square"), atol=1e-3)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_corrupt_truncated_and_foreign_files_are_refused_in_one_line(scanned, tmp_path):
    _, _, path = scanned
    data = path.read_bytes()
    cases = {"truncated.npz": data[: len(data) // 2], "noise.npz": bytes(range(256)) * 8,
             "empty.npz": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ResultError) as exc:
            load_result(tmp_path / name)
        assert name in _one_line(exc) and "scan the image again" in _one_line(exc)
    with pytest.raises(ResultError, match="no such result file"):
        load_result(tmp_path / "missing.npz")


def test_old_format_and_other_versions_are_refused_in_one_line(scanned, tmp_path):
    _, _, path = scanned
    np.savez(tmp_path / "old.npz", heatmaps=np.zeros((1, 4, 4), np.float32),
             categories=np.array(["a"]))
    with pytest.raises(ResultError) as exc:
        load_result(tmp_path / "old.npz")
    assert "densify 0.2 heatmap file" in _one_line(exc)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez(tmp_path / "v9.npz", **{**arrays, "version": np.array(9)})
    with pytest.raises(ResultError, match="version 9 is not readable here"):
        load_result(tmp_path / "v9.npz")
    del arrays["probs_1"]
    np.savez(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(ResultError, match="damaged result file"):
        load_result(tmp_path / "damaged.npz")


def test_round_trip_keeps_box_regression_and_flips(tmp_path):
    """The shipped digit spotter regresses boxes; with flips half the maps are mirrored."""
    from pathlib import Path

    from densify.io.image import read_image

    scene = read_image(Path(__file__).resolve().parent.parent / "demos" / "digits_scene.png")
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", flip=True, device="cpu")
    result = scanner(scene[100:500, 600:1000])
    loaded = load_result(save_result(result, tmp_path / "digits.npz"))
    assert [m.flipped for m in loaded.maps] == [False, True, False, True]
    for a, b in zip(result.maps, loaded.maps, strict=True):
        assert a.box_format == b.box_format and a.flipped == b.flipped
        keep = a.probs[:10].amax(dim=0) >= REGRESSION_FLOOR  # 10: the background class
        assert keep.any() and torch.allclose(a.regression[:, keep], b.regression[:, keep],
                                             rtol=1e-3, atol=1e-3)
        assert not b.regression[:, ~keep].any()
    want, got = result.detections(0.9), loaded.detections(0.9)
    assert len(want.boxes) >= 1 and len(got.boxes) == len(want.boxes)
    assert torch.allclose(want.boxes.sort(dim=0).values, got.boxes.sort(dim=0).values, atol=0.05)
