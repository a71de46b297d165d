"""gdt-v2's composition prior: its target, its closed-form fit, the stage that turns it on, exact tiles."""

import json

import numpy as np
import pytest
import torch

from napari_gdt.models.gdt2 import GDT2Generator
from napari_gdt.training.losses import haematoxylin_od
from napari_gdt.training.prior import bin_nuclear_fraction, fit_prior, needs_prior_fit
from napari_gdt.training.sampling import PairedSection

TINY = {
    "emb_ch": 8,
    "n_bin_convs": 1,
    "depth_window": 1,
    "n_struct": 2,
    "stage_channels": [8, 6, 6],
    "stage_convs": [1, 1, 1],
    "latent_dim": 8,
}
PURPLE = np.array([0.35, 0.2, 0.55], np.float32)  # haematoxylin-rich
WHITE = np.array([0.95, 0.94, 0.96], np.float32)
PINK = np.array([0.9, 0.6, 0.75], np.float32)  # eosin: tissue, not nuclear


def _threshold():
    od = haematoxylin_od(torch.from_numpy(np.stack([PURPLE, WHITE])[:, :, None, None]))[:, 0, 0, 0]
    return float(od.mean()), float((od[0] - od[1]).abs()) / 20


def test_bin_fraction_is_the_pooled_soft_mask_centred_on_each_bin():
    thr, tau = _threshold()
    img = np.broadcast_to(WHITE, (64, 48, 3)).copy()
    img[:32] = PURPLE  # bins 0-3 of 8 px: nuclear; bins 4-7: not
    f8 = bin_nuclear_fraction(img, 8, thr, tau, pool=8)
    assert f8.shape == (8, 6)
    np.testing.assert_allclose(f8[:4], 1.0, atol=1e-3)
    np.testing.assert_allclose(f8[4:], 0.0, atol=1e-3)
    f16 = bin_nuclear_fraction(img, 8, thr, tau, pool=16)  # the window reaches half a bin each side
    np.testing.assert_allclose(f16[3], 0.75, atol=1e-3)
    np.testing.assert_allclose(f16[4], 0.25, atol=1e-3)
    np.testing.assert_allclose(f16[0], 1.0, atol=1e-3)  # cut at the image edge, not diluted by padding


