"""Rasterisation benchmark: streaming sparse binning vs the naive dense approach.

Synthetic transcripts (uniform positions: the worst case for sparse counts,
almost every molecule lands in its own (gene, bin)) with Zipf-like gene
frequencies. Each method runs in its own subprocess, which reports its own
peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS right
after the imports, so the figures are side by side from one run.

Methods
-------
stream  ``BinAccumulator`` fed chunk by chunk (what every reader uses), then the
        canvas is written to OME-Zarr chunk by chunk (``--no-write`` skips it).
        Throughput counts binning only; synthetic generation is timed apart.
file    the same from a Parquet file through ``read_transcripts_table``
        (read + filter + bin; the file is written first, untimed).
dense   naive: all transcripts in memory, ``np.bincount`` over
        ``gene*H*W + y*W + x`` with ``minlength=G*H*W``, then float32.

Usage::

    python benchmarks/bench_rasterize.py                       # 20 M x 500 genes (about 1-2 minutes)
    python benchmarks/bench_rasterize.py --n 2000000 --no-file # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - psutil is optional and may be denied access; no reading then
        return float("nan")


def gene_probs(n_genes: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n_genes + 1) ** 0.8
    return p / p.sum()


def synth_chunks(n: int, n_genes: int, extent_um: float, chunk: int, seed: int = 0):
    """Yield (y_um, x_um, gene_code) chunks, reproducibly."""
    cdf = np.cumsum(gene_probs(n_genes))
    done, k = 0, 0
    while done < n:
        m = min(chunk, n - done)
        rng = np.random.default_rng([seed, k])
        y = rng.uniform(0, extent_um, m)
        x = rng.uniform(0, extent_um, m)
        g = np.minimum(np.searchsorted(cdf, rng.random(m)), n_genes - 1)
        yield y, x, g
        done += m
        k += 1


# --------------------------------------------------------------------------- workers (subprocesses)
def worker_stream(a) -> dict:
    from napari_gdt.expression.transcripts import BinAccumulator, sparse_to_canvas

    base = _current_rss_mb()
    acc = BinAccumulator(a.bin_um, buffer_keys=a.buffer)
    t_gen = t_bin = cpu_bin = 0.0
    t = time.perf_counter()
    for y, x, g in synth_chunks(a.n, a.genes, a.extent_um, a.chunk):
        t1, c1 = time.perf_counter(), time.process_time()
        t_gen += t1 - t
        acc.add(y, x, g)
        t = time.perf_counter()
        t_bin += t - t1
        cpu_bin += time.process_time() - c1
    t1, c1 = time.perf_counter(), time.process_time()
    counts = acc.finalize(list(range(a.genes)))
    t_bin += time.perf_counter() - t1
    cpu_bin += time.process_time() - c1
    res = {
        "method": "stream",
        "seconds": t_bin,
        "cpu_seconds": cpu_bin,
        "gen_seconds": t_gen,
        "rate": a.n / t_bin,
        "shape": list(counts.shape),
        "total": counts.total(),
        "nnz": counts.nnz,
        "sparse_mb": counts.nbytes_sparse / 2**20,
        "base_rss_mb": base,
        "bin_peak_rss_mb": _rss_mb(),
    }
    if a.write:
        import dask

        canvas = sparse_to_canvas(counts, [f"G{i}" for i in range(a.genes)], a.bin_um, np.eye(3), {})
        t1 = time.perf_counter()
        with dask.config.set(num_workers=2):
            canvas.to_ome_zarr(Path(a.tmp) / "bench.ome.zarr")
        res["write_seconds"] = time.perf_counter() - t1
    res["peak_rss_mb"] = _rss_mb()
    return res


def worker_file(a) -> dict:
    from napari_gdt.expression.transcripts import read_transcripts_table

    base = _current_rss_mb()
    t, c0 = time.perf_counter(), time.process_time()
    c = read_transcripts_table(a.parquet, "x", "y", "gene", "um", bin_um=a.bin_um, batch_rows=a.chunk)
    dt = time.perf_counter() - t
    return {
        "method": "file",
        "seconds": dt,
        "cpu_seconds": time.process_time() - c0,
        "rate": a.n / dt,
        "shape": list(c.shape),
        "total": c.meta["total_counts"],
        "base_rss_mb": base,
        "peak_rss_mb": _rss_mb(),
    }


def worker_dense(a) -> dict:
    base = _current_rss_mb()
    parts = list(synth_chunks(a.n, a.genes, a.extent_um, a.chunk))
    y = np.concatenate([p[0] for p in parts])
    x = np.concatenate([p[1] for p in parts])
    g = np.concatenate([p[2] for p in parts])
    del parts
    t, c0 = time.perf_counter(), time.process_time()
    by = np.floor(y / a.bin_um).astype(np.int64)
    bx = np.floor(x / a.bin_um).astype(np.int64)
    H, W = int(by.max()) + 1, int(bx.max()) + 1
    flat = (g * H + by) * W + bx
    dense = np.bincount(flat, minlength=a.genes * H * W).astype(np.float32).reshape(a.genes, H, W)
    dt = time.perf_counter() - t
    return {
        "method": "dense",
        "seconds": dt,
        "cpu_seconds": time.process_time() - c0,
        "rate": a.n / dt,
        "shape": list(dense.shape),
        "total": float(dense.sum(dtype=np.float64)),
        "base_rss_mb": base,
        "peak_rss_mb": _rss_mb(),
    }


WORKERS = {"stream": worker_stream, "file": worker_file, "dense": worker_dense}


# --------------------------------------------------------------------------- driver
def write_parquet(path: Path, a) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = pa.array([f"GENE{i:04d}" for i in range(a.genes)])
    writer = None
    for y, x, g in synth_chunks(a.n, a.genes, a.extent_um, a.chunk):
        t = pa.table({"x": x, "y": y, "gene": pa.DictionaryArray.from_arrays(pa.array(g.astype(np.int32)), names)})
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()


def run_child(method: str, a, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", method] + extra
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"method": method, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000_000, help="transcripts (default 20 M)")
    p.add_argument("--genes", type=int, default=500, help="genes (default 500)")
    p.add_argument("--extent-um", type=float, default=6000.0, help="square tissue edge in µm (default 6000)")
    p.add_argument("--bin-um", type=float, default=10.0, help="bin edge in µm (default 10: 600 x 600 bins)")
    p.add_argument("--chunk", type=int, default=2_000_000, help="transcripts per streamed chunk")
    p.add_argument("--buffer", type=int, default=8_000_000, help="keys buffered before a sort")
    p.add_argument("--no-write", dest="write", action="store_false", help="skip writing the OME-Zarr canvas")
    p.add_argument("--no-file", dest="file", action="store_false", help="skip the Parquet end-to-end method")
    p.add_argument("--no-dense", dest="dense", action="store_false", help="skip the naive dense method")
    p.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--parquet", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        print(json.dumps(WORKERS[a.worker](a)))
        return 0

    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench_rasterize_") if a.tmp is None else None
    tmp = Path(a.tmp or tmp_ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    common = [
        "--n",
        str(a.n),
        "--genes",
        str(a.genes),
        "--extent-um",
        str(a.extent_um),
        "--bin-um",
        str(a.bin_um),
        "--chunk",
        str(a.chunk),
        "--buffer",
        str(a.buffer),
        "--tmp",
        str(tmp),
    ] + ([] if a.write else ["--no-write"])
    H = W = int(np.ceil(a.extent_um / a.bin_um))
    print(
        f"bench_rasterize: {a.n:,} transcripts x {a.genes} genes, {H} x {W} bins of {a.bin_um:g} µm "
        f"(dense canvas {a.genes * H * W * 4 / 2**30:.2f} GiB as float32), {os.cpu_count()} CPUs"
    )
    results = [run_child("stream", a, common)]
    if a.file:
        pq_path = tmp / "transcripts.parquet"
        t = time.perf_counter()
        write_parquet(pq_path, a)
        print(f"  (wrote {pq_path.stat().st_size / 2**20:.0f} MiB Parquet in {time.perf_counter() - t:.1f} s, untimed)")
        results.append(run_child("file", a, common + ["--parquet", str(pq_path)]))
    if a.dense:
        results.append(run_child("dense", a, common))

    print("(wall seconds are inflated when the machine is shared; CPU seconds count this process only)")
    print(
        f"{'method':<8} {'wall s':>7} {'CPU s':>7} {'M/s wall':>9} {'M/s CPU':>8} {'peak RSS':>10} {'RSS after imports':>18}  "
        "notes"
    )
    for r in results:
        if "error" in r:
            print(f"{r['method']:<8} failed: {r['error']}")
            continue
        notes = []
        if r["method"] == "stream":
            notes.append(
                f"{r['nnz']:,} occupied (gene, bin) pairs in {r['sparse_mb']:.0f} MiB; binning peak {r['bin_peak_rss_mb']:.0f} "
                "MiB"
            )
            if "write_seconds" in r:
                notes.append(f"OME-Zarr write {r['write_seconds']:.1f} s")
        if r["method"] == "file":
            notes.append("read Parquet + filter + bin")
        if r["method"] == "dense":
            notes.append("all transcripts in memory + bincount(minlength=G*H*W)")
        notes.append(f"total {r['total']:,.0f}")
        cpu_rate = a.n / r["cpu_seconds"] / 1e6
        print(
            f"{r['method']:<8} {r['seconds']:>7.2f} {r['cpu_seconds']:>7.2f} {r['rate'] / 1e6:>9.2f} {cpu_rate:>8.2f} "
            f"{r['peak_rss_mb'] / 1024:>6.2f} GiB {r['base_rss_mb']:>14.0f} MiB  {'; '.join(notes)}"
        )
    ok = {r["method"]: r for r in results if "error" not in r}
    if "stream" in ok:
        s = ok["stream"]
        best = max(s["rate"], a.n / s["cpu_seconds"])
        print(
            f"goals: >= 5 M transcripts/s -> {s['rate'] / 1e6:.2f} M/s wall, {a.n / s['cpu_seconds'] / 1e6:.2f} M/s per "
            "CPU-second "
            f"({'met' if s['rate'] >= 5e6 else ('met in CPU time only (machine shared)' if best >= 5e6 else 'NOT met')}); "
            f"peak RSS < 2 GB -> {s['peak_rss_mb'] / 1024:.2f} GiB ({'met' if s['peak_rss_mb'] < 2000 else 'NOT met'})"
        )
        if "dense" in ok:
            d = ok["dense"]
            print(
                f"ratios: dense/stream peak RSS {d['peak_rss_mb'] / s['peak_rss_mb']:.1f}x; stream/dense speed "
                f"{s['rate'] / d['rate']:.2f}x"
            )
        if "file" in ok:
            f = ok["file"]
            print(f"file end-to-end: {f['rate'] / 1e6:.2f} M transcripts/s, peak RSS {f['peak_rss_mb'] / 1024:.2f} GiB")
    if tmp_ctx is not None:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
