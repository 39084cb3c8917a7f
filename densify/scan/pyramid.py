"""The scales: which resized copies of an image a dense net scans (pure functions).

A scan at factor ``f`` resizes the image to ``round(H·f) × round(W·f)`` and runs the dense net
over it, so the net's window (e.g. 224 px) covers ``window / f`` pixels of the original image:
small factors find large objects, large factors small ones.

Convention:
    sizes are ``(H, W)`` in pixels; one factor scales both axes; factors are listed in scan
    order (ascending for the default range).

Default range (``scales=N``), per image:

- **bottom** ``lo = max(window_h / H, window_w / W)``: the image's short side (relative to the
  window) equals the window, so the coarsest scale classifies the whole image in one window
  (one cell along the short side): the object that fills the frame.
- **top** ``hi = max(1, 2·lo)``: the image's own resolution (no pixels invented), or, for images
  smaller than twice the window, the factor that makes the short side twice the window. That is
  OverFeat's span: its 6 scales run from a 245 to a 461 px short side for a 231 px window, a
  ratio of about 1.9, finding objects from the whole frame down to half of it. On large images
  the range reaches down to objects of window size at native resolution (e.g. 28 px digits in a
  1600 × 1200 scene), which is what a detector scanning a scene needs.
- ``N`` factors spaced geometrically from ``lo`` to ``hi`` (a constant ratio between
  neighbouring scales, so each octave of object size gets the same number of scales); ``N = 1``
  gives ``hi`` alone: one scan at the image's own size.

Object-size range: a model card may say how tall its object is inside the window
(``object_height``, e.g. 20 px of LeNet's 28) and which object sizes the model is meant to find
in an image (``object_sizes = (min, max)`` px, e.g. digits 24-120 px tall). Then ``scales=N``
spans ``object_height / max`` to ``object_height / min`` instead, so every scale maps some
wanted object size onto the trained one (``scale_range`` in :func:`scale_factors`; the CLI's
``--object-sizes MIN:MAX`` overrides the card).

Explicit factors (``scales=[0.5, 1.0]``, or ``"0.5,1"`` / ``"lo:hi:n"`` strings from the command
line) are used as given, in the given order; each must be positive and finite.

Explicit sizes (``scales=[(245, 245), (281, 317)]``, or ``"245x245,281x317"``, ``H×W`` each):
each scale resizes the image to exactly that size, whatever its aspect ratio, as OverFeat does;
the two axes then have different factors, and boxes map back with each (:attr:`Level.scale`).
:attr:`Level.factor` is then the geometric mean ``sqrt(fy·fx)`` of the realized factors.
The preset ``"overfeat"`` is the paper's six sizes for its accurate model (Sermanet et al. 2014,
Table 5): :data:`OVERFEAT_SIZES`.

Rounding (tested): the resized size is ``floor(H·f + 0.5)`` per axis (half rounds up, unlike
Python's ``round``), at least 1 pixel, and OpenCV resizes to exactly that
(:func:`densify.io.image.resize`).
Boxes are mapped back with the *realized* factors ``size / (H, W)``, not the requested one.

Padding (never cropping): after resizing, the input is padded with the normalization mean (zero
after normalization, the same value the net's own zero padding uses), centred, to
``window + k·stride`` per axis, the smallest such size that holds the whole image. Two cases:

- the resized image is smaller than the window (a small image, or a small explicit factor):
  padded up to the window, and :attr:`Level.padded_to_window` says so (the CLI prints it);
- otherwise fewer than ``stride`` pixels are added, so that the last windows reach the image's
  right and bottom edges (without it up to ``stride - 1`` pixels would be seen by no window).

The default range never pads to the window (its bottom factor fits the window exactly); it
*upscales* small images instead (factors above 1, :attr:`Level.upscaled`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ParameterError

__all__ = ["MAX_LEVEL_PIXELS", "OVERFEAT_SIZES", "PRESETS", "Level", "default_range",
           "geometric_factors", "parse_scales", "object_range", "scale_factors", "level_sizes",
           "resized_size", "grid_padding", "levels"]

MAX_LEVEL_PIXELS = 64_000_000
"""Largest resized image (``H·W`` after scaling) accepted: about 8000 × 8000."""

OVERFEAT_SIZES: tuple[tuple[int, int], ...] = (
    (245, 245), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))
"""OverFeat's six test sizes ``(H, W)`` (Sermanet et al. 2014, Table 5, accurate model)."""

#: Named scale sets (``--scales overfeat``).
PRESETS: dict[str, tuple[tuple[int, int], ...]] = {"overfeat": OVERFEAT_SIZES}

