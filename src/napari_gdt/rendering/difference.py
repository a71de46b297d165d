"""Lazy derived images: ``|edited - generated|`` and additive gene composites, read on demand.

Used by the :class:`~napari_gdt.session.Session` (difference of its ``generated`` and
``generated (edited)`` pyramids) and by the compare panel (difference of any two
layers). No Qt and no napari: the inputs are callables that return the *current*
list of levels, so that an edited image whose pyramid is replaced on every edit
(Apply, Undo) is always read afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import GDTError
from .pyramid import LazyArray

__all__ = ["DifferenceLevel", "as_dask", "composite", "difference_levels", "unit"]

Levels = Callable[[], list]


def as_dask(a):
    """``a`` as a dask array (chunks of at most 1024 per axis); dask arrays pass through."""
    import dask.array as da

    return a if isinstance(a, da.Array) else da.from_array(a, chunks=tuple(min(s, 1024) for s in a.shape))


def unit(a):
    """Integer pixels (uint8/uint16) as float32 in [0, 1] (numpy stays numpy, others become dask); floats unchanged."""
    dt = np.dtype(a.dtype)
    if dt.kind in "ui":
        scale = float(np.iinfo(dt).max)
        if isinstance(a, np.ndarray):
            return a.astype(np.float32) / scale
        return as_dask(a).astype(np.float32) / scale
    return a


class DifferenceLevel(LazyArray):
    """``|b - a|`` (channel mean, in output units 0-1) of level ``level`` of two tile pyramids, read on demand.

    A numpy-like array (``shape``, ``dtype``, ``chunks``, ``__getitem__``) like
    :class:`~napari_gdt.rendering.pyramid.PyramidLevel`: each read reads the same
    window of both levels (stored tiles, previews where a tile is not computed yet,
    and a request for the missing tiles), so re-reading after tiles arrive shows the
    real difference; nothing is cached here.

    Parameters
    ----------
    a_levels, b_levels : callable
        Return the current levels (largest first) of each image.
    level : int
    """

    def __init__(self, a_levels: Levels, b_levels: Levels, level: int = 0):
        self._a_levels, self._b_levels, self.level = a_levels, b_levels, int(level)
        a = self.a
        self.shape = tuple(int(n) for n in a.shape[:2])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self.chunks = tuple(getattr(a, "chunks", (256, 256)))[:2]
        self.chunksize = self.chunks

    @property
    def a(self):
        return self._a_levels()[self.level]

    @property
    def b(self):
        return self._b_levels()[self.level]

    @property
    def pyramids(self) -> tuple:
        return tuple(getattr(x, "pyramid", None) for x in (self.a, self.b))

    def __getitem__(self, key):
        key = self._full_key(key)
        xa, xb = unit(np.asarray(self.a[key])), unit(np.asarray(self.b[key]))
        d = np.abs(xb.astype(np.float32) - xa.astype(np.float32))
        nd = sum(not isinstance(k, (int, np.integer)) for k in key)
        return d.mean(axis=-1) if d.ndim > nd else d


def difference_levels(a_levels: Levels, b_levels: Levels, names: tuple[str, str] = ("a", "b")) -> list:
    """``|b - a|`` (channel mean, 0-1) of two images given as level lists, lazily, one array per level.

    Two tile pyramids give :class:`DifferenceLevel` levels (read afresh at every read); other
    array-likes (numpy, dask, 8-bit against float) give numpy or dask arrays.
    Raises :class:`~napari_gdt.errors.GDTError` naming both images when the shapes differ.
    """
    la, lb = list(a_levels()), list(b_levels())
    for a, b in zip(la, lb):
        if tuple(a.shape) != tuple(b.shape):
            raise GDTError(f"layers '{names[0]}' {tuple(a.shape)} and '{names[1]}' {tuple(b.shape)} differ in shape")
    if all(getattr(x, "pyramid", None) is not None for x in la + lb):
        return [DifferenceLevel(a_levels, b_levels, k) for k in range(len(la))]
    out = []
    for a, b in zip(la, lb):
        a, b = unit(a), unit(b)  # an 8-bit pyramid against float [0, 1] pixels
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            d = np.abs(b.astype(np.float32) - a.astype(np.float32))
        else:
            d = abs(as_dask(b).astype(np.float32) - as_dask(a).astype(np.float32))
        out.append(d.mean(axis=-1) if a.ndim == 3 else d)
    return out


def composite(datas: Sequence, limits: Sequence[tuple[float, float]], colours: Sequence[tuple[float, float, float]]):
    """Additive RGB composite ``(..., 3)`` in [0, 1] of gene images scaled by their ``limits`` and tinted by ``colours``.

    All-numpy input gives numpy; anything else gives a lazy dask array.
    """
    eager = all(isinstance(d, np.ndarray) for d in datas)
    rgb = None
    for d, (lo, hi), col in zip(datas, limits, colours):
        x = d if eager else as_dask(d)
        v = ((x.astype(np.float32) - float(lo)) / max(float(hi) - float(lo), 1e-12)).clip(0, 1)
        term = v[..., None] * np.asarray(col, dtype=np.float32)
        rgb = term if rgb is None else rgb + term
    return rgb.clip(0, 1)
