"""Large annotated scenes of printed digits on textures and clutter (:func:`make_scene`), and
their COCO ground truth (:func:`coco_ground_truth`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch

from ..errors import ParameterError
from .convention import BACKGROUND_CLASS, CATEGORIES, LUMA, check_split, digit_box
from .glyphs import FontStyle, apply_warp, font_styles, paste, random_warp, render_glyph, resize_to_height
from .textures import SHARED_FILLS, clutter_item, split_textures, texture
from .windows import log_uniform

__all__ = ["Scene", "make_scene", "coco_ground_truth"]

log = logging.getLogger(__name__)

class Scene(NamedTuple):
    """A rendered scene: ``image`` (H, W, 3) uint8 RGB; ``boxes`` Tensor[K, 4] float32 in
    (x1, y1, x2, y2) image pixels; ``labels`` Tensor[K] int64 digits 0-9."""

    image: np.ndarray
    boxes: torch.Tensor
    labels: torch.Tensor





def _regions(rng: np.random.Generator, box: tuple[int, int, int, int], depth: int
             ) -> list[tuple[int, int, int, int]]:
    """Guillotine-cut ``box`` = (y, x, h, w) into a few rectangles."""
    y, x, h, w = box
    if depth == 0 or min(h, w) < 240 or rng.random() < 0.25:
        return [box]
    if (w > h) if rng.random() < 0.8 else (w <= h):
        cut = int(w * rng.uniform(0.3, 0.7))
        parts = [(y, x, h, cut), (y, x + cut, h, w - cut)]
    else:
        cut = int(h * rng.uniform(0.3, 0.7))
        parts = [(y, x, cut, w), (y + cut, x, h - cut, w)]
    return [r for p in parts for r in _regions(rng, p, depth - 1)]


def _scene_background(rng: np.random.Generator, size: tuple[int, int], split: str) -> np.ndarray:
    """A collage of textures and fills with clutter on top; float32 RGB ``(H, W, 3)``."""
    image = np.empty((*size, 3), np.float32)
    names = split_textures(split) + SHARED_FILLS
    for y, x, h, w in _regions(rng, (0, 0, *size), 3):
        patch = texture(str(rng.choice(names)), (h, w), rng)
        fade = rng.uniform(0, 0.6)  # lower the texture's contrast sometimes
        image[y:y + h, x:x + w] = (1 - fade) * patch + fade * patch.mean((0, 1))
    for _ in range(int(size[0] * size[1] / 30000 * rng.uniform(0.5, 1.5))):
        clutter_item(rng, image, log_uniform(rng, 15, 300), tuple(rng.random(3).tolist()))
    return image


def _digit_color(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    """An RGB colour whose luma differs from ``background_luma`` by at least 0.35."""
    options = []
    if background_luma >= 0.35:
        options.append(rng.uniform(0, background_luma - 0.35))
    if background_luma <= 0.65:
        options.append(rng.uniform(background_luma + 0.35, 1))
    target = float(rng.choice(options))
    color = rng.random(3).astype(np.float32) * rng.uniform(0, 1)
    for _ in range(3):
        color = np.clip(color + target - float(color @ LUMA), 0, 1)
    return color


def _render_string(rng: np.random.Generator, digits: np.ndarray, style: FontStyle, height: int
                   ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A multi-digit number: coverage mask ``(height + 2·pad, W)`` and each digit's ink box."""
    warp = random_warp(rng)
    big = max(64, int(height * 1.25))
    glyphs = [resize_to_height(apply_warp(render_glyph(int(d), style, big), warp), height)
              for d in digits]
    gaps = [round(rng.uniform(0.15, 0.4) * height) for _ in glyphs[1:]] + [0]
    pad = height // 2
    mask = np.zeros((height + 2 * pad, sum(g.shape[1] for g in glyphs) + sum(gaps) + 2 * pad),
                    np.float32)
    boxes, x = [], pad
    for g, gap in zip(glyphs, gaps, strict=True):
        x1, y1, x2, y2 = paste(mask, g, height, x + g.shape[1] / 2, pad + height / 2)
        boxes.append((x1, y1, x2, y2))
        x = x2 + gap
    return mask, boxes


def _place(rng: np.random.Generator, size: tuple[int, int], shape: tuple[int, int],
           taken: list[tuple[float, float, float, float]], margin: float
           ) -> tuple[int, int] | None:
    """Top-left ``(y, x)`` for a ``shape`` block inside ``size`` that keeps ``margin`` pixels
    away from every ``taken`` (x1, y1, x2, y2) box; ``None`` after 30 tries, or at once when the
    block is larger than the image (a long number in a small scene)."""
    if shape[0] > size[0] or shape[1] > size[1]:
        return None
    for _ in range(30):
        y = int(rng.integers(0, size[0] - shape[0] + 1))
        x = int(rng.integers(0, size[1] - shape[1] + 1))
        x1, y1, x2, y2 = x - margin, y - margin, x + shape[1] + margin, y + shape[0] + margin
        if all(x2 <= a or b <= x1 or y2 <= c or d <= y1 for a, c, b, d in taken):
            return y, x
    return None


