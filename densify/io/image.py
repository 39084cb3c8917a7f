"""Reading and validating images: files and arrays in, RGB ``uint8`` arrays and tensors out.

Convention:
    OpenCV decodes to BGR; this module converts ONCE, here, to RGB. Every public function returns
    (or takes) an RGB ``np.ndarray`` of shape ``(H, W, 3)`` and dtype ``uint8``. Tensors are
    ``(N, C, H, W)`` float32 RGB (or gray) in [0, 1] before normalization. Sizes are ``(H, W)``.

What :func:`read_image` does with valid but unusual files (nothing here is refused):

- gray: copied to 3 equal channels; palette: expanded by the decoder to RGB.
- 16-bit: scaled to 8 bits, ``round(v * 255 / 65535)`` (65535 -> 255), never truncated.
- float (e.g. 32-bit TIFF): taken as [0, 1], clipped and scaled to 0..255.
- alpha (RGBA, gray + alpha, palette with transparency): composited over WHITE,
  ``c' = (c * a + 255 * (255 - a)) / 255``, so transparent areas look as a viewer shows them
  (dropping alpha would expose whatever colour happens to sit under transparent pixels).
- EXIF orientation: applied (JPEG, PNG ``eXIf``, and formats Pillow reads), so the array and every
  box drawn on it match what a photo viewer shows. ``cv2.IMREAD_UNCHANGED`` itself ignores it.

What it refuses, with a one-line :class:`ImageError`: a missing file, a directory, an empty file,
a file that is not an image, a truncated JPEG (no end-of-image marker) or PNG (no ``IEND``
chunk), and a header that claims more than ``max_pixels`` pixels. The size is checked BEFORE
decoding, from the header (:mod:`densify.io.headers`: PNG and JPEG are walked there, other
formats read by Pillow's lazy ``Image.open``, which also applies its own limit,
``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 1.8e8). Files Pillow cannot identify (e.g. float TIFF)
are handed to OpenCV, whose own cap (2**30 pixels, ``CV_IO_MAX_IMAGE_PIXELS``) applies during
decoding; ``max_pixels`` is checked after it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import ImageError
from .headers import read_header

__all__ = [
    "ImageError", "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "SAMPLE_IMAGES",
    "read_image", "read_array", "expand_inputs", "sample_image", "resize", "thumbnail", "to_tensor",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 250_000_000
"""Largest accepted ``H * W`` (about 15800 x 15800); an RGB copy of it is 750 MB."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")



def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``(H, W, 3)``, validated and converted (see module doc).

    Args:
        path: the file. Formats: whatever Pillow identifies and OpenCV decodes (JPEG, PNG, BMP,
            TIFF, WebP, ...).
        max_pixels: refuse headers claiming more than this many pixels (default
            :data:`DEFAULT_MAX_PIXELS`, 2.5e8; ``None``: no limit of ours, Pillow's and OpenCV's
            own still apply).

    Raises:
        ImageError: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    data = _read_bytes(path)
    header = read_header(path, data)
    if not header.complete:
        end = "end-of-image marker" if header.format == "JPEG" else "IEND chunk"
        raise ImageError(f"{path}: truncated {header.format} (file ends before the {end}); "
                         "re-export or re-download it")
    _check_size(path, header.size_wh, max_pixels)
    decoded = _decode(path, data, header.format)
    if header.size_wh is None:  # a format only OpenCV reads: checked after decoding
        _check_size(path, decoded.shape[1::-1], max_pixels)
    rgb = _to_rgb8(decoded, str(path), bgr=True, strict_float=False)
    return _apply_orientation(rgb, header.orientation)


