"""Figure renderer and `napari-gdt figure` (no Qt), screenshot scale bar."""

from __future__ import annotations

import json

import numpy as np
import pytest

UM = 0.5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved untrained bundle, a 12x12-bin canvas with an affine to a 'real' image, and the image."""
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    d = tmp_path_factory.mktemp("fig")
    canvas = synthetic_canvas((12, 12), seed=3)
    # bins -> real px: 8 real px per bin, offset (5, 7) real px
    canvas.affine = np.array([[8.0, 0, 5], [0, 8.0, 7], [0, 0, 1]])
    b = untrained_bundle(canvas.genes, out_channels=3, um_per_px=UM, stage_channels=(32, 24, 16, 16), emb_ch=32)
    model_path = d / "m.safetensors"
    save_bundle(model_path, b.model, b.genes, um_per_px=UM, output={"kind": "he", "channels": ["R", "G", "B"]}, tile_px=64)
    canvas_path = d / "c.ome.zarr"
    canvas.to_ome_zarr(canvas_path)
    rng = np.random.default_rng(0)
    real = (rng.random((12 * 8 + 20, 12 * 8 + 20, 3)) * 255).astype(np.uint8)
    from skimage.io import imsave

    real_path = d / "real.png"
    imsave(real_path, real, check_contrast=False)
    recipe = d / "recipe.json"
    recipe.write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"r": {"rect": [16, 16, 48, 48]}},
                "edits": [{"op": "scale", "region": "r", "genes": ["EPCAM", "KRT19", "ERBB2"], "factor": 4.0}],
            }
        )
    )
    return {
        "dir": d,
        "model": model_path,
        "canvas": canvas_path,
        "real": real_path,
        "real_arr": real,
        "recipe": recipe,
        "canvas_obj": canvas,
    }


def test_resample_to_grid_affine_exact():
    from napari_gdt.export.figure import resample_to_grid

    img = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    # grid (r, c) -> image (2r + 3, 2c + 1): nearest picks exact pixels
    M = np.array([[2.0, 0, 3], [0, 2.0, 1], [0, 0, 1]])
    out = resample_to_grid(img, M, (10, 12), order=0)
    np.testing.assert_array_equal(out, img[3:23:2, 1:25:2])
    # linear, no smoothing at step 1: half-pixel shifts average neighbours
    M = np.array([[1.0, 0, 0.5], [0, 1.0, 0], [0, 0, 1]])
    out = resample_to_grid(img, M, (5, 5), order=1)
    np.testing.assert_allclose(out, (img[0:5, 0:5] + img[1:6, 0:5]) / 2)
    # outside the image: zeros; RGB keeps channels
    rgb = np.ones((8, 8, 3), np.uint8) * 200
    out = resample_to_grid(rgb, np.array([[1.0, 0, -4], [0, 1.0, 0], [0, 0, 1]]), (8, 8), order=0)
    assert out.shape == (8, 8, 3) and (out[:3] == 0).all() and (out[5:] == 200).all()


def test_real_panel_follows_canvas_affine():
    from napari_gdt.export.figure import real_panel_image
    from napari_gdt.rendering.tiles import Region

    # real image whose value encodes its column: real col = 2 * bin col + 10, ppb = 4 -> real col = x/2 + 10
    real = np.tile(np.arange(300, dtype=np.uint16)[None, :], (300, 1))
    A = np.array([[2.0, 0, 10], [0, 2.0, 10], [0, 0, 1]])
    img = real_panel_image(real, A, 4, Region(0, 8, 40, 56))
    # output px x (centre x + 0.5) -> continuous real col (x + 0.5)/2 + 10 -> pixel-centre index minus 0.5
    expected = ((np.arange(40, 56) + 0.5) / 2 + 10 - 0.5) / 65535.0
    assert img.shape == (8, 16)
    np.testing.assert_allclose(img[3], expected, atol=1e-6)


def test_expression_region_and_composite(tiny):
    from napari_gdt.errors import CanvasError
    from napari_gdt.export.figure import expression_composite, expression_region
    from napari_gdt.rendering.tiles import Region

    c = tiny["canvas_obj"]
    e = expression_region(c, ["EPCAM", "VIM"], Region(8, 40, 20, 52), 16)
    raw = np.asarray(c.data)
    assert e.shape == (2, 32, 32)
    assert e[0, 0, 0] == raw[c.genes.index("EPCAM"), 0, 1] and e[1, 31, 31] == raw[c.genes.index("VIM"), 2, 3]
    rgb = expression_composite(e, colours=[(1, 0, 0), (0, 0, 1)], limits=[(0, 1e9), (0, 1e-9)])
    assert rgb.shape == (32, 32, 3) and rgb[..., 1].max() == 0
    np.testing.assert_allclose(rgb[..., 2], (e[1] > 0).astype(np.float32))
    with pytest.raises(CanvasError, match="gene\\(s\\) not in the canvas: NOPE"):
        expression_region(c, ["NOPE"], Region(0, 16, 0, 16), 16)


def test_compose_figure_layout_formats_and_errors(tmp_path):
    from skimage.io import imread

    from napari_gdt.errors import GDTError
    from napari_gdt.export.figure import Panel, compose_figure, nice_scalebar_um

    a = np.zeros((60, 80, 3), np.float32)
    a[:, :40] = 1.0
    panels = [
        Panel("generated", "generated", a),
        Panel("difference", "diff", a[..., 0], heat=True, colorbar_label="x"),
        Panel("expression", "genes", a, legend=[("EPCAM", (1, 0, 1))]),
    ]
    info = compose_figure(panels, tmp_path / "f.png", um_per_px=UM, dpi=100, panel_width_in=2.0)
    img = imread(tmp_path / "f.png")
    assert img.shape[:2] == info.size_px
    assert len(info.panel_boxes) == 3 and info.panels == ["generated", "difference", "expression"]
    x0, y0, x1, y1 = info.panel_boxes[0]
    assert x1 - x0 == 200 and y1 - y0 == 150  # 2 in x 1.5 in at 100 dpi
    # the panel's left half is white, right half black, where the box says
    assert img[y0 + 10, x0 + 20, :3].min() > 240 and img[y0 + 10, x1 - 20, :3].max() < 15
    assert info.scalebar_um == nice_scalebar_um(80 * UM)
    for ext in (".tif", ".pdf"):
        i2 = compose_figure(panels, tmp_path / f"f{ext}", um_per_px=UM, dpi=50, scalebar_um=5)
        assert (tmp_path / f"f{ext}").stat().st_size > 1000 and i2.scalebar_um == 5
    assert imread(tmp_path / "f.tif").shape[:2] == compose_figure(panels, tmp_path / "g.tif", um_per_px=UM, dpi=50).size_px
    with pytest.raises(GDTError, match=r"f\.gif: unsupported figure extension '\.gif'"):
        compose_figure(panels, tmp_path / "f.gif", um_per_px=UM)
    with pytest.raises(GDTError, match="panels differ in size"):
        compose_figure([panels[0], Panel("x", "x", a[:10])], tmp_path / "h.png", um_per_px=UM)
    with pytest.raises(GDTError, match="scalebar-um must be > 0"):
        compose_figure(panels, tmp_path / "h.png", um_per_px=UM, scalebar_um=-1)


def test_nice_scalebar():
    from napari_gdt.export.figure import nice_scalebar_um

    assert nice_scalebar_um(400) == 100
    assert nice_scalebar_um(90) == 20
    assert nice_scalebar_um(1.0) == 0.2
    assert nice_scalebar_um(1000, fraction=0.2) == 200


def test_burn_scalebar_length_and_errors():
    from napari_gdt.errors import GDTError
    from napari_gdt.export.screenshot import burn_scalebar

    img = np.zeros((200, 300, 3), np.uint8)
    out, um, px = burn_scalebar(img, um_per_px=0.25, length_um=20)
    assert px == 80 and um == 20
    white_rows = np.nonzero((out == 255).all(-1).sum(1) == 80)[0]
    assert len(white_rows) >= 3  # the bar: rows of exactly 80 white pixels (text rows differ)
    light = np.full((200, 300, 3), 250, np.uint8)
    out2, _, _ = burn_scalebar(light, 0.25, 20)
    assert ((out2 == 0).all(-1).sum(1) == 80).any()  # black bar on a light background
    with pytest.raises(GDTError, match="does not fit a 300 px wide image"):
        burn_scalebar(img, 1.0, 1000)


def run_cli(args, capsys):
    from napari_gdt.cli import main

    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_figure_all_panels(tiny, capsys, tmp_path):
    from skimage.io import imread

    out = tmp_path / "fig.png"
    rc, so, se = run_cli(
        [
            "figure",
            "--model",
            str(tiny["model"]),
            "--expression",
            str(tiny["canvas"]),
            "--region",
            "0:192,0:192",
            "--out",
            str(out),
            "--edits",
            str(tiny["recipe"]),
            "--image",
            str(tiny["real"]),
            "--genes",
            "EPCAM,KRT19",
            "--dpi",
            "80",
            "--scalebar-um",
            "10",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert rc == 0, se
    assert "5 panels (real, generated, edited, difference, expression)" in so and "scale bar 10 µm" in so
    img = imread(out)
    # 5 panels of 2.4 in at 80 dpi, plus margins, gaps and one colour bar
    assert img.shape[1] > 5 * 2.4 * 80 and img.shape[0] > 2.4 * 80
    # tiles away from the edit come from the shared cache
    computed, cached = (int(v) for v in so.split("; ")[-1].replace(" tiles computed,", "").replace(" from cache", "").split())
    assert cached > 0 and computed + cached == 2 * 9


def test_cli_figure_matches_renderer_pixels(tiny, capsys, tmp_path):
    """The generated panel is the renderer's output (same pixels as napari-gdt render)."""
    from napari_gdt.export.figure import render_figure
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b = load_bundle(tiny["model"])
    c = ExpressionCanvas.from_ome_zarr(tiny["canvas"])
    r = TileRenderer(b, c, device="cpu")
    region = Region(8, 72, 24, 88)
    info = render_figure(
        r, region, tmp_path / "g.png", panels=["generated"], dpi=64, panel_width_in=1.0
    )  # 64 px panel = 64 output px
    from skimage.io import imread

    img = imread(tmp_path / "g.png")[..., :3]
    x0, y0, x1, y1 = info.panel_boxes[0]
    assert (x1 - x0, y1 - y0) == (64, 64)
    ref = (np.clip(r.render_region(region), 0, 1) * 255).astype(float)
    got = img[y0:y1, x0:x1].astype(float)
    # away from the scale bar (lower right), the panel is the rendered region pixel for pixel
    assert np.abs(got[:40] - ref[:40]).max() <= 1.0


