"""Scanning many images: batches equal one-at-a-time scans, the device-resident pyramid equals
the host one within its tolerance, CUDA graphs are captured by policy, and a scan leaves the
process's torch settings as the caller set them. Everything here runs on the CPU: the device
path is the same torch code (``preprocess="device"``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densify.scan.engine import autotune
from densify.scan.ensemble import Ensemble
from densify.scan.graphs import GraphCache
from densify.scan.scanner import Scanner

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "demos" / "digits_scene.png"


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(SCENE)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crops(scene) -> list[np.ndarray]:
    """Five crops of the demo scene, three of one size and two of another, interleaved."""
    return [scene[:300, :400].copy(), scene[300:520, 100:460].copy(), scene[400:700, 500:900].copy(),
            scene[600:820, 700:1060].copy(), scene[800:1100, 200:600].copy()]


@pytest.fixture(scope="module")
def digits() -> Scanner:
    return Scanner("lenet5-digits", scales=3, weights="DEFAULT", device="cpu", flip=True)


def _worst(a, b) -> float:
    worst = 0.0
    for r1, r2 in zip(a, b, strict=True):
        assert r1.image_size == r2.image_size and len(r1.maps) == len(r2.maps)
        for m1, m2 in zip(r1.maps, r2.maps, strict=True):
            assert m1.level == m2.level and m1.flipped == m2.flipped
            worst = max(worst, float((m1.probs - m2.probs).abs().max()))
            if m1.regression is not None:
                worst = max(worst, float((m1.regression - m2.regression).abs().max()))
    return worst


@pytest.mark.parametrize("preprocess", ["host", "device"])
def test_a_batch_equals_one_image_at_a_time(digits, crops, preprocess):
    """Mixed sizes, flips and a box-regression output: every map, in input order.
    Mutations caught: results returned in group order instead of input order; a batch's maps
    cut from the wrong image (``p[0]`` for every image)."""
    digits.preprocess = preprocess
    try:
        one = [digits(c) for c in crops]
        many = digits.scan_batch(crops, batch_size=2)
    finally:
        digits.preprocess = "auto"
    assert _worst(one, many) <= 1e-6
    assert [r.top_classes(1)[0].name for r in one] == [r.top_classes(1)[0].name for r in many]


def test_the_device_pyramid_gives_the_host_maps_within_tolerance(digits, crops):
    """Inputs that differ by one grey level in under 1 % of the pixels (tests/test_preprocess.py)
    move the trained digit model's probabilities by little and its detections not at all."""
    host = [digits(c) for c in crops[:2]]
    digits.preprocess = "device"
    try:
        device = [digits(c) for c in crops[:2]]
    finally:
        digits.preprocess = "auto"
    assert _worst(host, device) < 0.05
    for a, b in zip(host, device, strict=True):
        da, db = a.detections(threshold=0.9), b.detections(threshold=0.9)
        assert len(da.boxes) == len(db.boxes)
        assert torch.allclose(da.boxes, db.boxes, atol=1.0)


def test_batches_come_from_one_size_at_a_time(digits, crops, monkeypatch):
    seen = []
    original = Scanner._launch_group

    def spy(self, rgbs, *args):
        seen.append([r.shape for r in rgbs])
        return original(self, rgbs, *args)

    monkeypatch.setattr(Scanner, "_launch_group", spy)
    digits.scan_batch(crops, batch_size=2, scales=[1.0])
    assert [len(g) for g in seen] == [2, 1, 2]
    assert all(len({s for s in g}) == 1 for g in seen)


def test_each_group_finishes_after_the_next_is_launched(digits, crops, monkeypatch):
    """The host work of a group (its copy back, result objects) waits until the next group is
    queued on the device; results stay in input order. Mutation caught: finishing each group
    before launching the next (no overlap) or dropping the last queued group."""
    events: list = []
    _trace_groups(monkeypatch, events)
    results = digits.scan_batch(crops, batch_size=2, scales=[1.0])
    assert events == [("launch", 2), ("launch", 1), ("finish", 2), ("launch", 2), ("finish", 1),
                      ("finish", 2)]
    assert [r.image_size for r in results] == [c.shape[:2] for c in crops]


