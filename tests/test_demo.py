"""The one-command demo on real data: her2st (H&E) and MERFISH (DAPI) with the bundled models."""

import numpy as np
import pytest

from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR


@pytest.mark.realdata
@pytest.mark.parametrize("dataset,model", [("merfish", "merfish-dapi"), ("her2st", "her2st-he")])
def test_demo_screenshot_real(dataset, model, data_dir, tmp_path):
    if not (WEIGHTS_DIR / BUNDLED_MODELS[model]).exists():
        pytest.skip(f"bundled model {model} not installed")
    from skimage.io import imread

    out = tmp_path / f"{dataset}.png"
    # its own process: a fresh napari plugin registry and Qt app (the virtual display is inherited)
    r = run_demo(["--dataset", dataset, "--screenshot", str(out)], NAPARI_GDT_DATA=str(data_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    img = imread(out)[..., :3].astype(float)
    assert img.shape == (800, 800, 3)
    # the generated layer is on top of the real image: the middle of the view must show tissue, not a flat colour
    centre = img[200:600, 200:600]
    assert centre.std() > 8, centre.std()
    assert len(np.unique(centre.reshape(-1, 3), axis=0)) > 64  # many grey levels or colours: tissue, not a flat placeholder


def run_demo(args, **env):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "napari_gdt.cli", "demo", *args], capture_output=True, text=True, env=dict(os.environ, **env), timeout=900)


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
