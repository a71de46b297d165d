"""A lazy multiscale pyramid of generated tissue whose chunks are generator tiles.

:class:`TilePyramid` turns a :class:`~napari_gdt.rendering.tiles.TileRenderer`
into a list of array-like levels (``pyramid.levels``, largest first) that a
viewer (napari) can index like numpy arrays:

* Level 0 has the canvas size in output pixels; its chunks are exactly the
  renderer's grid tiles (``tile_px`` square).
* Level ``k`` is level ``k-1`` downsampled by 2 (2x2 mean), chunked by the same
  ``tile_px``; so a level-``k`` chunk is made of 2x2 level-``k-1`` chunks.
  The coarsest level is at most ``coarsest_px`` on a side (napari reads it
  whole for the thumbnail).

Indexing a level (:meth:`PyramidLevel.__getitem__`) **never runs the model**
and never reads the expression canvas: it copies whatever is in the chunk
store and paints the rest with the placeholder colour, then hands the missing
chunks to a :class:`~napari_gdt.rendering.scheduler.TileScheduler`. The
worker thread then, in priority order,

1. computes a handful of *probe* tiles spread over the canvas once, to fit
   the preview map (below);
2. computes *previews* of the visible chunks: every bin is coloured by a tiny
   linear map from normalised expression to the mean output colour of that
   bin, fitted by least squares on every tile computed so far
   (:class:`PreviewMap`). A preview needs only the expression, so it costs
   microseconds per chunk at fine levels;
3. computes the visible level-0 tiles (if at most ``max_view_tiles`` lie under
   the view; coarser views show previews and the tiles computed so far),
   centre-first and batched, through ``TileRenderer.compute_tiles`` (the tile
   cache is consulted first);
4. computes tiles in a ring around the view (``nearby``).

Every computed tile is quantised once (``uint8`` by default, like
``napari-gdt render``'s PNG) and cascaded up the pyramid: its 2x2-mean is
pasted into the level-1 chunk, that into level 2, and so on, with a per-pixel
mask of which coarse pixels are real. A preview is only painted where the
mask says no real pixels exist yet, so coarse levels converge to the exact
downsampled render as tiles arrive and never regress.

The pyramid itself holds no Qt and no napari; a GUI registers a callback in
:attr:`TilePyramid.update_callbacks` (called on the worker thread) and
refreshes its layer from its main thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ..pixels import downsample2x, downsample2x_mask, quantise
from .scheduler import Job, TileScheduler
from .tiles import Region, TileRenderer, TileSpec

__all__ = ["LazyArray", "PreviewMap", "PyramidLevel", "TilePyramid", "quantise"]


def _down2(img: np.ndarray, mask: np.ndarray | None):
    """2x2 mean of ``img`` (h, w, C) and 2x2 *all* of ``mask`` (the rules of :mod:`napari_gdt.pixels`)."""
    return downsample2x(img, axes=(0, 1)).astype(img.dtype, copy=False), None if mask is None else downsample2x_mask(mask)


class CanvasBlocks:
    """Reads expression windows through an LRU of aligned ``block`` x ``block``-bin blocks.

    Panning reads the same bins for previews, tiles and neighbouring windows;
    each block is computed from the (dask) canvas once, with dask's synchronous
    scheduler (no thread hand-offs inside the worker). Bins outside the canvas
    read as zero, exactly like :meth:`ExpressionCanvas.read_window`, so cache
    keys agree with every other reader.
    """

    def __init__(self, canvas, block: int | None = None, max_bytes: int = 128 * 2**20):
        self.canvas = canvas
        if block is None:  # the canvas's own chunking, so each dask chunk is computed once
            ch = canvas.data.chunks
            block = max(ch[1][0], ch[2][0]) if len(ch[1]) and len(ch[2]) else 128
            per_bin = canvas.shape[0] * 4
            while block > 32 and block * block * per_bin > max_bytes // 8:
                block //= 2
        self.B = int(block)
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def _block(self, by: int, bx: int) -> np.ndarray:
        with self._lock:
            b = self._d.get((by, bx))
            if b is not None:
                self._d.move_to_end((by, bx))
                return b
        B = self.B
        H, W = self.canvas.n_bins
        b = np.asarray(
            self.canvas.data[:, by * B : min((by + 1) * B, H), bx * B : min((bx + 1) * B, W)].compute(scheduler="synchronous"),
            dtype=np.float32,
        )
        with self._lock:
            self._d[(by, bx)] = b
            self._nbytes += b.nbytes
            while self._nbytes > self.max_bytes and len(self._d) > 1:
                self._nbytes -= self._d.popitem(last=False)[1].nbytes
        return b

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Counts in bins ``[y0, y0+h) x [x0, x0+w)``, float32 ``(G, h, w)``, zero outside the canvas."""
        out = np.zeros((self.canvas.shape[0], h, w), np.float32)
        H, W = self.canvas.n_bins
        ya, yb, xa, xb = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
        if ya >= yb or xa >= xb:
            return out
        B = self.B
        for by in range(ya // B, -(-yb // B)):
            for bx in range(xa // B, -(-xb // B)):
                blk = self._block(by, bx)
                y_a, y_b = max(ya, by * B), min(yb, (by + 1) * B)
                x_a, x_b = max(xa, bx * B), min(xb, (bx + 1) * B)
                out[:, y_a - y0 : y_b - y0, x_a - x0 : x_b - x0] = blk[
                    :, y_a - by * B : y_b - by * B, x_a - bx * B : x_b - bx * B
                ]
        return out


class _Preempted(Exception):
    """A preview was interrupted by a better job (it goes back to the queue)."""


class _Chunk:
    __slots__ = ("complete", "img", "previewed", "real")

    def __init__(self, img: np.ndarray, real: np.ndarray | None, previewed: bool, complete: bool):
        self.img = img
        self.real = real  # bool (h, w) or None when complete
        self.previewed = previewed
        self.complete = complete

    @property
    def nbytes(self) -> int:
        return self.img.nbytes + self.img.shape[0] * self.img.shape[1]  # the mask, allocated or not


class PreviewMap:
    """Per-bin colour from expression: a ridge-regressed linear map fitted on computed tiles.

    Features are the model's own normalisation of the counts (``log1p(c) /
    gene_scale`` for ``gdt-v1``) plus a constant; targets are the mean output
    colour of each bin (``px_per_bin`` x ``px_per_bin`` block) of every tile
    the pyramid has seen. Before any tile is seen it returns mid-grey.
    """

    def __init__(self, renderer: TileRenderer, ridge: float = 1e-2):
        m = renderer.bundle.model
        self.ppb = renderer.geometry.px_per_bin
        self.C = renderer.out_channels
        self.G = len(renderer.canvas.genes)
        self.log1p = bool(getattr(m, "log1p", True))
        gs = getattr(m, "gene_scale", None)
        self.gene_scale = np.ones(self.G, np.float32) if gs is None else gs.detach().cpu().numpy().astype(np.float32)
        self.ridge = float(ridge)
        self._lock = threading.Lock()
        self.xtx = np.zeros((self.G + 1, self.G + 1), np.float64)
        self.xty = np.zeros((self.G + 1, self.C), np.float64)
        self.n = 0
        self.W: np.ndarray | None = None
        self.mean = np.full(self.C, 0.5, np.float64)

    def features(self, counts: np.ndarray) -> np.ndarray:
        """``(G, h, w)`` counts -> ``(h*w, G+1)`` features."""
        c = np.maximum(counts, 0).reshape(self.G, -1).T
        f = np.log1p(c) if self.log1p else c
        f = f / self.gene_scale[None, :]
        return np.concatenate([f, np.ones((f.shape[0], 1), f.dtype)], axis=1)

    def fit(self, spec: TileSpec, window: np.ndarray, tile: np.ndarray) -> None:
        """Accumulate the bins lying wholly inside ``tile`` (float (h, w, C))."""
        p = self.ppb
        o = spec.out
        by0, by1 = -(-o.y0 // p), o.y1 // p
        bx0, bx1 = -(-o.x0 // p), o.x1 // p
        if by1 <= by0 or bx1 <= bx0:
            return
        t = tile[by0 * p - o.y0 : by1 * p - o.y0, bx0 * p - o.x0 : bx1 * p - o.x0]
        y = t.reshape(by1 - by0, p, bx1 - bx0, p, -1).mean(axis=(1, 3)).reshape(-1, self.C)
        wy, wx = spec.win[0], spec.win[1]
        x = self.features(window[:, by0 - wy : by1 - wy, bx0 - wx : bx1 - wx])
        with self._lock:
            self.xtx += x.T @ x
            self.xty += x.T @ y
            self.n += x.shape[0]
            self.W = None

    def weights(self) -> np.ndarray | None:
        with self._lock:
            if self.n == 0:
                return None
            if self.W is None:
                a = self.xtx / self.n + self.ridge * np.eye(self.G + 1)
                a[-1, -1] -= self.ridge  # do not shrink the intercept
                self.W = np.linalg.solve(a, self.xty / self.n)
                self.mean = self.xty[-1] / self.n
            return self.W

    def colour(self) -> np.ndarray:
        """The mean output colour seen so far (placeholder colour), float (C,)."""
        self.weights()
        return self.mean.copy()

    def apply(self, counts: np.ndarray) -> np.ndarray:
        """``(G, h, w)`` counts -> ``(h, w, C)`` float colours in [0, 1]."""
        W = self.weights()
        h, w = counts.shape[1:]
        if W is None:
            return np.broadcast_to(self.mean.astype(np.float32), (h, w, self.C)).copy()
        return np.clip(self.features(counts) @ W, 0, 1).astype(np.float32).reshape(h, w, self.C)


class TilePyramid:
    """Lazy multiscale generated image over a :class:`TileRenderer` (see the module docstring).

    Parameters
    ----------
    renderer : TileRenderer
        The one tile function; its ``cache`` (memory/disk, :func:`~napari_gdt.rendering.cache.open_cache`)
        is consulted before computing.
    scheduler : TileScheduler, optional
        Shared worker (several pyramids, e.g. an original and an edited layer,
        can share one so that the visible tiles of both come first). A private
        one is started (and closed by :meth:`close`) if omitted.
    dtype : numpy dtype
        Pixel type of the levels: ``uint8`` (default; 0-255 like the CLI's PNG)
        or ``float32`` (0-1, the raw model output).
    coarsest_px : int
        Largest side of the coarsest level.
    store_bytes : int
        Memory budget of the chunk store (LRU; evicted level-0 tiles come back from
        the renderer's tile cache without recomputation when it holds them).
    max_view_tiles : int
        Compute model tiles for a view only if at most this many level-0 tiles lie
        under it; coarser views show previews plus whatever tiles exist.
    nearby : int
        Width, in chunks of the viewed level, of the ring of tiles computed after the view.
    probe : int
        Number of tiles spread over the canvas computed first to fit the preview map (0: none).
    auto_request : bool
        Indexing a level requests the indexed region (``True``), as napari's slicing
        needs. Set ``False`` to drive requests only through :meth:`request_view`.
    """

    def __init__(
        self,
        renderer: TileRenderer,
        scheduler: TileScheduler | None = None,
        *,
        dtype=np.uint8,
        coarsest_px: int = 256,
        store_bytes: int = 256 * 2**20,
        max_view_tiles: int = 256,
        nearby: int = 1,
        probe: int | None = None,
        auto_request: bool = True,
        name: str = "generated",
    ):
        self.renderer = renderer
        self.name = name
        self.dtype = np.dtype(dtype)
        self.T = int(renderer.tile_px)
        self.C = int(renderer.out_channels)
        H, W = renderer.shape_px
        shapes = [(int(H), int(W))]
        while max(shapes[-1]) > coarsest_px:
            h, w = shapes[-1]
            shapes.append((-(-h // 2), -(-w // 2)))
        self.level_shapes = shapes
        self.levels = [PyramidLevel(self, k) for k in range(len(shapes))]
        self.store_bytes = int(store_bytes)
        self.max_view_tiles = int(max_view_tiles)
        self.nearby = int(nearby)
        self.auto_request = bool(auto_request)
        self.preview = PreviewMap(renderer)
        self.blocks = CanvasBlocks(renderer.canvas)
        self._strips: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._store: OrderedDict[tuple[int, int, int], _Chunk] = OrderedDict()
        self._nbytes = 0
        #: bumped whenever stored pixels change (tiles, previews, adoption): views may re-read
        self.revision = 0
        self._lock = threading.RLock()
        self._compute_lock = threading.Lock()
        self._last: dict[str, tuple] = {}
        self._placeholder = quantise(self.preview.colour(), self.dtype)
        self.update_callbacks: list[Callable[[str, list], None]] = []
        self.n_previews = 0
        self.timings = {"read_s": 0.0, "compute_s": 0.0, "ingest_s": 0.0, "preview_s": 0.0}
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler if scheduler is not None else TileScheduler()
        self._chan = f"{name}#{id(self):x}"
        n_probe = renderer.batch_size if probe is None else int(probe)
        if n_probe > 0:
            self._submit_probe(n_probe)

    # ------------------------------------------------------------ geometry
    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.level_shapes[0] + (self.C,)

    def multiscale(self, channel: int | None = None) -> list[PyramidLevel]:
        """The levels, largest first (``channel``: a single-channel view for non-RGB output)."""
        if channel is None:
            return list(self.levels)
        return [PyramidLevel(self, k, channel) for k in range(self.n_levels)]

    def _chunk_box(self, k: int, cy: int, cx: int) -> Region:
        Hk, Wk = self.level_shapes[k]
        T = self.T
        return Region(cy * T, min((cy + 1) * T, Hk), cx * T, min((cx + 1) * T, Wk))

    def _chunks_in(self, k: int, r: Region) -> list[tuple[int, int]]:
        T = self.T
        return [(cy, cx) for cy in range(r.y0 // T, -(-r.y1 // T)) for cx in range(r.x0 // T, -(-r.x1 // T))]

    def _clip(self, k: int, r: Region) -> Region:
        Hk, Wk = self.level_shapes[k]
        return Region(max(0, min(r.y0, Hk)), max(0, min(r.y1, Hk)), max(0, min(r.x0, Wk)), max(0, min(r.x1, Wk)))

    def _to_level0(self, k: int, r: Region) -> Region:
        f = 2**k
        return self._clip(0, Region(r.y0 * f, r.y1 * f, r.x0 * f, r.x1 * f))

    # ------------------------------------------------------------- reading
    @property
    def placeholder(self) -> np.ndarray:
        return self._placeholder

    def read(self, k: int, y0: int, y1: int, x0: int, x1: int, request: bool | None = None) -> np.ndarray:
        """Pixels of level ``k`` in ``[y0, y1) x [x0, x1)`` as ``(h, w, C)``, at once.

        Missing pixels get the placeholder colour; with ``request`` (default:
        ``auto_request``) the missing chunks are queued. Never runs the model.
        """
        r = self._clip(k, Region(y0, y1, x0, x1))
        out = np.empty((r.y1 - r.y0, r.x1 - r.x0, self.C), dtype=self.dtype)
        if out.size == 0:
            return out
        ph = self._placeholder
        # No lock here: the UI thread must never wait for the worker. A dict lookup is atomic;
        # a chunk being pasted into at this instant may show a mix of old and new pixels until
        # the next refresh, never garbage.
        seen = []
        for cy, cx in self._chunks_in(k, r):
            ch = self._store.get((k, cy, cx))
            b = self._chunk_box(k, cy, cx)
            ya, yb = max(b.y0, r.y0), min(b.y1, r.y1)
            xa, xb = max(b.x0, r.x0), min(b.x1, r.x1)
            if ch is None:
                out[ya - r.y0 : yb - r.y0, xa - r.x0 : xb - r.x0] = ph
                continue
            seen.append((k, cy, cx))
            out[ya - r.y0 : yb - r.y0, xa - r.x0 : xb - r.x0] = ch.img[ya - b.y0 : yb - b.y0, xa - b.x0 : xb - b.x0]
        if seen and self._lock.acquire(blocking=False):  # LRU recency, only if free right now
            try:
                for key in seen:
                    if key in self._store:
                        self._store.move_to_end(key)
            finally:
                self._lock.release()
        if self.auto_request if request is None else request:
            whole = r == Region(0, self.level_shapes[k][0], 0, self.level_shapes[k][1])
            thumb = k == self.n_levels - 1 and whole and self.n_levels > 1
            self.request_view(k, r, channel="thumb" if thumb else "view")
        return out

    def has_tile(self, ty: int, tx: int) -> bool:
        """Whether level-0 tile ``(ty, tx)`` has been computed (or taken over) and is stored."""
        with self._lock:
            ch = self._store.get((0, int(ty), int(tx)))
            return ch is not None and ch.complete

    def is_complete(self, k: int, region: Region | None = None) -> bool:
        """Whether every pixel of ``region`` at level ``k`` is real (computed tiles, not previews)."""
        r = self._clip(k, region or Region(0, self.level_shapes[k][0], 0, self.level_shapes[k][1]))
        with self._lock:
            for cy, cx in self._chunks_in(k, r):
                ch = self._store.get((k, cy, cx))
                if ch is None:
                    return False
                if ch.complete:
                    continue
                b = self._chunk_box(k, cy, cx)
                ya, yb = max(b.y0, r.y0), min(b.y1, r.y1)
                xa, xb = max(b.x0, r.x0), min(b.x1, r.x1)
                if not ch.real[ya - b.y0 : yb - b.y0, xa - b.x0 : xb - b.x0].all():
                    return False
        return True

    # ------------------------------------------------------------ requests
    def request_view(self, k: int, region: Region, channel: str = "view") -> None:
        """Queue the work for a view of ``region`` (level-``k`` px): previews, then tiles, then a ring.

        Replaces this pyramid's previous request on ``channel``; queued jobs that
        left the view are dropped by the scheduler.
        """
        r = self._clip(k, region)
        absent = sum((k, cy, cx) not in self._store for cy, cx in self._chunks_in(k, r))  # atomic lookups, no lock
        last = self._last.get(channel)
        # same view, and nothing evicted since (absent chunks did not increase): nothing to do.
        # (After a cancel the view is therefore not asked for again until it changes.)
        if last is not None and last[:2] == (k, r) and absent <= last[2]:
            self._last[channel] = (k, r, absent)
            return
        self._last[channel] = (k, r, absent)
        rank = {"view": 0, "thumb": 1}.get(channel, 0)
        cyc, cxc = (r.y0 + r.y1) / 2, (r.x0 + r.x1) / 2
        T = self.T

        def centre_first(cells, scale=1):
            return sorted(cells, key=lambda c: ((c[0] + 0.5) * T * scale - cyc) ** 2 + ((c[1] + 0.5) * T * scale - cxc) ** 2)

        jobs: list[Job] = []
        for i, (cy, cx) in enumerate(centre_first(self._chunks_in(k, r))):
            ch = self._store.get((k, cy, cx))
            if ch is None or not (ch.previewed or ch.complete):
                jobs.append(Job((rank, 0, i), self, "preview", (k, cy, cx)))
        near: list[Job] = []
        if channel == "view" and r.y1 > r.y0 and r.x1 > r.x0:
            r0 = self._to_level0(k, r)
            tiles = self._chunks_in(0, r0)
            if len(tiles) <= self.max_view_tiles:
                f = 2**k
                cyc0, cxc0 = cyc * f, cxc * f

                def cf0(cells):
                    return sorted(cells, key=lambda c: ((c[0] + 0.5) * T - cyc0) ** 2 + ((c[1] + 0.5) * T - cxc0) ** 2)

                for i, (ty, tx) in enumerate(cf0(tiles)):
                    if not self._is_real0(ty, tx):
                        jobs.append(Job((rank, 1, i), self, "tile", (ty, tx)))
                if self.nearby > 0:
                    m = self.nearby * T
                    rk = self._clip(k, Region(r.y0 - m, r.y1 + m, r.x0 - m, r.x1 + m))
                    ring = set(self._chunks_in(0, self._to_level0(k, rk))) - set(tiles)
                    if len(ring) + len(tiles) <= 2 * self.max_view_tiles:
                        for i, (ty, tx) in enumerate(cf0(ring)):
                            if not self._is_real0(ty, tx):
                                near.append(Job((2, 1, i), self, "tile", (ty, tx)))
            self.scheduler.set_jobs(self._chan + ":nearby", near)
        self.scheduler.set_jobs(self._chan + ":" + channel, jobs)

    def _submit_probe(self, n: int) -> None:
        gy, gx = self.renderer.grid_shape
        ny = max(1, min(gy, int(round(math.sqrt(n * gy / max(gx, 1))))))
        nx = max(1, min(gx, -(-n // ny)))
        ys = np.unique(np.linspace(0, gy - 1, ny + 2)[1:-1].round().astype(int)) if gy > 2 else np.arange(gy)
        xs = np.unique(np.linspace(0, gx - 1, nx + 2)[1:-1].round().astype(int)) if gx > 2 else np.arange(gx)
        cells = [(int(y), int(x)) for y in ys for x in xs][:n]
        self.scheduler.set_jobs(self._chan + ":probe", [Job((-1, 1, i), self, "tile", c) for i, c in enumerate(cells)])

    def cancel(self) -> None:
        """Drop this pyramid's queued jobs (the running batch stops at its next sub-batch).

        The current view is not asked for again until it changes (or :meth:`refresh_requests`).
        """
        for c in ("probe", "view", "thumb", "nearby"):
            self.scheduler.clear(self._chan + ":" + c)

    def refresh_requests(self) -> None:
        """Forget the last requests, so that the next read re-queues what is still missing."""
        self._last.clear()

    # -------------------------------------------------------------- worker
    def batch_limit(self, kind: str) -> int:
        return self.renderer.batch_size if kind == "tile" else 8

    def process(self, kind: str, keys: list, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Run one batch of jobs (called on the scheduler's worker thread, or blocking)."""
        if kind == "tile":
            n = len(keys)
            self._process_tiles(keys, should_stop)
        elif kind == "preview":
            n = self._process_previews(keys, should_stop)
        else:  # pragma: no cover
            raise ValueError(f"unknown job kind {kind!r}")
        for cb in list(self.update_callbacks):
            cb(kind, keys)
        return n

    def _is_real0(self, ty: int, tx: int) -> bool:
        ch = self._store.get((0, ty, tx))
        return ch is not None and ch.complete

    def _read_windows(self, specs: list[TileSpec]) -> dict[tuple[int, int], np.ndarray]:
        return {(sp.ty, sp.tx): self.blocks.read(*sp.win) for sp in specs}

    def _process_tiles(self, keys, should_stop) -> int:
        with self._lock:
            keys = [k for k in dict.fromkeys(keys) if not self._is_real0(*k)]
        if not keys:
            return 0
        specs = [self.renderer.tile(ty, tx) for ty, tx in keys]
        t0 = time.perf_counter()
        windows = self._read_windows(specs)
        t1 = time.perf_counter()
        with self._compute_lock:  # stats of the renderer are not thread-safe
            res = self.renderer.compute_tiles(specs, windows=windows, should_stop=should_stop)
        t2 = time.perf_counter()
        had_fit = self.preview.n > 0
        for s in specs:
            t = res.get((s.ty, s.tx))
            if t is None:
                continue
            self.preview.fit(s, windows[(s.ty, s.tx)], t)
            self.ingest(s, t)
        if not had_fit and self.preview.n > 0:
            self._placeholder = quantise(self.preview.colour(), self.dtype)
        tm = self.timings
        tm["read_s"] += t1 - t0
        tm["compute_s"] += t2 - t1
        tm["ingest_s"] += time.perf_counter() - t2
        return len(res)

    def ingest(self, spec: TileSpec, tile: np.ndarray) -> None:
        """Store a computed tile (float (h, w, C)) at level 0 and cascade it up the pyramid.

        Only the changed box is downsampled at each level (it halves every level).
        """
        self._ingest_img(spec, quantise(tile, self.dtype))

    def adopt(self, source: TilePyramid, changed=()) -> int:
        """Take over what ``source`` has computed, except the level-0 tiles ``changed`` ((ty, tx)); returns the tiles taken.

        For a pyramid of the same model, seed and tile geometry over a canvas that differs
        from ``source``'s only inside the ``changed`` tiles (e.g. an edited canvas: the
        tiles whose content hash changed), every other tile has identical pixels. Its
        stored chunks are copied at every level (level-0 tiles are shared, coarser chunks
        copied) and the footprint of the changed tiles in coarser chunks is marked as not
        computed, so previews and then the new tiles replace it. Also takes over the
        preview map if this pyramid has not fitted one. Never runs the model and costs
        one memory copy of the coarse levels (safe on the UI thread).
        """
        if source.dtype != self.dtype or source.T != self.T or source.level_shapes != self.level_shapes or source.C != self.C:
            return 0
        if self.preview.n == 0 and source.preview.n > 0:
            with source.preview._lock:
                xtx, xty, n = source.preview.xtx.copy(), source.preview.xty.copy(), source.preview.n
            if xtx.shape == self.preview.xtx.shape and xty.shape == self.preview.xty.shape:
                with self.preview._lock:
                    self.preview.xtx, self.preview.xty, self.preview.n, self.preview.W = xtx, xty, n, None
                self._placeholder = quantise(self.preview.colour(), self.dtype)
        changed = {(int(ty), int(tx)) for ty, tx in changed}
        by_parent: dict[tuple[int, int, int], list] = {}
        for ty, tx in changed:  # the footprint of each changed tile at every coarser level
            for k in range(1, self.n_levels):
                f = 2**k
                by_parent.setdefault((k, ty // f, tx // f), []).append((ty, tx))
        with source._lock:
            items = list(source._store.items())
        T = self.T
        n = 0
        with self._lock:
            for key, ch in items:
                k, cy, cx = key
                mine = self._store.get(key)
                if mine is not None and mine.complete:
                    continue
                if k == 0:
                    if not ch.complete or (cy, cx) in changed:
                        continue
                    self._put(key, _Chunk(ch.img, None, True, True))  # level-0 tiles are replaced, never written into
                    n += 1
                    continue
                img = ch.img.copy()
                real = np.ones(img.shape[:2], bool) if ch.complete or ch.real is None else ch.real.copy()
                previewed = ch.previewed or ch.complete
                hit = by_parent.get(key)
                if hit:
                    f = 2**k
                    b = self._chunk_box(k, cy, cx)
                    for ty, tx in hit:
                        y0, x0 = ty * T // f - b.y0, tx * T // f - b.x0
                        y1, x1 = -(-(ty + 1) * T // f) - b.y0, -(-(tx + 1) * T // f) - b.x0
                        real[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = False
                    previewed = False  # the preview repaints the free pixels, then the tiles arrive
                done = bool(real.all())
                self._put(key, _Chunk(img, None if done else real, previewed or done, done))
        return n

    def _ingest_img(self, spec: TileSpec, img: np.ndarray) -> None:
        half = self.T // 2
        with self._lock:
            child = _Chunk(img, None, True, True)
            self._put((0, spec.ty, spec.tx), child)
            cy, cx = spec.ty, spec.tx
            y0, y1, x0, x1 = 0, img.shape[0], 0, img.shape[1]
            for k in range(1, self.n_levels):
                y0, x0 = y0 - y0 % 2, x0 - x0 % 2
                small, m = _down2(child.img[y0:y1, x0:x1], None if child.real is None else child.real[y0:y1, x0:x1])
                py, px = cy // 2, cx // 2
                parent = self._get_or_new(k, py, px)
                oy, ox = (cy % 2) * half + y0 // 2, (cx % 2) * half + x0 // 2
                ph, pw = parent.img.shape[:2]
                h, w = min(small.shape[0], ph - oy), min(small.shape[1], pw - ox)
                if h <= 0 or w <= 0:
                    break
                if m is None:
                    parent.img[oy : oy + h, ox : ox + w] = small[:h, :w]
                    parent.real[oy : oy + h, ox : ox + w] = True
                else:
                    sel = m[:h, :w]
                    parent.img[oy : oy + h, ox : ox + w][sel] = small[:h, :w][sel]
                    parent.real[oy : oy + h, ox : ox + w] |= sel
                if parent.real.all():
                    parent.complete, parent.real = True, None
                child, cy, cx = parent, py, px
                y0, y1, x0, x1 = oy, oy + h, ox, ox + w

    def _get_or_new(self, k: int, cy: int, cx: int, fill: bool = True) -> _Chunk:
        ch = self._store.get((k, cy, cx))
        if ch is None:
            b = self._chunk_box(k, cy, cx)
            img = np.empty((b.y1 - b.y0, b.x1 - b.x0, self.C), self.dtype)
            if fill:
                img[...] = self._placeholder
            ch = _Chunk(img, np.zeros(img.shape[:2], bool), False, False)
            self._put((k, cy, cx), ch)
        elif ch.complete and ch.real is None:
            ch.real = np.ones(ch.img.shape[:2], bool)  # temporarily, for the cascade's |=
        return ch

    def _put(self, key, ch: _Chunk) -> None:
        self.revision += 1
        old = self._store.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._store[key] = ch
        self._nbytes += ch.nbytes
        top = self.n_levels - 1
        while self._nbytes > self.store_bytes and len(self._store) > 1:
            for k2 in self._store:
                if k2[0] != top and k2 != key:
                    break
            else:
                break
            self._nbytes -= self._store.pop(k2).nbytes

    def _process_previews(self, keys, should_stop) -> int:
        t0 = time.perf_counter()
        try:
            return self._process_previews_(keys, should_stop)
        finally:
            self.timings["preview_s"] += time.perf_counter() - t0

    def _process_previews_(self, keys, should_stop) -> int:
        """Returns how many keys were handled (the rest were preempted)."""
        n = 0
        for i, key in enumerate(keys):
            if i > 0 and should_stop():
                return i
            k, cy, cx = key
            with self._lock:
                ch = self._store.get(key)
                if ch is not None and (ch.previewed or ch.complete):
                    continue
            try:
                img = self._preview_chunk(k, cy, cx, should_stop)
            except _Preempted:
                return i
            with self._lock:
                fresh = (k, cy, cx) not in self._store
                ch = self._get_or_new(k, cy, cx, fill=not fresh)
                if ch.complete:
                    ch.real = None
                    continue
                if fresh:
                    ch.img[...] = img
                else:
                    free = ~ch.real
                    ch.img[free] = img[free]
                ch.previewed = True
                self._put(key, ch)  # re-account bytes / recency
                self._paste_children(k, cy, cx, ch)
            self.n_previews += 1
            n += 1
        return len(keys)

    def _paste_children(self, k: int, cy: int, cx: int, ch: _Chunk) -> None:
        """Paste the real parts of any stored finer chunks (after an eviction of this one)."""
        if k == 0:
            return
        half = self.T // 2
        for dy in (0, 1):
            for dx in (0, 1):
                c = self._store.get((k - 1, 2 * cy + dy, 2 * cx + dx))
                if c is None:
                    continue
                small, m = _down2(c.img, c.real)
                oy, ox = dy * half, dx * half
                h, w = min(small.shape[0], ch.img.shape[0] - oy), min(small.shape[1], ch.img.shape[1] - ox)
                if h <= 0 or w <= 0:
                    continue
                sel = np.ones((h, w), bool) if m is None else m[:h, :w]
                ch.img[oy : oy + h, ox : ox + w][sel] = small[:h, :w][sel]
                ch.real[oy : oy + h, ox : ox + w] |= sel
        if ch.real is not None and ch.real.all():
            ch.complete, ch.real = True, None

    def _strided(self, y0: int, y1: int, x0: int, x1: int, st: int, should_stop) -> np.ndarray:
        """``data[:, y0:y1:st, x0:x1:st]`` read strip by strip (canvas-chunk rows), interruptible.

        Strips are kept in a small LRU, so a pre-empted preview resumes where it stopped.
        """
        data = self.renderer.canvas.data
        rows = np.cumsum((0,) + tuple(data.chunks[1]))
        parts = []
        ys = np.arange(y0, y1, st)
        for a, b in zip(rows[:-1], rows[1:]):
            sel = ys[(ys >= a) & (ys < b)]
            if sel.size == 0:
                continue
            key = (st, int(sel[0]), int(sel[-1]), x0, x1)
            strip = self._strips.get(key)
            if strip is None:
                if should_stop():
                    raise _Preempted
                strip = np.asarray(
                    data[:, int(sel[0]) : int(sel[-1]) + 1 : st, x0:x1:st].compute(scheduler="synchronous"), dtype=np.float32
                )
                self._strips[key] = strip
                while sum(v.nbytes for v in self._strips.values()) > 64 * 2**20 and len(self._strips) > 1:
                    self._strips.popitem(last=False)
            parts.append(strip)
        return np.concatenate(parts, axis=1)

    def _preview_chunk(self, k: int, cy: int, cx: int, should_stop=lambda: False) -> np.ndarray:
        """Preview pixels ``(h, w, C)`` (level dtype) for a chunk, from the expression under it."""
        b = self._chunk_box(k, cy, cx)
        f = 2**k
        p = self.preview.ppb
        Hb, Wb = self.renderer.canvas.n_bins
        # bin under the centre of each level-k pixel
        iy = np.minimum(((np.arange(b.y0, b.y1) + 0.5) * f / p).astype(np.int64), Hb - 1)
        ix = np.minimum(((np.arange(b.x0, b.x1) + 0.5) * f / p).astype(np.int64), Wb - 1)
        if f > p and f % p == 0:
            st = f // p
            blk = self._strided(int(iy[0]), int(iy[-1]) + 1, int(ix[0]), int(ix[-1]) + 1, st, should_stop)
            ry, rx = (iy - iy[0]) // st, (ix - ix[0]) // st
        else:
            blk = self.blocks.read(int(iy[0]), int(ix[0]), int(iy[-1] - iy[0] + 1), int(ix[-1] - ix[0] + 1))
            ry, rx = iy - iy[0], ix - ix[0]
        col = quantise(self.preview.apply(blk), self.dtype)  # (hb, wb, C), one colour per bin
        if f < p and p % f == 0:  # whole level-k pixels per bin: repeat (faster than fancy indexing)
            rep = p // f
            oy, ox = (b.y0 * f) % p // f, (b.x0 * f) % p // f
            up = np.repeat(np.repeat(col, rep, axis=0), rep, axis=1)
            return up[oy : oy + b.y1 - b.y0, ox : ox + b.x1 - b.x0]
        return col[ry[:, None], rx[None, :]]

    # ------------------------------------------------------------ blocking
    def compute_region(self, region: Region | None = None, level: int = 0) -> np.ndarray:
        """Blocking: compute every tile under ``region`` (level-``level`` px) in this thread; return its pixels.

        Uses the same path as the worker (``TileRenderer.compute_tiles`` and the
        cache), so its pixels equal the lazy layer's and the CLI's.
        """
        Hk, Wk = self.level_shapes[level]
        r = self._clip(level, region or Region(0, Hk, 0, Wk))
        tiles = self._chunks_in(0, self._to_level0(level, r))
        B = self.renderer.batch_size
        for i in range(0, len(tiles), B):
            self.process("tile", tiles[i : i + B])
        return self.read(level, r.y0, r.y1, r.x0, r.x1, request=False)

    def wait(self, timeout: float | None = None, poll=None) -> bool:
        """Wait until the scheduler has nothing queued or running."""
        return self.scheduler.wait_idle(timeout, poll)

    @property
    def stats(self) -> dict:
        """``computed`` / ``cached`` tiles (renderer), ``queued`` jobs (scheduler), ``previews``, ``stored`` chunks."""
        with self._lock:
            stored = len(self._store)
        return {
            "computed": int(self.renderer.stats["computed"]),
            "cached": int(self.renderer.stats["cached"]),
            "queued": self.scheduler.queued + self.scheduler.running,
            "previews": self.n_previews,
            "stored": stored,
            "store_mb": self._nbytes / 2**20,
        }

    def close(self) -> None:
        self.cancel()
        self.auto_request = False
        if self._own_scheduler:
            self.scheduler.close()


class LazyArray:
    """Base of read-on-demand numpy-like arrays: subclasses set ``shape``, ``dtype``, ``ndim`` and ``__getitem__``."""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def _full_key(self, key) -> tuple:
        """``key`` as a tuple of ``ndim`` indices (Ellipsis expanded, missing ones ``slice(None)``)."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = [j for j, k in enumerate(key) if k is Ellipsis][0]
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d {type(self).__name__}")
        return key


class PyramidLevel(LazyArray):
    """One level as a numpy-like array (``shape``, ``dtype``, ``ndim``, ``__getitem__``, ``__array__``).

    ``channel`` selects one output channel (shape ``(H, W)``) for non-RGB output.
    """

    def __init__(self, pyramid: TilePyramid, level: int, channel: int | None = None):
        self.pyramid = pyramid
        self.level = level
        self.channel = channel
        H, W = pyramid.level_shapes[level]
        self.shape = (H, W) if channel is not None else (H, W, pyramid.C)
        self.dtype = pyramid.dtype
        self.ndim = len(self.shape)

    @property
    def chunksize(self) -> tuple[int, ...]:
        T = self.pyramid.T
        return (T, T) if self.channel is not None else (T, T, self.pyramid.C)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Regular chunk shape (zarr style): napari widens its reads to whole tiles."""
        return self.chunksize

    def __repr__(self) -> str:
        return f"PyramidLevel(level={self.level}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key):
        key = self._full_key(key)
        box, post = [], []
        for dim, k in enumerate(key[:2]):
            n = self.shape[dim]
            if isinstance(k, slice):
                a, b, st = k.indices(n)
                if st == 1:
                    box.append((a, max(a, b)))
                    post.append(slice(None))
                else:
                    lo, hi = (a, b) if st > 0 else (b + 1, a + 1)
                    lo, hi = max(lo, 0), min(max(hi, lo), n)
                    box.append((lo, hi))
                    post.append(slice(a - lo, (b - lo) if b - lo >= 0 else None, st))
            elif isinstance(k, (int, np.integer)):
                i = int(k) + (n if k < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} out of range for axis {dim} of size {n}")
                box.append((i, i + 1))
                post.append(0)
            else:  # arrays etc.: read the whole extent and let numpy index
                box.append((0, n))
                post.append(k)
        (y0, y1), (x0, x1) = box
        out = self.pyramid.read(self.level, y0, y1, x0, x1)
        if self.channel is not None:
            out = out[..., self.channel]
        rest = tuple(key[2:])
        return out[tuple(post) + rest]
