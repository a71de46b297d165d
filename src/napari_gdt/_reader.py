"""napari reader contributions (npe2): expression canvases and real spatial formats."""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """Return a reader function for ``path`` if napari-gdt can open it, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from .expression.omezarr import is_canvas

    if is_canvas(path):
        return read_canvas_layers
    return None


def canvas_layer_data(canvas, genes=None, name_prefix=""):
    """Layer-data tuples showing ``genes`` (default: the 3 with most counts) additively."""
    import numpy as np

    if genes is None:
        totals = np.asarray(canvas.data.sum(axis=(1, 2)).compute())
        genes = [canvas.genes[i] for i in np.argsort(-totals)[:3]]
    colormaps = ["magenta", "green", "cyan", "yellow", "red", "blue"]
    idx = {g: i for i, g in enumerate(canvas.genes)}
    out = []
    for k, g in enumerate(genes):
        out.append(
            (
                canvas.data[idx[g]],
                {"name": f"{name_prefix}{g}", "blending": "additive", "colormap": colormaps[k % len(colormaps)], "affine": canvas.affine, "metadata": {"gene": g, "bin_um": canvas.bin_um}},
                "image",
            )
        )
    return out


def read_canvas_layers(path):
    from .expression.canvas import ExpressionCanvas

    canvas = ExpressionCanvas.from_ome_zarr(Path(path))
    return canvas_layer_data(canvas)
