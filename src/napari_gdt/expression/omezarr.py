"""OME-Zarr persistence of expression canvases (written with ome-zarr-py, read lazily)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import CanvasError
from .canvas import CANVAS_ATTR, ExpressionCanvas

__all__ = ["is_canvas", "read_canvas", "write_canvas"]


def default_chunks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Chunk over genes as well as space: at most 32 genes x 256 x 256 bins."""
    g, h, w = shape
    return (max(1, min(g, 32)), max(1, min(h, 256)), max(1, min(w, 256)))


def write_canvas(canvas: ExpressionCanvas, path: str | Path, chunks=None, overwrite: bool = True) -> Path:
    """Write ``canvas`` to ``path`` as OME-Zarr (NGFF 0.4), streaming chunk by chunk."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_multiscale

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise CanvasError(f"{path}: already exists (pass overwrite=True)")
        shutil.rmtree(path)
    chunks = tuple(chunks or default_chunks(canvas.shape))
    data = canvas.data.astype(np.float32).rechunk(chunks)
    store = parse_url(str(path), mode="w", fmt=FormatV04()).store
    group = zarr.group(store=store, overwrite=True, zarr_format=2)
    write_multiscale(
        [data],
        group,
        fmt=FormatV04(),
        axes=[
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        scale={"c": 1.0, "y": float(canvas.bin_um), "x": float(canvas.bin_um)},
        storage_options={"chunks": chunks},
        name="expression",
    )
    group.attrs["omero"] = {
        "name": "expression",
        "version": "0.4",
        "channels": [
            {"label": g, "active": False, "color": "FFFFFF", "window": {"start": 0, "end": 10, "min": 0, "max": 1e6}}
            for g in canvas.genes
        ],
    }
    group.attrs[CANVAS_ATTR] = {
        "kind": "expression-canvas",
        "version": 1,
        "genes": canvas.genes,
        "bin_um": float(canvas.bin_um),
        "affine": np.asarray(canvas.affine).tolist(),
        "meta": _jsonable(canvas.meta),
    }
    return path


def _jsonable(obj):
    import json

    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return json.loads(json.dumps(obj, default=str))


def store_digest(path: str | Path) -> str:
    """sha256 over a zarr store's files (sorted relative paths and bytes), read in 1 MiB blocks.

    The compressed chunks are hashed as they are, so this costs one read of the store.
    """
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        files = [p]
        root = p.parent
    else:
        files = sorted(f for f in p.rglob("*") if f.is_file())
        root = p
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def is_canvas(path: str | Path) -> bool:
    """True if ``path`` is an OME-Zarr written as a napari-gdt canvas."""
    import zarr

    p = Path(path)
    if not p.is_dir():
        return False
    try:
        g = zarr.open_group(str(p), mode="r")
        return CANVAS_ATTR in g.attrs and g.attrs[CANVAS_ATTR].get("kind") == "expression-canvas"
    except Exception:  # noqa: BLE001 - probe of an unknown path: any zarr failure means not a canvas
        return False


def read_canvas(path: str | Path) -> ExpressionCanvas:
    """Open a canvas lazily. Channel names come from omero labels (or the canvas attrs)."""
    import zarr

    p = Path(path)
    if not p.exists():
        raise CanvasError(f"{p}: no such canvas")
    try:
        g = zarr.open_group(str(p), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises many kinds for a non-group; all become one CanvasError
        raise CanvasError(f"{p}: not an OME-Zarr group ({e})") from None
    attrs = dict(g.attrs)
    ms = attrs.get("multiscales")
    if not ms:
        raise CanvasError(f"{p}: OME-Zarr has no 'multiscales' metadata")
    ds_path = ms[0]["datasets"][0]["path"]
    arr = g[ds_path]
    data = da.from_zarr(arr)
    info = attrs.get(CANVAS_ATTR, {})
    genes = info.get("genes") or [c.get("label", f"c{i}") for i, c in enumerate(attrs.get("omero", {}).get("channels", []))]
    if len(genes) != data.shape[0]:
        raise CanvasError(f"{p}: {data.shape[0]} channels but {len(genes)} channel labels in 'omero.channels'")
    bin_um = info.get("bin_um")
    if bin_um is None:
        scale = ms[0]["datasets"][0].get("coordinateTransformations", [{}])[0].get("scale", [1, 1, 1])
        bin_um = float(scale[-1])
    affine = np.asarray(info.get("affine", np.eye(3)), dtype=float)
    return ExpressionCanvas(
        data=data.astype(np.float32),
        genes=genes,
        bin_um=float(bin_um),
        affine=affine,
        meta=dict(info.get("meta", {}), path=str(p)),
    )
