"""The editing dock widget (pytest-qt, under a virtual display)."""

import json

import numpy as np
import pytest


@pytest.fixture
def session(make_napari_viewer, small_bundle, qtbot, tmp_path):
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.widgets.editing import EditingWidget
    from napari_gdt.widgets.generator import GeneratorWidget

    viewer = make_napari_viewer()
    gen = GeneratorWidget(viewer)
    qtbot.addWidget(gen)
    gen.set_bundle(small_bundle)
    gen.set_canvas(synthetic_canvas((24, 24), seed=5))
    gen.generate()  # the original "generated" layer, 384 x 384 px, 3 x 3 tiles of 128 px
    w = EditingWidget(viewer, generator=gen, autosave=tmp_path / "session.json", gene_sets=tmp_path / "sets.json")
    qtbot.addWidget(w)
    return viewer, gen, w, tmp_path


def test_paint_scale_undo(session, qtbot):
    viewer, gen, w, tmp_path = session
    from napari_gdt.rendering.tiles import TileRenderer

    original = TileRenderer(gen.bundle, gen.canvas, seed=0, device="cpu").render_region()  # independent of any layer
    canvas_before = np.asarray(gen.canvas.data).copy()
    w.region_name_edit.setText("stroma")
    value = w.new_painted_region()
    layer = w.labels_layer
    assert layer.data.shape == (24, 24) and layer.scale[0] == 16 and layer.selected_label == value
    layer.brush_size = 3
    for c in [(19, 3), (19, 4), (20, 3), (20, 4)]:  # paint near the bottom-left corner (bins)
        layer.paint(c, value)
    painted = layer.data == value
    assert painted.sum() >= 4 and not painted[:12].any()
    w.op_combo.setCurrentText("scale")
    w.region_combo.setCurrentText("stroma")
    w.genes_edit.setText("EPCAM, KRT19\nERBB2")
    w.value_spin.setValue(6.0)
    w.apply_btn.click()
    assert w.busy  # tiles are computed in a worker thread, not on the UI thread
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert w.status.text().startswith("1 edit(s)"), w.status.text()
    edited = np.array(viewer.layers["generated (edited)"].data, copy=True)
    assert edited.shape == original.shape
    # expected dirty tiles: windows (tile + halo) touching a painted, non-zero bin
    from napari_gdt.editing.recipe import dirty_tiles

    x = np.asarray(gen.canvas.data)[[0, 1, 2]]
    dirty_bins = painted & (x > 0).any(0)
    tiles = {(s.ty, s.tx) for s in dirty_tiles(w._orig_renderer, dirty_bins)}
    assert tiles and set(w.last_recomputed) == tiles
    assert len(tiles) < 9
    T = 128
    for ty in range(3):
        for tx in range(3):
            d = np.abs(edited[ty * T:(ty + 1) * T, tx * T:(tx + 1) * T] - original[ty * T:(ty + 1) * T, tx * T:(tx + 1) * T]).max()
            assert (d > 1e-4) == ((ty, tx) in tiles), (ty, tx, d)
    assert np.array_equal(np.asarray(gen.canvas.data), canvas_before)  # non-destructive: the canvas is untouched
    # statistics: mean of the scaled genes x6 in the region
    for g in ("EPCAM", "KRT19", "ERBB2"):
        before, after = w.last_stats[g]
        assert after == pytest.approx(6 * before, rel=1e-5)
    assert w.stats_table.rowCount() == 3
    # autosave holds the edit and the painted labels
    saved = json.loads((tmp_path / "session.json").read_text())
    assert saved["edits"][0]["factor"] == 6.0 and saved["regions"]["stroma"]["labels"] == "session.labels.tif"
    assert (tmp_path / "session.labels.tif").exists()
    # undo restores the original pixels exactly; redo brings the edit back
    w.undo_btn.click()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert "0 computed" in w.status.text()  # undo is served from the cache
    assert np.array_equal(np.asarray(viewer.layers["generated (edited)"].data), original)
    assert w.history_list.count() == 0 and json.loads((tmp_path / "session.json").read_text())["edits"] == []
    w.redo_btn.click()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert np.array_equal(np.asarray(viewer.layers["generated (edited)"].data), edited)
    # the keyboard shortcuts are bound on the viewer: undo by key
    from app_model.types import KeyBinding

    from napari_gdt.widgets.editing import KEY_UNDO

    viewer.keymap[KeyBinding.from_str(KEY_UNDO)](viewer)
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert w.history.edits == [] and np.array_equal(np.asarray(viewer.layers["generated (edited)"].data), original)


