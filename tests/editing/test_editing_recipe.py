"""Recipes: validation errors, lazy block-wise application, round trip, dirty bins and tiles, CLI --edits."""

import json

import dask.array as da
import numpy as np
import pytest

from napari_gdt.editing import ops
from napari_gdt.editing.recipe import Recipe, apply_recipe_file, changed_bins, dirty_bins, dirty_tiles, load_recipe
from napari_gdt.editing.regions import polygon_mask, rect_mask, shape_to_region, shapes_to_masks
from napari_gdt.errors import RecipeError
from napari_gdt.expression.canvas import ExpressionCanvas

PPB = 16


@pytest.fixture
def canvas(rng):
    """A 6-gene canvas in small irregular chunks, so edits cross block borders."""
    counts = rng.poisson(3.0, size=(6, 20, 22)).astype(np.float32)
    return ExpressionCanvas(da.from_array(counts, chunks=(4, 7, 9)), ["A", "B", "C", "D", "E", "F"], bin_um=10.0)


def recipe(regions, edits, source="t.json"):
    return Recipe.from_dict({"version": 1, "regions": regions, "edits": edits}, source=source)


# --------------------------------------------------------------- regions
def test_rect_and_polygon_masks_use_bin_centres():
    m = rect_mask((4, 5), 16, 10, 0, 41, 33)  # centres 8, 24, 40, 56: rows 1 and 2 lie in [10, 41)
    assert np.array_equal(np.nonzero(m.any(1))[0], [1, 2])
    assert rect_mask((4, 5), 16, 10, 0, 40, 33).any(1).sum() == 1  # half-open: centre 40 is out
    assert np.array_equal(np.nonzero(m.any(0))[0], [0, 1])  # centres 8, 24 < 33; 40 not
    tri = polygon_mask((10, 10), 16, [[0, 0], [0, 168], [168, 0]])
    cy, cx = np.mgrid[0:10, 0:10]
    assert np.array_equal(tri, (cy + 0.5 + cx + 0.5) * 16 < 168)
    assert shape_to_region(np.array([[0, 0], [0, 32], [48, 32], [48, 0]]), "rectangle") == {"rect": [0.0, 0.0, 48.0, 32.0]}
    assert "polygon" in shape_to_region(np.array([[0, 0], [10, 32], [48, 32]]), "polygon")
    (mm,) = shapes_to_masks([np.array([[0, 0], [0, 32], [48, 32], [48, 0]])], ["rectangle"], (4, 4), 16)
    assert mm.sum() == 6
    with pytest.raises(RecipeError, match="line"):
        shape_to_region(np.array([[0, 0], [5, 5]]), "line")


# ------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "regions, edits, needle",
    [
        ({"r": {"rect": [0, 0, 32, 32]}}, [{"op": "scale", "region": "zz", "genes": ["A"], "factor": 2}], "unknown region 'zz'"),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "scale", "region": "r", "genes": ["A"], "factor": "x"}],
            "field 'factor' must be a finite number, got 'x'",
        ),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "scale", "region": "r", "genes": ["A"], "factor": -1}],
            "field 'factor' must be >= 0",
        ),
        ({"r": {"rect": [0, 0, 32, 32]}}, [{"op": "explode", "region": "r", "genes": ["A"]}], "unknown op 'explode'"),
        ({"r": {"rect": [0, 0, 32, 32]}}, [{"op": "set", "region": "r", "genes": ["A"]}], "missing field(s) 'value'"),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "knockout", "region": "r", "genes": ["A"], "bogus": 1}],
            "unknown field(s) 'bogus'",
        ),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "transfer", "from": "r", "to": "r", "genes": "all", "strength": 2}],
            "'strength' must lie in [0, 1], got 2",
        ),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "eigen", "region": "r", "source": "r", "reference": "r", "genes": "all", "k": 0}],
            "'k' must be an integer >= 1, got 0",
        ),
        ({"r": {"rect": [0, 0, 32, 32]}}, [{"op": "knockout", "region": "r", "genes": []}], "field 'genes'"),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "eigen", "region": "r", "source": "r", "genes": "all"}],
            "give either 'reference'",
        ),
        (
            {"r": {"rect": [0, 0, 32, 32]}},
            [{"op": "eigen", "region": "r", "source": "r", "reference": "r", "coef": 0.5, "genes": "all"}],
            "not both",
        ),
        ({"r": {"rect": [0, 0, 0, 32]}}, [], "region 'r' field 'rect' [0, 0, 0, 32] is empty"),
        ({"r": {"labels": "x.tif", "value": 0}}, [], "field 'value' must be a positive integer label, got 0"),
        ({"r": {"circle": 3}}, [], "region 'r' needs exactly one of"),
    ],
)
def test_bad_recipes_name_the_problem_and_file(regions, edits, needle):
    with pytest.raises(RecipeError) as ei:
        recipe(regions, edits, source="my_recipe.json")
    msg = str(ei.value)
    assert needle in msg and msg.startswith("my_recipe.json")


