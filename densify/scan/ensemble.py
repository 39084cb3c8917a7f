"""Ensembles: several classifiers with the same classes scanned as one (OverFeat's 7 models).

    ensemble = Ensemble(["lenet5-digits", Scanner(my_net, input_size=(1, 32, 32), ...)])
    result = ensemble("scene.png")       # a ScanResult: heat maps, top classes, detections, files

Each member is a :class:`densify.scan.scanner.Scanner` with its own window, stride,
normalization and pyramid: the image is decoded once and every member scans it. The result holds
every member's maps, each registered to the image by its own geometry, and each map's share of
the average (:attr:`densify.scan.result.ScanResult.weights`: a model's weight divided by its
number of maps). So:

- heat maps are the weighted mean of the members' heat maps, each painted at image resolution
  by its own geometry first (:mod:`densify.scan.heatmap`): maps of different windows or strides
  are averaged only once registered to the image;
- image-level scores (and so :meth:`ScanResult.top_classes`) are the weighted mean of the
  members' scores (OverFeat averages the models' class vectors);
- detections: members whose cells see the same windows (same window, stride and pyramid, e.g.
  one architecture with other weights) have their maps averaged cell by cell first
  (:mod:`densify.scan.cellmean`), and the averaged cells propose boxes; the cells of members of
  other geometries, which share no grid with them, propose their own boxes, and all proposals are
  merged by NMS or OverFeat's greedy merge.

Why a class of its own rather than a :class:`Scanner` taking a list: a scanner is one dense net
with one geometry, preprocessing, memory budget and CUDA-graph cache; an ensemble composes
scanners and changes none of that. Equal weights by default; ``weights`` sets them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ParameterError
from .engine import PendingScan
from .prepare import as_rgb
from .result import ScanResult
from .scanner import Scanner
from .settings import ScanSettings

__all__ = ["Ensemble", "ensemble_result", "check_same_classes"]

log = logging.getLogger(__name__)


class Ensemble:
    """Scanners with the same classes whose results are averaged (module docstring).

    Args:
        models: two or more (one is allowed: its result is the scanner's own) of what
            :class:`Scanner` accepts (names, ``nn.Module``, DenseNets, ...), each built with
            ``settings`` and ``overrides``, or ready :class:`Scanner` objects (a plain module
            needing ``input_size``/``mean``/``std`` is passed as its own Scanner).
        settings, **overrides: as for :class:`Scanner`, for the members built here.
        weights: one non-negative weight per model (normalized to sum 1); None: equal.

    Raises :class:`densify.errors.ParameterError` when the members' classes differ.

    Examples:
        >>> import torch, densify
        >>> def net():
        ...     return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 4), torch.nn.Flatten())
        >>> scanners = [densify.Scanner(net(), input_size=(1, 4, 4), mean=(0.5,), std=(0.5,),
        ...                             scales=[1.0], output_stride=None, device="cpu")
        ...             for _ in range(2)]
        >>> ensemble = densify.Ensemble(scanners, weights=[3, 1])
        >>> image = torch.rand(1, 8, 8)
        >>> result = ensemble(image)
        >>> len(result.maps), result.weights
        (2, (0.75, 0.25))
        >>> a, b = (s(image).scores() for s in scanners)
        >>> torch.allclose(result.scores(), 0.75 * a + 0.25 * b)
        True
    """

    def __init__(self, models: Sequence, settings: ScanSettings | None = None, *,
                 weights: Sequence[float] | None = None, **overrides):
        if isinstance(models, (str, Path, torch.nn.Module)) or not len(models):
            raise ParameterError("an ensemble takes a list of one or more models")
        self.members = tuple(m if isinstance(m, Scanner) else Scanner(m, settings, **overrides)
                             for m in models)
        self.weights = _normalized(weights, len(self.members))
        first = self.members[0]
        check_same_classes([m.categories for m in self.members],
                           [m.background_class for m in self.members])
        self.categories, self.background_class = first.categories, first.background_class

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.dense.geometry.window[0]}x{m.dense.geometry.window[1]} window "
                          f"stride {m.output_stride} (weight {w:.3g})"
                          for m, w in zip(self.members, self.weights, strict=True))
        return f"Ensemble({len(self)} models, {len(self.categories)} classes: {parts})"

    @property
    def default_threshold(self) -> float:
        """The first member's recommended detection threshold (:attr:`Scanner.default_threshold`)."""
        return self.members[0].default_threshold

    @property
    def batch_size(self) -> int:
        """Images per forward pass: the smallest of the members'."""
        return min(m.batch_size for m in self.members)

    @property
    def device(self) -> torch.device:
        """The first member's device (members are made with the same settings)."""
        return self.members[0].device

    @property
    def flip(self) -> bool:
        return any(m.flip for m in self.members)

    @property
    def output_stride(self) -> tuple[int, ...]:
        """Each member's output stride, in order."""
        return tuple(m.output_stride for m in self.members)

    @property
    def budget(self):
        """A member's memory budget, or None when no member has one."""
        return next((m.budget for m in self.members if m.budget is not None), None)

    def __call__(self, image: str | Path | np.ndarray | torch.Tensor,
                 scales: int | str | Sequence[float] | None = None,
                 progress: bool | None = None) -> ScanResult:
        """Scan one image with every member (decoded once) and average (module docstring)."""
        rgb, source = as_rgb(image)
        results = [m(rgb, scales, progress) for m in self.members]
        return dataclasses.replace(ensemble_result(results, self.weights), source=source)

    def scan_batch(self, images: Sequence[str | Path | np.ndarray | torch.Tensor],
                   batch_size: int | None = None,
                   scales: int | str | Sequence[float] | None = None,
                   progress: bool | None = None) -> list[ScanResult]:
        """Several images, each member scanning them in batches (:meth:`Scanner.scan_batch`);
        equals calling the ensemble on each, in input order."""
        decoded = [as_rgb(image) for image in images]
        rgbs = [rgb for rgb, _ in decoded]
        return self._combined([m.scan_batch(rgbs, batch_size, scales, progress)
                               for m in self.members], [source for _, source in decoded])

    def launch_batch(self, images: Sequence[str | Path | np.ndarray | torch.Tensor],
                     scales: int | str | Sequence[float] | None = None,
                     progress: bool | None = None, batch_size: int | None = None,
                     pinned_results: bool = False) -> PendingScan:
        """:meth:`scan_batch` in two halves (:meth:`Scanner.launch_batch`, whose
        ``pinned_results`` goes to every member): every member launches the images now;
        ``.results()`` takes the members' results and averages them, one :class:`ScanResult`
        per image in input order.

        Examples:
            >>> import torch, densify
            >>> scanners = [densify.Scanner(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 4),
            ...     torch.nn.Flatten()), input_size=(1, 4, 4), mean=(0.5,), std=(0.5,),
            ...     scales=[1.0], output_stride=None, device="cpu") for _ in range(2)]
            >>> ensemble = densify.Ensemble(scanners)
            >>> images = [torch.rand(1, 8, 8), torch.rand(1, 6, 9)]
            >>> results = ensemble.launch_batch(images).results()
            >>> [len(r.maps) for r in results], [r.image_size for r in results]
            ([2, 2], [(8, 8), (6, 9)])
            >>> torch.allclose(results[1].scores(), ensemble(images[1]).scores())
            True
        """
        decoded = [as_rgb(image) for image in images]
        rgbs = [rgb for rgb, _ in decoded]
        launched = [m.launch_batch(rgbs, scales, progress, batch_size, pinned_results)
                    for m in self.members]
        sources = [source for _, source in decoded]
        return PendingScan([(range(len(decoded)), lambda: self._combined(
            [pending.results() for pending in launched], sources))], len(decoded))

    def _combined(self, per_member: Sequence[Sequence[ScanResult]],
                  sources: Sequence[str | None]) -> list[ScanResult]:
        """Each image's members' results averaged (:func:`ensemble_result`), with its source;
        ``per_member``: one list of results per member, in image order."""
        return [dataclasses.replace(ensemble_result(list(results), self.weights), source=source)
                for results, source in zip(zip(*per_member, strict=True), sources, strict=True)]


