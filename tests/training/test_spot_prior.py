"""The composition prior fitted per spot: spot data fixes composition per disc, and evaluate scores per disc."""

import numpy as np
import pytest
import torch

from napari_gdt.expression.canvas import ExpressionCanvas
from napari_gdt.models.gdt2 import GDT2Generator
from napari_gdt.training.losses import haematoxylin_od
from napari_gdt.training.prior import fit_prior, needs_prior_fit, prior_unit, spot_nuclear_fraction, target_stats
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
PURPLE = np.array([0.35, 0.2, 0.55], np.float32)
WHITE = np.array([0.95, 0.94, 0.96], np.float32)
PINK = np.array([0.9, 0.6, 0.75], np.float32)  # eosin: tissue, not nuclear
PPB, SIZE, PITCH, DIAM = 8, 24, 32, 20.0  # bins of 8 px; 24 x 24 bins; spots every 32 px, 20 px across


def _threshold():
    od = haematoxylin_od(torch.from_numpy(np.stack([PURPLE, WHITE])[:, :, None, None]))[:, 0, 0, 0]
    return float(od.mean()), float((od[0] - od[1]).abs()) / 50


def _disc(cy, cx, shape=(SIZE * PPB, SIZE * PPB)):
    yy, xx = np.arange(shape[0]) + 0.5, np.arange(shape[1]) + 0.5
    return ((yy[:, None] - cy) ** 2 + (xx[None, :] - cx) ** 2) <= (DIAM / 2) ** 2


def _spot_sections(n=3, seed=0, gap_noise=True):
    """Spot sections: each spot's composition (gene 0's share s) sets the nuclear fraction of its disc
    (= s); the gaps between spots hold a mixture of the neighbours' counts and an unrelated image."""
    rng = np.random.default_rng(seed)
    H = SIZE * PPB
    out = []
    for k in range(n):
        centres = np.array([(y, x) for y in range(16, H - 15, PITCH) for x in range(16, H - 15, PITCH)], float)
        s = rng.uniform(0.1, 0.9, len(centres))
        img = np.broadcast_to(WHITE, (H, H, 3)).copy()
        if gap_noise:  # tissue between the spots, nuclear at random: what a per-bin window would also see
            img[rng.random((H, H)) < 0.5] = PURPLE
        counts = np.zeros((5, SIZE, SIZE), np.float32)
        by = (np.arange(SIZE) + 0.5) * PPB
        for (cy, cx), sk in zip(centres, s):
            d = _disc(cy, cx)
            img[d] = WHITE
            img[d & (rng.random((H, H)) < sk)] = PURPLE
            depth = rng.gamma(3.0, 40.0)
            prof = np.exp(-((by[:, None] - cy) ** 2 + (by[None, :] - cx) ** 2) / (2 * 12.0**2))
            counts[0] += (sk * depth * prof).astype(np.float32)
            counts[1:] += ((1 - sk) * depth / 4 * prof)[None].astype(np.float32) * rng.uniform(0.8, 1.2, (4, 1, 1)).astype(
                np.float32
            )
        out.append(PairedSection(name=f"S{k}", counts=counts, image=img, px_per_bin=PPB, spots=(centres, DIAM)))
        out[-1].share = s  # the truth, for the test
    return out


def test_spot_fraction_is_the_mean_of_the_mask_over_each_disc_and_skips_excluded_spots():
    thr, tau = _threshold()
    (sec,) = _spot_sections(n=1)
    y, idx = spot_nuclear_fraction(sec.image, sec.spots, PPB, thr, tau)
    assert list(idx) == list(range(len(sec.spots[0])))
    hard = np.all(np.isclose(sec.image, PURPLE), axis=-1)
    want = [hard[_disc(cy, cx)].mean() for cy, cx in sec.spots[0]]
    np.testing.assert_allclose(y, want, atol=1e-3)
    np.testing.assert_allclose(y, sec.share, atol=0.12)  # a random draw of the planted fraction
    # a spot whose disc touches an excluded box is left out; one clear of it stays
    y2, idx2 = spot_nuclear_fraction(sec.image, sec.spots, PPB, thr, tau, exclude=[(0, 6, 0, 6)])
    assert np.all(idx2 == idx)  # the box (px 0-5) stops short of the first disc's rows and columns (6-26)
    y3, idx3 = spot_nuclear_fraction(sec.image, sec.spots, PPB, thr, tau, exclude=[(0, 7, 0, 7)])
    assert 0 not in idx3 and len(idx3) == len(idx) - 1
    np.testing.assert_allclose(y3, y[1:])


