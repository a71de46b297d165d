"""The fidelity yardstick: what a pathologist sees in generated tissue, measured against the real tissue.

Every metric compares a generated image with the real image **on the same output-pixel grid**
(see :func:`napari_gdt.analysis.quality.real_on_model_grid`) and is computed by the same code for
both, so that a figure of 1 (ratios), 1 (IoU) or 0 (distances) means "like the real tissue".
Pure numpy / scipy / scikit-image; no Qt, no napari, no torch (the two-sample test is in
:mod:`napari_gdt.analysis.c2st`, the spatial baselines in :mod:`napari_gdt.analysis.baselines`).

Metrics (all lengths in µm; see docs/evaluation.md):

- ``tissue_iou``: intersection over union of the tissue masks (tissue vs glass) of the real and the
  generated image, each segmented by :func:`segment_tissue` (the same method for both).
- ``density_cv_ratio_{50,100,200}um``: coefficient of variation of nuclei density over square
  windows of that edge that are tissue in *both* images, generated over real. Nests and stroma give
  a high CV, uniform speckle a low one.
- ``w1_iqr_{area,eccentricity,solidity,nn_distance}``: Wasserstein-1 distance between the real and
  generated per-nucleus distributions (nuclei whose centroid is tissue in both images), divided by
  the real distribution's interquartile range (0 = same distribution; 1 = shifted by one IQR).
- ``lattice_ratio`` / ``lattice_ratio_tile``: excess luminance power at the bin period (and its
  harmonics) / the tile period (and its first harmonics) over neighbouring frequencies, inside
  tissue, generated over real (1 = no more lattice than the real tissue has).
- ``streak_ratio``: excess power on the horizontal and vertical frequency axes (straight horizontal
  or vertical streaks) over the neighbouring lines, generated over real.
- ``periodicity_ratio``: the strongest spectral peaks at periods of 24-256 px in any direction (a
  regular weave, a grid of blobs at a latent stride) over the local spectral background, generated
  over real. Tissue has no such peaks; ``lattice_ratio`` only looks at the bin and tile periods.
- ``spectrum_distance``: how the picture's contrast is shared among scales, from whole nests to
  pixel grain: the mean over octave bands (256-2 px periods) of |log10 power| generated minus real,
  of each 256 px tissue patch's standardised luminance (0 = the same texture spectrum). Uniform
  speckle scores high: too little power at large periods, too much at the pixel.

:func:`fidelity_report` computes them all for one pair of images; :func:`evaluate_model` renders a
model over a canvas for several seeds (optionally with edits) and reports the old morphometric keys
of :func:`napari_gdt.analysis.quality.evaluate`, these metrics, the baselines and the two-sample
test, as mean ± SD over seeds, with the time each metric took.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
from scipy import ndimage as ndi

from ..errors import GDTError

__all__ = [
    "FIDELITY_KEYS",
    "density_cv",
    "density_cv_ratio",
    "depth_normalise",
    "evaluate_model",
    "fidelity_report",
    "lattice_excess",
    "luminance",
    "nucleus_table",
    "periodicity_excess",
    "segment_tissue",
    "spectrum_profile",
    "tissue_iou",
    "w1_iqr",
]

WINDOWS_UM = (50, 100, 200)
NUCLEUS_FEATURES = ("area", "eccentricity", "solidity", "nn_distance")

#: The scalar keys :func:`fidelity_report` adds (generated figures; ``None`` when not measurable).
FIDELITY_KEYS = (
    ("tissue_iou",)
    + tuple(f"density_cv_ratio_{w}um" for w in WINDOWS_UM)
    + tuple(f"w1_iqr_{f}" for f in NUCLEUS_FEATURES)
    + ("lattice_ratio", "lattice_ratio_tile", "streak_ratio", "periodicity_ratio", "spectrum_distance")
)


@contextmanager
def _timed(timings: dict, key: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t, 3)


def _float_img(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    else:
        a = a.astype(np.float32, copy=False)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise GDTError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {np.shape(img)}")
    return a[..., :3] if a.ndim == 3 else a


def luminance(img) -> np.ndarray:
    """Luminance (float32 (H, W), in [0, 1]): Rec. 601 weights for RGB, the intensity for one channel."""
    a = _float_img(img)
    if a.ndim == 2:
        return a
    return (0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# tissue outline


def segment_tissue(img, kind: str, um_per_px: float) -> np.ndarray:
    """Bool (H, W) tissue mask (tissue vs glass / empty), the same method for real and generated.

    H&E: :func:`napari_gdt.analysis.morphometrics.tissue_mask` (smoothed mean RGB below 0.82; holes
    up to 0.01 mm² filled, specks under 0.005 mm² removed). Fluorescence (``kind="dapi"``): the
    intensity smoothed with a 10 µm Gaussian above 15 % of its 99th percentile (at least 0.02),
    with the same hole filling and speck removal.
    """
    from . import morphometrics as mm

    kind = "he" if str(kind).lower() == "he" else "dapi"
    um = float(um_per_px)
    if kind == "he":
        return mm.tissue_mask(img, "he", um)
    a = luminance(img)
    s = ndi.gaussian_filter(a, 10.0 / um)
    thr = max(0.02, 0.15 * float(np.percentile(s, 99)))
    m = s > thr
    px_mm2 = 1e6 / um**2
    m = mm._fill_small_holes(m, int(0.01 * px_mm2))
    return mm._remove_small(m, int(0.005 * px_mm2))


def tissue_iou(real_mask: np.ndarray, gen_mask: np.ndarray) -> float | None:
    """Intersection over union of two bool masks of the same shape (None when both are empty)."""
    a, b = np.asarray(real_mask, bool), np.asarray(gen_mask, bool)
    if a.shape != b.shape:
        raise GDTError(f"tissue masks differ in shape: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return None if union == 0 else float(np.count_nonzero(a & b) / union)


# --------------------------------------------------------------------------------------------
# nuclei: table, architecture, distributions


def nucleus_table(labels: np.ndarray, um_per_px: float, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-nucleus features of a label image, for nuclei whose centroid lies in ``mask``.

    Returns a dict of 1-D arrays: ``y``, ``x`` (centroid, px), ``area`` (µm²), ``eccentricity``
    (0 = circle, 1 = line), ``solidity`` (area over convex-hull area) and ``nn_distance`` (µm, from
    the centroid to the nearest other centroid in the table; NaN when there is only one nucleus).
    """
    from scipy.spatial import cKDTree
    from skimage.measure import regionprops_table

    lab = np.asarray(labels)
    empty = {k: np.zeros(0) for k in ("y", "x", "area", "eccentricity", "solidity", "nn_distance")}
    if lab.size == 0 or lab.max() == 0:
        return empty
    p = regionprops_table(lab, properties=("centroid", "area", "eccentricity", "solidity"))
    y, x = np.asarray(p["centroid-0"]), np.asarray(p["centroid-1"])
    keep = np.ones(len(y), bool)
    if mask is not None:
        m = np.asarray(mask, bool)
        iy = np.clip(np.round(y).astype(int), 0, m.shape[0] - 1)
        ix = np.clip(np.round(x).astype(int), 0, m.shape[1] - 1)
        keep = m[iy, ix]
    um = float(um_per_px)
    out = {
        "y": y[keep],
        "x": x[keep],
        "area": np.asarray(p["area"], float)[keep] * um * um,
        "eccentricity": np.asarray(p["eccentricity"], float)[keep],
        "solidity": np.asarray(p["solidity"], float)[keep],
    }
    n = len(out["y"])
    if n >= 2:
        d, _ = cKDTree(np.stack([out["y"], out["x"]], 1)).query(np.stack([out["y"], out["x"]], 1), k=2)
        out["nn_distance"] = d[:, 1] * um
    else:
        out["nn_distance"] = np.full(n, np.nan)
    return out


