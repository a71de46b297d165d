"""Dock widget: generated tissue as a lazy, multiscale, never-blocking napari layer.

Choose the model file, the device, the seed and the cache folder; the widget
shows the model card and live tile statistics (computed, cached, queued).
``Generate`` asks the :class:`~napari_gdt.session.Session` for a lazy
``generated`` pyramid; :class:`~napari_gdt.widgets.layers.SessionLayers` shows it
as a multiscale layer whose visible tiles a background worker computes first.

Thin: the state is the Session's; every computation is in :mod:`napari_gdt.rendering`.
"""

from __future__ import annotations

import contextlib

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

from ..errors import GDTError
from ..session import EDITED, GENERATED, Session
from .layers import layers_for, session_for

__all__ = ["EDITED", "GENERATED", "GeneratorWidget"]


class GeneratorWidget(QWidget):
    """Choose the model file, device, seed and cache folder; show the card and tile statistics.

    Parameters
    ----------
    napari_viewer : napari.Viewer, optional
    session : Session, optional
        The session to show and drive (default: the viewer's, :func:`~napari_gdt.widgets.layers.session_for`).
    """

    def __init__(self, napari_viewer=None, session: Session | None = None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer, session)
        self.binding = layers_for(napari_viewer, self.session) if napari_viewer is not None else None

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
        self.device_combo.currentTextChanged.connect(self._device_changed)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(self.session.seed)
        self.seed_spin.setToolTip("Seed of the global latent and per-layer noise (same seed, same tissue)")
        self.seed_spin.valueChanged.connect(self._seed_changed)
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("(memory only)")
        self.cache_edit.setToolTip("Folder for the on-disk tile cache, kept across sessions: a tile is never computed twice")
        self.cache_edit.editingFinished.connect(self._cache_changed)
        cache_browse = QPushButton("…")
        cache_browse.setToolTip("Choose the tile cache folder")
        cache_browse.clicked.connect(self._browse_cache)
        crow = QHBoxLayout()
        crow.addWidget(self.cache_edit)
        crow.addWidget(cache_browse)

        self.card_text = QPlainTextEdit()
        self.card_text.setReadOnly(True)
        self.card_text.setToolTip("The model card: gene panel, resolution, output, provenance, validation")
        self.stats_label = QLabel("tiles: computed 0, cached 0, queued 0")
        self.stats_label.setToolTip("Tiles computed by the generator, served from the cache, and waiting in the queue")
        self.generate_btn = QPushButton("Generate")
        self.generate_btn.setToolTip("Show generated tissue for the current expression canvas (computed where you look)")
        self.generate_btn.clicked.connect(self.generate)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop computing queued tiles (panning asks for the visible ones again)")
        self.cancel_btn.clicked.connect(self.cancel)
        brow = QHBoxLayout()
        brow.addWidget(self.generate_btn)
        brow.addWidget(self.cancel_btn)

        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("", self.load_btn)
        form.addRow("Device", self.device_combo)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Cache folder", crow)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(brow)
        lay.addWidget(self.stats_label)
        lay.addWidget(self.card_text)

        ev = self.session.events
        self._links = [(ev.bundle, self._on_bundle), (ev.seed, self._on_seed)]
        if self.binding is not None:  # the layer binding outlives this panel: unlinked when it goes
            self._links += [(self.binding.refreshed, self._update_stats), (self.binding.progress, self._on_progress)]
        for sig, slot in self._links:
            sig.connect(slot)
        if self.session.bundle is not None:
            self._on_bundle(self.session.bundle)
        self.destroyed.connect(lambda *_: self._unlink())

    def _unlink(self) -> None:
        for sig, slot in self._links:
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected, or its object is gone
                sig.disconnect(slot)
        self._links = []

    def _on_progress(self, done: int, queued: int) -> None:
        self._update_stats(queued)

    # -------------------------------------------------------------- the Session's state, read through
    @property
    def bundle(self):
        return self.session.bundle

    @property
    def canvas(self):
        return self.session.canvas

    @property
    def pyramid(self):
        """The lazy ``generated`` pyramid (None before :meth:`generate`)."""
        return self.session.pyramid(GENERATED)

    @property
    def renderer(self):
        return self.session.renderer

    @property
    def scheduler(self):
        return self.session.scheduler

    def pyramids(self) -> dict:
        """``{layer name: TilePyramid}`` of the session."""
        return self.session.pyramids

    # -------------------------------------------------------------- actions
    def _browse_model(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle", "", "Model bundles (*.safetensors)")
        if path:
            self.model_edit.setText(path)

    def _browse_cache(self):  # pragma: no cover - needs a user
        path = QFileDialog.getExistingDirectory(self, "Tile cache folder")
        if path:
            self.cache_edit.setText(path)
            self._cache_changed()

    def _notify_error(self, e: Exception):
        from napari.utils.notifications import show_error

        show_error(f"{e}")

    def _load_clicked(self):
        try:
            self.session.load_model(self.model_edit.text().strip(), device=self.device_combo.currentText())
        except GDTError as e:
            self._notify_error(e)

    def _device_changed(self, device: str) -> None:
        self.session.device = device

    def _seed_changed(self, seed: int) -> None:
        self.session.seed = seed

    def _cache_changed(self) -> None:
        self.session.cache = self.cache_edit.text().strip() or None

    def _on_bundle(self, bundle) -> None:
        from ..models.card_text import format_card

        self.card_text.setPlainText("" if bundle is None else format_card(bundle.card))

    def _on_seed(self, seed: int) -> None:
        if self.seed_spin.value() != seed:
            self.seed_spin.setValue(seed)

    def set_bundle(self, bundle):
        """Use ``bundle`` (a :class:`~napari_gdt.models.bundle.GeneratorBundle`); the card follows."""
        self.session.bundle = bundle

    def set_canvas(self, canvas):
        """Use ``canvas`` (an :class:`~napari_gdt.expression.canvas.ExpressionCanvas`) for the next ``generate``."""
        self.session.canvas = canvas

    # ------------------------------------------------------------ generation
    def generate(self):
        """Create (or rebuild, e.g. after a seed change) the lazy ``generated`` layer; returns it.

        Returns at once: tiles are computed in the background where the view is.
        Call :meth:`wait` to block until the visible tiles are done.
        """
        self._cache_changed()
        try:
            self.session.generate()
        except GDTError as e:
            self._notify_error(e)
            return None
        self._update_stats()
        return None if self.binding is None else self.binding.layer(GENERATED)

    def add_canvas_layer(self, canvas, name: str = EDITED):
        """Show ``canvas`` (e.g. an edited canvas) as another lazy layer sharing the model, seed, cache and worker.

        An unchanged tile has the same content hash in both layers, so it comes from the
        cache instead of being computed again. The same ``name`` again swaps the canvas in
        place (the napari layer object is kept).
        """
        try:
            self.session.show_canvas(canvas, name)
        except GDTError as e:
            self._notify_error(e)
            return None
        self._update_stats()
        return None if self.binding is None else self.binding.layer(name)

    def cancel(self):
        """Drop all queued tiles (the running batch finishes)."""
        if self.binding is not None:
            self.binding.cancel()
        else:
            self.session.cancel()
        self._update_stats()

    def wait(self, timeout: float = 60.0) -> bool:
        """Process GUI events until no tile is queued or running (for scripts, demos and tests)."""
        ok = self.binding.wait(timeout) if self.binding is not None else self.session.wait(timeout)
        self._update_stats()
        return ok

    def _update_stats(self, queued: int | None = None):
        if not self._links:  # unlinked: the panel is being destroyed
            return
        st = self.session.stats()
        q = st["queued"] if queued is None else queued
        self.stats_label.setText(
            f"tiles: computed {st['computed']}, cached {st['cached']}, queued {q} (previews {st['previews']})"
        )

    def closeEvent(self, event):  # pragma: no cover - GUI
        self.session.cancel()
        super().closeEvent(event)
