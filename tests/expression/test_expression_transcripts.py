"""Transcript readers on synthetic tables: vendor filters, units, streaming = dense reference."""

import numpy as np
import pandas as pd
import pytest

from napari_gdt.errors import GenePanelError
from napari_gdt.expression.readers import detect_format, read_any
from napari_gdt.expression.transcripts import read_cosmx, read_merfish, read_xenium


def _table(n=3000, genes=("Actb", "Gfap", "Mbp", "Snap25"), seed=0, extent_um=(120.0, 200.0), origin=(50.0, 1000.0)):
    rng = np.random.default_rng(seed)
    y = origin[0] + rng.uniform(0, extent_um[0], n)
    x = origin[1] + rng.uniform(0, extent_um[1], n)
    g = rng.choice(list(genes), n)
    return y, x, g


def dense_reference(y_um, x_um, genes, bin_um, origin_um=(0.0, 0.0), gene_order=None):
    """The naive dense rasterisation, for checking the streaming one (small inputs only)."""
    by = np.floor((np.asarray(y_um) - origin_um[0]) / bin_um).astype(int)
    bx = np.floor((np.asarray(x_um) - origin_um[1]) / bin_um).astype(int)
    order = gene_order or sorted(set(genes))
    gi = {g: i for i, g in enumerate(order)}
    out = np.zeros((len(order), by.max() - by.min() + 1, bx.max() - bx.min() + 1), np.float32)
    np.add.at(out, (np.array([gi[g] for g in genes]), by - by.min(), bx - bx.min()), 1)
    return out, order, (by.min(), bx.min())


def test_streaming_equals_dense_reference(tmp_path):
    y, x, g = _table(n=20000, seed=3)
    p = tmp_path / "t.csv"
    pd.DataFrame({"gene": g, "xx": x, "yy": y}).to_csv(p, index=False)
    # tiny batches, tiny key buffer and small chunks: many runs, merges and chunk seams
    from napari_gdt.expression import transcripts as tx

    counts, genes, info = tx.rasterize_transcripts(
        p, tx.TranscriptSchema("csv", "xx", "yy", "gene"), bin_um=7.0, batch_rows=1000, buffer_keys=1500
    )
    assert len(counts.runs) == 1 or len(counts.runs) <= 9
    canvas = tx.sparse_to_canvas(counts, genes, 7.0, np.eye(3), {}, chunks=(3, 5, 6))
    ref, order, (by0, bx0) = dense_reference(y, x, g, 7.0)
    assert canvas.genes == order
    np.testing.assert_array_equal(np.asarray(canvas.data), ref)
    assert info["origin_um"] == [by0 * 7.0, bx0 * 7.0]
    assert canvas.total() == 20000 and info["kept"] == 20000


def test_merge_of_many_runs():
    from napari_gdt.expression.transcripts import BinAccumulator

    rng = np.random.default_rng(1)
    acc = BinAccumulator(1.0, buffer_keys=100, max_runs=3)
    ys, xs, cs = [], [], []
    for _ in range(40):  # forces > max_runs runs, hence merges
        y, x, c = rng.uniform(0, 20, 97), rng.uniform(0, 30, 97), rng.integers(0, 5, 97)
        acc.add(y, x, c)
        ys.append(y), xs.append(x), cs.append(c)
    sc = acc.finalize([4, 3, 2, 1, 0])
    assert len(sc.runs) <= 4
    y, x, c = np.concatenate(ys), np.concatenate(xs), np.concatenate(cs)
    by, bx = np.floor(y).astype(int), np.floor(x).astype(int)
    ref = np.zeros((5,) + sc.shape[1:], np.float32)
    np.add.at(ref, (4 - c, by - sc.by0, bx - sc.bx0), 1)
    np.testing.assert_array_equal(sc[:, :, :], ref)
    np.testing.assert_array_equal(sc[1:4, 3:11, 7:29], ref[1:4, 3:11, 7:29])


