"""Content-addressed tile caches: a memory LRU in front of an on-disk store.

Keys are the content hashes of :meth:`napari_gdt.rendering.tiles.TileRenderer.tile_key`
(model digest, seed, tile box and the bytes of the exact, possibly edited,
input window). The same key therefore always means the same pixels, and a
cache folder can be shared by any number of processes and sessions: a tile
that was computed once is never computed again.

The disk store keeps one ``.npy`` file per tile under ``folder/ab/<key>.npy``
(``ab`` = first two hex digits of the key). Files are written to a temporary
name and renamed into place, so concurrent writers and readers never see a
half-written tile; a damaged file reads as a miss and is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import GDTError
from .tiles import MemoryTileCache

__all__ = ["DiskTileCache", "MemoryTileCache", "TwoLevelCache", "open_cache"]

_MARKER = "napari-gdt-tiles.json"
_FORMAT = {"format": "napari-gdt-tile-cache", "version": 1, "layout": "ab/<key>.npy (float32 HxWxC)"}


class DiskTileCache:
    """Tiles as ``.npy`` files in ``folder``, keyed by content hash; survives across processes.

    Parameters
    ----------
    folder : str or Path
        Cache folder; created if missing. A folder that exists, is not empty and
        was not made by napari-gdt is refused (:class:`~napari_gdt.errors.GDTError`),
        so a typo cannot scatter tiles into an unrelated folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        marker = self.folder / _MARKER
        if self.folder.exists() and not self.folder.is_dir():
            raise GDTError(f"{self.folder}: tile cache path exists and is not a folder")
        if self.folder.is_dir() and not marker.exists() and any(self.folder.iterdir()):
            raise GDTError(f"{self.folder}: not a napari-gdt tile cache (no {_MARKER}); choose an empty or new folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                marker.write_text(json.dumps(_FORMAT))
        except OSError as e:
            raise GDTError(f"{self.folder}: cannot create the tile cache folder ({e.strerror})") from None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self._path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, OSError, EOFError):  # truncated or damaged: treat as a miss
            with contextlib.suppress(OSError):
                p.unlink()
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, key: str, value: np.ndarray) -> None:
        p = self._path(key)
        if p.exists():
            return
        p.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(value), allow_pickle=False)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("??/*.npy"))

    def clear(self) -> None:
        for p in self.folder.glob("??/*.npy"):
            p.unlink()


class TwoLevelCache:
    """A memory LRU in front of a :class:`DiskTileCache` (thread-safe).

    ``get`` looks in memory, then on disk (promoting hits to memory); ``put``
    writes both. ``stats`` counts memory hits, disk hits and misses.
    """

    def __init__(self, memory: MemoryTileCache, disk: DiskTileCache | None):
        self.memory = memory
        self.disk = disk
        self._lock = threading.Lock()
        self.stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0}

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            v = self.memory.get(key)
        if v is not None:
            self.stats["memory_hits"] += 1
            return v
        if self.disk is not None:
            v = self.disk.get(key)
            if v is not None:
                self.stats["disk_hits"] += 1
                with self._lock:
                    self.memory.put(key, v)
                return v
        self.stats["misses"] += 1
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self.memory.put(key, value)
        if self.disk is not None:
            self.disk.put(key, value)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self.memory:
                return True
        return self.disk is not None and key in self.disk

    @property
    def folder(self) -> Path | None:
        return None if self.disk is None else self.disk.folder


def open_cache(folder: str | Path | None = None, max_bytes: int = 512 * 2**20) -> TwoLevelCache:
    """The standard tile cache: a memory LRU of ``max_bytes`` in front of ``folder`` on disk.

    With ``folder=None`` the cache lives in memory only.
    """
    disk = DiskTileCache(folder) if folder not in (None, "") else None
    return TwoLevelCache(MemoryTileCache(max_bytes), disk)
