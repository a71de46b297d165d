"""Fit ``gdt-v2``'s composition prior: the expected local nuclear area fraction, read from expression.

A generator trained by an adversarial signal learns the map from expression to cellularity slowly
and noisily: on a training section version 3's seed-averaged render follows the real local area
fraction at Spearman 0.56, where a ridge regression on the same expression reaches 0.77 (and on the
held-out section 0.544 against the render's 0.485). The prior hands the generator that regression
as an input channel (``GDT2Generator(prior=1)``): per bin, a fixed linear read-out of the scaled
composition the model already reads, fitted here in closed form.

Fit (:func:`fit_prior`), in one of two units:

- **spots** (when every training section is spot data, :attr:`PairedSection.spots`): for every
  spot wholly inside its section and clear of the excluded (validation) boxes, the target is the
  real image's soft nuclear mask (:func:`napari_gdt.training.losses.soft_nuclear_mask`, the
  segmenter's threshold) averaged over the spot's disc, and the features are the model's scaled
  composition averaged over the bins whose centre lies in the disc. Because the read-out is
  linear, the prior map averaged over a spot's disc is then exactly the fitted prediction for that
  spot: the unit ``evaluate`` scores and the ``ridge`` baseline is fitted on. (Fitted per bin
  instead, against windows that straddle spot rims and the unmeasured gaps, the same read-out
  follows the training spots' area fraction at Spearman 0.50-0.61 where a spot-level fit reaches
  0.66 on sections it was not fitted on: session 10's study in ``docs/training.md``.)
- **bins** (otherwise, e.g. MERFISH): for every measured bin outside the excluded boxes, the target
  is the soft nuclear mask averaged over a ``pool`` x ``pool`` output-px window centred on the bin;
  the features are the model's scaled composition of the bin.

Ridge on standardised features, the penalty chosen leaving one training section out
(:func:`napari_gdt.analysis.baselines._ridge_fit`), then folded into ``prior_w`` / ``prior_b`` so
that the channel is the prediction standardised over the training units (mean 0, SD 1).
``prior_fitted`` is set to 1; a run that resumes a fitted checkpoint keeps its prior.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import GDTError
from .losses import soft_nuclear_mask, thin_by_owner, thin_window

__all__ = [
    "bin_nuclear_fraction",
    "fit_prior",
    "needs_prior_fit",
    "prior_depths",
    "prior_unit",
    "spot_nuclear_fraction",
    "target_stats",
    "thin_spots",
]


def _bin_data(sections, threshold, tau, pool, sigma_px, background_px, g=None, depths=()):
    """Per section with measured bins outside its excluded boxes: the bins' scaled composition
    (``(n, G)``, only when a generator ``g`` is given, else None), their target fractions, group
    ids, names and which rows are at full depth. ``depths``: each bin again, its section's counts
    thinned to that fraction (:func:`napari_gdt.training.losses.thin_window`), with the same target."""
    X, Y, groups, names, full = [], [], [], [], []
    for s in sections:
        tot = s.counts.sum(axis=0)
        y = bin_nuclear_fraction(s.image, s.px_per_bin, threshold, tau, pool, sigma_px, background_px)
        hb, wb = min(y.shape[0], tot.shape[0]), min(y.shape[1], tot.shape[1])
        keep = (tot[:hb, :wb] > 0) & ~_excluded_bins((hb, wb), s.px_per_bin, pool, s.exclude)
        if not keep.any():
            continue

        def read(comp, hb=hb, wb=wb, keep=keep):
            return comp[:, :hb, :wb][:, keep].T

        _append_rows(X, Y, groups, names, full, s, g, depths, read, y[:hb, :wb][keep])
    return X, Y, groups, names, full


def _append_rows(X, Y, groups, names, full, s, g, depths, read, y) -> None:
    """One section's rows: ``read(comp)`` gives the units' features ``(n, G)`` from a scaled
    composition ``(G, Hb, Wb)``; at full depth, then at each of ``depths`` (thinned counts)."""
    y = np.asarray(y, np.float64)
    copies = [None, *depths] if g is not None else [None]
    for f in copies:
        if g is not None:
            counts = torch.from_numpy(np.ascontiguousarray(s.counts, np.float32))
            if f is not None:
                gen = torch.Generator().manual_seed(_thin_seed(s.name, f))
                spots = getattr(s, "spots", None)
                counts = thin_spots(counts, spots, s.px_per_bin, float(f), gen) if spots else thin_window(counts, float(f), gen)
            comp = g.normalise(counts[None].to(g.prior_w.device))[0].cpu().numpy()
            X.append(np.asarray(read(comp), np.float64))
        else:
            X.append(None)
        Y.append(y)
        groups.append(np.full(len(y), len(names)))
        full.append(np.full(len(y), f is None))
    names.append(s.name)


def thin_spots(counts: torch.Tensor, spots, px_per_bin: int, f: float, generator=None) -> torch.Tensor:
    """A spot canvas's counts ``(G, Hb, Wb)`` as if each spot had been sequenced ``f`` times as deep,
    rescaled by ``1 / f``.

    Spot data are thinned per spot (a spot's UMIs), and a canvas spreads each spot over many bins,
    so a bin's genes move together with its spot's: a rare gene of a shallow spot is missing from
    every bin the spot covers. Each bin is assigned to its nearest spot centre; the spot's counts
    per gene are estimated as the sum over its bins, thinned binomially, and every bin of the spot
    is scaled by the spot's thinned-to-full ratio of that gene. (:func:`~napari_gdt.training.losses.thin_window`
    thins bins independently and then averages 5 x 5 of them, which keeps far more of a rare gene.)
    """
    from .sampling import nearest_spot_map

    centres, _ = spots
    owner = torch.from_numpy(nearest_spot_map(centres, px_per_bin, counts.shape[1:]).reshape(-1))
    return thin_by_owner(counts, owner, len(centres), f, generator)


def _thin_seed(name: str, f: float) -> int:
    """A fixed seed per (section, depth): the fit is reproducible."""
    return int(zlib.crc32(f"{name}:{float(f):.6g}".encode()))


#: above this many spots in a section the prior is fitted per bin (e.g. Visium HD's 8-µm bins read as
#: "spots": each is already its own unit, and a per-spot loop over them would be slow)
MAX_SPOTS = 20000


def prior_unit(sections) -> str:
    """``"spot"`` when every section carries spots (:attr:`PairedSection.spots`, at most
    :data:`MAX_SPOTS` each), else ``"bin"``."""
    secs = list(sections)
    ok = [getattr(s, "spots", None) is not None and len(s.spots[0]) <= MAX_SPOTS for s in secs]
    return "spot" if secs and all(ok) else "bin"


def _spot_masks(spots, shape, ppb: int, exclude):
    """Per spot clear of the ``exclude`` boxes: its index, the pixel box ``(y0, y1, x0, x1)`` and
    disc mask over it, and the bins (rows, cols) whose centre lies in the disc."""
    centres, d = spots
    r = float(d) / 2.0
    H, W = shape
    out = []
    for i, (cy, cx) in enumerate(np.asarray(centres, float)):
        y0, y1 = max(0, int(np.floor(cy - r))), min(H, int(np.ceil(cy + r)) + 1)
        x0, x1 = max(0, int(np.floor(cx - r))), min(W, int(np.ceil(cx + r)) + 1)
        if y0 >= y1 or x0 >= x1 or any(y0 < b1 and b0 < y1 and x0 < c1 and c0 < x1 for b0, b1, c0, c1 in exclude):
            continue
        yy, xx = np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5
        disc = ((yy[:, None] - cy) ** 2 + (xx[None, :] - cx) ** 2) <= r * r
        if not disc.any():
            continue
        by = np.arange(y0 // ppb, -(-y1 // ppb))
        bx = np.arange(x0 // ppb, -(-x1 // ppb))
        inb = ((by[:, None] + 0.5) * ppb - cy) ** 2 + ((bx[None, :] + 0.5) * ppb - cx) ** 2 <= r * r
        if inb.any():
            rows, cols = np.nonzero(inb)
            bins = (by[rows], bx[cols])
        else:  # a disc smaller than a bin: the bin under its centre
            bins = (np.array([int(cy // ppb)]), np.array([int(cx // ppb)]))
        out.append((i, (y0, y1, x0, x1), disc, bins))
    return out


@torch.no_grad()
def spot_nuclear_fraction(
    image: np.ndarray,
    spots,
    px_per_bin: int,
    threshold: float,
    tau: float,
    sigma_px: float = 0.0,
    background_px: float = 0.0,
    exclude=(),
) -> tuple[np.ndarray, np.ndarray]:
    """Soft nuclear area fraction of ``image`` ``(H, W, C)`` over each spot's disc (``spots``: centres
    ``(n, 2)`` and diameter, output px). Returns the fractions and the indices of the spots used
    (those clear of the ``exclude`` boxes)."""
    m = _soft_mask(image, threshold, tau, sigma_px, background_px)
    rows = _spot_masks(spots, m.shape, px_per_bin, exclude)
    return _disc_means(m, rows), np.array([i for i, *_ in rows], int)


def _disc_means(m: np.ndarray, rows) -> np.ndarray:
    return np.array([float(m[b[0] : b[1], b[2] : b[3]][disc].mean()) for _, b, disc, _ in rows])


def _soft_mask(image, threshold, tau, sigma_px, background_px) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    return soft_nuclear_mask(x, threshold, tau, sigma_px, background_px)[0, 0].numpy()


def _spot_data(sections, threshold, tau, sigma_px, background_px, g=None, depths=()):
    """Like :func:`_bin_data`, per spot: the spots' mean scaled composition over the bins in their
    disc, their soft nuclear fraction over the disc, group ids, names and full-depth rows."""
    X, Y, groups, names, full = [], [], [], [], []
    for s in sections:
        m = _soft_mask(s.image, threshold, tau, sigma_px, background_px)
        rows = _spot_masks(s.spots, m.shape, s.px_per_bin, s.exclude)
        tot = s.counts.sum(axis=0)
        rows = [r for r in rows if (tot[r[3]] > 0).any()]
        if not rows:
            continue

        def read(comp, rows=rows):
            return np.stack([comp[:, by, bx].mean(axis=1) for *_, (by, bx) in rows])

        _append_rows(X, Y, groups, names, full, s, g, depths, read, _disc_means(m, rows))
    return X, Y, groups, names, full


def _unit_data(sections, threshold, tau, pool, sigma_px, background_px, g=None, depths=()):
    """``(unit, X, Y, groups, names, full)``: :func:`_spot_data` for spot sections, else :func:`_bin_data`."""
    unit = prior_unit(sections)
    if unit == "spot":
        return (unit, *_spot_data(sections, threshold, tau, sigma_px, background_px, g, depths))
    return (unit, *_bin_data(sections, threshold, tau, pool, sigma_px, background_px, g, depths))


@torch.no_grad()
def target_stats(
    sections, threshold: float, tau: float, pool: int = 64, sigma_px: float = 0.0, background_px: float = 0.0
) -> dict:
    """Mean and SD, over the training units the prior is fitted on (spots, or measured bins; outside
    excluded boxes), of the real nuclear fraction it predicts: the spread ``--lambda-prior`` asks
    the generator for. ``n_bins`` is the number of units, ``unit`` their kind."""
    unit, _, Y, _, _, _ = _unit_data(sections, threshold, tau, pool, sigma_px, background_px)
    if not Y or sum(len(y) for y in Y) < 10:
        raise GDTError(
            f"the prior's target: the training sections have fewer than 10 measured {unit}s outside the validation region"
        )
    y = np.concatenate(Y)
    return {"mean": float(y.mean()), "sd": float(y.std()), "n_bins": int(len(y)), "unit": unit}


def prior_depths(cfg) -> tuple[float, ...]:
    """The depth fractions the prior is also fitted at: with depth augmentation (``depth_aug`` > 0),
    three log-spaced over the range training thins windows to, ``depth_min ** (1/3, 2/3, 1)``
    (0.37, 0.14 and 0.05 by default); none otherwise."""
    if float(getattr(cfg, "depth_aug", 0.0) or 0.0) <= 0:
        return ()
    f = float(cfg.depth_min)
    if not 0.0 < f < 1.0:
        return ()
    return (float(f ** (1 / 3)), float(f ** (2 / 3)), f)


def needs_prior_fit(g) -> bool:
    """Whether generator ``g`` has a prior channel that has not been fitted yet."""
    return bool(getattr(g, "n_prior", 0)) and float(g.prior_fitted) == 0.0


@torch.no_grad()
def bin_nuclear_fraction(
    image: np.ndarray,
    px_per_bin: int,
    threshold: float,
    tau: float,
    pool: int = 64,
    sigma_px: float = 0.0,
    background_px: float = 0.0,
) -> np.ndarray:
    """Soft nuclear area fraction of ``image`` ``(H, W, C)`` averaged over a ``pool``-px window
    centred on each bin, ``(H // px_per_bin, W // px_per_bin)`` (windows are cut at the image edge)."""
    H, W = image.shape[:2]
    hb, wb = H // px_per_bin, W // px_per_bin
    m = torch.from_numpy(_soft_mask(image, threshold, tau, sigma_px, background_px))[None, None]
    m = m[..., : hb * px_per_bin, : wb * px_per_bin]
    pad = max(0, pool // 2 - px_per_bin // 2)
    ones = torch.ones_like(m)
    s = F.avg_pool2d(F.pad(m, (pad, pad, pad, pad)), pool, stride=px_per_bin)
    n = F.avg_pool2d(F.pad(ones, (pad, pad, pad, pad)), pool, stride=px_per_bin)
    return (s / n.clamp_min(1e-6))[0, 0, :hb, :wb].numpy()


def _excluded_bins(shape, px_per_bin: int, pool: int, boxes) -> np.ndarray:
    """Bins whose target window touches one of the excluded output-px boxes ``(y0, y1, x0, x1)``."""
    hb, wb = shape
    out = np.zeros((hb, wb), bool)
    c = np.arange(max(hb, wb)) * px_per_bin + px_per_bin // 2
    lo, hi = c - pool // 2, c + pool // 2
    for y0, y1, x0, x1 in boxes:
        ry = (lo[:hb] < y1) & (y0 < hi[:hb])
        rx = (lo[:wb] < x1) & (x0 < hi[:wb])
        out |= ry[:, None] & rx[None, :]
    return out


@torch.no_grad()
def fit_prior(
    g,
    sections,
    threshold: float,
    tau: float,
    pool: int = 64,
    sigma_px: float = 0.0,
    background_px: float = 0.0,
    alphas=None,
    depths=(),
) -> dict:
    """Fit ``g``'s prior on ``sections`` (:class:`~napari_gdt.training.sampling.PairedSection`),
    in place (``prior_w``, ``prior_b``, ``prior_fitted``). Returns a report: ``alpha``,
    ``n_bins`` per section, ``r_train`` (Pearson of the fit on its bins), ``cv_r`` (the prediction
    of each section by the fit on the others, Pearson, when there are two or more sections), ``unit``
    (``"spot"`` or ``"bin"``, :func:`prior_unit`; ``n_bins`` then counts spots).

    ``depths`` (fractions in (0, 1)): the fit also sees every unit with its section's counts thinned
    to each fraction (spot sections per spot, :func:`thin_spots`; others per bin,
    :func:`napari_gdt.training.losses.thin_window`; a fixed seed per section and fraction) and the
    same target, so that the read-out gives a shallower copy of the same tissue
    the same prior. The report then adds ``depths`` and ``depth_shift``: the mean change of the
    standardised prior from full depth to the shallowest fraction over the training units (0 is
    depth-blind). Scores (``r_train``, ``cv_r``) and the standardisation use the full-depth units.
    """
    from ..analysis.baselines import _ridge_fit, _ridge_solve

    if not getattr(g, "n_prior", 0):
        raise GDTError("this generator has no prior channel (gdt-v2 with prior=1)")
    if not threshold or threshold <= 0:
        raise GDTError("fitting the prior needs the nuclear threshold of the training images")
    depths = [float(f) for f in depths]
    if any(not 0.0 < f < 1.0 for f in depths):
        raise GDTError(f"fitting the prior: depth fractions must lie in (0, 1), got {depths}")
    unit, X, Y, groups, names, full = _unit_data(sections, threshold, tau, pool, sigma_px, background_px, g, depths)
    if not X or sum(len(y) for y, f in zip(Y, full) if f.all()) < 10:
        raise GDTError(
            f"fitting the prior: the training sections have fewer than 10 measured {unit}s outside the validation region"
        )
    Xa, ya, ga, fa = np.concatenate(X), np.concatenate(Y), np.concatenate(groups), np.concatenate(full)
    pos = np.concatenate([np.arange(len(y)) for y in Y])  # a unit's index within its section
    sec = ga.copy()
    mu, sd = Xa.mean(axis=0), Xa.std(axis=0)
    sd[sd == 0] = 1.0
    Z = (Xa - mu) / sd
    if len(np.unique(ga)) < 2:  # one section: its two halves (by unit order) stand in for sections
        ga = (pos >= int(fa.sum()) // 2).astype(int)
    al = np.asarray(alphas, float) if alphas is not None else np.logspace(-1, 5, 25) * max(1, Z.shape[1]) / 100.0
    fit = _ridge_fit(Z, ya, ga, al)
    w = np.asarray(fit["coef"])
    pred = Z @ w + fit["intercept"]
    pm, ps = float(pred[fa].mean()), float(pred[fa].std())
    if ps <= 0:
        raise GDTError("fitting the prior: the expression predicts no variation of the nuclear fraction")
    wg = w / sd / ps
    b = (fit["intercept"] - float(mu @ (w / sd)) - pm) / ps
    g.prior_w.zero_()
    g.prior_w[0].copy_(torch.from_numpy(wg.astype(np.float32)))
    g.prior_b.fill_(float(b))
    g.prior_fitted.fill_(1.0)
    cv = {}
    groups_u = np.unique(ga)
    if len(groups_u) >= 2:
        for k in groups_u:
            tr, te = ga != k, (ga == k) & fa
            m = ya[tr].mean()
            wk = _ridge_solve(Z[tr], ya[tr] - m, fit["alpha"])
            cv[names[int(k)] if len(names) > 1 else f"half {int(k)}"] = float(np.corrcoef(Z[te] @ wk + m, ya[te])[0, 1])
    rep = {
        "unit": unit,
        "alpha": fit["alpha"],
        "n_bins": {n: int(((sec == i) & fa).sum()) for i, n in enumerate(names)},
        "r_train": float(np.corrcoef(pred[fa], ya[fa])[0, 1]),
        "cv_r": cv,
        "target_mean": float(ya[fa].mean()),
        "target_sd": float(ya[fa].std()),
    }
    if depths:
        shallow = np.concatenate([np.full(len(y), f) for y, f in zip(Y, _copy_depths(full, depths))]) == min(depths)
        rep["depths"] = depths
        rep["depth_shift"] = float((pred[shallow].mean() - pred[fa].mean()) / ps)
    return rep


def _copy_depths(full, depths):
    """The depth fraction of each block of rows (1.0 at full depth), in the order :func:`_append_rows` wrote them."""
    out, i = [], 0
    while i < len(full):
        out.append(1.0)
        out.extend(depths)
        i += 1 + len(depths)
    return out[: len(full)]
