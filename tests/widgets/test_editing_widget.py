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
    w = EditingWidget(viewer, session=gen.session, autosave=tmp_path / "session.json", gene_sets=tmp_path / "sets.json")
    qtbot.addWidget(w)
    return viewer, gen, w, tmp_path


def test_paint_scale_undo(session, qtbot):
    """Apply/undo/redo on the lazy generator: only tiles whose content hash changed are computed, off the UI thread."""
    import threading

    from napari_gdt.editing.recipe import dirty_tiles
    from napari_gdt.rendering.tiles import Region, TileRenderer
    from napari_gdt.widgets.compare import lazy_difference, sample_layer

    viewer, gen, w, tmp_path = session
    assert gen.wait(120)
    orig_pyr = gen.pyramid
    assert orig_pyr.is_complete(0)  # the small canvas is all in view
    original = orig_pyr.compute_region()  # level 0, blocking, through the cache (nothing left to compute)
    assert original.shape == (384, 384, 3)
    orig_computed = gen.renderer.stats["computed"]
    assert orig_computed == 9
    canvas_before = np.asarray(gen.canvas.data).copy()
    w.region_name_edit.setText("stroma")
    value = w.new_painted_region()
    layer = w.labels_layer
    assert layer.data.shape == (24, 24) and layer.scale[0] == 16 and layer.selected_label == value
    assert tuple(layer.translate) == (7.5, 7.5)  # bin centres over the generated pixels
    layer.brush_size = 3
    for c in [(19, 3), (19, 4), (20, 3), (20, 4)]:  # paint near the bottom-left corner (bins)
        layer.paint(c, value)
    painted = layer.data == value
    assert painted.sum() >= 4 and not painted[:12].any()
    w.op_combo.setCurrentText("scale")
    w.region_combo.setCurrentText("stroma")
    w.genes_edit.setText("EPCAM, KRT19\nERBB2")
    w.value_spin.setValue(6.0)
    threads = []
    fwd = TileRenderer.forward

    def spy(self, *a, **k):
        threads.append(threading.current_thread())
        return fwd(self, *a, **k)

    TileRenderer.forward = spy
    try:
        w.apply_btn.click()
        ed_layer = viewer.layers["generated (edited)"]
        assert ed_layer.multiscale and ed_layer.rgb  # lazy: nothing rendered on the UI thread
        assert gen.wait(120)
    finally:
        TileRenderer.forward = fwd
    assert threads and all(t is not threading.main_thread() for t in threads)
    # overlay: same geometry as the generated layer; the regions layer stays on top
    g_layer = viewer.layers["generated"]
    assert np.array_equal(ed_layer.scale, g_layer.scale) and np.array_equal(ed_layer.translate, g_layer.translate)
    assert np.array_equal(ed_layer.extent.world, g_layer.extent.world)
    assert viewer.layers[-1].name == "edit regions"
    ed_pyr = w.edited_pyramid
    assert ed_pyr is gen.pyramids()["generated (edited)"] and ed_pyr.renderer.cache is gen.renderer.cache
    assert ed_pyr.is_complete(0)
    edited = ed_pyr.compute_region()
    assert edited.shape == original.shape
    assert w.status.text().startswith("1 edit(s)"), w.status.text()
    # expected changed tiles: windows (tile + halo) touching a painted, non-zero bin
    x = np.asarray(gen.canvas.data)[[0, 1, 2]]
    dirty_bins = painted & (x > 0).any(0)
    tiles = {(s.ty, s.tx) for s in dirty_tiles(gen.renderer, dirty_bins)}
    assert tiles and set(w.last_recomputed) == tiles
    assert len(tiles) < 9
    st = ed_pyr.renderer.stats
    assert st["computed"] == len(tiles) and st["cached"] == 0, st  # the other tiles were copied from "generated"
    assert gen.renderer.stats["computed"] == orig_computed  # the original was not rendered again
    assert f"{len(tiles)} computed" in w.status.text(), w.status.text()
    T = 128
    for ty in range(3):
        for tx in range(3):
            d = np.abs(
                edited[ty * T : (ty + 1) * T, tx * T : (tx + 1) * T].astype(int)
                - original[ty * T : (ty + 1) * T, tx * T : (tx + 1) * T]
            ).max()
            assert (d > 0) == ((ty, tx) in tiles), (ty, tx, d)
    # coarser levels: unchanged parts taken over from "generated", changed tiles cascaded in after computation
    from napari_gdt.rendering.pyramid import _down2

    assert ed_pyr.n_levels == 2 and ed_pyr.is_complete(1)
    assert np.array_equal(ed_pyr.read(1, 0, 192, 0, 192, request=False), _down2(edited, None)[0])
    # the layer shows these pixels (napari reads the pyramid)
    assert np.array_equal(np.asarray(ed_layer.data[0][0:384, 0:384]), edited)
    assert np.array_equal(np.asarray(gen.canvas.data), canvas_before)  # non-destructive: the canvas is untouched
    # the compare widget's helpers read the lazy edited layer
    diff = lazy_difference(g_layer, ed_layer)
    d0 = np.asarray(diff[0] if isinstance(diff, list) else diff)
    # in output units (0-1), whatever the storage (uint8 pyramid levels)
    np.testing.assert_allclose(d0, np.abs(edited.astype(np.float32) - original).mean(-1) / 255.0, atol=1e-4)
    np.testing.assert_allclose(sample_layer(ed_layer, Region(0, 384, 0, 384), 1.0), edited / 255.0, atol=1e-6)
    # statistics: mean of the scaled genes x6 in the region
    for g in ("EPCAM", "KRT19", "ERBB2"):
        before, after = w.last_stats[g]
        assert after == pytest.approx(6 * before, rel=1e-5)
    assert w.stats_table.rowCount() == 3
    # autosave holds the edit and the painted labels
    saved = json.loads((tmp_path / "session.json").read_text())
    assert saved["edits"][0]["factor"] == 6.0 and saved["regions"]["stroma"]["labels"] == "session.labels.tif"
    assert (tmp_path / "session.labels.tif").exists()
    # the user's settings on the edited layer persist: the layer object is kept
    ed_layer.opacity = 0.7
    # undo restores the original pixels exactly, without computing anything; redo brings the edit back
    w.undo_btn.click()
    assert gen.wait(120)
    assert viewer.layers["generated (edited)"] is ed_layer and ed_layer.opacity == pytest.approx(0.7)
    assert w.last_recomputed == [] and w.edited_pyramid.renderer.stats["computed"] == 0
    assert "0 computed" in w.status.text(), w.status.text()
    assert np.array_equal(w.edited_pyramid.compute_region(), original)
    assert w.edited_pyramid.renderer.stats["computed"] == 0
    assert w.history_list.count() == 0 and json.loads((tmp_path / "session.json").read_text())["edits"] == []
    w.redo_btn.click()
    assert gen.wait(120)
    assert set(w.last_recomputed) == tiles
    st = w.edited_pyramid.renderer.stats
    assert st["computed"] == 0 and st["cached"] == len(tiles), st  # the edited tiles come back from the cache
    assert np.array_equal(w.edited_pyramid.compute_region(), edited)
    # the keyboard shortcuts are bound on the viewer: undo by key
    from app_model.types import KeyBinding

    from napari_gdt.widgets.editing import KEY_UNDO

    viewer.keymap[KeyBinding.from_str(KEY_UNDO)](viewer)
    assert gen.wait(120)
    assert w.history.edits == [] and np.array_equal(w.edited_pyramid.compute_region(), original)
    assert w.edited_pyramid.renderer.stats["computed"] == 0 and gen.renderer.stats["computed"] == orig_computed


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
    """No generated layer: the edited layer is lazy too, its tiles are computed in the worker where the view is."""
    import threading

    from napari_gdt.editing.recipe import Recipe, dirty_bins, dirty_tiles
    from napari_gdt.pixels import quantise
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
    threads = []
    fwd = TileRenderer.forward

    def spy(self, *a, **k):
        threads.append(threading.current_thread())
        return fwd(self, *a, **k)

    TileRenderer.forward = spy
    try:
        layer = w.apply_edit(edit)
        assert layer is not None and layer.multiscale  # lazy: returns at once, tiles come from the worker
        assert w.binding.wait(120)
    finally:
        TileRenderer.forward = fwd
    assert threads and all(t is not threading.main_thread() for t in threads)
    r = Recipe.from_dict({"version": 1, "regions": {"box": {"rect": [0, 0, 48, 48]}}, "edits": [edit]})
    expect = quantise(TileRenderer(small_bundle, r.apply(canvas, 16), seed=3, device="cpu").render_region()).astype(int)
    shown = np.asarray(w.edited_layer.data[0][0:256, 0:256]).astype(int)
    # (batches of a different size give float differences of ~1e-7: at most 1 level after quantisation)
    assert np.abs(shown - expect).max() <= 1
    tiles = {(s.ty, s.tx) for s in dirty_tiles(TileRenderer(small_bundle, canvas, seed=3), dirty_bins(r, canvas, 16))}
    assert set(w.last_recomputed) == tiles == {(0, 0)}  # bins 0-2 lie only in tile (0, 0)'s window (bins -3..10)
    orig = quantise(TileRenderer(small_bundle, canvas, seed=3, device="cpu").render_region()).astype(int)
    d = np.abs(shown - orig).max(-1)
    assert d[:128, :128].max() > 1 and d[128:].max() <= 1 and d[:, 128:].max() <= 1
    assert "edit(s)" in w.status.text()


