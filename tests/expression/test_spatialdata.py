"""SpatialData in and out: read a store (points, or a table on shapes, plus an image) and write generated images back.

Needs the optional ``spatialdata`` package (``pip install 'napari-gdt[spatialdata]'``); skipped without it.
"""

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest

sd = pytest.importorskip("spatialdata", reason="the optional 'spatialdata' package is not installed")

import anndata as ad
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, PointsModel, ShapesModel, TableModel
from spatialdata.transformations import Affine, Identity, Scale, get_transformation

from napari_gdt.cli import main
from napari_gdt.errors import GDTError, ReaderError
from napari_gdt.expression.canvas import ExpressionCanvas
from napari_gdt.expression.readers import detect_format, read_any
from napari_gdt.expression.spatialdata import generated_to_image_matrix, read_spatialdata, write_into_spatialdata
from napari_gdt.expression.spots import spots_to_canvas

pytestmark = pytest.mark.filterwarnings("ignore")

# a rotation + anisotropic-free scale + translation (x, y order, as SpatialData writes it): image px -> µm
THETA = np.deg2rad(20.0)
IMG_XY = np.array(
    [[0.5 * np.cos(THETA), -0.5 * np.sin(THETA), 30.0], [0.5 * np.sin(THETA), 0.5 * np.cos(THETA), -12.0], [0, 0, 1.0]]
)


def _write(sdata, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path, overwrite=True)
    return path


def _image(rng, h=160, w=200, t=None):
    arr = rng.integers(0, 255, (3, h, w), dtype=np.uint8)
    return Image2DModel.parse(
        arr, dims=("c", "y", "x"), transformations=t or {"global": Affine(IMG_XY, input_axes=("x", "y"), output_axes=("x", "y"))}
    )


def _um_to_img(x, y):
    """µm (global) -> image px (x, y) with the inverse of IMG_XY."""
    m = np.linalg.inv(IMG_XY)
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


@pytest.fixture(scope="module")
def points_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 4000
    # transcripts inside the rotated image footprint: draw image px, map to µm
    px, py = rng.uniform(5, 195, n), rng.uniform(5, 155, n)
    x = IMG_XY[0, 0] * px + IMG_XY[0, 1] * py + IMG_XY[0, 2]
    y = IMG_XY[1, 0] * px + IMG_XY[1, 1] * py + IMG_XY[1, 2]
    genes = rng.choice(["Gab", "Gcd", "Gef", "NegControl_1"], n)
    df = pd.DataFrame({"x": x, "y": y, "gene": pd.Categorical(genes)})
    pts = PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations={"global": Identity()})
    small = _image(
        rng, 40, 50, {"global": Affine(IMG_XY @ np.diag([4.0, 4.0, 1.0]), input_axes=("x", "y"), output_axes=("x", "y"))}
    )
    s = SpatialData(images={"he": _image(rng), "he_small": small}, points={"transcripts": pts})
    d = tmp_path_factory.mktemp("sdpts")
    return _write(s, d / "pts.zarr"), df


def _circles_store(path, rng, ids, centres_px, radius_px, counts, genes, um_per_px, image=None):
    """table + circles + image, coordinate system 'global' in µm (image: Scale(um_per_px))."""
    xy_um = np.stack([centres_px[:, 1], centres_px[:, 0]], axis=1) * um_per_px
    circles = ShapesModel.parse(
        xy_um,
        geometry=0,
        radius=np.full(len(ids), radius_px * um_per_px),
        index=np.arange(len(ids)),
        transformations={"global": Identity()},
    )
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * len(ids)), "spot_id": np.arange(len(ids))}, index=list(ids))
    table = TableModel.parse(
        ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes)), region="spots", region_key="region", instance_key="spot_id"
    )
    if image is None:
        image = rng.integers(0, 255, (3, 300, 260), dtype=np.uint8)
    img = Image2DModel.parse(
        image,
        dims=("c", "y", "x"),
        transformations={"global": Scale([um_per_px, um_per_px], axes=("y", "x"))},
        scale_factors=[2, 2],
        chunks=(3, 1024, 1024),
    )
    return _write(SpatialData(images={"he": img}, shapes={"spots": circles}, tables={"table": table}), path)


