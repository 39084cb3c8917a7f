"""Slides streamed tile by tile (densify.scan.stream): equal to the in-memory scan, resumable,
corrupt tiles marked missing; the store read back (densify.scan.slideresult)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")

from densify.io import omezarr  # noqa: E402
from densify.io.slides import open_slide  # noqa: E402
from densify.scan.scanner import Scanner  # noqa: E402
from densify.scan.slideresult import load_slide_result, overview, slide_thumbnail  # noqa: E402
from densify.scan.stream import PROGRESS_FILE, scan_slide, tile_cells_for  # noqa: E402
from densify.scan.tiling import HEADROOM, TilingError, estimate_bytes  # noqa: E402

TOL = 1e-5  # float32: tiles sum in another order than the whole image


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    big = np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w]
    return np.clip(big.astype(int) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def write_slide(path, rgb: np.ndarray, compression="zlib"):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(rgb, tile=(64, 64), compression=compression, photometric="rgb", subifds=1)
        tw.write(np.ascontiguousarray(rgb[::2, ::2]), tile=(64, 64), compression=compression,
                 photometric="rgb", subfiletype=1)
    return path


@pytest.fixture(scope="module")
def digits():
    return Scanner("lenet5-digits", weights="DEFAULT", output_stride=None, scales=[1.0],
                   device="cpu")


def padded_net() -> nn.Module:
    """A small ResNet-like net: zero padding, three stride-2 pools, stride 8, FC head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()


@pytest.fixture(scope="module")
def padded():
    return Scanner(padded_net(), scales=[1.0], output_stride=None, input_size=(3, 32, 32),
                   device="cpu")


@pytest.fixture(scope="module")
def padded_s4():
    """The same net at output stride 4: OverFeat's stride-1 final pooling, dilated after it."""
    return Scanner(padded_net(), scales=[1.0], output_stride=4, input_size=(3, 32, 32),
                   device="cpu")


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slide") / "s.tif", texture(333, 459))


@pytest.mark.parametrize("which, tile_cells, batch", [
    ("digits", 24, 1), ("padded", 7, 4), ("padded_s4", 13, 2)])
def test_stream_equals_the_in_memory_scan(request, slide_file, tmp_path, which, tile_cells, batch):
    scanner = request.getfixturevalue(which)
    with open_slide(slide_file) as slide:
        done = scan_slide(scanner, slide, tmp_path / "m.ome.zarr", tile_cells=tile_cells,
                          threshold=0.2, batch=batch)
        rgb = slide.read_region(0, 0, 0, *slide.levels[0].size)
    assert done.tiles > 4 and done.resumed == 0  # tile boundaries fall mid-image on both axes
    result = scanner(rgb)
    want = result.maps[0].probs.numpy()
    got = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="r")["0"][:]
    assert got.shape == want.shape and done.cells == want.shape[1:]
    assert np.abs(got - want).max() <= TOL
    det = result.detections(threshold=0.2)
    assert len(done.detections) == len(det) > 0
    order = np.lexsort(det.boxes.numpy().T[::-1])
    mine = np.lexsort(done.detections.boxes.numpy().T[::-1])
    np.testing.assert_allclose(done.detections.boxes.numpy()[mine], det.boxes.numpy()[order],
                               atol=1e-3)


def test_a_coarser_level_is_scanned_as_its_own_image(slide_file, tmp_path, padded):
    with open_slide(slide_file) as slide:
        done = scan_slide(padded, slide, tmp_path / "m.ome.zarr", level=1, tile_cells=5)
        rgb = slide.read_region(1, 0, 0, *slide.levels[1].size)
    got = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="r")["0"][:]
    assert np.abs(got - padded(rgb).maps[0].probs.numpy()).max() <= TOL
    assert done.scale.scale == pytest.approx((167 / 333, 230 / 459))


class Interrupted(Exception):
    pass


class Killing:
    """A slide whose ``n``-th region read raises (a kill in the middle of a scan)."""

    def __init__(self, slide, n: int):
        self.slide, self.n = slide, n

    def __getattr__(self, name):
        return getattr(self.slide, name)

    def read_region(self, *args):
        self.n -= 1
        if self.n == 0:
            raise Interrupted
        return self.slide.read_region(*args)


def test_resume_after_a_kill_gives_the_same_store(slide_file, tmp_path, digits):
    with open_slide(slide_file) as slide:
        full = scan_slide(digits, slide, tmp_path / "full.ome.zarr", tile_cells=24,
                          threshold=0.2)
        store = tmp_path / "cut.ome.zarr"
        with pytest.raises(Interrupted):
            scan_slide(digits, Killing(slide, 5), store, tile_cells=24, threshold=0.2)
        lines = (store / PROGRESS_FILE).read_text().splitlines()
        assert len(lines) == 1 + 4  # the header and four finished tiles
        (store / PROGRESS_FILE).write_text("\n".join(lines) + '\n{"tile": 4, "bo')  # cut mid-line
        with pytest.raises(ValueError, match="other settings"):
            scan_slide(digits, slide, store, tile_cells=16, threshold=0.2)
        again = scan_slide(digits, slide, store, tile_cells=24, threshold=0.2)
    assert again.resumed == 4 and again.tiles == full.tiles
    assert not (store / PROGRESS_FILE).exists()
    a = zarr.open_group(str(tmp_path / "full.ome.zarr"), mode="r")
    b = zarr.open_group(str(store), mode="r")
    for level in a.array_keys():
        np.testing.assert_array_equal(a[level][:], b[level][:])
    assert torch.equal(full.detections.boxes, again.detections.boxes)
    assert torch.equal(full.detections.labels, again.detections.labels)
    with open_slide(slide_file) as slide, pytest.raises(ValueError, match="not a scan in progress"):
        scan_slide(digits, slide, store, tile_cells=24)


