"""Named regions and their bin masks.

A region is defined in one of these ways (the recipe's ``regions`` entries):

``{"rect": [y0, x0, y1, x1]}``
    A half-open box in output-image pixels.
``{"polygon": [[y, x], ...]}``
    A polygon in output-image pixels (at least 3 vertices).
``{"labels": "file.tif", "value": n}``
    The bins whose label is ``n`` in a label image on the bin grid (shape
    ``(Hb, Wb)``; ``.tif``/``.tiff``/``.png``/``.npy``; path relative to the
    recipe). In memory the image can also be given as an array.
``{"gene": "EPCAM", "min": 5.0, "max": 100.0}``
    The bins where that gene's count is ``>= min`` (and ``< max`` if given),
    on the canvas as the recipe received it (before any edit).

A bin ``(i, j)`` covers output pixels ``[i*ppb, (i+1)*ppb) x [j*ppb, (j+1)*ppb)``.
It belongs to a rect or polygon when its **centre** lies inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RecipeError

__all__ = [
    "RegionDef",
    "rect_mask",
    "polygon_mask",
    "threshold_mask",
    "read_labels",
    "write_labels",
    "shape_to_region",
    "shapes_to_masks",
]

LABEL_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def _centres(n: int, ppb: float) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) + 0.5) * float(ppb)


def rect_mask(n_bins: tuple[int, int], px_per_bin: float, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Bins whose centre lies in ``[y0, y1) x [x0, x1)`` (output px)."""
    cy = _centres(n_bins[0], px_per_bin)
    cx = _centres(n_bins[1], px_per_bin)
    ry = (cy >= y0) & (cy < y1)
    rx = (cx >= x0) & (cx < x1)
    return ry[:, None] & rx[None, :]


def polygon_mask(n_bins: tuple[int, int], px_per_bin: float, vertices) -> np.ndarray:
    """Bins whose centre lies inside the polygon ``[[y, x], ...]`` (output px)."""
    from skimage.measure import points_in_poly

    v = np.asarray(vertices, dtype=np.float64)
    H, W = n_bins
    mask = np.zeros((H, W), dtype=bool)
    if len(v) < 3:
        return mask
    # only test bins in the polygon's bounding box
    ppb = float(px_per_bin)
    i0 = max(int(np.floor(v[:, 0].min() / ppb)) - 1, 0)
    i1 = min(int(np.ceil(v[:, 0].max() / ppb)) + 1, H)
    j0 = max(int(np.floor(v[:, 1].min() / ppb)) - 1, 0)
    j1 = min(int(np.ceil(v[:, 1].max() / ppb)) + 1, W)
    if i0 >= i1 or j0 >= j1:
        return mask
    cy, cx = np.meshgrid(_centres(H, ppb)[i0:i1], _centres(W, ppb)[j0:j1], indexing="ij")
    inside = points_in_poly(np.stack([cy.ravel(), cx.ravel()], axis=1), v)
    mask[i0:i1, j0:j1] = inside.reshape(cy.shape)
    return mask