#: What :func:`parse_scales` returns: a count, factors, or exact ``(H, W)`` sizes.
Scales = int | tuple[float, ...] | tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Level:
    """One scale of the pyramid.

    Attributes:
        factor: the requested resize factor.
        size: ``(H, W)`` of the resized image, ``floor(H·f + 0.5)`` per axis.
        padding: ``(top, bottom, left, right)`` pixels of mean-colour padding around it.
        image_size: ``(H, W)`` of the original image.
        window: ``(H, W)`` of the net's window (to tell whether the image was padded up to it).
    """

    factor: float
    size: tuple[int, int]
    padding: tuple[int, int, int, int]
    image_size: tuple[int, int]
    window: tuple[int, int]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the tensor fed to the net: the resized image plus padding."""
        top, bottom, left, right = self.padding
        return self.size[0] + top + bottom, self.size[1] + left + right

    @property
    def scale(self) -> tuple[float, float]:
        """Realized ``(fy, fx)``: resized size over original size (what boxes are mapped with)."""
        return self.size[0] / self.image_size[0], self.size[1] / self.image_size[1]

    @property
    def padded_to_window(self) -> bool:
        """True when the resized image is smaller than the window and was padded up to it."""
        return self.size[0] < self.window[0] or self.size[1] < self.window[1]

    @property
    def upscaled(self) -> bool:
        """True when the image was enlarged (factor above 1)."""
        return self.factor > 1


def default_range(image_hw: Sequence[int], window_hw: Sequence[int]) -> tuple[float, float]:
    """``(lo, hi)`` of the default scale range (module docstring): the short side (relative to
    the window) equal to the window, up to ``max(1, 2·lo)``."""
    (height, width), (wh, ww) = _pair(image_hw, "image size"), _pair(window_hw, "window")
    lo = max(wh / height, ww / width)
    return lo, max(1.0, 2.0 * lo)


def geometric_factors(n: int, lo: float, hi: float) -> tuple[float, ...]:
    """``n`` factors from ``lo`` to ``hi`` with a constant ratio, ascending; ``n = 1`` gives
    ``(hi,)``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"number of scales must be a positive integer, got {n!r}; use e.g. 6")
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ParameterError(f"scale range must satisfy 0 < lo <= hi, got {lo}, {hi}")
    if n == 1:
        return (float(hi),)
    ratio = (hi / lo) ** (1.0 / (n - 1))
    return tuple(float(lo * ratio**i) for i in range(n - 1)) + (float(hi),)


def parse_scales(value: int | str | Sequence) -> Scales:
    """A scale count ``N``, explicit factors or explicit sizes, from an int, a sequence or a string.

    Strings: ``"6"`` (a count), ``"0.5,1,2"`` (factors), ``"0.25:1:5"`` (5 factors spaced
    geometrically from 0.25 to 1), ``"245x245,281x317"`` (sizes ``HxW``), ``"overfeat"`` (a preset,
    :data:`PRESETS`). Sequences hold factors or ``(H, W)`` pairs. Raises a one-line
    :class:`ParameterError` that names the fix.

    Examples:
        >>> parse_scales("0.5,1")
        (0.5, 1.0)
        >>> parse_scales("245x245, 281x317")
        ((245, 245), (281, 317))
        >>> parse_scales("overfeat")[1]
        (281, 317)
    """
    if isinstance(value, str):
        return _parse_scale_text(value.strip())
    if isinstance(value, bool):
        raise ParameterError(f"scales must be a count or a list of factors, got {value!r}")
    if isinstance(value, int):
        geometric_factors(value, 1.0, 1.0)  # validates the count
        return value
    if isinstance(value, float):
        return (_check_factor(value),)
    values = _nonempty(value)
    if all(isinstance(v, Sequence) and not isinstance(v, str) for v in values):
        return tuple(_check_size(v) for v in values)
    return tuple(_check_factor(v) for v in values)


def _check_size(value) -> tuple[int, int]:
    size = tuple(value)
    if len(size) != 2 or not all(float(v) == int(v) and int(v) >= 1 for v in size):
        raise ParameterError(f"scale size {value!r} must be two positive integers (H, W), e.g. "
                             "245x245")
    return int(size[0]), int(size[1])


def _parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = []
    for part in (p.strip() for p in text.lower().split(",") if p.strip()):
        h, w = part.split("x")
        sizes.append(_check_size((int(h), int(w))))
    return tuple(_nonempty(sizes))


def _parse_scale_text(text: str) -> Scales:
    hint = ("give a count (6), factors (0.5,1,2), a range lo:hi:n (0.25:1:5), sizes HxW,HxW "
            f"(245x245,281x317) or a preset ({', '.join(PRESETS)})")
    if text.isdigit():
        return parse_scales(int(text))
    if text.lower() in PRESETS:
        return PRESETS[text.lower()]
    try:
        if "x" in text.lower():
            return _parse_sizes(text)
        if ":" in text:
            lo, hi, n = text.split(":")
            lo_f, hi_f = _check_factor(float(lo)), _check_factor(float(hi))
            return geometric_factors(int(n), min(lo_f, hi_f), max(lo_f, hi_f))
        return tuple(_check_factor(float(v)) for v in text.split(",") if v.strip())
    except ValueError as exc:
        message = str(exc)
        if "could not convert" in message or "invalid literal" in message or "unpack" in message:
            message = f"cannot read scales {text!r}"
        raise ParameterError(f"{message}; {hint}") from None


def _nonempty(values: Sequence[float]) -> Sequence[float]:
    if len(values) == 0:
        raise ParameterError("no scale factors given; pass a count (6) or factors such as 0.5,1")
    return values


