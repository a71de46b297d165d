"""The fidelity yardstick: each metric sees what it should (synthetic images and point patterns)."""

import json

import numpy as np
import pytest

from napari_gdt.analysis import baselines as bl
from napari_gdt.analysis import c2st, fidelity


def _he_with_nuclei(H, W, seed=0, radius=(2.5, 4.0), density=0.5, per_px=150):
    """Pink tissue with dark round nuclei at uniform random places."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.float32)
    img[:] = (0.85, 0.6, 0.75)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    n = int(H * W / per_px)
    for y, x in zip(rng.uniform(0, H, n), rng.uniform(0, W, n)):
        if rng.random() > density:
            continue
        r = rng.uniform(*radius)
        y0, y1, x0, x1 = int(max(0, y - r - 1)), int(min(H, y + r + 2)), int(max(0, x - r - 1)), int(min(W, x + r + 2))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = (0.35, 0.25, 0.6)
    return np.clip(img, 0, 1)


def _real_crop():
    """A real stained tissue crop shipped with scikit-image (immunohistochemistry, 512 x 512)."""
    from skimage import data

    return data.immunohistochemistry().astype(np.float32) / 255.0


# ------------------------------------------------------------------------------ lattice


def test_16px_grid_on_a_real_crop_raises_lattice_ratio_and_a_plain_crop_does_not():
    real = _real_crop()
    a, b = real[:, :256], real[:, 256:]
    plain = fidelity.lattice_excess(b, None, 16)["excess"] / fidelity.lattice_excess(a, None, 16)["excess"]
    grid = b.copy()
    grid[::16] *= 0.97  # a faint line every 16 px (3 % darker) in y and x
    grid[:, ::16] *= 0.97
    with_grid = fidelity.lattice_excess(grid, None, 16)["excess"] / fidelity.lattice_excess(a, None, 16)["excess"]
    assert 0.75 < plain < 1.33
    assert with_grid > 2.0
    # a 20 px grid is not a 16 px lattice (mostly off its frequencies)
    other = b.copy()
    other[::20] *= 0.97
    assert fidelity.lattice_excess(other, None, 16)["excess"] < fidelity.lattice_excess(grid, None, 16)["excess"]


def test_streaks_raise_streak_excess():
    real = _real_crop()
    rng = np.random.default_rng(0)
    streaked = real.copy()
    for y in rng.choice(512, 40, replace=False):
        streaked[y] *= 0.95  # dark horizontal lines at random rows (not periodic)
    s0 = fidelity.streak_excess(real, None)
    s1 = fidelity.streak_excess(streaked, None)
    assert s1["horizontal"] > 1.25 * s0["horizontal"]
    assert s1["vertical"] == pytest.approx(s0["vertical"], rel=0.05)  # (this scan has faint vertical streaks of its own)


def test_a_diagonal_weave_raises_periodicity_excess_and_plain_tissue_does_not():
    """A weave at about 60 px (±45°, as a generator can paint at its structure-latent stride)
    is a sharp spectral peak; the same tissue turned by 90° is not; a period below the band is ignored."""
    real = _real_crop()
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)

    def ex(img):
        return fidelity.periodicity_excess(img, None, patch_px=256)

    base = ex(real)
    assert base["n_patches"] == 4 and 24 <= base["period_px"] <= 256
    turned = ex(np.ascontiguousarray(np.rot90(real)))["excess"]
    assert 0.67 < turned / base["excess"] < 1.5
    weave = real * (1 - 0.06 * (np.cos(2 * np.pi * (xx + yy) / 85.0) + np.cos(2 * np.pi * (xx - yy) / 85.0)))[..., None]
    w = ex(weave)
    assert w["excess"] > 1.5 * base["excess"], (w, base)
    assert 50 <= w["period_px"] <= 70  # 85 px along an axis is 60 px across the stripes
    fine = real * (1 - 0.03 * np.cos(2 * np.pi * xx / 8.0))[..., None]  # 8 px: the lattice metric's job, not this one
    assert ex(fine)["excess"] < 1.2 * base["excess"]
    small = fidelity.periodicity_excess(real[:200, :200], None, patch_px=256)
    assert small["excess"] is None and small["n_patches"] == 0


# ------------------------------------------------------------------------------ architecture


def _points(kind, n, size, seed):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0, size, (n, 2))
    centres = rng.uniform(0, size, (n // 40, 2))  # nests of 40 nuclei, 15 px spread
    pts = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 15, (n, 2))
    return np.mod(pts, size)


def test_density_cv_separates_clustered_from_uniform_points():
    size, um = 800, 1.0
    mask = np.ones((size, size), bool)
    clustered = _points("clustered", 4000, size, 0)
    uniform = _points("uniform", 4000, size, 1)
    uniform2 = _points("uniform", 4000, size, 2)
    r = fidelity.density_cv_ratio(clustered, uniform, mask, um)  # real clustered, generated uniform
    for w in (50, 100, 200):
        assert r[f"density_cv_ratio_{w}um"] < 0.5, (w, r)
    same = fidelity.density_cv_ratio(uniform, uniform2, mask, um)
    for w in (50, 100):
        assert 0.8 < same[f"density_cv_ratio_{w}um"] < 1.25, (w, same)


def test_density_cv_only_counts_windows_that_are_tissue_in_both():
    pts = _points("uniform", 2000, 400, 0)
    mask = np.zeros((400, 400), bool)
    mask[:, :200] = True
    cv, n = fidelity.density_cv(pts, mask, 50)
    assert n == 8 * 4 and cv is not None
    assert fidelity.density_cv(pts, mask[:100, :100] if False else np.zeros((400, 400), bool), 50) == (None, 0)


# ------------------------------------------------------------------------------ tissue outline


def test_glass_hole_in_generated_lowers_tissue_iou():
    H = W = 400
    img = _he_with_nuclei(H, W, seed=0)
    img[:, :60] = 0.96  # glass on the left in both
    gen = _he_with_nuclei(H, W, seed=1)
    gen[:, :60] = 0.96
    um = 1.0
    m_real = fidelity.segment_tissue(img, "he", um)
    iou_same = fidelity.tissue_iou(m_real, fidelity.segment_tissue(gen, "he", um))
    holed = gen.copy()
    yy, xx = np.mgrid[0:H, 0:W]
    holed[(yy - 200) ** 2 + (xx - 250) ** 2 < 80**2] = 0.96  # a round glass hole inside tissue
    iou_hole = fidelity.tissue_iou(m_real, fidelity.segment_tissue(holed, "he", um))
    assert iou_same > 0.97
    hole_frac = np.pi * 80**2 / m_real.sum()
    assert iou_hole == pytest.approx(iou_same - hole_frac, abs=0.03)


def test_dapi_tissue_mask_finds_the_empty_part():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 300)) < 0.05).astype(np.float32) * 0.8
    img[:, 200:] = 0.0
    m = fidelity.segment_tissue(img, "dapi", 0.5)
    assert m[:, :180].mean() > 0.95 and m[:, 220:].mean() < 0.05


# ------------------------------------------------------------------------------ nuclei distributions


def test_w1_iqr_sees_bigger_nuclei_and_not_a_new_seed():
    from napari_gdt.analysis import morphometrics as mm

    um = 0.5
    tabs = {}
    for name, seed, rad in (("real", 0, (2.5, 4.0)), ("same", 1, (2.5, 4.0)), ("big", 2, (4.5, 6.0))):
        img = _he_with_nuclei(300, 300, seed=seed, radius=rad)
        lab = mm.measure_nuclei(img, "he", um).labels
        tabs[name] = fidelity.nucleus_table(lab, um)
    same = fidelity.w1_iqr(tabs["real"]["area"], tabs["same"]["area"])
    big = fidelity.w1_iqr(tabs["real"]["area"], tabs["big"]["area"])
    assert same < 0.25 and big > 1.0
    assert fidelity.w1_iqr([1, 2], [1, 2, 3, 4, 5]) is None


def test_fidelity_report_keys_and_identity():
    img = _he_with_nuclei(320, 320, seed=0)
    t = {}
    rep = fidelity.fidelity_report(img, img, "he", 1.0, px_per_bin=16, tile_px=256, timings=t)
    assert set(fidelity.FIDELITY_KEYS) <= set(rep)
    assert rep["tissue_iou"] == pytest.approx(1.0)
    for k in ("density_cv_ratio_50um", "lattice_ratio", "streak_ratio"):
        assert rep[k] == pytest.approx(1.0), k
    assert rep["periodicity_ratio"] is None  # no 512 px tissue patch in a 320 px image
    assert rep["spectrum_distance"] == pytest.approx(0.0, abs=1e-12)  # one 256 px patch, the same on both sides
    for f in fidelity.NUCLEUS_FEATURES:
        assert rep[f"w1_iqr_{f}"] == pytest.approx(0.0, abs=1e-9)
    assert rep["lattice_ratio_tile"] is None  # no 512 px tissue patch in a 320 px image
    assert {"tissue_iou", "lattice", "density_cv", "nucleus_table"} <= set(t)
    json.dumps(rep)


def test_spectrum_profile_sees_grain_and_blur_not_stain():
    from scipy import ndimage as ndi

    img = _he_with_nuclei(512, 512, seed=0)
    f = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    rng = np.random.default_rng(0)
    grain = np.clip(f + rng.normal(0, 0.15, f.shape[:2])[..., None], 0, 1)
    blur = ndi.gaussian_filter(f, (3, 3, 0))
    prof = {k: fidelity.spectrum_profile(v, None) for k, v in (("real", f), ("grain", grain), ("blur", blur))}
    assert prof["real"]["n_patches"] == 4 and len(prof["real"]["log10_power"]) == 7
    assert prof["real"]["periods_px"][0] == [256, 128] and prof["real"]["periods_px"][-1] == [4, 2]
    fine = {k: v["log10_power"][-1] for k, v in prof.items()}
    assert fine["grain"] > fine["real"] + 0.3 and fine["blur"] < fine["real"] - 1.0
    # standardised per patch: a paler stain (lower contrast, brighter) hardly moves it
    pale = 0.5 * f + 0.45
    assert np.allclose(fidelity.spectrum_profile(pale, None)["log10_power"], prof["real"]["log10_power"], atol=0.02)
    # through the report: grain against real is a distance, real against itself none
    rep = fidelity.fidelity_report(f, grain, "he", 1.0, px_per_bin=16, tile_px=256)
    assert rep["spectrum_distance"] > 0.05
    assert len(rep["fidelity_details"]["spectrum"]["log10_generated_minus_real"]) == 7


# ------------------------------------------------------------------------------ two-sample test


@pytest.fixture(scope="module")
def stationary():
    return _he_with_nuclei(512, 1024, seed=3)


def test_c2st_same_section_halves_near_half_and_blurred_near_one(stationary):
    from scipy import ndimage as ndi

    a, b = stationary[:, :512], stationary[:, 512:]
    p = {"steps": 60, "batch": 16}
    same = c2st.two_sample_test(a, b, variant="rgb", **p)
    blur = np.stack([ndi.gaussian_filter(b[..., c], 1.5) for c in range(3)], -1)
    blurred = c2st.two_sample_test(a, blur, variant="lum", **p)
    assert 0.3 <= same["accuracy"] <= 0.7, same
    assert blurred["accuracy"] >= 0.9, blurred
    assert same["ci95"][0] < same["accuracy"] < same["ci95"][1]


def test_c2st_patches_never_cross_the_split():
    img = np.random.default_rng(0).random((128, 256, 3)).astype(np.float32)
    m = np.ones((128, 256), bool)
    xs = c2st._split_x(m, 64, 0.9)
    _, yx_tr = c2st.extract_patches(img, m, 64, 0.9, stride=32, x_range=(0, xs))
    _, yx_te = c2st.extract_patches(img, m, 64, 0.9, stride=64, x_range=(xs, 256))
    assert (yx_tr[:, 1] + 64 <= xs).all() and (yx_te[:, 1] >= xs).all()
    assert c2st.wilson_interval(50, 100)[0] == pytest.approx(0.404, abs=0.002)


# ------------------------------------------------------------------------------ baselines


def _pairs(seed, n=60, genes=20):
    """Units whose targets follow depth (density) and the ratio of gene 0 to gene 1 (area fraction)."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(500, 5000, n)
    mix = rng.uniform(0.05, 0.5, n)
    p = np.full((n, genes), 1.0)
    p[:, 0], p[:, 1] = mix * genes, (0.55 - mix) * genes
    p /= p.sum(axis=1, keepdims=True)
    X = np.asarray([rng.multinomial(int(d), pp) for d, pp in zip(depth, p)], float)
    Y = {"density_per_mm2": 1000 + 0.5 * depth + rng.normal(0, 50, n), "area_fraction": 0.1 + 0.4 * mix + rng.normal(0, 0.01, n)}
    return {"label": f"s{seed}", "genes": [f"g{i}" for i in range(genes)], "X": X, "Y": Y, "units": "spot footprints"}


