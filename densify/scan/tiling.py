"""Exact tiling: run a dense net on a large image in pieces of bounded memory, same output.

    tiles = plan_tiles(dense, 3000, 4000, parse_bytes("3GB"))     # list[Tile], pure
    logits = forward_tiled(dense, x, max_bytes=parse_bytes("3GB"))  # == dense(x)

Alignment: every tile starts at a multiple of ``U``, the least common multiple of the strides of
every layer of the net (``U = S``, the output stride, for every chain of layers whose strides
multiply up to ``S``; branches that meet at the same stride, as in ResNet and Inception, keep it
so). A layer of cumulative stride ``s`` samples the input at ``o + i·s``; cut the image at ``a``
and the tile's own grid samples ``a + o + i'·s``, which is the untiled grid shifted by ``a / s``
whole positions only if ``s`` divides ``a``. Cut anywhere else and every layer samples pixels the
untiled net never combines (pooling windows straddle other pixels): no overlap can repair that.
Nets whose intermediate strides do not divide ``S`` (a stride-3 branch in a stride-32 net) need
their lcm, which :func:`alignment` computes from the graph.

Overlap: cell ``j`` reads input pixels ``[rf_offset + j·S, rf_offset + j·S + rf_size)`` (zero
padding makes ``rf_offset`` negative). The tile for cells ``[j0, j1)`` spans
``[floor_U(j0·S + min(rf_offset, offset)), (j1 - 1)·S + max(offset + W, rf_offset + rf_size))``
clipped to the image: that is ``-rf_offset`` pixels of context before (rounded up so the origin
stays aligned) and ``rf_size + rf_offset - W`` after (no rounding needed: the end does not move
the grid). Where the tile reaches the image's border the tile edge *is* the image edge, so zero
padding happens exactly where it happens untiled; elsewhere every cell kept reads only real
pixels, because a position any layer computes from padding has a receptive field that crosses
the tile's edge. Tiles' cells partition the output, so stitching is a copy.

Memory model (:func:`estimate_bytes`): the graph runs on fake tensors (shapes only, no memory,
no arithmetic) and, node by node, in the order the ``torch.fx`` code runs and frees them, the
bytes of live tensors are summed (in-place ops and views share storage and count once; the input
counts throughout: the caller holds it), plus the work buffers oneDNN allocates inside each
convolution on CPU: a re-laid-out copy of its weight (cast to bf16 first under autocast: two
copies) and, unless net and input are ``channels_last``, a re-laid-out copy of its output. The
peak over the nodes is the estimate. Against the measured growth of peak RSS (``VmHWM``) of one
pass at 960×1280: VGG-19 within 4 % (fp32/bf16, either layout; its peak at small sizes is fc6's
411 MB weight copy, at large ones conv1's two 64-channel maps); ResNet-50 exact with
``channels_last`` and 8 % high without, once glibc returns freed blocks to the system
(``MALLOC_MMAP_THRESHOLD_=1048576``). With glibc's default dynamic threshold, blocks of a few MB
stay in the heap between layers and RSS runs up to 35 % over in repeated passes, up to twice the
estimate after other work in the same process. :func:`plan_tiles` keeps ``headroom`` (20 %) of
the budget for that slack; set the variable above where the budget is hard.

Plan: among the grids ``ny × nx`` of equal tiles whose largest tile fits, the one running the
net on the fewest pixels in total (overlap is work done twice); fewer tiles break ties.

Convention: inputs ``(N, C, H, W)``, sizes ``(H, W)``, boxes ``(x1, y1, x2, y2)`` with x2/y2
exclusive, cell ranges half-open ``[start, stop)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from .._parse import format_bytes, parse_bytes
from ..convert.dense import DenseNet
from ..convert.fields import walk_fields
from ..errors import DensifyError, ParameterError

__all__ = ["Tile", "TilingError", "parse_bytes", "format_bytes", "alignment", "tile_boxes",
           "estimate_bytes", "plan_tiles", "forward_tiled", "own_cells"]

log = logging.getLogger(__name__)

#: Fraction of ``max_bytes`` left for allocator slack the model does not see (module docstring).
HEADROOM = 0.2


class TilingError(DensifyError, ValueError):
    """The net cannot be tiled exactly, or the budget is too small (one-line message)."""


@dataclass(frozen=True)
class Tile:
    """One piece of a tiled forward pass.

    Attributes:
        rows, cols: output cells ``[start, stop)`` this tile produces, in the untiled map.
        box: ``(x1, y1, x2, y2)`` input pixels the net runs on (x2/y2 exclusive); ``x1``/``y1``
            are multiples of :func:`alignment`.
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the tile's input."""
        return self.box[3] - self.box[1], self.box[2] - self.box[0]


