"""The scanning commands' image loop with batches: the same records as one image at a time, a
bad file reported and skipped, resumed images left out of the batches, and each chunk launched
before the previous chunk's results are taken (the same records and files as without that)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from densify.cli import _scanning, main
from densify.cli._scanning import each_image, read_ahead
from densify.errors import ImageError
from densify.io.image import read_image
from densify.scan.ensemble import Ensemble
from densify.scan.resultfile import load_result
from densify.scan.scanner import Scanner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> list[Path]:
    """Six crops of the demo scene (two sizes) and one corrupt PNG in the middle."""
    scene = cv2.imread(str(ROOT / "demos" / "digits_scene.png"))
    out = tmp_path_factory.mktemp("images")
    boxes = [(0, 0, 240, 320), (200, 300, 440, 620), (500, 100, 740, 420), (0, 600, 200, 900),
             (700, 700, 900, 1000), (300, 900, 540, 1220)]
    paths = []
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        paths.append(out / f"crop{k}.png")
        cv2.imwrite(str(paths[-1]), scene[y1:y2, x1:x2])
    bad = out / "crop2b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return paths[:3] + [bad] + paths[3:]


def _work(path, stem, rgb, result) -> dict:
    return {"files": [], "top": [{"name": t.name, "score": round(t.score, 6)}
                                 for t in result.top_classes(3)]}


def _run(batch: int, paths, tmp_path: Path, name: str):
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu",
                      batch_size=batch)
    errors: list = []
    out = tmp_path / name
    out.mkdir()
    records, failed = each_image(scanner, paths, True, _work, errors, out)
    return records, failed, errors, out


def test_batches_give_the_records_of_one_image_at_a_time(folder, tmp_path):
    """Mutations caught: records appended in group order; a failed image ending the batch."""
    one, failed1, errors1, _ = _run(1, folder, tmp_path, "one")
    three, failed3, errors3, _ = _run(3, folder, tmp_path, "three")
    assert failed1 == failed3 == 1
    assert [e[0] for e in errors1] == [e[0] for e in errors3] == [str(folder[3])]
    assert [r["image"] for r in three] == [r["image"] for r in one] == [
        str(p) for p in folder if p != folder[3]]
    assert [r["top"] for r in three] == [r["top"] for r in one]


def test_a_rerun_skips_what_is_done_and_batches_the_rest(folder, tmp_path):
    records, _, _, out = _run(3, folder[:2], tmp_path, "part")
    assert [r["status"] for r in records] == ["ok", "ok"]
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu", batch_size=3)
    again, failed = each_image(scanner, folder, True, _work, None, out)
    assert [r["status"] for r in again] == ["skipped", "skipped", "ok", "ok", "ok", "ok"]
    assert failed == 1


def test_read_ahead_keeps_the_order_with_several_workers(folder):
    one = [err is None for _, err in read_ahead(folder, prefetch=False)]
    many = [err is None for _, err in read_ahead(folder, prefetch=True, workers=3, ahead=4)]
    assert one == many == [True, True, True, False, True, True, True]


def _same_tops(records: list[dict], expected: list[list[dict]]) -> None:
    """The records' top classes are ``expected`` (scores rounded to 6 places: a batch's maps
    are within 1e-6 of one image's)."""
    assert len(records) == len(expected)
    for record, top in zip(records, expected, strict=True):
        assert [t["name"] for t in record["top"]] == [t["name"] for t in top]
        assert [t["score"] for t in record["top"]] == pytest.approx([t["score"] for t in top],
                                                                    abs=2e-6)


def _trace_launches(monkeypatch, events: list) -> None:
    """``("launch", k)`` when the k-th :meth:`Scanner.launch_batch` returns, ``("results", k)``
    when its results are taken."""
    original, count = Scanner.launch_batch, itertools.count()

    def spy(self, images, *args, **kwargs):
        k = next(count)
        pending = original(self, images, *args, **kwargs)
        events.append(("launch", k))
        results = pending.results

        def traced():
            events.append(("results", k))
            return results()

        pending.results = traced
        return pending

    monkeypatch.setattr(Scanner, "launch_batch", spy)


def _tracing_work(events: list):
    def work(path, stem, rgb, result) -> dict:
        events.append(("work", stem))
        return _work(path, stem, rgb, result)
    return work


