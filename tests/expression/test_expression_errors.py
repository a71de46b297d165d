"""Bad input gets one clear error naming the file and the column/option (library and CLI)."""

import numpy as np
import pandas as pd
import pytest

from napari_gdt.errors import ReaderError
from napari_gdt.expression.readers import read_any


def _cli(args, capsys):
    from napari_gdt.cli import main

    rc = main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_missing_columns(tmp_path, capsys):
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": [1.0], "gene": ["Actb"]}).to_csv(p, index=False)
    with pytest.raises(
        ReaderError, match=r"detected_transcripts\.csv: missing column\(s\) 'global_y' needed for the merfish format"
    ):
        read_any(p)
    # a Xenium table without its quality column
    q = tmp_path / "transcripts.parquet"
    pd.DataFrame({"x_location": [1.0], "y_location": [2.0], "feature_name": ["EPCAM"]}).to_parquet(q)
    with pytest.raises(ReaderError, match=r"transcripts\.parquet: missing column\(s\) 'qv'"):
        read_any(q)
    # generic table with a wrong --x-col
    r = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0], "y": [2.0], "gene": ["A"]}).to_csv(r, index=False)
    rc, err = _cli(["convert", str(r), "--out", str(tmp_path / "o.ome.zarr"), "--format", "csv", "--x-col", "xcoord"], capsys)
    assert rc == 2 and "t.csv: missing column(s) 'xcoord'" in err and "\n" not in err


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "detected_transcripts.csv"
    p.write_bytes(b"")
    with pytest.raises(ReaderError, match=r"detected_transcripts\.csv: empty file"):
        read_any(p)
    gz = tmp_path / "transcripts.csv.gz"
    import gzip

    with gzip.open(gz, "wb") as fh:
        fh.write(b"")
    with pytest.raises(ReaderError, match=r"transcripts\.csv\.gz: empty file"):
        read_any(gz)
    h = tmp_path / "header_only.csv"
    h.write_text("global_x,global_y,gene\n")
    with pytest.raises(ReaderError, match=r"header_only\.csv: no transcripts \(the file has a header but no rows\)"):
        read_any(h)
    rc, err = _cli(["convert", str(p), "--out", str(tmp_path / "o.ome.zarr")], capsys)
    assert rc == 2 and err.endswith("detected_transcripts.csv: empty file (no header, no rows)")


def test_all_rows_filtered_out(tmp_path):
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": [1.0, 2.0], "global_y": [1.0, 2.0], "gene": ["Blank-1", "Blank-2"]}).to_csv(p, index=False)
    with pytest.raises(
        ReaderError, match=r"detected_transcripts\.csv: no transcripts left after filtering 2 rows \(.*control probes 2"
    ):
        read_any(p)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_nan_coordinates(tmp_path, ext, capsys):
    df = pd.DataFrame({"global_x": [1.0, 2.0, 3.0], "global_y": [1.0, np.nan, 3.0], "gene": ["A", "B", "C"]})
    p = tmp_path / f"detected_transcripts.{ext}"
    df.to_parquet(p) if ext == "parquet" else df.to_csv(p, index=False)
    with pytest.raises(
        ReaderError,
        match=rf"detected_transcripts\.{ext}: column 'global_y' has 1 NaN/missing coordinate\(s\).*first at data row 1",
    ):
        read_any(p, format="merfish")
    rc, err = _cli(["convert", str(p), "--format", "merfish", "--out", str(tmp_path / "o.ome.zarr")], capsys)
    assert rc == 2 and "column 'global_y' has 1 NaN" in err


def test_empty_gene_name(tmp_path):
    p = tmp_path / "detected_transcripts.csv"
    p.write_text("global_x,global_y,gene\n1,1,Actb\n2,2,\n")
    with pytest.raises(ReaderError, match=r"detected_transcripts\.csv: column 'gene' has 1 empty gene name"):
        read_any(p)


def test_unknown_format(tmp_path, capsys):
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": [1.0], "global_y": [1.0], "gene": ["A"]}).to_csv(p, index=False)
    with pytest.raises(ReaderError, match=r"detected_transcripts\.csv: unknown format 'slide-seq' \(choose from auto\|xenium"):
        read_any(p, format="slide-seq")
    # auto-detection that finds nothing names the file and its columns
    q = tmp_path / "mystery.csv"
    pd.DataFrame({"a": [1.0], "b": [1.0], "c": ["A"]}).to_csv(q, index=False)
    with pytest.raises(ReaderError, match=r"mystery\.csv: cannot detect the format from the name or the columns \(a, b, c\)"):
        read_any(q)
    z = tmp_path / "image.jpg"
    z.write_bytes(b"\xff\xd8\xff")
    rc, err = _cli(["convert", str(z), "--out", str(tmp_path / "o.ome.zarr")], capsys)
    assert rc == 2 and "image.jpg: unknown file type" in err


@pytest.mark.parametrize("bad", [0.0, -5.0])
def test_bin_size_not_positive(tmp_path, bad, capsys):
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": [1.0], "global_y": [1.0], "gene": ["A"]}).to_csv(p, index=False)
    with pytest.raises(ReaderError, match=rf"detected_transcripts\.csv: --bin-um must be > 0, got {bad}"):
        read_any(p, bin_um=bad)
    from napari_gdt.expression.transcripts import read_merfish

    with pytest.raises(ReaderError, match=rf"detected_transcripts\.csv: bin size must be > 0 µm \(option --bin-um\), got {bad}"):
        read_merfish(p, bin_um=bad)
    rc, err = _cli(["convert", str(p), "--out", str(tmp_path / "o.ome.zarr"), "--bin-um", str(bad)], capsys)
    assert rc == 2 and f"--bin-um must be > 0, got {bad}" in err
    rc, err = _cli(["convert", str(p), "--out", str(tmp_path / "o.ome.zarr"), "--bin-px", "0", "--um-per-px", "0.5"], capsys)
    assert rc == 2 and "--bin-px must be > 0" in err


def test_px_units_need_pixel_size(tmp_path):
    p = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0], "y": [1.0], "gene": ["A"]}).to_csv(p, index=False)
    with pytest.raises(ReaderError, match=r"t\.csv: columns 'x', 'y' are in pixels: give --um-per-px"):
        read_any(p, format="csv", units="px")


def test_missing_file(tmp_path):
    with pytest.raises(ReaderError, match=r"nope\.csv: no such file"):
        read_any(tmp_path / "nope.csv")


def test_spot_formats_need_bin_in_pixels(tmp_path):
    p = tmp_path / "x.h5ad"
    p.write_bytes(b"")
    with pytest.raises(ReaderError, match=r"x\.h5ad: spot formats lay bins in image pixels: give --bin-px"):
        read_any(p, bin_um=20.0)


def test_image_without_registration(tmp_path, capsys):
    p = tmp_path / "detected_transcripts.csv"
    pd.DataFrame({"global_x": [1.0], "global_y": [1.0], "gene": ["A"]}).to_csv(p, index=False)
    img = tmp_path / "dapi.png"
    from skimage.io import imsave

    imsave(img, np.zeros((8, 8), np.uint8), check_contrast=False)
    rc, err = _cli(["convert", str(p), "--out", str(tmp_path / "o.ome.zarr"), "--image", str(img)], capsys)
    assert rc == 2 and "dapi.png: cannot place the image: give --image-transform FILE" in err
    rc, err = _cli(
        ["convert", str(p), "--out", str(tmp_path / "o.ome.zarr"), "--image", str(img), "--image-extent-um", "1,2,3"], capsys
    )
    assert rc == 2 and "option --image-extent-um: expected 4 comma-separated numbers" in err
