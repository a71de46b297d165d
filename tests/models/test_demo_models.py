"""The bundled demo models: present, small, with provenance and validation in their cards."""

import pytest

from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR, load_bundle, read_card


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_bundled_model_card_records_training(name):
    card = read_card(name)
    prov = card["provenance"]
    assert prov["trained"] is True and prov["steps"] > 0 and prov["train_time_s"] > 0
    assert prov["command"].startswith("napari-gdt train ")
    assert prov["software"]["torch"]
    assert all("source" in d for d in prov["data"]["images"])  # public sources, not local paths only
    morph = card["validation"]["morphometrics"]
    assert morph and all("nuclei_density_ratio" in v and "baseline" in v for v in morph.values())
    b = load_bundle(name)
    assert b.px_per_bin == 16
    assert (b.output_kind == "he") == name.startswith("her2st-he")


def test_bundled_weights_fit_the_size_budget():
    total = sum((WEIGHTS_DIR / f).stat().st_size for f in BUNDLED_MODELS.values())
    assert total <= 20 * 2**20


@pytest.mark.realdata
def test_demo_canvas_fits_the_merfish_model(data_dir, monkeypatch):
    monkeypatch.setenv("NAPARI_GDT_DATA", str(data_dir))
    from napari_gdt.training.recipes import demo_canvas

    canvas, image, name = demo_canvas("merfish")
    card = read_card(name)
    assert canvas.genes == card["genes"]
    assert canvas.bin_um / card["px_per_bin"] == pytest.approx(card["um_per_px"], rel=1e-3)
    assert image.name == "dapi_z0.jpg"
    assert canvas.total() > 30000
