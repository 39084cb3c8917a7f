"""Run a dense net over an image pyramid: one conversion, every scale, probabilities per cell.

    scanner = Scanner("resnet50", scales=6)    # converts once, with the trained weights
    result = scanner("photo.jpg")                                 # ScanResult
    result.top_classes(5); result.heatmap("tabby"); result.detections(threshold=0.6)

What happens per image (:mod:`densify.scan.pyramid` for the scales, rounding and padding,
:mod:`densify.scan.engine` for the pieces): on a GPU the ``uint8`` image is uploaded once and
every level is built there (:mod:`densify.scan.preprocess`); on the CPU OpenCV builds them. Each
level runs in ``channels_last`` layout under ``torch.inference_mode`` (and autocast for
``bf16``/``fp16``), on CUDA with cuDNN autotuning and, for shapes seen before, as a CUDA graph
(:mod:`densify.scan.graphs`); maps stay on the device until the last level, then come back in
one copy. :meth:`Scanner.scan_batch` runs images of one size together;
:meth:`Scanner.launch_batch` returns once they are launched (a :class:`PendingScan`).

Convention:
    Images are RGB ``uint8`` ``(H, W, 3)`` (paths and tensors are converted by :func:`as_rgb`);
    sizes are ``(H, W)``; every map is ``(K, h, w)`` float32 probabilities, K = classes.

Output stride: ``output_stride=16`` applies OverFeat's stride-1 final pooling
(:func:`densify.convert.convolutionize`); a net that cannot reach it (LeNet-5's native stride is
4) keeps its native stride, and the fallback is logged at INFO level
(:attr:`Scanner.output_stride` tells the stride used).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..convert.storage import to_channels_last
from ..errors import ParameterError
from ..io.image import thumbnail
from ..models.weights import Classifier
from .engine import (
    HostCopy,
    LevelSource,
    PendingScan,
    autotune,
    check_budget,
    same_size_groups,
    softmax_rows,
    to_probabilities,
)
from .graphs import GraphCache
from .maps import ScaleMap
from .memory import MemoryBudget, chunk_large_convs
from .prepare import (
    as_rgb,
    batch_size_for,
    card_classes,
    card_normalization,
    card_outputs,
    card_scale_range,
    classifier_for,
    dense_for,
    resolve_device,
    select_outputs,
)
from .pyramid import Level, levels, parse_scales
from .result import THUMBNAIL_SIDE, ScanResult
from .settings import ScanSettings
from .threads import check_threads
from .tiling import HEADROOM, estimate_bytes, format_bytes, forward_tiled, parse_bytes

__all__ = ["PRECISIONS", "PREPROCESS", "Scanner", "PendingScan", "resolve_device", "as_rgb",
           "to_probabilities"]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: Where pyramid levels are built: ``"auto"`` (on the device unless it is the CPU), ``"device"``
#: (torch ops on the scanner's device, :mod:`densify.scan.preprocess`) or ``"host"`` (OpenCV).
PREPROCESS = ("auto", "device", "host")

class Scanner:
    """A classifier converted once and ready to scan images at several scales.

    Built from a model and one :class:`densify.scan.settings.ScanSettings` (the how), then
    called per image (the what). Keywords override single settings:
    ``Scanner("lenet5-digits", scales=6, flip=True)``.

    Args:
        model: a catalogue name (``densify models``; any case), ``package.module:factory``, a
            :class:`densify.models.user.ModelChoice` (the command line's, with its overrides), a
            :class:`densify.models.weights.Classifier`, a :class:`densify.convert.DenseNet`, or any
            convertible ``nn.Module`` classifier (then pass ``input_size`` and, unless ImageNet
            statistics fit, ``mean``/``std``); loaded by :func:`densify.models.user.load_model`.
        settings: the scan settings (default ``ScanSettings()``); see its attributes.
        weights: for catalogue names: None (the model's trained weights when it has any, as on
            the command line; else random), ``"DEFAULT"``, ``"random"`` or a file path.
        input_size, mean, std, categories, background_class: override (or, for plain modules,
            supply) the model card's values; ``categories`` default to ``"0"``, ``"1"``, ...
        **overrides: fields of :class:`ScanSettings` (``scales``, ``output_stride``, ``device``,
            ``precision``, ``flip``, ``object_sizes``, ``max_memory``, ``threads``, ``fold_bn``,
            ``progress``, ``scores``, ``boxes``, ``box_format``, ``object_box``, ``preprocess``,
            ``autotune``, ``cuda_graphs``, ``batch_size``).

    Notes on settings: ``max_memory`` bounds the whole process's peak resident memory during a
    scan (:mod:`densify.scan.memory`): what the process holds once the model is converted is
    measured here, and a scale that does not fit in the rest is computed in stride-aligned,
    overlapping tiles that give the same cells; a budget below the fixed cost plus the smallest
    tile raises :class:`densify.scan.tiling.TilingError` stating the minimum. ``threads`` is
    checked, never set: a library call changes nothing process-wide, so the application sets
    torch's count for its run (:func:`densify.runtime.tuned`, as the command line does).
    ``scores``/``boxes``: for multi-output models (default: the card's outputs);
    regressed boxes then replace the windows in detections.

    Examples:
        >>> import torch, densify
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 4), torch.nn.Flatten())
        >>> scan = densify.Scanner(net, input_size=(1, 4, 4), mean=(0.5,), std=(0.5,),
        ...                        scales=[1.0], output_stride=None, device="cpu")
        >>> scan.settings.scales, scan.output_stride, scan.categories
        ((1.0,), 1, ('0', '1'))
    """

    def __init__(self, model: str | Classifier | nn.Module, settings: ScanSettings | None = None,
                 *, weights: str | Path | None = None, input_size: Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 categories: Sequence[str] | None = None, background_class: int | None = None,
                 **overrides):
        if settings is not None and not isinstance(settings, ScanSettings):
            raise TypeError(f"Scanner's second argument is a ScanSettings, not "
                            f"{type(settings).__name__}; pass scales=... as a keyword")
        s = (settings or ScanSettings()).replace(**overrides)
        if s.precision not in PRECISIONS:
            raise ParameterError(f"unknown precision {s.precision!r}; use one of "
                                 f"{', '.join(PRECISIONS)}")
        self.scales = parse_scales(s.scales)
        self.settings = s.replace(scales=self.scales)
        self.device = resolve_device(s.device)
        self.precision = s.precision
        if PRECISIONS[s.precision] is not None and not torch.amp.is_autocast_available(
                self.device.type):
            raise ParameterError(f"{s.precision} autocast is not available on "
                                 f"{self.device.type}; use --precision fp32")
        self.progress = s.progress
        self.flip = bool(s.flip)
        self.threads = None if s.threads is None else check_threads(s.threads)
        self.classifier = classifier_for(model, weights, input_size, mean, std, categories)
        #: the model card (:class:`densify.models.card.ModelCard`) with the overrides; None for
        #: a plain module or DenseNet
        self.card = self.classifier.card.replace(background_class=background_class) if (
            self.classifier) else None
        card = self.card
        net = self.classifier.model if self.classifier else model
        size = card.input_size if card else input_size
        self.dense = dense_for(net, size, s.output_stride, s.fold_bn).to(self.device).eval()
        self.dense = to_channels_last(self.dense)  # fc6-sized weights stay shared
        # ``scan_net`` computes just the chosen outputs, as one ``(N, K [+ 4 or 4K], h, w)``
        # tensor (tiling and memory estimates work on it)
        self.scores_output, self.boxes_output, self.box_format = select_outputs(
            self.dense.outputs, *card_outputs(card, s.scores, s.boxes, s.box_format))
        chosen = [o for o in (self.scores_output, self.boxes_output) if o is not None]
        self.scan_net = self.dense.subset(*[o.key for o in chosen])
        self._out_channels = sum(o.channels for o in chosen)  # scores + any box regression
        self.requested_stride = s.output_stride
        self.mean, self.std = card_normalization(card, self.in_chans, mean, std)
        self.categories, self.background_class, self.object_box = card_classes(
            card, self.scores_output.channels, categories, background_class, s.object_box,
            self.geometry.window)
        self.scale_range = card_scale_range(card, s.object_sizes)
        if self.classifier is not None:  # the scanner keeps one copy of the weights: the dense one
            self.classifier = dataclasses.replace(self.classifier, model=None)
        del net
        self.max_memory = None if s.max_memory is None else parse_bytes(s.max_memory)
        self.budget = None if s.max_memory is None else MemoryBudget.measure(
            chunk_large_convs(self.scan_net), self.max_memory,
            PRECISIONS[s.precision] or self.dtype, self.device)
        if s.preprocess not in PREPROCESS:
            raise ParameterError(f"unknown preprocess {s.preprocess!r}; use one of "
                                 f"{', '.join(PREPROCESS)}")
        self.preprocess = s.preprocess
        self.autotune = bool(s.autotune)
        self._graphs = (GraphCache(self.scan_net) if s.cuda_graphs and self.device.type == "cuda"
                        else None)
        self.batch_size = batch_size_for(s.batch_size, self.device, self.scan_net,
                                         PRECISIONS[s.precision] or self.dtype, self.budget)

    @property
    def default_threshold(self) -> float:
        """The model card's recommended detection threshold, else 0.5."""
        threshold = self.card.threshold if self.card else None
        return 0.5 if threshold is None else float(threshold)

    @property
    def geometry(self):
        return self.dense.geometry

    @property
    def output_stride(self) -> int:
        return self.dense.output_stride

    @property
    def in_chans(self) -> int:
        return self.dense.input_size[0]

    @property
    def dtype(self) -> torch.dtype:
        """The dense net's parameter dtype (inputs are cast to it)."""
        param = next(self.dense.parameters(), None)
        return torch.float32 if param is None else param.dtype

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        # Graph capture records the weights' casts: autocast must not reuse cached ones.
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=self._graphs is None)

    def levels(self, image_hw: Sequence[int], scales: int | str | Sequence[float] | None = None
               ) -> list[Level]:
        """The pyramid this scanner would use for an image of ``image_hw``."""
        g = self.geometry
        return levels(image_hw, g.window, g.stride, self.scales if scales is None else scales,
                      self.scale_range)

    def __call__(self, image: str | Path | np.ndarray | torch.Tensor,
                 scales: int | str | Sequence[float] | None = None,
                 progress: bool | None = None) -> ScanResult:
        """Scan one image (a path, an RGB ``uint8`` array or a tensor, see :func:`as_rgb`).

        ``scales`` and ``progress`` override the scanner's defaults for this call. With
        ``flip`` each scale's map is followed by its mirrored one.
        """
        rgb, source = as_rgb(image)
        return self._launch_group([rgb], [source], scales, progress)()[0]

    def scan_batch(self, images: Sequence[str | Path | np.ndarray | torch.Tensor],
                   batch_size: int | None = None,
                   scales: int | str | Sequence[float] | None = None,
                   progress: bool | None = None) -> list[ScanResult]:
        """Scan several images; the results equal scanning each on its own, in input order.

        Images of one size share their pyramid and go through the net together, up to
        ``batch_size`` (default :attr:`batch_size`) per forward pass (one pass per level); other
        sizes form their own groups. Each group is launched (:meth:`launch_batch`) before the
        previous group's results are built, so on a GPU that host work overlaps the device's.
        With a memory budget (``max_memory``) images are scanned one at a time, since the budget
        is planned for one image.
        """
        batch_size = self.batch_size if batch_size is None else batch_size_for(batch_size)
        decoded = [as_rgb(image) for image in images]
        step = 1 if self.budget is not None else batch_size
        results: list = [None] * len(decoded)
        queued: list = []  # (indices, PendingScan): at most one launched ahead
        for group in [*same_size_groups([rgb.shape for rgb, _ in decoded], step), None]:
            if group is not None:
                queued.append((group, self._launch([decoded[i] for i in group], step, scales,
                                                   progress)))
            while queued and (group is None or len(queued) > 1):
                done, pending = queued.pop(0)
                for i, result in zip(done, pending.results(), strict=True):
                    results[i] = result
        return results

    def launch_batch(self, images: Sequence[str | Path | np.ndarray | torch.Tensor],
                     scales: int | str | Sequence[float] | None = None,
                     progress: bool | None = None, batch_size: int | None = None,
                     pinned_results: bool = False) -> PendingScan:
        """:meth:`scan_batch` in two halves: launch the images now, build their results later.

        For a caller with other work meanwhile (the command line launches a chunk before it
        takes and writes the previous chunk's results). Images of one size go through the net
        together, up to ``batch_size`` (default :attr:`batch_size`) per pass, other sizes in
        their own passes; on a GPU their levels and one copy of the maps to pinned host memory
        are queued and this returns without waiting (on the CPU the maps are computed by then).
        All are in flight together: launch about :attr:`batch_size` images at a time.
        :meth:`PendingScan.results` waits for the copy and gives one :class:`ScanResult` per
        image, in input order, as :meth:`scan_batch` does. With a memory budget each image is
        scanned and its result built before the next starts: nothing is left in flight.

        ``pinned_results``: on CUDA the results' maps stay in the pinned buffer they were
        copied into, instead of being copied out into ordinary memory (the default). That
        saves the host a copy (45 ms per 88 MB, eight 1080p images at stride 32, on this
        project's CPU, most of it page faults of the fresh memory) for a caller that drops
        each result soon, as the command line does; pinned memory is page-locked (it cannot
        be swapped out), so a caller that keeps many results should leave it off.

        Examples:
            >>> import torch, densify
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 4), torch.nn.Flatten())
            >>> scan = densify.Scanner(net, input_size=(1, 4, 4), mean=(0.5,), std=(0.5,),
            ...                        scales=[1.0], output_stride=None, device="cpu")
            >>> images = [torch.rand(1, 8, 8), torch.rand(1, 6, 9), torch.rand(1, 8, 8)]
            >>> pending = scan.launch_batch(images)      # queued; other work may run here
            >>> results = pending.results()              # input order
            >>> [r.image_size for r in results], results[1].maps[0].probs.shape
            ([(8, 8), (6, 9), (8, 8)], torch.Size([2, 3, 6]))
            >>> torch.allclose(results[2].maps[0].probs, scan(images[2]).maps[0].probs)
            True
        """
        size = self.batch_size if batch_size is None else batch_size_for(batch_size)
        return self._launch([as_rgb(image) for image in images], size, scales, progress,
                            pinned_results)

    def _launch(self, decoded: Sequence[tuple[np.ndarray, str | None]], batch_size: int, scales,
                progress: bool | None, pinned: bool = False) -> PendingScan:
        """:meth:`launch_batch` of ``(rgb, source)`` pairs; under a budget each group (of one
        image) is finished before the next is launched."""
        step = 1 if self.budget is not None else batch_size
        parts = []
        for group in same_size_groups([rgb.shape for rgb, _ in decoded], step):
            finish = self._launch_group([decoded[i][0] for i in group],
                                        [decoded[i][1] for i in group], scales, progress, pinned)
            if self.budget is not None:
                finish = functools.partial(list, finish())  # built now: nothing in flight
            parts.append((group, finish))
        return PendingScan(parts, len(decoded))

    @property
    def preprocess_on_device(self) -> bool:
        """Whether pyramid levels are built on the device with torch ops
        (:mod:`densify.scan.preprocess`) rather than on the host with OpenCV."""
        return self.preprocess == "device" or (self.preprocess == "auto" and
                                               self.device.type != "cpu")

    def _launch_group(self, rgbs: Sequence[np.ndarray], sources: Sequence[str | None], scales,
                      progress: bool | None, pinned: bool = False):
        """Queue the scan of images of one size (one forward pass per level for all of them,
        maps kept on the device) and the copy of their maps to the host; returns the function
        that waits for that copy and builds the results (host work that, on a GPU, overlaps
        the next group's levels when :meth:`scan_batch` or the caller of :meth:`launch_batch`
        launches those first)."""
        shape = rgbs[0].shape[:2]
        pyramid = self.levels(shape, scales)
        views = [(level, flipped) for level in pyramid
                 for flipped in ((False, True) if self.flip else (False,))]
        images = sum(rgb.nbytes for rgb in rgbs) * (2 if self.flip else 1)
        if self.budget is not None:  # refuse an image that a level cannot fit, before any
            check_budget(self.budget, self.geometry, [level for level, _ in views], images,
                         self.in_chans * self.dtype.itemsize, self._out_channels)
        show = self.progress if progress is None else progress
        source = LevelSource(rgbs, self.device if self.preprocess_on_device else None, self.flip)
        outs = []
        with torch.inference_mode(), self._autocast(), autotune(self.device, self.autotune):
            for level, flipped in tqdm(views, desc="scales", unit="scale", leave=False,
                                       disable=not show):
                held = images + sum(p.nbytes + (0 if r is None else r.nbytes) for p, r in outs)
                x = source.level(level, flipped, self.mean, self.std, self.in_chans)
                x = x.to(self.device, self.dtype, non_blocking=True)
                outs.append(self._scan_level(x, level, held))
                del x
        del source
        copy = HostCopy(outs, pinned)
        del outs

        def finish() -> list[ScanResult]:
            thumbs = [thumbnail(rgb, THUMBNAIL_SIDE).copy() for rgb in rgbs]  # while copying
            maps = copy.wait()
            return [ScanResult(tuple(shape), self.categories, tuple(
                ScaleMap(level, self.geometry, p[n], None if r is None else r[n], self.box_format,
                         flipped) for (level, flipped), (p, r) in zip(views, maps, strict=True)),
                self.background_class, self.object_box, sources[n], thumb)
                for n, thumb in enumerate(thumbs)]

        return finish

    def _forward(self, x: torch.Tensor, held: int = 0) -> torch.Tensor:
        """The dense net on ``x``, tiled when it does not fit in what the memory budget leaves
        while the scan holds ``held`` bytes besides ``x`` (:mod:`densify.scan.memory`)."""
        net = self.scan_net
        if self.budget is None:
            return self._graphs(x) if self._graphs is not None else net(x)
        dtype = PRECISIONS[self.precision] or x.dtype
        room = self.budget.room(held, x.nbytes, f"a {x.shape[-2]}x{x.shape[-1]} scale")
        need = estimate_bytes(net, x.shape[-2], x.shape[-1], dtype)
        if need <= (1 - HEADROOM) * room:  # the same headroom plan_tiles keeps
            return net(x)
        log.info("scale %dx%d needs ~%s: tiling to fit %s", x.shape[-2], x.shape[-1],
                 format_bytes(need), format_bytes(room - x.nbytes))
        return forward_tiled(net, x, room - x.nbytes)

    def _scan_level(self, x: torch.Tensor, level: Level, held: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, K, h, w)`` float32 probabilities on the device for one level of ``N`` images,
        and the raw ``(N, 4 or 4K, h, w)`` float32 box regression (None without a boxes output);
        ``x``: the level's input; ``held``: bytes the scan holds besides this level (images,
        earlier maps), for the memory budget."""
        h, w = self.geometry.output_size(*level.input_size)
        logits = self._forward(x, held + 4 * x.shape[0] * self._out_channels * h * w)
        if logits.shape[-2] < h or logits.shape[-1] < w:
            raise RuntimeError(f"the dense net gave {tuple(logits.shape[-2:])} cells on a "
                               f"{level.input_size} input, its geometry says {(h, w)}")
        # Padded nets add cells whose window lies past the input's end: keep the geometry's.
        out = logits[:, :, :h, :w].float()
        num = self.scores_output.channels
        regression = out[:, num:] if self.boxes_output is not None else None
        activation = self.scores_output.activation
        scores = out[:, :num]
        scores = (softmax_rows(scores) if activation is None
                  else to_probabilities(scores, activation, dim=1))
        return scores, regression
