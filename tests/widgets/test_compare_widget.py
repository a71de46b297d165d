"""Comparison view, swipe/blend, morphometrics table + CSV, screenshot and figure export (pytest-qt)."""

from __future__ import annotations

import numpy as np
import pytest

PPB = 16
UM_PER_PX = 0.5
EDIT_BINS = (4, 12, 4, 12)  # rows y0:y1, cols x0:x1 of the scaled block, in bins
EDIT_GENES = ["EPCAM", "KRT19", "ERBB2"]


def scale_edit(canvas, bins, genes, factor):
    """The canvas with ``genes`` multiplied by ``factor`` in a block of bins (a 'scale' edit)."""
    from napari_gdt.expression.canvas import ExpressionCanvas

    try:  # the recipe engine, where it is installed
        import json
        import tempfile
        from pathlib import Path

        from napari_gdt.editing.recipe import apply_recipe_file

        y0, y1, x0, x1 = bins
        recipe = {
            "version": 1,
            "regions": {"r": {"rect": [y0 * PPB, x0 * PPB, y1 * PPB, x1 * PPB]}},
            "edits": [{"op": "scale", "region": "r", "genes": list(genes), "factor": factor}],
        }
        p = Path(tempfile.mkdtemp()) / "recipe.json"
        p.write_text(json.dumps(recipe))
        return apply_recipe_file(p, canvas, px_per_bin=PPB)
    except ImportError:
        pass
    d = np.asarray(canvas.data).copy()
    idx = [canvas.genes.index(g) for g in genes]
    y0, y1, x0, x1 = bins
    d[idx, y0:y1, x0:x1] *= factor
    return ExpressionCanvas(d, canvas.genes, canvas.bin_um, affine=canvas.affine)


def disc_he(shape, centres, radius):
    """An H&E-like image: pink eosin background with dark purple discs (nuclei)."""
    img = np.empty(shape + (3,), np.uint8)
    img[:] = (222, 160, 200)  # eosin pink, darker than glass (mean RGB < 0.82)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = (70, 40, 130)
    return img


@pytest.fixture
def compare_setup(make_napari_viewer, qtbot):
    from napari_gdt._reader import canvas_layer_data
    from napari_gdt.rendering.tiles import MemoryTileCache, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle
    from napari_gdt.widgets.compare import CompareWidget

    canvas = synthetic_canvas((16, 16), seed=1)
    bundle = untrained_bundle(
        canvas.genes, out_channels=3, seed=0, um_per_px=UM_PER_PX, stage_channels=(32, 24, 16, 16), emb_ch=32
    )
    assert bundle.px_per_bin == PPB
    edited = scale_edit(canvas, EDIT_BINS, EDIT_GENES, 4.0)
    cache = MemoryTileCache()
    gen = TileRenderer(bundle, canvas, device="cpu", cache=cache).render_region()
    edi = TileRenderer(bundle, edited, device="cpu", cache=cache).render_region()
    centres = [(40 + 80 * i, 40 + 80 * j) for i in range(3) for j in range(3)]
    real = disc_he((256, 256), centres, radius=8)

    viewer = make_napari_viewer(show=True)  # a shown viewer: hidden ones screenshot black under Xvfb
    for data, kw, _ in canvas_layer_data(canvas, genes=["EPCAM", "KRT19"]):
        kw["affine"] = None
        viewer.add_image(data, scale=(PPB, PPB), **kw)
    viewer.add_image(real, name="real", rgb=True)
    viewer.add_image(gen, name="generated", rgb=True)
    viewer.add_image(edi, name="edited", rgb=True)
    regions = np.zeros((16, 16), np.int32)
    regions[:, :] = 1
    regions[EDIT_BINS[0] : EDIT_BINS[1], EDIT_BINS[2] : EDIT_BINS[3]] = 2
    viewer.add_labels(regions, name="regions", scale=(PPB, PPB))
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    w.set_bundle(bundle)
    w.set_sources(real="real", generated="generated", edited="edited", genes=["EPCAM", "KRT19"])
    return viewer, w, gen, edi, len(centres)


