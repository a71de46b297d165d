"""gdt-v2: geometry, exact tiles, depth-invariant input, bundle round trip, training (synthetic, fast)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_gdt.models.gdt2 import GDT2Generator, coarse_noise, composition, depth_features, smooth_up2
from napari_gdt.rendering.tiles import Region, TileRenderer
from napari_gdt.synthetic import SYNTHETIC_GENES, synthetic_canvas

TINY = {
    "emb_ch": 8,
    "n_bin_convs": 2,
    "depth_window": 3,
    "n_struct": 2,
    "stage_channels": [8, 8, 6],
    "stage_convs": [1, 1, 2],
    "latent_dim": 8,
}


def _tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = GDT2Generator(n_genes=len(SYNTHETIC_GENES), out_channels=3, **{**TINY, **kw})
    with torch.no_grad():
        for p in m.noise_strength:
            p.fill_(0.3)
        for c in m.convs:
            c.affine.weight.normal_(0, 0.3)
        m.to_img.weight.mul_(4.0)
    return m.eval()


@pytest.fixture(scope="module")
def tiny_bundle():
    from napari_gdt.models.bundle import bundle_from_model

    return bundle_from_model(_tiny_model(), SYNTHETIC_GENES, name="tiny-v2")


@pytest.fixture(scope="module")
def canvas():
    c = synthetic_canvas((48, 48), seed=2)
    d = np.asarray(c.data, dtype=np.float32).copy()
    d[:, :, :6] = 0  # an unmeasured strip: coverage changes inside the region
    c.data = d
    return c


def test_geometry_matches_forward_and_receptive_field():
    m = _tiny_model()
    g = m.geometry
    assert g.px_per_bin == 8
    for n in (12, 15, 20):
        y = m(torch.rand(2, m.n_genes, n, n) * 5, torch.zeros(2, 2, dtype=torch.int64), m.styles(0), 0)
        assert y.shape == (2, 3, g.out_len(n), g.out_len(n))
    # the default her2st config sees >= 150 µm (24 µm bins): >= 3 bins of context each side
    from napari_gdt.training.loop import DEFAULT_ARCHS

    big = GDT2Generator(n_genes=4, **DEFAULT_ARCHS["gdt-v2"]).geometry
    assert big.halo_px >= 3 * big.px_per_bin


def test_origin_bookkeeping_output_depends_on_the_right_bins():
    """A change in one bin moves only output pixels inside the traced halo of that bin."""
    m = _tiny_model()
    g = m.geometry
    n = 16
    x = torch.rand(1, m.n_genes, n, n) * 5 + 0.5
    o = torch.zeros(1, 2, dtype=torch.int64)
    a = m(x, o, m.styles(0), 0)
    x2 = x.clone()
    x2[:, 0, 8, 8] *= 20
    b = m(x2, o, m.styles(0), 0)
    diff = (a - b).abs().amax(dim=(0, 1)) > 0
    ys, _ = torch.nonzero(diff, as_tuple=True)
    assert len(ys)
    # absolute px of the changed output lie within halo of bin 8's pixels
    lo, hi = 8 * g.px_per_bin - g.halo_px, 9 * g.px_per_bin + g.halo_px
    assert (ys + g.offset).min() >= lo and (ys + g.offset).max() < hi


def test_tiles_match_exactly_in_any_order(tiny_bundle, canvas):
    region = Region(0, 320, 0, 320)
    outs = {}
    for T in (64, 160, 320):
        outs[T] = TileRenderer(tiny_bundle, canvas, seed=3, tile_px=T, device="cpu").render_region(region)
    a = outs[64]
    assert a.std() > 0.01
    assert np.abs(a - outs[160]).max() <= 1e-5
    assert np.abs(a - outs[320]).max() <= 1e-5
    # shuffled order: identical bytes. 16 tiles in two full batches of 8 (oneDNN may pick another
    # convolution algorithm for a smaller batch of tiny inputs, which changes the last bits)
    sub = Region(0, 256, 0, 256)
    r = TileRenderer(tiny_bundle, canvas, seed=3, tile_px=64, device="cpu", batch_size=8)
    ref = r.render_region(sub)
    perm = np.random.default_rng(0).permutation(len(r.tiles_for(sub)))
    assert len(perm) == 16
    r2 = TileRenderer(tiny_bundle, canvas, seed=3, tile_px=64, device="cpu", batch_size=8)
    assert r2.render_region(sub, order=perm).tobytes() == ref.tobytes()
    # the seed moves the structure latents: a different picture
    other = TileRenderer(tiny_bundle, canvas, seed=4, tile_px=64, device="cpu").render_region(region)
    assert np.abs(other - a).mean() > 1e-3


def test_coarse_structure_noise_is_window_free_smooth_and_unit_variance():
    o = torch.tensor([[-7, 3], [100, -50]])
    a = coarse_noise(5, 1000, o, 40, 30, 4)
    # any window of the same absolute positions gives the same values (random access)
    b = coarse_noise(5, 1000, o + torch.tensor([[5, 2]]), 30, 20, 4)
    assert torch.equal(a[:, :, 5:35, 2:22], b)
    big = coarse_noise(5, 1000, torch.tensor([[0, 0]]), 400, 400, 4)[0, 0]
    # unit variance at every phase of the node lattice (no contrast at the node spacing)
    for ph in range(4):
        assert abs(float(big[ph::4].std()) - 1.0) < 0.05
    # correlated over about a node spacing, unlike per-bin noise
    fine = coarse_noise(5, 1000, torch.tensor([[0, 0]]), 400, 400, 1)[0, 0]

    def lag1(x):
        return float(torch.corrcoef(torch.stack([x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)]))[0, 1])

    assert lag1(big) > 0.6 and abs(lag1(fine)) < 0.05
    # stride 1 is the plain per-bin noise
    from napari_gdt.models.noise import batched_noise

    assert torch.equal(coarse_noise(5, 1000, o, 9, 9, 1), batched_noise(5, 1000, o, 9, 9))


def test_struct_strides_config_round_trip_and_exact_tiles(tmp_path, canvas):
    from napari_gdt.models.bundle import load_bundle, save_bundle

    m = _tiny_model(struct_strides=[1, 3])
    assert m.config["struct_strides"] == [1, 3]
    assert "struct_strides" not in _tiny_model().config  # older configs stay as they were
    with pytest.raises(ValueError, match="struct_strides"):
        _tiny_model(struct_strides=[1])
    p = tmp_path / "m.safetensors"
    save_bundle(p, m, SYNTHETIC_GENES, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]}, name="tiny-v2-strides")
    b2 = load_bundle(p)
    assert b2.model.struct_strides == [1, 3]
    region = Region(0, 192, 0, 192)
    a = TileRenderer(b2, canvas, seed=3, tile_px=64, device="cpu").render_region(region)
    c = TileRenderer(b2, canvas, seed=3, tile_px=192, device="cpu").render_region(region)
    assert a.std() > 0.01 and np.abs(a - c).max() <= 1e-5


def test_abs_depth_channel_reads_depth_round_trips_and_tiles_exactly(tmp_path, canvas):
    from napari_gdt.models.bundle import load_bundle, save_bundle

    m = _tiny_model(abs_depth=True)
    assert m.config["abs_depth"] is True and "abs_depth" not in _tiny_model().config  # older configs unchanged
    assert "depth_scale" not in _tiny_model().state_dict()
    counts = np.asarray(canvas.data, np.float32)
    m.fit_input_scale([counts])
    tot = counts.sum(axis=0)
    assert float(m.depth_scale) == pytest.approx(np.percentile(np.log1p(tot[tot > 0]), 99), rel=1e-5)
    with torch.no_grad():
        m.embed.weight[:, m.n_genes + 2] *= 20  # make the depth channel's effect plain
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.gamma(2.0, 3.0, size=(1, m.n_genes, 14, 14)).astype(np.float32))
    o = torch.tensor([[0, 5]])
    a = m(x, o, m.styles(1), 7)
    b = m(x / 15, o, m.styles(1), 7)
    assert float((a - b).abs().mean().detach()) > 1e-3  # absolute depth changes the picture (by design)
    p = tmp_path / "d.safetensors"
    save_bundle(p, m, SYNTHETIC_GENES, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]}, name="tiny-v2-depth")
    b2 = load_bundle(p)
    assert b2.model.abs_depth and float(b2.model.depth_scale) == pytest.approx(float(m.depth_scale))
    assert b2.card["normalisation"]["absolute_depth"].startswith("log1p")
    region = Region(0, 192, 0, 192)
    t1 = TileRenderer(b2, canvas, seed=3, tile_px=64, device="cpu").render_region(region)
    t2 = TileRenderer(b2, canvas, seed=3, tile_px=192, device="cpu").render_region(region)
    assert t1.std() > 0.01 and np.abs(t1 - t2).max() <= 1e-5


def test_smooth_upsampling_is_bilinear_and_window_free():
    x = torch.randn(1, 2, 9, 11)
    y = smooth_up2(x)
    assert y.shape == (1, 2, 16, 20)
    # nearest x2 then the valid [1, 2, 1] / 4 blur along each axis
    k = torch.tensor([1.0, 2.0, 1.0]) / 4
    near = F.interpolate(x, scale_factor=2, mode="nearest")
    ref = F.conv2d(near.reshape(-1, 1, 18, 22), (k[:, None] * k[None, :])[None, None]).reshape(1, 2, 16, 20)
    assert torch.allclose(y, ref, atol=1e-6)
    # a sub-window gives the same values where they overlap
    sub = smooth_up2(x[..., 3:8, 2:9])
    assert torch.equal(sub, y[..., 6 : 6 + sub.shape[-2], 4 : 4 + sub.shape[-1]])
    # no lattice: a smooth ramp stays a ramp (no steps at the bin period)
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 3, 10)
    d = torch.diff(smooth_up2(ramp)[0, 0, 0])
    assert torch.allclose(d, torch.full_like(d, 0.5))


def test_input_normalisation_is_depth_invariant():
    rng = np.random.default_rng(0)
    c = torch.from_numpy(rng.gamma(2.0, 3.0, size=(1, 10, 12, 12)).astype(np.float32))
    c[:, :, :, :3] = 0  # unmeasured
    for f in (1 / 15, 0.37, 8.0):
        assert torch.allclose(composition(c * f), composition(c), atol=1e-5)
        cov_a, rel_a = depth_features(c, 5)
        cov_b, rel_b = depth_features(c * f, 5)
        assert torch.equal(cov_a, cov_b)
        assert torch.allclose(rel_a, rel_b, atol=1e-5)
    cov, rel = depth_features(c, 5)
    assert cov[0, 0, :, :3].sum() == 0 and cov[0, 0, :, 3:].min() == 1
    assert float(rel[0, 0, 2:-2, 2:-2].abs().max()) > 0.01  # relative depth is informative...
    # ... and a bin shallower than its neighbourhood reads negative
    c2 = c.clone()
    c2[:, :, 6, 8] *= 0.1
    assert depth_features(c2, 5)[1][0, 0, 6, 8] < depth_features(c, 5)[1][0, 0, 6, 8] - 1.0
    # the whole generator: a global depth factor leaves the picture unchanged
    m = _tiny_model()
    x = torch.from_numpy(rng.gamma(2.0, 3.0, size=(1, m.n_genes, 14, 14)).astype(np.float32))
    o = torch.tensor([[3, -2]])
    a = m(x, o, m.styles(1), 7)
    b = m(x / 15, o, m.styles(1), 7)
    assert torch.allclose(a, b, atol=1e-5)


def test_bundle_round_trip_and_registry(tmp_path, tiny_bundle, canvas):
    from napari_gdt.models.bundle import load_bundle, read_card, save_bundle
    from napari_gdt.models.registry import build

    p = tmp_path / "v2.safetensors"
    save_bundle(
        p,
        tiny_bundle.model,
        SYNTHETIC_GENES,
        um_per_px=1.0,
        output={"kind": "he", "channels": ["R", "G", "B"]},
        name="tiny-v2",
        provenance={"trained": False},
    )
    card = read_card(p)
    assert card["arch"] == "gdt-v2" and card["config"]["depth_window"] == 3
    assert "composition" in card["normalisation"] and card["normalisation"]["relative_depth_window_bins"] == 3
    b = load_bundle(p)
    assert isinstance(b.model, GDT2Generator)
    region = Region(40, 200, 16, 176)
    a = TileRenderer(tiny_bundle, canvas, seed=1, tile_px=64, device="cpu").render_region(region)
    c = TileRenderer(b, canvas, seed=1, tile_px=64, device="cpu").render_region(region)
    assert a.tobytes() == c.tobytes()
    assert isinstance(build("gdt-v2", card["config"]), GDT2Generator)
    from napari_gdt.errors import BundleError
    from napari_gdt.models.bundle import set_card_fields

    assert set_card_fields(p, model_version=2)["model_version"] == 2
    assert read_card(p)["model_version"] == 2 and load_bundle(p).model.config == b.model.config
    with pytest.raises(BundleError, match="arch"):
        set_card_fields(p, arch="gdt-v1")
    # gdt-v1 bundles still load (the shipped her2st-he may be either)
    from napari_gdt.synthetic import untrained_bundle

    v1 = tmp_path / "v1.safetensors"
    u = untrained_bundle(stage_channels=(8, 8, 8), emb_ch=8)
    save_bundle(v1, u.model, u.genes, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]}, name="v1")
    assert load_bundle(v1).card["arch"] == "gdt-v1"


def test_thin_counts_binomial_and_smooth():
    from napari_gdt.training.losses import thin_counts

    g = torch.Generator().manual_seed(0)
    c = torch.full((64, 3, 20, 20), 30.0)
    same = thin_counts(c, p=0.0, generator=g)
    assert torch.equal(same, c)
    t = thin_counts(c, p=1.0, f_min=0.05, generator=g)
    assert not torch.equal(t, c)
    assert abs(float(t.mean()) / 30.0 - 1.0) < 0.05  # rescaled by 1/f: unbiased
    # integer counts are thinned binomially: t * f is an integer <= c
    frac = torch.full((4, 3, 10, 10), 2.5)
    tf = thin_counts(frac, p=1.0, generator=g)
    assert tf.std() > 0 and tf.min() >= 0


def _training_pair(tmp_path) -> str:
    """A 6-gene synthetic canvas ``c.ome.zarr`` and an H&E-like ``img.png`` darker where gene 0 is
    high, in ``tmp_path``; returns a tiny gdt-v2 --arch-config."""
    from skimage.io import imsave

    c = synthetic_canvas((40, 40), genes=[f"G{i}" for i in range(6)], seed=3)
    c.affine = np.diag([8.0, 8.0, 1.0])
    c.to_ome_zarr(tmp_path / "c.ome.zarr")
    rate = np.asarray(c.data[0], dtype=float)
    dark = np.kron(rate / rate.max(), np.ones((8, 8)))
    img = np.stack([0.9 - 0.5 * dark, 0.85 - 0.6 * dark, 0.9 - 0.3 * dark], -1)
    imsave(tmp_path / "img.png", (np.clip(img, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    return json.dumps(dict(TINY, stage_channels=[8, 8, 6], stage_convs=[1, 1, 1]))


def test_train_gdt_v2_and_resume(tmp_path):

    from napari_gdt.cli import main
    from napari_gdt.models.bundle import read_card

    arch = _training_pair(tmp_path)
    out = tmp_path / "m.safetensors"
    args = [
        "train",
        "--arch",
        "gdt-v2",
        "--image",
        str(tmp_path / "img.png"),
        "--expression",
        str(tmp_path / "c.ome.zarr"),
        "--out",
        str(out),
        "--arch-config",
        arch,
        "--patch-bins",
        "16",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--d-scales",
        "2",
        "--d-ch",
        "8",
        "--r1-gamma",
        "0.1",
        "--depth-aug",
        "0.5",
        "--keep-every",
        "2",
        "--no-eval",
    ]
    assert main(args + ["--steps", "2", "--ckpt-every", "2"]) == 0
    card = read_card(out)
    assert card["arch"] == "gdt-v2" and card["provenance"]["config"]["model"] == "gdt-v2"
    assert card["provenance"]["config"]["d_scales"] == 2 and card["provenance"]["config"]["d_ch"] == 8
    d_first = torch.load(tmp_path / "m.ckpt" / "last.pt", weights_only=True)["D"]["ds.0.body.0.weight_orig"]
    assert d_first.shape[0] == 8  # a narrow discriminator; the resume below (no --d-ch) must keep it
    assert (tmp_path / "m.ckpt" / "step2.safetensors").exists()
    ck = tmp_path / "m.ckpt" / "last.pt"
    assert torch.load(ck, weights_only=True)["model_arch"] == "gdt-v2"
    resume = [
        "train",
        "--image",
        str(tmp_path / "img.png"),
        "--expression",
        str(tmp_path / "c.ome.zarr"),
        "--out",
        str(out),
        "--resume",
        str(ck),
        "--steps",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-eval",
    ]
    assert main(resume) == 0
    card = read_card(out)
    assert card["arch"] == "gdt-v2" and card["provenance"]["steps"] == 3

    # a staged recipe: same weights, another input option and coarser losses, then resume
    from napari_gdt.training.rearch import main as rearch_main

    ck2 = tmp_path / "stage2.ckpt" / "last.pt"
    st_before = (ck.stat().st_mtime_ns, ck.read_bytes())
    new_arch = '{"depth_window": 1, "struct_strides": [1, 2]}'
    assert rearch_main([str(ck), str(ck2), "--arch", new_arch, "--cfg", '{"rec_pool": 4, "lr_d": 0.003}']) == 0
    assert {g["lr"] for g in torch.load(ck2, weights_only=True)["opt_d"]["param_groups"]} == {0.003}
    assert (ck.stat().st_mtime_ns, ck.read_bytes()) == st_before  # the source stays as it was
    assert rearch_main([str(ck), str(ck2)]) == 2  # never overwrites
    bad = tmp_path / "stage3.ckpt" / "last.pt"
    assert rearch_main([str(ck), str(bad), "--arch", '{"emb_ch": 16}']) == 2  # a shape change is refused
    assert rearch_main([str(ck), str(bad), "--cfg", '{"seed": 4}']) == 2
    assert not bad.exists()
    out2 = tmp_path / "m2.safetensors"
    i = resume.index("--resume")
    stage2 = resume[: i + 1] + [str(ck2)] + resume[i + 2 :]
    stage2[stage2.index("--out") + 1] = str(out2)
    stage2[stage2.index("--steps") + 1] = "4"
    assert main(stage2) == 0
    card = read_card(out2)
    assert card["config"]["depth_window"] == 1 and card["config"]["struct_strides"] == [1, 2]
    assert card["provenance"]["config"]["rec_pool"] == 4 and card["provenance"]["steps"] == 4
    cmds = [c["command"] for c in card["provenance"]["commands"]]
    assert len(cmds) == 4 and "napari_gdt.training.rearch" in cmds[2]

    # turning on the absolute-depth input: a zero column, so the stage starts as the old model
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.models.gdt2 import GDT2Generator

    ck3 = tmp_path / "stage3d.ckpt" / "last.pt"
    assert rearch_main([str(ck2), str(ck3), "--arch", '{"abs_depth": true}']) == 2  # needs the canvases
    assert not ck3.exists()
    assert rearch_main([str(ck2), str(ck3), "--arch", '{"abs_depth": true}', "--expression", str(tmp_path / "c.ome.zarr")]) == 0
    s2, s3 = torch.load(ck2, weights_only=True), torch.load(ck3, weights_only=True)
    g_old = GDT2Generator(**s2["arch"])
    g_old.load_state_dict(s2["G_ema"])
    g_new = GDT2Generator(**s3["arch"])
    g_new.load_state_dict(s3["G_ema"])
    assert g_new.abs_depth and float(g_new.depth_scale) > 0
    x = torch.from_numpy(np.asarray(load_bundle(out2).model.gene_scale)[None, :, None, None].repeat(20, 2).repeat(20, 3) * 3.0)
    o = torch.tensor([[1, 2]])
    with torch.no_grad():
        assert torch.equal(g_old(x, o, g_old.styles(0), 5), g_new(x, o, g_new.styles(0), 5))
    stage3 = list(stage2)
    stage3[stage3.index("--resume") + 1] = str(ck3)
    stage3[stage3.index("--out") + 1] = str(tmp_path / "m3.safetensors")
    stage3[stage3.index("--steps") + 1] = "6"
    assert main(stage3) == 0
    assert read_card(tmp_path / "m3.safetensors")["config"]["abs_depth"] is True


def test_init_from_gdt_v2_maps_genes_and_keeps_the_columns_after_them(tmp_path, capsys):
    """Fine-tuning a gdt-v2 model (the shipped her2st-he is one) on another panel: shared genes keep
    their weights, a new gene starts at zero, and the columns after the genes (coverage, depth,
    structure) are copied as they are, so the start renders the parent's image where the new and the
    dropped genes are silent. The discriminator of a checkpoint comes along (multi-scale keys)."""

    from napari_gdt.cli import main
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle, read_card

    arch = _training_pair(tmp_path)
    base = ["train", "--image", str(tmp_path / "img.png"), "--expression", str(tmp_path / "c.ome.zarr")]
    base += ["--patch-bins", "16", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-eval"]
    a = tmp_path / "a.safetensors"
    assert (
        main(
            base
            + ["--arch", "gdt-v2", "--arch-config", arch, "--out", str(a), "--d-scales", "2", "--d-ch", "8"]
            + ["--steps", "2", "--ckpt-every", "2", "--genes", "G0,G1,G2,G3"]
        )
        == 0
    )
    parent = load_bundle(a)
    n_extra = int(parent.model.embed.weight.shape[1]) - 4
    assert n_extra >= 3  # coverage, relative depth, structure channels
    ck = tmp_path / "a.ckpt" / "last.pt"
    d_parent = torch.load(ck, weights_only=True)["D"]
    for src in (str(a), str(ck)):
        b = tmp_path / f"b_{src.endswith('.pt')}.safetensors"
        # no --arch: the architecture (gdt-v2 and its config) comes from the starting model; 0 steps = the start
        assert (
            main(
                base
                + ["--out", str(b), "--init-from", src, "--genes", "G3,G5,G1,G0", "--steps", "0"]
                + (["--d-scales", "2", "--d-ch", "8"] if src.endswith(".pt") else [])
            )
            == 0
        )
        card = read_card(b)
        assert card["arch"] == "gdt-v2" and card["genes"] == ["G3", "G5", "G1", "G0"]
        info = card["provenance"]["init_from"]
        assert info["shared"] == 3 and info["new"] == ["G5"] and info["dropped"] == ["G2"]
        child = load_bundle(b)
        pw, cw = parent.model.embed.weight, child.model.embed.weight
        assert cw.shape[1] == 4 + n_extra
        for j, g in enumerate(["G3", "G5", "G1", "G0"]):
            if g == "G5":
                assert float(cw[:, j].detach().abs().max()) == 0.0
            else:
                assert torch.equal(cw[:, j], pw[:, int(g[1])])
        assert torch.equal(cw[:, 4:], pw[:, 4:])  # coverage, depth and structure columns as they were
        c2 = ExpressionCanvas.from_ome_zarr(tmp_path / "c.ome.zarr")
        data = np.asarray(c2.data).copy()
        data[[2, 5]] = 0
        z = ExpressionCanvas(data, c2.genes, bin_um=c2.bin_um)
        x = TileRenderer(parent, z, device="cpu").render_region()
        y = TileRenderer(child, z, device="cpu").render_region()
        assert np.abs(x - y).max() < 1e-5
        if src.endswith(".pt"):
            d_child = torch.load(tmp_path / f"b_{True}.ckpt" / "last.pt", weights_only=True)["D"]
            k = next(k for k in d_parent if k.endswith("cond.weight_orig"))
            assert torch.equal(d_child[k][:, [0, 2, 3]], d_parent[k][:, [3, 1, 0]])
            assert float(d_child[k][:, 1].abs().max()) == 0.0
    # an explicit --arch that contradicts the starting model is one line
    rc = main(base + ["--out", str(tmp_path / "c.safetensors"), "--init-from", str(a), "--arch", "gdt-v1", "--steps", "0"])
    assert rc == 2 and "is a gdt-v2 model; --arch says gdt-v1" in capsys.readouterr().err
    # --arch-config changes the starting model's options: one that keeps every weight's shape is taken
    # (and recorded), one that alters a weight is refused naming it
    d = tmp_path / "d.safetensors"
    assert main(base + ["--out", str(d), "--init-from", str(a), "--arch-config", '{"depth_window": 5}', "--steps", "0"]) == 0
    card = read_card(d)
    assert card["config"]["depth_window"] == 5 and card["config"]["stage_channels"] == [8, 8, 6]
    assert card["provenance"]["init_from"]["arch_changes"] == {"depth_window": [3, 5]}
    rc = main(base + ["--out", str(tmp_path / "e.safetensors"), "--init-from", str(a), "--arch-config", '{"emb_ch": 16}'])
    assert rc == 2 and "architecture differs from this run's in emb_ch (8 vs 16)" in capsys.readouterr().err
