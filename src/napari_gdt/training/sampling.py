"""Paired patch sampling: expression windows and the matching real-image tiles.

The real image is resampled once onto the model's output-pixel grid: output
pixel ``p`` (in the canvas' output frame, ``px_per_bin`` px per bin) sits at
real-image pixel ``canvas.affine @ (p / px_per_bin)``. A window of ``n`` bins
starting at bin ``b0`` produces ``geometry.out_len(n)`` px starting at
``geometry.out_origin(b0)``; the target is the resampled image there.
Augmentation (rot90 and flips) is applied identically to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GDTError, ReaderError
from ..expression.canvas import ExpressionCanvas
from ..models.base import Geometry

__all__ = ["PairedSection", "PatchSampler", "augment", "read_image", "resample_to_model_grid"]


def read_image(path) -> np.ndarray:
    """Read a real image as ``(H, W, C)`` uint8/uint16 (greyscale gets C=1)."""
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p}: no such image file")
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(str(p))
    else:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I", "RGB") else im)
        except Exception as e:
            raise ReaderError(f"{p}: not a readable image ({e})") from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ReaderError(f"{p}: expected a 2-D greyscale or RGB image, got shape {img.shape}")
    if img.shape[-1] == 4:
        img = img[..., :3]
    return img


def _to_unit(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    return img / max(float(img.max()), 1e-6) if img.max() > 1.0 else img


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def resample_to_model_grid(img: np.ndarray, canvas_affine: np.ndarray, px_per_bin: int, out_shape: tuple[int, int]) -> np.ndarray:
    """Resample a real image onto the model's output grid; returns float32 ``(H, W, C)`` in [0, 1].

    ``canvas_affine`` maps bins to real-image pixels. Output pixel ``p`` maps to
    real pixel ``A @ (p / px_per_bin)``. A pure integer down-scale with an
    aligned origin is done by block averaging (exact area mean); anything else
    by Gaussian pre-smoothing and linear interpolation.
    """
    A = np.asarray(canvas_affine, dtype=float) @ np.diag([1.0 / px_per_bin, 1.0 / px_per_bin, 1.0])
    H, W = int(out_shape[0]), int(out_shape[1])
    C = img.shape[-1]
    sy, sx = A[0, 0], A[1, 1]
    ty, tx = A[0, 2], A[1, 2]
    axis_aligned = abs(A[0, 1]) < 1e-9 and abs(A[1, 0]) < 1e-9
    if axis_aligned and abs(sy - round(sy)) < 1e-9 and abs(sx - round(sx)) < 1e-9 and round(sy) == round(sx) and round(sy) >= 1 and abs(ty - round(ty)) < 1e-9 and abs(tx - round(tx)) < 1e-9:
        s, oy, ox = int(round(sy)), int(round(ty)), int(round(tx))
        out = np.ones((H, W, C), dtype=np.float32) if C == 3 else np.zeros((H, W, C), dtype=np.float32)
        # rows/cols of the output fully inside the image
        y_lo, x_lo = max(0, _ceil_div(-oy, s)), max(0, _ceil_div(-ox, s))
        y_hi = min(H, (img.shape[0] - oy) // s)
        x_hi = min(W, (img.shape[1] - ox) // s)
        if y_hi > y_lo and x_hi > x_lo:
            for c in range(C):  # per channel keeps peak memory low
                blk = img[oy + y_lo * s : oy + y_hi * s, ox + x_lo * s : ox + x_hi * s, c]
                blk = _to_unit(blk).reshape(y_hi - y_lo, s, x_hi - x_lo, s).mean(axis=(1, 3))
                out[y_lo:y_hi, x_lo:x_hi, c] = blk
        return out
    from scipy import ndimage

    scale = max(abs(sy), abs(sx))
    out = np.empty((H, W, C), dtype=np.float32)
    M = A[:2, :2]
    off = A[:2, 2]
    for c in range(C):
        ch = _to_unit(img[..., c])
        if scale > 1.5:
            ch = ndimage.gaussian_filter(ch, sigma=0.4 * scale)
        out[..., c] = ndimage.affine_transform(ch, M, offset=off, output_shape=(H, W), order=1, mode="constant", cval=1.0 if C == 3 else 0.0)
    return out


@dataclass
class PairedSection:
    """One canvas and its registered image on the model grid (all in memory).

    ``counts`` is ``(G, Hb, Wb)`` float32 aligned to the model's panel;
    ``image`` is ``(H, W, C)`` float32 in [0, 1] with ``H = Hb * px_per_bin``.
    ``exclude`` is a list of output-px boxes ``(y0, y1, x0, x1)`` that training
    patches must not touch (held-out validation regions).
    """

    name: str
    counts: np.ndarray
    image: np.ndarray
    px_per_bin: int
    exclude: list = field(default_factory=list)

    @classmethod
    def from_canvas(cls, canvas: ExpressionCanvas, image: np.ndarray, genes: list[str], px_per_bin: int, name: str = "section", exclude=None):
        c = canvas.align(genes, where=name)
        counts = np.asarray(c.data.compute() if hasattr(c.data, "compute") else c.data, dtype=np.float32)
        Hb, Wb = counts.shape[1:]
        img = resample_to_model_grid(image, canvas.affine, px_per_bin, (Hb * px_per_bin, Wb * px_per_bin))
        return cls(name=name, counts=counts, image=img, px_per_bin=px_per_bin, exclude=list(exclude or []))


def augment(counts: np.ndarray, image: np.ndarray, k: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k`` x 90 degrees and optionally flip left-right: counts (G,h,w), image (H,W,C)."""
    counts = np.rot90(counts, k, axes=(1, 2))
    image = np.rot90(image, k, axes=(0, 1))
    if flip:
        counts = counts[:, :, ::-1]
        image = image[:, ::-1]
    return np.ascontiguousarray(counts), np.ascontiguousarray(image)


