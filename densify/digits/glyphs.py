"""Digit glyphs: font styles, rendering, random warps, and pasting a glyph onto a canvas.

Splits hold out whole font families: ``EVAL_FONT_FAMILIES`` (Aileron, Pillow's built-in TrueType
font) never appears in the training split. Training fonts: OpenCV's Hershey faces (note: OpenCV 5
draws them with its own embedded outline fonts, OpenCV 4 with the Hershey vector fonts), the
DejaVu, STIX and Computer Modern fonts that ship with matplotlib, and Roboto from the
``font-roboto`` package (the one training family whose "1" has no foot, like Aileron's, Arial's and
Helvetica's). Both packages come with ``pip install 'densify[train]'``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ParameterError
from .convention import check_split

__all__ = [
    "TRAIN_FONT_FAMILIES", "EVAL_FONT_FAMILIES", "FontStyle", "font_styles", "resize_to_height",
    "render_glyph", "glyph_bank", "random_warp", "apply_warp", "paste",
]

log = logging.getLogger(__name__)

_BANK_HEIGHT = 64
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



def font_styles(split: str) -> tuple[FontStyle, ...]:
    """All font styles of ``split`` (``"train"``, ``"eval"`` or ``"all"``), grouped by family."""
    check_split(split, ("train", "eval", "all"))
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


def resize_to_height(mask: np.ndarray, height: int) -> np.ndarray:
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
    return resize_to_height(_ink_crop(big).astype(np.float32) / 255.0, height)


@functools.lru_cache(maxsize=4)
def glyph_bank(split: str) -> tuple[tuple[tuple[np.ndarray, ...], ...], ...]:
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


def random_warp(rng: np.random.Generator) -> _Warp:
    shear = rng.uniform(-0.3, 0.3) if rng.random() < 0.4 else rng.uniform(-0.08, 0.08)
    weight = int(rng.choice([-1, 0, 0, 0, 1, 2]))
    return _Warp(rng.uniform(-8, 8), shear, float(np.exp(rng.uniform(-0.22, 0.22))), weight)


def apply_warp(mask: np.ndarray, warp: _Warp) -> np.ndarray:
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


def paste(canvas: np.ndarray, glyph: np.ndarray, height: float, cx: float, cy: float
           ) -> tuple[int, int, int, int]:
    """Max-paste ``glyph`` resized to ``height`` rows with its ink centre at ``(cx, cy)``.

    Returns the ink box ``(x1, y1, x2, y2)`` in canvas pixels (it may extend past the canvas,
    which clips the paste).
    """
    g = resize_to_height(glyph, max(1, round(height)))
    gh, gw = g.shape
    x0, y0 = round(cx - gw / 2), round(cy - gh / 2)
    ya, yb = max(y0, 0), min(y0 + gh, canvas.shape[0])
    xa, xb = max(x0, 0), min(x0 + gw, canvas.shape[1])
    if ya < yb and xa < xb:
        region = canvas[ya:yb, xa:xb]
        np.maximum(region, g[ya - y0:yb - y0, xa - x0:xb - x0], out=region)
    return x0, y0, x0 + gw, y0 + gh
