"""CLI contract for info and render."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_gdt.cli import main
from napari_gdt.models.bundle import save_bundle


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_bundle, small_canvas):
    d = tmp_path_factory.mktemp("cli")
    m = d / "model.safetensors"
    save_bundle(
        m,
        small_bundle.model,
        small_bundle.genes,
        um_per_px=1.0,
        output={"kind": "he", "channels": ["R", "G", "B"]},
        tile_px=128,
        name="t",
    )
    c = small_canvas.to_ome_zarr(d / "canvas.ome.zarr")
    return d, m, c


def test_info_json(files, capsys):
    _, m, _ = files
    assert main(["info", str(m), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    for k in ("format", "arch", "genes", "px_per_bin", "um_per_px", "output", "tile_px", "halo_px", "provenance"):
        assert k in card
    assert main(["info", str(m)]) == 0
    assert "architecture gdt-v1" in capsys.readouterr().out


def test_render_npy_png_tif_tile_invariant(files, capsys):
    d, m, c = files
    outs = {}
    for t in (128, 256):
        o = d / f"r{t}.npy"
        assert (
            main(
                [
                    "render",
                    "--model",
                    str(m),
                    "--expression",
                    str(c),
                    "--out",
                    str(o),
                    "--region",
                    "64:576,32:544",
                    "--tile-px",
                    str(t),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        outs[t] = np.load(o)
    assert "tiles computed" in capsys.readouterr().out
    assert outs[128].shape == (512, 512, 3) and outs[128].dtype == np.float32
    assert np.abs(outs[128] - outs[256]).max() <= 1e-5
    for ext in ("png", "tif"):
        o = d / f"r.{ext}"
        assert main(["render", "--model", str(m), "--expression", str(c), "--out", str(o), "--region", "0:128,0:256"]) == 0
        from skimage.io import imread

        img = imread(o)
        assert img.shape == (128, 256, 3) and img.dtype == np.uint8


def _run(*args):
    return subprocess.run([sys.executable, "-m", "napari_gdt.cli", *args], capture_output=True, text=True)


def test_errors_exit_2_one_line(files, tmp_path):
    d, m, c = files
    r = _run("info", str(tmp_path / "missing.safetensors"))
    assert r.returncode == 2 and "missing.safetensors: no such model file" in r.stderr and "Traceback" not in r.stderr
    r = _run("render", "--model", str(m), "--expression", str(c), "--out", str(tmp_path / "o.png"), "--region", "0:99999,0:10")
    assert r.returncode == 2 and "lies outside the canvas" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run("render", "--model", str(m), "--expression", str(tmp_path / "nocanvas.ome.zarr"), "--out", str(tmp_path / "o.png"))
    assert r.returncode == 2 and "nocanvas.ome.zarr: no such expression canvas" in r.stderr


def test_info_text_summarises_the_bundled_card(capsys):
    """The human-readable card names the data files and gives the validation metrics in one line each."""
    from napari_gdt.models.bundle import BUNDLED_MODELS, WEIGHTS_DIR

    if not (WEIGHTS_DIR / BUNDLED_MODELS["her2st-he"]).exists():
        pytest.skip("bundled model her2st-he not in this build")
    assert main(["info", "her2st-he"]) == 0
    out = capsys.readouterr().out
    assert "data.images: her2st/C2/he.jpg, her2st/C3/he.jpg, her2st/C4/he.jpg" in out
    from napari_gdt.models.bundle import read_card

    card = read_card("her2st-he")
    if card["provenance"].get("data", {}).get("validation"):
        assert "data.validation: " in out
    lines = out.splitlines()
    for label, res in card["validation"]["morphometrics"].items():  # one block per recorded validation, with its figures
        i = next(i for i, x in enumerate(lines) if x.strip().startswith(f"morphometrics[{label}]"))
        block = "\n".join(lines[i : i + 6])  # ratios, Spearman ρ in words, fidelity, baselines: one line each
        assert f"density {res['nuclei_density_ratio']:.2f}" in block
        assert f"area fraction {res['area_fraction_ratio']:.2f}" in block
        assert "better than flat: all" in block
        assert "Spearman ρ over 181 spot footprints (rank agreement" in block
    if card["provenance"].get("init_from"):
        assert "19 new (ERBB2, GRB7" in out
    assert all(len(x) <= 520 for x in out.splitlines())  # no wall of JSON
