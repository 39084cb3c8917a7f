"""densify: dense prediction by convolutionization.

The data flow in five lines::

    import densify
    clf = densify.load_classifier("vgg19", weights="DEFAULT")        # or "random", or a PATH
    dense = densify.convolutionize(clf.model, clf.spec.input_size, output_stride=16)
    logits = dense(images)            # (N, C, H, W) -> (N, K, h, w): the classifier on every window
    boxes = dense.geometry.cell_boxes(*logits.shape[-2:])            # (h*w, 4) x1, y1, x2, y2

The scanner wraps that for photos: ``densify.Scanner("vgg19", scales=6)(path)`` returns per-scale
class-probability maps with their geometry, heatmaps registered to the image, and detections.
"""

from .zoo import MODELS, ModelSpec, build_model, get_spec  # noqa: I001  (data-flow order)
from .weights import Classifier, WeightsError, load_classifier
from .convert import ConversionError, DenseNet, available_strides, convolutionize
from .geometry import Geometry
from .verify import check_canonical, check_crops, check_head, check_output_stride
from .pyramid import Level, levels, parse_scales
from .scan import Scanner
from .result import ClassScore, ScaleMap, ScanResult
from .detect import Detections

__all__ = [
    "MODELS", "ModelSpec", "get_spec", "build_model",
    "load_classifier", "Classifier", "WeightsError",
    "convolutionize", "DenseNet", "ConversionError", "available_strides",
    "Geometry",
    "check_canonical", "check_head", "check_output_stride", "check_crops",
    "levels", "Level", "parse_scales",
    "Scanner", "ScanResult", "ScaleMap", "ClassScore", "Detections",
]
__version__ = "0.1.0"
