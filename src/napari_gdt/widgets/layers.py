"""The napari side of a :class:`~napari_gdt.session.Session`: one Session per viewer, its pyramids as layers.

:func:`session_for` gives the Session of a viewer (created on first use, or the one the
demo registered), so that dock widgets opened from napari's menu share it; a widget can
also be given a Session explicitly. No widget looks for another widget.

:class:`SessionLayers` shows the Session's lazy pyramids as multiscale napari layers
(``generated``, ``generated (edited)``): it adds or swaps a layer when the Session
announces a pyramid, asks each pyramid for the tiles under the camera, re-slices the
layers (at most every 100 ms) when tiles arrive, and drives a cancellable progress bar in
napari's activity dock. Tile events come from the worker thread; they are handed to the
main thread through a Qt signal.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..rendering.tiles import Region
from ..session import EDITED, GENERATED, Session

__all__ = ["EDITED", "GENERATED", "SessionLayers", "layers_for", "session_for"]

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
CMAPS = ["cyan", "magenta", "yellow", "green", "red", "blue"]


def session_for(viewer, session: Session | None = None) -> Session:
    """The Session of ``viewer`` (``session`` registers one; else one is created on first use).

    Without a viewer, a new Session. The viewer's :class:`SessionLayers` is set up too.
    """
    if viewer is None:
        return session if session is not None else Session()
    if session is not None:
        _SESSIONS[viewer] = session
    elif viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    s = _SESSIONS[viewer]
    layers_for(viewer, s)
    return s


def layers_for(viewer, session: Session) -> SessionLayers:
    """The :class:`SessionLayers` binding ``session`` to ``viewer`` (one per viewer and session)."""
    b = _LAYERS.get(viewer)
    if b is None or b.session is not session:
        if b is not None:
            b.detach()
        b = _LAYERS[viewer] = SessionLayers(viewer, session)
    return b


def camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def visible_region(viewer, layer) -> tuple[int, Region] | None:
    """``(level, Region)`` that the camera shows of a multiscale ``layer``, in that level's pixels."""
    try:
        k = int(layer.data_level)
        f = np.asarray(layer.downsample_factors[k])[-2:]
        size = tuple(viewer.canvas.size) if hasattr(viewer, "canvas") else None  # (h, w) screen px
        cam = camera(viewer)
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
    except (AttributeError, IndexError, TypeError, ValueError):  # pragma: no cover - a layer without a view yet
        return None
    H, W = layer.data[k].shape[:2]
    r = Region(max(0, r.y0), min(int(H), r.y1), max(0, r.x0), min(int(W), r.x1))
    return (k, r) if r.y1 > r.y0 and r.x1 > r.x0 else None