def test_cli_figure_errors(tiny, capsys, tmp_path):
    base = [
        "figure",
        "--model",
        str(tiny["model"]),
        "--expression",
        str(tiny["canvas"]),
        "--region",
        "0:64,0:64",
        "--device",
        "cpu",
    ]
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--panels", "generated,bogus"], capsys)
    assert rc == 2 and "unknown panel(s) bogus" in err and err.count("\n") == 1
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--panels", "real"], capsys)
    assert rc == 2 and "panel 'real' needs the paired real image (--image REAL)" in err
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--panels", "generated,edited"], capsys)
    assert rc == 2 and "need an edit recipe (--edits RECIPE)" in err
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--panels", "expression", "--genes", "EPCAM,NOPE"], capsys)
    assert rc == 2 and "--genes names gene(s) not in the canvas: NOPE" in err
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.jpg")], capsys)
    assert rc == 2 and "a.jpg: unsupported figure extension" in err
    rc, _, err = run_cli(
        [
            "figure",
            "--model",
            str(tiny["model"]),
            "--expression",
            str(tiny["canvas"]),
            "--region",
            "0:64,0:999",
            "--out",
            str(tmp_path / "a.png"),
        ],
        capsys,
    )
    assert rc == 2 and "lies outside the canvas" in err
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--image", str(tmp_path / "missing.png")], capsys)
    assert rc == 2 and "missing.png: no such image file" in err
    rc, _, err = run_cli(base + ["--out", str(tmp_path / "a.png"), "--dpi", "0"], capsys)
    assert rc == 2 and "--dpi must be > 0" in err


