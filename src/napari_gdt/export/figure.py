"""Multi-panel figures of real, generated and edited tissue (Qt-free, matplotlib Agg).

The figure puts panels side by side in one row, each with a label:

``real``        the paired real image resampled onto the generated pixel grid
                through the canvas affine (output px ``p`` -> real px
                ``canvas.affine @ (p / px_per_bin)``, the convention napari layers use);
``generated``   the generator's output for the original canvas;
``edited``      the generator's output for the edited canvas;
``difference``  ``|edited - generated|`` averaged over channels, as a heat map with a colour bar;
``expression``  chosen genes as additive colours on black, with a gene legend.

A scale bar in µm (from the model's ``um_per_px``) is drawn on the first panel.
Only the requested region is ever rendered or read: nothing is sized to the
whole slide. The same code serves ``napari-gdt figure`` (through
:func:`render_figure`, which calls :class:`~napari_gdt.rendering.tiles.TileRenderer`)
and the comparison widget (through :func:`compose_figure` with panels cut
from the viewer's layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CanvasError, GDTError
from ..pixels import quantise, real_image_fill, resample_to_grid  # re-exported: the resampling rule lives in napari_gdt.pixels

__all__ = [
    "GENE_COLOURS",
    "PANELS",
    "FigureInfo",
    "Panel",
    "compose_figure",
    "difference_map",
    "expression_composite",
    "expression_region",
    "nice_scalebar_um",
    "open_real_image",
    "figure_panels",
    "real_panel_image",
    "render_figure",
    "resample_to_grid",
    "to_display",
]

PANELS = ("real", "generated", "edited", "difference", "expression")
# Same colours as the expression layers the reader adds (magenta, green, cyan, yellow, red, blue).
GENE_COLOURS = [(1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.3, 1.0)]
FIGURE_EXTS = (".png", ".tif", ".tiff", ".pdf")


@dataclass
class Panel:
    """One figure panel.

    Attributes
    ----------
    name : str
        Panel kind (one of :data:`PANELS`, or free text).
    label : str
        Title printed above the panel.
    image : ndarray
        ``(H, W, 3)`` float in [0, 1] (RGB), or ``(H, W)`` (grey, or a heat map when ``heat``).
    heat : bool
        Draw ``image`` with ``cmap`` and a colour bar labelled ``colorbar_label``.
    legend : list of (str, rgb)
        Gene legend entries drawn under the panel.
    """

    name: str
    label: str
    image: np.ndarray
    heat: bool = False
    cmap: str = "magma"
    vmin: float | None = None
    vmax: float | None = None
    colorbar_label: str = ""
    legend: list = field(default_factory=list)


@dataclass
class FigureInfo:
    """What :func:`compose_figure` wrote.

    ``panel_boxes`` are ``(x0, y0, x1, y1)`` pixel boxes of each panel's image
    in the saved raster (origin top-left), in panel order; for PDF they are
    the boxes a raster at ``dpi`` would have.
    """

    path: Path
    size_px: tuple[int, int]  # (height, width)
    dpi: float
    panels: list[str]
    panel_boxes: list[tuple[int, int, int, int]]
    scalebar_um: float | None


# --------------------------------------------------------------------------- helpers
def nice_scalebar_um(width_um: float, fraction: float = 0.25) -> float:
    """A round length (1, 2 or 5 x 10^k µm) close to ``fraction`` of ``width_um``."""
    if not (width_um > 0):
        return 1.0
    target = width_um * fraction
    k = math.floor(math.log10(target))
    best = 10.0**k
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10.0**k <= target:
            best = m * 10.0**k
    return float(best)


def to_display(img: np.ndarray) -> np.ndarray:
    """Model output or image array -> float32 in [0, 1]; ``(H, W, 3)`` RGB or ``(H, W)`` grey.

    uint8/uint16 are divided by their maximum; floats are clipped to [0, 1].
    One channel becomes grey, two channels are padded with zeros, more than
    three keep the first three.
    """
    a = np.asarray(img)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    else:
        a = np.clip(a.astype(np.float32), 0.0, 1.0)
    if a.ndim == 3:
        c = a.shape[-1]
        if c == 1:
            a = a[..., 0]
        elif c == 2:
            a = np.concatenate([a, np.zeros(a.shape[:2] + (1,), np.float32)], axis=-1)
        elif c == 4:
            a = a[..., :3]  # RGBA: drop alpha
        elif c > 4:
            a = a[..., :3]
    return a


def real_panel_image(image, canvas_affine: np.ndarray, px_per_bin: int, region) -> np.ndarray:
    """The paired real image on the generated px grid of ``region`` (float in [0, 1]).

    Output px ``(y, x)`` maps to real px ``canvas_affine @ (y / ppb, x / ppb, 1)``, in continuous
    coordinates where pixel (or bin) ``i`` spans ``[i, i + 1)``; each output pixel samples the
    real image at its centre (bilinear, smoothed first when the real image is finer).
    Pixels outside the real image take :func:`napari_gdt.pixels.fill_value` (white for H&E, dark for DAPI).
    """
    ppb = float(px_per_bin)
    # continuous coordinates (pixel i spans [i, i + 1)); sample at output pixel centres
    grid_to_out = np.array([[1.0, 0, region.y0 + 0.5], [0, 1.0, region.x0 + 0.5], [0, 0, 1.0]])
    out_to_bins = np.diag([1.0 / ppb, 1.0 / ppb, 1.0])
    to_index = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    M = to_index @ np.asarray(canvas_affine, dtype=float) @ out_to_bins @ grid_to_out
    dtype = getattr(image, "dtype", np.dtype(np.float32))
    img = resample_to_grid(image, M, region.shape, order=1, fill=real_image_fill(image))
    if dtype == np.uint8:
        img = img / 255.0
    elif dtype == np.uint16:
        img = img / 65535.0
    return to_display(img)


def difference_map(generated: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """``|edited - generated|`` averaged over channels: ``(H, W)`` float32."""
    a = np.asarray(generated, dtype=np.float32)
    b = np.asarray(edited, dtype=np.float32)
    if a.shape != b.shape:
        raise GDTError(f"generated {a.shape} and edited {b.shape} panels differ in shape")
    d = np.abs(b - a)
    return d.mean(axis=-1) if d.ndim == 3 else d


def expression_region(canvas, genes: Sequence[str], region, px_per_bin: int) -> np.ndarray:
    """Counts of ``genes`` on the output px grid of ``region``: ``(G, H, W)`` float32.

    Reads only the bins under ``region`` and repeats each bin ``px_per_bin`` times.
    """
    idx = {g: i for i, g in enumerate(canvas.genes)}
    missing = [g for g in genes if g not in idx]
    if missing:
        raise CanvasError(f"{canvas.meta.get('path', 'canvas')}: gene(s) not in the canvas: {', '.join(missing)}")
    ppb = int(px_per_bin)
    by0, bx0 = region.y0 // ppb, region.x0 // ppb
    by1, bx1 = -(-region.y1 // ppb), -(-region.x1 // ppb)
    out = np.zeros((len(genes), region.shape[0], region.shape[1]), dtype=np.float32)
    H, W = canvas.n_bins
    ya, yb, xa, xb = max(by0, 0), min(by1, H), max(bx0, 0), min(bx1, W)
    block = np.zeros((len(genes), by1 - by0, bx1 - bx0), dtype=np.float32)
    if ya < yb and xa < xb:
        for k, g in enumerate(genes):
            block[k, ya - by0 : yb - by0, xa - bx0 : xb - bx0] = np.asarray(canvas.data[idx[g], ya:yb, xa:xb], dtype=np.float32)
    up = np.repeat(np.repeat(block, ppb, axis=1), ppb, axis=2)
    oy, ox = region.y0 - by0 * ppb, region.x0 - bx0 * ppb
    out[:] = up[:, oy : oy + region.shape[0], ox : ox + region.shape[1]]
    return out


def expression_composite(
    counts: np.ndarray,
    colours: Sequence[tuple[float, float, float]] | None = None,
    limits: Sequence[tuple[float, float]] | None = None,
    percentile: float = 99.5,
) -> np.ndarray:
    """Additive colour composite of ``(G, H, W)`` counts -> ``(H, W, 3)`` float in [0, 1].

    Each gene is scaled to [0, 1] by ``limits[k]`` (default: 0 to its
    ``percentile`` within the array) and adds its colour.
    """
    counts = np.asarray(counts, dtype=np.float32)
    colours = list(colours or GENE_COLOURS)
    rgb = np.zeros(counts.shape[1:] + (3,), dtype=np.float32)
    for k in range(counts.shape[0]):
        if limits is not None:
            lo, hi = limits[k]
        else:
            lo, hi = 0.0, float(np.percentile(counts[k], percentile)) if counts[k].size else 1.0
            if hi <= lo:
                hi = float(counts[k].max()) if counts[k].size and counts[k].max() > lo else lo + 1.0
        v = np.clip((counts[k] - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        rgb += v[..., None] * np.asarray(colours[k % len(colours)], dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0)


def open_real_image(path):
    """Open a real image for windowed reads: TIFF-based slides lazily (by tile), others whole.

    Returns an array-like ``(H, W[, C])`` supporting slicing: level 0 of
    :func:`napari_gdt.expression.images.open_image_levels` (channel 0 of a multi-channel TIFF).
    """
    from ..expression.images import open_image_levels

    return open_image_levels(path, max_coarsest=1 << 62)[0]


# --------------------------------------------------------------------------- layout
def _scalebar(ax, length_px: float, text: str, image: np.ndarray) -> None:
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    h, w = image.shape[:2]
    corner = image[int(h * 0.85) :, int(w * 0.6) :]
    light = float(np.mean(corner)) > 0.5 if corner.size else False
    colour = "black" if light else "white"
    bar = AnchoredSizeBar(
        ax.transData,
        length_px,
        text,
        "lower right",
        pad=0.4,
        sep=3,
        color=colour,
        frameon=False,
        size_vertical=max(1.0, h / 90.0),
        fontproperties=FontProperties(size=7),
    )
    ax.add_artist(bar)


def compose_figure(
    panels: Sequence[Panel],
    out: str | Path,
    um_per_px: float,
    scalebar_um: float | None = None,
    dpi: float = 150,
    panel_width_in: float = 2.4,
    title: str | None = None,
) -> FigureInfo:
    """Lay out ``panels`` in one row and save to ``out`` (.png, .tif or .pdf).

    Parameters
    ----------
    panels : sequence of Panel
        All panels must share the same ``(H, W)``.
    out : path
        Output file; the format follows the extension.
    um_per_px : float
        Micrometres per panel pixel (the model's ``um_per_px``); sizes the scale bar.
    scalebar_um : float, optional
        Scale-bar length in µm (default: a round number near a quarter of the panel width).
    dpi : float
        Raster resolution (dots per inch).
    panel_width_in : float
        Width of each panel in inches.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    out = Path(out)
    ext = out.suffix.lower()
    if ext not in FIGURE_EXTS:
        raise GDTError(f"{out}: unsupported figure extension {ext!r} (use .png, .tif or .pdf)")
    if not panels:
        raise GDTError("no panels to draw")
    shapes = {p.image.shape[:2] for p in panels}
    if len(shapes) != 1:
        raise GDTError(f"panels differ in size: {sorted(shapes)}")
    if not (um_per_px > 0):
        raise GDTError(f"um_per_px must be > 0, got {um_per_px}")
    if not (dpi > 0):
        raise GDTError(f"--dpi must be > 0, got {dpi}")
    h, w = next(iter(shapes))
    pw = float(panel_width_in)
    ph = pw * h / w
    top = 0.32 + (0.3 if title else 0.0)
    margin, gap = 0.08, 0.12
    cbar_extra = 0.62
    n_leg = max((len(p.legend) for p in panels), default=0)
    bottom = 0.08 + (0.2 * math.ceil(n_leg / 2) + 0.1 if n_leg else 0.0)
    widths = [pw + (cbar_extra if p.heat else 0.0) for p in panels]
    W_in = 2 * margin + sum(widths) + gap * (len(panels) - 1)
    H_in = top + ph + bottom
    fig = Figure(figsize=(W_in, H_in), dpi=dpi)
    fig.patch.set_facecolor("white")
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 - 0.12 / H_in)
    if scalebar_um is None:
        scalebar_um = nice_scalebar_um(w * um_per_px)
    if not (scalebar_um > 0):
        raise GDTError(f"--scalebar-um must be > 0, got {scalebar_um}")
    boxes = []
    x = margin
    for i, p in enumerate(panels):
        ax = fig.add_axes((x / W_in, bottom / H_in, pw / W_in, ph / H_in))
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if p.heat:
            vmax = p.vmax if p.vmax is not None else max(float(np.max(p.image)) if p.image.size else 0.0, 1e-6)
            im = ax.imshow(p.image, cmap=p.cmap, vmin=p.vmin if p.vmin is not None else 0.0, vmax=vmax, interpolation="nearest")
            cax = fig.add_axes(((x + pw + 0.05) / W_in, bottom / H_in, 0.1 / W_in, ph / H_in))
            cb = fig.colorbar(im, cax=cax)
            cb.ax.tick_params(labelsize=6)
            if p.colorbar_label:
                cb.set_label(p.colorbar_label, fontsize=6)
        elif p.image.ndim == 2:  # 8-bit by the one quantisation rule, like every other output
            ax.imshow(quantise(p.image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(quantise(p.image), interpolation="nearest")
        ax.set_title(p.label, fontsize=9, pad=4)
        if i == 0:
            length_px = scalebar_um / um_per_px
            label = f"{scalebar_um:g} µm"
            _scalebar(ax, length_px, label, p.image if not p.heat else np.zeros((h, w)))
        if p.legend:
            handles = [
                Line2D([0], [0], marker="s", linestyle="none", markersize=6, markerfacecolor=c, markeredgecolor="0.3", label=g)
                for g, c in p.legend
            ]
            ax.legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.02),
                ncol=min(2, len(handles)),
                fontsize=7,
                frameon=False,
                handletextpad=0.2,
                columnspacing=0.8,
            )
        x0 = x * dpi
        y0 = (H_in - bottom - ph) * dpi
        boxes.append((round(x0), round(y0), round(x0 + pw * dpi), round(y0 + ph * dpi)))
        x += widths[i] + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fmt = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".pdf": "pdf"}[ext]
    from ..safeio import PNG_MARK, atomic_file

    marks = {
        "png": {"metadata": {"Software": PNG_MARK}},
        "pdf": {"metadata": {"Creator": PNG_MARK}},
        "tiff": {"pil_kwargs": {"tiffinfo": {305: PNG_MARK}}},
    }[fmt]
    with atomic_file(out) as tmp:  # never half a figure over an old one
        fig.savefig(str(tmp), dpi=dpi, format=fmt, facecolor="white", **marks)
    size = (round(H_in * dpi), round(W_in * dpi))
    return FigureInfo(
        path=out, size_px=size, dpi=float(dpi), panels=[p.name for p in panels], panel_boxes=boxes, scalebar_um=float(scalebar_um)
    )


