"""scripts/host_time.py, the measurement of the host's work per image behind docs/gpu.md: it
runs, its net costs next to nothing, and what it reports comes from real scans."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def host_time():
    spec = importlib.util.spec_from_file_location("host_time", ROOT / "scripts" / "host_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def folder(tmp_path):
    scene = cv2.imread(str(ROOT / "demos" / "digits_scene.png"))
    for i, (y, x) in enumerate([(0, 0), (100, 300)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.ascontiguousarray(scene[y:y + 160, x:x + 200]))
    return tmp_path


def test_free_net_has_resnet50s_geometry_at_stride_32(host_time):
    net = host_time.free_net()
    with torch.inference_mode():
        out = net(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert sum(p.numel() for p in net.parameters()) < 200_000  # next to no compute


def test_result_costs_time_a_real_result(host_time, folder):
    costs = host_time.result_costs(folder / "0.png", "lenet5-digits", ["--scales", "2"],
                                   repeat=1)
    # lenet5-digits: 11 classes (10 digits and the background) on 2 scales of a 160x200 crop
    assert 0 < costs["maps (MB, float32)"] < 1
    timed = [name for name in costs if name.endswith(" ms")]
    assert len(timed) == 3 and all(costs[name] > 0 for name in timed)


def test_main_prints_per_image_figures(host_time, folder, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["host_time.py", str(folder), "--repeat", "1", "--results",
                                      "--model", "lenet5-digits", "--", "--scales", "2"])
    host_time.main()
    out = capsys.readouterr().out
    assert "2 images" in out and "per image:" in out and "ms in the dense net" in out
    assert "a result of 0.png on the host: maps (MB, float32)" in out


def test_main_refuses_a_folder_of_one_image(host_time, tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "only.png"), np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setattr(sys, "argv", ["host_time.py", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        host_time.main()
    assert stop.value.code == 2
