"""Stage 1, classifier → dense net: :func:`convolutionize` and the proof that it is exact.

Modules, in the order a conversion uses them: :mod:`.graph` (the torch.fx toolkit), :mod:`.head`
(the rule: where the head starts), :mod:`.fast` (the head rewritten into convolutions),
:mod:`.general` (the original head run on every window), :mod:`.outputs` (multi-output
structures), :mod:`.stride` (stride-1 final pooling), :mod:`.fields` and :mod:`.geometry` (where
each cell looks), :mod:`.dense` (:class:`DenseNet`, :func:`convolutionize`), :mod:`.selfcheck`
(the check every conversion runs), :mod:`.verify` (checks 1-5), :mod:`.export` (TorchScript /
ONNX), :mod:`.fold` (batch norms folded into convolutions, for speed), :mod:`.fuse` (convolution +
ReLU fused into one cuDNN call, opt-in).
"""

from ..errors import ConversionError
from .dense import DenseNet, available_strides, convolutionize
from .fold import fold_batchnorm
from .geometry import Geometry
from .verify import TOLERANCE, Check, check_canonical, check_crops, check_head, check_output_stride

__all__ = ["convolutionize", "DenseNet", "available_strides", "ConversionError", "Geometry",
           "Check", "TOLERANCE", "check_canonical", "check_head", "check_output_stride",
           "check_crops", "fold_batchnorm"]
