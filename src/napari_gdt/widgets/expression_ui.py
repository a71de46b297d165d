"""The controls of the expression panel (open, convert, gene list, scale, real image).

A mixin of :class:`~napari_gdt.widgets.expression.ExpressionWidget`; like a Qt Designer
``Ui`` class, :meth:`ExpressionForm.setup_ui` builds the controls on the widget itself.
"""

from __future__ import annotations

from qtpy.QtCore import QSortFilterProxyModel, QStringListModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QVBoxLayout,
)


class ExpressionForm:
    """Controls of the expression panel (mixin of ExpressionWidget)."""

    def setup_ui(self):
        """Build the controls (on ``self``, a QWidget with the panel's actions)."""
        # ---- open
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("canvas .ome.zarr")
        self.path_edit.setToolTip("An expression canvas written by 'napari-gdt convert'")
        browse = QPushButton("…")
        browse.setToolTip("Choose a canvas folder")
        browse.clicked.connect(self._browse_canvas)
        self.open_btn = QPushButton("Open canvas")
        self.open_btn.setToolTip("Open the canvas (lazily) and list its genes")
        self.open_btn.clicked.connect(self._open_clicked)
        open_row = QHBoxLayout()
        open_row.addWidget(self.path_edit)
        open_row.addWidget(browse)

        # ---- convert
        conv = QGroupBox("Convert a file")
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("transcripts.parquet, detected_transcripts.csv, *_tx_file.csv, .h5ad, …")
        self.input_edit.setToolTip("Input file or folder (Xenium, MERFISH, CosMx, CSV/Parquet, AnnData, Space Ranger)")
        self.format_combo = QComboBox()
        self.format_combo.addItems(
            ["auto", "xenium", "merfish", "cosmx", "csv", "anndata", "visium", "visium_hd", "st", "spatialdata"]
        )
        self.format_combo.setToolTip("Input format; auto detects it from the name and columns")
        self.bin_spin = QDoubleSpinBox()
        self.bin_spin.setRange(0.01, 10000.0)
        self.bin_spin.setDecimals(2)
        self.bin_spin.setValue(10.0)
        self.bin_spin.setSuffix(" µm")
        self.bin_spin.setToolTip("Bin edge in µm")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output canvas .ome.zarr")
        self.out_edit.setToolTip("Where to write the converted canvas (a folder ending in .ome.zarr)")
        self.conv_image_edit = QLineEdit()
        self.conv_image_edit.setPlaceholderText("(optional) paired image")
        self.conv_image_edit.setToolTip(
            "The real image measured on the same tissue; the canvas records where its bins fall on it"
        )
        self.convert_btn = QPushButton("Convert")
        self.convert_btn.setToolTip("Convert in the background, then open the canvas")
        self.convert_btn.clicked.connect(self._convert_clicked)
        cf = QFormLayout(conv)
        cf.addRow("Input", self.input_edit)
        cf.addRow("Format", self.format_combo)
        cf.addRow("Bin", self.bin_spin)
        cf.addRow("Image", self.conv_image_edit)
        cf.addRow("Output", self.out_edit)
        cf.addRow("", self.convert_btn)

        # ---- genes
        self.info_label = QLabel("no canvas")
        self.info_label.setWordWrap(True)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("search genes…")
        self.filter_edit.setToolTip("Filter the gene list (case-insensitive substring)")
        self.gene_model = QStringListModel([])
        self.gene_proxy = QSortFilterProxyModel(self)
        self.gene_proxy.setSourceModel(self.gene_model)
        self.gene_proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit.textChanged.connect(self.gene_proxy.setFilterFixedString)
        self.gene_view = QListView()
        self.gene_view.setModel(self.gene_proxy)
        self.gene_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.gene_view.setUniformItemSizes(True)  # fast layout with thousands of rows
        self.gene_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.gene_view.setToolTip("Select genes (Ctrl/Shift-click), then 'Show selected'")
        self.gene_view.doubleClicked.connect(lambda _i: self.show_genes())
        self.show_btn = QPushButton("Show selected")
        self.show_btn.setToolTip("Show the selected genes as additive coloured channels")
        self.show_btn.clicked.connect(lambda: self.show_genes())
        self.clear_btn = QPushButton("Clear")
        self.clear_btn.setToolTip("Remove the expression layers added here")
        self.clear_btn.clicked.connect(self.clear_genes)
        self.ppb_label = QLabel("")
        self.ppb_label.setToolTip(
            "Output pixels per expression bin: the model card's px_per_bin (read-only; it sets the world scale)"
        )
        self.pct_spin = QDoubleSpinBox()
        self.pct_spin.setRange(50.0, 100.0)
        self.pct_spin.setValue(99.5)
        self.pct_spin.setSuffix(" %")
        self.pct_spin.setToolTip("Upper contrast limit: this percentile of each gene's non-zero counts")
        self.pct_spin.valueChanged.connect(lambda _v: self.update_contrast())
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setToolTip("Colour of each shown gene")

        # ---- image
        self.image_edit = QLineEdit()
        self.image_edit.setPlaceholderText("real image (H&E or DAPI)")
        self.image_edit.setToolTip("Path of the real H&E or DAPI image paired with this canvas")
        self.image_btn = QPushButton("Add image")
        self.image_btn.setToolTip("Add the paired real image, placed with the canvas affine")
        self.image_btn.clicked.connect(self._image_clicked)
        img_row = QHBoxLayout()
        img_row.addWidget(self.image_edit)
        img_row.addWidget(self.image_btn)

        btns = QHBoxLayout()
        btns.addWidget(self.show_btn)
        btns.addWidget(self.clear_btn)
        form = QFormLayout()
        form.addRow("px per bin", self.ppb_label)
        form.addRow("Contrast", self.pct_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(open_row)
        lay.addWidget(self.open_btn)
        lay.addWidget(conv)
        lay.addWidget(self.info_label)
        lay.addWidget(self.filter_edit)
        lay.addWidget(self.gene_view, stretch=1)
        lay.addLayout(btns)
        lay.addLayout(form)
        lay.addWidget(self.legend)
        lay.addLayout(img_row)
