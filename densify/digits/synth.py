"""Synthetic printed digits: glyphs, 28×28 training windows and large annotated scenes.

The project's default model (``lenet5-digits``, trained by ``scripts/train_lenet_digits.py``) learns
from :func:`make_batch`; the demo and the held-out evaluation scenes come from :func:`make_scene`.
Everything is deterministic for a given ``seed`` (NumPy ``default_rng``) and library versions.

Convention (training windows, ``WINDOW`` = 28 pixels, continuous coordinates, pixel ``i`` spans
``[i, i + 1)``, so the window centre is ``(14.0, 14.0)``):

- label ``d`` in 0-9: the *ink box* of digit ``d`` (tight box of its rendered ink) is ``h``
  rows tall with ``h`` in ``POSITIVE_HEIGHTS`` (around ``DIGIT_HEIGHT`` = 20, as in MNIST), and its
  centre lies within ``POSITIVE_SHIFT`` pixels (per axis) of the window centre. Neighbouring
  digits of a multi-digit number may stand left and right of it.
- label ``BACKGROUND_CLASS`` (10): clutter and textures only, or digits that no dense scan should
  report at this window: centred ``NEGATIVE_SHIFT`` pixels or more away (per-axis maximum), smaller
  than ``NEGATIVE_HEIGHTS[0]``, larger than ``NEGATIVE_HEIGHTS[1]``, or the gap between two digits.
- shifts in ``[POSITIVE_SHIFT, NEGATIVE_SHIFT)`` and heights between the two ranges are never shown:
  they are left to the detector's non-maximum suppression.

Ground-truth boxes of a scene are ``(x1, y1, x2, y2)`` in image pixels: the digit's ink box, widened
about its centre to at least ``BOX_ASPECT`` × its height, so that a narrow "1" and a wide "4" both
get a box that a window-based detector (which knows the height, not the ink width) can match.

Splits (``split="train"`` or ``"eval"``; scenes also take ``"all"``): the font family
``EVAL_FONT_FAMILIES`` (Aileron, Pillow's built-in TrueType font) and the textures ``EVAL_TEXTURES``
never appear in the training split. Clutter (lines, ellipses, blobs, strokes, rectangles), flat and
gradient fills are shared by both splits. Training fonts: OpenCV's Hershey faces (note: OpenCV 5
draws them with its own embedded outline fonts, OpenCV 4 with the Hershey vector fonts), the
DejaVu, STIX and Computer Modern fonts that ship with matplotlib, and Roboto from the
``font-roboto`` package (the one training family whose "1" has no foot, like Aileron's, Arial's and
Helvetica's). Both packages come with ``pip install 'densify[train]'``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from ..errors import ParameterError

__all__ = [
    "WINDOW", "DIGIT_HEIGHT", "POSITIVE_HEIGHTS", "POSITIVE_SHIFT", "NEGATIVE_SHIFT",
    "NEGATIVE_HEIGHTS", "BOX_ASPECT", "BACKGROUND_CLASS", "CATEGORIES", "TRAIN_FONT_FAMILIES",
    "EVAL_FONT_FAMILIES", "TRAIN_TEXTURES", "EVAL_TEXTURES", "FontStyle", "Scene", "font_styles",
    "render_glyph", "texture", "make_batch", "make_scene", "digit_box", "coco_ground_truth",
]

log = logging.getLogger(__name__)

WINDOW = 28
DIGIT_HEIGHT = 20.0
POSITIVE_HEIGHTS = (17.0, 23.5)
POSITIVE_SHIFT = 3.0
NEGATIVE_SHIFT = 5.0
NEGATIVE_HEIGHTS = (13.5, 28.5)
BOX_ASPECT = 0.6
BACKGROUND_CLASS = 10
CATEGORIES = tuple(str(d) for d in range(10)) + ("background",)

_CENTRE = WINDOW / 2
_BANK_HEIGHT = 64
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # RGB → gray, as cv2.COLOR_RGB2GRAY
_CV_MAJOR = int(cv2.__version__.split(".")[0])
_CV_FACES = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
_TTF_FAMILIES = {
    "dejavu-sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
                    "DejaVuSans-BoldOblique.ttf"),
    "dejavu-sans-mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
                         "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf"),
    "dejavu-serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
                     "DejaVuSerif-BoldItalic.ttf"),
    "stix": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
             "STIXGeneralBolIta.ttf"),
    "computer-modern": ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf"),
    "roboto": ("Roboto-Regular.ttf", "Roboto-Light.ttf", "Roboto-Medium.ttf", "Roboto-Bold.ttf",
               "Roboto-Black.ttf", "Roboto-Italic.ttf", "Roboto-BoldItalic.ttf"),
}
# Where each TrueType family's files live: (Python package, folder inside it).
_FONT_PACKAGES = {"roboto": ("font_roboto", "files")}
_DEFAULT_FONT_PACKAGE = ("matplotlib", "mpl-data/fonts/ttf")
TRAIN_FONT_FAMILIES = ("opencv-hershey", *_TTF_FAMILIES)
EVAL_FONT_FAMILIES = ("aileron",)
TRAIN_TEXTURES = ("camera", "coins", "moon", "grass", "astronaut", "coffee", "chelsea",
                  "immunohistochemistry", "hubble_deep_field", "cell", "value_noise")
EVAL_TEXTURES = ("brick", "gravel", "retina", "rocket", "gratings")
_SHARED_FILLS = ("flat", "gradient")


@dataclass(frozen=True)
class FontStyle:
    """One way to draw digits.

    Attributes:
        family: the unit that splits hold out (``"dejavu-serif"``, ``"aileron"``, ...).
        source: ``"opencv"`` (``cv2.putText``), ``"truetype"`` (a font file from a Python
            package, see ``_FONT_PACKAGES``) or ``"pillow"`` (Pillow's built-in font).
        face: the OpenCV font flags, or the TrueType file name.
        thickness: OpenCV stroke weight, 1 (regular) or 2 (bold); 1 for TrueType styles.
    """

    family: str
    source: str
    face: int | str
    thickness: int = 1


class Scene(NamedTuple):
    """A rendered scene: ``image`` (H, W, 3) uint8 RGB; ``boxes`` Tensor[K, 4] float32 in
    (x1, y1, x2, y2) image pixels; ``labels`` Tensor[K] int64 digits 0-9."""

    image: np.ndarray
    boxes: torch.Tensor
    labels: torch.Tensor


def _check_split(split: str, allowed: tuple[str, ...] = ("train", "eval")) -> None:
    if split not in allowed:
        raise ParameterError(f"split must be one of {allowed}, got {split!r}")


def font_styles(split: str) -> tuple[FontStyle, ...]:
    """All font styles of ``split`` (``"train"``, ``"eval"`` or ``"all"``), grouped by family."""
    _check_split(split, ("train", "eval", "all"))
    styles: list[FontStyle] = []
    if split in ("train", "all"):
        styles += [FontStyle("opencv-hershey", "opencv", face | italic, thickness)
                   for face in _CV_FACES for italic in (0, cv2.FONT_ITALIC) for thickness in (1, 2)]
        styles += [FontStyle(fam, "truetype", f) for fam, files in _TTF_FAMILIES.items()
                   for f in files]
    if split in ("eval", "all"):
        styles.append(FontStyle("aileron", "pillow", "Aileron-Regular"))
    return tuple(styles)


def _font_file(style: FontStyle) -> Path:
    """The TrueType file of ``style``, found inside its Python package without importing it."""
    package, folder = _FONT_PACKAGES.get(style.family, _DEFAULT_FONT_PACKAGE)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {style.family} training font ships with the {package} package: "
                          "pip install 'densify[train]'")
    return Path(list(spec.submodule_search_locations)[0]) / folder / str(style.face)


@functools.lru_cache(maxsize=64)
def _truetype(style: FontStyle, size: int):
    from PIL import ImageFont

    if style.source == "pillow":
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType; install Pillow's PyPI wheel")
        return font
    return ImageFont.truetype(str(_font_file(style)), size)


def _draw_large(text: str, style: FontStyle, px: int) -> np.ndarray:
    """``text`` drawn white on black, digits about ``px`` rows tall; uint8 (H, W) with margins."""
    if style.source == "opencv":
        face = int(style.face)
        (_, th), _ = cv2.getTextSize(text, face, 1.0, 1)
        scale = px / th
        # OpenCV 5 draws any thickness > 1 as its bold weight; OpenCV 4 draws strokes that wide.
        thick = style.thickness if _CV_MAJOR >= 5 else max(1, round(scale * 1.5 * style.thickness))
        canvas = np.zeros((3 * px, 2 * px * len(text) + 2 * px), np.uint8)
        cv2.putText(canvas, text, (px // 2, 2 * px), face, scale, 255, thick, cv2.LINE_AA)
        return canvas
    from PIL import Image, ImageDraw

    font = _truetype(style, int(px * 1.45))
    left, top, right, bottom = font.getbbox(text)
    pad = px // 4
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad))
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=255)
    return np.asarray(image)


def _ink_crop(mask: np.ndarray) -> np.ndarray:
    """The tight box of ``mask`` (H, W) around values above 5 % of its maximum."""
    ink = mask > 0.05 * float(mask.max()) if mask.max() > 0 else mask > 0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        raise ParameterError("no ink to crop: the glyph rendered empty")
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize_to_height(mask: np.ndarray, height: int) -> np.ndarray:
    h0, w0 = mask.shape
    width = max(1, round(w0 * height / h0))
    interp = cv2.INTER_AREA if h0 > height else cv2.INTER_LINEAR
    return np.clip(cv2.resize(mask, (width, height), interpolation=interp), 0.0, 1.0)


def render_glyph(digit: int, style: FontStyle, height: int) -> np.ndarray:
    """Ink coverage of ``digit`` in ``style``, cropped to its ink box, exactly ``height`` rows tall.

    Shape: returns float32 ``(height, width)`` in [0, 1]; the width follows the glyph's aspect.
    """
    if not 0 <= int(digit) <= 9:
        raise ParameterError(f"digit must be in 0-9, got {digit}")
    if height < 2:
        raise ParameterError(f"height must be at least 2 pixels, got {height}")
    big = _draw_large(str(int(digit)), style, max(2 * height, 96))
    return _resize_to_height(_ink_crop(big).astype(np.float32) / 255.0, height)


@functools.lru_cache(maxsize=4)
def _glyph_bank(split: str) -> tuple[tuple[tuple[np.ndarray, ...], ...], ...]:
    """``bank[family][style][digit]``: glyphs ``_BANK_HEIGHT`` rows tall for the window sampler."""
    families: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for style in font_styles(split):
        glyphs = tuple(render_glyph(d, style, _BANK_HEIGHT) for d in range(10))
        families.setdefault(style.family, []).append(glyphs)
    log.debug("glyph bank %s: %d families", split, len(families))
    return tuple(tuple(styles) for styles in families.values())


@dataclass(frozen=True)
class _Warp:
    """Per-string distortion: rotation (degrees), horizontal shear, x-stretch, stroke weight."""

    angle: float
    shear: float
    xscale: float
    weight: int


def _random_warp(rng: np.random.Generator) -> _Warp:
    shear = rng.uniform(-0.3, 0.3) if rng.random() < 0.4 else rng.uniform(-0.08, 0.08)
    weight = int(rng.choice([-1, 0, 0, 0, 1, 2]))
    return _Warp(rng.uniform(-8, 8), shear, float(np.exp(rng.uniform(-0.22, 0.22))), weight)


def _apply_warp(mask: np.ndarray, warp: _Warp) -> np.ndarray:
    """Thicken/thin, then rotate, shear and stretch a glyph; returns its new tight ink crop."""
    steps = round(abs(warp.weight) * mask.shape[0] / 48)
    if steps:
        pad = np.pad(mask, steps + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        op = cv2.dilate if warp.weight > 0 else cv2.erode
        moved = op(pad, kernel, iterations=steps)
        if moved.sum() > 0.4 * pad.sum():  # never erode a thin font away
            mask = moved
    t = np.deg2rad(warp.angle)
    lin = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.array(
        [[warp.xscale, -warp.shear], [0.0, 1.0]])
    h, w = mask.shape
    corners = lin @ np.array([[0, w, 0, w], [0, 0, h, h]], float)
    low, high = corners.min(1), corners.max(1)
    matrix = np.hstack([lin, (2 - low)[:, None]])
    size = (int(np.ceil(high[0] - low[0])) + 4, int(np.ceil(high[1] - low[1])) + 4)
    return _ink_crop(cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR))


def _paste(canvas: np.ndarray, glyph: np.ndarray, height: float, cx: float, cy: float
           ) -> tuple[int, int, int, int]:
    """Max-paste ``glyph`` resized to ``height`` rows with its ink centre at ``(cx, cy)``.

    Returns the ink box ``(x1, y1, x2, y2)`` in canvas pixels (it may extend past the canvas,
    which clips the paste).
    """
    g = _resize_to_height(glyph, max(1, round(height)))
    gh, gw = g.shape
    x0, y0 = round(cx - gw / 2), round(cy - gh / 2)
    ya, yb = max(y0, 0), min(y0 + gh, canvas.shape[0])
    xa, xb = max(x0, 0), min(x0 + gw, canvas.shape[1])
    if ya < yb and xa < xb:
        region = canvas[ya:yb, xa:xb]
        np.maximum(region, g[ya - y0:yb - y0, xa - x0:xb - x0], out=region)
    return x0, y0, x0 + gw, y0 + gh


def digit_box(ink_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Ground-truth box of a digit from its ink box, both (x1, y1, x2, y2): same centre and
    height, width at least ``BOX_ASPECT`` × height."""
    x1, y1, x2, y2 = ink_box
    half = max(x2 - x1, BOX_ASPECT * (y2 - y1)) / 2
    cx = (x1 + x2) / 2
    return (cx - half, y1, cx + half, y2)


# --- textures and clutter -------------------------------------------------------------------------


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
def _gray_levels(name: str) -> tuple[np.ndarray, ...]:
    """Gray versions of photo ``name`` at a few scales, for cropping windows quickly."""
    gray = np.ascontiguousarray(_photo(name) @ _LUMA)
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


def _split_textures(split: str) -> tuple[str, ...]:
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


def _window_texture(rng: np.random.Generator, split: str) -> np.ndarray:
    """A gray ``(WINDOW, WINDOW)`` float32 patch in [0, 1] from the split's textures or fills."""
    shape = (WINDOW, WINDOW)
    r = rng.random()
    if r < 0.12:
        return np.full(shape, 0.5, np.float32)
    if r < 0.22:
        return texture("gradient", shape, rng) @ _LUMA
    name = str(rng.choice(_split_textures(split)))
    if name == "value_noise":
        sheets = _noise_sheets()
        return _random_crop(rng, sheets[int(rng.integers(len(sheets)))], shape)
    if name == "gratings":
        return _gratings(rng, shape)
    levels = _gray_levels(name)
    patch = _random_crop(rng, levels[int(rng.integers(len(levels)))], shape)
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def _clutter_item(rng: np.random.Generator, image: np.ndarray, unit: float, color) -> None:
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


def _window_clutter(rng: np.random.Generator, gray: np.ndarray, count: int) -> np.ndarray:
    """``count`` clutter items drawn at twice the window resolution, then area-downsampled."""
    big = cv2.resize(gray, (2 * WINDOW, 2 * WINDOW), interpolation=cv2.INTER_LINEAR)
    for _ in range(count):
        _clutter_item(rng, big, rng.uniform(10, 90), float(rng.random()))
    return cv2.resize(big, (WINDOW, WINDOW), interpolation=cv2.INTER_AREA)


# --- training windows -----------------------------------------------------------------------------

#: digit, ink height, ink centre x, ink centre y, ink width
Placement = tuple[int, float, float, float, float]
GlyphFn = Callable[[int], np.ndarray]
_P_NEIGHBOURS = 0.35
_NEGATIVE_KINDS = ("empty", "shifted", "gap", "small", "large")
_NEGATIVE_P = (0.28, 0.27, 0.15, 0.12, 0.18)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _put(mask: np.ndarray, glyph: np.ndarray, digit: int, height: float, cx: float, cy: float
         ) -> tuple[Placement, int, int]:
    """Paste and report ``(placement, x1, x2)`` with the ink box's real (rounded) geometry."""
    x1, y1, x2, y2 = _paste(mask, glyph, height, cx, cy)
    return (digit, float(y2 - y1), (x1 + x2) / 2, (y1 + y2) / 2, float(x2 - x1)), x1, x2


def _is_far(height: float, cx: float, cy: float) -> bool:
    """True when a digit may appear in a background window (see the module's convention)."""
    off_scale = not NEGATIVE_HEIGHTS[0] <= height <= NEGATIVE_HEIGHTS[1]
    return off_scale or max(abs(cx - _CENTRE), abs(cy - _CENTRE)) >= NEGATIVE_SHIFT


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


def _positive_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn, digit: int
                     ) -> list[Placement]:
    """Digit ``digit`` centred (±``POSITIVE_SHIFT`` after rounding) at a trained height."""
    height = _log_uniform(rng, *POSITIVE_HEIGHTS)
    cx, cy = _CENTRE + rng.uniform(-POSITIVE_SHIFT + 0.5, POSITIVE_SHIFT - 0.5, 2)
    first, x1, x2 = _put(mask, glyph(digit), digit, height, cx, cy)
    if rng.random() < _P_NEIGHBOURS:
        return [first, *_neighbours(rng, mask, glyph, height, first[3], x1, x2, False)]
    return [first]