def test_lazy_edit_on_a_larger_canvas_computes_only_changed_tiles_in_view(make_napari_viewer, small_bundle, qtbot, tmp_path):
    """A canvas larger than the view: Apply never renders the whole original or edited canvas."""
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.widgets.editing import EditingWidget
    from napari_gdt.widgets.generator import GeneratorWidget

    viewer = make_napari_viewer()
    viewer.add_points(np.array([[0.0, 0.0]]), name="anchor")  # so that adding the generated layer keeps our camera
    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9: scene.camera
    cam.center = (128, 128)
    cam.zoom = 4.0
    gen = GeneratorWidget(viewer)
    qtbot.addWidget(gen)
    gen.set_bundle(small_bundle)
    gen.set_canvas(synthetic_canvas((64, 64), seed=3))  # 1024 x 1024 px, 8 x 8 tiles
    gen.generate()
    assert gen.wait(120)
    n_orig = gen.renderer.stats["computed"]
    assert 1 <= n_orig < 64 // 2, n_orig  # the view, its ring and a few probe tiles
    w = EditingWidget(viewer, session=gen.session, autosave=tmp_path / "s.json", gene_sets=tmp_path / "g.json")
    qtbot.addWidget(w)
    w.history.set_region("box", {"rect": [64, 64, 128, 128]})
    w.apply_edit({"op": "scale", "region": "box", "genes": "all", "factor": 5.0})
    assert gen.wait(120)
    changed = set(w.last_recomputed)
    assert changed and changed <= {(ty, tx) for ty in range(3) for tx in range(3)}
    st = w.edited_pyramid.renderer.stats
    assert 1 <= st["computed"] <= len(changed) and st["cached"] == 0, (st, changed)
    assert gen.renderer.stats["computed"] == n_orig  # the original was not rendered again
    # the view shows real edited pixels, the rest of the canvas was never computed
    from napari_gdt.widgets.layers import visible_region

    assert w.edited_pyramid.is_complete(0, w.edited_pyramid._clip(0, visible_region(viewer, w.edited_layer)[1]))
    assert not w.edited_pyramid.is_complete(0)


