"""densify: dense prediction by convolutionization.

The data flow in five lines::

    import densify
    clf = densify.load_classifier("vgg19")           # trained weights; or "random", or a PATH
    dense = densify.convolutionize(clf.model, clf.spec.input_size, output_stride=16)
    logits = dense(images)            # (N, C, H, W) -> (N, K, h, w): the classifier on every window
    boxes = dense.geometry.cell_boxes(*logits.shape[-2:])            # (h*w, 4) x1, y1, x2, y2

The scanner wraps that for photos: ``densify.Scanner("vgg19", scales=6)(path)`` returns per-scale
class-probability maps with their geometry, heatmaps registered to the image, and detections;
``densify.save_result(result, "scan.npz")`` stores them compactly and ``densify.load_result`` reads
them back.

Layers, each importing only those below it: :mod:`densify.cli` → :mod:`densify.scan` →
:mod:`densify.convert`, :mod:`densify.models`, :mod:`densify.io` → :mod:`densify.errors`.
The public names below load on first use, so ``import densify`` (and ``densify --help``) does not
import torch.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

from .errors import (
    ConversionError,
    DensifyError,
    ImageError,
    ModelError,
    OutputError,
    ResultError,
    WeightsError,
)

__version__ = "0.2.0"

#: public name -> module that defines it, in data-flow order.
_LAZY = {
    "MODELS": "models.catalogue", "ModelSpec": "models.catalogue", "get_spec": "models.catalogue",
    "build_model": "models.catalogue",
    "load_classifier": "models.weights", "Classifier": "models.weights",
    "ModelCard": "models.card", "load_model": "models.user", "ModelChoice": "models.user",
    "convolutionize": "convert.dense", "DenseNet": "convert.dense",
    "available_strides": "convert.dense", "OutputInfo": "convert.outputs",
    "Geometry": "convert.geometry",
    "check_canonical": "convert.verify", "check_head": "convert.verify",
    "check_output_stride": "convert.verify", "check_crops": "convert.verify",
    "levels": "scan.pyramid", "Level": "scan.pyramid", "parse_scales": "scan.pyramid",
    "Scanner": "scan.scanner", "ScanSettings": "scan.settings", "Ensemble": "scan.ensemble",
    "ScanResult": "scan.result", "ClassScore": "scan.result", "ScaleMap": "scan.maps",
    "Detections": "scan.detect",
    "save_result": "scan.resultfile", "load_result": "scan.resultfile",
}

__all__ = [  # the names of _LAZY, then the errors
    "MODELS", "ModelSpec", "get_spec", "build_model", "load_classifier", "Classifier",
    "ModelCard", "load_model", "ModelChoice", "ScanSettings",
    "convolutionize", "DenseNet", "available_strides", "OutputInfo", "Geometry", "check_canonical",
    "check_head", "check_output_stride", "check_crops", "levels", "Level", "parse_scales", "Scanner",
    "Ensemble", "ScanResult", "ClassScore", "ScaleMap", "Detections", "save_result", "load_result",
    "DensifyError", "ConversionError", "ModelError", "WeightsError", "ImageError", "OutputError",
    "ResultError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'densify' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names only (``dir(densify)``, tab completion)."""
    return sorted(__all__) + ["__version__"]


if _TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .convert.dense import DenseNet, available_strides, convolutionize
    from .convert.geometry import Geometry
    from .convert.outputs import OutputInfo
    from .convert.verify import check_canonical, check_crops, check_head, check_output_stride
    from .models.card import ModelCard
    from .models.catalogue import MODELS, ModelSpec, build_model, get_spec
    from .models.user import ModelChoice, load_model
    from .models.weights import Classifier, load_classifier
    from .scan.detect import Detections
    from .scan.ensemble import Ensemble
    from .scan.maps import ScaleMap
    from .scan.pyramid import Level, levels, parse_scales
    from .scan.result import ClassScore, ScanResult
    from .scan.resultfile import load_result, save_result
    from .scan.scanner import Scanner
    from .scan.settings import ScanSettings
