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

__all__ = [
    "DATASETS",
    "DemoData",
    "build_demo_viewer",
    "detail_view",
    "filled_view",
    "load_demo_data",
    "open_demo",
    "parse_size",
    "tissue_box",
    "tissue_mask",
]

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
        from .data import ENV_VAR, OfflineError
        from .pixels import read_image
        from .training.recipes import demo_canvas

        try:
            canvas, image_path, model = demo_canvas(dataset)
        except OfflineError:
            raise GDTError(
                f"no {dataset} data: offline and {ENV_VAR} is not set. Set {ENV_VAR}=/path/to/data "
                f"(her2st/, merfish_mouse_brain/), or try: napari-gdt demo --dataset synthetic"
            ) from None
        bundle = load_bundle(model, device=device)
        canvas.meta.setdefault("path", f"{dataset} demo canvas")
        if dataset == "her2st":
            genes = [g for g in ("ERBB2", "KRT19", "COL1A1", "EPCAM", "PTPRC") if g in canvas.genes][:3]
        else:
            totals = np.asarray(canvas.data.sum(axis=(1, 2)).compute())
            genes = [canvas.genes[i] for i in np.argsort(-totals)[:3]]
        name = "her2st C5 (held out)" if dataset == "her2st" else "MERFISH mouse brain z0"
        return DemoData(
            name, bundle, canvas, read_image(image_path), genes or canvas.genes[:3], "he" if dataset == "her2st" else "dapi"
        )
    raise GDTError(f"unknown demo dataset {dataset!r} (choose from {', '.join(DATASETS)})")


# ----------------------------------------------------------------- where the tissue is (no Qt)


def tissue_mask(canvas, frac: float = 0.05) -> np.ndarray:
    """Bins that hold tissue: smoothed total counts above ``frac`` of the 90th percentile of
    non-empty bins, holes filled."""
    tot = np.asarray(canvas.data.sum(axis=0))
    tot = np.asarray(getattr(tot, "compute", lambda: tot)(), dtype=float)
    from scipy import ndimage as ndi

    tot = ndi.gaussian_filter(tot, 1.5)  # transcripts leave empty bins between cells
    pos = tot[tot > 0]
    if pos.size == 0:
        return np.ones(tot.shape, bool)
    return ndi.binary_fill_holes(tot > frac * float(np.percentile(pos, 90)))


def tissue_box(canvas, px_per_bin: int) -> tuple[float, float, float, float]:
    """``(y0, y1, x0, x1)`` of the tissue in output pixels (world coordinates)."""
    m = tissue_mask(canvas)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        h, w = m.shape
        return 0.0, float(h * px_per_bin), 0.0, float(w * px_per_bin)
    return (
        float(ys.min() * px_per_bin),
        float((ys.max() + 1) * px_per_bin),
        float(xs.min() * px_per_bin),
        float((xs.max() + 1) * px_per_bin),
    )


def _window_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    c = np.pad(np.cumsum(np.cumsum(a, 0), 1), ((1, 0), (1, 0)))
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def filled_view(canvas, px_per_bin: int, aspect: float, fill: float = 0.92) -> tuple[float, float, float, float]:
    """The largest ``aspect`` (width / height) rectangle, ``(y0, y1, x0, x1)`` in output px, whose
    bins are at least ``fill`` tissue: the overview where generated tissue fills the frame."""
    m = tissue_mask(canvas).astype(float)
    H, W = m.shape
    tot = np.asarray(canvas.data.sum(axis=0))
    tot = np.asarray(getattr(tot, "compute", lambda: tot)(), dtype=float)
    best = None
    for h in range(H, 1, -1):
        w = round(h * aspect)
        if w < 2 or w > W:
            continue
        cov = _window_sums(m, h, w) / (h * w)
        if cov.max() < fill:
            continue
        ok = cov >= fill
        score = np.where(ok, _window_sums(tot, h, w), -np.inf)
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        best = (y, y + h, x, x + w)
        break
    if best is None:  # no filled rectangle: the whole tissue
        return tissue_box(canvas, px_per_bin)
    y0, y1, x0, x1 = best
    return float(y0 * px_per_bin), float(y1 * px_per_bin), float(x0 * px_per_bin), float(x1 * px_per_bin)


