"""How a group of same-size images goes through a dense net, level by level.

The pieces :class:`densify.scan.scanner.Scanner` runs for every level: the level's input for the
whole group (:class:`LevelSource`: built on the device from one upload of the ``uint8`` images,
or on the host with OpenCV), the class probabilities from the net's output
(:func:`to_probabilities`, :func:`softmax_rows`), and, once the last level is launched, one
asynchronous copy of every map back to the host (:class:`HostCopy`); images are grouped by size
(:func:`same_size_groups`) and cuDNN autotunes the repeating shapes for the scan only
(:func:`autotune`). A launched scan whose results are not built yet is a :class:`PendingScan`.

Shape:
    a group's maps are ``(N, K, h, w)`` float32 per level (``N`` images, ``K`` classes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .memory import MemoryBudget, level_input
from .preprocess import level_batch, upload
from .pyramid import Level

__all__ = ["to_probabilities", "softmax_rows", "LevelSource", "HostCopy", "PendingScan",
           "same_size_groups", "autotune", "check_budget"]


def to_probabilities(scores: torch.Tensor, activation: str | None, dim: int = 0) -> torch.Tensor:
    """Class probabilities from an output ending in ``activation`` (classes along ``dim``: 0
    for one ``(K, h, w)`` map): raw scores are softmaxed over classes, log-probabilities
    exponentiated, probabilities kept (never a second softmax)."""
    if activation is None:
        return scores.softmax(dim=dim)
    if activation == "log_softmax":
        return scores.exp()
    return scores


def softmax_rows(logits: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """``logits.softmax(dim=1)`` of ``(N, K, h, w)`` maps: on the CPU in place, a band of rows
    at a time (a 1000-class map of a large scale is hundreds of MB: no second copy); elsewhere
    in one kernel."""
    if logits.device.type != "cpu":
        return logits.softmax(dim=1)
    for r in range(0, logits.shape[2], rows):
        logits[:, :, r:r + rows] = logits[:, :, r:r + rows].softmax(dim=1)
    return logits if logits.is_contiguous() else logits.contiguous()


class LevelSource:
    """Each level's input for a group of same-size images: on ``device`` from one upload of the
    ``uint8`` images (:func:`densify.scan.preprocess.level_batch`), or with ``device=None`` on
    the host with OpenCV (:func:`densify.scan.memory.level_input`)."""

    def __init__(self, rgbs: Sequence[np.ndarray], device: torch.device | None, flip: bool):
        self.rgbs, self.device = rgbs, device
        if device is not None:
            self.images = upload(rgbs, device)
            self.mirror = self.images.flip(2) if flip else None
        else:
            self.mirror = [np.ascontiguousarray(rgb[:, ::-1]) for rgb in rgbs] if flip else None

    def level(self, level: Level, flipped: bool, mean, std, in_chans: int) -> torch.Tensor:
        """``(N, C, H', W')`` float32, ``channels_last``."""
        if self.device is not None:
            return level_batch(self.mirror if flipped else self.images, level, mean, std, in_chans)
        xs = [level_input(rgb, level, mean, std, in_chans)
              for rgb in (self.mirror if flipped else self.rgbs)]
        return xs[0] if len(xs) == 1 else torch.cat(xs).contiguous(
            memory_format=torch.channels_last)


class HostCopy:
    """A group's ``(probs, regression)`` per level on their way to the host.

    On CUDA every map of every level and image is concatenated on the device and copied, in one
    asynchronous transfer started here, into a pinned staging buffer; the device goes on with
    whatever is queued next (the next group's levels) and :meth:`wait` blocks (without spinning
    a CPU core) only until this copy is done, then copies the maps out into ordinary memory, so
    that results never hold page-locked memory and the buffer goes back to torch's pinned cache
    for the next group; with ``pinned`` the maps stay in the pinned buffer (no copy out: for a
    caller that drops its results soon). On another device the copy is synchronous; CPU maps
    are already on the host.
    """

    def __init__(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                 pinned: bool = False):
        self.pinned = pinned
        self.pairs = list(pairs)  # kept only while the maps are host-side already
        self.regressed = [r is not None for _, r in self.pairs]
        tensors = [t for pair in self.pairs for t in pair if t is not None]
        self.shapes = [t.shape for t in tensors]
        self.flat, self.event = None, None
        if not tensors or tensors[0].device.type == "cpu":
            return
        # the device maps may go now: the copy is queued (the allocator reuses their memory
        # only for work queued after it on the same stream)
        self.pairs = None
        flat = torch.cat([t.reshape(-1) for t in tensors])
        if flat.is_cuda:
            self.flat = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self.flat.copy_(flat, non_blocking=True)
            self.event = torch.cuda.Event(blocking=True)
            self.event.record(torch.cuda.current_stream(flat.device))
        else:
            self.flat = flat.cpu()

    def wait(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The pairs on the CPU (views of the one host copy), in the order given."""
        if self.flat is None:
            return self.pairs
        if self.event is not None:
            self.event.synchronize()
            if not self.pinned:
                host = torch.empty(self.flat.shape, dtype=self.flat.dtype)  # pageable
                host.copy_(self.flat)
                self.flat = host
            self.event = None
        parts = iter(p.view(shape) for p, shape in zip(
            self.flat.split([shape.numel() for shape in self.shapes]), self.shapes, strict=True))
        return [(next(parts), next(parts) if r else None) for r in self.regressed]