#: launches and results of the folder in chunks of 2 ([0, 1], [2, corrupt], [3, 4], [5]) when
#: each chunk is launched before the previous one's results are taken
OVERLAPPED = [("launch", 0), ("launch", 1), ("results", 0), ("launch", 2), ("results", 1),
              ("launch", 3), ("results", 2), ("results", 3)]


def test_each_chunk_is_launched_before_the_previous_chunks_results(folder, monkeypatch):
    """Mutation caught: taking each chunk's results before launching the next (no overlap);
    starting a chunk's work before the next chunk is launched; dropping the last chunk."""
    events: list = []
    _trace_launches(monkeypatch, events)
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu", batch_size=2)
    records, failed = each_image(scanner, folder, True, _tracing_work(events))
    assert [e for e in events if e[0] != "work"] == OVERLAPPED
    chunk_of = {"crop0": 0, "crop1": 0, "crop2": 1, "crop3": 2, "crop4": 2, "crop5": 3}
    for stem, k in chunk_of.items():
        assert events.index(("work", stem)) > events.index(("results", k))
        if k < 3:
            assert events.index(("work", stem)) > events.index(("launch", k + 1))
    assert failed == 1 and [r["image"] for r in records] == [str(p) for p in folder
                                                             if p != folder[3]]


def test_under_a_budget_each_chunk_is_finished_before_the_next(folder, monkeypatch):
    """The memory budget counts one image: no chunk in flight while another is finished."""
    class Roomy:
        def room(self, held, need, what):
            return 1 << 40

    events: list = []
    _trace_launches(monkeypatch, events)
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu", batch_size=2)
    monkeypatch.setattr(scanner, "budget", Roomy())
    _, failed = each_image(scanner, folder, True, _work)
    assert events == [(step, k) for k in range(4) for step in ("launch", "results")]
    assert failed == 1


def test_the_overlap_gives_the_maps_of_one_image_at_a_time(folder):
    """Chunks of 3 (mixed sizes) through the overlapped loop: every map within 1e-6 of scanning
    each image on its own, in input order."""
    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu", batch_size=3)
    kept: dict = {}

    def work(path, stem, rgb, result) -> dict:
        kept[stem] = result
        return _work(path, stem, rgb, result)

    records, _ = each_image(scanner, folder, True, work)
    assert [r["image"] for r in records] == [str(p) for p in folder if p != folder[3]]
    for path in folder[:3] + folder[4:]:
        alone = scanner(read_image(path))
        maps = kept[path.stem].maps
        assert len(maps) == len(alone.maps) == 2
        for a, b in zip(alone.maps, maps, strict=True):
            assert a.level == b.level
            assert float((a.probs - b.probs).abs().max()) <= 1e-6


def test_the_overlap_writes_the_files_of_a_run_without_it(folder, tmp_path, monkeypatch):
    """``densify heatmap`` in batches of 3 with and without the overlap: the same PNGs byte for
    byte and the same result files array for array (a zip member's header holds its write
    time), the same records. Both runs with ``--threads 1``: without it each run's count comes
    from the machine's load at its start, and oneDNN may round differently with another count."""
    runs = {}
    for ahead in (0, 1):
        monkeypatch.setattr(_scanning, "LAUNCH_AHEAD", ahead)
        out = tmp_path / f"ahead{ahead}"
        result = CliRunner().invoke(main, ["heatmap", *map(str, folder), "-m", "lenet5-digits",
                                           "-w", "DEFAULT", "--scales", "2", "--device", "cpu",
                                           "--batch-size", "3", "--threads", "1", "-o", str(out),
                                           "-q"])
        assert result.exit_code == 1, result.output  # the corrupt file, reported
        assert "crop2b.png" in result.output
        runs[ahead] = out
    pngs = sorted(p.name for p in runs[1].glob("*_heatmap.png"))
    assert len(pngs) == 6 and pngs == sorted(p.name for p in runs[0].glob("*_heatmap.png"))
    for name in pngs:
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes()
        a, b = (np.load(out / name.replace(".png", ".npz")) for out in (runs[0], runs[1]))
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[key], b[key]) for key in a.files)
    a, b = (load_result(out / "crop0_heatmap.npz") for out in (runs[0], runs[1]))
    assert torch.equal(a.maps[0].probs, b.maps[0].probs)


