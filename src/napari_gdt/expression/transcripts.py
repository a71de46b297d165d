"""Transcript readers (Xenium, Vizgen MERFISH, CosMx, generic tables) with streaming rasterisation.

A transcript table lists one detected molecule per row: its position and its
gene. The canvas counts molecules per gene and per square bin of ``bin_um``
micrometres. Whole slides hold tens of millions of rows and hundreds to
thousands of genes, so nothing here ever holds a dense ``genes x H x W``
array:

1. the table is read in record batches (``pyarrow.csv.open_csv`` or
   ``pyarrow.parquet.ParquetFile.iter_batches``), only the needed columns;
2. each batch is filtered (quality, control probes, gene panel) and turned
   into packed 64-bit keys ``gene | bin row | bin col``;
3. keys are buffered, then sorted and run-length encoded into *runs* of
   unique ``(key, count)`` pairs. Memory follows the number of occupied
   ``(gene, bin)`` pairs, not ``genes x bins``;
4. the canvas is a dask array whose every chunk is built on demand from the
   runs (a binary search per gene), so writing it to OME-Zarr streams chunk
   by chunk and empty chunks are never stored.

Coordinates
-----------
Bins are laid on a grid anchored at ``origin_um`` (default: the µm position
of the paired image's pixel corner ``(0, 0)`` when an image is registered,
else ``(0, 0)`` µm): bin ``(r, c)`` of the canvas covers
``y ∈ [y0 + r*bin_um, y0 + (r+1)*bin_um)`` where ``y0 = meta["origin_um"][0]``
(likewise for x). The canvas spans the occupied bins only.

``canvas.affine`` uses *continuous* coordinates on both sides: bin ``(r, c)``
covers ``[r, r+1) x [c, c+1)`` and image pixel ``(i, j)`` covers
``[i, i+1) x [j, j+1)``, so ``affine @ (r, c, 1)`` is where the bin's corner
falls in the image. It is the identity when no image is given.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import GenePanelError, ReaderError
from .canvas import ExpressionCanvas

__all__ = [
    "COSMX_UM_PER_PX",
    "DEFAULT_BIN_UM",
    "SCHEMAS",
    "XENIUM_IMAGE_UM_PER_PX",
    "BinAccumulator",
    "SparseCounts",
    "TranscriptSchema",
    "image_registration",
    "rasterize_transcripts",
    "read_cosmx",
    "read_merfish",
    "read_transcripts_table",
    "read_xenium",
    "table_columns",
]

DEFAULT_BIN_UM = 10.0
COSMX_UM_PER_PX = 0.12028  # CosMx SMI global pixel size (µm / px)
XENIUM_IMAGE_UM_PER_PX = 0.2125  # Xenium morphology image, level 0 (µm / px)

# key layout: gene (19 bits) | bin row + OFF (22 bits) | bin col + OFF (22 bits)
_AXIS_BITS = 22
_AXIS_MASK = (1 << _AXIS_BITS) - 1
_OFF = 1 << (_AXIS_BITS - 1)
_GENE_SHIFT = 2 * _AXIS_BITS
_MAX_GENES = 1 << (63 - _GENE_SHIFT)


# --------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class TranscriptSchema:
    """Columns and filtering rules of a transcript table format."""

    name: str
    x: str
    y: str
    gene: str
    units: str = "um"  # "um" or "px"
    qv: str | None = None
    qv_min: float | None = None
    drop_prefixes: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # other columns read (e.g. CosMx fov)


SCHEMAS: dict[str, TranscriptSchema] = {
    "xenium": TranscriptSchema(
        "xenium",
        "x_location",
        "y_location",
        "feature_name",
        "um",
        qv="qv",
        qv_min=20.0,
        drop_prefixes=("NegControl", "BLANK", "Unassigned", "Deprecated"),
    ),
    "merfish": TranscriptSchema("merfish", "global_x", "global_y", "gene", "um", drop_prefixes=("Blank-",)),
    "cosmx": TranscriptSchema("cosmx", "x_global_px", "y_global_px", "target", "px", drop_prefixes=("NegPrb", "SystemControl")),
}


# --------------------------------------------------------------------------- small helpers
def _fmt_path(path) -> str:
    return str(path)


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def table_columns(path: str | Path) -> list[str]:
    """Column names of a CSV (optionally gzipped) or Parquet table, read from its header only.

    Raises :class:`ReaderError` for a missing or empty file.
    """
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p}: no such file")
    if p.is_dir():
        raise ReaderError(f"{p}: is a folder, expected a transcript table (.csv, .csv.gz or .parquet)")
    if p.stat().st_size == 0:
        raise ReaderError(f"{p}: empty file (no header, no rows)")
    if _is_parquet(p):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(p).names)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and others for non-parquet bytes
            raise ReaderError(f"{p}: not a readable Parquet file ({e})") from None
    opener = gzip.open if _is_gzip(p) else open
    try:
        with opener(p, "rt", encoding="utf-8-sig", newline="") as fh:
            line = fh.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ReaderError(f"{p}: cannot read the header ({e})") from None
    if not line.strip():
        raise ReaderError(f"{p}: empty file (no header, no rows)")
    return [c.strip() for c in next(csv.reader([line]))]


def _check_columns(path: Path, columns: Sequence[str], needed: Iterable[str | None], fmt: str) -> None:
    missing = [c for c in needed if c and c not in columns]
    if missing:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise ReaderError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} needed for the {fmt} format "
            f"(columns found: {shown})"
        )


def _image_shape(image) -> tuple[int, int]:
    """(rows, cols) of an image file (header only where possible) or array."""
    if image is None:
        raise ReaderError("no image given")
    if not isinstance(image, (str, Path)):
        arr = np.asarray(image)
        return int(arr.shape[0]), int(arr.shape[1])
    p = Path(image)
    if not p.exists():
        raise ReaderError(f"{p}: no such image file")
    low = p.name.lower()
    if low.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(p) as tf:
            shape = tf.series[0].shape
            axes = tf.series[0].axes
        iy, ix = axes.find("Y"), axes.find("X")
        return int(shape[iy]), int(shape[ix])
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(p) as im:
            w, h = im.size
        return int(h), int(w)
    except Exception as e:  # noqa: BLE001 - PIL/tifffile raise many kinds; all become one ReaderError
        raise ReaderError(f"{p}: cannot read the image header ({e})") from None


def _read_matrix(path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise ReaderError(f"{p}: no such transform file")
    try:
        m = np.loadtxt(p, delimiter=None if p.suffix.lower() != ".csv" or "," not in p.read_text() else ",")
    except (ValueError, UnicodeDecodeError) as e:
        raise ReaderError(f"{p}: not a 3x3 matrix of numbers ({e})") from None
    m = np.atleast_2d(m)
    if m.shape == (2, 3):
        m = np.vstack([m, [0, 0, 1]])
    if m.shape != (3, 3):
        raise ReaderError(f"{p}: expected a 3x3 (or 2x3) micron-to-pixel matrix, got shape {m.shape}")
    return m


_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def image_registration(
    image=None,
    *,
    transform=None,
    um_per_px: float | None = None,
    extent_um: Sequence[float] | None = None,
    origin_um: Sequence[float] = (0.0, 0.0),
) -> np.ndarray | None:
    """3x3 map from µm ``(y, x, 1)`` to paired-image pixels ``(row, col, 1)``, or None.

    Exactly one way is used, in this order:

    * ``transform``: a 3x3 matrix or a file holding one (Vizgen's
      ``micron_to_mosaic_pixel_transform.csv``), mapping µm ``(x, y, 1)`` to
      pixels ``(x, y, 1)`` (x first, as the vendors write it);
    * ``extent_um = (xmin, xmax, ymin, ymax)``: the image spans that µm
      rectangle exactly (needs the image, for its size);
    * ``um_per_px``: pixel ``(0, 0)``'s corner sits at ``origin_um`` (y, x).
    """
    if transform is not None:
        m = _read_matrix(transform) if isinstance(transform, (str, Path)) else np.asarray(transform, dtype=float)
        name = str(transform) if isinstance(transform, (str, Path)) else "image transform"
        if m.shape != (3, 3):
            raise ReaderError(f"{name}: image transform must be 3x3, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ReaderError(f"{name}: image transform has NaN or infinite entries")
        det = float(np.linalg.det(m[:2, :2]))
        if not np.isfinite(det) or abs(det) < 1e-12 * max(1.0, float(np.abs(m[:2, :2]).max()) ** 2):
            raise ReaderError(
                f"{name}: image transform is singular (its 2x2 part has determinant {det:g}); it cannot map µm to pixels"
            )
        return _SWAP @ m @ _SWAP
    if extent_um is not None:
        if len(extent_um) != 4:
            raise ReaderError(f"image extent must be xmin,xmax,ymin,ymax in µm, got {extent_um!r}")
        xmin, xmax, ymin, ymax = (float(v) for v in extent_um)
        if not (xmax > xmin and ymax > ymin):
            raise ReaderError(f"image extent {extent_um!r}: need xmax > xmin and ymax > ymin")
        rows, cols = _image_shape(image)
        sy, sx = (ymax - ymin) / rows, (xmax - xmin) / cols
        return np.array([[1 / sy, 0, -ymin / sy], [0, 1 / sx, -xmin / sx], [0, 0, 1.0]])
    if um_per_px is not None:
        if not um_per_px > 0:
            raise ReaderError(f"image µm per pixel must be > 0, got {um_per_px}")
        oy, ox = (float(v) for v in origin_um)
        return np.array([[1 / um_per_px, 0, -oy / um_per_px], [0, 1 / um_per_px, -ox / um_per_px], [0, 0, 1.0]])
    return None


# --------------------------------------------------------------------------- accumulation
class SparseCounts:
    """Counts per ``(gene, bin)`` kept as sorted runs of packed keys; sliceable like a dense array.

    ``self[g0:g1, y0:y1, x0:x1]`` returns the dense float32 counts of that
    box, built from binary searches in the runs (cost follows the entries in
    the box's rows, not the box's volume times genes). This is what the
    canvas' dask chunks call.
    """

    def __init__(self, runs, channel_codes, bin_origin, shape):
        self.runs = runs  # list of (keys int64 sorted unique, counts uint32)
        self.channel_codes = np.asarray(channel_codes, dtype=np.int64)  # -1 = zero-filled channel
        self.by0, self.bx0 = (int(v) for v in bin_origin)  # absolute bin index of canvas row/col 0
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    @property
    def nnz(self) -> int:
        return int(sum(len(k) for k, _ in self.runs))

    @property
    def nbytes_sparse(self) -> int:
        return int(sum(k.nbytes + c.nbytes for k, c in self.runs))

    def _key(self, codes, rows):
        return (codes << _GENE_SHIFT) | ((rows + self.by0 + _OFF) << _AXIS_BITS)

    def __getitem__(self, idx):
        if not isinstance(idx, tuple):
            idx = (idx,)
        idx = idx + (slice(None),) * (3 - len(idx))
        squeeze = []
        sl = []
        for ax, (s, n) in enumerate(zip(idx, self.shape)):
            if isinstance(s, (int, np.integer)):
                i = int(s) + (n if s < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {s} out of range for axis {ax} of size {n}")
                s = slice(i, i + 1)
                squeeze.append(ax)
            if not isinstance(s, slice):
                raise TypeError("SparseCounts supports integers and slices only")
            a, b, step = s.indices(n)
            if step != 1:
                raise TypeError("SparseCounts supports unit-step slices only")
            sl.append((a, max(a, b)))
        out = self._box(*sl)
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    def _box(self, gs, ys, xs) -> np.ndarray:
        (g0, g1), (y0, y1), (x0, x1) = gs, ys, xs
        h, w = y1 - y0, x1 - x0
        out = np.zeros((g1 - g0, h, w), dtype=np.float32)
        if out.size == 0:
            return out
        codes = self.channel_codes[g0:g1]
        valid = np.flatnonzero(codes >= 0)
        if valid.size == 0:
            return out
        vc = codes[valid]
        lo_keys = self._key(vc, np.int64(y0))
        hi_keys = self._key(vc, np.int64(y1))
        flat = out.reshape(g1 - g0, h * w)
        ax0, ax1 = x0 + self.bx0 + _OFF, x1 + self.bx0 + _OFF
        for keys, counts in self.runs:
            los = np.searchsorted(keys, lo_keys)
            his = np.searchsorted(keys, hi_keys)
            for j, lo, hi in zip(valid, los, his):
                if hi <= lo:
                    continue
                k = keys[lo:hi]
                bx = k & _AXIS_MASK
                m = (bx >= ax0) & (bx < ax1)
                if not m.any():
                    continue
                k = k[m]
                r = ((k >> _AXIS_BITS) & _AXIS_MASK) - (y0 + self.by0 + _OFF)
                c = (k & _AXIS_MASK) - ax0
                flat[j, r * w + c] += counts[lo:hi][m]  # keys are unique within a run
        return out

    def gene_totals(self, n_codes: int) -> np.ndarray:
        tot = np.zeros(n_codes, dtype=np.float64)
        for keys, counts in self.runs:
            tot += np.bincount(keys >> _GENE_SHIFT, weights=counts, minlength=n_codes)[:n_codes]
        return tot

    def total(self) -> int:
        return int(sum(int(c.sum(dtype=np.uint64)) for _, c in self.runs))


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a new value starts in sorted ``keys``."""
    flags = np.empty(keys.size, dtype=bool)
    flags[0] = True
    np.not_equal(keys[1:], keys[:-1], out=flags[1:])
    return np.flatnonzero(flags)


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and their multiplicities (keys is sorted in place)."""
    keys.sort()
    if keys.size == 0:
        return keys, np.zeros(0, dtype=np.uint32)
    starts = _run_starts(keys)
    if starts.size == keys.size:  # all distinct (sparse data): no gather needed
        return keys, np.ones(keys.size, dtype=np.uint32)
    counts = np.empty(starts.size, dtype=np.uint32)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1], casting="unsafe")
    counts[-1] = keys.size - starts[-1]
    return keys[starts], counts


def _merge_runs(runs):
    """Merge sorted unique runs into one (timsort merges the presorted runs in near-linear time)."""
    keys = np.concatenate([k for k, _ in runs])
    counts = np.concatenate([c for _, c in runs])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    del order
    starts = _run_starts(keys)
    if starts.size == keys.size:
        return keys, counts
    summed = np.add.reduceat(counts.astype(np.uint64), starts).astype(np.uint32)
    return keys[starts], summed


class BinAccumulator:
    """Streams transcripts into sparse per-``(gene, bin)`` counts with bounded memory.

    Parameters
    ----------
    bin_um : float
        Bin edge in µm (> 0).
    origin_um : (float, float)
        µm position ``(y, x)`` of a bin corner; the grid is anchored there.
    buffer_keys : int
        Keys buffered before a sort into a run (8 bytes each).
    max_runs : int
        Runs kept before they are merged into one.
    """

    def __init__(
        self, bin_um: float, origin_um=(0.0, 0.0), buffer_keys: int = 8_000_000, max_runs: int = 8, source: str = "input"
    ):
        if not (isinstance(bin_um, (int, float, np.floating)) and bin_um > 0 and math.isfinite(bin_um)):
            raise ReaderError(f"{source}: bin size must be > 0 µm (option --bin-um), got {bin_um}")
        self.bin_um = float(bin_um)
        self.origin_um = (float(origin_um[0]), float(origin_um[1]))
        self.buffer_keys = int(buffer_keys)
        self.max_runs = int(max_runs)
        self.source = source
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_added = 0

    def add(self, y_um: np.ndarray, x_um: np.ndarray, codes: np.ndarray) -> None:
        """Add transcripts at ``(y_um, x_um)`` (µm) with integer gene ``codes`` (>= 0)."""
        n = len(codes)
        if n == 0:
            return
        bins = []
        for v, o in ((y_um, self.origin_um[0]), (x_um, self.origin_um[1])):
            t = np.subtract(v, o, dtype=np.float64)
            t /= self.bin_um
            t += _OFF  # shifted to positive, so truncation is floor
            b = t.astype(np.int64)
            del t
            lo, hi = int(b.min()), int(b.max())
            if lo < 0 or hi >= 2 * _OFF:
                raise ReaderError(
                    f"{self.source}: coordinates span more than {_OFF} bins of {self.bin_um} µm from the origin; "
                    "check the units (--units um|px, --um-per-px) or use a larger --bin-um"
                )
            bins.append(b)
        by, bx = bins
        keys = np.asarray(codes).astype(np.int64) << _GENE_SHIFT
        by <<= _AXIS_BITS
        keys |= by
        keys |= bx
        self._buf.append(keys)
        self._buffered += n
        self.n_added += n
        if self._buffered >= self.buffer_keys:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        keys = self._buf[0] if len(self._buf) == 1 else np.concatenate(self._buf)
        self._buf, self._buffered = [], 0
        self.runs.append(_unique_counts(keys))
        if len(self.runs) > self.max_runs:
            self.runs = [_merge_runs(self.runs)]

    def finalize(self, channel_codes: Sequence[int]) -> SparseCounts:
        """Flush, find the occupied extent and return the counts, channels in ``channel_codes`` order."""
        self._flush()
        if len(self.runs) > 1 and sum(len(k) for k, _ in self.runs) < 2_000_000:
            self.runs = [_merge_runs(self.runs)]
        if not self.runs or all(len(k) == 0 for k, _ in self.runs):
            raise ReaderError(f"{self.source}: no transcripts to rasterise")
        ymin = xmin = np.iinfo(np.int64).max
        ymax = xmax = np.iinfo(np.int64).min
        for keys, _ in self.runs:
            by = (keys >> _AXIS_BITS) & _AXIS_MASK
            bx = keys & _AXIS_MASK
            ymin, ymax = min(ymin, int(by.min())), max(ymax, int(by.max()))
            xmin, xmax = min(xmin, int(bx.min())), max(xmax, int(bx.max()))
        by0, bx0 = ymin - _OFF, xmin - _OFF
        shape = (len(channel_codes), ymax - ymin + 1, xmax - xmin + 1)
        from ..safeio import check_grid

        check_grid(
            shape,
            self.source,
            hint=f"check the coordinates and units of the transcripts (bins of {self.bin_um:g} µm) or use a larger --bin-um",
        )
        return SparseCounts(self.runs, channel_codes, (by0, bx0), shape)


class GeneIndex:
    """Global gene codes (in order of first appearance) and per-batch lookup tables."""

    def __init__(self, drop_prefixes: Sequence[str] = (), panel: Sequence[str] | None = None):
        self.drop_prefixes = tuple(drop_prefixes)
        self.panel = None if panel is None else set(panel)
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.n_controls = 0
        self.n_not_in_panel = 0
        self.dropped_names: dict[str, int] = {}

    def lut(self, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Codes for dictionary ``values`` (-1 = dropped) and a bool 'is a control probe' mask."""
        lut = np.full(len(values), -1, dtype=np.int64)
        ctrl = np.zeros(len(values), dtype=bool)
        for i, v in enumerate(values):
            if v is None:
                continue
            if self.drop_prefixes and v.startswith(self.drop_prefixes):
                ctrl[i] = True
                continue
            if self.panel is not None and v not in self.panel:
                continue
            code = self.codes.get(v)
            if code is None:
                code = len(self.names)
                if code >= _MAX_GENES:
                    raise ReaderError(f"more than {_MAX_GENES} distinct genes")
                self.codes[v] = code
                self.names.append(v)
            lut[i] = code
        return lut, ctrl