def _scene_digits(rng: np.random.Generator, image: np.ndarray, split: str,
                  heights: tuple[float, float], n_digits: int, p_string: float
                  ) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    """Draw up to ``n_digits`` digits (single or in numbers of 2-4) onto ``image`` in place."""
    styles = font_styles(split)
    families = sorted({s.family for s in styles})
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[int] = []
    taken: list[tuple[float, float, float, float]] = []
    for _ in range(4 * n_digits):
        room = n_digits - len(labels)
        if room <= 0:
            break
        length = min(room, int(rng.integers(2, 5)) if rng.random() < p_string else 1)
        height = round(log_uniform(rng, *heights))
        family = families[int(rng.integers(len(families)))]
        style = [s for s in styles if s.family == family][int(rng.integers(
            sum(s.family == family for s in styles)))]
        digits = rng.integers(0, 10, length)
        mask, ink = _render_string(rng, digits, style, height)
        pad = height // 2
        inner = (mask.shape[0] - 2 * pad, mask.shape[1] - 2 * pad)
        spot = _place(rng, image.shape[:2], inner, taken, 0.3 * height)
        if spot is None:
            continue
        y, x = spot[0] - pad, spot[1] - pad
        taken.append((x + pad, y + pad, x + pad + inner[1], y + pad + inner[0]))
        _blend(rng, image, mask, y, x)
        boxes += [digit_box((x + a, y + b, x + c, y + d)) for a, b, c, d in ink]
        labels += [int(d) for d in digits]
    if len(labels) < n_digits:
        log.info("scene has room for %d of %d digits", len(labels), n_digits)
    return boxes, labels


def _blend(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, y: int, x: int) -> None:
    """Composite a coloured ``mask`` at ``(y, x)`` (it may hang over the edges), in place."""
    ya, xa = max(y, 0), max(x, 0)
    yb, xb = min(y + mask.shape[0], image.shape[0]), min(x + mask.shape[1], image.shape[1])
    alpha = mask[ya - y:yb - y, xa - x:xb - x, None]
    region = image[ya:yb, xa:xb]
    luma = float((region * alpha).sum(axis=(0, 1)) @ LUMA / max(float(alpha.sum()), 1e-6))
    color = _digit_color(rng, luma)
    region *= 1 - alpha
    region += alpha * color


def make_scene(seed: int, size: tuple[int, int] = (1200, 1600), split: str = "all",
               heights: tuple[float, float] = (24.0, 120.0), n_digits: int = 40,
               p_string: float = 0.3, max_noise: float = 0.03) -> Scene:
    """A large cluttered scene with printed digits and their ground truth.

    Args:
        seed: everything follows from it.
        size: ``(H, W)`` of the image in pixels.
        split: ``"train"``, ``"eval"`` (held-out font family and textures only) or ``"all"``.
        heights: ``(min, max)`` ink height of the digits in pixels, sampled log-uniformly.
        n_digits: how many digits to place (fewer if they do not fit without overlap).
        p_string: probability that a placement is a number of 2-4 digits rather than one digit.
        max_noise: the Gaussian pixel noise has a random sigma up to this (image in [0, 1]).

    Shape: ``Scene.image`` (H, W, 3) uint8 RGB; ``Scene.boxes`` Tensor[K, 4] float32 in
    (x1, y1, x2, y2) image pixels (see :func:`digit_box`); ``Scene.labels`` Tensor[K] int64.
    Digits never overlap one another; clutter lies under them.
    """
    check_split(split, ("train", "eval", "all"))
    if not 0 < heights[0] <= heights[1] or heights[1] >= min(size) / 1.5:
        raise ParameterError(f"digit heights {heights} must be increasing, positive and under "
                             f"two thirds of the scene's short side; give a size over "
                             f"{1.5 * heights[1]:g} px on the short side (densify evaluate "
                             "--size), or lower heights")
    rng = np.random.default_rng(seed)
    image = _scene_background(rng, size, split)
    boxes, labels = _scene_digits(rng, image, split, heights, n_digits, p_string)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    image = image + rng.normal(0, rng.uniform(0, max_noise), image.shape).astype(np.float32)
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return Scene(pixels, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                 torch.tensor(labels, dtype=torch.int64))


def coco_ground_truth(scenes: Sequence[tuple[int | str, str, Scene]]) -> dict:
    """COCO ground-truth JSON for generated scenes, ``(image_id, file_name, scene)`` each:
    ``images``, ``annotations`` (``bbox`` ``[x, y, w, h]`` pixels from :func:`digit_box`,
    ``area`` = w·h, ``iscrowd`` 0, ids from 1) and the ten digit ``categories`` (id = digit).

    Examples:
        >>> truth = coco_ground_truth([])
        >>> [c["name"] for c in truth["categories"]][:3]
        ['0', '1', '2']
    """
    images, annotations = [], []
    for image_id, file_name, scene in scenes:
        height, width = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for (x1, y1, x2, y2), label in zip(scene.boxes.tolist(), scene.labels.tolist(), strict=True):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": [x1, y1, w, h],
                                "area": w * h, "iscrowd": 0})
    categories = [{"id": i, "name": name} for i, name in enumerate(CATEGORIES[:BACKGROUND_CLASS])]
    return {"images": images, "annotations": annotations, "categories": categories}
