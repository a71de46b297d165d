"""Nuclear morphometrics for real, generated and edited tissue (H&E or DAPI).

One implementation shared by the compare widget and ``napari-gdt evaluate``.
Pure numpy / scipy / scikit-image (no Qt, no napari).

Pipeline (see docs/morphometrics.md; all lengths in µm, so any pixel size works):

1. Nuclear channel. H&E: haematoxylin from colour deconvolution
   (:func:`skimage.color.rgb2hed`, Ruifrok & Johnston). DAPI: the intensity.
   Images much finer than ``work_um_per_px`` are segmented on block means.
2. Gaussian smoothing (``sigma_um``); DAPI: minus a smooth background (``background_um``).
3. One *global* threshold per call: Otsu (default; or ``"li"``, ``"triangle"``, or a number)
   computed on tissue pixels only (H&E: pixels that are not near-white glass), and never below
   a small absolute floor (``min_threshold``), so that flat or nucleus-free images give no nuclei.
4. Clean: fill holes smaller than ``max_hole_um2``, drop objects smaller than ``min_area_um2``.
5. Split touching nuclei: a marker score (distance transform x rescaled intensity by default),
   one watershed seed per local maximum, then basins merged by the h-maxima (dynamics)
   criterion (``split_h_um``) and the minimum peak distance (``min_distance_um``).
   Fragments smaller than ``min_area_um2`` after the split are dropped.

Steps 4-5 run in overlapping tiles (``_TILE`` px core, ``overlap_um`` halo) so a 5000 x 5000 image
needs bounded memory; a nucleus belongs to the tile that holds its centroid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import GDTError

__all__ = [
    "DEFAULTS",
    "MorphometricsError",
    "NucleiStats",
    "compare_table",
    "footprint_stats",
    "haematoxylin",
    "measure_nuclei",
    "nuclear_channel",
    "segment_nuclei",
    "tile_stats",
    "tissue_mask",
]


class MorphometricsError(GDTError):
    """An image, mask or parameter given to the morphometrics is malformed."""


#: Default parameters (all lengths in µm, areas in µm^2). Any of them can be overridden by
#: keyword in :func:`measure_nuclei`, :func:`segment_nuclei`, :func:`tile_stats`, ...
DEFAULTS: dict[str, object] = {
    "sigma_um": 0.5,  # Gaussian smoothing of the nuclear channel
    "threshold": "otsu",  # "otsu" | "li" | "triangle" | float (in channel units)
    "min_threshold": None,  # absolute floor; None -> 0.03 (rgb2hed H units) for H&E, 0.05 for DAPI (of [0, 1])
    "min_area_um2": 10.0,  # smallest nucleus kept (before and after the split)
    "max_hole_um2": 20.0,  # holes inside a nucleus up to this area are filled
    "min_distance_um": 2.5,  # smallest distance between two nucleus centres (split markers)
    "split_h_um": 0.25,  # a distance-map peak must rise this much above its saddle to seed a nucleus
    "declump": "combined",  # split touching nuclei by "combined" (distance x intensity), "shape" or "intensity"
    "declump_sigma_um": 1.0,  # combined/intensity declumping: smoothing of the channel for the markers
    "declump_h": 0.1,  # intensity declumping: marker dynamic, as a fraction of the threshold
    "background_grey": 0.82,  # H&E: mean RGB above this (in [0, 1]) is glass, not tissue
    "overlap_um": 25.0,  # tile halo for the tiled split
    "background_um": None,  # subtract a smooth background (grey opening, this radius); None -> 12 for DAPI, off for H&E
    "work_um_per_px": 0.35,  # images finer than this are segmented at k x k block means (k = int(this / um_per_px))
}

_TILE = 1024  # core tile size (px) for the tiled split


@dataclass
class NucleiStats:
    """Nuclear morphometrics of one image (in a region)."""

    count: int
    density_per_mm2: float
    mean_area_um2: float
    std_area_um2: float
    area_fraction: float
    area_mm2: float
    labels: np.ndarray = field(repr=False, compare=False)
    threshold: float = field(default=float("nan"), repr=False, compare=False)

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (no ``labels``, no ``threshold``); JSON-safe."""
        return {
            "count": int(self.count),
            "density_per_mm2": float(self.density_per_mm2),
            "mean_area_um2": float(self.mean_area_um2),
            "std_area_um2": float(self.std_area_um2),
            "area_fraction": float(self.area_fraction),
            "area_mm2": float(self.area_mm2),
        }


