"""Equivalence checks: proof that a dense net computes what the classifier computes.

Each check returns a :class:`Check` with the worst absolute error, the worst error relative to the
largest logit, the tolerance for the dtype, and how many values/cells were compared.

1. :func:`check_canonical`: at the canonical input the dense output equals the classifier's logits.
2. :func:`check_head`: on a larger input, at every cell the converted head equals the classifier's
   own head applied to that cell's ``k × k`` window of the trunk's feature map (exact for every
   model, global-context ones included, since both read the same features).
3. :func:`check_output_stride`: the net with stride-1 final pooling (stride ``S/2``) equals the
   stride-``S`` net on the image shifted by ``S/2`` (all four phases), on every cell whose receptive
   field stays inside the image (zero padding at a moved border changes the others).
4. :func:`check_crops`: every cell equals the classifier on the crop at ``(i·S, j·S)``. Exact for
   unpadded networks; for padded ones this *measures* the gap (the manual: Conversion and exactness).
5. :func:`probe_geometry`: perturb single pixels and compare the cells that change with the
   windows and receptive fields reported by :class:`densify.convert.geometry.Geometry`.
"""

from __future__ import annotations

import itertools

import torch
import torch.fx as fx
from torch import nn

from .dense import DenseNet, available_strides, convolutionize
from .graph import prepare, subgraph
from .selfcheck import (
    TOLERANCE,
    Check,
    batched,
    cells,
    compare,
    feature_windows,
    random_input,
    vectors,
)

__all__ = ["Check", "TOLERANCE", "check_canonical", "check_head", "check_output_stride",
           "check_crops", "probe_geometry", "geometry_holds", "original_head", "dense_trunk"]



@torch.no_grad()
def check_canonical(model: nn.Module, dense: DenseNet, seed: int = 0) -> Check:
    """Check 1: dense output at the canonical input vs the classifier's logits."""
    x = random_input(model, *dense.input_size, seed=seed)
    return compare("canonical", model.eval()(x), cells(dense(x)))


# ----------------------------------------------------------------------- trunk and head as graphs


def original_head(model: nn.Module, dense: DenseNet) -> fx.GraphModule:
    """The classifier's own head: ``(N, C, k, k)`` feature windows → ``(N, K)`` logits."""
    return subgraph(prepare(model, dense.input_size)[0], dense.feature_node, None)


def dense_trunk(dense: DenseNet) -> fx.GraphModule:
    """The dense net up to its trunk's last feature map: ``(N, C_in, H, W) → (N, C, Hf, Wf)``."""
    return subgraph(dense.net, None, dense.feature_node)


@torch.no_grad()
def check_head(model: nn.Module, dense: DenseNet, extra_cells: int = 3, seed: int = 1) -> Check:
    """Check 2: converted head vs the original head on every ``k × k`` feature window."""
    if dense.feature_node is None:
        return Check("head", float("nan"), float("nan"), 0.0, 0, "already convolutional")
    chans, wh, ww = dense.input_size
    s = dense.geometry.stride
    x = random_input(model, chans, wh + extra_cells * s[0], ww + extra_cells * s[1], seed)
    feats = dense_trunk(dense)(x)
    out = dense(x)
    h, w = vectors(out)[0].shape[-2:]
    windows = feature_windows(dense, feats, h, w)
    expected = batched(original_head(model, dense), windows)
    kh, kw = windows.shape[-2:]
    return compare("head", expected, cells(out), f"{h}x{w} cells, {kh}x{kw} feature windows")


# --------------------------------------------------------------------------- output stride


def _interior(dense: DenseNet, height: int, width: int, h: int, w: int) -> torch.Tensor:
    return dense.geometry.interior_cells(height, width, h, w)


