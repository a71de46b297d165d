"""The controls of the compare panel (sources, comparison view, swipe / blend, morphometrics, export).

A mixin of :class:`~napari_gdt.widgets.compare.CompareWidget`; like a Qt Designer ``Ui``
class, :meth:`CompareForm.setup_ui` builds the controls on the widget itself.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
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
)

SHORTCUT = "Shift-C"


def _row(*items) -> QHBoxLayout:
    r = QHBoxLayout()
    for it in items:
        r.addWidget(it)
    return r


def _button(text: str, tip: str, slot) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(slot)
    return b


class CompareForm:
    """Controls of the compare panel (mixin of CompareWidget)."""

    def setup_ui(self):
        """Build the controls (on ``self``, a QWidget with the panel's actions)."""
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