# --------------------------------------------------------------------------- batch sources
class _CountingFile(io.RawIOBase):
    """A read-only file that remembers how many bytes were read (for progress)."""

    def __init__(self, path):
        self._fh = open(path, "rb")  # noqa: SIM115 - the handle lives as long as this object; close() closes it
        self.pos = 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self._fh.readinto(b)
        self.pos += n or 0
        return n

    def close(self):
        self._fh.close()
        super().close()


def _iter_batches(path: Path, columns: list[str], float_cols: list[str], gene_col: str, batch_rows: int, progress):
    """Yield pyarrow RecordBatches of ``columns`` (floats as float64, gene as dictionary)."""
    import pyarrow as pa

    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path, read_dictionary=[gene_col])  # genes arrive dictionary-encoded
        except Exception:  # noqa: BLE001 - no dictionary reading for that column/file; read it plainly
            pf = pq.ParquetFile(path)
        total = pf.metadata.num_rows
        done = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            done += batch.num_rows
            yield batch
            if progress:
                progress(done, total)
        return
    import pyarrow.csv as pacsv

    size = path.stat().st_size
    raw = _CountingFile(path)
    try:
        src = pa.PythonFile(raw, mode="r")
        if _is_gzip(path):
            src = pa.CompressedInputStream(src, "gzip")
        types = {c: pa.float64() for c in float_cols}
        types[gene_col] = pa.dictionary(pa.int32(), pa.string())
        reader = pacsv.open_csv(
            src,
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 48)),
            convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types, strings_can_be_null=False),
        )
        for batch in reader:
            yield batch
            if progress:
                progress(raw.pos, size)
    except pa.ArrowInvalid as e:
        raise ReaderError(f"{path}: cannot parse the table ({str(e).splitlines()[0]})") from None
    finally:
        raw.close()