def test_launch_batch_results_equal_scan_batch_and_one_at_a_time(digits, crops):
    """``launch_batch(...).results()``: the maps of :meth:`scan_batch` (the same passes, so the
    same numbers) and of one image at a time (<= 1e-6), in input order, sources kept.
    Mutations caught: results in group order; a second ``results()`` call rebuilding (or
    losing) them; the path of a launched image dropped."""
    scales = [1.0, 0.6]
    one = [digits(c, scales) for c in crops]
    batch = digits.scan_batch(crops, batch_size=2, scales=scales)
    pending = digits.launch_batch(crops, batch_size=2, scales=scales)
    launched = pending.results()
    assert len(pending) == len(crops) and pending.results() is launched
    assert _worst(one, launched) <= 1e-6
    assert _worst(batch, launched) == 0.0
    assert [r.image_size for r in launched] == [c.shape[:2] for c in crops]
    assert digits.launch_batch([SCENE], scales=[1.0]).results()[0].source == str(SCENE)


class _RoomyBudget:
    """A memory budget that always has room: the budgeted code path without measuring RSS."""

    def room(self, held: int, need: int, what: str) -> int:
        return 1 << 40


def _trace_groups(monkeypatch, events: list) -> None:
    original = Scanner._launch_group

    def spy(self, rgbs, *args):
        events.append(("launch", len(rgbs)))
        finish = original(self, rgbs, *args)

        def traced():
            events.append(("finish", len(rgbs)))
            return finish()

        return traced

    monkeypatch.setattr(Scanner, "_launch_group", spy)


def test_launch_batch_leaves_the_groups_in_flight_until_results(digits, crops, monkeypatch):
    events: list = []
    _trace_groups(monkeypatch, events)
    pending = digits.launch_batch(crops, batch_size=2, scales=[1.0])
    assert events == [("launch", 2), ("launch", 1), ("launch", 2)]
    pending.results()
    assert [e[0] for e in events[3:]] == ["finish"] * 3


def test_under_a_budget_launch_batch_finishes_each_image_before_the_next(digits, crops,
                                                                         monkeypatch):
    """The budget is planned for one image: nothing stays in flight. Mutation caught: the
    budgeted launch keeping its groups pending like the unbudgeted one."""
    events: list = []
    _trace_groups(monkeypatch, events)
    monkeypatch.setattr(digits, "budget", _RoomyBudget())
    one = [digits(c, [1.0]) for c in crops[:3]]
    events.clear()
    pending = digits.launch_batch(crops[:3], batch_size=2, scales=[1.0])
    assert events == [("launch", 1), ("finish", 1)] * 3
    assert _worst(one, pending.results()) <= 1e-6


def test_batch_size_is_checked(digits, crops):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(Exception, match="batch size"):
            digits.scan_batch(crops, batch_size=bad)


def test_the_default_batch_is_one_image_on_the_cpu(digits):
    assert digits.batch_size == 1
    assert digits.preprocess_on_device is False


def test_a_scan_leaves_torch_settings_as_the_caller_set_them(digits, crops):
    """Mutation caught: setting cudnn.benchmark (or the thread count) without restoring it."""
    threads = torch.get_num_threads()
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        try:
            digits(crops[0])
            digits.scan_batch(crops[:2])
            assert torch.backends.cudnn.benchmark is benchmark
            assert torch.get_num_threads() == threads
        finally:
            torch.backends.cudnn.benchmark = False


def test_autotuning_is_on_inside_a_cuda_scan_only():
    cudnn = torch.backends.cudnn
    for caller in (False, True):
        cudnn.benchmark = caller
        try:
            with autotune(torch.device("cuda"), True):
                assert cudnn.benchmark is True
            assert cudnn.benchmark is caller
            with autotune(torch.device("cpu"), True):
                assert cudnn.benchmark is caller
        finally:
            cudnn.benchmark = False


def test_autotuning_leaves_the_callers_other_cudnn_settings_alone():
    """A caller who turned TF32 off through torch's new API (``fp32_precision``) can scan on
    CUDA: reading the legacy ``allow_tf32`` flag would raise there; nothing but ``benchmark``
    changes during the scan."""
    cudnn = torch.backends.cudnn
    before = cudnn.conv.fp32_precision, cudnn.deterministic, cudnn.enabled
    try:
        cudnn.conv.fp32_precision = "ieee"
        with autotune(torch.device("cuda"), True):
            assert cudnn.benchmark is True
            assert (cudnn.conv.fp32_precision, cudnn.deterministic, cudnn.enabled) == (
                "ieee", before[1], before[2])
        assert cudnn.conv.fp32_precision == "ieee" and cudnn.benchmark is False
    finally:
        cudnn.conv.fp32_precision = before[0]
        cudnn.benchmark = False


