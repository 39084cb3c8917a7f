"""Synthetic printed digits: glyphs, 28×28 training windows and large annotated scenes.

The project's default model (``lenet5-digits``, trained by ``scripts/train_lenet_digits.py``) learns
from :func:`make_batch`; the demo and the held-out evaluation scenes come from :func:`make_scene`.
Everything is deterministic for a given ``seed`` (NumPy ``default_rng``) and library versions.

This module gathers the public names of the parts, one concern each:

- :mod:`densify.digits.convention`: window size, the labelling contract, ground-truth boxes;
- :mod:`densify.digits.glyphs`: font styles, rendering, warps (held-out font families);
- :mod:`densify.digits.textures`: photo textures, noise, fills and clutter (held-out textures);
- :mod:`densify.digits.windows`: training windows laid out by the contract (:func:`make_batch`);
- :mod:`densify.digits.scenes`: large scenes and their COCO ground truth (:func:`make_scene`).

Splits (``split="train"`` or ``"eval"``; scenes also take ``"all"``): the font families
``EVAL_FONT_FAMILIES`` and the textures ``EVAL_TEXTURES`` never appear in the training split.
"""

from __future__ import annotations

from .convention import (
    BACKGROUND_CLASS,
    BOX_ASPECT,
    CATEGORIES,
    DIGIT_HEIGHT,
    NEGATIVE_HEIGHTS,
    NEGATIVE_SHIFT,
    POSITIVE_HEIGHTS,
    POSITIVE_SHIFT,
    WINDOW,
    digit_box,
)
from .glyphs import EVAL_FONT_FAMILIES, TRAIN_FONT_FAMILIES, FontStyle, font_styles, render_glyph
from .scenes import Scene, coco_ground_truth, make_scene
from .textures import EVAL_TEXTURES, TRAIN_TEXTURES, texture
from .windows import make_batch

__all__ = [
    "WINDOW", "DIGIT_HEIGHT", "POSITIVE_HEIGHTS", "POSITIVE_SHIFT", "NEGATIVE_SHIFT",
    "NEGATIVE_HEIGHTS", "BOX_ASPECT", "BACKGROUND_CLASS", "CATEGORIES", "TRAIN_FONT_FAMILIES",
    "EVAL_FONT_FAMILIES", "TRAIN_TEXTURES", "EVAL_TEXTURES", "FontStyle", "Scene", "font_styles",
    "render_glyph", "texture", "make_batch", "make_scene", "digit_box", "coco_ground_truth",
]
