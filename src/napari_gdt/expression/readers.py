"""One entry point for every input: ``read_any(path, format="auto", ...)`` -> :class:`ExpressionCanvas`.

Formats (``format=``):

========== ==========================================================================
xenium     10x Xenium ``transcripts.parquet`` / ``.csv`` / ``.csv.gz`` or its folder
merfish    Vizgen ``detected_transcripts.csv`` or its region folder
cosmx      NanoString CosMx ``*_tx_file.csv`` or its folder
csv        any CSV / CSV.gz / Parquet transcript table (``x_col, y_col, gene_col, units``)
anndata    AnnData ``.h5ad`` with ``obsm['spatial']`` (spots, e.g. Visium)
visium     a Space Ranger ``outs/`` folder (or an ``.h5ad``)
st         legacy ST: a counts tsv plus a spot file with pixel coordinates
visium_hd  Space Ranger 3 Visium HD: ``outs/``, ``binned_outputs/`` or one ``square_NNNum`` folder
spatialdata a SpatialData ``.zarr`` store: points, or a table on shapes, plus an image
canvas     a napari-gdt OME-Zarr canvas
========== ==========================================================================

``auto`` looks at the name first, then at the table's columns.
Transcript formats are read by :mod:`napari_gdt.expression.transcripts`,
spot formats by :mod:`napari_gdt.expression.spots`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import GDTError, ReaderError
from .canvas import ExpressionCanvas
from .transcripts import COSMX_UM_PER_PX, DEFAULT_BIN_UM, SCHEMAS, _parse_genes, table_columns

__all__ = ["FORMATS", "detect_format", "parse_gene_list", "read_any"]

FORMATS = ("auto", "xenium", "merfish", "cosmx", "visium", "visium_hd", "st", "anndata", "csv", "spatialdata", "canvas")
TRANSCRIPT_FORMATS = ("xenium", "merfish", "cosmx", "csv")
SPOT_FORMATS = ("visium", "visium_hd", "st", "anndata")
_ALIASES = {
    "parquet": "csv",
    "table": "csv",
    "ome-zarr": "canvas",
    "zarr": "canvas",
    "h5ad": "anndata",
    "spaceranger": "visium",
    "vizgen": "merfish",
    "visium-hd": "visium_hd",
    "visiumhd": "visium_hd",
    "sdata": "spatialdata",
}

parse_gene_list = _parse_genes


def _as_paths(path) -> list[Path]:
    if isinstance(path, (list, tuple)):
        return [Path(p) for p in path]
    return [Path(path)]


def _format_from_columns(cols: Sequence[str]) -> str | None:
    cs = set(cols)
    for name, s in SCHEMAS.items():
        if {s.x, s.y, s.gene} <= cs:
            return name
    if {"x_local_px", "y_local_px", "target"} <= cs:
        return "cosmx"
    if {"pixel_x", "pixel_y"} <= cs:
        return "st"
    return None


def _looks_like_table(p: Path) -> bool:
    return p.name.lower().endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq", ".txt", ".txt.gz"))


def detect_format(path) -> str:
    """Guess the format of ``path`` (a file, folder, or list of files) from names, then columns.

    Raises :class:`ReaderError` naming the file when nothing matches.
    """
    paths = _as_paths(path)
    if len(paths) > 1:
        fmts = set()
        for p in paths:
            try:
                fmts.add(detect_format(p))
            except ReaderError:
                fmts.add("?")
        if "st" in fmts or all(p.name.lower().endswith((".tsv", ".tsv.gz")) for p in paths):
            return "st"
        raise ReaderError(
            f"{', '.join(map(str, paths))}: several inputs are only supported for legacy ST (counts tsv + spot file)"
        )
    p = paths[0]
    if not p.exists():
        raise ReaderError(f"{p}: no such file or folder")
    name = p.name.lower()
    if p.is_dir():
        from .omezarr import is_canvas

        if is_canvas(p):
            return "canvas"
        from .spatialdata import is_spatialdata_store

        if is_spatialdata_store(p):
            return "spatialdata"
        if name.endswith(".zarr"):
            raise ReaderError(f"{p}: a zarr folder that is not a napari-gdt canvas (no 'napari_gdt' attributes)")
        if any((p / n).is_file() for n in ("transcripts.parquet", "transcripts.csv.gz", "transcripts.csv")):
            return "xenium"
        if any(p.glob("*detected_transcripts*.csv*")):
            return "merfish"
        if any(p.glob("*tx_file*.csv*")):
            return "cosmx"
        from .spots import find_visium_hd_bins

        if find_visium_hd_bins(p) is not None:
            return "visium_hd"
        if (
            (p / "filtered_feature_bc_matrix.h5").is_file()
            or (p / "outs" / "filtered_feature_bc_matrix.h5").is_file()
            or (p / "spatial").is_dir()
        ):
            return "visium"
        tsvs = [q.name.lower() for q in p.iterdir() if q.name.lower().endswith((".tsv", ".tsv.gz"))]
        if any("count" in t for t in tsvs) and any("spot" in t for t in tsvs):
            return "st"
        raise ReaderError(f"{p}: cannot detect the format of this folder; pass --format ({'|'.join(FORMATS[1:])})")
    if name.endswith(".h5ad"):
        return "anndata"
    if name.endswith((".h5",)) and "feature_bc_matrix" in name:
        return "visium"
    if name.startswith("transcripts.") and _looks_like_table(p):
        return "xenium"
    if "detected_transcripts" in name:
        return "merfish"
    if "tx_file" in name:
        return "cosmx"
    if _looks_like_table(p):
        cols = table_columns(p)  # raises on empty files
        fmt = _format_from_columns(cols)
        if fmt:
            return fmt
        if name.endswith((".tsv", ".tsv.gz")):
            return "st"
        shown = ", ".join(cols[:10]) + (" ..." if len(cols) > 10 else "")
        raise ReaderError(
            f"{p}: cannot detect the format from the name or the columns ({shown}); "
            "pass --format csv with --x-col, --y-col, --gene-col and --units"
        )
    raise ReaderError(f"{p}: unknown file type; pass --format ({'|'.join(FORMATS[1:])})")


def _call_with_accepted(fn, *args, **kw):
    """Call ``fn`` with the keyword arguments its signature accepts (the rest are dropped)."""
    names = set(inspect.signature(fn).parameters)
    if any(pp.kind == pp.VAR_KEYWORD for pp in inspect.signature(fn).parameters.values()):
        from .transcripts import read_transcripts_table

        names |= {n for n in inspect.signature(read_transcripts_table).parameters if not n.startswith("_")}
    return fn(*args, **{k: v for k, v in kw.items() if k in names and v is not None})


def _spots_module():
    from . import spots

    return spots


def _split_st(paths: list[Path]) -> tuple[Path, Path]:
    """(counts tsv, spot file) from the inputs (two files, or one folder holding both)."""
    if len(paths) == 1 and paths[0].is_dir():
        files = [q for q in paths[0].iterdir() if q.is_file() and q.name.lower().endswith((".tsv", ".tsv.gz", ".csv", ".csv.gz"))]
    else:
        files = paths
    counts = [q for q in files if "count" in q.name.lower() or "cnt" in q.name.lower()]
    spots = [q for q in files if q not in counts]
    if len(counts) != 1 or len(spots) != 1:
        # fall back on columns: the spot file has pixel_x, pixel_y
        spots = [q for q in files if {"pixel_x", "pixel_y"} <= set(table_columns(q))]
        counts = [q for q in files if q not in spots]
    if len(counts) != 1 or len(spots) != 1:
        raise ReaderError(
            f"{', '.join(map(str, paths))}: legacy ST needs one counts tsv and one spot file with 'pixel_x', 'pixel_y' columns"
        )
    return counts[0], spots[0]


def read_any(path, format: str = "auto", bin_um: float | None = None, **kw) -> ExpressionCanvas:
    """Read ``path`` (file, folder or list of files) into an :class:`ExpressionCanvas`.

    See :func:`_read_any` for the parameters. A file that cannot be decoded (a truncated gzip, a
    binary file where text is expected, a malformed table) raises :class:`ReaderError` naming
    it; the grid is checked against the size limits (:mod:`napari_gdt.safeio`) and a warning is
    given when the paired image and the canvas do not overlap.
    """
    import zlib

    try:
        canvas = _read_any(path, format, bin_um, **kw)
    except (ReaderError, GDTError):
        raise
    except RecursionError:
        raise ReaderError(f"{_src(path)}: input nested too deeply to read") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        raise ReaderError(f"{getattr(e, 'filename', None) or _src(path)}: {e.strerror or e}") from None
    except (EOFError, zlib.error, UnicodeDecodeError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        what = (
            "truncated or corrupt compressed file"
            if isinstance(e, (EOFError, zlib.error)) or "gzip" in msg.lower()
            else ("not a text file" if isinstance(e, UnicodeDecodeError) else "unreadable input")
        )
        raise ReaderError(f"{_src(path)}: {what} ({type(e).__name__}: {msg})") from None
    from ..safeio import check_grid

    check_grid(canvas.shape, _src(path))
    _warn_no_overlap(canvas, kw.get("image"))
    return canvas


def _src(path) -> str:
    try:
        return ", ".join(map(str, _as_paths(path)))
    except Exception:  # noqa: BLE001
        return str(path)


def _warn_no_overlap(canvas: ExpressionCanvas, image) -> None:
    """Warn when the canvas, placed by its affine, does not overlap the paired image."""
    if image is None:
        return
    try:
        from .spots import _image_shape

        shape = _image_shape(image)
    except Exception:  # noqa: BLE001 - the reader already read (or refused) the image
        return
    if shape is None:
        return
    H, W = canvas.n_bins
    A = np.asarray(canvas.affine, dtype=float)
    corners = np.array([[0, 0, 1], [H, 0, 1], [0, W, 1], [H, W, 1]], dtype=float) @ A.T
    y0, y1 = corners[:, 0].min(), corners[:, 0].max()
    x0, x1 = corners[:, 1].min(), corners[:, 1].max()
    ih, iw = shape
    if not np.all(np.isfinite(corners)) or y1 <= 0 or x1 <= 0 or y0 >= ih or x0 >= iw:
        import warnings

        warnings.warn(
            f"{image}: the canvas lies wholly outside the image (canvas at image px y {y0:.0f}..{y1:.0f}, x {x0:.0f}..{x1:.0f}; "
            f"image {ih} x {iw} px); check the registration (--image-transform, --image-um-per-px, --image-extent-um)",
            stacklevel=3,
        )


def _read_any(
    path,
    format: str = "auto",
    bin_um: float | None = None,
    *,
    bin_px: float | None = None,
    um_per_px: float | None = None,
    genes=None,
    zero_fill: bool = False,
    image=None,
    x_col: str = "x",
    y_col: str = "y",
    gene_col: str = "gene",
    units: str = "um",
    **opts,
) -> ExpressionCanvas:
    """The readers behind :func:`read_any`.

    Parameters
    ----------
    path : str, Path or list
        Input(s). Legacy ST takes two files (counts tsv, spot file) or a folder.
    format : str
        One of ``auto|xenium|merfish|cosmx|visium|st|anndata|csv|canvas``.
    bin_um : float, optional
        Bin edge in µm (transcripts; default 10). Alternatively ``bin_px``
        with ``um_per_px``.
    bin_px, um_per_px : float, optional
        Bin edge in pixels and the pixel size. Spot formats work in image
        pixels and need ``bin_px`` (or ``bin_um`` with ``um_per_px``).
        For transcripts in pixels (CosMx, ``units="px"``) ``um_per_px`` is the
        size of those pixels.
    genes : list, comma string or file, optional
        Gene list: keep these genes in this order. Missing genes are an
        error unless ``zero_fill`` (then zeros, with a warning).
    image : path, optional
        The paired real image; the canvas affine maps bins onto its pixels.
    x_col, y_col, gene_col, units : str
        Columns and units of a generic table (``format="csv"``).
    **opts
        Passed on: ``image_transform``, ``image_um_per_px``, ``image_extent_um``,
        ``qv_min``, ``coords``, ``fov``, ``chunks``, ``progress`` (transcripts);
        ``mode`` ("footprint" or "spread"), ``spot_diameter_px``, ``sigma_px``,
        ``layer``, ``spatial_key`` (spots).
    """
    paths = _as_paths(path)
    fmt0 = str(format or "auto").lower()
    fmt = _ALIASES.get(fmt0, fmt0)
    src = ", ".join(map(str, paths))
    if fmt not in FORMATS:
        raise ReaderError(f"{src}: unknown format {format!r} (choose from {'|'.join(FORMATS)})")
    for name, v in (("--bin-um", bin_um), ("--bin-px", bin_px), ("--um-per-px", um_per_px)):
        if v is not None and not (float(v) > 0):
            raise ReaderError(f"{src}: {name} must be > 0, got {v}")
    if fmt == "auto":
        fmt = detect_format(paths if len(paths) > 1 else paths[0])
    for p in paths:
        if not p.exists():
            raise ReaderError(f"{p}: no such file or folder")

    if fmt == "spatialdata":
        from .spatialdata import read_spatialdata

        if len(paths) != 1:
            raise ReaderError(f"{src}: read one SpatialData store at a time")
        sd_keys = (
            "points",
            "table",
            "image_element",
            "coordinate_system",
            "um_per_unit",
            "gene_col",
            "layer",
            "mode",
            "spot_diameter_px",
            "sigma_px",
            "chunks",
            "progress",
            "drop_prefixes",
        )
        return read_spatialdata(
            paths[0],
            bin_um=bin_um,
            bin_px=bin_px,
            um_per_px=um_per_px,
            genes=genes,
            zero_fill=zero_fill,
            **{k: v for k, v in opts.items() if k in sd_keys and v is not None},
        )

    if fmt == "canvas":
        canvas = ExpressionCanvas.from_ome_zarr(paths[0])
        g = _parse_genes(genes)
        return canvas.align(g, zero_fill=zero_fill, where=str(paths[0])) if g else canvas

    if fmt in TRANSCRIPT_FORMATS:
        if len(paths) != 1:
            raise ReaderError(f"{src}: the {fmt} format reads one table at a time")
        p = paths[0]
        if bin_px is not None:
            upp = um_per_px or (COSMX_UM_PER_PX if fmt == "cosmx" else None)
            if upp is None:
                raise ReaderError(f"{p}: --bin-px needs --um-per-px (or give --bin-um)")
            bin_um = float(bin_px) * float(upp)
        if bin_um is None:
            bin_um = DEFAULT_BIN_UM
        common = dict(genes=genes, zero_fill=zero_fill, image=image, **opts)
        from . import transcripts as tx

        if fmt == "xenium":
            return _call_with_accepted(tx.read_xenium, p, bin_um=bin_um, **common)
        if fmt == "merfish":
            return _call_with_accepted(tx.read_merfish, p, bin_um=bin_um, **common)
        if fmt == "cosmx":
            return _call_with_accepted(tx.read_cosmx, p, bin_um=bin_um, um_per_px=um_per_px or COSMX_UM_PER_PX, **common)
        return _call_with_accepted(
            tx.read_transcripts_table,
            p,
            x_col=x_col,
            y_col=y_col,
            gene_col=gene_col,
            units=units,
            bin_um=bin_um,
            um_per_px=um_per_px,
            **common,
        )

    # spot formats: bins are laid in image pixels
    spots = _spots_module()
    if fmt == "visium_hd":
        g = _parse_genes(genes)
        canvas = _call_with_accepted(
            spots.read_visium_hd,
            paths[0],
            bin_px=bin_px,
            bin_um=bin_um,
            um_per_px=um_per_px,
            image=image,
            genes=None if zero_fill else g,
            **opts,
        )
        return canvas.align(g, zero_fill=True, where=src) if (g and zero_fill) else canvas
    if bin_px is None:
        if bin_um is None or um_per_px is None:
            raise ReaderError(f"{src}: spot formats lay bins in image pixels: give --bin-px (or --bin-um with --um-per-px)")
        bin_px = float(bin_um) / float(um_per_px)
    g = _parse_genes(genes)
    kw = dict(bin_px=float(bin_px), image=image, genes=None if zero_fill else g, um_per_px=um_per_px, **opts)
    if fmt == "st":
        counts, spotfile = _split_st(paths)
        canvas = _call_with_accepted(spots.read_st, counts, spotfile, **kw)
    elif fmt == "anndata" or (fmt == "visium" and paths[0].is_file()):
        canvas = _call_with_accepted(spots.read_anndata, paths[0], **kw)
    else:
        outs = paths[0] / "outs" if (paths[0] / "outs").is_dir() else paths[0]
        canvas = _call_with_accepted(spots.read_spaceranger, outs, **kw)
    if g and zero_fill:
        canvas = canvas.align(g, zero_fill=True, where=src)
    return canvas
