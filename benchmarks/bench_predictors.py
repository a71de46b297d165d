"""How well can a spot's expression predict its nuclear area fraction at all? (her2st training sections only.)

Issue 15 asks a generator's per-render spatial ρ of nuclear area fraction to beat the ``ridge`` baseline of
``evaluate``. This asks whether any read-out of the same expression does clearly better than ``ridge``, by
leave-one-section-out over the training sections (each section predicted from the others; the held-out
section C5 is never read unless named): the baselines as ``evaluate`` fits them (``library_size``,
``ridge``), ``ridge`` with the section-relative log depth as one more feature, and two non-linear read-outs
on the leading principal components of the standardised log CPM, each with its settings chosen by an inner
leave-one-section-out on the training part only: RBF kernel ridge and k nearest neighbours. Prints the
Spearman ρ over each left-out section's spots, and the mean.

    PYTHONPATH=src python benchmarks/bench_predictors.py [--sections C2,C3,C4] [--target area_fraction] [--json]

Needs the her2st sample data (NAPARI_GDT_DATA or the download cache).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _standardised_log_cpm(Xtr, Xte):
    from napari_gdt.analysis.baselines import _log_cpm

    Ltr, Lte = _log_cpm(Xtr), _log_cpm(Xte)
    mu, sd = Ltr.mean(axis=0), Ltr.std(axis=0)
    sd[sd == 0] = 1.0
    return (Ltr - mu) / sd, (Lte - mu) / sd


def _pcs(Ztr, Zte, k):
    mu = Ztr.mean(axis=0)
    _, _, vt = np.linalg.svd(Ztr - mu, full_matrices=False)
    v = vt[:k].T
    return (Ztr - mu) @ v, (Zte - mu) @ v


def _sqdist(A, B):
    return np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T, 0.0)


def kernel_ridge(Ptr, ytr, Pte, gamma_factor, alpha):
    """RBF kernel ridge; the kernel width is ``gamma_factor`` over the median squared training distance."""
    d = _sqdist(Ptr, Ptr)
    g = gamma_factor / max(np.median(d[np.triu_indices(len(Ptr), 1)]), 1e-12)
    m = ytr.mean()
    a = np.linalg.solve(np.exp(-g * d) + alpha * np.eye(len(Ptr)), ytr - m)
    return np.exp(-g * _sqdist(Pte, Ptr)) @ a + m


def knn(Ptr, ytr, Pte, k):
    idx = np.argsort(_sqdist(Pte, Ptr), axis=1)[:, :k]
    return ytr[idx].mean(axis=1)


def _inner_choice(pairs_tr, fit_predict, grid):
    """The setting of ``grid`` with the best mean Spearman over leave-one-section-out within ``pairs_tr``."""
    if len(pairs_tr) < 2:
        return grid[0]
    scores = []
    for s in grid:
        rs = []
        for i in range(len(pairs_tr)):
            tr = [p for j, p in enumerate(pairs_tr) if j != i]
            rs.append(_spearman(fit_predict(tr, pairs_tr[i], s), pairs_tr[i]["y"]))
        scores.append(np.mean(rs))
    return grid[int(np.argmax(scores))]


def _stack(ps, key):
    return np.concatenate([p[key] for p in ps])


def predictors(n_pcs: int = 20) -> dict:
    """name -> fit_predict(train_pairs, test_pair, setting) and its grid of settings."""
    from napari_gdt.analysis.baselines import _ridge_solve

    def nonlinear(fn):
        def fp(tr, te, s):
            Ztr, Zte = _standardised_log_cpm(_stack(tr, "X"), te["X"])
            Ptr, Pte = _pcs(Ztr, Zte, n_pcs)
            return fn(Ptr, _stack(tr, "y"), Pte, *s)

        return fp

    def ridge_depth(tr, te, s):
        Ztr, Zte = _standardised_log_cpm(_stack(tr, "X"), te["X"])
        dtr, dte = _stack(tr, "reldepth"), te["reldepth"]
        sd = dtr.std() or 1.0
        A, B = np.c_[Ztr, dtr / sd], np.c_[Zte, dte / sd]
        y = _stack(tr, "y")
        w = _ridge_solve(A, y - y.mean(), s[0] * A.shape[1])
        return B @ w + y.mean()

    return {
        "ridge + section-relative depth": (ridge_depth, [(a,) for a in np.logspace(-2, 2, 9)]),
        f"kernel ridge (RBF, {n_pcs} PCs)": (
            nonlinear(kernel_ridge),
            [(g, a) for g in (0.25, 0.5, 1.0, 2.0) for a in (0.1, 0.3, 1.0, 3.0)],
        ),
        f"k nearest neighbours ({n_pcs} PCs)": (nonlinear(knn), [(k,) for k in (5, 10, 20, 40)]),
    }


def run(pairs: list[dict], target: str = "area_fraction", n_pcs: int = 20) -> dict:
    """Leave-one-section-out Spearman of each predictor on each of ``pairs`` (``unit_pairs`` results)."""
    from napari_gdt.analysis.baselines import fit_baselines, predict

    genes = pairs[0]["genes"]
    data = []
    for p in pairs:
        lt = np.log1p(p["X"].sum(axis=1))
        data.append({"X": p["X"], "y": p["Y"][target], "reldepth": lt - np.median(lt), "label": p["label"]})
    out: dict = {}
    preds = predictors(n_pcs)
    for i, p in enumerate(pairs):
        tr_pairs = [q for j, q in enumerate(pairs) if j != i]
        rec = fit_baselines(tr_pairs)
        base = predict(rec, p["X"], genes)
        row = {b: _spearman(base[b][target], data[i]["y"]) for b in ("library_size", "ridge")}
        tr = [d for j, d in enumerate(data) if j != i]
        for name, (fp, grid) in preds.items():
            s = _inner_choice(tr, fp, grid)
            row[name] = _spearman(fp(tr, data[i], s), data[i]["y"])
        out[p["label"]] = row
    return out


def main(argv=None) -> int:
    from napari_gdt.analysis.baselines import her2st_training_pairs
    from napari_gdt.models.bundle import load_bundle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="her2st-he")
    ap.add_argument("--sections", default="C2,C3,C4")
    ap.add_argument("--target", default="area_fraction", choices=["area_fraction", "density_per_mm2"])
    ap.add_argument("--pcs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    pairs = her2st_training_pairs(load_bundle(a.model), sections=a.sections.split(","), progress=None)
    res = run(pairs, a.target, a.pcs)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    labels = list(res)
    names = list(res[labels[0]])
    print(f"Spearman ρ of {a.target} over each left-out section's spots (predicted from the other sections)")
    print(f"{'predictor':36s}" + "".join(f"{lab.split()[-1]:>8s}" for lab in labels) + f"{'mean':>8s}")
    for n in names:
        v = [res[lab][n] for lab in labels]
        print(f"{n:36s}" + "".join(f"{x:8.3f}" for x in v) + f"{np.mean(v):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