def test_fit_prior_per_spot_makes_the_prior_map_over_each_disc_the_fitted_prediction():
    torch.manual_seed(0)
    secs = _spot_sections()
    assert prior_unit(secs) == "spot" and prior_unit(secs[:1] + [PairedSection("b", secs[0].counts, secs[0].image, PPB)]) == "bin"
    many = PairedSection("hd", secs[0].counts, secs[0].image, PPB, spots=(np.zeros((20001, 2)), 2.0))
    assert prior_unit([many]) == "bin"  # bins read as spots (Visium HD): fitted per bin
    g = GDT2Generator(n_genes=5, prior=1, **TINY)
    g.fit_input_scale([s.counts for s in secs])
    thr, tau = _threshold()
    rep = fit_prior(g, secs, thr, tau, pool=16)
    assert rep["unit"] == "spot" and not needs_prior_fit(g)
    assert rep["n_bins"] == {s.name: len(s.spots[0]) for s in secs}
    assert min(rep["cv_r"].values()) > 0.8  # each section from the others
    # the map averaged over the bins in a disc is the prediction for that spot: standardised over the spots,
    # and it follows the planted fraction
    preds, truth = [], []
    for s in secs:
        counts = torch.from_numpy(s.counts)[None]
        ch = g.prior_channels(g.normalise(counts), (counts.sum(1, keepdim=True) > 0).float())[0, 0].numpy()
        c = (np.arange(SIZE) + 0.5) * PPB
        for cy, cx in s.spots[0]:
            inb = ((c[:, None] - cy) ** 2 + (c[None, :] - cx) ** 2) <= (DIAM / 2) ** 2
            preds.append(ch[inb].mean())
        truth += list(s.share)
    preds = np.asarray(preds)
    assert abs(preds.mean()) < 1e-4 and preds.std() == pytest.approx(1.0, abs=1e-4)
    assert np.corrcoef(preds, truth)[0, 1] > 0.9
    # the target's stretch is the spots' real fraction
    ys = np.concatenate([spot_nuclear_fraction(s.image, s.spots, PPB, thr, tau)[0] for s in secs])
    st = target_stats(secs, thr, tau, pool=16)
    assert st["unit"] == "spot" and st["n_bins"] == ys.size
    assert st["mean"] == pytest.approx(ys.mean(), rel=1e-5) and st["sd"] == pytest.approx(ys.std(), rel=1e-5)
    # the validation box keeps its spots out of the fit
    secs[0].exclude = [(0, 40, 0, 200)]  # touches the first two rows of spots (6-26 and 38-58 px)
    rep2 = fit_prior(g, secs, thr, tau, pool=16)
    assert rep2["n_bins"]["S0"] == len(secs[0].spots[0]) - 2 * 6


def test_fit_per_spot_beats_fit_per_bin_when_the_gaps_are_unrelated():
    """What the spot unit is for: the gaps between spots are real tissue but their composition is a
    blend of the neighbours; per-bin windows learn that blur, per-spot discs do not."""
    secs = _spot_sections(seed=3)
    thr, tau = _threshold()
    per_spot, per_bin = GDT2Generator(n_genes=5, prior=1, **TINY), GDT2Generator(n_genes=5, prior=1, **TINY)
    for g in (per_spot, per_bin):
        g.fit_input_scale([s.counts for s in secs])
    fit_prior(per_spot, secs, thr, tau, pool=16)
    no_spots = [PairedSection(s.name, s.counts, s.image, PPB) for s in secs]
    assert fit_prior(per_bin, no_spots, thr, tau, pool=16)["unit"] == "bin"
    ys = np.concatenate([spot_nuclear_fraction(s.image, s.spots, PPB, thr, tau)[0] for s in secs])

    def at_spots(g):
        v = []
        for s in secs:
            counts = torch.from_numpy(s.counts)[None]
            ch = g.prior_channels(g.normalise(counts), (counts.sum(1, keepdim=True) > 0).float())[0, 0].numpy()
            c = (np.arange(SIZE) + 0.5) * PPB
            for cy, cx in s.spots[0]:
                v.append(ch[((c[:, None] - cy) ** 2 + (c[None, :] - cx) ** 2) <= (DIAM / 2) ** 2].mean())
        return np.asarray(v)

    from scipy.stats import spearmanr

    r_spot, r_bin = spearmanr(at_spots(per_spot), ys)[0], spearmanr(at_spots(per_bin), ys)[0]
    assert r_spot > 0.9 and r_spot > r_bin


