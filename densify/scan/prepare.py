"""What a scanner is built from: the device, the input image, the classifier and its card, and
the dense net it runs (functions :class:`densify.scan.scanner.Scanner` calls once, at
construction, or once per image).

- :func:`resolve_device` and :func:`as_rgb` check what the caller passes;
- :func:`classifier_for` loads any model form (:func:`densify.models.user.load_model`), and
  :func:`dense_for` converts it at the requested output stride (the native one, logged, when
  that stride cannot be reached) with batch norms folded;
- :func:`card_outputs`, :func:`card_object_box`, :func:`card_scale_range`,
  :func:`card_normalization` and :func:`card_classes` read the model card's facts, given values
  first; :func:`select_outputs` picks the dense net's scores and boxes outputs;
  :func:`batch_size_for` picks how many images go through the net together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..convert.dense import DenseNet, convolutionize
from ..convert.fold import fold_batchnorm
from ..convert.outputs import OutputInfo, select_key
from ..errors import ConversionError, ParameterError
from ..io.image import read_array, read_image
from ..models.card import ModelCard
from ..models.catalogue import IMAGENET_MEAN, IMAGENET_STD
from ..models.user import ModelChoice, load_model
from ..models.weights import Classifier
from .detect import object_region
from .maps import BOX_FORMATS
from .pyramid import object_range
from .tiling import estimate_bytes

__all__ = ["resolve_device", "as_rgb", "classifier_for", "dense_for", "card_outputs",
           "card_object_box", "card_scale_range", "card_normalization", "card_classes",
           "select_outputs", "batch_size_for", "MAX_AUTO_BATCH"]

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), or a torch device name; checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r} requested but CUDA is not available; use --device "
                         "cpu (or auto)")
    return dev


def as_rgb(image: str | Path | np.ndarray | torch.Tensor) -> tuple[np.ndarray, str | None]:
    """``(RGB uint8 (H, W, 3), source path or None)`` from a path, an array or a tensor.

    Tensors are ``(3, H, W)`` or ``(1, 3, H, W)`` RGB (or 1-channel gray), float in [0, 1] or
    uint8. Raises :class:`densify.errors.ImageError` for anything else.
    """
    if isinstance(image, (str, Path)):
        return read_image(image), str(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
        if t.ndim == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        image = t.numpy()
    return read_array(image), None


def classifier_for(model, weights, input_size, mean, std, categories) -> Classifier | None:
    """The model as a :class:`Classifier` (:func:`densify.models.user.load_model`); None for a
    DenseNet or a plain module, which the scanner converts as given."""
    if isinstance(model, ModelChoice):
        model = model.load()
    if isinstance(model, (str, Classifier)):
        return load_model(model, weights, input_size=input_size, mean=mean, std=std,
                          categories=categories)
    return None


def dense_for(model: nn.Module, input_size, output_stride: int | None, fold_bn: bool) -> DenseNet:
    if isinstance(model, DenseNet):
        if output_stride not in (None, model.output_stride):
            log.info("scanning a DenseNet at its own stride %d (asked for %s)",
                     model.output_stride, output_stride)
        return fold_batchnorm(model) if fold_bn and _has_batchnorm(model) else model
    dense = _convert_model(model, input_size, output_stride)
    return fold_batchnorm(dense, inplace=True) if fold_bn else dense


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) for m in model.modules())


def _convert_model(model: nn.Module, input_size, output_stride: int | None) -> DenseNet:
    if output_stride is None:
        return convolutionize(model, input_size)
    try:
        return convolutionize(model, input_size, output_stride)
    except ConversionError as exc:
        dense = convolutionize(model, input_size)  # raises if the model itself is the problem
        log.info("output stride %d is not reachable (%s); scanning at the native stride %d",
                 output_stride, exc, dense.output_stride)
        return dense


def card_outputs(card: ModelCard | None, scores, boxes, box_format: str | None):
    """``(scores, boxes, box_format)``: the given ones, else the model card's, else the only
    output, no boxes and ``"offsets"``."""
    if scores is None and boxes is None and card is not None:
        scores, boxes = card.scores_output, card.boxes_output
    fmt = box_format or (card.box_format if card else None) or "offsets"
    return scores, boxes, fmt


def card_object_box(card: ModelCard | None, window: Sequence[int]):
    """The object's box in the window from the model card (``object_height`` and
    ``box_aspect``), or None."""
    if card is None or card.object_height is None:
        return None
    return object_region(window, card.object_height, card.box_aspect)


def card_scale_range(card: ModelCard | None, object_sizes=None) -> tuple[float, float] | None:
    """The factor range for ``scales=N`` from object sizes (given, or the card's), or None."""
    sizes = object_sizes if object_sizes is not None else (card.object_sizes if card else None)
    if sizes is None:
        return None
    if card is None or card.object_height is None:
        raise ParameterError("object sizes need a model whose card gives object_height; pass "
                         "explicit --scales factors instead")
    return object_range(card.object_height, sizes)


def card_normalization(card: ModelCard | None, in_chans: int, mean, std
                       ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)``: the given ones, else the card's, else ImageNet's for 3 channels; a net of
    another channel count needs them given (one-line error)."""
    default = (card.mean, card.std) if card else (None, None)
    if in_chans == 3:
        default = (default[0] or IMAGENET_MEAN, default[1] or IMAGENET_STD)
    mean = tuple(mean) if mean is not None else default[0]
    std = tuple(std) if std is not None else default[1]
    if mean is None or std is None:
        raise ParameterError(f"the model takes {in_chans} channels: pass mean= and std= "
                             "(the normalization it was trained with)")
    return tuple(mean), tuple(std)


def select_outputs(outputs, scores, boxes, box_format: str
                   ) -> tuple[OutputInfo, OutputInfo | None, str]:
    """``(scores output, boxes output or None, box_format)`` of a dense net's ``outputs``,
    checked: a known box format, and a box output of 4 or 4 x K channels."""
    scores_output = select_key(outputs, scores, "scores")
    boxes_output = None if boxes is None else select_key(outputs, boxes, "boxes")
    if box_format not in BOX_FORMATS:
        raise ParameterError(f"unknown box format {box_format!r}; use one of "
                             f"{', '.join(BOX_FORMATS)}")
    num = scores_output.channels
    if boxes_output is not None and boxes_output.channels not in (4, 4 * num):
        raise ParameterError(f"box output {boxes_output.key!r} has {boxes_output.channels} "
                             f"channels; a box regression has 4 or 4 x {num} (one box per class)")
    return scores_output, boxes_output, box_format


def card_classes(card: ModelCard | None, num: int, categories, background_class, object_box,
                 window: Sequence[int]) -> tuple[tuple[str, ...], int | None, tuple | None]:
    """``(category names, background class, object box)`` for a net of ``num`` classes: the
    given ones, else the card's (names default to ``"0"``, ``"1"``, ...; ``object_box="auto"``:
    the card's box in the ``window``, :func:`card_object_box`)."""
    if categories is None:  # a user's model without a class list: indices
        categories = card.categories if card and card.categories else range(num)
    categories = tuple(str(c) for c in categories)
    if len(categories) != num:
        raise ParameterError(f"{len(categories)} categories given for a model with {num} "
                             "outputs; pass one name per class")
    background = (background_class if background_class is not None
                  else card.background_class if card else None)
    if object_box == "auto":
        object_box = card_object_box(card, window)
    return categories, background, None if object_box is None else tuple(
        float(v) for v in object_box)


#: The largest batch chosen automatically on a GPU (:attr:`densify.Scanner.batch_size`).
MAX_AUTO_BATCH = 8


def batch_size_for(batch_size: int | None, device: torch.device | None = None,
                   net: nn.Module | None = None, dtype: torch.dtype = torch.float32,
                   budget=None) -> int:
    """``batch_size`` checked, or the default for scanning with ``net`` in ``dtype`` on
    ``device``: 1 on the CPU (a batch there only adds memory) and with a memory ``budget``; on a
    GPU as many 1080p images as half the device's free memory holds in one pass of the largest
    level (:func:`densify.scan.tiling.estimate_bytes`), at most :data:`MAX_AUTO_BATCH`.

    Examples:
        >>> batch_size_for(4), batch_size_for(None, torch.device("cpu"))
        (4, 1)
    """
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch size must be a positive integer, got {batch_size!r}")
        return batch_size
    if device is None or device.type != "cuda" or budget is not None:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_image = max(1, estimate_bytes(net, 1088, 1920, dtype))
    return max(1, min(MAX_AUTO_BATCH, int(0.5 * free // per_image)))
