"""``convert --model`` follows the model card: bin size, spot mode and gene panel, with plain warnings."""

import numpy as np
import pandas as pd
import pytest

from napari_gdt.cli import main
from napari_gdt.expression.canvas import ExpressionCanvas
from napari_gdt.models.bundle import save_bundle
from napari_gdt.models.card import expected_input, read_card
from napari_gdt.synthetic import untrained_bundle


def _model(path, genes):
    b = untrained_bundle(genes, stage_channels=(8, 8, 8, 8), emb_ch=8)
    c = b.card
    save_bundle(path, b.model, c["genes"], c["um_per_px"], c["output"], tile_px=c["tile_px"], px_per_bin=c["px_per_bin"])
    return c["px_per_bin"] * c["um_per_px"]


def _xenium(path, n=3000):
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "feature_name": rng.choice(["EPCAM", "KRT19", "ERBB2"], n),
            "x_location": rng.uniform(0, 300, n),
            "y_location": rng.uniform(0, 200, n),
            "qv": np.full(n, 30.0),
        }
    ).to_parquet(path)


def test_bin_warning_above_one_percent(tmp_path, capsys):
    mp, p = tmp_path / "m.safetensors", tmp_path / "t.parquet"
    bin_um = _model(mp, ["KRT19", "EPCAM"])
    _xenium(p)
    assert main(["convert", str(p), "--out", str(tmp_path / "a.ome.zarr"), "--model", str(mp)]) == 0
    cap = capsys.readouterr()
    assert f"using its bin {bin_um:.2f} µm" in cap.out and "panel of 2 genes" in cap.out and "match model" in cap.out
    assert cap.err == ""
    assert (
        main(["convert", str(p), "--out", str(tmp_path / "b.ome.zarr"), "--model", str(mp), "--bin-um", f"{bin_um * 1.005:.6f}"])
        == 0
    )
    assert capsys.readouterr().err == ""  # 0.5 %: fine
    assert (
        main(["convert", str(p), "--out", str(tmp_path / "c.ome.zarr"), "--model", str(mp), "--bin-um", f"{bin_um * 1.03:.6f}"])
        == 0
    )
    err = capsys.readouterr().err.strip()  # one line, as every CLI warning
    assert (
        len(err.splitlines()) == 1
        and "napari-gdt convert: warning: bins of" in err
        and "+3.0%" in err
        and f"--bin-um {bin_um:.2f}" in err
    )


def test_missing_model_genes_are_named_with_zero_fill_hint(tmp_path, capsys):
    mp, p = tmp_path / "m.safetensors", tmp_path / "t.parquet"
    _model(mp, ["KRT19", "MKI67", "TOP2A"])
    _xenium(p)
    assert main(["convert", str(p), "--out", str(tmp_path / "a.ome.zarr"), "--model", str(mp)]) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 genes that model" in err and "never measured" in err and "MKI67, TOP2A" in err and "--zero-fill" in err
    assert main(["convert", str(p), "--out", str(tmp_path / "a.ome.zarr"), "--model", str(mp), "--zero-fill"]) == 0
    assert "zero-filling 2 gene" in capsys.readouterr().err


def test_expected_input_of_the_bundled_models():
    e = expected_input(read_card("her2st-he"))
    assert e["spot_mode"] == "spread" and e["bin_px"] == 32.0 and abs(e["bin_um"] - 23.58) < 0.01 and len(e["genes"]) == 275
    m = expected_input(read_card("merfish-dapi"))
    assert m["bin_px"] is None and abs(m["bin_um"] - 6.95) < 0.01


@pytest.mark.realdata
def test_convert_with_model_alone_matches_the_tutorial(data_dir, tmp_path, capsys):
    d = data_dir / "her2st" / "C5"
    if not (d / "counts.tsv.gz").exists():
        pytest.skip("her2st/C5 not in the data folder")
    src = [str(d / "counts.tsv.gz"), str(d / "spots.tsv")]
    a, b = tmp_path / "a.ome.zarr", tmp_path / "b.ome.zarr"
    assert main(["convert", *src, "--format", "st", "--model", "her2st-he", "--image", str(d / "he.jpg"), "--out", str(a)]) == 0
    out = capsys.readouterr().out
    assert "bin 32 image px" in out and "spot mode spread" in out and "match model her2st-he's 23.58 µm" in out
    assert (
        main(
            [
                "convert",
                *src,
                "--format",
                "st",
                "--model",
                "her2st-he",
                "--bin-px",
                "32",
                "--spot-mode",
                "spread",
                "--image",
                str(d / "he.jpg"),
                "--out",
                str(b),
            ]
        )
        == 0
    )
    ca, cb = ExpressionCanvas.from_ome_zarr(a), ExpressionCanvas.from_ome_zarr(b)
    assert ca.genes == cb.genes and ca.shape == cb.shape and ca.bin_um == cb.bin_um
    np.testing.assert_array_equal(ca.affine, cb.affine)
    np.testing.assert_array_equal(np.asarray(ca.data), np.asarray(cb.data))


def test_spot_data_follow_the_card_bin_px_and_mode(tmp_path, capsys):
    """A model trained on spot canvases: convert --model lays the bins in its image px and uses its spot mode;
    an unmeasured panel gene is named, with the --zero-fill hint."""
    import gzip

    spots = tmp_path / "spots.tsv"
    spots.write_text("x\ty\tpixel_x\tpixel_y\tselected\n1\t1\t100\t100\t1\n2\t1\t300\t100\t1\n")
    counts = tmp_path / "counts.tsv.gz"
    with gzip.open(counts, "wt") as f:
        f.write("\tA\tB\n1x1\t5\t1\n2x1\t3\t0\n")
    b = untrained_bundle(["A", "C"], stage_channels=(8, 8, 8, 8), emb_ch=8)
    c = b.card
    mp = tmp_path / "m.safetensors"
    save_bundle(
        mp,
        b.model,
        c["genes"],
        c["um_per_px"],
        c["output"],
        tile_px=c["tile_px"],
        px_per_bin=c["px_per_bin"],
        provenance={"data": {"canvases": [{"path": "a.ome.zarr", "bin_um": 20.0, "mode": "footprint", "bin_px": 20.0}]}},
    )
    args = ["convert", str(counts), str(spots), "--format", "st", "--model", str(mp), "--out", str(tmp_path / "c.ome.zarr")]
    assert main(args) == 2
    cap = capsys.readouterr()
    assert "bin 20 image px, spot mode footprint" in cap.out
    err = cap.err
    assert "1 of the 2 genes that model" in err and ": C." in err and "--zero-fill" in err
    assert main([*args, "--zero-fill"]) == 0
    assert "zero-filling 1 gene" in capsys.readouterr().err
    canvas = ExpressionCanvas.from_ome_zarr(tmp_path / "c.ome.zarr")
    assert canvas.genes == ["A", "C"] and canvas.meta.get("mode") == "footprint" and float(canvas.affine[0, 0]) == 20.0
