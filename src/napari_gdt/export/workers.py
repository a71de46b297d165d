"""Per-process state of render workers: the model and renderer caches, and the malloc tuner.

A chunk task (:func:`napari_gdt.export.omezarr_render.render_chunk`) runs in a
dask worker process, or in the calling process. Each process loads the model
once (keyed by the model path and its digest) and keeps a few renderers.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from ..errors import GDTError

__all__ = ["bundle_for", "clear_worker_cache", "count", "loaded_devices", "renderer_for", "seed_bundle", "tune_malloc"]

_LOCK = threading.RLock()
_BUNDLES: dict[tuple, object] = {}
_RENDERERS: dict[tuple, object] = {}
_COUNTS = {"model_loads": 0, "chunks_rendered": 0}  # in this process (tests check: one model load per worker)
_MAX_RENDERERS = 4


def bundle_for(model: str, digest: str, device: str):
    """Load a bundle once per process, keyed by (path, digest, device); check the digest."""
    from ..models.bundle import load_bundle
    from ..models.device import get_device

    key = (str(model), digest, str(device))
    with _LOCK:
        b = _BUNDLES.get(key)
        if b is None:
            b = load_bundle(model, device=get_device(device))
            _COUNTS["model_loads"] += 1
            if digest and b.digest != digest:
                raise GDTError(
                    f"{model}: the model file seen by this worker (digest {b.digest[:12]}) differs from the client's "
                    f"({digest[:12]}); every worker must see the same model file at the same path"
                )
            _BUNDLES[key] = b
        return b


def renderer_for(job):
    """A TileRenderer for the job, built once per process (model loaded once, canvas opened once)."""
    from ..expression.canvas import ExpressionCanvas
    from ..rendering.tiles import TileRenderer

    key = (
        job.model,
        job.digest,
        job.canvas,
        job.edits,
        job.seed,
        job.tile_px,
        job.device,
        job.batch_size,
        job.zero_fill,
        job.cache,
    )
    with _LOCK:
        r = _RENDERERS.get(key)
        if r is not None:
            return r
        bundle = bundle_for(job.model, job.digest, job.device)
        p = Path(job.canvas)
        if not p.exists():
            raise GDTError(
                f"{p}: no such expression canvas (on this worker; the canvas must be visible to every worker at the same path)"
            )
        canvas = ExpressionCanvas.from_ome_zarr(p)
        if job.edits:
            from ..editing.recipe import apply_recipe_file  # lazy: the editing engine is optional here

            canvas = apply_recipe_file(job.edits, canvas, px_per_bin=bundle.px_per_bin)
        cache = None
        if job.cache:
            from ..rendering.cache import open_cache

            cache = open_cache(job.cache)
        r = TileRenderer(
            bundle,
            canvas,
            seed=job.seed,
            tile_px=job.tile_px,
            device=job.device,
            batch_size=job.batch_size,
            cache=cache,
            zero_fill=job.zero_fill,
        )
        while len(_RENDERERS) >= _MAX_RENDERERS:  # long-lived processes: keep the latest few
            _RENDERERS.pop(next(iter(_RENDERERS)))
        _RENDERERS[key] = r
        return r


def clear_worker_cache() -> None:
    """Forget loaded models and renderers of this process (tests, long-lived workers)."""
    with _LOCK:
        _BUNDLES.clear()
        _RENDERERS.clear()


def seed_bundle(model: str, digest: str, device: str, bundle) -> None:
    """Give this process's model cache an already loaded bundle (an in-process render reuses it)."""
    with _LOCK:
        _BUNDLES.setdefault((str(model), digest, str(device)), bundle)


def loaded_devices() -> list[str]:
    """Devices of the models loaded in this process."""
    with _LOCK:
        return sorted({str(b.device) for b in _BUNDLES.values()})


def count(name: str | None = None, add: int = 0):
    """Add ``add`` to counter ``name`` (``model_loads``, ``chunks_rendered``); with no name, a copy of all counters."""
    with _LOCK:
        if name is None:
            return dict(_COUNTS)
        _COUNTS[name] += add
        return _COUNTS[name]


MALLOC_TUNED = [False]  # set by the worker plugin: was tune_malloc applied in this process


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Keep tile-batch buffers in the heap for this render process (glibc only).

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that they hand
    freed memory back to the OS. Setting it also switches off glibc's adaptive mmap
    threshold, so every buffer over 128 KiB (each feature map of a tile batch) is a fresh
    ``mmap`` whose pages the kernel faults in and zeroes again, call after call: it halved
    level-0 throughput in ``benchmarks/bench_export.py`` (same 16 chunks: 14.2 s in a dask
    worker, 7.0 s in-process). This sets the mmap threshold to ``mmap_threshold`` (32 MiB,
    the most glibc's adaptive rule reaches by itself) and the trim threshold to
    ``trim_threshold`` (64 MiB), so memory stays bounded (at most ``trim_threshold`` of
    free heap is kept for reuse). Larger values keep even the biggest feature maps of a
    batch in the heap and run faster still (256/512 MiB: 32k² level 0 166 s instead of
    192 s) at the price of more retained memory (worker peak 812 MB instead of 647 MB).
    Called in every render worker by the worker plugin (an in-process render leaves the
    calling process's allocator alone: call this first in a batch script to get the same).
    Returns True when applied; ``NAPARI_GDT_MALLOC_TUNE=0`` in the environment leaves
    the allocator alone.
    """
    if not sys.platform.startswith("linux") or os.environ.get("NAPARI_GDT_MALLOC_TUNE", "1") == "0":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
        return bool(libc.mallopt(m_trim_threshold, int(trim_threshold)) == 1 and ok)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to undo
        return False
