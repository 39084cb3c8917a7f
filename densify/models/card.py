"""The model card: everything densify needs to read a classifier's input and outputs, typed.

One :class:`ModelCard` carries the facts from the catalogue (or a user's model and options) to
the scanner; no function re-lists them. A project card's JSON (``densify/models/data/*.json``)
becomes a card in one place (:meth:`ModelCard.from_dict`), and a user's overrides are applied
with :meth:`ModelCard.replace` (``dataclasses.replace``), as timm does with its
``PretrainedCfg``. Importing this module does not import torch.

Examples:
    >>> card = ModelCard((1, 28, 28), (0.5,), (0.25,), categories=("0", "1"), threshold=0.9)
    >>> card.replace(mean=(0.4,), std=None).mean, card.replace(std=None).std
    ((0.4,), (0.25,))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from ..errors import ModelError

__all__ = ["ModelCard"]


@dataclass(frozen=True)
class ModelCard:
    """How to read one classifier.

    Attributes:
        input_size: canonical input ``(C, H, W)``: the window one classification sees.
        mean, std: per-channel normalization of RGB (or gray) values in [0, 1].
        categories: class names, index-aligned with the scores (empty: unknown; the scanner
            then uses ``"0"``, ``"1"``, ...).
        background_class: the class that never yields boxes, or None.
        object_height: the object's height in pixels inside the window (detectors), or None.
        box_aspect: the object's width / height inside the window.
        object_sizes: ``(min, max)`` heights in image pixels the model is meant to find.
        threshold: the recommended detection threshold (None: 0.5).
        scores_output, boxes_output: for multi-output models, the outputs (index or key) that
            hold class scores and box regressions.
        box_format: ``"offsets"`` or ``"deltas"`` for ``boxes_output`` (None: offsets).
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: tuple[str, ...] = ()
    background_class: int | None = None
    object_height: float | None = None
    box_aspect: float = 1.0
    object_sizes: tuple[float, float] | None = None
    threshold: float | None = None
    scores_output: Hashable | None = None
    boxes_output: Hashable | None = None
    box_format: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelCard:
        """A card from a project card's JSON; keys it does not know (training notes) are
        ignored, ``outputs: {"scores", "boxes"}`` fill the two output fields."""
        try:
            outputs = data.get("outputs") or {}
            sizes = data.get("object_sizes")
            return cls(
                tuple(int(v) for v in data["input_size"]), tuple(map(float, data["mean"])),
                tuple(map(float, data["std"])), tuple(str(c) for c in data.get("categories", ())),
                data.get("background_class"), _float(data.get("object_height")),
                float(data.get("box_aspect", 1.0)),
                None if sizes is None else (float(sizes[0]), float(sizes[1])),
                _float(data.get("threshold")), outputs.get("scores"), outputs.get("boxes"),
                data.get("box_format"))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"bad model card ({type(exc).__name__}: {exc}); a card needs "
                             "input_size, mean and std") from None

    def replace(self, **overrides) -> ModelCard:
        """A copy with the given fields replaced; None values leave a field as it is (the
        options a user did not give)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def facts(self) -> dict:
        """The card as JSON-able data, leaving out unset fields and the class list."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "categories" and value is not None and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _float(value) -> float | None:
    return None if value is None else float(value)