def test_unknown_gene_named_at_apply(canvas):
    r = recipe({"r": {"rect": [0, 0, 32, 32]}}, [{"op": "scale", "region": "r", "genes": ["A", "NOPE1"], "factor": 2}], "g.json")
    with pytest.raises(RecipeError, match=r"g.json: edit 0 \(scale\): unknown gene 'NOPE1'"):
        r.apply(canvas, PPB)
    r2 = recipe({"t": {"gene": "ZZZ", "min": 1}}, [], "g.json")
    with pytest.raises(RecipeError, match="unknown gene 'ZZZ'"):
        r2.apply(canvas, PPB)


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,, }')
    with pytest.raises(RecipeError, match=r"bad.json: not valid JSON \(line 1"):
        load_recipe(bad)
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"version": 2, "regions": {}, "edits": []}))
    with pytest.raises(RecipeError, match="v2.json: field 'version' must be 1, got 2"):
        load_recipe(v2)
    lab = tmp_path / "lab.json"
    np.save(tmp_path / "l.npy", np.zeros((3, 3), np.int32))
    lab.write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"r": {"labels": "l.npy", "value": 1}},
                "edits": [{"op": "knockout", "region": "r", "genes": "all"}],
            }
        )
    )
    c = ExpressionCanvas(np.ones((1, 4, 4), np.float32), ["A"], 1.0)
    with pytest.raises(RecipeError, match=r"labels 'l.npy' have shape \(3, 3\), but the canvas bin grid is \(4, 4\)"):
        apply_recipe_file(lab, c, PPB)


# ---------------------------------------------------------------- apply
def test_per_gene_ops_blockwise_equal_numpy(canvas):
    x = np.asarray(canvas.data)
    regions = {"a": {"rect": [16, 32, 160, 224]}, "b": {"polygon": [[0, 0], [0, 300], [300, 0]]}}
    edits = [
        {"op": "scale", "region": "a", "genes": ["B", "F"], "factor": 3.0},
        {"op": "set", "region": "b", "genes": ["A"], "value": 1.5},
        {"op": "add", "region": "a", "genes": ["F", "C"], "value": -2.0},
        {"op": "knockout", "region": "b", "genes": ["E"]},
    ]
    r = recipe(regions, edits)
    out = r.apply(canvas, PPB)
    assert isinstance(out.data, da.Array)
    got = np.asarray(out.data)
    ma = rect_mask(canvas.n_bins, PPB, 16, 32, 160, 224)
    mb = polygon_mask(canvas.n_bins, PPB, [[0, 0], [0, 300], [300, 0]])
    e = x.copy()
    e[[1, 5]] = np.where(ma, e[[1, 5]] * 3.0, e[[1, 5]])
    e[0] = np.where(mb, 1.5, e[0])
    e[[5, 2]] = np.where(ma, np.maximum(e[[5, 2]] - 2.0, 0), e[[5, 2]])
    e[4] = np.where(mb, 0.0, e[4])
    assert np.array_equal(got, e)
    np.testing.assert_array_equal(np.asarray(canvas.data), x)  # original untouched
    assert np.array_equal(dirty_bins(r, canvas, PPB), (e != x).any(0))


def test_scale_others_replays_ist_marker_scaling(canvas):
    """IST-editing's script: markers x coef, every other gene x 0 (needs all genes of a bin: gene chunks merged)."""
    x = np.asarray(canvas.data)
    r = recipe(
        {"a": {"rect": [16, 32, 160, 224]}}, [{"op": "scale", "region": "a", "genes": ["B", "E"], "factor": 2.0, "others": 0.0}]
    )
    out = r.apply(canvas, PPB)
    got = np.asarray(out.data)
    ma = rect_mask(canvas.n_bins, PPB, 16, 32, 160, 224)
    e = np.where(ma, 0.0, x).astype(np.float32)
    e[[1, 4]] = np.where(ma, x[[1, 4]] * 2.0, x[[1, 4]])
    assert np.array_equal(got, e)