@pytest.fixture(scope="module")
def spots_store(tmp_path_factory):
    rng = np.random.default_rng(1)
    yy, xx = np.meshgrid(np.arange(40, 280, 30.0), np.arange(40, 240, 30.0), indexing="ij")
    centres = np.stack([yy.ravel(), xx.ravel()], axis=1) + rng.normal(0, 0.3, (yy.size, 2))
    from napari_gdt.synthetic import SYNTHETIC_GENES

    genes = list(SYNTHETIC_GENES)  # the small test generator's panel
    counts = rng.poisson(4.0, (len(centres), len(genes))).astype(np.float32)
    ids = [f"S{i}" for i in range(len(centres))]
    d = tmp_path_factory.mktemp("sdspots")
    p = _circles_store(d / "spots.zarr", rng, ids, centres, 7.5, counts, genes, um_per_px=0.8)
    return p, centres, counts, genes, ids


# --------------------------------------------------------------------------- reading
def test_detect_and_points_canvas_matches_transcript_reader(points_store, tmp_path):
    path, df = points_store
    assert detect_format(path) == "spatialdata"
    c = read_any(path, bin_um=5.0)
    m = c.meta["spatialdata"]
    assert (m["kind"], m["points"], m["image"], m["coordinate_system"]) == ("points", "transcripts", "he", "global")
    assert any("largest" in n for n in m["picked"])
    assert c.genes == ["Gab", "Gcd", "Gef"]  # control probes dropped, as the vendor readers do
    n_real = int((df["gene"] != "NegControl_1").sum())
    assert c.total() == pytest.approx(n_real) and c.meta["dropped"]["control_probes"] == len(df) - n_real
    # the same transcripts as a csv through the transcript reader, with the same µm -> image px registration
    csv = tmp_path / "t.csv"
    df.assign(gene=df["gene"].astype(str)).to_csv(csv, index=False)
    ref = read_any(csv, format="csv", bin_um=5.0, image_transform=np.linalg.inv(IMG_XY), drop_prefixes=("NegControl",))
    np.testing.assert_allclose(c.affine, ref.affine, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(c.data), np.asarray(ref.data))
    # every transcript's bin, through the affine, lands on its image pixel
    df = df[df["gene"] != "NegControl_1"]
    px, py = _um_to_img(df["x"].to_numpy(), df["y"].to_numpy())
    bins = np.linalg.solve(c.affine, np.stack([py, px, np.ones_like(px)]))
    assert np.all(bins[0] >= 0) and np.all(bins[0] < c.shape[1]) and np.all(bins[1] >= 0) and np.all(bins[1] < c.shape[2])
    dense = np.asarray(c.data).sum(axis=0)
    hits = np.zeros_like(dense)
    np.add.at(hits, (np.floor(bins[0]).astype(int), np.floor(bins[1]).astype(int)), 1)
    np.testing.assert_array_equal(dense, hits)


def test_points_named_elements_and_gene_panel(points_store):
    path, df = points_store
    c = read_spatialdata(path, points="transcripts", image_element="he_small", bin_um=5.0, genes=["Gef", "Gab"])
    assert c.genes == ["Gef", "Gab"]
    assert c.meta["spatialdata"]["image"] == "he_small"
    # he_small is 2 µm/px (4 x 0.5), rotated: a 5 µm bin step is inv(image -> µm) x 5, in (y, x)
    inv_xy = np.linalg.inv(IMG_XY @ np.diag([4.0, 4.0, 1.0]))[:2, :2]
    np.testing.assert_allclose(c.affine[:2, :2], 5.0 * inv_xy[::-1, ::-1], atol=1e-9)
    assert abs(np.linalg.det(c.affine[:2, :2])) == pytest.approx(2.5**2)
    assert c.total() == pytest.approx(int(df["gene"].isin(["Gef", "Gab"]).sum()))


