"""Dock widget: generated tissue as a lazy, multiscale, never-blocking napari layer.

Choose the model file, the device, the seed and the cache folder; the widget
shows the model card and live tile statistics (computed, cached, queued).
``Generate`` adds (or refreshes) an image layer whose data is a
:class:`~napari_gdt.rendering.pyramid.TilePyramid`: napari's slicing reads
whatever tiles exist (placeholders/previews elsewhere) and a background
:class:`~napari_gdt.rendering.scheduler.TileScheduler` computes the visible
tiles first. Tiles arriving on the worker thread are handed to the main
thread with a Qt signal, which refreshes the layer at most every 100 ms and
drives a cancellable progress bar in napari's activity dock.

Thin: every computation is in :mod:`napari_gdt.rendering`.
"""

from __future__ import annotations

import os

from qtpy.QtCore import QObject, QTimer, Signal
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

GENERATED = "generated"
EDITED = "generated (edited)"


class _Bridge(QObject):
    """Carries worker-thread callbacks to the main thread (queued connections)."""

    updated = Signal()
    progress = Signal(int, int)
    failed = Signal(str)


class _Lazy:
    """One lazy generated layer: renderer, pyramid and napari layer(s)."""

    def __init__(self, name, renderer, pyramid, layers):
        self.name = name
        self.renderer = renderer
        self.pyramid = pyramid
        self.layers = layers


