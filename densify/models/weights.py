"""Weight resolution: where a classifier's parameters come from.

``load_classifier(name, weights)`` accepts:

- ``None`` (the default, as on the command line): the model's trained weights when it has any
  (shipped with densify, torchvision's, timm's), else random ones;
- ``"random"``: explicit random initialisation (results are meaningless; said in a warning);
- ``"DEFAULT"`` (or a torchvision weights name such as ``"IMAGENET1K_V1"``): torchvision's weights
  API and its hub cache (``~/.cache/torch/hub/checkpoints``), timm's pretrained weights, or the
  project's own file in ``weights/`` for project models. Offline, a missing download gives a
  one-line :class:`WeightsError` that names ``--weights PATH``;
- a path to a local state dict or checkpoint (``{"state_dict": ...}``, ``{"model": ...}``, a
  ``module.``-prefixed DataParallel dict): shape mismatches are reported by layer name.
"""

from __future__ import annotations

import logging
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .card import ModelCard
from .catalogue import WEIGHTS_DIR, ModelSpec, build_model, get_spec

__all__ = ["WeightsError", "Classifier", "load_classifier", "load_state_dict_file", "categories_for"]

log = logging.getLogger(__name__)


@dataclass
class Classifier:
    """A classifier ready to convolutionize.

    Attributes:
        model: the ``nn.Module`` in eval mode.
        spec: its catalogue entry (how it is built).
        categories: class names, index-aligned with the logits.
        weights: where the weights came from (for reports).
        random: True when the weights are random.
        card: how to read it (:class:`densify.models.card.ModelCard`: input, normalization,
            classes, detection facts); default: the spec's card with ``categories``.
    """

    model: nn.Module
    spec: ModelSpec
    categories: list[str]
    weights: str
    random: bool
    card: ModelCard | None = None

    def __post_init__(self):
        if self.card is None:
            self.card = self.spec.default_card().replace(categories=tuple(self.categories))


def categories_for(spec: ModelSpec) -> list[str]:
    """Class names of ``spec``: torchvision's bundled ImageNet list, the project card, or indices."""
    if spec.categories_from == "imagenet":
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if spec.categories_from == "card":
        return list(spec.card.categories)
    return [str(i) for i in range(spec.num_classes)]


def load_classifier(name: str, weights: str | Path | None = None) -> Classifier:
    """Build catalogue model ``name`` with ``weights`` (see the module docstring): by default
    its trained weights, as the command line does; ``"random"`` only when asked (or when the
    model has no trained weights, which is logged)."""
    spec = get_spec(name)
    categories = categories_for(spec)
    if weights is None:
        weights = "DEFAULT" if spec.weights else "random"
    text = str(weights)
    if text == "random":
        log.warning("%s: random weights, results are meaningless (give trained weights: DEFAULT "
                    "or a PATH)", spec.name)
        return Classifier(build_model(spec.name), spec, categories, "random", True)
    if Path(text).suffix in (".pt", ".pth", ".bin", ".ckpt") or Path(text).exists():
        model = build_model(spec.name)
        load_state_dict_file(model, text)
        return Classifier(model, spec, categories, text, False)
    return Classifier(_pretrained(spec, text), spec, categories, f"{spec.weights or text}", False)


def _pretrained(spec: ModelSpec, tag: str) -> nn.Module:
    if spec.family == "project":
        model = build_model(spec.name)
        load_state_dict_file(model, WEIGHTS_DIR / spec.weights)
        return model
    if spec.family == "torchvision":
        return _torchvision_pretrained(spec, tag)
    if spec.family == "timm":
        return _timm_pretrained(spec)
    raise WeightsError(f"{spec.name} has no published pretrained weights; pass --weights PATH "
                       "(a state dict) or --weights random")


def _torchvision_pretrained(spec: ModelSpec, tag: str) -> nn.Module:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(spec.name)
    try:
        chosen = enum.DEFAULT if tag.upper() == "DEFAULT" else enum[tag.split(".")[-1]]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise WeightsError(f"{spec.name} has no weights {tag!r}; choose DEFAULT or one of {names}"
                           ) from None
    try:
        return tvm.get_model(spec.name, weights=chosen).eval()
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsError(
            f"cannot download {chosen} ({_reason(exc)}); offline, fetch {chosen.url} elsewhere and "
            "pass --weights PATH, or place it in ~/.cache/torch/hub/checkpoints/") from None


def _timm_pretrained(spec: ModelSpec) -> nn.Module:
    import timm

    try:
        return timm.create_model(spec.name, pretrained=True).eval()
    except Exception as exc:  # huggingface_hub raises several types when offline
        raise WeightsError(
            f"cannot download timm weights for {spec.name} ({_reason(exc)}); pass --weights PATH "
            "to a local state dict") from None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a state dict or checkpoint file into ``model`` (in place), checking every shape."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; pass an existing .pt/.pth file, "
                           "DEFAULT or random")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch weights file ({_reason(exc)})") from None
    state = _unwrap(obj, path)
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        if mismatched:
            parts.append(f"shape mismatch at {', '.join(mismatched[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: weights for another architecture: {'; '.join(parts)}; "
                           "pass the --model these weights were trained for")
    model.load_state_dict(state)
    model.eval()


def _unwrap(obj, path: Path) -> dict:
    """The state dict inside a checkpoint, with DataParallel's ``module.`` prefix stripped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict; save one with "
                           "torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
