"""Whole-slide and other gigapixel images, read one region at a time, never whole.

    with open_slide("scan.ome.tif") as slide:       # TiffSlide, or OpenSlideSlide
        slide.levels                                 # (SlideLevel(0, (H, W), 1.0, mpp), ...)
        rgb = slide.read_region(0, y, x, h, w)       # (h, w, 3) uint8, only that region decoded

Formats: tiled (or stripped) TIFF, BigTIFF, OME-TIFF (pyramid in SubIFDs), Aperio SVS and other
pyramidal TIFFs, with JPEG, JPEG 2000, LZW, Deflate, Zstd or uncompressed tiles, are read through
tifffile's zarr view of each level (``TiffFile.aszarr``): a region decodes only the file tiles it
touches. Other vendor formats (``.mrxs``, ``.ndpi``, ``.scn``, ``.vms``, ...) go through OpenSlide
when ``openslide-python`` is installed (``pip install 'densify[slide]'``, which also brings
``openslide-bin``, tifffile, zarr and imagecodecs).

Levels: level 0 is full resolution; ``downsample`` is level 0's size over the level's (the mean
of both axes); ``mpp`` is microns per pixel ``(y, x)`` at that level when the file records it
(OME ``PhysicalSizeX/Y``, SVS ``MPP =``, or the TIFF resolution tags in centimetres or inches),
else None. :meth:`Slide.level_for_mpp` picks the level nearest a physical resolution.

Bad input, each one line naming the format and the fix (:class:`SlideError`): a missing file, a
file that is not a slide (a PNG, a JPEG, a text file), a TIFF whose compression no installed codec
decodes, multi-channel fluorescence (not RGB or gray), a vendor format without OpenSlide. A corrupt
or truncated tile raises :class:`CorruptTileError` from :meth:`read_region`, carrying the region
with the bad tiles left at 0 and their boxes, so that a scan can go on and mark what they feed.

Convention:
    Regions are ``(level, y, x, h, w)`` in that level's pixels, rows first; arrays RGB ``uint8``
    ``(h, w, 3)``: gray is copied to three channels, alpha composited over white (as
    :mod:`densify.io.image` does); boxes ``(x1, y1, x2, y2)`` with x2/y2 exclusive.
"""

from __future__ import annotations

import abc
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError, ParameterError