def test_threshold_shapes_gene_sets_and_errors(session, qtbot):
    viewer, gen, w, tmp_path = session
    name = w.region_from_threshold("EPCAM", 8.0, name="hot")
    assert name == "hot" and w.history.recipe.regions["hot"].spec == {"gene": "EPCAM", "min": 8.0}
    viewer.add_shapes([np.array([[0, 0], [0, 100], [100, 100], [100, 0]])], shape_type="rectangle", name="boxes")
    w.shapes_combo.setCurrentText("boxes")
    (box,) = w.region_from_shapes(name="box")
    assert w.history.recipe.regions[box].spec == {"rect": [0.0, 0.0, 100.0, 100.0]}
    # gene sets persist
    w.genes_edit.setText("VIM ACTA2")
    w.save_set_edit.setText("mesenchymal")
    w.save_set_btn.click()
    assert json.loads((tmp_path / "sets.json").read_text()) == {"mesenchymal": ["VIM", "ACTA2"]}
    w.genes_edit.setText("")
    w.set_combo.setCurrentText("mesenchymal")
    w.use_set_btn.click()
    assert w.genes_edit.text() == "VIM, ACTA2"
    # an unknown gene is reported, not applied
    w.genes_edit.setText("VIM, NOPE")
    w.region_combo.setCurrentText("box")
    w.apply_btn.click()
    assert "NOPE" in w.status.text() and w.history.edits == []
    # transfer through the form: hot -> box
    w.genes_edit.setText("all")
    w.op_combo.setCurrentText("transfer")
    w.other_combo.setCurrentText("hot")
    w.value_spin.setValue(1.0)
    w.apply_edit()
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    e = w.history.edits[-1]
    assert e == {"op": "transfer", "from": "hot", "to": "box", "genes": "all", "strength": 1.0}
    st = w.region_stats("hot", ["EPCAM"])["EPCAM"][0]
    assert w.last_stats["EPCAM"][1] == pytest.approx(st, rel=1e-4)


def test_session_without_generator_layer_renders_off_the_ui_thread(make_napari_viewer, small_bundle, qtbot, tmp_path):
    """No original pixels given: the original is rendered once in the worker, then the edited tiles."""
    from napari_gdt.editing.recipe import Recipe, dirty_bins, dirty_tiles
    from napari_gdt.rendering.tiles import TileRenderer
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.widgets.editing import EditingWidget

    viewer = make_napari_viewer()
    canvas = synthetic_canvas((16, 16), seed=7)
    w = EditingWidget(viewer, autosave=tmp_path / "s.json", gene_sets=tmp_path / "g.json")
    qtbot.addWidget(w)
    w.set_session(small_bundle, canvas, seed=3)
    w.history.set_region("box", {"rect": [0, 0, 48, 48]})
    edit = {"op": "knockout", "region": "box", "genes": "all"}
    w.apply_edit(edit)
    assert w.busy and w.edited_layer is None  # nothing rendered on the UI thread yet
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    r = Recipe.from_dict({"version": 1, "regions": {"box": {"rect": [0, 0, 48, 48]}}, "edits": [edit]})
    expect = TileRenderer(small_bundle, r.apply(canvas, 16), seed=3, device="cpu").render_region()
    # (batches of a different size give float differences of ~1e-7, hence the tolerance)
    np.testing.assert_allclose(np.asarray(w.edited_layer.data), expect, atol=1e-5)
    tiles = {(s.ty, s.tx) for s in dirty_tiles(w._orig_renderer, dirty_bins(r, canvas, 16))}
    assert set(w.last_recomputed) == tiles == {(0, 0)}  # bins 0-2 lie only in tile (0, 0)'s window (bins -3..10)
    orig = TileRenderer(small_bundle, canvas, seed=3, device="cpu").render_region()
    d = np.abs(np.asarray(w.edited_layer.data) - orig).max(-1)
    assert d[:128, :128].max() > 1e-3 and d[128:].max() <= 1e-5 and d[:, 128:].max() <= 1e-5
    assert "edit(s)" in w.status.text()
