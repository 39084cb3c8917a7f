"""Saving dense nets: TorchScript (``.pt``) or ONNX with dynamic height and width (``.onnx``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ConversionError
from .dense import DenseNet

__all__ = ["export"]

log = logging.getLogger(__name__)


def export(dense: DenseNet, path: str | Path, opset: int | None = None) -> Path:
    """Write ``dense`` to ``path``; the format follows the suffix (``.pt`` or ``.onnx``).

    The ONNX graph takes ``image`` ``(N, C, H, W)`` with symbolic N, H and W (H, W ≥ the window)
    and returns ``logits`` ``(N, K, h, w)`` (one tensor per output of a multi-output net).
    TorchScript keeps the same dynamic shapes; a multi-output net (the shipped digit spotter:
    scores and boxes) is saved as :meth:`DenseNet.subset` of all its outputs: one
    ``(N, sum K_i, h, w)`` tensor, the outputs concatenated along channels in order.
    """
    path = Path(path)
    dense = dense.eval()
    if path.suffix == ".pt" or path.name.endswith(".pt"):
        if any(o.path == "general" for o in dense.outputs):
            raise ConversionError("TorchScript cannot compile a general-path head (the "
                                  "classifier's own head code run per window); export to .onnx")
        if dense.multi_output:
            dense = dense.subset(*(info.key for info in dense.outputs))
        torch.jit.save(torch.jit.script(dense), str(path))
        return path
    c, h, w = dense.input_size
    param = next(dense.parameters())
    x = torch.zeros(2, c, h + dense.output_stride, w + dense.output_stride, dtype=param.dtype,
                    device=param.device)
    dims = {0: torch.export.Dim("batch", min=1, max=1024),
            2: torch.export.Dim("height", min=h, max=16384),
            3: torch.export.Dim("width", min=w, max=16384)}
    program = torch.onnx.export(dense, (x,), dynamo=True, dynamic_shapes={"x": dims},
                                input_names=["image"], output_names=["logits"], opset_version=opset,
                                verbose=False)
    program.save(str(path))
    return path
