"""``napari-gdt render``: generate a region (or the whole canvas) to an image or OME-Zarr."""

from __future__ import annotations

import sys

from ._common import add_model_args, add_render_args, load_model, open_canvas, progress_bar, write_image


def register(sub):
    p = sub.add_parser(
        "render",
        help="render generated tissue to .png/.tif/.npy/.ome.zarr",
        description="Render generated tissue for an expression canvas. Any --tile-px gives the same pixels.",
    )
    add_model_args(p)
    p.add_argument("--expression", required=True, metavar="CANVAS", help="expression canvas (.ome.zarr from napari-gdt convert)")
    p.add_argument("--out", required=True, metavar="OUT", help="output: .png/.tif (8-bit), .npy (float32 HxWxC) or .ome.zarr")
    p.add_argument("--edits", metavar="RECIPE", help="edit recipe JSON applied before rendering")
    p.add_argument("--region", metavar="Y0:Y1,X0:X1", help="output-pixel region (default: whole canvas)")
    p.add_argument("--cache", metavar="DIR", help="on-disk tile cache folder")
    p.add_argument("--workers", type=int, help="render on a local dask.distributed cluster of N workers")
    p.add_argument("--scheduler", metavar="ADDRESS", help="render on an existing dask.distributed scheduler")
    p.add_argument("--zero-fill", action="store_true", help="zero-fill model genes missing from the canvas (warns)")
    z = p.add_argument_group("OME-Zarr output (.ome.zarr)")
    z.add_argument("--ngff", choices=("0.4", "0.5"), default="0.4", help="NGFF version: 0.4 (zarr v2, default) or 0.5 (zarr v3)")
    z.add_argument(
        "--chunk-px", type=int, default=None, help="chunk edge in output px, a multiple of the tile size (default ~1024)"
    )
    z.add_argument("--levels", type=int, default=None, help="pyramid levels (default: until the coarsest is <= 256 px)")
    z.add_argument(
        "--dtype",
        choices=("uint8", "float32"),
        default="uint8",
        help="stored values: uint8 (default) or float32 (exact; for cache warming)",
    )
    z.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace an existing output instead of resuming it (a file we did not write is refused without it; "
            "--into-spatialdata: replace elements of the same names)"
        ),
    )
    d = p.add_argument_group("SpatialData output (--into-spatialdata)")
    d.add_argument(
        "--into-spatialdata",
        action="store_true",
        help=(
            "--out is an existing SpatialData .zarr store: add the generated (and edited) image and the regions to it, "
            "aligned with its real image"
        ),
    )
    d.add_argument(
        "--image-element",
        default=None,
        metavar="NAME",
        help="the store's real image the canvas is registered to (default: the one the canvas was read from)",
    )
    d.add_argument(
        "--element-prefix",
        default="gdt",
        metavar="P",
        help="names of the new elements: P_generated, P_edited, P_regions (default gdt)",
    )
    z.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch CPU threads per dask worker (default: cores // --workers; unchanged with --scheduler)",
    )
    add_render_args(p)
    p.set_defaults(func=run)


def build_renderer(args, bundle, canvas):
    """Renderer for CLI args (edits and cache applied); shared by render/figure/evaluate."""
    from ..rendering.tiles import TileRenderer

    cache = None
    if getattr(args, "cache", None):
        from ..rendering import cache as cache_mod

        cache = cache_mod.open_cache(args.cache)
    if getattr(args, "edits", None):
        from ..editing.recipe import apply_recipe_file

        canvas = apply_recipe_file(args.edits, canvas, px_per_bin=bundle.px_per_bin)
    return TileRenderer(
        bundle,
        canvas,
        seed=args.seed,
        tile_px=args.tile_px,
        device=args.device,
        batch_size=args.batch_size,
        cache=cache,
        zero_fill=args.zero_fill,
    )


