"""``napari-gdt demo``: open napari with the demo data, the generator and all dock widgets."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "demo",
        help="open the demo in napari",
        description="Open napari with expression, generated tissue and the plugin's widgets.",
    )
    p.add_argument(
        "--dataset",
        choices=["her2st", "merfish", "synthetic"],
        default="her2st",
        help="her2st: H&E of held-out section C5 (default); merfish: DAPI of a mouse brain; synthetic: no data needed",
    )
    p.add_argument(
        "--screenshot",
        metavar="OUT.png",
        help="save a view that generated tissue fills to OUT.png once its tiles are generated, and exit",
    )
    p.add_argument(
        "--screenshot-detail",
        metavar="OUT.png",
        help="also save a zoomed view of dense tissue where nuclei are visible (about 0.75 µm per pixel)",
    )
    p.add_argument(
        "--screenshot-size",
        default="1200x900",
        metavar="WxH",
        help="size of the screenshots in pixels, whatever the docks take on screen (default 1200x900)",
    )
    p.add_argument(
        "--screenshot-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="wait at most S seconds for the tiles in view (default 300); then save with a message",
    )
    p.add_argument("--restore", action="store_true", help="restore the latest autosaved editing session of the demo canvas")
    p.set_defaults(func=run)


def run(args):
    from ..demo import open_demo, parse_size

    size = parse_size(args.screenshot_size)
    return open_demo(
        args.dataset,
        screenshot=args.screenshot,
        detail=args.screenshot_detail,
        size=size,
        timeout=args.screenshot_timeout,
        restore=getattr(args, "restore", False),
    )
