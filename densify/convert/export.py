"""Saving dense nets: TorchScript (``.pt``) or ONNX with dynamic height and width (``.onnx``).

TorchScript: :func:`torch.jit.script` compiles the dense net, both paths: the fast path's
convolutions and the general path's :class:`densify.convert.general.WindowHead`, which runs the
classifier's own head code (an ``torch.fx`` graph, compiled as written) on every window. Scripting,
unlike tracing, keeps every size symbolic; the saved module is then checked against the dense net
at two input sizes (the canonical one plus a stride down, plus two strides across) and refused if
it differs. A head op TorchScript cannot compile (a Python function it cannot read) is refused in
one line that names it and points to ONNX.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ConversionError
from .dense import DenseNet

__all__ = ["export", "script", "check_script"]

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
        if dense.multi_output:
            dense = dense.subset(*(info.key for info in dense.outputs))
        scripted = script(dense)
        check_script(dense, scripted)
        torch.jit.save(scripted, str(path))
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


def script(dense: DenseNet) -> torch.jit.ScriptModule:
    """``torch.jit.script(dense)``, or a one-line :class:`ConversionError` naming the code
    TorchScript cannot compile (the line its compiler points at) and pointing to ONNX."""
    try:
        return torch.jit.script(dense)
    except (RuntimeError, torch.jit.frontend.FrontendError) as exc:  # NotSupportedError included
        raise ConversionError(f"TorchScript cannot compile {_culprit(str(exc))} "
                              "(from the classifier's code); export to .onnx instead") from exc


def _culprit(message: str) -> str:
    """The source line a TorchScript compiler error points at (the line above its ``~~~ <---
    HERE`` marker), with the error's first line, in one line."""
    lines = message.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "an op")
    marker = next((i for i, line in enumerate(lines) if "<--- HERE" in line), None)
    if marker is None or marker == 0:
        return first.rstrip(":")
    return f"'{lines[marker - 1].strip()}' ({first.rstrip(':')})"


def check_script(dense: DenseNet, scripted: torch.jit.ScriptModule) -> None:
    """Raise :class:`ConversionError` unless ``scripted`` gives ``dense``'s maps on two inputs:
    ``(H + S, W)`` and ``(H, W + 2·S)`` for the canonical ``(H, W)`` and output stride ``S``
    (close to float rounding: TorchScript may fuse point-wise ops)."""
    c, h, w = dense.input_size
    param = next(dense.parameters())
    stride = dense.output_stride
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.inference_mode():
        for size in ((h + stride, w), (h, w + 2 * stride)):
            x = torch.randn(1, c, *size, generator=generator, dtype=param.dtype).to(param.device)
            want, got = dense(x), scripted(x)
            tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(param.dtype, 1e-2)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=tol,
                                                              atol=tol * float(want.abs().max())):
                raise ConversionError(
                    f"the TorchScript module differs from the dense net on a {size[0]}x{size[1]} "
                    f"input ({tuple(got.shape)} vs {tuple(want.shape)}); export to .onnx instead")