def test_baselines_fit_on_training_and_score_a_new_section():
    import pandas as pd

    rec = bl.fit_baselines([_pairs(0), _pairs(1), _pairs(2)])
    json.dumps(rec)
    assert rec["fitted_on"] == ["s0", "s1", "s2"] and len(rec["ridge"]["genes"]) == 20
    test = _pairs(9)
    real_units = pd.DataFrame(test["Y"])
    rho = bl.baseline_correlations(rec, test["X"], test["genes"], real_units)
    assert rho["library_size"]["tile_spearman_nuclei"] > 0.9  # density follows depth
    assert abs(rho["library_size"]["tile_spearman_area_fraction"]) < 0.4  # area fraction does not
    assert rho["ridge"]["tile_spearman_area_fraction"] > 0.8  # but a linear model of expression sees it
    # monotone fit
    y = np.asarray(rec["library_size"]["density_per_mm2"]["y"])
    assert (np.diff(y) >= 0).all()


def test_baselines_record_goes_into_the_card(tmp_path):
    from safetensors.torch import load_file

    from napari_gdt.models.bundle import read_card, save_bundle
    from napari_gdt.synthetic import untrained_bundle

    b = untrained_bundle(stage_channels=(8, 8), emb_ch=8)
    p = tmp_path / "m.safetensors"
    save_bundle(p, b.model, b.genes, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]})
    before = load_file(str(p))
    rec = bl.fit_baselines([_pairs(0), _pairs(1)])
    bl.write_baselines(p, rec)
    assert read_card(p)["baselines"]["fitted_on"] == ["s0", "s1"]
    after = load_file(str(p))
    assert all((before[k] == after[k]).all() for k in before)