def ensemble_result(results: Sequence[ScanResult], weights: Sequence[float] | None = None
                    ) -> ScanResult:
    """One result from the results of several models on the same image (module docstring).

    ``weights``: one per result (normalized to sum 1), None: equal. The maps of all results are
    kept, in order, each with the share ``weight / maps of its result``
    (:attr:`ScanResult.weights`; None when all shares are equal, the plain mean). One result
    comes back as it is. Source and thumbnail are the first result's; the object box is kept when
    all results agree on it, else dropped (detections then use windows or regressed boxes).
    """
    if not results:
        raise ParameterError("no results to combine; give at least one")
    first = results[0]
    if len(results) == 1:
        return first
    weights = _normalized(weights, len(results))
    check_same_classes([r.categories for r in results], [r.background_class for r in results])
    sizes = {tuple(r.image_size) for r in results}
    if len(sizes) != 1:
        raise ParameterError(f"the results are of different images ({' vs '.join(map(str, sizes))}"
                             "); combine results of one image")
    shares = tuple(w / len(r.maps) for r, w in zip(results, weights, strict=True)
                   for _ in r.maps)
    boxes = {r.object_box for r in results}
    if len(boxes) != 1:
        log.info("the models' object boxes differ (%s): the ensemble's detections use windows "
                 "or regressed boxes", boxes)
    return dataclasses.replace(
        first, maps=tuple(m for r in results for m in r.maps),
        object_box=first.object_box if len(boxes) == 1 else None,
        weights=None if len(set(shares)) == 1 else shares)


def check_same_classes(categories: Sequence[Sequence[str]],
                       backgrounds: Sequence[int | None] = ()) -> None:
    """Raise a one-line :class:`ParameterError` unless every model has the same class names in
    the same order (and the same background class): an ensemble averages class by class."""
    first = tuple(categories[0])
    for i, names in enumerate(categories[1:], 2):
        if tuple(names) != first:
            raise ParameterError(
                f"models 1 and {i} have different classes: {len(first)} ({_names(first)}) vs "
                f"{len(names)} ({_names(names)}); an ensemble averages models of the same classes")
    if len(set(backgrounds)) > 1:
        raise ParameterError(f"the models' background classes differ ({list(backgrounds)}); an "
                             "ensemble needs one background class")


def _names(names: Sequence[str], shown: int = 4) -> str:
    head = ", ".join(names[:shown])
    return head + (f", ... {names[-1]}" if len(names) > shown else "")


def _normalized(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    """``weights`` checked and scaled to sum 1; None: ``1 / count`` each."""
    if weights is None:
        return (1.0 / count,) * count
    values = [float(w) for w in weights]
    if len(values) != count or any(not w >= 0 for w in values) or sum(values) <= 0:
        raise ParameterError(f"ensemble weights must be {count} non-negative numbers, not all 0 "
                             f"(one per model), got {list(weights)}")
    total = sum(values)
    return tuple(w / total for w in values)
