"""napari sample-data contributions."""

from __future__ import annotations


def synthetic_sample():
    """A synthetic canvas's top genes plus its untrained-generator rendering (small, CPU-friendly)."""
    from ._reader import canvas_layer_data
    from .rendering.tiles import TileRenderer
    from .synthetic import synthetic_canvas, untrained_bundle

    canvas = synthetic_canvas((32, 32))
    bundle = untrained_bundle(canvas.genes)
    ppb = bundle.px_per_bin
    r = TileRenderer(bundle, canvas, seed=0, device="auto")
    img = r.render_region()
    layers = canvas_layer_data(canvas)
    for _data, kw, _kind in layers:
        kw["scale"] = (ppb, ppb)
        kw["affine"] = None
    return layers + [(img, {"name": "generated", "rgb": True}, "image")]