def test_baselines_need_matching_genes():
    from napari_gdt.errors import GDTError

    a, b = _pairs(0), _pairs(1)
    b["genes"] = b["genes"][::-1]
    with pytest.raises(GDTError, match="another gene list"):
        bl.fit_baselines([a, b])


# ------------------------------------------------------------------------------ evaluate: seeds, edits, baselines, CLI


def _synthetic_setup(tmp_path):
    from skimage.io import imsave

    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    paths = {}
    for name, seed in (("score", 0), ("train1", 1), ("train2", 2)):
        c = synthetic_canvas((40, 40), seed=seed)
        c.affine = np.diag([8.0, 8.0, 1.0])  # 8 image px per bin; the model paints 4 px per bin
        c.to_ome_zarr(tmp_path / f"{name}.ome.zarr")
        imsave(tmp_path / f"{name}.png", (_he_with_nuclei(320, 320, seed=seed) * 255).astype(np.uint8), check_contrast=False)
        paths[name] = (str(tmp_path / f"{name}.ome.zarr"), str(tmp_path / f"{name}.png"))
    b = untrained_bundle(c.genes, stage_channels=(8, 8), emb_ch=8)
    save_bundle(tmp_path / "m.safetensors", b.model, b.genes, um_per_px=0.5, output={"kind": "he", "channels": ["R", "G", "B"]})
    gene = c.genes[0]
    (tmp_path / "edit.json").write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"r": {"rect": [40, 40, 120, 120]}},
                "edits": [{"op": "scale", "region": "r", "genes": [gene], "factor": 20.0}],
            }
        )
    )
    return paths


