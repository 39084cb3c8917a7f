"""Behaviour of densify.draw: colormaps in RGB, heat overlays, captions and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densify.io.draw import COLORMAPS, colormap_lut, draw_boxes, draw_caption, overlay_heatmap

GREEN = (0, 255, 0)


def test_colormap_names_and_unknown_name():
    assert {"jet", "turbo", "inferno", "viridis"} <= set(COLORMAPS)
    with pytest.raises(ValueError, match="choose one of .*jet") as info:
        colormap_lut("rainbowz")
    assert "\n" not in str(info.value)


def test_colormap_lut_is_rgb():
    jet = colormap_lut("jet")
    assert jet.shape == (256, 3) and jet.dtype == np.uint8
    assert jet[0, 2] > 100 and jet[0, 0] == 0  # jet starts dark blue
    assert jet[255, 0] > 100 and jet[255, 2] == 0  # and ends dark red


def test_overlay_changes_only_the_hot_quadrant():
    image = np.full((40, 60, 3), 100, np.uint8)
    heat = np.zeros((40, 60), np.float32)
    heat[:20, :30] = 1.0
    out = overlay_heatmap(image, heat, alpha=0.5, colormap="jet")
    lut = colormap_lut("jet").astype(np.float64)
    top = 0.5 * 100 + 0.5 * lut[255]
    bottom = 0.5 * 100 + 0.5 * lut[0]
    assert np.abs(out[:20, :30] - top).max() <= 1
    assert np.abs(out[20:, :] - bottom).max() <= 1 and np.abs(out[:, 30:] - bottom).max() <= 1
    assert (image == 100).all()  # input untouched


def test_overlay_alpha_and_value_range():
    image = np.full((4, 4, 3), 50, np.uint8)
    heat = torch.full((4, 4), 5.0)
    np.testing.assert_array_equal(overlay_heatmap(image, heat, alpha=0.0, vmax=10.0), image)
    only_heat = overlay_heatmap(image, heat, alpha=1.0, colormap="viridis", vmin=0, vmax=10)
    assert (only_heat == colormap_lut("viridis")[128]).all()


def test_overlay_refuses_heat_of_another_size():
    with pytest.raises(ValueError, match="heat map is 3x4 but the image is 6x8") as info:
        overlay_heatmap(np.zeros((6, 8, 3), np.uint8), np.zeros((3, 4)))
    assert "resize" in str(info.value)


def test_draw_boxes_draws_on_the_edges():
    image = np.zeros((100, 120, 3), np.uint8)
    out = draw_boxes(image, torch.tensor([[10.0, 20.0, 50.0, 60.0]]), ["cat"], color=GREEN)
    for y, x in [(40, 10), (40, 50), (20, 30), (60, 30)]:  # left, right, top, bottom edges
        assert tuple(out[y, x]) == GREEN
    assert (out[40, 30] == 0).all() and (out[90:, 100:] == 0).all()  # inside and far away
    assert (out[:20, 10:40] == GREEN).all(axis=2).any()  # the label tag sits above the box
    assert (image == 0).all()


def test_draw_boxes_clips_and_skips():
    image = np.zeros((50, 50, 3), np.uint8)
    out = draw_boxes(image, np.array([[-10, -10, 30, 30], [60, 60, 90, 90]]), ["a", "b"],
                     scores=[0.9, 0.8], color=GREEN)
    assert tuple(out[40 // 2, 0]) == GREEN and tuple(out[20, 30]) == GREEN  # clipped left edge
    assert (out[35:, 35:] == 0).all()  # the box outside the image is skipped


def test_draw_boxes_checks_lengths():
    with pytest.raises(ValueError, match="2 boxes, 1 labels"):
        draw_boxes(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 4)), ["a"])


def test_draw_boxes_default_colours_are_stable_per_label():
    image = np.zeros((60, 60, 3), np.uint8)
    boxes = np.array([[5, 30, 20, 50]])
    first = draw_boxes(image, boxes, ["dog"])
    np.testing.assert_array_equal(first, draw_boxes(image, boxes, ["dog"]))
    assert first[40, 5].any()


@pytest.mark.parametrize("size", [(64, 96), (1200, 1600)])
def test_caption_is_a_dark_box_with_white_text_scaled_to_the_image(size):
    image = np.full((*size, 3), 200, np.uint8)
    out = draw_caption(image, "astronaut 0.93")
    dark = (out < 40).all(axis=2)
    rows, cols = np.nonzero(dark)
    assert rows.min() == 0 and cols.min() == 0  # top-left
    assert (out == 255).all(axis=2).any()  # white text
    assert rows.max() < size[0] // 2 and cols.max() < size[1]
    assert (out[-5:, -5:] == 200).all()
    if size[0] > 1000:
        assert rows.max() > 40  # scaled up on a large photo


def test_overlay_colours_every_value_by_the_documented_formula():
    rng = np.random.default_rng(0)
    heat = rng.uniform(-0.2, 1.2, (37, 53)).astype(np.float32)
    heat[3, 4] = np.nan
    only_heat = overlay_heatmap(np.zeros((37, 53, 3), np.uint8), heat, alpha=1.0,
                                colormap="turbo")
    index = np.rint(np.clip(np.nan_to_num(heat, nan=0.0), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(only_heat, colormap_lut("turbo")[index])
