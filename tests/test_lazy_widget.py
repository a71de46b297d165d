"""The lazy generated layer in napari: non-blocking, same pixels as the blocking renderer, edited layer."""

import threading

import numpy as np
import pytest


def _canvas(n=24, seed=1):
    from napari_gdt.synthetic import synthetic_canvas

    return synthetic_canvas((n, n), seed=seed)


def test_generate_returns_at_once_and_matches_blocking_render(make_napari_viewer, small_bundle, qtbot):
    from napari_gdt.rendering.tiles import TileRenderer
    from napari_gdt.widgets.generator import GeneratorWidget

    viewer = make_napari_viewer()
    w = GeneratorWidget(viewer)
    qtbot.addWidget(w)
    w.set_bundle(small_bundle)
    canvas = _canvas()
    w.set_canvas(canvas)
    threads = []
    orig = TileRenderer.forward

    def spy(self, *a, **k):
        threads.append(threading.current_thread())
        return orig(self, *a, **k)

    TileRenderer.forward = spy
    try:
        layer = w.generate()
        assert w.wait(120)
    finally:
        TileRenderer.forward = orig
    assert threads and all(t is not threading.main_thread() for t in threads)  # the UI thread never ran the model
    assert layer.multiscale and layer.rgb and layer.data[0].shape == (384, 384, 3)
    assert layer.data[-1].shape[0] <= 256
    pyr = w.pyramid
    assert pyr.is_complete(0)  # the whole (small) canvas is in view
    lazy = np.asarray(layer.data[0][0:384, 0:384]).astype(np.float32) / 255.0
    ref = TileRenderer(small_bundle, canvas, seed=0, tile_px=384, device="cpu").render_region()
    assert np.abs(lazy - ref).max() <= 1 / 255 + 1e-6
    assert "computed 9" in w.stats_label.text() and "queued 0" in w.stats_label.text()


def test_edited_layer_shares_cache(make_napari_viewer, small_bundle, qtbot):
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.widgets.generator import EDITED, GeneratorWidget

    viewer = make_napari_viewer()
    w = GeneratorWidget(viewer)
    qtbot.addWidget(w)
    w.set_bundle(small_bundle)
    canvas = _canvas()
    w.set_canvas(canvas)
    w.generate()
    assert w.wait(120)
    computed = w.renderer.stats["computed"]
    assert computed == 9
    # edit the bottom-right corner only: bins 20..24 (px 320..384) -> only the last tile row/col changes
    data = np.asarray(canvas.data).copy()
    data[:, 20:, 20:] *= 3
    edited = ExpressionCanvas(data, canvas.genes, canvas.bin_um)
    layer = w.add_canvas_layer(edited)
    assert layer.name == EDITED and EDITED in viewer.layers
    assert w.wait(120)
    ed = w.pyramids()[EDITED]
    s = ed.renderer.stats
    assert s["computed"] + s["cached"] == 9
    assert 1 <= s["computed"] < 9 and s["cached"] >= 1  # unchanged tiles come from the shared cache
    a = np.asarray(viewer.layers["generated"].data[0][:128, :128])
    b = np.asarray(layer.data[0][:128, :128])
    assert np.array_equal(a, b)
    assert not np.array_equal(np.asarray(viewer.layers["generated"].data[0][256:, 256:]), np.asarray(layer.data[0][256:, 256:]))


def test_cancel_drops_queue(make_napari_viewer, small_bundle, qtbot):
    from napari_gdt.widgets.generator import GeneratorWidget

    viewer = make_napari_viewer()
    w = GeneratorWidget(viewer)
    qtbot.addWidget(w)
    w.set_bundle(small_bundle)
    w.set_canvas(_canvas(64))
    w.generate()
    w.cancel()
    assert w.scheduler.queued == 0
    assert w.wait(60)
    assert "queued 0" in w.stats_label.text()