def _negative_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn
                     ) -> list[Placement]:
    """Digits that a background window may hold: off-centre, off-scale, or around a gap.

    Half of the off-centre and off-scale digits are near misses (just past ``NEGATIVE_SHIFT``,
    just outside ``NEGATIVE_HEIGHTS``), which decide how sharply the dense scan peaks.
    """
    kind = _NEGATIVE_KINDS[int(rng.choice(len(_NEGATIVE_KINDS), p=_NEGATIVE_P))]
    digit, near_miss = int(rng.integers(10)), rng.random() < 0.5
    if kind == "shifted":
        return _shifted_layout(rng, mask, glyph, digit, near_miss)
    if kind == "gap":
        return _gap_layout(rng, mask, glyph)
    if kind == "small" and near_miss:
        height = _log_uniform(rng, 8.0, NEGATIVE_HEIGHTS[0] - 0.1)
        return [_put(mask, glyph(digit), digit, height, *_CENTRE + rng.uniform(-3, 3, 2))[0]]
    if kind == "small":
        digits = rng.integers(0, 10, rng.integers(1, 4))
        return [_put(mask, glyph(d), d, _log_uniform(rng, 4.0, NEGATIVE_HEIGHTS[0] - 0.1),
                     *rng.uniform(2, WINDOW - 2, 2))[0] for d in digits]
    if kind == "large":
        top = 45.0 if near_miss else 130.0
        g, height = glyph(digit), _log_uniform(rng, NEGATIVE_HEIGHTS[1] + 0.5, top)
        width = g.shape[1] * height / g.shape[0]
        cx, cy = _CENTRE + rng.uniform(-0.5, 0.5, 2) * (width, height) * (0.7 if near_miss else 1)
        return [_put(mask, g, digit, height, cx, cy)[0]]
    return []