def _fake_capture(log):
    def capture(fn, x, pool):
        log.append(tuple(x.shape))
        return lambda y: fn(y) + 0  # a "replay": the same function, a new tensor
    return capture


def test_a_shape_is_captured_the_second_time_it_is_seen():
    """Mutations caught: capturing on first sight; never replaying a captured graph."""
    captured: list = []
    calls: list = []
    cache = GraphCache(lambda x: calls.append(tuple(x.shape)) or x * 2,
                       capture_fn=_fake_capture(captured))
    x = torch.ones(1, 3, 4, 4)
    assert torch.equal(cache(x), x * 2) and captured == []
    assert torch.equal(cache(x), x * 2) and captured == [(1, 3, 4, 4)]
    cache(x)
    assert captured == [(1, 3, 4, 4)] and len(cache.graphs) == 1
    assert cache(x.contiguous(memory_format=torch.channels_last)) is not None
    assert len(cache.graphs) == 1  # another layout is another key, not yet captured


def test_the_least_recently_used_graph_is_dropped():
    captured: list = []
    cache = GraphCache(lambda x: x, capacity=2, capture_fn=_fake_capture(captured))
    a, b, c = torch.zeros(1, 1), torch.zeros(1, 2), torch.zeros(1, 3)
    for x in (a, a, b, b, a, c, c):
        cache(x)
    assert [k[0] for k in cache.graphs] == [(1, 1), (1, 3)]


def test_a_dropped_shape_is_not_captured_again():
    """More shapes than the cache holds: each shape is captured once at most, the dropped ones
    run eagerly (recapturing would cost a capture, a device wait and emptied caches per pass).
    Mutation caught: recapturing a dropped shape."""
    captured: list = []
    cache = GraphCache(lambda x: x + 1, capacity=2, capture_fn=_fake_capture(captured))
    shapes = [torch.zeros(1, k) for k in (1, 2, 3)]
    for _ in range(4):  # cycling through 3 shapes with room for 2
        for x in shapes:
            assert torch.equal(cache(x), x + 1)
    assert sorted(s[1] for s in captured) == [1, 2, 3]  # once each
    assert [k[0] for k in cache.graphs] == [(1, 2), (1, 3)] and cache.dropped == {
        GraphCache.key(shapes[0])}


def test_a_capture_out_of_memory_runs_eagerly_with_a_warning(caplog):
    def out_of_memory(fn, x, pool):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cache = GraphCache(lambda x: x * 3, capture_fn=out_of_memory)
    x = torch.ones(2)
    with caplog.at_level("INFO", logger="densify.scan.graphs"):
        for _ in range(3):
            assert torch.equal(cache(x), x * 3)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "out of device memory" in warnings[0].getMessage()
    assert GraphCache.key(x) in cache.failed and not cache.graphs


def test_a_failed_capture_runs_eagerly_and_is_not_retried():
    tries: list = []

    def broken(fn, x, pool):
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    cache = GraphCache(lambda x: x + 1, capture_fn=broken)
    x = torch.zeros(2)
    for _ in range(4):
        assert torch.equal(cache(x), x + 1)
    assert len(tries) == 1 and not cache.graphs


def test_pinned_results_reach_the_host_copy_only_when_asked(monkeypatch):
    """Library results are copied out of the pinned staging buffer on a GPU (a caller may keep
    them); ``pinned_results=True`` (the command line's) leaves them there. The flag's path is
    checked here, where HostCopy runs its CPU branch."""
    from densify.cli import _scanning
    from densify.scan import scanner as scanner_module

    asked: list = []
    real = scanner_module.HostCopy
    monkeypatch.setattr(scanner_module, "HostCopy",
                        lambda outs, pinned=False: asked.append(pinned) or real(outs, pinned))
    digits = Scanner("lenet5-digits", weights="DEFAULT", scales=1, device="cpu")
    crop = np.zeros((40, 60, 3), np.uint8)
    digits(crop)
    digits.scan_batch([crop, crop])
    digits.launch_batch([crop]).results()
    assert len(asked) >= 3 and not any(asked)
    asked.clear()
    Ensemble([digits, digits]).launch_batch([crop], pinned_results=True).results()
    assert asked == [True, True]
    asked.clear()
    _scanning.each_image(digits, [ROOT / "demos" / "digits_scene.png"], True,
                         lambda path, stem, rgb, result: {"files": []})
    assert asked == [True]
