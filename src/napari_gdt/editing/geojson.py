"""Regions from GeoJSON annotations (QuPath "Export objects as GeoJSON", and similar tools).

Annotations drawn on the paired real image (H&E, DAPI) in QuPath, or any GeoJSON
``Polygon``/``MultiPolygon`` features in that image's pixel coordinates (x right,
y down, pixel corners at integers), become named regions on the expression bin grid:

* a feature's region name is its QuPath classification (``properties.classification.name``),
  else ``properties.name``, else ``annotation N``; features with the same name are merged,
  so every "Tumor" annotation becomes one region ``Tumor``;
* holes (inner rings) are cut out; a bin belongs to a region when its centre lies inside
  (the same rule as ``polygon`` regions);
* the canvas affine places the image: continuous image coordinates -> bins -> output px;
* points and lines are skipped (and counted); a feature that covers no bin is an error that
  names it (usually coordinates of another image or of a downsampled export).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RegionError
from .regions import polygon_mask

__all__ = ["read_geojson_regions", "geojson_to_labels"]


def _features(doc, where: str) -> list[dict]:
    if isinstance(doc, list):
        out = []
        for d in doc:
            out += _features(d, where)
        return out
    if not isinstance(doc, dict) or "type" not in doc:
        raise RegionError(f"{where}: not GeoJSON (expected a FeatureCollection, Feature, geometry or a list of them)")
    t = doc["type"]
    if t == "FeatureCollection":
        return _features(doc.get("features", []), where)
    if t == "Feature":
        return [doc]
    return [{"type": "Feature", "geometry": doc, "properties": {}}]  # a bare geometry


def _name(props: dict, i: int) -> str:
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, str) and cls:
        return cls
    if props.get("name"):
        return str(props["name"])
    return f"annotation {i + 1}"


def read_geojson_regions(path, canvas_affine, n_bins: tuple[int, int], px_per_bin: float) -> dict[str, np.ndarray]:
    """Named bin masks ``{name: bool (Hb, Wb)}`` from a GeoJSON file of image-pixel annotations.

    ``canvas_affine`` maps continuous bin coordinates ``(y, x, 1)`` to continuous image
    coordinates (``ExpressionCanvas.affine``); ``n_bins`` is the canvas' ``(Hb, Wb)``.
    Names are in order of first appearance. See the module docstring for the rules.
    """
    p = Path(path)
    if not p.is_file():
        raise RegionError(f"{p}: no such GeoJSON file")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RegionError(f"{p}: not valid JSON ({e})") from None
    feats = _features(doc, str(p))
    to_out = float(px_per_bin) * np.linalg.inv(np.asarray(canvas_affine, dtype=float))  # image (y, x, 1) -> output px

    def ring_px(ring, i):
        a = np.asarray(ring, dtype=float)
        if a.ndim != 2 or a.shape[1] < 2 or len(a) < 3:
            raise RegionError(f"{p}: feature {i + 1}: a polygon ring needs at least 3 [x, y] points")
        yx1 = np.stack([a[:, 1], a[:, 0], np.ones(len(a))])  # GeoJSON is [x, y]
        return (to_out @ yx1)[:2].T

    masks: dict[str, np.ndarray] = {}
    skipped = 0
    for i, f in enumerate(feats):
        g = f.get("geometry") or {}
        t = g.get("type")
        if t == "Polygon":
            polys = [g.get("coordinates", [])]
        elif t == "MultiPolygon":
            polys = g.get("coordinates", [])
        else:
            skipped += 1
            continue
        name = _name(f.get("properties") or {}, i)
        m = np.zeros(tuple(n_bins), dtype=bool)
        for rings in polys:
            if not rings:
                continue
            part = polygon_mask(n_bins, px_per_bin, ring_px(rings[0], i))
            for hole in rings[1:]:
                part &= ~polygon_mask(n_bins, px_per_bin, ring_px(hole, i))
            m |= part
        if not m.any():
            raise RegionError(
                f"{p}: feature {i + 1} ({name!r}) covers no bin of the canvas ({n_bins[0]} x {n_bins[1]} bins): "
                "are its coordinates in the pixels of the full-resolution image the canvas is registered to?"
            )
        masks[name] = masks[name] | m if name in masks else m
    if not masks:
        raise RegionError(f"{p}: no Polygon or MultiPolygon feature ({skipped} other feature(s) skipped)")
    return masks


def geojson_to_labels(path, canvas, px_per_bin: float, start: int = 1) -> tuple[np.ndarray, dict[str, int]]:
    """A label image on the bin grid and ``{name: value}`` from GeoJSON annotations of ``canvas``' image.

    Values start at ``start`` in order of first appearance; where regions overlap, the later
    one wins. Write the image with :func:`~napari_gdt.editing.regions.write_labels` and use
    ``{"labels": FILE, "value": v}`` regions in a recipe.
    """
    masks = read_geojson_regions(path, canvas.affine, canvas.n_bins, px_per_bin)
    labels = np.zeros(canvas.n_bins, dtype=np.int32)
    values = {}
    for k, (name, m) in enumerate(masks.items()):
        values[name] = start + k
        labels[m] = start + k
    return labels, values
