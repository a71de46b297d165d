"""The compare panel's view changes: the side-by-side comparison grid and swipe / blend.

Helpers of :class:`~napari_gdt.widgets.compare.CompareWidget` (not widgets): they change
the viewer (grid mode, added panel layers, visibility, opacity) and put it back exactly.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QObject, QTimer

from ..errors import GDTError
from ..rendering.tiles import Region
from .layer_tools import (
    DifferenceLevel,
    copy_transform,
    data_to_world,
    layer_levels,
    lazy_composite,
    lazy_difference,
    swiped_data,
)

DIFF_NAME = "compare: |edited − generated|"
EXPR_NAME = "compare: genes"
SWIPE_NAME = "compare: swipe"


def view_region(viewer, ref=None, clip: bool = True) -> Region:
    """World box (output px) seen in one viewbox, clipped to the extent of layer ``ref`` when ``clip``."""
    scene = getattr(viewer, "scene", None)
    cam = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
    vh, vw = viewer.canvas.viewbox_size(viewer.layers)
    cy, cx = cam.center[-2:]
    hh, hw = vh / cam.zoom / 2.0, vw / cam.zoom / 2.0
    y0, y1, x0, x1 = math.floor(cy - hh), math.ceil(cy + hh), math.floor(cx - hw), math.ceil(cx + hw)
    if clip:
        if ref is not None:
            # pixel edges of the data box -> world; world px i covers [i - 0.5, i + 0.5)
            n, m = layer_levels(ref)[0].shape[:2]
            c = data_to_world(ref) @ np.array([[0, 0, n, n], [0, m, 0, m], [1, 1, 1, 1]])
            y0, x0 = max(y0, math.floor(c[0].min() + 1e-6)), max(x0, math.floor(c[1].min() + 1e-6))
            y1, x1 = min(y1, math.ceil(c[0].max() - 1e-6)), min(x1, math.ceil(c[1].max() - 1e-6))
        if y1 <= y0 or x1 <= x0:
            raise GDTError("the current view shows none of the data; pan or zoom onto the tissue")
    return Region(y0, y1, x0, x1)


class ComparisonView(QObject):
    """Real, generated, edited, ``|edited - generated|`` and genes side by side in grid mode, and back."""

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.saved = None  # the single view's state while comparing
        self.refreshes = 0  # times the difference panel was re-read because tiles arrived
        self._watch = None
        self._timer = QTimer(self)  # re-reads a lazy difference panel as tiles arrive (3 Hz)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self._poll)

    @property
    def active(self) -> bool:
        return self.saved is not None

    @property
    def watching(self) -> bool:
        """True while a lazy difference panel is re-read as tiles arrive."""
        return self._timer.isActive()

    def enter(self, real, gen, edi, genes) -> list[str]:
        """Show the panels side by side; returns the panel layer names, in grid order."""
        if self.active:
            return self.saved["panels"]
        if gen is None and edi is None and real is None:
            raise GDTError("choose at least one of the real, generated and edited layers")
        layers = self.viewer.layers
        grid = self.viewer.canvas.grid
        self.saved = {
            "order": list(layers),
            "visible": {l: l.visible for l in layers},
            "opacity": {l: l.opacity for l in layers},
            "grid": (grid.enabled, grid.stride, grid.shape),
        }
        panels = [l for l in (real, gen, edi) if l is not None]
        added = []
        if gen is not None and edi is not None:
            diff = lazy_difference(gen, edi)
            d = self.viewer.add_image(
                diff, name=DIFF_NAME, colormap="magma", multiscale=isinstance(diff, list), **copy_transform(gen)
            )
            added.append(d)
            self._start_watch(d, diff)
        if genes:
            added.append(self.viewer.add_image(lazy_composite(genes), name=EXPR_NAME, rgb=True, **copy_transform(genes[0])))
        panels += added
        self.saved["added"] = added
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
        self.saved["panels"] = [p.name for p in panels]
        return self.saved["panels"]

    def _start_watch(self, layer, diff) -> None:
        level = (diff if isinstance(diff, list) else [diff])[0]
        if isinstance(level, DifferenceLevel):
            self._watch = (layer, level, self._state(level))
            self._timer.start()

    @staticmethod
    def _state(level) -> tuple:
        return tuple((id(p), p.revision) for p in level.pyramids if p is not None)

    def _poll(self) -> None:
        if self._watch is None or not self.active:
            self._timer.stop()
            return
        layer, level, seen = self._watch
        now = self._state(level)
        if now != seen:
            self._watch = (layer, level, now)
            self.refreshes += 1
            layer.refresh()

    def exit(self) -> None:
        """Back to the single view: layer order, visibility and grid as they were."""
        if not self.active:
            return
        s, self.saved = self.saved, None
        self._timer.stop()
        self._watch = None
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


class Swipe:
    """Blend (top-layer opacity) or swipe (top layer left of a vertical line) one layer over another."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.state = None  # (top, bottom, top's opacity, top's visibility)

    def clear(self) -> None:
        """Remove the swipe layer and restore the top layer's opacity and visibility."""
        if self.state is None:
            return
        top, _, opacity, visible = self.state
        self.state = None
        if SWIPE_NAME in self.viewer.layers:
            self.viewer.layers.remove(SWIPE_NAME)
        if top in self.viewer.layers:
            top.opacity, top.visible = opacity, visible

    def apply(self, top, bottom, mode: str, frac: float) -> None:
        """``frac`` in [0, 1]: the top layer's opacity (blend) or the line's place in the view (swipe)."""
        if top is bottom:
            raise GDTError(f"choose two different layers to swipe or blend (both are '{top.name}')")
        if self.state is not None and self.state[0] is not top:
            self.clear()
        if self.state is None:
            self.state = (top, bottom, top.opacity, top.visible)
        bottom.visible = True
        layers = self.viewer.layers
        if layers.index(top) < layers.index(bottom):
            layers.move(layers.index(top), layers.index(bottom) + 1)
        if mode == "blend":
            if SWIPE_NAME in layers:
                layers.remove(SWIPE_NAME)
            top.visible = True
            top.opacity = frac
            return
        top.visible = False
        view = view_region(self.viewer, clip=False)
        data = swiped_data(top, view.x0 + frac * (view.x1 - view.x0))
        if SWIPE_NAME in layers:
            layers[SWIPE_NAME].data = data
        else:
            lay = self.viewer.add_image(data, name=SWIPE_NAME, rgb=True, multiscale=isinstance(data, list), **copy_transform(top))
            layers.move(layers.index(lay), layers.index(bottom) + 1)
