"""Stage 2, dense net → per-image results: the OverFeat scanner.

Data flow: :mod:`.pyramid` (scales, rounding, padding) → :mod:`.scanner` (:class:`Scanner`: the
dense net per scale, tiled by :mod:`.tiling` under a memory budget) → :mod:`.maps`
(:class:`ScaleMap`: one scale's cell probabilities and their registration to the image) →
:mod:`.heatmap` / :mod:`.detect` (aggregation) → :mod:`.result` (:class:`ScanResult`), which
decides what to draw and hands arrays to :mod:`densify.io.display` and :mod:`densify.io.sheet`
(notebook preview, contact sheet, matplotlib figure). :mod:`.ensemble` (:class:`Ensemble`)
scans with several models of the same classes and averages their results.
"""

from .detect import Detections
from .ensemble import Ensemble
from .maps import ScaleMap
from .pyramid import Level, levels, parse_scales
from .result import ClassScore, ScanResult
from .scanner import Scanner

__all__ = ["Scanner", "Ensemble", "ScanResult", "ScaleMap", "ClassScore", "Detections", "Level", "levels",
           "parse_scales"]
