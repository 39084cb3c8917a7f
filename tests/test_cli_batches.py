"""The scanning commands' image loop with batches: the same records as one image at a time, a
bad file reported and skipped, resumed images left out of the batches."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from densify.cli._scanning import each_image, read_ahead
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
