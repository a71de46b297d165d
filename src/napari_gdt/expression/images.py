"""Real (paired) images as lazy pyramids: whole-slide TIFFs are read by tile, never whole.

TIFF-based slide formats (``.tif``/``.tiff``/OME-TIFF, ``.svs``, ``.ndpi``, ``.scn``,
``.qptiff``, ``.btf``) are opened through tifffile's zarr view: every pyramid level the
file holds becomes one lazy (dask) level, and only the tiles a view needs are decoded.
Multi-channel images (e.g. Xenium's ``morphology_focus.ome.tif``, axes ``CYX``) give one
channel (``channel=0``: DAPI for Xenium). Other formats (PNG, JPEG, ...) are decoded whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ReaderError

__all__ = ["TIFF_SUFFIXES", "open_image_levels"]

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".qptiff", ".btf")


def _tiff_levels(p: Path, channel: int):
    import dask.array as da
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(str(p)) as tf:
            series = tf.series[0]
            axes = series.axes
        store = tifffile.imread(str(p), aszarr=True, series=0)
        z = zarr.open(store, mode="r")
    except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError) as e:
        raise ReaderError(f"{p}: unreadable TIFF image ({e})") from None
    arrays = [z] if hasattr(z, "shape") else [z[k] for k in sorted((k for k, _ in z.arrays()), key=int)]
    levels = []
    for a in arrays:
        d = da.from_zarr(a)
        ax = axes
        if d.ndim != len(ax):  # tifffile squeezes differently per level only in odd files
            raise ReaderError(f"{p}: pyramid level of shape {d.shape} does not match the axes {axes!r}")
        # keep Y, X and the RGB samples (S); pick one plane of any other axis (C, Z, T, ...)
        index = []
        for name, n in zip(ax, d.shape):
            if name in "YXS":
                index.append(slice(None))
            elif name == "C":
                if not 0 <= channel < n:
                    raise ReaderError(f"{p}: channel {channel} out of range (the image has {n} channels, axes {axes!r})")
                index.append(channel)
            else:
                index.append(0)
        d = d[tuple(index)]
        kept = [c for c in ax if c in "YXS"]
        if kept[:2] != ["Y", "X"]:
            d = d.transpose([kept.index("Y"), kept.index("X")] + ([kept.index("S")] if "S" in kept else []))
        levels.append(d)
    return levels


def open_image_levels(path, channel: int = 0, max_coarsest: int = 4096) -> list:
    """The real image at ``path`` as pyramid levels ``(H, W[, 3|4])``, largest first.

    TIFF-based formats give lazy dask levels: the pyramid levels the file holds, then
    2x-strided views of the smallest until it is at most ``max_coarsest`` px; other
    formats one in-memory level. Raises :class:`~napari_gdt.errors.ReaderError` naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p}: no such image file")
    if p.suffix.lower() in TIFF_SUFFIXES:
        levels = _tiff_levels(p, int(channel))
        # a big TIFF without a pyramid: add lazy strided levels so a zoomed-out view reads
        # a small array (each coarse read still decodes the tiles it touches)
        while max(levels[-1].shape[:2]) > max_coarsest:
            levels.append(levels[-1][::2, ::2])
        return levels
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 1_000_000_000)
        with Image.open(p) as im:
            return [np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "RGB", "RGBA") else im)]
    except OSError as e:
        raise ReaderError(f"{p}: unreadable image ({e})") from None
