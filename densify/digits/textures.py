"""Backgrounds for digits: photo textures, noise, gratings, flat and gradient fills, clutter.

The textures ``EVAL_TEXTURES`` never appear in the training split; clutter (lines, ellipses,
blobs, strokes, rectangles), flat and gradient fills are shared by both splits.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from ..errors import ParameterError
from .convention import LUMA, WINDOW

__all__ = [
    "TRAIN_TEXTURES", "EVAL_TEXTURES", "SHARED_FILLS", "gray_levels", "split_textures", "texture",
    "window_texture", "clutter_item", "window_clutter",
]

TRAIN_TEXTURES = ("camera", "coins", "moon", "grass", "astronaut", "coffee", "chelsea",
                  "immunohistochemistry", "hubble_deep_field", "cell", "value_noise")
EVAL_TEXTURES = ("brick", "gravel", "retina", "rocket", "gratings")
SHARED_FILLS = ("flat", "gradient")




@functools.lru_cache(maxsize=32)
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample image as float32 RGB ``(H, W, 3)`` in [0, 1], longest side ≤ 768."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    image = image.astype(np.float32) / (1.0 if image.dtype == bool else 255.0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    scale = 768 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


@functools.lru_cache(maxsize=32)
def gray_levels(name: str) -> tuple[np.ndarray, ...]:
    """Gray versions of photo ``name`` at a few scales, for cropping windows quickly."""
    gray = np.ascontiguousarray(_photo(name) @ LUMA)
    return tuple(cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                 for s in (1.0, 0.6, 0.35, 0.2))


def _value_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Multi-octave value noise, float32 ``(H, W)`` in [0, 1]."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    beta = rng.uniform(0.3, 1.5)
    cell = 2
    while cell <= max(8, max(shape) // 4):
        grid = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
        up = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell),
                        interpolation=cv2.INTER_CUBIC)
        out += cell ** beta * up[:h, :w]
        cell *= 2
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def _gratings(rng: np.random.Generator, shape: tuple[int, int], max_period: float = 40.0
              ) -> np.ndarray:
    """One or two sinusoidal or square-ish gratings, float32 ``(H, W)`` in [0, 1]."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    out = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        period = np.exp(rng.uniform(np.log(3.0), np.log(max_period)))
        theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        wave = np.sin((x * np.cos(theta) + y * np.sin(theta)) * (2 * np.pi / period) + phase)
        out += np.tanh(3 * wave) if rng.random() < 0.5 else wave
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


@functools.lru_cache(maxsize=1)
def _noise_sheets() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1234)  # fixed: the sheets are part of the recipe
    return tuple(_value_noise(rng, (256, 256)) for _ in range(4))


