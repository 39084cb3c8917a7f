"""Slides read region by region (densify.io.slides): levels, regions, physical size, bad input."""

from __future__ import annotations

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")

from densify.io.slides import (  # noqa: E402
    CorruptTileError,
    SlideError,
    TiffSlide,
    open_slide,
)


def pattern(h: int, w: int, ds: int = 1) -> np.ndarray:
    """A deterministic RGB pattern, sampled every ``ds`` pixels of level 0."""
    yy, xx = np.mgrid[0:h, 0:w] * ds
    return np.stack([(yy * 7) % 251, (xx * 5) % 253, (yy + 3 * xx) % 255], -1).astype(np.uint8)


def write_pyramid(path, h: int, w: int, compression=None, tile: int = 64, ome: bool = True):
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as tw:
        tw.write(pattern(h, w), tile=(tile, tile), compression=compression, photometric="rgb",
                 subifds=1, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25} if ome else {})
        tw.write(pattern(h // 2, w // 2, 2), tile=(tile, tile), compression=compression,
                 photometric="rgb", subfiletype=1)
    return path


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_region_equals_the_array(tmp_path, compression):
    path = write_pyramid(tmp_path / "s.ome.tif", 320, 200, compression)
    with open_slide(path) as slide:
        assert [lv.size for lv in slide.levels] == [(320, 200), (160, 100)]
        assert [lv.downsample for lv in slide.levels] == [1.0, 2.0]
        np.testing.assert_array_equal(slide.read_region(0, 70, 30, 100, 150),
                                      pattern(320, 200)[70:170, 30:180])
        np.testing.assert_array_equal(slide.read_region(1, 5, 60, 40, 40),
                                      pattern(160, 100, 2)[5:45, 60:100])


def test_jpeg_tiles_and_microns_per_pixel(tmp_path):
    path = write_pyramid(tmp_path / "s.ome.tif", 256, 256, "jpeg")
    with open_slide(path) as slide:
        assert slide.format == "OME-TIFF"
        assert slide.levels[0].mpp == (0.25, 0.25) and slide.levels[1].mpp == (0.5, 0.5)
        assert slide.level_for_mpp(0.5) == 1 and slide.level_for_mpp(0.26) == 0
        region = slide.read_region(0, 0, 0, 64, 64).astype(int)
        assert np.abs(region - pattern(64, 64)).mean() < 20  # lossy, but the same picture
        with pytest.raises(SlideError, match="no level near 2 microns"):
            slide.level_for_mpp(2.0)


def test_resolution_tags_give_mpp_and_gray_becomes_rgb(tmp_path):
    path = tmp_path / "g.tif"
    gray = pattern(128, 128)[..., 0]
    tifffile.imwrite(path, gray, tile=(64, 64), resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    with TiffSlide(path) as slide:
        assert slide.levels[0].mpp == pytest.approx((0.5, 0.5))
        region = slide.read_region(0, 10, 10, 5, 5)
        assert region.shape == (5, 5, 3) and (region == gray[10:15, 10:15, None]).all()


def test_corrupt_tile_is_reported_with_its_position(tmp_path):
    path = write_pyramid(tmp_path / "s.tif", 256, 256, "zlib", ome=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        per_row = -(-256 // 64)
        index = 2 * per_row + 1  # the tile at x=64, y=128
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read_region(0, 0, 0, 128, 256), pattern(128, 256))
        with pytest.raises(CorruptTileError, match="x=64 y=128") as info:
            slide.read_region(0, 100, 0, 100, 200)
    assert info.value.boxes == [(64, 128, 128, 192)]
    region, want = info.value.region, pattern(256, 256)[100:200, 0:200]
    assert (region[28:92, 64:128] == 0).all()
    region[28:92, 64:128] = want[28:92, 64:128]
    np.testing.assert_array_equal(region, want)


def test_not_a_slide_is_one_line_naming_format_and_extra(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    text = tmp_path / "x.svs"
    text.write_text("hello")
    for path, what in ((png, "a PNG image"), (text, "a .svs file")):
        with pytest.raises(SlideError, match=rf"is {what}, not a .*(slide|densify\[slide\])"):
            open_slide(path)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(4))
    with pytest.raises(SlideError, match="TIFF.*damaged or not a slide"):
        open_slide(bad)
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "missing.tif")


def test_multichannel_and_outside_regions_are_refused(tmp_path):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, np.zeros((5, 64, 64), np.uint8), tile=(32, 32), photometric="minisblack")
    with pytest.raises(SlideError, match="axes"):
        open_slide(path)
    path = write_pyramid(tmp_path / "s.tif", 128, 128)
    with open_slide(path) as slide, pytest.raises(ValueError, match="outside level 0"):
        slide.read_region(0, 100, 0, 50, 10)


def test_openslide_reads_the_same_pixels(tmp_path):
    pytest.importorskip("openslide")
    from densify.io.slides import OpenSlideSlide

    path = write_pyramid(tmp_path / "s.tif", 256, 320, "zlib", ome=False)
    with OpenSlideSlide(path) as a, TiffSlide(path) as b:
        assert a.levels[0].size == b.levels[0].size == (256, 320)
        np.testing.assert_array_equal(a.read_region(0, 30, 70, 100, 200),
                                      b.read_region(0, 30, 70, 100, 200))


def test_unsupported_compression_names_it_and_the_extra(tmp_path, monkeypatch):
    path = write_pyramid(tmp_path / "s.ome.tif", 128, 128, "jpeg")
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", {})  # as if imagecodecs were missing
    with pytest.raises(SlideError, match=r"OME-TIFF with JPEG compression.*densify\[slide\]"):
        open_slide(path)


def test_svs_layout_levels_and_mpp(tmp_path):
    """Aperio's layout: baseline, a stripped thumbnail, then the reduced levels as plain IFDs."""
    head = "Aperio Image Library v12.0.15 \r\n"
    path = tmp_path / "x.svs"
    with tifffile.TiffWriter(path) as tw:
        tw.write(pattern(384, 512), tile=(128, 128), photometric="rgb", compression="jpeg",
                 description=head + "512x384 (256x256) JPEG/RGB Q=70|AppMag = 40|MPP = 0.2500",
                 metadata=None)
        tw.write(pattern(96, 128, 4), photometric="rgb", description=head + "-> 128x96",
                 metadata=None)
        tw.write(pattern(192, 256, 2), tile=(128, 128), photometric="rgb", compression="jpeg",
                 description=head + "-> 256x192", metadata=None)
    with open_slide(path) as slide:
        assert slide.format == "Aperio SVS"
        assert [(lv.size, lv.mpp) for lv in slide.levels] == [((384, 512), (0.25, 0.25)),
                                                              ((192, 256), (0.5, 0.5))]
        region = slide.read_region(1, 10, 10, 50, 50).astype(int)
        assert np.abs(region - pattern(192, 256, 2)[10:60, 10:60]).mean() < 20


def test_geojson_features_round_trip(tmp_path):
    import json

    from densify.io.geojson import detection_features, read_boxes, write_geojson

    boxes = np.array([[10.5, 20, 30, 50], [100, 200, 130, 260]])
    path = write_geojson(tmp_path / "d.geojson", detection_features(boxes, [0.91, 0.5], [1, 0],
                                                                   ["tumour", "normal"]))
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    props = collection["features"][0]["properties"]
    assert props["objectType"] == "detection" and props["classification"]["name"] == "normal"
    assert len(props["classification"]["color"]) == 3 and props["measurements"]["score"] == 0.91
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5  # a closed ring
    got, scores, names = read_boxes(collection)
    np.testing.assert_allclose(got, boxes)
    assert names == ["normal", "tumour"] and list(scores) == [0.91, 0.5]
