"""Dock widget: compare real, generated and edited tissue; morphometrics; screenshots and figures.

* **Comparison view**: one click shows real, generated, edited, ``|edited - generated|``
  (heat map) and the chosen genes side by side in napari's grid mode (one linked
  camera); one click (or ``Shift-C``) returns to the single view as it was.
* **Swipe / blend** between two layers: ``blend`` sets the top layer's opacity;
  ``swipe`` shows the top layer only left of a vertical line placed at a fraction
  of the current view (a lazy, masked copy of the top layer).
* **Morphometrics** of the current view or of a region of a Labels layer, for real,
  generated and edited side by side (:func:`napari_gdt.analysis.morphometrics.compare_table`),
  shown in a table, exported as CSV.
* **Screenshot** of the current view (PNG/TIFF, chosen size or scale, µm scale bar burned in) and
  **figure** of the current view (PNG/TIFF/PDF, labelled panels, scale bar, gene legend).

Thin: the numbers and pictures come from :mod:`napari_gdt.export` and :mod:`napari_gdt.analysis`.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import GDTError
from ..export.figure import Panel, compose_figure, to_display
from ..rendering.tiles import Region
from ..session import Session
from .compare_ui import SHORTCUT, CompareForm
from .compare_view import DIFF_NAME, EXPR_NAME, SWIPE_NAME, ComparisonView, Swipe, view_region
from .layer_tools import (
    DifferenceLevel,
    is_labels,
    label_region,
    lazy_composite,
    lazy_difference,
    panels_from_layers,
    renderer_of,
    sample_layer,
)
from .layers import session_for

__all__ = [
    "DIFF_NAME",
    "EXPR_NAME",
    "SHORTCUT",
    "SWIPE_NAME",
    "CompareWidget",
    "DifferenceLevel",
    "lazy_composite",
    "lazy_difference",
    "sample_layer",
]

NONE = "(none)"
MAX_MEASURE_PX = 4096  # longest side of a region measured at full resolution
MAX_FIGURE_PX = 2048  # longest side of a figure panel sampled from the view


class CompareWidget(CompareForm, QWidget):
    """Comparison view, swipe/blend, morphometrics table and exports.

    Parameters
    ----------
    napari_viewer : napari.Viewer, optional
    session : Session, optional
        Where the model (µm per px, stain) comes from (default: the viewer's Session).
    """

    def __init__(self, napari_viewer=None, session: Session | None = None, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer, session)
        self.table_df = None
        self.bundle = None
        self.view = ComparisonView(napari_viewer) if napari_viewer is not None else None
        self.swipe = Swipe(napari_viewer) if napari_viewer is not None else None

        self.setup_ui()
        if self.viewer is not None:
            self.viewer.layers.events.inserted.connect(self.refresh_layers)
            self.viewer.layers.events.removed.connect(self.refresh_layers)
            self.viewer.bind_key(SHORTCUT, lambda viewer: self.toggle_comparison(), overwrite=True)
        self.refresh_layers()
        self.session.events.bundle.connect(self.set_bundle)
        self.destroyed.connect(lambda *_: self.session.events.bundle.disconnect(self.set_bundle))
        if self.session.bundle is not None:
            self.set_bundle(self.session.bundle)

    # ------------------------------------------------------------------ layer choice
    def _image_layers(self):
        if self.viewer is None:
            return []
        from napari.layers import Image

        return [l for l in self.viewer.layers if isinstance(l, Image) and not l.name.startswith("compare: ")]

    def _set_items(self, combo, names, prefer=None):
        cur = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([NONE] + names)
        pick = cur if cur in names else next((n for n in (prefer or []) if n in names), NONE)
        combo.setCurrentText(pick)
        combo.blockSignals(False)

    def refresh_layers(self, event=None):
        """Refill the layer choices from the viewer (keeps current choices that still exist)."""
        imgs = [l.name for l in self._image_layers()]
        genes = [l.name for l in self._image_layers() if "gene" in (l.metadata or {})]
        plain = [n for n in imgs if n not in genes]
        self._set_items(self.real_combo, plain, ["real", "real image", "H&E", "DAPI"])
        self._set_items(self.gen_combo, plain, ["generated"])
        self._set_items(self.edit_combo, plain, ["edited", "generated (edited)"])
        self._set_items(self.top_combo, plain, ["edited", "generated (edited)", "generated"])
        self._set_items(self.bottom_combo, plain, ["generated", "real"])
        selected = {i.text() for i in self.genes_list.selectedItems()}
        self.genes_list.clear()
        for g in genes:
            self.genes_list.addItem(g)
            if g in selected:
                self.genes_list.item(self.genes_list.count() - 1).setSelected(True)
        labels = [l.name for l in self.viewer.layers if is_labels(l)] if self.viewer is not None else []
        cur = self.region_combo.currentText()
        self.region_combo.clear()
        self.region_combo.addItems(["current view"] + labels)
        if cur in labels:
            self.region_combo.setCurrentText(cur)

    def set_bundle(self, bundle) -> None:
        """Take µm per px and the stain from a model bundle (the Session's model, followed)."""
        self.bundle = bundle
        if bundle is None:
            return
        self.um_spin.setValue(float(bundle.um_per_px))
        self.kind_combo.setCurrentText("dapi" if bundle.output_kind != "he" else "he")

    def set_sources(self, real=None, generated=None, edited=None, genes=None) -> None:
        """Choose layers by name (``None`` leaves a choice unchanged, ``""`` clears it)."""
        self.refresh_layers()
        for combo, name in ((self.real_combo, real), (self.gen_combo, generated), (self.edit_combo, edited)):
            if name is not None:
                combo.setCurrentText(name or NONE)
        if genes is not None:
            for i in range(self.genes_list.count()):
                it = self.genes_list.item(i)
                it.setSelected(it.text() in genes)

    def _layer(self, combo):
        name = combo.currentText()
        if self.viewer is None or name in ("", NONE) or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    @property
    def real_layer(self):
        return self._layer(self.real_combo)

    @property
    def generated_layer(self):
        return self._layer(self.gen_combo)

    @property
    def edited_layer(self):
        return self._layer(self.edit_combo)

    @property
    def gene_layers(self):
        names = [self.genes_list.item(i).text() for i in range(self.genes_list.count()) if self.genes_list.item(i).isSelected()]
        return [self.viewer.layers[n] for n in names if n in self.viewer.layers]

    def _notify(self, e: Exception):
        self.status.setText(f"error: {e}")
        from napari.utils.notifications import show_error

        show_error(str(e))

    # ------------------------------------------------------------------ comparison view
    @property
    def comparing(self) -> bool:
        return self.view.active

    def enter_comparison(self) -> list[str]:
        """Show the panels side by side in grid mode; returns the panel layer names, in grid order."""
        if self.viewer is None:
            return []
        if not self.comparing:
            self.swipe.clear()
        try:
            panels = self.view.enter(self.real_layer, self.generated_layer, self.edited_layer, self.gene_layers)
        except GDTError as e:
            self._notify(e)
            return []
        self.compare_btn.setEnabled(False)
        self.single_btn.setEnabled(True)
        self.status.setText("comparison: " + ", ".join(panels))
        return panels

    def exit_comparison(self) -> None:
        """Back to the single view: layer order, visibility and grid as they were."""
        if not self.comparing or self.viewer is None:
            return
        self.view.exit()
        self.compare_btn.setEnabled(True)
        self.single_btn.setEnabled(False)
        self.status.setText("single view")

    def toggle_comparison(self) -> bool:
        """Switch between the comparison view and the single view; returns whether comparing."""
        self.exit_comparison() if self.comparing else self.enter_comparison()
        return self.comparing

    @property
    def diff_refreshes(self) -> int:
        return self.view.refreshes

    # ------------------------------------------------------------------ swipe / blend
    def set_swipe(self, top: str, bottom: str, mode: str = "blend", value: int = 50) -> None:
        """Blend or swipe ``top`` over ``bottom`` (``value`` in 0..100: opacity or line position)."""
        self.top_combo.setCurrentText(top)
        self.bottom_combo.setCurrentText(bottom)
        for w, set_ in (
            (self.mode_combo, lambda: self.mode_combo.setCurrentText(mode)),
            (self.swipe_slider, lambda: self.swipe_slider.setValue(int(value))),
        ):
            w.blockSignals(True)
            set_()
            w.blockSignals(False)
        self.apply_swipe()

    def clear_swipe(self) -> None:
        """Remove the swipe layer and restore the top layer's opacity and visibility."""
        if self.viewer is not None:
            self.swipe.clear()

    def apply_swipe(self) -> None:
        top, bottom = self._layer(self.top_combo), self._layer(self.bottom_combo)
        if top is None or bottom is None or self.viewer is None:
            return
        try:
            self.swipe.apply(top, bottom, self.mode_combo.currentText(), self.swipe_slider.value() / 100.0)
        except GDTError as e:
            self._notify(e)

    # ------------------------------------------------------------------ regions
    def current_view_region(self, clip: bool = True) -> Region:
        """World box (output px) seen in one viewbox, clipped to the layers' extent when ``clip``."""
        return view_region(self.viewer, self.generated_layer or self.edited_layer or self.real_layer, clip)

    def region_and_mask(self) -> tuple[Region, np.ndarray | None]:
        """The measurement region: the current view, or the bounding box of a label (with its mask)."""
        choice = self.region_combo.currentText()
        if choice in ("", "current view") or choice not in self.viewer.layers:
            return self.current_view_region(), None
        return label_region(self.viewer.layers[choice], self.label_spin.value())

    # ------------------------------------------------------------------ morphometrics
    def measure(self):
        """Morphometrics of real, generated and edited in the chosen region -> DataFrame (also shown)."""
        from ..analysis.morphometrics import compare_table

        region, mask = self.region_and_mask()
        if max(region.shape) > MAX_MEASURE_PX:
            raise GDTError(f"region {region} is larger than {MAX_MEASURE_PX} px; zoom in or choose a smaller label region")
        images = {}
        for name, layer in (("real", self.real_layer), ("generated", self.generated_layer), ("edited", self.edited_layer)):
            if layer is not None:
                images[name] = to_display(sample_layer(layer, region, 1.0, order=1 if name == "real" else 0))
        if not images:
            raise GDTError("choose at least one of the real, generated and edited layers")
        df = compare_table(images, kind=self.kind_combo.currentText(), um_per_px=self.um_spin.value(), mask=mask)
        df.attrs["region"] = str(region)
        self.table_df = df
        self._show_table(df)
        self.status.setText(f"measured region {region}" + (f" ({int(mask.sum())} px in the label)" if mask is not None else ""))
        return df

    def export_csv(self, path) -> None:
        """Write the current morphometrics table to ``path`` (CSV, one row per image)."""
        if self.table_df is None:
            raise GDTError("no morphometrics table yet: press 'Measure nuclei' first")
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.table_df.to_csv(path)
        self.status.setText(f"wrote {path}")

    # ------------------------------------------------------------------ exports
    def export_screenshot(self, path, size=None, scale=None, scalebar_um=None):
        """Current view (comparison grid included) as PNG/TIFF with a µm scale bar; returns ScreenshotInfo."""
        from ..export.screenshot import screenshot_view

        if size is None and scale is None:
            w, h = self.shot_w.value(), self.shot_h.value()
            size = (h, w) if w and h else None
            scale = None if size else self.shot_scale.value()
        sb = scalebar_um if scalebar_um is not None else (self.scalebar_spin.value() or None)
        _, info = screenshot_view(self.viewer, path, size=size, scale=scale, um_per_px=self.um_spin.value(), scalebar_um=sb)
        self.status.setText(f"wrote {path} ({info.size_px[1]}x{info.size_px[0]} px)")
        return info

    def figure_panels(self, region: Region | None = None, step: float | None = None) -> list[Panel]:
        """The comparison panels of ``region`` (default: the current view) sampled from the layers."""
        region = region or self.current_view_region()
        if step is None:
            step = max(1.0, max(region.shape) / MAX_FIGURE_PX)
        return panels_from_layers(region, step, self.real_layer, self.generated_layer, self.edited_layer, self.gene_layers)

    def export_figure(self, path, region: Region | None = None, dpi: float | None = None, scalebar_um=None):
        """Multi-panel figure of the current view (or ``region``) as PNG/TIFF/PDF; returns FigureInfo."""
        region = region or self.current_view_region()
        step = max(1.0, max(region.shape) / MAX_FIGURE_PX)
        panels = self.figure_panels(region, step)
        sb = scalebar_um if scalebar_um is not None else (self.scalebar_spin.value() or None)
        info = compose_figure(
            panels, path, um_per_px=self.um_spin.value() * step, scalebar_um=sb, dpi=dpi or self.dpi_spin.value()
        )
        self.status.setText(f"wrote {path}: {len(info.panels)} panels")
        return info

    def export_into_spatialdata(self, store, region: Region | None = None, overwrite: bool = False) -> dict:
        """Add the generated (and edited) layers' pixels over ``region`` (default: the current view) to a SpatialData store.

        A thin call into :func:`napari_gdt.expression.spatialdata.write_into_spatialdata`: the pixels are
        rendered exactly (from the layers' tile caches) by the renderers behind the layers, whose canvas
        says which image element of the store they align with.
        """
        from ..expression.spatialdata import write_into_spatialdata

        gen, edi = self.generated_layer, self.edited_layer
        if gen is None:
            raise GDTError("choose the generated layer first")
        rg = renderer_of(gen)
        if rg is None:
            raise GDTError(f"layer '{gen.name}' was not generated by napari-gdt here: no canvas to align it with")
        region = rg.check_region(region or self.current_view_region())
        re_ = renderer_of(edi) if edi is not None else None
        edited = re_.render_region(region) if re_ is not None else None
        return write_into_spatialdata(
            store,
            rg.canvas,
            rg.bundle.px_per_bin,
            rg.render_region(region),
            edited=edited,
            origin_px=(region.y0, region.x0),
            channel_names=rg.bundle.channel_names or None,
            model_card=dict(rg.bundle.card),
            overwrite=overwrite,
            settings={"seed": rg.seed, "region": [region.y0, region.y1, region.x0, region.x1], "from": "compare widget"},
        )

    # ------------------------------------------------------------------ button handlers
    def _measure_clicked(self):
        try:
            self.measure()
        except GDTError as e:
            self._notify(e)

    def _save_as(self, title: str, default: str, filt: str, fn) -> None:  # pragma: no cover - needs a user
        path, _ = QFileDialog.getSaveFileName(self, title, default, filt)
        if path:
            try:
                fn(path)
            except GDTError as e:
                self._notify(e)

    def _csv_clicked(self):  # pragma: no cover - needs a user
        self._save_as("Morphometrics CSV", "morphometrics.csv", "CSV (*.csv)", self.export_csv)

    def _shot_clicked(self):  # pragma: no cover - needs a user
        self._save_as("Screenshot", "view.png", "Images (*.png *.tif *.tiff)", self.export_screenshot)

    def _sdata_clicked(self):  # pragma: no cover - needs a user
        path = QFileDialog.getExistingDirectory(self, "SpatialData store (.zarr)")
        if path:
            try:
                s = self.export_into_spatialdata(path)
                self.status.setText(f"wrote {', '.join(s['elements'])} into {path}, aligned with '{s['image_element']}'")
            except GDTError as e:
                self._notify(e)

    def _fig_clicked(self):  # pragma: no cover - needs a user
        self._save_as("Figure", "figure.png", "Figures (*.png *.tif *.tiff *.pdf)", self.export_figure)