def test_spots_canvas_equals_spots_to_canvas(spots_store):
    path, centres, counts, genes, ids = spots_store
    c = read_any(path, bin_um=8.0)
    assert c.meta["spatialdata"]["table"] == "table" and c.meta["spatialdata"]["shapes"] == "spots"
    assert c.meta["um_per_px"] == pytest.approx(0.8)
    ref = spots_to_canvas(
        counts, centres, genes, bin_px=10.0, um_per_px=0.8, diameter_px=15.0, image_shape=(300, 260), spot_ids=ids
    )
    assert c.shape == ref.shape and c.genes == genes
    np.testing.assert_allclose(c.affine, ref.affine, atol=1e-9)
    np.testing.assert_allclose(np.asarray(c.data), np.asarray(ref.data), rtol=1e-5, atol=1e-6)
    assert c.meta["total_counts"] == pytest.approx(float(counts.sum()))
    assert c.meta["spots"]["diameter_px"] == pytest.approx(15.0)


def test_convert_cli_says_what_it_picked(points_store, tmp_path, capsys):
    path, df = points_store
    out = tmp_path / "c.ome.zarr"
    assert main(["convert", str(path), "--out", str(out), "--bin-um", "5"]) == 0
    text = capsys.readouterr().out
    assert "read points 'transcripts', image 'he', coordinate system 'global'" in text
    assert "picked image 'he' (the largest of he, he_small" in text
    back = ExpressionCanvas.from_ome_zarr(out)
    assert back.meta["spatialdata"]["image"] == "he"
    assert back.total() == pytest.approx(int((df["gene"] != "NegControl_1").sum()))


def _one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_input_one_line_naming_store_and_element(points_store, tmp_path, capsys):
    path, _ = points_store
    rng = np.random.default_rng(3)
    out = str(tmp_path / "c.ome.zarr")
    # a store with only an image
    only_img = _write(SpatialData(images={"he": _image(rng)}), tmp_path / "img_only.zarr")
    line = _one_line_error(["convert", str(only_img), "--out", out], capsys)
    assert str(only_img) in line and "no points element and no table" in line
    # unknown element names
    line = _one_line_error(["convert", str(path), "--out", out, "--points", "nope"], capsys)
    assert str(path) in line and "no points element 'nope'" in line and "transcripts" in line
    line = _one_line_error(["convert", str(path), "--out", out, "--image-element", "dapi"], capsys)
    assert str(path) in line and "no image element 'dapi'" in line and "he, he_small" in line
    line = _one_line_error(["convert", str(path), "--out", out, "--coordinate-system", "aligned"], capsys)
    assert "coordinate system 'aligned'" in line
    # an image transformation that cannot be inverted (rank 1)
    flat = Affine(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0, 0, 1.0]]), input_axes=("x", "y"), output_axes=("x", "y"))
    pts = PointsModel.parse(
        pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, 2.0], "gene": pd.Categorical(["A", "B"])}),
        coordinates={"x": "x", "y": "y"},
        feature_key="gene",
    )
    bad = _write(SpatialData(images={"he": _image(rng, t={"global": flat})}, points={"tx": pts}), tmp_path / "singular.zarr")
    line = _one_line_error(["convert", str(bad), "--out", out], capsys)
    assert str(bad) in line and "image element 'he'" in line and "cannot be inverted" in line
    with pytest.raises(ReaderError, match="no table 'x'"):
        read_spatialdata(path, table="x")