def test_evaluate_cli_seeds_edits_baselines(tmp_path, capsys, monkeypatch):
    from napari_gdt.analysis.quality import KEYS
    from napari_gdt.cli import main
    from napari_gdt.models.bundle import read_card

    p = _synthetic_setup(tmp_path)
    m = str(tmp_path / "m.safetensors")
    args = ["evaluate", "--model", m, "--expression", p["score"][0], "--image", p["score"][1], "--json", "--tile", "32",
            "--device", "cpu", "--seeds", "2", "--edits", str(tmp_path / "edit.json"),
            "--record-baselines", "--depth-normalised"]  # fmt: skip
    for k in ("train1", "train2"):
        args += ["--train-expression", p[k][0], "--train-image", p[k][1]]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    for k in list(KEYS) + list(fidelity.FIDELITY_KEYS):
        assert k in res, k
    assert res["seeds"] == [0, 1] and len(res["per_seed"]["tissue_iou"]) == 2 and "tissue_iou" in res["seed_sd"]
    assert res["baselines_source"].startswith("fitted now") and set(res["baselines"]) == {"flat", "library_size", "ridge"}
    assert set(res["better_than_baseline"]["tile_spearman_nuclei"]) == {"flat", "library_size", "ridge"}
    assert res["better_than_baseline"]["nuclei_density_ratio"]["ridge"] is None  # spatial keys only
    e = res["edit_effect"]
    assert 0.5 * 80 * 80 < e["edited_px"] <= 80 * 80 and e["mean_abs_dpixel_255"] > 0  # bins with zero counts stay unchanged
    assert {"delta", "seed_sd", "effect_size"} <= set(e["metrics"]["edit_region.mean_luminance"])
    assert {"render", "tissue_iou", "density_cv", "lattice", "nucleus_distributions", "depth_normalised"} <= set(res["timings_s"])
    assert set(res["depth_normalised"]) == {"tile_spearman_nuclei", "tile_spearman_area_fraction"}
    ctx = res["fidelity_details"]["spatial_rho_context"]
    assert set(ctx) == {"tile_spearman_nuclei", "tile_spearman_area_fraction"}
    want = {"seed_mean", "between_seeds", "n_seeds", "expected", "render_from_expected"}
    assert set(ctx["tile_spearman_area_fraction"]) == want
    assert len(read_card(m)["baselines"]["fitted_on"]) == 2
    # the card's record is used next time, and says so
    assert (
        main(
            [
                "evaluate",
                "--model",
                m,
                "--expression",
                p["score"][0],
                "--image",
                p["score"][1],
                "--json",
                "--tile",
                "32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["baselines_source"].startswith("model card")
    # the table says how far one render and the model's expectation follow the real tissue (the synthetic
    # model's seeds disagree, so no expectation is estimated and no line printed; then a context that has one)
    assert ctx["tile_spearman_area_fraction"]["expected"] is None
    args = ["evaluate", "--model", m, "--expression", p["score"][0], "--image", p["score"][1], "--tile", "32",
            "--device", "cpu", "--seeds", "2"]  # fmt: skip
    assert main(args) == 0
    assert "the model's expectation" not in capsys.readouterr().out
    from napari_gdt.analysis import quality

    e = {"seed_mean": 0.4848, "between_seeds": 0.6039, "n_seeds": 2, "expected": 0.5678, "render_from_expected": 0.44}
    monkeypatch.setattr(quality, "spatial_rho_context", lambda *a: {"tile_spearman_area_fraction": e})
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "the model's expectation 0.568 (2-seed mean 0.485, two seeds agree at 0.604); ridge " in out


def test_evaluate_cli_refuses_the_scored_section_as_training(tmp_path, capsys):
    from napari_gdt.cli import main

    p = _synthetic_setup(tmp_path)
    rc = main(["evaluate", "--model", str(tmp_path / "m.safetensors"), "--expression", p["score"][0], "--image", p["score"][1],
               "--tile", "32", "--device", "cpu",
               "--train-expression", p["score"][0], "--train-image", p["score"][1]])  # fmt: skip
    assert rc == 2 and "never fitted on the scored section" in capsys.readouterr().err
    rc = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "m.safetensors"),
            "--expression",
            p["score"][0],
            "--image",
            p["score"][1],
            "--train-image",
            p["train1"][1],
        ]
    )
    assert rc == 2 and "in pairs" in capsys.readouterr().err