__all__ = ["INSTALL_HINT", "SlideError", "CorruptTileError", "SlideLevel", "Slide", "TiffSlide",
           "OpenSlideSlide", "open_slide"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'densify[slide]'"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_FORMATS = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                  b"BM": "a BMP image", b"PK\x03\x04": "a zip archive", b"%PDF": "a PDF document"}
_SCREEN_DPI = (72.0, 96.0)  # resolution tags that record a screen default, not a scanner's


class SlideError(ImageError):
    """A file that cannot be read as a slide (one line naming its format and the fix)."""


class CorruptTileError(ImageError):
    """Tiles of a region could not be decoded.

    Attributes:
        region: the requested ``(h, w, 3)`` uint8 region, the bad tiles' pixels left at 0.
        boxes: ``(x1, y1, x2, y2)`` of each bad file tile, in the level's pixels.
    """

    def __init__(self, message: str, region: np.ndarray, boxes: list[tuple[int, int, int, int]]):
        super().__init__(message)
        self.region = region
        self.boxes = boxes


@dataclass(frozen=True)
class SlideLevel:
    """One resolution of a slide.

    Attributes:
        index: 0 for full resolution.
        size: ``(H, W)`` in pixels.
        downsample: level 0's size over this one's (mean of both axes; 1.0 at level 0).
        mpp: microns per pixel ``(y, x)`` at this level, or None when the file does not say.
    """

    index: int
    size: tuple[int, int]
    downsample: float
    mpp: tuple[float, float] | None = None


class Slide(abc.ABC):
    """A slide opened for region reads (base of :class:`TiffSlide` and :class:`OpenSlideSlide`).

    Attributes:
        path: the file.
        levels: :class:`SlideLevel` per level, full resolution first.
        format: what the file is, in words (``"OME-TIFF"``, ``"Aperio SVS"``, ``"OpenSlide: ..."``).
    """

    path: Path
    levels: tuple[SlideLevel, ...]
    format: str

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of ``level``'s pixels ``[y, y + h) × [x, x + w)``, which must
        lie inside the level. Raises :class:`CorruptTileError` for undecodable tiles."""
        self._check_region(level, y, x, h, w)
        return self._read(level, y, x, h, w)

    @abc.abstractmethod
    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The region's pixels, already checked to lie inside the level (each reader's own)."""

    def _check_region(self, level: int, y: int, x: int, h: int, w: int) -> None:
        if not 0 <= level < len(self.levels):
            raise ParameterError(f"{self.path.name} has levels 0-{len(self.levels) - 1}, not "
                                 f"{level}; see densify slide --help for --level")
        height, width = self.levels[level].size
        if h < 1 or w < 1 or y < 0 or x < 0 or y + h > height or x + w > width:
            raise ParameterError(f"region y={y} x={x} h={h} w={w} is outside level {level} "
                                 f"({height}x{width})")

    def level_for_mpp(self, mpp: float, tolerance: float = 0.1) -> int:
        """The level whose microns per pixel (mean of both axes) is nearest ``mpp``, within
        ``tolerance`` (relative); :class:`SlideError` when the file records none or none is near.
        """
        found = [(abs(math.log(sum(lv.mpp) / 2 / mpp)), lv.index) for lv in self.levels if lv.mpp]
        if not found:
            raise SlideError(f"{self.path.name} does not record microns per pixel; choose a level "
                             "with --level")
        err, index = min(found)
        if err > math.log1p(tolerance):
            have = ", ".join(f"{sum(lv.mpp) / 2:.3g}" for lv in self.levels if lv.mpp)
            raise SlideError(f"{self.path.name} has no level near {mpp:g} microns per pixel "
                             f"(levels: {have}); choose one of those or a --level")
        return index

    def close(self) -> None:  # noqa: B027 - a reader that holds nothing open has nothing to do
        """Release the file (a reader that holds a file handle overrides this)."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{lv.size[0]}x{lv.size[1]}" for lv in self.levels)
        return f"{type(self).__name__}({self.path.name!r}, {self.format}, levels: {sizes})"


# ------------------------------------------------------------------------------------ TIFF


class TiffSlide(Slide):
    """A tiled or pyramidal TIFF read through tifffile's zarr store, one region at a time.

    Examples:
        >>> import tempfile, numpy as np, tifffile
        >>> path = tempfile.mkdtemp() + "/s.tif"
        >>> tifffile.imwrite(path, np.full((300, 400, 3), 7, np.uint8), tile=(128, 128))
        >>> with TiffSlide(path) as slide:
        ...     slide.levels[0].size, slide.read_region(0, 250, 350, 50, 50).shape
        ((300, 400), (50, 50, 3))
    """

    def __init__(self, path: str | Path):
        tifffile, zarr = _tiff_modules()
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, ValueError, OSError, EOFError) as exc:
            raise SlideError(f"{self.path}: not a readable TIFF ({exc}); the file is damaged or "
                             "not a slide") from None
        try:
            series = self._tif.series[0]
            self.format = _tiff_format(self._tif)
            self._check_series(series, tifffile)
            self._arrays = [zarr.open(series.aszarr(level=i), mode="r")
                            for i in range(len(series.levels))]
        except SlideError:
            self._tif.close()
            raise
        except Exception as exc:  # tifffile/zarr raise many kinds on malformed files
            self._tif.close()
            raise SlideError(f"{self.path}: cannot read the TIFF's pyramid ({type(exc).__name__}: "
                             f"{exc}); the file is damaged or not a slide") from None
        self._gray = series.axes.endswith("YX") and not series.axes.endswith("S")
        base_mpp = _tiff_mpp(self._tif)
        h0, w0 = self._arrays[0].shape[:2]
        levels = []
        for i, arr in enumerate(self._arrays):
            h, w = arr.shape[:2]
            down = (h0 / h + w0 / w) / 2
            mpp = None if base_mpp is None else (base_mpp[0] * h0 / h, base_mpp[1] * w0 / w)
            levels.append(SlideLevel(i, (h, w), down, mpp))
        self.levels = tuple(levels)
        log.info("%s", self)

    def _check_series(self, series, tifffile) -> None:
        if series.axes not in ("YXS", "YX"):
            raise SlideError(f"{self.path.name}: {self.format} with axes {series.axes} "
                             "(multi-channel or stacked); densify reads RGB or gray slides")
        for level in series.levels:
            page = level.keyframe
            if not page.is_tiled and page.rowsperstrip >= page.imagelength > 4096:
                log.warning("%s: level of %dx%d is stored untiled: every read decodes all of it",
                            self.path.name, page.imagelength, page.imagewidth)
            try:
                tifffile.TIFF.DECOMPRESSORS[page.compression]
            except (KeyError, ImportError, RuntimeError):
                name = getattr(page.compression, "name", page.compression)
                raise SlideError(f"{self.path.name}: {self.format} with {name} compression, "
                                 f"which no installed codec decodes; {INSTALL_HINT} (imagecodecs)"
                                 ) from None

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        arr = self._arrays[level]
        try:
            return self._rgb(arr[y:y + h, x:x + w])
        except Exception:  # an undecodable tile: find which, chunk by chunk
            return self._read_chunks(level, y, x, h, w)

    def _read_chunks(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        arr = self._arrays[level]
        ch, cw = arr.chunks[:2]
        out = np.zeros((h, w, 3), np.uint8)
        bad = []
        for ty in range(y // ch * ch, y + h, ch):
            for tx in range(x // cw * cw, x + w, cw):
                y0, y1, x0, x1 = max(y, ty), min(y + h, ty + ch), max(x, tx), min(x + w, tx + cw)
                try:
                    out[y0 - y:y1 - y, x0 - x:x1 - x] = self._rgb(arr[y0:y1, x0:x1])
                except Exception as exc:
                    bad.append((tx, ty, min(tx + cw, arr.shape[1]), min(ty + ch, arr.shape[0])))
                    log.debug("tile at x=%d y=%d: %s: %s", tx, ty, type(exc).__name__, exc)
        if not bad:
            return out
        where = ", ".join(f"x={b[0]} y={b[1]}" for b in bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise CorruptTileError(f"{self.path.name} level {level}: {len(bad)} corrupt tile(s) of "
                               f"{ch}x{cw} px at {where}", out, bad)

    def _rgb(self, data: np.ndarray) -> np.ndarray:
        return _to_rgb(data[..., None] if self._gray else data)

    def close(self) -> None:
        self._tif.close()


def _tiff_modules():
    try:
        import tifffile
        import zarr
    except ImportError as exc:
        raise SlideError(f"reading slides needs tifffile and zarr ({exc.name} is missing); "
                         f"{INSTALL_HINT}") from None
    return tifffile, zarr


def _tiff_format(tif) -> str:
    for flag, name in (("is_ome", "OME-TIFF"), ("is_svs", "Aperio SVS"), ("is_ndpi", "NDPI"),
                       ("is_scn", "Leica SCN"), ("is_philips", "Philips TIFF")):
        if getattr(tif, flag, False):
            return name
    return ("BigTIFF" if tif.is_bigtiff else "TIFF") + (
        " (pyramidal)" if tif.series[0].is_pyramidal else "")


def _tiff_mpp(tif) -> tuple[float, float] | None:
    """Microns per pixel ``(y, x)`` at level 0: OME, then SVS, then the resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        sx = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        sy = re.search(r'PhysicalSizeY="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if sx and (unit is None or unit.group(1) in ("µm", "um", "\u00b5m")):
            return float(sy.group(1) if sy else sx.group(1)), float(sx.group(1))
    page = tif.pages[0]
    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1)), float(match.group(1))
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    per_unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
    xres, yres = (_ratio(tags[k].value) for k in ("XResolution", "YResolution"))
    if per_unit is None or not xres or not yres or (per_unit == 25400.0 and xres in _SCREEN_DPI):
        return None
    return per_unit / yres, per_unit / xres