def _shifted_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn, digit: int,
                    near_miss: bool) -> list[Placement]:
    """A digit of about the trained height centred ``NEGATIVE_SHIFT`` or more away (per axis)."""
    height = _log_uniform(rng, *NEGATIVE_HEIGHTS)
    far = rng.choice([-1.0, 1.0]) * rng.uniform(NEGATIVE_SHIFT + 0.5, 9.0 if near_miss else 20.0)
    near = rng.uniform(-20, 20) if not near_miss else rng.uniform(-3, 3)
    cx, cy = (_CENTRE + far, _CENTRE + near) if rng.random() < 0.5 else (
        _CENTRE + near, _CENTRE + far)
    first, x1, x2 = _put(mask, glyph(digit), digit, height, cx, cy)
    if rng.random() < _P_NEIGHBOURS:
        return [first, *_neighbours(rng, mask, glyph, height, first[3], x1, x2, True)]
    return [first]


def _gap_layout(rng: np.random.Generator, mask: np.ndarray, glyph: GlyphFn) -> list[Placement]:
    """Two neighbouring digits with the window centred on the gap between them."""
    height = _log_uniform(rng, 14.0, 28.0)
    gap = rng.uniform(0.15, 0.6) * height
    (d1, d2), ox = rng.integers(0, 10, 2), rng.uniform(-2, 2)
    g1, g2 = glyph(int(d1)), glyph(int(d2))
    half1 = g1.shape[1] * round(height) / g1.shape[0] / 2
    half2 = g2.shape[1] * round(height) / g2.shape[0] / 2
    far = NEGATIVE_SHIFT + 0.5
    cx1 = min(_CENTRE + ox - gap / 2 - half1, _CENTRE - far)
    cx2 = max(_CENTRE + ox + gap / 2 + half2, _CENTRE + far)
    cy = _CENTRE + rng.uniform(-2.5, 2.5)
    return [_put(mask, g1, int(d1), height, cx1, cy)[0],
            _put(mask, g2, int(d2), height, cx2, cy)[0]]


