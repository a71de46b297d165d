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
    return _spatial_reader(path)


def _spatial_reader(path):
    """A reader for transcript tables / spot data that :func:`detect_format` recognises, else None."""
    from .errors import GDTError
    from .expression.readers import SPOT_FORMATS, detect_format

    try:
        fmt = detect_format(path)
    except GDTError:
        return None
    if fmt in SPOT_FORMATS:
        try:
            from .expression import spots  # noqa: F401
        except ImportError:
            return None
    if fmt == "spatialdata":
        try:
            import spatialdata  # noqa: F401
        except ImportError:
            return None  # napari-spatialdata (or nobody) opens it
    return read_spatial_layers


def read_spatial_layers(path, bin_um: float | None = None):
    """Read a transcript table or spot data with default options (10 µm bins) and show its top genes."""
    from .expression.readers import read_any

    if isinstance(path, list):
        path = path[0]
    canvas = read_any(path, bin_um=bin_um)
    return canvas_layer_data(canvas)


def canvas_layer_data(canvas, genes=None, name_prefix=""):
    """Layer-data tuples showing ``genes`` (default: the 3 with most counts) additively."""
    import numpy as np

    if genes is None:
        totals = canvas.meta.get("gene_totals")
        if totals is None or len(totals) != len(canvas.genes):
            totals = canvas.data.sum(axis=(1, 2)).compute()
        totals = np.asarray(totals, dtype=float)
        genes = [canvas.genes[i] for i in np.argsort(-totals)[:3]]
    colormaps = ["magenta", "green", "cyan", "yellow", "red", "blue"]
    idx = {g: i for i, g in enumerate(canvas.genes)}
    out = []
    for k, g in enumerate(genes):
        out.append(
            (
                canvas.data[idx[g]],
                {
                    "name": f"{name_prefix}{g}",
                    "blending": "additive",
                    "colormap": colormaps[k % len(colormaps)],
                    "affine": canvas.affine,
                    "metadata": {"gene": g, "bin_um": canvas.bin_um},
                },
                "image",
            )
        )
    return out


def read_canvas_layers(path):
    from .expression.canvas import ExpressionCanvas

    canvas = ExpressionCanvas.from_ome_zarr(Path(path))
    return canvas_layer_data(canvas)
