"""Regenerate every screenshot of the documentation from the demo.

    xvfb-run -a python docs/make_screenshots.py                 # the her2st demo (default)
    xvfb-run -a python docs/make_screenshots.py --dataset synthetic --out /tmp/shots

It opens the demo with ``napari_gdt.demo.build_demo_viewer(dataset, show=True)`` (a shown window is
needed for non-black screenshots; a virtual display works) and writes into ``docs/images/``:

``demo-overview.png``
    the whole window right after opening: layers, generated tissue, dock widgets.
``expression-genes.png``
    two genes of the canvas shown as additive colour channels over the bin grid.
``editing-panel.png``
    the window after painting a region and applying a scale edit: the *edit regions* layer, the
    *generated (edited)* layer and the What-if editing panel with its history.
``comparison-grid.png``
    the comparison view: real (if any), generated, edited, difference and genes side by side.

The images are committed, so the docs build never needs a display. Look at them after
regenerating: each must show what its caption in the docs says.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WINDOW = (1500, 950)


def _process(app, seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def _wait(app, busy, timeout: float = 300.0) -> None:
    """Process Qt events until ``busy()`` is false (or the timeout)."""
    end = time.time() + timeout
    while busy() and time.time() < end:
        app.processEvents()
        time.sleep(0.05)
    _process(app, 0.5)


def _save(img: np.ndarray, path: Path) -> None:
    from skimage.io import imsave

    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(str(path), np.asarray(img)[..., :3], check_contrast=False)
    print(f"wrote {path} {img.shape[1]}x{img.shape[0]}")


def _ensure_widgets(viewer, widgets: dict) -> dict:
    """The demo provides the dock widgets; add the ones an older demo lacks, wired to its session."""
    gen = widgets["generator"]
    if "expression" not in widgets:
        from napari_gdt.widgets.expression import ExpressionWidget

        w = ExpressionWidget(viewer)
        w.set_px_per_bin(gen.bundle.px_per_bin)
        w.set_canvas(gen.canvas)
        viewer.window.add_dock_widget(w, name="Expression canvas", area="right")
        widgets["expression"] = w
    if "editing" not in widgets:
        from napari_gdt.widgets.editing import EditingWidget

        w = EditingWidget(viewer, generator=gen)
        if w.canvas is None:  # an editing panel follows its generator panel; older ones need this
            w.set_session(gen.bundle, gen.canvas, seed=gen.seed_spin.value())
        viewer.window.add_dock_widget(w, name="What-if editing", area="right")
        widgets["editing"] = w
    if "compare" not in widgets:
        from napari_gdt.widgets.compare import CompareWidget

        w = CompareWidget(viewer)
        w.set_bundle(gen.bundle)
        viewer.window.add_dock_widget(w, name="Compare and export", area="right")
        widgets["compare"] = w
    return widgets


def _docks(viewer) -> list:
    from qtpy.QtWidgets import QDockWidget

    return viewer.window._qt_window.findChildren(QDockWidget)


def _dock_of(viewer, widget):
    from qtpy.QtWidgets import QDockWidget

    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def _tabify(viewer, widgets: dict) -> None:
    """Stack the plugin's docks as tabs, so that the window keeps a screen's height."""
    docks = [_dock_of(viewer, w) for w in widgets.values()]
    docks = [d for i, d in enumerate(docks) if d is not None and d not in docks[:i]]
    qt_window = viewer.window._qt_window
    for d in docks[1:]:
        qt_window.tabifyDockWidget(docks[0], d)


def _raise_dock(viewer, widget) -> None:
    """Bring the dock that holds ``widget`` to the front."""
    dock = _dock_of(viewer, widget)
    if dock is not None:
        dock.show()
        dock.raise_()


def _pick_genes(canvas, preferred=("EPCAM", "KRT8", "Slc17a7", "Gad1", "ERBB2", "KRT19")) -> list[str]:
    genes = [g for g in preferred if g in canvas.genes]
    if len(genes) < 2:  # the most abundant genes
        totals = np.asarray(canvas.data.sum(axis=(1, 2)))
        genes = [canvas.genes[i] for i in np.argsort(totals)[::-1][:2]]
    return genes[:2]


def _edit_box(canvas) -> tuple[slice, slice]:
    """A rectangle of bins in the tissue (where the expression is highest), a fifth of the canvas."""
    h, w = canvas.n_bins
    tot = np.asarray(canvas.data.sum(axis=0))
    bh, bw = max(2, h // 5), max(2, w // 5)
    best, arg = -1.0, (0, 0)
    for y in range(0, h - bh + 1, max(1, bh // 2)):
        for x in range(0, w - bw + 1, max(1, bw // 2)):
            s = float(tot[y : y + bh, x : x + bw].sum())
            if s > best:
                best, arg = s, (y, x)
    return slice(arg[0], arg[0] + bh), slice(arg[1], arg[1] + bw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="her2st", help="demo dataset (default her2st; synthetic needs no data)")
    ap.add_argument("--out", default=str(HERE / "images"), help="output folder (default docs/images)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the generator (default 600)")
    a = ap.parse_args(argv)
    out = Path(a.out)

    from qtpy.QtWidgets import QApplication

    from napari_gdt.demo import build_demo_viewer

    viewer, widgets = build_demo_viewer(a.dataset, show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(*WINDOW)
    gen = widgets["generator"]
    if hasattr(gen, "wait"):
        gen.wait(a.timeout)
    _process(app, 1.0)
    widgets = _ensure_widgets(viewer, dict(widgets))
    order = {k: widgets[k] for k in ("generator", "expression", "editing", "compare") if k in widgets}
    _tabify(viewer, order)
    _raise_dock(viewer, gen)
    canvas = gen.canvas
    viewer.window._qt_window.resize(*WINDOW)
    viewer.reset_view()
    _process(app, 1.0)

    # 1. the demo as it opens
    _save(viewer.screenshot(canvas_only=False), out / "demo-overview.png")

    # 2. expression: two genes as additive channels, generated tissue hidden
    exp = widgets["expression"]
    genes = _pick_genes(canvas)
    visible = {layer.name: layer.visible for layer in viewer.layers}
    exp.select_genes(genes)
    shown = list(exp.show_genes(genes) or [])
    for layer in viewer.layers:
        layer.visible = any(layer is x for x in shown)
    _raise_dock(viewer, exp)
    _process(app, 1.0)
    _save(viewer.screenshot(canvas_only=False), out / "expression-genes.png")
    for layer in viewer.layers:
        layer.visible = visible.get(layer.name, layer.visible)

    # 3. editing: a painted region with the tumour markers raised three-fold
    ed = widgets["editing"]
    value = ed.new_painted_region("stroma")
    labels = ed.labels_layer
    ys, xs = _edit_box(canvas)
    data = np.asarray(labels.data)
    data[ys, xs] = value
    labels.data = data
    edit_genes = [g for g in ("EPCAM", "KRT8", "CD24", "ERBB2", "KRT19") if g in canvas.genes][:3] or genes
    ed.op_combo.setCurrentText("scale")
    ed.genes_edit.setText(", ".join(edit_genes))
    ed.value_spin.setValue(3.0)
    ed.apply_edit()
    _wait(app, lambda: ed.busy, a.timeout)
    for layer in viewer.layers:  # the edited tissue with the painted region on top
        layer.visible = layer is labels or layer is ed.edited_layer
    viewer.layers.move(viewer.layers.index(labels), len(viewer.layers))
    labels.opacity = 0.35
    viewer.layers.selection.active = labels
    _raise_dock(viewer, ed)
    _process(app, 1.0)
    _save(viewer.screenshot(canvas_only=False), out / "editing-panel.png")

    # 4. the comparison view
    comp = widgets["compare"]
    for layer in viewer.layers:
        layer.visible = layer is not labels
    comp.refresh_layers()
    names = {x.name for x in shown}
    for i in range(comp.genes_list.count()):  # the two genes of step 2 as the genes panel
        comp.genes_list.item(i).setSelected(comp.genes_list.item(i).text() in names)
    comp.enter_comparison()
    hidden = [d for d in _docks(viewer) if d.isVisible()]
    qv = viewer.window._qt_viewer
    hidden += [d for d in (qv.dockLayerList, qv.dockLayerControls) if d.isVisible()]
    for d in hidden:  # the canvas alone, full width
        d.hide()
    viewer.reset_view()
    _process(app, 1.0)
    if hasattr(gen, "wait"):  # the zoom changed: the lazy layer computes the tiles of the new view
        gen.wait(a.timeout)
    _wait(app, lambda: ed.busy, a.timeout)
    _process(app, 2.0)
    _save(viewer.screenshot(canvas_only=True), out / "comparison-grid.png")
    for d in hidden:
        d.show()
    comp.exit_comparison()

    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
