"""Dock widget: compare real, generated and edited tissue; morphometrics; screenshots and figures.

* **Comparison view**: one click shows real, generated, edited, ``|edited - generated|``
  (heat map) and the chosen genes side by side in napari's grid mode (one linked
  camera); one click (or ``Shift-C``) returns to the single view as it was.
* **Swipe / blend** between two layers: ``blend`` sets the top layer's opacity;
  ``swipe`` shows the top layer only left of a vertical line placed at a fraction
  of the current view (a lazy, masked copy of the top layer).
* **Morphometrics** of the current view or of a region of a Labels layer, for real,
  generated and edited side by side (:func:`napari_gdt.analysis.morphometrics.compare_table`),
  shown in a table, exported as CSV.
* **Screenshot** of the current view (PNG/TIFF, chosen size or scale, µm scale bar burned in) and
  **figure** of the current view (PNG/TIFF/PDF, labelled panels, scale bar, gene legend).

Thin: the numbers and pictures come from :mod:`napari_gdt.export` and :mod:`napari_gdt.analysis`.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import GDTError
from ..export.figure import (
    GENE_COLOURS,
    Panel,
    compose_figure,
    difference_map,
    expression_composite,
    resample_to_grid,
    to_display,
)
from ..rendering.pyramid import LazyArray
from ..rendering.tiles import Region

NONE = "(none)"
DIFF_NAME = "compare: |edited − generated|"
EXPR_NAME = "compare: genes"
SWIPE_NAME = "compare: swipe"
SHORTCUT = "Shift-C"
MAX_MEASURE_PX = 4096  # longest side of a region measured at full resolution
MAX_FIGURE_PX = 2048  # longest side of a figure panel sampled from the view


# ----------------------------------------------------------------------------- layer helpers (no Qt)
def data_to_world(layer) -> np.ndarray:
    """3x3 homogeneous map from a 2D layer's data ``(row, col)`` to world ``(y, x)``."""
    return np.asarray(layer._data_to_world.affine_matrix, dtype=float)[-3:, -3:]


def _levels(layer) -> list:
    return list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]


def sample_layer(layer, region: Region, step: float = 1.0, order: int = 0) -> np.ndarray:
    """Sample a 2D layer on the world grid ``region`` at ``step`` world px per sample.

    Picks the coarsest pyramid level that is still at least as fine as ``step``
    and reads only the window it needs. Returns float32 in [0, 1] for images
    (uint8/uint16 rescaled) and the raw values for labels.
    """
    levels = _levels(layer)
    full = np.asarray(levels[0].shape[:2], dtype=float)
    best, f_best = 0, 1.0
    for k, lev in enumerate(levels):
        f = float(np.min(full / np.asarray(lev.shape[:2], dtype=float)))
        if f <= step + 1e-9 and f >= f_best:
            best, f_best = k, f
    data = levels[best]
    h = max(1, math.ceil(region.shape[0] / step))
    w = max(1, math.ceil(region.shape[1] / step))
    # Continuous coordinates with pixel i spanning [i, i + 1) (bins: [b*ppb, (b+1)*ppb) in output px, as
    # recipes and the renderer use them); grid sample g sits at the centre of its world cell.
    grid_to_world = np.array([[step, 0, region.y0 + 0.5 * step], [0, step, region.x0 + 0.5 * step], [0, 0, 1.0]])
    world_to_data0 = np.linalg.inv(data_to_world(layer))
    to_index = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])  # continuous -> pixel-centre index
    M = to_index @ np.diag([1.0 / f_best, 1.0 / f_best, 1.0]) @ world_to_data0 @ grid_to_world
    out = resample_to_grid(data, M, (h, w), order=order)
    dt = np.dtype(getattr(data, "dtype", np.float32))
    if getattr(layer, "_type_string", "") == "labels":
        return out
    if dt == np.uint8:
        out = out / 255.0
    elif dt == np.uint16:
        out = out / 65535.0
    return out


def layer_colour(layer) -> tuple[float, float, float]:
    """The colour at the top of a layer's colormap (the gene's colour in an additive overlay)."""
    try:
        return tuple(float(c) for c in np.asarray(layer.colormap.colors)[-1][:3])
    except (AttributeError, IndexError, TypeError, ValueError):  # pragma: no cover - unusual colormap objects
        return (1.0, 1.0, 1.0)


def _lazy(a):
    import dask.array as da

    return a if isinstance(a, da.Array) else da.from_array(a, chunks=tuple(min(s, 1024) for s in a.shape))


def _unit(a):
    """Integer pixels (uint8/uint16) as float32 in [0, 1]; float data unchanged."""
    dt = np.dtype(a.dtype)
    if dt.kind in "ui":
        scale = float(np.iinfo(dt).max)
        if isinstance(a, np.ndarray):
            return a.astype(np.float32) / scale
        return _lazy(a).astype(np.float32) / scale
    return a