class SessionLayers(QObject):
    """Shows a Session's pyramids as napari layers of one viewer (see the module docstring)."""

    #: main thread: tiles arrived / the worker's (done, queued) / a tile failed
    updated = Signal()
    progress = Signal(int, int)
    failed = Signal(str)
    #: main thread, after the layers were re-sliced
    refreshed = Signal()

    refresh_interval_ms = 100

    def __init__(self, viewer, session: Session):
        super().__init__()
        self.viewer, self.session = viewer, session
        self.layers: dict[str, list] = {}
        self._progress = None
        self._done0 = 0
        self._last_thumb = 0.0
        self._refresh_timer = self._timer(self.refresh_interval_ms, self.refresh_layers)
        self._progress_timer = self._timer(500, self._open_progress)
        self._close_timer = self._timer(3000, self._close_progress)
        self._view_timer = self._timer(30, self.request_views)
        self.updated.connect(self._on_updated)
        self.progress.connect(self._on_progress)
        self.failed.connect(self._show_error)
        ev = session.events
        self._links = [
            (ev.pyramid, self._on_pyramid),
            (ev.tiles, self.updated.emit),
            (ev.progress, self.progress.emit),
            (ev.error, self.failed.emit),
        ]
        for sig, slot in self._links:
            sig.connect(slot)
        cam = camera(viewer)
        cam.events.center.connect(self._on_camera)
        cam.events.zoom.connect(self._on_camera)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    def _timer(self, ms: int, slot) -> QTimer:
        t = QTimer(self)
        t.setSingleShot(True)
        t.setInterval(ms)
        t.timeout.connect(slot)
        return t

    def detach(self) -> None:
        """Stop following the Session (another Session was registered for the viewer)."""
        for sig, slot in self._links:
            sig.disconnect(slot)

    def _show_error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        show_error(text)

    # ------------------------------------------------------------ layers
    def layer(self, name: str = GENERATED):
        """The (first) napari layer of pyramid ``name``, or None."""
        ls = self.layers.get(name) or []
        return ls[0] if ls else None

    def _on_pyramid(self, name: str, pyramid) -> None:
        if pyramid is None:
            for layer in self.layers.pop(name, []):
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            return
        self.show(name, pyramid)
        QTimer.singleShot(300, self._open_progress)  # soon after the first paint, before any pan

    def show(self, name: str, pyramid):
        """Add or swap the layer(s) of ``name`` (RGB: one layer; other channel counts: one additive layer each)."""
        s = self.session
        C = pyramid.C
        meta = {"napari_gdt": {"kind": "generated", "seed": pyramid.renderer.seed, "model": s.bundle.card.get("name")}}
        if C in (1, 3):
            specs = [(name, pyramid.levels if C == 3 else pyramid.multiscale(0), {"rgb": C == 3})]
        else:
            chans = s.bundle.channel_names or [f"ch{c}" for c in range(C)]
            specs = [
                (f"{name} [{chans[c]}]", pyramid.multiscale(c), {"colormap": CMAPS[c % len(CMAPS)], "blending": "additive"})
                for c in range(C)
            ]
        old = self.layers.get(name) or []
        if len(old) == len(specs) and all(
            l.name == sp[0] and l in self.viewer.layers and bool(l.rgb) == bool(sp[2].get("rgb", False))
            for l, sp in zip(old, specs)
        ):
            for l, (_, data, _) in zip(old, specs):  # same layers, new data: the user's settings persist
                l.metadata = meta
                l.data = data
            self.request_views()
            return old[0]
        layers = []
        ref = self.layer(GENERATED)
        for lname, data, kw in specs:
            if C != 3:
                kw["contrast_limits"] = (0, 255) if pyramid.dtype.kind == "u" else (0.0, 1.0)
                if name != GENERATED and ref is not None and C == 1:
                    kw["contrast_limits"] = ref.contrast_limits
            if lname in self.viewer.layers:
                self.viewer.layers.remove(lname)
            layers.append(self.viewer.add_image(data, name=lname, multiscale=True, metadata=meta, **kw))
        self.layers[name] = layers
        self.request_views()
        return layers[0]

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        for name, ls in list(self.layers.items()):
            if any(layer is l for l in ls):
                self.layers[name] = [l for l in ls if l is not layer]
                if not self.layers[name]:
                    del self.layers[name]
                    if self.session.pyramid(name) is not None:
                        self.session.close_pyramid(name)

    # ------------------------------------------------------------ views and refresh
    def _on_camera(self, event=None) -> None:
        if not self._view_timer.isActive():
            self._view_timer.start()

    def request_views(self) -> None:
        """Ask each pyramid for the tiles under the camera (at its layer's current level)."""
        for name, pyr in self.session.pyramids.items():
            layer = self.layer(name)
            if layer is not None:
                r = visible_region(self.viewer, layer)
                if r is not None:
                    pyr.request_view(*r)

    def view(self, name: str = GENERATED):
        """``(level, Region)`` in view of layer ``name`` (None without one)."""
        layer = self.layer(name)
        return None if layer is None else visible_region(self.viewer, layer)

    def _on_updated(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def refresh_layers(self) -> None:
        """Re-slice the layers (cheap: reads copy stored tiles); the thumbnail every ~2 s and when idle."""
        now = time.monotonic()
        idle = not self.session.busy
        thumb = idle or now - self._last_thumb > 2.0
        if thumb:
            self._last_thumb = now
        for ls in self.layers.values():
            for layer in ls:
                layer.refresh(thumbnail=thumb, extent=False, highlight=False)
        if not idle and thumb:
            self._refresh_timer.start()  # keep the thumbnail catching up
        self.refreshed.emit()

    def wait(self, timeout: float = 60.0) -> bool:
        """Process GUI events until no tile is queued or running (scripts, demos, tests); then re-slice."""
        from qtpy.QtWidgets import QApplication

        ok = self.session.wait(timeout, poll=QApplication.processEvents)
        QApplication.processEvents()
        self.refresh_layers()
        return ok

    # ------------------------------------------------------------ progress bar
    @property
    def progress_bar(self):
        """The activity dock's progress bar while tiles are being computed (None otherwise)."""
        return self._progress

    def _on_progress(self, done: int, queued: int) -> None:
        if queued > 0:
            if self._progress is None and not self._progress_timer.isActive():
                self._progress_timer.start()  # only if the work lasts (the bar costs the UI thread)
            self._close_timer.stop()
            if self._progress is not None:
                self._progress_update(done, queued)
        else:  # close after a quiet spell, so that a pan does not re-create the bar
            self._progress_timer.stop()
            if self._progress is not None:
                self._progress_update(done, 0)
                self._close_timer.start()

    def _open_progress(self) -> None:
        sch = self.session.scheduler if self.session.pyramids else None
        if self._progress is not None or sch is None:
            return
        queued = sch.queued + sch.running
        if queued == 0:
            return
        from napari.utils.progress import cancelable_progress

        binding = self

        class _TileProgress(cancelable_progress):
            def cancel(self):  # the activity dock's Cancel button
                super().cancel()
                binding.cancel()

        self._close_timer.stop()
        self._done0 = sch.done
        self._progress = _TileProgress(total=queued, desc="generating tiles")
        self._progress_update(sch.done, queued)

    def _progress_update(self, done: int, queued: int) -> None:
        p = self._progress
        n = max(0, done - self._done0)
        p.total = n + queued
        p.n = n
        p.refresh()

    def _close_progress(self) -> None:
        if self._progress is not None:
            p, self._progress = self._progress, None
            p.close()

    def cancel(self) -> None:
        """Drop the queued tiles and close the progress bar."""
        self.session.cancel()
        self._close_progress()
