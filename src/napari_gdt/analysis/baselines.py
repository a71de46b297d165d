"""Strong baselines for the spatial correlations of ``napari-gdt evaluate``.

A generator's Spearman correlation over units (spot footprints, or tiles) between generated and
real nuclei density / nuclear area fraction means little on its own: sequencing depth alone
predicts much of it. Two baselines, fitted on **training sections only** (never the section being
scored), predict the real per-unit targets from the unit's expression:

- ``library_size``: a monotone (isotonic, non-decreasing) fit from ``log1p`` of the unit's total
  counts to each target;
- ``ridge``: ridge regression from the unit's log CPM (``log1p(counts / total * 1e6)``) of the
  ``n_genes`` (default 500; all of them when the canvas has fewer) most variable canvas genes,
  standardised, to each target. The penalty is chosen by leave-one-section-out cross-validation
  (leave-one-unit-out GCV with one section).

The targets (``density_per_mm2``, ``area_fraction``) are measured on the real image resampled onto
the model's output grid with :mod:`napari_gdt.analysis.morphometrics`, in the same units as the
evaluation (:func:`napari_gdt.analysis.quality.prepare_real`). A unit's expression is the sum of
the canvas bins whose centre lies in its footprint (spots) or tile.

The fit is a JSON-able record (:func:`fit_baselines`), stored in a model card under ``baselines``
(:func:`write_baselines`), and :func:`baseline_correlations` scores it on a new section.

Command line: ``python -m napari_gdt.analysis.baselines her2st --model her2st-he [--write-card
FILE] [--out record.json]`` fits them on the recipe's training sections (C2-C4).
"""

from __future__ import annotations

import datetime as _dt
import json

import numpy as np

from ..errors import GDTError

__all__ = [
    "TARGETS",
    "baseline_correlations",
    "fit_baselines",
    "her2st_training_pairs",
    "merfish_training_pairs",
    "predict",
    "unit_expression",
    "unit_pairs",
    "write_baselines",
]

#: per-unit targets (columns of the morphometrics unit tables)
TARGETS = ("density_per_mm2", "area_fraction")
#: the spatial keys of :data:`napari_gdt.analysis.quality.KEYS` each target is scored under
TARGET_KEYS = {"density_per_mm2": "tile_spearman_nuclei", "area_fraction": "tile_spearman_area_fraction"}
RECORD_VERSION = 1