def _xenium_frame(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    names = [
        "EPCAM",
        "KRT19",
        "ERBB2",
        "NegControlProbe_00042",
        "BLANK_0006",
        "UnassignedCodeword_0001",
        "DeprecatedCodeword_0003",
    ]
    g = rng.choice(names, n, p=[0.3, 0.25, 0.25, 0.05, 0.05, 0.05, 0.05])
    return pd.DataFrame(
        {
            "transcript_id": np.arange(n),
            "cell_id": ["aaa-1"] * n,
            "overlaps_nucleus": rng.integers(0, 2, n),
            "feature_name": g,
            "x_location": rng.uniform(0, 300, n),
            "y_location": rng.uniform(0, 200, n),
            "z_location": rng.uniform(10, 20, n),
            "qv": rng.uniform(0, 40, n),
        }
    )


@pytest.mark.parametrize("ext", ["parquet", "csv", "csv.gz"])
def test_xenium_qv_and_controls(tmp_path, ext):
    df = _xenium_frame()
    p = tmp_path / f"transcripts.{ext}"
    if ext == "parquet":
        df.to_parquet(p)
    else:
        df.to_csv(p, index=False)  # pandas gzips by extension
    assert detect_format(p) == "xenium"
    c = read_any(p, bin_um=20.0)
    controls = df.feature_name.str.match(r"^(NegControl|BLANK|Unassigned|Deprecated)")
    keep = (~controls) & (df.qv >= 20)
    assert c.genes == ["EPCAM", "ERBB2", "KRT19"]
    assert c.total() == keep.sum() == c.meta["transcripts_kept"]
    assert c.meta["dropped"]["control_probes"] == controls.sum()
    assert c.meta["dropped"]["quality"] == ((~controls) & (df.qv < 20)).sum()
    kept = df[keep]
    ref, _, _ = dense_reference(kept.y_location, kept.x_location, list(kept.feature_name), 20.0)
    np.testing.assert_array_equal(np.asarray(c.data), ref)
    # a stricter threshold keeps fewer
    assert read_xenium(p, bin_um=20.0, qv_min=30).total() == ((~controls) & (df.qv >= 30)).sum()


def test_xenium_binary_feature_names_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = _xenium_frame(500)
    t = pa.table(
        {
            "feature_name": pa.array([s.encode() for s in df.feature_name], pa.binary()),
            "x_location": df.x_location,
            "y_location": df.y_location,
            "qv": df.qv,
        }
    )
    (tmp_path / "outs").mkdir()
    pq.write_table(t, tmp_path / "outs" / "transcripts.parquet")
    assert detect_format(tmp_path / "outs") == "xenium"
    c = read_any(tmp_path / "outs", bin_um=50.0)
    keep = (~df.feature_name.str.match(r"^(NegControl|BLANK|Unassigned|Deprecated)")) & (df.qv >= 20)
    assert c.total() == keep.sum() and "EPCAM" in c.genes


def test_cosmx_controls_px_units_and_fov(tmp_path):
    rng = np.random.default_rng(5)
    n = 3000
    names = ["CD3E", "MS4A1", "NegPrb3", "NegPrb11", "SystemControl12"]
    df = pd.DataFrame(
        {
            "fov": rng.integers(1, 4, n),
            "cell_ID": 0,
            "x_local_px": rng.uniform(0, 4000, n),
            "y_local_px": rng.uniform(0, 4000, n),
            "x_global_px": rng.uniform(0, 20000, n),
            "y_global_px": rng.uniform(0, 10000, n),
            "z": 0,
            "target": rng.choice(names, n),
            "CellComp": "Nuclear",
        }
    )
    p = tmp_path / "Run5_S1_tx_file.csv"
    df.to_csv(p, index=False)
    assert detect_format(p) == "cosmx"
    c = read_any(p, bin_um=50.0)
    keep = ~df.target.str.match(r"^(NegPrb|SystemControl)")
    assert c.genes == ["CD3E", "MS4A1"]
    assert c.total() == keep.sum()
    assert c.meta["dropped"]["control_probes"] == (~keep).sum()
    upp = 0.12028
    ref, _, _ = dense_reference(df.y_global_px[keep] * upp, df.x_global_px[keep] * upp, list(df.target[keep]), 50.0)
    np.testing.assert_array_equal(np.asarray(c.data), ref)
    # one field of view, local coordinates
    c2 = read_cosmx(p, bin_um=50.0, coords="local", fov=2)
    assert c2.total() == (keep & (df.fov == 2)).sum()
    # an image in the same pixel frame: the affine maps bins to global px
    c3 = read_any(p, bin_um=50.0, image=np.zeros((10000, 20000), np.uint8))
    b_px = 50.0 / upp
    np.testing.assert_allclose(np.diag(c3.affine)[:2], [b_px, b_px])
    corner = c3.affine @ [0, 0, 1]
    by0 = np.floor(df.y_global_px[keep].min() * upp / 50.0)
    assert abs(corner[0] - by0 * b_px) < 1e-6


@pytest.mark.parametrize("units", ["um", "px"])
@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_generic_table_units(tmp_path, units, ext):
    y, x, g = _table(n=2500, seed=7)
    upp = 0.5
    scale = 1.0 / upp if units == "px" else 1.0  # same physical positions, written in px or µm
    df = pd.DataFrame({"Y": y * scale, "X": x * scale, "target_gene": g, "extra": 1})
    p = tmp_path / f"table.{ext}"
    df.to_parquet(p) if ext == "parquet" else df.to_csv(p, index=False)
    c = read_any(
        p,
        format="csv",
        x_col="X",
        y_col="Y",
        gene_col="target_gene",
        units=units,
        um_per_px=upp if units == "px" else None,
        bin_um=8.0,
    )
    ref, order, (by0, bx0) = dense_reference(y, x, g, 8.0)
    assert c.genes == order and c.bin_um == 8.0
    np.testing.assert_array_equal(np.asarray(c.data), ref)
    np.testing.assert_allclose(c.meta["origin_um"], [by0 * 8.0, bx0 * 8.0])
    # --bin-px with --um-per-px gives the same bins
    c2 = (
        read_any(p, format="csv", x_col="X", y_col="Y", gene_col="target_gene", units=units, um_per_px=upp, bin_px=16.0)
        if units == "px"
        else None
    )
    if c2 is not None:
        np.testing.assert_array_equal(np.asarray(c2.data), ref)


def test_gene_list_order_missing_and_zero_fill(tmp_path):
    y, x, g = _table(n=500)
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": x, "global_y": y, "gene": g}).to_csv(p, index=False)
    c = read_merfish(p, bin_um=10.0, genes="Mbp,Actb")
    assert c.genes == ["Mbp", "Actb"] and c.total() == sum(gg in ("Mbp", "Actb") for gg in g)
    assert c.meta["dropped"]["not_in_gene_list"] == sum(gg not in ("Mbp", "Actb") for gg in g)
    gl = tmp_path / "genes.txt"
    gl.write_text("gene\nSnap25\nGfap\n")
    assert read_any(p, genes=str(gl)).genes == ["Snap25", "Gfap"]
    with pytest.raises(GenePanelError, match=r"detected_transcripts.csv: column 'gene' lacks 2 requested gene\(s\): Foo, Bar"):
        read_any(p, genes=["Actb", "Foo", "Bar"])
    with pytest.warns(UserWarning, match="zero-filling 1 gene"):
        z = read_any(p, genes=["Foo", "Actb"], zero_fill=True)
    assert z.genes == ["Foo", "Actb"] and float(z.data[0].sum().compute()) == 0
    assert float(z.data[1].sum().compute()) == sum(gg == "Actb" for gg in g)


def test_image_registration_options(tmp_path):
    from napari_gdt.expression.transcripts import image_registration

    y, x, g = _table(n=300, origin=(500.0, 700.0))
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": x, "global_y": y, "gene": g}).to_csv(p, index=False)
    img = np.zeros((400, 1000), np.uint8)  # spans x 700..900 µm, y 500..580 µm: 0.2 µm/px
    c = read_any(p, bin_um=2.0, image=img, image_extent_um=(700, 900, 500, 580))
    # bins are anchored at the image corner, so the affine is 10 px per bin and the translation whole bins
    np.testing.assert_allclose(np.diag(c.affine)[:2], [10.0, 10.0])
    by, bx = np.floor((y - 500) / 2).min(), np.floor((x - 700) / 2).min()
    np.testing.assert_allclose(c.affine[:2, 2], [by * 10, bx * 10])
    # a Vizgen micron->mosaic transform file (x first) beside the image gives the same
    m = np.array([[5.0, 0, -700 * 5.0], [0, 5.0, -500 * 5.0], [0, 0, 1]])
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    np.savetxt(imgdir / "micron_to_mosaic_pixel_transform.csv", m, delimiter=" ")
    from skimage.io import imsave

    imsave(imgdir / "mosaic_DAPI_z0.png", img, check_contrast=False)
    c2 = read_merfish(p, bin_um=2.0, image=str(imgdir / "mosaic_DAPI_z0.png"))
    np.testing.assert_allclose(c2.affine, c.affine)
    np.testing.assert_allclose(image_registration(None, um_per_px=0.5, origin_um=(10, 20)) @ [10, 20, 1], [0, 0, 1])


def test_convert_cli_round_trip(tmp_path, capsys):
    from napari_gdt.cli import main
    from napari_gdt.expression.canvas import ExpressionCanvas

    df = _xenium_frame(2000)
    p = tmp_path / "transcripts.csv.gz"
    df.to_csv(p, index=False)
    out = tmp_path / "c.ome.zarr"
    assert main(["convert", str(p), "--out", str(out), "--bin-um", "25", "--genes", "KRT19,EPCAM", "--chunks", "1,4,4"]) == 0
    line = capsys.readouterr().out.strip()
    keep = df.feature_name.isin(["KRT19", "EPCAM"]) & (df.qv >= 20)
    back = ExpressionCanvas.from_ome_zarr(out)
    _, h, w = back.shape
    assert line.startswith(f"{out}: 2 genes, {h} x {w} bins (y x x) of 25 µm, {keep.sum():,} total counts")
    assert back.genes == ["KRT19", "EPCAM"] and back.total() == keep.sum()
    assert back.data.chunks[1][0] == 4 and back.meta["format"] == "xenium"
    import zarr

    assert [c["label"] for c in zarr.open_group(str(out), mode="r").attrs["omero"]["channels"]] == ["KRT19", "EPCAM"]


def test_napari_reader_accepts_transcripts_and_canvases(tmp_path):
    from napari_gdt._reader import get_reader

    df = _xenium_frame(800)
    p = tmp_path / "transcripts.parquet"
    df.to_parquet(p)
    reader = get_reader(str(p))
    assert reader is not None
    layers = reader(str(p))
    assert len(layers) == 3 and all(t == "image" for _, _, t in layers)
    assert {kw["metadata"]["gene"] for _, kw, _ in layers} == {"EPCAM", "KRT19", "ERBB2"}
    out = tmp_path / "c.ome.zarr"
    read_any(p, bin_um=30.0).to_ome_zarr(out)
    assert get_reader(str(out)) is not None
    other = tmp_path / "points.csv"
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(other, index=False)
    assert get_reader(str(other)) is None  # napari falls back to its own readers


def test_canvas_reads_lazily(tmp_path):
    import zarr

    """Reading one gene of a written canvas touches only that gene's chunks."""
    df = _xenium_frame(3000)
    p = tmp_path / "transcripts.parquet"
    df.to_parquet(p)
    out = tmp_path / "c.ome.zarr"
    read_any(p, bin_um=10.0, chunks=(1, 8, 8)).to_ome_zarr(out, chunks=(1, 8, 8))
    c = read_any(out)
    assert c.data.chunks[0] == (1, 1, 1)
    expected = np.asarray(c.data[1, :8, :8])
    assert expected.sum() > 0
    # corrupt every stored chunk but gene 1's first one: reading that box must not touch the others
    ds = out / zarr.open_group(str(out), mode="r").attrs["multiscales"][0]["datasets"][0]["path"]
    files = [f for f in ds.rglob("*") if f.is_file() and not f.name.startswith(".")]
    keep = [f for f in files if f.relative_to(ds).parts in (("1", "0", "0"), ("1.0.0",))]
    assert len(keep) == 1 and len(files) > 10
    for f in files:
        if f not in keep:
            f.write_bytes(b"not a chunk")
    c = read_any(out)
    np.testing.assert_array_equal(np.asarray(c.data[1, :8, :8]), expected)
    with pytest.raises(RuntimeError):  # the codec rejects a corrupted chunk
        np.asarray(c.data[0, :8, :8])


def _save(save_bundle, b, path):
    c = b.card
    save_bundle(path, b.model, c["genes"], c["um_per_px"], c["output"], tile_px=c["tile_px"], px_per_bin=c["px_per_bin"])


def test_convert_aligned_to_a_model_panel(tmp_path, capsys):
    from napari_gdt.cli import main
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import untrained_bundle

    bundle = untrained_bundle(["KRT19", "EPCAM"], stage_channels=(8, 8, 8, 8), emb_ch=8)
    mp = tmp_path / "m.safetensors"
    _save(save_bundle, bundle, mp)
    df = _xenium_frame(1500)
    p = tmp_path / "transcripts.parquet"
    df.to_parquet(p)
    out = tmp_path / "c.ome.zarr"
    assert main(["convert", str(p), "--out", str(out), "--model", str(mp)]) == 0
    c = ExpressionCanvas.from_ome_zarr(out)
    assert c.genes == ["KRT19", "EPCAM"]  # the model's order; ERBB2 ignored
    assert c.bin_um == bundle.px_per_bin * bundle.card["um_per_px"]
    # a panel gene absent from the data is an error listing it, unless --zero-fill
    bundle2 = untrained_bundle(["KRT19", "MKI67"], stage_channels=(8, 8, 8, 8), emb_ch=8)
    _save(save_bundle, bundle2, mp)
    assert main(["convert", str(p), "--out", str(out), "--model", str(mp)]) == 2
    assert "lacks 1 requested gene(s): MKI67" in capsys.readouterr().err
    assert main(["convert", str(p), "--out", str(out), "--model", str(mp), "--zero-fill"]) == 0
    err = capsys.readouterr().err.strip()  # the CLI prints our warnings as one line each
    assert len(err.splitlines()) == 1 and "napari-gdt convert: warning:" in err and "zero-filling 1 gene" in err


def test_align_missing_genes_and_zero_fill(small_canvas):
    with pytest.raises(GenePanelError, match="lacks 2 gene\\(s\\) of the model panel: NOPE1, NOPE2"):
        small_canvas.align(["EPCAM", "NOPE1", "NOPE2"])
    with pytest.warns(UserWarning, match="zero-filling 1 gene"):
        a = small_canvas.align(["NOPE1", "EPCAM"], zero_fill=True)
    assert a.genes == ["NOPE1", "EPCAM"] and float(a.data[0].sum().compute()) == 0
    np.testing.assert_array_equal(np.asarray(a.data[1]), np.asarray(small_canvas.data[small_canvas.genes.index("EPCAM")]))
