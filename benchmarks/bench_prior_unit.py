"""Which unit to fit the composition prior on: bins or spots (her2st training sections only).

For each training section in turn, fits ``gdt-v2``'s prior read-out on the other sections twice
with :func:`napari_gdt.training.prior.fit_prior`, per bin (the sections without their spots) and
per spot, and prints the Spearman correlation, over the left-out section's spots, between the
prior map averaged over each spot's disc and the spot's real soft nuclear fraction
(:func:`napari_gdt.training.prior.spot_nuclear_fraction`). No model weights are involved: a fresh
generator supplies the panel's composition scaling. The held-out section C5 is never read.

A third fit, per spot with depth augmentation (``fit_prior(..., depths=...)``, what training does
with ``--depth-aug``), and the left-out section also sequenced ``--factor`` times shallower (its
UMI table thinned binomially, as ``bench_depth.py`` does) show how far each read-out moves with
depth: ``shift`` is the mean change of the prior over the spots in units of its SD (0: depth-blind).

    PYTHONPATH=src python benchmarks/bench_prior_unit.py [--model her2st-he] [--sections C2,C3,C4] \
        [--factor 15] [--json]

Needs the her2st sample data (NAPARI_GDT_DATA or the download cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np


def _sections(names, genes, ppb, factor=0.0):
    """The sections, and (``factor`` > 1) each one's canvas thinned ``factor`` times (None otherwise)."""
    from bench_depth import thinned_canvas

    from napari_gdt.data import fetch_her2st
    from napari_gdt.expression.spots import read_st
    from napari_gdt.pixels import read_image
    from napari_gdt.training.sampling import PairedSection

    out, thin = [], []
    for s in names:
        p = fetch_her2st(s)
        img = read_image(p["image"])
        c = read_st(p["counts"], p["spots"], 32, image=p["image"], mode="spread", genes=list(genes))
        out.append(PairedSection.from_canvas(c, img, list(genes), ppb, name=s))
        if factor > 1:
            ct = thinned_canvas(s, factor, list(genes))[0]
            thin.append(PairedSection.from_canvas(ct, img, list(genes), ppb, name=f"{s} 1/{factor:g}"))
        else:
            thin.append(None)
    return out, thin


def prior_at_spots(g, section) -> np.ndarray:
    """The prior map of ``g`` on ``section`` averaged over the bins in each spot's disc."""
    import torch

    counts = torch.from_numpy(np.ascontiguousarray(section.counts, np.float32))[None]
    with torch.no_grad():
        ch = g.prior_channels(g.normalise(counts), (counts.sum(1, keepdim=True) > 0).float())[0, 0].numpy()
    centres, d = section.spots
    c = (np.arange(max(ch.shape)) + 0.5) * section.px_per_bin
    cy, cx = c[: ch.shape[0]], c[: ch.shape[1]]
    out = []
    for y, x in centres:
        m = ((cy[:, None] - y) ** 2 + (cx[None, :] - x) ** 2) <= (d / 2) ** 2
        if not m.any():
            m = np.zeros(ch.shape, bool)
            m[min(int(y // section.px_per_bin), ch.shape[0] - 1), min(int(x // section.px_per_bin), ch.shape[1] - 1)] = True
        out.append(float(ch[m].mean()))
    return np.asarray(out)


def main(argv=None) -> int:
    from scipy.stats import spearmanr

    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.models.gdt2 import GDT2Generator
    from napari_gdt.training.loop import nuclear_threshold
    from napari_gdt.training.prior import fit_prior, spot_nuclear_fraction

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="her2st-he", help="bundle whose gene panel and px per bin are used")
    ap.add_argument("--sections", default="C2,C3,C4", help="training sections (each is left out in turn)")
    ap.add_argument("--factor", type=float, default=15.0, help="sequencing depth divided by this for the shift (0: skip)")
    ap.add_argument("--depths", default="0.37,0.14,0.05", help="the depth-augmented fit's fractions")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    b = load_bundle(a.model, device="cpu")
    names = [s.strip() for s in a.sections.split(",") if s.strip()]
    depths = [float(v) for v in a.depths.split(",") if v.strip()]
    secs, thin = _sections(names, b.genes, b.px_per_bin, a.factor)
    thr = nuclear_threshold(secs, what="bench_prior_unit")
    tau = 0.1 * thr
    rows = []
    fits = {
        "bin": lambda train: ([dataclasses.replace(s, spots=None) for s in train], ()),
        "spot": lambda train: (train, ()),
        "spot+depths": lambda train: (train, depths),
    }
    for k, held in enumerate(secs):
        train = [s for i, s in enumerate(secs) if i != k]
        y, idx = spot_nuclear_fraction(held.image, held.spots, held.px_per_bin, thr, tau)
        row = {"left_out": held.name, "n_spots": int(len(y))}
        for name, make in fits.items():
            fit_on, dep = make(train)
            g = GDT2Generator(n_genes=len(b.genes), prior=1)
            g.fit_input_scale([s.counts for s in train])
            fit_prior(g, fit_on, thr, tau, pool=64, depths=dep)
            p_full = prior_at_spots(g, held)[idx]
            row[name] = {"rho": float(spearmanr(p_full, y)[0])}
            if thin[k] is not None:
                p_thin = prior_at_spots(g, thin[k])[idx]
                row[name]["rho_thinned"] = float(spearmanr(p_thin, y)[0])
                row[name]["shift"] = float(np.mean(p_thin - p_full))  # the prior is standardised: SD units
        rows.append(row)
        if not a.json:
            print(
                f"{held.name} left out ({row['n_spots']} spots): "
                + "; ".join(
                    f"{n} rho {v['rho']:.3f}"
                    + (f" (1/{a.factor:g} depth: rho {v['rho_thinned']:.3f}, shift {v['shift']:+.2f})" if "shift" in v else "")
                    for n, v in row.items()
                    if isinstance(v, dict)
                )
            )
    mean = {n: {key: float(np.mean([r[n][key] for r in rows])) for key in rows[0][n]} for n in fits}
    if a.json:
        print(json.dumps({"rows": rows, "mean": mean, "depths": depths, "factor": a.factor}, indent=1))
    else:
        print("mean: " + "; ".join(f"{n} " + ", ".join(f"{k} {v:+.3f}" for k, v in m.items()) for n, m in mean.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
