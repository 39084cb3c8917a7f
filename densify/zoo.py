"""The model catalogue: one plain dict from name to :class:`ModelSpec`.

A spec says how to build the classifier (random weights), its canonical input ``(C, H, W)``, the
normalization it was trained with and where its class names come from. Weight files are resolved
in :mod:`densify.weights`; conversion happens in :mod:`densify.convert`.

Families:

- ``torchvision``: every CNN classifier in ``torchvision.models``. Canonical size, mean/std and the
  ImageNet categories come from the weights metadata that ships inside torchvision (no download).
- ``seed``: LeNet-5, ZFNet and Network in Network (:mod:`densify.archs`).
- ``timm``: SE-ResNet-50, pre-activation ResNet-50 (resnetv2) and Inception-v4, with the ``timm``
  extra installed.
- ``project``: models trained by this project, with their weights in ``weights/``.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from . import archs

__all__ = ["ModelSpec", "MODELS", "REFUSED", "get_spec", "build_model", "build_skeleton", "model_names",
           "WEIGHTS_DIR"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """What densify needs to know about one classifier.

    Attributes:
        name: catalogue name (``densify models`` lists them).
        family: ``"torchvision"``, ``"seed"``, ``"timm"`` or ``"project"``.
        builder: ``builder(num_classes) -> nn.Module`` with random weights.
        input_size: canonical input ``(C, H, W)``: the window one classification sees.
        num_classes: outputs of the classifier.
        mean, std: per-channel normalization applied to RGB (or gray) values in [0, 1].
        weights: the default pretrained weights: a torchvision weights enum name
            (``"ResNet50_Weights.DEFAULT"``), a file name in ``weights/``, or ``None``.
        categories_from: ``"imagenet"`` (torchvision's bundled list), ``"card"`` (the project
            weights file), or ``None`` (class indices are the names).
        extra: family-specific facts (e.g. ``background_class`` for project detectors).
    """

    name: str
    family: str
    builder: Callable[[int], nn.Module] = field(repr=False)
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    weights: str | None = None
    categories_from: str | None = "imagenet"
    extra: dict = field(default_factory=dict, compare=False)


# Transformers mix every position with every other: no per-window classifier exists to convolutionize.
_TRANSFORMER_REASON = (
    "{name} is a vision transformer: self-attention mixes all positions, so it has no per-window "
    "classifier to convolutionize; use a CNN (densify models lists them)"
)
REFUSED: dict[str, str] = {}


def _torchvision_specs() -> dict[str, ModelSpec]:
    import torchvision.models as tvm

    specs = {}
    for name in tvm.list_models(module=tvm):
        if name.startswith(("vit_", "swin_", "maxvit")):
            REFUSED[name] = _TRANSFORMER_REASON.format(name=name)
            continue
        enum = tvm.get_model_weights(name)
        default = enum.DEFAULT
        tf = default.transforms.keywords  # partial(ImageClassification, crop_size=..., ...)
        crop = int(tf["crop_size"])
        mean, std = tf.get("mean", IMAGENET_MEAN), tf.get("std", IMAGENET_STD)
        builder = functools.partial(_build_torchvision, name)
        specs[name] = ModelSpec(
            name, "torchvision", builder, (3, crop, crop), len(default.meta["categories"]),
            tuple(mean), tuple(std), weights=f"{enum.__name__}.DEFAULT",
        )
    return specs


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    kwargs = {"num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        # The auxiliary classifiers only run in training; leave them out of the inference graph.
        kwargs.update(aux_logits=False, init_weights=True)
    return tvm.get_model(name, weights=None, **kwargs)


def _build_timm(name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"model {name!r} needs timm: pip install 'densify[timm]'"
        ) from exc
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _seed_specs() -> dict[str, ModelSpec]:
    return {
        "lenet5": ModelSpec(
            "lenet5", "seed", lambda k: archs.lenet5(k), (1, 28, 28), 10, (0.5,), (0.5,),
            categories_from=None,
        ),
        "zfnet": ModelSpec("zfnet", "seed", lambda k: archs.zfnet(k), (3, 224, 224), 1000),
        "nin": ModelSpec("nin", "seed", lambda k: archs.nin(k), (3, 224, 224), 1000),
    }


def _timm_specs() -> dict[str, ModelSpec]:
    sizes = {"seresnet50": 224, "resnetv2_50": 224, "inception_v4": 299}
    specs = {}
    for name, size in sizes.items():
        inception = name.startswith("inception")
        specs[name] = ModelSpec(
            name, "timm", functools.partial(_build_timm, name), (3, size, size), 1000,
            INCEPTION_MEAN if inception else IMAGENET_MEAN,
            INCEPTION_STD if inception else IMAGENET_STD,
            weights=f"timm:{name}",
        )
    return specs


#: Card keys the scanner uses: class names, the background class, the object's height and box
#: aspect inside the window, and the object sizes (px in an image) the model is meant to find.
_CARD_EXTRA = ("categories", "background_class", "digit_height", "object_height", "box_aspect",
               "object_sizes", "threshold")


def _project_specs() -> dict[str, ModelSpec]:
    """Models trained by this project; metadata lives next to the weights (``weights/*.json``)."""
    specs = {}
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        card = json.loads(card_path.read_text())
        arch = getattr(archs, card["arch"])
        in_chans = card["input_size"][0]
        specs[card["name"]] = ModelSpec(
            card["name"], "project",
            functools.partial(_build_project, arch, in_chans),
            tuple(card["input_size"]), len(card["categories"]),
            tuple(card["mean"]), tuple(card["std"]), weights=card["file"], categories_from="card",
            extra={k: card[k] for k in _CARD_EXTRA if k in card},
        )
    return specs


def _build_project(arch: Callable[..., nn.Module], in_chans: int, num_classes: int) -> nn.Module:
    if arch is archs.lenet5:
        return arch(num_classes, in_chans=in_chans)
    return arch(num_classes)


def _catalogue() -> dict[str, ModelSpec]:
    return {**_project_specs(), **_seed_specs(), **_torchvision_specs(), **_timm_specs()}


MODELS: dict[str, ModelSpec] = _catalogue()


def model_names(family: str | None = None) -> list[str]:
    """Catalogue names, optionally of one family, in catalogue order."""
    return [n for n, s in MODELS.items() if family is None or s.family == family]


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; a one-line ``ValueError`` naming close matches otherwise."""
    if name in MODELS:
        return MODELS[name]
    if name in REFUSED:
        raise ValueError(REFUSED[name])
    close = difflib.get_close_matches(name, list(MODELS), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'densify models' for the list"
    raise ValueError(f"unknown model {name!r}{hint}")


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
    """Build ``name`` with random weights, in eval mode."""
    spec = get_spec(name)
    return spec.builder(num_classes or spec.num_classes).eval()


def build_skeleton(name: str) -> nn.Module:
    """``name`` with parameters on the meta device (shapes only: no memory, no initialisation),
    or on the CPU for builders that compute on tensors (RegNet's block widths)."""
    import torch

    try:
        with torch.device("meta"):
            return build_model(name)
    except NotImplementedError:
        return build_model(name)
