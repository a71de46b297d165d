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
    from ..models.bundle import load_bundle

    bundle = load_bundle(args.model)  # full load: validates tensors too
    card = dict(bundle.card, digest=bundle.digest)
    print(json.dumps(card) if args.json else format_card(card))
    return 0