def test_render_figure_dapi_single_channel(tmp_path):
    """A one-channel (fluorescence) model gives grey generated/edited panels and a heat-map difference."""
    from skimage.io import imread

    from napari_gdt.export.figure import render_figure
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.rendering.tiles import MemoryTileCache, Region, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    c = synthetic_canvas((8, 8), seed=5)
    b = untrained_bundle(c.genes, out_channels=1, um_per_px=0.2, stage_channels=(32, 24, 16, 16), emb_ch=32)
    d = np.asarray(c.data).copy()
    d[:, :4, :4] *= 5
    cache = MemoryTileCache()
    r0 = TileRenderer(b, c, device="cpu", cache=cache)
    r1 = TileRenderer(b, ExpressionCanvas(d, c.genes, c.bin_um), device="cpu", cache=cache)
    info = render_figure(r0, Region(0, 128, 0, 128), tmp_path / "dapi.png", edited_renderer=r1, dpi=60, panel_width_in=2.0)
    assert info.panels == ["generated", "edited", "difference"]
    img = imread(tmp_path / "dapi.png")[..., :3].astype(int)
    x0, y0, x1, y1 = info.panel_boxes[0]
    panel = img[y0:y1, x0 : x1 - 40]  # left of the scale bar
    assert np.abs(panel[..., 0] - panel[..., 1]).max() <= 1 and np.abs(panel[..., 1] - panel[..., 2]).max() <= 1  # grey
    assert info.scalebar_um == 5.0  # 128 px x 0.2 µm = 25.6 µm wide -> 5 µm


@pytest.mark.realdata
def test_real_panel_on_her2st_he(data_dir, tmp_path):
    """The real panel of her2st C5 (he.jpg, 9272 x 9901 px) is the affine-resampled crop, read through open_real_image."""
    from napari_gdt.export.figure import open_real_image, real_panel_image
    from napari_gdt.rendering.tiles import Region

    img = open_real_image(data_dir / "her2st" / "C5" / "he.jpg")
    assert img.shape == (9901, 9272, 3) and img.dtype == np.uint8
    A = np.array([[32.0, 0, 0], [0, 32.0, 0], [0, 0, 1]])  # 32 real px per bin, 16 output px per bin
    region = Region(2000, 2064, 1800, 1864)
    panel = real_panel_image(img, A, 16, region)
    assert panel.shape == (64, 64, 3)
    # output px (y, x) covers real px [2y, 2y + 2): compare with 2 x 2 block means (smoothing blurs a little more)
    crop = img[4000:4128, 3600:3728].astype(np.float32) / 255.0
    blocks = crop.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(panel - blocks).mean() < 0.05
    assert np.corrcoef(panel.ravel(), blocks.ravel())[0, 1] > 0.9
