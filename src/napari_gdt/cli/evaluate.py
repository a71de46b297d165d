"""``napari-gdt evaluate``: nuclear morphometrics of generated vs real tissue."""

from __future__ import annotations

import json
import sys

from ._common import add_model_args, add_render_args, load_model, open_canvas, progress_bar


def register(sub):
    p = sub.add_parser(
        "evaluate",
        help="compare generated with real tissue (nuclei density, size, area fraction; Spearman over tiles/spots)",
        description=(
            "Render the generator over a region, resample the real image onto the same grid and compare nuclear "
            "morphometrics (density, mean area, area fraction) globally and over ~256 px tiles (spot footprints for "
            "spot data), against a flat mean-colour baseline and a blurred-real baseline."
        ),
    )
    add_model_args(p)
    p.add_argument("--expression", required=True, metavar="CANVAS", help="expression canvas (.ome.zarr) registered to --image")
    p.add_argument("--image", required=True, metavar="REAL", help="the real image the canvas affine maps to")
    p.add_argument("--region", metavar="Y0:Y1,X0:X1", help="output-pixel region (default: whole canvas)")
    p.add_argument("--edits", metavar="RECIPE", help="edit recipe applied before rendering")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tile", type=int, default=256, help="tile edge (output px) for non-spot data (default 256)")
    p.add_argument("--cache", metavar="DIR", help="on-disk tile cache folder")
    p.add_argument("--blur-baseline", action="store_true", help="also report a blurred-real-image baseline (baseline_blur)")
    p.add_argument("--record", metavar="LABEL", help="write the result into the model card (validation.morphometrics.LABEL) of MODEL (a file)")
    p.add_argument("--zero-fill", action="store_true", help="zero-fill model genes missing from the canvas (warns)")
    add_render_args(p)
    p.set_defaults(func=run)


def run(args):
    from ..analysis.quality import KEYS, evaluate
    from ..rendering.tiles import parse_region
    from ..pixels import read_image
    from .render import build_renderer

    bundle = load_model(args.model, args.device)
    canvas = open_canvas(args.expression)
    real = read_image(args.image)
    from ..analysis.quality import tissue_region

    r = build_renderer(args, bundle, canvas)
    region = r.check_region(parse_region(args.region) if args.region else tissue_region(canvas, bundle.px_per_bin, r.shape_px))
    update, bar = progress_bar(len(r.tiles_for(region)), "render")
    res = evaluate(bundle, canvas, real, region=region, seed=args.seed, tile_px=args.tile, renderer=r, progress=update, blur_baseline=args.blur_baseline)
    bar.close()
    if args.record:
        from ..analysis.quality import record_validation
        from ..models.bundle import BUNDLED_MODELS

        if args.model in BUNDLED_MODELS:
            from ..errors import GDTError

            raise GDTError(f"--record needs a model file, not the bundled name {args.model!r}")
        cmd = "napari-gdt " + " ".join(sys.argv[1:]) if "evaluate" in sys.argv[1:3] else None
        record_validation(args.model, args.record, res, command=cmd)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    print(f"{res['model']} on {args.expression} region {res['region']} ({res['n_units']} {res['units']})")
    blur = res.get("baseline_blur")
    print(f"{'metric':32s} {'generated':>10s} {'baseline':>10s}" + (f" {'blurred':>10s}" if blur else ""))
    for k in KEYS:
        print(f"{k:32s} {f(res[k]):>10s} {f(res['baseline'][k]):>10s}" + (f" {f(blur[k]):>10s}" if blur else ""))
    g, rl = res["generated"], res["real"]
    print(f"real: {rl['count']} nuclei, {rl['density_per_mm2']:.0f}/mm², mean {rl['mean_area_um2']:.1f} µm², area fraction {rl['area_fraction']:.3f}")
    print(f"generated: {g['count']} nuclei, {g['density_per_mm2']:.0f}/mm², mean {g['mean_area_um2']:.1f} µm², area fraction {g['area_fraction']:.3f}")
    sys.stdout.flush()
    return 0
