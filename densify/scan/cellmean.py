"""Maps of several models that look at the same windows, averaged cell by cell.

An ensemble's result (:mod:`densify.scan.ensemble`) holds every member's maps. Two maps with the
same pyramid level, geometry and flip come from two members whose cells see exactly the same
windows (a net of one architecture with other weights, or of the same window and stride): such
maps are averaged cell by cell, weighted by their shares, before detection proposes boxes, as
OverFeat averages its networks' outputs. Maps with no such partner (another window or stride)
stay as they are, and their boxes are pooled with the rest. One model never has two maps with
the same level and flip, so its maps come back unchanged.

Box regression of an averaged map: the weighted mean of the regressions of the members that
have one of the same shape and format as the first such member (the others, without a box head,
have no say on boxes); None when no member has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from .maps import ScaleMap

__all__ = ["average_maps"]


def average_maps(maps: Sequence[ScaleMap], weights: Sequence[float] | None = None
                 ) -> tuple[ScaleMap, ...]:
    """``maps`` with the maps of the same level, geometry and flip replaced by their weighted
    mean (module docstring), in order of first occurrence; ``weights``: each map's share
    (:attr:`densify.scan.result.ScanResult.weights`), None: equal.

    Examples:
        >>> import torch
        >>> from densify.convert.geometry import Geometry
        >>> from densify.scan.pyramid import levels
        >>> level, g = levels((8, 8), (4, 4), (2, 2), scales=[1.0])[0], Geometry((4, 4), (2, 2))
        >>> a = ScaleMap(level, g, torch.tensor([[[0.2]], [[0.8]]]))
        >>> b = ScaleMap(level, g, torch.tensor([[[0.6]], [[0.4]]]))
        >>> [m.probs.flatten().tolist() for m in average_maps([a, b], [0.75, 0.25])]
        [[0.30000001192092896, 0.699999988079071]]
    """
    shares = [1.0] * len(maps) if weights is None else [float(w) for w in weights]
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(maps):
        groups.setdefault((m.level, m.geometry, m.flipped, m.cells), []).append(i)
    if all(len(group) == 1 for group in groups.values()):
        return tuple(maps)
    return tuple(maps[group[0]] if len(group) == 1 else
                 _mean([maps[i] for i in group], [shares[i] for i in group])
                 for group in groups.values())


def _mean(maps: list[ScaleMap], shares: list[float]) -> ScaleMap:
    probs = _weighted([m.probs for m in maps], shares)
    boxed = [i for i, m in enumerate(maps) if m.regression is not None]
    if not boxed:
        return dataclasses.replace(maps[0], probs=probs)
    first = maps[boxed[0]]
    same = [i for i in boxed if maps[i].regression.shape == first.regression.shape
            and maps[i].box_format == first.box_format]
    regression = _weighted([maps[i].regression for i in same], [shares[i] for i in same])
    return dataclasses.replace(maps[0], probs=probs, regression=regression,
                               box_format=first.box_format)


def _weighted(values: list[torch.Tensor], shares: list[float]) -> torch.Tensor:
    """``Σ s_i · v_i / Σ s_i`` in float64, back to float32."""
    if sum(shares) <= 0:  # members of weight 0 only: count them equally
        shares = [1.0] * len(shares)
    total = sum(shares)
    out = torch.zeros(values[0].shape, dtype=torch.float64)
    for value, share in zip(values, shares, strict=True):
        out += (share / total) * value.double()
    return out.float()
