"""Depth robustness: the same section sequenced shallower must render the same tissue.

Thins a her2st section's UMI table binomially (each UMI kept with probability ``1/factor``),
rebuilds the canvas exactly as the demo recipe does (``read_st(..., 32, mode="spread")``, the
model's panel) and renders both canvases with the same model and seed. Prints nuclei density
and nuclear area fraction of both renders (their ratio: goal within 0.9-1.1) and the IoU of their
tissue masks (goal >= 0.85), using the evaluation's own segmentation and tissue mask.

    PYTHONPATH=src python benchmarks/bench_depth.py --model her2st-he --section C5 --factor 15 \
        [--save-canvas runs/data/her2st_C5_thin15.ome.zarr] [--json]

The thinned canvas (``--save-canvas``) can then be scored against the real image with
``napari-gdt evaluate``. Needs the her2st sample data (NAPARI_GDT_DATA or the download cache).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def thinned_table(counts_tsv, factor: float, seed: int = 0):
    """The UMI table with every count binomially thinned to ``1 / factor``."""
    import pandas as pd

    t = pd.read_csv(counts_tsv, sep="\t", index_col=0)
    rng = np.random.default_rng(seed)
    v = t.to_numpy()
    thin = rng.binomial(np.round(v).astype(np.int64), 1.0 / factor)
    return pd.DataFrame(thin, index=t.index, columns=t.columns)


def thinned_canvas(section: str, factor: float, genes, seed: int = 0, bin_px: int = 32):
    """``(canvas, full_canvas, image_path, median UMIs per spot before/after)``."""
    from napari_gdt.data import fetch_her2st
    from napari_gdt.expression.spots import read_st

    p = fetch_her2st(section)
    import pandas as pd

    thin = thinned_table(p["counts"], factor, seed)

    full = pd.read_csv(p["counts"], sep="\t", index_col=0)
    med_full = float(np.median(full.sum(axis=1)))
    med_thin = float(np.median(thin.sum(axis=1)))
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "thin.tsv.gz"
        thin.to_csv(f, sep="\t")
        c_thin = read_st(f, p["spots"], bin_px, image=p["image"], mode="spread", genes=genes)
        import dask.array as da

        c_thin.data = da.from_array(
            np.asarray(c_thin.data, dtype=np.float32), chunks=(64, 256, 256)
        )  # materialised before the temp file goes
    c_full = read_st(p["counts"], p["spots"], bin_px, image=p["image"], mode="spread", genes=genes)
    return c_thin, c_full, p["image"], (med_full, med_thin)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="her2st-he")
    ap.add_argument("--section", default="C5")
    ap.add_argument("--factor", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0, help="render seed (the thinning uses seed 0)")
    ap.add_argument("--save-canvas", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from napari_gdt.analysis import morphometrics as mm
    from napari_gdt.analysis.quality import real_on_model_grid, tissue_region
    from napari_gdt.models.bundle import load_bundle, resolve_model
    from napari_gdt.rendering.tiles import TileRenderer
    from napari_gdt.training.sampling import read_image

    b = load_bundle(resolve_model(a.model), device="cpu")
    c_thin, c_full, image, (m_full, m_thin) = thinned_canvas(a.section, a.factor, b.genes)
    if a.save_canvas:
        c_thin.to_ome_zarr(a.save_canvas)
    res = {
        "model": a.model,
        "arch": b.card.get("arch"),
        "section": a.section,
        "factor": a.factor,
        "median_umis_full": m_full,
        "median_umis_thinned": m_thin,
    }
    um = b.um_per_px
    out = {}
    real = mask_real = None
    for name, c in (("full", c_full), ("thinned", c_thin)):
        r = TileRenderer(b, c, seed=a.seed, device="cpu", batch_size=4)
        region = r.check_region(tissue_region(c, b.px_per_bin, r.shape_px))
        if real is None:  # measured inside the real tissue, as napari-gdt evaluate does
            real = real_on_model_grid(read_image(image), c, b.px_per_bin, region)
            mask_real = mm.tissue_mask(real, "he", um)
        img = r.render_region(region)
        out[name] = img
        st = mm.measure_nuclei(img, "he", um, mask=mask_real)
        res[name] = {
            "nuclei_per_mm2": float(st.density_per_mm2),
            "area_fraction": float(st.area_fraction),
            "mean_area_um2": float(st.mean_area_um2),
        }
        mg = mm.tissue_mask(img, "he", um)
        res[name]["tissue_iou_vs_real"] = float((mg & mask_real).sum() / max((mg | mask_real).sum(), 1))
    for k in ("nuclei_per_mm2", "area_fraction"):
        res[f"{k}_ratio"] = res["thinned"][k] / max(res["full"][k], 1e-9)
    ma, mb = mm.tissue_mask(out["full"], "he", um), mm.tissue_mask(out["thinned"], "he", um)
    res["tissue_iou_thinned_vs_full"] = float((ma & mb).sum() / max((ma | mb).sum(), 1))
    res["mean_abs_pixel_diff"] = float(np.abs(out["full"] - out["thinned"]).mean())
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{a.model} ({res['arch']}) on {a.section}: median UMIs/spot {m_full:.0f} -> {m_thin:.0f} (1/{a.factor:g})")
        for k in ("nuclei_per_mm2", "area_fraction"):
            print(
                f"  {k:16s} full {res['full'][k]:9.4g}  thinned {res['thinned'][k]:9.4g}  ratio {res[k + '_ratio']:.3f} "
                " (goal 0.9-1.1)"
            )
        print(
            f"  tissue IoU thinned vs full render {res['tissue_iou_thinned_vs_full']:.3f} (goal >= 0.85); vs "
            f"real: full {res['full']['tissue_iou_vs_real']:.3f}, thinned {res['thinned']['tissue_iou_vs_real']:.3f}"
        )
        print(f"  mean |full - thinned| {res['mean_abs_pixel_diff'] * 255:.1f}/255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