class GeneratorWidget(QWidget):
    """Choose the model file, device, seed and cache folder; show the card and tile statistics."""

    refresh_interval_ms = 100
    #: OS priority decrement of the tile worker thread (Linux). 0 by default: with torch on
    #: cores-1 threads the UI thread keeps a core; raise it on machines where the UI stutters.
    worker_nice = 0

    def __init__(self, napari_viewer=None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.bundle = None
        self.canvas = None
        self.renderer = None
        self.pyramid = None
        self.scheduler = None
        self._lazy: dict[str, _Lazy] = {}
        self._caches: dict[str, object] = {}
        self._progress = None
        self._done0 = 0

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
        self.cache_edit.setToolTip("Folder for the on-disk tile cache, kept across sessions: a tile is never computed twice")
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

        self._bridge = _Bridge()
        self._bridge.updated.connect(self._on_updated)
        self._bridge.progress.connect(self._on_progress)
        self._bridge.failed.connect(self._notify_error_text)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(self.refresh_interval_ms)
        self._refresh_timer.timeout.connect(self._refresh_layers)
        self._progress_timer = QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(500)
        self._progress_timer.timeout.connect(self._open_progress)
        self._close_timer = QTimer(self)
        self._close_timer.setSingleShot(True)
        self._close_timer.setInterval(3000)
        self._close_timer.timeout.connect(self._close_progress)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(30)
        self._view_timer.timeout.connect(self._request_views)
        if self.viewer is not None:
            cam = self._camera()
            cam.events.center.connect(self._on_camera)
            cam.events.zoom.connect(self._on_camera)
            self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.destroyed.connect(lambda *_: self._shutdown())

    def _camera(self):
        scene = getattr(self.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        return scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera

    # -------------------------------------------------------------- actions
    def _browse_model(self):  # pragma: no cover - needs a user
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle", "", "Model bundles (*.safetensors)")
        if path:
            self.model_edit.setText(path)

    def _browse_cache(self):  # pragma: no cover - needs a user
        path = QFileDialog.getExistingDirectory(self, "Tile cache folder")
        if path:
            self.cache_edit.setText(path)

    def _notify_error(self, e: Exception):
        self._notify_error_text(f"{e}")

    def _notify_error_text(self, text: str):
        from napari.utils.notifications import show_error

        show_error(text)

    def _load_clicked(self):
        from ..errors import GDTError
        from ..models.bundle import load_bundle

        try:
            self.set_bundle(load_bundle(self.model_edit.text().strip(), device=self.device_combo.currentText()))
        except GDTError as e:
            self._notify_error(e)

    def set_bundle(self, bundle):
        """Use ``bundle`` (a :class:`~napari_gdt.models.bundle.GeneratorBundle`) and show its card."""
        from ..models.card_text import format_card

        self.bundle = bundle
        self.card_text.setPlainText(format_card(bundle.card))

    def set_canvas(self, canvas):
        """Use ``canvas`` (an :class:`~napari_gdt.expression.canvas.ExpressionCanvas`) for the next ``generate``."""
        self.canvas = canvas

    # ------------------------------------------------------------- plumbing
    def _get_scheduler(self):
        from ..rendering.scheduler import TileScheduler

        if self.scheduler is None or self.scheduler.closed:
            threads = max(1, (os.cpu_count() or 2) - 1)  # leave a core to the UI thread
            self.scheduler = TileScheduler(
                num_threads=threads,
                nice=self.worker_nice,
                on_progress=lambda done, queued: self._bridge.progress.emit(done, queued),
                on_error=lambda e: self._bridge.failed.emit(f"tile computation failed: {e}"),
            )
        return self.scheduler

    def _cache(self):
        from ..rendering.cache import open_cache

        folder = self.cache_edit.text().strip()
        if folder not in self._caches:
            self._caches[folder] = open_cache(folder or None)
        return self._caches[folder]

    def _make_lazy(self, canvas, name, probe=None):
        from ..rendering.pyramid import TilePyramid
        from ..rendering.tiles import Region, TileRenderer

        renderer = TileRenderer(
            self.bundle, canvas, seed=self.seed_spin.value(), device=self.device_combo.currentText(), cache=self._cache()
        )
        # auto_request off: the camera (not napari's chunk-widened reads) says what is visible,
        # so zooming in drops the tiles that left the view
        pyramid = TilePyramid(renderer, self._get_scheduler(), name=name, auto_request=False, probe=probe)
        k = pyramid.n_levels - 1
        pyramid.request_view(k, Region(0, *pyramid.level_shapes[k][:1], 0, pyramid.level_shapes[k][1]), channel="thumb")
        pyramid.update_callbacks.append(lambda kind, keys: self._bridge.updated.emit())
        return renderer, pyramid

    def _show(self, name, renderer, pyramid):
        """Add or replace the napari layer(s) of ``name``; returns the first layer."""
        old = self._lazy.pop(name, None)
        if old is not None:
            old.pyramid.close()
            old.pyramid.update_callbacks.clear()
        if self.viewer is None:
            self._lazy[name] = _Lazy(name, renderer, pyramid, [])
            return None
        C = pyramid.C
        meta = {"napari_gdt": {"kind": "generated", "seed": renderer.seed, "model": self.bundle.card.get("name")}}
        if C in (1, 3):
            specs = [(name, pyramid.levels if C == 3 else pyramid.multiscale(0), {"rgb": C == 3})]
        else:
            cmaps = ["cyan", "magenta", "yellow", "green", "red", "blue"]
            chans = self.bundle.channel_names or [f"ch{c}" for c in range(C)]
            specs = [
                (f"{name} [{chans[c]}]", pyramid.multiscale(c), {"colormap": cmaps[c % len(cmaps)], "blending": "additive"})
                for c in range(C)
            ]
        if old is not None and len(old.layers) == len(specs) and all(
            l.name == sp[0] and l in self.viewer.layers and bool(l.rgb) == bool(sp[2].get("rgb", False)) for l, sp in zip(old.layers, specs)
        ):
            # same layer(s), new data: the user's contrast, colormap, visibility and order persist
            for l, (_, data, _) in zip(old.layers, specs):
                l.metadata = meta
                l.data = data
            self._lazy[name] = _Lazy(name, renderer, pyramid, list(old.layers))
            self._request_views()
            return old.layers[0]
        layers = []
        for lname, data, kw in specs:
            if C != 3:
                kw["contrast_limits"] = (0, 255) if pyramid.dtype.kind == "u" else (0.0, 1.0)
            if lname in self.viewer.layers:
                self.viewer.layers.remove(lname)
            layers.append(self.viewer.add_image(data, name=lname, multiscale=True, metadata=meta, **kw))
        self._lazy[name] = _Lazy(name, renderer, pyramid, layers)
        self._request_views()
        return layers[0]

    # ------------------------------------------------------------ generation
    def generate(self):
        """Create (or rebuild, e.g. after a seed change) the lazy ``generated`` layer; returns it.

        Returns at once: tiles are computed in the background where the view is.
        Call :meth:`wait` to block until the visible tiles are done.
        """
        if self.bundle is None or self.canvas is None:
            self._notify_error(ValueError("load a model and an expression canvas first"))
            return None
        from ..errors import GDTError

        try:
            self.renderer, self.pyramid = self._make_lazy(self.canvas, GENERATED)
        except GDTError as e:
            self._notify_error(e)
            return None
        layer = self._show(GENERATED, self.renderer, self.pyramid)
        self._update_stats()
        QTimer.singleShot(300, self._open_progress)  # soon after the first paint, before any pan
        return layer

    def add_canvas_layer(self, canvas, name: str = EDITED, before_show=None):
        """Show ``canvas`` (e.g. an edited canvas) as another lazy layer sharing the model, seed, cache and worker.

        An unedited tile has the same content hash in both layers, so it is taken
        from the cache instead of being computed again. Calling it again with the
        same ``name`` swaps the canvas in place (the napari layer object is kept).
        ``before_show(pyramid)`` is called with the new pyramid before it is shown
        (e.g. to :meth:`~napari_gdt.rendering.pyramid.TilePyramid.adopt` unchanged tiles).
        """
        if self.bundle is None:
            self._notify_error(ValueError("load a model first"))
            return None
        # the preview map is taken over from the generated layer (adopt) instead of computing probe tiles
        probe = 0 if before_show is not None and self.pyramid is not None else None
        renderer, pyramid = self._make_lazy(canvas, name, probe=probe)
        if before_show is not None:
            before_show(pyramid)
        layer = self._show(name, renderer, pyramid)
        self._update_stats()
        return layer

    set_edited_canvas = add_canvas_layer

    def pyramids(self) -> dict:
        """``{layer name: TilePyramid}`` of the lazy layers of this widget."""
        return {n: lz.pyramid for n, lz in self._lazy.items()}

    def cancel(self):
        """Drop all queued tiles (the running batch finishes)."""
        if self.scheduler is not None:
            self.scheduler.cancel()  # the views are asked for again when the camera moves
        self._close_progress()
        self._update_stats()

    def wait(self, timeout: float = 60.0) -> bool:
        """Process GUI events until no tile is queued or running (for scripts, demos and tests)."""
        from qtpy.QtWidgets import QApplication

        if self.scheduler is None:
            return True
        ok = self.scheduler.wait_idle(timeout, poll=QApplication.processEvents)
        QApplication.processEvents()
        self._refresh_layers()
        self._update_stats()
        return ok

    # ------------------------------------------------------------ main thread
    def _on_camera(self, event=None):
        if not self._view_timer.isActive():
            self._view_timer.start()

    def _request_views(self):
        """Ask each pyramid for the tiles under the camera (at its layer's current level)."""
        for lz in self._lazy.values():
            if lz.layers:
                r = self._visible_region(lz.layers[0])
                if r is not None:
                    lz.pyramid.request_view(*r)

    def _visible_region(self, layer):
        """``(level, Region)`` that the camera shows of ``layer``, in that level's pixels."""
        import numpy as np

        from ..rendering.tiles import Region

        try:
            k = int(layer.data_level)
            f = np.asarray(layer.downsample_factors[k])[-2:]
            size = getattr(self.viewer, "_canvas_size", None)  # napari < 0.9
            if size is None and hasattr(self.viewer, "canvas"):
                size = tuple(self.viewer.canvas.size)  # (h, w) in screen px
            cam = self._camera()
            if size is not None and cam.zoom > 0:
                c = np.asarray(cam.center)[-2:]
                half = np.asarray(size[-2:], float) / 2 / cam.zoom
                lo = np.asarray(layer.world_to_data(np.r_[np.zeros(layer.ndim - 2), c - half]))[-2:]
                hi = np.asarray(layer.world_to_data(np.r_[np.zeros(layer.ndim - 2), c + half]))[-2:]
                lo, hi = np.minimum(lo, hi) / f, np.maximum(lo, hi) / f
                r = Region(int(np.floor(lo[0])), int(np.ceil(hi[0])) + 1, int(np.floor(lo[1])), int(np.ceil(hi[1])) + 1)
            else:
                cp = np.asarray(layer.corner_pixels)
                r = Region(int(cp[0, -2]), int(cp[1, -2]) + 1, int(cp[0, -1]), int(cp[1, -1]) + 1)
        except Exception:  # pragma: no cover - a layer without a view yet
            return None
        H, W = layer.data[k].shape[:2]
        r = Region(max(0, r.y0), min(int(H), r.y1), max(0, r.x0), min(int(W), r.x1))
        return (k, r) if r.y1 > r.y0 and r.x1 > r.x0 else None

    def _on_updated(self):
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _refresh_layers(self):
        """Re-slice the lazy layers (cheap: their reads only copy stored tiles).

        The thumbnail (and the layer list it repaints) is only refreshed every
        ~2 s and when the queue runs empty.
        """
        import time

        now = time.monotonic()
        idle = self.scheduler is None or self.scheduler.is_idle()
        thumb = idle or now - getattr(self, "_last_thumb", 0.0) > 2.0
        if thumb:
            self._last_thumb = now
        for lz in self._lazy.values():
            for layer in lz.layers:
                try:
                    layer.refresh(thumbnail=thumb, extent=False, highlight=False)
                except TypeError:  # older napari
                    layer.refresh()
        self._update_stats()
        if not idle and not thumb:
            pass
        elif not idle:
            self._refresh_timer.start()  # keep the thumbnail catching up

    def _on_progress(self, done: int, queued: int):
        self._update_stats(queued)
        if self.viewer is None:
            return
        if queued > 0:
            if self._progress is None and not self._progress_timer.isActive():
                self._progress_timer.start()  # create the bar only if work lasts (it costs the UI thread)
            self._close_timer.stop()
            if self._progress is None:
                return
            self._progress_update(done, queued)
        else:  # close after a quiet spell, so that a pan does not re-create the bar (it is costly)
            self._progress_timer.stop()
            if self._progress is not None:
                self._progress_update(done, 0)
                self._close_timer.start()

    def _open_progress(self):
        if self._progress is not None or self.scheduler is None or self.viewer is None:
            return
        queued = self.scheduler.queued + self.scheduler.running
        if queued == 0:
            return
        from napari.utils.progress import cancelable_progress

        widget = self

        class _TileProgress(cancelable_progress):
            def cancel(self):  # the activity dock's Cancel button
                super().cancel()
                widget.cancel()

        self._close_timer.stop()
        self._done0 = self.scheduler.done
        self._progress = _TileProgress(total=queued, desc="generating tiles")
        self._progress_update(self.scheduler.done, queued)

    def _progress_update(self, done: int, queued: int):
        p = self._progress
        n = max(0, done - self._done0)
        p.total = n + queued
        p.n = n
        p.refresh()

    def _close_progress(self):
        if self._progress is not None:
            p, self._progress = self._progress, None
            p.close()

    def _update_stats(self, queued: int | None = None):
        computed = sum(lz.renderer.stats["computed"] for lz in self._lazy.values())
        cached = sum(lz.renderer.stats["cached"] for lz in self._lazy.values())
        if queued is None:
            queued = 0 if self.scheduler is None else self.scheduler.queued + self.scheduler.running
        previews = sum(lz.pyramid.n_previews for lz in self._lazy.values())
        self.stats_label.setText(f"tiles: computed {computed}, cached {cached}, queued {queued} (previews {previews})")

    def _on_layer_removed(self, event):
        layer = event.value
        for name, lz in list(self._lazy.items()):
            if any(layer is l for l in lz.layers):
                lz.layers = [l for l in lz.layers if l is not layer]
                if not lz.layers:
                    lz.pyramid.close()
                    del self._lazy[name]

    def _shutdown(self):
        for lz in self._lazy.values():
            try:
                lz.pyramid.close()
            except Exception:
                pass
        if self.scheduler is not None:
            self.scheduler.close()

    def closeEvent(self, event):  # pragma: no cover - GUI
        self._shutdown()
        super().closeEvent(event)