def read_array(array: np.ndarray) -> np.ndarray:
    """Validate a user-supplied image array; return RGB ``uint8`` ``(H, W, 3)`` (C-contiguous).

    Accepts ``(H, W, 3)`` RGB, ``(H, W)`` or ``(H, W, 1)`` gray, ``(H, W, 4)`` RGBA (composited
    over white), as ``uint8``, ``uint16`` (scaled) or float in [0, 1]. A C-contiguous RGB ``uint8``
    input is returned as is (no copy), so the result may share memory with ``array``.

    Raises:
        ImageError: wrong type, shape or dtype, or float values outside [0, 1].
    """
    if isinstance(array, torch.Tensor):
        raise ImageError("array: got a torch.Tensor; pass an (H, W, 3) numpy array, e.g. "
                         "tensor.permute(1, 2, 0).cpu().numpy()")
    if not isinstance(array, np.ndarray):
        raise ImageError(f"array: got {type(array).__name__}; pass an (H, W, 3) RGB numpy array "
                         "(np.asarray(...) converts most image objects)")
    return _to_rgb8(array, "array", bgr=False, strict_float=True)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; each directory replaced by its image files (sorted, not recursive).

    Image files are those with a suffix in :data:`IMAGE_SUFFIXES` (any case); hidden files
    (``.name``, e.g. macOS ``._photo.jpg``) are skipped. An empty ``paths`` gives ``[]``.

    Raises:
        ImageError: a path that does not exist, or a directory without image files.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file()
                            and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not images:
                raise ImageError(f"{path}: directory has no image files (accepted: "
                                 f"{', '.join(IMAGE_SUFFIXES)}); add images or pass the files")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise ImageError(f"{path}: no such file or directory; check the path")
    return found


def sample_image(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos (:data:`SAMPLE_IMAGES`) as RGB ``uint8`` ``(H, W, 3)``.

    Raises:
        ImageError: an unknown name (the message lists the known ones).
    """
    if name not in SAMPLE_IMAGES:
        raise ImageError(f"{name}: unknown sample image; choose one of {', '.join(SAMPLE_IMAGES)}")
    import skimage.data  # deferred: importing skimage.data costs ~0.3 s

    return read_array(getattr(skimage.data, name)())


def resize(image: np.ndarray, size_hw: Sequence[int], interpolation: int | None = None
           ) -> np.ndarray:
    """Resize ``image`` ``(H, W)`` or ``(H, W, C)`` (C <= 4, uint8 or float32) to ``size_hw``.

    Convention:
        ``size_hw`` is ``(height, width)`` like the rest of densify; OpenCV's ``dsize`` is
        ``(width, height)`` and is built here. The default interpolation is ``cv2.INTER_AREA``
        when neither side grows (anti-aliased shrinking) and ``cv2.INTER_LINEAR`` otherwise.
        A ``(H, W, 1)`` input keeps its channel axis (OpenCV alone would drop it).
    """
    height, width = (int(v) for v in size_hw)
    if height < 1 or width < 1:
        raise ImageError(f"resize: size_hw must be positive (height, width), got {tuple(size_hw)}")
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"resize: expected an (H, W) or (H, W, C) array, got {image.shape}")
    if interpolation is None:
        shrink = height <= image.shape[0] and width <= image.shape[1]
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out.reshape(height, width, *image.shape[2:])


def thumbnail(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` shrunk (``cv2.INTER_AREA``, aspect kept) so its longer side is at most ``max_side``.

    An image already that small is returned as is (no copy). Sides round to the nearest pixel and
    are at least 1.

    Examples:
        >>> thumbnail(np.zeros((3000, 4000, 3), np.uint8), 1024).shape
        (768, 1024, 3)
    """
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    factor = max_side / max(height, width)
    return resize(rgb, (max(1, round(height * factor)), max(1, round(width * factor))))


def to_tensor(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float], in_chans: int = 3
              ) -> torch.Tensor:
    """Normalize an RGB ``uint8`` image into a ``(1, in_chans, H, W)`` float32 tensor.

    ``x = (rgb / 255 - mean) / std`` per channel. ``in_chans == 1`` first converts to gray with
    OpenCV's ``RGB2GRAY`` weights (0.299 R + 0.587 G + 0.114 B), computed in float32 (no rounding
    to 8 bits). ``mean`` and ``std`` hold ``in_chans`` values, or one value for all channels.
    """
    rgb = read_array(rgb)
    if in_chans not in (1, 3):
        raise ImageError(f"to_tensor: in_chans must be 1 (gray) or 3 (RGB), got {in_chans}")
    mean_t = _channel_values(mean, in_chans, "mean")
    std_t = _channel_values(std, in_chans, "std")
    if bool((std_t <= 0).any()):
        raise ImageError(f"to_tensor: std must be positive, got {tuple(std)}")
    x = rgb.astype(np.float32) / np.float32(255)
    if in_chans == 1:
        x = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)
    return ((t - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)).contiguous()