def _sections(n=2, size=20, ppb=8, seed=0):
    """Sections whose nuclear fraction follows gene 0's share of each bin (not its depth)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        share = np.clip(rng.random((size, size)), 0.05, 0.95)
        share = (share + np.roll(share, 1, 0) + np.roll(share, 1, 1)) / 3  # some spatial smoothness
        depth = rng.gamma(3.0, 30.0, (size, size))  # depth varies independently of the share
        counts = np.zeros((5, size, size), np.float32)
        counts[0] = share * depth
        counts[1:] = ((1 - share) * depth / 4)[None] * rng.uniform(0.8, 1.2, (4, size, size))
        counts[:, :2, :] = 0  # an unmeasured strip: not fitted
        img = np.broadcast_to(WHITE, (size * ppb, size * ppb, 3)).copy()
        u = rng.random((size * ppb, size * ppb)) < np.kron(share, np.ones((ppb, ppb)))
        img[u] = PURPLE
        out.append(PairedSection(name=f"S{k}", counts=counts, image=img, px_per_bin=ppb))
    return out


def test_fit_prior_reads_composition_standardised_and_keeps_out_of_the_validation_box():
    torch.manual_seed(0)
    g = GDT2Generator(n_genes=5, prior=1, **TINY)
    assert g.config["prior"] == 1 and "prior" not in GDT2Generator(n_genes=5, **TINY).config
    secs = _sections()
    g.fit_input_scale([s.counts for s in secs])
    assert needs_prior_fit(g)
    thr, tau = _threshold()
    rep = fit_prior(g, secs, thr, tau, pool=8)
    assert not needs_prior_fit(g) and float(g.prior_fitted) == 1.0
    assert rep["n_bins"] == {"S0": 18 * 20, "S1": 18 * 20}  # the unmeasured strip is left out
    assert rep["r_train"] > 0.9 and min(rep["cv_r"].values()) > 0.9  # the share predicts it, in and out of section
    # the channel is the prediction, standardised over the fitted bins, and zero where nothing is measured
    ch = [
        g.prior_channels(
            g.normalise(torch.from_numpy(s.counts)[None]), torch.from_numpy((s.counts.sum(0) > 0)[None, None].astype(np.float32))
        )[0, 0].numpy()
        for s in secs
    ]
    v = np.concatenate([c[2:].ravel() for c in ch])
    assert abs(v.mean()) < 1e-3 and v.std() == pytest.approx(1.0, abs=1e-3)
    assert np.all(ch[0][:2] == 0)
    tgt = bin_nuclear_fraction(secs[0].image, 8, thr, tau, pool=8)
    assert np.corrcoef(ch[0][2:].ravel(), tgt[2:].ravel())[0, 1] > 0.9
    # a depth factor does not move it (composition only)
    c2 = g.prior_channels(g.normalise(torch.from_numpy(secs[0].counts * 7)[None]), torch.ones(1, 1, 20, 20))[0, 0].numpy()
    np.testing.assert_allclose(c2[2:], ch[0][2:], atol=1e-4)
    # a validation box is never fitted on
    secs[1].exclude = [(0, 80, 0, 160)]
    rep2 = fit_prior(g, secs, thr, tau, pool=8)
    assert rep2["n_bins"]["S1"] == 10 * 20  # rows 0-9 touch the box and rep2["n_bins"]["S0"] == 18 * 20


def test_fit_prior_errors():
    from napari_gdt.errors import GDTError

    secs = _sections(n=1)
    thr, tau = _threshold()
    with pytest.raises(GDTError, match="no prior channel"):
        fit_prior(GDT2Generator(n_genes=5, **TINY), secs, thr, tau)
    with pytest.raises(GDTError, match="threshold"):
        fit_prior(GDT2Generator(n_genes=5, prior=1, **TINY), secs, 0.0, tau)
    secs[0].counts[:] = 0
    with pytest.raises(GDTError, match="fewer than 10 measured bins"):
        fit_prior(GDT2Generator(n_genes=5, prior=1, **TINY), secs, thr, tau)
    with pytest.raises(ValueError, match="prior must be 0 or 1"):
        GDT2Generator(n_genes=5, prior=2, **TINY)
    # one section: its halves stand in for sections in the penalty's cross-validation
    rep = fit_prior(GDT2Generator(n_genes=5, prior=1, **TINY), _sections(n=1), thr, tau, pool=8)
    assert set(rep["cv_r"]) == {"half 0", "half 1"}


def test_stage_turns_prior_on_at_zero_weight_fits_it_and_renders_tiles_exactly(tmp_path):
    from skimage.io import imsave

    from napari_gdt.cli import main
    from napari_gdt.models.bundle import load_bundle, read_card
    from napari_gdt.rendering.tiles import Region, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.training.rearch import main as rearch_main

    c = synthetic_canvas((20, 20), genes=[f"G{i}" for i in range(5)], seed=4)
    c.affine = np.diag([8.0, 8.0, 1.0])
    c.to_ome_zarr(tmp_path / "c.ome.zarr")
    d = np.asarray(c.data, float)
    share = d[0] / np.maximum(d.sum(0), 1e-9)
    rng = np.random.default_rng(1)
    u = rng.random((160, 160)) < np.kron(share / share.max(), np.ones((8, 8)))
    img = np.where(u[..., None], PURPLE, PINK) + rng.normal(0, 0.02, (160, 160, 3))
    img[:, :8] = WHITE
    imsave(tmp_path / "img.png", (np.clip(img, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    arch = json.dumps(TINY)
    base = ["train", "--arch", "gdt-v2", "--image", str(tmp_path / "img.png"), "--expression", str(tmp_path / "c.ome.zarr")]
    common = ["--patch-bins", "12", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-eval", "--ckpt-every", "2"]
    out = tmp_path / "m.safetensors"
    assert main(base + ["--out", str(out), "--arch-config", arch, "--steps", "2"] + common) == 0
    ck, ck2 = tmp_path / "m.ckpt" / "last.pt", tmp_path / "p.ckpt" / "last.pt"
    assert rearch_main([str(ck), str(ck2), "--arch", '{"prior": 2}']) == 2
    assert rearch_main([str(ck), str(ck2), "--arch", '{"prior": 1}']) == 0
    s1, s2 = torch.load(ck, weights_only=True), torch.load(ck2, weights_only=True)
    g1, g2 = GDT2Generator(**s1["arch"]), GDT2Generator(**s2["arch"])
    g1.load_state_dict(s1["G_ema"])
    g2.load_state_dict(s2["G_ema"])
    assert needs_prior_fit(g2)
    with torch.no_grad():  # a zero column: the stage starts as the old model, whatever the read-out holds
        g2.prior_w.normal_()
        x = torch.from_numpy(np.asarray(c.data[:, :14, :14], np.float32))[None]
        o = torch.tensor([[1, 2]])
        assert torch.equal(g1(x, o, g1.styles(0), 3), g2(x, o, g2.styles(0), 3))
    assert rearch_main([str(ck2), str(tmp_path / "q.ckpt" / "last.pt"), "--arch", '{"prior": 0}']) == 2  # never off again
    out2 = tmp_path / "p.safetensors"
    assert main(base + ["--out", str(out2), "--resume", str(ck2), "--steps", "4"] + common) == 0
    st = torch.load(ck2, weights_only=True)
    assert float(st["G"]["prior_fitted"]) == 1.0 and torch.equal(st["G"]["prior_w"], st["G_ema"]["prior_w"])
    w_fit = st["G"]["prior_w"].clone()
    assert float(w_fit[0, 0]) > 0  # gene 0's share is what makes this tissue nuclear
    log = [json.loads(x) for x in (tmp_path / "p.ckpt" / "log.jsonl").read_text().splitlines()]
    assert sum(x.get("event") == "prior fitted" for x in log) == 1
    # resuming a fitted stage keeps its prior (no second fit)
    assert main(base + ["--out", str(out2), "--resume", str(ck2), "--steps", "6"] + common) == 0
    log = [json.loads(x) for x in (tmp_path / "p.ckpt" / "log.jsonl").read_text().splitlines()]
    assert sum(x.get("event") == "prior fitted" for x in log) == 1
    assert torch.equal(torch.load(ck2, weights_only=True)["G"]["prior_w"], w_fit)
    # prior_boost: the new column starts at that multiple of the embedding's response along the prior's direction
    ck3 = tmp_path / "b.ckpt" / "last.pt"
    assert rearch_main([str(ck), str(ck3), "--arch", '{"prior": 1}', "--cfg", '{"prior_boost": 2.0}']) == 0
    assert main(base + ["--out", str(tmp_path / "b.safetensors"), "--resume", str(ck3), "--steps", "3"] + common) == 0
    fitted = [json.loads(x) for x in (tmp_path / "b.ckpt" / "log.jsonl").read_text().splitlines()]
    fitted = [x for x in fitted if x.get("event") == "prior fitted"]
    assert len(fitted) == 1
    w = torch.load(ck3, weights_only=True)["G"]["prior_w"][0]
    resp = s1["G"]["embed.weight"][:, :5, 0, 0] @ (w / w.pow(2).sum())
    assert fitted[0]["boost_column_norm"] == pytest.approx(2.0 * float(resp.norm()), rel=1e-4)
    assert "boost_column_norm" not in [x for x in log if x.get("event") == "prior fitted"][0]  # default: zero column
    # a new run with the prior from the start fits it before its first step
    fresh = tmp_path / "f.safetensors"
    assert main(base + ["--out", str(fresh), "--arch-config", json.dumps({**TINY, "prior": 1}), "--steps", "2"] + common) == 0
    assert float(torch.load(tmp_path / "f.ckpt" / "last.pt", weights_only=True)["G_ema"]["prior_fitted"]) == 1.0
    assert read_card(fresh)["config"]["prior"] == 1
    card = read_card(out2)
    assert card["config"]["prior"] == 1 and "prior" in card["normalisation"]
    b = load_bundle(out2)
    assert torch.equal(b.model.prior_w, w_fit)
    region = Region(0, 96, 0, 96)
    t1 = TileRenderer(b, c, seed=3, tile_px=32, device="cpu").render_region(region)
    t2 = TileRenderer(b, c, seed=3, tile_px=96, device="cpu").render_region(region)
    assert t1.std() > 0.005 and np.abs(t1 - t2).max() <= 1e-5


def test_prior_fraction_loss_counts_measured_cells_only():
    from napari_gdt.training.losses import prior_fraction_loss

    thr, tau = _threshold()
    img = np.broadcast_to(WHITE, (32, 32, 3)).copy()
    img[:16] = PURPLE
    fake = torch.from_numpy(img).permute(2, 0, 1)[None].requires_grad_(True)
    half = torch.zeros(1, 1, 32, 32)
    half[..., :16, :] = 1.0
    ones = torch.ones(1, 1, 32, 32)
    assert float(prior_fraction_loss(fake.detach(), half, ones, thr, tau, pools=(8, 16))) < 2e-3  # the target is met
    loss = prior_fraction_loss(fake, torch.full((1, 1, 32, 32), 0.25), ones, thr, tau, pools=(8,))
    assert float(loss) == pytest.approx(0.5, abs=2e-3)  # 0.75 off on the nuclear half, 0.25 on the other
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    # unmeasured cells do not count: only the nuclear half is measured, where 0.25 is 0.75 off
    assert float(prior_fraction_loss(fake, torch.full((1, 1, 32, 32), 0.25), half, thr, tau, pools=(8,))) == pytest.approx(
        0.75, abs=2e-3
    )
    # a cell partly measured is left out; a pool larger than the patch is skipped
    part = torch.zeros(1, 1, 32, 32)
    part[..., :12, :] = 1.0
    assert float(prior_fraction_loss(fake, torch.zeros(1, 1, 32, 32), part, thr, tau, pools=(16,))) == 0.0
    assert float(prior_fraction_loss(fake, torch.zeros(1, 1, 32, 32), ones, thr, tau, pools=(64,))) == 0.0


def _prior_trainer(**cfg_kw):
    """A trainer of a tiny ``gdt-v2`` with the prior and ``lambda_prior`` on two synthetic sections."""
    from napari_gdt.training.loop import TrainConfig, Trainer

    secs = _sections()
    thr, tau = _threshold()
    cfg = TrainConfig(
        arch={**TINY, "prior": 1},
        model="gdt-v2",
        lambda_prior=1.0,
        nuc_pools=[8],
        nuc_thr=thr,
        nuc_tau=tau,
        batch_size=2,
        patch_bins=12,
        **cfg_kw,
    )
    return secs, thr, tau, Trainer(secs, [f"G{i}" for i in range(5)], cfg, "cpu")


def test_prior_target_is_the_stretched_prior_on_the_output_pixels():
    from napari_gdt.training.prior import target_stats

    torch.manual_seed(0)
    secs, thr, tau, tr = _prior_trainer()
    with pytest.raises(Exception, match="not fitted"):
        tr.prior_target_if_needed()
    tr.fit_prior_if_needed()
    rep = tr.prior_target_if_needed()
    ys = np.concatenate([bin_nuclear_fraction(s.image, 8, thr, tau, pool=8)[2:] for s in secs])  # measured bins
    assert rep["n_bins"] == ys.size and rep["mean"] == pytest.approx(ys.mean(), rel=1e-5)
    assert rep["sd"] == pytest.approx(ys.std(), rel=1e-5) and target_stats(secs, thr, tau, pool=8) == rep
    counts, real, _ = tr._batch(tr.sampler, 2)
    comp = tr.G.normalise(counts)
    tgt, meas = tr.prior_target_map(tr.G, counts, comp, real.shape[-2:])
    assert tgt.shape == meas.shape == (2, 1, *real.shape[-2:])
    off, ppb = tr.geo.offset, tr.geo.px_per_bin
    cov = (counts.sum(1, keepdim=True) > 0).float()
    pri = tr.G.prior_channels(comp, cov)[:, 0]
    for y, x in [(0, 0), (5, 17), (real.shape[-2] - 1, real.shape[-1] - 1)]:
        by, bx = (y + off) // ppb, (x + off) // ppb
        want = float(np.clip(rep["mean"] + rep["sd"] * float(pri[1, by, bx]), 0, 1)) if cov[1, 0, by, bx] else rep["mean"]
        assert float(tgt[1, 0, y, x]) == pytest.approx(want, abs=1e-5)
        assert float(meas[1, 0, y, x]) == float(cov[1, 0, by, bx])
    # a training step computes and reports it
    out = tr.train_step()
    assert "prior" in out and out["prior"] >= 0


def _cli_section(tmp_path):
    """A small synthetic canvas and image on disk; the ``train`` arguments that read them, and the common options."""
    from skimage.io import imsave

    from napari_gdt.synthetic import synthetic_canvas

    c = synthetic_canvas((16, 16), genes=[f"G{i}" for i in range(5)], seed=4)
    c.affine = np.diag([8.0, 8.0, 1.0])
    c.to_ome_zarr(tmp_path / "c.ome.zarr")
    rng = np.random.default_rng(1)
    img = np.where((rng.random((128, 128)) < 0.3)[..., None], PURPLE, PINK)
    imsave(tmp_path / "img.png", (img * 255).astype(np.uint8), check_contrast=False)
    base = ["train", "--arch", "gdt-v2", "--image", str(tmp_path / "img.png"), "--expression", str(tmp_path / "c.ome.zarr")]
    common = ["--patch-bins", "12", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-eval", "--ckpt-every", "2"]
    return base, common


def test_lambda_prior_needs_the_prior_and_is_kept_on_resume(tmp_path, capsys):
    from napari_gdt.cli import main
    from napari_gdt.training.rearch import main as rearch_main

    base, common = _cli_section(tmp_path)
    out = tmp_path / "m.safetensors"
    args = ["--out", str(out), "--steps", "2", "--lambda-prior", "5"] + common
    assert main(base + ["--arch-config", json.dumps(TINY)] + args) == 2
    assert "--lambda-prior needs a generator with the composition prior" in capsys.readouterr().err
    assert main(base + ["--arch-config", json.dumps({**TINY, "prior": 1})] + args) == 0
    ck = tmp_path / "m.ckpt" / "last.pt"
    log = [json.loads(x) for x in (tmp_path / "m.ckpt" / "log.jsonl").read_text().splitlines()]
    assert [x["event"] for x in log if "event" in x][:2] == ["prior fitted", "prior target"]
    assert any("prior" in x and "event" not in x for x in log)
    # resumed without the flag, the checkpoint's weight stays; a stage may change it
    assert main(base + ["--out", str(out), "--resume", str(ck), "--steps", "4"] + common) == 0
    assert json.loads(torch.load(ck, weights_only=False)["cfg"])["lambda_prior"] == 5.0
    ck2 = tmp_path / "s.ckpt" / "last.pt"
    assert rearch_main([str(ck), str(ck2), "--cfg", '{"lambda_prior": 0.5}']) == 0
    assert json.loads(torch.load(ck2, weights_only=False)["cfg"])["lambda_prior"] == 0.5


def test_prior_target_reads_the_counts_before_depth_thinning(monkeypatch):
    import napari_gdt.training.loop as loop

    _, _, _, tr = _prior_trainer(depth_aug=1.0)
    tr.fit_prior_if_needed()
    tr.prior_target_if_needed()
    seen = {}
    real_map = tr.prior_target_map

    def spy(G, counts, comp, hw):
        seen["counts"], seen["comp"] = counts, comp
        return real_map(G, counts, comp, hw)

    monkeypatch.setattr(tr, "prior_target_map", spy)
    # every window thinned to nothing: the generator sees no counts, the target still reads the tissue
    monkeypatch.setattr(loop, "thin_counts", lambda c, p, m: torch.zeros_like(c))
    tr.train_step()
    assert float(seen["counts"].sum()) > 0
    assert torch.equal(seen["comp"], tr.G.normalise(seen["counts"]))


def test_train_step_alone_measures_the_prior_target_on_first_use():
    torch.manual_seed(0)
    _, _, _, tr = _prior_trainer()
    tr.fit_prior_if_needed()
    assert tr._prior_target is None
    out = tr.train_step()  # no run(): the target's mean and SD are measured when first needed
    assert tr._prior_target is not None and out["prior"] >= 0


def test_the_trainer_fits_the_prior_at_its_thinning_depths(capsys):
    from napari_gdt.training.prior import prior_depths

    _, _, _, tr = _prior_trainer(depth_aug=0.5, depth_min=0.125)
    rep = tr.fit_prior_if_needed()
    assert rep["depths"] == pytest.approx([0.5, 0.25, 0.125]) == list(prior_depths(tr.cfg)) and "depth_shift" in rep
    assert "also at 0.5, 0.25, 0.12 of the depth: shift" in capsys.readouterr().err
    _, _, _, tr0 = _prior_trainer()
    assert "depths" not in tr0.fit_prior_if_needed()


def test_rearch_refit_prior_fits_the_read_out_again_on_resume(tmp_path, capsys):
    from napari_gdt.cli import main
    from napari_gdt.training.rearch import main as rearch_main

    base, common = _cli_section(tmp_path)
    assert (
        main(base + ["--out", str(tmp_path / "p.safetensors"), "--steps", "2", "--arch-config", json.dumps(TINY)] + common) == 0
    )
    plain = tmp_path / "p.ckpt" / "last.pt"
    assert rearch_main([str(plain), str(tmp_path / "x.ckpt" / "last.pt"), "--refit-prior"]) == 2
    assert "--refit-prior: this generator has no composition prior" in capsys.readouterr().err
    out = tmp_path / "m.safetensors"
    assert main(base + ["--out", str(out), "--steps", "2", "--arch-config", json.dumps({**TINY, "prior": 1})] + common) == 0
    ck, ck2 = tmp_path / "m.ckpt" / "last.pt", tmp_path / "r.ckpt" / "last.pt"
    assert rearch_main([str(ck), str(ck2), "--refit-prior"]) == 0
    s1, s2 = torch.load(ck, weights_only=True), torch.load(ck2, weights_only=True)
    assert float(s1["G"]["prior_fitted"]) == 1.0
    assert float(s2["G"]["prior_fitted"]) == 0.0 and float(s2["G_ema"]["prior_fitted"]) == 0.0
    assert torch.equal(s1["G"]["embed.weight"], s2["G"]["embed.weight"])  # the weights are kept
    assert main(base + ["--out", str(tmp_path / "r.safetensors"), "--resume", str(ck2), "--steps", "4"] + common) == 0
    log = [json.loads(x) for x in (tmp_path / "r.ckpt" / "log.jsonl").read_text().splitlines()]
    assert [x.get("unit") for x in log if x.get("event") == "prior fitted"][-1] == "bin"  # no spots in this canvas
    assert float(torch.load(ck2, weights_only=True)["G"]["prior_fitted"]) == 1.0
    cmds = [x["command"] for x in json.loads((tmp_path / "r.ckpt" / "commands.json").read_text())]
    assert any(x.startswith("python -m napari_gdt.training.rearch") and x.endswith("--refit-prior") for x in cmds)


def test_depth_unit_spot_is_refused_for_canvases_without_spots(tmp_path, capsys):
    from napari_gdt.cli import main

    base, common = _cli_section(tmp_path)
    args = ["--out", str(tmp_path / "m.safetensors"), "--steps", "1", "--depth-aug", "0.5", "--depth-unit", "spot"]
    assert main(base + args + ["--arch-config", json.dumps(TINY)] + common) == 2
    assert "--depth-unit spot needs spot canvases" in capsys.readouterr().err