# ------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def c5_crop(data_dir):
    """A 1024 x 1024 px tissue crop of her2st C5 at 2 he.jpg px per px (about 1.4 µm/px, as her2st-he paints)."""
    from napari_gdt.training.sampling import read_image

    img = read_image(data_dir / "her2st" / "C5" / "he.jpg")
    crop = img[3000:5048, 3000:5048].astype(np.float32) / 255.0
    return crop.reshape(1024, 2, 1024, 2, 3).mean(axis=(1, 3))


@pytest.mark.realdata
def test_real_c5_crop_with_a_16px_grid_raises_lattice_ratio(c5_crop):
    um = 1.47
    m = fidelity.segment_tissue(c5_crop, "he", um)
    assert m.mean() > 0.8
    left, right = c5_crop[:, :512], c5_crop[:, 512:]
    ml, mr = m[:, :512], m[:, 512:]
    base = fidelity.lattice_excess(left, ml, 16)["excess"]
    plain = fidelity.lattice_excess(right, mr, 16)["excess"] / base
    g = right.copy()
    g[::16] *= 0.97
    g[:, ::16] *= 0.97
    grid = fidelity.lattice_excess(g, mr, 16)["excess"] / base
    assert 0.75 < plain < 1.33 and grid > 2.0


@pytest.mark.realdata
def test_real_c5_two_sample_test_halves_and_blur(c5_crop):
    from scipy import ndimage as ndi

    um = 1.47
    m = fidelity.segment_tissue(c5_crop, "he", um)
    top, bottom = c5_crop[:512], c5_crop[512:]
    same = c2st.two_sample_test(top, bottom, m[:512], m[512:], variant="lum", steps=80, batch=16)
    blur = np.stack([ndi.gaussian_filter(bottom[..., c], 2.0 / um) for c in range(3)], -1)
    blurred = c2st.two_sample_test(top, blur, m[:512], m[512:], variant="lum", steps=80, batch=16)
    assert same["accuracy"] < 0.75, same  # two halves of one section: near chance (tissue differs a little)
    assert blurred["accuracy"] > 0.9, blurred