def test_paired_section_from_a_spot_canvas_carries_its_spots_in_output_px():
    genes = [f"G{i}" for i in range(3)]
    data = np.ones((3, 10, 12), np.float32)
    # bins of 16 image px; the model paints 8 output px per bin: image px / 2 = output px
    meta = {"spots": {"centres_px": [[40.0, 40.0], [80.0, 120.0], [2.0, 2.0]], "diameter_px": 20.0}}
    c = ExpressionCanvas(data=data, genes=genes, bin_um=10.0, affine=np.diag([16.0, 16.0, 1.0]), meta=meta)
    img = np.full((160, 192, 3), 0.5, np.float32)
    s = PairedSection.from_canvas(c, img, genes, 8, name="spots")
    centres, d = s.spots
    assert d == pytest.approx(10.0)
    np.testing.assert_allclose(centres, [[20.0, 20.0], [40.0, 60.0]])  # the spot cut by the edge is left out
    plain = PairedSection.from_canvas(
        ExpressionCanvas(data=data, genes=genes, bin_um=10.0, affine=np.diag([16.0, 16.0, 1.0])), img, genes, 8
    )
    assert plain.spots is None


def _shallow(secs):
    """A shallow assay whose nuclear fraction is carried by a rare marker (gene 0, 1-2 % of the counts)
    and, less strongly, by a common gene (gene 2): thinning zeroes the marker in many bins."""
    for s in secs:
        c = s.counts
        tot = c.sum(0)
        share = c[0] / np.maximum(tot, 1e-9)
        c[0] = 0.02 * share * tot * 0.3
        c[1:] *= 0.3
        c[2] += 0.15 * share * tot
    return secs


def _at_spots(g, s, counts):
    c = torch.from_numpy(np.ascontiguousarray(counts))[None]
    ch = g.prior_channels(g.normalise(c), (c.sum(1, keepdim=True) > 0).float())[0, 0].numpy()
    cc = (np.arange(SIZE) + 0.5) * PPB
    return np.array([ch[((cc[:, None] - y) ** 2 + (cc[None, :] - x) ** 2) <= (DIAM / 2) ** 2].mean() for y, x in s.spots[0]])


def test_fit_with_depth_copies_keeps_the_prior_still_when_the_counts_thin():
    from napari_gdt.errors import GDTError
    from napari_gdt.training.losses import thin_window

    secs = _shallow(_spot_sections(seed=5))
    thr, tau = _threshold()
    shifts, reps = {}, {}
    for dep in ((), (0.2, 0.05)):
        g = GDT2Generator(n_genes=5, prior=1, **TINY)
        g.fit_input_scale([s.counts for s in secs])
        reps[dep] = fit_prior(g, secs, thr, tau, pool=16, depths=dep)
        thin = [thin_window(torch.from_numpy(s.counts), 0.05, torch.Generator().manual_seed(9)).numpy() for s in secs]
        shifts[dep] = float(np.mean([(_at_spots(g, s, t) - _at_spots(g, s, s.counts)).mean() for s, t in zip(secs, thin)]))
    # fitted at full depth only, a 1/20 copy of the same tissue reads as far less nuclear; with the copies, barely
    assert shifts[()] < -1.0 and abs(shifts[(0.2, 0.05)]) < 0.5
    with_d = reps[(0.2, 0.05)]
    assert with_d["depths"] == [0.2, 0.05] and abs(with_d["depth_shift"]) < 0.5 and "depths" not in reps[()]
    assert with_d["n_bins"] == reps[()]["n_bins"]  # the units, counted once
    assert min(with_d["cv_r"].values()) > 0.9  # still predicts each section from the others (at full depth)
    # reproducible: the thinned copies have fixed seeds
    g1, g2 = GDT2Generator(n_genes=5, prior=1, **TINY), GDT2Generator(n_genes=5, prior=1, **TINY)
    for g in (g1, g2):
        g.fit_input_scale([s.counts for s in secs])
        fit_prior(g, secs, thr, tau, pool=16, depths=(0.2, 0.05))
    assert torch.equal(g1.prior_w, g2.prior_w)
    with pytest.raises(GDTError, match=r"depth fractions must lie in \(0, 1\)"):
        fit_prior(g1, secs, thr, tau, depths=(1.5,))


def test_training_fits_the_prior_at_the_depths_it_thins_to():
    from napari_gdt.training.loop import TrainConfig
    from napari_gdt.training.prior import prior_depths

    assert prior_depths(TrainConfig(depth_aug=0.0)) == ()
    assert prior_depths(TrainConfig(depth_aug=0.5, depth_min=0.125)) == pytest.approx((0.5, 0.25, 0.125))
    assert prior_depths(TrainConfig(depth_aug=0.5, depth_min=1.0)) == ()


