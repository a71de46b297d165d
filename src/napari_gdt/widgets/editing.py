"""Dock widget: paint regions, edit genes, watch the generated tissue change.

Thin: regions, edits, undo/redo, autosave, the edited canvas and the incremental
render live in the :class:`~napari_gdt.session.Session` (and :mod:`napari_gdt.editing`);
this panel is the form. Apply, Undo and Redo call the Session; the Session rebuilds the
lazy ``generated (edited)`` pyramid, taking every tile whose content did not change over
from ``generated``, and :class:`~napari_gdt.widgets.layers.SessionLayers` shows it next to
the original ``generated`` layer (which is never modified). The ``edit regions`` Labels
layer is kept by :class:`~napari_gdt.widgets.regions.RegionsLayer`.

Keyboard shortcuts (viewer): Control-Shift-Enter applies, Control-Alt-Z undoes,
Control-Alt-Shift-Z redoes the last edit.
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QTableWidgetItem, QWidget

from ..editing.autosave import StrokeAutosaver, latest_autosave, new_autosave_path
from ..editing.history import GeneSets
from ..errors import GDTError
from ..session import EDITED, GENERATED, MAX_CHECKS, Session
from .editing_ui import KEY_APPLY, KEY_REDO, KEY_UNDO, EditingForm
from .layers import layers_for, session_for
from .regions import REGIONS_LAYER, RegionsLayer

__all__ = ["EDITED_LAYER", "KEY_APPLY", "KEY_REDO", "KEY_UNDO", "ORIGINAL_LAYER", "REGIONS_LAYER", "EditingWidget"]

EDITED_LAYER = EDITED
ORIGINAL_LAYER = GENERATED


class EditingWidget(EditingForm, QWidget):
    """Regions, gene edits, history and before/after statistics.

    Parameters
    ----------
    napari_viewer : napari.Viewer, optional
    session : Session, optional
        Where the model, canvas, seed and edits live (default: the viewer's Session).
    autosave : path, optional
        Recipe file rewritten after every change (default: next to the canvas, or in the
        system temporary folder).
    gene_sets : path, optional
        JSON file of saved gene sets (default ``~/.config/napari-gdt/gene_sets.json``).
    """

    #: at most this many candidate tiles of an edit are compared on the UI thread
    max_checks = MAX_CHECKS

    def __init__(self, napari_viewer=None, session: Session | None = None, autosave=None, gene_sets=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer, session)
        self.binding = layers_for(napari_viewer, self.session) if napari_viewer is not None else None
        self.regions = RegionsLayer(napari_viewer, self.session, on_layer=self._watch_strokes)
        self._autosave_arg = autosave
        self.gene_sets = GeneSets(gene_sets)
        self.strokes = StrokeAutosaver(self._save_strokes, delay=0.5, lock=self.history.lock)  # every stroke saved within ~0.5 s
        self.restore_candidate: Path | None = None  # an earlier run's autosave of this canvas, offered on open
        self._watched = weakref.WeakSet()  # regions layers whose paint strokes are autosaved
        self.last_stats: dict = {}
        self.setup_ui()
        self._history_changed()
        ev = self.session.events
        self._links = [(ev.history, self._history_changed), (ev.canvas, self._canvas_changed), (ev.edited, self._on_edited)]
        for sig, slot in self._links:
            sig.connect(slot)
        if self.binding is not None:
            self.binding.refreshed.connect(self._edit_status)
        self.destroyed.connect(lambda *_: [sig.disconnect(slot) for sig, slot in self._links])
        self._canvas_changed(self.session.canvas)
        if self.viewer is not None:
            for key, fn in ((KEY_APPLY, self.apply_edit), (KEY_UNDO, self.undo), (KEY_REDO, self.redo)):
                self.viewer.bind_key(key, lambda viewer, fn=fn: self._guard(fn), overwrite=True)
            self.viewer.layers.events.inserted.connect(lambda e=None: self._refresh_shapes_combo())
            self.viewer.layers.events.removed.connect(lambda e=None: self._refresh_shapes_combo())
            self._refresh_shapes_combo()

    def _guard(self, fn):
        """Run an action; show GDT errors as a notification instead of raising."""
        try:
            return fn()
        except GDTError as e:
            self.status.setText(f"error: {e}")
            if self.viewer is not None:
                from napari.utils.notifications import show_error

                show_error(str(e))
            return None

    # ============================================================ session
    @property
    def history(self):
        return self.session.history

    @property
    def canvas(self):
        return self.session.canvas

    @property
    def bundle(self):
        return self.session.bundle

    @property
    def seed(self) -> int:
        return self.session.seed

    @property
    def px_per_bin(self) -> int:
        return self.session.px_per_bin

    def set_session(self, bundle, canvas, seed: int = 0):
        """Use this model, canvas and seed (the Session's; the other panels follow)."""
        self.session.set_model_and_canvas(bundle, canvas)
        self.session.seed = seed

    def _canvas_changed(self, canvas) -> None:
        self.thr_gene.clear()
        if canvas is None:
            return
        self.thr_gene.addItems(list(canvas.genes))
        if self.history.autosave_path is None:
            self.history.autosave_path = self._default_autosave()
        self.regions.ensure()
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
        if layer is not None and layer not in self._watched:
            layer.events.paint.connect(self.strokes.touch)
            self._watched.add(layer)

    def _labels_file(self) -> str:
        return self.regions.labels_file()

    def _save_strokes(self) -> None:
        layer = self.labels_layer
        labels = (self._labels_file(), layer.data) if layer is not None and layer.data.any() else None
        self.history.save_autosave(labels=labels)

    def _offer_restore(self) -> None:
        """Offer the latest earlier autosave of this canvas (a notification with a Restore button)."""
        prev = latest_autosave(self._canvas_file(), exclude=self.history.autosave_path) if self._canvas_file() else None
        self.restore_candidate = prev
        if prev is None or self.viewer is None:
            return
        from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

        notification_manager.dispatch(
            Notification(
                f"An autosaved editing session of this canvas exists ({prev.name}).",
                severity=NotificationSeverity.INFO,
                actions=[("Restore", lambda *_: self._guard(lambda: self.restore_autosave(prev)))],
            )
        )

    def restore_autosave(self, path=None):
        """Load an autosave (default: the one offered on open) into this run; returns its path."""
        path = Path(path) if path is not None else self.restore_candidate
        if path is None:
            raise GDTError("no earlier autosave of this canvas to restore")
        self.load_recipe(path)
        self.restore_candidate = None
        return path

    def _need_session(self):
        self.session.require()

    # ============================================================ regions
    @property
    def labels_layer(self):
        return self.regions.layer

    def _region_name(self, default: str) -> str:
        return self.regions.unique_name(self.region_name_edit.text().strip() or default)

    def new_painted_region(self, name: str | None = None) -> int:
        """Add a painted region; selects its label for painting. Returns the label value."""
        self._need_session()
        self.regions.ensure()
        used = [r.spec["value"] for r in self.history.recipe.regions.values() if r.kind == "labels"]
        layer = self.regions.layer
        nxt = max(used + [int(layer.data.max()) if layer is not None else 0]) + 1
        name = name or self._region_name(f"region {nxt}")
        value = self.regions.new_painted(name)
        self.region_combo.setCurrentText(name)
        return value

    def region_from_threshold(self, gene: str | None = None, vmin: float | None = None, name: str | None = None) -> str:
        self._need_session()
        gene = gene or self.thr_gene.currentText().strip()
        vmin = float(self.thr_min.value() if vmin is None else vmin)
        if gene not in self.canvas.genes:
            raise GDTError(f"threshold: gene {gene!r} is not in the canvas")
        name = name or self._region_name(f"{gene}≥{vmin:g}")
        self.session.set_region(name, {"gene": gene, "min": vmin})
        self.region_combo.setCurrentText(name)
        return name

    def _refresh_shapes_combo(self):
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
        names = self.regions.from_shapes(layer, name or self._region_name(layer.name))
        self.region_combo.setCurrentText(names[0])
        return names

    def import_geojson(self, path) -> list[str]:
        """Regions from GeoJSON annotations of the paired real image (e.g. a QuPath export); returns their names.

        One painted region per classification (or name), in the regions layer, so they can be
        refined with the brush; see :mod:`napari_gdt.editing.geojson`.
        """
        self._need_session()
        names, taken = self.regions.import_geojson(path)
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

    # ============================================================ edits
    def _view(self):
        return None if self.binding is None else self.binding.view(GENERATED)

    def apply_edit(self, edit: dict | None = None):
        """Append an edit (default: the form's) and update the edited layer; returns the layer."""
        self._need_session()
        edit = copy.deepcopy(edit) if edit is not None else self.current_edit()
        self.regions.snapshot()
        self.session.apply_edit(edit, view=self._view(), max_checks=self.max_checks)
        self._update_stats(edit)
        return self.edited_layer

    def undo(self):
        self._need_session()
        return None if self.session.undo(view=self._view(), max_checks=self.max_checks) is None else self.edited_layer

    def redo(self):
        self._need_session()
        return None if self.session.redo(view=self._view(), max_checks=self.max_checks) is None else self.edited_layer

    def _on_edited(self, info) -> None:
        self.regions.raise_to_top()
        self._edit_status()

    def _edit_status(self) -> None:
        info = self.session.edit_info
        if info is None or info.pyramid is None:
            return
        c, k = info.progress()
        q = "; computing tiles in view…" if self.busy else ""
        u = info.unchecked
        what = (
            "differ from the original" if not u else f"to update ({u} not compared with the original: too many to check at once)"
        )
        self.status.setText(
            f"{info.edits} edit(s); {len(info.changed)} tile(s) {what} ({c} computed, {k} from cache, {info.adopted} reused){q}"
        )

    @property
    def last_recomputed(self) -> list:
        """Tiles (ty, tx) the last edit, undo or redo left to compute (or to fetch from the cache)."""
        info = self.session.edit_info
        return [] if info is None else list(info.changed)

    @property
    def edited_pyramid(self):
        return self.session.edited_pyramid

    @property
    def edited_layer(self):
        """The ``generated (edited)`` layer (several channels: its first channel's layer)."""
        return None if self.binding is None else self.binding.layer(EDITED)

    @property
    def busy(self) -> bool:
        """True while the worker has tiles queued or running."""
        return self.session.busy

    # ============================================================ stats
    def region_stats(self, region: str, genes) -> dict[str, tuple[float, float]]:
        """Mean counts per bin in ``region`` for ``genes``: ``{gene: (before, after)}``."""
        return self.session.region_stats(region, genes)

    def _update_stats(self, edit: dict):
        self.last_stats = self.region_stats(edit.get("to") or edit.get("region"), edit["genes"])
        t = self.stats_table
        t.setRowCount(len(self.last_stats))
        for i, (gname, (u, v)) in enumerate(self.last_stats.items()):
            for j, val in enumerate((gname, f"{u:.3g}", f"{v:.3g}")):
                item = QTableWidgetItem(val)
                item.setFlags(item.flags() & ~Qt.ItemIsEditable)
                t.setItem(i, j, item)

    # ============================================================ history UI
    def _history_changed(self):
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
        self.regions_list.addItems(self.regions.describe(self.history.recipe))

    def save_recipe(self, path) -> Path:
        self.regions.snapshot()
        return self.history.save(path)

    def load_recipe(self, path):
        """Replace regions and edits by a recipe file; painted labels go to the regions layer."""
        self._need_session()
        self.history.load(path)
        self.regions.show_recipe_labels()
        self.session.update_edited(view=self._view(), max_checks=self.max_checks)

    def _save_dialog(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", "edits.json", "Recipes (*.json)")
        if path:
            self._guard(lambda: self.save_recipe(path))

    def _load_dialog(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", "", "Recipes (*.json)")
        if path:
            self._guard(lambda: self.load_recipe(path))
