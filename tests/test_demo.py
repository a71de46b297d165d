"""The one-command demo on real data: her2st (H&E) and MERFISH (DAPI) with the bundled models."""

import numpy as np
import pytest

from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR


@pytest.mark.realdata
@pytest.mark.parametrize("dataset,model", [("merfish", "merfish-dapi"), ("her2st", "her2st-he")])
def test_demo_screenshot_real(dataset, model, data_dir, tmp_path, monkeypatch, capsys):
    if not (WEIGHTS_DIR / BUNDLED_MODELS[model]).exists():
        pytest.skip(f"bundled model {model} not installed")
    monkeypatch.setenv("NAPARI_GDT_DATA", str(data_dir))
    from skimage.io import imread

    from napari_gdt.cli import main

    out = tmp_path / f"{dataset}.png"
    assert main(["demo", "--dataset", dataset, "--screenshot", str(out)]) == 0
    img = imread(out)[..., :3].astype(float)
    assert img.shape == (800, 800, 3)
    # the generated layer is on top of the real image: the middle of the view must show tissue, not a flat colour
    centre = img[200:600, 200:600]
    assert centre.std() > 8, centre.std()
    assert (np.abs(np.diff(centre, axis=1)).mean()) > 2  # texture, not a flat placeholder


def test_demo_offline_message(tmp_path, monkeypatch):
    """Without the data folder and without network the demo says what to set."""
    from napari_gdt import data
    from napari_gdt.errors import GDTError

    monkeypatch.setenv("NAPARI_GDT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(GDTError, match="NAPARI_GDT_DATA"):
        data.fetch_her2st("C5")
