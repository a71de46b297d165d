"""How faithful is generated tissue? Nuclear morphometrics of generated vs real, globally and over space.

:func:`evaluate` renders the generator over a region, resamples the real
image onto the same output-pixel grid (through the canvas affine), segments
nuclei in both with :mod:`napari_gdt.analysis.morphometrics` and reports:

- ``nuclei_density_ratio``, ``nuclear_area_ratio``, ``area_fraction_ratio``:
  generated over real, inside the real tissue mask of the region;
- ``tile_spearman_nuclei``, ``tile_spearman_area_fraction``: Spearman
  correlation over units of generated against real nuclei density and area
  fraction. Units are the spot footprints for spot data (``canvas.meta["spots"]``),
  else ~256 px tiles inside tissue;
- ``baseline``: the same keys for a trivial baseline, a flat image of the
  real tissue's mean colour (inside tissue; the real background outside);
- ``baseline_blur`` (only with ``blur_baseline=True``): the same for the real
  image blurred with a Gaussian of ``blur_um``. It is not a trivial baseline
  (it is made from the real image), but it shows what the morphometrics make
  of structure without sharp nuclei;
- ``real`` / ``generated``: the global statistics.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import GDTError
from ..expression.canvas import ExpressionCanvas

__all__ = [
    "KEYS",
    "compare_to_baseline",
    "evaluate",
    "flat_baseline",
    "prepare_real",
    "real_on_model_grid",
    "record_validation",
    "score_generated",
    "spot_units",
    "tissue_region",
]

KEYS = (
    "nuclei_density_ratio",
    "nuclear_area_ratio",
    "area_fraction_ratio",
    "tile_spearman_nuclei",
    "tile_spearman_area_fraction",
)


def real_on_model_grid(image: np.ndarray, canvas: ExpressionCanvas, px_per_bin: int, region) -> np.ndarray:
    """The real image resampled onto output px ``region`` of the model grid, float32 (H, W, C) in [0, 1]."""
    from ..pixels import resample_to_model_grid

    T = np.array([[1.0, 0.0, region.y0 / px_per_bin], [0.0, 1.0, region.x0 / px_per_bin], [0.0, 0.0, 1.0]])
    return resample_to_model_grid(image, np.asarray(canvas.affine) @ T, px_per_bin, region.shape)


def spot_units(canvas: ExpressionCanvas, px_per_bin: int, region) -> tuple[np.ndarray, float] | None:
    """Spot centres (output px, relative to ``region``) wholly inside it, and the diameter in output px."""
    spots = canvas.meta.get("spots") if isinstance(canvas.meta, dict) else None
    if not spots or not spots.get("centres_px"):
        return None
    c = np.asarray(spots["centres_px"], dtype=float).reshape(-1, 2)
    Ainv = np.linalg.inv(np.asarray(canvas.affine, dtype=float))
    hom = np.concatenate([c, np.ones((len(c), 1))], axis=1) @ Ainv.T
    out = hom[:, :2] * px_per_bin - np.array([region.y0, region.x0])
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(canvas.affine)[:2, :2])))) / px_per_bin  # image px per output px
    d = float(spots["diameter_px"]) / scale
    r = d / 2
    H, W = region.shape
    inside = (out[:, 0] - r >= 0) & (out[:, 1] - r >= 0) & (out[:, 0] + r <= H) & (out[:, 1] + r <= W)
    return out[inside], d


def tissue_region(canvas: ExpressionCanvas, px_per_bin: int, shape_px):
    """Default region: for spot data the spots' bounding box plus one spot diameter (the whole
    tissue, without the empty glass around it); else None (the whole canvas)."""
    from ..rendering.tiles import Region

    spots = canvas.meta.get("spots") if isinstance(canvas.meta, dict) else None
    if not spots or not spots.get("centres_px"):
        return None
    c = np.asarray(spots["centres_px"], dtype=float).reshape(-1, 2)
    Ainv = np.linalg.inv(np.asarray(canvas.affine, dtype=float))
    out = (np.concatenate([c, np.ones((len(c), 1))], axis=1) @ Ainv.T)[:, :2] * px_per_bin
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(canvas.affine)[:2, :2])))) / px_per_bin
    m = float(spots["diameter_px"]) / scale
    H, W = shape_px
    y0, x0 = (np.floor(out.min(axis=0) - m)).astype(int)
    y1, x1 = (np.ceil(out.max(axis=0) + m)).astype(int)
    return Region(max(0, int(y0)), min(H, int(y1)), max(0, int(x0)), min(W, int(x1)))


def _ratio(a, b):
    if b is None or a is None or not np.isfinite(b) or b == 0:
        return None
    return float(a) / float(b)


def expected_rho(seed_mean, between_seeds, n_seeds: int) -> tuple[float | None, float | None]:
    """(ρ of the model's expectation, ρ of one render) from a ``n_seeds``-seed mean's ρ and the mean
    ρ between two seeds (see :func:`spatial_rho_context`); ``(None, None)`` when not estimable: when
    the seed mean holds more render noise than signal (reliability below 0.5), the correction would
    mostly amplify noise."""
    sm, b, k = seed_mean, between_seeds, int(n_seeds)
    if sm is None or b is None or k < 2 or not np.isfinite(sm) or not np.isfinite(b) or b <= 0:
        return None, None
    reliability = k * b / (1.0 + (k - 1) * b)
    if reliability < 0.5:
        return None, None
    exp = float(np.clip(sm / np.sqrt(reliability), -1.0, 1.0))
    return exp, float(exp * np.sqrt(b))


def spatial_rho_context(unit_tables: list, real_units) -> dict | None:
    """How much of ``tile_spearman_*`` is the generator's own randomness (two or more seeds).

    Per target (``tile_spearman_nuclei``, ``tile_spearman_area_fraction``): ``seed_mean`` is the
    Spearman ρ of the per-unit values averaged over seeds against the real ones (the model's
    expected picture, closer to what a regression baseline predicts), and ``between_seeds`` the
    mean pairwise ρ between two seeds' renders (their reliability: how far one render can follow
    anything). ``expected`` corrects ``seed_mean`` for the render noise left in a k-seed mean
    (Spearman's correction for attenuation): with ``b`` = ``between_seeds``, the mean of k renders
    has reliability ``k b / (1 + (k - 1) b)``, so the ρ of the model's expectation is about
    ``seed_mean / sqrt(k b / (1 + (k - 1) b))``, and one render's ρ about ``expected * sqrt(b)``
    (``render_from_expected``). ``expected`` is what compares like with like against a regression
    baseline (also an expectation). Context only: the acceptance figure stays the per-render ρ.
    """
    if len(unit_tables) < 2:
        return None
    out = {}
    k = len(unit_tables)
    for col, key in (("density_per_mm2", "tile_spearman_nuclei"), ("area_fraction", "tile_spearman_area_fraction")):
        vals = np.stack([np.asarray(t[col], float) for t in unit_tables])
        pairs = [_spearman(vals[i], vals[j]) for i in range(len(vals)) for j in range(i + 1, len(vals))]
        pairs = [p for p in pairs if p is not None]
        sm = _spearman(vals.mean(axis=0), np.asarray(real_units[col], float))
        b = float(np.mean(pairs)) if pairs else None
        exp, rend = expected_rho(sm, b, k)
        out[key] = {"seed_mean": sm, "between_seeds": b, "n_seeds": k, "expected": exp, "render_from_expected": rend}
    return out


def _spearman(a, b):
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    r = spearmanr(a, b).statistic
    return None if not np.isfinite(r) else float(r)


def _units(img, kind, um, units, tile_px, mask):
    from . import morphometrics as mm

    if units is not None:
        centres, d = units
        return mm.footprint_stats(img, kind, um, centres_yx=centres, diameter_px=d)
    return mm.tile_stats(img, kind, um, tile_px=tile_px, tissue_mask=mask)


def _compare(real_stats, real_units, img, kind, um, mask, units, tile_px, units_out=None) -> tuple[dict, dict]:
    from . import morphometrics as mm

    g = mm.measure_nuclei(img, kind, um, mask=mask).as_dict()
    gu = _units(img, kind, um, units, tile_px, mask)
    if units_out is not None:
        units_out.append(gu)
    out = {
        "nuclei_density_ratio": _ratio(g["density_per_mm2"], real_stats["density_per_mm2"]),
        "nuclear_area_ratio": _ratio(g["mean_area_um2"], real_stats["mean_area_um2"]),
        "area_fraction_ratio": _ratio(g["area_fraction"], real_stats["area_fraction"]),
        "tile_spearman_nuclei": _spearman(gu["density_per_mm2"], real_units["density_per_mm2"]),
        "tile_spearman_area_fraction": _spearman(gu["area_fraction"], real_units["area_fraction"]),
    }
    return out, g


def _badness(d: dict, key: str) -> float:
    v = d.get(key)
    if key.startswith("tile_spearman"):
        return -(v if v is not None else 0.0)
    return abs(math.log(v)) if v not in (None, 0) and v > 0 else float("inf")


def compare_to_baseline(res: dict, baseline_key: str = "baseline") -> dict:
    """Per key: is the generated figure better than the baseline's (closer ratio, higher correlation)?"""
    b = res.get(baseline_key, {})
    return {k: _badness(res, k) < _badness(b, k) for k in KEYS}


def prepare_real(bundle, canvas: ExpressionCanvas, image: np.ndarray, region, tile_px: int = 256) -> dict:
    """The real side of :func:`evaluate` for output px ``region`` (computed once, reused over seeds).

    Returns a dict: ``real`` (the real image on the model grid; (H, W) for DAPI), ``mask`` (real
    tissue mask, None for DAPI), ``units``, ``real_stats``, ``real_labels`` (nuclei labels),
    ``real_units`` (per-unit table),
    ``kind``, ``um``, ``tile_px``, ``region``.
    """
    from . import morphometrics as mm

    ppb = bundle.px_per_bin
    um = bundle.um_per_px
    kind = "he" if bundle.output_kind == "he" else "dapi"
    real = real_on_model_grid(image, canvas, ppb, region)
    want = int(getattr(bundle, "out_channels", 0) or (3 if kind == "he" else 1))
    if real.shape[-1] != want:
        raise GDTError(f"the real image has {real.shape[-1]} channel(s) but the model outputs {want}")
    if kind == "dapi":
        real = real[..., 0]
    mask = mm.tissue_mask(real, kind, um) if kind == "he" else None
    if mask is not None and not mask.any():
        raise GDTError(f"no tissue found in region {region} of the real image")
    units = spot_units(canvas, ppb, region)
    if units is not None and len(units[0]) < 3:
        units = None
    rs = mm.measure_nuclei(real, kind, um, mask=mask)
    real_units = _units(real, kind, um, units, tile_px, mask)
    return {
        "real": real,
        "mask": mask,
        "units": units,
        "real_stats": rs.as_dict(),
        "real_labels": rs.labels,
        "real_units": real_units,
        "kind": kind,
        "um": float(um),
        "tile_px": int(tile_px),
        "region": region,
    }


def score_generated(prep: dict, gen: np.ndarray, units_out: list | None = None) -> tuple[dict, dict]:
    """The :data:`KEYS` of a generated image against :func:`prepare_real`'s real side, and its global stats.

    ``units_out``, a list, receives the generated per-unit table (spot footprints or tiles)."""
    if prep["kind"] == "dapi" and gen.ndim == 3:
        gen = gen[..., 0]
    if gen.shape[:2] != prep["real"].shape[:2]:
        raise GDTError(f"generated image {gen.shape[:2]} and real image {prep['real'].shape[:2]} differ in shape")
    return _compare(
        prep["real_stats"],
        prep["real_units"],
        gen,
        prep["kind"],
        prep["um"],
        prep["mask"],
        prep["units"],
        prep["tile_px"],
        units_out,
    )


def flat_baseline(prep: dict) -> np.ndarray:
    """The trivial baseline image: the real tissue's mean colour inside tissue, the real background outside."""
    real, mask = prep["real"], prep["mask"]
    if prep["kind"] == "he":
        flat = real.copy()
        flat[mask] = real[mask].mean(axis=0)
        return flat
    return np.full_like(real, real.mean())


def evaluate(
    bundle,
    canvas: ExpressionCanvas,
    image: np.ndarray,
    region=None,
    seed: int = 0,
    tile_px: int = 256,
    device: str = "auto",
    blur_um: float = 10.0,
    blur_baseline: bool = False,
    renderer=None,
    progress=None,
) -> dict:
    """Compare generated with real tissue; see the module docstring for the keys.

    ``image`` is the real image registered to ``canvas`` (its pixels are what
    ``canvas.affine`` maps bins to). ``region`` is a
    :class:`~napari_gdt.rendering.tiles.Region` in output px (default: the whole canvas).
    ``renderer`` may be a prepared :class:`TileRenderer` (e.g. with edits applied).
    For the fidelity yardstick (tissue outline, architecture, lattice, baselines fitted on
    training sections, seeds, edits) see :func:`napari_gdt.analysis.fidelity.evaluate_model`.
    """
    from scipy import ndimage as ndi

    from ..rendering.tiles import TileRenderer

    r = renderer or TileRenderer(bundle, canvas, seed=seed, device=device, batch_size=4)
    region = r.check_region(region if region is not None else tissue_region(canvas, bundle.px_per_bin, r.shape_px))
    um = bundle.um_per_px
    gen = r.render_region(region, progress=progress)
    prep = prepare_real(bundle, canvas, image, region, tile_px)
    real, kind = prep["real"], prep["kind"]
    if gen.shape[-1] != (3 if kind == "he" else 1) and gen.ndim == 3:
        raise GDTError(f"the real image has {3 if kind == 'he' else 1} channel(s) but the model outputs {gen.shape[-1]}")
    res, gen_stats = score_generated(prep, gen)
    res["baseline"], _ = score_generated(prep, flat_baseline(prep))
    res["better_than_baseline"] = compare_to_baseline(res, "baseline")
    if blur_baseline:
        s = blur_um / um
        blur = (
            np.stack([ndi.gaussian_filter(real[..., c], s) for c in range(real.shape[-1])], -1)
            if real.ndim == 3
            else ndi.gaussian_filter(real, s)
        )
        res["baseline_blur"], _ = score_generated(prep, blur)
        res["better_than_baseline_blur"] = compare_to_baseline(res, "baseline_blur")
    res.update(
        {
            "real": prep["real_stats"],
            "generated": gen_stats,
            "units": "spot footprints" if prep["units"] is not None else f"tiles of {tile_px} px",
            "n_units": len(prep["real_units"]),
            "region": str(region),
            "um_per_px": float(um),
            "kind": kind,
            "seed": int(seed),
            "model": str(bundle.card.get("name", "")),
        }
    )
    return res


def record_validation(bundle_path, label: str, result: dict, command: str | None = None) -> dict:
    """Write ``result`` into the model card of the bundle file at ``bundle_path`` under
    ``validation.morphometrics[label]`` (tensors unchanged); returns the new card."""
    from pathlib import Path

    from safetensors.torch import load_file

    from ..models.bundle import META_KEY, read_card

    p = Path(bundle_path)
    card = read_card(p)
    tensors = load_file(str(p))
    val = dict(card.get("validation") or {})
    morph = dict(val.get("morphometrics") or {}) if isinstance(val.get("morphometrics"), dict) else {}
    entry = dict(result)
    if command:
        entry["command"] = command
    morph[label] = entry
    val["morphometrics"] = morph
    card["validation"] = val
    import json

    from safetensors.torch import save_file

    tmp = p.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(card)})
    import os

    os.replace(tmp, p)
    return card
