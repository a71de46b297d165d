"""The demo (``napari-gdt demo`` and the sample-data menu).

Datasets:

``her2st``
    HER2+ breast cancer section C5 (held out from training), legacy ST spots
    spread into a continuous field, the real H&E, and the bundled ``her2st-he``
    generator.
``merfish``
    Vizgen MERFISH mouse brain (z0), transcripts binned, the real DAPI, and
    the bundled ``merfish-dapi`` generator.
``synthetic``
    A synthetic canvas and an untrained generator (no data needed).

Data come from :mod:`napari_gdt.data`: a local folder named by
``NAPARI_GDT_DATA``, else a cached, sha256-checked download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GDTError

__all__ = ["DemoData", "load_demo_data", "build_demo_viewer", "open_demo", "DATASETS"]

DATASETS = ("her2st", "merfish", "synthetic")


@dataclass
class DemoData:
    """Everything the demo shows: model, canvas, real image and starting genes."""

    name: str
    bundle: object
    canvas: object
    image: np.ndarray | None
    genes: list[str]
    kind: str


def load_demo_data(dataset: str = "her2st", device: str = "auto") -> DemoData:
    """Load the model, expression canvas and real image of a demo dataset (no napari)."""
    from .models.bundle import load_bundle

    if dataset == "synthetic":
        from .synthetic import synthetic_canvas, untrained_bundle

        canvas = synthetic_canvas((48, 48))
        return DemoData("synthetic", untrained_bundle(canvas.genes), canvas, None, ["EPCAM", "COL1A1", "PTPRC"], "he")
    if dataset in ("her2st", "merfish"):
        from .pixels import read_image
        from .training.recipes import demo_canvas

        canvas, image_path, model = demo_canvas(dataset)
        bundle = load_bundle(model, device=device)
        canvas.meta.setdefault("path", f"{dataset} demo canvas")
        if dataset == "her2st":
            genes = [g for g in ("ERBB2", "KRT19", "COL1A1", "EPCAM", "PTPRC") if g in canvas.genes][:3]
        else:
            totals = np.asarray(canvas.data.sum(axis=(1, 2)).compute())
            genes = [canvas.genes[i] for i in np.argsort(-totals)[:3]]
        name = "her2st C5 (held out)" if dataset == "her2st" else "MERFISH mouse brain z0"
        return DemoData(name, bundle, canvas, read_image(image_path), genes or canvas.genes[:3], "he" if dataset == "her2st" else "dapi")
    raise GDTError(f"unknown demo dataset {dataset!r} (choose from {', '.join(DATASETS)})")


def build_demo_viewer(dataset: str = "her2st", show: bool = True, device: str = "auto"):
    """Create a napari viewer with the demo layers and all dock widgets; return ``(viewer, widgets)``.

    One :class:`~napari_gdt.session.Session` holds the model, canvas, seed, edits and pyramids;
    every panel is given it (``widgets["session"]``).
    """
    import napari

    from .session import Session
    from .widgets.compare import CompareWidget
    from .widgets.editing import EditingWidget
    from .widgets.expression import ExpressionWidget
    from .widgets.generator import GeneratorWidget
    from .widgets.layers import session_for

    d = load_demo_data(dataset, device=device)
    viewer = napari.Viewer(show=show, title=f"napari-gdt demo: {d.name}")
    session = Session(d.bundle, d.canvas, device=device)
    session_for(viewer, session)  # panels opened later from napari's menu share it
    expr = ExpressionWidget(viewer, session=session)
    if d.image is not None:
        expr.add_image(d.image, name="real")
    expr.show_genes(d.genes)
    gen = GeneratorWidget(viewer, session=session)
    gen.generate()
    edit = EditingWidget(viewer, session=session)
    comp = CompareWidget(viewer, session=session)
    viewer.window.add_dock_widget(expr, name="Expression canvas", area="right")
    viewer.window.add_dock_widget(gen, name="Generated tissue", area="right", tabify=True)
    viewer.window.add_dock_widget(edit, name="What-if editing", area="right", tabify=True)
    viewer.window.add_dock_widget(comp, name="Compare and export", area="right", tabify=True)
    for layer in list(viewer.layers):
        if layer.name in d.genes:
            layer.visible = False
    viewer.reset_view()
    return viewer, {"expression": expr, "generator": gen, "editing": edit, "compare": comp, "data": d, "session": session}


def _settle(seconds: float = 0.3) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def open_demo(dataset: str = "her2st", screenshot: str | None = None, timeout: float = 300.0, restore: bool = False) -> int:
    """Open the demo (``napari.run``), or with ``screenshot`` render the view to a PNG once tiles arrive.

    ``restore``: load the latest autosaved editing session of the demo canvas (an error if none).
    """
    import napari

    # A shown window is needed for a non-black screenshot (works under Xvfb).
    viewer, w = build_demo_viewer(dataset, show=True)
    if restore:
        path = w["editing"].restore_autosave()
        print(f"restored the editing session {path}")
    if screenshot:
        from .export.screenshot import screenshot_view

        d = w["data"]
        _settle()  # let the widget see the new camera and queue the visible tiles
        w["generator"].wait(timeout)
        _settle()
        _, info = screenshot_view(viewer, screenshot, size=(800, 800), um_per_px=d.bundle.um_per_px)
        viewer.close()
        print(f"wrote {screenshot}")
        return 0
    napari.run()
    return 0
