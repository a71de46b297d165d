"""Reading napari layers on the project's world grid (no Qt): sampling, differences, composites, figure panels.

The maths is in the core (:mod:`napari_gdt.pixels`, :mod:`napari_gdt.rendering.difference`,
:mod:`napari_gdt.export.figure`); these functions only turn layers (their data, transform,
contrast limits and colours) into the arrays the core takes. Only public napari API is used.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import GDTError
from ..export.figure import GENE_COLOURS, Panel, difference_map, expression_composite, to_display
from ..pixels import resample_to_grid
from ..rendering.difference import DifferenceLevel, as_dask, composite, difference_levels
from ..rendering.tiles import Region

__all__ = [
    "DifferenceLevel",
    "contrast_for",
    "copy_transform",
    "data_to_world",
    "gene_colormap",
    "is_labels",
    "label_region",
    "layer_colour",
    "layer_levels",
    "lazy_composite",
    "lazy_difference",
    "panels_from_layers",
    "renderer_of",
    "sample_layer",
    "swiped_data",
]


def data_to_world(layer) -> np.ndarray:
    """3x3 homogeneous map from a 2D layer's data ``(row, col)`` to world ``(y, x)`` (from ``layer.data_to_world``)."""
    o, ey, ex = (np.asarray(layer.data_to_world(p), dtype=float)[-2:] for p in ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0]))
    M = np.eye(3)
    M[:2, 0], M[:2, 1], M[:2, 2] = ey - o, ex - o, o
    return M


def layer_levels(layer) -> list:
    """The layer's data as a list of levels, largest first."""
    return list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]


def is_labels(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


def sample_layer(layer, region: Region, step: float = 1.0, order: int = 0) -> np.ndarray:
    """Sample a 2D layer on the world grid ``region`` at ``step`` world px per sample.

    Picks the coarsest pyramid level that is still at least as fine as ``step``
    and reads only the window it needs. Returns float32 in [0, 1] for images
    (uint8/uint16 rescaled) and the raw values for labels.
    """
    levels = layer_levels(layer)
    full = np.asarray(levels[0].shape[:2], dtype=float)
    best, f_best = 0, 1.0
    for k, lev in enumerate(levels):
        f = float(np.min(full / np.asarray(lev.shape[:2], dtype=float)))
        if f <= step + 1e-9 and f >= f_best:
            best, f_best = k, f
    data = levels[best]
    h = max(1, math.ceil(region.shape[0] / step))
    w = max(1, math.ceil(region.shape[1] / step))
    # Continuous coordinates with pixel i spanning [i, i + 1) (bins: [b*ppb, (b+1)*ppb) in output px, as
    # recipes and the renderer use them); grid sample g sits at the centre of its world cell.
    grid_to_world = np.array([[step, 0, region.y0 + 0.5 * step], [0, step, region.x0 + 0.5 * step], [0, 0, 1.0]])
    world_to_data0 = np.linalg.inv(data_to_world(layer))
    to_index = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])  # continuous -> pixel-centre index
    M = to_index @ np.diag([1.0 / f_best, 1.0 / f_best, 1.0]) @ world_to_data0 @ grid_to_world
    out = resample_to_grid(data, M, (h, w), order=order)
    if is_labels(layer):
        return out
    dt = np.dtype(getattr(data, "dtype", np.float32))
    if dt == np.uint8:
        out = out / 255.0
    elif dt == np.uint16:
        out = out / 65535.0
    return out


