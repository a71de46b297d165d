"""``napari-gdt convert INPUT... --out CANVAS.ome.zarr [options]``: real spatial data -> expression canvas."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import GDTError, ReaderError


def _floats(text: str, n: int, option: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ReaderError(f"option {option}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n:
        raise ReaderError(f"option {option}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _positive(text, option: str, kind=float, allow_zero: bool = False):
    if text is None:
        return None
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise ReaderError(f"option {option}: expected a number, got {text!r}") from None
    import math

    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ReaderError(f"option {option}: must be {'>= 0' if allow_zero else '> 0'}, got {text!r}")
    return v


def register(sub):
    p = sub.add_parser(
        "convert",
        help="convert real spatial data into an expression canvas (OME-Zarr)",
        description=(
            "Read Xenium, MERFISH, CosMx, a generic transcript table, AnnData/Visium, Visium HD, legacy ST spots or a "
            "SpatialData store and "
            "write an expression canvas: OME-Zarr, axes c,y,x, one channel per gene (omero labels = genes)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input file(s) or folder (legacy ST: counts tsv and spot file)")
    p.add_argument(
        "--out",
        required=True,
        metavar="CANVAS.ome.zarr",
        help="output canvas (a canvas of ours is replaced; anything else is refused without --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out even if napari-gdt did not write it")
    p.add_argument(
        "--format",
        default="auto",
        help="auto|xenium|merfish|cosmx|visium|visium_hd|st|anndata|csv|spatialdata|canvas (default auto: detect)",
    )
    p.add_argument("--bin-um", type=float, default=None, help="bin edge in µm (transcripts default 10)")
    p.add_argument("--bin-px", type=float, default=None, help="bin edge in pixels (with --um-per-px)")
    p.add_argument(
        "--um-per-px",
        type=float,
        default=None,
        help="µm per pixel of pixel coordinates (CosMx default 0.12028) and of the paired image",
    )
    p.add_argument(
        "--genes", default=None, metavar="FILE|G1,G2,...", help="keep these genes, in this order (a file: one gene per line)"
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="follow this model's card: its gene panel (unless --genes), its bin size (unless --bin-um/--bin-px; "
        "warns if the result differs by more than 1%%) and, for spot data, its spot mode (unless --spot-mode)",
    )
    p.add_argument(
        "--zero-fill",
        action="store_true",
        help="fill genes of --genes absent from the data with zeros (warns) instead of failing",
    )
    p.add_argument(
        "--image",
        default=None,
        metavar="IMG",
        help="the paired real image (H&E or DAPI); the canvas records the affine bins -> its pixels",
    )
    p.add_argument(
        "--image-transform",
        default=None,
        metavar="FILE",
        help="3x3 µm -> image px matrix (x first, e.g. Vizgen micron_to_mosaic_pixel_transform.csv)",
    )
    p.add_argument(
        "--image-extent-um", default=None, metavar="XMIN,XMAX,YMIN,YMAX", help="the image spans exactly this µm rectangle"
    )
    p.add_argument(
        "--image-um-per-px", type=float, default=None, help="image pixel size in µm, image corner at 0 µm (Xenium default 0.2125)"
    )
    g = p.add_argument_group("generic tables (--format csv)")
    g.add_argument("--x-col", default="x", help="column of x (default x)")
    g.add_argument("--y-col", default="y", help="column of y (default y)")
    g.add_argument("--gene-col", default="gene", help="column of gene names (default gene)")
    g.add_argument("--units", default="um", choices=["um", "px"], help="units of x and y (px needs --um-per-px)")
    t = p.add_argument_group("transcript filters")
    t.add_argument("--qv-min", type=float, default=None, help="Xenium: drop transcripts with qv below this (default 20)")
    t.add_argument(
        "--coords", default=None, choices=["global", "local"], help="CosMx: global (default) or local px (needs --fov)"
    )
    t.add_argument("--fov", default=None, help="CosMx: keep these fields of view (comma-separated)")
    s = p.add_argument_group("spot data (st, visium, anndata)")
    s.add_argument(
        "--spot-mode",
        default=None,
        choices=["footprint", "spread"],
        help="footprint: counts over each spot's disc; spread: a continuous field",
    )
    s.add_argument("--spot-diameter-px", type=float, default=None, help="spot diameter in image px (default from the data)")
    s.add_argument("--sigma-px", type=float, default=None, help="spread mode: Gaussian width in image px")
    s.add_argument("--layer", default=None, help="AnnData / SpatialData table layer to read (default X)")
    s.add_argument(
        "--hd-bin-um", type=int, default=None, help="Visium HD: which binned_outputs/square_NNNum to read (2, 8 or 16; default 8)"
    )
    d = p.add_argument_group("SpatialData stores (.zarr)")
    d.add_argument("--points", default=None, metavar="NAME", help="points element of transcripts (default: picked, and said)")
    d.add_argument(
        "--table", default=None, metavar="NAME", help="table annotating a shapes element of spots or bins (default: picked)"
    )
    d.add_argument(
        "--image-element",
        default=None,
        metavar="NAME",
        help="image element of the real image (default: the largest in a shared coordinate system)",
    )
    d.add_argument(
        "--coordinate-system",
        default=None,
        metavar="NAME",
        help="coordinate system relating them (default: global, else the first shared)",
    )
    d.add_argument(
        "--um-per-unit",
        type=float,
        default=None,
        help="points: µm per coordinate-system unit (default 1: the coordinate system is in µm)",
    )
    p.add_argument("--chunks", default=None, metavar="G,Y,X", help="chunking of the written canvas (default 32,256,256)")
    p.set_defaults(func=run)


def summary_line(canvas, out, seconds: float | None = None) -> str:
    """The one summary line: genes, bins (y x x), total counts."""
    total = canvas.meta.get("total_counts")
    if total is None:
        total = canvas.total()
    g, h, w = canvas.shape
    tot = f"{int(round(total)):,}" if abs(total - round(total)) < 1e-3 else f"{total:,.1f}"
    extra = ""
    if "transcripts_read" in canvas.meta:
        d = canvas.meta.get("dropped", {})
        dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in d.items() if v)
        extra = f"; {canvas.meta['transcripts_read']:,} transcripts read" + (f", dropped {dropped}" if dropped else "")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"{out}: {g} genes, {h} x {w} bins (y x x) of {canvas.bin_um:g} µm, {tot} total counts{extra}{took}"


def run(args):
    from ..expression.readers import read_any
    from ..safeio import check_not_input, check_output

    out = Path(args.out)
    if not out.name.lower().endswith((".zarr",)):
        raise GDTError(f"{out}: the output canvas must be an OME-Zarr folder ending in .ome.zarr")
    check_not_input(
        out,
        list(args.inputs) + [args.image, args.image_transform, args.genes if args.genes and Path(args.genes).exists() else None],
    )
    check_output(out, overwrite=args.overwrite, what="canvas")
    for opt in ("image_um_per_px", "spot_diameter_px", "sigma_px"):
        _positive(getattr(args, opt), "--" + opt.replace("_", "-"))
    opts = {}
    if args.image_extent_um:
        opts["image_extent_um"] = _floats(args.image_extent_um, 4, "--image-extent-um")
    if args.image_transform:
        opts["image_transform"] = args.image_transform
    if args.image_um_per_px is not None:
        opts["image_um_per_px"] = args.image_um_per_px
    if args.qv_min is not None:
        opts["qv_min"] = args.qv_min
    if args.coords:
        opts["coords"] = args.coords
    if args.fov:
        try:
            opts["fov"] = [int(f) for f in str(args.fov).split(",")]
        except ValueError:
            raise ReaderError(f"option --fov: expected comma-separated integers, got {args.fov!r}") from None
    if args.spot_mode:
        opts["mode"] = args.spot_mode
    for k in (
        "spot_diameter_px",
        "sigma_px",
        "layer",
        "hd_bin_um",
        "points",
        "table",
        "image_element",
        "coordinate_system",
        "um_per_unit",
    ):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    if args.chunks:
        vals = _floats(args.chunks, 3, "--chunks")
        if not all(v >= 1 and v == int(v) and v < 2**31 for v in vals):
            raise ReaderError(f"option --chunks: expected 3 positive integers G,Y,X, got {args.chunks!r}")
        opts["chunks"] = tuple(int(v) for v in vals)

    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=1, desc="reading", unit="", file=sys.stderr, leave=False)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        opts["progress"] = progress
    genes, bin_um, bin_px = args.genes, args.bin_um, args.bin_px
    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    expect = None
    if args.model:
        genes, bin_um, bin_px, expect = _model_defaults(args, inputs, opts)
    t0 = time.perf_counter()
    try:
        canvas = read_any(
            inputs,
            format=args.format,
            bin_um=bin_um,
            bin_px=bin_px,
            um_per_px=args.um_per_px,
            genes=genes,
            zero_fill=args.zero_fill,
            image=args.image,
            x_col=args.x_col,
            y_col=args.y_col,
            gene_col=args.gene_col,
            units=args.units,
            **opts,
        )
    except GDTError as e:
        missing = getattr(e, "missing", None)
        if expect is None or not missing or args.genes:
            raise
        shown = ", ".join(missing[:20]) + (f" ... (+{len(missing) - 20} more)" if len(missing) > 20 else "")
        raise GDTError(
            f"{e}\n  {len(missing)} of the {len(expect['genes'])} genes that model {args.model} reads were never measured in "
            f"this data: {shown}. Add --zero-fill to convert anyway (those genes are then 0 everywhere)."
        ) from None
    if bar is not None:
        bar.close()
    picked = list(canvas.meta.get("picked") or [])
    sdm = canvas.meta.get("spatialdata")
    if sdm:
        what = f"points '{sdm['points']}'" if sdm["kind"] == "points" else f"table '{sdm['table']}' on shapes '{sdm['shapes']}'"
        img = f"image '{sdm['image']}'" if sdm.get("image") else "no image"
        print(f"{sdm['store']}: read {what}, {img}, coordinate system '{sdm['coordinate_system']}'")
        picked += list(sdm.get("picked") or [])
    for note in picked:
        print(f"  {note}")
    chunks = opts.get("chunks")
    from ..safeio import atomic_dir, check_grid

    check_grid(canvas.shape, str(out))
    with atomic_dir(out) as tmp:  # the old canvas stays until the new one is complete
        canvas.to_ome_zarr(tmp, chunks=chunks)
    print(summary_line(canvas, out, time.perf_counter() - t0))
    if expect is not None:
        _check_bin(canvas, expect, args.model)
    return 0


def _model_defaults(args, inputs, opts):
    """Genes, bin size and spot mode from the model card (``--model``) where the user gave none."""
    from ..expression.readers import detect_format
    from ..models.card import expected_input, read_card

    expect = expected_input(read_card(args.model))
    genes = args.genes or expect["genes"]
    bin_um, bin_px = args.bin_um, args.bin_px
    fmt = args.format
    if fmt == "auto":
        try:
            fmt = detect_format(inputs if isinstance(inputs, str) else [Path(p) for p in inputs])
        except GDTError:
            fmt = "auto"  # read_any reports it
    spots = fmt in ("st", "visium", "anndata")
    taken = []
    if bin_um is None and bin_px is None:
        if spots and expect["bin_px"] and args.um_per_px is None:
            bin_px = expect["bin_px"]
            taken.append(f"bin {bin_px:g} image px")
        elif spots and args.um_per_px is not None or not spots:
            bin_um = expect["bin_um"]
            taken.append(f"bin {bin_um:.2f} µm")
    if spots and args.spot_mode is None and expect["spot_mode"]:
        opts["mode"] = expect["spot_mode"]
        taken.append(f"spot mode {expect['spot_mode']}")
    if not args.genes:
        taken.append(f"panel of {len(genes)} genes")
    if taken:
        print(f"model {args.model}: using its {', '.join(taken)} (from the model card)")
    return genes, bin_um, bin_px, expect


def _check_bin(canvas, expect, model) -> None:
    """Say how the canvas bin compares with the model's; warn above 1 %."""
    want, got = expect["bin_um"], float(canvas.bin_um)
    rel = got / want - 1.0
    if abs(rel) > 0.01:
        import warnings

        # the CLI prints our warnings as one line: "napari-gdt convert: warning: bins of ..."
        warnings.warn(
            f"bins of {got:.2f} µm differ from model {model}'s {want:.2f} µm by {rel * 100:+.1f}% "
            f"(more than 1%): the generator will paint tissue at the wrong scale; convert with --bin-um {want:.2f}",
            stacklevel=2,
        )
    else:
        print(f"bins of {got:.2f} µm match model {model}'s {want:.2f} µm to {abs(rel) * 100:.1f}%")
