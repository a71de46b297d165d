"""Dock widget: paint regions, edit genes, watch the generated tissue change.

Thin: regions, edits, undo/redo, autosave and dirty-tile geometry all live in
:mod:`napari_gdt.editing`; rendering is :class:`~napari_gdt.rendering.tiles.TileRenderer`.

Layers it manages:

``edit regions``
    A single-scale Labels layer on the expression bin grid (scale = px per
    bin, so it overlays the generated image). One label value per painted region.
``generated (edited)``
    The generated tissue for the edited canvas, next to the original
    ``generated`` layer (which is never modified). After an edit only the tiles
    whose input window (tile + halo) touches a changed bin are recomputed.

    With a :class:`~napari_gdt.widgets.generator.GeneratorWidget` that shows a
    lazy ``generated`` layer (the usual case), the edited layer is another lazy
    multiscale layer of that widget (:meth:`GeneratorWidget.add_canvas_layer`):
    the edited canvas is never rendered whole, only the tiles in view are
    computed (in the generator's worker), and tiles whose content hash equals
    the original's are copied from the ``generated`` layer or served from the
    shared cache. Without a lazy generator (:meth:`EditingWidget.set_session`)
    the edited layer is a numpy image, updated tile by tile in a worker thread.

Keyboard shortcuts (viewer): Control-Shift-Enter applies, Control-Alt-Z undoes,
Control-Alt-Shift-Z redoes the last edit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..editing.autosave import StrokeAutosaver, latest_autosave, new_autosave_path
from ..editing.history import EditHistory, GeneSets, parse_gene_list
from ..editing.recipe import OPS, dirty_tiles
from ..editing.regions import shape_to_region
from ..errors import GDTError

REGIONS_LAYER = "edit regions"
EDITED_LAYER = "generated (edited)"
ORIGINAL_LAYER = "generated"
# At most this many candidate tiles of an edit have their content hash compared on the UI thread
# (about 1-3 ms each); the rest are settled by the worker and the tile cache.
MAX_UI_CHECKS = 128
KEY_APPLY = "Control-Shift-Enter"
KEY_UNDO = "Control-Alt-Z"
KEY_REDO = "Control-Alt-Shift-Z"

_VALUE_LABEL = {"scale": "Factor", "set": "Value", "add": "Value", "knockout": "(none)", "transfer": "Strength", "eigen": "Strength"}


def _lazy_generated(g):
    """The generator's lazy ``generated`` pyramid, if it shows one (and supports extra canvas layers)."""
    if g is None or not hasattr(g, "add_canvas_layer") or not hasattr(g, "pyramids"):
        return None
    try:
        return g.pyramids().get(ORIGINAL_LAYER)
    except Exception:  # noqa: BLE001 - an unusual generator object
        return None


