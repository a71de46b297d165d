"""MkDocs hook: generate the CLI reference from the argparse parser and the API reference from the
package, at build time, so that neither can go stale."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil

MARKER = "<!-- cli-reference -->"
API_MARKER = "<!-- api-reference -->"
CARD_MARKER = "<!-- card-results -->"

#: Core packages in the order of the API reference, with one line about each.
API_PACKAGES = [
    (
        "models",
        "Models",
        "Generator architectures, coordinate-hashed noise, the model bundle (`.safetensors` + card), device choice, "
        "IST-editing import.",
    ),
    (
        "expression",
        "Expression",
        "The expression canvas and the readers that make one from Xenium, MERFISH, CosMx, spots, AnnData.",
    ),
    ("editing", "Editing", "Regions, edit operations (pure functions), recipes, undo history."),
    ("rendering", "Rendering", "Tile geometry, the tile renderer, caches and the lazy pyramid."),
    ("analysis", "Analysis", "Nuclear morphometrics and comparison tables."),
    ("export", "Export", "Figures, screenshots and the streaming OME-Zarr export (render workers, cluster)."),
    ("training", "Training", "Paired patch sampling, losses, the training loop, evaluation."),
]
#: Single modules listed after the packages.
API_MODULES = [
    ("napari_gdt.session", "The Session (viewer state, Qt-free)"),
    ("napari_gdt.pixels", "Pixel rules"),
    ("napari_gdt.data", "Sample data"),
    ("napari_gdt.errors", "Errors"),
    ("napari_gdt.synthetic", "Synthetic data for tests"),
]


def _cli_markdown() -> str:
    from napari_gdt.cli import build_parser

    parser = build_parser()
    out = ["```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"## napari-gdt {name}", "", sub.description or "", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def package_modules(pkg: str) -> list[str]:
    """Public modules of ``napari_gdt.<pkg>`` (no ``_private`` parts), sorted; [] if it is absent."""
    name = f"napari_gdt.{pkg}"
    if importlib.util.find_spec(name) is None:
        return []
    mod = importlib.import_module(name)
    found = [
        info.name
        for info in pkgutil.walk_packages(mod.__path__, prefix=name + ".")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return sorted(found)


def _api_markdown() -> str:
    out = []
    for pkg, title, blurb in API_PACKAGES:
        mods = package_modules(pkg)
        if not mods:
            continue
        out += [f"## {title}", "", blurb, ""]
        for m in mods:
            out += [f"::: {m}", "    options:", "      heading_level: 3", ""]
    out += ["## Other modules", ""]
    for m, _title in API_MODULES:
        if importlib.util.find_spec(m) is not None:
            out += [f"::: {m}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _cli_markdown())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, _api_markdown())
    if CARD_MARKER in markdown:
        markdown = markdown.replace(CARD_MARKER, card_results_markdown())
    return markdown


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def card_results_markdown(models=("her2st-he", "merfish-dapi")) -> str:
    """The ``validation.morphometrics`` results of the bundled models' cards as Markdown tables
    (so that the evaluation page quotes exactly what the shipped cards say)."""
    from napari_gdt.analysis.fidelity import FIDELITY_KEYS
    from napari_gdt.analysis.quality import KEYS
    from napari_gdt.models.bundle import read_card

    out = []
    for m in models:
        card = read_card(m)
        morph = (card.get("validation") or {}).get("morphometrics") or {}
        for label, r in morph.items():
            if not isinstance(r, dict):
                continue
            seeds = r.get("seeds", [r.get("seed", 0)])
            out += [
                (
                    f"**{m}**, `{label}`: region `{r.get('region')}`, {r.get('n_units')} {r.get('units')}, seeds {seeds}"
                    f" (card field `validation.morphometrics`)"
                ),
                "",
            ]
            base = r.get("baselines") or {"flat": r.get("baseline") or {}}
            names = [b for b in ("flat", "library_size", "ridge") if isinstance(base.get(b), dict)]
            out += [
                "| metric | generated | " + " | ".join(f"{b} baseline" for b in names) + " |",
                "|---|---|" + "---|" * len(names),
            ]
            sd = r.get("seed_sd") or {}
            for k in list(KEYS) + [k for k in FIDELITY_KEYS if k in r]:
                g = _fmt(r.get(k)) + (f" ± {sd[k]:.2g}" if sd.get(k) is not None else "")
                out.append(f"| {k} | {g} | " + " | ".join(_fmt(base[b].get(k)) if k in base[b] else "" for b in names) + " |")
            for k, v in (r.get("depth_normalised") or {}).items():
                out.append(f"| {k}, every bin at the same depth | {_fmt(v)} |" + " |" * len(names))
            c = r.get("c2st")
            if isinstance(c, dict):
                for v in ("rgb", "lum"):
                    if isinstance(c.get(v), dict):
                        row = c[v]
                        oth = row.get("control_other_section") or {}
                        out.append(
                            f"| two-sample test ({v}) | {_fmt(row['generated']['accuracy'])} | control: real vs other section "
                            f"{_fmt(oth.get('accuracy'))}, real vs blurred {_fmt(row['control_blur']['accuracy'])} |"
                            + " |"
                            * (len(names) - 1)
                        )
            g, rl = r.get("generated") or {}, r.get("real") or {}
            if g and rl:
                out += [
                    "",
                    (
                        f"Real: {rl.get('count')} nuclei, {rl.get('density_per_mm2', 0):.0f}/mm², mean "
                        f"{rl.get('mean_area_um2', 0):.1f} µm², "
                        f"area fraction {rl.get('area_fraction', 0):.3f}. Generated: {g.get('count', 0):.0f} nuclei, "
                        f"{g.get('density_per_mm2', 0):.0f}/mm², mean {g.get('mean_area_um2', 0):.1f} µm², area fraction "
                        f"{g.get('area_fraction', 0):.3f}."
                    ),
                ]
            out.append("")
    return "\n".join(out) if out else "*(no validation results in the bundled cards)*"