def _glyph_sampler(rng: np.random.Generator, bank) -> GlyphFn:
    """Pick a family (uniformly), a style in it and a distortion; return digit → glyph."""
    family = bank[int(rng.integers(len(bank)))]
    style = family[int(rng.integers(len(family)))]
    warp = _random_warp(rng)
    return functools.lru_cache(maxsize=10)(lambda d: _apply_warp(style[d], warp))


def _compose(rng: np.random.Generator, mask: np.ndarray, split: str) -> np.ndarray:
    """Composite digit coverage ``mask`` over a textured, cluttered background; gray in [0, 1]."""
    fg = rng.uniform(0.0, 0.75)
    level = rng.uniform(fg + 0.25, 1.0)
    if rng.random() < 0.5:  # light digits on a dark background
        fg, level = 1 - fg, 1 - level
    base = _window_texture(rng, split)
    bg = level + 1.2 * rng.random() ** 2 * (base - base.mean())
    if rng.random() < 0.55:
        bg = _window_clutter(rng, bg.astype(np.float32), int(rng.integers(1, 5)))
    image = bg * (1 - mask) + fg * mask
    if rng.random() < 0.12:
        image = _window_clutter(rng, image.astype(np.float32), 1)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 1.1))
    image = image + rng.normal(0, rng.uniform(0, 0.05), image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _window(rng: np.random.Generator, label: int, bank, split: str
            ) -> tuple[np.ndarray, np.ndarray, list[Placement]]:
    mask = np.zeros((WINDOW, WINDOW), np.float32)
    glyph = _glyph_sampler(rng, bank)
    if label == BACKGROUND_CLASS:
        placed = _negative_layout(rng, mask, glyph)
    else:
        placed = _positive_layout(rng, mask, glyph, label)
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
    _check_split(split)
    if n < 0 or not 0.0 <= p_background <= 1.0:
        raise ParameterError(f"need n >= 0 and 0 <= p_background <= 1, got {n}, {p_background}")
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < p_background, BACKGROUND_CLASS, rng.integers(0, 10, n))
    bank = _glyph_bank(split)
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