def renderer_of(layer):
    """The TileRenderer behind a lazy napari-gdt layer (its pyramid's), or None for any other layer."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return getattr(getattr(data, "pyramid", None), "renderer", None)


def label_region(lab, value: int = 0) -> tuple[Region, np.ndarray]:
    """Bounding box (world = output px) of label ``value`` (0: every label) of a Labels layer, and its mask on that box."""
    data = np.asarray(lab.data)
    sel = data == value if value else data > 0
    if not sel.any():
        raise GDTError(f"Labels layer '{lab.name}' has no pixels with label {value if value else '> 0'}")
    rows, cols = np.nonzero(sel.any(axis=1))[0], np.nonzero(sel.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # label edges (bin b = px [b*ppb, (b+1)*ppb))
    corners = data_to_world(lab) @ np.array([[r0, r0, r1, r1], [c0, c1, c0, c1], [1, 1, 1, 1]], dtype=float)
    y0, y1 = math.floor(corners[0].min() + 1e-6), math.ceil(corners[0].max() - 1e-6)
    region = Region(y0, y1, math.floor(corners[1].min() + 1e-6), math.ceil(corners[1].max() - 1e-6))
    vals = sample_layer(lab, region, 1.0, order=0)
    return region, (vals == value if value else vals > 0)


def layer_colour(layer) -> tuple[float, float, float]:
    """The colour at the top of a layer's colormap (the gene's colour in an additive overlay)."""
    try:
        return tuple(float(c) for c in np.asarray(layer.colormap.colors)[-1][:3])
    except (AttributeError, IndexError, TypeError, ValueError):  # pragma: no cover - unusual colormap objects
        return (1.0, 1.0, 1.0)


def copy_transform(layer) -> dict:
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


def lazy_difference(gen_layer, edi_layer):
    """``|edited - generated|`` (channel mean, 0-1) of two layers as lazy data of the same pyramid shape.

    The levels are read from the layers at each read, so an edited layer whose pyramid is
    swapped on Apply/Undo is followed (:func:`napari_gdt.rendering.difference.difference_levels`).
    """
    out = difference_levels(lambda: layer_levels(gen_layer), lambda: layer_levels(edi_layer), (gen_layer.name, edi_layer.name))
    return out if len(out) > 1 else out[0]


def lazy_composite(gene_layers):
    """Additive RGB composite of gene layers (their contrast limits and colours)."""
    return composite(
        [gl.data for gl in gene_layers],
        [tuple(gl.contrast_limits) for gl in gene_layers],
        [layer_colour(gl) for gl in gene_layers],
    )


def swiped_data(top, x_split: float):
    """RGBA copy of ``top``, transparent right of world column ``x_split`` (lazy per pyramid level)."""
    import dask.array as da

    inv = np.linalg.inv(data_to_world(top))
    full_w = layer_levels(top)[0].shape[1]
    out = []
    for lev in layer_levels(top):
        f = full_w / lev.shape[1]
        col = (inv @ np.array([0.0, x_split, 1.0]))[1] / f  # data column of the line (axis-aligned layers)
        x = as_dask(lev).astype(np.float32)
        dt = np.dtype(lev.dtype)
        if dt == np.uint8:
            x = x / 255.0
        elif dt == np.uint16:
            x = x / 65535.0
        if not top.rgb:
            lo, hi = (float(v) for v in top.contrast_limits)
            g = ((x - lo) / max(hi - lo, 1e-12)).clip(0, 1)
            x = da.stack([g, g, g], axis=-1) * np.asarray(layer_colour(top), np.float32)
        x = x[..., :3].clip(0, 1)
        alpha = (da.arange(lev.shape[1], chunks=x.chunks[1]) < col).astype(np.float32)
        alpha = da.broadcast_to(alpha[None, :, None], x.shape[:2] + (1,), chunks=x.chunks[:2] + ((1,),))
        out.append(da.concatenate([x, alpha], axis=-1))
    return out if len(out) > 1 else out[0]


def panels_from_layers(region: Region, step: float, real=None, generated=None, edited=None, genes=()) -> list[Panel]:
    """Figure panels of ``region`` sampled from layers (real, generated, edited, difference, gene composite)."""
    panels = []
    gen = edi = None
    if real is not None:
        panels.append(Panel("real", "real", to_display(sample_layer(real, region, step, order=1))))
    if generated is not None:
        gen = to_display(sample_layer(generated, region, step, order=0))
        panels.append(Panel("generated", "generated", gen))
    if edited is not None:
        edi = to_display(sample_layer(edited, region, step, order=0))
        panels.append(Panel("edited", "edited", edi))
    if gen is not None and edi is not None:
        panels.append(
            Panel("difference", "|edited − generated|", difference_map(gen, edi), heat=True, colorbar_label="mean |Δ| (0–1)")
        )
    genes = list(genes)[: len(GENE_COLOURS)]
    if genes:
        counts = np.stack([sample_layer(g, region, step, order=0) for g in genes])
        limits = [tuple(float(v) for v in g.contrast_limits) for g in genes]
        colours = [layer_colour(g) for g in genes]
        names = [(g.metadata or {}).get("gene", g.name) for g in genes]
        panels.append(
            Panel("expression", "expression", expression_composite(counts, colours, limits), legend=list(zip(names, colours)))
        )
    if not panels:
        raise GDTError("choose at least one layer to put in the figure")
    return panels


def gene_colormap(hex_colour: str):
    """A black -> colour napari colormap for additive display."""
    from napari.utils.colormaps import Colormap

    h = hex_colour.lstrip("#")
    rgb = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return Colormap([[0, 0, 0, 1], rgb + [1]], name=f"gdt-{h}", display_name=f"gdt {hex_colour}")


def contrast_for(plane, percentile: float = 99.5, max_samples: int = 1_000_000) -> tuple[float, float]:
    """Contrast limits ``(0, hi)`` from a strided sample of a 2-D (dask or numpy) plane: ``hi`` is a
    percentile of the non-zero counts (at least 1)."""
    h, w = plane.shape
    s = max(1, int(np.ceil(np.sqrt(h * w / max_samples))))
    sample = np.asarray(plane[::s, ::s], dtype=np.float32)
    nz = sample[sample > 0]
    hi = float(np.percentile(nz, percentile)) if nz.size else 1.0
    return 0.0, max(hi, 1.0)