# --------------------------------------------------------------------------- writing
def _tree_digest(root):
    """sha256 of every file under ``root`` except the root metadata (which gains the new elements)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.parent != root:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def written_store(spots_store, small_bundle, tmp_path):
    """A copy of the spots store with a generated + edited image and regions written into it."""
    import shutil

    src = spots_store[0]
    store = tmp_path / "copy.zarr"
    shutil.copytree(src, store)
    before = _tree_digest(store)
    canvas = read_spatialdata(store, bin_um=8.0, genes=small_bundle.genes)
    from napari_gdt.editing.recipe import Recipe
    from napari_gdt.export.spatialdata import render_into_spatialdata

    recipe = Recipe.from_dict(
        {
            "version": 1,
            "regions": {"core": {"rect": [40, 40, 160, 140]}},
            "edits": [{"op": "scale", "region": "core", "genes": "all", "factor": 3.0}],
        }
    )
    s = render_into_spatialdata(store, small_bundle, canvas, edits=recipe, region=None, device="cpu", tile_px=64)
    return store, canvas, s, before


def test_write_into_store_aligned_and_nothing_else_changed(written_store, small_bundle):
    from spatialdata.transformations import get_transformation_between_coordinate_systems

    from napari_gdt.rendering.world import image_world_affine

    store, canvas, s, before = written_store
    assert s["elements"] == {"gdt_generated": "generated", "gdt_edited": "edited", "gdt_regions": "regions"}
    after = _tree_digest(store)
    assert {k: v for k, v in after.items() if k in before} == before  # every old file is byte-identical
    sdata = sd.read_zarr(store)
    for n in ("he", "spots", "table", "gdt_generated", "gdt_edited"):
        assert n in sdata
    assert "gdt_regions" in sdata.labels
    gen, img = sdata.images["gdt_generated"], sdata.images["he"]
    ppb = small_bundle.px_per_bin
    H, W = canvas.n_bins[0] * ppb, canvas.n_bins[1] * ppb
    assert gen["scale0"]["image"].shape == (3, H, W)
    # SpatialData's own composition: generated px -> global -> real-image px
    t = get_transformation_between_coordinate_systems(sdata, gen, img)
    m_xy = np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))
    rng = np.random.default_rng(5)
    g = np.stack([rng.uniform(0, H, 50), rng.uniform(0, W, 50)])  # (y, x) generated pixel indices (centres in napari)
    # our canvas: napari world (generated px, centres at integers) -> real-image pixel index
    to_img = np.linalg.inv(image_world_affine(canvas.affine, ppb))
    ours = to_img @ np.vstack([g, np.ones(50)])
    # SpatialData: pixel corners at integers, so a centre is index + 0.5
    theirs = m_xy @ np.vstack([g[1] + 0.5, g[0] + 0.5, np.ones(50)])
    np.testing.assert_allclose(theirs[1] - 0.5, ours[0], atol=1e-6)
    np.testing.assert_allclose(theirs[0] - 0.5, ours[1], atol=1e-6)
    # and to the µm coordinate system: through the real image's transformation
    t_g = get_transformation(gen, "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    t_i = get_transformation(img, "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    np.testing.assert_allclose(t_g, t_i @ np.asarray(m_xy), atol=1e-9)
    # attributes: recipe and model card
    import zarr

    attrs = dict(zarr.open_group(str(store / "images" / "gdt_edited"), mode="r").attrs)["napari_gdt"]
    assert attrs["kind"] == "edited" and attrs["aligned_to"] == "he"
    assert attrs["recipe"]["edits"][0]["op"] == "scale"
    assert attrs["model_card"]["genes"] == small_bundle.genes
    lab = dict(zarr.open_group(str(store / "labels" / "gdt_regions"), mode="r").attrs)["napari_gdt"]
    assert lab["labels"] == {"1": "core"}
    assert np.asarray(sdata.labels["gdt_regions"]).max() == 1
    assert sdata.attrs["napari_gdt"]["gdt_generated"]["kind"] == "generated"
    # the edit changed pixels inside the region only (bins 40..160 x 40..140 px of output)
    a = np.asarray(sdata.images["gdt_generated"]["scale0"]["image"])
    b = np.asarray(sdata.images["gdt_edited"]["scale0"]["image"])
    assert (a != b).any()


def test_write_twice_needs_overwrite(written_store, small_bundle):
    store, canvas, _, _ = written_store
    gen = np.zeros((canvas.n_bins[0] * small_bundle.px_per_bin, canvas.n_bins[1] * small_bundle.px_per_bin, 3), np.float32)
    with pytest.raises(GDTError, match=r"gdt_generated already exist; pass --overwrite"):
        write_into_spatialdata(store, canvas, small_bundle.px_per_bin, gen)
    keep = _tree_digest(store)
    write_into_spatialdata(store, canvas, small_bundle.px_per_bin, gen, overwrite=True)
    after = _tree_digest(store)
    for k, v in keep.items():
        if "gdt_generated" not in k:
            assert after.get(k) == v, k  # other elements untouched, the edited one included
    sdata = sd.read_zarr(store)
    assert int(np.asarray(sdata.images["gdt_generated"]["scale0"]["image"]).max()) == 0
    assert "gdt_edited" in sdata.images


def test_generated_matrix_region_origin():
    a = np.array([[8.0, 0, 3.0], [0, 8.0, -2.0], [0, 0, 1]])
    m = generated_to_image_matrix(a, 4, origin_px=(12, 20))
    np.testing.assert_allclose(m @ [0, 0, 1], a @ [3.0, 5.0, 1])  # output px (12, 20) is bin (3, 5)


def test_render_cli_into_spatialdata(spots_store, tmp_path, capsys):
    import shutil

    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import untrained_bundle

    store = tmp_path / "s.zarr"
    shutil.copytree(spots_store[0], store)
    canvas_path = tmp_path / "c.ome.zarr"
    assert main(["convert", str(store), "--out", str(canvas_path), "--bin-um", "8"]) == 0
    b = untrained_bundle(genes=spots_store[3], out_channels=3, seed=0, stage_channels=(16, 16, 16, 16), emb_ch=16)
    m = tmp_path / "m.safetensors"
    save_bundle(m, b.model, b.genes, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]}, tile_px=64, name="t")
    capsys.readouterr()
    argv = [
        "render",
        "--model",
        str(m),
        "--expression",
        str(canvas_path),
        "--out",
        str(store),
        "--into-spatialdata",
        "--device",
        "cpu",
        "--region",
        "0:64,0:96",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote gdt_generated (generated) into" in out and "aligned with image 'he'" in out
    assert main(argv) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--element-prefix", "gdt"]) == 0
    sdata = sd.read_zarr(store)
    from napari_gdt.expression.spatialdata import _image_array

    assert _image_array(sdata.images["gdt_generated"]).shape == (3, 64, 96)  # small: one scale


# --------------------------------------------------------------------------- her2st C5 (real data)
@pytest.mark.realdata
@pytest.mark.slow
def test_her2st_c5_spatialdata_equals_st_reader(data_dir, tmp_path, capsys):
    from PIL import Image

    from napari_gdt.expression.spots import read_st

    d = data_dir / "her2st" / "C5"
    counts_tsv, spots_tsv, he = d / "counts.tsv.gz", d / "spots.tsv", d / "he.jpg"
    tab = pd.read_csv(counts_tsv, sep="\t", index_col=0)
    genes = tab.columns[1000:1200].tolist()
    ref = read_st(counts_tsv, spots_tsv, bin_px=32, image=he, genes=genes)
    # the same section as SpatialData: µm coordinate system, image with its real scale, circles of 100 µm
    sp = pd.read_csv(spots_tsv, sep="\t")
    sp = sp[sp["selected"] == 1]
    ids = [f"{x}x{y}" for x, y in zip(sp["x"], sp["y"])]
    sp = sp.assign(_id=ids).set_index("_id")
    ids = [i for i in ids if i in tab.index]
    centres = sp.loc[ids, ["pixel_y", "pixel_x"]].to_numpy(float)
    upp = ref.meta["um_per_px"]
    Image.MAX_IMAGE_PIXELS = None
    img = np.moveaxis(np.asarray(Image.open(he).convert("RGB")), -1, 0)
    store = _circles_store(
        tmp_path / "c5.zarr",
        None,
        ids,
        centres,
        50.0 / upp,
        tab.loc[ids, genes].to_numpy(np.float32),
        genes,
        um_per_px=upp,
        image=img,
    )
    out = tmp_path / "c5.ome.zarr"
    assert main(["convert", str(store), "--out", str(out), "--bin-px", "32"]) == 0
    print(capsys.readouterr().out)
    c = ExpressionCanvas.from_ome_zarr(out)
    assert c.shape == ref.shape and c.genes == genes
    assert c.meta["total_counts"] == ref.meta["total_counts"]
    assert c.total() == pytest.approx(ref.total(), rel=1e-6)
    np.testing.assert_allclose(c.affine, ref.affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c.data), np.asarray(ref.data), rtol=1e-5, atol=1e-5)
    assert c.bin_um == pytest.approx(ref.bin_um, rel=1e-9)
    print(
        f"her2st C5: totals {c.meta['total_counts']:.0f} vs {ref.meta['total_counts']:.0f}; max |affine diff| "
        f"{np.abs(c.affine - ref.affine).max():.2e}"
    )


# --------------------------------------------------------------------------- napari reader and the Expression widget
def test_napari_reader_and_expression_widget_take_a_store(points_store, make_napari_viewer, tmp_path):
    from napari_gdt._reader import get_reader, read_spatial_layers
    from napari_gdt.widgets.expression import ExpressionWidget

    path, df = points_store
    assert get_reader(str(path)) is read_spatial_layers
    layers = get_reader(str(path))(str(path))
    names = [meta["name"] for _, meta, _ in layers]
    assert sorted(names) == ["Gab", "Gcd", "Gef"]  # the top three genes
    viewer = make_napari_viewer()
    w = ExpressionWidget(viewer)
    assert w.format_combo.findText("spatialdata") >= 0 and w.format_combo.findText("visium_hd") >= 0
    w.convert(str(path), str(tmp_path / "w.ome.zarr"), fmt="auto", bin_um=5.0, blocking=True)
    assert w.canvas is not None and w.canvas.meta["spatialdata"]["points"] == "transcripts"
    assert w.canvas.total() == pytest.approx(int((df["gene"] != "NegControl_1").sum()))


def test_compare_widget_writes_the_view_into_the_store(spots_store, small_bundle, make_napari_viewer, qtbot, tmp_path):
    import shutil

    from napari_gdt.expression.spatialdata import _image_array
    from napari_gdt.rendering.tiles import Region
    from napari_gdt.widgets.compare import CompareWidget
    from napari_gdt.widgets.generator import GeneratorWidget

    store = tmp_path / "w.zarr"
    shutil.copytree(spots_store[0], store)
    canvas = read_spatialdata(store, bin_um=8.0, genes=small_bundle.genes)
    viewer = make_napari_viewer()
    g = GeneratorWidget(viewer)
    qtbot.addWidget(g)
    g.set_bundle(small_bundle)
    g.set_canvas(canvas)
    layer = g.generate()
    assert g.wait(120)
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    w.set_sources(generated=layer.name)
    s = w.export_into_spatialdata(store, region=Region(16, 80, 32, 128))
    assert s["elements"] == {"gdt_generated": "generated"} and s["image_element"] == "he"
    got = np.asarray(_image_array(sd.read_zarr(store).images["gdt_generated"])).transpose(1, 2, 0)
    shown = np.asarray(layer.data[0][16:80, 32:128])
    assert got.shape == shown.shape == (64, 96, 3)
    assert np.abs(got.astype(int) - shown.astype(int)).max() <= 1  # the pixels the viewer shows
    np.testing.assert_allclose(
        s["matrix"] @ [0, 0, 1], canvas.affine @ [16 / small_bundle.px_per_bin, 32 / small_bundle.px_per_bin, 1]
    )
    with pytest.raises(GDTError, match="pass --overwrite"):
        w.export_into_spatialdata(store, region=Region(16, 80, 32, 128))
