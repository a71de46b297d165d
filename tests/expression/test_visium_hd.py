"""Visium HD (Space Ranger 3 ``binned_outputs/square_{002,008,016}um``): our reader, and agreement with spatialdata-io.

The fixture writes a tiny folder laid out as Space Ranger 3 writes ``outs/``:
``feature_slice.h5`` (metadata_json with hd_layout_json), ``spatial/`` (hires and lowres
PNGs, scalefactors_json.json) and, per bin size, ``filtered_feature_bc_matrix.h5``,
``raw_feature_bc_matrix.h5`` and ``spatial/{tissue_positions.parquet, scalefactors_json.json,
tissue_hires_image.png, tissue_lowres_image.png}``. The microscope image (the full
resolution H&E given to Space Ranger) lies beside ``outs/``.
"""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

from napari_gdt.errors import ReaderError
from napari_gdt.expression.readers import detect_format, read_any
from napari_gdt.expression.spots import find_visium_hd_bins, read_visium_hd

UM_PER_PX = 0.25  # full-resolution px
ORIGIN = (100.0, 60.0)  # full-res px of the bin grid's corner (row, col)
N2 = 32  # 2 µm bins per side
GENES = ["GeneA", "GeneB", "GeneC", "GeneD", "GeneE"]
HIRES, LOWRES = 0.5, 0.1
FULL_SHAPE = (456, 376)


def _write_h5(path, X, barcodes):
    """A 10x feature-barcode matrix (v3 layout) of X (barcodes x genes)."""
    m = sparse.csc_matrix(X.T.astype(np.int32))  # genes x barcodes, CSC by barcode
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
        g["shape"] = np.array(m.shape, dtype=np.int32)
        g["barcodes"] = np.array([b.encode() for b in barcodes])
        fe = g.create_group("features")
        fe["id"] = np.array([f"ENSG{i:05d}".encode() for i in range(len(GENES))])
        fe["name"] = np.array([n.encode() for n in GENES])
        fe["feature_type"] = np.array([b"Gene Expression"] * len(GENES))
        fe["genome"] = np.array([b"GRCh38"] * len(GENES))
        fe["_all_tag_keys"] = np.array([b"genome"])


def _png(path, shape):
    Image.fromarray(np.full(shape + (3,), 200, np.uint8)).save(path)


