"""``napari-gdt demo``: open napari with the demo data, the generator and all dock widgets."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("demo", help="open the demo in napari", description="Open napari with expression, generated tissue and the plugin's widgets.")
    p.add_argument(
        "--dataset",
        choices=["her2st", "merfish", "synthetic"],
        default="her2st",
        help="her2st: H&E of held-out section C5 (default); merfish: DAPI of a mouse brain; synthetic: no data needed",
    )
    p.add_argument("--screenshot", metavar="OUT.png", help="render the view to OUT.png and exit")
    p.add_argument("--restore", action="store_true", help="restore the latest autosaved editing session of the demo canvas")
    p.set_defaults(func=run)


def run(args):
    from ..demo import open_demo

    return open_demo(args.dataset, screenshot=args.screenshot, restore=getattr(args, "restore", False))