def test_comparison_view_screenshot_and_figure(compare_setup, tmp_path):
    from skimage.io import imread

    viewer, w, gen, edi, _ = compare_setup
    names_before = [l.name for l in viewer.layers]
    visible_before = {l.name: l.visible for l in viewer.layers}
    panels = w.enter_comparison()
    assert panels == ["real", "generated", "edited", "compare: |edited − generated|", "compare: genes"]
    grid = viewer.canvas.grid
    assert grid.enabled
    assert {l.name for l in viewer.layers if l.visible} == set(panels)
    rows, cols = grid.actual_shape(viewer.layers)
    assert rows * cols >= 5
    # panels fill the grid row-major in the order real, generated, edited, difference, genes
    where = [grid.position(viewer.layers.index(n), viewer.layers) for n in panels]
    assert where == [(i // cols, i % cols) for i in range(5)]
    # the lazy difference layer is |edited - generated| averaged over channels
    diff = np.asarray(viewer.layers["compare: |edited − generated|"].data)
    np.testing.assert_allclose(diff, np.abs(edi - gen).mean(-1), atol=1e-6)
    viewer.reset_view()

    shot = tmp_path / "view.png"
    info = w.export_screenshot(shot, size=(360, 640))
    img = imread(shot)
    assert img.shape == (360, 640, 3) and info.size_px == (360, 640)
    assert img.std() > 5  # the grid of panels, not a black canvas
    assert info.scalebar_px > 5 and info.scalebar_um > 0
    zoom = viewer.scene.camera.zoom
    assert info.um_per_screen_px == pytest.approx(
        UM_PER_PX / (zoom * min(360 / viewer.canvas.size[0], 640 / viewer.canvas.size[1]))
    )
    tif = tmp_path / "view.tif"
    info2 = w.export_screenshot(tif, scale=1.5)
    ch, cw = viewer.canvas.size
    assert imread(tif).shape[:2] == (round(ch * 1.5), round(cw * 1.5)) == info2.size_px
    assert viewer.scene.camera.zoom == pytest.approx(zoom)  # camera restored

    fig = tmp_path / "figure.png"
    region = w.current_view_region()
    assert (region.y0, region.y1, region.x0, region.x1) == (0, 256, 0, 256)  # whole data in view, clipped
    finfo = w.export_figure(fig, region=region, dpi=100)
    fimg = imread(fig)[..., :3].astype(float)
    assert fimg.shape[:2] == finfo.size_px
    assert finfo.panels == ["real", "generated", "edited", "difference", "expression"]
    assert len(finfo.panel_boxes) == 5
    widths = {b[2] - b[0] for b in finfo.panel_boxes}
    assert len(widths) == 1  # equal panels, side by side, left to right
    assert all(a[2] < b[0] for a, b in zip(finfo.panel_boxes, finfo.panel_boxes[1:]))

    def crop(box, y0, y1, x0, x1):  # panel box, region in data px (256 px panels)
        bx0, by0, bx1, _ = box
        s = (bx1 - bx0) / 256.0
        return fimg[int(by0 + y0 * s) + 2 : int(by0 + y1 * s) - 2, int(bx0 + x0 * s) + 2 : int(bx0 + x1 * s) - 2]

    y0, y1, x0, x1 = (v * PPB for v in EDIT_BINS)
    g_in, e_in = crop(finfo.panel_boxes[1], y0, y1, x0, x1), crop(finfo.panel_boxes[2], y0, y1, x0, x1)
    inside = np.abs(g_in - e_in).mean()
    assert inside > 1.0, inside  # generated and edited differ where the edit is
    # and they agree far from it (beyond the model's halo): bottom-right corner
    halo = int(np.ceil(w.bundle.model.geometry.halo_px / PPB) + 1) * PPB
    far0 = x1 + halo
    if far0 < 256 - 8:
        outside = np.abs(
            crop(finfo.panel_boxes[1], far0, 256, far0, 256) - crop(finfo.panel_boxes[2], far0, 256, far0, 256)
        ).mean()
        assert outside < inside / 4, (outside, inside)

    w.exit_comparison()
    assert not viewer.canvas.grid.enabled
    assert [l.name for l in viewer.layers] == names_before
    assert {l.name: l.visible for l in viewer.layers} == visible_before


def test_figure_formats_and_errors(compare_setup, tmp_path):
    from napari_gdt.errors import GDTError
    from napari_gdt.rendering.tiles import Region

    _, w, *_ = compare_setup
    w.set_sources(real="", genes=[])
    info = w.export_figure(tmp_path / "f.pdf", region=Region(0, 128, 0, 128), dpi=72)
    assert info.panels == ["generated", "edited", "difference"]
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(GDTError, match=r"f\.jpg: unsupported figure extension '\.jpg'"):
        w.export_figure(tmp_path / "f.jpg", region=Region(0, 128, 0, 128))
    with pytest.raises(GDTError, match=r"v\.bmp: unsupported screenshot extension '\.bmp'"):
        w.export_screenshot(tmp_path / "v.bmp")


def test_shortcut_toggles_comparison(compare_setup):
    from napari_gdt.widgets.compare import SHORTCUT

    viewer, w, *_ = compare_setup
    from napari.utils.key_bindings import coerce_keybinding

    func = viewer.keymap[coerce_keybinding(SHORTCUT)]  # bound on the viewer by the widget
    func(viewer)
    assert w.comparing and viewer.canvas.grid.enabled
    func(viewer)
    assert not w.comparing and not viewer.canvas.grid.enabled


def test_swipe_and_blend(compare_setup):
    viewer, w, _gen, edi, _ = compare_setup
    w.set_swipe("edited", "generated", mode="blend", value=30)
    assert viewer.layers["edited"].opacity == pytest.approx(0.3)
    assert viewer.layers.index("edited") > viewer.layers.index("generated")
    viewer.reset_view()
    w.set_swipe("edited", "generated", mode="swipe", value=50)
    sw = viewer.layers["compare: swipe"]
    assert not viewer.layers["edited"].visible
    data = np.asarray(sw.data)
    assert data.shape == (256, 256, 4)
    view = w.current_view_region(clip=False)
    split = view.x0 + 0.5 * (view.x1 - view.x0)
    cols = np.nonzero(data[0, :, 3] > 0)[0]
    assert cols.max() + 1 == int(np.ceil(split)) and cols.min() == 0  # edited shown left of the line only
    np.testing.assert_allclose(data[:, : cols.max() + 1, :3], edi[:, : cols.max() + 1], atol=1e-6)
    w.swipe_slider.setValue(25)  # moving the slider moves the line
    cols2 = np.nonzero(np.asarray(viewer.layers["compare: swipe"].data)[0, :, 3] > 0)[0]
    assert cols2.max() < cols.max()
    w.clear_swipe()
    assert "compare: swipe" not in viewer.layers
    assert viewer.layers["edited"].visible and viewer.layers["edited"].opacity == pytest.approx(1.0)


def test_morphometrics_table_and_csv(compare_setup, tmp_path):
    import pandas as pd

    from napari_gdt.analysis.morphometrics import compare_table
    from napari_gdt.errors import GDTError
    from napari_gdt.widgets.compare import sample_layer

    viewer, w, gen, edi, n_discs = compare_setup
    with pytest.raises(GDTError, match="no morphometrics table yet"):
        w.export_csv(tmp_path / "none.csv")
    w.region_combo.setCurrentText("regions")
    w.label_spin.setValue(0)  # every labelled pixel: the whole 256 x 256 px
    df = w.measure()
    assert list(df.index) == ["real", "generated", "edited"]
    for k in ("count", "density_per_mm2", "mean_area_um2", "std_area_um2", "area_fraction"):
        assert k in df.columns
    assert df.loc["real", "count"] == n_discs  # the synthetic 'real' image has 9 nuclei
    area = np.pi * 8**2 * UM_PER_PX**2
    assert df.loc["real", "mean_area_um2"] == pytest.approx(area, rel=0.1)
    assert df.loc["real", "density_per_mm2"] == pytest.approx(n_discs / (256 * 256 * UM_PER_PX**2 / 1e6), rel=1e-6)
    # the table shows the same numbers
    assert w.table.rowCount() == 3 and w.table.columnCount() == len(df.columns)
    c = list(df.columns).index("count")
    assert w.table.item(0, c).text() == str(n_discs)
    # it is compare_table on the layers in the region (one implementation)
    ref = compare_table(
        {"real": sample_layer(viewer.layers["real"], w.region_and_mask()[0], 1.0, order=1), "generated": gen, "edited": edi},
        kind="he",
        um_per_px=UM_PER_PX,
    )
    pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-6)

    csv = tmp_path / "morpho.csv"
    w.export_csv(csv)
    back = pd.read_csv(csv, index_col=0)
    assert list(back.index) == ["real", "generated", "edited"]
    np.testing.assert_allclose(back.to_numpy(float), df.to_numpy(float), rtol=1e-9)

    # a labelled sub-region: the edited block (label 2), 8 x 8 bins = 128 x 128 px
    w.label_spin.setValue(2)
    region, mask = w.region_and_mask()
    assert (region.y0, region.y1, region.x0, region.x1) == (64, 192, 64, 192) and mask.all()
    df2 = w.measure()
    assert df2.loc["real", "count"] == 1  # of the discs centred at 40, 120, 200 only (120, 120) lies in 64:192
    w.label_spin.setValue(7)
    with pytest.raises(GDTError, match="Labels layer 'regions' has no pixels with label 7"):
        w.region_and_mask()


def test_sample_layer_matches_cli_real_panel_and_pyramids():
    """The widget samples the real layer (affine diag(ppb) @ inv(A)) exactly as the CLI's real panel (A)."""
    from napari.layers import Image

    from napari_gdt.export.figure import real_panel_image
    from napari_gdt.rendering.tiles import Region
    from napari_gdt.widgets.compare import sample_layer

    rng = np.random.default_rng(0)
    real = (rng.random((300, 320, 3)) * 255).astype(np.uint8)
    A = np.array([[6.0, 0, 11], [0, 6.0, 4], [0, 0, 1]])  # bins -> real px
    layer = Image(real, rgb=True, affine=np.diag([PPB, PPB, 1.0]) @ np.linalg.inv(A))
    region = Region(40, 120, 16, 96)
    np.testing.assert_allclose(sample_layer(layer, region, 1.0, order=1), real_panel_image(real, A, PPB, region), atol=1e-5)

    # a pyramid: step 2 reads level 1, step 1 reads level 0, both pixel-exact (nearest)
    a = rng.random((64, 96)).astype(np.float32)
    pyr = Image([a, a[::2, ::2].copy()], multiscale=True)
    np.testing.assert_array_equal(sample_layer(pyr, Region(8, 40, 16, 80), 1.0), a[8:40, 16:80])
    np.testing.assert_array_equal(sample_layer(pyr, Region(8, 40, 16, 80), 2.0), a[8:40:2, 16:80:2])