def test_transfer_and_eigen_population_stats(canvas):
    x = np.asarray(canvas.data).astype(np.float64)
    regions = {"tum": {"rect": [0, 0, 160, 160]}, "str": {"rect": [160, 160, 320, 352]}}
    r = recipe(regions, [{"op": "transfer", "from": "tum", "to": "str", "genes": ["A", "D"], "strength": 0.5}])
    got = np.asarray(r.apply(canvas, PPB).data)
    mt = rect_mask(canvas.n_bins, PPB, 0, 0, 160, 160)
    ms = rect_mask(canvas.n_bins, PPB, 160, 160, 320, 352)
    mf, mtt = x[[0, 3]][:, mt].mean(1), x[[0, 3]][:, ms].mean(1)
    exp = ops.transfer(x.astype(np.float32), ms, [0, 3], mf, mtt, 0.5)
    np.testing.assert_allclose(got, exp, rtol=1e-6)
    np.testing.assert_allclose(got[[0, 3]][:, ms].mean(1), 0.5 * mf + 0.5 * mtt, rtol=1e-5)

    r = recipe(regions, [{"op": "eigen", "region": "str", "source": "str", "reference": "tum", "genes": "all", "k": 2}])
    got = np.asarray(r.apply(canvas, PPB).data)
    Ms = ops.second_moment(x[:, ms].T)
    Mr = ops.second_moment(x[:, mt].T)
    A, _ = ops.eigen_transform(Ms, Mr, k=2)
    y = x.copy()
    y[:, ms] = np.maximum(x[:, ms].T @ A, 0).T
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
    # the edited population's top-2 eigenvalues move to the reference's (up to clamping at 0)
    vals_new = np.linalg.eigvalsh(ops.second_moment(got[:, ms].T.astype(np.float64)))[::-1]
    vals_ref = np.linalg.eigvalsh(Mr)[::-1]
    np.testing.assert_allclose(vals_new[0], vals_ref[0], rtol=0.05)

    # IST-editing's whole-slide variant: the source's own top-k directions x sqrt(coef), mapped back with them
    r = recipe(regions, [{"op": "eigen", "region": "str", "source": "tum", "coef": 0.25, "k": 2, "genes": "all"}])
    got = np.asarray(r.apply(canvas, PPB).data)
    vals, U = np.linalg.eigh(Mr)
    U = U[:, ::-1]
    w = np.array([0.5, 0.5, 1, 1, 1, 1])
    y = x.copy()
    y[:, ms] = np.maximum(x[:, ms].T @ (U @ np.diag(w) @ U.T), 0).T
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)

    # basis "genes": moments over the listed genes only
    r = recipe(
        regions, [{"op": "eigen", "region": "str", "source": "str", "reference": "tum", "genes": ["B", "C"], "basis": "genes"}]
    )
    got = np.asarray(r.apply(canvas, PPB).data)
    A, _ = ops.eigen_transform(ops.second_moment(x[[1, 2]][:, ms].T), ops.second_moment(x[[1, 2]][:, mt].T), k=1)
    y = x.copy()
    y[[1, 2]] = y[[1, 2]]
    y[1:3, ms] = np.maximum(x[[1, 2]][:, ms].T @ A, 0).T
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)


def test_edits_chain_in_order(canvas):
    """Statistics of a later edit see the canvas as the earlier edits left it."""
    regions = {"a": {"rect": [0, 0, 160, 160]}, "b": {"rect": [160, 160, 320, 352]}}
    r = recipe(
        regions,
        [
            {"op": "set", "region": "a", "genes": ["A"], "value": 10.0},
            {"op": "transfer", "from": "a", "to": "b", "genes": ["A"], "strength": 1.0},
        ],
    )
    got = np.asarray(r.apply(canvas, PPB).data)
    mb = rect_mask(canvas.n_bins, PPB, 160, 160, 320, 352)
    np.testing.assert_allclose(got[0][mb].mean(), 10.0, rtol=1e-5)


