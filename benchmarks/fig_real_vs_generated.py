"""Real against generated at three zooms (whole tissue, ~1 mm, ~250 µm), side by side.

    PYTHONPATH=src python benchmarks/fig_real_vs_generated.py --model her2st-he \
        --expression runs/data/her2st_C5.ome.zarr --image $NAPARI_GDT_DATA/her2st/C5/he.jpg \
        --out runs/figs/C5 [--model2 OLD.safetensors] [--seed 0] [--centre Y,X] [--within Y0:Y1,X0:X1] [--zooms 1000,250]

Writes ``OUT_whole.png``, ``OUT_1mm.png`` and ``OUT_250um.png`` (real | generated [| model2]).
The renders show real data: look at them, do not commit them.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--model2", default=None, help="a second model rendered beside (e.g. the previous version)")
    ap.add_argument("--expression", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True, help="output prefix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--centre", default=None, help="Y,X output px of the zoom centre (default: the densest tissue bin)")
    ap.add_argument("--whole-max", type=int, default=1400, help="longest edge of the whole-tissue panel (px)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-whole", action="store_true", help="only the zooms")
    ap.add_argument(
        "--within",
        default=None,
        help="Y0:Y1,X0:X1 output px: the 'whole' panel is this region (e.g. a held-out quarter) and the zooms stay inside it",
    )
    ap.add_argument("--zooms", default="1000,250", help="edge of each zoom in µm (clipped to the region; default 1000,250)")
    a = ap.parse_args(argv)

    import torch
    from PIL import Image

    torch.set_num_threads(a.threads)
    from napari_gdt.analysis.quality import tissue_region
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle, resolve_model
    from napari_gdt.rendering.tiles import Region, TileRenderer
    from napari_gdt.training.sampling import read_image, resample_to_model_grid

    canvas = ExpressionCanvas.from_ome_zarr(a.expression)
    bundles = [load_bundle(resolve_model(a.model), device="cpu")]
    if a.model2:
        bundles.append(load_bundle(resolve_model(a.model2), device="cpu"))
    b0 = bundles[0]
    ppb, um = b0.px_per_bin, b0.um_per_px
    Hb, Wb = canvas.shape[1:]
    real_full = resample_to_model_grid(read_image(a.image), canvas.affine, ppb, (Hb * ppb, Wb * ppb))
    rend = [TileRenderer(b, canvas, seed=a.seed, device="cpu", batch_size=4) for b in bundles]
    if a.within:
        from napari_gdt.rendering.tiles import parse_region

        whole = rend[0].check_region(parse_region(a.within))
    else:
        whole = rend[0].check_region(tissue_region(canvas, ppb, rend[0].shape_px))
    if a.centre:
        cy, cx = (int(v) for v in a.centre.split(","))
    else:
        tot = np.asarray(canvas.data.sum(axis=0) if hasattr(canvas.data, "sum") else canvas.data.sum(0), dtype=float)
        from scipy import ndimage as ndi

        sm = ndi.uniform_filter(tot, 9)
        by, bx = np.unravel_index(np.argmax(sm), sm.shape)
        cy, cx = int(by * ppb + ppb // 2), int(bx * ppb + ppb // 2)

    def panel(region, name, max_edge=None):
        tiles = [real_full[region.y0 : region.y1, region.x0 : region.x1]]
        for r in rend:
            tiles.append(r.render_region(region))
        gap = np.ones((tiles[0].shape[0], 8, tiles[0].shape[2]), np.float32)
        row = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1)
        img = Image.fromarray((np.clip(row, 0, 1) * 255).astype(np.uint8).squeeze())
        if max_edge and max(img.size) > max_edge * len(tiles):
            s = max_edge * len(tiles) / max(img.size)
            img = img.resize((int(img.size[0] * s), int(img.size[1] * s)), Image.LANCZOS)
        elif not max_edge and img.size[1] < 600:  # small zooms: enlarge (nearest) so nuclei are visible
            f = max(1, 600 // img.size[1])
            img = img.resize((img.size[0] * f, img.size[1] * f), Image.NEAREST)
        path = f"{a.out}_{name}.png"
        img.save(path)
        print(
            f"{path}: region {region.y0}:{region.y1},{region.x0}:{region.x1} ({(region.y1 - region.y0) * um:.0f} "
            f"x {(region.x1 - region.x0) * um:.0f} µm), panels real | "
            + " | ".join(str(b.card.get("name")) + " " + b.card.get("arch", "") for b in bundles)
        )

    if not a.no_whole:
        panel(whole, "whole", a.whole_max)
    box = whole if a.within else Region(0, Hb * ppb, 0, Wb * ppb)
    for size_um in (float(v) for v in a.zooms.split(",")):
        name = "1mm" if size_um == 1000 else f"{size_um:g}um"
        h = min(int(round(size_um / um)), box.y1 - box.y0)
        w = min(int(round(size_um / um)), box.x1 - box.x0)
        y0 = int(np.clip(cy - h // 2, box.y0, box.y1 - h))
        x0 = int(np.clip(cx - w // 2, box.x0, box.x1 - w))
        panel(Region(y0, y0 + h, x0, x0 + w), name)


if __name__ == "__main__":
    main()