def test_whole_canvas_edit_checks_at_most_max_ui_checks_tiles_on_the_ui_thread(session, qtbot, monkeypatch):
    """A large edit: only MAX_UI_CHECKS tiles are hashed on the UI thread; the worker and the cache settle
    the rest, the pixels are the same as a blocking render, and no tile is computed twice."""
    import threading

    from napari_gdt.rendering.pyramid import quantise
    from napari_gdt.rendering.tiles import TileRenderer

    viewer, gen, w, tmp_path = session
    assert gen.wait(120)
    original = gen.pyramid.compute_region()
    monkeypatch.setattr(w, "max_checks", 2)
    keys_on_ui = []
    key = TileRenderer.tile_key

    def spy(self, *a, **k):
        if threading.current_thread() is threading.main_thread():
            keys_on_ui.append(1)
        return key(self, *a, **k)

    monkeypatch.setattr(TileRenderer, "tile_key", spy)
    # an edit that changes no value (x1): 9 candidates, 2 checked and taken over on the UI thread; the
    # worker finds the other 7 in the tile cache (same content hash): nothing is computed
    w.history.set_region("all", {"rect": [0, 0, 384, 384]})
    w.apply_edit({"op": "scale", "region": "all", "genes": ["EPCAM"], "factor": 1.0})
    assert gen.wait(120)
    info = w.session.edit_info
    assert info.unchecked == 7 and info.adopted == 2, info
    st = w.edited_pyramid.renderer.stats
    assert st["computed"] == 0 and st["cached"] == 7, st
    assert np.array_equal(w.edited_pyramid.compute_region(), original)
    # scale one gene over the whole canvas by 3
    keys_on_ui.clear()
    w.apply_edit({"op": "scale", "region": "all", "genes": ["EPCAM"], "factor": 3.0})
    assert gen.wait(120)
    info = w.session.edit_info
    assert info.unchecked == 7 and len(info.changed) >= 7, info
    # 2 checked tiles, each hashed for the edited and the original canvas
    assert len(keys_on_ui) <= 2 * 2, len(keys_on_ui)
    assert f"{info.unchecked} not compared with the original" in w.status.text(), w.status.text()
    edited = w.edited_pyramid.compute_region()
    expect = TileRenderer(
        w.bundle, w.history.recipe.apply(gen.canvas, 16), seed=w.seed, device="cpu", tile_px=128
    ).render_region()
    assert edited.shape == expect.shape and np.abs(edited.astype(int) - quantise(expect, edited.dtype).astype(int)).max() <= 1
    st = w.edited_pyramid.renderer.stats
    # every tile whose hash did not change (checked or not) was taken over or came from the cache
    differ = {
        (ty, tx)
        for ty in range(3)
        for tx in range(3)
        if not np.array_equal(
            edited[ty * 128 : (ty + 1) * 128, tx * 128 : (tx + 1) * 128],
            original[ty * 128 : (ty + 1) * 128, tx * 128 : (tx + 1) * 128],
        )
    }
    assert differ and st["computed"] - info.computed0 == len(differ), (st, info.computed0, differ)


