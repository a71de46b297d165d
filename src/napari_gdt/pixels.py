"""The pixel rules, each defined once: quantisation, 2x2 downsampling, resampling, image reading.

Every path that turns model output or a real image into pixels (the napari layer
pyramid, ``napari-gdt render``, figures, the OME-Zarr export, training targets,
``evaluate``) calls these functions, so the same region gives the same pixels
everywhere. This module sits at the bottom of the import order: it imports only
numpy (scipy, tifffile and PIL lazily) and :mod:`napari_gdt.errors`.

Rules
-----
Quantisation
    float ``[0, 1]`` -> ``uint8`` as ``floor(clip(x, 0, 1) * 255 + 0.5)``
    (:func:`quantise`, :func:`to_uint8` for image files).
2x2 downsampling
    mean of each 2x2 block; an odd last row/column is edge-replicated first.
    ``uint8`` is averaged exactly in integers and rounded half up,
    ``(a + b + c + d + 2) // 4``; floats are averaged in ``float32`` as
    ``((a00 + a01) + (a10 + a11)) * 0.25`` (:func:`downsample2x`).
Resampling the real image onto the output grid, and its fill value
    output pixels that fall outside the real image take the slide's background,
    :func:`fill_value`: 1.0 (white glass) for a 3-channel brightfield image
    (H&E), 0.0 (dark) for fluorescence (DAPI, one channel), in display units
    ``[0, 1]``. Training targets, ``evaluate`` and the figure's real panel all
    use it (:func:`resample_to_model_grid`, :func:`resample_to_grid`).
Reading images
    :func:`read_image` reads a whole image eagerly as ``(H, W, C)``;
    whole-slide TIFFs are opened lazily by :func:`napari_gdt.expression.images.open_image_levels`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import ReaderError

__all__ = [
    "downsample2x",
    "downsample2x_mask",
    "fill_value",
    "quantise",
    "read_image",
    "real_image_fill",
    "resample_to_grid",
    "resample_to_model_grid",
    "to_uint8",
    "to_unit",
]


# --------------------------------------------------------------------------- quantisation
def quantise(x: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """float ``[0, 1]`` -> ``dtype``; ``uint8`` is ``floor(clip(x, 0, 1) * 255 + 0.5)``, float dtypes pass through.

    The shape is kept (no squeeze); see :func:`to_uint8` for image files.
    """
    if np.dtype(dtype) == np.uint8:
        return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.asarray(x, dtype=dtype)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float ``[0, 1]`` ``(H, W, C)`` -> ``uint8`` by :func:`quantise`, squeezing a single channel (for PNG/TIFF)."""
    u8 = quantise(img, np.uint8)
    return u8[..., 0] if u8.ndim == 3 and u8.shape[-1] == 1 else u8


