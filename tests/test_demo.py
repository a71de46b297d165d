"""The one-command demo on real data: her2st (H&E) and MERFISH (DAPI) with the bundled models."""

import re

import numpy as np
import pytest

from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR


def _nuclear_band(grey: np.ndarray, um_per_px: float) -> float:
    """Std of a difference of Gaussians at nuclear scale (1.5 µm vs 5 µm)."""
    from scipy import ndimage as ndi

    return float(np.std(ndi.gaussian_filter(grey, 1.5 / um_per_px) - ndi.gaussian_filter(grey, 5.0 / um_per_px)))


def _preview_like(grey: np.ndarray, step: float) -> np.ndarray:
    """What the coarse preview looks like: one value per expression bin (``step`` screen px)."""
    s = max(1, round(step))
    H, W = grey.shape[0] // s * s, grey.shape[1] // s * s
    m = grey[:H, :W].reshape(H // s, s, W // s, s).mean(axis=(1, 3))
    return np.repeat(np.repeat(m, s, 0), s, 1)


def _he_tissue_blocks(img: np.ndarray, block: int = 32, texture: float = 10.0) -> float:
    """Fraction of ``block``-px squares of an H&E shot that are stained tissue with fine texture
    (nuclei and fibres), i.e. neither glass, nor outside the canvas, nor a smooth preview."""
    from scipy import ndimage as ndi

    a = img[..., :3].astype(float)
    g = a.mean(-1)
    hf = np.abs(g - ndi.gaussian_filter(g, 1.5))
    H, W = g.shape[0] // block * block, g.shape[1] // block * block

    def bl(x):
        return x[:H, :W].reshape(H // block, block, W // block, block).mean(axis=(1, 3))

    stained = (bl(g) < 215) & (bl(g) > 30) | (bl(a.max(-1) - a.min(-1)) > 40)
    return float((stained & (bl(hf) > texture)).mean())


def _texture_rows(img: np.ndarray, block: int = 32) -> list[int]:
    """Median fine texture of each row of ``block``-px squares (a diagnostic for failure messages)."""
    from scipy import ndimage as ndi

    g = img[..., :3].astype(float).mean(-1)
    hf = np.abs(g - ndi.gaussian_filter(g, 1.5))
    H = g.shape[0] // block * block
    return [round(float(np.median(hf[y : y + block]))) for y in range(0, H, block)]


SHOT = re.compile(
    r"wrote (\S+) \((\d+)x(\d+) px, ([0-9.e-]+) µm per screen px\): (\d+)% of the frame is generated tissue; (\d+) of (\d+) tiles"
    r".*; pyramid level (\d+) shown \(finest useful (\d+)\)"
)


@pytest.mark.realdata
@pytest.mark.parametrize("dataset,model", [("merfish", "merfish-dapi"), ("her2st", "her2st-he")])
def test_demo_screenshots_show_generated_tissue(dataset, model, data_dir, tmp_path):
    """``demo --screenshot a.png --screenshot-detail b.png``: both shots at the asked size, at least 70 %
    generated (not preview) tissue, every tile in view generated, and nuclear-scale texture in the detail."""
    if not (WEIGHTS_DIR / BUNDLED_MODELS[model]).exists():
        pytest.skip(f"bundled model {model} not installed")
    from skimage.io import imread

    from napari_gdt.models.card import read_card

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    # its own process: a fresh napari plugin registry and Qt app (the virtual display is inherited)
    r = run_demo(
        ["--dataset", dataset, "--screenshot", str(a), "--screenshot-detail", str(b), "--screenshot-size", "960x720"],
        NAPARI_GDT_DATA=str(data_dir),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    shots = {m.group(1): m for m in SHOT.finditer(r.stdout)}
    assert set(shots) == {str(a), str(b)}, r.stdout
    card = read_card(model)
    bin_um = card["px_per_bin"] * card["um_per_px"]
    for path, m in shots.items():
        img = imread(path)[..., :3]
        assert img.shape == (720, 960, 3)  # the asked size, whatever the docks take on screen
        assert int(m.group(5)) >= 70, m.group(0)  # generated tissue, computed tiles (not the preview)
        assert m.group(6) == m.group(7), m.group(0)  # every tile in view generated
        assert m.group(8) == m.group(9), m.group(0)  # the level the zoom asks for, not a coarser one
        g = img.astype(float).mean(-1)
        assert (g == 0).mean() < 0.05  # hardly any pixel outside the canvas (napari's black)
        if dataset == "her2st":  # stained tissue; the overview also with fine texture in every block (no preview)
            frac = _he_tissue_blocks(img, texture=10.0 if path == str(a) else 0.0)
            assert frac >= 0.7, (m.group(0), frac, _texture_rows(img))
    # the detail shot has texture at the scale of nuclei, well above what the per-bin preview would give
    upp = float(shots[str(b)].group(4))
    g = imread(b)[..., :3].astype(float).mean(-1)
    band = _nuclear_band(g, upp)
    control = _nuclear_band(_preview_like(g, bin_um / upp), upp)
    assert upp <= 0.8 and band > 8 and band > 1.4 * control, (upp, band, control)


def test_demo_offline_fails_fast_with_the_short_message(tmp_path):
    """No data folder, nothing cached, no network: one short line naming NAPARI_GDT_DATA and --dataset synthetic, in seconds."""
    import os
    import time

    env = {k: v for k, v in os.environ.items() if k != "NAPARI_GDT_DATA"}
    env.update(NAPARI_GDT_CACHE=str(tmp_path / "cache"), NAPARI_GDT_OFFLINE="1")
    t0 = time.perf_counter()
    r = run_demo(["--dataset", "her2st"], _env=env)
    took = time.perf_counter() - t0
    assert r.returncode == 2 and took < 30, (r.returncode, took)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) < 250, r.stderr
    assert "NAPARI_GDT_DATA" in lines[0] and "--dataset synthetic" in lines[0]


def test_screenshot_size_parsing():
    from napari_gdt.demo import parse_size
    from napari_gdt.errors import GDTError

    assert parse_size("1200x900") == (900, 1200)
    with pytest.raises(GDTError, match="--screenshot-size"):
        parse_size("big")


def test_tissue_views_on_a_synthetic_canvas():
    """The overview is the largest frame that is >= 92 % tissue; the detail sits inside tissue."""
    from napari_gdt.demo import detail_view, filled_view, tissue_mask
    from napari_gdt.expression.canvas import ExpressionCanvas

    data = np.zeros((2, 60, 80), np.float32)
    data[:, 10:50, 20:70] = 5.0  # a 40 x 50-bin block of tissue
    c = ExpressionCanvas(data=data, genes=["A", "B"], bin_um=10.0)
    m = tissue_mask(c)
    assert m[30, 45] and not m[2, 2]
    y0, y1, x0, x1 = filled_view(c, 4, aspect=4 / 3)
    assert abs((x1 - x0) / (y1 - y0) - 4 / 3) < 0.05
    # around the tissue block (the mask is smoothed by ~2 bins), not the whole 60 x 80-bin canvas
    assert y0 >= 6 * 4 and y1 <= 52 * 4 and x0 >= 14 * 4 and x1 <= 74 * 4 and 36 * 4 <= (y1 - y0) <= 46 * 4
    d = detail_view(c, 4, (40, 60))
    assert d[0] >= 10 * 4 and d[1] <= 50 * 4 and d[2] >= 20 * 4 and d[3] <= 70 * 4


def run_demo(args, _env=None, **env):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "napari_gdt.cli", "demo", *args],
        capture_output=True,
        text=True,
        check=False,
        env=dict(_env if _env is not None else os.environ, **env),
        timeout=900,
    )


