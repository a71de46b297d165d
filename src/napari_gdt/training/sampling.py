"""Paired patch sampling: expression windows and the matching real-image tiles.

The real image is resampled once (by :func:`napari_gdt.pixels.resample_to_model_grid`) onto the model's output-pixel grid: output
pixel ``p`` (in the canvas' output frame, ``px_per_bin`` px per bin) sits at
real-image pixel ``canvas.affine @ (p / px_per_bin)``. A window of ``n`` bins
starting at bin ``b0`` produces ``geometry.out_len(n)`` px starting at
``geometry.out_origin(b0)``; the target is the resampled image there.
Augmentation (rot90 and flips) is applied identically to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GDTError
from ..expression.canvas import ExpressionCanvas
from ..models.base import Geometry
from ..pixels import read_image, resample_to_model_grid  # re-exported: the rules live in napari_gdt.pixels

__all__ = ["PairedSection", "PatchSampler", "augment", "read_image", "resample_to_model_grid"]


@dataclass
class PairedSection:
    """One canvas and its registered image on the model grid (all in memory).

    ``counts`` is ``(G, Hb, Wb)`` float32 aligned to the model's panel;
    ``image`` is ``(H, W, C)`` float32 in [0, 1] with ``H = Hb * px_per_bin``.
    ``exclude`` is a list of output-px boxes ``(y0, y1, x0, x1)`` that training
    patches must not touch (held-out validation regions).
    ``spots`` (spot data only): the spot centres ``(n, 2)`` in output px and the
    spot diameter in output px, for spots wholly inside the canvas; else None.
    """

    name: str
    counts: np.ndarray
    image: np.ndarray
    px_per_bin: int
    exclude: list = field(default_factory=list)
    spots: tuple | None = None

    @classmethod
    def from_canvas(
        cls, canvas: ExpressionCanvas, image: np.ndarray, genes: list[str], px_per_bin: int, name: str = "section", exclude=None
    ):
        c = canvas.align(genes, where=name)
        counts = np.asarray(c.data.compute() if hasattr(c.data, "compute") else c.data, dtype=np.float32)
        Hb, Wb = counts.shape[1:]
        img = resample_to_model_grid(image, canvas.affine, px_per_bin, (Hb * px_per_bin, Wb * px_per_bin))
        from ..analysis.quality import spot_units
        from ..rendering.tiles import Region

        spots = spot_units(canvas, px_per_bin, Region(0, Hb * px_per_bin, 0, Wb * px_per_bin))
        if spots is not None and len(spots[0]) == 0:
            spots = None
        return cls(name=name, counts=counts, image=img, px_per_bin=px_per_bin, exclude=list(exclude or []), spots=spots)


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

    def __init__(
        self,
        sections: list[PairedSection],
        geometry: Geometry,
        window_bins: int,
        seed: int = 0,
        augment: bool = True,
        p_empty: float = 0.1,
        owners: bool = False,
    ):
        if not sections:
            raise GDTError("training needs at least one (image, expression) pair")
        self.sections = sections
        self.geo = geometry
        self.n = int(window_bins)
        self.out = geometry.out_len(self.n)
        if self.out <= 0:
            raise GDTError(
                f"window of {self.n} bins gives no output for this architecture (shrink {geometry.shrink} px); use a larger "
                "--patch-bins"
            )
        self.rng = np.random.default_rng(seed)
        self.augment = augment
        self._owners = [_owner_map(s) if owners else None for s in sections]
        #: with ``owners``: the spot each bin of the last sample's windows belongs to, ``(B, n, n)`` int64
        #: (-1 outside the canvas), when every section carries spots; else None
        self.last_owners = None
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
        cs, ims, origins, owners = [], [], [], []
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
            ow = None
            if self._owners[si] is not None:
                ow = np.full((1, self.n, self.n), -1, dtype=np.int64)
                ow[0, ya - by : yb - by, xa - bx : xb - bx] = self._owners[si][ya:yb, xa:xb]
            oy, ox = self.geo.out_origin(by), self.geo.out_origin(bx)
            im = s.image[oy : oy + self.out, ox : ox + self.out]
            if self.augment:
                k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
                c, im = augment(c, im, k, flip)
                if ow is not None:
                    ow = np.ascontiguousarray(augment(ow, np.zeros((self.n, self.n, 1), np.float32), k, flip)[0])
            owners.append(None if ow is None else ow[0])
            cs.append(c)
            ims.append(np.transpose(im, (2, 0, 1)))
            origins.append((by, bx))
        self.last_owners = np.stack(owners) if all(o is not None for o in owners) else None
        return np.stack(cs), np.ascontiguousarray(np.stack(ims), dtype=np.float32), np.asarray(origins, dtype=np.int64)


def nearest_spot_map(centres, px_per_bin: int, shape) -> np.ndarray:
    """The index of the nearest spot centre (output px, ``(n, 2)``) of each bin of a ``shape = (Hb, Wb)``
    grid, ``(Hb, Wb)`` int64 (distances in float32, in chunks of bins)."""
    import torch

    Hb, Wb = shape
    c = torch.as_tensor(np.asarray(centres, np.float32)) / float(px_per_bin) - 0.5  # bin coordinates
    yy, xx = torch.meshgrid(torch.arange(Hb, dtype=torch.float32), torch.arange(Wb, dtype=torch.float32), indexing="ij")
    yy, xx = yy.reshape(-1, 1), xx.reshape(-1, 1)
    owner = torch.cat(
        [
            ((yy[i : i + 8192] - c[None, :, 0]) ** 2 + (xx[i : i + 8192] - c[None, :, 1]) ** 2).argmin(dim=1)
            for i in range(0, Hb * Wb, 8192)
        ]
    )
    return owner.reshape(Hb, Wb).numpy().astype(np.int64)


def _owner_map(s: PairedSection) -> np.ndarray | None:
    """The nearest spot of each bin of section ``s``, ``(Hb, Wb)`` int64, or None without spots."""
    if getattr(s, "spots", None) is None:
        return None
    return nearest_spot_map(s.spots[0], s.px_per_bin, s.counts.shape[1:])