def test_empty_population_error(canvas):
    r = recipe(
        {"a": {"rect": [0, 0, 160, 160]}, "far": {"rect": [5000, 5000, 5100, 5100]}},
        [{"op": "transfer", "from": "far", "to": "a", "genes": "all"}],
        "e.json",
    )
    with pytest.raises(RecipeError, match="e.json: edit 0 \\(transfer\\): region 'far' is empty"):
        r.apply(canvas, PPB)


def test_labels_region_and_save_roundtrip(canvas, tmp_path):
    labels = np.zeros(canvas.n_bins, np.int32)
    labels[3:9, 4:12] = 2
    labels[12:, 15:] = 5
    r = Recipe.from_dict(
        {
            "version": 1,
            "regions": {
                "p": {"labels": "regions.tif", "value": 2},
                "q": {"labels": "regions.tif", "value": 5},
                "t": {"gene": "C", "min": 5},
            },
            "edits": [
                {"op": "scale", "region": "p", "genes": ["A"], "factor": 4.0},
                {"op": "knockout", "region": "q", "genes": "all"},
                {"op": "add", "region": "t", "genes": ["D"], "value": 1.0},
            ],
        }
    )
    r.regions["p"].array = labels
    r.regions["q"].array = labels
    path = r.save(tmp_path / "sub" / "edits.json")
    assert (tmp_path / "sub" / "regions.tif").exists()
    r2 = load_recipe(path)
    assert r2.to_dict() == r.to_dict()
    a = np.asarray(r.apply(canvas, PPB).data)
    b = np.asarray(apply_recipe_file(path, canvas, PPB).data)
    assert np.array_equal(a, b)
    x = np.asarray(canvas.data)
    assert np.array_equal(a[0][labels == 2], x[0][labels == 2] * 4)
    t = x[2] >= 5
    assert (a[[0, 1, 2, 4, 5]][:, labels == 5] == 0).all() and (a[3][(labels == 5) & ~t] == 0).all()
    assert np.array_equal(a[3][(labels == 5) & t], np.ones(((labels == 5) & t).sum(), np.float32))
    assert np.array_equal(a[3][t & (labels != 5)], x[3][t & (labels != 5)] + 1)


# ----------------------------------------------------- rendering + tiles
class RecordingCache:
    """A memory cache that records which keys missed (were computed)."""

    def __init__(self):
        self.d, self.missed = {}, []

    def get(self, key):
        v = self.d.get(key)
        if v is None:
            self.missed.append(key)
        return v

    def put(self, key, value):
        self.d[key] = value


@pytest.fixture(scope="module")
def render_setup(small_bundle):
    from napari_gdt.synthetic import synthetic_canvas

    return small_bundle, synthetic_canvas((32, 32), seed=3)


def test_recipe_roundtrip_identical_render(render_setup, tmp_path):
    from napari_gdt.rendering.tiles import Region, TileRenderer

    bundle, canvas = render_setup
    ppb = bundle.px_per_bin
    r = recipe(
        {"s": {"polygon": [[100, 100], [100, 300], [260, 200]]}, "t": {"rect": [300, 0, 512, 200]}},
        [
            {"op": "scale", "region": "s", "genes": ["EPCAM", "KRT19", "ERBB2"], "factor": 5.0},
            {"op": "eigen", "region": "s", "source": "s", "reference": "t", "genes": "all", "k": 1},
        ],
    )
    path = r.save(tmp_path / "r.json")
    reg = Region(96, 224, 96, 224)
    img1 = TileRenderer(bundle, r.apply(canvas, ppb), device="cpu").render_region(reg)
    img2 = TileRenderer(bundle, apply_recipe_file(path, canvas, ppb), device="cpu").render_region(reg)
    assert np.array_equal(img1, img2)
    img0 = TileRenderer(bundle, canvas, device="cpu").render_region(reg)
    assert np.abs(img1 - img0).max() > 1e-3  # the edit does change the tissue


