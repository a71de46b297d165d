"""The ``edit regions`` Labels layer of the editing panel: painted regions, shapes, GeoJSON, thresholds.

A helper of :class:`~napari_gdt.widgets.editing.EditingWidget` (not a widget): it keeps
the single-scale Labels layer on the expression bin grid (scale = px per bin, so it
overlays the generated image; multiscale Labels cannot be painted) and turns layers
and files into recipe regions of the :class:`~napari_gdt.session.Session`.
"""

from __future__ import annotations

import numpy as np

from ..editing.regions import shape_to_region
from ..errors import GDTError
from ..session import Session

REGIONS_LAYER = "edit regions"


class RegionsLayer:
    """Regions of ``session`` drawn in ``viewer`` (``viewer`` may be None: regions live in the recipe only)."""

    def __init__(self, viewer, session: Session, on_layer=None):
        self.viewer, self.session = viewer, session
        self.on_layer = on_layer  # called with the regions layer whenever it is made or found (e.g. to autosave strokes)

    @property
    def history(self):
        return self.session.history

    @property
    def layer(self):
        """The ``edit regions`` Labels layer, or None."""
        if self.viewer is None or REGIONS_LAYER not in self.viewer.layers:
            return None
        return self.viewer.layers[REGIONS_LAYER]

    def ensure(self):
        """The regions layer, (re)created on the canvas's bin grid when missing or of another shape."""
        s = self.session
        if self.viewer is None or s.canvas is None or s.bundle is None:
            return None
        ppb = s.px_per_bin
        layer = self.layer
        if layer is not None and layer.data.shape == tuple(s.canvas.n_bins):
            return self._found(layer)
        if layer is not None:
            self.viewer.layers.remove(REGIONS_LAYER)
        # bin (i, j) covers output px [i*ppb, (i+1)*ppb): its centre is at (i + 0.5) * ppb - 0.5 in pixel-centre coordinates
        layer = self.viewer.add_labels(
            np.zeros(s.canvas.n_bins, dtype=np.int32),
            name=REGIONS_LAYER,
            scale=(ppb, ppb),
            translate=((ppb - 1) / 2, (ppb - 1) / 2),
            opacity=0.4,
        )
        return self._found(layer)

    def _found(self, layer):
        if self.on_layer is not None:
            self.on_layer(layer)
        return layer

    def raise_to_top(self) -> None:
        """Keep the regions layer above the generated layers (it is translucent)."""
        if self.layer is None:
            return
        layers = self.viewer.layers
        i = layers.index(REGIONS_LAYER)
        if i != len(layers) - 1:
            layers.move(i, len(layers))

    def labels_file(self) -> str:
        """File name of the painted labels, beside the autosaved recipe."""
        p = self.history.autosave_path
        return (p.name[: -len(".json")] if p and p.name.endswith(".json") else "regions") + ".labels.tif"

    def unique_name(self, name: str) -> str:
        base, i = name, 2
        while name in self.history.recipe.regions:
            name = f"{base}_{i}"
            i += 1
        return name

    def new_painted(self, name: str) -> int:
        """Add painted region ``name`` and select its label for painting; returns the label value."""
        layer = self.ensure()
        used = [r.spec["value"] for r in self.history.recipe.regions.values() if r.kind == "labels"]
        value = max(used + [int(layer.data.max()) if layer is not None else 0]) + 1
        arr = layer.data if layer is not None else np.zeros(self.session.canvas.n_bins, np.int32)
        self.session.set_region(name, {"labels": self.labels_file(), "value": int(value)}, array=arr)
        if layer is not None:
            layer.selected_label = value
            layer.mode = "paint"
            self.viewer.layers.selection.active = layer
        return value

    def snapshot(self) -> None:
        """Freeze the painted labels into the recipe's regions (before an edit uses them)."""
        layer = self.layer
        if layer is None:
            return
        snap = np.array(layer.data, copy=True)
        for r in self.history.recipe.regions.values():
            if r.kind == "labels" and r.spec["labels"] == self.labels_file():
                r.array = snap

    def from_shapes(self, layer, base: str) -> list[str]:
        """One region per shape of a Shapes ``layer`` (its selected shapes, or all); shapes are in world = output px."""
        idx = sorted(layer.selected_data) or list(range(len(layer.data)))
        if not idx:
            raise GDTError(f"Shapes layer {layer.name!r} has no shapes")
        names = []
        for j, i in enumerate(idx):
            world = np.asarray([layer.data_to_world(v) for v in np.asarray(layer.data[i])])[:, -2:]
            n = base if j == 0 else f"{base}_{j + 1}"
            self.session.set_region(n, shape_to_region(world, layer.shape_type[i]))
            names.append(n)
        return names

    def import_geojson(self, path) -> tuple[list[str], dict]:
        """Painted regions from GeoJSON annotations of the real image; returns (names, bins taken from earlier regions)."""
        from ..editing.geojson import read_geojson_regions

        s = self.session
        masks = read_geojson_regions(path, s.canvas.affine, s.canvas.n_bins, s.px_per_bin)
        layer = self.ensure()
        names, taken = [], {}
        by_value = {r.spec["value"]: k for k, r in self.history.recipe.regions.items() if r.kind == "labels"}
        for name, m in masks.items():
            n = self.unique_name(name)
            value = self.new_painted(n)
            arr = self.history.recipe.regions[n].array
            # painted regions share one label image: say which earlier regions lose bins to this one
            prev, cnt = np.unique(arr[m & (arr != 0)], return_counts=True)
            for v, c in zip(prev.tolist(), cnt.tolist()):
                if v in by_value:
                    taken[by_value[v]] = taken.get(by_value[v], 0) + int(c)
            arr[m] = value
            by_value[value] = n
            names.append(n)
        if layer is not None:
            layer.refresh()
            layer.mode = "pan_zoom"
        self.history.touch()  # autosave the painted labels
        return names, taken

    def show_recipe_labels(self) -> None:
        """After loading a recipe: paint its label regions into the regions layer (which then holds them)."""
        s = self.session
        layer = self.ensure()
        rec = self.history.recipe
        for r in rec.regions.values():
            if r.kind == "labels" and layer is not None:
                m = r.mask(s.canvas, s.px_per_bin, rec.base_dir, rec.source)
                layer.data[m] = int(r.spec["value"])
                r.spec["labels"] = self.labels_file()
                r.array = layer.data
        if layer is not None:
            layer.refresh()
        self.history.touch()

    @staticmethod
    def describe(recipe) -> list[str]:
        return [
            f"{n}  [{r.kind}{' ' + str(r.spec.get('value')) if r.kind == 'labels' else ''}]" for n, r in recipe.regions.items()
        ]
