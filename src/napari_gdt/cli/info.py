"""``napari-gdt info MODEL [--json]``: print a model card."""

from __future__ import annotations

import json

from ..models.card_text import format_card  # re-exported for old imports

__all__ = ["format_card", "register", "run"]


def register(sub):
    p = sub.add_parser("info", help="print a model card", description="Print the model card of a bundle or demo model.")
    p.add_argument("model", metavar="MODEL", help="bundle path or demo model name")
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")
    p.set_defaults(func=run)


def run(args):
    # Torch-free: the card is JSON in the safetensors header; the digest hashes the raw tensor bytes.
    from ..models.card import file_digest, read_card, resolve_model

    path = resolve_model(args.model)
    card = read_card(path, arch_hook=False)  # the generic checks; the architecture's own need torch
    card = dict(card, digest=file_digest(path, card))
    print(json.dumps(card) if args.json else format_card(card))
    return 0
