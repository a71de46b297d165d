"""Quality evaluation: generated vs real nuclear morphometrics, spot footprints, baselines, CLI."""

import json

import numpy as np
import pytest

from napari_gdt.analysis import quality
from napari_gdt.rendering.tiles import Region


def _he_with_nuclei(H, W, seed=0, density_map=None):
    """Pink tissue with dark round nuclei whose density follows ``density_map`` (values in [0, 1])."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.float32)
    img[:] = (0.93, 0.75, 0.85)
    yy, xx = np.mgrid[0:H, 0:W]
    n = int(H * W / 150)
    ys, xs = rng.uniform(0, H, n), rng.uniform(0, W, n)
    for y, x in zip(ys, xs):
        p = 0.5 if density_map is None else density_map(y, x)
        if rng.random() > p:
            continue
        r = rng.uniform(2.5, 4.0)
        y0, y1, x0, x1 = int(max(0, y - 5)), int(min(H, y + 6)), int(max(0, x - 5)), int(min(W, x + 6))
        d = (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 <= r * r
        img[y0:y1, x0:x1][d] = (0.35, 0.25, 0.6)
    return img


class _Echo:
    """A renderer stand-in that 'generates' a given image (to test the metric, not a model)."""

    def __init__(self, img, shape_px):
        self.img, self.shape_px = img, shape_px

    def check_region(self, region):
        return region or Region(0, self.shape_px[0], 0, self.shape_px[1])

    def render_region(self, region, progress=None):
        return self.img[region.y0 : region.y1, region.x0 : region.x1]


class _Bundle:
    px_per_bin = 8
    um_per_px = 0.5
    output_kind = "he"
    card = {"name": "echo"}


def _canvas_with_spots(H, W, bin_px=8, spots=None, d=40.0):
    from napari_gdt.expression.canvas import ExpressionCanvas

    c = ExpressionCanvas(
        np.ones((1, H // bin_px, W // bin_px), np.float32), ["g"], bin_um=4.0, affine=np.diag([bin_px, bin_px, 1.0])
    )
    if spots is not None:
        c.meta["spots"] = {"centres_px": spots, "diameter_px": d}
    return c


def test_identical_image_scores_perfectly_and_beats_baseline():
    H = W = 256

    def dens(y, x):
        return 0.1 + 0.8 * (x / W)

    real = _he_with_nuclei(H, W, density_map=dens)
    spots = [[y, x] for y in range(30, 230, 50) for x in range(30, 230, 50)]
    c = _canvas_with_spots(H, W, spots=spots)
    res = quality.evaluate(_Bundle(), c, (real * 255).astype(np.uint8), renderer=_Echo(real, (H, W)), region=Region(0, H, 0, W))
    for k in ("nuclei_density_ratio", "nuclear_area_ratio", "area_fraction_ratio"):
        assert res[k] == pytest.approx(1.0, abs=0.02), k
    assert res["tile_spearman_nuclei"] > 0.9 and res["tile_spearman_area_fraction"] > 0.9
    assert res["units"] == "spot footprints" and res["n_units"] == 16
    assert set(quality.KEYS) <= set(res["baseline"])
    assert all(res["better_than_baseline"].values())
    json.dumps(res)  # JSON-safe (no NaN objects, no arrays)


def test_sparser_generated_image_is_measured_as_such():
    H = W = 256
    real = _he_with_nuclei(H, W, seed=1, density_map=lambda y, x: 0.8)
    gen = _he_with_nuclei(H, W, seed=2, density_map=lambda y, x: 0.3)
    c = _canvas_with_spots(H, W)  # no spots: 256 px tiles -> use smaller tiles
    res = quality.evaluate(_Bundle(), c, (real * 255).astype(np.uint8), renderer=_Echo(gen, (H, W)), tile_px=64)
    assert 0.25 < res["nuclei_density_ratio"] < 0.6
    assert res["units"] == "tiles of 64 px" and res["n_units"] == 16


def test_spot_units_and_tissue_region_map_image_px_to_output_px():
    from napari_gdt.expression.canvas import ExpressionCanvas

    # bins of 32 image px, 16 output px per bin: output px = image px / 2
    c = ExpressionCanvas(np.zeros((1, 100, 100), np.float32), ["g"], bin_um=20.0, affine=np.diag([32.0, 32.0, 1.0]))
    c.meta["spots"] = {"centres_px": [[1000.0, 2000.0], [1200.0, 2300.0], [30.0, 30.0]], "diameter_px": 140.0}
    centres, d = quality.spot_units(c, 16, Region(0, 1600, 0, 1600))
    assert d == pytest.approx(70.0)
    np.testing.assert_allclose(centres, [[500.0, 1000.0], [600.0, 1150.0]])  # the spot at the edge is dropped
    r = quality.tissue_region(c, 16, (1600, 1600))
    assert (r.y0, r.x0) == (0, 0) and r.y1 == pytest.approx(670, abs=1) and r.x1 == pytest.approx(1220, abs=1)


def test_record_validation_updates_card_only(tmp_path):
    from safetensors.torch import load_file

    from napari_gdt.models.bundle import read_card, save_bundle
    from napari_gdt.synthetic import untrained_bundle

    b = untrained_bundle(stage_channels=(8, 8), emb_ch=8)
    p = tmp_path / "m.safetensors"
    save_bundle(p, b.model, b.genes, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]})
    before = load_file(str(p))
    quality.record_validation(p, "C5", {"nuclei_density_ratio": 0.9}, command="napari-gdt evaluate ...")
    card = read_card(p)
    assert card["validation"]["morphometrics"]["C5"]["nuclei_density_ratio"] == 0.9
    after = load_file(str(p))
    assert all((before[k] == after[k]).all() for k in before)


def test_evaluate_cli_json_keys(tmp_path, capsys):
    from skimage.io import imsave

    from napari_gdt.cli import main
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    c = synthetic_canvas((40, 40), seed=0)
    c.affine = np.diag([8.0, 8.0, 1.0])  # 8 image px per bin; the model paints 4 px per bin
    c.to_ome_zarr(tmp_path / "c.ome.zarr")
    b = untrained_bundle(c.genes, stage_channels=(8, 8), emb_ch=8)
    save_bundle(tmp_path / "m.safetensors", b.model, b.genes, um_per_px=0.5, output={"kind": "he", "channels": ["R", "G", "B"]})
    real = _he_with_nuclei(320, 320)
    imsave(tmp_path / "real.png", (real * 255).astype(np.uint8), check_contrast=False)
    rc = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "m.safetensors"),
            "--expression",
            str(tmp_path / "c.ome.zarr"),
            "--image",
            str(tmp_path / "real.png"),
            "--json",
            "--tile",
            "16",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    for k in quality.KEYS:
        assert k in res and k in res["baseline"]
    assert res["real"]["count"] > 10
    rc = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "m.safetensors"),
            "--expression",
            str(tmp_path / "c.ome.zarr"),
            "--image",
            str(tmp_path / "nope.png"),
        ]
    )
    assert rc == 2 and "nope.png: no such image file" in capsys.readouterr().err