@pytest.fixture(scope="module")
def hd_outs(tmp_path_factory):
    root = tmp_path_factory.mktemp("visium_hd")
    outs = root / "outs"
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(N2), np.arange(N2), indexing="ij")
    tissue2 = (yy - 14) ** 2 + (xx - 17) ** 2 < 13**2
    counts2 = rng.poisson(0.6, (N2, N2, len(GENES))) * tissue2[..., None]
    (outs / "spatial").mkdir(parents=True)
    hires_shape = (round(FULL_SHAPE[0] * HIRES), round(FULL_SHAPE[1] * HIRES))
    lowres_shape = (round(FULL_SHAPE[0] * LOWRES), round(FULL_SHAPE[1] * LOWRES))
    truth = {}
    for um in (2, 8, 16):
        k = um // 2
        n = N2 // k
        c = counts2.reshape(n, k, n, k, len(GENES)).sum(axis=(1, 3))
        tis = tissue2.reshape(n, k, n, k).any(axis=(1, 3))
        side = um / UM_PER_PX
        rows = []
        for r in range(n):
            for q in range(n):
                rows.append(
                    {
                        "barcode": f"s_{um:03d}um_{r:05d}_{q:05d}-1",
                        "in_tissue": int(tis[r, q]),
                        "array_row": r,
                        "array_col": q,
                        "pxl_row_in_fullres": ORIGIN[0] + (r + 0.5) * side,
                        "pxl_col_in_fullres": ORIGIN[1] + (q + 0.5) * side,
                    }
                )
        pos = pd.DataFrame(rows)
        d = outs / "binned_outputs" / f"square_{um:03d}um"
        (d / "spatial").mkdir(parents=True)
        pos.to_parquet(d / "spatial" / "tissue_positions.parquet", index=False)
        flat = c.reshape(n * n, len(GENES))
        keep = pos["in_tissue"].to_numpy() == 1
        _write_h5(d / "filtered_feature_bc_matrix.h5", flat[keep], pos["barcode"][keep].tolist())
        _write_h5(d / "raw_feature_bc_matrix.h5", flat, pos["barcode"].tolist())
        sf = {
            "spot_diameter_fullres": side,
            "bin_size_um": float(um),
            "microns_per_pixel": UM_PER_PX,
            "regist_target_img_scalef": HIRES,
            "tissue_lowres_scalef": LOWRES,
            "fiducial_diameter_fullres": 500.0,
            "tissue_hires_scalef": HIRES,
        }
        (d / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
        _png(d / "spatial" / "tissue_hires_image.png", hires_shape)
        _png(d / "spatial" / "tissue_lowres_image.png", lowres_shape)
        if um == 2:
            (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
        truth[um] = {"total": float(flat[keep].sum()), "pos": pos[keep].set_index("barcode"), "X": flat[keep]}
    _png(outs / "spatial" / "tissue_hires_image.png", hires_shape)
    _png(outs / "spatial" / "tissue_lowres_image.png", lowres_shape)
    layout = {"file_format": "1.0", "transform": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "num_rows": 3350, "num_cols": 3350}
    eye = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    meta = {
        "hd_layout_json": json.dumps(layout),
        "transform_matrices": {
            k: eye
            for k in (
                "cytassist_colrow_to_spot_colrow",
                "spot_colrow_to_cytassist_colrow",
                "microscope_colrow_to_spot_colrow",
                "spot_colrow_to_microscope_colrow",
            )
        },
    }
    with h5py.File(outs / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(meta)
    full = root / "microscope.tif"
    import tifffile

    tifffile.imwrite(full, rng.integers(0, 255, FULL_SHAPE + (3,), dtype=np.uint8), photometric="rgb")
    return outs, full, truth


def test_detect_and_read_bins(hd_outs):
    outs, full, truth = hd_outs
    assert detect_format(outs) == "visium_hd"
    assert detect_format(outs / "binned_outputs") == "visium_hd"
    assert detect_format(outs / "binned_outputs" / "square_016um") == "visium_hd"
    assert sorted(find_visium_hd_bins(outs)) == [2, 8, 16]
    c = read_any(outs, bin_um=8.0)
    assert c.meta["hd_bin_um"] == 8 and "read square_008um of square_002um, square_008um, square_016um" in c.meta["picked"][0]
    assert c.genes == GENES
    assert c.meta["total_counts"] == truth[8]["total"]
    assert c.total() == pytest.approx(truth[8]["total"], rel=1e-6)
    # without --image: on the hires PNG, px scaled by tissue_hires_scalef
    assert c.meta["um_per_px"] == pytest.approx(UM_PER_PX / HIRES)
    assert c.shape[1:] == (-(-round(FULL_SHAPE[0] * HIRES) // 16), -(-round(FULL_SHAPE[1] * HIRES) // 16))
    pos = truth[8]["pos"]
    got = dict(zip(c.meta["spots"]["ids"], c.meta["spots"]["centres_px"]))
    for b in pos.index[:20]:
        np.testing.assert_allclose(
            got[b], [pos.loc[b, "pxl_row_in_fullres"] * HIRES, pos.loc[b, "pxl_col_in_fullres"] * HIRES], atol=1e-3
        )
    for um in (2, 16):
        cu = read_visium_hd(outs, hd_bin_um=um, image=full, bin_px=16)
        assert cu.meta["total_counts"] == truth[um]["total"]
        assert cu.shape[1:] == (-(-FULL_SHAPE[0] // 16), -(-FULL_SHAPE[1] // 16))
        np.testing.assert_allclose(cu.affine, np.diag([16.0, 16.0, 1.0]))


def test_hd_errors_name_file(hd_outs, tmp_path):
    outs, _, _ = hd_outs
    with pytest.raises(ReaderError, match=r"no square_004um bins \(found square_002um, square_008um, square_016um\)"):
        read_visium_hd(outs, hd_bin_um=4)
    import shutil

    bad = tmp_path / "outs"
    shutil.copytree(outs / "binned_outputs" / "square_016um", bad / "binned_outputs" / "square_016um")
    sf = bad / "binned_outputs" / "square_016um" / "spatial" / "scalefactors_json.json"
    sf.write_text(json.dumps({"spot_diameter_fullres": 64.0}))
    with pytest.raises(ReaderError, match=r"scalefactors_json\.json: field 'microns_per_pixel'"):
        read_visium_hd(bad)
    (bad / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet").unlink()
    with pytest.raises(ReaderError, match=r"tissue_positions\.parquet: missing"):
        read_visium_hd(bad)


def test_agrees_with_spatialdata_io(hd_outs):
    pytest.importorskip("spatialdata", reason="the optional 'spatialdata' package is not installed")
    sdio = pytest.importorskip("spatialdata_io", reason="spatialdata-io is not installed")
    import warnings

    from napari_gdt.expression.spatialdata import read_spatialdata

    outs, full, truth = hd_outs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sdio.visium_hd(outs, fullres_image_file=full, load_segmentations_only=False)
    for um in (2, 8, 16):
        t = sdata.tables[f"square_{um:03d}um"]
        assert float(t.X.sum()) == truth[um]["total"]  # spatialdata-io's totals = ours = the file's
        ours = read_visium_hd(outs, hd_bin_um=um, image=full, bin_px=8)
        assert ours.meta["total_counts"] == truth[um]["total"]
    full_name = next(n for n in sdata.images if n.endswith("_full_image"))
    theirs = read_spatialdata(outs, sdata=sdata, table="square_008um", image_element=full_name, bin_px=8)
    ours = read_visium_hd(outs, hd_bin_um=8, image=full, bin_px=8)
    assert theirs.meta["spatialdata"]["shapes"].endswith("square_008um")
    assert theirs.meta["um_per_px"] == pytest.approx(UM_PER_PX) == ours.meta["um_per_px"]
    assert theirs.meta["total_counts"] == ours.meta["total_counts"]
    # positions: bin centres in full-resolution px, barcode by barcode
    a = dict(zip(theirs.meta["spots"]["ids"], map(tuple, theirs.meta["spots"]["centres_px"])))
    b = dict(zip(ours.meta["spots"]["ids"], map(tuple, ours.meta["spots"]["centres_px"])))
    assert a.keys() == b.keys() and len(a) == len(truth[8]["pos"])
    np.testing.assert_allclose(np.array([a[k] for k in b]), np.array([b[k] for k in b]), atol=1e-6)
    assert theirs.meta["spots"]["diameter_px"] == pytest.approx(ours.meta["spots"]["diameter_px"])
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-9)
    np.testing.assert_allclose(np.asarray(theirs.data), np.asarray(ours.data), rtol=1e-5, atol=1e-5)
