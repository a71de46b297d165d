"""The demo viewer (used by ``napari-gdt demo``)."""

from __future__ import annotations

from .errors import GDTError


def build_demo_viewer(dataset: str = "synthetic", show: bool = True):
    """Create a napari viewer with the demo layers and dock widgets; return ``(viewer, widgets)``."""
    import napari

    from ._reader import canvas_layer_data
    from .synthetic import synthetic_canvas, untrained_bundle
    from .widgets.generator import GeneratorWidget

    if dataset != "synthetic":
        raise GDTError(f"demo dataset {dataset!r} is not available yet in this build (use --dataset synthetic)")
    canvas = synthetic_canvas((48, 48))
    bundle = untrained_bundle(canvas.genes)
    viewer = napari.Viewer(show=show, title="napari-gdt demo")
    ppb = bundle.px_per_bin
    for data, kw, _ in canvas_layer_data(canvas):
        kw["affine"] = None
        viewer.add_image(data, scale=(ppb, ppb), **kw)
    gen = GeneratorWidget(viewer)
    gen.set_bundle(bundle)
    gen.set_canvas(canvas)
    viewer.window.add_dock_widget(gen, name="Generated tissue", area="right")
    gen.generate()
    viewer.reset_view()
    return viewer, {"generator": gen}


def open_demo(dataset: str = "synthetic", screenshot: str | None = None) -> int:
    import napari

    viewer, _ = build_demo_viewer(dataset, show=True)  # a shown window is needed for a non-black screenshot (Xvfb works)
    if screenshot:
        from pathlib import Path

        from skimage.io import imsave

        img = viewer.screenshot(canvas_only=True, size=(800, 800))
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        imsave(screenshot, img, check_contrast=False)
        viewer.close()
        print(f"wrote {screenshot}")
        return 0
    napari.run()
    return 0
