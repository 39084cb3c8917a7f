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
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .card import ModelCard
from .catalogue import WEIGHTS_DIR, ModelSpec, build_model, build_skeleton, get_spec

__all__ = ["WeightsError", "Classifier", "load_classifier", "load_state_dict_file", "assign_state",
           "categories_for"]

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
        model = load_state_dict_file(build_skeleton(spec.name), text,
                                     rebuild=lambda: build_model(spec.name))
        return Classifier(model, spec, categories, text, False)
    return Classifier(_pretrained(spec, text), spec, categories, f"{spec.weights or text}", False)


def _pretrained(spec: ModelSpec, tag: str) -> nn.Module:
    if spec.family == "project":
        return load_state_dict_file(build_skeleton(spec.name), WEIGHTS_DIR / spec.weights,
                                    rebuild=lambda: build_model(spec.name))
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
        state = chosen.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsError(
            f"cannot download {chosen} ({_reason(exc)}); offline, fetch {chosen.url} elsewhere and "
            "pass --weights PATH, or place it in ~/.cache/torch/hub/checkpoints/") from None
    # Builders that change the net for their weights (GoogLeNet's and Inception's input
    # transform) are left to torchvision; the others take the tensors as they are, no copy.
    model = None if spec.name in WEIGHTS_CHANGE_THE_NET else assign_state(
        build_skeleton(spec.name), state)
    if model is None:
        del state
        model = tvm.get_model(spec.name, weights=chosen)
    return model.eval()


#: torchvision builders that set other arguments when given weights (``transform_input``).
WEIGHTS_CHANGE_THE_NET = ("googlenet", "inception_v3")


def assign_state(model: nn.Module, state: dict) -> nn.Module | None:
    """``model`` (a skeleton on the meta device) with ``state``'s tensors assigned as its
    parameters and buffers (``load_state_dict(assign=True)``: no initialisation, no copy), in
    eval mode; None when the keys or shapes differ or a tensor would stay on the meta device
    (a non-persistent buffer), for the caller to build the model on the CPU instead.

    Examples:
        >>> from densify.models.catalogue import build_skeleton
        >>> state = build_model("lenet5").state_dict()
        >>> model = assign_state(build_skeleton("lenet5"), state)
        >>> name, tensor = next(iter(state.items()))
        >>> model.state_dict()[name].data_ptr() == tensor.data_ptr()
        True
    """
    own = model.state_dict()
    if set(own) != set(state) or any(own[k].shape != v.shape for k, v in state.items()):
        return None
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None
    return model.eval()


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


def _load_failure(exc: BaseException) -> str:
    """What ``torch.load(..., weights_only=True)``'s exception says, in a few words (its own
    message is a paragraph about the ``weights_only`` default)."""
    text = str(exc)
    if "Unsupported global" in text:  # a pickled object (a whole model), not tensors
        found = re.search(r"GLOBAL ([\w.]+)", text)
        return f"holds a pickled {found.group(1) if found else 'object'}, not a state dict"
    if "Weights only load failed" in text:
        return "not a PyTorch weights file"
    return f"not a PyTorch weights file ({_reason(exc).split('. ')[0].rstrip('.')})"


def load_state_dict_file(model: nn.Module, path: str | Path, rebuild=None) -> nn.Module:
    """Load a state dict or checkpoint file into ``model``, checking every shape; returns the
    model in eval mode: ``model`` itself, loaded in place, or for a skeleton on the meta device
    (:func:`densify.models.catalogue.build_skeleton`) the skeleton with the file's tensors
    assigned, no copy (:func:`assign_state`), or where that cannot be (a non-persistent buffer),
    ``rebuild()`` (a model on the CPU) loaded."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; pass an existing .pt/.pth file, "
                           "DEFAULT or random")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: {_load_failure(exc)}; save the weights with "
                           "torch.save(model.state_dict(), path), or pass DEFAULT or random"
                           ) from None
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
    if any(p.is_meta for p in model.parameters()):
        assigned = assign_state(model, state)
        if assigned is not None:
            return assigned
        if rebuild is None:
            raise ValueError("load_state_dict_file: a meta skeleton needs rebuild=")  # a bug
        model = rebuild()  # a skeleton that cannot take the tensors as they are
    model.load_state_dict(state)
    return model.eval()


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
