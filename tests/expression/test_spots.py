"""Spot readers: legacy ST (her2st), AnnData (Visium crop), Space Ranger outs."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from napari_gdt.errors import ReaderError
from napari_gdt.expression.spots import read_anndata, read_spaceranger, read_st, spots_to_canvas

GENES50 = None


def _her2st(data_dir, s="C5"):
    d = data_dir / "her2st" / s
    return d / "counts.tsv.gz", d / "spots.tsv", d / "he.jpg"


@pytest.fixture(scope="module")
def c5_small(data_dir):
    counts, spots, img = _her2st(data_dir)
    genes = pd.read_csv(counts, sep="\t", index_col=0, nrows=2).columns[1000:1040].tolist()
    return counts, spots, img, genes


@pytest.mark.realdata
@pytest.mark.parametrize("mode", ["footprint", "spread"])
def test_her2st_total_equals_umis_kept(c5_small, mode):
    counts, spots, img, genes = c5_small
    c = read_st(counts, spots, bin_px=32, image=img, mode=mode, genes=genes)
    tab = pd.read_csv(counts, sep="\t", index_col=0)
    sp = pd.read_csv(spots, sep="\t")
    sp = sp[sp["selected"] == 1]
    ids = [f"{x}x{y}" for x, y in zip(sp["x"], sp["y"])]
    joined = [i for i in ids if i in tab.index]
    kept = tab.loc[joined, genes].to_numpy().sum()
    assert c.genes == genes
    assert c.total() == pytest.approx(kept, rel=1e-5)
    assert c.meta["total_counts"] == pytest.approx(kept, rel=1e-6)
    assert c.shape[1:] == (-(-9901 // 32), -(-9272 // 32))  # he.jpg is 9272 wide, 9901 high
    np.testing.assert_allclose(c.affine, np.diag([32.0, 32.0, 1.0]))
    assert len(c.meta["spots"]["centres_px"]) == len(joined) >= len(sp) - 5
    assert 120 < c.meta["spots"]["diameter_px"] < 150  # 100 µm at ~0.73 µm/px


@pytest.mark.realdata
def test_her2st_footprints_land_on_tissue(c5_small):
    from PIL import Image

    counts, spots, img, genes = c5_small
    c = read_st(counts, spots, bin_px=32, image=img, mode="footprint", genes=genes)
    occupied = np.asarray(c.data.sum(axis=0)) > 0
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(img) as im:
        small = np.asarray(im.convert("L").reduce(32), dtype=float)  # one pixel per bin
    H, W = min(small.shape[0], occupied.shape[0]), min(small.shape[1], occupied.shape[1])
    small, occupied = small[:H, :W], occupied[:H, :W]
    under = small[occupied].mean()
    background = small[~occupied].mean()
    assert occupied.mean() > 0.02
    assert under < background - 25, (under, background)  # tissue is darker than the glass around it
    # the spread field covers the gaps between spots but stays near the tissue
    s = read_st(counts, spots, bin_px=32, image=img, mode="spread", genes=genes)
    cover = np.asarray(s.data.sum(axis=0))[:H, :W] > 0
    assert cover.mean() > 3 * occupied.mean()
    assert small[cover].mean() < background - 15


@pytest.mark.realdata
def test_visium_crop_anndata_total_and_warning(data_dir):
    import anndata as ad

    h5 = data_dir / "visium_mouse_brain_crop" / "test_data.h5ad"
    img = data_dir / "visium_mouse_brain_crop" / "test_img.jpg"
    with pytest.warns(UserWarning, match="not integer counts"):
        c = read_anndata(h5, bin_px=16, image=img, mode="footprint")
    a = ad.read_h5ad(h5)
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    assert c.total() == pytest.approx(float(X.sum()), rel=1e-5)
    assert c.shape[1:] == (-(-1717 // 16), -(-950 // 16))  # test_img.jpg is 950 wide, 1717 high
    assert len(c.meta["spots"]["centres_px"]) == a.n_obs
    assert 60 < c.meta["spots"]["diameter_px"] < 120


def _write_spaceranger(tmp_path, n=12, g=5, nan=False, drop_col=None):
    import h5py

    rng = np.random.default_rng(0)
    outs = tmp_path / "outs"
    (outs / "spatial").mkdir(parents=True)
    X = rng.poisson(3, size=(g, n)).astype(np.int32)  # genes x barcodes
    from scipy import sparse

    m = sparse.csc_matrix(X)
    bcs = [f"BC{i:03d}-1" for i in range(n)]
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        grp = f.create_group("matrix")
        grp["data"], grp["indices"], grp["indptr"] = m.data, m.indices, m.indptr
        grp["shape"] = np.array([g, n])
        grp["barcodes"] = np.array([b.encode() for b in bcs])
        fe = grp.create_group("features")
        fe["name"] = np.array([f"G{i}".encode() for i in range(g)])
        fe["feature_type"] = np.array([b"Gene Expression"] * g)
    rows = []
    for i, b in enumerate(bcs):
        r, cc = divmod(i, 4)
        y, x = 100.0 + 150 * r, 100.0 + 150 * cc
        rows.append(
            {
                "barcode": b,
                "in_tissue": 0 if i == 0 else 1,
                "array_row": r,
                "array_col": cc,
                "pxl_row_in_fullres": np.nan if (nan and i == 3) else y,
                "pxl_col_in_fullres": x,
            }
        )
    df = pd.DataFrame(rows)
    if drop_col:
        df = df.drop(columns=[drop_col])
    df.to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    (outs / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 90.0, "tissue_hires_scalef": 0.2})
    )
    return outs, X, bcs


def test_spaceranger_total_equals_in_tissue_umis(tmp_path):
    outs, X, _ = _write_spaceranger(tmp_path)
    c = read_spaceranger(outs, bin_px=10)
    assert c.genes == [f"G{i}" for i in range(5)]
    assert c.total() == pytest.approx(float(X[:, 1:].sum()), rel=1e-6)  # barcode 0 is off tissue
    assert c.meta["spots"]["diameter_px"] == 90.0
    assert c.bin_um == pytest.approx(10 * 55.0 / 90.0)
    # footprint: spot 1 (centre y=100, x=250) lands in the bins under its disc only
    one = read_spaceranger(outs, bin_px=10, genes=["G2"])
    occ = np.asarray(one.data[0]) > 0
    ys, xs = np.nonzero(occ)
    assert ys.min() * 10 >= 100 - 45 - 10 and ys.min() * 10 <= 100 - 45 + 10


def test_spaceranger_errors_name_file_and_column(tmp_path):
    outs, _, _ = _write_spaceranger(tmp_path, nan=True)
    with pytest.raises(ReaderError, match=r"tissue_positions\.csv: column 'pxl_row_in_fullres' has 1 missing/NaN.*BC003-1"):
        read_spaceranger(outs, bin_px=10)
    outs2, _, _ = _write_spaceranger(tmp_path / "b", drop_col="pxl_col_in_fullres")
    with pytest.raises(ReaderError, match=r"tissue_positions\.csv: missing column 'pxl_col_in_fullres'"):
        read_spaceranger(outs2, bin_px=10)
    with pytest.raises(ReaderError, match="missing filtered_feature_bc_matrix.h5"):
        read_spaceranger(tmp_path, bin_px=10)


def _write_st(tmp_path, spots_text=None, counts_rows=None):
    spots = tmp_path / "spots.tsv"
    spots.write_text(
        spots_text
        if spots_text is not None
        else "x\ty\tpixel_x\tpixel_y\tselected\n1\t1\t100\t100\t1\n2\t1\t300\t100\t1\n3\t1\t500\t100\t0\n"
    )
    counts = tmp_path / "counts.tsv.gz"
    with gzip.open(counts, "wt") as f:
        f.write(counts_rows if counts_rows is not None else "\tA\tB\n1x1\t5\t1\n2x1\t3\t0\n3x1\t7\t7\n")
    return counts, spots


def test_st_small_selected_dropped_and_modes(tmp_path):
    counts, spots = _write_st(tmp_path)
    for mode in ("footprint", "spread"):
        c = read_st(counts, spots, bin_px=20, mode=mode, spot_diameter_px=80, um_per_px=0.5)
        assert c.total() == pytest.approx(9.0)  # spot 3x1 is not selected
        assert c.bin_um == pytest.approx(10.0)
    a = np.asarray(read_st(counts, spots, bin_px=20, mode="footprint", spot_diameter_px=80, um_per_px=0.5, genes=["A"]).data[0])
    # spot 1 at (100, 100): its bins hold 5 counts, around x=100 only
    assert a[:, :10].sum() == pytest.approx(5.0) and a[:, 10:].sum() == pytest.approx(3.0)


def test_st_errors_name_file_and_column(tmp_path):
    counts, spots = _write_st(tmp_path, spots_text="x\ty\tpixel_y\n1\t1\t100\n")
    with pytest.raises(ReaderError, match=r"spots\.tsv: missing column 'pixel_x'"):
        read_st(counts, spots, bin_px=20)
    counts, spots = _write_st(tmp_path, spots_text="")
    with pytest.raises(ReaderError, match=r"spots\.tsv: file is empty"):
        read_st(counts, spots, bin_px=20)
    counts, spots = _write_st(tmp_path, spots_text="x\ty\tpixel_x\tpixel_y\n1\t1\t100\t100\n2\t1\tNaN\t100\n")
    with pytest.raises(ReaderError, match=r"spots\.tsv: column 'pixel_x' has 1 missing/NaN value\(s\) \(first at spot '2x1'\)"):
        read_st(counts, spots, bin_px=20)
    counts, spots = _write_st(tmp_path, counts_rows="")
    with pytest.raises(ReaderError, match=r"counts\.tsv\.gz: file is empty"):
        read_st(counts, spots, bin_px=20)
    counts, spots = _write_st(tmp_path)
    with pytest.raises(ReaderError, match=r"counts\.tsv\.gz: gene\(s\) not in the data: NOPE"):
        read_st(counts, spots, bin_px=20, genes=["A", "NOPE"])
    with pytest.raises(ReaderError, match="no such file"):
        read_st(tmp_path / "missing.tsv.gz", spots, bin_px=20)


def test_spots_outside_canvas_warn_and_totals_exact():
    X = np.array([[4.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    with pytest.warns(UserWarning, match="1 spot"):
        c = spots_to_canvas(
            X,
            np.array([[50.0, 50.0], [5000.0, 5000.0]]),
            ["a", "b"],
            bin_px=10,
            um_per_px=1.0,
            diameter_px=30,
            image_shape=(200, 200),
        )
    assert c.total() == pytest.approx(5.0)
    assert c.meta["total_counts"] == pytest.approx(5.0)