def _gene_dictionary(arr, path: Path, gene_col: str):
    """(dictionary values as list of str, indices as int64 numpy) of a gene column chunk."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        if (
            pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type)
            or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))
        ):
            arr = pc.cast(arr, pa.string())
        arr = pc.dictionary_encode(arr)
    values = arr.dictionary
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        values = pc.cast(values, pa.string())
    if arr.null_count:
        i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise ReaderError(f"{path}: column '{gene_col}' has {arr.null_count} empty value(s) (first at data row {{row0}}+{i})")
    names = values.to_pylist()
    idx = arr.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return names, idx


def _float_column(batch, name):
    col = batch.column(batch.schema.get_field_index(name))
    return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


# --------------------------------------------------------------------------- the generic reader
@dataclass
class _Stats:
    rows: int = 0
    kept: int = 0
    qv: int = 0
    controls: int = 0
    not_in_panel: int = 0
    other: int = 0
    control_names: dict = field(default_factory=dict)


def _parse_genes(genes) -> list[str] | None:
    if genes is None:
        return None
    if isinstance(genes, (list, tuple)):
        return [str(g) for g in genes]
    s = str(genes)
    p = Path(s)
    if p.is_file():
        out = []
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            raise ReaderError(f"{p}: gene list file is not a text file (one gene name per line)") from None
        for line in text.splitlines():
            line = line.strip().split(",")[0].split("\t")[0].strip()
            if line and not line.startswith("#") and line.lower() not in ("gene", "genes", "name"):
                out.append(line)
        if not out:
            raise ReaderError(f"{p}: gene list file holds no gene names")
        return out
    return [g.strip() for g in s.split(",") if g.strip()]


def rasterize_transcripts(
    path,
    schema: TranscriptSchema,
    bin_um: float = DEFAULT_BIN_UM,
    *,
    um_per_px: float | None = None,
    genes=None,
    zero_fill: bool = False,
    origin_um: Sequence[float] | None = None,
    registration: np.ndarray | None = None,
    row_filter: Callable | None = None,
    batch_rows: int = 1_000_000,
    buffer_keys: int = 8_000_000,
    progress: Callable | None = None,
    batches=None,
) -> tuple[SparseCounts, list[str], dict]:
    """Stream a transcript table into :class:`SparseCounts`.

    Returns ``(counts, genes, info)`` where ``genes`` names the channels and
    ``info`` holds the row statistics and grid origin. ``batches`` replaces
    the file: an object with ``columns`` (list of str) and
    ``iter_batches(columns, batch_rows, progress)`` yielding pyarrow
    RecordBatches (x, y as numbers, the gene column as strings or a
    dictionary); ``path`` then only names the source in messages.
    """
    path = Path(path)
    fmt = schema.name
    if not (isinstance(bin_um, (int, float, np.floating)) and bin_um > 0 and math.isfinite(bin_um)):
        raise ReaderError(f"{path}: bin size must be > 0 µm (option --bin-um), got {bin_um}")
    if schema.units not in ("um", "px"):
        raise ReaderError(f"{path}: units must be 'um' or 'px' (option --units), got {schema.units!r}")
    if schema.units == "px":
        if um_per_px is None:
            raise ReaderError(f"{path}: columns '{schema.x}', '{schema.y}' are in pixels: give --um-per-px")
        if not um_per_px > 0:
            raise ReaderError(f"{path}: µm per pixel must be > 0 (option --um-per-px), got {um_per_px}")
    scale = float(um_per_px) if schema.units == "px" else 1.0
    columns = table_columns(path) if batches is None else list(batches.columns)
    needed = [schema.x, schema.y, schema.gene, schema.qv, *schema.extra]
    _check_columns(path, columns, needed, fmt)
    read_cols = [c for c in dict.fromkeys(needed) if c]
    float_cols = [c for c in (schema.x, schema.y, schema.qv) if c]

    panel = _parse_genes(genes)
    if origin_um is None:
        if registration is not None:
            corner = np.linalg.solve(registration, np.array([0.0, 0.0, 1.0]))
            origin_um = (float(corner[0]), float(corner[1]))
        else:
            origin_um = (0.0, 0.0)
    acc = BinAccumulator(bin_um, origin_um, buffer_keys=buffer_keys, source=str(path))
    gidx = GeneIndex(schema.drop_prefixes, panel)
    st = _Stats()
    stream = (
        _iter_batches(path, read_cols, float_cols, schema.gene, batch_rows, progress)
        if batches is None
        else batches.iter_batches(read_cols, batch_rows, progress)
    )
    for batch in stream:
        n = batch.num_rows
        if n == 0:
            continue
        row0 = st.rows
        st.rows += n
        x = _float_column(batch, schema.x)
        y = _float_column(batch, schema.y)
        for name, arr in ((schema.x, x), (schema.y, y)):
            bad = ~np.isfinite(arr)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ReaderError(
                    f"{path}: column '{name}' has {int(bad.sum())} NaN/missing coordinate(s) in rows {row0}-{row0 + n - 1} "
                    f"(first at data row {row0 + i})"
                )
        try:
            names, idx = _gene_dictionary(batch.column(batch.schema.get_field_index(schema.gene)), path, schema.gene)
        except ReaderError as e:
            raise ReaderError(str(e).replace("{row0}", str(row0))) from None
        empty = [i for i, v in enumerate(names) if v is None or str(v).strip() == ""]
        if empty:
            bad_rows = np.isin(idx, empty)
            if bad_rows.any():
                i = int(np.flatnonzero(bad_rows)[0])
                raise ReaderError(
                    f"{path}: column '{schema.gene}' has {int(bad_rows.sum())} empty gene name(s) (blank or missing) (first at "
                    f"data row {row0 + i})"
                )
        lut, ctrl = gidx.lut(names)
        per_value = np.bincount(idx, minlength=len(names))
        st.controls += int(per_value[ctrl].sum())
        for i in np.flatnonzero(ctrl & (per_value > 0)):
            st.control_names[names[i]] = st.control_names.get(names[i], 0) + int(per_value[i])
        st.not_in_panel += int(per_value[(lut < 0) & ~ctrl].sum())
        codes = lut[idx]
        keep = codes >= 0
        if schema.qv is not None and schema.qv_min is not None:
            q = _float_column(batch, schema.qv)
            good = q >= schema.qv_min  # NaN quality fails
            st.qv += int((keep & ~good).sum())
            keep &= good
        if row_filter is not None:
            extra = row_filter(batch)
            st.other += int((keep & ~extra).sum())
            keep &= extra
        if not keep.all():
            x, y, codes = x[keep], y[keep], codes[keep]
        if scale != 1.0:
            x = x * scale
            y = y * scale
        acc.add(y, x, codes)
        st.kept += len(codes)
    if st.rows == 0:
        raise ReaderError(f"{path}: no transcripts (the file has a header but no rows)")
    if st.kept == 0:
        raise ReaderError(
            f"{path}: no transcripts left after filtering {st.rows} rows "
            f"(quality {st.qv}, control probes {st.controls}, outside the gene list {st.not_in_panel}, other {st.other})"
        )
    found = gidx.names
    if panel is not None:
        missing = [g for g in panel if g not in gidx.codes]
        if missing and not zero_fill:
            err = GenePanelError(missing, where=str(path))
            shown = ", ".join(missing[:20]) + (f" ... (+{len(missing) - 20} more)" if len(missing) > 20 else "")
            err.args = (
                f"{path}: column '{schema.gene}' lacks {len(missing)} requested gene(s): {shown} (--zero-fill fills them with "
                "zeros)",
            )
            raise err
        if missing:
            warnings.warn(
                f"{path}: zero-filling {len(missing)} gene(s) absent from the data: {', '.join(missing[:10])}", stacklevel=3
            )
        channel_genes = list(dict.fromkeys(panel))
    else:
        channel_genes = sorted(found)
    channel_codes = [gidx.codes.get(g, -1) for g in channel_genes]
    counts = acc.finalize(channel_codes)
    info = {
        "rows": st.rows,
        "kept": st.kept,
        "dropped": {"quality": st.qv, "control_probes": st.controls, "not_in_gene_list": st.not_in_panel, "other": st.other},
        "control_probes": dict(sorted(st.control_names.items())),
        "origin_um": [origin_um[0] + counts.by0 * acc.bin_um, origin_um[1] + counts.bx0 * acc.bin_um],
        "grid_anchor_um": [float(origin_um[0]), float(origin_um[1])],
        "nnz": counts.nnz,
        "gene_codes": len(gidx.names),
    }
    totals = counts.gene_totals(len(gidx.names))
    info["gene_totals"] = [float(totals[c]) if c >= 0 else 0.0 for c in channel_codes]
    return counts, channel_genes, info


def _default_chunks(shape):
    g, h, w = shape
    return (max(1, min(g, 32)), max(1, min(h, 256)), max(1, min(w, 256)))


def sparse_to_canvas(counts: SparseCounts, genes, bin_um, affine, meta, chunks=None) -> ExpressionCanvas:
    """A lazy canvas whose chunks are built from ``counts`` on demand."""
    import uuid

    chunks = tuple(chunks or _default_chunks(counts.shape))
    data = da.from_array(
        counts,
        chunks=chunks,
        name=f"transcript-canvas-{uuid.uuid4().hex}",
        asarray=True,
        lock=False,
        meta=np.zeros((0, 0, 0), np.float32),
    )
    return ExpressionCanvas(data=data, genes=list(genes), bin_um=float(bin_um), affine=affine, meta=meta)


def read_transcripts_table(
    path,
    x_col: str = "x",
    y_col: str = "y",
    gene_col: str = "gene",
    units: str = "um",
    *,
    bin_um: float = DEFAULT_BIN_UM,
    um_per_px: float | None = None,
    genes=None,
    zero_fill: bool = False,
    qv_col: str | None = None,
    qv_min: float | None = None,
    drop_prefixes: Sequence[str] = (),
    image=None,
    image_transform=None,
    image_um_per_px: float | None = None,
    image_extent_um: Sequence[float] | None = None,
    origin_um: Sequence[float] | None = None,
    chunks=None,
    batch_rows: int = 1_000_000,
    progress: Callable | None = None,
    _batches=None,
    _schema: TranscriptSchema | None = None,
    _row_filter: Callable | None = None,
    _fmt: str = "csv",
) -> ExpressionCanvas:
    """Read any transcript table (CSV, CSV.gz or Parquet) into a lazy canvas.

    Parameters
    ----------
    path : str or Path
        The table; ``.parquet`` is read as Parquet, anything else as CSV
        (``.gz`` is decompressed on the fly).
    x_col, y_col, gene_col : str
        Columns holding the transcript position and gene name.
    units : "um" or "px"
        Units of ``x_col``/``y_col``; ``"px"`` needs ``um_per_px``.
    bin_um : float
        Bin edge in µm (> 0).
    genes : list, comma-separated str or file, optional
        Keep only these genes, in this order. A gene absent from the data is
        an error (:class:`GenePanelError`) unless ``zero_fill``.
    qv_col, qv_min : optional
        Drop rows whose quality is below ``qv_min`` (or NaN).
    drop_prefixes : sequence of str
        Drop genes whose names start with any of these (control probes).
    image, image_transform, image_um_per_px, image_extent_um : optional
        The paired real image and how µm map onto its pixels (see
        :func:`image_registration`). With units ``px`` and no other option the
        image is taken to share the table's pixel frame.
    origin_um : (y, x), optional
        Anchor of the bin grid (default: the image's corner, else 0).
    chunks : (genes, y, x), optional
        Dask/zarr chunking of the canvas (default up to 32 x 256 x 256).

    Returns
    -------
    ExpressionCanvas
        float32 counts, lazy; ``meta`` records the source, the filters and
        ``gene_totals``.
    """
    path = Path(path)
    schema = _schema or TranscriptSchema(
        _fmt, x_col, y_col, gene_col, units, qv=qv_col, qv_min=qv_min, drop_prefixes=tuple(drop_prefixes)
    )
    registration = None
    if image is not None or image_transform is not None or image_extent_um is not None or image_um_per_px is not None:
        if image_transform is None and image_extent_um is None and image_um_per_px is None and schema.units == "px" and um_per_px:
            image_um_per_px = um_per_px  # the image shares the table's pixel frame
        registration = image_registration(image, transform=image_transform, um_per_px=image_um_per_px, extent_um=image_extent_um)
        if registration is None:
            raise ReaderError(
                f"{image}: cannot place the image: give --image-transform FILE, --image-extent-um XMIN,XMAX,YMIN,YMAX "
                "or --image-um-per-px F"
            )
    counts, channel_genes, info = rasterize_transcripts(
        path,
        schema,
        bin_um,
        um_per_px=um_per_px,
        genes=genes,
        zero_fill=zero_fill,
        origin_um=origin_um,
        registration=registration,
        row_filter=_row_filter,
        batch_rows=batch_rows,
        progress=progress,
        batches=_batches,
    )
    b = float(bin_um)
    oy, ox = info["origin_um"]
    bins_to_um = np.array([[b, 0, oy], [0, b, ox], [0, 0, 1.0]])
    affine = registration @ bins_to_um if registration is not None else np.eye(3)
    meta = {
        "format": schema.name,
        "files": [str(path)],
        "units": schema.units,
        "um_per_px": um_per_px,
        "transcripts_read": info["rows"],
        "transcripts_kept": info["kept"],
        "total_counts": info["kept"],
        "dropped": info["dropped"],
        "control_probes": info["control_probes"],
        "origin_um": info["origin_um"],
        "gene_totals": info["gene_totals"],
        "nonzero_bins": info["nnz"],
    }
    if image is not None:
        meta["image"] = str(image) if isinstance(image, (str, Path)) else "array"
        with contextlib.suppress(ReaderError):
            meta["image_shape"] = list(_image_shape(image))
    if registration is not None:
        meta["um_to_image_px"] = registration.tolist()
    return sparse_to_canvas(counts, channel_genes, b, affine, meta, chunks=chunks)


# --------------------------------------------------------------------------- vendor formats
def _find_in_dir(folder: Path, names: Sequence[str], globs: Sequence[str] = ()) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    for g in globs:
        hits = sorted(folder.glob(g))
        if hits:
            return hits[0]
    raise ReaderError(f"{folder}: no transcript table found (looked for {', '.join(list(names) + list(globs))})")


def read_xenium(path, bin_um: float = DEFAULT_BIN_UM, qv_min: float = 20.0, **kw) -> ExpressionCanvas:
    """10x Xenium ``transcripts.parquet`` / ``.csv`` / ``.csv.gz`` (or the output folder holding it).

    Columns ``x_location, y_location`` (µm), ``feature_name``, ``qv``. Rows with
    ``qv < qv_min`` (default 20) and control probes (``NegControl*``,
    ``BLANK*``, ``Unassigned*``, ``Deprecated*``) are dropped. With an
    ``image`` and no registration option, the morphology image is taken at
    0.2125 µm/px with its corner at 0 µm (Xenium's level 0).
    """
    p = Path(path)
    if p.is_dir():
        p = _find_in_dir(p, ["transcripts.parquet", "transcripts.csv.gz", "transcripts.csv"])
    s = SCHEMAS["xenium"]
    schema = TranscriptSchema(s.name, s.x, s.y, s.gene, s.units, qv=s.qv, qv_min=qv_min, drop_prefixes=s.drop_prefixes)
    if kw.get("image") is not None and not any(
        kw.get(k) is not None for k in ("image_transform", "image_extent_um", "image_um_per_px")
    ):
        kw["image_um_per_px"] = XENIUM_IMAGE_UM_PER_PX
    return read_transcripts_table(p, bin_um=bin_um, _schema=schema, **kw)


def read_merfish(path, bin_um: float = DEFAULT_BIN_UM, **kw) -> ExpressionCanvas:
    """Vizgen MERFISH ``detected_transcripts.csv`` (or the region folder holding it).

    Columns ``global_x, global_y`` (µm), ``gene``; ``Blank-*`` controls are
    dropped. The image placement comes from ``image_transform`` (Vizgen's
    ``images/micron_to_mosaic_pixel_transform.csv``, found automatically
    beside the image or the table), ``image_extent_um`` or ``image_um_per_px``.
    """
    p = Path(path)
    if p.is_dir():
        p = _find_in_dir(p, ["detected_transcripts.csv", "detected_transcripts.csv.gz"], ["*detected_transcripts*.csv*"])
    image = kw.get("image")
    if image is not None and not any(kw.get(k) is not None for k in ("image_transform", "image_extent_um", "image_um_per_px")):
        cands = []
        if isinstance(image, (str, Path)):
            cands += [Path(image).parent / "micron_to_mosaic_pixel_transform.csv"]
        cands += [p.parent / "images" / "micron_to_mosaic_pixel_transform.csv", p.parent / "micron_to_mosaic_pixel_transform.csv"]
        for c in cands:
            if c.is_file():
                kw["image_transform"] = c
                break
    return read_transcripts_table(p, bin_um=bin_um, _schema=SCHEMAS["merfish"], **kw)


def read_cosmx(
    path, bin_um: float = DEFAULT_BIN_UM, um_per_px: float = COSMX_UM_PER_PX, coords: str = "global", fov=None, **kw
) -> ExpressionCanvas:
    """NanoString CosMx ``*_tx_file.csv`` (or ``.csv.gz``, or the folder holding it).

    Columns ``x_global_px, y_global_px`` (px, ``um_per_px`` default 0.12028),
    ``target``; ``NegPrb*`` and ``SystemControl*`` are dropped. ``coords="local"``
    uses ``x_local_px, y_local_px`` and needs one ``fov``; ``fov`` (int or
    list) keeps only those fields of view.
    """
    p = Path(path)
    if p.is_dir():
        p = _find_in_dir(p, [], ["*_tx_file.csv", "*_tx_file.csv.gz", "*tx_file*.csv*"])
    s = SCHEMAS["cosmx"]
    if coords not in ("global", "local"):
        raise ReaderError(f"{p}: CosMx coordinates must be 'global' or 'local', got {coords!r}")
    fovs = None if fov is None else ([int(fov)] if np.isscalar(fov) else [int(f) for f in fov])
    if coords == "local" and (fovs is None or len(fovs) != 1):
        raise ReaderError(f"{p}: local coordinates (x_local_px, y_local_px) overlap between fields of view: choose one 'fov'")
    x, y = ("x_local_px", "y_local_px") if coords == "local" else (s.x, s.y)
    schema = TranscriptSchema(s.name, x, y, s.gene, "px", drop_prefixes=s.drop_prefixes, extra=("fov",) if fovs else ())
    row_filter = None
    if fovs:
        import pyarrow.compute as pc

        fov_ids = np.asarray(fovs)

        def row_filter(batch):
            col = batch.column(batch.schema.get_field_index("fov"))
            return np.isin(pc.cast(col, "int64").to_numpy(zero_copy_only=False), fov_ids)

    return read_transcripts_table(p, bin_um=bin_um, um_per_px=um_per_px, _schema=schema, _row_filter=row_filter, **kw)
