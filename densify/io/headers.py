"""Image headers read without decoding a pixel: format, size, completeness, EXIF orientation.

:func:`densify.io.image.read_image` checks these BEFORE decoding, so a decompression bomb or a
truncated file is refused from its first bytes. PNG and JPEG are walked here (PNG by its chunks
up to ``IEND``, JPEG by its marker segments up to the end-of-image marker, skipping entropy-coded
scans); other formats go through Pillow's lazy ``Image.open``.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError

__all__ = ["Header", "read_header", "png_header", "jpeg_header"]

log = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # any marker but stuffing and restarts
_ORIENTATION_TAG = 0x0112
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@dataclass(frozen=True)
class Header:
    """What a file's header says.

    Attributes:
        format: ``"PNG"``, ``"JPEG"``, Pillow's format name, or None when Pillow cannot identify
            the file (OpenCV may still decode it).
        size_wh: ``(width, height)``, or None when the header does not say.
        complete: False when the file ends before its end marker (a truncated PNG or JPEG).
        orientation: the EXIF orientation, 1-8 (1: as stored).
    """

    format: str | None
    size_wh: tuple[int, int] | None
    complete: bool
    orientation: int = 1


def read_header(path: Path, data: bytes) -> Header:
    """Format, size, completeness and EXIF orientation, without decoding any pixels."""
    if data.startswith(_PNG_SIGNATURE):
        return png_header(data)
    if data.startswith(_JPEG_SIGNATURE):
        return jpeg_header(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about large or odd files; we decide
            with Image.open(io.BytesIO(data)) as im:
                orientation = _valid_orientation(im.getexif().get(_ORIENTATION_TAG))
                return Header(str(im.format), im.size, True, orientation)
    except Image.DecompressionBombError as exc:
        claimed = _BOMB_PIXELS.search(str(exc))
        pixels = f"{int(claimed.group(1)):.3g}" if claimed else "too many"
        raise ImageError(f"{path}: header claims {pixels} pixels, over Pillow's limit "
                         f"(decompression bomb?); downscale it, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error):
        log.debug("%s: Pillow cannot read the header; leaving it to OpenCV", path)
        return Header(None, None, True)


def png_header(data: bytes) -> Header:
    """Walk the chunks by their lengths (no decompression) up to ``IEND``."""
    size = struct.unpack(">II", data[16:24])[::-1] if data[12:16] == b"IHDR" else None
    orientation, pos = 1, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IEND":
            return Header("PNG", size, True, orientation)
        if kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return Header("PNG", size, False, orientation)


def jpeg_header(data: bytes) -> Header:
    """Walk the marker segments (skipping entropy-coded scans) up to the EOI marker ``FF D9``."""
    size, orientation, pos = None, 1, 2
    while (pos := data.find(b"\xff", pos)) >= 0 and pos + 1 < len(data):  # skips junk as libjpeg
        marker = data[pos + 1]
        if marker == 0xD9:
            return Header("JPEG", size, True, orientation)
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 1 if marker in (0x00, 0xFF) else 2  # fill bytes and standalone markers
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if pos + 2 + length > len(data):
            break
        if marker in _SOF_MARKERS and length >= 7:
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = (width, height) if height else None  # height 0: given later by a DNL marker
        elif marker == 0xE1 and data.startswith(b"Exif\0\0", pos + 4) and orientation == 1:
            orientation = _exif_orientation(data[pos + 4:pos + 2 + length])
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            found = _SCAN_END.search(data, pos)
            pos = found.start() if found else len(data)
    return Header("JPEG", size, False, orientation)


def _exif_orientation(raw: bytes) -> int:
    exif = Image.Exif()
    try:
        exif.load(raw)
        return _valid_orientation(exif.get(_ORIENTATION_TAG))
    except Exception:  # broken EXIF is common and never a reason to refuse a photo
        log.debug("ignoring unreadable EXIF block", exc_info=True)
        return 1


def _valid_orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