@pytest.mark.parametrize("where", ["launch", "results"])
def test_an_image_failing_in_its_chunk_costs_only_itself(folder, monkeypatch, where):
    """A per-image error raised by the middle image of a chunk, when the chunk is launched or
    when its results are taken: that image gets an error record, its neighbours are scanned one
    at a time, the other chunks as usual. Mutation caught: the error failing the whole chunk
    (or the run); the error from ``results()`` escaping the fallback."""
    poisoned = read_image(folder[1])
    original = Scanner._launch_group

    def spy(self, rgbs, *args):
        bad = any(r.shape == poisoned.shape and np.array_equal(r, poisoned) for r in rgbs)
        if bad and where == "launch":
            raise ImageError("poisoned image")
        finish = original(self, rgbs, *args)

        def failing():
            raise ImageError("poisoned image")

        return failing if bad else finish

    scanner = Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu", batch_size=3)
    expected = {str(p): _work(p, p.stem, None, scanner(read_image(p)))["top"]
                for p in folder if p not in (folder[1], folder[3])}
    monkeypatch.setattr(Scanner, "_launch_group", spy)
    errors: list = []
    records, failed = each_image(scanner, folder, True, _work, errors)
    assert failed == 2
    assert [e[0] for e in errors] == [str(folder[1]), str(folder[3])]
    assert "poisoned image" in errors[0][1]
    assert [r["image"] for r in records] == list(expected)
    _same_tops(records, list(expected.values()))


def test_an_ensemble_goes_through_the_overlapped_loop(folder, monkeypatch):
    """Several ``--model``: each member launches every chunk before the previous chunk's
    results are taken, and the records are the ensemble's one image at a time."""
    ensemble = Ensemble([Scanner("lenet5-digits", scales=1, weights=w, device="cpu",
                                 batch_size=2) for w in ("DEFAULT", "random")])
    expected = [_work(p, p.stem, None, ensemble(read_image(p)))["top"]
                for p in folder if p != folder[3]]
    events: list = []
    _trace_launches(monkeypatch, events)
    records, failed = each_image(ensemble, folder, True, _work)
    assert failed == 1
    _same_tops(records, expected)
    # launches 2k, 2k + 1: the members' launches of chunk k
    assert events[:6] == [("launch", 0), ("launch", 1), ("launch", 2), ("launch", 3),
                          ("results", 0), ("results", 1)]
    assert len(events) == 16


@pytest.mark.parametrize("cores, batch, threads", [(64, 8, 16), (4, 8, 4), (64, 1, 1), (1, 8, 1),
                                                   (None, 8, 1), (64, 3, 6)])
def test_finishing_threads_follow_the_images_in_flight_and_the_cores(monkeypatch, cores, batch,
                                                                     threads):
    """One thread per image whose outputs can be under way (two chunks), no more than the
    cores; one without batches."""
    monkeypatch.setattr(_scanning.os, "cpu_count", lambda: cores)
    assert _scanning.finishing_threads(batch) == threads


@pytest.mark.parametrize("device, shared", [("cuda", True), ("cpu", False)])
def test_a_gpu_scans_finishing_threads_share_torchs_threads(folder, monkeypatch, device, shared):
    """On a GPU the host's torch ops run in the finishing threads: torch's count is divided
    among them there (one OpenMP team each) and restored after; a CPU scan keeps its count.
    An ensemble of one CPU scanner that reports ``device`` stands in for a GPU scanner."""
    monkeypatch.setattr(Ensemble, "device", property(lambda self: torch.device(device)))
    monkeypatch.setattr(_scanning.os, "cpu_count", lambda: 64)  # 2 chunks of 2: 4 workers
    scanner = Ensemble([Scanner("lenet5-digits", scales=2, weights="DEFAULT", device="cpu",
                                batch_size=2)])
    seen: list = []

    def work(path, stem, rgb, result):
        seen.append(torch.get_num_threads())
        return _work(path, stem, rgb, result)

    before = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        each_image(scanner, folder[:3], True, work)
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)
    assert seen == ([2] * 3 if shared else [8] * 3)
