"""Losses: a small patch discriminator (hinge) plus reconstruction at low resolution.

Reconstruction is an L1 between average-pooled generated and real patches
(``pool`` output px, e.g. 8 px = about 11 µm for H&E at 1.4 µm/px) plus an L1
between per-channel patch means. It pins down where tissue is dense, dark or
empty without asking for the exact position of every nucleus (which spot
expression cannot determine); the discriminator supplies nuclear texture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

__all__ = [
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "d_hinge_loss",
    "g_hinge_loss",
    "batch_nuclear_mask",
    "granulometry",
    "granulometry_loss",
    "otsu_threshold",
    "haematoxylin_loss",
    "haematoxylin_od",
    "mask_boundary",
    "nuclear_fraction_loss",
    "orientation_loss",
    "structure_tensor_stats",
    "soft_nuclear_mask",
    "spectral_loss",
    "spectrum_bands",
    "texture_features",
    "texture_grams",
    "texture_loss",
    "gram_matrices",
    "r1_penalty",
    "reconstruction_loss",
    "thin_counts",
]


_POOL_CACHE: dict = {}


def bin_pool_matrix(n_bins: int, px_per_bin: int, offset: int, n_px: int, n_out: int, device=None, dtype=None) -> torch.Tensor:
    """(n_out, n_bins) weights that take per-bin values to ``adaptive_avg_pool`` cells of an image.

    The image covers px ``offset .. offset + n_px`` of a window of ``n_bins`` bins of ``px_per_bin``
    px; ``adaptive_avg_pool`` cell ``j`` averages image px ``floor(j n_px / n_out) ..
    ceil((j + 1) n_px / n_out)``. So ``A @ v`` equals upsampling ``v`` (nearest, ``px_per_bin``x),
    cropping to the image and pooling to ``n_out`` cells, without building the full-resolution map
    (which cost the discriminator's conditional path a tenth of a CPU training step).
    """
    key = (n_bins, px_per_bin, offset, n_px, n_out, str(device), dtype)
    a = _POOL_CACHE.get(key)
    if a is None:
        w = torch.zeros(n_out, n_bins, dtype=torch.float64)
        for j in range(n_out):
            lo, hi = (j * n_px) // n_out, -(-((j + 1) * n_px) // n_out)
            px = torch.arange(lo, hi) + offset
            w[j].index_add_(0, px // px_per_bin, torch.full((hi - lo,), 1.0 / (hi - lo), dtype=torch.float64))
        a = w.to(device=device, dtype=dtype or torch.float32)
        if len(_POOL_CACHE) > 256:
            _POOL_CACHE.clear()
        _POOL_CACHE[key] = a
    return a


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator with spectral norm (receptive field about 46 px).

    Conditional on expression: the per-bin embedding of the counts window
    (cropped to the generated area and upsampled) is concatenated to the
    features at 1/8 resolution, so the discriminator judges whether the tissue
    fits the expression, not only whether it looks real.
    """

    def __init__(self, in_ch: int, n_genes: int = 0, ch: int = 32, cond_ch: int = 16):
        super().__init__()
        self.config = dict(in_ch=int(in_ch), n_genes=int(n_genes), ch=int(ch), cond_ch=int(cond_ch))
        sn = spectral_norm
        self.body = nn.Sequential(
            sn(nn.Conv2d(in_ch, ch, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(ch, ch * 2, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(ch * 2, ch * 4, 4, 2, 1)),
            nn.LeakyReLU(0.2),
        )
        self.cond = sn(nn.Conv2d(n_genes, cond_ch, 1)) if n_genes else None
        self.head = nn.Sequential(
            sn(nn.Conv2d(ch * 4 + (cond_ch if n_genes else 0), ch * 4, 3, 1, 1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(ch * 4, 1, 1))
        )

    def forward(self, img: torch.Tensor, cond: torch.Tensor | None = None, offset: int = 0, px_per_bin: int = 1) -> torch.Tensor:
        """``img`` (B, C, H, W) in [0, 1]; ``cond`` normalised counts (B, G, n, n) of the window
        whose output starts ``offset`` px into the window's ``n * px_per_bin`` px."""
        f = self.body(img * 2.0 - 1.0)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this discriminator is conditional: pass the counts window")
            c = self.cond(cond)
            ay = bin_pool_matrix(c.shape[-2], px_per_bin, offset, img.shape[-2], f.shape[-2], c.device, c.dtype)
            ax = bin_pool_matrix(c.shape[-1], px_per_bin, offset, img.shape[-1], f.shape[-1], c.device, c.dtype)
            c = torch.einsum("bcyx,jy,kx->bcjk", c, ay, ax)
            f = torch.cat([f, c], dim=1)
        return self.head(f)


class MultiScaleDiscriminator(nn.Module):
    """``scales`` conditional :class:`PatchDiscriminator` s, on the image average-pooled by 1, 2, 4, ...

    The coarser ones see more tissue per logit (receptive field about 46 px x 2**i): the
    arrangement of nests and fibres, not only nuclear texture. Returns a list of logit maps.
    """

    def __init__(self, in_ch: int, n_genes: int = 0, scales: int = 2, ch: int = 32, cond_ch: int = 16):
        super().__init__()
        self.config = dict(in_ch=int(in_ch), n_genes=int(n_genes), scales=int(scales), ch=int(ch), cond_ch=int(cond_ch))
        self.ds = nn.ModuleList(PatchDiscriminator(in_ch, n_genes, ch, cond_ch) for _ in range(scales))

    def forward(self, img, cond=None, offset: int = 0, px_per_bin: int = 1) -> list:
        out = []
        for i, d in enumerate(self.ds):
            f = 2**i
            x = F.avg_pool2d(img, f) if f > 1 else img
            out.append(d(x, cond, offset // f, max(px_per_bin // f, 1)))
        return out


def _each(x):
    return x if isinstance(x, list | tuple) else [x]


def d_hinge_loss(real_logits, fake_logits) -> torch.Tensor:
    """Hinge loss of the discriminator: ``mean(relu(1 - real)) + mean(relu(1 + fake))`` (summed over scales)."""
    return sum(F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(_each(real_logits), _each(fake_logits)))


def g_hinge_loss(fake_logits) -> torch.Tensor:
    """Hinge loss of the generator: ``-mean(fake logits)`` (summed over scales)."""
    return sum(-f.mean() for f in _each(fake_logits))


def r1_penalty(real_logits, real: torch.Tensor) -> torch.Tensor:
    """R1: mean over the batch of the squared gradient norm of each image's real score w.r.t. the image.

    An image's score is the mean of its patch logits (summed over scales), so the penalty does not
    grow with the number of patches a logit map holds.
    """
    tot = sum(r.mean(dim=tuple(range(1, r.dim()))).sum() for r in _each(real_logits))
    (g,) = torch.autograd.grad(tot, real, create_graph=True)
    return g.pow(2).sum(dim=(1, 2, 3)).mean()


def thin_counts(counts: torch.Tensor, p: float = 0.5, f_min: float = 0.05, generator=None) -> torch.Tensor:
    """Depth augmentation: each window, with probability ``p``, sequenced ``f`` times as deep.

    ``f`` is log-uniform in ``[f_min, 1]``. Integer counts (binned transcripts) are thinned
    binomially, exactly. Fractional counts (spot canvases spread over bins) are thinned as
    Poisson(``f * counts``) and then averaged over 5 x 5 bins: thinning a spot's counts and
    spreading them gives a smooth field, not independent noise per bin. The result is
    rescaled by ``1 / f`` (architectures that read depth would otherwise only see shallower data).
    """
    out = counts.clone()
    b = counts.shape[0]
    pick = torch.rand(b, generator=generator) < p
    for i in torch.nonzero(pick).flatten().tolist():
        f = float(torch.exp(torch.empty(1).uniform_(math.log(f_min), 0.0, generator=generator)))
        out[i] = thin_window(counts[i], f, generator)
    return out


def thin_counts_spots(
    counts: torch.Tensor, owners: torch.Tensor, p: float = 0.5, f_min: float = 0.05, generator=None
) -> torch.Tensor:
    """Depth augmentation of spot canvases, as sequencing thins them: per spot, not per bin.

    ``owners`` ``(B, h, w)``: the spot each bin of each window belongs to (its nearest spot; -1 for
    bins outside the canvas, which form one group). Each window is thinned with probability ``p``
    to a depth ``f`` log-uniform in ``[f_min, 1]`` (the same draws as :func:`thin_counts`): the counts
    of each spot's bins in the window are summed per gene, thinned binomially, and every bin of the
    spot scaled by the spot's thinned-to-full ratio, then rescaled by ``1 / f``.
    """
    out = counts.clone()
    b = counts.shape[0]
    pick = torch.rand(b, generator=generator) < p
    for i in torch.nonzero(pick).flatten().tolist():
        f = float(torch.exp(torch.empty(1).uniform_(math.log(f_min), 0.0, generator=generator)))
        _, inv = torch.unique(owners[i].reshape(-1), return_inverse=True)
        out[i] = thin_by_owner(counts[i], inv, int(inv.max()) + 1, f, generator)
    return out


def thin_by_owner(counts: torch.Tensor, owner: torch.Tensor, n_groups: int, f: float, generator=None) -> torch.Tensor:
    """Counts ``(G, h, w)`` whose bins belong to groups (spots; ``owner``: ``(h * w,)`` ids in
    ``[0, n_groups)``) sequenced ``f`` times as deep, rescaled by ``1 / f``: each group's counts per
    gene are thinned binomially and every bin of the group scaled by the group's thinned-to-full ratio."""
    G = counts.shape[0]
    flat = counts.clamp_min(0).reshape(G, -1)
    n = torch.zeros(G, n_groups, dtype=flat.dtype, device=flat.device).index_add_(1, owner, flat)
    kept = torch.binomial(n.round(), torch.full_like(n, f), generator=generator) / f
    ratio = torch.where(n > 0, kept / n.clamp_min(1e-12), torch.zeros_like(n))
    return (flat * ratio[:, owner]).reshape(counts.shape)


def thin_window(counts: torch.Tensor, f: float, generator=None) -> torch.Tensor:
    """One window's counts ``(G, h, w)`` sequenced ``f`` times as deep, rescaled by ``1 / f`` (see
    :func:`thin_counts`)."""
    c = counts.clamp_min(0)
    if torch.equal(c, c.round()):
        t = torch.binomial(c, torch.full_like(c, f), generator=generator)
    else:
        t = torch.poisson(c * f, generator=generator)
        t = F.avg_pool2d(t[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    return t / f


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """L1 of ``pool``-px average-pooled images plus L1 of per-channel means."""
    lo = F.l1_loss(F.avg_pool2d(fake, pool), F.avg_pool2d(real, pool))
    mean = F.l1_loss(fake.mean(dim=(2, 3)), real.mean(dim=(2, 3)))
    return lo + mean


# skimage.color.hed_from_rgb[:, 0]: the haematoxylin column of the Ruifrok & Johnston deconvolution
_HEM = (1.87798274, -0.06590806, -0.60190736)


def haematoxylin_od(img: torch.Tensor) -> torch.Tensor:
    """Haematoxylin density of RGB images ``(B, 3, H, W)`` in [0, 1], as :func:`skimage.color.rgb2hed` ``[..., 0]``."""
    od = torch.log(img.clamp_min(1e-6)) / math.log(1e-6)
    w = torch.tensor(_HEM, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (od * w).sum(dim=1, keepdim=True).clamp_min(0.0)


def haematoxylin_loss(fake: torch.Tensor, real: torch.Tensor, pool: int = 16) -> torch.Tensor:
    """L1 between ``pool``-px average-pooled haematoxylin densities (how much nuclear stain, where)."""
    return F.l1_loss(F.avg_pool2d(haematoxylin_od(fake), pool), F.avg_pool2d(haematoxylin_od(real), pool))


def dapi_nuclear_channel(img: torch.Tensor, sigma_px: float = 0.0, background_px: float = 0.0) -> torch.Tensor:
    """The DAPI nuclear channel ``(B, 1, H, W)`` as the segmenter of
    :mod:`napari_gdt.analysis.morphometrics` computes it: the intensity, Gaussian-smoothed
    (``sigma_px``), minus its smooth background (a grey opening of side ``2r + 1``,
    ``r = background_px``, then a box of the same side), clipped at 0. Separable min/max pools,
    replicated borders; differentiable almost everywhere."""
    x = img[:, :1]
    if sigma_px > 0.3:
        x = _smooth(x, float(sigma_px))
    if background_px > 0:
        size = 2 * max(1, round(float(background_px))) + 1
        size = min(size, max(3, (min(x.shape[-2:]) // 2) * 2 - 1))
        bg = _square(_square(-_square(-x, size), size), size, F.avg_pool2d)  # opening, then a box
        x = (x - bg).clamp_min(0.0)
    return x


def _square(x: torch.Tensor, size: int, pool=F.max_pool2d) -> torch.Tensor:
    """``pool`` (max or mean) over a ``size`` x ``size`` square: separable, replicated borders, same size."""
    r = size // 2
    x = pool(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, size), stride=1)
    return pool(F.pad(x, (0, 0, r, r), mode="replicate"), (size, 1), stride=1)


def soft_nuclear_mask(
    img: torch.Tensor, threshold: float, tau: float, sigma_px: float = 0.0, background_px: float = 0.0
) -> torch.Tensor:
    """Soft nuclear mask ``(B, 1, H, W)``: ``sigmoid((channel - threshold) / tau)``.

    The channel is the one the segmenter of :mod:`napari_gdt.analysis.morphometrics` thresholds:
    the haematoxylin density of RGB H&E images (``sigma_px`` and ``background_px`` unused), or for
    one-channel (DAPI) images :func:`dapi_nuclear_channel`. The segmenter calls a pixel nuclear
    where that channel is above a threshold (Otsu); this is the same test made differentiable, so
    its pooled mean is the local nuclear area fraction that ``evaluate`` measures.
    """
    ch = haematoxylin_od(img) if img.shape[1] == 3 else dapi_nuclear_channel(img, sigma_px, background_px)
    return torch.sigmoid((ch - float(threshold)) / float(tau))


def nuclear_fraction_loss(
    fake: torch.Tensor,
    real: torch.Tensor,
    threshold: float,
    tau: float,
    pools=(32, 64),
    lambda_var: float = 0.0,
    perimeter: float = 0.0,
    sigma_px: float = 0.0,
    background_px: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local nuclear area fraction, matched where it is and in how much it varies.

    For each ``pool`` (output px; 64 px is about one her2st spot), the soft nuclear mask
    (:func:`soft_nuclear_mask`) is average-pooled. Returns ``(l1, var)``: the L1 between fake and
    real pooled fractions (where tissue is cellular), and ``|SD(fake) - SD(real)|`` of the pooled
    fractions over the whole batch, times ``lambda_var`` (an L1 alone pulls every cell towards the
    conditional median and flattens the density contrast between nests and stroma; this term
    asks for the real contrast). Pools larger than the patch are skipped. ``perimeter`` > 0 adds,
    with that weight, the L1 between pooled boundary densities (:func:`mask_boundary`): the area
    fraction alone can be met with fewer, larger nuclei; with the boundary it cannot.
    ``sigma_px`` / ``background_px``: the DAPI channel's smoothing and background radius
    (:func:`soft_nuclear_mask`).
    """
    mf = soft_nuclear_mask(fake, threshold, tau, sigma_px, background_px)
    mr = soft_nuclear_mask(real, threshold, tau, sigma_px, background_px)
    if perimeter > 0:
        bf, br = mask_boundary(mf), mask_boundary(mr)
    l1 = fake.new_zeros(())
    var = fake.new_zeros(())
    for p in pools:
        if p > min(mf.shape[-2:]):
            continue
        pf, pr = F.avg_pool2d(mf, p), F.avg_pool2d(mr, p)
        l1 = l1 + F.l1_loss(pf, pr)
        if perimeter > 0:
            l1 = l1 + perimeter * F.l1_loss(F.avg_pool2d(bf, p), F.avg_pool2d(br, p))
        if lambda_var > 0 and pf.numel() > 1:
            var = var + (pf.std() - pr.std()).abs()
    return l1, var * lambda_var


def prior_fraction_loss(
    fake: torch.Tensor,
    target: torch.Tensor,
    measured: torch.Tensor,
    threshold: float,
    tau: float,
    pools=(32, 64),
    sigma_px: float = 0.0,
    background_px: float = 0.0,
) -> torch.Tensor:
    """L1 between the generated local nuclear area fraction and a target map, where it is measured.

    ``target`` and ``measured`` are ``(B, 1, H, W)`` maps on ``fake``'s pixels: the fraction asked
    for (the composition prior, stretched to the real spread) and 1 where the expression is
    measured. For each ``pool``, the soft nuclear mask (:func:`soft_nuclear_mask`) and the target
    are average-pooled; only cells wholly measured count (glass and unmeasured tissue are left to
    the other losses). Pools larger than the patch are skipped. Unlike
    :func:`nuclear_fraction_loss`, the target is a function of the expression alone, the same on
    every section, so what the generator learns from it carries to sections it has not seen.
    """
    mf = soft_nuclear_mask(fake, threshold, tau, sigma_px, background_px)
    total = fake.new_zeros(())
    for p in pools:
        if p > min(mf.shape[-2:]):
            continue
        pf, pt = F.avg_pool2d(mf, p), F.avg_pool2d(target, p)
        sel = (F.avg_pool2d(measured, p) > 0.999).to(pf.dtype)
        total = total + ((pf - pt).abs() * sel).sum() / sel.sum().clamp_min(1.0)
    return total


def seed_consistency_loss(
    fake_a: torch.Tensor, fake_b: torch.Tensor, threshold: float, tau: float, pools=(64, 128), **mask
) -> torch.Tensor:
    """L1 between the pooled local nuclear area fractions of two renders of the same expression
    with different noise and latents (two seeds); ``mask``: ``sigma_px``, ``background_px`` (DAPI).

    A render is a sample: how much of a spot is nuclear should follow the expression, not the
    seed, while the shapes inside may differ. Seeds that disagree at spot scale cap how well any
    one render can follow the real tissue (the agreement between two seeds bounds it), so this
    asks the latent noise to vary texture, not cellularity. It is :func:`nuclear_fraction_loss`'s
    L1 with the second render in place of the real image: pools larger than the patch are skipped,
    and both renders get the gradient.
    """
    return nuclear_fraction_loss(fake_a, fake_b, threshold, tau, pools, **mask)[0]


def mask_boundary(m: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Gradient magnitude of a soft mask (central differences; borders replicated, same size).

    Its mean over a window is the nuclear boundary length per pixel. With the area fraction ``A``
    and boundary density ``P`` of round nuclei, the radius is ``2A / P`` and the count per pixel
    ``P^2 / (4 pi A)``: matching both pins down how many nuclei and how large, not only how much
    of the window is nuclear.
    """
    dx, dy = _gradients(m)
    return torch.sqrt(dx * dx + dy * dy + eps * eps)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences along x and y of ``(B, C, H, W)``, borders replicated (same size)."""
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]) * 0.5, (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1]) * 0.5


def _gauss1d(sigma: float, device, dtype) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def intensity_distribution_loss(fake: torch.Tensor, real: torch.Tensor, pools=(1, 8)) -> torch.Tensor:
    """Wasserstein-1 distance between the intensity distributions of each generated window and its
    real window, per channel, at each ``pool`` (output px of average pooling; 1 = the pixels).

    Paired windows show the same tissue, so their intensity histograms should agree: how bright the
    nuclei are, how dark the gaps, how much diffuse glow. The segmenter's threshold (Otsu, per image)
    and the tissue mask both follow that histogram, so a generator whose nuclei are too bright is
    counted with too high a threshold, however well placed its nuclei are. One-dimensional W1 is the
    mean absolute difference of the sorted values (differentiable almost everywhere).
    """
    out = fake.new_zeros(())
    for p in pools:
        p = int(p)
        if p > min(fake.shape[-2:]):
            continue
        f = F.avg_pool2d(fake, p) if p > 1 else fake
        r = F.avg_pool2d(real, p) if p > 1 else real
        fs = torch.sort(f.flatten(2), dim=-1).values
        rs = torch.sort(r.flatten(2), dim=-1).values
        out = out + (fs - rs).abs().mean()
    return out


def spectrum_bands(img: torch.Tensor, n_bands: int = 8) -> torch.Tensor:
    """Log power of each window's standardised luminance in ``n_bands`` radial frequency bands, ``(B, n_bands)``.

    Luminance (``0.299 R + 0.587 G + 0.114 B``; the channel itself for one channel) is standardised per
    window to mean 0 and SD 1 (stain and brightness removed, as the two-sample test's ``lum`` variant),
    tapered with a Hann window (no edge leakage), and its power spectrum averaged over octave-spaced
    rings from one cycle per window to the Nyquist frequency (0.5 cycles per px). The natural log of
    each band's mean power is returned.
    """
    x = img.float()
    lum = x.mean(dim=1) if x.shape[1] != 3 else 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    h, w = lum.shape[-2:]
    lum = lum - lum.mean(dim=(-2, -1), keepdim=True)
    lum = lum / (lum.std(dim=(-2, -1), keepdim=True) + 1e-3)
    hann = [torch.hann_window(n, periodic=False, device=x.device) for n in (h, w)]
    win = torch.outer(*hann)
    power = torch.fft.rfft2(lum * win).abs().square()  # (B, h, w // 2 + 1)
    fy = torch.fft.fftfreq(h, device=x.device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, device=x.device)[None, :]
    rad = torch.sqrt(fy * fy + fx * fx)
    lo = 1.0 / min(h, w)
    edges = lo * (0.5 / lo) ** (torch.arange(n_bands + 1, device=x.device, dtype=torch.float32) / n_bands)
    edges[-1] = 0.5 + 1e-6  # the last band holds the Nyquist frequency
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = ((rad >= a) & (rad < b)).to(power.dtype)
        out.append((power * m).sum(dim=(-2, -1)) / m.sum().clamp_min(1.0))
    return torch.log(torch.stack(out, dim=1) + 1e-8)


def spectral_loss(fake: torch.Tensor, real: torch.Tensor | None = None, n_bands: int = 8, target=None) -> torch.Tensor:
    """Squared difference between the batch-mean log power spectrum (:func:`spectrum_bands`) of the
    generated windows and the real one, averaged over the bands.

    A texture statistic the discriminator may miss: how much of the picture's contrast lies at each
    scale, from whole nests (one cycle per window) to pixel grain. Generated H&E had too little
    large-scale contrast and too much pixel grain (a tell for the two-sample test). Matched over the
    batch, not per window: the texture should be like the real one's, not the same picture; phase
    (where things lie) does not enter. ``target`` ``(n_bands,)``, e.g. a running mean of the real
    batches' spectra, replaces ``real``: a batch of four windows estimates a spectrum with an error
    as large as the generator's (real against real about 0.4 in L1), so a squared loss on a steady
    target gives the generator an unbiased direction where an L1 between two noisy batches does not.
    """
    if target is None:
        if real is None:
            raise ValueError("spectral_loss needs real windows or a target spectrum")
        target = spectrum_bands(real, n_bands).mean(dim=0)
    return (spectrum_bands(fake, n_bands).mean(dim=0) - target.to(fake.device)).square().mean()


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with replicated borders (a loss, not the generator)."""
    k = _gauss1d(sigma, x.device, x.dtype)
    r = (k.numel() - 1) // 2
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def structure_tensor_stats(img: torch.Tensor, sigma: float, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge energy and orientation coherence ``(B, 1, H, W)`` of the luminance at integration scale ``sigma`` px.

    The structure tensor ``J`` (products of central-difference gradients, Gaussian-averaged over
    ``sigma``) gives the energy ``tr J`` (how much edge there is) and the coherence
    ``sqrt((Jxx - Jyy)^2 + 4 Jxy^2) / tr J`` in [0, 1]: near 1 where the edges share one direction
    (fibres, streaming stroma), near 0 where they point every way (speckle, round nuclei). Both are
    invariant to rotation, so a loss on them asks for fibres without asking for their direction.
    """
    if img.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
        y = (img * w).sum(dim=1, keepdim=True)
    else:
        y = img[:, :1]
    gx, gy = _gradients(y)
    j = _smooth(torch.cat([gx * gx, gy * gy, gx * gy], dim=1), sigma)
    jxx, jyy, jxy = j[:, :1], j[:, 1:2], j[:, 2:]
    tr = jxx + jyy
    coh = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2 + eps * eps) / (tr + eps)
    return tr, coh


def orientation_loss(fake: torch.Tensor, real: torch.Tensor, sigmas=(2.0, 6.0), pool: int = 64) -> torch.Tensor:
    """L1 between ``pool``-px averages of the structure-tensor coherence and log edge energy
    (:func:`structure_tensor_stats`) at each integration scale: where the real tissue is fibrous
    (coherent edges over ``sigma``), so must the generated one be, in any direction."""
    p = min(pool, *fake.shape[-2:])
    out = fake.new_zeros(())
    for s in sigmas:
        ef, cf = structure_tensor_stats(fake, s)
        er, cr = structure_tensor_stats(real, s)
        out = out + F.l1_loss(F.avg_pool2d(cf, p), F.avg_pool2d(cr, p))
        out = out + 0.1 * F.l1_loss(F.avg_pool2d(torch.log(ef + 1e-4), p), F.avg_pool2d(torch.log(er + 1e-4), p))
    return out


#: widths of the fixed random network of :func:`texture_features` (one 3x3 convolution per stage, a 2x2
#: average pool before each stage after the first): receptive fields of 3, 8, 18, 38 and 78 px
TEXTURE_WIDTHS = (24, 48, 64, 64, 64)
_TEX_FILTERS: dict = {}


def _texture_filters(widths, device, dtype, seed: int = 20261202) -> list[torch.Tensor]:
    """The random filters of :func:`texture_features`: fixed by ``seed`` (the same in every run and on every
    machine, drawn on the CPU), never trained, never saved; He-scaled so that each stage keeps the scale."""
    key = (tuple(widths), str(device), dtype, seed)
    if key not in _TEX_FILTERS:
        g = torch.Generator().manual_seed(seed)
        ws, c = [], 1
        for w in widths:
            k = torch.randn(w, c, 3, 3, generator=g) * math.sqrt(2.0 / (c * 9))
            ws.append((k - k.mean(dim=(1, 2, 3), keepdim=True)).to(device=device, dtype=dtype))
            c = w
        _TEX_FILTERS[key] = ws
    return _TEX_FILTERS[key]


def texture_features(img: torch.Tensor, widths=TEXTURE_WIDTHS) -> list[torch.Tensor]:
    """Feature maps of each window's standardised luminance under a fixed random convolutional network.

    Luminance as :func:`spectrum_bands` (stain and brightness removed, as the two-sample test's ``lum``
    variant). Each stage is a 3x3 convolution without padding (no border effects) and a ReLU, with a
    2x2 average pool before every stage after the first, so that stage ``k`` sees about ``5 * 2**k`` px:
    from pixel grain to a nest. Zero-mean filters: a stage responds to shape, not to the local level.
    Networks with random weights are known to give usable texture statistics (textures have been
    synthesised from the Gram matrices of random filters), and need nothing downloaded. Computed in
    float32 even under mixed precision (the Gram matrices' differences are small against their size).
    Stages whose map would be smaller than 1 px are left out (none at all below 3 px).
    """
    with torch.autocast(device_type=img.device.type, enabled=False):
        x = img.float()
        lum = x.mean(dim=1) if x.shape[1] != 3 else 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
        lum = lum - lum.mean(dim=(-2, -1), keepdim=True)
        h = (lum / (lum.std(dim=(-2, -1), keepdim=True) + 1e-3))[:, None]
        feats = []
        if min(h.shape[-2:]) < 3:
            return feats
        for i, k in enumerate(_texture_filters(widths, x.device, x.dtype)):
            if i > 0:
                if min(h.shape[-2:]) < 6:
                    break
                h = F.avg_pool2d(h, 2)
            h = F.relu(F.conv2d(h, k))
            feats.append(h)
    return feats


def gram_matrices(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """``(B, C, C)`` second moments of each feature map over its pixels (translation-invariant: where
    things lie does not enter, only which shapes occur together and how strongly)."""
    out = []
    for f in feats:
        b, c = f.shape[:2]
        v = f.float().reshape(b, c, -1)
        with torch.autocast(device_type=f.device.type, enabled=False):
            out.append(v @ v.transpose(1, 2) / v.shape[-1])
    return out


def texture_grams(img: torch.Tensor, widths=TEXTURE_WIDTHS) -> list[torch.Tensor]:
    """The batch mean of the windows' Gram matrices, one ``(C, C)`` per stage of :func:`texture_features`."""
    return [g.mean(dim=0) for g in gram_matrices(texture_features(img, widths))]


def texture_loss(fake: torch.Tensor, real: torch.Tensor | None = None, widths=TEXTURE_WIDTHS, target=None) -> torch.Tensor:
    """Relative squared distance between the batch-mean Gram matrices (:func:`texture_grams`) of the
    generated windows and the real ones, averaged over the network's stages.

    The texture statistic behind classic texture synthesis: which local shapes occur and which occur
    together, at every scale from pixel grain to a nest (round dark blobs or elongated spindles,
    rims around lumens, fibres), with where they lie left out. The power spectrum
    (:func:`spectral_loss`) says only how much contrast each scale has; two pictures with the same
    spectrum can be made of different shapes. Matched over the batch, not per window (a window's own
    Gram matrices mostly say what that window happens to hold: two real windows of one section differ
    by more than a version-3 render differs from its own window). ``target``, a list of ``(C, C)``
    (e.g. a running mean of the real batches' Gram matrices), replaces ``real``. Each stage's distance
    is ``|G_fake - G_real|^2 / |G_real|^2``, so that every stage counts alike; 0 = the same statistics.
    """
    if target is None:
        if real is None:
            raise ValueError("texture_loss needs real windows or target Gram matrices")
        target = texture_grams(real.detach(), widths)
    gf = texture_grams(fake, widths)
    if not gf:
        raise ValueError(f"texture_loss: windows of {tuple(fake.shape[-2:])} px are too small (at least 3 px)")
    terms = []
    for a, b in zip(gf, target):
        b = b.to(a.device, a.dtype)
        terms.append((a - b).square().sum() / (b.square().sum() + 1e-8))
    return torch.stack(terms).mean()


#: side (output px) of the square openings of :func:`granulometry`: her2st nuclei are 3-6 px across at
#: 1.47 µm/px; merged clumps and nests of dark blobs are wider
GRANULOMETRY_SIZES = (2, 3, 4, 6, 8, 12)


def _valid_max(x: torch.Tensor, size: int) -> torch.Tensor:
    """Max over ``size`` x ``size`` squares, valid (no padding), as two 1-D pools: the same values as one
    square pool at a fraction of its cost."""
    return F.max_pool2d(F.max_pool2d(x, (1, size), stride=1), (size, 1), stride=1)


def granulometry(mask: torch.Tensor, sizes=GRANULOMETRY_SIZES) -> torch.Tensor:
    """Pattern spectrum of soft masks ``(B, 1, H, W)``: ``(B, 1 + len(sizes))``, the mean of the mask and of
    its grey openings by ``s`` x ``s`` squares (an erosion then a dilation: min and max pools, valid, so
    no border is made up). What survives an opening of side ``s`` lies in structures at least ``s`` px
    wide, so the columns fall from the area fraction towards the share of the mask in large blobs:
    the size distribution of nuclei, and of clumps of them, without labelling any. Differentiable
    almost everywhere (through the pools' arg-min / arg-max)."""
    m = max(int(s) for s in sizes)
    if 2 * (m - 1) >= min(mask.shape[-2:]):
        raise ValueError(f"granulometry: windows of {tuple(mask.shape[-2:])} px are too small for an opening of {m} px")

    def centre(x, c):  # every column over the same pixels: those the widest opening leaves
        return x[..., c : x.shape[-2] - c, c : x.shape[-1] - c] if c > 0 else x

    out = [centre(mask, m - 1).mean(dim=(1, 2, 3))]
    for s in sizes:
        opened = _valid_max(-_valid_max(-mask, int(s)), int(s))
        out.append(centre(opened, m - int(s)).mean(dim=(1, 2, 3)))
    return torch.stack(out, dim=1)


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of a 1-D tensor (no gradient): the cut of a ``bins``-bin histogram that maximises
    the between-class variance, as the nuclear segmenter sets it on each image's tissue."""
    v = values.detach().float().flatten()
    lo, hi = v.min(), v.max()
    if not torch.isfinite(hi - lo) or float(hi - lo) <= 0:
        return lo
    h = torch.histc(v, bins=bins, min=float(lo), max=float(hi))
    centres = lo + (torch.arange(bins, device=v.device, dtype=v.dtype) + 0.5) * (hi - lo) / bins
    w0 = torch.cumsum(h, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(h * centres, 0)
    mu0 = m0 / w0.clamp_min(1e-12)
    mu1 = (m0[-1] - m0) / w1.clamp_min(1e-12)
    between = w0 * w1 * (mu0 - mu1).square()
    i = int(torch.argmax(between[:-1]))
    return (centres[i] + centres[i + 1]) / 2


def batch_nuclear_mask(img: torch.Tensor, background_grey: float = 0.82) -> torch.Tensor:
    """Soft nuclear mask of RGB H&E windows ``(B, 3, H, W)`` in [0, 1] at the batch's own Otsu threshold of the
    haematoxylin density over tissue (mean RGB below ``background_grey``), softness a tenth of it: the
    threshold the segmenter of :mod:`napari_gdt.analysis.morphometrics` would set on these pixels, so the
    mask moves with the picture's contrast as the measured nuclei do."""
    hem = haematoxylin_od(img)
    tissue = img.detach().mean(dim=1, keepdim=True) < background_grey
    vals = hem.detach()[tissue] if bool(tissue.any()) else hem.detach().flatten()
    thr = float(otsu_threshold(vals))
    return torch.sigmoid((hem - thr) / max(0.1 * thr, 1e-6))


def granulometry_loss(fake: torch.Tensor, target: torch.Tensor, sizes=GRANULOMETRY_SIZES, eps: float = 1e-3) -> torch.Tensor:
    """Squared log ratio between the generated batch-mean pattern spectrum (:func:`granulometry` of
    :func:`batch_nuclear_mask`) and ``target`` (e.g. a running mean of the real batches'), averaged over the
    columns.

    Every fine-tune of version 3 drew its nuclei larger within a few hundred steps (merged dark clumps that
    the segmenter counts as large nuclei), while the pooled losses only see how much stain lies where. This
    sees how wide the stained structures are (a clump survives the wider openings that separate nuclei do
    not), at the threshold the segmenter would set on the batch: a flatter picture moves that threshold
    and with it the measured nuclei. Matched over the batch, as the spectral and texture losses are.
    """
    if fake.shape[1] != 3:
        raise ValueError("granulometry_loss: RGB H&E windows only (the haematoxylin mask)")
    g = granulometry(batch_nuclear_mask(fake), sizes).mean(dim=0)
    t = target.to(g.device, g.dtype)
    return (torch.log(g + eps) - torch.log(t + eps)).square().mean()