def _render_omezarr(args, bundle, region) -> int:
    """``napari-gdt render ... --out OUT.ome.zarr``: the argparse adapter of
    :func:`napari_gdt.export.omezarr_render.render_to_omezarr`."""
    from ..export.omezarr_render import render_to_omezarr

    s = render_to_omezarr(
        args.model,
        args.expression,
        args.out,
        region=region,
        edits=args.edits,
        tile_px=args.tile_px,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        scheduler=args.scheduler,
        ngff=args.ngff,
        progress=True,
        chunk_px=args.chunk_px,
        levels=args.levels,
        dtype=args.dtype,
        batch_size=args.batch_size,
        zero_fill=args.zero_fill,
        overwrite=args.overwrite,
        cache=args.cache,
        torch_threads=args.torch_threads,
        bundle=bundle,
    )
    h, w = s["shape"]
    print(
        f"rendered {h}x{w} px to {s['out']} (OME-Zarr {s['ngff']}, {s['levels']} levels, {s['mode']}): "
        f"{s['computed']} tiles computed, {s['cached']} from cache; "
        f"{s['rendered']} chunks rendered, {s['skipped']} skipped (already done) of {s['chunks']}",
        file=sys.stdout,
    )
    return 0


def run(args):
    from ..errors import GDTError
    from ..rendering.tiles import parse_region
    from ..safeio import check_not_input
    from ._common import check_image_out

    out = str(args.out)
    inputs = [args.expression, args.edits, args.model, getattr(args, "cache", None)]
    if out.lower().rstrip("/").endswith(".ome.zarr") or getattr(args, "into_spatialdata", False):
        check_not_input(out, inputs)  # a SpatialData store is added to, never replaced (see export.spatialdata)
    else:
        check_image_out(out, overwrite=args.overwrite, inputs=inputs)
    bundle = load_model(args.model, args.device)
    canvas = open_canvas(args.expression)
    region = parse_region(args.region) if args.region else None
    if getattr(args, "into_spatialdata", False):
        return _into_spatialdata(args, bundle, canvas, region)
    if out.lower().rstrip("/").endswith(".ome.zarr"):
        return _render_omezarr(args, bundle, region)
    if args.workers or args.scheduler:
        raise GDTError("--workers/--scheduler apply to .ome.zarr output only")
    r = build_renderer(args, bundle, canvas)
    region = r.check_region(region)
    update, bar = progress_bar(len(r.tiles_for(region)), "render")
    img = r.render_region(region, progress=update)
    bar.close()
    write_image(out, img)
    print(
        f"rendered {region.shape[0]}x{region.shape[1]} px to {out}: {r.stats['computed']} tiles computed, {r.stats['cached']} "
        "from cache",
        file=sys.stdout,
    )
    return 0


def _into_spatialdata(args, bundle, canvas, region) -> int:
    from ..errors import GDTError
    from ..export.spatialdata import render_into_spatialdata

    if args.workers or args.scheduler:
        raise GDTError("--workers/--scheduler apply to .ome.zarr output only, not --into-spatialdata")
    cache = None
    if getattr(args, "cache", None):
        from ..rendering import cache as cache_mod

        cache = cache_mod.open_cache(args.cache)
    update, bar = progress_bar(1, "render")
    s = render_into_spatialdata(
        args.out,
        bundle,
        canvas,
        region=region,
        edits=args.edits,
        seed=args.seed,
        tile_px=args.tile_px,
        device=args.device,
        batch_size=args.batch_size,
        cache=cache,
        zero_fill=args.zero_fill,
        image_element=args.image_element,
        prefix=args.element_prefix,
        overwrite=args.overwrite,
        progress=update,
        settings={
            "model": str(args.model),
            "canvas": str(args.expression),
            "recipe_file": str(args.edits) if args.edits else None,
        },
    )
    bar.close()
    h, w = s["region"].shape
    els = ", ".join(f"{n} ({k})" for n, k in s["elements"].items())
    print(
        f"wrote {els} into {args.out}: {h}x{w} px aligned with image '{s['image_element']}' "
        f"in coordinate system(s) {', '.join(s['coordinate_systems'])}",
        file=sys.stdout,
    )
    return 0
