"""A user's own classifier: ``package.module:factory`` (like uvicorn's ``module:app``).

``load_model(name, weights, ...)`` is what every command calls: a catalogue name goes through
:func:`densify.models.weights.load_classifier`; a ``module:factory`` target is imported, the
factory (any callable, dotted attributes allowed: ``pkg.nets:Zoo.small``) is called with no
arguments and must return the ``nn.Module``. Either way ``input_size``, ``mean``, ``std`` and
``classes`` (a file with one class name per line) override the catalogue's facts; a user's model
needs ``input_size`` (unless it carries timm's ``pretrained_cfg``); ``mean``/``std`` default to
ImageNet's statistics for 3-channel models and 0.5/0.5 otherwise.

Every failure is one line: :class:`ModelError` for the target (module not importable, attribute
missing, factory not callable or not returning a module, model failing at its input size),
:class:`WeightsError` for the weights file.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .catalogue import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from .weights import Classifier, load_classifier, load_state_dict_file

__all__ = ["is_factory", "load_factory", "load_model", "read_classes"]


def is_factory(name: str) -> bool:
    """Whether ``name`` is a ``module:factory`` target rather than a catalogue name."""
    return ":" in str(name)


def load_factory(target: str) -> nn.Module:
    """Import ``module:factory`` and call the factory: the user's ``nn.Module``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"{target!r}: give the model as package.module:factory")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} ({exc}); put its directory on PYTHONPATH "
                         "or run densify from there") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr!r}; name a function or class "
                             "that returns the model") from None
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"{target} is a {type(obj).__name__}, not callable; name a function or "
                         "class that returns the model")
    model = obj()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{target}() returned a {type(model).__name__}, not a torch nn.Module")
    return model


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read class names ({exc}); give a text file with one "
                         "name per line") from None
    if not names:
        raise ModelError(f"{path}: no class names; give one name per line")
    return names


def load_model(name: str, weights: str | Path | None = "DEFAULT", *,
               input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, classes: str | Path | None = None
               ) -> Classifier:
    """A catalogue model or a ``module:factory`` target, with the overrides applied.

    ``input_size`` is ``(H, W)`` or ``(C, H, W)``; for a user's model ``weights`` is ``None``,
    ``"DEFAULT"`` (what the factory built) or a state-dict path.
    """
    if not is_factory(name):
        clf = load_classifier(name, weights if weights is not None else "DEFAULT")
    else:
        clf = _user_classifier(name, weights, input_size)
    spec = clf.spec
    size = spec.input_size if input_size is None else (
        tuple(input_size) if len(input_size) == 3 else (spec.input_size[0], *input_size))
    spec = dataclasses.replace(spec, input_size=size, mean=tuple(mean or spec.mean),
                               std=tuple(std or spec.std))
    if len(spec.mean) not in (1, size[0]) or len(spec.std) not in (1, size[0]):
        raise ModelError(f"{name} reads {size[0]} channel(s): give --mean and --std with "
                         f"{size[0]} value(s) each")
    categories = read_classes(classes) if classes is not None else clf.categories
    return Classifier(clf.model, spec, categories, clf.weights, clf.random)


def _user_classifier(target: str, weights, input_size) -> Classifier:
    model = load_factory(target).eval()
    source = "the factory's own weights"
    if weights not in (None, "DEFAULT", "random"):
        load_state_dict_file(model, weights)
        source = str(weights)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(input_size) if input_size is not None else cfg.get("input_size")
    if size is None:
        raise ModelError(f"{target}: pass --input-size HxW, the input size the classifier was "
                         "trained at")
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    size = size if len(size) == 3 else ((conv.in_channels if conv else 3), *size)
    _try_forward(model, target, size)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if size[0] == 3 else ((0.5,) * size[0],) * 2
    spec = ModelSpec(name=target, family="user", builder=lambda _n: model, input_size=size,
                     num_classes=0, mean=mean, std=std, categories_from=None)
    return Classifier(model, spec, [], source, False)


def _try_forward(model: nn.Module, target: str, size) -> None:
    """One forward pass at the canonical size: a wrong ``--input-size`` fails here, in one line."""
    param = next(model.parameters(), None)
    x = torch.zeros(1, *size, dtype=param.dtype if param is not None else torch.float32)
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{target} fails on a {size[0]}x{size[1]}x{size[2]} input ({first}); "
                         "pass the --input-size it was trained at") from None
