"""``napari-gdt figure``: a multi-panel figure (real, generated, edited, difference, expression) of a region."""

from __future__ import annotations

import sys

from ._common import add_model_args, add_render_args, load_model, open_canvas, progress_bar


def register(sub):
    p = sub.add_parser(
        "figure",
        help="write a multi-panel figure (.png/.tif/.pdf) of a region",
        description=(
            "Render a region and write a figure with panels side by side: real image, generated, edited, "
            "|edited - generated| heat map and chosen genes, each labelled, with a scale bar in µm and a gene legend. "
            "Uses the same tile renderer as napari-gdt render; only the region is rendered."
        ),
    )
    add_model_args(p)
    p.add_argument("--expression", required=True, metavar="CANVAS", help="expression canvas (.ome.zarr from napari-gdt convert)")
    p.add_argument("--region", required=True, metavar="Y0:Y1,X0:X1", help="output-pixel region of the figure")
    p.add_argument(
        "--out",
        required=True,
        metavar="FIG",
        help="figure file: .png, .tif or .pdf (a file we did not write is refused without --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out even if napari-gdt did not write it")
    p.add_argument("--edits", metavar="RECIPE", help="edit recipe JSON (enables the edited and difference panels)")
    p.add_argument(
        "--image", metavar="REAL", help="paired real image (enables the real panel; resampled through the canvas affine)"
    )
    p.add_argument(
        "--panels",
        metavar="P1,P2,...",
        help="panels in order, from real,generated,edited,difference,expression "
        "(default: real if --image, generated, edited and difference if --edits, expression if --genes)",
    )
    p.add_argument(
        "--genes",
        metavar="G1,G2",
        help="genes of the expression panel, as additive colours (default: the 3 with most counts in the region)",
    )
    p.add_argument("--dpi", type=float, default=150, help="resolution in dots per inch (default 150)")
    p.add_argument(
        "--scalebar-um",
        type=float,
        default=None,
        metavar="N",
        help="scale-bar length in µm (default: a round number near 1/4 of the panel width)",
    )
    p.add_argument("--panel-width-in", type=float, default=2.4, metavar="IN", help="width of each panel in inches (default 2.4)")
    p.add_argument("--cache", metavar="DIR", help="on-disk tile cache folder")
    p.add_argument("--zero-fill", action="store_true", help="zero-fill model genes missing from the canvas (warns)")
    add_render_args(p)
    p.set_defaults(func=run)


def run(args):
    import argparse

    from ..errors import GDTError
    from ..export.figure import FIGURE_EXTS, open_real_image, parse_panels, render_figure
    from ..rendering.tiles import MemoryTileCache, parse_region
    from .render import build_renderer

    out = str(args.out)
    if not out.lower().endswith(FIGURE_EXTS):
        raise GDTError(f"{out}: unsupported figure extension (use .png, .tif or .pdf)")
    from ..safeio import check_not_input, check_output

    check_not_input(out, [args.expression, args.model, args.image, args.edits])
    check_output(out, overwrite=args.overwrite, what="figure")
    panels = parse_panels(args.panels)
    genes = [g.strip() for g in args.genes.split(",") if g.strip()] if args.genes else None
    region = parse_region(args.region)
    bundle = load_model(args.model, args.device)
    canvas = open_canvas(args.expression)
    canvas.meta.setdefault("path", str(args.expression))
    real = open_real_image(args.image) if args.image else None

    # One tile cache for both renderers: tiles whose windows the edits do not touch are computed once.
    shared = argparse.Namespace(**vars(args))
    shared.edits = None
    original = build_renderer(shared, bundle, canvas)
    if original.cache is None:
        original.cache = MemoryTileCache()
    edited = None
    if args.edits:
        edited = build_renderer(args, bundle, canvas)
        edited.cache = original.cache
    region = original.check_region(region)
    n_tiles = len(original.tiles_for(region)) * (2 if edited is not None else 1)
    update, bar = progress_bar(n_tiles, "figure")
    done = [0, 0]

    def progress(d, total):  # two renders in a row: report their sum
        if d == 1 and done[1]:
            done[0] += done[1]
        done[1] = d
        update(done[0] + d, n_tiles)

    info = render_figure(
        original,
        region,
        out,
        edited_renderer=edited,
        real_image=real,
        panels=panels,
        genes=genes,
        dpi=args.dpi,
        scalebar_um=args.scalebar_um,
        panel_width_in=args.panel_width_in,
        progress=progress,
    )
    bar.close()
    computed = original.stats["computed"] + (edited.stats["computed"] if edited is not None else 0)
    cached = original.stats["cached"] + (edited.stats["cached"] if edited is not None else 0)
    h, w = info.size_px
    print(
        f"wrote {out}: {len(info.panels)} panels ({', '.join(info.panels)}) of region {region}, "
        f"{w}x{h} px at {info.dpi:g} dpi, scale bar {info.scalebar_um:g} µm; "
        f"{computed} tiles computed, {cached} from cache",
        file=sys.stdout,
    )
    return 0
