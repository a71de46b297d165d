"""Expression dock widget (pytest-qt under a virtual display)."""

import time

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def canvas_on_disk(tmp_path):
    """A small canvas converted from a synthetic MERFISH-like table, registered to a 0.5 µm/px image."""
    from napari_gdt.expression.readers import read_any

    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame(
        {
            "global_x": rng.uniform(100, 300, n),
            "global_y": rng.uniform(50, 150, n),
            "gene": rng.choice(["Actb", "Gfap", "Mbp", "Snap25", "Blank-1"], n),
        }
    )
    p = tmp_path / "detected_transcripts.csv"
    df.to_csv(p, index=False)
    img = np.zeros((400, 800), np.uint8)  # 0.5 µm/px, corner at 0 µm
    c = read_any(p, bin_um=5.0, image=img, image_um_per_px=0.5)
    out = tmp_path / "c.ome.zarr"
    c.to_ome_zarr(out)
    return out, img, c


def test_open_select_two_genes_and_add_image(make_napari_viewer, qtbot, canvas_on_disk):
    from qtpy.QtCore import QItemSelectionModel, Qt

    from napari_gdt.widgets.expression import ExpressionWidget

    out, img, written = canvas_on_disk
    viewer = make_napari_viewer()
    w = ExpressionWidget(viewer)
    qtbot.addWidget(w)
    w.path_edit.setText(str(out))
    qtbot.mouseClick(w.open_btn, Qt.MouseButton.LeftButton)
    assert w.canvas is not None and w.gene_model.stringList() == ["Actb", "Gfap", "Mbp", "Snap25"]
    assert "4 genes" in w.info_label.text()
    w.set_px_per_bin(8)

    # the user searches, then ctrl-selects two genes
    w.filter_edit.setText("AP")  # Gfap, Snap25 (case-insensitive)
    assert w.gene_proxy.rowCount() == 2
    sm = w.gene_view.selectionModel()
    for r in range(2):
        sm.select(w.gene_proxy.index(r, 0), QItemSelectionModel.SelectionFlag.Select)
    assert w.selected_genes() == ["Gfap", "Snap25"]
    qtbot.mouseClick(w.show_btn, Qt.MouseButton.LeftButton)

    assert [layer.name for layer in w.gene_layers] == ["Gfap", "Snap25"]
    for layer in w.gene_layers:
        assert layer in viewer.layers
        np.testing.assert_allclose(layer.scale, (8, 8))
        np.testing.assert_allclose(layer.translate, (3.5, 3.5))  # bin b covers output px [8b, 8b+8)
        assert layer.blending == "additive"
        lo, hi = layer.contrast_limits
        assert lo == 0 and hi >= 1
    a, s = w.gene_layers
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(written.data[written.genes.index("Gfap")]))
    assert a.colormap.colors[-1][:3].tolist() != s.colormap.colors[-1][:3].tolist()  # distinct colours
    assert "Gfap" in w.legend.text() and "Snap25" in w.legend.text()

    # real image with the right affine: world = output px (pixel centres) = bins * ppb - 0.5 at bin corners
    from napari_gdt.rendering.world import image_world_affine

    layer = w.add_image(img, name="dapi")
    np.testing.assert_allclose(layer.affine.affine_matrix, image_world_affine(written.affine, 8), atol=1e-9)
    assert viewer.layers.index(layer) == 0  # under the expression
    # the image position at a bin's corner lands on that bin's corner in world coordinates
    r, c = 3, 5
    corner = written.affine @ [r, c, 1]  # continuous image coords (pixel corners at integers)
    world = layer.affine.affine_matrix @ (corner - [0.5, 0.5, 0])  # as a pixel index
    np.testing.assert_allclose(world[:2], [r * 8 - 0.5, c * 8 - 0.5])

    # changing px per bin rescales everything
    w.set_px_per_bin(4)
    np.testing.assert_allclose(w.gene_layers[0].scale, (4, 4))
    np.testing.assert_allclose(w.gene_layers[0].translate, (1.5, 1.5))
    np.testing.assert_allclose(layer.affine.affine_matrix, image_world_affine(written.affine, 4), atol=1e-9)
    w.clear_genes()
    assert "Gfap" not in viewer.layers and "Snap25" not in viewer.layers


