"""The expression canvas: a lazy (genes, y, x) array of counts per bin.

A canvas knows its gene names, its bin size in µm and the affine from bin
coordinates ``(row, col)`` to the paired real image's pixel coordinates. It is
persisted as OME-Zarr (axes ``c, y, x``; omero channel labels are the genes)
and read back lazily with dask: memory follows the chunks touched, not the
number of genes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import CanvasError, GenePanelError

__all__ = ["CANVAS_ATTR", "ExpressionCanvas"]

CANVAS_ATTR = "napari_gdt"


@dataclass
class ExpressionCanvas:
    """Binned expression counts with their spatial metadata.

    Attributes
    ----------
    data : dask.array.Array
        float32 counts, shape ``(n_genes, n_bins_y, n_bins_x)``.
    genes : list of str
        Gene name of each channel, in order.
    bin_um : float
        Bin edge length in micrometres.
    affine : (3, 3) ndarray
        Homogeneous map from bin ``(row, col)`` to paired-image pixel
        ``(row, col)``. Identity when there is no paired image.
    meta : dict
        Free-form provenance (source files, format, totals).
    """

    data: da.Array
    genes: list[str]
    bin_um: float
    affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.data, da.Array):
            self.data = da.from_array(np.asarray(self.data, dtype=np.float32), chunks=(min(64, len(self.genes) or 1), 256, 256))
        if self.data.ndim != 3:
            raise CanvasError(f"canvas data must be (genes, y, x); got shape {self.data.shape}")
        if self.data.shape[0] != len(self.genes):
            raise CanvasError(f"canvas has {self.data.shape[0]} channels but {len(self.genes)} gene names")
        if not (self.bin_um > 0):
            raise CanvasError(f"bin size must be > 0 µm, got {self.bin_um}")
        self.genes = [str(g) for g in self.genes]
        self.affine = np.asarray(self.affine, dtype=float)

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def n_bins(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    # ------------------------------------------------------------ gene panel
    def align(self, genes: list[str], zero_fill: bool = False, where: str = "canvas") -> ExpressionCanvas:
        """Reorder channels to ``genes``; extra canvas genes are dropped.

        Missing genes raise :class:`GenePanelError` listing them, unless
        ``zero_fill`` is set, which fills them with zeros and warns.
        """
        index = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in index]
        if missing and not zero_fill:
            raise GenePanelError(missing, where=where)
        if list(genes) == self.genes:
            return self
        if missing:
            import warnings

            warnings.warn(
                f"{where}: zero-filling {len(missing)} gene(s) missing from the canvas: {', '.join(missing[:10])}", stacklevel=2
            )
        zeros = da.zeros((1,) + self.n_bins, dtype=self.data.dtype, chunks=(1,) + tuple(c[0] for c in self.data.chunks[1:]))
        parts = []
        for g in genes:
            parts.append(self.data[index[g] : index[g] + 1] if g in index else zeros)
        data = da.concatenate(parts, axis=0) if parts else self.data[:0]
        return ExpressionCanvas(data=data, genes=list(genes), bin_um=self.bin_um, affine=self.affine.copy(), meta=dict(self.meta))

    # -------------------------------------------------------------- windows
    def read_window(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Counts in bins ``[y0, y0+h) x [x0, x0+w)`` as float32 numpy, zero outside the canvas."""
        out = np.zeros((self.shape[0], h, w), dtype=np.float32)
        H, W = self.n_bins
        ya, yb = max(y0, 0), min(y0 + h, H)
        xa, xb = max(x0, 0), min(x0 + w, W)
        if ya < yb and xa < xb:
            out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = np.asarray(self.data[:, ya:yb, xa:xb], dtype=np.float32)
        return out

    # ------------------------------------------------------------- OME-Zarr
    def to_ome_zarr(self, path: str | Path, chunks: tuple[int, int, int] | None = None, overwrite: bool = True) -> Path:
        """Write the canvas as OME-Zarr (NGFF 0.4, axes c,y,x, omero labels = genes)."""
        from .omezarr import write_canvas

        return write_canvas(self, path, chunks=chunks, overwrite=overwrite)

    @classmethod
    def from_ome_zarr(cls, path: str | Path) -> ExpressionCanvas:
        """Open a canvas written by :meth:`to_ome_zarr` (lazily)."""
        from .omezarr import read_canvas

        return read_canvas(path)

    def total(self) -> float:
        """Sum of all counts (computed chunk by chunk)."""
        return float(self.data.sum(dtype=np.float64).compute())
