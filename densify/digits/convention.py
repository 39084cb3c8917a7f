"""The labelling convention of the synthetic digits, shared by windows and scenes.

Training windows are ``WINDOW`` = 28 pixels, in continuous coordinates: pixel ``i`` spans
``[i, i + 1)``, so the window centre is ``(14.0, 14.0)``.

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
about its centre to at least ``BOX_ASPECT`` × its height (:func:`digit_box`), so that a narrow "1"
and a wide "4" both get a box that a window-based detector (which knows the height, not the ink
width) can match.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = [
    "WINDOW", "DIGIT_HEIGHT", "POSITIVE_HEIGHTS", "POSITIVE_SHIFT", "NEGATIVE_SHIFT",
    "NEGATIVE_HEIGHTS", "BOX_ASPECT", "BACKGROUND_CLASS", "CATEGORIES", "CENTRE", "LUMA",
    "check_split", "digit_box",
]

WINDOW = 28
DIGIT_HEIGHT = 20.0
POSITIVE_HEIGHTS = (17.0, 23.5)
POSITIVE_SHIFT = 3.0
NEGATIVE_SHIFT = 5.0
NEGATIVE_HEIGHTS = (13.5, 28.5)
BOX_ASPECT = 0.6
BACKGROUND_CLASS = 10
CATEGORIES = tuple(str(d) for d in range(10)) + ("background",)

CENTRE = WINDOW / 2

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # RGB → gray, as cv2.COLOR_RGB2GRAY


def check_split(split: str, allowed: tuple[str, ...] = ("train", "eval")) -> None:
    if split not in allowed:
        raise ParameterError(f"split must be one of {allowed}, got {split!r}")



def digit_box(ink_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Ground-truth box of a digit from its ink box, both (x1, y1, x2, y2): same centre and
    height, width at least ``BOX_ASPECT`` × height."""
    x1, y1, x2, y2 = ink_box
    half = max(x2 - x1, BOX_ASPECT * (y2 - y1)) / 2
    cx = (x1 + x2) / 2
    return (cx - half, y1, cx + half, y2)
