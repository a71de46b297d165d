"""The tiling engine: minimal input windows, batched forward, exact stitching.

Tiles live on a global grid of ``tile_px`` output pixels anchored at pixel
(0, 0) of the canvas. Tile ``(ty, tx)`` covers output pixels
``[ty*T, (ty+1)*T) x [tx*T, (tx+1)*T)``, clipped to the canvas extent. Its
input window is the minimal run of bins whose valid-convolution output covers
it (:meth:`Geometry.window_for`); bins outside the canvas read as zero.

Because every layer is padding-free and the noise is a function of absolute
coordinates, a tile's pixels depend only on the model, the seed and its
input window. Rendering a region in one piece, in many tiles, or in any order
gives the same pixels.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DeviceMemoryError, RegionError
from ..expression.canvas import ExpressionCanvas
from ..models.bundle import GeneratorBundle
from ..models.device import (
    PRECISIONS,
    autocast,
    empty_cache,
    free_memory_bytes,
    get_device,
    is_out_of_memory,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)

__all__ = ["MemoryTileCache", "Region", "TileRenderer", "TileSpec", "choose_batch_size", "parse_region"]

_log = logging.getLogger(__name__)

#: Batch sizes the automatic choice stays within (tiles per forward on a GPU).
AUTO_BATCH_RANGE = (1, 128)
#: Share of the free device memory that the automatic batch may use.
AUTO_BATCH_FRACTION = 0.5


def choose_batch_size(
    free_bytes: int, per_tile_bytes: int, fraction: float = AUTO_BATCH_FRACTION, lo: int = 1, hi: int = 128
) -> int:
    """Tiles per forward that fit in ``fraction`` of ``free_bytes``, a power of two in ``[lo, hi]``.

    ``per_tile_bytes`` is the device memory one more tile in the batch costs
    (measured by :meth:`TileRenderer.measure_tile_bytes`).
    """
    per = max(1, int(per_tile_bytes))
    n = int(fraction * max(0, int(free_bytes)) // per)
    b = lo
    while b * 2 <= min(n, hi):
        b *= 2
    return max(lo, min(b, hi))


@dataclass(frozen=True)
class Region:
    """A half-open box in output pixels: ``[y0, y1) x [x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def __str__(self) -> str:
        return f"{self.y0}:{self.y1},{self.x0}:{self.x1}"


def parse_region(text: str) -> Region:
    """Parse ``"Y0:Y1,X0:X1"`` into a :class:`Region`."""
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(v) for v in ys.split(":"))
        x0, x1 = (int(v) for v in xs.split(":"))
    except ValueError:
        raise RegionError(f"region {text!r} is not of the form Y0:Y1,X0:X1 (integers, output pixels)") from None
    return Region(y0, y1, x0, x1)


@dataclass(frozen=True)
class TileSpec:
    """One grid tile and its minimal input window.

    ``out`` is the tile's box in output px; ``win`` is ``(b0y, b0x, nby, nbx)``
    in bins; ``crop`` is ``(cy, cx)``, the output px to drop at the window's start.
    """

    ty: int
    tx: int
    out: Region
    win: tuple[int, int, int, int]
    crop: tuple[int, int]


