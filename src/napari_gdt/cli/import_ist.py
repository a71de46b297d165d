"""``napari-gdt import-ist``: convert an IST-editing checkpoint into a model bundle."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "import-ist",
        help="convert an IST-editing checkpoint (.pt) into a model bundle",
        description=(
            "Convert the EMA generator (g_ema) of an IST-editing checkpoint into a napari-gdt bundle with a "
            "full model card. The checkpoint is read with torch.load(weights_only=True): no code in it runs."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="IST-editing checkpoint (.pt, e.g. 800000.pt)")
    p.add_argument(
        "--genes",
        required=True,
        metavar="GENES",
        help="the model's gene panel in training order: text (one per line), JSON list, or 10x features.tsv(.gz)",
    )
    p.add_argument(
        "--output", choices=["auto", "dapi", "he"], default="auto", help="what the model paints (default: from the channel count)"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="MODEL.safetensors",
        help="bundle to write (a file we did not write is refused without --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out even if napari-gdt did not write it")
    p.add_argument("--um-per-px", type=float, default=0.2125, help="µm per output pixel (default 0.2125, Xenium)")
    p.add_argument("--name", help="model name in the card (default: ist-editing-<output>-<checkpoint name>)")
    p.add_argument("--tile-px", type=int, default=128, help="default tile size of the bundle (default 128)")
    p.set_defaults(func=run)


def run(args):
    from ..errors import GDTError
    from ..models.ist_import import import_ist_checkpoint

    if not args.um_per_px > 0:
        raise GDTError(f"--um-per-px must be > 0, got {args.um_per_px}")
    if args.tile_px <= 0:
        raise GDTError(f"--tile-px must be > 0, got {args.tile_px}")
    card = import_ist_checkpoint(
        args.checkpoint,
        args.genes,
        output=args.output,
        out_path=args.out,
        um_per_px=args.um_per_px,
        name=args.name,
        tile_px=args.tile_px,
        overwrite=args.overwrite,
    )
    cfg = card["config"]
    print(
        f"wrote {args.out}: {card['arch']} ({card['output']['stain']}), {len(card['genes'])} genes, "
        f"{len(cfg['stage_channels'])} stages, {card['px_per_bin']} px per bin ({card['normalisation']['bin_um']} µm), "
        f"tile {card['tile_px']} px, halo {card['halo_px']} px"
    )
    return 0