def _check_factor(value: float) -> float:
    factor = float(value)
    if not math.isfinite(factor) or factor <= 0:
        raise ParameterError(f"scale factor {value!r} must be positive and finite (1 = the image's "
                         "own size, 0.5 = half)")
    return factor


def object_range(object_height: float, object_sizes: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` factors that map objects ``object_sizes = (min, max)`` px tall in the image
    onto the ``object_height`` px the model was trained on (module docstring)."""
    small, large = (float(v) for v in object_sizes)
    if not (0 < small <= large and math.isfinite(large)) or object_height <= 0:
        raise ParameterError(f"object sizes must satisfy 0 < min <= max, got {small:g}:{large:g}; "
                         "pass e.g. --object-sizes 24:120")
    return object_height / large, object_height / small


def scale_factors(image_hw: Sequence[int], window_hw: Sequence[int],
                  scales: int | str | Sequence = 6,
                  scale_range: tuple[float, float] | None = None) -> tuple[float, ...]:
    """The factors for one image: ``scales`` parsed, a count expanded over ``scale_range`` (from
    :func:`object_range`) or else :func:`default_range`; for explicit sizes, the geometric mean
    of each size's two factors."""
    parsed = parse_scales(scales)
    if isinstance(parsed, int):
        return geometric_factors(parsed, *(scale_range or default_range(image_hw, window_hw)))
    if parsed and isinstance(parsed[0], tuple):
        height, width = _pair(image_hw, "image size")
        return tuple(math.sqrt(h / height * w / width) for h, w in parsed)
    return parsed


def level_sizes(image_hw: Sequence[int], window_hw: Sequence[int], scales: int | str | Sequence = 6,
                scale_range: tuple[float, float] | None = None
                ) -> list[tuple[float, tuple[int, int]]]:
    """``(factor, (H, W) resized size)`` per scale: factors rounded by :func:`resized_size`,
    explicit sizes as given (checked against :data:`MAX_LEVEL_PIXELS`)."""
    parsed = parse_scales(scales)
    factors = scale_factors(image_hw, window_hw, parsed, scale_range)
    if parsed and isinstance(parsed, tuple) and isinstance(parsed[0], tuple):
        for h, w in parsed:
            if h * w > MAX_LEVEL_PIXELS:
                raise ParameterError(f"scale size {h}x{w} is over {MAX_LEVEL_PIXELS:.3g} pixels; "
                                     "use smaller sizes")
        return list(zip(factors, parsed, strict=True))
    return [(f, resized_size(image_hw, f)) for f in factors]


def resized_size(image_hw: Sequence[int], factor: float) -> tuple[int, int]:
    """``(floor(H·f + 0.5), floor(W·f + 0.5))``, each at least 1 (module docstring)."""
    height, width = _pair(image_hw, "image size")
    factor = _check_factor(factor)
    size = (max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5)))
    if size[0] * size[1] > MAX_LEVEL_PIXELS:
        raise ParameterError(f"scale factor {factor:g} makes a {size[0]}x{size[1]} image, over "
                         f"{MAX_LEVEL_PIXELS:.3g} pixels; use smaller factors")
    return size


def grid_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """Centred ``(before, after)`` padding to the smallest ``window + k·stride >= size``."""
    target = window if size <= window else window + math.ceil((size - window) / stride) * stride
    extra = target - size
    return extra // 2, extra - extra // 2


def levels(image_hw: Sequence[int], window_hw: Sequence[int], stride_hw: Sequence[int],
           scales: int | str | Sequence = 6,
           scale_range: tuple[float, float] | None = None) -> list[Level]:
    """The pyramid for one image: one :class:`Level` per factor (module docstring).

    Shape:
        ``image_hw``, ``window_hw``, ``stride_hw``: ``(H, W)`` pairs in pixels.

    Examples:
        Half size is padded (centred, with the mean colour) to ``window + k·stride`` rows:

        >>> for level in levels((480, 640), (224, 224), (32, 32), scales=[0.5, 1.0]):
        ...     print(level.factor, level.size, level.padding, level.input_size)
        0.5 (240, 320) (8, 8, 0, 0) (256, 320)
        1.0 (480, 640) (0, 0, 0, 0) (480, 640)
    """
    image_hw, window_hw = _pair(image_hw, "image size"), _pair(window_hw, "window")
    stride_hw = _pair(stride_hw, "stride")
    out = []
    for factor, size in level_sizes(image_hw, window_hw, scales, scale_range):
        pad_y = grid_padding(size[0], window_hw[0], stride_hw[0])
        pad_x = grid_padding(size[1], window_hw[1], stride_hw[1])
        out.append(Level(factor, size, pad_y + pad_x, image_hw, window_hw))
    return out


def _pair(values: Sequence[int], what: str) -> tuple[int, int]:
    pair = tuple(int(v) for v in values)
    if len(pair) != 2 or min(pair) < 1:
        raise ParameterError(f"{what} must be two positive integers (H, W), got {tuple(values)}")
    return pair