def threshold_mask(canvas, gene: str, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Bins where ``gene`` has ``vmin <= count < vmax`` (either bound optional)."""
    if gene not in canvas.genes:
        raise RecipeError(f"threshold region: gene {gene!r} is not in the canvas")
    g = canvas.genes.index(gene)
    x = np.asarray(canvas.data[g], dtype=np.float32)
    m = np.ones(x.shape, dtype=bool)
    if vmin is not None:
        m &= x >= vmin
    if vmax is not None:
        m &= x < vmax
    return m


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image (``.tif``/``.tiff``/``.png``/``.npy``) as a 2-D integer array."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: labels file not found")
    suf = path.suffix.lower()
    try:
        if suf == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suf in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(str(path))
        elif suf == ".png":
            from skimage.io import imread

            arr = imread(str(path))
        else:
            raise RecipeError(f"{path}: labels file must be one of {', '.join(LABEL_SUFFIXES)}")
    except RecipeError:
        raise
    except Exception as e:  # noqa: BLE001 - report any reader failure with the file name
        raise RecipeError(f"{path}: cannot read labels file ({e})") from None
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise RecipeError(f"{path}: labels must be a 2-D integer image, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write a 2-D label image (by extension; ``.tif`` is compressed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    suf = path.suffix.lower()
    if suf == ".npy":
        np.save(path, labels)
    elif suf in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(str(path), labels.astype(np.int32 if labels.max(initial=0) > 65535 else np.uint16), compression="zlib")
    else:
        raise RecipeError(f"{path}: write labels as .tif or .npy")
    return path


@dataclass
class RegionDef:
    """One named region of a recipe.

    ``spec`` is the JSON object of the recipe (see the module docstring).
    ``array`` optionally holds a labels image in memory (then ``spec['labels']``
    is the file name it is saved under).
    """

    name: str
    spec: dict[str, Any]
    array: np.ndarray | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        for k in ("rect", "polygon", "labels", "gene"):
            if k in self.spec:
                return k
        return "?"

    def validate(self, where: str = "recipe") -> None:
        """Check the spec's structure (no canvas needed)."""
        s, n = self.spec, self.name
        if not isinstance(s, dict):
            raise RecipeError(f"{where}: region {n!r} must be an object, got {type(s).__name__}")
        kinds = [k for k in ("rect", "polygon", "labels", "gene") if k in s]
        if len(kinds) != 1:
            raise RecipeError(f"{where}: region {n!r} needs exactly one of 'rect', 'polygon', 'labels', 'gene' (got {sorted(s)})")
        k = kinds[0]
        if k == "rect":
            r = s["rect"]
            if not (isinstance(r, (list, tuple)) and len(r) == 4 and all(_is_num(v) for v in r)):
                raise RecipeError(f"{where}: region {n!r} field 'rect' must be [y0, x0, y1, x1] numbers, got {r!r}")
            if not (r[2] > r[0] and r[3] > r[1]):
                raise RecipeError(f"{where}: region {n!r} field 'rect' {r!r} is empty (need y1 > y0 and x1 > x0)")
        elif k == "polygon":
            p = s["polygon"]
            ok = (
                isinstance(p, (list, tuple))
                and len(p) >= 3
                and all(isinstance(q, (list, tuple)) and len(q) == 2 and all(_is_num(v) for v in q) for q in p)
            )
            if not ok:
                raise RecipeError(f"{where}: region {n!r} field 'polygon' must be >= 3 [y, x] vertices, got {_short(p)}")
        elif k == "labels":
            if not isinstance(s["labels"], str) or not s["labels"]:
                raise RecipeError(f"{where}: region {n!r} field 'labels' must be a file name, got {s['labels']!r}")
            v = s.get("value")
            if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                raise RecipeError(f"{where}: region {n!r} field 'value' must be a positive integer label, got {v!r}")
        else:
            if not isinstance(s["gene"], str):
                raise RecipeError(f"{where}: region {n!r} field 'gene' must be a gene name, got {s['gene']!r}")
            if "min" not in s and "max" not in s:
                raise RecipeError(f"{where}: region {n!r} (gene threshold) needs 'min' and/or 'max'")
            for b in ("min", "max"):
                if b in s and not _is_num(s[b]):
                    raise RecipeError(f"{where}: region {n!r} field {b!r} must be a number, got {s[b]!r}")

    def mask(self, canvas, px_per_bin: float, base_dir: Path | None = None, where: str = "recipe") -> np.ndarray:
        """The region's bool mask on the canvas bin grid, shape ``(Hb, Wb)``."""
        s = self.spec
        n_bins = canvas.n_bins
        k = self.kind
        if k == "rect":
            y0, x0, y1, x1 = (float(v) for v in s["rect"])
            return rect_mask(n_bins, px_per_bin, y0, x0, y1, x1)
        if k == "polygon":
            return polygon_mask(n_bins, px_per_bin, s["polygon"])
        if k == "gene":
            if s["gene"] not in canvas.genes:
                raise RecipeError(f"{where}: region {self.name!r} thresholds gene {s['gene']!r}, which is not in the canvas")
            return threshold_mask(canvas, s["gene"], s.get("min"), s.get("max"))
        if k == "labels":
            arr = self.array
            if arr is None:
                p = Path(s["labels"])
                if not p.is_absolute() and base_dir is not None:
                    p = Path(base_dir) / p
                arr = read_labels(p)
                self.array = arr
            if tuple(arr.shape) != tuple(n_bins):
                raise RecipeError(
                    f"{where}: region {self.name!r} labels {s['labels']!r} have shape {tuple(arr.shape)}, but the canvas bin "
                    f"grid is {tuple(n_bins)}"
                )
            return np.asarray(arr) == int(s["value"])
        raise RecipeError(f"{where}: region {self.name!r} has no geometry")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _short(v, n=60) -> str:
    t = repr(v)
    return t if len(t) <= n else t[: n - 3] + "..."


# --------------------------------------------------------------- napari Shapes
def shape_to_region(vertices, shape_type: str) -> dict:
    """A recipe region spec from one napari shape (vertices in world = output px).

    Axis-aligned rectangles become ``rect``; polygons and rotated rectangles
    become ``polygon``; ellipses become a 64-vertex polygon.
    """
    v = np.asarray(vertices, dtype=np.float64)[:, -2:]
    if shape_type == "rectangle":
        ys, xs = np.unique(np.round(v[:, 0], 6)), np.unique(np.round(v[:, 1], 6))
        if len(ys) == 2 and len(xs) == 2:
            return {"rect": [float(ys[0]), float(xs[0]), float(ys[1]), float(xs[1])]}
        return {"polygon": v.tolist()}
    if shape_type == "polygon":
        return {"polygon": v.tolist()}
    if shape_type == "ellipse":
        c = v.mean(axis=0)
        ry = (v[:, 0].max() - v[:, 0].min()) / 2
        rx = (v[:, 1].max() - v[:, 1].min()) / 2
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return {"polygon": np.stack([c[0] + ry * np.sin(t), c[1] + rx * np.cos(t)], axis=1).tolist()}
    raise RecipeError(f"shape type {shape_type!r} has no area; draw a rectangle, polygon or ellipse")


def shapes_to_masks(data, shape_types, n_bins: tuple[int, int], px_per_bin: float) -> list[np.ndarray]:
    """Bin masks of napari Shapes data (one per shape)."""
    masks = []
    for verts, kind in zip(data, shape_types):
        spec = shape_to_region(verts, kind)
        if "rect" in spec:
            masks.append(rect_mask(n_bins, px_per_bin, *spec["rect"]))
        else:
            masks.append(polygon_mask(n_bins, px_per_bin, spec["polygon"]))
    return masks
