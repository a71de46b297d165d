"""Headless widget tests (pytest-qt under a virtual display)."""

import numpy as np


def test_generator_widget_generates(make_napari_viewer, small_bundle, qtbot):
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.widgets.generator import GeneratorWidget

    viewer = make_napari_viewer()
    w = GeneratorWidget(viewer)
    qtbot.addWidget(w)
    w.set_bundle(small_bundle)
    w.set_canvas(synthetic_canvas((16, 16)))
    assert "gdt-v1" in w.card_text.toPlainText()
    layer = w.generate()  # lazy: returns at once, tiles arrive in the background
    assert w.wait(120)
    assert layer.data[0].shape == (256, 256, 3) and np.asarray(layer.data[0]).std() > 0
    assert "computed 4" in w.stats_label.text()