# --------------------------------------------------------------------------- from renderers
def parse_panels(text: str | Sequence[str] | None) -> list[str] | None:
    """``"real,generated"`` -> ``["real", "generated"]``; unknown names raise :class:`GDTError`."""
    if text is None:
        return None
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [n for n in names if n not in PANELS]
    if bad:
        raise GDTError(f"--panels: unknown panel(s) {', '.join(bad)} (choose from {', '.join(PANELS)})")
    if not names:
        raise GDTError("--panels: no panels given")
    return names


def default_panels(has_real: bool, has_edits: bool, has_genes: bool) -> list[str]:
    """Panels shown when none are asked for: real (with an image), generated, edited and difference (with edits),
    expression (with genes)."""
    names = (["real"] if has_real else []) + ["generated"]
    if has_edits:
        names += ["edited", "difference"]
    if has_genes:
        names.append("expression")
    return names


def top_genes(canvas, region, px_per_bin: int, n: int = 3) -> list[str]:
    """The ``n`` genes with the most counts in the bins under ``region``."""
    ppb = int(px_per_bin)
    H, W = canvas.n_bins
    by0, by1 = max(region.y0 // ppb, 0), min(-(-region.y1 // ppb), H)
    bx0, bx1 = max(region.x0 // ppb, 0), min(-(-region.x1 // ppb), W)
    totals = np.asarray(canvas.data[:, by0:by1, bx0:bx1].sum(axis=(1, 2)))
    if hasattr(totals, "compute"):
        totals = totals.compute()
    return [canvas.genes[i] for i in np.argsort(-np.asarray(totals), kind="stable")[:n]]


def render_figure(
    renderer,
    region,
    out: str | Path,
    edited_renderer=None,
    real_image=None,
    panels: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    dpi: float = 150,
    scalebar_um: float | None = None,
    panel_width_in: float = 2.4,
    progress=None,
) -> FigureInfo:
    """Render ``region`` through the tile renderer(s) and write the figure (:func:`figure_panels` + :func:`compose_figure`).

    Parameters
    ----------
    renderer : TileRenderer
        Renders the original canvas (``generated`` panel).
    region : Region
        Output px box; only this box is rendered and read.
    edited_renderer : TileRenderer, optional
        Renders the edited canvas (``edited`` and ``difference`` panels). Share
        ``renderer``'s cache so that tiles away from the edits are computed once.
    real_image : array-like, optional
        The paired real image, in the pixel frame of ``renderer.canvas.affine``.
    panels : list of str, optional
        Panel names in order (default: :func:`default_panels`).
    genes : list of str, optional
        Genes of the ``expression`` panel (default: the 3 with most counts in the region).
    """
    built = figure_panels(renderer, region, edited_renderer, real_image, panels, genes, progress)
    return compose_figure(
        built, out, um_per_px=renderer.bundle.um_per_px, scalebar_um=scalebar_um, dpi=dpi, panel_width_in=panel_width_in
    )


def figure_panels(
    renderer,
    region,
    edited_renderer=None,
    real_image=None,
    panels: Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    progress=None,
) -> list[Panel]:
    """The panels of a figure of ``region`` (float images in [0, 1]; see :func:`render_figure`), before layout."""
    region = renderer.check_region(region)
    ppb = renderer.bundle.px_per_bin
    if panels is None:
        panels = default_panels(real_image is not None, edited_renderer is not None, bool(genes))
    panels = list(panels)
    if "real" in panels and real_image is None:
        raise GDTError("panel 'real' needs the paired real image (--image REAL)")
    if any(p in panels for p in ("edited", "difference")) and edited_renderer is None:
        raise GDTError("panels 'edited' and 'difference' need an edit recipe (--edits RECIPE)")
    expr_canvas = edited_renderer.canvas if edited_renderer is not None else renderer.canvas
    if "expression" in panels:
        if genes:
            missing = [g for g in genes if g not in expr_canvas.genes]
            if missing:
                raise CanvasError(
                    f"{renderer.canvas.meta.get('path', 'canvas')}: --genes names gene(s) not in the canvas: {', '.join(missing)}"
                )
        else:
            genes = top_genes(expr_canvas, region, ppb)
        if len(genes) > len(GENE_COLOURS):
            raise GDTError(f"--genes: at most {len(GENE_COLOURS)} genes fit in one expression panel, got {len(genes)}")
    gen = edi = None
    if any(p in panels for p in ("generated", "difference")):
        gen = renderer.render_region(region, progress=progress)
    if any(p in panels for p in ("edited", "difference")):
        edi = edited_renderer.render_region(region, progress=progress)
    built: list[Panel] = []
    for name in panels:
        if name == "real":
            built.append(Panel("real", "real", real_panel_image(real_image, renderer.canvas.affine, ppb, region)))
        elif name == "generated":
            built.append(Panel("generated", "generated", to_display(gen)))
        elif name == "edited":
            built.append(Panel("edited", "edited", to_display(edi)))
        elif name == "difference":
            built.append(
                Panel("difference", "|edited − generated|", difference_map(gen, edi), heat=True, colorbar_label="mean |Δ| (0–1)")
            )
        elif name == "expression":
            counts = expression_region(expr_canvas, list(genes), region, ppb)
            label = "expression (edited)" if edited_renderer is not None else "expression"
            built.append(
                Panel(
                    "expression", label, expression_composite(counts), legend=[(g, GENE_COLOURS[k]) for k, g in enumerate(genes)]
                )
            )
    return built
