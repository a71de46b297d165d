"""Which unit to fit the composition prior on: bins or spots (her2st training sections only).

For each training section in turn, fits ``gdt-v2``'s prior read-out on the other sections twice
with :func:`napari_gdt.training.prior.fit_prior`, per bin (the sections without their spots) and
per spot, and prints the Spearman correlation, over the left-out section's spots, between the
prior map averaged over each spot's disc and the spot's real soft nuclear fraction
(:func:`napari_gdt.training.prior.spot_nuclear_fraction`). No model weights are involved: a fresh
generator supplies the panel's composition scaling. The held-out section C5 is never read.

    PYTHONPATH=src python benchmarks/bench_prior_unit.py [--model her2st-he] [--sections C2,C3,C4] [--json]

Needs the her2st sample data (NAPARI_GDT_DATA or the download cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np


def _sections(names, genes, ppb):
    from napari_gdt.data import fetch_her2st
    from napari_gdt.expression.spots import read_st
    from napari_gdt.pixels import read_image
    from napari_gdt.training.sampling import PairedSection

    out = []
    for s in names:
        p = fetch_her2st(s)
        c = read_st(p["counts"], p["spots"], 32, image=p["image"], mode="spread", genes=list(genes))
        out.append(PairedSection.from_canvas(c, read_image(p["image"]), list(genes), ppb, name=s))
    return out


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
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    b = load_bundle(a.model, device="cpu")
    names = [s.strip() for s in a.sections.split(",") if s.strip()]
    secs = _sections(names, b.genes, b.px_per_bin)
    thr = nuclear_threshold(secs, what="bench_prior_unit")
    tau = 0.1 * thr
    rows = []
    for k, held in enumerate(secs):
        train = [s for i, s in enumerate(secs) if i != k]
        y, idx = spot_nuclear_fraction(held.image, held.spots, held.px_per_bin, thr, tau)
        row = {"left_out": held.name, "n_spots": int(len(y))}
        for unit, fit_on in (("bin", [dataclasses.replace(s, spots=None) for s in train]), ("spot", train)):
            g = GDT2Generator(n_genes=len(b.genes), prior=1)
            g.fit_input_scale([s.counts for s in train])
            rep = fit_prior(g, fit_on, thr, tau, pool=64)
            assert rep["unit"] == unit
            row[unit] = float(spearmanr(prior_at_spots(g, held)[idx], y)[0])
        rows.append(row)
        if not a.json:
            print(
                f"{held.name} left out ({row['n_spots']} spots): prior fitted per bin rho {row['bin']:.3f}, "
                f"per spot rho {row['spot']:.3f}"
            )
    mean = {u: float(np.mean([r[u] for r in rows])) for u in ("bin", "spot")}
    if a.json:
        print(json.dumps({"rows": rows, "mean": mean}, indent=1))
    else:
        print(f"mean: per bin {mean['bin']:.3f}, per spot {mean['spot']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