def test_demo_screenshot_synthetic(tmp_path):
    from skimage.io import imread

    out = tmp_path / "demo.png"
    r = run_demo(["--dataset", "synthetic", "--screenshot", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    img = imread(out)
    assert img.shape[0] > 100 and img[..., :3].std() > 5  # not blank


def test_demo_offline_message(tmp_path, monkeypatch):
    """Without the data folder and without network the demo says what to set."""
    from napari_gdt import data
    from napari_gdt.errors import GDTError

    monkeypatch.setenv("NAPARI_GDT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(GDTError, match="NAPARI_GDT_DATA"):
        data.fetch_her2st("C5")


def test_demo_opens_on_generated_tissue_fitted_to_the_tissue(qtbot):
    """The window opens on the Generated tissue tab, the camera on the tissue; the export size boxes are readable."""
    from qtpy.QtWidgets import QApplication

    from napari_gdt.demo import _camera, build_demo_viewer

    viewer, w = build_demo_viewer("synthetic", show=True)
    try:
        for _ in range(20):
            QApplication.processEvents()
        assert not w["dock"].visibleRegion().isEmpty()  # the raised tab
        comp_dock = w["compare"].parent()
        while comp_dock is not None and not hasattr(comp_dock, "setFloating"):
            comp_dock = comp_dock.parent()
        assert comp_dock is not None and comp_dock.visibleRegion().isEmpty()  # a hidden tab behind it
        y0, y1, x0, x1 = w["tissue_box"]
        cam = _camera(viewer)
        assert abs(cam.center[-2] - (y0 + y1) / 2) < 1 and abs(cam.center[-1] - (x0 + x1) / 2) < 1
        ch, cw = viewer.window._qt_viewer.canvas.size
        assert cam.zoom == pytest.approx(0.94 * min(ch / (y1 - y0), cw / (x1 - x0)), rel=0.02)
        comp_dock.raise_()
        for _ in range(20):
            QApplication.processEvents()
        for s in (w["compare"].shot_w, w["compare"].shot_h):  # the whole special text fits ("canvas" showed as "nvas")
            room = s.lineEdit().width()
            need = max(s.fontMetrics().horizontalAdvance(t) for t in (s.specialValueText(), "16384"))
            assert s.specialValueText() == "auto" and room >= need, (room, need)
    finally:
        viewer.close()


def test_demo_sh_offline_fails_in_seconds_before_installing(tmp_path):
    """scripts/demo.sh with no data folder and no network: one short line, before the long install."""
    import os
    import shutil
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    for f in ("demo.sh", "install.sh"):
        shutil.copy(root / "scripts" / f, repo / "scripts" / f)
    env = {k: v for k, v in os.environ.items() if k != "NAPARI_GDT_DATA"}
    env["NAPARI_GDT_OFFLINE"] = "1"
    t0 = time.perf_counter()
    r = subprocess.run(
        ["bash", str(repo / "scripts" / "demo.sh")], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    took = time.perf_counter() - t0
    assert r.returncode == 1 and took < 30, (r.returncode, took, r.stderr)
    assert not (repo / ".venv").exists() and "installing" not in r.stdout  # failed before the install
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) < 200, r.stderr
    assert "NAPARI_GDT_DATA" in lines[0] and "--dataset synthetic" in lines[0]
