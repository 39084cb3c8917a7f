"""A user's own classifier: ``package.module:factory`` (like uvicorn's ``module:app``).

``load_model(model, weights, ...)`` is what every command and the scanner call, for every kind of
model: a catalogue name (any case) goes through :func:`densify.models.weights.load_classifier`; a
:class:`Classifier` or an ``nn.Module`` is taken as is; a ``module:factory`` target is imported
(from the current directory first, as ``python -m`` and uvicorn do), the factory (any callable,
dotted attributes allowed: ``pkg.nets:Zoo.small``) is called with no arguments and must return
the ``nn.Module``. Either way ``input_size``, ``mean``, ``std`` and
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
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .catalogue import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from .weights import Classifier, load_classifier, load_state_dict_file

log = logging.getLogger(__name__)

__all__ = ["is_factory", "load_factory", "load_model", "read_classes", "ModelChoice"]


def is_factory(name: str) -> bool:
    """Whether ``name`` is a ``module:factory`` target rather than a catalogue name."""
    return ":" in str(name)


def load_factory(target: str) -> nn.Module:
    """Import ``module:factory`` and call the factory: the user's ``nn.Module``."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"{target!r}: give the model as package.module:factory")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:  # like `python -m`: the current directory first
        sys.path.insert(0, cwd)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} ({exc}); run densify from the directory "
                         "that holds it, or put that directory on PYTHONPATH") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr!r}; name a function or class "
                             "that returns the model") from None
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"{target} is a {type(obj).__name__}, not callable; name a function or "
                         "class that returns the model")
    try:
        model = obj()
    except Exception as exc:  # the user's code: bad input to densify (its traceback under -v)
        log.info("%s() raised:", target, exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"{target}() raised {type(exc).__name__}: {first}; fix the factory (it "
                         "is called without arguments; rerun with -v for its traceback)") from None
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


def load_model(name: str | Classifier | nn.Module, weights: str | Path | None = None, *,
               input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, classes: str | Path | None = None,
               categories: Sequence[str] | None = None) -> Classifier:
    """Any model (a catalogue name, a ``module:factory`` target, a :class:`Classifier`, an
    ``nn.Module``) as a :class:`Classifier`, with the overrides applied.

    ``weights``: None (a catalogue model's trained weights when it has any, else random; a
    user's model as its factory built it), ``"DEFAULT"``, ``"random"`` or a state-dict path.
    ``input_size`` is ``(H, W)`` or ``(C, H, W)``; class names come from ``categories`` or a
    ``classes`` file (one name per line).
    """
    if isinstance(name, Classifier):
        clf = name
    elif isinstance(name, nn.Module):
        clf = _user_classifier(name, weights, input_size)
    elif not is_factory(name):
        clf = load_classifier(name, weights)
    else:
        clf = _user_classifier(name, weights, input_size)
    name, card = clf.spec.name, clf.card
    size = None if input_size is None else (
        tuple(input_size) if len(input_size) == 3 else (card.input_size[0], *input_size))
    if categories is None and classes is not None:
        categories = read_classes(classes)
    card = card.replace(input_size=size, mean=None if mean is None else tuple(mean),
                        std=None if std is None else tuple(std),
                        categories=None if categories is None else tuple(map(str, categories)))
    channels = card.input_size[0]
    if len(card.mean) not in (1, channels) or len(card.std) not in (1, channels):
        raise ModelError(f"{name} reads {channels} channel(s): give --mean and --std with "
                         f"{channels} value(s) each")
    spec = dataclasses.replace(clf.spec, input_size=card.input_size, mean=card.mean, std=card.std,
                               card=card)
    return Classifier(clf.model, spec, list(card.categories), clf.weights, clf.random, card)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which model, with which weights and card overrides: plain, picklable data that the command
    line builds once and a Ray worker loads with :meth:`load` exactly as the CLI does.

    ``categories``: class names (a ``--classes`` file is read where the choice is made);
    ``search_path``: a directory to import a ``module:factory`` target from (the caller's
    current directory, so that a worker started elsewhere finds it). A weights file is kept as
    an absolute path, for the same reason.
    """

    model: str = "lenet5-digits"
    weights: str | None = None
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    categories: tuple[str, ...] | None = None
    search_path: str | None = dataclasses.field(default_factory=os.getcwd)

    def __post_init__(self):
        if self.weights is not None and Path(self.weights).exists():
            object.__setattr__(self, "weights", str(Path(self.weights).resolve()))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))

    def load(self) -> Classifier:
        """:func:`load_model` with these values."""
        extra = [] if self.search_path is None or self.search_path in sys.path else [
            self.search_path]
        sys.path[:0] = extra
        try:
            return load_model(self.model, self.weights, input_size=self.input_size,
                              mean=self.mean, std=self.std, categories=self.categories)
        finally:
            for path in extra:
                sys.path.remove(path)


def _user_classifier(target: str | nn.Module, weights, input_size) -> Classifier:
    if isinstance(target, nn.Module):
        model, target = target.eval(), type(target).__name__
        source = "the given module's weights"
    else:
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