class PendingScan:
    """Images whose scan is launched and whose results are not built yet
    (:meth:`densify.scan.scanner.Scanner.launch_batch`,
    :meth:`densify.scan.ensemble.Ensemble.launch_batch`).

    On a GPU the levels and the copy of the maps to the host are queued when this is made, and
    the caller may queue more work before :meth:`results` waits for the copy; on the CPU the maps
    are computed by then and :meth:`results` only builds the result objects.

    Args:
        parts: ``(indices, finish)`` pairs: ``finish()`` gives the results of the launched images
            at ``indices`` (positions in the launch, every one of ``0 .. count - 1`` in exactly
            one part), in that order.
        count: how many images were launched.

    Examples:
        >>> pending = PendingScan([([1], lambda: ["b"]), ([2, 0], lambda: ["c", "a"])], 3)
        >>> len(pending), pending.results()
        (3, ['a', 'b', 'c'])
    """

    def __init__(self, parts: Sequence[tuple[Sequence[int], Callable[[], Sequence]]], count: int):
        self.parts, self.count = list(parts), count
        self.built: list | None = None

    def __len__(self) -> int:
        return self.count

    def results(self) -> list:
        """One result per launched image, in launch order (built once; later calls return the
        same list)."""
        if self.built is None:
            built: list = [None] * self.count
            for indices, finish in self.parts:
                for i, result in zip(indices, finish(), strict=True):
                    built[i] = result
            if any(result is None for result in built):
                raise RuntimeError(f"a launch of {self.count} images gave no result for image(s) "
                                   f"{[i for i, r in enumerate(built) if r is None]}")
            self.built, self.parts = built, []
        return self.built


def same_size_groups(shapes: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Indices of images grouped by shape (groups in first-seen order), each group cut into
    chunks of at most ``size``.

    Examples:
        >>> same_size_groups([(2, 3), (4, 5), (2, 3), (2, 3)], 2)
        [[0, 2], [3], [1]]
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return [idx[k:k + size] for idx in groups.values() for k in range(0, len(idx), size)]


@contextlib.contextmanager
def autotune(device: torch.device, enabled: bool = True):
    """cuDNN autotuning (``benchmark``) for this scan on CUDA: the pyramid's shapes repeat from
    image to image, so the fastest kernel for each is found once; the caller's value is
    restored afterwards. Only that flag is touched: the caller's other cuDNN settings (TF32,
    set through the legacy or the new ``fp32_precision`` API, determinism) stay as they are."""
    if device.type != "cuda" or not enabled:
        yield
        return
    backend = torch.backends.cudnn
    caller = backend.benchmark
    backend.benchmark = True
    try:
        yield
    finally:
        backend.benchmark = caller


def check_budget(budget: MemoryBudget, geometry, pyramid: Sequence[Level], held: int,
                 pixel_bytes: int, channels: int) -> None:
    """Refuse an image that some level of ``pyramid`` cannot fit in ``budget``, before scanning
    any (:meth:`densify.scan.memory.MemoryBudget.room` raises); ``held``: the bytes of the images,
    ``pixel_bytes``: an input pixel's (channels x dtype size); each level's maps (``channels``
    float32 per cell of its ``geometry.output_size``) are held from that level on."""
    for level in pyramid:
        h, w = geometry.output_size(*level.input_size)
        maps = 4 * channels * h * w
        budget.room(held + maps, pixel_bytes * level.input_size[0] * level.input_size[1],
                    f"scale {level.factor:.3g} ({level.input_size[0]}x{level.input_size[1]})")
        held += maps
