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
        lines += [f"  {k}: {v}" for k, v in _provenance_lines(prov)]
    val = card.get("validation") or {}
    if val:
        lines.append("validation")
        lines += [f"  {k}: {v}" for k, v in _validation_lines(val)]
    lines.append("(napari-gdt info MODEL --json prints every field in full)")
    return "\n".join(lines)


_MORPH = (("nuclei_density_ratio", "density"), ("nuclear_area_ratio", "nuclear area"), ("area_fraction_ratio", "area fraction"),
          ("tile_spearman_nuclei", "tile rho nuclei"), ("tile_spearman_area_fraction", "tile rho area fraction"),
          ("tissue_iou", "tissue IoU"), ("density_cv_ratio_100um", "density CV ratio 100 µm"), ("lattice_ratio", "lattice ratio"))


def _short(v, n: int = 160) -> str:
    t = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return t if len(t) <= n else t[: n - 1] + "…"


def _names(items) -> str:
    return ", ".join(str(d.get("file", d.get("path", "?")) if isinstance(d, dict) else d) for d in items)


def _provenance_lines(prov: dict):
    """(key, text) pairs: files by name, commands counted, the rest short."""
    for k, v in prov.items():
        if k == "data" and isinstance(v, dict):
            for kk in ("images", "canvases", "validation"):
                if v.get(kk):
                    yield f"data.{kk}", _names(v[kk])
            rest = {kk: vv for kk, vv in v.items() if kk not in ("images", "canvases", "validation")}
            if rest:
                yield "data (other)", _short(rest)
        elif k == "commands" and isinstance(v, list):
            yield k, f"{len(v)} command(s); the last is 'command'"
        elif k == "history" and isinstance(v, list):
            last = v[-1] if v else {}
            yield k, f"{len(v)} checkpoint(s), last: {_short(last, 120)}"
        elif k == "init_from" and isinstance(v, dict):
            new = v.get("new") or []
            parent = v.get("parent") or {}
            yield k, (f"{v.get('from')} (step {parent.get('step', '?')}): {v.get('shared')} genes shared, {len(new)} new"
                      f"{' (' + ', '.join(new[:10]) + (' …' if len(new) > 10 else '') + ')' if new else ''}, {len(v.get('dropped') or [])} dropped")
        else:
            yield k, _short(v, 400 if k == "command" else 160)


def _validation_lines(val: dict):
    for k, v in val.items():
        if k == "morphometrics" and isinstance(v, dict):
            for label, m in v.items():
                if not isinstance(m, dict):
                    yield f"morphometrics[{label}]", _short(m)
                    continue
                parts = [f"{name} {m[key]:.3f}" for key, name in _MORPH if isinstance(m.get(key), (int, float))]
                better = m.get("better_than_baseline")
                if isinstance(better, dict) and better and all(isinstance(b, dict) for b in better.values()):
                    # the table of napari-gdt evaluate >= the fidelity yardstick: per key, per baseline
                    names = sorted({n for row in better.values() for n in row})
                    for n in names:
                        row = {k2: b.get(n) for k2, b in better.items() if b.get(n) is not None}
                        if row:
                            parts.append(f"better than {n}: " + ("all" if all(row.values()) else ", ".join(k2 for k2, b in row.items() if b) or "none"))
                elif isinstance(better, dict):
                    parts.append("better than baseline: " + ("all" if all(better.values()) else ", ".join(k2 for k2, b in better.items() if b) or "none"))
                yield f"morphometrics[{label}]", "; ".join(parts) if parts else _short(m)
        elif k == "held_out_patches" and isinstance(v, dict):
            yield k, ", ".join(f"{kk} {vv:.4g}" if isinstance(vv, float) else f"{kk} {vv}" for kk, vv in v.items())
        else:
            yield k, _short(v)


def run(args):
    from ..models.bundle import load_bundle

    bundle = load_bundle(args.model)  # full load: validates tensors too
    card = dict(bundle.card, digest=bundle.digest)
    print(json.dumps(card) if args.json else format_card(card))
    return 0
