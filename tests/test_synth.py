"""densify.synth: determinism, the window labelling contract, held-out splits, scene truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from densify.digits import glyphs, scenes, synth, windows
from densify.digits import textures as texture_module

SMALL_SCENE = {"size": (240, 320), "heights": (24.0, 60.0), "n_digits": 6}


def _ink_box(mask: np.ndarray, threshold: float = 0.02) -> tuple[float, float, float]:
    """Centre (x, y) and height of the ink in a window mask, window-centred coordinates."""
    rows = np.flatnonzero((mask > threshold).any(1))
    cols = np.flatnonzero((mask > threshold).any(0))
    return ((cols[0] + cols[-1] + 1) / 2 - 14, (rows[0] + rows[-1] + 1) / 2 - 14,
            rows[-1] + 1 - rows[0])


def test_make_batch_is_deterministic():
    a = synth.make_batch(48, seed=3)
    b = synth.make_batch(48, seed=3)
    c = synth.make_batch(48, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (48, 1, 28, 28) and a[0].dtype == torch.float32
    assert 0.0 <= a[0].min() and a[0].max() <= 1.0


def test_make_batch_label_mix():
    _, labels = synth.make_batch(300, seed=0, p_background=0.5)
    assert set(labels.tolist()) <= set(range(11))
    assert 100 < (labels == synth.BACKGROUND_CLASS).sum() < 200
    _, only_digits = synth.make_batch(50, seed=0, p_background=0.0)
    assert (only_digits < 10).all()


def test_positive_windows_hold_a_centred_digit_of_trained_height(monkeypatch):
    monkeypatch.setattr(windows, "_P_NEIGHBOURS", 0.0)  # the labelled digit alone
    _, labels, masks = synth.make_batch(120, seed=1, p_background=0.0, return_masks=True)
    for mask in masks.numpy():
        dx, dy, height = _ink_box(mask)
        assert max(abs(dx), abs(dy)) <= synth.POSITIVE_SHIFT
        assert synth.POSITIVE_HEIGHTS[0] <= height <= synth.POSITIVE_HEIGHTS[1]


def _assert_background(placements):
    for _, height, cx, cy, _ in placements:
        on_scale = synth.NEGATIVE_HEIGHTS[0] <= height <= synth.NEGATIVE_HEIGHTS[1]
        assert not on_scale or max(abs(cx - 14), abs(cy - 14)) >= synth.NEGATIVE_SHIFT


@pytest.mark.parametrize("split", ["train", "eval"])
def test_layouts_follow_the_labelling_contract(split):
    rng = np.random.default_rng(7)
    bank = glyphs.glyph_bank(split)
    for _ in range(400):
        mask = np.zeros((28, 28), np.float32)
        placed = windows.positive_layout(rng, mask, windows.glyph_sampler(rng, bank), 4)
        digit, height, cx, cy, _ = placed[0]
        assert digit == 4 and max(abs(cx - 14), abs(cy - 14)) <= synth.POSITIVE_SHIFT
        assert synth.POSITIVE_HEIGHTS[0] <= height <= synth.POSITIVE_HEIGHTS[1]
        _assert_background(windows.negative_layout(rng, mask, windows.glyph_sampler(rng, bank)))
        # The near misses and gaps sit closest to the boundary: check many of each.
        _assert_background(windows.gap_layout(rng, mask, windows.glyph_sampler(rng, bank)))
        _assert_background(windows.shifted_layout(rng, mask, windows.glyph_sampler(rng, bank),
                                                 1, near_miss=True))


def test_render_glyph_is_an_exact_tight_crop():
    for style in (synth.font_styles("train")[0], synth.font_styles("eval")[0]):
        glyph = synth.render_glyph(7, style, 20)
        assert glyph.shape[0] == 20 and glyph.dtype == np.float32
        assert 0 <= glyph.min() and glyph.max() <= 1
        assert glyph[0].max() > 0 and glyph[-1].max() > 0  # ink touches top and bottom
    with pytest.raises(ValueError, match="0-9"):
        synth.render_glyph(12, style, 20)


def test_eval_fonts_are_held_out_of_training():
    train = {s.family for s in synth.font_styles("train")}
    held = {s.family for s in synth.font_styles("eval")}
    assert held == set(synth.EVAL_FONT_FAMILIES) and not held & train
    assert not set(synth.EVAL_TEXTURES) & set(synth.TRAIN_TEXTURES)


def test_eval_split_draws_only_held_out_fonts_and_textures(monkeypatch):
    families, photos, textures = set(), set(), set()
    render, levels, texture = glyphs.render_glyph, texture_module.gray_levels, texture_module.texture

    def spy_render(digit, style, height):
        families.add(style.family)
        return render(digit, style, height)

    def spy_levels(name):
        photos.add(name)
        return levels(name)

    def spy_texture(name, shape, rng):
        textures.add(name)
        return texture(name, shape, rng)

    for module in (glyphs, scenes):  # every module that renders glyphs or draws textures
        monkeypatch.setattr(module, "render_glyph", spy_render)
    for module in (texture_module, scenes):
        monkeypatch.setattr(module, "texture", spy_texture)
    monkeypatch.setattr(texture_module, "gray_levels", spy_levels)
    monkeypatch.setattr(texture_module, "_noise_sheets", lambda: pytest.fail("value_noise is train-only"))
    glyphs.glyph_bank.cache_clear()
    try:
        synth.make_batch(150, seed=2, split="eval")
        synth.make_scene(2, split="eval", **SMALL_SCENE)
    finally:
        glyphs.glyph_bank.cache_clear()
    assert families == set(synth.EVAL_FONT_FAMILIES)
    assert photos and photos <= set(synth.EVAL_TEXTURES)
    assert textures <= set(synth.EVAL_TEXTURES) | {"flat", "gradient"}


def test_make_scene_is_deterministic_with_consistent_ground_truth():
    a = synth.make_scene(5, **SMALL_SCENE)
    b = synth.make_scene(5, **SMALL_SCENE)
    assert np.array_equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
    assert a.image.shape == (240, 320, 3) and a.image.dtype == np.uint8
    assert len(a.boxes) == len(a.labels) == 6
    x1, y1, x2, y2 = a.boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 320).all() and (y2 <= 240).all()
    assert ((y2 - y1 >= 24) & (y2 - y1 <= 60)).all()
    assert ((x2 - x1) >= synth.BOX_ASPECT * (y2 - y1) - 1e-4).all()
    iou = box_iou(a.boxes, a.boxes) - torch.eye(len(a.boxes))
    assert iou.max() < 0.2  # digits never overlap
    assert not np.array_equal(a.image, synth.make_scene(6, **SMALL_SCENE).image)


def test_scene_digits_are_drawn_inside_their_boxes():
    scene = synth.make_scene(11, **SMALL_SCENE)
    gray = scene.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    for x1, y1, x2, y2 in scene.boxes.round().int().tolist():
        inside = gray[y1:y2, x1:x2]
        assert inside.max() - inside.min() > 0.3 * 255  # the digit contrasts with its ground


def test_digit_box_widens_narrow_ink_only():
    assert synth.digit_box((10, 0, 14, 20)) == (6.0, 0, 18.0, 20)  # a "1": widened to 0.6·h
    assert synth.digit_box((0, 0, 16, 20)) == (0.0, 0, 16.0, 20)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        synth.make_batch(4, 0, split="test")
    with pytest.raises(ValueError, match="heights"):
        synth.make_scene(0, size=(100, 100), heights=(24, 120))


def test_small_scene_skips_numbers_wider_than_the_image():
    """Regression: a 4-digit number wider than a small scene is skipped, not a crash."""
    for seed in range(90_120, 90_130):
        scene = synth.make_scene(seed, size=(120, 160), split="eval", heights=(24.0, 60.0))
        assert len(scene.boxes) == len(scene.labels)
        centres = (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2  # boxes may be widened past edges
        assert ((centres >= 0) & (centres <= torch.tensor([160.0, 120.0]))).all()


def test_make_batch_boxes_are_the_digit_boxes_of_its_windows():
    """``return_boxes`` leaves the windows unchanged; each digit's box is its ink box widened to
    ``BOX_ASPECT`` (``digit_box``): it is about the trained height, at least that wide, and
    is centred within ``POSITIVE_SHIFT``; background windows get NaN."""
    x, y = synth.make_batch(64, 11)
    x2, y2, masks, boxes = synth.make_batch(64, 11, return_masks=True, return_boxes=True)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    digit = y != synth.BACKGROUND_CLASS
    assert boxes[~digit].isnan().all() and not boxes[digit].isnan().any()
    for box in boxes[digit]:
        x1, y1, x2_, y2_ = box.tolist()
        assert synth.POSITIVE_HEIGHTS[0] - 1 <= y2_ - y1 <= synth.POSITIVE_HEIGHTS[1] + 1
        assert x2_ - x1 >= synth.BOX_ASPECT * (y2_ - y1) - 1e-4
        assert abs((x1 + x2_) / 2 - 14) <= synth.POSITIVE_SHIFT + 0.5
        assert abs((y1 + y2_) / 2 - 14) <= synth.POSITIVE_SHIFT + 0.5