def to_unit(img: np.ndarray) -> np.ndarray:
    """Image values -> float32 in [0, 1]: uint8 / 255, uint16 / 65535; floats above 1 are scaled by their maximum."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    return img / max(float(img.max()), 1e-6) if img.size and img.max() > 1.0 else img


# --------------------------------------------------------------------------- 2x2 downsampling
def downsample2x(a: np.ndarray, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """2x2 mean over the two spatial ``axes`` of ``a`` (default the last two: ``(C, h, w)``).

    An odd last row/column is edge-replicated. ``uint8`` is averaged exactly in
    integers and rounded half up; anything else is averaged in ``float32``.
    Use ``axes=(0, 1)`` for ``(h, w, C)``.
    """
    a = np.asarray(a)
    ay, ax = (ax_ % a.ndim for ax_ in axes)
    h, w = a.shape[ay], a.shape[ax]
    if h % 2 or w % 2:
        pad = [(0, 0)] * a.ndim
        pad[ay], pad[ax] = (0, h % 2), (0, w % 2)
        a = np.pad(a, pad, mode="edge")
    sl = [slice(None)] * a.ndim

    def q(dy, dx):
        s = list(sl)
        s[ay], s[ax] = slice(dy, None, 2), slice(dx, None, 2)
        return a[tuple(s)]

    if a.dtype == np.uint8:
        s = q(0, 0).astype(np.uint16) + q(0, 1) + q(1, 0) + q(1, 1)
        return ((s + 2) // 4).astype(np.uint8)
    f = [q(dy, dx).astype(np.float32) for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
    return ((f[0] + f[1]) + (f[2] + f[3])) * np.float32(0.25)


def downsample2x_mask(mask: np.ndarray) -> np.ndarray:
    """2x2 *all* of a boolean ``(h, w)`` mask (edge-replicated to even size): a coarse pixel is set only if all four are."""
    h, w = mask.shape
    if h % 2 or w % 2:
        mask = np.pad(mask, ((0, h % 2), (0, w % 2)), mode="edge")
    return mask[0::2, 0::2] & mask[1::2, 0::2] & mask[0::2, 1::2] & mask[1::2, 1::2]


# --------------------------------------------------------------------------- reading images
def read_image(path) -> np.ndarray:
    """Read a real image whole as ``(H, W, C)`` uint8/uint16 (greyscale gets C=1, alpha is dropped).

    For whole-slide TIFFs that do not fit in memory use
    :func:`napari_gdt.expression.images.open_image_levels` (lazy, by tile).
    """
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
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; all become one ReaderError line
            raise ReaderError(f"{p}: not a readable image ({e})") from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ReaderError(f"{p}: expected a 2-D greyscale or RGB image, got shape {img.shape}")
    if img.shape[-1] == 4:
        img = img[..., :3]
    return img


# --------------------------------------------------------------------------- resampling
def fill_value(channels: int) -> float:
    """The value (display units, [0, 1]) of output pixels outside the real image: the slide's background.

    1.0 (white glass) for 3-channel brightfield (H&E); 0.0 (dark) for any other
    channel count (fluorescence such as DAPI).
    """
    return 1.0 if int(channels) == 3 else 0.0


def real_image_fill(image) -> float:
    """:func:`fill_value` of ``image`` in its own value units (x255 for uint8, x65535 for uint16)."""
    dt = np.dtype(getattr(image, "dtype", np.float32))
    top = 255.0 if dt == np.uint8 else 65535.0 if dt == np.uint16 else 1.0
    shape = getattr(image, "shape", ())
    return fill_value(shape[2] if len(shape) > 2 else 1) * top


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def resample_to_model_grid(
    img: np.ndarray, canvas_affine: np.ndarray, px_per_bin: int, out_shape: tuple[int, int], fill: float | None = None
) -> np.ndarray:
    """Resample a whole real image onto the model's output grid; returns float32 ``(H, W, C)`` in [0, 1].

    ``canvas_affine`` maps bins to real-image pixels. Output pixel ``p`` maps to
    real pixel ``A @ (p / px_per_bin)`` (pixel corners). A pure integer
    down-scale with an aligned origin is done by block averaging (exact area
    mean); anything else by Gaussian pre-smoothing and linear interpolation.
    Output pixels outside the image take ``fill`` (default :func:`fill_value`).
    Used for training targets and ``evaluate``.
    """
    A = np.asarray(canvas_affine, dtype=float) @ np.diag([1.0 / px_per_bin, 1.0 / px_per_bin, 1.0])
    H, W = int(out_shape[0]), int(out_shape[1])
    C = img.shape[-1]
    fill = fill_value(C) if fill is None else float(fill)
    sy, sx = A[0, 0], A[1, 1]
    ty, tx = A[0, 2], A[1, 2]
    axis_aligned = abs(A[0, 1]) < 1e-9 and abs(A[1, 0]) < 1e-9
    integer = abs(sy - round(sy)) < 1e-9 and abs(sx - round(sx)) < 1e-9 and round(sy) == round(sx) and round(sy) >= 1
    if axis_aligned and integer and abs(ty - round(ty)) < 1e-9 and abs(tx - round(tx)) < 1e-9:
        s, oy, ox = int(round(sy)), int(round(ty)), int(round(tx))
        out = np.full((H, W, C), fill, dtype=np.float32)
        # rows/cols of the output fully inside the image
        y_lo, x_lo = max(0, _ceil_div(-oy, s)), max(0, _ceil_div(-ox, s))
        y_hi = min(H, (img.shape[0] - oy) // s)
        x_hi = min(W, (img.shape[1] - ox) // s)
        if y_hi > y_lo and x_hi > x_lo:
            for c in range(C):  # per channel keeps peak memory low
                blk = img[oy + y_lo * s : oy + y_hi * s, ox + x_lo * s : ox + x_hi * s, c]
                blk = to_unit(blk).reshape(y_hi - y_lo, s, x_hi - x_lo, s).mean(axis=(1, 3))
                out[y_lo:y_hi, x_lo:x_hi, c] = blk
        return out
    from scipy import ndimage

    scale = max(abs(sy), abs(sx))
    out = np.empty((H, W, C), dtype=np.float32)
    M = A[:2, :2]
    off = A[:2, 2]
    for c in range(C):
        ch = to_unit(img[..., c])
        if scale > 1.5:
            ch = ndimage.gaussian_filter(ch, sigma=0.4 * scale)
        out[..., c] = ndimage.affine_transform(ch, M, offset=off, output_shape=(H, W), order=1, mode="constant", cval=fill)
    return out


def resample_to_grid(
    image, grid_to_image: np.ndarray, shape: tuple[int, int], order: int = 1, antialias: bool = True, fill: float = 0.0
) -> np.ndarray:
    """Sample ``image`` on a regular output grid through an affine map (windowed: for large lazy images).

    Only the bounding box of the grid's footprint is read from ``image``,
    so ``image`` may be a large lazy array (numpy memmap, dask, zarr).

    Parameters
    ----------
    image : array-like, ``(H, W)`` or ``(H, W, C)``
    grid_to_image : (3, 3) ndarray
        Homogeneous map from output grid ``(row, col, 1)`` to image ``(row, col, 1)``
        (pixel centres at integer coordinates).
    shape : (h, w)
        Output grid shape.
    order : int
        Spline order (0 nearest, 1 linear).
    antialias : bool
        Gaussian-smooth before sampling when the grid is coarser than the image.
    fill : float
        Value, in the input's value units, of grid points outside the image
        (default 0; for a real image pass :func:`real_image_fill`).

    Returns
    -------
    ndarray, ``(h, w)`` or ``(h, w, C)``, float32 in the input's value units.
    Grid points outside the image's pixel area ``[-0.5, H - 0.5) x [-0.5, W - 0.5)``
    (in pixel-centre index coordinates) are ``fill``; those inside are clamped at the edge.
    """
    from scipy import ndimage

    M = np.asarray(grid_to_image, dtype=float)
    h, w = int(shape[0]), int(shape[1])
    H, W = int(image.shape[0]), int(image.shape[1])
    chans = image.shape[2:] if len(image.shape) > 2 else ()
    out = np.full((h, w) + tuple(chans), fill, dtype=np.float32)
    corners = M @ np.array([[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1], [1, 1, 1, 1]], dtype=float)
    step = float(np.sqrt(abs(np.linalg.det(M[:2, :2])))) if h and w else 1.0
    pad = math.ceil(2 * max(step, 1.0)) + 2
    r0 = max(math.floor(corners[0].min()) - pad, 0)
    r1 = min(math.ceil(corners[0].max()) + pad + 1, H)
    c0 = max(math.floor(corners[1].min()) - pad, 0)
    c1 = min(math.ceil(corners[1].max()) + pad + 1, W)
    if r0 >= r1 or c0 >= c1 or h == 0 or w == 0:
        return out
    crop = np.asarray(image[r0:r1, c0:c1]).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rows = M[0, 0] * yy + M[0, 1] * xx + M[0, 2] - r0
    cols = M[1, 0] * yy + M[1, 1] * xx + M[1, 2] - c0
    coords = np.stack([rows, cols])
    sigma = (step - 1.0) / 2.0 if (antialias and step > 1.5 and order > 0) else 0.0
    planes = [crop] if crop.ndim == 2 else [crop[..., i] for i in range(crop.shape[-1])]
    # a grid point inside the image's pixel area [-0.5, H - 0.5) takes the (edge-clamped) image value, others fill
    inside = (rows + r0 >= -0.5) & (rows + r0 < H - 0.5) & (cols + c0 >= -0.5) & (cols + c0 < W - 0.5)
    res = []
    for p in planes:
        if sigma > 0:
            p = ndimage.gaussian_filter(p, sigma)
        v = ndimage.map_coordinates(p, coords, order=order, mode="nearest")
        v[~inside] = fill
        res.append(v)
    return (res[0] if crop.ndim == 2 else np.stack(res, axis=-1)).astype(np.float32)
