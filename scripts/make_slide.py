"""Write a generated whole-slide image: a tiled, JPEG-compressed, pyramidal OME-TIFF (BigTIFF),
streamed tile by tile (the whole image is never in memory), with printed digits the shipped digit
spotter (``lenet5-digits``) finds, and their ground truth beside it.

    python scripts/make_slide.py 20000 -o /tmp/slide20k.ome.tif      # 20,000 x 20,000 px
    python scripts/make_slide.py 3000x5000 -o small.ome.tif --spacing 300 --seed 1

Content, all a pure function of the pixel position and ``--seed`` (so every pyramid level is
rendered directly at its own resolution and tiles can be made in any order):

- background: a stain-coloured texture, a periodic 1024-px pattern of random sinusoids and grain,
  modulated by a smooth field over the whole slide;
- digits: one per ``--spacing`` px cell with probability ``--density``, 0-9 in the OpenCV Hershey
  and Pillow fonts of :mod:`densify.digits.synth`, ink 18-22 px tall at level 0 (the model's
  trained height is 17-23.5 px), placed away from the cell's edges, dark blue-purple ink.

Ground truth (``SLIDE.json``, next to the slide with the ``.ome.tif`` suffix replaced): COCO-style
``annotations`` with ``bbox`` ``[x, y, w, h]`` in level-0 pixels (the digit's ink box widened as
:func:`densify.digits.synth.digit_box` does), ``category_id`` the digit.

Pyramid: level ``k`` is ``ceil(H / 2^k) x ceil(W / 2^k)``, in SubIFDs of level 0, down to a level
whose longer side is at most 1024 px. Resolution: ``--mpp`` microns per pixel at level 0 (0.25,
a 40x scan), recorded in the OME metadata and the TIFF resolution tags.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import click
import cv2
import numpy as np
import tifffile

from densify._parse import parse_hw
from densify.digits import synth

PERIOD = 1024
TILE = 512
INK = np.array([55, 35, 110], np.float32)


@functools.lru_cache(maxsize=1)
def _texture(seed: int) -> np.ndarray:
    """``(PERIOD, PERIOD, 3)`` float32 stain-coloured texture, periodic in both axes."""
    rng = np.random.default_rng([seed, 1])
    yy, xx = np.mgrid[0:PERIOD, 0:PERIOD].astype(np.float32) / PERIOD
    field = np.zeros((PERIOD, PERIOD), np.float32)
    for _ in range(12):
        fy, fx = rng.integers(-24, 25, 2)
        field += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6))
    field /= np.abs(field).max()
    noise = np.pad(rng.normal(0, 1, (PERIOD, PERIOD)).astype(np.float32), 8, mode="wrap")
    grain = cv2.GaussianBlur(noise, (0, 0), 1.5)[8:-8, 8:-8]  # periodic: blurred with wrap
    grain /= np.abs(grain).max()
    pink, purple = np.array([236, 196, 218], np.float32), np.array([200, 150, 200], np.float32)
    mix = (0.5 + 0.35 * field + 0.15 * grain)[..., None]
    return pink * (1 - mix) + purple * mix


def _background(seed: int, ds: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Level pixels ``[y0, y0+h) x [x0, x0+w)`` of the texture at downsample ``ds``, float32."""
    ys = (np.arange(y0, y0 + h) * ds) % PERIOD
    xs = (np.arange(x0, x0 + w) * ds) % PERIOD
    tex = _texture(seed)[ys[:, None], xs[None, :]]
    # a slow brightness field over the whole slide: light and darker "tissue" regions
    yy = (np.arange(y0, y0 + h) * ds)[:, None] / 5000.0
    xx = (np.arange(x0, x0 + w) * ds)[None, :] / 7000.0
    shade = 1.0 - 0.08 * (1 + np.sin(yy * 2.1 + np.cos(xx * 1.3) + seed)) / 2
    return tex * shade[..., None].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _glyphs() -> tuple[tuple[np.ndarray, ...], ...]:
    """``bank[style][digit]`` float32 ink masks 64 rows tall (fonts that need no extra package)."""
    styles = [s for s in synth.font_styles("all") if s.source in ("opencv", "pillow")]
    return tuple(tuple(synth.render_glyph(d, s, 64) for d in range(10)) for s in styles)


def _digit(seed: int, spacing: int, density: float, cy: int, cx: int):
    """The digit of cell ``(cy, cx)``: ``(digit, style, height, centre y, centre x)`` or None."""
    rng = np.random.default_rng([seed, 2, cy, cx])
    if rng.random() >= density:
        return None
    digit, style = int(rng.integers(10)), int(rng.integers(len(_glyphs())))
    height = int(rng.integers(18, 23))
    margin = 30
    y = cy * spacing + margin + rng.uniform(0, spacing - 2 * margin)
    x = cx * spacing + margin + rng.uniform(0, spacing - 2 * margin)
    return digit, style, height, y, x


def _glyph(digit: int, style: int, height: float) -> np.ndarray:
    g = _glyphs()[style][digit]
    width = max(1, round(g.shape[1] * height / g.shape[0]))
    rows = max(1, round(height))
    return np.clip(cv2.resize(g, (width, rows), interpolation=cv2.INTER_AREA), 0.0, 1.0)


