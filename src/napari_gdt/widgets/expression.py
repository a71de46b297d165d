"""Dock widget: open an expression canvas (or convert a file into one), pick genes, add the real image.

Thin: reading and converting are calls into :mod:`napari_gdt.expression`.
The gene list is a ``QListView`` over a ``QStringListModel`` behind a
``QSortFilterProxyModel``, so typing in the search box stays instant with
thousands of genes (no widget per gene).

Layers use the project's world frame (generated-image output pixels):
expression layers are placed by :func:`napari_gdt.rendering.world.bin_layer_transform`
and the real image by :func:`napari_gdt.rendering.world.image_world_affine`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import GDTError
from ..rendering.world import bin_layer_transform, image_world_affine
from ..session import Session
from .expression_ui import ExpressionForm
from .layer_tools import contrast_for, gene_colormap
from .layers import session_for

# distinct additive colours (hex), one per shown gene, cycled
PALETTE = ["#ff00ff", "#00ff00", "#00ffff", "#ffff00", "#ff4040", "#4080ff", "#ff8000", "#a040ff", "#80ff80", "#ffffff"]
EXPRESSION_TAG = "napari_gdt_expression"
#: world scale before a model is loaded (then the model card's px_per_bin is used)
DEFAULT_PX_PER_BIN = 16


class ExpressionWidget(ExpressionForm, QWidget):
    """Open or convert an expression canvas, show genes as additive channels, add the real image.

    Parameters
    ----------
    napari_viewer : napari.Viewer, optional
    session : Session, optional
        The canvas opened here becomes the Session's; the world scale (px per bin) is the
        Session's model card's (default: the viewer's Session).
    """

    def __init__(self, napari_viewer=None, session: Session | None = None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer, session)
        self._scale_without_model = DEFAULT_PX_PER_BIN
        self.canvas = None
        self.gene_layers: list = []
        self.image_layer = None
        self._worker = None

        self.setup_ui()
        ev = self.session.events
        self._links = [(ev.bundle, self._on_bundle), (ev.canvas, self._on_canvas)]
        for sig, slot in self._links:
            sig.connect(slot)
        self.destroyed.connect(lambda *_: [sig.disconnect(slot) for sig, slot in self._links])
        self._show_scale()
        if self.session.canvas is not None:
            self.set_canvas(self.session.canvas)

    # ------------------------------------------------------------ helpers
    def _notify_error(self, e: Exception):
        from napari.utils.notifications import show_error

        show_error(f"{e}")

    def _browse_canvas(self):  # pragma: no cover - needs a user
        path = QFileDialog.getExistingDirectory(self, "Expression canvas (.ome.zarr)")
        if path:
            self.path_edit.setText(path)

    @property
    def px_per_bin(self) -> int:
        """Output px per bin: the Session's model card's (one source); before a model is loaded, the default scale."""
        ppb = self.session.px_per_bin
        return int(ppb) if ppb is not None else int(self._scale_without_model)

    def _show_scale(self) -> None:
        src = "from the model card" if self.session.px_per_bin is not None else "no model loaded yet"
        self.ppb_label.setText(f"{self.px_per_bin}  ({src})")

    def _on_bundle(self, bundle) -> None:
        self._rescale()

    def _on_canvas(self, canvas) -> None:
        if canvas is not None and canvas is not self.canvas:
            self.set_canvas(canvas)

    def set_px_per_bin(self, ppb: int) -> None:
        """Set the world scale before a model is loaded (with a model it is the card's; a different value is refused)."""
        if self.session.px_per_bin is not None and int(ppb) != self.session.px_per_bin:
            raise GDTError(
                f"px per bin comes from the model card ({self.session.px_per_bin}); {int(ppb)} would disagree with the model"
            )
        self._scale_without_model = int(ppb)
        self._rescale()

    def _rescale(self) -> None:
        """Place the layers shown at the current world scale."""
        self._show_scale()
        tf = bin_layer_transform(self.px_per_bin)
        for layer in self.gene_layers:
            layer.scale, layer.translate = tf["scale"], tf["translate"]
        if self.image_layer is not None and self.canvas is not None:
            self.image_layer.affine = self.image_affine()

    # ------------------------------------------------------------- canvas
    def _open_clicked(self):

        try:
            self.open_canvas(self.path_edit.text().strip())
        except GDTError as e:
            self._notify_error(e)

    def open_canvas(self, path):
        """Open a canvas (lazily) and list its genes."""
        from ..expression.readers import read_any

        canvas = read_any(path, format="canvas")
        self.path_edit.setText(str(path))
        self.set_canvas(canvas)
        return canvas

    def set_canvas(self, canvas) -> None:
        """Show ``canvas``'s genes; it becomes the Session's canvas."""
        self.clear_genes()
        self.canvas = canvas
        self.session.canvas = canvas
        self.gene_model.setStringList(list(canvas.genes))
        g, h, w = canvas.shape
        tot = canvas.meta.get("total_counts")
        self.info_label.setText(
            f"{g} genes, {h} x {w} bins of {canvas.bin_um:g} µm" + (f", {float(tot):,.0f} counts" if tot is not None else "")
        )
        img = canvas.meta.get("image")
        if img and img != "array" and not self.image_edit.text():
            self.image_edit.setText(str(img))

    def selected_genes(self) -> list[str]:
        rows = sorted(self.gene_proxy.mapToSource(i).row() for i in self.gene_view.selectionModel().selectedIndexes())
        return [self.gene_model.stringList()[r] for r in rows]

    def select_genes(self, genes) -> None:
        """Select ``genes`` in the list (clears the search filter)."""
        from qtpy.QtCore import QItemSelectionModel

        self.filter_edit.setText("")
        names = self.gene_model.stringList()
        sm = self.gene_view.selectionModel()
        sm.clearSelection()
        for g in genes:
            r = names.index(g)
            sm.select(self.gene_proxy.mapFromSource(self.gene_model.index(r, 0)), QItemSelectionModel.SelectionFlag.Select)

    def show_genes(self, genes=None) -> list:
        """Show ``genes`` (default: the selection) as additive coloured layers; returns the layers."""
        if self.canvas is None or self.viewer is None:
            return []
        genes = list(genes) if genes is not None else self.selected_genes()
        self.clear_genes()
        idx = {g: i for i, g in enumerate(self.canvas.genes)}
        ppb = self.px_per_bin
        legend = []
        for k, g in enumerate(genes):
            colour = PALETTE[k % len(PALETTE)]
            plane = self.canvas.data[idx[g]]
            layer = self.viewer.add_image(
                plane,
                name=g,
                **bin_layer_transform(ppb),
                blending="additive",
                colormap=gene_colormap(colour),
                contrast_limits=contrast_for(plane, self.pct_spin.value()),
                metadata={EXPRESSION_TAG: True, "gene": g, "bin_um": self.canvas.bin_um, "colour": colour},
            )
            self.gene_layers.append(layer)
            legend.append(f'<span style="color:{colour}">&#9632;</span> {g}')
        self.legend.setText("<br>".join(legend))
        return list(self.gene_layers)

    def update_contrast(self) -> None:
        for layer in self.gene_layers:
            layer.contrast_limits = contrast_for(layer.data, self.pct_spin.value())

    def clear_genes(self) -> None:
        if self.viewer is not None:
            for layer in self.gene_layers:
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self.gene_layers = []
        self.legend.setText("")

    # -------------------------------------------------------------- image
    def image_affine(self) -> np.ndarray:
        """Affine placing the real image in world (output-pixel) coordinates."""
        return image_world_affine(self.canvas.affine, self.px_per_bin)

    def _image_clicked(self):

        try:
            self.add_image(self.image_edit.text().strip())
        except (GDTError, OSError, ValueError) as e:
            self._notify_error(e)

    def add_image(self, image, name: str | None = None):
        """Add the real image (path or array) under the expression layers, placed by the canvas affine."""
        from ..errors import CanvasError

        if self.canvas is None:
            raise CanvasError("open an expression canvas first")
        if isinstance(image, (str, Path)):
            from ..expression.images import open_image_levels

            p = Path(image)
            if not p.exists():
                raise CanvasError(f"{p}: no such image file")
            levels = open_image_levels(p)  # whole-slide TIFFs: lazy pyramid levels, read by tile
            name = name or (p.stem[:-4] if p.stem.lower().endswith(".ome") else p.stem)
        else:
            levels = [np.asarray(image)]
            name = name or "real image"
        data = levels if len(levels) > 1 else levels[0]
        rgb = levels[0].ndim == 3 and levels[0].shape[-1] in (3, 4)
        if self.image_layer is not None and self.image_layer in self.viewer.layers:
            self.viewer.layers.remove(self.image_layer)
        self.image_layer = self.viewer.add_image(
            data,
            name=name,
            rgb=rgb,
            multiscale=len(levels) > 1,
            affine=self.image_affine(),
            metadata={"napari_gdt_real_image": True},
        )
        self.viewer.layers.move(self.viewer.layers.index(self.image_layer), 0)
        return self.image_layer

    # ------------------------------------------------------------ convert
    def _convert_clicked(self):
        self.convert(self.input_edit.text().strip(), self.out_edit.text().strip(), blocking=False)

    def convert(
        self,
        inputs,
        out,
        fmt: str | None = None,
        bin_um: float | None = None,
        image: str | None = None,
        blocking: bool = False,
        **opts,
    ):
        """Convert ``inputs`` to the canvas ``out`` (in a worker thread unless ``blocking``), then open it."""
        from ..expression.readers import read_any

        fmt = fmt or self.format_combo.currentText()
        bin_um = bin_um or self.bin_spin.value()
        image = image or (self.conv_image_edit.text().strip() or None)

        def job():
            canvas = read_any(inputs, format=fmt, bin_um=bin_um, image=image, **opts)
            canvas.to_ome_zarr(out)
            return out

        if blocking:
            return self.open_canvas(job())
        from napari.qt.threading import create_worker

        self.convert_btn.setEnabled(False)
        worker = create_worker(job)

        def done(path):
            self.convert_btn.setEnabled(True)
            self.open_canvas(path)

        def failed(e):
            self.convert_btn.setEnabled(True)
            if isinstance(e, GDTError):
                self._notify_error(e)
            else:
                raise e

        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.start()
        self._worker = worker
        return worker
