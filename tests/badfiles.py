"""Bad and unusual input files for tests (a helper module, not a test file).

``make_bad_inputs(tmpdir)`` writes one example of each and returns ``{key: path}``. The keys are
stable; other test files (CLI tests) rely on them.

Refused by ``densify.image.read_image`` (:data:`BAD_KEYS`, each raises ``ImageError``):

- ``missing``: a path that does not exist (``missing.jpg``).
- ``empty_dir``: an existing directory with no files in it.
- ``zero_byte``: ``zero.jpg``, 0 bytes.
- ``not_an_image``: ``notes.jpg``, a text file.
- ``truncated_jpeg``: a 64x64 JPEG cut in the middle of its scan data.
- ``truncated_png``: a 64x64 PNG cut in the middle of its IDAT chunk.
- ``bomb_png``: a 100-byte PNG whose IHDR claims 100000 x 100000 gray pixels (valid CRCs).

Valid and converted (:data:`GOOD_KEYS`, each reads as RGB ``uint8`` ``(H, W, 3)``):

- ``gray_png``: 8-bit gray 16x24, value ``GRAY_VALUE`` everywhere.
- ``rgba_png``: 16x24 RGBA, colour ``RGBA_COLOR``; alpha 255 in the top half, 0 in the bottom.
- ``png16``: 16-bit RGB 16x24; channels R, G, B = 65535, 0, 257 * 100 (-> 255, 0, 100).
- ``palette_png``: Pillow ``P`` mode 16x24; left half ``PALETTE[0]``, right half ``PALETTE[1]``.
- ``normal_jpeg``: a smooth 48x64 RGB JPEG (quality 95).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

BAD_KEYS = ("missing", "empty_dir", "zero_byte", "not_an_image", "truncated_jpeg",
            "truncated_png", "bomb_png")
GOOD_KEYS = ("gray_png", "rgba_png", "png16", "palette_png", "normal_jpeg")
GRAY_VALUE = 77
RGBA_COLOR = (200, 40, 10)
PALETTE = ((255, 0, 0), (0, 0, 255))
BOMB_SIZE = (100_000, 100_000)


def make_bad_inputs(tmpdir: str | Path) -> dict[str, Path]:
    """Write every bad and unusual input into ``tmpdir``; return ``{key: path}`` (module doc)."""
    root = Path(tmpdir)
    paths = {key: root / name for key, name in (
        ("missing", "missing.jpg"), ("empty_dir", "empty"), ("zero_byte", "zero.jpg"),
        ("not_an_image", "notes.jpg"), ("truncated_jpeg", "truncated.jpg"),
        ("truncated_png", "truncated.png"), ("bomb_png", "bomb.png"), ("gray_png", "gray.png"),
        ("rgba_png", "rgba.png"), ("png16", "deep16.png"), ("palette_png", "palette.png"),
        ("normal_jpeg", "normal.jpg"))}
    paths["empty_dir"].mkdir()
    paths["zero_byte"].write_bytes(b"")
    paths["not_an_image"].write_text("this is a text file, not a JPEG\n")
    photo = smooth_bgr(64, 64)
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    paths["truncated_jpeg"].write_bytes(jpeg[: len(jpeg) * 2 // 3])
    png = cv2.imencode(".png", photo)[1].tobytes()
    paths["truncated_png"].write_bytes(png[: len(png) // 2])
    paths["bomb_png"].write_bytes(bomb_png(*BOMB_SIZE))
    cv2.imwrite(str(paths["gray_png"]), np.full((16, 24), GRAY_VALUE, np.uint8))
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., :3] = RGBA_COLOR[::-1]  # OpenCV writes BGRA
    rgba[:8, :, 3] = 255
    cv2.imwrite(str(paths["rgba_png"]), rgba)
    deep = np.zeros((16, 24, 3), np.uint16)
    deep[..., 2], deep[..., 1], deep[..., 0] = 65535, 0, 257 * 100  # BGR order for OpenCV
    cv2.imwrite(str(paths["png16"]), deep)
    _palette_png(paths["palette_png"])
    cv2.imwrite(str(paths["normal_jpeg"]), smooth_bgr(48, 64), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return paths


def smooth_bgr(height: int, width: int) -> np.ndarray:
    """A smooth colour gradient (BGR ``uint8``), so JPEG files have real scan data."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     (x + y) * 127 // max(height + width - 2, 1)], axis=2).astype(np.uint8)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG (8-bit gray) whose header claims ``width x height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # depth 8, gray, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _palette_png(path: Path) -> None:
    image = Image.new("P", (24, 16), 0)
    image.putpalette([v for color in PALETTE for v in color])
    image.paste(1, (12, 0, 24, 16))
    image.save(path)
