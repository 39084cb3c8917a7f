"""Behaviour of densify.files: atomic outputs and output directory checks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from densify.errors import OutputError
from densify.io.files import atomic_output, ensure_output_dir, write_image, write_json
from densify.io.image import read_image


def test_atomic_output_success_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp.name.startswith(".")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block succeeds
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "result.png"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        cv2.imwrite(str(tmp), np.zeros((4, 4, 3), np.uint8))
        assert tmp.exists()
        raise RuntimeError("writer failed half way")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        tmp.write_text("{partial")
        raise KeyboardInterrupt
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_output_keeps_suffix_for_extension_sniffing_writers(tmp_path):
    with atomic_output(tmp_path / "maps.npz") as tmp:
        np.savez(tmp, heat=np.ones((2, 2)))
    with atomic_output(tmp_path / "overlay.jpg") as tmp:
        assert cv2.imwrite(str(tmp), np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npz", "overlay.jpg"]
    assert np.load(tmp_path / "maps.npz")["heat"].sum() == 4


def test_atomic_output_needs_an_existing_directory(tmp_path):
    with pytest.raises(OutputError, match="-o"), atomic_output(tmp_path / "nope" / "x.png"):
        pass


def test_write_image_round_trip_in_rgb(tmp_path):
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    path = write_image(tmp_path / "red.png", rgb)
    assert (cv2.imread(str(path))[..., 2] == 255).all()  # stored as red (BGR on disk)
    np.testing.assert_array_equal(read_image(path), rgb)
    assert write_image(tmp_path / "red.jpg", rgb, (cv2.IMWRITE_JPEG_QUALITY, 90)).exists()


def test_write_image_refuses_unknown_suffix(tmp_path):
    with pytest.raises(OutputError, match=r"\.gif"):
        write_image(tmp_path / "x.gif", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_json_converts_numpy_and_torch(tmp_path):
    obj = {"score": np.float32(0.5), "box": torch.tensor([1.0, 2.0]), "ids": np.arange(2),
           "path": tmp_path}
    path = write_json(tmp_path / "r.json", obj)
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == {"score": 0.5, "box": [1.0, 2.0], "ids": [0, 1],
                                "path": str(tmp_path)}


def test_write_json_refuses_nan_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "r.json", {"score": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_ensure_output_dir_creates_nested(tmp_path):
    out = ensure_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize("where", ["under_file", "is_file"])
def test_unwritable_output_dir_is_one_line_naming_it(tmp_path, where):
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file")
    out = blocker / "sub" if where == "under_file" else blocker
    with pytest.raises(OutputError) as info:
        ensure_output_dir(out)
    message = str(info.value)
    assert str(out) in message and "-o" in message and "\n" not in message
    assert isinstance(info.value, OSError)


def test_writing_under_a_file_raises_output_error(tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file")
    with pytest.raises(OutputError, match="-o"):
        write_json(blocker / "sub" / "r.json", {})
