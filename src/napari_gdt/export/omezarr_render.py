"""Streaming, resumable OME-Zarr export of a generated slide, in-process or on dask.distributed.

Layout of the output (``OUT.ome.zarr``)::

    OUT.ome.zarr/
      0/, 1/, ...              multiscale levels, axes (c, y, x), chunks (C, chunk_px, chunk_px)
      napari_gdt_chunks/L/     one JSON marker per finished chunk of level L (checksum + tile keys)
      attrs: multiscales + omero (NGFF 0.4: top level; 0.5: under "ome"), and
             "napari_gdt": model digest, seed, tile_px, region, recipe hash, dtype, ...

How it streams
--------------
Level 0 is split into chunks of ``chunk_px`` output px (a multiple of
``tile_px``; chunk (0, 0) starts at the region's origin). One task renders one
chunk -- the grid tiles that intersect it, through the same
:class:`~napari_gdt.rendering.tiles.TileRenderer` as the viewer and the CLI --
and writes it straight into the zarr store; then it writes the chunk's marker.
Tasks carry only paths, the model digest, the seed and chunk coordinates, never
weights or pixels; the client keeps a bounded window of tasks in flight, so
memory is bounded by the chunks in flight, not by the slide. Level ``l > 0``
is the 2x2 mean of level ``l - 1`` read back from the store, chunk by chunk.

Resuming
--------
A chunk counts as done when its marker exists, the chunk decodes, and its bytes
hash to the sha256 in the marker. A rerun with the same settings skips such
chunks and renders the rest; a rerun with different settings is refused
(pass ``overwrite=True``).

Pixel values
------------
``dtype="uint8"`` (default) stores ``floor(clip(x, 0, 1) * 255 + 0.5)``, exactly
as :func:`napari_gdt.cli._common.to_uint8`. ``dtype="float32"`` stores the
model output itself; only then can :func:`warm_cache_from_omezarr` fill a tile
cache with bit-exact tiles (uint8 stores can warm a cache only with
``allow_quantised=True``, to within 0.5/255).

Workers
-------
A task's worker process loads the model once (module-level cache keyed by
the model path and its digest; a :class:`GDTWorkerPlugin` preloads it when the
cluster is set up) and renders on its GPU if it has one (``device="auto"``).
The model file, the canvas, the recipe and the output folder must be visible
to every worker at the same path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import file_sha256
from ..errors import GDTError
from ..pixels import downsample2x, quantise
from . import workers as worker_state
from .cluster import Distributed, GDTWorkerPlugin, InProcess, peak_rss_sampled, start_rss_sampler
from .workers import clear_worker_cache, tune_malloc

__all__ = [
    "RenderJob",
    "render_to_omezarr",
    "clear_worker_cache",
    "peak_rss_sampled",
    "start_rss_sampler",
    "warm_cache_from_omezarr",
    "quantise_uint8",
    "downsample2x",
    "default_levels",
    "GDTWorkerPlugin",
    "tune_malloc",
    "ATTR",
    "MARKER_DIR",
]

ATTR = "napari_gdt"
MARKER_DIR = "napari_gdt_chunks"
KIND = "generated-slide"


# --------------------------------------------------------------------------- pixel helpers
def quantise_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 by :func:`napari_gdt.pixels.quantise` (no squeeze)."""
    return quantise(img, np.uint8)


