"""The Session without a display: load, generate, edit/undo/redo with exact tile counts, statistics, differences."""

import json

import numpy as np
import pytest

from napari_gdt.errors import GDTError
from napari_gdt.session import EDITED, GENERATED, Session

T = 128  # the small bundle's tile: a 24 x 24-bin canvas at 16 px/bin is 384 x 384 px = 3 x 3 tiles


@pytest.fixture
def canvas():
    from napari_gdt.synthetic import synthetic_canvas

    return synthetic_canvas((24, 24), seed=5)


@pytest.fixture
def session(small_bundle, canvas, tmp_path):
    s = Session(small_bundle, canvas, seed=0, device="cpu", num_threads=1, autosave=tmp_path / "session.json")
    yield s
    s.close()


def _events(s):
    got = []
    for name in ("bundle", "canvas", "seed", "pyramid", "history", "edited"):
        getattr(s.events, name).connect(lambda *a, name=name: got.append((name, a)))
    return got


def test_load_model_and_canvas(small_bundle, canvas, tmp_path):
    from napari_gdt.models.bundle import save_bundle

    m = tmp_path / "tiny.safetensors"
    save_bundle(
        m,
        small_bundle.model,
        small_bundle.genes,
        um_per_px=0.5,
        output={"kind": "he", "channels": ["R", "G", "B"]},
        tile_px=128,
        name="tiny",
        px_per_bin=16,
    )
    s = Session(device="cpu", num_threads=1)
    got = _events(s)
    assert s.px_per_bin is None
    with pytest.raises(GDTError, match="load a model and an expression canvas first"):
        s.generate()
    b = s.load_model(m)
    s.canvas = canvas
    assert [g[0] for g in got] == ["bundle", "canvas"] and got[0][1][0] is b
    assert s.px_per_bin == b.card["px_per_bin"] == 16  # the model card is the one source
    pyr = s.generate()
    assert got[-1] == ("pyramid", (GENERATED, pyr)) and s.pyramids == {GENERATED: pyr}
    assert pyr.shape == (384, 384, 3) and pyr.renderer.seed == 0 and pyr.renderer.cache is s.cache
    img = pyr.compute_region()
    assert img.shape == (384, 384, 3) and img.dtype == np.uint8
    assert pyr.renderer.stats["computed"] == 9  # 3 x 3 tiles, each once
    # the same pixels as a blocking render through a fresh renderer (one renderer, same pixels)
    from napari_gdt.pixels import quantise

    ref = s.make_renderer(canvas).render_region()
    assert np.array_equal(img, quantise(ref))
    # a new seed is announced; generate() rebuilds the pyramid with it
    s.seed = 4
    assert got[-1] == ("seed", (4,))
    assert s.generate().renderer.seed == 4
    s.close()


def test_edit_undo_redo_recompute_exactly_the_changed_tiles(session, canvas, tmp_path):
    from napari_gdt.editing.recipe import dirty_tiles

    s = session
    got = _events(s)
    gen = s.generate()
    original = gen.compute_region()
    assert gen.renderer.stats["computed"] == 9
    # a 3 x 3-bin box in the bottom-left tile's interior: only windows (tile + halo) touching it change
    s.set_region("stroma", {"rect": [19 * 16, 2 * 16, 22 * 16, 5 * 16]})
    assert got[-1][0] == "history"
    info = s.apply_edit({"op": "scale", "region": "stroma", "genes": ["EPCAM", "KRT19", "ERBB2"], "factor": 6.0})
    assert got[-2][0] == "pyramid" and got[-2][1][0] == EDITED and got[-1] == ("edited", (info,))
    ed = s.edited_pyramid
    assert info.pyramid is ed and info.edits == 1 and ed.renderer.cache is gen.renderer.cache
    # expected: tiles whose window touches a box bin where one of the genes is non-zero
    box = np.zeros(canvas.n_bins, bool)
    box[19:22, 2:5] = True
    x = np.asarray(canvas.data)[[canvas.genes.index(g) for g in ("EPCAM", "KRT19", "ERBB2")]]
    tiles = {(t.ty, t.tx) for t in dirty_tiles(gen.renderer, box & (x > 0).any(0))}
    assert tiles and len(tiles) < 9 and set(info.changed) == tiles and info.unchecked == 0
    assert info.adopted == 9 - len(tiles)  # every other tile is taken over from "generated"
    edited = ed.compute_region()
    assert ed.renderer.stats["computed"] == len(tiles) and ed.renderer.stats["cached"] == 0
    assert info.progress() == (len(tiles), 0)
    assert gen.renderer.stats["computed"] == 9  # the original is never rendered again
    for ty in range(3):
        for tx in range(3):
            sl = np.s_[ty * T : (ty + 1) * T, tx * T : (tx + 1) * T]
            assert (np.abs(edited[sl].astype(int) - original[sl]).max() > 0) == ((ty, tx) in tiles), (ty, tx)
    # the edited canvas is lazy and the original untouched
    assert np.array_equal(np.asarray(s.canvas.data), np.asarray(canvas.data))
    assert not np.array_equal(np.asarray(s.edited_canvas.data), np.asarray(canvas.data))
    # autosaved
    assert json.loads((tmp_path / "session.json").read_text())["edits"][0]["factor"] == 6.0
    # undo: nothing computed, the original pixels exactly
    info = s.undo()
    assert info.changed == [] and info.adopted == 9
    assert np.array_equal(s.edited_pyramid.compute_region(), original)
    assert s.edited_pyramid.renderer.stats["computed"] == 0 and s.edited_pyramid.renderer.stats["cached"] == 0
    assert s.undo() is None
    # redo: the changed tiles come back from the cache, none computed
    info = s.redo()
    assert set(info.changed) == tiles
    assert np.array_equal(s.edited_pyramid.compute_region(), edited)
    assert s.edited_pyramid.renderer.stats["computed"] == 0 and s.edited_pyramid.renderer.stats["cached"] == len(tiles)
    assert s.redo() is None
    # a second edit on top: only its own tiles are new work
    s.set_region("corner", {"rect": [0, 0, 3 * 16, 3 * 16]})
    info = s.apply_edit({"op": "knockout", "region": "corner", "genes": "all"})
    assert info.edits == 2 and (0, 0) in info.changed
    s.edited_pyramid.compute_region()
    assert s.edited_pyramid.renderer.stats["computed"] == len(set(info.changed) - tiles)


