"""Looking at a scan: the notebook preview, the contact sheet's geometry and registration, show()."""

from __future__ import annotations

import base64
import dataclasses
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
import torch

from densify.io.draw import colormap_lut
from densify.io.image import read_image, thumbnail
from densify.io.sheet import MIN_COLUMN, PANEL, SheetLayout, blend, contact_sheet, sheet_layout
from densify.scan.result import THUMBNAIL_SIDE
from densify.scan.scanner import Scanner

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCENE = "demos/digits_scene.png"


@pytest.fixture(scope="module")
def digits():
    """The shipped digit spotter (trained weights: real classes fire) on the demo scene."""
    torch.set_num_threads(1)
    return Scanner("lenet5-digits", scales=2, device="cpu", weights="DEFAULT")


@pytest.fixture(scope="module")
def scene_result(digits):
    rgb = read_image(SCENE)[:300, 500:900]  # a crop with digits: fast
    return digits(np.ascontiguousarray(rgb)), rgb


@pytest.fixture(scope="module")
def big_result(digits):
    """A 6-scale scan of a 3000x4000 image (the demo scene enlarged), at small factors."""
    rgb = cv2.resize(read_image(SCENE), (4000, 3000), interpolation=cv2.INTER_LINEAR)
    return digits(rgb, scales=[0.04, 0.05, 0.06, 0.07, 0.08, 0.1]), rgb


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == PNG_MAGIC
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image[..., ::-1]


def test_repr_png_is_the_image_with_the_top_class_map_and_a_caption(scene_result):
    result, rgb = scene_result
    shown = _decode_png(result._repr_png_())
    assert shown.shape == rgb.shape  # 300x400 fits the preview: drawn at full size
    plain = result.preview(with_caption=False)
    # The caption is drawn (top-left rows differ), the rest is the same picture.
    assert np.abs(shown[:20].astype(int) - plain[:20]).max() > 100
    np.testing.assert_array_equal(shown[60:], plain[60:])
    # Under the boxes: the image in grey with the top class's aggregate map blended in.
    top = result.top_classes(3)[0]
    heat = result.panel_maps([top.index], rgb.shape[:2])[0, -1]
    np.testing.assert_array_equal(result.preview(with_caption=False, max_boxes=0),
                                  blend(rgb, heat))
    # The detections are drawn: the best box's edge carries its label colour.
    found = result.detections(0.5)
    assert len(found) > 0
    x1, y1, x2, y2 = found.boxes[found.scores.argmax()].round().int().tolist()
    assert (plain[(y1 + y2) // 2, x1] != blend(rgb, heat)[(y1 + y2) // 2, x1]).any()


def test_repr_html_is_valid_html_with_an_inline_png_and_the_top_classes(scene_result):
    result, rgb = scene_result
    parser = _Collect()
    parser.feed(result._repr_html_())
    parser.close()
    (src,) = parser.attrs("img", "src")
    assert src.startswith("data:image/png;base64,")
    assert _decode_png(base64.b64decode(src.split(",", 1)[1])).shape == rgb.shape
    for t in result.top_classes(5):
        assert f"{t.score:.3f}" in parser.text
    assert parser.tags.count("tr") == 1 + len(result.top_classes(5))


def test_a_result_keeps_a_thumbnail_and_falls_back_to_its_source(digits, tmp_path):
    big = np.ascontiguousarray(cv2.resize(read_image(SCENE), (2000, 1500)))
    result = digits(big, scales=[0.05])
    assert result.thumbnail.shape == (768, 1024, 3) and max(result.thumbnail.shape) == THUMBNAIL_SIDE
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), big[..., ::-1])
    reread = dataclasses.replace(result, thumbnail=None, source=str(path))
    np.testing.assert_array_equal(reread.display_image(500), thumbnail(big, 500))
    lost = dataclasses.replace(result, thumbnail=None, source=str(tmp_path / "gone.png"))
    assert (lost.display_image(500) == 128).all()  # grey canvas, same aspect
    assert lost.display_image(500).shape == (375, 500, 3)


def test_sheet_geometry_for_six_scales_and_five_classes_on_a_4000x3000_image(big_result):
    result, _ = big_result
    sheet = result.sheet(k=5)
    layout = sheet_layout(5, 7, result.image_size)
    assert layout.panel == (180, 240)  # the size rule: longer side PANEL px
    assert sheet.shape == (*layout.size, 3) == (1222, 2042, 3)
    boxes = [layout.panel_box(r, c) for r in range(5) for c in range(7)]
    assert all((w, h) == (240, 180) for _, _, w, h in boxes)
    xs = sorted({x for x, *_ in boxes})
    ys = sorted({y for _, y, *_ in boxes})
    assert len(xs) == 7 and len(ys) == 5 and min(np.diff(xs)) >= 240 and min(np.diff(ys)) >= 180
    assert xs[-1] + 240 < layout.bar_box()[0] < sheet.shape[1]
    # Each panel holds its map blended over the grey image (no overlap, nothing else drawn on it).
    classes = [t.index for t in result.top_classes(5)]
    rgb = cv2.resize(result.thumbnail, (240, 180), interpolation=cv2.INTER_AREA)
    maps = result.panel_maps(classes, (180, 240))
    for r, c in [(0, 0), (2, 3), (4, 6)]:
        x, y, w, h = layout.panel_box(r, c)
        np.testing.assert_array_equal(sheet[y:y + h, x:x + w], blend(rgb, maps[r, c]))
    # The colour bar runs from p = 1 (top) to p = 0 (bottom).
    x, y, w, h = layout.bar_box()
    lut = colormap_lut("jet")
    assert (sheet[y, x] == lut[255]).all() and (sheet[y + h - 1, x] == lut[0]).all()


