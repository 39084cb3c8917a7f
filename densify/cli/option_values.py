"""The parsed options as the two values every scanning command passes on: the model (one
:class:`densify.models.user.ModelChoice`, or a tuple of them for an ensemble) and one
:class:`densify.scan.settings.ScanSettings`.

Re-exported by :mod:`densify.cli.options`, where the options themselves are defined.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

__all__ = ["SETTING_OPTIONS", "MODEL_OPTIONS", "model_choices", "settings_options"]


def model_choices(values: dict) -> list[dict]:
    """The ModelChoice fields of each model: ``values`` as is for one ``--model``, else one
    dict per repeated ``--model`` with its ``--weights`` (one for all, or one each)."""
    names, weights = values["model"], values.get("weights")
    if isinstance(names, str):
        return [values]
    weights = tuple(weights or ())
    if len(weights) not in (0, 1, len(names)):
        raise click.BadParameter(f"{len(weights)} values for {len(names)} models; give one for "
                                 "all or one per --model", param_hint="--weights")
    return [{**values, "model": name, "weights": (weights[i] if len(weights) == len(names)
                                                  else weights[0] if weights else None)}
            for i, name in enumerate(names)]


#: click parameter -> ScanSettings field, for every option that is a scan setting.
SETTING_OPTIONS = {"scales": "scales", "flip": "flip", "object_sizes": "object_sizes",
                   "output_stride": "output_stride", "device": "device",
                   "precision": "precision", "max_memory": "max_memory", "threads": "threads",
                   "scores_output": "scores", "boxes_output": "boxes", "box_format": "box_format",
                   "batch_size": "batch_size"}

#: click parameter -> ModelChoice field.
MODEL_OPTIONS = {"model": "model", "weights": "weights", "input_size": "input_size",
                 "mean": "mean", "std": "std", "classes_file": "categories"}


def settings_options(fn: Callable) -> Callable:
    """Turn the parsed options into two values, built once here and passed on unchanged to the
    scanner, ``evaluate`` and the Ray workers: ``model`` (a :class:`densify.models.user.
    ModelChoice`, or a tuple of them for several ``--model``: an ensemble) and ``settings`` (a
    :class:`densify.scan.settings.ScanSettings`). Without ``--output-stride`` the stride is
    :func:`densify.cli._scanning.default_stride` (an ensemble's: each model's, when the scanner is
    made); with ``--threads`` absent it is chosen by the runtime's rule when the command runs.
    Apply it above (after) the option decorators."""

    @functools.wraps(fn)
    def command(*args, **kwargs):
        from ..models.user import ModelChoice
        from ..scan.settings import ScanSettings
        from ._scanning import default_stride

        choices = [ModelChoice(**v) for v in model_choices(
            {MODEL_OPTIONS[k]: kwargs.pop(k) for k in list(kwargs) if k in MODEL_OPTIONS})]
        values = {SETTING_OPTIONS[k]: kwargs.pop(k) for k in list(kwargs) if k in SETTING_OPTIONS}
        if values.get("output_stride", 0) is None and len(choices) == 1:  # an ensemble: each
            values["output_stride"] = default_stride(choices[0].model)  # model's own (_scanning)
        model = choices[0] if len(choices) == 1 else tuple(choices)
        return fn(*args, model=model, settings=ScanSettings(**values), **kwargs)

    return command