def test_comparison_difference_panel_follows_lazy_tiles(session, qtbot):
    """The difference panel of two lazy layers is read afresh as tiles arrive: after a new edit, the
    panel shows the new |edited - generated| without the user moving the camera."""
    from napari_gdt.widgets.compare import DIFF_NAME, CompareWidget, DifferenceLevel

    viewer, gen, w, tmp_path = session
    assert gen.wait(120)
    original = gen.pyramid.compute_region()
    w.history.set_region("box", {"rect": [0, 0, 128, 128]})
    w.apply_edit({"op": "scale", "region": "box", "genes": "all", "factor": 4.0})
    assert gen.wait(120)
    cw = CompareWidget(viewer)
    qtbot.addWidget(cw)
    cw.set_sources(real="", generated="generated", edited="generated (edited)")
    panels = cw.enter_comparison()
    assert DIFF_NAME in panels
    d = viewer.layers[DIFF_NAME]
    assert isinstance(d.data[0], DifferenceLevel)

    def expected():
        e = w.edited_pyramid.compute_region()
        return np.abs(e.astype(np.float32) - original.astype(np.float32)).mean(-1) / 255.0

    np.testing.assert_allclose(np.asarray(d.data[0]), expected(), atol=1e-6)
    # a second edit elsewhere: the edited pyramid receives new tiles; the panel is refreshed by itself
    n0 = cw.diff_refreshes
    w.history.set_region("box2", {"rect": [256, 256, 384, 384]})
    w.apply_edit({"op": "knockout", "region": "box2", "genes": "all"})
    assert gen.wait(120)
    qtbot.waitUntil(lambda: cw.diff_refreshes > n0, timeout=10_000)
    diff_now = np.asarray(d.data[0])
    np.testing.assert_allclose(diff_now, expected(), atol=1e-6)
    assert diff_now[256:, 256:].max() > 0 and diff_now[:128, :128].max() > 0
    cw.exit_comparison()
    assert not cw.view.watching