def test_gene_list_responsive_with_5000_genes(qtbot):
    import dask.array as da

    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.widgets.expression import ExpressionWidget

    genes = [f"GENE{i:05d}" for i in range(6000)]
    canvas = ExpressionCanvas(da.zeros((6000, 64, 64), dtype=np.float32, chunks=(32, 64, 64)), genes, bin_um=10.0)
    w = ExpressionWidget(None)
    qtbot.addWidget(w)
    w.show()
    t = time.perf_counter()
    w.set_canvas(canvas)
    qtbot.wait(1)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for text in ("G", "GE", "GENE0", "GENE01", "GENE012", "gene0123"):
        w.filter_edit.setText(text)
        qtbot.wait(1)
    filter_s = (time.perf_counter() - t) / 6
    assert w.gene_proxy.rowCount() == 10  # GENE01230..GENE01239
    assert load_s < 1.0 and filter_s < 0.25, (load_s, filter_s)
    w.select_genes(["GENE05999", "GENE00000"])
    assert w.selected_genes() == ["GENE00000", "GENE05999"]


def test_convert_through_widget(make_napari_viewer, qtbot, tmp_path):
    from napari_gdt.widgets.expression import ExpressionWidget

    rng = np.random.default_rng(1)
    p = tmp_path / "t.parquet"
    pd.DataFrame({"x": rng.uniform(0, 100, 500), "y": rng.uniform(0, 100, 500), "gene": rng.choice(["A", "B"], 500)}).to_parquet(
        p
    )
    viewer = make_napari_viewer()
    w = ExpressionWidget(viewer)
    qtbot.addWidget(w)
    worker = w.convert(str(p), str(tmp_path / "o.ome.zarr"), fmt="csv", bin_um=20.0)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: w.canvas is not None, timeout=10000)
    assert w.canvas.genes == ["A", "B"] and w.canvas.total() == 500
    layers = w.show_genes(["B"])
    assert layers[0].name == "B"


def test_whole_slide_tiff_opens_as_a_lazy_pyramid(make_napari_viewer, qtbot, canvas_on_disk, tmp_path):
    """A pyramidal multi-channel OME-TIFF (like Xenium's morphology image) is added lazily, level by level."""
    import dask.array as da
    import tifffile

    from napari_gdt.rendering.tiles import Region
    from napari_gdt.widgets.compare import sample_layer
    from napari_gdt.widgets.expression import ExpressionWidget

    out, _, _ = canvas_on_disk
    viewer = make_napari_viewer()
    w = ExpressionWidget(viewer)
    qtbot.addWidget(w)
    w.open_canvas(str(out))
    H, W = 384, 512
    data = np.random.default_rng(0).integers(0, 60000, (2, H, W), dtype=np.uint16)
    p = tmp_path / "morphology_focus.ome.tif"
    with tifffile.TiffWriter(p, ome=True) as tw:
        tw.write(data, subifds=1, metadata={"axes": "CYX"}, tile=(128, 128))
        tw.write(data[:, ::2, ::2], subfiletype=1, tile=(128, 128))
    layer = w.add_image(str(p))
    assert layer.name == "morphology_focus" and layer.multiscale and not layer.rgb
    assert [tuple(d.shape) for d in layer.data] == [(H, W), (H // 2, W // 2)]
    assert all(isinstance(d, da.Array) for d in layer.data)  # nothing decoded up front
    np.testing.assert_array_equal(np.asarray(layer.data[0][100:140, 200:260]), data[0, 100:140, 200:260])  # channel 0 (DAPI)
    # the comparison helpers read it like any layer
    s = sample_layer(layer, Region(0, 64, 0, 64), 1.0)
    assert s.shape == (64, 64) and np.isfinite(s).all()
