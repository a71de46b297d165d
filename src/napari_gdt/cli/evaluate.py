"""``napari-gdt evaluate``: the fidelity yardstick (nuclear morphometrics, tissue outline, architecture,
lattice artefacts, strong baselines, a two-sample test; over seeds and edits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import add_model_args, add_render_args, load_model, open_canvas


def register(sub):
    p = sub.add_parser(
        "evaluate",
        help="score generated against real tissue (morphometrics, outline, architecture, lattice, baselines, two-sample test)",
        description=(
            "Render the generator over a region (for --seeds seeds), resample the real image onto the same grid and compare: "
            "nuclear morphometrics globally and over spot footprints / tiles, against a flat baseline and the library_size "
            "and ridge baselines fitted on training sections (never the scored one); the tissue outline (tissue_iou); "
            "architecture (density_cv_ratio_50/100/200um); per-nucleus distributions (w1_iqr_*); lattice and streak "
            "artefacts; with --c2st, a classifier two-sample test with its controls. With --edits, effect sizes of the edit."
        ),
    )
    add_model_args(p)
    p.add_argument("--expression", required=True, metavar="CANVAS", help="expression canvas (.ome.zarr) registered to --image")
    p.add_argument("--image", required=True, metavar="REAL", help="the real image the canvas affine maps to")
    p.add_argument("--region", metavar="Y0:Y1,X0:X1", help="output-pixel region (default: whole canvas)")
    p.add_argument(
        "--edits", metavar="RECIPE", help="edit recipe applied before rendering; with it, edit_effect reports effect sizes"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="render N seeds (--seed, --seed+1, ...) and report mean and SD (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tile", type=int, default=256, help="tile edge (output px) for non-spot data (default 256)")
    p.add_argument("--cache", metavar="DIR", help="on-disk tile cache folder")
    p.add_argument("--blur-baseline", action="store_true", help="also report a blurred-real-image baseline (baseline_blur)")
    p.add_argument(
        "--c2st", action="store_true", help="run the classifier two-sample test (about a minute per comparison on one core)"
    )
    p.add_argument(
        "--depth-normalised",
        action="store_true",
        help="also score the canvas with every bin scaled to the same total count (how much of the Spearman is sequencing depth)",
    )
    p.add_argument(
        "--control-image",
        metavar="REAL2",
        help="two-sample test control: another real section (default for her2st-he: C4; merfish-dapi: the field's left quarter)",
    )
    p.add_argument("--control-expression", metavar="CANVAS2", help="the canvas registered to --control-image")
    b = p.add_argument_group("baselines (library_size, ridge; fitted on training sections only)")
    b.add_argument(
        "--train-image",
        action="append",
        default=[],
        metavar="IMG",
        help="a training section's real image (repeat; paired with --train-expression)",
    )
    b.add_argument(
        "--train-expression", action="append", default=[], metavar="CANVAS", help="a training section's canvas (repeat)"
    )
    b.add_argument(
        "--fit-baselines",
        metavar="SECTIONS",
        help="fit on these recipe sections now (her2st: e.g. C2,C3,C4; merfish: 'train') instead of the card's record",
    )
    b.add_argument(
        "--record-baselines",
        action="store_true",
        help="write the baselines fitted now into MODEL's card (field 'baselines'; a file)",
    )
    p.add_argument(
        "--record",
        metavar="LABEL",
        help="write the result into the model card (validation.morphometrics.LABEL) of MODEL (a file)",
    )
    p.add_argument("--zero-fill", action="store_true", help="zero-fill model genes missing from the canvas (warns)")
    add_render_args(p)
    p.set_defaults(func=run)


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def _baselines(args, bundle):
    """(record or None, source, pairs-were-fitted) following: --train-* > --fit-baselines > card > recipe default."""
    from ..analysis import baselines as bl
    from ..errors import GDTError
    from ..training.sampling import read_image

    if len(args.train_image) != len(args.train_expression):
        raise GDTError(
            f"--train-image given {len(args.train_image)} time(s) but --train-expression {len(args.train_expression)}: give "
            "them in pairs"
        )
    scored = Path(args.image).resolve()
    if args.train_image:
        for ti in args.train_image:
            if Path(ti).resolve() == scored:
                raise GDTError(f"{ti}: a training image is the scored image; baselines are never fitted on the scored section")
        pairs = [
            bl.unit_pairs(
                bundle, open_canvas(c), read_image(i), tile_px=args.tile, label=Path(i).parent.name + "/" + Path(i).name
            )
            for i, c in zip(args.train_image, args.train_expression)
        ]
        rec = bl.fit_baselines(pairs)
        return rec, f"fitted now on --train-image {', '.join(args.train_image)}", True
    name = str(bundle.card.get("name", ""))
    if args.fit_baselines:
        return _recipe_baselines(args, bundle, name, args.fit_baselines, scored) + (True,)
    if isinstance(bundle.card.get("baselines"), dict):
        rec = bundle.card["baselines"]
        return rec, f"model card (fitted on {', '.join(rec.get('fitted_on', []))})", False
    if name in ("her2st-he", "merfish-dapi"):
        try:
            return _recipe_baselines(args, bundle, name, "C2,C3,C4" if name == "her2st-he" else "train", scored) + (True,)
        except GDTError as e:
            return None, f"none: no record in the card and the recipe's training data are not available ({e})", False
    return None, "none: no record in the card; give --train-image/--train-expression", False


def _recipe_baselines(args, bundle, name, sections, scored):
    from ..analysis import baselines as bl
    from ..errors import GDTError

    secs = [s.strip() for s in sections.split(",") if s.strip()]
    if name.startswith("merfish") or secs == ["train"]:
        if args.region and args.region.replace(" ", "") != bl.MERFISH_VAL_REGION:
            _say(
                f"note: merfish baselines are fitted on {bl.MERFISH_TRAIN_REGION}; the scored region {args.region} should not "
                "overlap it"
            )
        rec = bl.fit_baselines(bl.merfish_training_pairs(bundle, tile_px=args.tile, progress=_say))
        return rec, f"fitted now on the merfish recipe's training part {bl.MERFISH_TRAIN_REGION}"
    from ..data import fetch_her2st

    for s in secs:
        if Path(fetch_her2st(s)["image"]).resolve() == scored:
            raise GDTError(f"--fit-baselines: section {s} is the scored section; baselines are never fitted on it")
    rec = bl.fit_baselines(bl.her2st_training_pairs(bundle, secs, tile_px=args.tile, progress=_say))
    return rec, f"fitted now on her2st {', '.join(secs)} (recipe data)"


def _control(args, bundle):
    """The two-sample test's real-vs-real control: (image on the model grid, tissue mask) or None."""
    from ..analysis.fidelity import segment_tissue
    from ..analysis.quality import real_on_model_grid, tissue_region
    from ..rendering.tiles import Region
    from ..training.sampling import read_image

    kind = "he" if bundle.output_kind == "he" else "dapi"
    name = str(bundle.card.get("name", ""))
    if args.control_image:
        if not args.control_expression:
            from ..errors import GDTError

            raise GDTError("--control-image needs --control-expression (the canvas registered to it)")
        c, img = open_canvas(args.control_expression), read_image(args.control_image)
    elif name == "her2st-he" and Path(args.image).parent.name != "C4":
        from ..errors import GDTError
        from ..training.recipes import demo_canvas

        try:
            c, ip, _ = demo_canvas("her2st", "C4", genes=list(bundle.genes))
        except (GDTError, OSError, ValueError) as e:  # data not available: no control
            _say(f"note: no two-sample control ({e})")
            return None, None
        img = read_image(ip)
        args.control_image = str(ip)
    elif name == "merfish-dapi":
        from ..analysis.baselines import MERFISH_VAL_REGION
        from ..rendering.tiles import parse_region

        c, img = open_canvas(args.expression), read_image(args.image)
        reg = parse_region("0:1040,0:288")  # the left quarter (the held-out one is the right quarter)
        if args.region and args.region.replace(" ", "") != MERFISH_VAL_REGION:
            return None, None
        r = real_on_model_grid(img, c, bundle.px_per_bin, reg)[..., 0]
        return (r, segment_tissue(r, kind, bundle.um_per_px)), "merfish z0 real, left quarter 0:1040,0:288"
    else:
        return None, None
    Hb, Wb = c.n_bins
    shape = (Hb * bundle.px_per_bin, Wb * bundle.px_per_bin)
    reg = tissue_region(c, bundle.px_per_bin, shape) or Region(0, shape[0], 0, shape[1])
    r = real_on_model_grid(img, c, bundle.px_per_bin, reg)
    if kind == "dapi":
        r = r[..., 0]
    return (r, segment_tissue(r, kind, bundle.um_per_px)), f"real {args.control_image}"


