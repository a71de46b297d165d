"""Issue 15's acceptance bars for one or more scored candidates, side by side.

    python benchmarks/acceptance_table.py OUT_OLD OUT_NEW [...] [--names v3,S1] [--markdown]

Each OUT is a folder written by ``benchmarks/score_her2st.sh`` (``evaluate.json``, ``depth.json``,
``whatif_transfer.json``, ``whatif_knockout.json``, ``memorisation.json``; a missing file leaves its
rows empty). Prints one row per bar with each candidate's figure and whether it meets the bar
(✓ / ✗), and, last, which bars the first column meets that a later column misses. The bars are the
issue's, written out here once; nothing is fitted to the candidates.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _load(folder: Path, name: str) -> dict | None:
    p = folder / name
    if not p.exists() or p.stat().st_size == 0:
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def figures(folder: str | Path) -> dict:
    """The scalar figures of one scored folder (``None`` where not measured)."""
    f = Path(folder)
    ev = _load(f, "evaluate.json") or {}
    dp = _load(f, "depth.json") or {}
    tr = _load(f, "whatif_transfer.json") or {}
    ko = _load(f, "whatif_knockout.json") or {}
    mem = _load(f, "memorisation.json") or {}
    B = ev.get("baselines") or {}
    c2 = ev.get("c2st") or {}

    def c2st(v, which):
        c = c2.get(v) or {}
        if which == "generated":
            return _num((c.get("generated") or {}).get("accuracy"))
        return _num((c.get("control_other_section") or {}).get("accuracy"))

    def eff(w, k):
        return _num((w.get(k) or {}).get("effect_over_sd"))

    out = {
        "density": _num(ev.get("nuclei_density_ratio")),
        "area_fraction": _num(ev.get("area_fraction_ratio")),
        "tissue_iou": _num(ev.get("tissue_iou")),
        "rho_af": _num(ev.get("tile_spearman_area_fraction")),
        "rho_af_library_size": _num((B.get("library_size") or {}).get("tile_spearman_area_fraction")),
        "rho_af_ridge": _num((B.get("ridge") or {}).get("tile_spearman_area_fraction")),
        "lattice": _num(ev.get("lattice_ratio")),
        "spectrum": _num(ev.get("spectrum_distance")),
        "c2st_rgb": c2st("rgb", "generated"),
        "c2st_rgb_control": c2st("rgb", "control"),
        "c2st_lum": c2st("lum", "generated"),
        "c2st_lum_control": c2st("lum", "control"),
        "depth_density": _num(dp.get("nuclei_per_mm2_ratio")),
        "depth_area_fraction": _num(dp.get("area_fraction_ratio")),
        "depth_iou": _num(dp.get("tissue_iou_thinned_vs_full")),
        "transfer_density_sd": eff(tr, "density_per_mm2"),
        "transfer_af_sd": eff(tr, "area_fraction"),
        "transfer_dpixel": _num(tr.get("mean_abs_dpixel_255")),
        "knockout_density_sd": eff(ko, "density_per_mm2"),
        "knockout_af_sd": eff(ko, "area_fraction"),
        "mem_generated_p5": _num((mem.get("generated") or {}).get("p5")),
        "mem_real_p5": _num((mem.get("real_held_out") or {}).get("p5")),
    }
    ctx = ((ev.get("fidelity_details") or {}).get("spatial_rho_context") or {}).get("tile_spearman_area_fraction") or {}
    out["rho_af_between_seeds"] = _num(ctx.get("between_seeds"))
    out["rho_af_expected"] = _num(ctx.get("expected"))
    if out["rho_af_expected"] is None and ctx:  # written before evaluate reported it
        from napari_gdt.analysis.quality import expected_rho

        k = len(ev.get("per_seed", {}).get("tile_spearman_area_fraction") or []) or 3
        out["rho_af_expected"] = _num(expected_rho(_num(ctx.get("seed_mean")), out["rho_af_between_seeds"], k)[0])
    for w in (50, 100, 200):
        out[f"cv_{w}"] = _num(ev.get(f"density_cv_ratio_{w}um"))
    for k in ("area", "eccentricity", "solidity", "nn_distance"):
        out[f"w1_{k}"] = _num(ev.get(f"w1_iqr_{k}"))
    return out


def _within(x, lo, hi):
    return None if x is None else lo <= x <= hi


def _all(*v):
    return None if any(x is None for x in v) else all(v)


def bars(g: dict) -> list[tuple[str, str, bool | None]]:
    """(bar, figure as text, met) for every acceptance point that the folder measures."""

    def t(*xs, fmt="{:.3f}"):
        return " / ".join("n/a" if x is None else fmt.format(x) for x in xs)

    rho_ok = None
    if None not in (g["rho_af"], g["rho_af_library_size"], g["rho_af_ridge"]):
        rho_ok = g["rho_af"] > max(g["rho_af_library_size"], g["rho_af_ridge"])
    lum_ok = None
    if None not in (g["c2st_lum"], g["c2st_lum_control"]):
        lum_ok = g["c2st_lum"] <= g["c2st_lum_control"] + 0.10
    tr_ok = None
    if None not in (g["transfer_density_sd"], g["transfer_af_sd"], g["transfer_dpixel"]):
        tr_ok = max(g["transfer_density_sd"], g["transfer_af_sd"]) >= 3 and g["transfer_dpixel"] >= 8
    ko_ok = None
    if None not in (g["knockout_density_sd"], g["knockout_af_sd"]):
        ko_ok = min(g["knockout_density_sd"], g["knockout_af_sd"]) <= -2
    mem_ok = None
    if None not in (g["mem_generated_p5"], g["mem_real_p5"]):
        mem_ok = g["mem_generated_p5"] >= g["mem_real_p5"]
    w1 = [g[f"w1_{k}"] for k in ("area", "eccentricity", "solidity", "nn_distance")]
    cv = [g[f"cv_{w}"] for w in (50, 100, 200)]
    return [
        (
            "density / area fraction within ±10 %",
            t(g["density"], g["area_fraction"]),
            _all(_within(g["density"], 0.9, 1.1), _within(g["area_fraction"], 0.9, 1.1)),
        ),
        ("tissue IoU >= 0.85", t(g["tissue_iou"]), None if g["tissue_iou"] is None else g["tissue_iou"] >= 0.85),
        (
            "ρ area fraction above library_size and ridge",
            t(g["rho_af"]) + f" (lib {t(g['rho_af_library_size'])}, ridge {t(g['rho_af_ridge'])})",
            rho_ok,
        ),
        ("density CV ratio 50/100/200 µm in [0.8, 1.25]", t(*cv, fmt="{:.2f}"), _all(*[_within(x, 0.8, 1.25) for x in cv])),
        (
            "w1/IQR area, ecc., solidity, NN <= 0.3",
            t(*w1, fmt="{:.2f}"),
            _all(*[None if x is None else x <= 0.3 for x in w1]),
        ),
        ("lattice ratio <= 1.2", t(g["lattice"], fmt="{:.2f}"), None if g["lattice"] is None else g["lattice"] <= 1.2),
        (
            "two-sample lum within 0.10 of control",
            t(g["c2st_lum"]) + f" (ctl {t(g['c2st_lum_control'])}; RGB {t(g['c2st_rgb'])}, ctl {t(g['c2st_rgb_control'])})",
            lum_ok,
        ),
        (
            "depth 1/15: density, af ±10 %, IoU >= 0.85",
            t(g["depth_density"], g["depth_area_fraction"], g["depth_iou"]),
            _all(
                _within(g["depth_density"], 0.9, 1.1),
                _within(g["depth_area_fraction"], 0.9, 1.1),
                None if g["depth_iou"] is None else g["depth_iou"] >= 0.85,
            ),
        ),
        (
            "transfer: >= 3 SD (density or af), |Δpx| >= 8/255",
            t(g["transfer_density_sd"], g["transfer_af_sd"], fmt="{:+.1f}") + f", {t(g['transfer_dpixel'], fmt='{:.1f}')}/255",
            tr_ok,
        ),
        ("knockout: <= -2 SD (density or af)", t(g["knockout_density_sd"], g["knockout_af_sd"], fmt="{:+.1f}"), ko_ok),
        ("nearest training patch p5: generated >= real", t(g["mem_generated_p5"], g["mem_real_p5"], fmt="{:.2f}"), mem_ok),
        ("(diagnostic) spectrum distance", t(g["spectrum"]), None),
        (
            "(diagnostic) ρ area fraction of the expectation / between seeds",
            t(g["rho_af_expected"], g["rho_af_between_seeds"]),
            None,
        ),
    ]


def table(folders, names=None, markdown=False) -> str:
    names = names or [Path(f).name for f in folders]
    cols = [bars(figures(f)) for f in folders]

    def cell(fig, ok):
        return fig + ("" if ok is None else (" ✓" if ok else " ✗"))

    lines = []
    if markdown:
        lines.append("| bar | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for i, (bar, _, _) in enumerate(cols[0]):
            lines.append(f"| {bar} | " + " | ".join(cell(c[i][1], c[i][2]) for c in cols) + " |")
    else:
        for i, (bar, _, _) in enumerate(cols[0]):
            lines.append(bar)
            for n, c in zip(names, cols):
                lines.append(f"    {n:>12s}: {cell(c[i][1], c[i][2])}")
    lost = []
    for n, c in zip(names[1:], cols[1:]):
        for (bar, _, ok0), (_, _, ok) in zip(cols[0], c):
            if ok0 and ok is False:
                lost.append(f"{n} misses '{bar}', which {names[0]} meets")
    lines += lost or ([f"no bar that {names[0]} meets is missed by the others"] if len(cols) > 1 else [])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="folders written by benchmarks/score_her2st.sh")
    ap.add_argument("--names", default=None, help="comma-separated column names (default: the folder names)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    names = a.names.split(",") if a.names else None
    if names and len(names) != len(a.folders):
        ap.error(f"--names has {len(names)} names for {len(a.folders)} folders")
    print(table(a.folders, names, a.markdown))


if __name__ == "__main__":
    main()