# --- scenes ---------------------------------------------------------------------------------------


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
    names = _split_textures(split) + _SHARED_FILLS
    for y, x, h, w in _regions(rng, (0, 0, *size), 3):
        patch = texture(str(rng.choice(names)), (h, w), rng)
        fade = rng.uniform(0, 0.6)  # lower the texture's contrast sometimes
        image[y:y + h, x:x + w] = (1 - fade) * patch + fade * patch.mean((0, 1))
    for _ in range(int(size[0] * size[1] / 30000 * rng.uniform(0.5, 1.5))):
        _clutter_item(rng, image, _log_uniform(rng, 15, 300), tuple(rng.random(3).tolist()))
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
        color = np.clip(color + target - float(color @ _LUMA), 0, 1)
    return color


def _render_string(rng: np.random.Generator, digits: np.ndarray, style: FontStyle, height: int
                   ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A multi-digit number: coverage mask ``(height + 2·pad, W)`` and each digit's ink box."""
    warp = _random_warp(rng)
    big = max(64, int(height * 1.25))
    glyphs = [_resize_to_height(_apply_warp(render_glyph(int(d), style, big), warp), height)
              for d in digits]
    gaps = [round(rng.uniform(0.15, 0.4) * height) for _ in glyphs[1:]] + [0]
    pad = height // 2
    mask = np.zeros((height + 2 * pad, sum(g.shape[1] for g in glyphs) + sum(gaps) + 2 * pad),
                    np.float32)
    boxes, x = [], pad
    for g, gap in zip(glyphs, gaps, strict=True):
        x1, y1, x2, y2 = _paste(mask, g, height, x + g.shape[1] / 2, pad + height / 2)
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
        height = round(_log_uniform(rng, *heights))
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
    luma = float((region * alpha).sum(axis=(0, 1)) @ _LUMA / max(float(alpha.sum()), 1e-6))
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
    _check_split(split, ("train", "eval", "all"))
    if not 0 < heights[0] <= heights[1] or heights[1] >= min(size) / 1.5:
        raise ParameterError(f"heights {heights} must be increasing, positive and fit in {size}")
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