def test_exact_set_of_tiles_recomputed(render_setup):
    from napari_gdt.rendering.tiles import TileRenderer

    bundle, canvas = render_setup
    ppb = bundle.px_per_bin
    cache = RecordingCache()
    base = TileRenderer(bundle, canvas, device="cpu", cache=cache)
    before = base.render_region()
    assert base.grid_shape == (4, 4)
    r = recipe({"s": {"rect": [208, 16, 240, 56]}}, [{"op": "scale", "region": "s", "genes": ["EPCAM", "VIM"], "factor": 4.0}])
    edited = r.apply(canvas, ppb)
    dirty = dirty_bins(r, canvas, ppb)
    # bins rows 13..14, cols 1..3 (centres inside the rect) and non-zero there
    assert dirty.any() and set(np.nonzero(dirty.any(1))[0]) <= {13, 14}
    tiles = {(s.ty, s.tx) for s in dirty_tiles(base, dirty)}
    # windows are 14 bins starting 3 bins before each 8-bin tile: rows 13-14 touch ty 1 (bins 5..18) and 2 (13..26)
    x = np.asarray(canvas.data)
    m = rect_mask(canvas.n_bins, ppb, 208, 16, 240, 56)
    assert np.array_equal(np.argwhere(m), [[13, 1], [13, 2], [14, 1], [14, 2]])
    assert np.array_equal(dirty, m & (x[[0, 7]] > 0).any(0))
    # windows span 14 bins from 3 before each 8-bin tile: rows 13-14 in ty 1 (5..18), 2 (13..26); cols 1-2 only in tx 0 (-3..10)
    assert tiles == {(1, 0), (2, 0)}
    expect = {
        (ty, tx)
        for ty in range(4)
        for tx in range(4)
        if dirty[
            max(base.tile(ty, tx).win[0], 0) : base.tile(ty, tx).win[0] + base.tile(ty, tx).win[2],
            max(base.tile(ty, tx).win[1], 0) : base.tile(ty, tx).win[1] + base.tile(ty, tx).win[3],
        ].any()
    }
    assert tiles == expect
    cache.missed.clear()
    er = TileRenderer(bundle, edited, device="cpu", cache=cache)
    after = er.render_region()
    keys = {er.tile_key(s, er.read_window(s)): (s.ty, s.tx) for s in er.tiles_for(er.check_region(None))}
    recomputed = {keys[k] for k in cache.missed}
    assert recomputed == tiles
    assert er.stats["computed"] == len(tiles) and er.stats["cached"] == 16 - len(tiles)
    # pixels differ only inside dirty tiles
    T = base.tile_px
    diff = np.abs(after - before).max(-1)
    for ty in range(4):
        for tx in range(4):
            d = diff[ty * T : (ty + 1) * T, tx * T : (tx + 1) * T].max()
            assert (d > 0) == ((ty, tx) in tiles)


def test_changed_bins_only_compares_candidates(canvas):
    r = recipe({"a": {"rect": [0, 0, 64, 64]}}, [{"op": "scale", "region": "a", "genes": ["A"], "factor": 1.0}])
    assert not dirty_bins(r, canvas, PPB).any()  # x1 changes nothing
    assert dirty_bins(r, canvas, PPB, exact=False).sum() == 16
    e = r.apply(canvas, PPB)
    assert not changed_bins(canvas, e).any()


# ------------------------------------------------------------------ CLI
def test_cli_render_with_edits_and_bad_recipe(tmp_path, small_bundle, capsys):
    from napari_gdt.cli import main
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas

    model = tmp_path / "m.safetensors"
    save_bundle(
        model,
        small_bundle.model,
        small_bundle.genes,
        um_per_px=1.0,
        output={"kind": "he", "channels": ["R", "G", "B"]},
        tile_px=128,
        name="t",
    )
    cpath = synthetic_canvas((12, 12), seed=2).to_ome_zarr(tmp_path / "c.ome.zarr")
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"s": {"rect": [0, 0, 96, 96]}},
                "edits": [{"op": "scale", "region": "s", "genes": ["EPCAM"], "factor": 6}],
            }
        )
    )
    out_e, out_o = tmp_path / "e.npy", tmp_path / "o.npy"
    base = ["render", "--model", str(model), "--expression", str(cpath), "--region", "0:96,0:96", "--device", "cpu"]
    assert main(base + ["--out", str(out_o)]) == 0
    assert main(base + ["--out", str(out_e), "--edits", str(good)]) == 0
    assert np.abs(np.load(out_e) - np.load(out_o)).max() > 1e-3
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"s": {"rect": [0, 0, 96, 96]}},
                "edits": [{"op": "scale", "region": "s", "genes": ["NOTAGENE"], "factor": 6}],
            }
        )
    )
    assert main(base + ["--out", str(out_e), "--edits", str(bad), "--overwrite"]) == 2  # a .npy carries no marker of ours
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json" in err and "NOTAGENE" in err
