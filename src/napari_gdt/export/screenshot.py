"""Screenshots of the current view with a scale bar in µm burned in (no Qt imports here).

napari world coordinates are generated-image output pixels, so a screen
pixel spans ``um_per_px / zoom`` µm, where ``zoom`` is the camera's screen
pixels per world unit (the same in every grid viewbox). napari keeps the
zoom when it resizes the canvas for ``screenshot(size=...)``, which would
show *more* of the data rather than the same view at a higher resolution;
:func:`screenshot_view` therefore scales the zoom with the requested size so
the screenshot shows the current field of view, and restores the camera after.

The canvas is never sized to the data extent (unlike napari's
``export_figure``), so whole-slide views are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GDTError
from .figure import nice_scalebar_um

__all__ = ["SCREENSHOT_EXTS", "ScreenshotInfo", "burn_scalebar", "save_image", "screenshot_view"]

SCREENSHOT_EXTS = (".png", ".tif", ".tiff")


@dataclass
class ScreenshotInfo:
    """What :func:`screenshot_view` produced."""

    path: Path | None
    size_px: tuple[int, int]  # (height, width)
    um_per_screen_px: float
    scalebar_um: float | None
    scalebar_px: int


def _font(size: int):
    """DejaVu Sans from matplotlib (has the µ glyph); Pillow's default font as a fallback."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (OSError, ValueError, ImportError):  # pragma: no cover - no usable TrueType font
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()


def burn_scalebar(
    img: np.ndarray, um_per_px: float, length_um: float | None = None, colour: str = "auto", margin: int | None = None
) -> tuple[np.ndarray, float, int]:
    """Draw a scale bar with its µm label into the lower-right corner of ``img``.

    Parameters
    ----------
    img : ndarray, uint8, ``(H, W, 3)`` or ``(H, W, 4)``
    um_per_px : float
        µm per pixel of ``img``.
    length_um : float, optional
        Bar length (default: a round number near 1/5 of the image width).
    colour : "auto", "white" or "black"
        ``auto`` picks white on dark backgrounds and black on light ones.

    Returns
    -------
    (image, length_um, length_px)
    """
    from PIL import Image, ImageDraw

    if not (um_per_px > 0):
        raise GDTError(f"um_per_px must be > 0, got {um_per_px}")
    a = np.ascontiguousarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise GDTError(f"burn_scalebar needs a uint8 (H, W, 3|4) image, got {a.dtype} {a.shape}")
    H, W = a.shape[:2]
    if length_um is None:
        length_um = nice_scalebar_um(W * um_per_px, fraction=0.2)
    if not (length_um > 0):
        raise GDTError(f"scale-bar length must be > 0 µm, got {length_um}")
    length_px = round(length_um / um_per_px)
    if length_px < 1 or length_px > W:
        raise GDTError(f"a {length_um:g} µm scale bar is {length_px} px long, which does not fit a {W} px wide image")
    margin = margin if margin is not None else max(8, W // 60)
    thick = max(3, H // 120)
    fsize = max(10, H // 40)
    x1 = W - margin
    x0 = x1 - length_px
    y1 = H - margin
    y0 = y1 - thick
    label = f"{length_um:g} µm"
    if colour == "auto":
        patch = a[max(0, y0 - fsize - 8) : H, max(0, x0 - 4) : W, :3]
        colour = "black" if patch.size and patch.mean() > 127 else "white"
    rgb = (255, 255, 255) if colour == "white" else (0, 0, 0)
    im = Image.fromarray(a)
    draw = ImageDraw.Draw(im)
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=rgb + ((255,) if a.shape[-1] == 4 else ()))
    font = _font(fsize)
    sw = max(1, fsize // 8)  # a thin outline in the opposite colour keeps the label legible on mid-tones
    tb = draw.textbbox((0, 0), label, font=font, stroke_width=sw)
    tw, th = tb[2] - tb[0], tb[3] - tb[1]
    tx = x0 + (length_px - tw) // 2 - tb[0]
    ty = y0 - 4 - th - tb[1]
    alpha = (255,) if a.shape[-1] == 4 else ()
    halo = (0, 0, 0) if colour == "white" else (255, 255, 255)
    draw.text((tx, ty), label, fill=rgb + alpha, font=font, stroke_width=sw, stroke_fill=halo + alpha)
    return np.asarray(im), float(length_um), length_px


def save_image(path: str | Path, img: np.ndarray) -> Path:
    """Write a uint8 screenshot as PNG or TIFF (by extension)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SCREENSHOT_EXTS:
        raise GDTError(f"{path}: unsupported screenshot extension {ext!r} (use .png or .tif)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".png":
        from skimage.io import imsave

        imsave(str(path), img, check_contrast=False)
    else:
        import tifffile

        tifffile.imwrite(str(path), img, photometric="rgb")
    return path


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def screenshot_view(
    viewer,
    path: str | Path | None = None,
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    um_per_px: float = 1.0,
    scalebar_um: float | None = None,
    scalebar: bool = True,
    keep_alpha: bool = False,
) -> tuple[np.ndarray, ScreenshotInfo]:
    """Screenshot the current view of a *shown* napari viewer, with a scale bar.

    Parameters
    ----------
    viewer : napari.Viewer
        Must be shown (a hidden viewer gives black images under Xvfb).
    path : path, optional
        ``.png`` or ``.tif`` file to write.
    size : (height, width), optional
        Screenshot size in pixels; the current field of view is fitted into it.
    scale : float, optional
        Alternatively, a factor on the current canvas size (2 = twice the resolution).
    um_per_px : float
        µm per world unit (the model's ``um_per_px``: world = output pixels).
    scalebar_um : float, optional
        Scale-bar length (default: a round number near 1/5 of the width).

    Returns
    -------
    (image uint8 (H, W, 3), ScreenshotInfo)
    """
    if size is not None and scale is not None:
        raise GDTError("give either a screenshot size or a scale, not both")
    if path is not None and Path(path).suffix.lower() not in SCREENSHOT_EXTS:
        raise GDTError(f"{path}: unsupported screenshot extension {Path(path).suffix!r} (use .png or .tif)")
    camera = _camera(viewer)
    ch, cw = (int(v) for v in viewer.canvas.size)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            raise GDTError(f"screenshot size must be positive, got {size}")
        factor = min(h / ch, w / cw)
    else:
        f = 1.0 if scale is None else float(scale)
        if not (f > 0):
            raise GDTError(f"screenshot scale must be > 0, got {scale}")
        h, w = round(ch * f), round(cw * f)
        factor = f
    old_zoom = camera.zoom
    old_center = tuple(camera.center)
    try:
        camera.zoom = old_zoom * factor
        img = viewer.screenshot(size=(h, w), canvas_only=True, flash=False)
    finally:
        camera.zoom = old_zoom
        camera.center = old_center
    img = np.asarray(img)
    if not keep_alpha and img.ndim == 3 and img.shape[-1] == 4:
        img = np.ascontiguousarray(img[..., :3])
    um_per_screen_px = float(um_per_px) / (old_zoom * factor)
    length_um, length_px = None, 0
    if scalebar:
        img, length_um, length_px = burn_scalebar(img, um_per_screen_px, scalebar_um)
    out_path = save_image(path, img) if path is not None else None
    return img, ScreenshotInfo(
        path=out_path, size_px=img.shape[:2], um_per_screen_px=um_per_screen_px, scalebar_um=length_um, scalebar_px=length_px
    )