def _ink_box(d, ds: int = 1) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` of a digit's ink at downsample ``ds`` (level pixels)."""
    digit, style, height, y, x = d
    g = _glyph(digit, style, height / ds)
    x0, y0 = round(x / ds - g.shape[1] / 2), round(y / ds - g.shape[0] / 2)
    return x0, y0, x0 + g.shape[1], y0 + g.shape[0]


def render(seed: int, size: tuple[int, int], spacing: int, density: float, ds: int, y0: int,
           x0: int, h: int = TILE, w: int = TILE) -> np.ndarray:
    """``(h, w, 3)`` uint8 of level ``ds`` (downsample) at ``(y0, x0)``; past the image: white."""
    out = _background(seed, ds, y0, x0, h, w)
    c0, c1 = (y0 * ds) // spacing, ((y0 + h) * ds + spacing - 1) // spacing
    r0, r1 = (x0 * ds) // spacing, ((x0 + w) * ds + spacing - 1) // spacing
    for cy in range(c0, c1):
        for cx in range(r0, r1):
            d = _digit(seed, spacing, density, cy, cx)
            if d is None or d[3] + 20 > size[0] or d[4] + 20 > size[1]:
                continue
            g = _glyph(d[0], d[1], d[2] / ds)
            gx, gy, _, _ = _ink_box(d, ds)
            ya, yb = max(gy, y0), min(gy + g.shape[0], y0 + h)
            xa, xb = max(gx, x0), min(gx + g.shape[1], x0 + w)
            if ya < yb and xa < xb:
                a = g[ya - gy:yb - gy, xa - gx:xb - gx, None]
                region = out[ya - y0:yb - y0, xa - x0:xb - x0]
                region *= 1 - a
                region += a * INK
    hl, wl = -(-size[0] // ds), -(-size[1] // ds)
    out[max(0, hl - y0):, :] = 255
    out[:, max(0, wl - x0):] = 255
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def truth(seed: int, size: tuple[int, int], spacing: int, density: float) -> list[dict]:
    """COCO-style annotations of every digit (module docstring)."""
    out = []
    for cy in range(-(-size[0] // spacing)):
        for cx in range(-(-size[1] // spacing)):
            d = _digit(seed, spacing, density, cy, cx)
            if d is None or d[3] + 20 > size[0] or d[4] + 20 > size[1]:
                continue
            x1, y1, x2, y2 = synth.digit_box(_ink_box(d))
            out.append({"bbox": [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)],
                        "category_id": d[0], "category_name": str(d[0])})
    return out


def write_slide(path: Path, size: tuple[int, int], seed: int = 0, spacing: int = 400,
                density: float = 0.6, mpp: float = 0.25, quality: int = 90) -> int:
    """Write the slide (module docstring); returns the number of pyramid levels."""
    levels = 1 + max(0, math.ceil(math.log2(max(size) / 1024)))

    def tiles(ds: int):
        h, w = -(-size[0] // ds), -(-size[1] // ds)
        for y in range(0, h, TILE):
            for x in range(0, w, TILE):
                yield render(seed, size, spacing, density, ds, y, x)

    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for k in range(levels):
            ds = 2 ** k
            shape = (-(-size[0] // ds), -(-size[1] // ds), 3)
            extra = ({"subifds": levels - 1, "metadata": {
                "axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": mpp, "PhysicalSizeYUnit": "µm"}} if k == 0 else
                {"subfiletype": 1})
            tw.write(tiles(ds), shape=shape, dtype=np.uint8, tile=(TILE, TILE),
                     compression="jpeg", compressionargs={"level": quality}, photometric="rgb",
                     resolution=(res / ds, res / ds), resolutionunit="CENTIMETER", **extra)
    return levels


@click.command()
@click.argument("size")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The slide to write (.ome.tif); its ground truth goes beside it (.json).")
@click.option("--seed", default=0, show_default=True)
@click.option("--spacing", default=400, show_default=True, help="Pixels per digit cell.")
@click.option("--density", default=0.6, show_default=True, help="Share of cells with a digit.")
@click.option("--mpp", default=0.25, show_default=True, help="Microns per pixel at level 0.")
@click.option("--quality", default=90, show_default=True, help="JPEG quality.")
def main(size: str, output: Path, seed: int, spacing: int, density: float, mpp: float,
         quality: int) -> None:
    """Write a generated SIZE (N or HxW) px pyramidal slide and its ground truth."""
    hw = (int(size),) * 2 if size.isdigit() else parse_hw(size, "size")
    start = time.perf_counter()
    levels = write_slide(output, hw, seed, spacing, density, mpp, quality)
    gt = output.with_name(output.name.removesuffix(".tif").removesuffix(".ome") + ".json")
    anns = truth(seed, hw, spacing, density)
    gt.write_text(json.dumps({
        "image": {"file_name": output.name, "height": hw[0], "width": hw[1]}, "seed": seed,
        "spacing": spacing, "density": density, "mpp": mpp,
        "box_format": "[x, y, w, h] level-0 pixels; ink box widened to >= box_aspect x height",
        "box_aspect": synth.BOX_ASPECT,
        "categories": [{"id": i, "name": str(i)} for i in range(10)],
        "annotations": anns}, indent=1))
    click.echo(f"wrote {output} ({hw[0]}x{hw[1]} px, {levels} levels, "
               f"{output.stat().st_size / 1e6:.1f} MB) and {gt} ({len(anns)} digits) in "
               f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