def _check_tileable(dense: DenseNet) -> None:
    g = dense.geometry
    if dense.global_context or g.rf_size is None:
        what = (f"layer(s) {', '.join(dense.global_context[:2])}" if dense.global_context
                else "a global pool")
        raise TilingError(f"cannot tile exactly: {what} pool the whole input (squeeze-and-"
                          "excitation), so every cell depends on every pixel; run untiled")


def alignment(dense: DenseNet) -> tuple[int, int]:
    """``(uy, ux)``: lcm of every layer's cumulative stride; tile origins are multiples of it."""
    fields = walk_fields(dense.net)
    uy = math.lcm(*(f.stride[0] for f in fields.values()), dense.geometry.stride[0])
    ux = math.lcm(*(f.stride[1] for f in fields.values()), dense.geometry.stride[1])
    return uy, ux


def _axis_spans(cells: int, size: int, per_tile: int, axis: int, dense: DenseNet,
                unit: int) -> list[tuple[int, int, int, int]]:
    """``(c0, c1, p0, p1)`` along one axis: cells ``[c0, c1)`` from pixels ``[p0, p1)``."""
    g = dense.geometry
    s = g.stride[axis]
    start = min(g.rf_offset[axis], g.offset[axis])
    end = max(g.offset[axis] + g.window[axis], g.rf_offset[axis] + g.rf_size[axis])
    spans = []
    for c0 in range(0, cells, per_tile):
        c1 = min(cells, c0 + per_tile)
        p0 = max(0, (c0 * s + start) // unit * unit)
        p1 = min(size, (c1 - 1) * s + end)
        spans.append((c0, c1, p0, p1))
    return spans


def tile_boxes(dense: DenseNet, height: int, width: int,
               tile_cells: int | tuple[int, int]) -> list[Tile]:
    """Tiles of at most ``tile_cells`` ``(rows, cols)`` output cells covering a ``height × width``
    input, row-major. The last row/column of tiles holds the remainder.
    """
    _check_tileable(dense)
    th, tw = (tile_cells, tile_cells) if isinstance(tile_cells, int) else tile_cells
    if th < 1 or tw < 1:
        raise TilingError(f"tile_cells must be at least 1 cell per side, got {(th, tw)}")
    h, w = dense.output_size(height, width)
    if h < 1 or w < 1:
        raise TilingError(f"a {height}x{width} input is smaller than the {dense.geometry.window} "
                          "window: nothing to tile")
    return _grid(dense, height, width, (h, w), (th, tw), alignment(dense))


def _grid(dense: DenseNet, height: int, width: int, cells: tuple[int, int],
          per_tile: tuple[int, int], unit: tuple[int, int]) -> list[Tile]:
    rows = _axis_spans(cells[0], height, per_tile[0], 0, dense, unit[0])
    cols = _axis_spans(cells[1], width, per_tile[1], 1, dense, unit[1])
    return [Tile((r0, r1), (c0, c1), (x0, y0, x1, y1))
            for r0, r1, y0, y1 in rows for c0, c1, x0, x1 in cols]


# ------------------------------------------------------------------------------ memory model


class _LiveBytes(fx.Interpreter):
    """Runs a graph on fake tensors, freeing values after their last use as the generated code
    does, and records per node ``(live bytes, convolution weight elements, output bytes)``."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.rows: list[tuple[int, int, int]] = []
        self.held: dict[int, int] = {}  # storages the caller holds throughout (the input)

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        live = dict(self.held)
        for value in [*self.env.values(), out]:
            for t in _fake_tensors(value):
                storage = t.untyped_storage()
                live[storage._cdata] = storage.nbytes()
        if n.op == "placeholder":
            self.held.update(live)
        m = self.module.get_submodule(n.target) if n.op == "call_module" else None
        weights = m.weight.numel() if isinstance(m, torch.nn.Conv2d) else 0
        size = sum(t.nbytes for t in _fake_tensors(out))
        pieces = getattr(m, "chunks", 1)
        if pieces > 1:  # ChunkedConv2d: a piece's weight, laid out twice, and its output
            weights = 2 * -(-weights // pieces)
            live[-1] = -(-size // pieces)
        self.rows.append((sum(live.values()), weights, size))
        return out


def _fake_tensors(value):
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(value, FakeTensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _fake_tensors(v)


def _node_bytes(dense: DenseNet, height: int, width: int, batch: int) -> list:
    """:class:`_LiveBytes` rows for one input size in the parameters' dtype, and the input's
    bytes (cached)."""
    cache = dense.__dict__.setdefault("_densify_live_bytes", {})
    param = next(dense.parameters())
    key = (int(height), int(width), int(batch), param.dtype)
    if key not in cache:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(batch, dense.input_size[0], height, width, dtype=param.dtype,
                            device=param.device)
            counter = _LiveBytes(dense.net)
            counter.run(x)
        cache[key] = (counter.rows, x.nbytes)
    return cache[key]


def _is_channels_last(dense: DenseNet) -> bool:
    w = next((m.weight for m in dense.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and (
        not w.is_contiguous())


def estimate_bytes(dense: DenseNet, height: int, width: int,
                   dtype: torch.dtype = torch.float32, batch: int = 1,
                   channels_last: bool | None = None) -> int:
    """Peak bytes a forward pass of ``dense`` allocates on a ``(batch, C, height, width)`` input
    whose activations are ``dtype`` (``torch.bfloat16`` under bf16 autocast; the input itself stays
    in the parameters' dtype), input included, weights excluded.

    ``max`` over the graph's nodes of: the bytes of live tensors (counted on fake tensors, see the
    module docstring) plus the node's work buffers as oneDNN allocates them on CPU: a re-laid-out
    copy of each convolution's weight (cast first under autocast: two copies) and, unless the
    net and input are ``channels_last`` (default: read from the net's weights), a re-laid-out
    copy of its output. Deterministic; the fake-tensor pass is cached per net and size.
    """
    param = next(dense.parameters())
    scale = dtype.itemsize / param.dtype.itemsize
    copies = 1 if dtype == param.dtype else 2
    if channels_last is None:
        channels_last = _is_channels_last(dense)
    rows, held = _node_bytes(dense, height, width, batch)
    peak = 0.0
    for live, weights, out in rows:
        work = weights * dtype.itemsize * copies
        if weights and not channels_last:
            work += out * scale
        # The caller's input keeps its dtype under autocast; activations take ``dtype``.
        peak = max(peak, held + (live - held) * scale + work)
    return int(peak)


# -------------------------------------------------------------------------------- planning


def plan_tiles(dense: DenseNet, height: int, width: int, max_bytes: int,
               dtype: torch.dtype = torch.float32, batch: int = 1,
               headroom: float = HEADROOM) -> list[Tile]:
    """Tiles whose largest :func:`estimate_bytes` fits in ``(1 - headroom) · max_bytes``, chosen
    to minimise the pixels the net runs on in total (overlap is recomputed work); fewer tiles
    break ties. One tile (the whole image) when it fits.

    Searches the grids ``ny × nx`` along the fitting frontier: for each ``ny`` the least ``nx``
    that fits, which never grows as ``ny`` grows. Raises :class:`TilingError` when a single-cell
    tile does not fit.

    Examples:
        LeNet-5 (28 px window, stride 4) on a 400 × 400 input within 2 MB:

        >>> from densify.convert.dense import convolutionize
        >>> from densify.models.archs import lenet5
        >>> tiles = plan_tiles(convolutionize(lenet5(), (1, 28, 28)), 400, 400, 2_000_000)
        >>> len(tiles), tiles[0]
        (8, Tile(rows=(0, 47), cols=(0, 24), box=(0, 0, 120, 212)))
    """
    _check_tileable(dense)
    budget = int(max_bytes * (1.0 - headroom))
    h, w = dense.output_size(height, width)
    if h < 1 or w < 1:
        raise TilingError(f"a {height}x{width} input is smaller than the {dense.geometry.window} "
                          "window: nothing to tile")
    rows, cols, unit = _counts(h), _counts(w), alignment(dense)

    def fits(ny: int, nx: int) -> tuple[bool, list[Tile], int]:
        tiles = _grid(dense, height, width, (h, w), (-(-h // ny), -(-w // nx)), unit)
        th, tw = max(t.size[0] for t in tiles), max(t.size[1] for t in tiles)
        need = estimate_bytes(dense, th, tw, dtype, batch)
        return need <= budget, tiles, need

    lo, k = 0, len(cols) - 1  # binary search: the least nx that fits with one row of tiles
    while lo < k:
        mid = (lo + k) // 2
        lo, k = (lo, mid) if fits(rows[0], cols[mid])[0] else (mid + 1, k)
    best = None
    for ny in rows:
        while k > 0 and fits(ny, cols[k - 1])[0]:
            k -= 1
        ok, tiles, _ = fits(ny, cols[k])
        if ok:
            cost = (sum(t.size[0] * t.size[1] for t in tiles), len(tiles))
            best = min(best, (cost, tiles), key=lambda b: b[0]) if best else (cost, tiles)
            if k == 0:
                break
    if best is None:
        need = fits(rows[-1], cols[-1])[2]
        raise TilingError(
            f"max memory {format_bytes(max_bytes)} is too small: a one-cell tile needs "
            f"{format_bytes(need / (1 - headroom))}; raise --max-memory")
    tiles = best[1]
    log.info("%d tile(s), %d pixels in all for %d in the image", len(tiles), best[0][0],
             height * width)
    return tiles


def _counts(cells: int) -> list[int]:
    """Tile counts ``n`` (ascending) giving distinct tile sizes ``ceil(cells / n)``."""
    counts, last = [], None
    for n in range(1, cells + 1):
        per = -(-cells // n)
        if per != last:
            counts.append(n)
            last = per
    return counts


# -------------------------------------------------------------------------------- forward


def forward_tiled(dense: DenseNet, x: torch.Tensor, max_bytes: int | str | None = None,
                  tile_cells: int | tuple[int, int] | None = None) -> torch.Tensor:
    """``dense(x)`` computed tile by tile: ``(N, C, H, W) -> (N, K, h, w)``.

    Give ``max_bytes`` (int or a string for :func:`parse_bytes`; the tiles come from
    :func:`plan_tiles`) or ``tile_cells`` (output cells per tile side). Equal to ``dense(x)`` up
    to floating-point summation order; ``x``'s memory format (``channels_last``) is kept per tile.
    """
    if (max_bytes is None) == (tile_cells is None):
        raise ParameterError("pass exactly one of max_bytes (e.g. '3GB') or tile_cells")
    if x.ndim != 4:
        raise ParameterError(f"expected an (N, C, H, W) input, got shape {tuple(x.shape)}")
    n, _, height, width = x.shape
    if tile_cells is None:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(
            x.device.type) else x.dtype
        tiles = plan_tiles(dense, height, width, parse_bytes(max_bytes), dtype, n)
    else:
        tiles = tile_boxes(dense, height, width, tile_cells)
    if len(tiles) == 1:
        return dense(x)
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    out = None
    for t in tiles:
        x1, y1, x2, y2 = t.box
        piece = x[:, :, y1:y2, x1:x2]
        if channels_last:
            piece = piece.contiguous(memory_format=torch.channels_last)
        y = own_cells(dense(piece), t, dense.geometry.stride)
        if out is None:
            h, w = tiles[-1].rows[1], tiles[-1].cols[1]
            out = y.new_empty(n, y.shape[1], h, w)
        out[:, :, t.rows[0]:t.rows[1], t.cols[0]:t.cols[1]] = y
    return out


def own_cells(y: torch.Tensor, t: Tile, stride: tuple[int, int]) -> torch.Tensor:
    """The cells ``t`` is responsible for, ``(N, K, rows, cols)``, out of the tile's own output
    ``y`` ``(N, K, h, w)`` (the net run on ``t.box``)."""
    i0, j0 = t.rows[0] - t.box[1] // stride[0], t.cols[0] - t.box[0] // stride[1]
    i1, j1 = i0 + t.rows[1] - t.rows[0], j0 + t.cols[1] - t.cols[0]
    if i0 < 0 or j0 < 0 or y.shape[-2] < i1 or y.shape[-1] < j1:
        raise RuntimeError(f"tile {t} gave {tuple(y.shape[-2:])} cells, needs rows {i0}:{i1}, "
                           f"cols {j0}:{j1}: the net's geometry is inconsistent")
    return y[:, :, i0:i1, j0:j1]