def default_levels(shape: tuple[int, int], min_px: int = 256) -> int:
    """Number of pyramid levels so that the coarsest level's longer side is at most ``min_px``."""
    n, h, w = 1, int(shape[0]), int(shape[1])
    while max(h, w) > min_px:
        h, w = -(-h // 2), -(-w // 2)
        n += 1
    return n


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def canvas_digest(path) -> str:
    """sha256 of a canvas store's content (every file's relative path and bytes): keys a resume on content."""
    from ..expression.omezarr import store_digest

    return store_digest(path)


def recipe_hash(path) -> str | None:
    """sha256 of a recipe file and of the label images it references (None without a recipe)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise GDTError(f"{p}: no such edit recipe")
    h = hashlib.sha256(p.read_bytes())
    try:
        regions = json.loads(p.read_text()).get("regions", {}) or {}
        for name in sorted(regions):
            lab = regions[name].get("labels") if isinstance(regions[name], dict) else None
            if lab and (p.parent / lab).is_file():
                h.update(name.encode())
                h.update(file_sha256(p.parent / lab).encode())
    except (ValueError, AttributeError):
        pass  # the recipe loader reports malformed recipes with a proper message
    return h.hexdigest()


# --------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class RenderJob:
    """Everything a chunk task needs: small and picklable (paths and numbers only)."""

    model: str
    digest: str
    canvas: str
    out: str
    region: tuple[int, int, int, int]  # y0, y1, x0, x1 in output px
    chunk_px: int
    tile_px: int
    seed: int = 0
    edits: str | None = None
    device: str = "auto"
    batch_size: int = 8
    zero_fill: bool = False
    dtype: str = "uint8"
    cache: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.region
        return y1 - y0, x1 - x0

    def chunk_grid(self, level: int = 0) -> tuple[int, int]:
        h, w = level_shape(self.shape, level)
        return -(-h // self.chunk_px), -(-w // self.chunk_px)


def level_shape(shape: tuple[int, int], level: int) -> tuple[int, int]:
    h, w = shape
    for _ in range(level):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def _open_level(out: str, level: int, mode: str = "r+"):
    import zarr

    return zarr.open_array(str(Path(out) / str(level)), mode=mode)


def _marker_path(out: str, level: int, cy: int, cx: int) -> Path:
    return Path(out) / MARKER_DIR / str(level) / f"{cy}.{cx}.json"


def _chunk_box(job: RenderJob, level: int, cy: int, cx: int) -> tuple[int, int, int, int]:
    """Chunk box (y0, y1, x0, x1) in the level's own pixel indices."""
    h, w = level_shape(job.shape, level)
    c = job.chunk_px
    return cy * c, min((cy + 1) * c, h), cx * c, min((cx + 1) * c, w)


def _chunk_ok(job: RenderJob, level: int, cy: int, cx: int, arr=None) -> bool:
    """Marker present, chunk decodes, and its bytes match the marker's checksum."""
    m = _marker_path(job.out, level, cy, cx)
    if not m.is_file():
        return False
    try:
        rec = json.loads(m.read_text())
        arr = arr if arr is not None else _open_level(job.out, level, mode="r")
        y0, y1, x0, x1 = _chunk_box(job, level, cy, cx)
        data = arr[:, y0:y1, x0:x1]
        return rec.get("sha256") == _sha256(data)
    except Exception:  # noqa: BLE001 - a missing, truncated or undecodable chunk, whatever the codec raises: render it again
        return False


def _write_marker(job: RenderJob, level: int, cy: int, cx: int, rec: dict) -> None:
    m = _marker_path(job.out, level, cy, cx)
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, m)


# --------------------------------------------------------------------------- tasks
def render_chunk(job: RenderJob, cy: int, cx: int, verify: bool = True) -> dict:
    """Task: render level-0 chunk ``(cy, cx)`` and write it (and its marker) into the store.

    Returns a small dict: ``{"chunk", "skipped", "computed", "cached"}``.
    """
    import dask

    if verify and _chunk_ok(job, 0, cy, cx):
        return {"chunk": (cy, cx), "skipped": True, "computed": 0, "cached": 0, "cpu": 0.0}
    cpu0 = time.process_time()
    # Canvas reads are small dask graphs: run them here, not back on the cluster.
    with dask.config.set(scheduler="synchronous"):
        r = worker_state.renderer_for(job)
        from ..rendering.tiles import Region

        ry0, ry1, rx0, rx1 = job.region
        y0, y1, x0, x1 = _chunk_box(job, 0, cy, cx)
        box = Region(ry0 + y0, ry0 + y1, rx0 + x0, rx0 + x1)  # absolute output px
        specs = r.tiles_for(box)
        windows = r._read_windows(specs)
        keys = {}
        for s in specs:  # keys of tiles wholly inside the rendered region: what warm_cache needs
            if s.out.y0 >= ry0 and s.out.y1 <= ry1 and s.out.x0 >= rx0 and s.out.x1 <= rx1:
                keys[f"{s.ty},{s.tx}"] = r.tile_key(s, windows[(s.ty, s.tx)])
        img = np.zeros(box.shape + (r.out_channels,), dtype=np.float32)
        before = dict(r.stats)

        def place(s, tile):
            ya, yb = max(s.out.y0, box.y0), min(s.out.y1, box.y1)
            xa, xb = max(s.out.x0, box.x0), min(s.out.x1, box.x1)
            img[ya - box.y0 : yb - box.y0, xa - box.x0 : xb - box.x0] = tile[
                ya - s.out.y0 : yb - s.out.y0, xa - s.out.x0 : xb - s.out.x0
            ]

        r.compute_tiles(specs, windows=windows, on_tile=place)
        del windows
        worker_state.count("chunks_rendered", 1)
    data = np.moveaxis(img, -1, 0)
    data = quantise_uint8(data) if job.dtype == "uint8" else np.ascontiguousarray(data, dtype=np.float32)
    arr = _open_level(job.out, 0)
    arr[:, y0:y1, x0:x1] = data
    rec = {
        "sha256": _sha256(data),
        "tile_px": r.tile_px,
        "tiles": keys,
        "computed": r.stats["computed"] - before["computed"],
        "cached": r.stats["cached"] - before["cached"],
    }
    _write_marker(job, 0, cy, cx, rec)
    return {
        "chunk": (cy, cx),
        "skipped": False,
        "computed": rec["computed"],
        "cached": rec["cached"],
        "cpu": time.process_time() - cpu0,
    }


