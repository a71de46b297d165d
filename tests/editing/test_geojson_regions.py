"""Regions from GeoJSON annotations (QuPath exports) on the paired real image."""

import json

import numpy as np
import pytest

from napari_gdt.editing.geojson import geojson_to_labels, read_geojson_regions
from napari_gdt.editing.regions import RegionDef
from napari_gdt.errors import RegionError

# canvas: 20 x 30 bins; bin (i, j) covers image pixels [8i + 4, 8i + 12) x [8j + 4, 8j + 12) (affine: scale 8, offset 4)
A = np.array([[8.0, 0, 4.0], [0, 8.0, 4.0], [0, 0, 1.0]])
NB = (20, 30)
PPB = 16


def _img_box(i0, j0, i1, j1):
    """Image-pixel ring ([x, y]) around bins i0..i1-1, j0..j1-1 (edges on bin borders)."""
    y0, y1, x0, x1 = 8 * i0 + 4, 8 * i1 + 4, 8 * j0 + 4, 8 * j1 + 4
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(rings, cls=None, name=None, multi=False):
    props = {"objectType": "annotation"}
    if cls:
        props["classification"] = {"name": cls, "color": [200, 0, 0]}
    if name:
        props["name"] = name
    geom = {"type": "MultiPolygon", "coordinates": [rings]} if multi else {"type": "Polygon", "coordinates": rings}
    return {"type": "Feature", "geometry": geom, "properties": props}


def test_qupath_export_becomes_named_bin_masks(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            _feature([_img_box(2, 3, 6, 8)], cls="Tumor"),
            _feature([_img_box(10, 20, 12, 25)], cls="Tumor", multi=True),  # a second Tumor annotation: merged
            _feature([_img_box(12, 2, 18, 12), _img_box(14, 5, 16, 8)], cls="Stroma"),  # with a hole
            _feature([_img_box(0, 0, 1, 1)], name="my spot"),  # no class: its name
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]}, "properties": {}},  # skipped
        ],
    }
    p = tmp_path / "annotations.geojson"
    p.write_text(json.dumps(doc))
    masks = read_geojson_regions(p, A, NB, PPB)
    assert list(masks) == ["Tumor", "Stroma", "my spot"]
    tumour = np.zeros(NB, bool)
    tumour[2:6, 3:8] = True
    tumour[10:12, 20:25] = True
    stroma = np.zeros(NB, bool)
    stroma[12:18, 2:12] = True
    stroma[14:16, 5:8] = False
    spot = np.zeros(NB, bool)
    spot[0, 0] = True
    assert np.array_equal(masks["Tumor"], tumour)
    assert np.array_equal(masks["Stroma"], stroma)
    assert np.array_equal(masks["my spot"], spot)
    # the same bins as a polygon region drawn in output px over the generated image
    out_ring = [[y * 1.0, x * 1.0] for y, x in [(2 * PPB, 3 * PPB), (2 * PPB, 8 * PPB), (6 * PPB, 8 * PPB), (6 * PPB, 3 * PPB)]]
    from napari_gdt.synthetic import synthetic_canvas

    c = synthetic_canvas(NB, seed=0)
    c.affine = A
    poly = RegionDef("t", {"polygon": out_ring}).mask(c, PPB)
    assert np.array_equal(poly, tumour & (np.arange(NB[0])[:, None] < 8))
    labels, values = geojson_to_labels(p, c, PPB, start=3)
    assert values == {"Tumor": 3, "Stroma": 4, "my spot": 5}
    assert np.array_equal(labels == 3, tumour) and np.array_equal(labels == 4, stroma)


def test_geojson_errors_name_the_file_and_feature(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(RegionError, match="bad.geojson: not valid JSON"):
        read_geojson_regions(bad, A, NB, PPB)
    with pytest.raises(RegionError, match="nope.geojson: no such GeoJSON file"):
        read_geojson_regions(tmp_path / "nope.geojson", A, NB, PPB)
    pts = tmp_path / "points.geojson"
    pts.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}}],
            }
        )
    )
    with pytest.raises(RegionError, match=r"no Polygon or MultiPolygon feature \(1 other feature\(s\) skipped\)"):
        read_geojson_regions(pts, A, NB, PPB)
    far = tmp_path / "far.geojson"  # e.g. coordinates of another (larger) image
    far.write_text(json.dumps(_feature([_img_box(500, 500, 510, 510)], cls="Tumor")))
    with pytest.raises(RegionError, match=r"feature 1 \('Tumor'\) covers no bin of the canvas \(20 x 30 bins\)"):
        read_geojson_regions(far, A, NB, PPB)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": 1}))
    with pytest.raises(RegionError, match="odd.json: not GeoJSON"):
        read_geojson_regions(odd, A, NB, PPB)