def density_cv(yx: np.ndarray, mask: np.ndarray, window_px: int, min_tissue: float = 0.9) -> tuple[float | None, int]:
    """Coefficient of variation of nuclei density over a grid of square windows.

    Parameters
    ----------
    yx : (N, 2) array
        Nucleus centroids (px).
    mask : (H, W) bool
        Where to count (for example tissue in both images). Nuclei outside it are ignored.
    window_px : int
        Window edge (px); windows tile the image from (0, 0).
    min_tissue : float
        Windows with less than this fraction of ``mask`` are skipped.

    Returns
    -------
    (cv, n_windows)
        ``std / mean`` (ddof=1) of the density (nuclei per mask px) over the kept windows; ``cv`` is
        None with fewer than 4 windows or no nuclei.
    """
    m = np.asarray(mask, bool)
    H, W = m.shape
    w = int(window_px)
    if w < 2:
        raise GDTError(f"window must be >= 2 px, got {window_px}")
    ny, nx = H // w, W // w
    if ny == 0 or nx == 0:
        return None, 0
    mt = m[: ny * w, : nx * w].reshape(ny, w, nx, w).sum(axis=(1, 3))
    yx = np.asarray(yx, float).reshape(-1, 2)
    iy = np.clip(np.round(yx[:, 0]).astype(int), 0, H - 1)
    ix = np.clip(np.round(yx[:, 1]).astype(int), 0, W - 1)
    sel = m[iy, ix] & (iy < ny * w) & (ix < nx * w)
    cnt = np.zeros((ny, nx))
    np.add.at(cnt, (iy[sel] // w, ix[sel] // w), 1.0)
    keep = mt >= min_tissue * w * w
    n = int(keep.sum())
    if n < 4:
        return None, n
    dens = cnt[keep] / mt[keep]
    mu = dens.mean()
    if mu <= 0:
        return None, n
    return float(dens.std(ddof=1) / mu), n


def density_cv_ratio(real_yx, gen_yx, both_mask, um_per_px: float, windows_um=WINDOWS_UM, min_tissue: float = 0.9) -> dict:
    """Per window edge: ``{"density_cv_ratio_<w>um": gen CV / real CV, ...}`` plus details.

    Both point sets are counted in the same windows of ``both_mask`` (tissue in both images).
    The details (key ``"details"``) hold the real and generated CV and the number of windows.
    """
    out, det = {}, {}
    for wum in windows_um:
        wpx = max(2, round(float(wum) / float(um_per_px)))
        cr, n = density_cv(real_yx, both_mask, wpx, min_tissue)
        cg, _ = density_cv(gen_yx, both_mask, wpx, min_tissue)
        key = f"density_cv_ratio_{wum}um"
        out[key] = None if cr in (None, 0) or cg is None else float(cg / cr)
        det[f"{wum}um"] = {"cv_real": cr, "cv_generated": cg, "n_windows": n, "window_px": wpx}
    out["details"] = det
    return out


def w1_iqr(real_vals, gen_vals) -> float | None:
    """Wasserstein-1 distance between two samples divided by the real sample's interquartile range.

    Unitless (the distance is in the samples' unit, so is the IQR). None with fewer than 5 values
    in either sample or a zero IQR.
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(real_vals, float)
    b = np.asarray(gen_vals, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 5 or len(b) < 5:
        return None
    q1, q3 = np.percentile(a, [25, 75])
    if q3 - q1 <= 0:
        return None
    return float(wasserstein_distance(a, b) / (q3 - q1))


# --------------------------------------------------------------------------------------------
# lattice and streaks


def _periodic_component(u: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition: the periodic part of ``u`` (no boundary cross in the FFT)."""
    H, W = u.shape
    v = np.zeros_like(u, dtype=np.float64)
    v[0, :] += u[-1, :] - u[0, :]
    v[-1, :] += u[0, :] - u[-1, :]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    q = np.arange(H).reshape(H, 1)
    r = np.arange(W).reshape(1, W)
    den = 2 * np.cos(2 * np.pi * q / H) + 2 * np.cos(2 * np.pi * r / W) - 4
    den[0, 0] = 1.0
    s = np.fft.fft2(v) / den
    s[0, 0] = 0.0
    return u - np.real(np.fft.ifft2(s))


def _patch_spectrum(
    lum: np.ndarray, mask: np.ndarray, n: int, min_tissue: float, standardise: bool = False
) -> tuple[np.ndarray | None, int]:
    """Mean power spectrum (n, n) of the periodic component of the luminance over n x n patches in ``mask``
    (each patch scaled to SD 1 first with ``standardise``)."""
    H, W = lum.shape
    acc, k = None, 0
    for y0 in range(0, H - n + 1, n):
        for x0 in range(0, W - n + 1, n):
            if mask[y0 : y0 + n, x0 : x0 + n].mean() < min_tissue:
                continue
            p = lum[y0 : y0 + n, x0 : x0 + n].astype(np.float64)
            p = p - p.mean()
            if standardise:
                p = p / (p.std() + 1e-3)
            p = _periodic_component(p)
            P = np.abs(np.fft.fft2(p)) ** 2
            acc = P if acc is None else acc + P
            k += 1
    return (None if acc is None else acc / k), k


def _peak_excess(P: np.ndarray, peaks: np.ndarray, exclude: np.ndarray, radius: int = 2) -> float | None:
    """Mean over ``peaks`` of P / (mean P over the (2r+1)^2 box around it, ``exclude`` bins left out)."""
    if P is None or not peaks.any():
        return None
    ok = (~exclude).astype(np.float64)
    size = 2 * radius + 1
    num = ndi.uniform_filter(P * ok, size, mode="wrap")
    den = ndi.uniform_filter(ok, size, mode="wrap")
    with np.errstate(invalid="ignore", divide="ignore"):
        bg = num / den
    r = P[peaks] / bg[peaks]
    r = r[np.isfinite(r)]
    return float(r.mean()) if len(r) else None


def lattice_excess(img, mask, period_px: int, patch_px: int | None = None, n_harmonics: int = 8, min_tissue: float = 0.9) -> dict:
    """Excess luminance power at a pixel period and its harmonics over neighbouring frequencies.

    The luminance (:func:`luminance`) is cut into ``patch_px`` x ``patch_px`` patches (a multiple
    of ``period_px``; default the smallest multiple >= max(2 x period, 256)) with at least
    ``min_tissue`` of ``mask``; each patch's periodic component (Moisan) is Fourier transformed and
    the power spectra are averaged. A pattern with period ``period_px`` along y and/or x puts power
    only at the frequencies (j, k) / period with integers |j|, |k| <= ``n_harmonics`` (within
    Nyquist). The excess is the mean, over those frequencies, of their power divided by the mean
    power of the non-lattice frequencies in the 5 x 5 box around them: about 1 for tissue without
    such a pattern, larger with a lattice.

    Returns ``{"excess": float | None, "n_patches": int, "patch_px": int}``.
    """
    p = int(period_px)
    if p < 2:
        raise GDTError(f"lattice period must be >= 2 px, got {period_px}")
    n = int(patch_px) if patch_px else p * int(np.ceil(max(2 * p, 256) / p))
    if n % p:
        raise GDTError(f"patch_px ({n}) must be a multiple of the period ({p})")
    lum = luminance(img)
    m = np.ones(lum.shape, bool) if mask is None else np.asarray(mask, bool)
    P, k = _patch_spectrum(lum, m, n, min_tissue)
    if P is None:
        return {"excess": None, "n_patches": 0, "patch_px": n}
    step = n // p
    f = np.fft.fftfreq(n) * n  # integer frequency index, signed
    jy = f / step
    on = np.isclose(jy, np.round(jy)) & (np.abs(np.round(jy)) <= n_harmonics)
    peaks = on[:, None] & on[None, :]
    peaks[0, 0] = False
    lattice = np.isclose(jy, np.round(jy))[:, None] & np.isclose(jy, np.round(jy))[None, :]
    exclude = lattice.copy()
    exclude[0, 0] = True
    return {"excess": _peak_excess(P, peaks, exclude), "n_patches": k, "patch_px": n}


def periodicity_excess(
    img, mask, patch_px: int = 512, min_period: float = 24.0, max_period: float = 256.0, top: int = 8, min_tissue: float = 0.9
) -> dict:
    """Strength of the strongest spectral peaks at periods ``min_period``-``max_period`` px, any direction.

    From the same patch spectra as :func:`lattice_excess` (``patch_px`` patches with at least
    ``min_tissue`` of ``mask``): each frequency's power over the median power of all frequencies
    at the same radius (the same period, every direction), and ``excess`` the mean of the ``top``
    largest of these ratios in the band (radii of at least 3 frequency steps). A regular pattern
    (a weave, stripes, blobs on a grid) puts a few sharp peaks on its ring; tissue spreads its
    power over the directions. Returns ``{"excess", "period_px" (of the largest peak), "n_patches",
    "patch_px"}``.
    """
    n = int(patch_px)
    lum = luminance(img)
    m = np.ones(lum.shape, bool) if mask is None else np.asarray(mask, bool)
    P, k = _patch_spectrum(lum, m, n, min_tissue)
    if P is None:
        return {"excess": None, "period_px": None, "n_patches": 0, "patch_px": n}
    Ps = np.fft.fftshift(P)
    fy, fx = np.mgrid[:n, :n] - n // 2
    r = np.hypot(fy, fx)
    ring = np.rint(r).astype(int)
    band = (r >= max(n / max_period, 3.0)) & (r <= n / min_period)
    med = np.zeros(ring.max() + 1)
    for q in np.unique(ring[band]):
        med[q] = np.median(Ps[ring == q])
    vals = Ps[band] / np.maximum(med[ring[band]], 1e-30)
    i = int(np.argmax(vals))
    return {
        "excess": float(np.sort(vals)[-int(top) :].mean()),
        "period_px": float(n / r[band][i]),
        "n_patches": k,
        "patch_px": n,
    }


def spectrum_profile(img, mask, patch_px: int = 256, min_tissue: float = 0.9) -> dict:
    """Log10 power of the standardised luminance in octave bands, from ``patch_px`` to 2 px periods.

    Each ``patch_px`` patch with at least ``min_tissue`` of ``mask`` has its luminance scaled to mean
    0 and SD 1 (stain and brightness removed, as the two-sample test's ``lum`` variant); the power
    spectra of their periodic components are averaged and summed over rings of one octave of
    frequency (periods ``patch_px``-``patch_px/2``, ..., 4-2 px). Returns ``{"periods_px": [[long,
    short], ...], "log10_power": [...] | None, "n_patches": int, "patch_px": int}``.
    """
    n = int(patch_px)
    lum = luminance(img)
    m = np.ones(lum.shape, bool) if mask is None else np.asarray(mask, bool)
    P, k = _patch_spectrum(lum, m, n, min_tissue, standardise=True)
    n_bands = int(np.log2(n)) - 1
    periods = [[n / 2**i, n / 2 ** (i + 1)] for i in range(n_bands)]
    if P is None:
        return {"periods_px": periods, "log10_power": None, "n_patches": 0, "patch_px": n}
    f = np.fft.fftfreq(n)
    r = np.hypot(f[:, None], f[None, :])
    out = []
    for long_p, short_p in periods:
        ring = (r >= 1.0 / long_p) & (r < 1.0 / short_p) if short_p > 2 else (r >= 1.0 / long_p)
        out.append(float(np.log10(P[ring].mean() + 1e-30)))
    return {"periods_px": periods, "log10_power": out, "n_patches": k, "patch_px": n}


def streak_excess(img, mask, patch_px: int = 256, min_tissue: float = 0.9) -> dict:
    """Excess power on the frequency axes (straight horizontal or vertical streaks).

    For each axis, the mean power on it (DC and its 2-bin neighbourhood left out) over the mean
    power of the two lines on either side of it (offsets 1 and 2), from the same patch spectra as
    :func:`lattice_excess`; ``excess`` is the larger of the two (streaks usually run one way).
    About 1 without streaks. Returns ``{"excess", "horizontal", "vertical", "n_patches", "patch_px"}``.
    """
    lum = luminance(img)
    m = np.ones(lum.shape, bool) if mask is None else np.asarray(mask, bool)
    n = int(patch_px)
    P, k = _patch_spectrum(lum, m, n, min_tissue)
    if P is None:
        return {"excess": None, "n_patches": 0, "patch_px": n}
    f = np.abs(np.fft.fftfreq(n) * n).astype(int)
    far = f > 2
    # fx = 0 column: lines constant along x (horizontal streaks); fy = 0 row: vertical streaks
    h = P[far, 0].mean() / P[far][:, [1, 2, -1, -2]].mean()
    v = P[0, far].mean() / P[[1, 2, -1, -2]][:, far].mean()
    return {"excess": float(max(h, v)), "horizontal": float(h), "vertical": float(v), "n_patches": k, "patch_px": n}


# --------------------------------------------------------------------------------------------
# one pair of images


def _ratio(a, b):
    if a is None or b is None or not np.isfinite(b) or b == 0:
        return None
    return float(a) / float(b)


def real_side(real, kind: str, um_per_px: float, real_labels=None, real_mask=None, timings: dict | None = None) -> dict:
    """Everything :func:`fidelity_report` needs from the real image, computed once (reuse it over seeds)."""
    from . import morphometrics as mm

    t = {} if timings is None else timings
    kind = "he" if str(kind).lower() == "he" else "dapi"
    with _timed(t, "tissue_iou"):
        tmask = segment_tissue(real, kind, um_per_px) if real_mask is None else np.asarray(real_mask, bool)
    with _timed(t, "segmentation"):
        labels = (
            real_labels
            if real_labels is not None
            else mm.measure_nuclei(real if kind == "he" else luminance(real), kind, um_per_px, mask=tmask).labels
        )
    with _timed(t, "nucleus_table"):
        table = nucleus_table(labels, um_per_px, None)
    return {"image": real, "kind": kind, "um": float(um_per_px), "tissue": tmask, "labels": labels, "table": table, "lattice": {}}


def fidelity_report(
    real_img,
    gen_img,
    kind: str = "he",
    um_per_px: float = 0.5,
    px_per_bin: int = 16,
    tile_px: int = 256,
    real_labels=None,
    gen_labels=None,
    real=None,
    timings: dict | None = None,
) -> dict:
    """The fidelity metrics of one generated image against the real image on the same grid.

    Parameters
    ----------
    real_img, gen_img : (H, W, 3) RGB or (H, W) / (H, W, 1) fluorescence, uint8 or float in [0, 1]
        The real and the generated image, pixel-aligned (same shape).
    kind : "he" or "dapi"
        Stain, for the tissue and nuclei segmentation.
    um_per_px : float
        Pixel size (µm) of both images.
    px_per_bin, tile_px : int
        The generator's bin period and tile size in px (the periods ``lattice_ratio`` and
        ``lattice_ratio_tile`` look at).
    real_labels, gen_labels : (H, W) int, optional
        Nuclei label images (default: :func:`napari_gdt.analysis.morphometrics.measure_nuclei` in
        each image's own tissue mask).
    real : dict, optional
        :func:`real_side` of ``real_img`` (computed once and reused over seeds).
    timings : dict, optional
        Seconds spent per metric are added into it.

    Returns
    -------
    dict
        The :data:`FIDELITY_KEYS` (floats or None) and ``"fidelity_details"`` (real and generated
        figures behind each ratio). JSON-safe.
    """
    from . import morphometrics as mm

    t = {} if timings is None else timings
    R = real if real is not None else real_side(real_img, kind, um_per_px, real_labels, timings=t)
    kind, um = R["kind"], R["um"]
    gen = gen_img
    if np.shape(gen)[:2] != np.shape(R["image"])[:2]:
        raise GDTError(f"generated image {np.shape(gen)[:2]} and real image {np.shape(R['image'])[:2]} differ in shape")
    out: dict = {}
    det: dict = {}
    with _timed(t, "tissue_iou"):
        gmask = segment_tissue(gen, kind, um)
        both = R["tissue"] & gmask
        out["tissue_iou"] = tissue_iou(R["tissue"], gmask)
        det["tissue"] = {
            "real_fraction": float(R["tissue"].mean()),
            "generated_fraction": float(gmask.mean()),
            "both_fraction": float(both.mean()),
        }
    with _timed(t, "segmentation"):
        glab = (
            gen_labels
            if gen_labels is not None
            else mm.measure_nuclei(gen if kind == "he" else luminance(gen), kind, um, mask=gmask).labels
        )
    with _timed(t, "nucleus_table"):
        gt = nucleus_table(glab, um, both)
        rt_all = R["table"]
        iy = np.clip(np.round(rt_all["y"]).astype(int), 0, both.shape[0] - 1)
        ix = np.clip(np.round(rt_all["x"]).astype(int), 0, both.shape[1] - 1)
        sel = both[iy, ix] if len(iy) else np.zeros(0, bool)
        rt = {k: v[sel] for k, v in rt_all.items()}
        # nearest neighbours among the nuclei kept (both tables the same way)
        rt["nn_distance"] = nucleus_table_nn(rt, um)
        gt["nn_distance"] = nucleus_table_nn(gt, um)
    with _timed(t, "density_cv"):
        d = density_cv_ratio(np.stack([rt["y"], rt["x"]], 1), np.stack([gt["y"], gt["x"]], 1), both, um)
        det["density_cv"] = d.pop("details")
        out.update(d)
    with _timed(t, "nucleus_distributions"):
        for f in NUCLEUS_FEATURES:
            out[f"w1_iqr_{f}"] = w1_iqr(rt[f], gt[f])
        det["nuclei"] = {
            "n_real": len(rt["y"]),
            "n_generated": len(gt["y"]),
            **{f"median_{f}_real": _median(rt[f]) for f in NUCLEUS_FEATURES},
            **{f"median_{f}_generated": _median(gt[f]) for f in NUCLEUS_FEATURES},
        }
    with _timed(t, "lattice"):
        lat = {}
        for name, period in (("bin", int(px_per_bin)), ("tile", int(tile_px))):
            harm = 8
            key = (name, period, both.tobytes().__hash__())
            rl = R["lattice"].get(key)
            if rl is None:
                rl = lattice_excess(R["image"], both, period, n_harmonics=harm)
                R["lattice"][key] = rl
            gl = lattice_excess(gen, both, period, n_harmonics=harm)
            lat[name] = {
                "period_px": period,
                "real": rl["excess"],
                "generated": gl["excess"],
                "n_patches": rl["n_patches"],
                "patch_px": rl["patch_px"],
            }

        def real_and_generated(name, measure):  # the real side once per mask (reused over seeds)
            key = (name, both.tobytes().__hash__())
            r = R["lattice"][key] = R["lattice"].get(key) or measure(R["image"], both)
            g = measure(gen, both)
            return {"real": r["excess"], "generated": g["excess"], "n_patches": r["n_patches"], "patch_px": r["patch_px"]}, r, g

        lat["streak"], _, _ = real_and_generated("streak", streak_excess)
        lat["periodicity"], rp, gp = real_and_generated("periodicity", periodicity_excess)
        lat["periodicity"].update(period_px_real=rp["period_px"], period_px_generated=gp["period_px"])
        out["lattice_ratio"] = _ratio(lat["bin"]["generated"], lat["bin"]["real"])
        out["lattice_ratio_tile"] = _ratio(lat["tile"]["generated"], lat["tile"]["real"])
        out["streak_ratio"] = _ratio(lat["streak"]["generated"], lat["streak"]["real"])
        out["periodicity_ratio"] = _ratio(lat["periodicity"]["generated"], lat["periodicity"]["real"])
        det["lattice"] = lat
    with _timed(t, "spectrum"):
        key = ("spectrum", both.tobytes().__hash__())
        rs = R["lattice"][key] = R["lattice"].get(key) or spectrum_profile(R["image"], both)
        gs = spectrum_profile(gen, both)
        ok = rs["log10_power"] is not None and gs["log10_power"] is not None
        diff = np.subtract(gs["log10_power"], rs["log10_power"]) if ok else None
        out["spectrum_distance"] = float(np.abs(diff).mean()) if ok else None
        det["spectrum"] = {
            "periods_px": rs["periods_px"],
            "log10_real": rs["log10_power"],
            "log10_generated_minus_real": None if diff is None else [round(float(v), 4) for v in diff],
            "n_patches": rs["n_patches"],
        }
    out["fidelity_details"] = det
    return out


def nucleus_table_nn(table: dict, um_per_px: float) -> np.ndarray:
    """Nearest-neighbour distance (µm) between the centroids of a nucleus table (NaN if < 2 nuclei)."""
    from scipy.spatial import cKDTree

    n = len(table["y"])
    if n < 2:
        return np.full(n, np.nan)
    yx = np.stack([table["y"], table["x"]], 1)
    d, _ = cKDTree(yx).query(yx, k=2)
    return d[:, 1] * float(um_per_px)


def _median(v):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None


# --------------------------------------------------------------------------------------------
# a model over seeds (and edits)


def _seed_list(seeds, seed0: int = 0) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise GDTError(f"seeds must be >= 1, got {seeds}")
        return [int(seed0) + i for i in range(int(seeds))]
    out = [int(s) for s in seeds]
    if not out:
        raise GDTError("seeds must name at least one seed")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (bool, np.bool_)):
            continue
        elif isinstance(v, (int, float, np.integer, np.floating)) or v is None:
            out[key] = None if v is None else float(v)
    return out


def _mean_sd(vals: list) -> tuple[float | None, float | None]:
    v = [x for x in vals if x is not None and np.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _set_path(d: dict, path: str, value) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


#: per-seed figure groups that are "generated figures" (aggregated as mean ± SD over seeds)
def _generated_paths(flat: dict) -> list[str]:
    from .quality import KEYS

    keep = set(KEYS) | set(FIDELITY_KEYS)
    return [
        k
        for k in flat
        if k in keep or k.startswith("generated.") or (k.startswith("c2st.") and ".generated." in k and k.endswith("accuracy"))
    ]


def _region_stats(img, kind, um, mask) -> dict:
    from . import morphometrics as mm

    if mask is None or not mask.any():
        return {"density_per_mm2": None, "area_fraction": None, "mean_area_um2": None, "mean_luminance": None}
    s = mm.measure_nuclei(img if kind == "he" else luminance(img), kind, um, mask=mask)
    return {
        "density_per_mm2": s.density_per_mm2,
        "area_fraction": s.area_fraction,
        "mean_area_um2": s.mean_area_um2,
        "mean_luminance": float(luminance(img)[mask].mean()),
    }


def evaluate_model(
    bundle,
    canvas,
    image,
    region=None,
    seeds=1,
    seed: int = 0,
    edits=None,
    tile_px: int = 256,
    device: str = "auto",
    baselines=None,
    train_pairs=None,
    c2st: bool = False,
    control=None,
    depth_normalised: bool = False,
    blur_baseline: bool = False,
    renderer_kwargs: dict | None = None,
    progress=None,
    log=None,
) -> dict:
    """Render ``bundle`` over ``canvas`` for several seeds and score it against the real ``image``.

    Parameters
    ----------
    bundle : GeneratorBundle
        The model.
    canvas : ExpressionCanvas
        The expression, registered to ``image`` (its affine maps bins to ``image`` px).
    image : ndarray
        The real image (H, W, 3) or (H, W[, 1]).
    region : Region, optional
        Output px to score (default: the spots' whole tissue, else the whole canvas).
    seeds : int or sequence of int
        Number of seeds (``seed, seed + 1, ...``) or the seeds themselves.
    edits : Recipe or path, optional
        An edit recipe. The top-level figures are then those of the **edited** tissue (as
        ``napari-gdt evaluate --edits`` always reported), and ``edit_effect`` gives, per metric,
        (edited - unedited, averaged over seeds) / seed-to-seed SD of the unedited figure, and the
        mean absolute pixel change inside the edited bins (0-255 units).
    baselines : dict, optional
        A :func:`napari_gdt.analysis.baselines.fit_baselines` record (default: the card's
        ``baselines``, else fitted from ``train_pairs``).
    train_pairs : list of dict, optional
        :func:`napari_gdt.analysis.baselines.unit_pairs` of training sections, used when there is no
        record. Never pass the scored section.
    depth_normalised : bool
        Also render a copy of the canvas with every bin scaled to the same total count (the median
        of the non-empty bins) and report its spatial correlations under ``depth_normalised``: how
        much of ``tile_spearman_*`` is sequencing depth.
    c2st : bool
        Run the classifier two-sample test (:mod:`napari_gdt.analysis.c2st`; about a minute per
        comparison on one core).
    control : tuple (image, mask), optional
        Another real section on the same output grid (and its tissue mask), for the two-sample
        test's real-against-real control.
    renderer_kwargs : dict, optional
        Passed to :class:`~napari_gdt.rendering.tiles.TileRenderer` (``cache``, ``tile_px``,
        ``batch_size``, ``zero_fill``).

    Returns
    -------
    dict
        JSON-safe: the keys of :func:`napari_gdt.analysis.quality.evaluate` (each generated figure
        the mean over seeds), :data:`FIDELITY_KEYS`, ``fidelity_details``, ``baselines``,
        ``baselines_source``, ``better_than_baseline`` (per key, per baseline), ``c2st`` (if
        asked), ``seeds``, ``seed_sd`` and ``per_seed`` (per generated figure), ``edit_effect``
        (with edits) and ``timings_s`` (seconds per step, summed over seeds).
    """
    from ..rendering.tiles import TileRenderer
    from . import baselines as bl
    from . import quality

    say = log or (lambda m: None)
    T: dict = {}
    seeds_l = _seed_list(seeds, seed)
    rk = {"batch_size": 4, **(renderer_kwargs or {})}
    ppb, um = int(bundle.px_per_bin), float(bundle.um_per_px)
    tile = int(bundle.card.get("tile_px", 256)) if isinstance(bundle.card, dict) else 256
    edited = None
    if edits is not None:
        from ..editing.recipe import Recipe, load_recipe

        rec = edits if isinstance(edits, Recipe) else load_recipe(edits)
        edited = rec.apply(canvas, ppb)

    def renderer(c, s):
        return TileRenderer(bundle, c, seed=s, device=device, **rk)

    r0 = renderer(canvas, seeds_l[0])
    region = r0.check_region(region if region is not None else quality.tissue_region(canvas, ppb, r0.shape_px))
    with _timed(T, "real_morphometrics"):
        prep = quality.prepare_real(bundle, canvas, image, region, tile_px)
    kind, real = prep["kind"], prep["real"]
    # H&E: the real nuclei of the morphometrics (same image, same tissue mask) are reused
    R = real_side(real, kind, um, real_labels=prep["real_labels"] if kind == "he" else None, real_mask=prep["mask"], timings=T)
    # ---- baselines
    res_base: dict = {}
    with _timed(T, "baseline_flat"):
        res_base["flat"], _ = quality.score_generated(prep, quality.flat_baseline(prep))
    source = "none"
    rec_b = baselines
    if rec_b is not None:
        source = "given record"
    elif isinstance(bundle.card, dict) and isinstance(bundle.card.get("baselines"), dict):
        rec_b, source = bundle.card["baselines"], "model card"
    elif train_pairs:
        with _timed(T, "baselines_fit"):
            rec_b = bl.fit_baselines(train_pairs)
        source = "fitted now"
    if rec_b is not None:
        with _timed(T, "baselines_predict"):
            X = bl.unit_expression(canvas, ppb, region, prep)
            res_base.update(bl.baseline_correlations(rec_b, X, list(canvas.genes), prep["real_units"]))
        source += f" (fitted on {', '.join(rec_b.get('fitted_on', []))})"
    else:
        res_base["library_size"] = res_base["ridge"] = None
        source = "none: no record in the card and no training pairs given"
    # ---- seeds
    per_seed, per_seed_unedited, pix = [], [], {"edit": [], "seed": []}
    unit_tables: list = []  # generated per-unit tables, one per seed (of the scored run)
    prev_u = None
    emask = None
    if edited is not None:
        from ..editing.recipe import changed_bins

        bins = changed_bins(canvas, edited)
        full = np.repeat(np.repeat(bins, ppb, 0), ppb, 1)
        emask = np.zeros(region.shape, bool)
        ys, xs = slice(region.y0, min(region.y1, full.shape[0])), slice(region.x0, min(region.x1, full.shape[1]))
        sub = full[ys, xs]
        emask[: sub.shape[0], : sub.shape[1]] = sub
        if prep["mask"] is not None:
            emask &= prep["mask"]
    c2st_res: dict = {}
    dn_canvas, dn_runs = None, []
    for i, s in enumerate(seeds_l):
        say(f"seed {s} ({i + 1}/{len(seeds_l)})")
        runs = [("unedited", canvas)] + ([("edited", edited)] if edited is not None else [])
        imgs = {}
        for name, c in runs:
            with _timed(T, "render"):
                g = renderer(c, s).render_region(region, progress=progress)
            if kind == "dapi" and g.ndim == 3:
                g = g[..., 0]
            imgs[name] = g
            with _timed(T, "generated_morphometrics"):
                out, gstats = quality.score_generated(prep, g, unit_tables if name == runs[-1][0] else None)
            out["generated"] = gstats
            out.update(fidelity_report(real, g, kind, um, ppb, tile, real=R, timings=T))
            if emask is not None:
                with _timed(T, "edit_region"):
                    out["edit_region"] = _region_stats(g, kind, um, emask)
            if depth_normalised and name == "unedited":
                with _timed(T, "depth_normalised"):
                    if dn_canvas is None:
                        dn_canvas = depth_normalise(canvas)
                    gd = renderer(dn_canvas, s).render_region(region)
                    if kind == "dapi" and gd.ndim == 3:
                        gd = gd[..., 0]
                    dn, _ = quality.score_generated(prep, gd)
                    dn_runs.append({k: dn[k] for k in ("tile_spearman_nuclei", "tile_spearman_area_fraction")})
            if c2st and name == runs[-1][0]:
                from .c2st import two_sample_test

                with _timed(T, "c2st"):
                    out["c2st"] = {
                        v: {"generated": two_sample_test(real, g, R["tissue"], segment_tissue(g, kind, um), v)}
                        for v in ("rgb", "lum")
                    }
            (per_seed if name == runs[-1][0] else per_seed_unedited).append(out)
        if edited is not None:
            d = np.abs(imgs["edited"].astype(np.float64) - imgs["unedited"])
            d = d.mean(axis=-1) if d.ndim == 3 else d
            pix["edit"].append(float(d[emask].mean() * 255) if emask.any() else None)
            if prev_u is not None:
                d2 = np.abs(imgs["unedited"].astype(np.float64) - prev_u)
                d2 = d2.mean(axis=-1) if d2.ndim == 3 else d2
                pix["seed"].append(float(d2[emask].mean() * 255) if emask.any() else None)
            prev_u = imgs["unedited"]
    # ---- controls of the two-sample test
    if c2st:
        from .c2st import two_sample_test

        with _timed(T, "c2st"):
            s = 2.0 / um  # 2 µm Gaussian blur: nuclei lose their edges
            blur = (
                np.stack([ndi.gaussian_filter(real[..., c], s) for c in range(real.shape[-1])], -1)
                if real.ndim == 3
                else ndi.gaussian_filter(real, s)
            )
            for v in ("rgb", "lum"):
                c2st_res[v] = {"control_blur": two_sample_test(real, blur, R["tissue"], R["tissue"], v)}
                if control is not None:
                    cimg, cmask = control
                    c2st_res[v]["control_other_section"] = two_sample_test(real, cimg, R["tissue"], cmask, v)
                else:
                    c2st_res[v]["control_other_section"] = None
    # ---- aggregate
    flats = [_flatten(o) for o in per_seed]
    paths = _generated_paths(flats[0])
    res: dict = {}
    sd: dict = {}
    ps: dict = {}
    first = per_seed[0]
    for k, v in first.items():
        if k not in ("generated", "c2st", "fidelity_details", "edit_region"):
            res[k] = v
    res["generated"] = dict(first["generated"])
    res["fidelity_details"] = first["fidelity_details"]
    for p in paths:
        vals = [f.get(p) for f in flats]
        m, s_ = _mean_sd(vals)
        if p.startswith("c2st."):
            continue
        _set_path(res, p, m)
        sd[p], ps[p] = s_, vals
    if c2st:
        for v in ("rgb", "lum"):
            accs = [o["c2st"][v]["generated"]["accuracy"] for o in per_seed]
            m, s_ = _mean_sd(accs)
            g0 = per_seed[0]["c2st"][v]["generated"]
            c2st_res[v]["generated"] = {**g0, "accuracy": m, "accuracy_per_seed": accs, "ci95_seed0": g0["ci95"]}
            c2st_res[v]["generated"].pop("ci95")
            sd[f"c2st.{v}.generated.accuracy"], ps[f"c2st.{v}.generated.accuracy"] = s_, accs
        res["c2st"] = c2st_res
    if depth_normalised:
        res["depth_normalised"] = {}
        for k in ("tile_spearman_nuclei", "tile_spearman_area_fraction"):
            m_, s_ = _mean_sd([d[k] for d in dn_runs])
            res["depth_normalised"][k] = m_
            sd[f"depth_normalised.{k}"], ps[f"depth_normalised.{k}"] = s_, [d[k] for d in dn_runs]
    res["baseline"] = res_base["flat"]
    res["baselines"] = res_base
    res["baselines_source"] = source
    table = {}
    for k in quality.KEYS:
        row = {}
        for b, bres in res_base.items():
            row[b] = (
                None
                if not isinstance(bres, dict) or k not in bres
                else bool(quality._badness(res, k) < quality._badness(bres, k))
            )
        table[k] = row
    res["better_than_baseline"] = table
    if blur_baseline:
        real_b = (
            np.stack([ndi.gaussian_filter(real[..., c], 10.0 / um) for c in range(real.shape[-1])], -1)
            if real.ndim == 3
            else ndi.gaussian_filter(real, 10.0 / um)
        )
        res["baseline_blur"], _ = quality.score_generated(prep, real_b)
        res["better_than_baseline_blur"] = quality.compare_to_baseline(res, "baseline_blur")
    if edited is not None:
        fu = [
            _flatten({**{k: o.get(k) for k in list(quality.KEYS) + list(FIDELITY_KEYS)}, "edit_region": o["edit_region"]})
            for o in per_seed_unedited
        ]
        fe = [
            _flatten({**{k: o.get(k) for k in list(quality.KEYS) + list(FIDELITY_KEYS)}, "edit_region": o["edit_region"]})
            for o in per_seed
        ]
        eff = {}
        for p in fu[0]:
            u = [f.get(p) for f in fu]
            e = [f.get(p) for f in fe]
            if any(x is None for x in u + e):
                eff[p] = {
                    "unedited_mean": _mean_sd(u)[0],
                    "edited_mean": _mean_sd(e)[0],
                    "delta": None,
                    "seed_sd": _mean_sd(u)[1],
                    "effect_size": None,
                }
                continue
            delta = float(np.mean(np.subtract(e, u)))
            su = _mean_sd(u)[1]
            eff[p] = {
                "unedited_mean": float(np.mean(u)),
                "edited_mean": float(np.mean(e)),
                "delta": delta,
                "seed_sd": su,
                "effect_size": (delta / su) if su else None,
            }
        res["edit_effect"] = {
            "edited_px": int(emask.sum()),
            "edited_mm2": float(emask.sum() * um * um / 1e6),
            "mean_abs_dpixel_255": _mean_sd(pix["edit"])[0],
            "mean_abs_dpixel_255_between_seeds": _mean_sd(pix["seed"])[0],
            "metrics": eff,
        }
    ctx = quality.spatial_rho_context(unit_tables, prep["real_units"])
    if ctx is not None:
        res["fidelity_details"] = {**res["fidelity_details"], "spatial_rho_context": ctx}
    res["seeds"] = seeds_l
    res["seed"] = seeds_l[0]
    res["seed_sd"] = sd
    res["per_seed"] = ps
    res.update(
        {
            "real": prep["real_stats"],
            "units": "spot footprints" if prep["units"] is not None else f"tiles of {tile_px} px",
            "n_units": len(prep["real_units"]),
            "region": str(region),
            "um_per_px": um,
            "kind": kind,
            "model": str(bundle.card.get("name", "")) if isinstance(bundle.card, dict) else "",
        }
    )
    res["timings_s"] = {k: round(v, 2) for k, v in T.items()}
    res["timings_s"]["n_renders"] = len(seeds_l) * (2 if edited is not None else 1)
    return res


def depth_normalise(canvas):
    """A lazy copy of ``canvas`` with every non-empty bin scaled to the same total count.

    The common total is the median total of the non-empty bins, so the overall level of expression
    stays; only the spatial variation of sequencing depth (and of cell density, which it carries)
    is removed. Empty bins stay empty.
    """
    import dask.array as da

    from ..expression.canvas import ExpressionCanvas

    tot = canvas.data.sum(axis=0)
    t = np.asarray(tot)
    nz = t[t > 0]
    if nz.size == 0:
        return canvas
    med = float(np.median(nz))
    data = da.where(tot[None] > 0, canvas.data / da.maximum(tot[None], 1e-9) * med, 0.0).astype(np.float32)
    return ExpressionCanvas(data, list(canvas.genes), canvas.bin_um, canvas.affine.copy(), dict(canvas.meta))