class PatchSampler:
    """Draw random paired patches from one or more sections.

    Window origins are drawn where the window holds expression (bins with
    counts > 0 near the window centre), with a fraction ``p_empty`` drawn
    uniformly so the model also sees empty background.
    """

    def __init__(self, sections: list[PairedSection], geometry: Geometry, window_bins: int, seed: int = 0, augment: bool = True, p_empty: float = 0.1):
        if not sections:
            raise GDTError("training needs at least one (image, expression) pair")
        self.sections = sections
        self.geo = geometry
        self.n = int(window_bins)
        self.out = geometry.out_len(self.n)
        if self.out <= 0:
            raise GDTError(f"window of {self.n} bins gives no output for this architecture (shrink {geometry.shrink} px); use a larger --patch-bins")
        self.rng = np.random.default_rng(seed)
        self.augment = augment
        self.p_empty = p_empty
        self._cands = [self._candidates(s) for s in sections]
        weights = np.array([max(len(c[0]), 1) for c in self._cands], dtype=float)
        if all(len(c[0]) == 0 and len(c[1]) == 0 for c in self._cands):
            raise GDTError("no valid training windows: sections are smaller than one patch or fully excluded")
        self.section_p = weights / weights.sum()

    def _valid(self, s: PairedSection, by: int, bx: int) -> bool:
        oy, ox = self.geo.out_origin(by), self.geo.out_origin(bx)
        H, W = s.image.shape[:2]
        if oy < 0 or ox < 0 or oy + self.out > H or ox + self.out > W:
            return False
        for y0, y1, x0, x1 in s.exclude:
            # the whole input window (in output px) must avoid the excluded box
            wy0, wx0 = by * s.px_per_bin, bx * s.px_per_bin
            wy1, wx1 = wy0 + self.n * s.px_per_bin, wx0 + self.n * s.px_per_bin
            if wy0 < y1 and y0 < wy1 and wx0 < x1 and x0 < wx1:
                return False
        return True

    def _candidates(self, s: PairedSection):
        Hb, Wb = s.counts.shape[1:]
        tot = s.counts.sum(axis=0)
        full, empty = [], []
        half = self.n // 2
        for by in range(-1, Hb - self.n + 2):
            for bx in range(-1, Wb - self.n + 2):
                if not self._valid(s, by, bx):
                    continue
                cy, cx = min(max(by + half, 0), Hb - 1), min(max(bx + half, 0), Wb - 1)
                (full if tot[cy, cx] > 0 else empty).append((by, bx))
        return np.asarray(full, dtype=int).reshape(-1, 2), np.asarray(empty, dtype=int).reshape(-1, 2)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``counts (B, G, n, n)``, ``images (B, C, out, out)`` float32 and ``origins (B, 2)`` int64."""
        cs, ims, origins = [], [], []
        for _ in range(batch):
            si = int(self.rng.choice(len(self.sections), p=self.section_p))
            s = self.sections[si]
            full, empty = self._cands[si]
            pool = empty if (len(empty) and (self.rng.random() < self.p_empty or not len(full))) else full
            by, bx = pool[self.rng.integers(len(pool))]
            c = np.zeros((s.counts.shape[0], self.n, self.n), dtype=np.float32)
            Hb, Wb = s.counts.shape[1:]
            ya, yb, xa, xb = max(by, 0), min(by + self.n, Hb), max(bx, 0), min(bx + self.n, Wb)
            c[:, ya - by : yb - by, xa - bx : xb - bx] = s.counts[:, ya:yb, xa:xb]
            oy, ox = self.geo.out_origin(by), self.geo.out_origin(bx)
            im = s.image[oy : oy + self.out, ox : ox + self.out]
            if self.augment:
                c, im = augment(c, im, int(self.rng.integers(4)), bool(self.rng.integers(2)))
            cs.append(c)
            ims.append(np.transpose(im, (2, 0, 1)))
            origins.append((by, bx))
        return np.stack(cs), np.ascontiguousarray(np.stack(ims), dtype=np.float32), np.asarray(origins, dtype=np.int64)
