"""Visible what-ifs: the effect of an edit recipe on nuclei, in units of seed-to-seed SD.

Renders the bounding box of the recipe's edited region with and without the recipe, for
``--seeds`` seeds, and measures nuclei density and nuclear area fraction inside the region.
Prints, per metric, the effect (edited - unedited, mean over seeds) divided by the SD over seeds
of the unedited metric, and the mean |Δpixel| inside the region (0-255 scale).

    PYTHONPATH=src python benchmarks/bench_whatif.py --model her2st-he \
        --expression runs/data/her2st_C5.ome.zarr --recipe transfer.json [--seeds 3] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--expression", required=True)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from napari_gdt.analysis import morphometrics as mm
    from napari_gdt.editing.recipe import load_recipe
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle, resolve_model
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b = load_bundle(resolve_model(a.model), device="cpu")
    ppb, um = b.px_per_bin, b.um_per_px
    canvas = ExpressionCanvas.from_ome_zarr(a.expression).align(b.genes)
    recipe = load_recipe(a.recipe)
    edited = recipe.apply(canvas, ppb)
    mask_bins = recipe.edit_mask(canvas, ppb)  # (Hb, Wb) bool? (bins or px)
    m = np.asarray(mask_bins, dtype=bool)
    if m.shape == canvas.shape[1:]:
        m = np.kron(m, np.ones((ppb, ppb), dtype=bool))
    ys, xs = np.nonzero(m)
    region = Region(int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    rm = m[region.y0 : region.y1, region.x0 : region.x1]
    rows = []
    for seed in range(a.seeds):
        imgs = {}
        for name, c in (("unedited", canvas), ("edited", edited)):
            imgs[name] = TileRenderer(b, c, seed=seed, device="cpu", batch_size=4).render_region(region)
        rec = {"seed": seed, "mean_abs_dpixel_255": float(np.abs(imgs["edited"] - imgs["unedited"])[rm].mean() * 255)}
        for name, img in imgs.items():
            kind = "he" if b.output_kind == "he" else "dapi"
            st = mm.measure_nuclei(img if kind == "he" else img[..., 0], kind, um, mask=rm)
            rec[name] = {"density_per_mm2": float(st.density_per_mm2), "area_fraction": float(st.area_fraction)}
        rows.append(rec)
    res = {
        "model": a.model,
        "arch": b.card.get("arch"),
        "recipe": a.recipe,
        "region": str(region),
        "seeds": a.seeds,
        "per_seed": rows,
    }
    for k in ("density_per_mm2", "area_fraction"):
        u = np.array([r["unedited"][k] for r in rows])
        e = np.array([r["edited"][k] for r in rows])
        sd = float(u.std(ddof=1)) if len(u) > 1 else float("nan")
        res[k] = {
            "unedited_mean": float(u.mean()),
            "edited_mean": float(e.mean()),
            "seed_sd": sd,
            "effect_over_sd": float((e - u).mean() / sd) if sd > 0 else float("nan"),
            "relative_change": float((e - u).mean() / max(u.mean(), 1e-9)),
        }
    res["mean_abs_dpixel_255"] = float(np.mean([r["mean_abs_dpixel_255"] for r in rows]))
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{a.model} ({res['arch']}), {a.recipe}, region {region}, {a.seeds} seeds")
        for k in ("density_per_mm2", "area_fraction"):
            r = res[k]
            print(
                f"  {k:16s} {r['unedited_mean']:.4g} -> {r['edited_mean']:.4g} ({r['relative_change']:+.1%}), seed "
                f"SD {r['seed_sd']:.3g}, effect {r['effect_over_sd']:+.1f} SD"
            )
        print(f"  mean |Δpixel| in the region {res['mean_abs_dpixel_255']:.1f}/255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
