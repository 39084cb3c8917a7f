"""How a scan runs, as one value: :class:`ScanSettings`.

The command line builds it once from its options (:func:`densify.cli.options.settings_options`),
and the same object goes to :class:`densify.scan.scanner.Scanner`, to ``densify evaluate`` and
to every Ray worker (:func:`densify.distributed.scan_dataset`): no function re-lists the
fields. It is plain, frozen, picklable data; values are checked where they act (the scanner).

    settings = ScanSettings(scales=6, flip=True)
    scanner = Scanner("lenet5-digits", settings)              # or Scanner(name, scales=6, flip=True)
    scanner = Scanner("lenet5-digits", settings, device="cpu")  # keywords override fields
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ..errors import ParameterError

__all__ = ["ScanSettings", "SETTING_NAMES"]


@dataclass(frozen=True)
class ScanSettings:
    """Every scan option (the model and its card aside).

    Attributes:
        scales: a count or explicit factors/sizes (:func:`densify.scan.pyramid.parse_scales`).
        flip: also scan each scale mirrored (OverFeat's flips).
        object_sizes: ``(min, max)`` object heights in image pixels (None: the model card's).
        output_stride: pixels between cells; None keeps the native stride.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; softmax stays float32).
        max_memory: memory budget (bytes or ``"3GB"``; :mod:`densify.scan.memory`), or None.
        threads: the intra-op CPU threads the application scans with; the scanner checks it
            but never changes torch's count: the application sets it for its run and restores
            it (:func:`densify.runtime.tuned`; the command line, the bench and the Ray workers
            do; None: their rule, :func:`densify.runtime.choose_threads`).
        fold_bn: fold batch norms into the convolutions before them.
        progress: a tqdm bar over scales.
        scores, boxes: for multi-output models, the outputs holding class scores and box
            regressions (index or key; None: the model card's).
        box_format: ``"offsets"`` or ``"deltas"`` (None: the model card's, else offsets).
        object_box: ``(x1, y1, x2, y2)`` of the object in the window, ``"auto"`` (the card's)
            or None (whole windows).
        preprocess: where pyramid levels are built: ``"auto"`` (on the device unless it is the
            CPU), ``"device"`` (torch ops, :mod:`densify.scan.preprocess`) or ``"host"`` (OpenCV).
        autotune: cuDNN autotuning during a CUDA scan (the caller's flags restored after it).
        cuda_graphs: replay the dense pass as CUDA graphs for shapes seen before
            (:mod:`densify.scan.graphs`).
        batch_size: images per forward pass when scanning many (None: 1 on the CPU, on a GPU
            chosen from its free memory; :meth:`densify.scan.scanner.Scanner.scan_batch`).
    """

    scales: int | str | Sequence[float] = 6
    flip: bool = False
    object_sizes: tuple[float, float] | None = None
    output_stride: int | None = 16
    device: str = "auto"
    precision: str = "fp32"
    max_memory: int | str | None = None
    threads: int | None = None
    fold_bn: bool = True
    progress: bool = False
    scores: Hashable | None = None
    boxes: Hashable | None = None
    box_format: str | None = None
    object_box: str | Sequence[float] | None = "auto"
    preprocess: str = "auto"
    autotune: bool = True
    cuda_graphs: bool = True
    batch_size: int | None = None

    def replace(self, **changes) -> ScanSettings:
        """A copy with ``changes`` (``dataclasses.replace``); an unknown name is one line."""
        unknown = sorted(set(changes) - set(SETTING_NAMES))
        if unknown:
            raise ParameterError(f"unknown scan setting(s) {', '.join(unknown)}; use "
                                 f"{', '.join(SETTING_NAMES)}")
        return dataclasses.replace(self, **changes) if changes else self


#: The field names of :class:`ScanSettings`, in order.
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(ScanSettings))