def detail_view(canvas, px_per_bin: int, size_px: tuple[int, int]) -> tuple[float, float, float, float]:
    """An ``size_px`` (h, w) output-pixel rectangle inside dense tissue (for a zoomed shot)."""
    m = tissue_mask(canvas).astype(float)
    tot = np.asarray(canvas.data.sum(axis=0))
    tot = np.asarray(getattr(tot, "compute", lambda: tot)(), dtype=float)
    H, W = m.shape
    h = min(H, max(1, int(np.ceil(size_px[0] / px_per_bin))))
    w = min(W, max(1, int(np.ceil(size_px[1] / px_per_bin))))
    cov = _window_sums(m, h, w) / (h * w)
    score = np.where(cov >= min(0.98, cov.max()), _window_sums(np.log1p(tot), h, w), -np.inf)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    cy, cx = (y + h / 2) * px_per_bin, (x + w / 2) * px_per_bin
    return cy - size_px[0] / 2, cy + size_px[0] / 2, cx - size_px[1] / 2, cx + size_px[1] / 2


def parse_size(text: str) -> tuple[int, int]:
    """``"1200x900"`` (width x height, as screens are named) -> ``(height, width)``."""
    try:
        w, h = (int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise GDTError(f"--screenshot-size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x900") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise GDTError(f"--screenshot-size {text!r}: width and height must be 16-8192 px")
    return h, w


def build_demo_viewer(dataset: str = "her2st", show: bool = True, device: str = "auto"):
    """Create a napari viewer with the demo layers and all dock widgets; return ``(viewer, widgets)``.

    One :class:`~napari_gdt.session.Session` holds the model, canvas, seed, edits and pyramids;
    every panel is given it (``widgets["session"]``).
    """
    d = load_demo_data(dataset, device=device)  # first: missing data fail before napari is imported
    import napari

    from .session import Session
    from .widgets.compare import CompareWidget
    from .widgets.editing import EditingWidget
    from .widgets.expression import ExpressionWidget
    from .widgets.generator import GeneratorWidget
    from .widgets.layers import session_for

    viewer = napari.Viewer(show=show, title=f"napari-gdt demo: {d.name}")
    ppb = d.bundle.px_per_bin
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
    gen_dock = viewer.window.add_dock_widget(gen, name="Generated tissue", area="right", tabify=True)
    viewer.window.add_dock_widget(edit, name="What-if editing", area="right", tabify=True)
    viewer.window.add_dock_widget(comp, name="Compare and export", area="right", tabify=True)
    gen_dock.raise_()  # tabified docks show the last one added; open on the generated tissue
    for layer in list(viewer.layers):
        if layer.name in d.genes:
            layer.visible = False
    box = tissue_box(d.canvas, ppb)
    widgets = {
        "expression": expr,
        "generator": gen,
        "editing": edit,
        "compare": comp,
        "data": d,
        "session": session,
        "tissue_box": box,
        "dock": gen_dock,
    }
    fit_view(viewer, box)
    if show:
        from qtpy.QtCore import QTimer

        for ms in (0, 300):  # again once the window has its final size
            QTimer.singleShot(ms, lambda: fit_view(viewer, box))
    return viewer, widgets


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def fit_view(viewer, box, margin: float = 0.03) -> None:
    """Centre the camera on ``box`` (y0, y1, x0, x1 in world px) and zoom so that it fits the canvas."""
    y0, y1, x0, x1 = box
    try:
        ch, cw = (int(v) for v in viewer.window._qt_viewer.canvas.size)
    except (AttributeError, RuntimeError):  # the viewer was closed before this (delayed) fit ran
        return
    if ch < 8 or cw < 8:  # not laid out yet: a zoom of 0 would crash the draw; the shown window fits again
        return
    cam = _camera(viewer)
    cam.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    cam.zoom = (1 - 2 * margin) * min(ch / max(y1 - y0, 1.0), cw / max(x1 - x0, 1.0))


def _settle(seconds: float = 0.3) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _view_complete(gen, box) -> tuple[int, int]:
    """``(missing, total)`` generated level-0 tiles under ``box`` (y0, y1, x0, x1 world px)."""
    from .rendering.tiles import Region

    missing = total = 0
    for pyr in gen.pyramids().values():
        H, W = pyr.level_shapes[0]
        r = Region(max(0, int(box[0])), min(H, int(np.ceil(box[1]))), max(0, int(box[2])), min(W, int(np.ceil(box[3]))))
        if r.y1 <= r.y0 or r.x1 <= r.x0:
            continue
        T = pyr.T
        for ty in range(r.y0 // T, (r.y1 - 1) // T + 1):
            for tx in range(r.x0 // T, (r.x1 - 1) // T + 1):
                total += 1
                missing += not pyr.has_tile(ty, tx)
    return missing, total


def _tissue_fraction(w, frame, gen) -> float:
    """Fraction of ``frame`` (world px) that shows generated, computed (not preview) tissue bins."""
    d = w["data"]
    ppb = d.bundle.px_per_bin
    m = tissue_mask(d.canvas)
    pyrs = list(gen.pyramids().values())
    if not pyrs:
        return 0.0
    pyr = pyrs[0]
    y0, y1, x0, x1 = frame
    ys = np.arange(np.floor(y0), np.ceil(y1), 4.0)  # a 4-px sample grid over the frame
    xs = np.arange(np.floor(x0), np.ceil(x1), 4.0)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    H, W = pyr.level_shapes[0]
    inside = (Y >= 0) & (X >= 0) & (Y < H) & (X < W)
    by, bx = np.clip((Y // ppb).astype(int), 0, m.shape[0] - 1), np.clip((X // ppb).astype(int), 0, m.shape[1] - 1)
    T = pyr.T
    done = {
        (ty, tx): pyr.has_tile(ty, tx)
        for ty in np.unique(Y[inside] // T).astype(int)
        for tx in np.unique(X[inside] // T).astype(int)
    }
    real = np.zeros(Y.shape, bool)
    real[inside] = [done.get((int(a // T), int(b // T)), False) for a, b in zip(Y[inside], X[inside])]
    return float((inside & real & m[by, bx]).mean())


def _finest_useful_level(zoom: float, n_levels: int) -> int:
    """The coarsest pyramid level that still has at least one pixel per screen pixel at ``zoom``
    (screen px per level-0 px): the level napari should show."""
    import math

    k = math.floor(math.log2(1.0 / zoom) + 1e-6) if zoom > 0 else 0
    return int(min(max(k, 0), n_levels - 1))


def _stable_shot(viewer, gen, um_per_px, deadline, tries: int = 8):
    """Screenshot once what is on screen has settled: the generated layer shows the pyramid level
    its zoom asks for (not a coarser one left from an earlier draw) and two shots in a row agree.

    A loaded machine can paint the frame before the layer has been re-sliced at the new zoom, or
    with the last tiles; each try re-slices the layers, repaints and settles. Returns
    ``(image, info, shown level, wanted level)`` (the last shot if it never settled by ``deadline``).
    """
    import time

    from .export.screenshot import screenshot_view

    cam = _camera(viewer)
    native = viewer.window._qt_viewer.canvas.native
    from .session import GENERATED

    layer = gen.binding.layer(GENERATED) if gen.binding is not None else None
    pyr = gen.pyramid
    want = _finest_useful_level(float(cam.zoom), pyr.n_levels if pyr is not None else 1)
    prev = None
    img = info = None
    level = -1
    for i in range(tries):
        gen.wait(0.05)  # re-slice the layers with the last tiles
        native.update()  # a paint: napari picks the level and corners for this zoom on draw
        _settle(0.3 if i == 0 else 0.5)
        level = int(getattr(layer, "data_level", want)) if layer is not None else want
        img, info = screenshot_view(viewer, None, um_per_px=um_per_px)
        if level <= want and prev is not None and np.array_equal(img, prev):
            break
        prev = img
        if time.monotonic() > deadline:
            break
    return img, info, level, want


def _shoot(viewer, w, path, box, size, timeout, um_per_px) -> str:
    """Show ``box`` in the ``size`` (h, w) canvas, wait for its tiles, save the screenshot; return a report line."""
    import time

    from .export.screenshot import save_image

    h, wd = size
    cam = _camera(viewer)
    y0, y1, x0, x1 = box
    cam.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    cam.zoom = min(h / max(y1 - y0, 1.0), wd / max(x1 - x0, 1.0))
    half_h, half_w = h / 2 / cam.zoom, wd / 2 / cam.zoom
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    frame = (cy - half_h, cy + half_h, cx - half_w, cx + half_w)
    gen = w["generator"]
    _settle()  # the widget sees the camera and queues the tiles under it
    t0 = time.monotonic()
    missing, total = _view_complete(gen, frame)
    while missing and time.monotonic() - t0 < timeout:
        gen.wait(0.5)
        missing, total = _view_complete(gen, frame)
    img, info, level, want = _stable_shot(viewer, gen, um_per_px, t0 + timeout)
    save_image(path, img)
    took = time.monotonic() - t0
    tissue = _tissue_fraction(w, frame, gen)
    line = (
        f"wrote {path} ({img.shape[1]}x{img.shape[0]} px, {info.um_per_screen_px:.2g} µm per screen px): "
        f"{tissue:.0%} of the frame is generated tissue; {total - missing} of {total} tiles in view generated in {took:.0f} s"
        f"; pyramid level {level} shown (finest useful {want})"
    )
    if missing:
        import sys

        print(
            f"napari-gdt demo: {missing} of {total} tiles in view were not generated within {timeout:.0f} s "
            f"(--screenshot-timeout); {path} shows the coarse preview there",
            file=sys.stderr,
        )
    return line


def open_demo(
    dataset: str = "her2st",
    screenshot: str | None = None,
    timeout: float = 300.0,
    detail: str | None = None,
    size: tuple[int, int] = (900, 1200),
    restore: bool = False,
) -> int:
    """Open the demo (``napari.run``), or save screenshots once the tiles in view are generated.

    ``screenshot``: a view that generated tissue fills (the largest frame of the ``size`` (h, w)
    aspect that is >= 92 % tissue); ``detail``: a zoomed view of dense tissue where nuclei are
    visible (about 0.75 µm per screen pixel). Shots are ``size`` whatever the docks take on screen.
    ``restore``: load the latest autosaved editing session of the demo canvas (an error if none).
    """
    import napari

    # A shown window is needed for a non-black screenshot (works under Xvfb).
    viewer, w = build_demo_viewer(dataset, show=True)
    if restore:
        path = w["editing"].restore_autosave()  # the panel shares the demo's Session
        print(f"restored the editing session {path}")
    if screenshot or detail:
        d = w["data"]
        ppb = d.bundle.px_per_bin
        h, wd = size
        native = viewer.window._qt_viewer.canvas.native
        native.setFixedSize(wd, h)  # the canvas gets the asked size; the window grows around the docks
        _settle()
        upp = d.bundle.um_per_px
        overview = filled_view(d.canvas, ppb, wd / h)
        if screenshot:
            print(_shoot(viewer, w, screenshot, overview, size, timeout, upp), flush=True)
        if detail:
            # screen px per output px: about 0.75 µm per screen px (nuclei a dozen px across), and at
            # least twice the overview's zoom
            zoom = max(1.0, round(upp / 0.75), 2 * min(h / (overview[1] - overview[0]), wd / (overview[3] - overview[2])))
            box = detail_view(d.canvas, ppb, (h / zoom, wd / zoom))
            print(_shoot(viewer, w, detail, box, size, timeout, upp), flush=True)
        viewer.close()
        return 0
    napari.run()
    return 0