def _random_crop(rng: np.random.Generator, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    y = int(rng.integers(0, image.shape[0] - shape[0] + 1))
    x = int(rng.integers(0, image.shape[1] - shape[1] + 1))
    return image[y:y + shape[0], x:x + shape[1]]


def split_textures(split: str) -> tuple[str, ...]:
    return {"train": TRAIN_TEXTURES, "eval": EVAL_TEXTURES, "all": TRAIN_TEXTURES + EVAL_TEXTURES}[
        split]


def texture(name: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A patch of texture ``name`` at a random scale and position.

    Args:
        name: one of ``TRAIN_TEXTURES``, ``EVAL_TEXTURES``, ``"flat"`` or ``"gradient"``.
        shape: ``(H, W)`` of the patch.
    Shape: returns float32 RGB ``(H, W, 3)`` in [0, 1].
    """
    h, w = shape
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    if name == "flat":
        return np.broadcast_to(c1, (h, w, 3)).copy()
    if name == "gradient":
        t = np.deg2rad(rng.uniform(0, 360))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = x * np.cos(t) + y * np.sin(t)
        field = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    elif name == "value_noise":
        field = _value_noise(rng, shape)
    elif name == "gratings":
        field = _gratings(rng, shape, max_period=rng.uniform(10, 120))
    elif name in TRAIN_TEXTURES + EVAL_TEXTURES:
        return _photo_patch(rng, name, shape)
    else:
        raise ParameterError(f"unknown texture {name!r}; use one of {TRAIN_TEXTURES + EVAL_TEXTURES}")
    return c1 + (c2 - c1) * field[..., None]


def _photo_patch(rng: np.random.Generator, name: str, shape: tuple[int, int]) -> np.ndarray:
    photo = _photo(name)
    cover = max(shape[0] / photo.shape[0], shape[1] / photo.shape[1])
    scale = cover * float(np.exp(rng.uniform(0, 1.0)))
    size = (max(shape[1], round(photo.shape[1] * scale)),
            max(shape[0], round(photo.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    patch = _random_crop(rng, cv2.resize(photo, size, interpolation=interp), shape)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if np.ptp(photo[..., 0] - photo[..., 1]) < 1e-3:  # a gray photo: tint it
        patch = patch * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return np.ascontiguousarray(patch, dtype=np.float32)


def window_texture(rng: np.random.Generator, split: str) -> np.ndarray:
    """A gray ``(WINDOW, WINDOW)`` float32 patch in [0, 1] from the split's textures or fills."""
    shape = (WINDOW, WINDOW)
    r = rng.random()
    if r < 0.12:
        return np.full(shape, 0.5, np.float32)
    if r < 0.22:
        return texture("gradient", shape, rng) @ LUMA
    name = str(rng.choice(split_textures(split)))
    if name == "value_noise":
        sheets = _noise_sheets()
        return _random_crop(rng, sheets[int(rng.integers(len(sheets)))], shape)
    if name == "gratings":
        return _gratings(rng, shape)
    levels = gray_levels(name)
    patch = _random_crop(rng, levels[int(rng.integers(len(levels)))], shape)
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def clutter_item(rng: np.random.Generator, image: np.ndarray, unit: float, color) -> None:
    """Draw one line, arc, blob, stroke or rectangle of size about ``unit`` pixels, in place."""
    h, w = image.shape[:2]
    thick = max(1, round(unit * rng.uniform(0.02, 0.12)))
    p = np.array([rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)])
    kind = int(rng.integers(5))
    if kind == 0:
        t = rng.uniform(0, 2 * np.pi)
        q = p + rng.uniform(0.3, 1.5) * unit * np.array([np.cos(t), np.sin(t)])
        cv2.line(image, _pt(p), _pt(q), color, thick)
    elif kind in (1, 2):
        # A closed ring narrower than a circle is a "0": rings are round, or open arcs.
        sweep = rng.uniform(60, 360) if kind == 1 else 360.0
        a = rng.uniform(0.1, 0.6) * unit if kind == 1 else rng.uniform(0.05, 0.3) * unit
        b = a * (rng.uniform(0.88, 1.0) if sweep > 270 and kind == 1 else rng.uniform(0.3, 1.0))
        start = rng.uniform(0, 360)
        cv2.ellipse(image, _pt(p), _pt(np.array([a, b]) + 1), rng.uniform(0, 180), start,
                    start + sweep, color, min(thick, max(1, round(0.15 * b))) if kind == 1 else -1)
    elif kind == 3:
        turns = np.cumsum(rng.normal(0, 0.7, int(rng.integers(3, 8)))) + rng.uniform(0, 2 * np.pi)
        steps = 0.3 * unit * np.stack([np.cos(turns), np.sin(turns)], 1)
        points = np.round(p + np.cumsum(steps, 0)).astype(np.int32)
        cv2.polylines(image, [points], False, color, thick)
    else:
        sides = rng.uniform(0.2, 1.0, 2) * unit
        thin = max(1, min(thick, round(0.08 * float(sides.min()))))
        cv2.rectangle(image, _pt(p), _pt(p + sides), color, thin if rng.random() < 0.7 else -1)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def window_clutter(rng: np.random.Generator, gray: np.ndarray, count: int) -> np.ndarray:
    """``count`` clutter items drawn at twice the window resolution, then area-downsampled."""
    big = cv2.resize(gray, (2 * WINDOW, 2 * WINDOW), interpolation=cv2.INTER_LINEAR)
    for _ in range(count):
        clutter_item(rng, big, rng.uniform(10, 90), float(rng.random()))
    return cv2.resize(big, (WINDOW, WINDOW), interpolation=cv2.INTER_AREA)