def downsample_chunk(job: RenderJob, level: int, cy: int, cx: int, verify: bool = True) -> dict:
    """Task: chunk ``(cy, cx)`` of ``level`` as the 2x2 mean of ``level - 1`` (read back from the store)."""
    if verify and _chunk_ok(job, level, cy, cx):
        return {"chunk": (cy, cx), "level": level, "skipped": True, "cpu": 0.0}
    cpu0 = time.process_time()
    src = _open_level(job.out, level - 1, mode="r")
    dst = _open_level(job.out, level)
    y0, y1, x0, x1 = _chunk_box(job, level, cy, cx)
    block = src[:, 2 * y0 : min(2 * y1, src.shape[1]), 2 * x0 : min(2 * x1, src.shape[2])]
    data = downsample2x(np.asarray(block))[:, : y1 - y0, : x1 - x0]
    dst[:, y0:y1, x0:x1] = data
    _write_marker(job, level, cy, cx, {"sha256": _sha256(data)})
    return {"chunk": (cy, cx), "level": level, "skipped": False, "cpu": time.process_time() - cpu0}


# --------------------------------------------------------------------------- metadata
def _channel_meta(bundle, dtype: str) -> dict:
    names = bundle.channel_names or [f"ch{i}" for i in range(bundle.out_channels)]
    kind = bundle.output_kind
    top = 255 if dtype == "uint8" else 1.0
    if kind == "he" and len(names) == 3:
        colours = ["FF0000", "00FF00", "0000FF"]
    elif len(names) == 1:
        colours = ["0000FF" if names[0].upper() in ("DAPI", "HOECHST") else "FFFFFF"]
    else:
        palette = ["0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF"]
        colours = [palette[i % len(palette)] for i in range(len(names))]
    return {
        "name": "generated",
        "version": "0.4",
        "rdefs": {"model": "color"},
        "channels": [
            {"label": n, "color": c, "active": True, "window": {"start": 0, "end": top, "min": 0, "max": top}, "inverted": False}
            for n, c in zip(names, colours)
        ],
    }


def _settings(job: RenderJob, bundle, ngff: str, levels: int, recipe_sha: str | None, canvas_shape) -> dict:
    """Everything that decides the output's pixels and layout (compared on resume)."""
    return {
        "kind": KIND,
        "version": 1,
        "model": {"path": job.model, "name": bundle.card.get("name"), "arch": bundle.card.get("arch"), "digest": job.digest},
        "canvas": {"path": job.canvas, "shape": list(canvas_shape), "sha256": canvas_digest(job.canvas)},
        "recipe": {"path": job.edits, "sha256": recipe_sha} if job.edits else None,
        "seed": job.seed,
        "tile_px": job.tile_px,
        "px_per_bin": bundle.px_per_bin,
        "um_per_px": bundle.um_per_px,
        "region": list(job.region),
        "chunk_px": job.chunk_px,
        "dtype": job.dtype,
        "quantisation": "uint8 = floor(clip(x, 0, 1) * 255 + 0.5)" if job.dtype == "uint8" else "none (model output, float32)",
        "levels": levels,
        "downsample": "2x2 mean of the level above (uint8: integer mean rounded half up)",
        "ngff": ngff,
        "output": {"kind": bundle.output_kind, "channels": bundle.channel_names},
        "zero_fill": job.zero_fill,
    }