def test_thin_spots_thins_each_spot_as_a_whole():
    from napari_gdt.training.prior import thin_spots

    (sec,) = _spot_sections(n=1, seed=2)
    counts = torch.from_numpy(sec.counts)
    t = thin_spots(counts, sec.spots, PPB, 0.1, torch.Generator().manual_seed(0))
    assert t.shape == counts.shape and float(t.min()) >= 0
    # every bin of a spot is scaled by one ratio per gene: the spot's thinned counts over its counts
    centres = np.asarray(sec.spots[0]) / PPB - 0.5
    yy, xx = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    owner = np.argmin((yy.reshape(-1, 1) - centres[None, :, 0]) ** 2 + (xx.reshape(-1, 1) - centres[None, :, 1]) ** 2, axis=1)
    flat, tf = sec.counts.reshape(5, -1), t.numpy().reshape(5, -1)
    for s in (0, 7, 20):
        m = (owner == s) & (flat[0] > 1e-3)
        ratios = tf[0, m] / flat[0, m]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)
        n = flat[0, owner == s].sum()  # the spot's counts of gene 0, thinned binomially at 0.1 and rescaled by 10
        assert ratios[0] * n == pytest.approx(round(ratios[0] * n * 0.1) / 0.1, abs=1e-2)
    # unbiased: over the canvas the rescaled total stays about the same; a spot's rare gene can vanish entirely
    assert float(t.sum()) == pytest.approx(float(counts.sum()), rel=0.05)
    rare = counts.clone()
    rare[0] *= 0.001
    tr = thin_spots(rare, sec.spots, PPB, 0.1, torch.Generator().manual_seed(1))
    gone = [s for s in range(len(centres)) if tr[0].reshape(-1)[torch.from_numpy(owner == s)].sum() == 0]
    assert len(gone) > len(centres) // 2
    # reproducible with a seed
    assert torch.equal(t, thin_spots(counts, sec.spots, PPB, 0.1, torch.Generator().manual_seed(0)))


def test_sampler_knows_each_window_bins_spot_and_depth_aug_thins_per_spot():
    from napari_gdt.training.losses import thin_counts_spots
    from napari_gdt.training.sampling import PatchSampler

    (sec,) = _spot_sections(n=1, seed=4)
    centres = np.asarray(sec.spots[0]) / PPB - 0.5
    yy, xx = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    owner = np.argmin((yy.reshape(-1, 1) - centres[None, :, 0]) ** 2 + (xx.reshape(-1, 1) - centres[None, :, 1]) ** 2, axis=1)
    sec.counts[0] = (owner.reshape(SIZE, SIZE) + 1).astype(np.float32)  # gene 0 spells the owner: follows any rotation
    g = GDT2Generator(n_genes=5, prior=1, **TINY)
    sampler = PatchSampler([sec], g.geometry, 12, seed=0, owners=True)
    c, _, _ = sampler.sample(6)
    ow = sampler.last_owners
    assert ow.shape == (6, 12, 12)
    inside = ow >= 0
    np.testing.assert_array_equal(c[:, 0][inside], ow[inside] + 1)
    assert np.all(c[:, 0][~inside] == 0)
    # per-spot thinning: every bin of a spot in a window is scaled by one ratio per gene
    counts = torch.from_numpy(c)
    t = thin_counts_spots(counts, torch.from_numpy(ow), p=1.0, f_min=0.1, generator=torch.Generator().manual_seed(0))
    checked = 0
    for i in range(6):
        for s in np.unique(ow[i])[:4]:
            m = torch.from_numpy(ow[i] == s) & (counts[i, 2] > 1e-3)
            if not m.any():
                continue
            checked = checked + 1
            r = t[i, 2][m] / counts[i, 2][m]
            assert torch.allclose(r, r[0].expand_as(r), rtol=1e-4)
    assert checked >= 6
    assert torch.equal(thin_counts_spots(counts, torch.from_numpy(ow), p=0.0), counts)
    plain = PatchSampler([PairedSection("b", sec.counts, sec.image, PPB)], g.geometry, 12, seed=0, owners=True)
    plain.sample(2)
    assert plain.last_owners is None


def test_depth_unit_spot_trains_on_spot_sections():
    from napari_gdt.training.loop import TrainConfig, Trainer

    secs = _spot_sections(n=2, seed=6)
    cfg = TrainConfig(arch=TINY, model="gdt-v2", patch_bins=12, batch_size=2, depth_aug=1.0, depth_unit="spot", steps=1)
    tr = Trainer(secs, [f"G{i}" for i in range(5)], cfg, "cpu")
    seen = {}
    import napari_gdt.training.loop as loop

    real = loop.thin_counts_spots

    def spy(c, o, p, f):
        seen["owners"] = o
        return real(c, o, p, f)

    loop.thin_counts_spots = spy
    try:
        out = tr.train_step()
    finally:
        loop.thin_counts_spots = real
    assert seen["owners"].shape == (2, 12, 12) and np.isfinite(out["adv"])