def test_a_failed_edit_changes_nothing(session):
    s = session
    s.generate()
    s.set_region("r", {"rect": [0, 0, 64, 64]})
    s.apply_edit({"op": "scale", "region": "r", "genes": ["EPCAM"], "factor": 2.0})
    s.undo()
    assert s.history.can_redo
    with pytest.raises(GDTError, match="NOPE"):
        s.apply_edit({"op": "scale", "region": "r", "genes": ["NOPE"], "factor": 2.0})
    with pytest.raises(GDTError, match="missing"):
        s.apply_edit({"op": "scale", "region": "missing", "genes": ["EPCAM"], "factor": 2.0})
    assert s.history.edits == [] and s.history.can_redo  # the redo stack survives a refused edit


def test_many_candidates_are_checked_at_most_max_checks(session):
    s = session
    gen = s.generate()
    original = gen.compute_region()
    s.set_region("all", {"rect": [0, 0, 384, 384]})
    s.history.push({"op": "scale", "region": "all", "genes": ["EPCAM"], "factor": 1.0})  # changes nothing
    info = s.update_edited(max_checks=2)
    assert len(info.changed) == 7 and info.unchecked == 7  # 2 checked (unchanged: adopted), 7 left to the worker
    assert info.adopted == 2
    # the unchecked ones come from the cache: same hash as the original, nothing computed
    assert np.array_equal(s.edited_pyramid.compute_region(), original)
    assert s.edited_pyramid.renderer.stats["computed"] == 0 and s.edited_pyramid.renderer.stats["cached"] == 7


def test_region_statistics(session, canvas):
    s = session
    s.set_region("box", {"rect": [0, 0, 160, 160]})  # bins 0-9 x 0-9
    s.apply_edit({"op": "scale", "region": "box", "genes": ["EPCAM", "ERBB2"], "factor": 3.0})
    st = s.region_stats("box", ["EPCAM", "ERBB2", "KRT19"])
    x = np.asarray(canvas.data)
    for g in ("EPCAM", "ERBB2", "KRT19"):
        before = float(x[canvas.genes.index(g), :10, :10].mean())
        assert st[g][0] == pytest.approx(before, rel=1e-6)
        assert st[g][1] == pytest.approx(before * (3.0 if g != "KRT19" else 1.0), rel=1e-5)
    assert list(s.region_stats("box", "all", max_genes=2)) == list(canvas.genes[:2])
    s.set_region("empty", {"gene": "EPCAM", "min": 1e9})
    assert all(np.isnan(v).all() for v in s.region_stats("empty", ["EPCAM"]).values())
    with pytest.raises(GDTError, match="no region named 'nope'"):
        s.region_stats("nope", ["EPCAM"])
    with pytest.raises(GDTError, match="NOPE"):
        s.region_stats("box", ["NOPE"])


def test_difference_arrays_follow_the_edited_pyramid(session):
    from napari_gdt.rendering.difference import DifferenceLevel

    s = session
    gen = s.generate()
    with pytest.raises(GDTError, match="no image named 'generated \\(edited\\)'"):
        s.difference()
    original = gen.compute_region()
    s.set_region("r", {"rect": [128, 128, 256, 256]})
    s.apply_edit({"op": "scale", "region": "r", "genes": "all", "factor": 5.0})
    diff = s.difference()
    assert len(diff) == gen.n_levels and all(isinstance(d, DifferenceLevel) for d in diff)
    assert diff[0].shape == (384, 384) and diff[0].dtype == np.float32
    edited = s.edited_pyramid.compute_region()
    expect = np.abs(edited.astype(np.float32) - original).mean(-1) / 255.0
    np.testing.assert_allclose(np.asarray(diff[0]), expect, atol=1e-6)
    assert np.asarray(diff[0]).max() > 0
    # the arrays read the current edited pyramid: after undo they are all zero
    s.undo()
    s.edited_pyramid.compute_region()
    assert np.asarray(diff[0]).max() == 0
    assert np.asarray(diff[1][10:20, 10:20]).shape == (10, 10)
