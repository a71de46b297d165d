"""The form of the editing panel (regions, edit, history boxes), gene sets and the edit it describes.

A mixin of :class:`~napari_gdt.widgets.editing.EditingWidget`, kept apart so that the
panel's behaviour (calls into the Session) reads on its own; like a Qt Designer
``Ui`` class, :meth:`EditingForm.setup_ui` builds the controls on the widget itself.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
)

from ..editing.history import parse_gene_list
from ..editing.recipe import OPS
from ..errors import GDTError

KEY_APPLY = "Control-Shift-Enter"
KEY_UNDO = "Control-Alt-Z"
KEY_REDO = "Control-Alt-Shift-Z"
_VALUE_LABEL = {
    "scale": "Factor",
    "set": "Value",
    "add": "Value",
    "knockout": "(none)",
    "transfer": "Strength",
    "eigen": "Strength",
}


def _button(text: str, tip: str, slot) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(slot)
    return b


def _row(*widgets) -> QHBoxLayout:
    r = QHBoxLayout()
    for w in widgets:
        r.addWidget(w)
    return r


class EditingForm:
    """Controls of the editing panel and the edit they describe (mixin of EditingWidget)."""

    def setup_ui(self):
        """Build the controls (on ``self``, a QWidget with ``_guard``, the actions and ``gene_sets``)."""
        g = self._guard
        self.region_name_edit = QLineEdit()
        self.region_name_edit.setPlaceholderText("region name, e.g. stroma")
        self.region_name_edit.setToolTip("Name of the next region you create")
        self.paint_btn = _button(
            "New painted region",
            "Add a label to the 'edit regions' layer and select it for painting",
            lambda: g(self.new_painted_region),
        )
        self.thr_gene = QComboBox()
        self.thr_gene.setEditable(True)
        self.thr_gene.setToolTip("Gene to threshold")
        self.thr_min = QDoubleSpinBox()
        self.thr_min.setRange(0, 1e9)
        self.thr_min.setDecimals(2)
        self.thr_min.setValue(1.0)
        self.thr_min.setToolTip("Bins with at least this many counts of the gene form the region")
        self.thr_btn = _button(
            "Region from threshold",
            "A new region of the bins where the gene reaches the minimum count",
            lambda: g(self.region_from_threshold),
        )
        self.shapes_combo = QComboBox()
        self.shapes_combo.setToolTip("A Shapes layer (rectangles, polygons, ellipses in output pixels)")
        self.shapes_btn = _button(
            "Region from shapes",
            "One region per shape of the chosen Shapes layer (its selected shapes, or all)",
            lambda: g(self.region_from_shapes),
        )
        self.geojson_btn = _button(
            "Import GeoJSON…",
            "Regions from annotations drawn on the real image (QuPath: Export objects as GeoJSON); "
            "one region per classification, painted into the regions layer",
            self._geojson_dialog,
        )
        self.regions_list = QListWidget()
        self.regions_list.setToolTip("Regions of the recipe")
        self.regions_list.setMaximumHeight(90)
        reg_box = QGroupBox("Regions")
        rl = QFormLayout(reg_box)
        rl.addRow("Name", self.region_name_edit)
        rl.addRow(self.paint_btn)
        rl.addRow("Threshold", _row(self.thr_gene, QLabel("≥"), self.thr_min))
        rl.addRow(self.thr_btn)
        rl.addRow("Shapes", _row(self.shapes_combo, self.shapes_btn))
        rl.addRow(self.geojson_btn)
        rl.addRow(self.regions_list)

        self.op_combo = QComboBox()
        self.op_combo.addItems(list(OPS))
        self.op_combo.setToolTip(
            "scale/set/add/knockout: change genes in the region. transfer: move the region's mean "
            "profile towards another region's. eigen: match the region's second moment to a reference's"
        )
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
        self.use_set_btn = _button("Use", "Put the genes of the chosen gene set into the Genes box", lambda: g(self.use_gene_set))
        self.save_set_edit = QLineEdit()
        self.save_set_edit.setPlaceholderText("set name")
        self.save_set_edit.setToolTip("Name under which 'Save set' stores the genes above")
        self.save_set_btn = _button("Save set", "Save the genes above as a named gene set", lambda: g(self.save_gene_set))
        self.value_spin = QDoubleSpinBox()
        self.value_spin.setRange(-1e6, 1e6)
        self.value_spin.setDecimals(3)
        self.value_spin.setValue(2.0)
        self.value_spin.setToolTip("scale: the factor; set/add: counts per bin; transfer/eigen: the strength (0 to 1)")
        self.value_label = QLabel("Factor")
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 10000)
        self.k_spin.setToolTip("eigen: number of top eigen-directions to rescale")
        self.apply_btn = _button("Apply", f"Apply the edit ({KEY_APPLY})", lambda: g(self.apply_edit))
        ed_box = QGroupBox("Edit")
        el = QFormLayout(ed_box)
        el.addRow("Operation", self.op_combo)
        el.addRow("Region", self.region_combo)
        el.addRow(self.other_label, self.other_combo)
        el.addRow("Genes", self.genes_edit)
        el.addRow("Gene sets", _row(self.set_combo, self.use_set_btn, self.save_set_edit, self.save_set_btn))
        el.addRow(self.value_label, self.value_spin)
        el.addRow("k (eigen)", self.k_spin)
        el.addRow(self.apply_btn)

        self.history_list = QListWidget()
        self.history_list.setToolTip("Edits in order; the generated (edited) layer shows all of them")
        self.history_list.setMaximumHeight(110)
        self.undo_btn = _button("Undo", f"Undo the last edit ({KEY_UNDO})", lambda: g(self.undo))
        self.redo_btn = _button("Redo", f"Redo ({KEY_REDO})", lambda: g(self.redo))
        self.save_btn = _button(
            "Save recipe…",
            "Save the regions and edits as a recipe JSON (replay it with napari-gdt render --edits)",
            self._save_dialog,
        )
        self.load_btn = _button(
            "Load recipe…", "Load a recipe JSON: its regions and edits replace the current ones", self._load_dialog
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        hb = QGroupBox("History")
        hl = QVBoxLayout(hb)
        hl.addWidget(self.history_list)
        hl.addLayout(_row(self.undo_btn, self.redo_btn, self.save_btn, self.load_btn))

        self.stats_table = QTableWidget(0, 3)
        self.stats_table.setHorizontalHeaderLabels(["gene", "mean before", "mean after"])
        self.stats_table.setToolTip("Mean counts per bin in the edited region, original vs edited canvas")
        lay = QVBoxLayout(self)
        for w in (reg_box, ed_box, hb, QLabel("Region statistics"), self.stats_table, self.status):
            lay.addWidget(w)
        self._op_changed(self.op_combo.currentText())
        self._refresh_gene_sets()

    def _op_changed(self, op):
        self.value_label.setText(_VALUE_LABEL.get(op, "Value"))
        self.value_spin.setEnabled(op != "knockout")
        self.other_combo.setEnabled(op in ("transfer", "eigen"))
        self.other_label.setText("Reference" if op == "eigen" else "Towards")
        self.k_spin.setEnabled(op == "eigen")
        if op in ("transfer", "eigen") and not (0 <= self.value_spin.value() <= 1):
            self.value_spin.setValue(1.0)

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

    def current_edit(self) -> dict:
        """The edit described by the form (a recipe edit object)."""
        op, region = self.op_combo.currentText(), self.region_combo.currentText()
        if not region:
            raise GDTError("create or choose a region first")
        genes, v = self.chosen_genes(), float(self.value_spin.value())
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
        return {
            "op": "eigen",
            "region": region,
            "source": region,
            "reference": other,
            "genes": genes,
            "k": int(self.k_spin.value()),
            "strength": v,
        }