def unit_expression(canvas, px_per_bin: int, region, prep: dict, genes=None) -> np.ndarray:
    """Counts per unit, (n_units, n_genes) float64, for the units of ``prep`` (see module docstring).

    ``prep`` is :func:`napari_gdt.analysis.quality.prepare_real`'s dict (its ``units`` and
    ``real_units`` fix the units). ``genes``: reorder/select canvas genes (all if None).
    """
    c = canvas.align(list(genes)) if genes is not None else canvas
    ppb = int(px_per_bin)
    by0, bx0 = region.y0 // ppb, region.x0 // ppb
    by1, bx1 = -(-region.y1 // ppb), -(-region.x1 // ppb)
    win = c.read_window(by0, bx0, by1 - by0, bx1 - bx0).astype(np.float64)  # (G, h, w)
    cy = (np.arange(by0, by1) + 0.5) * ppb - region.y0  # bin centres, output px relative to region
    cx = (np.arange(bx0, bx1) + 0.5) * ppb - region.x0
    G = win.shape[0]
    rows = []
    if prep["units"] is not None:
        centres, d = prep["units"]
        r2 = (d / 2.0) ** 2
        for y, x in centres:
            m = ((cy[:, None] - y) ** 2 + (cx[None, :] - x) ** 2) <= r2
            rows.append(win[:, m].sum(axis=1) if m.any() else np.zeros(G))
    else:
        for _, t in prep["real_units"].iterrows():
            my = (cy >= t["y0"]) & (cy < t["y1"])
            mx = (cx >= t["x0"]) & (cx < t["x1"])
            rows.append(win[:, my][:, :, mx].reshape(G, -1).sum(axis=1))
    return np.asarray(rows, np.float64).reshape(-1, G)


def unit_pairs(bundle, canvas, image, region=None, tile_px: int = 256, label: str = "") -> dict:
    """Per-unit expression and real targets of one (canvas, image) pair, for :func:`fit_baselines`.

    ``region``: output px (default: the spots' whole tissue, else the whole canvas). Returns
    ``{"label", "genes", "X" (n_units, n_genes) counts, "Y" {target: (n_units,)}, "units"}``.
    """
    from ..rendering.tiles import Region
    from .quality import prepare_real, tissue_region

    Hb, Wb = canvas.n_bins
    shape = (Hb * bundle.px_per_bin, Wb * bundle.px_per_bin)
    if region is None:
        region = tissue_region(canvas, bundle.px_per_bin, shape) or Region(0, shape[0], 0, shape[1])
    prep = prepare_real(bundle, canvas, image, region, tile_px)
    X = unit_expression(canvas, bundle.px_per_bin, region, prep)
    Y = {t: prep["real_units"][t].to_numpy(float) for t in TARGETS}
    return {
        "label": label,
        "genes": list(canvas.genes),
        "X": X,
        "Y": Y,
        "units": "spot footprints" if prep["units"] is not None else f"tiles of {tile_px} px",
        "region": str(region),
    }


def _log_cpm(X: np.ndarray) -> np.ndarray:
    tot = X.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cpm = np.where(tot > 0, X / np.maximum(tot, 1e-12) * 1e6, 0.0)
    return np.log1p(cpm)


def _isotonic_fit(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy.optimize import isotonic_regression

    o = np.argsort(x, kind="stable")
    xs, ys = x[o], y[o]
    fit = isotonic_regression(ys, increasing=True).x
    # keep the knots where the fitted step function changes (first and last x of each block)
    keep = np.ones(len(xs), bool)
    if len(xs) > 2:
        same_prev = np.r_[False, fit[1:] == fit[:-1]]
        same_next = np.r_[fit[:-1] == fit[1:], False]
        keep = ~(same_prev & same_next)
    return {"x": [float(v) for v in xs[keep]], "y": [float(v) for v in fit[keep]]}


def _ridge_solve(Z, y, alpha):
    p = Z.shape[1]
    return np.linalg.solve(Z.T @ Z + alpha * np.eye(p), Z.T @ y)


def _ridge_fit(Z: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: np.ndarray) -> dict:
    """Ridge on standardised Z (centred y); alpha by leave-one-group-out CV (GCV with one group)."""
    ym = float(y.mean())
    yc = y - ym
    ug = np.unique(groups)
    errs = []
    if len(ug) >= 2:
        for a in alphas:
            e = 0.0
            for g in ug:
                tr, te = groups != g, groups == g
                mu = y[tr].mean()
                w = _ridge_solve(Z[tr], y[tr] - mu, a)
                e += float(((Z[te] @ w + mu - y[te]) ** 2).sum())
            errs.append(e / len(y))
    else:
        U, s, _ = np.linalg.svd(Z, full_matrices=False)
        Uy = U.T @ yc
        for a in alphas:
            d = s**2 / (s**2 + a)
            fitted = U @ (d * Uy)
            h = (U**2 * d).sum(axis=1)
            errs.append(float(np.mean(((yc - fitted) / np.maximum(1 - h, 1e-6)) ** 2)))
    best = int(np.argmin(errs))
    w = _ridge_solve(Z, yc, alphas[best])
    return {"alpha": float(alphas[best]), "coef": [float(v) for v in w], "intercept": ym, "cv_mse": float(errs[best])}


def fit_baselines(pairs: list[dict], n_genes: int = 500, alphas=None) -> dict:
    """Fit the ``library_size`` and ``ridge`` baselines on training pairs (:func:`unit_pairs`).

    Parameters
    ----------
    pairs : list of dict
        One :func:`unit_pairs` result per training section (never the scored one). Their genes
        must agree.
    n_genes : int
        Ridge uses the ``n_genes`` canvas genes with the largest variance of log CPM over the
        pooled training units (all of them if the canvas has fewer).
    alphas : array, optional
        Ridge penalties tried (default ``logspace(-1, 5, 25)`` times the number of features).

    Returns
    -------
    dict
        A JSON-able record: ``version``, ``targets``, ``fitted_on`` (labels), ``n_units``,
        ``units``, ``library_size`` {target: {"x": log1p-total knots, "y": fitted values}},
        ``ridge`` {``genes``, ``mean``, ``scale``, ``targets`` {target: {alpha, coef, intercept,
        cv_mse}}}, ``created_utc``.
    """
    if not pairs:
        raise GDTError("fit_baselines needs at least one training (canvas, image) pair")
    genes = pairs[0]["genes"]
    for p in pairs[1:]:
        if p["genes"] != genes:
            raise GDTError(f"training pair {p['label']!r} has another gene list than {pairs[0]['label']!r}")
    X = np.concatenate([p["X"] for p in pairs])
    groups = np.concatenate([np.full(len(p["X"]), i) for i, p in enumerate(pairs)])
    Y = {t: np.concatenate([p["Y"][t] for p in pairs]) for t in TARGETS}
    if len(X) < 5:
        raise GDTError(f"fit_baselines: only {len(X)} training units (need >= 5)")
    rec: dict = {
        "version": RECORD_VERSION,
        "targets": list(TARGETS),
        "fitted_on": [p["label"] for p in pairs],
        "n_units": [len(p["X"]) for p in pairs],
        "units": pairs[0]["units"],
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    lt = np.log1p(X.sum(axis=1))
    rec["library_size"] = {t: _isotonic_fit(lt, Y[t]) for t in TARGETS}
    L = _log_cpm(X)
    var = L.var(axis=0)
    k = min(int(n_genes), L.shape[1])
    idx = np.sort(np.argsort(-var, kind="stable")[:k])
    Lk = L[:, idx]
    mu, sd = Lk.mean(axis=0), Lk.std(axis=0)
    sd[sd == 0] = 1.0
    Z = (Lk - mu) / sd
    al = np.asarray(alphas, float) if alphas is not None else np.logspace(-1, 5, 25) * max(1, Z.shape[1]) / 100.0
    rec["ridge"] = {
        "genes": [genes[i] for i in idx],
        "all_genes_for_cpm": list(genes),
        "mean": [float(v) for v in mu],
        "scale": [float(v) for v in sd],
        "targets": {t: _ridge_fit(Z, Y[t], groups, al) for t in TARGETS},
    }
    return rec


def predict(record: dict, X: np.ndarray, genes: list[str]) -> dict:
    """Predictions ``{baseline: {target: (n_units,)}}`` of a :func:`fit_baselines` record.

    ``X``: counts per unit (n_units, len(genes)). The library size is the sum over ``genes``;
    log CPM uses the record's ``all_genes_for_cpm`` (the training canvas genes) so the depth is
    measured the same way as in training.
    """
    gi = {g: i for i, g in enumerate(genes)}
    r = record["ridge"]
    cpm_genes = r.get("all_genes_for_cpm") or genes
    missing = [g for g in cpm_genes if g not in gi]
    if missing:
        raise GDTError(f"the canvas lacks {len(missing)} gene(s) of the baseline fit: {', '.join(missing[:10])}")
    Xc = X[:, [gi[g] for g in cpm_genes]]
    out = {"library_size": {}, "ridge": {}}
    lt = np.log1p(Xc.sum(axis=1))
    for t, f in record["library_size"].items():
        out["library_size"][t] = np.interp(lt, np.asarray(f["x"]), np.asarray(f["y"]))
    L = _log_cpm(Xc)
    ci = {g: i for i, g in enumerate(cpm_genes)}
    Z = (L[:, [ci[g] for g in r["genes"]]] - np.asarray(r["mean"])) / np.asarray(r["scale"])
    for t, f in r["targets"].items():
        out["ridge"][t] = Z @ np.asarray(f["coef"]) + f["intercept"]
    return out


def baseline_correlations(record: dict, X: np.ndarray, genes: list[str], real_units) -> dict:
    """Spearman, over units, of each baseline's prediction against the real targets.

    Returns ``{baseline: {"tile_spearman_nuclei": rho, "tile_spearman_area_fraction": rho}}``
    (None where a correlation cannot be computed, e.g. a constant prediction).
    """
    from .quality import _spearman

    pred = predict(record, X, genes)
    return {b: {TARGET_KEYS[t]: _spearman(p[t], real_units[t].to_numpy(float)) for t in p} for b, p in pred.items()}


def write_baselines(bundle_path, record: dict) -> dict:
    """Write ``record`` into the model card of the bundle file at ``bundle_path`` under ``baselines``
    (tensors unchanged; an earlier record is replaced); returns the new card."""
    import os
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from ..models.bundle import META_KEY, read_card

    p = Path(bundle_path)
    card = read_card(p)
    tensors = load_file(str(p))
    card["baselines"] = record
    tmp = p.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(card)})
    os.replace(tmp, p)
    return card


# ------------------------------------------------------------------------------------------
# the bundled models' training data


def her2st_training_pairs(bundle, sections=("C2", "C3", "C4"), tile_px: int = 256, progress=print) -> list[dict]:
    """:func:`unit_pairs` of her2st sections, read as the ``her2st-he`` recipe reads them
    (spread spots, 32 he.jpg px per bin, the model's gene panel). Needs the sample data."""
    from ..data import fetch_her2st
    from ..expression.spots import read_st
    from ..pixels import read_image

    pairs = []
    for s in sections:
        p = fetch_her2st(s)
        c = read_st(p["counts"], p["spots"], 32, image=p["image"], mode="spread", genes=list(bundle.genes))
        pairs.append(unit_pairs(bundle, c, read_image(p["image"]), tile_px=tile_px, label=f"her2st {s}"))
        if progress:
            progress(f"baselines: her2st {s}: {len(pairs[-1]['X'])} units")
    return pairs


#: the held-out region of the merfish-dapi recipe (output px) and the training part of the field
MERFISH_VAL_REGION = "0:1040,864:1152"
MERFISH_TRAIN_REGION = "0:1040,0:864"


def merfish_training_pairs(bundle, tile_px: int = 128, progress=print) -> list[dict]:
    """:func:`unit_pairs` of the MERFISH field outside the held-out quarter (``0:1040,0:864``)."""
    from ..data import fetch_merfish
    from ..expression.samples import merfish_canvas
    from ..pixels import read_image
    from ..rendering.tiles import parse_region

    p = fetch_merfish()
    img = read_image(p["dapi"])
    c = merfish_canvas(p["transcripts"], img.shape[:2], bin_px=64, genes=list(bundle.genes))
    pair = unit_pairs(
        bundle, c, img, region=parse_region(MERFISH_TRAIN_REGION), tile_px=tile_px, label=f"merfish z0 {MERFISH_TRAIN_REGION}"
    )
    if progress:
        progress(f"baselines: merfish training part: {len(pair['X'])} units")
    return [pair]


def main(argv=None) -> int:
    """``python -m napari_gdt.analysis.baselines her2st|merfish --model M [--out F] [--write-card FILE]``."""
    import argparse
    import sys

    from ..models.bundle import load_bundle

    ap = argparse.ArgumentParser(
        prog="python -m napari_gdt.analysis.baselines",
        description="Fit the library_size and ridge baselines on a bundled recipe's training data and write the record.",
    )
    ap.add_argument("dataset", choices=["her2st", "merfish"])
    ap.add_argument("--model", required=True, help="model name or file (its gene panel and grid are used)")
    ap.add_argument("--sections", default="C2,C3,C4", help="her2st training sections (default C2,C3,C4)")
    ap.add_argument("--tile", type=int, default=None, help="tile edge for non-spot data (default 256; merfish 128)")
    ap.add_argument("--out", help="write the record as JSON here")
    ap.add_argument("--write-card", metavar="FILE", help="write the record into this model file's card (field 'baselines')")
    a = ap.parse_args(argv)
    try:
        b = load_bundle(a.model, device="cpu")
        if a.dataset == "her2st":
            pairs = her2st_training_pairs(
                b,
                [s.strip() for s in a.sections.split(",") if s.strip()],
                tile_px=a.tile or 256,
                progress=lambda m: print(m, file=sys.stderr),
            )
        else:
            pairs = merfish_training_pairs(b, tile_px=a.tile or 128, progress=lambda m: print(m, file=sys.stderr))
        rec = fit_baselines(pairs)
        if a.out:
            from pathlib import Path

            Path(a.out).write_text(json.dumps(rec, indent=1))
        if a.write_card:
            write_baselines(a.write_card, rec)
        if not a.out and not a.write_card:
            print(json.dumps(rec))
        else:
            print(f"baselines fitted on {', '.join(rec['fitted_on'])} ({sum(rec['n_units'])} units)")
    except GDTError as e:
        print(f"baselines: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