_COMPARED = ("model", "canvas", "recipe", "seed", "tile_px", "region", "chunk_px", "dtype", "levels", "ngff", "zero_fill")


def _create_store(out: Path, job: RenderJob, bundle, ngff: str, levels: int, settings: dict) -> None:
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    fmt = FormatV04() if ngff == "0.4" else FormatV05()
    group = zarr.open_group(str(out), mode="w", zarr_format=fmt.zarr_format)
    C = bundle.out_channels
    um = bundle.um_per_px
    y0, x0 = job.region[0], job.region[2]
    datasets = []
    for lvl in range(levels):
        h, w = level_shape(job.shape, lvl)
        kw = (
            {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
            if fmt.zarr_format == 2
            else {"dimension_names": ["c", "y", "x"]}
        )
        group.create_array(
            str(lvl), shape=(C, h, w), chunks=(C, min(job.chunk_px, h), min(job.chunk_px, w)), dtype=job.dtype, fill_value=0, **kw
        )
        f = 2**lvl
        datasets.append(
            {
                "path": str(lvl),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, um * f, um * f]},
                    {"type": "translation", "translation": [0.0, (y0 + (f - 1) / 2) * um, (x0 + (f - 1) / 2) * um]},
                ],
            }
        )
    write_multiscales_metadata(
        group,
        datasets,
        fmt=fmt,
        axes=[
            {"name": "c", "type": "channel"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        name="generated",
        metadata={"omero": _channel_meta(bundle, job.dtype), "method": "napari_gdt 2x2 mean"},
    )
    group.attrs[ATTR] = dict(settings, complete=False)


def read_settings(path) -> dict | None:
    """The ``napari_gdt`` attrs of a rendered OME-Zarr (None if absent or unreadable)."""
    import zarr

    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - probe of an unknown path: any zarr failure means not ours
        return None
    s = dict(g.attrs).get(ATTR)
    return s if isinstance(s, dict) and s.get("kind") == KIND else None


def _prepare(out: Path, job: RenderJob, bundle, ngff: str, levels: int, settings: dict, overwrite: bool) -> bool:
    """Create the store, or check an existing one for a resume. Returns True when resuming."""
    from ..safeio import check_output

    check_output(out, overwrite=overwrite, what="render", ours=lambda q: q.is_dir() and read_settings(q) is not None)
    if out.exists():
        old = read_settings(out) if out.is_dir() else None
        if overwrite:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        elif old is None:
            raise GDTError(f"{out}: exists and is not a napari-gdt render (pass --overwrite to replace it)")
        else:
            for k in _COMPARED:
                a, b = old.get(k), settings.get(k)
                if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
                    field = k
                    if isinstance(a, dict) and isinstance(b, dict):
                        diff = [f for f in b if json.dumps(a.get(f), sort_keys=True) != json.dumps(b.get(f), sort_keys=True)]
                        if diff:
                            field, a, b = f"{k}.{diff[0]}", a.get(diff[0]), b.get(diff[0])
                    what = f"the {k}'s content changed: " if field.endswith(("sha256", "digest")) else ""
                    raise GDTError(
                        f"{out}: exists and was rendered with a different {field!r} ({what}{json.dumps(a)} != {json.dumps(b)}); "
                        "pass --overwrite to start again or choose another output"
                    )
            return True
    out.parent.mkdir(parents=True, exist_ok=True)
    _create_store(out, job, bundle, ngff, levels, settings)
    return False


# --------------------------------------------------------------------------- API
def render_to_omezarr(
    model_path_or_name,
    canvas_path,
    out,
    region=None,
    edits=None,
    tile_px: int | None = None,
    seed: int = 0,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    ngff: str = "0.4",
    progress: bool = True,
    *,
    chunk_px: int | None = None,
    levels: int | None = None,
    dtype: str = "uint8",
    batch_size: int = 8,
    zero_fill: bool = False,
    overwrite: bool = False,
    cache: str | None = None,
    processes: bool = True,
    torch_threads: int | None = None,
    max_in_flight: int | None = None,
    bundle=None,
) -> dict:
    """Render a generated slide (or a region) to a multiscale OME-Zarr, streaming and resumable.

    Parameters
    ----------
    model_path_or_name : str or Path
        Bundle file or bundled model name; workers load it from this path.
    canvas_path : str or Path
        Expression canvas (OME-Zarr written by ``napari-gdt convert``).
    out : str or Path
        Output ``.ome.zarr`` folder. An existing render with the same settings is resumed.
    region : Region, "Y0:Y1,X0:X1" or None
        Output-pixel region (default: whole canvas). Chunks start at its origin;
        a region aligned to ``tile_px`` avoids rendering edge tiles twice.
    edits : str or Path, optional
        Edit recipe JSON applied (lazily, per chunk) before rendering.
    tile_px : int, optional
        Tile edge in output px (default: the model's). Pixels do not depend on it.
    seed : int
        Seed of the global latent and the noise.
    device : str
        ``auto`` (each worker picks CUDA > MPS > CPU), ``cpu``, ``cuda``...
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes.
    scheduler : str, optional
        Address of an existing dask.distributed scheduler.
    ngff : "0.4" or "0.5"
        NGFF version: 0.4 (zarr v2, default) or 0.5 (zarr v3).
    progress : bool
        Show a tqdm bar on stderr when it is a terminal.
    chunk_px : int, optional
        Chunk edge in output px, rounded up to a multiple of ``tile_px``
        (default: the multiple of ``tile_px`` nearest to 1024).
    levels : int, optional
        Pyramid levels (default: until the coarsest is at most 256 px).
    dtype : "uint8" or "float32"
        Stored values (see module docstring); float32 is needed for exact cache warming.
    overwrite : bool
        Replace an existing output instead of resuming it.
    cache : str, optional
        Tile cache folder (``napari_gdt.rendering.cache.open_cache``) used by the renderer(s).
    processes, torch_threads, max_in_flight
        LocalCluster worker processes (else threads); torch threads per worker
        (default: cores // workers); tasks kept in flight (default: 2 x worker threads).
    bundle : GeneratorBundle, optional
        An already loaded bundle of the same model (saves a load in-process).

    Returns
    -------
    dict
        ``out, shape, levels, chunks, rendered, skipped, computed, cached, seconds, mode`` and,
        on a cluster, ``workers`` (per-worker pid, device, torch threads, peak RSS).
    """
    from ..models.bundle import load_bundle, resolve_model
    from ..models.device import get_device
    from ..rendering.tiles import Region, parse_region

    t0 = time.perf_counter()
    if ngff not in ("0.4", "0.5"):
        raise GDTError(f"--ngff must be 0.4 or 0.5, got {ngff!r}")
    if dtype not in ("uint8", "float32"):
        raise GDTError(f"--dtype must be uint8 or float32, got {dtype!r}")
    if workers and scheduler:
        raise GDTError("give either --workers or --scheduler, not both")
    out = Path(out)
    if not out.name.lower().endswith(".ome.zarr"):
        raise GDTError(f"{out}: an OME-Zarr output must end with .ome.zarr")
    model_path = resolve_model(model_path_or_name)
    if bundle is None:
        bundle = load_bundle(model_path, device=get_device(device))
    if bundle.path is None:
        raise GDTError("the model must be a bundle file (workers load it by path); save it with save_bundle first")
    model_path = str(Path(bundle.path).resolve())
    canvas_path = str(Path(canvas_path).resolve())
    edits = str(Path(edits).resolve()) if edits else None
    # Seed this process's model cache with the loaded bundle (in-process runs reuse it).
    worker_state.seed_bundle(model_path, bundle.digest, str(device), bundle)

    from ..expression.canvas import ExpressionCanvas

    if not Path(canvas_path).exists():
        raise GDTError(f"{canvas_path}: no such expression canvas")
    canvas = ExpressionCanvas.from_ome_zarr(canvas_path)
    T = int(tile_px or bundle.tile_px)
    if T <= 0:
        raise GDTError(f"--tile-px must be > 0, got {T}")
    ppb = bundle.px_per_bin
    H, W = canvas.n_bins[0] * ppb, canvas.n_bins[1] * ppb
    if isinstance(region, str):
        region = parse_region(region)
    if region is None:
        region = Region(0, H, 0, W)
    from ..errors import RegionError

    if region.y1 <= region.y0 or region.x1 <= region.x0:
        raise RegionError(f"region {region} is empty")
    if region.y0 < 0 or region.x0 < 0 or region.y1 > H or region.x1 > W:
        raise RegionError(f"region {region} lies outside the canvas (0:{H},0:{W} output px)")
    if chunk_px is None:
        chunk_px = max(1, round(1024 / T)) * T
    chunk_px = -(-int(chunk_px) // T) * T
    job = RenderJob(
        model=model_path,
        digest=bundle.digest,
        canvas=canvas_path,
        out=str(out.resolve()),
        region=(region.y0, region.y1, region.x0, region.x1),
        chunk_px=chunk_px,
        tile_px=T,
        seed=int(seed),
        edits=edits,
        device=str(device),
        batch_size=int(batch_size),
        zero_fill=bool(zero_fill),
        dtype=dtype,
        cache=str(Path(cache).resolve()) if cache else None,
    )
    levels = int(levels or default_levels(job.shape))
    if levels < 1:
        raise GDTError(f"--levels must be >= 1, got {levels}")
    from ..safeio import check_not_input

    check_not_input(out, [canvas_path, edits, model_path])
    settings = _settings(job, bundle, ngff, levels, recipe_hash(edits), canvas.shape)
    resumed = _prepare(out, job, bundle, ngff, levels, settings, overwrite)

    mode = "in-process" if not (workers or scheduler) else (f"scheduler {scheduler}" if scheduler else f"LocalCluster({workers})")
    t_setup = time.perf_counter()
    ex = InProcess() if not (workers or scheduler) else Distributed(job, workers, scheduler, processes, torch_threads)
    timings = {"prepare": t_setup - t0, "cluster": time.perf_counter() - t_setup}
    grids = [job.chunk_grid(lvl) for lvl in range(levels)]
    n_chunks = [gy * gx for gy, gx in grids]
    stats = {
        "rendered": 0,
        "skipped": 0,
        "computed": 0,
        "cached": 0,
        "pyramid_written": 0,
        "pyramid_skipped": 0,
        "task_cpu": 0.0,
        "pyramid_cpu": 0.0,
    }
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(n_chunks), desc="level 0", unit="chunk", disable=not (progress and sys.stderr.isatty()), file=sys.stderr)
    try:

        def on_level0(res):
            stats["skipped" if res["skipped"] else "rendered"] += 1
            stats["computed"] += res["computed"]
            stats["cached"] += res["cached"]
            stats["task_cpu"] += res["cpu"]
            bar.update(1)
            bar.set_postfix(tiles=stats["computed"], skipped=stats["skipped"], refresh=False)

        gy, gx = grids[0]
        t1 = time.perf_counter()
        ex.map_bounded(render_chunk, ((job, cy, cx) for cy in range(gy) for cx in range(gx)), on_level0)
        timings["level0"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        for lvl in range(1, levels):
            bar.set_description(f"level {lvl}")

            def on_level(res):
                stats["pyramid_skipped" if res["skipped"] else "pyramid_written"] += 1
                stats["pyramid_cpu"] += res["cpu"]
                bar.update(1)

            gy, gx = grids[lvl]
            ex.map_bounded(downsample_chunk, ((job, lvl, cy, cx) for cy in range(gy) for cx in range(gx)), on_level)
        timings["pyramid"] = time.perf_counter() - t1
        info = ex.worker_info() if isinstance(ex, Distributed) else None
    finally:
        bar.close()
        ex.close()
    import zarr

    g = zarr.open_group(str(out), mode="r+")
    g.attrs[ATTR] = dict(settings, complete=True)
    summary = {
        "out": str(out),
        "shape": list(job.shape),
        "channels": bundle.out_channels,
        "levels": levels,
        "ngff": ngff,
        "chunks": n_chunks[0],
        "chunk_px": chunk_px,
        "resumed": resumed,
        **stats,
        "seconds": time.perf_counter() - t0,
        "timings": timings,
        "mode": mode,
    }
    if info is not None:
        summary["workers"] = info
    return summary


# --------------------------------------------------------------------------- cache warming
def warm_cache_from_omezarr(zarr_path, renderer, cache=None, region=None, allow_quantised: bool = False) -> dict:
    """Fill a tile cache from a pre-rendered OME-Zarr so that viewing computes nothing.

    The render's settings (model digest, seed, tile_px) must match ``renderer``.
    Each tile's cache key is then recomputed from the renderer's own (edited)
    canvas and compared with the key recorded when the tile was rendered; only
    matching tiles are put, so a different canvas or recipe never poisons the cache.

    Parameters
    ----------
    zarr_path : str or Path
        Output of :func:`render_to_omezarr`.
    renderer : TileRenderer
        The renderer whose cache to fill (its canvas must be the one rendered, edits applied).
    cache : object with ``put``, optional
        Default: ``renderer.cache``.
    region : Region, optional
        Only warm tiles inside this region (output px).
    allow_quantised : bool
        A uint8 render holds quantised pixels; warm with ``u8 / 255`` anyway
        (within 0.5/255 of the model output). float32 renders are exact.

    Returns
    -------
    dict
        ``{"warmed": n, "mismatched": m, "exact": bool}``.
    """
    cache = cache if cache is not None else renderer.cache
    if cache is None:
        raise GDTError("warm_cache_from_omezarr: the renderer has no cache; pass cache=")
    p = Path(zarr_path)
    s = read_settings(p)
    if s is None:
        raise GDTError(f"{p}: not an OME-Zarr rendered by napari-gdt (no '{ATTR}' attrs)")
    checks = {
        "model digest": (s["model"]["digest"], renderer.bundle.digest),
        "seed": (s["seed"], renderer.seed),
        "tile_px": (s["tile_px"], renderer.tile_px),
    }
    for name, (have, want) in checks.items():
        if have != want:
            raise GDTError(f"{p}: rendered with {name} {have!r} but the renderer uses {want!r}; cannot warm its cache")
    exact = s["dtype"] == "float32"
    if not exact and not allow_quantised:
        raise GDTError(
            f"{p}: stores uint8 (quantised) pixels; render with --dtype float32 for exact cache warming, or pass "
            "allow_quantised=True"
        )
    import dask

    ry0, ry1, rx0, rx1 = s["region"]
    arr = _open_level(str(p), 0, mode="r")
    warmed = mismatched = 0
    mdir = p / MARKER_DIR / "0"
    markers = sorted(mdir.glob("*.json")) if mdir.is_dir() else []
    seen: set[str] = set()  # a tile straddling chunks is listed in each of their markers
    with dask.config.set(scheduler="synchronous"):
        for m in markers:
            try:
                rec = json.loads(m.read_text())
            except ValueError:
                continue
            tiles = []
            for k in rec.get("tiles", {}):
                if k in seen:
                    continue
                seen.add(k)
                ty, tx = (int(v) for v in k.split(","))
                spec = renderer.tile(ty, tx)
                if region is not None and not (
                    spec.out.y0 >= region.y0
                    and spec.out.y1 <= region.y1
                    and spec.out.x0 >= region.x0
                    and spec.out.x1 <= region.x1
                ):
                    continue
                tiles.append((spec, rec["tiles"][k]))
            if not tiles:
                continue
            windows = renderer._read_windows([t for t, _ in tiles])
            for spec, key in tiles:
                if renderer.tile_key(spec, windows[(spec.ty, spec.tx)]) != key:
                    mismatched += 1
                    continue
                o = spec.out
                px = np.asarray(arr[:, o.y0 - ry0 : o.y1 - ry0, o.x0 - rx0 : o.x1 - rx0])
                tile = np.ascontiguousarray(np.moveaxis(px, 0, -1), dtype=np.float32)
                if not exact:
                    tile = tile / np.float32(255.0)
                cache.put(key, tile)
                warmed += 1
    return {"warmed": warmed, "mismatched": mismatched, "exact": exact}