class DifferenceLevel(LazyArray):
    """``|b - a|`` (channel mean, in output units 0-1) of two tile-pyramid levels, read on demand.

    A numpy-like array (``shape``, ``dtype``, ``chunks``, ``__getitem__``) like
    :class:`~napari_gdt.rendering.pyramid.PyramidLevel`: each read reads the same
    window of both levels (stored tiles, previews where a tile is not computed yet,
    and a request for the missing tiles), so re-reading after tiles arrive shows the
    real difference; nothing is cached here.
    """

    def __init__(self, a_layer, b_layer, level: int = 0):
        self.a_layer, self.b_layer, self.level = a_layer, b_layer, int(level)
        a = self.a
        self.shape = tuple(int(n) for n in a.shape[:2])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self.chunks = tuple(getattr(a, "chunks", (256, 256)))[:2]
        self.chunksize = self.chunks

    # the layers' current data: an edited layer keeps its napari layer but swaps its pyramid on Apply/Undo
    @property
    def a(self):
        return _levels(self.a_layer)[self.level]

    @property
    def b(self):
        return _levels(self.b_layer)[self.level]

    @property
    def pyramids(self) -> tuple:
        return tuple(getattr(x, "pyramid", None) for x in (self.a, self.b))

    def __getitem__(self, key):
        key = self._full_key(key)
        xa, xb = _unit(np.asarray(self.a[key])), _unit(np.asarray(self.b[key]))
        d = np.abs(xb.astype(np.float32) - xa.astype(np.float32))
        nd = sum(not isinstance(k, (int, np.integer)) for k in key)
        return d.mean(axis=-1) if d.ndim > nd else d


def lazy_difference(gen_layer, edi_layer):
    """``|edited - generated|`` (channel mean) as lazy data of the same pyramid shape.

    Two lazy generated layers (tile pyramids) give :class:`DifferenceLevel` levels, read
    afresh at every read (the comparison view re-reads them as tiles arrive); other
    array-likes give dask arrays.
    """
    la, lb = _levels(gen_layer), _levels(edi_layer)
    if all(getattr(x, "pyramid", None) is not None for x in la + lb):
        for a, b in zip(la, lb):
            if tuple(a.shape) != tuple(b.shape):
                raise GDTError(f"layers '{gen_layer.name}' {tuple(a.shape)} and '{edi_layer.name}' {tuple(b.shape)} differ in shape")
        out = [DifferenceLevel(gen_layer, edi_layer, k) for k in range(len(la))]
        return out if len(out) > 1 else out[0]
    out = []
    for a, b in zip(la, lb):
        if tuple(a.shape) != tuple(b.shape):
            raise GDTError(f"layers '{gen_layer.name}' {tuple(a.shape)} and '{edi_layer.name}' {tuple(b.shape)} differ in shape")
        a, b = _unit(a), _unit(b)  # an 8-bit pyramid (the lazy layer) against float [0, 1] pixels
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            out.append(difference_map(a, b) if a.ndim == 3 else np.abs(b.astype(np.float32) - a.astype(np.float32)))
        else:
            d = abs(_lazy(b).astype(np.float32) - _lazy(a).astype(np.float32))
            out.append(d.mean(axis=-1) if a.ndim == 3 else d)
    return out if len(out) > 1 else out[0]


def lazy_composite(gene_layers):
    """Additive RGB composite of gene layers (their contrast limits and colours)."""
    datas = [gl.data for gl in gene_layers]
    eager = all(isinstance(d, np.ndarray) for d in datas)
    rgb = None
    for gl, d in zip(gene_layers, datas):
        lo, hi = (float(v) for v in gl.contrast_limits)
        x = d if eager else _lazy(d)
        v = ((x.astype(np.float32) - lo) / max(hi - lo, 1e-12)).clip(0, 1)
        c = np.asarray(layer_colour(gl), dtype=np.float32)
        term = v[..., None] * c
        rgb = term if rgb is None else rgb + term
    return rgb.clip(0, 1)


def _copy_transform(layer) -> dict:
    return {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate, "shear": layer.shear, "affine": layer.affine}