def test_corrupt_tile_cells_are_missing_not_zero(tmp_path, padded):
    rgb = texture(256, 320, seed=3)
    clean = write_slide(tmp_path / "clean.tif", rgb)
    bad = write_slide(tmp_path / "bad.tif", rgb)
    with tifffile.TiffFile(bad) as tif:
        page = tif.pages[0]
        index = 1 * 5 + 2  # the file tile at x=128, y=64 (5 tiles per row)
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)
    with open_slide(clean) as slide:
        scan_slide(padded, slide, tmp_path / "a.ome.zarr", tile_cells=6)
    with open_slide(bad) as slide:
        done = scan_slide(padded, slide, tmp_path / "b.ome.zarr", tile_cells=6)
    assert done.missing == ((128, 64, 192, 128),)
    a = zarr.open_group(str(tmp_path / "a.ome.zarr"), mode="r")["0"][:]
    b = zarr.open_group(str(tmp_path / "b.ome.zarr"), mode="r")["0"][:]
    g = padded.geometry
    rows = np.arange(b.shape[1]) * g.stride[0] + g.rf_offset[0]
    cols = np.arange(b.shape[2]) * g.stride[1] + g.rf_offset[1]
    touch = (((rows < 128) & (rows + g.rf_size[0] > 64))[:, None]
             & ((cols < 192) & (cols + g.rf_size[1] > 128))[None, :])
    assert touch.any() and np.isnan(b[:, touch]).all()
    assert not np.isnan(b[:, ~touch]).any()
    assert np.abs(a[:, ~touch] - b[:, ~touch]).max() <= TOL


def test_store_is_multiscale_ome_zarr_and_loads_lazily(slide_file, tmp_path, digits, monkeypatch):
    monkeypatch.setattr(omezarr, "SMALLEST_LEVEL", 64)  # 77 x 115 cells: levels of 115, 58
    with open_slide(slide_file) as slide:
        scan_slide(digits, slide, tmp_path / "m.ome.zarr", tile_cells=24, threshold=0.2)
        result = load_slide_result(tmp_path / "m.ome.zarr")
        picture = overview(slide, result, side=200)
    attrs = json.loads((tmp_path / "m.ome.zarr" / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [c["label"] for c in attrs["omero"]["channels"]] == list(digits.categories)
    assert attrs["densify"]["geometry"]["stride"] == [4, 4]
    # cell (i, j) is centred on its window, 14 px into it (pixel i centred at i: 13.5), less the
    # padding: 333 rows are padded to 28 + 77 * 4 = 336 (1 on top, 2 below), 459 to 460 (0, 1)
    assert attrs["densify"]["padding"] == [1, 2, 0, 1]
    assert ms["datasets"][0]["coordinateTransformations"][1]["translation"] == [0.0, 12.5, 13.5]
    assert result.categories == digits.categories and result.levels == len(ms["datasets"]) == 2
    full = result.heatmap("background")
    half = result.heatmap("background", level=1)
    assert half.shape == tuple(-(-s // 2) for s in full.shape)
    assert half[3, 4] == pytest.approx(full[6:8, 8:10].mean(), abs=1e-6)
    assert picture.shape == (int(round(333 * 200 / 459)), 200, 3)


def test_tile_size_from_a_memory_budget(padded):
    net, g = padded.scan_net, padded.geometry
    room = 40_000_000
    cells = tile_cells_for(net, room)

    def need(c):  # the tile's input: its cells' windows, the receptive field's overhang, alignment
        side = g.input_size(c, c)[0] + (g.rf_size[0] - g.window[0]) + 8
        return estimate_bytes(net, side, side) + 3 * side * side * 4

    assert 1 < cells < 1024
    assert need(cells) <= (1 - HEADROOM) * room < need(cells + 1)
    assert tile_cells_for(net, 4 * room) > cells
    with pytest.raises(TilingError, match="raise --max-memory"):
        tile_cells_for(net, 1000)


def test_thumbnail_of_a_slide_without_pyramid_is_read_in_blocks(tmp_path):
    rgb = texture(300, 500, seed=1)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, rgb, tile=(64, 64), photometric="rgb")
    with open_slide(path) as slide:
        blocks = slide_thumbnail(slide, 100, block=128)
        whole = slide_thumbnail(slide, 250)
    assert blocks.shape == (60, 100, 3) and whole.shape == (150, 250, 3)
    # a block-wise shrink is the whole-image shrink, up to the blocks' rounding at their seams
    from densify.io.image import resize

    assert np.median(np.abs(blocks.astype(int) - resize(rgb, (60, 100)))) <= 3