def _channel_values(values: Sequence[float], in_chans: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(tuple(values), dtype=torch.float32).flatten()
    if t.numel() not in (1, in_chans):
        raise ImageError(f"to_tensor: {what} has {t.numel()} values but in_chans={in_chans}; "
                         f"give one value per channel")
    return t.expand(in_chans)


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file; pass the image files "
                         "inside it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes); re-export or re-download it")
    return data


def _check_size(path: Path, size_wh: Sequence[int] | None, max_pixels: int | None) -> None:
    if size_wh is None:
        return
    width, height = size_wh
    if width < 1 or height < 1:
        raise ImageError(f"{path}: header claims a {width}x{height} image; the file is corrupt, "
                         "re-export it")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{path}: header claims {width}x{height} = {width * height:.3g} pixels, "
                         f"over max_pixels={max_pixels:.3g} (a decompression bomb, or a huge "
                         "scan); downscale it, or raise max_pixels if you trust the file")


def _decode(path: Path, data: bytes, fmt: str | None) -> np.ndarray:
    """``cv2.imdecode`` with ``IMREAD_UNCHANGED`` (BGR order, native depth and channels)."""
    try:
        with _quiet_opencv():
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. over OpenCV's own pixel limit (CV_IO_MAX_IMAGE_PIXELS)
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"{path}: OpenCV refused this {fmt or 'image'} file ({reason}); "
                         "downscale or re-export it") from None
    if decoded is None and fmt is None:
        raise ImageError(f"{path}: not an image file (no known image format); check the file, "
                         "or convert it to PNG or JPEG")
    if decoded is None:
        raise ImageError(f"{path}: OpenCV cannot decode this {fmt} file (corrupt data or an "
                         "unsupported variant); re-export it as PNG or JPEG")
    return decoded


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (we report problems ourselves); not thread-safe."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Undo EXIF orientation 2..8 (as ``PIL.ImageOps.exif_transpose`` does)."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1),
    }
    if orientation not in transforms:
        return rgb
    return np.ascontiguousarray(transforms[orientation](rgb))


def _to_rgb8(arr: np.ndarray, name: str, *, bgr: bool, strict_float: bool) -> np.ndarray:
    """Any of gray / gray+alpha / colour / colour+alpha, 8/16-bit/float, to RGB ``uint8``."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        hint = (" (channels first? use .transpose(1, 2, 0))"
                if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4 else "")
        raise ImageError(f"{name}: expected an (H, W, 3) RGB, (H, W) gray or (H, W, 4) RGBA "
                         f"image, got shape {arr.shape}{hint}")
    arr = _to_uint8(arr, name, strict_float)
    channels = arr.shape[2]
    if channels >= 3:
        color = arr if channels == 3 else arr[..., :3]
    else:
        color = np.repeat(arr[..., :1], 3, axis=2)
    if bgr and channels >= 3:
        color = color[..., ::-1]
    if channels in (2, 4):
        alpha = arr[..., -1:].astype(np.uint16)
        over_white = color * alpha + 255 * (255 - alpha) + 127  # <= 65152: fits uint16
        color = (over_white // 255).astype(np.uint8)
    return np.ascontiguousarray(color)


def _to_uint8(arr: np.ndarray, name: str, strict_float: bool) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        if strict_float:
            low, high = (float(values.min()), float(values.max()))
            if not (np.isfinite([low, high]).all() and low >= -1e-3 and high <= 1 + 1e-3):
                raise ImageError(f"{name}: float image values must lie in [0, 1], got "
                                 f"{low:.4g}..{high:.4g}; divide 0..255 values by 255")
        values = np.nan_to_num(np.clip(values, 0, 1), nan=0.0)
        return (values * 255 + 0.5).astype(np.uint8)
    raise ImageError(f"{name}: unsupported pixel type {arr.dtype}; use uint8, uint16 or float "
                     "in [0, 1]")
