"""The timm sweep: one small variant of every timm family with a CNN trunk, converted and checked
against timm itself (tests/test_timm_sweep.py, scripts/timm_table.py, docs/timm.md).

Each model is built with random weights (``pretrained=False``), every BatchNorm statistic and
every constant-initialised parameter (zero-init gammas, layer scales, biases) randomised, in
float64 at a small canonical input, and :func:`sweep_one` returns its :class:`Outcome`:

- the dense output at the canonical input equals ``model(x)`` (check 1, against timm);
- on an input one stride larger each way, every dense cell equals timm's own ``forward_head`` on
  that cell's window of timm's own ``forward_features`` (check 2, against timm's split);
- a locality probe on an input taller than the receptive field: pixels outside cell row 0's
  reported receptive field are replaced; row 0 must not move unless the net is flagged as having
  global context (then it must move: the flag is not a false alarm).

Outcome kinds: ``exact``, ``context`` (exact, global context flagged), ``refused`` (a one-line
:class:`densify.errors.DensifyError`), ``crash`` (any other exception) and ``wrong`` (a check
failed): the last two are bugs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from densify.convert import convolutionize
from densify.errors import DensifyError

F64, F32 = torch.float64, torch.float32
#: Worst relative error allowed in checks 1 and 2, per dtype.
TOLERANCE = {F64: 1e-9, F32: 1e-4}
#: name -> (canonical size tested, dtype, expected kind): one small variant per timm family with a
#: CNN trunk (timm's model module in the comment), plus transformers that must be refused.
#: float32 where float64 grouped or depthwise convolutions are too slow on the CPU.
DEFAULT = {
    "resnet10t": (64, F64, "exact"),  # resnet
    "seresnet18": (64, F64, "context"),  # resnet + SE
    "mobilenetv3_small_050": (64, F64, "context"),  # mobilenetv3: conv_head after the pool
    "lcnet_050": (64, F64, "context"),  # mobilenetv3 (LCNet)
    "mobilenetv4_conv_small": (64, F32, "exact"),  # mobilenetv3 (MobileNetV4)
    "efficientnet_b0": (64, F32, "context"),  # efficientnet
    "tinynet_e": (64, F64, "context"),  # efficientnet
    "mixnet_s": (64, F32, "context"),  # efficientnet (MixNet)
    "ghostnet_050": (64, F64, "context"),  # ghostnet
    "repghostnet_050": (64, F32, "context"),  # repghost
    "fasternet_t0": (64, F64, "exact"),  # fasternet
    "hgnetv2_b0": (64, F64, "exact"),  # hgnet
    "convnext_atto": (64, F32, "exact"),  # convnext
    "convnextv2_atto": (64, F32, "context"),  # convnext (GRN: a norm over H, W)
    "regnetx_002": (64, F32, "exact"),  # regnet
    "rexnet_100": (64, F32, "context"),  # rexnet
    "resnest14d": (64, F64, "context"),  # resnest: split attention
    "skresnet18": (64, F64, "context"),  # sknet: selective kernel
    "eca_resnet33ts": (64, F64, "context"),  # byobnet: ECA
    "resnetv2_50x1_bit": (64, F64, "context"),  # resnetv2: GroupNorm
    "poolformer_s12": (64, F64, "context"),  # metaformer: GroupNorm
    "dla34": (64, F64, "exact"),  # dla
    "vgg11": (64, F64, "refused"),  # vgg: control flow on the input size in its ConvMlp
    "darknet17": (64, F64, "exact"),  # cspnet
    "selecsls42b": (64, F64, "exact"),  # selecsls
    "ese_vovnet19b_dw": (64, F64, "context"),  # vovnet (eSE)
    "starnet_s050": (64, F32, "exact"),  # starnet
    "vit_tiny_patch16_224": (224, F32, "refused"),  # vision_transformer: not a CNN
}
#: Larger or slower (float64 grouped convolutions): the slow tier (``DENSIFY_FULL=1``).
SLOW = {
    "ghostnetv2_100": (64, F64, "refused"),  # ghostnet v2: DFC attention upsamples
    "hrnet_w18_small": (64, F64, "refused"),  # hrnet: fuse layers upsample
    "densenet121": (64, F64, "exact"),  # densenet
    "dpn68": (64, F64, "exact"),  # dpn
    "res2net50_14w_8s": (64, F64, "exact"),  # res2net
    "cspresnet50": (64, F64, "exact"),  # cspnet
    "repvit_m0_9": (64, F64, "context"),  # repvit
    "inception_next_atto": (64, F64, "exact"),  # inception_next
    "nf_resnet26": (64, F64, "exact"),  # nfnet
    "xception41": (64, F32, "exact"),  # xception_aligned
    "rdnet_tiny": (64, F32, "context"),  # rdnet
    "gcresnet33ts": (64, F64, "context"),  # byobnet: global-context block
    "inception_v3": (107, F64, "exact"),  # inception_v3
}


@dataclass(frozen=True)
class Outcome:
    """What one model gave: ``kind`` (module docstring), the worst relative errors of check 1
    (canonical) and check 2 (cells vs timm's head), the probe's movement of row 0 (relative),
    the receptive field, the global-context nodes, the refusal message, seconds taken."""

    name: str
    kind: str
    canonical: float = float("nan")
    cells: float = float("nan")
    probe: float = float("nan")
    rf_size: tuple | None = None
    context: tuple = ()
    message: str = ""
    seconds: float = 0.0


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters; every parameter or buffer whose values
    are all equal (zero-init gammas, layer scales, zero biases) perturbed. In place."""
    gen = torch.Generator().manual_seed(seed)

    def noise(t, scale):
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * scale

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(noise(m.running_mean, 0.2))
                m.running_var.copy_(0.5 + noise(m.running_var, 0.5).abs())
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() and t.numel() and bool((t == t.flatten()[0]).all()):
                t.add_(noise(t, 0.2))
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def _cells_vs_timm(model, dense, size: int, dtype) -> float:
    """Check 2 against timm's split: every cell vs ``forward_head`` of its feature window."""
    s = dense.output_stride
    x = torch.randn(1, 3, size + s, size + s, dtype=dtype)
    nhwc = str(getattr(model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")  # MambaOut

    def features(t):
        f = model.forward_features(t)
        return f.permute(0, 3, 1, 2) if nhwc else f

    k = features(torch.zeros(1, 3, size, size, dtype=dtype)).shape[-2:]
    feats = features(x)
    out = dense(x)
    info = getattr(model, "feature_info", None) or [{}]
    step = s // info[-1].get("reduction", s)  # feature cells per output cell
    windows = torch.cat([feats[:, :, i * step:i * step + k[0], j * step:j * step + k[1]]
                         for i in range(out.shape[2]) for j in range(out.shape[3])])
    expected = model.forward_head(windows.permute(0, 2, 3, 1) if nhwc else windows)
    return _rel(out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]), expected)


def _probe(dense, size: int, dtype) -> float:
    """Row 0's relative movement when every pixel outside its receptive field changes (an input
    taller than the field; for a global net, every pixel below row 0's window)."""
    g, s = dense.geometry, dense.output_stride
    end = size if g.rf_size is None else g.rf_offset[0] + g.rf_size[0]
    height = size + s * max(1, -(-(end - size) // s) + 1)  # canonical + whole strides
    x = torch.randn(1, 3, height, size, dtype=dtype)
    y = x.clone()
    y[:, :, end:] = torch.randn(1, 3, height - end, size, dtype=dtype)
    return _rel(dense(y)[:, :, 0], dense(x)[:, :, 0])


@torch.no_grad()
def sweep_one(name: str, size: int, dtype=F64) -> Outcome:
    """Build, randomise, convert and check ``name`` (module docstring) in ``dtype``."""
    import timm

    start = time.perf_counter()
    torch.manual_seed(0)
    model = randomise(timm.create_model(name, pretrained=False, num_classes=5)).to(dtype).eval()
    try:
        dense = convolutionize(model, (3, size, size))
    except DensifyError as exc:
        return Outcome(name, "refused", message=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - the sweep reports crashes as outcomes
        return Outcome(name, "crash", message=f"{type(exc).__name__}: {exc}",
                       seconds=time.perf_counter() - start)
    x = torch.randn(1, 3, size, size, dtype=dtype)
    canonical = _rel(dense(x)[:, :, 0, 0], model(x))
    cells = _cells_vs_timm(model, dense, size, dtype)
    probe = _probe(dense, size, dtype)
    context, tol = dense.global_context, TOLERANCE[dtype]
    ok = canonical <= tol and cells <= tol and ((probe > 0.0) if context else probe == 0.0)
    kind = ("context" if context else "exact") if ok else "wrong"
    return Outcome(name, kind, canonical, cells, probe, dense.geometry.rf_size, context,
                   seconds=time.perf_counter() - start)


def table(outcomes: list[Outcome]) -> str:
    """The Markdown table of docs/timm.md."""
    rows = ["| model | outcome | check 1 | check 2 | row 0 moves | receptive field | note |",
            "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        rf = "global" if o.kind == "context" else (f"{o.rf_size[0]} px" if o.rf_size else "")
        note = o.message or (f"{len(o.context)} global-context node(s), e.g. `{o.context[0]}`"
                             if o.context else "")
        nums = [f"{v:.1e}" if v == v else "" for v in (o.canonical, o.cells, o.probe)]
        rows.append(f"| `{o.name}` | {o.kind} | {' | '.join(nums)} | {rf} | {note} |")
    return "\n".join(rows)
