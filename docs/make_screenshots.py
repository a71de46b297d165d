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


def _settle_tiles(app, gen, timeout: float) -> None:
    """Let the generator panel see the current camera, then wait for the visible tiles (twice: the
    first batch can change the pyramid level napari shows, which asks for more)."""
    for _ in range(2):
        _process(app, 0.8)
        if hasattr(gen, "wait"):
            gen.wait(timeout)
    _process(app, 0.5)


def _save(img: np.ndarray, path: Path) -> None:
    from skimage.io import imsave

    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(str(path), np.asarray(img)[..., :3], check_contrast=False)
    print(f"wrote {path} {img.shape[1]}x{img.shape[0]}")


def _ensure_widgets(viewer, widgets: dict) -> dict:
    """The demo provides the dock widgets; add the ones an older demo lacks, given the demo's Session."""
    session = widgets["generator"].session
    from napari_gdt.widgets.compare import CompareWidget
    from napari_gdt.widgets.editing import EditingWidget
    from napari_gdt.widgets.expression import ExpressionWidget

    for key, cls, name in (
        ("expression", ExpressionWidget, "Expression canvas"),
        ("editing", EditingWidget, "What-if editing"),
        ("compare", CompareWidget, "Compare and export"),
    ):
        if key not in widgets:
            widgets[key] = cls(viewer, session=session)
            viewer.window.add_dock_widget(widgets[key], name=name, area="right")
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


def _pick_genes(canvas, preferred=("ERBB2", "COL1A1", "Slc17a7", "Gad1", "EPCAM", "KRT8")) -> list[str]:
    genes = [g for g in preferred if g in canvas.genes]
    if len(genes) < 2:  # the most abundant genes
        totals = np.asarray(canvas.data.sum(axis=(1, 2)))
        genes = [canvas.genes[i] for i in np.argsort(totals)[::-1][:2]]
    return genes[:2]


#: Output-pixel rectangles (y0, x0, y1, x1) of the stroma edited in the tutorials, per dataset.
EDIT_RECTS = {"her2st": (1700, 640, 2000, 1100)}
#: Output-pixel rectangles the overview zooms onto (the lazy layer computes model tiles only for
#: views of at most a few hundred tiles; further out it shows expression-based previews).
OVERVIEW_RECTS = {"her2st": (1100, 200, 2700, 1900)}


def _look_at(viewer, box_px, cells=(1, 1), margin: float = 1.6) -> None:
    """Centre the camera on ``box_px`` (y0, x0, y1, x1 world px) so that it fills a grid cell."""
    y0, x0, y1, x1 = box_px
    h, w = viewer.canvas.size if hasattr(viewer, "canvas") else viewer._canvas_size
    cell = min(h / cells[0], w / cells[1])
    viewer.camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    viewer.camera.zoom = cell / (margin * max(y1 - y0, x1 - x0))


def _autocontrast_difference(viewer, box_px) -> None:
    """Like napari's auto-contrast 'once' on the difference panel, over the edited box."""
    for layer in viewer.layers:
        if "differ" in layer.name.lower() or "|" in layer.name:
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            y0, x0, y1, x1 = (int(v) for v in box_px)
            d = np.asarray(data[max(0, y0 - 64) : y1 + 64, max(0, x0 - 64) : x1 + 64], dtype=np.float32)
            hi = float(np.percentile(d, 99.9)) if d.size else 0.0
            if hi > 0:
                layer.contrast_limits = (0.0, hi)
                print(f"difference panel '{layer.name}': contrast 0..{hi:.4f} (largest change near the edit)")


def _edit_box(canvas, dataset: str, ppb: int) -> tuple[slice, slice]:
    """The bins to edit: the tutorial's stroma rectangle, or where the expression is highest."""
    if dataset in EDIT_RECTS:
        y0, x0, y1, x1 = EDIT_RECTS[dataset]
        return slice(y0 // ppb, -(-y1 // ppb)), slice(x0 // ppb, -(-x1 // ppb))
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
    widgets = _ensure_widgets(viewer, dict(widgets))
    order = {k: widgets[k] for k in ("generator", "expression", "editing", "compare") if k in widgets}
    _tabify(viewer, order)
    _raise_dock(viewer, gen)
    canvas = gen.canvas
    viewer.window._qt_window.resize(*WINDOW)
    viewer.reset_view()
    _process(app, 0.5)
    if a.dataset in OVERVIEW_RECTS:
        _look_at(viewer, OVERVIEW_RECTS[a.dataset], margin=1.0)
    _settle_tiles(app, gen, a.timeout)

    # 1. the demo as it opens
    _save(viewer.screenshot(canvas_only=False), out / "demo-overview.png")

    # 2. expression: two genes as additive channels, generated tissue hidden
    exp = widgets["expression"]
    genes = _pick_genes(canvas)
    visible = {layer.name: layer.visible for layer in viewer.layers}
    viewer.reset_view()  # the whole section (expression layers are plain arrays: no tiles to wait for)
    exp.select_genes(genes)
    exp.pct_spin.setValue(90.0)  # the Contrast box: spread spot counts have a long tail
    shown = list(exp.show_genes(genes) or [])
    exp.update_contrast()
    for layer in shown:  # as the Contrast box: 90th percentile of the non-zero values
        arr = np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data, dtype=np.float32)
        nz = arr[arr > 0]
        if nz.size:
            layer.contrast_limits = (0.0, float(np.percentile(nz, 90)))
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
    ppb = gen.bundle.px_per_bin
    ys, xs = _edit_box(canvas, a.dataset, ppb)
    box_px = (ys.start * ppb, xs.start * ppb, ys.stop * ppb, xs.stop * ppb)
    data = np.asarray(labels.data)
    data[ys, xs] = value
    labels.data = data
    edit_genes = [g for g in ("ERBB2", "GRB7", "KRT19", "EPCAM", "KRT8", "CD24") if g in canvas.genes][:4] or genes
    ed.op_combo.setCurrentText("scale")
    ed.genes_edit.setText(", ".join(edit_genes))
    ed.value_spin.setValue(3.0)
    ed.apply_edit()
    _wait(app, lambda: ed.busy, a.timeout)
    _look_at(viewer, box_px, margin=3.0)
    _settle_tiles(app, gen, a.timeout)
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
    panels = comp.enter_comparison() or []
    hidden = [d for d in _docks(viewer) if d.isVisible()]
    qv = viewer.window._qt_viewer
    hidden += [d for d in (qv.dockLayerList, qv.dockLayerControls) if d.isVisible()]
    for d in hidden:  # the canvas alone, full width
        d.hide()
    _look_at(viewer, box_px, cells=(2, max(1, -(-len(panels) // 2))), margin=1.5)
    _settle_tiles(app, gen, a.timeout)  # the view changed: the lazy layer computes its tiles
    _autocontrast_difference(viewer, box_px)
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
