"""Throughput of densify's dense scan against a patch grid run by MONAI's sliding-window
inference (and TIAToolbox's patch predictor, ``--tiatoolbox``), on the same slide region, the
same ResNet-18 weights and the same patch grid.

    python -m venv /tmp/monaivenv && /tmp/monaivenv/bin/pip install --no-deps --target /tmp/monai_pkgs monai
    PYTHONPATH=/tmp/monai_pkgs python scripts/peer_slide_throughput.py /tmp/densify-slides/slide20000.ome.tif

MONAI is this script's dependency, not densify's (``--target`` keeps it out of densify's
environment; it runs on densify's torch). TIAToolbox's patch predictor pins an older torch: with
``--tiatoolbox /tmp/tiavenv/bin/python`` (``python3 -m venv /tmp/tiavenv &&
/tmp/tiavenv/bin/pip install tiatoolbox``) it runs on the same region in that environment
(``scripts/tia_patch_grid.py``, a child process; its patches include those overhanging the
region's right and bottom border, which TIAToolbox pads).

What runs, in one process, with ``--threads`` threads for both:

- random ResNet-18 weights (seed 0) are saved to ``--weights`` (a state dict) and both sides load
  that file: densify through ``densify.Scanner("resnet18", weights=FILE)``, MONAI's side as
  ``torchvision.models.resnet18`` with ``load_state_dict``;
- a region of ``--cells`` × ``--cells`` grid cells is read from the slide (level 0, its top-left
  corner at ``--at``): ``224 + 32·(cells - 1)`` px a side, normalized with ImageNet's mean and
  std into one float32 tensor both sides take;
- **patch grid** (MONAI ``sliding_window_inference``, ``roi_size=224``, ``overlap=0.857`` so its
  scan interval is ``int(224 · 0.143) = 32``, batches of ``--batch`` patches): the classifier on
  every 224-px patch at stride 32; the predictor keeps each patch's logits at its grid cell (from
  the coordinates MONAI passes with ``with_coord=True``) and hands MONAI a 1×1 map per patch;
- **densify**: the converted ResNet-18 (output stride 32) on the region in one pass, and, unless
  ``--skip-slide``, ``densify.scan.stream.scan_slide`` over the whole slide (read, decoded,
  scanned, written to an OME-Zarr store in ``--workdir``, removed after).

Both grids are compared (the maximum |difference| of the logits, relative to the largest): for
ResNet-18 they are *not* equal, by design of the net, not of the scan: its convolutions pad with
zeros, so a crop's border sees zeros where the dense pass sees the pixels around the window
(a net without padding, such as VGG's ``features`` with ``padding=0``, gives equal grids). The
rates are printed as megapixels of slide per second: cells × 32² px / seconds (each cell is the
32 × 32 px step of the grid; the region's border beyond the last cell counts for neither).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

STRIDE, WINDOW = 32, 224


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--cells", type=int, default=24, help="grid cells a side of the region")
    parser.add_argument("--at", type=int, nargs=2, default=(4096, 4096), metavar=("Y", "X"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=Path("/tmp/resnet18_seed0.pt"))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-slide", action="store_true", help="no full-slide densify scan")
    parser.add_argument("--tiatoolbox", metavar="PYTHON", default=None,
                        help="also run TIAToolbox's patch predictor on the region with this "
                             "interpreter (its own venv: scripts/tia_patch_grid.py)")
    args = parser.parse_args()

    import torchvision
    from monai.inferers import sliding_window_inference

    import densify
    from densify.io.slides import open_slide
    from densify.models.catalogue import IMAGENET_MEAN, IMAGENET_STD

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), args.weights)
    side = WINDOW + STRIDE * (args.cells - 1)
    with open_slide(args.slide) as slide:
        rgb = slide.read_region(0, args.at[0], args.at[1], side, side)
        slide_size = slide.levels[0].size
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous()
    cells = args.cells * args.cells
    mpx = cells * STRIDE * STRIDE / 1e6
    print(f"slide {args.slide.name} {slide_size[0]}x{slide_size[1]}; region {side}x{side} px at "
          f"{tuple(args.at)}: {args.cells}x{args.cells} patches of {WINDOW} px at stride {STRIDE}"
          f" ({mpx:.2f} Mpx of grid); {args.threads} threads, torch {torch.__version__}")

    # MONAI: the classifier on every patch of the grid
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    model.eval()
    grid = torch.full((1000, args.cells, args.cells), float("nan"))

    def predictor(patches: torch.Tensor, coords) -> torch.Tensor:
        logits = model(patches)
        for row, sl in zip(logits, coords, strict=True):
            ys, xs = sl[-2], sl[-1]
            grid[:, ys.start // STRIDE, xs.start // STRIDE] = row
        return logits.new_zeros(len(patches), 1, 1, 1)

    with torch.inference_mode():
        start = time.perf_counter()
        sliding_window_inference(x, WINDOW, args.batch, predictor, overlap=0.857,
                                 with_coord=True)
        peer_s = time.perf_counter() - start
    if torch.isnan(grid).any():
        raise SystemExit("MONAI's windows did not cover the stride-32 grid")
    print(f"MONAI sliding_window_inference: {cells} patches in {peer_s:.1f} s = "
          f"{cells / peer_s:.1f} patches/s = {mpx / peer_s:.4f} Mpx/s")

    if args.tiatoolbox:
        tia_rate = _tiatoolbox(args, rgb)
        print(f"TIAToolbox PatchPredictor: {tia_rate:.4f} Mpx/s")

    # densify: the dense net on the same region
    scanner = densify.Scanner("resnet18", weights=str(args.weights), output_stride=STRIDE,
                              scales=[1.0], device="cpu", threads=args.threads)
    dense = scanner.dense
    with torch.inference_mode():
        dense(x[..., :WINDOW + STRIDE, :WINDOW + STRIDE])  # warm-up (oneDNN primitives)
        start = time.perf_counter()
        maps = dense(x.contiguous(memory_format=torch.channels_last))[0]
        dense_s = time.perf_counter() - start
    diff = (maps - grid).abs().max().item() / grid.abs().max().item()
    versus = f"; {mpx / dense_s / tia_rate:.1f}x TIAToolbox's rate" if args.tiatoolbox else ""
    print(f"densify dense pass on the region: {dense_s:.2f} s = {mpx / dense_s:.3f} Mpx/s; "
          f"{peer_s / dense_s:.1f}x MONAI's patch grid{versus}; max |difference| of the logits "
          f"{diff:.1e} of the largest (zero padding: see the module docstring)")
    if args.skip_slide:
        return

    # densify: the whole slide, read, scanned and written tile by tile
    from densify.scan.stream import scan_slide

    store = Path(tempfile.mkdtemp(dir=args.workdir)) / "peer_heatmap.ome.zarr"
    try:
        with open_slide(args.slide) as slide:
            start = time.perf_counter()
            done = scan_slide(scanner, slide, store, 0)
            slide_s = time.perf_counter() - start
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)
    h, w = done.cells
    slide_mpx = h * w * STRIDE * STRIDE / 1e6
    print(f"densify scan_slide, whole slide: {h}x{w} cells ({done.tiles} tiles) in {slide_s:.0f} s"
          f" = {slide_mpx / slide_s:.3f} Mpx/s; {slide_mpx / slide_s / (mpx / peer_s):.1f}x the "
          "patch grid's rate")


def _tiatoolbox(args, rgb) -> float:
    """Run ``scripts/tia_patch_grid.py`` on the region (a PNG) with ``args.tiatoolbox``; its
    rate in Mpx/s (patches × 32² px / seconds, the patches overhanging the region included)."""
    import json
    import subprocess
    import sys

    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "region.png"
        cv2.imwrite(str(png), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out = subprocess.run([args.tiatoolbox, str(Path(__file__).with_name("tia_patch_grid.py")),
                              str(png), str(args.weights), "--threads", str(args.threads),
                              "--batch", str(args.batch)], check=True, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"TIAToolbox {r['tiatoolbox']} (torch {r['torch']}) PatchPredictor: {r['patches']} "
          f"patches (first {r['first']}, last {r['last']}) in {r['seconds']:.1f} s = "
          f"{r['patches'] / r['seconds']:.1f} patches/s", file=sys.stdout)
    return r["patches"] * STRIDE * STRIDE / 1e6 / r["seconds"]


if __name__ == "__main__":
    main()