def test_panel_titles_name_scale_cells_and_best_probability(big_result):
    result, _ = big_result
    cls = result.top_classes(1)[0].index
    (row,) = result.panel_titles([cls])
    assert len(row) == 7
    for title, m in zip(row, result.maps, strict=False):
        h, w = m.cells
        assert title.startswith(f"x{m.factor:.3g}  {h}x{w} cells")  # HxW, as everywhere
        assert title.endswith(f"best {float(m.probs[cls].max()):.3f}")
    assert row[-1].endswith(f"score {float(result.scores()[cls]):.3f}")


def test_raw_panels_put_each_peak_cell_at_its_window_centre(big_result):
    result, _ = big_result
    cls = result.top_classes(1)[0].index
    height, width = result.image_size
    maps = result.panel_maps([cls], (180, 240))[0]
    for s, m in enumerate(result.maps):
        cell = int(m.probs[cls].flatten().argmax())
        x1, y1, x2, y2 = m.boxes(clip=False)[cell].tolist()
        px = int((x1 + x2) / 2 * 240 / width)
        py = int((y1 + y2) / 2 * 180 / height)
        assert maps[s, py, px] == pytest.approx(float(m.probs[cls].max()))


def test_aggregate_panel_is_the_heatmap_when_the_panel_is_image_sized(digits):
    rgb = np.ascontiguousarray(read_image(SCENE)[100:280, 560:800])  # 180x240: panel = image
    result = digits(rgb)
    classes = [t.index for t in result.top_classes(3)]
    maps = result.panel_maps(classes, result.image_size)
    np.testing.assert_allclose(maps[:, -1], result.heatmaps(classes).numpy(), atol=1e-5)


def test_narrow_images_get_columns_wide_enough_for_their_titles():
    layout = sheet_layout(2, 3, (4000, 500))
    assert layout.panel == (PANEL, 30) and layout.column_w == MIN_COLUMN
    sheet = contact_sheet(np.zeros((PANEL, 30, 3), np.uint8), np.zeros((2, 3, PANEL, 30)),
                          [["a\nb"] * 3] * 2, ["x", "y"])
    assert sheet.shape[:2] == SheetLayout(2, 3, (PANEL, 30)).size


def test_show_returns_a_matplotlib_figure_of_the_chosen_classes_and_scales(scene_result):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    result, _ = scene_result
    top = result.top_classes(2)
    fig = result.show(classes=[t.name for t in top], scales=[1])
    try:
        panels = [ax for ax in fig.axes if ax.images]
        assert len(panels) == 4  # 2 classes x (1 scale + the aggregate)
        assert panels[0].get_ylabel() == top[0].name
        assert panels[1].get_title().startswith("mean of 2 scales")
    finally:
        plt.close(fig)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.found: list[tuple[str, dict]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.found.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data

    def attrs(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.found if t == tag and name in a]


def test_flipped_scales_are_mirrored_in_the_panels_as_in_the_heatmaps(digits):
    """A flipped scale's cells look at the mirrored image: panels mirror them back, as
    :func:`densify.scan.heatmap.scale_heatmap` does (one geometry for both)."""
    rgb = np.ascontiguousarray(read_image(SCENE)[100:280, 560:800])
    result = digits(rgb)
    mirrored = dataclasses.replace(
        result, maps=tuple(dataclasses.replace(m, flipped=True) for m in result.maps))
    classes = [t.index for t in result.top_classes(2)]
    np.testing.assert_array_equal(mirrored.panel_maps(classes, (90, 120)),
                                  result.panel_maps(classes, (90, 120))[..., ::-1])
    np.testing.assert_allclose(mirrored.panel_maps(classes, result.image_size)[:, -1],
                               mirrored.heatmaps(classes).numpy(), atol=1e-5)


def test_display_draws_from_arrays_alone():
    """No scan needed: an image, a map, boxes and labels in, an image out."""
    from densify.io import display

    rgb = np.full((60, 80, 3), 200, np.uint8)
    heat = np.zeros((60, 80), np.float32)
    heat[20:40, 30:50] = 1.0
    plain = display.preview(rgb, heat)
    np.testing.assert_array_equal(plain, blend(rgb, heat))
    boxed = display.preview(rgb, heat, np.array([[10.0, 10.0, 40.0, 50.0]]), ["7"], [0.9])
    assert boxed.shape == rgb.shape and (boxed != plain).any()
    assert _decode_png(display.png_bytes(boxed)).shape == rgb.shape
    parser = _Collect()
    parser.feed(display.html_figure(boxed, "a <b>.png", "80x60 px", [("7", 0.9, 1.0)]))
    assert "a <b>.png" in parser.text and parser.tags.count("tr") == 2