class MemoryTileCache:
    """An LRU of rendered tiles bounded by bytes.

    Keys are content hashes (see :meth:`TileRenderer.tile_key`).
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def get(self, key: str) -> np.ndarray | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: str, value: np.ndarray) -> None:
        if key in self._d:
            self.nbytes -= self._d.pop(key).nbytes
        self._d[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes and len(self._d) > 1:
            _, old = self._d.popitem(last=False)
            self.nbytes -= old.nbytes

    def __contains__(self, key: str) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)


class TileRenderer:
    """Render output tiles of a generator over an expression canvas.

    Parameters
    ----------
    bundle : GeneratorBundle
        The generator and its card.
    canvas : ExpressionCanvas
        Expression counts; aligned to the model's gene panel here (missing
        genes raise :class:`~napari_gdt.errors.GenePanelError`).
    seed : int
        Seed of the global latent and of the coordinate-hashed noise.
    tile_px : int, optional
        Tile edge in output px (default: the bundle's ``tile_px``).
    device : str, optional
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    batch_size : int or None
        Tiles per forward pass. None: 8 on the CPU and MPS; on CUDA, chosen from the
        free device memory (:func:`choose_batch_size`). After a CUDA out-of-memory error
        the renderer halves it and retries (down to 1).
    precision : {"fp32", "bf16", "fp16"}
        ``fp32`` (default) is exact; the others run the convolutions under autocast
        (faster on GPUs, pixels differ slightly; the tile cache keys include it).
    channels_last : bool
        Feed the model channels-last input (often faster for convolutions on GPUs).
    compile : bool
        Run the model through ``torch.compile`` (needs a compiler; slower first call).
    cache : object with ``get``/``put``, optional
        Tile cache keyed by content; ``None`` disables caching.
    zero_fill : bool
        Zero-fill model genes missing from the canvas (with a warning).
    """

    def __init__(
        self,
        bundle: GeneratorBundle,
        canvas: ExpressionCanvas,
        seed: int = 0,
        tile_px: int | None = None,
        device: str | None = "auto",
        batch_size: int | None = None,
        cache=None,
        zero_fill: bool = False,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ):
        self.bundle = bundle
        self.device = get_device(device)
        if bundle.device != self.device:
            bundle.to(self.device)
        self.canvas = canvas.align(bundle.genes, zero_fill=zero_fill, where=str(canvas.meta.get("path", "canvas")))
        self.seed = int(seed)
        self.tile_px = int(tile_px or bundle.tile_px)
        if self.tile_px <= 0:
            raise ValueError(f"tile_px must be > 0, got {self.tile_px}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.cache = cache
        self.geometry = bundle.model.geometry
        ppb = self.geometry.px_per_bin
        self.shape_px = (self.canvas.n_bins[0] * ppb, self.canvas.n_bins[1] * ppb)
        self.stats = {"computed": 0, "cached": 0}
        self.oom_retries = 0  # times a batch was halved after running out of device memory
        self._model = bundle.model
        if compile:
            self._model = torch.compile(bundle.model)
        self._styles: tuple[int, torch.Tensor] | None = None
        self._staging: dict[tuple, torch.Tensor] = {}  # pinned host buffers for the windows (CUDA)
        self._pin = self.device.type == "cuda"
        if batch_size is None:
            self.batch_size = 8
            if self.device.type == "cuda":
                self.batch_size = choose_batch_size(
                    free_memory_bytes(self.device)[0], self.measure_tile_bytes(), lo=AUTO_BATCH_RANGE[0], hi=AUTO_BATCH_RANGE[1]
                )
        else:
            self.batch_size = max(1, int(batch_size))

    # ---------------------------------------------------------------- geometry
    @property
    def out_channels(self) -> int:
        return self.bundle.out_channels

    @property
    def grid_shape(self) -> tuple[int, int]:
        T = self.tile_px
        return -(-self.shape_px[0] // T), -(-self.shape_px[1] // T)

    def check_region(self, region: Region | None) -> Region:
        """Default to the whole canvas; raise :class:`RegionError` outside it."""
        H, W = self.shape_px
        if region is None:
            return Region(0, H, 0, W)
        if region.y1 <= region.y0 or region.x1 <= region.x0:
            raise RegionError(f"region {region} is empty")
        if region.y0 < 0 or region.x0 < 0 or region.y1 > H or region.x1 > W:
            raise RegionError(f"region {region} lies outside the canvas (0:{H},0:{W} output px)")
        return region

    def tile(self, ty: int, tx: int) -> TileSpec:
        """The :class:`TileSpec` of grid tile ``(ty, tx)``."""
        T = self.tile_px
        H, W = self.shape_px
        out = Region(ty * T, min((ty + 1) * T, H), tx * T, min((tx + 1) * T, W))
        by, nby, cy = self.geometry.window_for(out.y0, out.y1)
        bx, nbx, cx = self.geometry.window_for(out.x0, out.x1)
        return TileSpec(ty, tx, out, (by, bx, nby, nbx), (cy, cx))

    def tiles_for(self, region: Region) -> list[TileSpec]:
        """Grid tiles intersecting ``region``, row-major."""
        T = self.tile_px
        return [
            self.tile(ty, tx)
            for ty in range(region.y0 // T, -(-region.y1 // T))
            for tx in range(region.x0 // T, -(-region.x1 // T))
        ]

    # ------------------------------------------------------------------ keys
    def tile_key(self, spec: TileSpec, window: np.ndarray) -> str:
        """Content hash: model digest, seed, tile box, window origin and window bytes."""
        h = hashlib.blake2b(digest_size=20)
        h.update(self.bundle.digest.encode())
        h.update(
            np.asarray(
                [self.seed, *spec.win, *spec.crop, spec.out.y1 - spec.out.y0, spec.out.x1 - spec.out.x0], dtype=np.int64
            ).tobytes()
        )
        h.update(np.ascontiguousarray(window, dtype=np.float32).tobytes())
        if self.precision != "fp32":  # other pixels: other keys (fp32 keys stay as they were)
            h.update(self.precision.encode())
        return h.hexdigest()

    def read_window(self, spec: TileSpec) -> np.ndarray:
        by, bx, nby, nbx = spec.win
        return self.canvas.read_window(by, bx, nby, nbx)

    # --------------------------------------------------------------- compute
    def forward(self, windows, origins: Sequence[tuple[int, int]]) -> np.ndarray:
        """Bare batched model forward: ``(B, G, h, w)`` counts -> ``(B, H, W, C)`` float32.

        ``windows`` is an array or a list of ``(G, h, w)`` arrays of one shape. On CUDA they
        are stacked straight into a reused pinned host buffer and sent with one
        asynchronous copy per batch; the result comes back with one copy per batch.
        """
        with torch.inference_mode():
            x = self._to_device(windows)
            o = torch.as_tensor(np.asarray(origins, dtype=np.int64).reshape(-1, 2)).to(self.device, non_blocking=self._pin)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                y = self._model(x, o, self._style(), self.seed)
            return y.permute(0, 2, 3, 1).float().cpu().numpy()

    def _style(self) -> torch.Tensor:
        """The style vector of the current seed, computed once (fp32, on the device)."""
        if self._styles is None or self._styles[0] != self.seed or self._styles[1].device != self.device:
            self._styles = (self.seed, self.bundle.styles(self.seed))
        return self._styles[1]

    def _to_device(self, windows) -> torch.Tensor:
        if not self._pin:
            arr = np.ascontiguousarray(windows if isinstance(windows, np.ndarray) else np.stack(windows), dtype=np.float32)
            return torch.from_numpy(arr).to(self.device)
        n = len(windows)
        shape = (n,) + tuple(windows[0].shape)
        key = (threading.get_ident(), shape)  # one buffer per thread and shape: threads never share one
        buf = self._staging.get(key)
        if buf is None:
            if len(self._staging) > 16:  # edge tiles come in a few shapes; keep the buffers bounded
                self._staging.clear()
            buf = self._staging[key] = torch.empty(shape, dtype=torch.float32).pin_memory()
        if isinstance(windows, np.ndarray):
            np.copyto(buf.numpy(), windows, casting="same_kind")
        else:
            np.stack(windows, out=buf.numpy())
        # the previous batch's copy from this buffer has finished: forward() ends with a blocking copy back
        return buf.to(self.device, non_blocking=True)

    def measure_tile_bytes(self) -> int:
        """Device memory one more full tile in a batch costs (CUDA; measured with batches of 1 and 2)."""
        ppb = self.geometry.px_per_bin
        T = self.tile_px
        _, n, _ = self.geometry.window_for(0, T)
        win = np.zeros((2, len(self.bundle.genes), n, n), np.float32)
        peaks = []
        for b in (1, 2):
            synchronize(self.device)
            reset_peak_memory(self.device)
            base = peak_memory_bytes(self.device) or 0
            self.forward(win[:b], [(0, 0)] * b)
            synchronize(self.device)
            peaks.append((peak_memory_bytes(self.device) or 0) - base)
        per = max(peaks[1] - peaks[0], peaks[0] // 2)
        if per <= 0:  # not measurable here: a float32 estimate of the largest activation
            per = 4 * 2 * (n * ppb) ** 2 * 64
        return int(per)

    def _forward_safe(self, items: list, on_batch, should_stop=None) -> bool:
        """Run ``items`` ``[(spec, window, key), ...]`` batch by batch; halve the batch on out-of-memory.

        Calls ``on_batch(chunk, out)`` per batch. Returns False when ``should_stop()``
        asked to stop between batches.
        """
        i = 0
        while i < len(items):
            if should_stop is not None and should_stop():
                return False
            chunk = items[i : i + self.batch_size]
            try:
                out = self.forward([w for _, w, _ in chunk], [(s.win[0], s.win[1]) for s, _, _ in chunk])
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                empty_cache(self.device)
                mem = free_memory_bytes(self.device)
                where = f" ({mem[0] / 2**30:.1f} of {mem[1] / 2**30:.1f} GiB free)" if mem else ""
                shape = "x".join(str(v) for v in chunk[0][1].shape)
                if len(chunk) <= 1:
                    raise DeviceMemoryError(
                        f"{self.device.type.upper()} out of memory rendering one tile (window {shape}) at batch size 1{where}: "
                        f"close other programs on the GPU, use a smaller --tile-px, or --device cpu"
                    ) from None
                self.batch_size = max(1, len(chunk) // 2)
                self.oom_retries += 1
                _log.warning(
                    "%s out of memory at batch size %d%s; retrying at batch size %d",
                    self.device.type.upper(),
                    len(chunk),
                    where,
                    self.batch_size,
                )
                continue
            on_batch(chunk, out)
            i += len(chunk)
        return True

    def compute_tiles(
        self,
        specs: Iterable[TileSpec],
        windows: dict[tuple[int, int], np.ndarray] | None = None,
        on_tile: Callable[[TileSpec, np.ndarray], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[tuple[int, int], np.ndarray]:
        """Compute (or fetch from the cache) tiles; returns ``{(ty, tx): (h, w, C) float32}``.

        Tiles with the same input-window shape are batched together.
        ``on_tile`` is called as each tile is ready; ``should_stop`` is polled
        between batches (cancellation).
        """
        specs = list(specs)
        if windows is None:
            windows = self._read_windows(specs)  # one canvas read of the union box (or one per tile if sparse)
        results: dict[tuple[int, int], np.ndarray] = {}
        pending: dict[tuple[int, int], list[tuple[TileSpec, np.ndarray, str | None]]] = {}
        for s in specs:
            win = windows[(s.ty, s.tx)]
            key = None
            if self.cache is not None:
                key = self.tile_key(s, win)
                hit = self.cache.get(key)
                if hit is not None:
                    self.stats["cached"] += 1
                    results[(s.ty, s.tx)] = hit
                    if on_tile:
                        on_tile(s, hit)
                    continue
            pending.setdefault(win.shape[1:], []).append((s, win, key))

        def on_batch(chunk, out):
            for (s, _, key), img in zip(chunk, out):
                cy, cx = s.crop
                th, tw = s.out.shape
                tile = np.ascontiguousarray(img[cy : cy + th, cx : cx + tw])
                self.stats["computed"] += 1
                if self.cache is not None and key is not None:
                    self.cache.put(key, tile)
                results[(s.ty, s.tx)] = tile
                if on_tile:
                    on_tile(s, tile)

        for group in pending.values():
            if not self._forward_safe(group, on_batch, should_stop):
                break
        return results

    def render_region(
        self,
        region: Region | None = None,
        order: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Blocking render of ``region`` (output px) as ``(H, W, C)`` float32.

        ``order`` optionally permutes the tile list (tests use it to show
        that order does not matter). ``progress(done, total)`` is called per tile.
        """
        region = self.check_region(region)
        specs = self.tiles_for(region)
        if order is not None:
            specs = [specs[i] for i in order]
        windows = self._read_windows(specs)
        out = np.zeros(region.shape + (self.out_channels,), dtype=np.float32)
        done = [0]

        def place(s: TileSpec, tile: np.ndarray) -> None:
            ya, yb = max(s.out.y0, region.y0), min(s.out.y1, region.y1)
            xa, xb = max(s.out.x0, region.x0), min(s.out.x1, region.x1)
            out[ya - region.y0 : yb - region.y0, xa - region.x0 : xb - region.x0] = tile[
                ya - s.out.y0 : yb - s.out.y0, xa - s.out.x0 : xb - s.out.x0
            ]
            done[0] += 1
            if progress:
                progress(done[0], len(specs))

        self.compute_tiles(specs, windows=windows, on_tile=place)
        return out

    def _read_windows(self, specs: list[TileSpec]) -> dict[tuple[int, int], np.ndarray]:
        """Read all tile windows with one canvas read of their union box."""
        if not specs:
            return {}
        y0 = min(s.win[0] for s in specs)
        x0 = min(s.win[1] for s in specs)
        y1 = max(s.win[0] + s.win[2] for s in specs)
        x1 = max(s.win[1] + s.win[3] for s in specs)
        if (y1 - y0) * (x1 - x0) > 4 * sum(s.win[2] * s.win[3] for s in specs):  # scattered tiles: read each
            return {(s.ty, s.tx): self.read_window(s) for s in specs}
        block = self.canvas.read_window(y0, x0, y1 - y0, x1 - x0)
        return {
            (s.ty, s.tx): block[:, s.win[0] - y0 : s.win[0] - y0 + s.win[2], s.win[1] - x0 : s.win[1] - x0 + s.win[3]]
            for s in specs
        }