class EditingWidget(QWidget):
    """Regions, gene edits, history and before/after statistics.

    Parameters
    ----------
    napari_viewer : napari.Viewer, optional
    generator : GeneratorWidget, optional
        Where the model, canvas and seed come from (else call :meth:`set_session`).
    autosave : path, optional
        Recipe file rewritten after every change (default: next to the canvas,
        or in the system temporary folder).
    gene_sets : path, optional
        JSON file of saved gene sets (default ``~/.config/napari-gdt/gene_sets.json``).
    """

    def __init__(self, napari_viewer=None, generator=None, autosave=None, gene_sets=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.generator = generator
        self.bundle = None
        self.canvas = None
        self.seed = 0
        self.tile_px = None
        self.cache = None
        self._orig_renderer = None
        self._touched = None
        self._shown_keys: dict = {}
        self._generation = 0
        self._worker = None
        self._pending: dict = {}
        self.async_render = True
        self.batch_size = 2
        self._edited_img = None
        self._original_img = None
        self._lazy_gen = None  # GeneratorWidget whose lazy layers we use (None: numpy path)
        self._orig_keys: dict = {}
        self._lazy_info: dict = {}
        self.last_stats: dict = {}
        self.last_recomputed: list = []
        self._autosave_arg = autosave
        self.history = EditHistory(on_change=self._history_changed)
        self.strokes = StrokeAutosaver(self._save_strokes, delay=0.5, lock=self.history.lock)  # every stroke saved within ~0.5 s
        self.restore_candidate: Path | None = None  # an earlier run's autosave of this canvas, offered on open
        self.gene_sets = GeneSets(gene_sets)
        self._build_ui()
        if self.viewer is not None:
            self._bind_keys()

    # ================================================================= UI
    def _build_ui(self):
        # --- regions
        self.region_name_edit = QLineEdit()
        self.region_name_edit.setPlaceholderText("region name, e.g. stroma")
        self.region_name_edit.setToolTip("Name of the next region you create")
        self.paint_btn = QPushButton("New painted region")
        self.paint_btn.setToolTip("Add a label to the 'edit regions' layer and select it for painting")
        self.paint_btn.clicked.connect(lambda: self._guard(self.new_painted_region))
        self.thr_gene = QComboBox()
        self.thr_gene.setEditable(True)
        self.thr_gene.setToolTip("Gene to threshold")
        self.thr_min = QDoubleSpinBox()
        self.thr_min.setRange(0, 1e9)
        self.thr_min.setDecimals(2)
        self.thr_min.setValue(1.0)
        self.thr_min.setToolTip("Bins with at least this many counts of the gene form the region")
        self.thr_btn = QPushButton("Region from threshold")
        self.thr_btn.setToolTip("A new region of the bins where the gene reaches the minimum count")
        self.thr_btn.clicked.connect(lambda: self._guard(self.region_from_threshold))
        self.shapes_combo = QComboBox()
        self.shapes_combo.setToolTip("A Shapes layer (rectangles, polygons, ellipses in output pixels)")
        self.shapes_btn = QPushButton("Region from shapes")
        self.shapes_btn.setToolTip("One region per shape of the chosen Shapes layer (its selected shapes, or all)")
        self.shapes_btn.clicked.connect(lambda: self._guard(self.region_from_shapes))
        self.geojson_btn = QPushButton("Import GeoJSON…")
        self.geojson_btn.setToolTip("Regions from annotations drawn on the real image (QuPath: Export objects as GeoJSON); "
                                    "one region per classification, painted into the regions layer")
        self.geojson_btn.clicked.connect(self._geojson_dialog)
        self.regions_list = QListWidget()
        self.regions_list.setToolTip("Regions of the recipe")
        self.regions_list.setMaximumHeight(90)

        reg_box = QGroupBox("Regions")
        rl = QFormLayout(reg_box)
        rl.addRow("Name", self.region_name_edit)
        rl.addRow(self.paint_btn)
        thr = QHBoxLayout()
        thr.addWidget(self.thr_gene)
        thr.addWidget(QLabel("≥"))
        thr.addWidget(self.thr_min)
        rl.addRow("Threshold", thr)
        rl.addRow(self.thr_btn)
        shp = QHBoxLayout()
        shp.addWidget(self.shapes_combo)
        shp.addWidget(self.shapes_btn)
        rl.addRow("Shapes", shp)
        rl.addRow(self.geojson_btn)
        rl.addRow(self.regions_list)

        # --- edit
        self.op_combo = QComboBox()
        self.op_combo.addItems(list(OPS))
        self.op_combo.setToolTip("scale/set/add/knockout: change genes in the region. transfer: move the region's mean "
                                 "profile towards another region's. eigen: match the region's second moment to a reference's")
        self.op_combo.currentTextChanged.connect(self._op_changed)
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("The region to edit (for eigen also the source population)")
        self.other_combo = QComboBox()
        self.other_combo.setToolTip("transfer: the region to move towards; eigen: the reference population")
        self.other_label = QLabel("Towards")
        self.genes_edit = QLineEdit()
        self.genes_edit.setPlaceholderText("ERBB2, KRT19, EPCAM  (or: all)")
        self.genes_edit.setToolTip("Genes by name; paste a list separated by commas, spaces or new lines; 'all' for every gene")
        self.set_combo = QComboBox()
        self.set_combo.setToolTip("Saved gene sets")
        self.use_set_btn = QPushButton("Use")
        self.use_set_btn.setToolTip("Put the genes of the chosen gene set into the Genes box")
        self.use_set_btn.clicked.connect(lambda: self._guard(self.use_gene_set))
        self.save_set_edit = QLineEdit()
        self.save_set_edit.setPlaceholderText("set name")
        self.save_set_edit.setToolTip("Name under which 'Save set' stores the genes above")
        self.save_set_btn = QPushButton("Save set")
        self.save_set_btn.setToolTip("Save the genes above as a named gene set")
        self.save_set_btn.clicked.connect(lambda: self._guard(self.save_gene_set))
        self.value_spin = QDoubleSpinBox()
        self.value_spin.setRange(-1e6, 1e6)
        self.value_spin.setDecimals(3)
        self.value_spin.setValue(2.0)
        self.value_spin.setToolTip("scale: the factor; set/add: counts per bin; transfer/eigen: the strength (0 to 1)")
        self.value_label = QLabel("Factor")
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 10000)
        self.k_spin.setToolTip("eigen: number of top eigen-directions to rescale")
        self.apply_btn = QPushButton("Apply")
        self.apply_btn.setToolTip(f"Apply the edit ({KEY_APPLY})")
        self.apply_btn.clicked.connect(lambda: self._guard(self.apply_edit))

        ed_box = QGroupBox("Edit")
        el = QFormLayout(ed_box)
        el.addRow("Operation", self.op_combo)
        el.addRow("Region", self.region_combo)
        el.addRow(self.other_label, self.other_combo)
        el.addRow("Genes", self.genes_edit)
        gs = QHBoxLayout()
        gs.addWidget(self.set_combo)
        gs.addWidget(self.use_set_btn)
        gs.addWidget(self.save_set_edit)
        gs.addWidget(self.save_set_btn)
        el.addRow("Gene sets", gs)
        el.addRow(self.value_label, self.value_spin)
        el.addRow("k (eigen)", self.k_spin)
        el.addRow(self.apply_btn)

        # --- history
        self.history_list = QListWidget()
        self.history_list.setToolTip("Edits in order; the generated (edited) layer shows all of them")
        self.history_list.setMaximumHeight(110)
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.setToolTip(f"Undo the last edit ({KEY_UNDO})")
        self.undo_btn.clicked.connect(lambda: self._guard(self.undo))
        self.redo_btn = QPushButton("Redo")
        self.redo_btn.setToolTip(f"Redo ({KEY_REDO})")
        self.redo_btn.clicked.connect(lambda: self._guard(self.redo))
        self.save_btn = QPushButton("Save recipe…")
        self.save_btn.setToolTip("Save the regions and edits as a recipe JSON (replay it with napari-gdt render --edits)")
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn = QPushButton("Load recipe…")
        self.load_btn.setToolTip("Load a recipe JSON: its regions and edits replace the current ones")
        self.load_btn.clicked.connect(self._load_dialog)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        hb = QGroupBox("History")
        hl = QVBoxLayout(hb)
        hl.addWidget(self.history_list)
        row = QHBoxLayout()
        for b in (self.undo_btn, self.redo_btn, self.save_btn, self.load_btn):
            row.addWidget(b)
        hl.addLayout(row)

        # --- stats
        self.stats_table = QTableWidget(0, 3)
        self.stats_table.setHorizontalHeaderLabels(["gene", "mean before", "mean after"])
        self.stats_table.setToolTip("Mean counts per bin in the edited region, original vs edited canvas")

        lay = QVBoxLayout(self)
        lay.addWidget(reg_box)
        lay.addWidget(ed_box)
        lay.addWidget(hb)
        lay.addWidget(QLabel("Region statistics"))
        lay.addWidget(self.stats_table)
        lay.addWidget(self.status)
        self._op_changed(self.op_combo.currentText())
        self._refresh_gene_sets()
        self._history_changed()
        if self.viewer is not None:
            self.viewer.layers.events.inserted.connect(lambda e=None: self._refresh_shapes_combo())
            self.viewer.layers.events.removed.connect(lambda e=None: self._refresh_shapes_combo())
            self._refresh_shapes_combo()

    def _bind_keys(self):
        for key, fn in ((KEY_APPLY, self.apply_edit), (KEY_UNDO, self.undo), (KEY_REDO, self.redo)):
            self.viewer.bind_key(key, lambda viewer, fn=fn: self._guard(fn), overwrite=True)

    def _op_changed(self, op):
        self.value_label.setText(_VALUE_LABEL.get(op, "Value"))
        self.value_spin.setEnabled(op != "knockout")
        self.other_combo.setEnabled(op in ("transfer", "eigen"))
        self.other_label.setText("Reference" if op == "eigen" else "Towards")
        self.k_spin.setEnabled(op == "eigen")
        if op in ("transfer", "eigen") and not (0 <= self.value_spin.value() <= 1):
            self.value_spin.setValue(1.0)

    def _guard(self, fn):
        """Run an action; show GDT errors as a notification instead of raising."""
        try:
            return fn()
        except GDTError as e:
            self.status.setText(f"error: {e}")
            try:
                from napari.utils.notifications import show_error

                show_error(str(e))
            except Exception:  # noqa: BLE001 - no napari notification manager
                pass
            return None

    # ============================================================ session
    def set_session(self, bundle, canvas, seed: int = 0, tile_px: int | None = None, original: np.ndarray | None = None, cache=None, lazy=None):
        """Use this model, canvas and seed. ``original``: pixels already rendered for them (H, W, C).

        ``lazy``: a :class:`~napari_gdt.widgets.generator.GeneratorWidget` whose lazy
        ``generated`` layer shows this canvas; the edited layer is then another lazy layer
        of it (same renderer settings and cache). Without it the edited layer is a numpy image.
        """
        from ..rendering.tiles import MemoryTileCache, TileRenderer

        self._generation += 1  # results of a running worker are dropped
        if self._worker is not None:
            self._worker.quit()
            self._worker = None
        self.bundle, self.canvas, self.seed = bundle, canvas, int(seed)
        self._lazy_gen = lazy
        self._orig_keys, self._lazy_info = {}, {}
        if lazy is not None:  # the generated layer's own renderer: same settings, so the same content hashes
            self._orig_renderer = lazy.renderer
            self.cache = self._orig_renderer.cache
        else:
            self.cache = cache if cache is not None else MemoryTileCache()
            self._orig_renderer = TileRenderer(bundle, canvas, seed=self.seed, tile_px=tile_px, device=str(bundle.device), cache=self.cache)
        self.tile_px = self._orig_renderer.tile_px
        self._touched = np.zeros(canvas.n_bins, dtype=bool)
        self._shown_keys = {}
        if original is not None:
            original = np.asarray(original, dtype=np.float32)
            if original.ndim == 2:
                original = original[..., None]
            if original.shape[:2] != tuple(self._orig_renderer.shape_px):
                original = None
        self._original_img = original
        self._edited_img = None
        self.thr_gene.clear()
        self.thr_gene.addItems(list(canvas.genes))
        if self.history.autosave_path is None:
            self.history.autosave_path = self._default_autosave()
        self._ensure_regions_layer()
        self._history_changed()
        self._offer_restore()

    def _default_autosave(self) -> Path:
        """This run's own autosave: beside a canvas file (when writable), else in the temp folder."""
        if self._autosave_arg:
            return Path(self._autosave_arg)
        return new_autosave_path(self._canvas_file())

    def _canvas_file(self) -> str | None:
        src = self.canvas.meta.get("path") if self.canvas is not None else None
        return str(src) if src else None  # a file, or an in-memory canvas's name (its autosaves go to the temp folder)

    # ============================================================ autosave (logic in editing.autosave)
    def _watch_strokes(self, layer) -> None:
        if layer is not None and not getattr(layer, "_gdt_autosave", False):
            layer.events.paint.connect(self.strokes.touch)
            layer._gdt_autosave = True

    def _save_strokes(self) -> None:
        layer = self.labels_layer
        labels = (self._labels_file(), layer.data) if layer is not None and layer.data.any() else None
        self.history.save_autosave(labels=labels)

    def _offer_restore(self) -> None:
        """Offer the latest earlier autosave of this canvas (a notification with a Restore button)."""
        prev = latest_autosave(self._canvas_file(), exclude=self.history.autosave_path) if self._canvas_file() else None
        self.restore_candidate = prev
        if prev is None:
            return
        try:
            from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

            notification_manager.dispatch(
                Notification(
                    f"An autosaved editing session of this canvas exists ({prev.name}).",
                    severity=NotificationSeverity.INFO,
                    actions=[("Restore", lambda *_: self._guard(lambda: self.restore_autosave(prev)))],
                )
            )
        except Exception:  # noqa: BLE001, S110 - no notification manager (headless)
            pass

    def restore_autosave(self, path=None):
        """Load an autosave (default: the one offered on open) into this run; returns its path."""
        path = Path(path) if path is not None else self.restore_candidate
        if path is None:
            raise GDTError("no earlier autosave of this canvas to restore")
        self.load_recipe(path)
        self.restore_candidate = None
        return path

    def _find_generator(self):
        """The GeneratorWidget docked in the same viewer, if any."""
        from .generator import GeneratorWidget

        try:
            docks = self.viewer.window.dock_widgets
            for dw in dict(docks).values():
                cands = [dw] + list(dw.findChildren(GeneratorWidget)) if hasattr(dw, "findChildren") else [dw]
                for c in cands:
                    if isinstance(c, GeneratorWidget):
                        return c
        except Exception:  # noqa: BLE001 - no window (headless model) or older napari
            return None
        return None

    def _sync_from_generator(self):
        if self.generator is None and self.viewer is not None and self.canvas is None:
            self.generator = self._find_generator()
        g = self.generator
        if g is None:
            return
        gr = getattr(g, "renderer", None)
        same_seed = gr is None or int(gr.seed) == self.seed
        lazy = _lazy_generated(g)
        same_layer = lazy is None or (self._lazy_gen is g and self._orig_renderer is gr)
        if self.canvas is not None and getattr(g, "canvas", None) is self.canvas and getattr(g, "bundle", None) is self.bundle and same_seed and same_layer:
            return  # same session
        if self.canvas is not None and getattr(g, "canvas", None) is None:
            return  # keep the session we have
        if getattr(g, "bundle", None) is None or getattr(g, "canvas", None) is None:
            raise GDTError("load a model and an expression canvas in the generator panel first")
        original = None
        r = getattr(g, "renderer", None)
        tile_px = r.tile_px if r is not None else None
        seed = r.seed if r is not None else g.seed_spin.value()
        if self.viewer is not None and ORIGINAL_LAYER in self.viewer.layers and r is not None:
            data = self.viewer.layers[ORIGINAL_LAYER].data
            if isinstance(data, np.ndarray):
                original = data
        if lazy is not None and lazy.renderer.canvas is g.canvas:
            self.set_session(g.bundle, g.canvas, seed=seed, tile_px=tile_px, lazy=g)
            return
        self.set_session(g.bundle, g.canvas, seed=seed, tile_px=tile_px, original=original)

    def _need_session(self):
        self._sync_from_generator()
        if self.canvas is None:
            raise GDTError("no model/canvas: use the generator panel or set_session() first")

    @property
    def px_per_bin(self) -> int:
        return int(self.bundle.px_per_bin)

    # ============================================================ regions
    def _ensure_regions_layer(self):
        if self.viewer is None or self.canvas is None:
            return None
        ppb = self.px_per_bin
        if REGIONS_LAYER in self.viewer.layers and self.viewer.layers[REGIONS_LAYER].data.shape == tuple(self.canvas.n_bins):
            self._watch_strokes(self.viewer.layers[REGIONS_LAYER])
            return self.viewer.layers[REGIONS_LAYER]
        if REGIONS_LAYER in self.viewer.layers:
            self.viewer.layers.remove(REGIONS_LAYER)
        # bin (i, j) covers output px [i*ppb, (i+1)*ppb): its centre is at (i + 0.5) * ppb - 0.5 in pixel-centre coordinates
        layer = self.viewer.add_labels(
            np.zeros(self.canvas.n_bins, dtype=np.int32), name=REGIONS_LAYER, scale=(ppb, ppb), translate=((ppb - 1) / 2, (ppb - 1) / 2), opacity=0.4
        )
        self._watch_strokes(layer)
        return layer

    @property
    def labels_layer(self):
        if self.viewer is None or REGIONS_LAYER not in self.viewer.layers:
            return None
        return self.viewer.layers[REGIONS_LAYER]

    def _labels_file(self) -> str:
        p = self.history.autosave_path
        return (p.name[: -len(".json")] if p and p.name.endswith(".json") else "regions") + ".labels.tif"

    def _region_name(self, default: str) -> str:
        name = self.region_name_edit.text().strip() or default
        base, i = name, 2
        while name in self.history.recipe.regions:
            name = f"{base}_{i}"
            i += 1
        return name

    def new_painted_region(self, name: str | None = None) -> int:
        """Add a painted region; selects its label for painting. Returns the label value."""
        self._need_session()
        layer = self._ensure_regions_layer()
        used = [r.spec["value"] for r in self.history.recipe.regions.values() if r.kind == "labels"]
        value = max(used + [int(layer.data.max()) if layer is not None else 0]) + 1
        name = name or self._region_name(f"region {value}")
        arr = layer.data if layer is not None else np.zeros(self.canvas.n_bins, np.int32)
        self.history.set_region(name, {"labels": self._labels_file(), "value": int(value)}, array=arr)
        if layer is not None:
            layer.selected_label = value
            layer.mode = "paint"
            self.viewer.layers.selection.active = layer
        self.region_combo.setCurrentText(name)
        return value

    def region_from_threshold(self, gene: str | None = None, vmin: float | None = None, name: str | None = None) -> str:
        self._need_session()
        gene = gene or self.thr_gene.currentText().strip()
        vmin = float(self.thr_min.value() if vmin is None else vmin)
        if gene not in self.canvas.genes:
            raise GDTError(f"threshold: gene {gene!r} is not in the canvas")
        name = name or self._region_name(f"{gene}≥{vmin:g}")
        self.history.set_region(name, {"gene": gene, "min": vmin})
        self.region_combo.setCurrentText(name)
        return name

    def _refresh_shapes_combo(self):
        if self.viewer is None:
            return
        from napari.layers import Shapes

        cur = self.shapes_combo.currentText()
        self.shapes_combo.clear()
        self.shapes_combo.addItems([ly.name for ly in self.viewer.layers if isinstance(ly, Shapes)])
        if cur:
            self.shapes_combo.setCurrentText(cur)

    def region_from_shapes(self, layer=None, name: str | None = None) -> list[str]:
        """One region per shape (selected shapes, or all). Shapes are in world = output px."""
        self._need_session()
        if layer is None:
            lname = self.shapes_combo.currentText()
            if not lname or self.viewer is None or lname not in self.viewer.layers:
                raise GDTError("choose a Shapes layer first")
            layer = self.viewer.layers[lname]
        idx = sorted(layer.selected_data) or list(range(len(layer.data)))
        if not idx:
            raise GDTError(f"Shapes layer {layer.name!r} has no shapes")
        base = name or self._region_name(layer.name)
        names = []
        for j, i in enumerate(idx):
            world = np.asarray([layer.data_to_world(v) for v in np.asarray(layer.data[i])])[:, -2:]
            spec = shape_to_region(world, layer.shape_type[i])
            n = base if j == 0 else f"{base}_{j + 1}"
            self.history.set_region(n, spec)
            names.append(n)
        self.region_combo.setCurrentText(names[0])
        return names

    def import_geojson(self, path) -> list[str]:
        """Regions from GeoJSON annotations of the paired real image (e.g. a QuPath export).

        One painted region per classification (or name), in the regions layer, so they can be
        refined with the brush; see :mod:`napari_gdt.editing.geojson`. Returns the region names.
        """
        from ..editing.geojson import read_geojson_regions

        self._need_session()
        masks = read_geojson_regions(path, self.canvas.affine, self.canvas.n_bins, self.px_per_bin)
        layer = self._ensure_regions_layer()
        names, taken = [], {}
        by_value = {r.spec["value"]: k for k, r in self.history.recipe.regions.items() if r.kind == "labels"}
        for name, m in masks.items():
            n, i = name, 2
            while n in self.history.recipe.regions:
                n, i = f"{name}_{i}", i + 1
            value = self.new_painted_region(n)
            arr = self.history.recipe.regions[n].array
            # painted regions share one label image: say which earlier regions lose bins to this one
            prev, cnt = np.unique(arr[m & (arr != 0)], return_counts=True)
            for v, c in zip(prev.tolist(), cnt.tolist()):
                if v in by_value:
                    taken[by_value[v]] = taken.get(by_value[v], 0) + int(c)
            arr[m] = value
            by_value[value] = n
            names.append(n)
        if layer is not None:
            layer.refresh()
            layer.mode = "pan_zoom"
        self.history._changed()  # autosave the painted labels
        self.region_combo.setCurrentText(names[0])
        msg = f"imported {len(names)} region(s) from {Path(path).name}: {', '.join(names)}"
        if taken:
            msg += "; bins taken over from " + ", ".join(f"{k} ({c})" for k, c in taken.items())
        self.status.setText(msg)
        return names

    def _geojson_dialog(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", "", "GeoJSON (*.geojson *.json)")
        if path:
            self._guard(lambda: self.import_geojson(path))

    # ============================================================ gene sets
    def _refresh_gene_sets(self):
        self.set_combo.clear()
        self.set_combo.addItems(self.gene_sets.names())

    def use_gene_set(self, name: str | None = None):
        name = name or self.set_combo.currentText()
        self.genes_edit.setText(", ".join(self.gene_sets.get(name)))

    def save_gene_set(self, name: str | None = None):
        name = name or self.save_set_edit.text().strip()
        self.gene_sets.save_set(name, self.chosen_genes(allow_all=False))
        self._refresh_gene_sets()
        self.set_combo.setCurrentText(name)

    def chosen_genes(self, allow_all: bool = True):
        text = self.genes_edit.text().strip()
        if allow_all and text.lower() == "all":
            return "all"
        genes = parse_gene_list(text)
        if not genes:
            raise GDTError("choose genes: type names, paste a list or use a gene set")
        if self.canvas is not None:
            missing = [g for g in genes if g not in self.canvas.genes]
            if missing:
                raise GDTError(f"unknown gene(s) not in the canvas: {', '.join(missing)}")
        return genes

    # ============================================================ edits
    def current_edit(self) -> dict:
        """The edit described by the form (a recipe edit object)."""
        op = self.op_combo.currentText()
        region = self.region_combo.currentText()
        if not region:
            raise GDTError("create or choose a region first")
        genes = self.chosen_genes()
        v = float(self.value_spin.value())
        if op == "scale":
            return {"op": "scale", "region": region, "genes": genes, "factor": v}
        if op in ("set", "add"):
            return {"op": op, "region": region, "genes": genes, "value": v}
        if op == "knockout":
            return {"op": "knockout", "region": region, "genes": genes}
        other = self.other_combo.currentText()
        if not other:
            raise GDTError(f"{op}: choose the {'reference' if op == 'eigen' else 'towards'} region")
        if op == "transfer":
            return {"op": "transfer", "from": other, "to": region, "genes": genes, "strength": v}
        return {"op": "eigen", "region": region, "source": region, "reference": other, "genes": genes, "k": int(self.k_spin.value()), "strength": v}

    def apply_edit(self, edit: dict | None = None):
        """Append an edit (default: the form's) and refresh the edited layer."""
        self._need_session()
        edit = copy.deepcopy(edit) if edit is not None else self.current_edit()
        self._snapshot_labels()
        self.history.recipe.validate_edit(edit, len(self.history.recipe.edits))
        # validate genes against the canvas before committing the edit
        trial = self.history.recipe.copy()
        trial.edits.append(edit)
        trial.check_canvas(self.canvas)
        self.history.push(edit)
        try:
            self.refresh_edited()
        except GDTError:
            self.history.undo()
            self.history._redo.clear()
            raise
        self._update_stats(edit)
        return self.edited_layer

    def undo(self):
        self._need_session()
        if self.history.undo() is None:
            return None
        self.refresh_edited()
        return self.edited_layer

    def redo(self):
        self._need_session()
        if self.history.redo() is None:
            return None
        self.refresh_edited()
        return self.edited_layer

    def _snapshot_labels(self):
        layer = self.labels_layer
        if layer is None:
            return
        snap = np.array(layer.data, copy=True)
        for r in self.history.recipe.regions.values():
            if r.kind == "labels" and r.spec["labels"] == self._labels_file():
                r.array = snap

    # ============================================================ rendering
    def _original_pixels(self) -> np.ndarray:
        """Original generated pixels (rendered once through the cache when no layer provided them)."""
        if self._original_img is None:
            self._original_img = self._orig_renderer.render_region()
        return self._original_img

    def _original_key(self, s):
        r = self._orig_renderer
        return r.tile_key(s, r.read_window(s))

    def refresh_edited(self, wait: bool | None = None):
        """Bring the edited layer up to date with the current recipe.

        Candidate tiles are those whose input window (tile + halo) touches a bin
        that any edit of this session has touched. Of those, only tiles whose
        window content differs from what is displayed (content hash) are
        computed or fetched from the cache; the rest of the layer is left alone.
        Original tiles are in the cache (put there from the original pixels, or
        computed through it), so undo restores them bit for bit.

        With a viewer the tiles are computed in a worker thread and pasted as
        they arrive (a newer refresh supersedes an older one); ``wait=True`` or
        no viewer computes them here.
        """
        from ..rendering.tiles import TileRenderer

        if self._lazy_gen is not None:
            return self._refresh_lazy()
        ppb = self.px_per_bin
        recipe = self.history.recipe
        edited = recipe.apply(self.canvas, ppb)
        if recipe.edits:
            self._touched |= recipe.edit_mask(self.canvas, ppb)
        renderer = TileRenderer(self.bundle, edited, seed=self.seed, tile_px=self.tile_px, device=str(self.bundle.device),
                                cache=self.cache, batch_size=self.batch_size)
        if wait is None:
            wait = self.viewer is None or not self.async_render
        need_original = self._original_img is None
        if wait and need_original:
            self._original_pixels()
            need_original = False
        todo, windows, keys = [], {}, {}
        for s in dirty_tiles(renderer, self._touched):
            t = (s.ty, s.tx)
            if t not in self._shown_keys:
                okey = self._original_key(s)
                self._shown_keys[t] = okey
                if not need_original and self.cache.get(okey) is None:
                    self.cache.put(okey, np.ascontiguousarray(self._original_img[s.out.y0 : s.out.y1, s.out.x0 : s.out.x1]))
            win = renderer.read_window(s)
            key = renderer.tile_key(s, win)
            if key != self._shown_keys[t]:
                todo.append(s)
                windows[t] = win
                keys[t] = key
        self._generation += 1
        gen = self._generation
        self.last_recomputed = [(s.ty, s.tx) for s in todo]
        self._pending = {"n": len(todo), "renderer": renderer, "edits": len(recipe.edits)}
        if not need_original:
            if self._edited_img is None:
                self._edited_img = self._original_img.copy()
            self._show_edited()
        if wait or (not todo and not need_original):
            res = renderer.compute_tiles(todo, windows=windows)
            self._receive(gen, res, keys, todo)
            self._finish(gen)
            return
        self._start_worker(gen, renderer, todo, windows, keys, need_original)

    # ------------------------------------------------------------ lazy path
    def _orig_key_of(self, s, pyramid=None):
        """Content hash of the original tile (memoised; the original canvas does not change in a session)."""
        t = (s.ty, s.tx)
        k = self._orig_keys.get(t)
        if k is None:
            r = self._orig_renderer
            win = pyramid.blocks.read(*s.win) if pyramid is not None and pyramid.renderer is r else r.read_window(s)
            k = self._orig_keys[t] = r.tile_key(s, win)
        return k

    def _refresh_lazy(self):
        """Show the edited canvas as the generator's lazy ``generated (edited)`` layer.

        Nothing is rendered here: the edited canvas is lazy (``recipe.apply``), the
        content hashes of the candidate tiles (windows touching a bin any edit of this
        session touched) are compared with the original's, tiles whose hash did not
        change are copied from the ``generated`` (or the previous edited) pyramid, and
        the generator's worker computes the rest where the user looks (cache first).
        """
        g = self._lazy_gen
        ppb = self.px_per_bin
        recipe = self.history.recipe
        edited = recipe.apply(self.canvas, ppb) if recipe.edits else self.canvas
        # bins outside the current edits' regions are original, so a tile whose window misses
        # them has the original's hash: only these candidates need their hash compared
        mask = recipe.edit_mask(self.canvas, ppb) if recipe.edits else np.zeros(self.canvas.n_bins, dtype=bool)
        self._touched |= mask
        orig_pyr = g.pyramids().get(ORIGINAL_LAYER)
        info = {"edits": len(recipe.edits)}

        def prepare(pyr):
            r = pyr.renderer
            changed, unchecked = [], []
            # Only tiles the original pyramid holds can be taken over when their content hash is
            # unchanged, so only those are checked here, on the UI thread, nearest the view first
            # and at most MAX_UI_CHECKS of them (a whole-slide edit must not freeze the viewer).
            # The other candidates go to the worker like changed tiles: one whose hash did not
            # change comes from the tile cache there, so nothing is computed twice.
            cands = dirty_tiles(r, mask)
            held = [s for s in cands if orig_pyr is not None and orig_pyr.has_tile(s.ty, s.tx)]
            held = self._nearest_view_first(held)
            check = {(s.ty, s.tx) for s in held[:MAX_UI_CHECKS]}
            for s in cands:
                if (s.ty, s.tx) not in check:
                    unchecked.append((s.ty, s.tx))
                # windows read through the pyramids' block readers (same values as read_window, so
                # the same keys; fast, and they warm the blocks the worker reads next)
                elif r.tile_key(s, pyr.blocks.read(*s.win)) != self._orig_key_of(s, orig_pyr):
                    changed.append((s.ty, s.tx))
            adopted = pyr.adopt(orig_pyr, changed + unchecked) if orig_pyr is not None else 0
            info.update(pyramid=pyr, changed=changed + unchecked, unchecked=len(unchecked), adopted=adopted,
                        computed0=int(r.stats["computed"]), cached0=int(r.stats["cached"]))

        self._generation += 1
        layer = g.add_canvas_layer(edited, name=EDITED_LAYER, before_show=prepare)
        if "pyramid" not in info:  # the generator refused (no model): nothing shown
            raise GDTError("the generator could not show the edited layer (load a model first)")
        self.last_recomputed = list(info["changed"])
        self._lazy_info = info
        self._pending = {"n": len(info["changed"]), "renderer": info["pyramid"].renderer, "edits": info["edits"]}
        if not getattr(self, "_lazy_connected", None) is g:
            g._bridge.updated.connect(self._lazy_status)
            g._bridge.progress.connect(self._lazy_status)
            self._lazy_connected = g
        self._raise_regions_layer()
        if layer is not None and self.viewer is not None and ORIGINAL_LAYER in self.viewer.layers and not layer.rgb:
            o = self.viewer.layers[ORIGINAL_LAYER]
            if getattr(self, "_lazy_new_layer", None) is not layer:
                layer.contrast_limits = o.contrast_limits
        self._lazy_new_layer = layer
        self._lazy_status()

    def _nearest_view_first(self, specs: list) -> list:
        """``specs`` (TileSpec) sorted by distance of their tile centre to the centre of the view."""
        g = self._lazy_gen
        if g is None or self.viewer is None or ORIGINAL_LAYER not in self.viewer.layers or len(specs) < 2:
            return list(specs)
        vis = g._visible_region(self.viewer.layers[ORIGINAL_LAYER])
        if vis is None:
            return list(specs)
        k, reg = vis
        f = 2**k
        cy, cx = (reg.y0 + reg.y1) * f / 2, (reg.x0 + reg.x1) * f / 2
        return sorted(specs, key=lambda s: ((s.out.y0 + s.out.y1) / 2 - cy) ** 2 + ((s.out.x0 + s.out.x1) / 2 - cx) ** 2)

    def _lazy_status(self, *_):
        info = self._lazy_info
        if self._lazy_gen is None or "pyramid" not in info:
            return
        st = info["pyramid"].renderer.stats
        c, k = int(st["computed"]) - info["computed0"], int(st["cached"]) - info["cached0"]
        q = "" if not self.busy else "; computing tiles in view…"
        u = info.get("unchecked", 0)
        what = "differ from the original" if not u else f"to update ({u} not compared with the original: too many to check at once)"
        self.status.setText(f"{info['edits']} edit(s); {len(info['changed'])} tile(s) {what} ({c} computed, {k} from cache, {info['adopted']} reused){q}")

    def _raise_regions_layer(self):
        """Keep the regions layer above the generated layers (it is translucent)."""
        if self.viewer is None or REGIONS_LAYER not in self.viewer.layers:
            return
        layers = self.viewer.layers
        i = layers.index(REGIONS_LAYER)
        if i != len(layers) - 1:
            layers.move(i, len(layers))

    @property
    def edited_pyramid(self):
        """The lazy edited layer's :class:`~napari_gdt.rendering.pyramid.TilePyramid` (None on the numpy path)."""
        return self._lazy_info.get("pyramid") if self._lazy_gen is not None else None

    def _start_worker(self, gen, renderer, todo, windows, keys, need_original=False):
        from napari.qt.threading import create_worker

        if self._worker is not None:
            self._worker.quit()
        bs = renderer.batch_size
        orig = self._orig_renderer

        def work():
            if need_original:  # one-time: the original tissue, through the cache (undo then hits it)
                yield "original", orig.render_region(), None
            for i in range(0, len(todo), bs):
                part = todo[i : i + bs]
                yield "tiles", renderer.compute_tiles(part, windows={(s.ty, s.tx): windows[(s.ty, s.tx)] for s in part}), part

        def on_yield(out, gen=gen):
            kind, res, part = out
            if kind == "original":
                if self._original_img is None:
                    self._original_img = res
                if self._edited_img is None:
                    self._edited_img = self._original_img.copy()
                    self._show_edited()
            else:
                self._receive(gen, res, keys, part)

        worker = create_worker(work, _start_thread=False)
        worker.yielded.connect(on_yield)
        worker.finished.connect(lambda gen=gen: self._finish(gen))
        worker.errored.connect(lambda e: self.status.setText(f"error while rendering: {e}"))
        self._worker = worker
        self.status.setText(f"{len(self.history.recipe.edits)} edit(s); updating {len(todo)} tile(s)…")
        worker.start()

    def _receive(self, gen, results, keys, specs):
        """Paste computed tiles (ignored when a newer refresh has started)."""
        if gen != self._generation or self._edited_img is None:
            return
        img = self._edited_img
        for s in specs:
            t = (s.ty, s.tx)
            if t in results:
                img[s.out.y0 : s.out.y1, s.out.x0 : s.out.x1] = results[t]
                self._shown_keys[t] = keys[t]
        if self.edited_layer is not None:
            self.edited_layer.refresh()

    def _finish(self, gen):
        if gen != self._generation:
            return
        self._worker = None
        p = self._pending
        st = p["renderer"].stats
        self.status.setText(f"{p['edits']} edit(s); {p['n']} tile(s) updated ({st['computed']} computed, {st['cached']} from cache)")

    @property
    def busy(self) -> bool:
        """True while a worker is computing tiles (lazy path: the generator's worker has work queued or running)."""
        if self._lazy_gen is not None:
            sch = self._lazy_gen.scheduler
            return sch is not None and not sch.is_idle()
        return self._worker is not None

    def _show_edited(self):
        if self.viewer is None:
            return
        img = self._edited_img
        data = img if img.shape[-1] == 3 else img[..., 0]
        if EDITED_LAYER in self.viewer.layers:
            layer = self.viewer.layers[EDITED_LAYER]
            layer.data = data
            layer.refresh()
        else:
            kw = {}
            if ORIGINAL_LAYER in self.viewer.layers:
                o = self.viewer.layers[ORIGINAL_LAYER]
                kw = {"contrast_limits": o.contrast_limits} if not o.rgb else {}
            self.viewer.add_image(data, name=EDITED_LAYER, rgb=img.shape[-1] == 3, **kw)

    @property
    def edited_layer(self):
        """The ``generated (edited)`` layer (lazy path with several channels: its first channel's layer)."""
        if self.viewer is None:
            return None
        if EDITED_LAYER in self.viewer.layers:
            return self.viewer.layers[EDITED_LAYER]
        lz = getattr(self._lazy_gen, "_lazy", {}).get(EDITED_LAYER) if self._lazy_gen is not None else None
        return lz.layers[0] if lz is not None and lz.layers else None

    @property
    def edited_pixels(self) -> np.ndarray | None:
        """The edited image (numpy path only; the lazy path has :attr:`edited_pyramid`)."""
        return self._edited_img

    # ============================================================ stats
    def region_stats(self, region: str, genes) -> dict[str, tuple[float, float]]:
        """Mean counts per bin in ``region`` for ``genes``: ``{gene: (before, after)}``."""
        ppb = self.px_per_bin
        recipe = self.history.recipe
        mask = recipe.masks(self.canvas, ppb, [region])[region]
        genes = list(self.canvas.genes) if genes == "all" else list(genes)
        if len(genes) > 50:
            genes = genes[:50]
        edited = recipe.apply(self.canvas, ppb)
        out = {}
        if not mask.any():
            return {g: (float("nan"), float("nan")) for g in genes}
        rows = np.nonzero(mask.any(1))[0]
        cols = np.nonzero(mask.any(0))[0]
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        m = mask[y0:y1, x0:x1]
        idx = [self.canvas.genes.index(g) for g in genes]
        a = np.asarray(self.canvas.data[idx][:, y0:y1, x0:x1])[:, m].mean(axis=1)
        b = np.asarray(edited.data[idx][:, y0:y1, x0:x1])[:, m].mean(axis=1)
        for g, u, v in zip(genes, a, b):
            out[g] = (float(u), float(v))
        return out

    def _update_stats(self, edit: dict):
        region = edit.get("to") or edit.get("region")
        self.last_stats = self.region_stats(region, edit["genes"])
        t = self.stats_table
        t.setRowCount(len(self.last_stats))
        for i, (g, (u, v)) in enumerate(self.last_stats.items()):
            for j, val in enumerate((g, f"{u:.3g}", f"{v:.3g}")):
                item = QTableWidgetItem(val)
                item.setFlags(item.flags() & ~Qt.ItemIsEditable)
                t.setItem(i, j, item)

    # ============================================================ history UI
    def _history_changed(self):
        if not hasattr(self, "history_list"):
            return
        self.history_list.clear()
        self.history_list.addItems(self.history.describe())
        self.undo_btn.setEnabled(self.history.can_undo)
        self.redo_btn.setEnabled(self.history.can_redo)
        names = list(self.history.recipe.regions)
        for combo in (self.region_combo, self.other_combo):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        self.regions_list.clear()
        for n, r in self.history.recipe.regions.items():
            self.regions_list.addItem(f"{n}  [{r.kind}{' ' + str(r.spec.get('value')) if r.kind == 'labels' else ''}]")

    def save_recipe(self, path) -> Path:
        self._snapshot_labels()
        return self.history.save(path)

    def load_recipe(self, path):
        """Replace regions and edits by a recipe file; painted labels go to the regions layer."""
        self._need_session()
        self.history.load(path)
        layer = self._ensure_regions_layer()
        for r in self.history.recipe.regions.values():
            if r.kind == "labels" and layer is not None:
                m = r.mask(self.canvas, self.px_per_bin, self.history.recipe.base_dir, self.history.recipe.source)
                layer.data[m] = int(r.spec["value"])
                r.spec["labels"] = self._labels_file()
                r.array = layer.data
        if layer is not None:
            layer.refresh()
        self.history._changed()
        self.refresh_edited()

    def _save_dialog(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", "edits.json", "Recipes (*.json)")
        if path:
            self._guard(lambda: self.save_recipe(path))

    def _load_dialog(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", "", "Recipes (*.json)")
        if path:
            self._guard(lambda: self.load_recipe(path))