# ----------------------------------------------------------------------------- the widget
class CompareWidget(QWidget):
    """Comparison view, swipe/blend, morphometrics table and exports."""

    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.table_df = None
        self._saved = None  # single-view state while the comparison view is on
        self._swipe = None  # (top layer, bottom layer, mode)
        self.bundle = None
        self._diff_timer = QTimer(self)  # re-reads a lazy difference panel as tiles arrive
        self._diff_timer.setInterval(300)
        self._diff_timer.timeout.connect(self._poll_difference)
        self.diff_refreshes = 0

        # --- sources
        self.real_combo, self.gen_combo, self.edit_combo = QComboBox(), QComboBox(), QComboBox()
        self.real_combo.setToolTip("Layer with the paired real image")
        self.gen_combo.setToolTip("Layer with the tissue generated from the original expression")
        self.edit_combo.setToolTip("Layer with the tissue generated from the edited expression")
        self.genes_list = QListWidget()
        self.genes_list.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.genes_list.setMaximumHeight(90)
        self.genes_list.setToolTip("Expression layers (genes) for the expression panel, shown as additive colours")
        self.um_spin = QDoubleSpinBox()
        self.um_spin.setDecimals(4)
        self.um_spin.setRange(0.0001, 1000.0)
        self.um_spin.setValue(1.0)
        self.um_spin.setSuffix(" µm/px")
        self.um_spin.setToolTip("Micrometres per generated pixel (the model's um_per_px); sizes scale bars and morphometrics")
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(["he", "dapi"])
        self.kind_combo.setToolTip("Nuclei from haematoxylin (H&E colour deconvolution) or from DAPI intensity")
        src = QFormLayout()
        src.addRow("Real", self.real_combo)
        src.addRow("Generated", self.gen_combo)
        src.addRow("Edited", self.edit_combo)
        src.addRow("Genes", self.genes_list)
        src.addRow("Scale", self.um_spin)
        src.addRow("Stain", self.kind_combo)
        box_src = QGroupBox("Sources")
        box_src.setLayout(src)

        # --- comparison view
        self.compare_btn = QPushButton("Comparison view")
        self.compare_btn.setToolTip(f"Real, generated, edited, difference and genes side by side, one linked camera ({SHORTCUT})")
        self.compare_btn.clicked.connect(self.enter_comparison)
        self.single_btn = QPushButton("Single view")
        self.single_btn.setToolTip(f"Back to the single view as it was ({SHORTCUT})")
        self.single_btn.clicked.connect(self.exit_comparison)
        self.single_btn.setEnabled(False)
        row_cmp = QHBoxLayout()
        row_cmp.addWidget(self.compare_btn)
        row_cmp.addWidget(self.single_btn)

        # --- swipe / blend
        self.top_combo, self.bottom_combo = QComboBox(), QComboBox()
        self.top_combo.setToolTip("Layer on top (blended or swiped)")
        self.bottom_combo.setToolTip("Layer underneath")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["blend", "swipe"])
        self.mode_combo.setToolTip("blend: top-layer opacity; swipe: top layer shown left of a vertical line")
        self.swipe_slider = QSlider(Qt.Orientation.Horizontal)
        self.swipe_slider.setRange(0, 100)
        self.swipe_slider.setValue(50)
        self.swipe_slider.setToolTip("Opacity of the top layer (blend) or position of the swipe line in the view (swipe)")
        self.swipe_slider.valueChanged.connect(lambda v: self.apply_swipe())
        self.mode_combo.currentTextChanged.connect(lambda t: self.apply_swipe())
        self.swipe_off_btn = QPushButton("Off")
        self.swipe_off_btn.setToolTip("Remove the swipe and restore the top layer")
        self.swipe_off_btn.clicked.connect(self.clear_swipe)
        sw = QFormLayout()
        sw.addRow("Top", self.top_combo)
        sw.addRow("Bottom", self.bottom_combo)
        row_sw = QHBoxLayout()
        row_sw.addWidget(self.mode_combo)
        row_sw.addWidget(self.swipe_slider)
        row_sw.addWidget(self.swipe_off_btn)
        sw.addRow(row_sw)
        box_sw = QGroupBox("Swipe / blend")
        box_sw.setLayout(sw)

        # --- morphometrics
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("Measure in the current view or in a region of a Labels layer")
        self.label_spin = QSpinBox()
        self.label_spin.setRange(0, 2**31 - 1)
        self.label_spin.setToolTip("Label value of the region (0 = every labelled pixel)")
        self.measure_btn = QPushButton("Measure nuclei")
        self.measure_btn.setToolTip("Nuclei count, density, area and area fraction for real, generated and edited")
        self.measure_btn.clicked.connect(self._measure_clicked)
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Morphometrics per image in the region")
        self.csv_btn = QPushButton("Export CSV…")
        self.csv_btn.setToolTip("Save the morphometrics table as CSV")
        self.csv_btn.clicked.connect(self._csv_clicked)
        mf = QFormLayout()
        row_reg = QHBoxLayout()
        row_reg.addWidget(self.region_combo)
        row_reg.addWidget(QLabel("label"))
        row_reg.addWidget(self.label_spin)
        mf.addRow("Region", row_reg)
        mv = QVBoxLayout()
        mv.addLayout(mf)
        row_m = QHBoxLayout()
        row_m.addWidget(self.measure_btn)
        row_m.addWidget(self.csv_btn)
        mv.addLayout(row_m)
        mv.addWidget(self.table)
        box_m = QGroupBox("Morphometrics")
        box_m.setLayout(mv)

        # --- exports
        self.shot_w, self.shot_h = QSpinBox(), QSpinBox()
        for s in (self.shot_w, self.shot_h):
            s.setRange(0, 16384)
            s.setSpecialValueText("auto")  # short: "canvas" was cut to "nvas" in a narrow dock
            s.setToolTip("Screenshot size in pixels (auto = the canvas size times the scale)")
        self.shot_scale = QDoubleSpinBox()
        self.shot_scale.setRange(0.1, 16.0)
        self.shot_scale.setValue(1.0)
        self.shot_scale.setToolTip("Resolution factor on the canvas size (used when the size is 0)")
        self.scalebar_spin = QDoubleSpinBox()
        self.scalebar_spin.setRange(0.0, 1e6)
        self.scalebar_spin.setSpecialValueText("auto")
        self.scalebar_spin.setSuffix(" µm")
        self.scalebar_spin.setToolTip("Scale-bar length (0 = a round number chosen for the width)")
        self.dpi_spin = QSpinBox()
        self.dpi_spin.setRange(30, 2400)
        self.dpi_spin.setValue(300)
        self.dpi_spin.setToolTip("Figure resolution in dots per inch")
        self.shot_btn = QPushButton("Screenshot…")
        self.shot_btn.setToolTip("Save the current view as PNG or TIFF with a µm scale bar")
        self.shot_btn.clicked.connect(self._shot_clicked)
        self.fig_btn = QPushButton("Figure…")
        self.fig_btn.setToolTip("Save a labelled multi-panel figure of the current view (PNG, TIFF or PDF)")
        self.fig_btn.clicked.connect(self._fig_clicked)
        self.sdata_btn = QPushButton("Into SpatialData…")
        self.sdata_btn.setToolTip(
            "Add the generated and edited images of the current view to a SpatialData .zarr store, aligned with its "
            "real image (needs napari-gdt[spatialdata]; elements gdt_generated, gdt_edited)"
        )
        self.sdata_btn.clicked.connect(self._sdata_clicked)
        ef = QFormLayout()
        row_sz = QHBoxLayout()
        row_sz.addWidget(self.shot_w)
        row_sz.addWidget(QLabel("×"))
        row_sz.addWidget(self.shot_h)
        ef.addRow("Size (w×h)", row_sz)
        ef.addRow("Scale", self.shot_scale)
        ef.addRow("Scale bar", self.scalebar_spin)
        ef.addRow("DPI", self.dpi_spin)
        row_e = QHBoxLayout()
        row_e.addWidget(self.shot_btn)
        row_e.addWidget(self.fig_btn)
        row_e.addWidget(self.sdata_btn)
        ef.addRow(row_e)
        box_e = QGroupBox("Export")
        box_e.setLayout(ef)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(box_src)
        lay.addLayout(row_cmp)
        lay.addWidget(box_sw)
        lay.addWidget(box_m)
        lay.addWidget(box_e)
        lay.addWidget(self.status)

        if self.viewer is not None:
            self.viewer.layers.events.inserted.connect(self.refresh_layers)
            self.viewer.layers.events.removed.connect(self.refresh_layers)
            self.viewer.bind_key(SHORTCUT, self._toggle_key, overwrite=True)
        self.refresh_layers()

    # ------------------------------------------------------------------ layer choice
    def _image_layers(self):
        if self.viewer is None:
            return []
        return [l for l in self.viewer.layers if l._type_string == "image" and not l.name.startswith("compare: ")]

    def _set_items(self, combo, names, prefer=None):
        cur = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([NONE] + names)
        pick = cur if cur in names else next((n for n in (prefer or []) if n in names), NONE)
        combo.setCurrentText(pick)
        combo.blockSignals(False)

    def refresh_layers(self, event=None):
        """Refill the layer choices from the viewer (keeps current choices that still exist)."""
        imgs = [l.name for l in self._image_layers()]
        genes = [l.name for l in self._image_layers() if "gene" in (l.metadata or {})]
        plain = [n for n in imgs if n not in genes]
        self._set_items(self.real_combo, plain, ["real", "real image", "H&E", "DAPI"])
        self._set_items(self.gen_combo, plain, ["generated"])
        self._set_items(self.edit_combo, plain, ["edited", "generated (edited)"])
        self._set_items(self.top_combo, plain, ["edited", "generated (edited)", "generated"])
        self._set_items(self.bottom_combo, plain, ["generated", "real"])
        selected = {i.text() for i in self.genes_list.selectedItems()}
        self.genes_list.clear()
        for g in genes:
            self.genes_list.addItem(g)
            if g in selected:
                self.genes_list.item(self.genes_list.count() - 1).setSelected(True)
        labels = [l.name for l in self.viewer.layers if l._type_string == "labels"] if self.viewer is not None else []
        cur = self.region_combo.currentText()
        self.region_combo.clear()
        self.region_combo.addItems(["current view"] + labels)
        if cur in labels:
            self.region_combo.setCurrentText(cur)

    def set_bundle(self, bundle) -> None:
        """Take µm per px and the stain from a model bundle."""
        self.bundle = bundle
        self.um_spin.setValue(float(bundle.um_per_px))
        self.kind_combo.setCurrentText("dapi" if bundle.output_kind != "he" else "he")

    def set_sources(self, real=None, generated=None, edited=None, genes=None) -> None:
        """Choose layers by name (``None`` leaves a choice unchanged, ``""`` clears it)."""
        self.refresh_layers()
        for combo, name in ((self.real_combo, real), (self.gen_combo, generated), (self.edit_combo, edited)):
            if name is not None:
                combo.setCurrentText(name or NONE)
        if genes is not None:
            for i in range(self.genes_list.count()):
                it = self.genes_list.item(i)
                it.setSelected(it.text() in genes)

    def _layer(self, combo):
        name = combo.currentText()
        if self.viewer is None or name in ("", NONE) or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    @property
    def real_layer(self):
        return self._layer(self.real_combo)

    @property
    def generated_layer(self):
        return self._layer(self.gen_combo)

    @property
    def edited_layer(self):
        return self._layer(self.edit_combo)

    @property
    def gene_layers(self):
        names = [self.genes_list.item(i).text() for i in range(self.genes_list.count()) if self.genes_list.item(i).isSelected()]
        return [self.viewer.layers[n] for n in names if n in self.viewer.layers]

    def _notify(self, e: Exception):
        self.status.setText(f"error: {e}")
        from napari.utils.notifications import show_error

        show_error(str(e))

    # ------------------------------------------------------------------ comparison view
    @property
    def comparing(self) -> bool:
        return self._saved is not None

    def enter_comparison(self) -> list[str]:
        """Show the panels side by side in grid mode; returns the panel layer names, in grid order."""
        if self.viewer is None:
            return []
        if self.comparing:
            return self._saved["panels"]
        gen, edi, real = self.generated_layer, self.edited_layer, self.real_layer
        if gen is None and edi is None and real is None:
            self._notify(GDTError("choose at least one of the real, generated and edited layers"))
            return []
        self.clear_swipe()
        layers = self.viewer.layers
        grid = self.viewer.canvas.grid
        self._saved = {
            "order": list(layers),
            "visible": {l: l.visible for l in layers},
            "opacity": {l: l.opacity for l in layers},
            "grid": (grid.enabled, grid.stride, grid.shape),
        }
        panels = [l for l in (real, gen, edi) if l is not None]
        added = []
        if gen is not None and edi is not None:
            diff = lazy_difference(gen, edi)
            d = self.viewer.add_image(diff, name=DIFF_NAME, colormap="magma", multiscale=isinstance(diff, list), **_copy_transform(gen))
            added.append(d)
            panels.append(d)
            self._watch_difference(d, diff)
        genes = self.gene_layers
        if genes:
            e = self.viewer.add_image(lazy_composite(genes), name=EXPR_NAME, rgb=True, **_copy_transform(genes[0]))
            added.append(e)
            panels.append(e)
        self._saved["added"] = added
        for l in layers:
            l.visible = l in panels
        for p in panels:
            p.opacity = 1.0
        # with stride 1 the grid fills viewboxes row-major in layer-list order (hidden layers take none):
        # put the panels last, in order, so that the first panel is top-left
        for p in panels:
            layers.move(layers.index(p), len(layers))
        grid.stride = 1
        grid.shape = (-1, -1)
        grid.enabled = True
        self._saved["panels"] = [p.name for p in panels]
        self.compare_btn.setEnabled(False)
        self.single_btn.setEnabled(True)
        self.status.setText("comparison: " + ", ".join(self._saved["panels"]))
        return self._saved["panels"]

    def _watch_difference(self, layer, diff) -> None:
        """Re-read the difference panel while either lazy layer receives tiles (polled, 3 Hz)."""
        level = (diff if isinstance(diff, list) else [diff])[0]
        if not isinstance(level, DifferenceLevel):
            return
        self._diff_watch = (layer, level, self._diff_state(level))
        self._diff_timer.start()

    @staticmethod
    def _diff_state(level) -> tuple:
        return tuple((id(p), p.revision) for p in level.pyramids if p is not None)

    def _poll_difference(self) -> None:
        w = getattr(self, "_diff_watch", None)
        if w is None or not self.comparing:
            self._diff_timer.stop()
            return
        layer, level, seen = w
        now = self._diff_state(level)
        if now != seen:
            self._diff_watch = (layer, level, now)
            self.diff_refreshes += 1
            layer.refresh()

    def exit_comparison(self) -> None:
        """Back to the single view: layer order, visibility and grid as they were."""
        if not self.comparing or self.viewer is None:
            return
        s, self._saved = self._saved, None
        self._diff_timer.stop()
        layers = self.viewer.layers
        for l in s["added"]:
            if l in layers:
                layers.remove(l)
        grid = self.viewer.canvas.grid
        grid.enabled, grid.stride, grid.shape = s["grid"]
        order = [l for l in s["order"] if l in layers]
        for i, l in enumerate(order):
            j = layers.index(l)
            if j != i:
                layers.move(j, i)
        for l in order:
            l.visible = s["visible"][l]
            l.opacity = s["opacity"][l]
        self.compare_btn.setEnabled(True)
        self.single_btn.setEnabled(False)
        self.status.setText("single view")

    def toggle_comparison(self) -> bool:
        """Switch between the comparison view and the single view; returns whether comparing."""
        if self.comparing:
            self.exit_comparison()
        else:
            self.enter_comparison()
        return self.comparing

    def _toggle_key(self, viewer=None):
        self.toggle_comparison()

    # ------------------------------------------------------------------ swipe / blend
    def set_swipe(self, top: str, bottom: str, mode: str = "blend", value: int = 50) -> None:
        """Blend or swipe ``top`` over ``bottom`` (``value`` in 0..100: opacity or line position)."""
        self.top_combo.setCurrentText(top)
        self.bottom_combo.setCurrentText(bottom)
        self.mode_combo.blockSignals(True)
        self.mode_combo.setCurrentText(mode)
        self.mode_combo.blockSignals(False)
        self.swipe_slider.blockSignals(True)
        self.swipe_slider.setValue(int(value))
        self.swipe_slider.blockSignals(False)
        self.apply_swipe()

    def clear_swipe(self) -> None:
        """Remove the swipe layer and restore the top layer's opacity and visibility."""
        if self._swipe is None or self.viewer is None:
            return
        top, _, opacity, visible = self._swipe
        self._swipe = None
        if SWIPE_NAME in self.viewer.layers:
            self.viewer.layers.remove(SWIPE_NAME)
        if top in self.viewer.layers:
            top.opacity, top.visible = opacity, visible

    def apply_swipe(self) -> None:
        top, bottom = self._layer(self.top_combo), self._layer(self.bottom_combo)
        if top is None or bottom is None or self.viewer is None:
            return
        if top is bottom:
            self._notify(GDTError(f"choose two different layers to swipe or blend (both are '{top.name}')"))
            return
        if self._swipe is not None and self._swipe[0] is not top:
            self.clear_swipe()
        if self._swipe is None:
            self._swipe = (top, bottom, top.opacity, top.visible)
        bottom.visible = True
        frac = self.swipe_slider.value() / 100.0
        layers = self.viewer.layers
        if layers.index(top) < layers.index(bottom):
            layers.move(layers.index(top), layers.index(bottom) + 1)
        if self.mode_combo.currentText() == "blend":
            if SWIPE_NAME in layers:
                layers.remove(SWIPE_NAME)
            top.visible = True
            top.opacity = frac
            return
        top.visible = False
        view = self.current_view_region(clip=False)
        x_split = view.x0 + frac * (view.x1 - view.x0)
        data = self._swiped_data(top, x_split)
        if SWIPE_NAME in layers:
            layers[SWIPE_NAME].data = data
        else:
            lay = self.viewer.add_image(data, name=SWIPE_NAME, rgb=True, multiscale=isinstance(data, list), **_copy_transform(top))
            layers.move(layers.index(lay), layers.index(bottom) + 1)

    def _swiped_data(self, top, x_split: float):
        """RGBA copy of ``top``, transparent right of world column ``x_split`` (lazy per pyramid level)."""
        import dask.array as da

        inv = np.linalg.inv(data_to_world(top))
        full_w = _levels(top)[0].shape[1]
        out = []
        for lev in _levels(top):
            f = full_w / lev.shape[1]
            col = (inv @ np.array([0.0, x_split, 1.0]))[1] / f  # data column of the line (axis-aligned layers)
            x = _lazy(lev).astype(np.float32)
            dt = np.dtype(lev.dtype)
            if dt == np.uint8:
                x = x / 255.0
            elif dt == np.uint16:
                x = x / 65535.0
            if not top.rgb:
                lo, hi = (float(v) for v in top.contrast_limits)
                g = ((x - lo) / max(hi - lo, 1e-12)).clip(0, 1)
                x = da.stack([g, g, g], axis=-1) * np.asarray(layer_colour(top), np.float32)
            x = x[..., :3].clip(0, 1)
            alpha = (da.arange(lev.shape[1], chunks=x.chunks[1]) < col).astype(np.float32)
            alpha = da.broadcast_to(alpha[None, :, None], x.shape[:2] + (1,), chunks=x.chunks[:2] + ((1,),))
            out.append(da.concatenate([x, alpha], axis=-1))
        return out if len(out) > 1 else out[0]

    # ------------------------------------------------------------------ regions
    def current_view_region(self, clip: bool = True) -> Region:
        """World box (output px) seen in one viewbox, clipped to the layers' extent when ``clip``."""
        cam = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        vh, vw = self.viewer.canvas.viewbox_size(self.viewer.layers)
        cy, cx = cam.center[-2:]
        hh, hw = vh / cam.zoom / 2.0, vw / cam.zoom / 2.0
        y0, y1, x0, x1 = math.floor(cy - hh), math.ceil(cy + hh), math.floor(cx - hw), math.ceil(cx + hw)
        if clip:
            ref = self.generated_layer or self.edited_layer or self.real_layer
            if ref is not None:
                # pixel edges of the data box -> world; world px i covers [i - 0.5, i + 0.5)
                n, m = _levels(ref)[0].shape[:2]
                M = data_to_world(ref)
                c = M @ np.array([[0, 0, n, n], [0, m, 0, m], [1, 1, 1, 1]])  # data edges -> world
                y0, x0 = max(y0, math.floor(c[0].min() + 1e-6)), max(x0, math.floor(c[1].min() + 1e-6))
                y1, x1 = min(y1, math.ceil(c[0].max() - 1e-6)), min(x1, math.ceil(c[1].max() - 1e-6))
            if y1 <= y0 or x1 <= x0:
                raise GDTError("the current view shows none of the data; pan or zoom onto the tissue")
        return Region(y0, y1, x0, x1)

    def region_and_mask(self) -> tuple[Region, np.ndarray | None]:
        """The measurement region: the current view, or the bounding box of a label (with its mask)."""
        choice = self.region_combo.currentText()
        if choice in ("", "current view") or choice not in self.viewer.layers:
            return self.current_view_region(), None
        lab = self.viewer.layers[choice]
        value = self.label_spin.value()
        data = np.asarray(lab.data)
        sel = data == value if value else data > 0
        if not sel.any():
            raise GDTError(f"Labels layer '{choice}' has no pixels with label {value if value else '> 0'}")
        rows, cols = np.nonzero(sel.any(axis=1))[0], np.nonzero(sel.any(axis=0))[0]
        M = data_to_world(lab)
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # label edges (bin b = px [b*ppb, (b+1)*ppb))
        corners = M @ np.array([[r0, r0, r1, r1], [c0, c1, c0, c1], [1, 1, 1, 1]], dtype=float)
        region = Region(math.floor(corners[0].min() + 1e-6), math.ceil(corners[0].max() - 1e-6), math.floor(corners[1].min() + 1e-6), math.ceil(corners[1].max() - 1e-6))
        lab_vals = sample_layer(lab, region, 1.0, order=0)
        mask = lab_vals == value if value else lab_vals > 0
        return region, mask

    # ------------------------------------------------------------------ morphometrics
    def measure(self):
        """Morphometrics of real, generated and edited in the chosen region -> DataFrame (also shown)."""
        from ..analysis.morphometrics import compare_table

        region, mask = self.region_and_mask()
        if max(region.shape) > MAX_MEASURE_PX:
            raise GDTError(f"region {region} is larger than {MAX_MEASURE_PX} px; zoom in or choose a smaller label region")
        images = {}
        for name, layer in (("real", self.real_layer), ("generated", self.generated_layer), ("edited", self.edited_layer)):
            if layer is not None:
                images[name] = to_display(sample_layer(layer, region, 1.0, order=1 if name == "real" else 0))
        if not images:
            raise GDTError("choose at least one of the real, generated and edited layers")
        df = compare_table(images, kind=self.kind_combo.currentText(), um_per_px=self.um_spin.value(), mask=mask)
        df.attrs["region"] = str(region)
        self.table_df = df
        self._show_table(df)
        self.status.setText(f"measured region {region}" + (f" ({int(mask.sum())} px in the label)" if mask is not None else ""))
        return df

    def _show_table(self, df) -> None:
        cols = list(df.columns)
        self.table.clear()
        self.table.setRowCount(len(df))
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setVerticalHeaderLabels([str(i) for i in df.index])
        for r, (_, row) in enumerate(df.iterrows()):
            for c, k in enumerate(cols):
                v = row[k]
                txt = f"{int(v)}" if k == "count" else f"{float(v):.4g}"
                self.table.setItem(r, c, QTableWidgetItem(txt))
        self.table.resizeColumnsToContents()

    def export_csv(self, path) -> None:
        """Write the current morphometrics table to ``path`` (CSV, one row per image)."""
        if self.table_df is None:
            raise GDTError("no morphometrics table yet: press 'Measure nuclei' first")
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.table_df.to_csv(path)
        self.status.setText(f"wrote {path}")

    # ------------------------------------------------------------------ exports
    def export_screenshot(self, path, size=None, scale=None, scalebar_um=None):
        """Current view (comparison grid included) as PNG/TIFF with a µm scale bar; returns ScreenshotInfo."""
        from ..export.screenshot import screenshot_view

        if size is None and scale is None:
            w, h = self.shot_w.value(), self.shot_h.value()
            size = (h, w) if w and h else None
            scale = None if size else self.shot_scale.value()
        sb = scalebar_um if scalebar_um is not None else (self.scalebar_spin.value() or None)
        _, info = screenshot_view(self.viewer, path, size=size, scale=scale, um_per_px=self.um_spin.value(), scalebar_um=sb)
        self.status.setText(f"wrote {path} ({info.size_px[1]}x{info.size_px[0]} px)")
        return info

    def figure_panels(self, region: Region | None = None, step: float | None = None) -> list[Panel]:
        """The comparison panels of ``region`` (default: the current view) sampled from the layers."""
        region = region or self.current_view_region()
        if step is None:
            step = max(1.0, max(region.shape) / MAX_FIGURE_PX)
        panels = []
        gen = edi = None
        if self.real_layer is not None:
            panels.append(Panel("real", "real", to_display(sample_layer(self.real_layer, region, step, order=1))))
        if self.generated_layer is not None:
            gen = to_display(sample_layer(self.generated_layer, region, step, order=0))
            panels.append(Panel("generated", "generated", gen))
        if self.edited_layer is not None:
            edi = to_display(sample_layer(self.edited_layer, region, step, order=0))
            panels.append(Panel("edited", "edited", edi))
        if gen is not None and edi is not None:
            panels.append(Panel("difference", "|edited − generated|", difference_map(gen, edi), heat=True, colorbar_label="mean |Δ| (0–1)"))
        genes = self.gene_layers[: len(GENE_COLOURS)]
        if genes:
            counts = np.stack([sample_layer(g, region, step, order=0) for g in genes])
            limits = [tuple(float(v) for v in g.contrast_limits) for g in genes]
            colours = [layer_colour(g) for g in genes]
            label = lambda g: (g.metadata or {}).get("gene", g.name)
            panels.append(Panel("expression", "expression", expression_composite(counts, colours, limits), legend=[(label(g), c) for g, c in zip(genes, colours)]))
        if not panels:
            raise GDTError("choose at least one layer to put in the figure")
        return panels

    def export_figure(self, path, region: Region | None = None, dpi: float | None = None, scalebar_um=None):
        """Multi-panel figure of the current view (or ``region``) as PNG/TIFF/PDF; returns FigureInfo."""
        region = region or self.current_view_region()
        step = max(1.0, max(region.shape) / MAX_FIGURE_PX)
        panels = self.figure_panels(region, step)
        sb = scalebar_um if scalebar_um is not None else (self.scalebar_spin.value() or None)
        info = compose_figure(panels, path, um_per_px=self.um_spin.value() * step, scalebar_um=sb, dpi=dpi or self.dpi_spin.value())
        self.status.setText(f"wrote {path}: {len(info.panels)} panels")
        return info

    # ------------------------------------------------------------------ button handlers
    def _measure_clicked(self):
        try:
            self.measure()
        except GDTError as e:
            self._notify(e)

    def _csv_clicked(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Morphometrics CSV", "morphometrics.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except GDTError as e:
                self._notify(e)

    def _shot_clicked(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Screenshot", "view.png", "Images (*.png *.tif *.tiff)")
        if path:
            try:
                self.export_screenshot(path)
            except GDTError as e:
                self._notify(e)

    def export_into_spatialdata(self, store, region: Region | None = None, overwrite: bool = False) -> dict:
        """Add the generated (and edited) layers' pixels over ``region`` (default: the current view) to a SpatialData store.

        A thin call into :func:`napari_gdt.expression.spatialdata.write_into_spatialdata`: the pixels are
        rendered exactly (from the layers' tile caches) by the renderers behind the layers, whose canvas
        says which image element of the store they align with.
        """
        from ..expression.spatialdata import write_into_spatialdata

        gen, edi = self.generated_layer, self.edited_layer
        if gen is None:
            raise GDTError("choose the generated layer first")

        def renderer_of(layer):
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            return getattr(getattr(data, "pyramid", None), "renderer", None)

        rg = renderer_of(gen)
        if rg is None:
            raise GDTError(f"layer '{gen.name}' was not generated by napari-gdt here: no canvas to align it with")
        region = rg.check_region(region or self.current_view_region())
        re_ = renderer_of(edi) if edi is not None else None
        edited = re_.render_region(region) if re_ is not None else None
        return write_into_spatialdata(
            store, rg.canvas, rg.bundle.px_per_bin, rg.render_region(region), edited=edited, origin_px=(region.y0, region.x0),
            channel_names=rg.bundle.channel_names or None, model_card=dict(rg.bundle.card), overwrite=overwrite,
            settings={"seed": rg.seed, "region": [region.y0, region.y1, region.x0, region.x1], "from": "compare widget"},
        )

    def _sdata_clicked(self):  # pragma: no cover - needs a user
        path = QFileDialog.getExistingDirectory(self, "SpatialData store (.zarr)")
        if path:
            try:
                s = self.export_into_spatialdata(path)
                self.status.setText(f"wrote {', '.join(s['elements'])} into {path}, aligned with '{s['image_element']}'")
            except GDTError as e:
                self._notify(e)

    def _fig_clicked(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Figure", "figure.png", "Figures (*.png *.tif *.tiff *.pdf)")
        if path:
            try:
                self.export_figure(path)
            except GDTError as e:
                self._notify(e)
