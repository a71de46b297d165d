"""Real MERFISH mouse brain (../shared/data): totals and registration with DAPI."""

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

# image extent in µm, from the data README (x 6400.029-6900.037, y 4699.967-5150.007)
EXTENT = (6400.029, 6900.037, 4699.967, 5150.007)


@pytest.fixture(scope="module")
def merfish(data_dir):
    d = data_dir / "merfish_mouse_brain"
    if not (d / "transcripts_z0.csv.gz").exists():
        pytest.skip("merfish_mouse_brain not in the data folder")
    return d


def _bin_means(img, affine, shape):
    """Mean image value inside each bin (the bin's footprint in image pixels, via the affine)."""
    H, W = shape
    r = affine[0, 0] * np.arange(H + 1) + affine[0, 2]
    c = affine[1, 1] * np.arange(W + 1) + affine[1, 2]
    ri = np.clip(np.round(r).astype(int), 0, img.shape[0])
    ci = np.clip(np.round(c).astype(int), 0, img.shape[1])
    out = np.full((H, W), np.nan)
    for i in range(H):
        for j in range(W):
            if ri[i + 1] > ri[i] and ci[j + 1] > ci[j]:
                out[i, j] = img[ri[i] : ri[i + 1], ci[j] : ci[j + 1]].mean()
    return out


def test_merfish_total_equals_kept_transcripts(merfish):
    import pandas as pd

    from napari_gdt.expression.readers import read_any

    df = pd.read_csv(merfish / "transcripts_z0.csv.gz")
    kept = df[~df.gene.str.startswith("Blank-")]
    c = read_any(merfish / "transcripts_z0.csv.gz", bin_um=10.0)
    assert c.meta["format"] == "merfish"
    assert c.total() == len(kept) == c.meta["transcripts_kept"]
    assert c.meta["dropped"]["control_probes"] == len(df) - len(kept) > 0
    assert set(c.genes) == set(kept.gene) and not any(g.startswith("Blank-") for g in c.genes)
    # per gene too
    per_gene = kept.gene.value_counts()
    totals = np.asarray(c.data.sum(axis=(1, 2)))
    assert all(totals[i] == per_gene[g] for i, g in enumerate(c.genes))


def test_merfish_lands_on_bright_dapi(merfish, tmp_path):
    from skimage.io import imread

    from napari_gdt.cli import main
    from napari_gdt.expression.canvas import ExpressionCanvas

    out = tmp_path / "m.ome.zarr"
    rc = main(
        [
            "convert",
            str(merfish / "transcripts_z0.csv.gz"),
            "--out",
            str(out),
            "--bin-um",
            "2",
            "--image",
            str(merfish / "dapi_z0.jpg"),
            "--image-extent-um",
            ",".join(map(str, EXTENT)),
        ]
    )
    assert rc == 0
    c = ExpressionCanvas.from_ome_zarr(out)
    dapi = imread(merfish / "dapi_z0.jpg").astype(np.float64)
    # the affine maps bins onto dapi_z0.jpg pixels: 2 µm / (500.008 µm / 4603 px) = 18.41 px per bin
    np.testing.assert_allclose(c.affine[1, 1], 2.0 / ((EXTENT[1] - EXTENT[0]) / dapi.shape[1]), rtol=1e-6)
    np.testing.assert_allclose(c.affine[0, 0], 2.0 / ((EXTENT[3] - EXTENT[2]) / dapi.shape[0]), rtol=1e-6)
    occupied = np.asarray(c.data.sum(axis=0)) > 0
    means = _bin_means(dapi, c.affine, occupied.shape)
    ratio = np.nanmean(means[occupied]) / dapi.mean()
    # a wrong registration (canvas flipped upside down) must not pass
    flipped = np.nanmean(means[np.flipud(occupied)]) / dapi.mean()
    print(f"mean DAPI under occupied bins / image mean = {ratio:.2f} (flipped canvas: {flipped:.2f})")
    assert ratio > 1.6
    assert ratio > flipped + 0.3
