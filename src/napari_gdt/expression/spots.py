"""Readers for spot-based spatial transcriptomics (legacy ST / her2st, AnnData, Space Ranger).

Spot data measure expression in discs (ST: 100 µm, Visium: 55 µm) laid on a
lattice, not per cell. A canvas is made by placing each spot's counts on a
regular bin grid defined in the paired image's pixels:

``mode="footprint"``
    each spot's counts are spread uniformly over the bins its disc covers,
    weighted by the fraction of each bin the disc covers. Bins between spots
    stay empty.
``mode="spread"``
    each spot's counts are spread with a Gaussian kernel (sigma = half the
    spot pitch by default, truncated at 3 sigma), which fills the gaps between
    spots with a continuous field.

In both modes the weights of each spot sum to one over the canvas, so the
canvas total equals the counts of the kept spots exactly (up to float32
rounding). The canvas affine maps bin ``(row, col)`` to image pixel
``(row * bin_px, col * bin_px)``. Spot centres (image px) and the spot
diameter are stored in ``canvas.meta["spots"]`` for evaluation.

The data are built lazily: the (bins x spots) weight matrix is sparse, and
each chunk of genes is computed on demand as ``weights @ counts``.
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import ReaderError
from .canvas import ExpressionCanvas

__all__ = [
    "find_visium_hd_bins",
    "read_anndata",
    "read_spaceranger",
    "read_st",
    "read_visium_hd",
    "spot_weights",
    "spots_to_canvas",
]

ST_PITCH_UM = 200.0  # centre-to-centre distance of legacy ST spots
ST_DIAMETER_UM = 100.0
VISIUM_DIAMETER_UM = 55.0
VISIUM_PITCH_UM = 100.0


# --------------------------------------------------------------------------- geometry
def _nn_distance(centres: np.ndarray) -> float:
    if len(centres) < 2:
        return float("nan")
    from scipy.spatial import cKDTree

    d, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(d[:, 1]))


def _visium_scale(centres: np.ndarray, um_per_px, spot_diameter_px) -> tuple[float, float]:
    """Fill in µm/px and spot diameter (px) from the Visium geometry (55 µm spots, 100 µm pitch) where not given."""
    if um_per_px is None:
        if spot_diameter_px is not None:
            um_per_px = VISIUM_DIAMETER_UM / spot_diameter_px
        else:
            nn = _nn_distance(centres)
            um_per_px = VISIUM_PITCH_UM / nn if np.isfinite(nn) else 1.0
    if spot_diameter_px is None:
        spot_diameter_px = VISIUM_DIAMETER_UM / um_per_px
    return um_per_px, spot_diameter_px


def spot_weights(
    centres_px: np.ndarray,
    n_bins: tuple[int, int],
    bin_px: float,
    mode: str = "footprint",
    diameter_px: float | None = None,
    sigma_px: float | None = None,
    supersample: int = 8,
):
    """Sparse weights ``(Hb*Wb, n_spots)`` placing each spot on the bin grid.

    Each column sums to 1 over the canvas (spots wholly outside it get a zero
    column and are reported by the caller). ``centres_px`` are ``(y, x)`` in
    image pixel coordinates (pixel ``i`` is centred on ``i``); bin ``b`` covers
    image px ``[b*bin_px - 0.5, (b+1)*bin_px - 0.5)``.
    """
    from scipy import sparse

    Hb, Wb = n_bins
    rows, cols, vals = [], [], []
    s = int(supersample)
    reach = 2.0 * (0.5 * float(diameter_px) if mode == "footprint" else 3.0 * float(sigma_px)) / float(bin_px) + 2.0
    if reach * s > 8192:  # huge discs: fewer sub-samples, bounded memory per spot
        s = max(1, int(8192 // reach))
    sub = (np.arange(s) + 0.5) / s  # sub-sample positions inside a bin (fraction of a bin)
    for j, (cy, cx) in enumerate(np.asarray(centres_px, dtype=float)):
        # continuous bin coordinates of the centre
        by, bx = (cy + 0.5) / bin_px, (cx + 0.5) / bin_px
        if mode == "footprint":
            r = 0.5 * float(diameter_px) / bin_px
        elif mode == "spread":
            r = 3.0 * float(sigma_px) / bin_px
        else:
            raise ValueError(f"unknown mode {mode!r}")
        y0, y1 = max(int(np.floor(by - r)), 0), min(int(np.ceil(by + r)) + 1, Hb)
        x0, x1 = max(int(np.floor(bx - r)), 0), min(int(np.ceil(bx + r)) + 1, Wb)
        if y0 >= y1 or x0 >= x1:
            continue
        if mode == "footprint":
            yy = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)  # (ny*s,)
            xx = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
            inside = ((yy[:, None] - by) ** 2 + (xx[None, :] - bx) ** 2) <= r * r
            w = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
            if w.sum() == 0:  # disc smaller than a sub-sample: put it in its bin
                iy, ix = int(np.floor(by)), int(np.floor(bx))
                if 0 <= iy < Hb and 0 <= ix < Wb:
                    w = np.zeros((y1 - y0, x1 - x0))
                    w[iy - y0, ix - x0] = 1.0
        else:
            sig = float(sigma_px) / bin_px
            gy = np.exp(-((np.arange(y0, y1) + 0.5 - by) ** 2) / (2 * sig * sig))
            gx = np.exp(-((np.arange(x0, x1) + 0.5 - bx) ** 2) / (2 * sig * sig))
            w = gy[:, None] * gx[None, :]
            w[((np.arange(y0, y1)[:, None] + 0.5 - by) ** 2 + (np.arange(x0, x1)[None, :] + 0.5 - bx) ** 2) > r * r] = 0.0
        tot = w.sum()
        if tot <= 0:
            continue
        w = w / tot
        iy, ix = np.nonzero(w)
        rows.append((iy + y0) * Wb + (ix + x0))
        cols.append(np.full(len(iy), j))
        vals.append(w[iy, ix])
    if rows:
        r_, c_, v_ = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        r_, c_, v_ = np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    return sparse.csr_matrix((v_, (r_, c_)), shape=(Hb * Wb, len(centres_px)))


def spots_to_canvas(
    counts,
    centres_px: np.ndarray,
    genes: list[str],
    bin_px: float,
    um_per_px: float,
    mode: str = "footprint",
    diameter_px: float | None = None,
    sigma_px: float | None = None,
    image_shape: tuple[int, int] | None = None,
    spot_ids: list[str] | None = None,
    source: str = "spots",
    meta: dict | None = None,
    gene_chunk: int = 32,
) -> ExpressionCanvas:
    """Place spot counts ``(n_spots, n_genes)`` on a bin grid; see the module docstring.

    ``counts`` may be a dense ndarray or a scipy sparse matrix. The canvas
    covers ``image_shape`` (image px) when given, else the spots' extent from
    pixel 0.
    """
    from scipy import sparse

    if mode not in ("footprint", "spread"):
        raise ReaderError(f"{source}: mode must be 'footprint' or 'spread', got {mode!r}")
    if not (bin_px > 0):
        raise ReaderError(f"{source}: bin size in pixels must be > 0, got {bin_px}")
    centres_px = np.asarray(centres_px, dtype=float).reshape(-1, 2)
    n = len(centres_px)
    if n == 0:
        raise ReaderError(f"{source}: no spots to place")
    for name, v in (
        ("spot diameter (--spot-diameter-px)", diameter_px),
        ("spread width (--sigma-px)", sigma_px),
        ("µm per pixel (--um-per-px)", um_per_px),
    ):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ReaderError(f"{source}: {name} must be > 0, got {v}")
    if not np.isfinite(bin_px):
        raise ReaderError(f"{source}: bin size in pixels must be finite, got {bin_px}")
    nn = _nn_distance(centres_px)
    if diameter_px is None:
        diameter_px = nn / 2 if np.isfinite(nn) else 4 * bin_px
    if sigma_px is None:
        sigma_px = nn / 2 if np.isfinite(nn) else float(diameter_px)
    if image_shape is not None:
        H, W = int(image_shape[0]), int(image_shape[1])
    else:
        H = int(np.ceil(centres_px[:, 0].max() + diameter_px))
        W = int(np.ceil(centres_px[:, 1].max() + diameter_px))
    from ..safeio import check_grid, limit

    hb, wb = float(np.ceil(H / bin_px)), float(np.ceil(W / bin_px))
    check_grid(
        (counts.shape[1] if len(counts.shape) > 1 else 1, min(hb, 2**62), min(wb, 2**62)),
        source,
        hint="use a larger bin (--bin-px / --bin-um)",
    )
    Hb, Wb = int(hb), int(wb)
    reach = (
        2.0 * (0.5 * float(diameter_px) if mode == "footprint" else 3.0 * float(sigma_px)) / float(bin_px) + 2.0
    )  # window edge of one spot, in bins
    covered = n * min(reach, Hb) * min(reach, Wb)
    if covered > limit("bins"):
        raise ReaderError(
            f"{source}: {n} spot(s) of {reach:,.0f} bins across would cover {covered:,.0f} bins, above the limit of "
            f"{limit('bins'):,.0f}; "
            "use a larger bin (--bin-px / --bin-um) or check --spot-diameter-px / --sigma-px"
        )
    Wt = spot_weights(centres_px, (Hb, Wb), bin_px, mode=mode, diameter_px=diameter_px, sigma_px=sigma_px)
    placed = np.asarray(Wt.sum(axis=0)).ravel() > 0
    if not placed.all():
        warnings.warn(f"{source}: {int((~placed).sum())} spot(s) lie outside the image and were dropped", stacklevel=3)
    X = counts.tocsc() if sparse.issparse(counts) else np.asarray(counts, dtype=np.float32)
    kept_total = float(X[placed].sum()) if not sparse.issparse(X) else float(X[np.nonzero(placed)[0]].sum())
    G = X.shape[1]
    Wt = Wt.tocsr().astype(np.float64)

    def block(g0, g1):
        sub = X[:, g0:g1]
        sub = sub.toarray() if sparse.issparse(sub) else sub
        out = Wt @ sub.astype(np.float64)  # (Hb*Wb, g)
        return np.ascontiguousarray(out.T.reshape(g1 - g0, Hb, Wb).astype(np.float32))

    parts = []
    for g0 in range(0, G, gene_chunk):
        g1 = min(g0 + gene_chunk, G)
        parts.append(da.from_delayed(_delayed(block, g0, g1), shape=(g1 - g0, Hb, Wb), dtype=np.float32))
    data = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    affine = np.array([[bin_px, 0.0, 0.0], [0.0, bin_px, 0.0], [0.0, 0.0, 1.0]])
    keep = np.nonzero(placed)[0]
    m = dict(meta or {})
    m.update(
        {
            "source": source,
            "mode": mode,
            "bin_px": float(bin_px),
            "um_per_px": float(um_per_px),
            "total_counts": kept_total,
            "spots": {
                "centres_px": centres_px[keep].round(3).tolist(),
                "diameter_px": float(diameter_px),
                "sigma_px": float(sigma_px) if mode == "spread" else None,
                "ids": [str(spot_ids[i]) for i in keep] if spot_ids is not None else None,
            },
        }
    )
    return ExpressionCanvas(data=data, genes=list(genes), bin_um=float(bin_px) * float(um_per_px), affine=affine, meta=m)


def _delayed(fn, *args):
    import dask

    return dask.delayed(fn, pure=True)(*args)


def _select_genes(all_genes: list[str], genes, source: str) -> np.ndarray:
    if genes is None:
        return np.arange(len(all_genes))
    if isinstance(genes, str | Path) and Path(genes).is_file():
        try:
            genes = [g.strip() for g in Path(genes).read_text().split() if g.strip()]
        except UnicodeDecodeError:
            raise ReaderError(f"{genes}: gene list file is not a text file (one gene name per line)") from None
    elif isinstance(genes, str):
        genes = [g.strip() for g in genes.split(",") if g.strip()]
    index = {}
    for i, g in enumerate(all_genes):
        index.setdefault(g, i)
    missing = [g for g in genes if g not in index]
    if missing:
        err = ReaderError(f"{source}: gene(s) not in the data: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
        err.missing = missing  # convert --model names them and suggests --zero-fill
        raise err
    return np.asarray([index[g] for g in genes], dtype=int)


def _image_shape(image) -> tuple[int, int] | None:
    if image is None:
        return None
    if isinstance(image, np.ndarray):
        return tuple(image.shape[:2])
    p = Path(image)
    if not p.exists():
        raise ReaderError(f"{p}: no such image file")
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(p) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file; all become one ReaderError
        raise ReaderError(f"{p}: not a readable image ({e})") from None
    return h, w


def _check_coords(values: np.ndarray, ids, path, column) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        who = f"spot {ids[i]!r}" if ids is not None else f"row {i}"
        raise ReaderError(f"{path}: column '{column}' has {int(bad.sum())} missing/NaN value(s) (first at {who})")


# --------------------------------------------------------------------------- legacy ST
def read_st(
    counts_tsv,
    spots_tsv,
    bin_px: float,
    image=None,
    mode: str = "footprint",
    spot_diameter_px: float | None = None,
    genes=None,
    um_per_px: float | None = None,
    sigma_px: float | None = None,
) -> ExpressionCanvas:
    """Read legacy ST (e.g. her2st) spot counts into a canvas.

    Parameters
    ----------
    counts_tsv : path
        Spots x genes UMI table (tab separated, optionally gzipped); the first
        column is the spot id ``"{x}x{y}"`` (array coordinates).
    spots_tsv : path
        Spot table with columns ``x, y, pixel_x, pixel_y`` (pixel coordinates in
        the paired image) and optionally ``selected`` (0 rows are dropped).
    bin_px : float
        Bin edge in image pixels.
    image : path or ndarray, optional
        Paired image; the canvas then covers it exactly.
    mode : "footprint" or "spread"
    spot_diameter_px : float, optional
        Default: half the median nearest-neighbour spot distance (ST spots are
        100 µm wide on a 200 µm pitch).
    genes : list, comma string or file, optional
        Gene subset, in order.
    um_per_px : float, optional
        Image resolution; default from the spot pitch (200 µm / nearest-neighbour px).
    sigma_px : float, optional
        Kernel width of ``mode="spread"`` (default half the spot pitch).
    """
    import pandas as pd

    counts_tsv, spots_tsv = Path(counts_tsv), Path(spots_tsv)
    for p in (counts_tsv, spots_tsv):
        if not p.exists():
            raise ReaderError(f"{p}: no such file")
    try:
        spots = pd.read_csv(spots_tsv, sep="\t")
    except pd.errors.EmptyDataError:
        raise ReaderError(f"{spots_tsv}: file is empty (expected a spot table with columns x, y, pixel_x, pixel_y)") from None
    if len(spots.columns) == 1 and "," in spots.columns[0]:
        spots = pd.read_csv(spots_tsv)
    for col in ("x", "y", "pixel_x", "pixel_y"):
        if col not in spots.columns:
            raise ReaderError(f"{spots_tsv}: missing column '{col}' (columns: {', '.join(map(str, spots.columns))})")
    if len(spots) == 0:
        raise ReaderError(f"{spots_tsv}: file has no spot rows")

    def _ids(t):
        return [
            f"{int(a)}x{int(b)}" if float(a).is_integer() and float(b).is_integer() else f"{a}x{b}"
            for a, b in zip(t["x"], t["y"])
        ]

    try:
        all_ids = set(_ids(spots))
    except (TypeError, ValueError):
        raise ReaderError(f"{spots_tsv}: columns 'x' and 'y' must hold the spots' array coordinates (numbers)") from None
    if "selected" in spots.columns:
        spots = spots[spots["selected"].fillna(0).astype(float) != 0]
    ids = [
        f"{int(a)}x{int(b)}" if float(a).is_integer() and float(b).is_integer() else f"{a}x{b}"
        for a, b in zip(spots["x"], spots["y"])
    ]
    for col in ("pixel_x", "pixel_y"):
        _check_coords(spots[col].to_numpy(dtype=float), ids, spots_tsv, col)
    try:
        cnt = pd.read_csv(counts_tsv, sep="\t", index_col=0)
    except pd.errors.EmptyDataError:
        raise ReaderError(f"{counts_tsv}: file is empty (expected a spots x genes count table)") from None
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise ReaderError(f"{counts_tsv}: unreadable count table ({e})") from None
    if cnt.shape[0] == 0 or cnt.shape[1] == 0:
        raise ReaderError(f"{counts_tsv}: count table has no spots or no genes")
    cnt.index = cnt.index.astype(str)
    common = [i for i in ids if i in cnt.index]
    if not common:
        raise ReaderError(
            f"{counts_tsv}: no spot id (first column, '{{x}}x{{y}}') matches {spots_tsv} (e.g. {ids[0]!r} vs {cnt.index[0]!r})"
        )
    n_cnt, n_pos = len(cnt.index), len(ids)
    unknown = sum(1 for i in cnt.index if i not in all_ids)  # counted spots the spot file does not list at all
    if unknown > 0.05 * n_cnt or len(common) < 0.95 * n_pos:
        warnings.warn(
            f"{counts_tsv}: spot ids match {spots_tsv} only in part ({len(common)} of {n_cnt} counted spots placed, "
            f"{unknown} not in the spot file, {n_pos - len(common)} listed spots without counts); check that both files are of "
            "the same section",
            stacklevel=3,
        )
    spots = spots.assign(_id=ids).set_index("_id").loc[common]
    all_genes = [str(g) for g in cnt.columns]
    gi = _select_genes(all_genes, genes, str(counts_tsv))
    X = cnt.loc[common].to_numpy(dtype=np.float32)[:, gi]
    if not np.isfinite(X).all():
        raise ReaderError(f"{counts_tsv}: count table holds NaN or non-numeric values")
    centres = np.stack([spots["pixel_y"].to_numpy(float), spots["pixel_x"].to_numpy(float)], axis=1)
    nn = _nn_distance(centres)
    if um_per_px is None:
        um_per_px = ST_PITCH_UM / nn if np.isfinite(nn) else 1.0
    if spot_diameter_px is None:
        spot_diameter_px = ST_DIAMETER_UM / um_per_px
    return spots_to_canvas(
        X,
        centres,
        [all_genes[i] for i in gi],
        bin_px=bin_px,
        um_per_px=um_per_px,
        mode=mode,
        diameter_px=spot_diameter_px,
        sigma_px=sigma_px,
        image_shape=_image_shape(image),
        spot_ids=common,
        source=str(counts_tsv),
        meta={
            "format": "st",
            "files": [str(counts_tsv), str(spots_tsv)] + ([str(image)] if isinstance(image, str | Path) else []),
        },
    )


# --------------------------------------------------------------------------- AnnData
def read_anndata(
    h5ad,
    bin_px: float,
    image=None,
    mode: str = "footprint",
    spot_diameter_px: float | None = None,
    genes=None,
    um_per_px: float | None = None,
    layer: str | None = None,
    spatial_key: str = "spatial",
    sigma_px: float | None = None,
) -> ExpressionCanvas:
    """Read spot data from an AnnData ``.h5ad``; ``obsm[spatial_key]`` holds (x, y) in image px.

    Uses ``layer`` (e.g. ``"counts"``) when given, else ``X``. Warns when the
    values are not integer counts (e.g. log1p-normalised). The spot diameter
    and resolution come from ``uns['spatial'][library]['scalefactors']``
    (``spot_diameter_fullres``; Visium spots are 55 µm) when not given.
    """
    import anndata as ad
    from scipy import sparse

    p = Path(h5ad)
    if not p.exists():
        raise ReaderError(f"{p}: no such file")
    try:
        adata = ad.read_h5ad(p)
    except Exception as e:  # noqa: BLE001 - anndata/h5py raise many kinds; all become one ReaderError
        raise ReaderError(f"{p}: not a readable AnnData file ({e})") from None
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ReaderError(f"{p}: AnnData has no observations or no variables")
    if spatial_key not in adata.obsm:
        raise ReaderError(f"{p}: missing obsm['{spatial_key}'] (spot centres in image pixels)")
    xy = np.asarray(adata.obsm[spatial_key], dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise ReaderError(f"{p}: obsm['{spatial_key}'] must be (n_spots, 2) x, y; got shape {xy.shape}")
    ids = list(map(str, adata.obs_names))
    _check_coords(xy[:, 0], ids, p, f"obsm['{spatial_key}'][:, 0] (x)")
    _check_coords(xy[:, 1], ids, p, f"obsm['{spatial_key}'][:, 1] (y)")
    if layer is not None:
        if layer not in adata.layers:
            raise ReaderError(f"{p}: missing layers['{layer}'] (layers: {', '.join(adata.layers.keys()) or 'none'})")
        X = adata.layers[layer]
    else:
        X = adata.X
    X = X.tocsr() if sparse.issparse(X) else np.asarray(X)
    vals = X.data if sparse.issparse(X) else X.ravel()
    if vals.size and not np.allclose(vals[:100000], np.round(vals[:100000])):
        warnings.warn(
            f"{p}: expression values are not integer counts (log1p-normalised?); the canvas keeps them as given, "
            "but generators expect raw counts (use layer='counts' if the file has one)",
            stacklevel=2,
        )
    all_genes = list(map(str, adata.var_names))
    gi = _select_genes(all_genes, genes, str(p))
    X = X[:, gi]
    sf = {}
    sp = adata.uns.get("spatial", {}) if hasattr(adata, "uns") else {}
    if isinstance(sp, dict) and sp:
        lib = next(iter(sp.values()))
        sf = dict(lib.get("scalefactors", {})) if isinstance(lib, dict) else {}
    centres = np.stack([xy[:, 1], xy[:, 0]], axis=1)
    if spot_diameter_px is None and "spot_diameter_fullres" in sf:
        spot_diameter_px = float(sf["spot_diameter_fullres"])
    um_per_px, spot_diameter_px = _visium_scale(centres, um_per_px, spot_diameter_px)
    return spots_to_canvas(
        X,
        centres,
        [all_genes[i] for i in gi],
        bin_px=bin_px,
        um_per_px=um_per_px,
        mode=mode,
        diameter_px=spot_diameter_px,
        sigma_px=sigma_px,
        image_shape=_image_shape(image),
        spot_ids=ids,
        source=str(p),
        meta={"format": "anndata", "files": [str(p)]},
    )


def _read_10x_h5(h5: Path):
    """(barcodes x genes CSR matrix, barcodes, gene names) of a 10x ``*_feature_bc_matrix.h5`` (Gene Expression rows only)."""
    import h5py
    from scipy import sparse

    try:
        with h5py.File(h5, "r") as f:
            if "matrix" not in f:
                raise ReaderError(f"{h5}: missing group 'matrix'")
            m = f["matrix"]
            for k in ("data", "indices", "indptr", "shape", "barcodes", "features"):
                if k not in m:
                    raise ReaderError(f"{h5}: missing dataset 'matrix/{k}'")
            shape = tuple(int(v) for v in m["shape"][()])
            mat = sparse.csc_matrix((m["data"][()], m["indices"][()], m["indptr"][()]), shape=shape)  # genes x barcodes
            barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in m["barcodes"][()]]
            feats = m["features"]
            names = [b.decode() if isinstance(b, bytes) else str(b) for b in feats["name"][()]]
            ftype = (
                [b.decode() if isinstance(b, bytes) else str(b) for b in feats["feature_type"][()]]
                if "feature_type" in feats
                else ["Gene Expression"] * len(names)
            )
    except OSError as e:
        raise ReaderError(f"{h5}: not a readable HDF5 matrix ({e})") from None
    gex = np.asarray([t == "Gene Expression" for t in ftype])
    mat = mat.tocsr()[gex].T.tocsr()  # barcodes x genes
    names = [n for n, k in zip(names, gex) if k]
    return mat, barcodes, names


# --------------------------------------------------------------------------- Space Ranger
def read_spaceranger(
    outs_dir,
    bin_px: float,
    image=None,
    mode: str = "footprint",
    spot_diameter_px: float | None = None,
    genes=None,
    um_per_px: float | None = None,
    sigma_px: float | None = None,
) -> ExpressionCanvas:
    """Read a Space Ranger ``outs`` folder (Visium): filtered matrix + tissue positions + scale factors.

    Spot centres are ``pxl_row_in_fullres, pxl_col_in_fullres`` (full-resolution
    image px); only spots with ``in_tissue == 1`` that are in the filtered
    matrix are kept. ``spot_diameter_fullres`` from ``scalefactors_json.json``
    gives the footprint (Visium spots are 55 µm wide).
    """
    import pandas as pd

    outs = Path(outs_dir)
    if not outs.is_dir():
        raise ReaderError(f"{outs}: no such Space Ranger outs folder")
    h5 = outs / "filtered_feature_bc_matrix.h5"
    if not h5.exists():
        raise ReaderError(f"{outs}: missing filtered_feature_bc_matrix.h5")
    spatial = outs / "spatial"
    pos_file = next((spatial / n for n in ("tissue_positions.csv", "tissue_positions_list.csv") if (spatial / n).exists()), None)
    if pos_file is None:
        raise ReaderError(f"{spatial}: missing tissue_positions.csv (or tissue_positions_list.csv)")
    mat, barcodes, names = _read_10x_h5(h5)
    header = pos_file.name == "tissue_positions.csv"
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    try:
        pos = pd.read_csv(pos_file, header=0 if header else None)
    except pd.errors.EmptyDataError:
        raise ReaderError(f"{pos_file}: file is empty") from None
    if not header:
        if pos.shape[1] != 6:
            raise ReaderError(f"{pos_file}: expected 6 columns ({', '.join(cols)}), found {pos.shape[1]}")
        pos.columns = cols
    for c in cols:
        if c not in pos.columns:
            raise ReaderError(f"{pos_file}: missing column '{c}'")
    pos = pos[pos["in_tissue"] == 1].set_index("barcode")
    bidx = {b: i for i, b in enumerate(barcodes)}
    keep = [b for b in pos.index if b in bidx]
    if not keep:
        raise ReaderError(f"{pos_file}: no in-tissue barcode matches {h5}")
    pos = pos.loc[keep]
    for c in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        _check_coords(pos[c].to_numpy(float), keep, pos_file, c)
    X = mat[[bidx[b] for b in keep]]
    gi = _select_genes(names, genes, str(h5))
    X = X[:, gi]
    sf_file = spatial / "scalefactors_json.json"
    sf = {}
    if sf_file.exists():
        try:
            sf = json.loads(sf_file.read_text())
        except json.JSONDecodeError as e:
            raise ReaderError(f"{sf_file}: not valid JSON ({e})") from None
    if spot_diameter_px is None and "spot_diameter_fullres" in sf:
        spot_diameter_px = float(sf["spot_diameter_fullres"])
    centres = np.stack([pos["pxl_row_in_fullres"].to_numpy(float), pos["pxl_col_in_fullres"].to_numpy(float)], axis=1)
    um_per_px, spot_diameter_px = _visium_scale(centres, um_per_px, spot_diameter_px)
    return spots_to_canvas(
        X,
        centres,
        [names[i] for i in gi],
        bin_px=bin_px,
        um_per_px=um_per_px,
        mode=mode,
        diameter_px=spot_diameter_px,
        sigma_px=sigma_px,
        image_shape=_image_shape(image),
        spot_ids=keep,
        source=str(outs),
        meta={"format": "visium", "files": [str(h5), str(pos_file)] + ([str(sf_file)] if sf_file.exists() else [])},
    )


# --------------------------------------------------------------------------- Visium HD (Space Ranger 3)
_HD_BIN = re.compile(r"square_(\d{3})um")
HD_DEFAULT_BIN_UM = 8


def find_visium_hd_bins(path) -> dict[int, Path] | None:
    """``{bin µm: folder}`` of a Visium HD ``outs/``, its ``binned_outputs/`` or one ``square_NNNum`` folder; None if not HD."""
    p = Path(path)
    if not p.is_dir():
        return None
    m = _HD_BIN.fullmatch(p.name)
    if m and (p / "filtered_feature_bc_matrix.h5").is_file():
        return {int(m.group(1)): p}
    for base in (p / "binned_outputs", p / "outs" / "binned_outputs", p if p.name == "binned_outputs" else None):
        if base is not None and base.is_dir():
            found = {}
            for q in sorted(base.iterdir()):
                mm = _HD_BIN.fullmatch(q.name)
                if mm and q.is_dir() and (q / "filtered_feature_bc_matrix.h5").is_file():
                    found[int(mm.group(1))] = q
            if found:
                return found
    return None


def read_visium_hd(
    path,
    bin_px: float | None = None,
    bin_um: float | None = None,
    image=None,
    hd_bin_um: int | None = None,
    mode: str = "footprint",
    spot_diameter_px: float | None = None,
    genes=None,
    um_per_px: float | None = None,
    sigma_px: float | None = None,
) -> ExpressionCanvas:
    """Read Space Ranger 3 Visium HD bins (``binned_outputs/square_{002,008,016}um``) into a canvas.

    Each bin folder holds ``filtered_feature_bc_matrix.h5`` and
    ``spatial/tissue_positions.parquet`` (``barcode, in_tissue, array_row,
    array_col, pxl_row_in_fullres, pxl_col_in_fullres``) and
    ``spatial/scalefactors_json.json`` (``microns_per_pixel``,
    ``spot_diameter_fullres`` = the bin edge in full-resolution px,
    ``tissue_hires_scalef``, ``bin_size_um``).

    ``hd_bin_um`` picks the bin folder (default 8 µm, else the smallest).
    Each bin's counts are laid on the canvas as a disc of the bin's area
    (``mode="footprint"``), so totals are exact. ``image`` is the full
    resolution H&E (the microscope image given to Space Ranger); without it,
    ``spatial/tissue_hires_image.png`` is used as the real image, placed with
    ``tissue_hires_scalef``. The canvas bin edge is ``bin_px`` image px, or
    ``bin_um`` µm (default 10).
    """
    import pandas as pd

    p = Path(path)
    bins = find_visium_hd_bins(p)
    if bins is None:
        raise ReaderError(
            f"{p}: not a Visium HD folder (expected binned_outputs/square_NNNum/ with filtered_feature_bc_matrix.h5)"
        )
    picked = None
    if hd_bin_um is None:
        hd_bin_um = HD_DEFAULT_BIN_UM if HD_DEFAULT_BIN_UM in bins else min(bins)
        if len(bins) > 1:
            picked = f"read square_{hd_bin_um:03d}um of {', '.join(f'square_{b:03d}um' for b in bins)} (hd_bin_um to choose)"
    if int(hd_bin_um) not in bins:
        raise ReaderError(f"{p}: no square_{int(hd_bin_um):03d}um bins (found {', '.join(f'square_{b:03d}um' for b in bins)})")
    d = bins[int(hd_bin_um)]
    h5 = d / "filtered_feature_bc_matrix.h5"
    pos_file = d / "spatial" / "tissue_positions.parquet"
    sf_file = d / "spatial" / "scalefactors_json.json"
    for f in (pos_file, sf_file):
        if not f.is_file():
            raise ReaderError(f"{f}: missing (Space Ranger 3 writes it beside each bin size)")
    try:
        sf = json.loads(sf_file.read_text())
    except json.JSONDecodeError as e:
        raise ReaderError(f"{sf_file}: not valid JSON ({e})") from None
    for k in ("microns_per_pixel", "spot_diameter_fullres"):
        if not isinstance(sf.get(k), (int, float)) or not sf[k] > 0:
            raise ReaderError(f"{sf_file}: field '{k}' must be a positive number, got {sf.get(k)!r}")
    mat, barcodes, names = _read_10x_h5(h5)
    try:
        pos = pd.read_parquet(pos_file)
    except Exception as e:  # noqa: BLE001 - pandas/pyarrow raise many kinds; all become one ReaderError
        raise ReaderError(f"{pos_file}: not a readable parquet table ({e})") from None
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    for c in cols:
        if c not in pos.columns:
            raise ReaderError(f"{pos_file}: missing column '{c}' (columns: {', '.join(map(str, pos.columns))})")
    pos = pos.assign(barcode=pos["barcode"].astype(str)).set_index("barcode")
    missing = [b for b in barcodes if b not in pos.index]
    if missing:
        raise ReaderError(f"{pos_file}: {len(missing)} barcode(s) of {h5.name} have no position (first {missing[0]!r})")
    pos = pos.loc[barcodes]
    for c in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        _check_coords(pos[c].to_numpy(float), barcodes, pos_file, c)
    gi = _select_genes(names, genes, str(h5))
    X = mat[:, gi]
    centres = np.stack([pos["pxl_row_in_fullres"].to_numpy(float), pos["pxl_col_in_fullres"].to_numpy(float)], axis=1)
    px_scale = 1.0  # image px per full-resolution px
    files = [str(h5), str(pos_file), str(sf_file)]
    image_note = None
    if image is None:
        hires = next(
            (
                q
                for q in (d / "spatial" / "tissue_hires_image.png", d.parent.parent / "spatial" / "tissue_hires_image.png")
                if q.is_file()
            ),
            None,
        )
        if hires is not None and isinstance(sf.get("tissue_hires_scalef"), (int, float)) and sf["tissue_hires_scalef"] > 0:
            image = hires
            px_scale = float(sf["tissue_hires_scalef"])
            image_note = f"no --image: placed on {hires} with tissue_hires_scalef {px_scale:g}"
    if um_per_px is None:
        um_per_px = float(sf["microns_per_pixel"]) / px_scale
    if spot_diameter_px is None:
        spot_diameter_px = float(sf["spot_diameter_fullres"]) * px_scale * 2.0 / np.sqrt(np.pi)  # disc of the bin's area
    if bin_px is None:
        bin_px = float(bin_um if bin_um is not None else 10.0) / float(um_per_px)
    if image is not None:
        files.append(str(image))
    meta = {
        "format": "visium_hd",
        "files": files,
        "hd_bin_um": int(hd_bin_um),
        "microns_per_pixel_fullres": float(sf["microns_per_pixel"]),
    }
    notes = [n for n in (picked, image_note) if n]
    if notes:
        meta["picked"] = notes
    if image_note:
        meta["image_scale_from_fullres"] = px_scale
    return spots_to_canvas(
        X,
        centres * px_scale,
        [names[i] for i in gi],
        bin_px=float(bin_px),
        um_per_px=float(um_per_px),
        mode=mode,
        diameter_px=spot_diameter_px,
        sigma_px=sigma_px,
        image_shape=_image_shape(image),
        spot_ids=barcodes,
        source=str(d),
        meta=meta,
    )
