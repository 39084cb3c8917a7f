"""Training windows: 28×28 crops laid out by the labelling contract of
:mod:`densify.digits.convention`, in batches (:func:`make_batch`).

The layout functions place digits on a window's mask and return what they placed, so tests can
check the contract directly: :func:`positive_layout` (a digit the window should report),
:func:`negative_layout` (one of the background kinds), :func:`shifted_layout` and
:func:`gap_layout` (the near misses closest to the boundary). Each draws glyphs through a
:func:`glyph_sampler`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..errors import ParameterError
from .convention import (
    BACKGROUND_CLASS,
    CENTRE,
    NEGATIVE_HEIGHTS,
    NEGATIVE_SHIFT,
    POSITIVE_HEIGHTS,
    POSITIVE_SHIFT,
    WINDOW,
    check_split,
    digit_box,
)
from .glyphs import apply_warp, glyph_bank, paste, random_warp
from .textures import window_clutter, window_texture

__all__ = [
    "Placement", "GlyphFn", "log_uniform", "positive_layout", "negative_layout", "shifted_layout",
    "gap_layout", "glyph_sampler", "make_batch",
]

#: digit, ink height, ink centre x, ink centre y, ink width
Placement = tuple[int, float, float, float, float]
GlyphFn = Callable[[int], np.ndarray]
_P_NEIGHBOURS = 0.35
_NEGATIVE_KINDS = ("empty", "shifted", "gap", "small", "large")
_NEGATIVE_P = (0.28, 0.27, 0.15, 0.12, 0.18)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _put(mask: np.ndarray, glyph: np.ndarray, digit: int, height: float, cx: float, cy: float
         ) -> tuple[Placement, int, int]:
    """Paste and report ``(placement, x1, x2)`` with the ink box's real (rounded) geometry."""
    x1, y1, x2, y2 = paste(mask, glyph, height, cx, cy)
    return (digit, float(y2 - y1), (x1 + x2) / 2, (y1 + y2) / 2, float(x2 - x1)), x1, x2


def _is_far(height: float, cx: float, cy: float) -> bool:
    """True when a digit may appear in a background window (see the module's convention)."""
    off_scale = not NEGATIVE_HEIGHTS[0] <= height <= NEGATIVE_HEIGHTS[1]
    return off_scale or max(abs(cx - CENTRE), abs(cy - CENTRE)) >= NEGATIVE_SHIFT


def _neighbours(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn, height: float,
                cy: float, x1: int, x2: int, need_far: bool) -> list[Placement]:
    """Digits of the same number left and right of the ink span ``[x1, x2)``."""
    out = []
    for side in (-1, 1):
        if rng.random() >= 0.7:
            continue
        digit = int(rng.integers(10))
        g = glyph(digit)
        half = g.shape[1] * round(height) / g.shape[0] / 2
        gap = rng.uniform(0.12, 0.45) * height
        cx = x2 + gap + half if side > 0 else x1 - gap - half
        if not need_far or _is_far(round(height), cx, cy):
            out.append(_put(mask, g, digit, height, cx, cy)[0])
    return out


def positive_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn, digit: int
                     ) -> list[Placement]:
    """Digit ``digit`` centred (±``POSITIVE_SHIFT`` after rounding) at a trained height."""
    height = log_uniform(rng, *POSITIVE_HEIGHTS)
    cx, cy = CENTRE + rng.uniform(-POSITIVE_SHIFT + 0.5, POSITIVE_SHIFT - 0.5, 2)
    first, x1, x2 = _put(mask, glyph(digit), digit, height, cx, cy)
    if rng.random() < _P_NEIGHBOURS:
        return [first, *_neighbours(rng, mask, glyph, height, first[3], x1, x2, False)]
    return [first]


def negative_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn
                     ) -> list[Placement]:
    """Digits that a background window may hold: off-centre, off-scale, or around a gap.

    Half of the off-centre and off-scale digits are near misses (just past ``NEGATIVE_SHIFT``,
    just outside ``NEGATIVE_HEIGHTS``), which decide how sharply the dense scan peaks.
    """
    kind = _NEGATIVE_KINDS[int(rng.choice(len(_NEGATIVE_KINDS), p=_NEGATIVE_P))]
    digit, near_miss = int(rng.integers(10)), rng.random() < 0.5
    if kind == "shifted":
        return shifted_layout(rng, mask, glyph, digit, near_miss)
    if kind == "gap":
        return gap_layout(rng, mask, glyph)
    if kind == "small" and near_miss:
        height = log_uniform(rng, 8.0, NEGATIVE_HEIGHTS[0] - 0.1)
        return [_put(mask, glyph(digit), digit, height, *CENTRE + rng.uniform(-3, 3, 2))[0]]
    if kind == "small":
        digits = rng.integers(0, 10, rng.integers(1, 4))
        return [_put(mask, glyph(d), d, log_uniform(rng, 4.0, NEGATIVE_HEIGHTS[0] - 0.1),
                     *rng.uniform(2, WINDOW - 2, 2))[0] for d in digits]
    if kind == "large":
        top = 45.0 if near_miss else 130.0
        g, height = glyph(digit), log_uniform(rng, NEGATIVE_HEIGHTS[1] + 0.5, top)
        width = g.shape[1] * height / g.shape[0]
        cx, cy = CENTRE + rng.uniform(-0.5, 0.5, 2) * (width, height) * (0.7 if near_miss else 1)
        return [_put(mask, g, digit, height, cx, cy)[0]]
    return []


