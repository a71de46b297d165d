"""``napari-gdt info MODEL [--json]``: print a model card."""

from __future__ import annotations

import json


def register(sub):
    p = sub.add_parser("info", help="print a model card", description="Print the model card of a bundle or demo model.")
    p.add_argument("model", metavar="MODEL", help="bundle path or demo model name")
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")
    p.set_defaults(func=run)


def format_card(card: dict) -> str:
    """Human-readable model card."""
    genes = card["genes"]
    out = card["output"]
    lines = [
        f"model        {card.get('name', '?')}",
        f"architecture {card['arch']}  (format {card['format']} v{card['format_version']})",
        f"genes        {len(genes)}: {', '.join(genes[:8])}{' ...' if len(genes) > 8 else ''}",
        f"px per bin   {card['px_per_bin']}  ({card['px_per_bin'] * card['um_per_px']:.2f} µm bins)",
        f"µm per px    {card['um_per_px']}",
        f"output       {out['kind']}: {', '.join(out.get('channels', []))}",
        f"tile / halo  {card['tile_px']} px / {card['halo_px']} px",
        f"input        {json.dumps(card.get('normalisation', {}))}",
    ]
    prov = card.get("provenance") or {}
    if prov:
        lines.append("provenance")
        lines += [f"  {k}: {v if not isinstance(v, (dict, list)) else json.dumps(v)}" for k, v in prov.items()]
    val = card.get("validation") or {}
    if val:
        lines.append("validation")
        lines += [f"  {k}: {v if not isinstance(v, (dict, list)) else json.dumps(v)}" for k, v in val.items()]
    return "\n".join(lines)


def run(args):
    from ..models.bundle import load_bundle

    bundle = load_bundle(args.model)  # full load: validates tensors too
    card = dict(bundle.card, digest=bundle.digest)
    print(json.dumps(card) if args.json else format_card(card))
    return 0