def _ratio(value) -> float:
    return value[0] / value[1] if isinstance(value, tuple) and value[1] else float(value or 0)


def _to_rgb(data: np.ndarray) -> np.ndarray:
    """``(h, w, S)`` samples → RGB uint8: gray copied, alpha composited over white."""
    if data.dtype != np.uint8:
        if np.issubdtype(data.dtype, np.integer):
            top = np.iinfo(data.dtype).max
            data = np.rint(data.astype(np.float64) * (255.0 / top)).astype(np.uint8)
        else:
            data = np.rint(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    channels = data.shape[-1]
    if channels in (2, 4):
        alpha = data[..., -1:].astype(np.uint16)
        color = data[..., :-1].astype(np.uint16)
        data = ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
        channels -= 1
    if channels == 1:
        data = np.repeat(data, 3, axis=-1)
    return np.ascontiguousarray(data[..., :3])


# ------------------------------------------------------------------------------- OpenSlide


class OpenSlideSlide(Slide):
    """A vendor-format slide read through OpenSlide (``pip install 'densify[slide]'``)."""

    def __init__(self, path: str | Path):
        try:
            import openslide
        except ImportError:
            raise SlideError(f"{Path(path).name}: vendor slide formats need OpenSlide; "
                             f"{INSTALL_HINT}") from None
        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{self.path}: OpenSlide cannot read it ({exc}); not a slide "
                             "format OpenSlide knows") from None
        props = self._slide.properties
        self.format = f"OpenSlide: {props.get('openslide.vendor', 'unknown vendor')}"
        mpp = (props.get("openslide.mpp-y"), props.get("openslide.mpp-x"))
        base = (float(mpp[0]), float(mpp[1])) if all(mpp) else None
        self.levels = tuple(
            SlideLevel(i, (h, w), float(d), None if base is None else (base[0] * d, base[1] * d))
            for i, ((w, h), d) in enumerate(zip(self._slide.level_dimensions,
                                                self._slide.level_downsamples, strict=True)))

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        d = self._slide.level_downsamples[level]  # OpenSlide takes the corner in level 0 pixels
        image = self._slide.read_region((round(x * d), round(y * d)), level, (w, h))
        return _to_rgb(np.asarray(image))

    def close(self) -> None:
        self._slide.close()


def open_slide(path: str | Path) -> Slide:
    """Open ``path`` as a :class:`TiffSlide` (any TIFF) or, when OpenSlide is installed, an
    :class:`OpenSlideSlide` (other formats); :class:`SlideError` in one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: no such file; check the path" if not path.exists() else
                         f"{path}: is a directory, not a slide file; pass the slide file itself")
    if path.stat().st_size == 0:
        raise SlideError(f"{path}: empty file (0 bytes); re-export or re-download it")
    with path.open("rb") as f:
        head = f.read(8)
    if head[:4] in _TIFF_MAGIC:
        return TiffSlide(path)
    what = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)),
                f"a {path.suffix or 'suffix-less'} file")
    try:
        import openslide  # noqa: F401
    except ImportError:
        raise SlideError(f"{path.name} is {what}, not a TIFF slide; scan ordinary images with "
                         f"densify heatmap, or for vendor slide formats {INSTALL_HINT}") from None
    try:
        return OpenSlideSlide(path)
    except SlideError:
        raise SlideError(f"{path.name} is {what}, not a slide format densify or OpenSlide reads; "
                         "scan ordinary images with densify heatmap") from None