def shifted_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn, digit: int,
                    near_miss: bool) -> list[Placement]:
    """A digit of about the trained height centred ``NEGATIVE_SHIFT`` or more away (per axis)."""
    height = log_uniform(rng, *NEGATIVE_HEIGHTS)
    far = rng.choice([-1.0, 1.0]) * rng.uniform(NEGATIVE_SHIFT + 0.5, 9.0 if near_miss else 20.0)
    near = rng.uniform(-20, 20) if not near_miss else rng.uniform(-3, 3)
    cx, cy = (CENTRE + far, CENTRE + near) if rng.random() < 0.5 else (
        CENTRE + near, CENTRE + far)
    first, x1, x2 = _put(mask, glyph(digit), digit, height, cx, cy)
    if rng.random() < _P_NEIGHBOURS:
        return [first, *_neighbours(rng, mask, glyph, height, first[3], x1, x2, True)]
    return [first]


def gap_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn) -> list[Placement]:
    """Two neighbouring digits with the window centred on the gap between them."""
    height = log_uniform(rng, 14.0, 28.0)
    gap = rng.uniform(0.15, 0.6) * height
    (d1, d2), ox = rng.integers(0, 10, 2), rng.uniform(-2, 2)
    g1, g2 = glyph(int(d1)), glyph(int(d2))
    half1 = g1.shape[1] * round(height) / g1.shape[0] / 2
    half2 = g2.shape[1] * round(height) / g2.shape[0] / 2
    far = NEGATIVE_SHIFT + 0.5
    cx1 = min(CENTRE + ox - gap / 2 - half1, CENTRE - far)
    cx2 = max(CENTRE + ox + gap / 2 + half2, CENTRE + far)
    cy = CENTRE + rng.uniform(-2.5, 2.5)
    return [_put(mask, g1, int(d1), height, cx1, cy)[0],
            _put(mask, g2, int(d2), height, cx2, cy)[0]]


def glyph_sampler(rng: np.random.Generator, bank) -> GlyphFn:
    """Pick a family (uniformly), a style in it and a distortion; return digit → glyph."""
    family = bank[int(rng.integers(len(bank)))]
    style = family[int(rng.integers(len(family)))]
    warp = random_warp(rng)
    return functools.lru_cache(maxsize=10)(lambda d: apply_warp(style[d], warp))


def _compose(rng: np.random.Generator, mask: np.ndarray, split: str) -> np.ndarray:
    """Composite digit coverage ``mask`` over a textured, cluttered background; gray in [0, 1]."""
    fg = rng.uniform(0.0, 0.75)
    level = rng.uniform(fg + 0.25, 1.0)
    if rng.random() < 0.5:  # light digits on a dark background
        fg, level = 1 - fg, 1 - level
    base = window_texture(rng, split)
    bg = level + 1.2 * rng.random() ** 2 * (base - base.mean())
    if rng.random() < 0.55:
        bg = window_clutter(rng, bg.astype(np.float32), int(rng.integers(1, 5)))
    image = bg * (1 - mask) + fg * mask
    if rng.random() < 0.12:
        image = window_clutter(rng, image.astype(np.float32), 1)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 1.1))
    image = image + rng.normal(0, rng.uniform(0, 0.05), image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _window(rng: np.random.Generator, label: int, bank, split: str
            ) -> tuple[np.ndarray, np.ndarray, list[Placement]]:
    mask = np.zeros((WINDOW, WINDOW), np.float32)
    glyph = glyph_sampler(rng, bank)
    if label == BACKGROUND_CLASS:
        placed = negative_layout(rng, mask, glyph)
    else:
        placed = positive_layout(rng, mask, glyph, label)
    return _compose(rng, mask, split), mask, placed


def make_batch(n: int, seed: int, split: str = "train", p_background: float = 0.5,
               return_masks: bool = False, return_boxes: bool = False):
    """``n`` labelled gray windows for training or evaluating the digit classifier.

    Args:
        n: number of windows.
        seed: everything (labels, styles, layouts, textures, noise) follows from it.
        split: ``"train"`` or ``"eval"`` (held-out font family and textures).
        p_background: probability of label ``BACKGROUND_CLASS``; digits share the rest equally.
        return_masks: also return the digits' ink coverage.
        return_boxes: also return the labelled digit's ground-truth box in the window
            (:func:`digit_box` of its ink box, as in scenes); NaN for background windows.

    Shape: returns ``images`` Tensor[n, 1, 28, 28] float32 gray in [0, 1] (before normalization)
    and ``labels`` Tensor[n] int64 (0-9 digits, 10 background); with ``return_masks`` also
    ``masks`` Tensor[n, 28, 28] float32 in [0, 1] (all digits drawn in the window); with
    ``return_boxes`` then ``boxes`` Tensor[n, 4] float32 ``(x1, y1, x2, y2)`` window pixels. The
    windows are the same whichever extras are asked for.
    """
    check_split(split)
    if n < 0 or not 0.0 <= p_background <= 1.0:
        raise ParameterError(f"need n >= 0 and 0 <= p_background <= 1, got {n}, {p_background}")
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < p_background, BACKGROUND_CLASS, rng.integers(0, 10, n))
    bank = glyph_bank(split)
    images = np.empty((n, WINDOW, WINDOW), np.float32)
    masks = np.empty((n, WINDOW, WINDOW), np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    for i, label in enumerate(labels):
        images[i], masks[i], placed = _window(rng, int(label), bank, split)
        if label != BACKGROUND_CLASS:
            _, height, cx, cy, width = placed[0]
            boxes[i] = digit_box((cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2))
    out = (torch.from_numpy(images)[:, None], torch.from_numpy(labels.astype(np.int64)))
    out += (torch.from_numpy(masks),) if return_masks else ()
    return (*out, torch.from_numpy(boxes)) if return_boxes else out