@torch.no_grad()
def check_output_stride(model: nn.Module, input_size=None, output_stride: int | None = None,
                        extra_cells: int = 2, seed: int = 2) -> Check:
    """Check 3: stride-``S/2`` net vs the stride-``S`` net on the input shifted by ``S/2``.

    Default ``output_stride``: the largest reachable stride below the native one (``S/2``, or
    ``S/3`` where the last strided layer has stride 3, as OverFeat-accurate's 3×3 pool); all
    ``(S / output_stride)²`` offsets are compared.

    The input is made large enough that cells exist whose receptive field avoids the border.
    """
    full = convolutionize(model, input_size)
    stride = full.output_stride
    finer = [s for s in available_strides(full) if s < stride]
    half = output_stride or (finer[0] if finer else stride // 2)  # 36 -> 12 for OverFeat-accurate
    if full.geometry.rf_size is None:
        return Check("output_stride", float("nan"), float("nan"), 0.0, 0,
                     "global-context layers: cells depend on the whole image")
    fine = convolutionize(model, input_size, output_stride=half)
    chans = full.input_size[0]
    rf, off = full.geometry.rf_size, full.geometry.rf_offset
    # The first cell whose field starts inside the (shifted) image, then ``extra_cells`` more.
    first = [-(-max(0, -off[a]) // stride) for a in (0, 1)]
    size = [max(full.geometry.window[a], off[a] + first[a] * stride + rf[a]) + half
            + (extra_cells - 1) * stride for a in (0, 1)]
    x = random_input(model, chans, size[0], size[1], seed)
    out = vectors(fine(x))
    factor = stride // half
    exp, act = [[] for _ in out], [[] for _ in out]
    for a, b in itertools.product(range(factor), repeat=2):
        shifted = x[:, :, a * half:, b * half:]
        for i, (ref, fin) in enumerate(zip(vectors(full(shifted)), out, strict=True)):
            h = min(ref.shape[2], (fin.shape[2] - a + factor - 1) // factor)
            w = min(ref.shape[3], (fin.shape[3] - b + factor - 1) // factor)
            keep = _interior(full, shifted.shape[2], shifted.shape[3], h, w)
            exp[i].append(ref[:, :, :h, :w].permute(0, 2, 3, 1)[0][keep])
            act[i].append(fin[:, :, a::factor, b::factor][:, :, :h, :w].permute(0, 2, 3, 1)[0][keep])
    return compare("output_stride", [torch.cat(e) for e in exp], [torch.cat(a) for a in act],
                    f"stride {stride}->{half} on {size[0]}x{size[1]}, interior cells")


# ------------------------------------------------------------------------------- crops, probe


@torch.no_grad()
def check_crops(model: nn.Module, dense: DenseNet, extra_cells: int = 2, seed: int = 3,
                x: torch.Tensor | None = None) -> Check:
    """Check 4: every cell vs the classifier on the crop at ``(i·S, j·S)`` (window-sized)."""
    chans, wh, ww = dense.input_size
    s = dense.geometry.stride
    if x is None:
        x = random_input(model, chans, wh + extra_cells * s[0], ww + extra_cells * s[1], seed)
    out = dense(x)
    h, w = vectors(out)[0].shape[-2:]
    crops = torch.cat([x[:, :, i * s[0]:i * s[0] + wh, j * s[1]:j * s[1] + ww]
                       for i in range(h) for j in range(w)])
    expected = batched(model.eval(), crops)
    return compare("crops", expected, cells(out), f"{h}x{w} cells")


@torch.no_grad()
def probe_geometry(dense: DenseNet, pixels: list[tuple[int, int]] | None = None,
                   extra_cells: int = 3, seed: int = 4) -> list[dict]:
    """Check 5: which cells change when one input pixel changes.

    For each probed pixel returns ``changed``, ``in_window`` (cells whose window holds the pixel)
    and ``in_field`` (cells whose receptive field holds it), as bool masks ``(h, w)``, and
    ``finite`` (every output of the unbumped and bumped inputs is finite). The geometry is right
    when ``in_window ⊆ changed ⊆ in_field`` and every output is finite: :func:`geometry_holds`.

    The default pixels stay ``S`` pixels off the bottom edge: floor arithmetic can leave up to
    ``S - 1`` trailing input rows unread by any layer when the canonical size has slack (NiN's
    11×11/4 conv1 never reads the last row of a 224 window).
    """
    chans, wh, ww = dense.input_size
    g = dense.geometry
    height, width = wh + extra_cells * g.stride[0], ww + extra_cells * g.stride[1]
    x = random_input(dense, chans, height, width, seed)
    base = torch.cat(vectors(dense(x)), 1)
    h, w = base.shape[-2:]
    finite = bool(torch.isfinite(base).all())
    if pixels is None:
        pixels = [(height // 2, width // 2), (g.stride[0] + 1, width - g.stride[1] - 2),
                  (height - g.stride[0], 0), (wh - 2, ww // 3)]
    results = []
    for y, xx in pixels:
        # Rectifiers and max pools can hide one bump; bumps of both signs and sizes rarely all hide.
        changed = torch.zeros(h, w, dtype=torch.bool, device=base.device)
        seen_finite = finite
        for bump in (10.0, -10.0, 100.0, -100.0):
            bumped = x.clone()
            bumped[:, :, y, xx] += bump
            out = torch.cat(vectors(dense(bumped)), 1)
            seen_finite &= bool(torch.isfinite(out).all())
            changed |= (out - base).abs().amax(dim=1)[0] > 0
        field = (g.cells_containing(y, xx, h, w, receptive_field=True) if g.rf_size is not None
                 else torch.ones(h, w, dtype=torch.bool))
        results.append({"pixel": (y, xx), "changed": changed, "in_field": field,
                        "in_window": g.cells_containing(y, xx, h, w), "finite": seen_finite})
    return results


def geometry_holds(probes: list[dict]) -> bool:
    """Check 5's verdict on :func:`probe_geometry`'s results: every output finite, at least one
    probed pixel inside some window, and ``in_window ⊆ changed ⊆ in_field`` for every pixel."""
    return bool(probes) and any(bool(p["in_window"].any()) for p in probes) and all(
        p["finite"] and not (p["in_window"] & ~p["changed"]).any()
        and not (p["changed"] & ~p["in_field"].to(p["changed"].device)).any() for p in probes)