def test_depth_normalise_equalises_bin_totals():
    from napari_gdt.synthetic import synthetic_canvas

    c = synthetic_canvas((20, 30), seed=0)
    c.data[:, 0, 0] = 0  # an empty bin stays empty
    d = fidelity.depth_normalise(c)
    tot = np.asarray(d.data.sum(axis=0))
    assert tot[0, 0] == 0
    nz = tot[tot > 0]
    assert np.allclose(nz, nz[0], rtol=1e-4) and nz[0] == pytest.approx(
        np.median(np.asarray(c.data.sum(axis=0))[tot > 0]), rel=1e-4
    )
    # the composition of each bin is kept
    a, b = np.asarray(c.data[:, 5, 5]), np.asarray(d.data[:, 5, 5])
    assert np.allclose(a / a.sum(), b / b.sum(), atol=1e-6)


def test_spatial_rho_context_separates_signal_from_render_noise():
    import pandas as pd

    from napari_gdt.analysis.quality import spatial_rho_context

    rng = np.random.default_rng(0)
    truth = rng.random(300)
    real = pd.DataFrame({"density_per_mm2": truth, "area_fraction": truth})
    # each seed: the same expected picture plus as much render noise again
    seeds = [pd.DataFrame({"density_per_mm2": truth + rng.normal(0, 0.3, 300), "area_fraction": truth + rng.normal(0, 0.3, 300)})
             for _ in range(8)]  # fmt: skip
    ctx = spatial_rho_context(seeds, real)["tile_spearman_area_fraction"]
    one = spatial_rho_context(seeds[:2], real)["tile_spearman_area_fraction"]
    from scipy.stats import spearmanr

    per_render = spearmanr(seeds[0]["area_fraction"], truth).statistic
    assert per_render < 0.8 < ctx["seed_mean"]  # averaging renders removes their noise
    assert 0.3 < ctx["between_seeds"] < per_render  # two noisy renders agree less than each with the truth
    assert one["seed_mean"] < ctx["seed_mean"]
    assert spatial_rho_context(seeds[:1], real) is None


