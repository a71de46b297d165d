"""No copied pixels: nearest-training-patch distance of generated against real held-out patches.

A generator that copied pieces of its training images would paint patches much closer to some
training patch than real tissue it never saw is. For N tissue patches of the generated held-out
section and N of the real held-out section, this finds the nearest patch among all tissue patches
of the training images (dense grid, stride 4 px) and compares the distance distributions.
Goal: generated distances no smaller than real ones (5th percentile and median).

    PYTHONPATH=src python benchmarks/bench_memorisation.py --model her2st-he \
        --train-image C2/he.jpg --train-expression her2st_C2.ome.zarr [...repeat] \
        --image C5/he.jpg --expression her2st_C5.ome.zarr [--patch 32] [--n 400]

Patches are compared as 4 x 4-px block means (colour per 6 µm for her2st) after removing each
patch's mean colour, so stain drift between sections does not hide a copy.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _descriptors(img, mask, patch, stride, rng=None, n=None):
    """Mean-free 4x4-block-mean descriptors of the mostly-tissue patches on a ``stride`` grid."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage as ndi

    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    pooled = F.avg_pool2d(t, 4)  # (1, C, H/4, W/4)
    k, s = patch // 4, max(stride // 4, 1)
    H, W = img.shape[:2]
    ny = (pooled.shape[-2] - k) // s + 1
    nx = (pooled.shape[-1] - k) // s + 1
    yy, xx = np.meshgrid(np.arange(ny) * s * 4, np.arange(nx) * s * 4, indexing="ij")
    frac = ndi.uniform_filter(mask.astype(np.float32), patch)[
        np.clip(yy + patch // 2, 0, H - 1), np.clip(xx + patch // 2, 0, W - 1)
    ]
    keep = (frac > 0.9).ravel()
    idx = np.nonzero(keep)[0]
    if n is not None and len(idx) > n:
        idx = np.sort(rng.choice(idx, n, replace=False))
    cols = F.unfold(pooled, k, stride=s)[0]  # (C*k*k, ny*nx)
    d = cols[:, torch.from_numpy(idx)].T.reshape(len(idx), img.shape[2], k * k)
    d = d - d.mean(dim=2, keepdim=True)
    return d.reshape(len(idx), -1).half(), np.stack([yy.ravel()[idx], xx.ravel()[idx]], 1)


def nearest(q, bank, chunk=4096):
    import torch

    best = torch.full((len(q),), float("inf"))
    qf = q.float()
    for i in range(0, len(bank), chunk):
        d = torch.cdist(qf, bank[i : i + chunk].float())
        best = torch.minimum(best, d.min(dim=1).values)
    return best.numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train-image", action="append", required=True)
    ap.add_argument("--train-expression", action="append", required=True)
    ap.add_argument("--image", required=True, help="held-out real image")
    ap.add_argument("--expression", required=True, help="held-out canvas")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from napari_gdt.analysis import morphometrics as mm
    from napari_gdt.analysis.quality import real_on_model_grid, tissue_region
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle, resolve_model
    from napari_gdt.rendering.tiles import TileRenderer
    from napari_gdt.training.sampling import read_image

    b = load_bundle(resolve_model(a.model), device="cpu")
    ppb, um = b.px_per_bin, b.um_per_px
    rng = np.random.default_rng(a.seed)
    banks = []
    for ip, ep in zip(a.train_image, a.train_expression):
        c = ExpressionCanvas.from_ome_zarr(ep)
        shape = (c.shape[1] * ppb, c.shape[2] * ppb)
        r = TileRenderer(b, c, device="cpu")
        region = r.check_region(tissue_region(c, ppb, shape))
        img = real_on_model_grid(read_image(ip), c, ppb, region)
        d, _ = _descriptors(img, mm.tissue_mask(img, "he", um), a.patch, a.stride)
        banks.append(d)
    bank = torch.cat(banks)
    c = ExpressionCanvas.from_ome_zarr(a.expression)
    r = TileRenderer(b, c, seed=a.seed, device="cpu", batch_size=4)
    region = r.check_region(tissue_region(c, ppb, r.shape_px))
    real = real_on_model_grid(read_image(a.image), c, ppb, region)
    gen = r.render_region(region)
    mask = mm.tissue_mask(real, "he", um) & mm.tissue_mask(gen, "he", um)
    q_real, _ = _descriptors(real, mask, a.patch, a.patch, rng, a.n)
    q_gen, _ = _descriptors(gen, mask, a.patch, a.patch, rng, a.n)
    dr, dg = nearest(q_real, bank), nearest(q_gen, bank)
    res = {
        "model": a.model,
        "arch": b.card.get("arch"),
        "bank_patches": int(len(bank)),
        "patch_px": a.patch,
        "n": [int(len(dr)), int(len(dg))],
    }
    for name, d in (("real_held_out", dr), ("generated", dg)):
        res[name] = {f"p{q}": float(np.percentile(d, q)) for q in (1, 5, 50)} | {"min": float(d.min())}
    res["generated_over_real_p5"] = res["generated"]["p5"] / res["real_held_out"]["p5"]
    res["generated_over_real_median"] = res["generated"]["p50"] / res["real_held_out"]["p50"]
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
