"""Dock widget: choose a generator, device, seed and cache; show the model card; generate.

Thin: every action is a call into :mod:`napari_gdt.rendering`.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


class GeneratorWidget(QWidget):
    """Choose the model file, device, seed and cache folder; show the card and tile statistics."""

    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.bundle = None
        self.canvas = None
        self.renderer = None

        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model .safetensors or her2st-he / merfish-dapi")
        self.model_edit.setToolTip("A model bundle (.safetensors) or the name of a bundled demo model")
        browse = QPushButton("…")
        browse.setToolTip("Choose a model bundle file")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_edit)
        row.addWidget(browse)
        self.load_btn = QPushButton("Load model")
        self.load_btn.setToolTip("Load the model bundle and show its card")
        self.load_btn.clicked.connect(self._load_clicked)

        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_combo.setToolTip("Where the generator runs. auto = CUDA, then Apple MPS, then CPU")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip("Seed of the global latent and per-layer noise (same seed, same tissue)")
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("(memory only)")
        self.cache_edit.setToolTip("Folder for the on-disk tile cache, kept across sessions")

        self.card_text = QPlainTextEdit()
        self.card_text.setReadOnly(True)
        self.card_text.setToolTip("The model card: gene panel, resolution, output, provenance, validation")
        self.stats_label = QLabel("tiles: computed 0, cached 0")
        self.stats_label.setToolTip("Tiles computed by the generator and tiles served from the cache")
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Generate tissue for the current expression canvas")
        self.generate_btn.clicked.connect(self.generate)

        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("", self.load_btn)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Cache folder", self.cache_edit)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.generate_btn)
        lay.addWidget(self.stats_label)
        lay.addWidget(self.card_text)

    # -------------------------------------------------------------- actions
    def _browse_model(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle", "", "Model bundles (*.safetensors)")
        if path:
            self.model_edit.setText(path)

    def _notify_error(self, e: Exception):
        from napari.utils.notifications import show_error

        show_error(f"{e}")

    def _load_clicked(self):
        from ..errors import GDTError
        from ..models.bundle import load_bundle

        try:
            self.set_bundle(load_bundle(self.model_edit.text().strip(), device=self.device_combo.currentText()))
        except GDTError as e:
            self._notify_error(e)

    def set_bundle(self, bundle):
        from ..cli.info import format_card

        self.bundle = bundle
        self.card_text.setPlainText(format_card(bundle.card))

    def set_canvas(self, canvas):
        self.canvas = canvas

    def generate(self):
        """Render the whole canvas (blocking); returns the new layer."""
        from ..rendering.tiles import TileRenderer

        if self.bundle is None or self.canvas is None:
            self._notify_error(ValueError("load a model and an expression canvas first"))
            return None
        self.renderer = TileRenderer(self.bundle, self.canvas, seed=self.seed_spin.value(), device=self.device_combo.currentText())
        img = self.renderer.render_region()
        s = self.renderer.stats
        self.stats_label.setText(f"tiles: computed {s['computed']}, cached {s['cached']}")
        if self.viewer is None:
            return None
        data = img if img.shape[-1] == 3 else img[..., 0]
        name = "generated"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
            return self.viewer.layers[name]
        return self.viewer.add_image(data, name=name, rgb=img.shape[-1] == 3)
