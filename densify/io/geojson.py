"""Detections as GeoJSON features that QuPath (and GeoJSON tools) import.

Each box becomes a ``Feature`` whose geometry is a closed ``Polygon`` ring
``(x1, y1) → (x2, y1) → (x2, y2) → (x1, y2) → (x1, y1)`` in the slide's level-0 pixels, with
``properties``: ``objectType`` ``"detection"``, ``classification`` ``{"name", "color"}`` (the class
name and an RGB triple, how QuPath stores a class), ``measurements`` ``{"score": p}``, and
``score``/``label`` for other tools. In QuPath: File → Import objects (or drag the file onto the
slide).

Convention: boxes ``(x1, y1, x2, y2)`` in pixels, x right and y down (QuPath's image space).
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .files import write_json

__all__ = ["detection_features", "write_geojson", "read_boxes"]


def _color(name: str) -> list[int]:
    hue = (zlib.crc32(name.encode()) % 360) / 360.0
    return [round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.8, 0.95)]


def detection_features(boxes, scores, labels, categories: Sequence[str]) -> dict:
    """A ``FeatureCollection`` of one feature per box (module docstring).

    Shape:
        ``boxes`` ``(N, 4)`` ``(x1, y1, x2, y2)``; ``scores`` ``(N,)``; ``labels`` ``(N,)`` class
        indices into ``categories``. Arrays or tensors.

    Examples:
        >>> fc = detection_features([[10, 20, 30, 50]], [0.9], [3], [str(d) for d in range(10)])
        >>> f = fc["features"][0]
        >>> f["geometry"]["coordinates"][0][:3], f["properties"]["classification"]["name"]
        ([[10.0, 20.0], [30.0, 20.0], [30.0, 50.0]], '3')
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    features = []
    for (x1, y1, x2, y2), score, label in zip(boxes.round(2).tolist(), scores.tolist(),
                                              labels.tolist(), strict=True):
        name = str(categories[label])
        ring = [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection",
                           "classification": {"name": name, "color": _color(name)},
                           "measurements": {"score": round(score, 5)},
                           "score": round(score, 5), "label": int(label)},
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, collection: dict) -> Path:
    """Write ``collection`` to ``path`` atomically (compact: slides hold many detections)."""
    return write_json(path, collection, indent=None)


def read_boxes(collection: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(boxes (N, 4), scores (N,), class names)`` back from a collection's polygons' bounds."""
    boxes, scores, names = [], [], []
    for f in collection.get("features", []):
        ring = np.asarray(f["geometry"]["coordinates"][0], np.float64)
        boxes.append([*ring.min(0), *ring.max(0)])
        props = f.get("properties", {})
        scores.append(float(props.get("score", props.get("measurements", {}).get("score", 1.0))))
        names.append(str(props.get("classification", {}).get("name", "")))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores), names
