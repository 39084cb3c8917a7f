"""``densify slide``: outputs slide tools read, written whole; one-line errors, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")

import densify  # noqa: E402
from densify.cli import main  # noqa: E402
from densify.digits import synth  # noqa: E402
from densify.scan.slideresult import SlideResult  # noqa: E402


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    """A 360 x 480 tiled OME-TIFF with 3 digits 20 px tall on a light background."""
    rgb = np.full((360, 480, 3), 225, np.uint8)
    for digit, (cy, cx) in zip((3, 7, 5), ((80, 100), (200, 300), (300, 420)), strict=True):
        glyph = synth.render_glyph(digit, synth.font_styles("train")[0], 20)
        y0, x0 = cy - glyph.shape[0] // 2, cx - glyph.shape[1] // 2
        region = rgb[y0:y0 + glyph.shape[0], x0:x0 + glyph.shape[1]]
        region[:] = (region * (1 - glyph[..., None]) + 30 * glyph[..., None]).astype(np.uint8)
    path = tmp_path_factory.mktemp("slide") / "tiny.ome.tif"
    tifffile.imwrite(path, rgb, tile=(128, 128), compression="zlib", photometric="rgb",
                     metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    return path


def run(*args):
    return CliRunner().invoke(main, ["slide", *(str(a) for a in args)])


def test_slide_writes_store_geojson_and_overview(slide_file, tmp_path):
    out = tmp_path / "out"
    r = run(slide_file, "-o", out, "-q", "--tile-cells", "40", "--json", "-")
    assert r.exit_code == 0, r.output
    record = json.loads(r.output)
    assert record["tiles"] == 9 and record["mpp"] == [0.5, 0.5]
    assert sorted(p.name for p in out.iterdir()) == [
        "tiny_detections.geojson", "tiny_heatmap.ome.zarr", "tiny_overview.png"]
    features = json.loads((out / "tiny_detections.geojson").read_text())["features"]
    found = sorted(f["properties"]["classification"]["name"] for f in features)
    assert found == ["3", "5", "7"]
    assert all(f["type"] == "Feature" and f["geometry"]["type"] == "Polygon" for f in features)
    result = densify.load_result(out / "tiny_heatmap.ome.zarr")
    assert isinstance(result, SlideResult) and result.info["model"] == "lenet5-digits"
    heat = result.heatmap("7")
    i, j = np.unravel_index(np.nanargmax(heat), heat.shape)
    assert abs(i * 4 + 13.5 - 200) <= 6 and abs(j * 4 + 13.5 - 300) <= 6  # centred on the 7
    again = run(slide_file, "-o", out, "-q")
    assert again.exit_code == 0 and "kept" in again.output


def test_slide_stores_chosen_classes_at_a_level(slide_file, tmp_path):
    r = run(slide_file, "-o", tmp_path, "-q", "--class", "7", "--class", "background",
            "--mpp", "0.5")
    assert r.exit_code == 0, r.output
    result = densify.load_result(tmp_path / "tiny_heatmap.ome.zarr")
    assert result.categories == ("7", "background")
    assert result.array(0).shape == (2, 84, 114)


@pytest.mark.parametrize("args, message", [
    (("--level", "3"), "has levels 0-0"),
    (("--mpp", "2"), "no level near 2 microns"),
    (("--level", "0", "--mpp", "0.5"), "not both"),
])
def test_bad_options_are_one_line_exit_1(slide_file, tmp_path, args, message):
    r = run(slide_file, "-o", tmp_path, *args)
    assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_not_a_slide_is_one_line_exit_1(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    r = run(png, "-o", tmp_path)
    assert r.exit_code == 1 and ("densify[slide]" in r.output or "OpenSlide" in r.output)
    assert len(r.output.strip().splitlines()) == 1


def test_a_killed_scan_resumes_from_its_last_tile(slide_file, tmp_path, monkeypatch):
    from densify.io.slides import TiffSlide

    read, calls = TiffSlide.read_region, []

    def dying(self, *args):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return read(self, *args)

    monkeypatch.setattr(TiffSlide, "read_region", dying)
    r = run(slide_file, "-o", tmp_path, "-q", "--tile-cells", "40")
    assert r.exit_code != 0 and not (tmp_path / "tiny_heatmap.ome.zarr").exists()
    assert (tmp_path / ".tiny_heatmap.ome.zarr.partial").is_dir()
    monkeypatch.setattr(TiffSlide, "read_region", read)
    r = run(slide_file, "-o", tmp_path, "-q", "--tile-cells", "40", "--json", "-")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["resumed"] == 3
    assert not (tmp_path / ".tiny_heatmap.ome.zarr.partial").exists()
    names = [f["properties"]["classification"]["name"] for f in json.loads(
        (tmp_path / "tiny_detections.geojson").read_text())["features"]]
    assert sorted(names) == ["3", "5", "7"]


def test_a_corrupt_tile_is_missing_cells_and_the_outputs_are_written(slide_file, tmp_path):
    """The scan marks a corrupt tile's cells missing; the overview drew it black (it raised
    the tile's error after the GeoJSON was written: exit 1, a stray GeoJSON, no store)."""
    bad = tmp_path / "bad.ome.tif"
    bad.write_bytes(slide_file.read_bytes())
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[1], page.databytecounts[1]  # the tile at x=128, y=0
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)
    r = run(bad, "-o", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    assert "1 corrupt tile(s)" in r.output
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"bad_heatmap.ome.zarr", "bad_detections.geojson", "bad_overview.png"}
    assert np.isnan(densify.load_result(tmp_path / "out" / "bad_heatmap.ome.zarr").array(0)).any()


@pytest.mark.parametrize("kind, words", [
    ("missing", ["no such file", "check the path"]),
    ("directory", ["is a directory", "pass the slide file itself"]),
    ("empty", ["empty file (0 bytes)", "re-export"]),
])
def test_a_missing_empty_or_directory_slide_names_the_fix(tmp_path, kind, words):
    path = tmp_path / "s.tif"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    r = run(path, "-o", tmp_path / "out")
    assert r.exit_code == 1 and all(w in r.output for w in words), r.output
    assert len(r.output.strip().splitlines()) == 1 and not list((tmp_path / "out").iterdir())
