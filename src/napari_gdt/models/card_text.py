"""The human-readable model card (``napari-gdt info`` and the generator widget both print it)."""

from __future__ import annotations

import json

__all__ = ["format_card"]


def format_card(card: dict) -> str:
    """Human-readable model card."""
    genes = card["genes"]
    out = card["output"]
    lines = [
        f"model        {card.get('name', '?')}",
        f"architecture {card['arch']}  (format {card['format']} v{card['format_version']})",
        f"genes        {len(genes)}: {', '.join(genes[:8])}{' ...' if len(genes) > 8 else ''}",
        f"px per bin   {card['px_per_bin']}  (one expression bin = {card['px_per_bin'] * card['um_per_px']:.2f} µm)",
        f"µm per px    {float(card['um_per_px']):.4g}  (micrometres of tissue per output pixel)",
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
        lines += [f"  {k}:{'' if v.startswith(chr(10)) else ' '}{v}" for k, v in _validation_lines(val)]
    lines.append("(napari-gdt info MODEL --json prints every field in full)")
    return "\n".join(lines)


_RATIOS = (("nuclei_density_ratio", "density"), ("nuclear_area_ratio", "nuclear area"), ("area_fraction_ratio", "area fraction"))
_RHOS = (("tile_spearman_nuclei", "nuclei"), ("tile_spearman_area_fraction", "area fraction"))
_FIDELITY = (
    ("tissue_iou", "tissue IoU"),
    ("density_cv_ratio_100um", "density CV ratio 100 µm"),
    ("lattice_ratio", "lattice ratio"),
)


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
            stages = sum("training.rearch" in str(c.get("command", "")) for c in v if isinstance(c, dict))
            runs = len(v) - stages
            yield (
                k,
                (
                    "1 training run (its command is below)"
                    if len(v) == 1
                    else f"{runs} training runs (resumed {runs - 1} time(s))"
                    + (f", {stages} change(s) of settings between stages (training.rearch)" if stages else "")
                    + "; the command below is the last"
                ),
            )
        elif k == "history" and isinstance(v, list):
            last = v[-1] if v else {}
            yield k, f"{len(v)} checkpoint(s), last: {_short(last, 120)}"
        elif k == "init_from" and isinstance(v, dict):
            new = v.get("new") or []
            parent = v.get("parent") or {}
            yield (
                k,
                (
                    f"{v.get('from')} (step {parent.get('step', '?')}): {v.get('shared')} genes shared, {len(new)} new"
                    f"{' (' + ', '.join(new[:10]) + (' …' if len(new) > 10 else '') + ')' if new else ''}, "
                    f"{len(v.get('dropped') or [])} dropped"
                ),
            )
        elif isinstance(v, float):
            yield k, f"{v:.4g}"
        else:
            yield k, _short(v, 400 if k == "command" else 160)


def _validation_lines(val: dict):
    for k, v in val.items():
        if k == "morphometrics" and isinstance(v, dict):
            for label, m in v.items():
                if not isinstance(m, dict):
                    yield f"morphometrics[{label}]", _short(m)
                    continue
                ratios = [f"{name} {m[key]:.2f}" for key, name in _RATIOS if isinstance(m.get(key), (int, float))]
                rhos = [f"{name} {m[key]:.2f}" for key, name in _RHOS if isinstance(m.get(key), (int, float))]
                units = f"{m['n_units']} {m.get('units', 'tiles')}" if m.get("n_units") else str(m.get("units", "tiles"))
                parts = []
                if ratios:
                    parts.append("generated / real (1 = same): " + ", ".join(ratios))
                if rhos:
                    parts.append(
                        f"Spearman ρ over {units} (rank agreement of generated and real, 1 = same order, 0 = none): "
                        + ", ".join(rhos)
                    )
                better = m.get("better_than_baseline")
                fid = [f"{name} {m[key]:.2f}" for key, name in _FIDELITY if isinstance(m.get(key), (int, float))]
                if fid:
                    parts.append("fidelity: " + ", ".join(fid))
                if isinstance(better, dict) and better and all(isinstance(b, dict) for b in better.values()):
                    # the table of napari-gdt evaluate >= the fidelity yardstick: per key, per baseline
                    names = sorted({n for row in better.values() for n in row})
                    for n in names:
                        row = {k2: b.get(n) for k2, b in better.items() if b.get(n) is not None}
                        if row:
                            parts.append(
                                f"better than {n}: "
                                + ("all" if all(row.values()) else ", ".join(k2 for k2, b in row.items() if b) or "none")
                            )
                elif isinstance(better, dict):
                    parts.append(
                        "better than a flat-image baseline: "
                        + ("all" if all(better.values()) else ", ".join(k2 for k2, b in better.items() if b) or "none")
                    )
                yield f"morphometrics[{label}]", ("\n    " + "\n    ".join(parts)) if parts else _short(m)
        elif k == "held_out_patches" and isinstance(v, dict):
            yield k, ", ".join(f"{kk} {vv:.4g}" if isinstance(vv, float) else f"{kk} {vv}" for kk, vv in v.items())
        else:
            yield k, _short(v)