def run(args):
    import time

    from ..analysis.fidelity import FIDELITY_KEYS, evaluate_model
    from ..analysis.quality import KEYS, tissue_region
    from ..errors import GDTError
    from ..pixels import read_image
    from ..rendering.tiles import parse_region
    from .render import build_renderer

    if args.seeds < 1:
        raise GDTError(f"--seeds must be >= 1, got {args.seeds}")
    if args.record_baselines and not Path(args.model).is_file():
        raise GDTError(f"--record-baselines needs a model file, not {args.model!r}")
    bundle = load_model(args.model, args.device)
    canvas = open_canvas(args.expression)
    real = read_image(args.image)
    edits = args.edits
    args.edits = None  # the renderer is built on the unedited canvas; evaluate_model applies the recipe
    r = build_renderer(args, bundle, canvas)
    region = r.check_region(parse_region(args.region) if args.region else tissue_region(canvas, bundle.px_per_bin, r.shape_px))
    t0 = time.perf_counter()
    rec, source, fitted = _baselines(args, bundle)
    t_fit = time.perf_counter() - t0
    control, control_label = (None, None)
    if args.c2st:
        control, control_label = _control(args, bundle)
    rk = {"tile_px": args.tile_px, "batch_size": args.batch_size, "cache": r.cache, "zero_fill": args.zero_fill}
    res = evaluate_model(
        bundle, canvas, real, region=region, seeds=args.seeds, seed=args.seed, edits=edits, tile_px=args.tile, device=args.device,
        baselines=rec, c2st=args.c2st, control=control, depth_normalised=args.depth_normalised,
        blur_baseline=args.blur_baseline, renderer_kwargs=rk, log=_say,
    )  # fmt: skip
    res["baselines_source"] = source
    if fitted:
        res["timings_s"]["baselines_fit"] = round(t_fit, 2)
    if args.c2st:
        res["c2st"]["control_other_section_is"] = control_label
    if args.record_baselines:
        if rec is None or not fitted:
            raise GDTError(
                "--record-baselines: no baselines were fitted (give --fit-baselines or --train-image/--train-expression)"
            )
        from ..analysis.baselines import write_baselines

        write_baselines(args.model, rec)
    if args.record:
        from ..analysis.quality import record_validation
        from ..models.bundle import BUNDLED_MODELS

        if args.model in BUNDLED_MODELS:
            raise GDTError(f"--record needs a model file, not the bundled name {args.model!r}")
        cmd = "napari-gdt " + " ".join(sys.argv[1:]) if "evaluate" in sys.argv[1:3] else None
        record_validation(args.model, args.record, res, command=cmd)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    def pm(k):
        sd = res["seed_sd"].get(k)
        return f(res.get(k)) + ("" if sd is None else f" ± {sd:.3f}")

    B = res["baselines"]
    print(f"{res['model']} on {args.expression} region {res['region']} ({res['n_units']} {res['units']}), seeds {res['seeds']}")
    print(f"baselines: {res['baselines_source']}")
    print(f"{'metric':30s} {'generated':>16s} {'flat':>8s} {'lib size':>8s} {'ridge':>8s}")
    for k in KEYS:
        print(f"{k:30s} {pm(k):>16s} " + " ".join(f"{f((B.get(b) or {}).get(k)):>8s}" for b in ("flat", "library_size", "ridge")))
    for k in FIDELITY_KEYS:
        print(f"{k:30s} {pm(k):>16s}")
    for k, c in ((res.get("fidelity_details") or {}).get("spatial_rho_context") or {}).items():
        if c.get("expected") is not None:
            print(
                f"{k}: one render {f(res.get(k))}, the model's expectation {f(c['expected'])} ({c['n_seeds']}-seed mean "
                f"{f(c['seed_mean'])}, two seeds agree at {f(c['between_seeds'])}); ridge {f((B.get('ridge') or {}).get(k))}"
            )
    for k, v in (res.get("depth_normalised") or {}).items():
        print(f"{k + ' (depth normalised)':30s} {f(v):>16s}")
    if "c2st" in res:
        for v in ("rgb", "lum"):
            c = res["c2st"][v]
            oth = c.get("control_other_section")
            print(
                f"two-sample test ({v}): generated {f(c['generated']['accuracy'])}, real vs other section "
                f"{f(oth['accuracy']) if oth else 'n/a'}, real vs blurred {f(c['control_blur']['accuracy'])}"
            )
    if "edit_effect" in res:
        e = res["edit_effect"]
        print(
            f"edit: {e['edited_mm2']:.3f} mm² edited; mean |Δpixel| {f(e['mean_abs_dpixel_255'])}/255 (between seeds "
            f"{f(e['mean_abs_dpixel_255_between_seeds'])}/255)"
        )
        for k, v in e["metrics"].items():
            print(f"  {k:36s} Δ {f(v['delta']):>8s}  effect size {f(v['effect_size']):>8s}")
    g, rl = res["generated"], res["real"]
    print(
        f"real: {rl['count']} nuclei, {rl['density_per_mm2']:.0f}/mm², mean {rl['mean_area_um2']:.1f} µm², area fraction "
        f"{rl['area_fraction']:.3f}"
    )
    print(
        f"generated: {g['count']:.0f} nuclei, {g['density_per_mm2']:.0f}/mm², mean {g['mean_area_um2']:.1f} µm², area fraction "
        f"{g['area_fraction']:.3f}"
    )
    sys.stdout.flush()
    return 0
