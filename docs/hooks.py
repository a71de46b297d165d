"""MkDocs hook: generate the CLI reference from the argparse parser and the API reference from the
package, at build time, so that neither can go stale."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil

MARKER = "<!-- cli-reference -->"
API_MARKER = "<!-- api-reference -->"

#: Core packages in the order of the API reference, with one line about each.
API_PACKAGES = [
    ("models", "Models", "Generator architectures, coordinate-hashed noise, the model bundle (`.safetensors` + card), device choice, IST-editing import."),
    ("expression", "Expression", "The expression canvas and the readers that make one from Xenium, MERFISH, CosMx, spots, AnnData."),
    ("editing", "Editing", "Regions, edit operations (pure functions), recipes, undo history."),
    ("rendering", "Rendering", "Tile geometry, the tile renderer, caches and the lazy pyramid."),
    ("analysis", "Analysis", "Nuclear morphometrics and comparison tables."),
    ("export", "Export", "Figures, screenshots and the streaming OME-Zarr export (render workers, cluster)."),
    ("training", "Training", "Paired patch sampling, losses, the training loop, evaluation."),
]
#: Single modules listed after the packages.
API_MODULES = [("napari_gdt.session", "The Session (viewer state, Qt-free)"), ("napari_gdt.pixels", "Pixel rules"), ("napari_gdt.data", "Sample data"), ("napari_gdt.errors", "Errors"), ("napari_gdt.synthetic", "Synthetic data for tests")]


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
    for m, title in API_MODULES:
        if importlib.util.find_spec(m) is not None:
            out += [f"::: {m}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _cli_markdown())
    if API_MARKER in markdown:
        markdown = markdown.replace(API_MARKER, _api_markdown())
    return markdown
