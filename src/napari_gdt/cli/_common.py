"""Shared helpers of the subcommands: model/canvas loading, progress, image output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import CanvasError, GDTError
from ..pixels import to_uint8  # re-exported: the quantisation rule lives in napari_gdt.pixels


def add_model_args(p, required=True):
    p.add_argument("--model", required=required, metavar="MODEL", help="bundle path or demo model name (her2st-he, merfish-dapi)")


def add_render_args(p):
    p.add_argument("--seed", type=int, default=0, help="seed of the global latent and the noise (default 0)")
    p.add_argument("--tile-px", type=int, default=None, help="tile edge in output px (default: the model's)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto: CUDA > MPS > CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (default 8)")


def load_model(name, device="auto"):
    from ..models.bundle import load_bundle
    from ..models.device import get_device

    return load_bundle(name, device=get_device(device))


def open_canvas(path):
    from ..expression.canvas import ExpressionCanvas

    p = Path(path)
    if not p.exists():
        raise CanvasError(f"{p}: no such expression canvas")
    return ExpressionCanvas.from_ome_zarr(p)


def progress_bar(total: int, desc: str):
    """A tqdm bar on a terminal (stderr), silent otherwise. Returns an ``update(done, total)`` callback and the bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="tile", disable=not sys.stderr.isatty(), file=sys.stderr)

    def update(done, total_):
        bar.total = total_
        bar.n = done
        bar.refresh()

    return update, bar


IMAGE_EXTS = (".npy", ".png", ".tif", ".tiff")


def image_suffix(path) -> str:
    path = Path(path)
    return "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".ome.zarr") else path.suffix.lower()


def check_image_out(path, overwrite: bool = False, inputs=()) -> Path:
    """Before any work: the extension is known, the path is writable and holds nothing of the user's."""
    from ..safeio import check_not_input, check_output

    path = Path(path)
    suffix = image_suffix(path)
    if suffix not in IMAGE_EXTS:
        raise GDTError(f"{path}: unsupported output extension {suffix!r} (use .png, .tif, .npy or .ome.zarr)")
    check_not_input(path, inputs)
    return check_output(path, overwrite=overwrite, what="image")


def write_image(path, img: np.ndarray) -> None:
    """Write float (H, W, C) output by extension: .png/.tif 8-bit (marked as ours), .npy float32.

    Written to a temporary sibling and renamed into place.
    """
    from ..safeio import PNG_MARK, atomic_file

    path = Path(path)
    suffix = image_suffix(path)
    if suffix not in IMAGE_EXTS:
        raise GDTError(f"{path}: unsupported output extension {suffix!r} (use .png, .tif, .npy or .ome.zarr)")
    with atomic_file(path) as tmp:
        if suffix == ".npy":
            np.save(tmp, img.astype(np.float32))
        elif suffix == ".png":
            from PIL import Image, PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_text("Software", PNG_MARK)
            Image.fromarray(to_uint8(img)).save(tmp, format="PNG", pnginfo=info)
        else:
            import tifffile

            u8 = to_uint8(img)
            tifffile.imwrite(str(tmp), u8, photometric="rgb" if u8.ndim == 3 else "minisblack", software=PNG_MARK)