def test_spatial_rho_context_estimates_the_expected_pictures_rho():
    """``expected`` recovers the ρ of the model's noiseless expectation from 2 or 3 noisy renders, and
    ``render_from_expected`` one render's ρ (Spearman's correction for attenuation)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from napari_gdt.analysis.quality import spatial_rho_context

    rng = np.random.default_rng(1)
    n = 4000
    expectation = rng.normal(size=n)
    real = pd.DataFrame({c: expectation + rng.normal(0, 1.0, n) for c in ("density_per_mm2", "area_fraction")})
    target = spearmanr(expectation, real["area_fraction"]).statistic  # about 0.69
    for k in (2, 3):
        seeds = [pd.DataFrame({c: expectation + rng.normal(0, 1.2, n) for c in real}) for _ in range(k)]
        ctx = spatial_rho_context(seeds, real)["tile_spearman_area_fraction"]
        assert ctx["n_seeds"] == k
        assert ctx["seed_mean"] < target - 0.05  # the plain seed mean is attenuated by render noise
        assert abs(ctx["expected"] - target) < 0.03
        per_render = np.mean([spearmanr(t["area_fraction"], real["area_fraction"]).statistic for t in seeds])
        assert abs(ctx["render_from_expected"] - per_render) < 0.03


def test_expected_rho_refuses_a_seed_mean_that_is_mostly_noise():
    from napari_gdt.analysis.quality import expected_rho

    assert expected_rho(0.4848, 0.6039, 3)[0] == pytest.approx(0.535, abs=0.001)  # version 3 on C5
    assert expected_rho(0.2, 0.3, 2) == (None, None)  # a 2-seed mean with reliability 0.46
    assert expected_rho(0.2, 0.3, 3)[0] is not None  # three seeds: reliability 0.56
    assert expected_rho(0.9, 0.5, 2)[0] == 1.0  # clipped
    assert expected_rho(0.3, -0.1, 3) == (None, None) and expected_rho(None, 0.5, 3) == (None, None)
