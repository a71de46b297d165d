"""MkDocs hook: generate the CLI reference from the argparse parser at build time."""

from __future__ import annotations

import argparse

MARKER = "<!-- cli-reference -->"


def _cli_markdown() -> str:
    from napari_gdt.cli import build_parser

    parser = build_parser()
    out = ["```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [f"## napari-gdt {name}", "", sub.description or "", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, _cli_markdown())
    return markdown