def test_import_geojson_regions_into_the_regions_layer(session, tmp_path):
    """QuPath annotations (image px) become painted regions, autosaved, usable in edits."""
    viewer, gen, w, _ = session
    A = np.asarray(gen.canvas.affine, float)

    def ring(i0, j0, i1, j1):  # image-px [x, y] ring on the borders of bins i0..i1-1, j0..j1-1
        pts = [(i0, j0), (i0, j1), (i1, j1), (i1, j0), (i0, j0)]
        return [[float((A @ [i, j, 1])[1]), float((A @ [i, j, 1])[0])] for i, j in pts]

    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring(2, 2, 6, 7)]},
                "properties": {"classification": {"name": "Tumor"}},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring(10, 10, 14, 20)]},
                "properties": {"classification": {"name": "Stroma"}},
            },
        ],
    }
    p = tmp_path / "qupath.geojson"
    p.write_text(json.dumps(doc))
    names = w.import_geojson(p)
    assert names == ["Tumor", "Stroma"]
    layer = w.labels_layer
    vt, vs = (w.history.recipe.regions[n].spec["value"] for n in names)
    assert vt != vs
    assert np.array_equal(np.argwhere(layer.data == vt).min(0), [2, 2]) and np.array_equal(
        np.argwhere(layer.data == vt).max(0), [5, 6]
    )
    assert (layer.data == vs).sum() == 4 * 10
    assert "imported 2 region(s)" in w.status.text()
    saved = json.loads((tmp_path / "session.json").read_text())
    assert set(saved["regions"]) == {"Tumor", "Stroma"}
    # the region is usable in an edit: the mean doubles exactly there
    w.apply_edit({"op": "scale", "region": "Stroma", "genes": ["EPCAM"], "factor": 2.0})
    before, after = w.last_stats["EPCAM"]
    assert before > 0 and after == pytest.approx(2 * before)
    # importing again keeps the old names and says which painted regions lost their bins (one label image)
    assert w.import_geojson(p) == ["Tumor_2", "Stroma_2"]
    assert "bins taken over from Tumor (20), Stroma (40)" in w.status.text(), w.status.text()


def test_default_autosave_is_never_beside_an_in_memory_canvas(make_napari_viewer, small_bundle, qtbot, tmp_path, monkeypatch):
    """A demo canvas has a display name, not a file: its autosave goes to the temp folder, not the working directory."""
    import tempfile

    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.widgets.editing import EditingWidget

    monkeypatch.chdir(tmp_path)
    c = synthetic_canvas((16, 16), seed=1)
    c.meta["path"] = "her2st demo canvas"
    w = EditingWidget(make_napari_viewer(), gene_sets=tmp_path / "g.json")
    qtbot.addWidget(w)
    w.set_session(small_bundle, c)
    p = w._default_autosave()
    assert str(p).startswith(tempfile.gettempdir()) and not list(tmp_path.glob("*autosave*"))
    c2 = synthetic_canvas((16, 16), seed=1)
    c2.meta["path"] = str(tmp_path / "c.ome.zarr")
    (tmp_path / "c.ome.zarr").mkdir()
    w.set_session(small_bundle, c2)
    p = w._default_autosave()  # one autosave per viewer run, beside the canvas
    assert p.parent == tmp_path and p.name.startswith("c.ome.zarr.edits.autosave-") and p.suffix == ".json"