STAT_KEYS = ("count", "density_per_mm2", "mean_area_um2", "std_area_um2", "area_fraction", "area_mm2")


# --------------------------------------------------------------------------------------------
# input handling


def _check_kind(kind: str) -> str:
    k = str(kind).lower()
    if k not in ("he", "dapi"):
        raise MorphometricsError(f"morphometrics kind must be 'he' or 'dapi', got {kind!r}")
    return k


def _check_um(um_per_px) -> float:
    try:
        u = float(um_per_px)
    except (TypeError, ValueError):
        raise MorphometricsError(f"um_per_px must be a positive number, got {um_per_px!r}") from None
    if not np.isfinite(u) or u <= 0:
        raise MorphometricsError(f"um_per_px must be a positive number, got {um_per_px!r}")
    return u


def _params(overrides: dict) -> dict:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise MorphometricsError(
            f"unknown morphometrics parameter(s): {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}"
        )
    p = dict(DEFAULTS)
    p.update(overrides)
    return p


def _unit_float(a: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]; float -> float32 clipped to [0, 1]."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535.0)
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        m = float(a.max()) if a.size else 1.0
        return a.astype(np.float32) / np.float32(max(m, 1.0))
    a = a.astype(np.float32, copy=False)
    if a.size:
        hi = float(np.nanmax(a[:: max(1, a.shape[0] // 256)]))  # a cheap row sample
        if hi > 1.5:
            raise MorphometricsError(f"float image values must lie in [0, 1] (found {hi:g}); pass uint8 or divide by 255")
    return np.clip(a, 0.0, 1.0)


def _check_image(img, kind: str) -> np.ndarray:
    a = np.asarray(img)
    if kind == "he":
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise MorphometricsError(f"H&E image must be (H, W, 3) RGB, got shape {a.shape}")
        return a[..., :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        # a DAPI image rendered as RGB (grey or blue): take the brightest channel
        a = a[..., :3].max(axis=2)
    if a.ndim != 2:
        raise MorphometricsError(f"DAPI image must be (H, W) or (H, W, 1), got shape {np.asarray(img).shape}")
    return a


def _check_mask(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise MorphometricsError(f"mask shape {m.shape} does not match image shape {tuple(shape)}")
    return m.astype(bool, copy=False)


# --------------------------------------------------------------------------------------------
# channels


def haematoxylin(img, chunk_rows: int = 512) -> np.ndarray:
    """Haematoxylin optical density (float32, (H, W)) of an RGB H&E image.

    Exactly ``skimage.color.rgb2hed(img)[..., 0]`` (Ruifrok & Johnston deconvolution), computed
    in row chunks so that large images need little memory. ``img`` is (H, W, 3) uint8 or float in [0, 1].
    """
    from skimage.color import rgb2hed

    a = _check_image(img, "he")
    out = np.empty(a.shape[:2], np.float32)
    for r0 in range(0, a.shape[0], chunk_rows):
        blk = _unit_float(a[r0 : r0 + chunk_rows])
        out[r0 : r0 + chunk_rows] = rgb2hed(blk)[..., 0]
    return out


def nuclear_channel(img, kind: str, um_per_px: float, sigma_um: float | None = None) -> np.ndarray:
    """The smoothed nuclear channel (float32): haematoxylin OD for H&E, intensity in [0, 1] for DAPI."""
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    sigma_um = DEFAULTS["sigma_um"] if sigma_um is None else sigma_um
    ch = haematoxylin(img) if kind == "he" else _unit_float(_check_image(img, kind))
    s = float(sigma_um) / um
    if s > 0.3:
        ch = ndi.gaussian_filter(ch, s, mode="reflect")
    return ch.astype(np.float32, copy=False)


def tissue_mask(img, kind: str, um_per_px: float, background_grey: float | None = None) -> np.ndarray:
    """Bool (H, W) mask of tissue.

    H&E: pixels whose smoothed mean RGB is below ``background_grey`` (default 0.82), holes up to
    0.01 mm^2 filled and specks under 0.005 mm^2 removed. DAPI: every pixel (fluorescence fields
    are usually all tissue).
    """
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    a = _check_image(img, kind)
    if kind == "dapi":
        return np.ones(a.shape[:2], bool)
    bg = DEFAULTS["background_grey"] if background_grey is None else float(background_grey)
    H, W = a.shape[:2]
    k = max(1, int(2.0 / um))  # work at <= ~2 µm/px: the mask's scale is 4 µm and up
    small = a[::k, ::k]
    grey = np.empty(small.shape[:2], np.float32)
    for r0 in range(0, small.shape[0], 1024):
        grey[r0 : r0 + 1024] = _unit_float(small[r0 : r0 + 1024]).mean(axis=2)
    # (saturation is no use here: eosin-tinted glass and mounting medium are as pink as stroma)
    m = ndi.gaussian_filter(grey, max(4.0 / (um * k), 0.5)) < bg
    px_mm2 = 1e6 / (um * k) ** 2
    m = _fill_small_holes(m, int(0.01 * px_mm2))
    m = _remove_small(m, int(0.005 * px_mm2))
    if k > 1:
        m = np.repeat(np.repeat(m, k, axis=0), k, axis=1)[:H, :W]
    return np.ascontiguousarray(m)


def _remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop connected components (8-connectivity) with fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def _fill_small_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Fill holes (4-connected background components not touching the border) of <= ``max_px`` px."""
    if max_px <= 0 or not mask.any():
        return mask
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    small = sizes <= max_px
    small[0] = False
    small[border] = False
    return mask | small[lab]


# --------------------------------------------------------------------------------------------
# threshold and split


def _auto_threshold(values: np.ndarray, method) -> float:
    from skimage import filters

    if isinstance(method, (int, float, np.floating, np.integer)) and not isinstance(method, bool):
        return float(method)
    v = values[np.isfinite(values)]
    if v.size < 16 or float(v.max() - v.min()) < 1e-6:
        return float("inf")
    m = str(method).lower()
    if m == "otsu":
        return float(filters.threshold_otsu(v))
    if m == "li":
        return float(filters.threshold_li(v))
    if m == "triangle":
        return float(filters.threshold_triangle(v))
    raise MorphometricsError(f"threshold must be 'otsu', 'li', 'triangle' or a number, got {method!r}")


def _split_tile(fg: np.ndarray, ch: np.ndarray | None, thr: float, top: float, um: float, p: dict) -> np.ndarray:
    """Label image (int32) of one foreground tile with touching nuclei split.

    The marker score is ``"shape"``: the distance transform; ``"combined"`` (default): the distance
    transform times the nuclear channel (smoothed at ``declump_sigma_um``) rescaled to [0, 1] between
    the threshold and the 95th percentile of the foreground; ``"intensity"``: the smoothed channel.
    Every local maximum seeds a watershed of the negated score inside the foreground; then
    neighbouring basins are merged, highest saddle first, while the lower peak rises less than
    ``h`` above the saddle (``split_h_um``, at least half a pixel, for distance scores;
    ``declump_h`` x threshold for intensity) or the peaks lie closer than ``min_distance_um``.
    This is the h-maxima (dynamics) criterion, computed on the basin graph.
    """
    from skimage.segmentation import watershed

    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    md = float(p["min_distance_um"]) / um
    mode = str(p["declump"]).lower()
    if mode == "shape" or ch is None:
        score = ndi.distance_transform_edt(fg).astype(np.float32)
        h = max(float(p["split_h_um"]) / um, 0.5)  # never below half a pixel (EDT discretisation)
    elif mode == "combined":
        score = ndi.distance_transform_edt(fg).astype(np.float32)
        sm = ndi.gaussian_filter(ch, float(p["declump_sigma_um"]) / um).astype(np.float32)
        score *= np.clip((sm - thr) / max(top - thr, 1e-6), 0.0, 1.0)
        h = max(float(p["split_h_um"]) / um, 0.5)
    elif mode == "intensity":
        score = ndi.gaussian_filter(ch, float(p["declump_sigma_um"]) / um).astype(np.float32)
        score -= float(score[fg].min())
        score[~fg] = 0
        h = float(p["declump_h"]) * abs(thr)
    else:
        raise MorphometricsError(f"declump must be 'combined', 'shape' or 'intensity', got {p['declump']!r}")
    # seeds: local maxima (3 x 3) of the score in the foreground; plateaus are one seed
    peak = (score >= ndi.maximum_filter(score, size=3)) & fg
    markers, nm = ndi.label(peak, structure=np.ones((3, 3), bool))
    lab = watershed(-score, markers, mask=fg)
    if nm > 1:
        lab = _merge_basins(lab, score, nm, h, md)
    return lab.astype(np.int32, copy=False)


def _merge_basins(lab: np.ndarray, score: np.ndarray, n: int, h: float, md: float) -> np.ndarray:
    """Merge watershed basins whose dynamic (peak minus saddle) is below ``h`` or whose peaks are
    closer than ``md`` px, processing saddles from the highest; returns relabelled basins (1..k)."""
    flat = lab.ravel()
    sflat = score.ravel()
    # peak value and position per basin
    fgi = np.flatnonzero(flat)
    fgi = fgi[np.lexsort((sflat[fgi], flat[fgi]))]  # by basin, then score
    lf = flat[fgi]
    top = fgi[np.r_[lf[1:] != lf[:-1], True]]  # highest pixel of each basin
    peak_val = np.zeros(n + 1, np.float64)
    peak_pos = np.zeros(n + 1, np.int64)
    peak_val[flat[top]] = sflat[top]
    peak_pos[flat[top]] = top
    W = lab.shape[1]
    py, px = np.divmod(peak_pos, W)
    # saddles: highest min(score) over 4-neighbour pixel pairs across a basin boundary
    edges = []
    for a, b, sa, sb in (
        (lab[:, :-1], lab[:, 1:], score[:, :-1], score[:, 1:]),
        (lab[:-1, :], lab[1:, :], score[:-1, :], score[1:, :]),
    ):
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            la, lb = a[m].astype(np.int64), b[m].astype(np.int64)
            lo, hi = np.minimum(la, lb), np.maximum(la, lb)
            edges.append((lo * (n + 1) + hi, np.minimum(sa[m], sb[m])))
    if not edges:
        return lab
    key = np.concatenate([e[0] for e in edges])
    sad = np.concatenate([e[1] for e in edges]).astype(np.float64)
    o = np.lexsort((sad, key))
    key, sad = key[o], sad[o]
    last = np.r_[key[1:] != key[:-1], True]  # per key, the last = the highest saddle
    key, sad = key[last], sad[last]
    ea, eb = key // (n + 1), key % (n + 1)
    o = np.argsort(-sad, kind="stable")
    parent = np.arange(n + 1)

    def find(i):
        r = i
        while parent[r] != r:
            r = parent[r]
        while parent[i] != r:
            parent[i], i = r, parent[i]
        return r

    pv, ppy, ppx = peak_val.copy(), py.astype(np.float64), px.astype(np.float64)
    md2 = md * md
    for a, b, sd in zip(ea[o].tolist(), eb[o].tolist(), sad[o].tolist()):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        low = min(pv[ra], pv[rb])
        if low - sd < h or (ppy[ra] - ppy[rb]) ** 2 + (ppx[ra] - ppx[rb]) ** 2 < md2:
            if pv[rb] > pv[ra]:
                ra, rb = rb, ra
            parent[rb] = ra  # ra keeps the higher peak
    roots = np.array([find(i) for i in range(n + 1)])
    _, inv = np.unique(roots, return_inverse=True)
    remap = inv.astype(np.int32)  # root 0 (background) -> 0
    return remap[lab]


def segment_nuclei(img, kind: str = "he", um_per_px: float = 0.5, roi_mask=None, **params):
    """Segment nuclei; returns ``(labels int32 (H, W), threshold)``.

    ``roi_mask`` (optional bool) only restricts the pixels used to estimate the threshold (together
    with the tissue mask for H&E); segmentation covers the whole image.
    """
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    p = _params(params)
    a = _check_image(img, kind)
    H, W = a.shape[:2]
    roi = _check_mask(roi_mask, (H, W))
    work = p["work_um_per_px"]
    k = int(float(work) / um) if work else 1
    if k >= 2 and min(H, W) >= 4 * k:
        # finer than needed (e.g. MERFISH DAPI at 0.11 µm/px): segment k x k block means, then
        # repeat the labels back to full resolution
        a_s = _block_mean(_unit_float(a), k)
        roi_s = None if roi is None else _block_mean(roi.astype(np.float32), k) >= 0.5
        lab_s, thr = _segment_native(a_s, kind, um * k, roi_s, p)
        lab = np.repeat(np.repeat(lab_s, k, axis=0), k, axis=1)[:H, :W]
        return np.ascontiguousarray(lab), thr
    return _segment_native(a, kind, um, roi, p)


def _subtract_background(ch: np.ndarray, radius_px: float) -> np.ndarray:
    """Channel minus its smooth background: a grey opening with a square of side 2r + 1 (which
    removes every bright structure narrower than that, i.e. the nuclei), smoothed by a box of the
    same size; negative values are clipped to 0. Separable, so cheap at any radius."""
    size = 2 * max(1, round(radius_px)) + 1
    if size >= min(ch.shape):
        size = max(3, (min(ch.shape) // 2) * 2 - 1)
    bg = ndi.grey_opening(ch, size=(size, size))
    bg = ndi.uniform_filter(bg, size)
    out = ch - bg
    np.maximum(out, 0, out=out)
    return out.astype(np.float32, copy=False)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (edge-padded to a multiple of k) of a (H, W[, C]) float array."""
    H, W = a.shape[:2]
    ph, pw = -H % k, -W % k
    if ph or pw:
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad, mode="edge")
    Hk, Wk = a.shape[0] // k, a.shape[1] // k
    return a.reshape(Hk, k, Wk, k, *a.shape[2:]).mean(axis=(1, 3), dtype=np.float32)


def _segment_native(a: np.ndarray, kind: str, um: float, roi, p: dict):
    H, W = a.shape[:2]
    ch = nuclear_channel(a, kind, um, p["sigma_um"])
    bg_um = p["background_um"]
    if bg_um is None:
        bg_um = 12.0 if kind == "dapi" else 0.0
    if float(bg_um) > 0:
        ch = _subtract_background(ch, float(bg_um) / um)
    thr = p["threshold"]
    if not isinstance(thr, (int, float, np.floating, np.integer)) or isinstance(thr, bool):
        stride = max(1, int(np.sqrt(H * W / 1e6)))  # estimate on a grid of <= ~1-2 Mpx
        sel = tissue_mask(a[::stride, ::stride], kind, um * stride, p["background_grey"]) if kind == "he" else None
        if sel is not None and not sel.any():
            sel = None  # no tissue found: estimate on every pixel
        if roi is not None:
            r = roi[::stride, ::stride]
            sel = r if sel is None else (sel & r)
        vals = ch[::stride, ::stride] if sel is None else ch[::stride, ::stride][sel]
        thr = _auto_threshold(vals, thr)
    else:
        thr = float(thr)
    floor = p["min_threshold"]
    if floor is None:
        floor = 0.03 if kind == "he" else 0.05
    thr = max(float(thr), float(floor))
    labels = np.zeros((H, W), np.int32)
    if not np.isfinite(thr):
        return labels, thr
    fg_all = ch > thr
    stride = max(1, int(np.sqrt(H * W / 1e6)))
    fv = ch[::stride, ::stride][fg_all[::stride, ::stride]]
    top = float(np.percentile(fv, 95)) if fv.size else thr + 1.0
    px_area = um * um
    min_px = max(1, int(np.ceil(float(p["min_area_um2"]) / px_area)))
    hole_px = int(float(p["max_hole_um2"]) / px_area)
    halo = max(8, int(np.ceil(float(p["overlap_um"]) / um)))
    nxt = 1
    for y0 in range(0, H, _TILE):
        for x0 in range(0, W, _TILE):
            y1, x1 = min(H, y0 + _TILE), min(W, x0 + _TILE)
            Y0, X0, Y1, X1 = max(0, y0 - halo), max(0, x0 - halo), min(H, y1 + halo), min(W, x1 + halo)
            fg = fg_all[Y0:Y1, X0:X1]
            if not fg.any():
                continue
            fg = _fill_small_holes(fg, hole_px)
            fg = _remove_small(fg, min_px)
            lab = _split_tile(fg, ch[Y0:Y1, X0:X1], thr, top, um, p)
            n = int(lab.max())
            if n == 0:
                continue
            idx = lab.ravel()
            area = np.bincount(idx, minlength=n + 1).astype(np.float64)
            yy, xx = np.divmod(np.arange(idx.size), lab.shape[1])
            cy = np.bincount(idx, weights=yy, minlength=n + 1) / np.maximum(area, 1)
            cx = np.bincount(idx, weights=xx, minlength=n + 1) / np.maximum(area, 1)
            cy += Y0
            cx += X0
            own = (area >= min_px) & (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
            own[0] = False
            ids = np.flatnonzero(own)
            remap = np.zeros(n + 1, np.int32)
            remap[ids] = np.arange(nxt, nxt + ids.size, dtype=np.int32)
            nxt += ids.size
            new = remap[lab]
            dst = labels[Y0:Y1, X0:X1]
            np.copyto(dst, new, where=new > 0)
    return labels, thr


# --------------------------------------------------------------------------------------------
# statistics


def _label_props(labels: np.ndarray):
    """Per-label pixel area and centroid (y, x) arrays indexed by label id (index 0 = background)."""
    n = int(labels.max()) if labels.size else 0
    idx = labels.ravel()
    area = np.bincount(idx, minlength=n + 1).astype(np.float64)
    H, W = labels.shape
    ys = np.bincount(idx, weights=np.repeat(np.arange(H, dtype=np.float64), W), minlength=n + 1)
    xs = np.bincount(idx, weights=np.tile(np.arange(W, dtype=np.float64), H), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy, cx = ys / area, xs / area
    return area, cy, cx


def _stats(labels, region, um, thr) -> NucleiStats:
    area, cy, cx = _label_props(labels)
    n = area.size - 1
    H, W = labels.shape
    if region is None:
        region_px = H * W
        nuc_px = int(np.count_nonzero(labels))
        ids = np.flatnonzero(area[1:] > 0) + 1
    else:
        region_px = int(np.count_nonzero(region))
        nuc_px = int(np.count_nonzero(labels[region]))
        ids = np.flatnonzero(area[1:] > 0) + 1
        iy = np.clip(np.round(cy[ids]).astype(np.int64), 0, H - 1)
        ix = np.clip(np.round(cx[ids]).astype(np.int64), 0, W - 1)
        ids = ids[region[iy, ix]]
    del n
    px_area = um * um
    a_um2 = area[ids] * px_area
    region_mm2 = region_px * px_area / 1e6
    count = int(ids.size)
    return NucleiStats(
        count=count,
        density_per_mm2=float(count / region_mm2) if region_mm2 > 0 else 0.0,
        mean_area_um2=float(a_um2.mean()) if count else 0.0,
        std_area_um2=float(a_um2.std()) if count else 0.0,
        area_fraction=float(nuc_px / region_px) if region_px else 0.0,
        area_mm2=float(region_mm2),
        labels=labels,
        threshold=float(thr),
    )


def measure_nuclei(img, kind: str = "he", um_per_px: float = 0.5, mask=None, **params) -> NucleiStats:
    """Nuclear morphometrics of ``img`` (in ``mask`` if given).

    img: (H, W, 3) RGB uint8 or float in [0, 1] for ``kind="he"``; (H, W) or (H, W, 1) for ``"dapi"``.
    mask: optional bool (H, W) region. ``area_mm2`` is the region's area; ``density_per_mm2`` and
    ``area_fraction`` are relative to it; a nucleus is counted when its centroid lies in it (its
    whole area enters the mean/std area). Segmentation and the threshold use the mask's bounding
    box plus a margin of ``overlap_um``, so a small region of a large image is cheap.
    ``labels`` has the image's full shape (zero outside the processed box).
    With no nuclei, ``mean_area_um2`` and ``std_area_um2`` are 0.
    """
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    a = _check_image(img, kind)
    H, W = a.shape[:2]
    m = _check_mask(mask, (H, W))
    if m is None:
        labels, thr = segment_nuclei(a, kind, um, **params)
        return _stats(labels, None, um, thr)
    labels = np.zeros((H, W), np.int32)
    if not m.any():
        return _stats(labels, m, um, float("nan"))
    p = _params(params)
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    halo = int(np.ceil(float(p["overlap_um"]) / um))
    Y0, Y1 = max(0, ys[0] - halo), min(H, ys[-1] + 1 + halo)
    X0, X1 = max(0, xs[0] - halo), min(W, xs[-1] + 1 + halo)
    sub_lab, thr = segment_nuclei(a[Y0:Y1, X0:X1], kind, um, roi_mask=m[Y0:Y1, X0:X1], **params)
    labels[Y0:Y1, X0:X1] = sub_lab
    return _stats(labels, m, um, thr)


def compare_table(images: dict, kind: str = "he", um_per_px: float = 0.5, mask=None, **params) -> pd.DataFrame:
    """One row per named image (index = name), columns = :data:`STAT_KEYS`."""
    rows = {}
    for name, img in images.items():
        if img is None:
            continue
        rows[str(name)] = measure_nuclei(img, kind, um_per_px, mask=mask, **params).as_dict()
    df = pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_KEYS))
    df.index.name = "image"
    if len(df):
        df["count"] = df["count"].astype(int)
    return df


def tile_stats(
    img, kind: str = "he", um_per_px: float = 0.5, tile_px: int = 256, tissue_mask=None, min_tissue: float = 0.5, **params
) -> pd.DataFrame:
    """Per-tile nuclei density and area fraction (for Spearman correlations between images).

    The image is segmented once (one global threshold), then cut into a grid of ``tile_px`` tiles.
    Each row: ``ty, tx, y0, x0, y1, x1, tissue_fraction, count, density_per_mm2, area_fraction,
    mean_area_um2``. Density and area fraction are relative to the tile's tissue area
    (``tissue_mask`` if given, else the whole tile). Tiles with ``tissue_fraction < min_tissue``
    are dropped. To pair tiles of two images, pass the same ``tissue_mask`` to both (for example
    :func:`tissue_mask` of the real image).
    """
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    tile_px = int(tile_px)
    if tile_px < 8:
        raise MorphometricsError(f"tile_px must be >= 8, got {tile_px}")
    a = _check_image(img, kind)
    H, W = a.shape[:2]
    tm = _check_mask(tissue_mask, (H, W))
    labels, _thr = segment_nuclei(a, kind, um, roi_mask=tm, **params)
    area, cy, cx = _label_props(labels)
    ids = np.flatnonzero(area[1:] > 0) + 1
    iy = np.clip(np.round(cy[ids]).astype(np.int64), 0, H - 1)
    ix = np.clip(np.round(cx[ids]).astype(np.int64), 0, W - 1)
    if tm is not None:
        sel = tm[iy, ix]
        ids, iy, ix = ids[sel], iy[sel], ix[sel]
    nty, ntx = -(-H // tile_px), -(-W // tile_px)
    tid = (iy // tile_px) * ntx + (ix // tile_px)
    cnt = np.bincount(tid, minlength=nty * ntx)
    asum = np.bincount(tid, weights=area[ids], minlength=nty * ntx)
    nuc = labels > 0
    if tm is not None:
        nuc &= tm
    rows = []
    px_area = um * um
    for ty in range(nty):
        for tx in range(ntx):
            y0, x0 = ty * tile_px, tx * tile_px
            y1, x1 = min(H, y0 + tile_px), min(W, x0 + tile_px)
            npx = (y1 - y0) * (x1 - x0)
            tpx = npx if tm is None else int(np.count_nonzero(tm[y0:y1, x0:x1]))
            frac = tpx / npx
            if frac < min_tissue or tpx == 0:
                continue
            k = ty * ntx + tx
            c = int(cnt[k])
            rows.append(
                {
                    "ty": ty,
                    "tx": tx,
                    "y0": y0,
                    "x0": x0,
                    "y1": y1,
                    "x1": x1,
                    "tissue_fraction": frac,
                    "count": c,
                    "density_per_mm2": c / (tpx * px_area / 1e6),
                    "area_fraction": int(np.count_nonzero(nuc[y0:y1, x0:x1])) / tpx,
                    "mean_area_um2": float(asum[k] / c * px_area) if c else 0.0,
                }
            )
    cols = ["ty", "tx", "y0", "x0", "y1", "x1", "tissue_fraction", "count", "density_per_mm2", "area_fraction", "mean_area_um2"]
    return pd.DataFrame(rows, columns=cols)


def footprint_stats(
    img, kind: str = "he", um_per_px: float = 0.5, centres_yx=None, diameter_px: float = 145.0, **params
) -> pd.DataFrame:
    """Nuclei in circular spot footprints: one row per centre (in input order).

    ``centres_yx``: (N, 2) spot centres in image px (y, x); ``diameter_px``: footprint diameter.
    Columns: ``y, x, footprint_px, count, density_per_mm2, area_fraction, mean_area_um2``
    (a nucleus counts when its centroid lies in the disc; area fraction is pixel-wise in the disc).
    The image is segmented once over the bounding box of all footprints (one threshold).
    """
    kind = _check_kind(kind)
    um = _check_um(um_per_px)
    a = _check_image(img, kind)
    H, W = a.shape[:2]
    c = np.asarray(centres_yx if centres_yx is not None else np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)
    cols = ["y", "x", "footprint_px", "count", "density_per_mm2", "area_fraction", "mean_area_um2"]
    if len(c) == 0:
        return pd.DataFrame([], columns=cols)
    r = float(diameter_px) / 2.0
    if not r > 0:
        raise MorphometricsError(f"diameter_px must be positive, got {diameter_px!r}")
    p = _params(params)
    halo = int(np.ceil(float(p["overlap_um"]) / um))
    Y0 = int(max(0, np.floor(c[:, 0].min() - r) - halo))
    Y1 = int(min(H, np.ceil(c[:, 0].max() + r) + 1 + halo))
    X0 = int(max(0, np.floor(c[:, 1].min() - r) - halo))
    X1 = int(min(W, np.ceil(c[:, 1].max() + r) + 1 + halo))
    rows = []
    if Y1 <= Y0 or X1 <= X0:
        labels = np.zeros((0, 0), np.int32)
    else:
        roi = np.zeros((Y1 - Y0, X1 - X0), bool)
        for y, x in c:
            _disc_into(roi, y - Y0, x - X0, r)
        labels, _thr = segment_nuclei(a[Y0:Y1, X0:X1], kind, um, roi_mask=roi if roi.any() else None, **params)
    area, cy, cx = _label_props(labels) if labels.size else (np.zeros(1), np.zeros(1), np.zeros(1))
    ids = np.flatnonzero(area[1:] > 0) + 1
    px_area = um * um
    for y, x in c:
        ly, lx = y - Y0, x - X0
        sel = ids[(cy[ids] - ly) ** 2 + (cx[ids] - lx) ** 2 <= r * r]
        disc = np.zeros(labels.shape, bool)
        _disc_into(disc, ly, lx, r)
        npx = int(np.count_nonzero(disc))
        nuc = int(np.count_nonzero(labels[disc])) if npx else 0
        k = int(sel.size)
        rows.append(
            {
                "y": float(y),
                "x": float(x),
                "footprint_px": npx,
                "count": k,
                "density_per_mm2": k / (npx * px_area / 1e6) if npx else 0.0,
                "area_fraction": nuc / npx if npx else 0.0,
                "mean_area_um2": float(area[sel].mean() * px_area) if k else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _disc_into(m: np.ndarray, cy: float, cx: float, r: float) -> None:
    H, W = m.shape
    y0, y1 = max(0, int(np.floor(cy - r))), min(H, int(np.ceil(cy + r)) + 1)
    x0, x1 = max(0, int(np.floor(cx - r))), min(W, int(np.ceil(cx + r)) + 1)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    m[y0:y1, x0:x1] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
