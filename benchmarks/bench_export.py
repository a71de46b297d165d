"""Benchmark the streaming OME-Zarr export: memory, throughput, scaling.

Renders a synthetic slide with a small untrained generator through
``render_to_omezarr`` on a dask LocalCluster and prints, side by side:

* peak RSS of the client process and of each worker, for each slide size
  (memory must not grow with the slide: it is bounded by the chunks in flight);
* export throughput (level 0, Mpx/s) next to the bare batched model forward
  (``TileRenderer.forward`` on the same tiles, no I/O) in this process;
* the same 1-worker render with dask's ``MALLOC_TRIM_THRESHOLD_`` left in force
  (``NAPARI_GDT_MALLOC_TUNE=0``), to show what :func:`tune_malloc` buys;
* the speed-up from 1 to 2 workers at one size, and how many level-0 values
  differ between the two (torch CPU kernels may differ in the last float bit
  with the thread count; see docs/cluster.md).

Every render runs in a fresh subprocess. Peak RSS is sampled (psutil, every 0.2 s) in the
client and in each worker: ``ru_maxrss`` would include the parent's RSS at spawn on Linux.

    python benchmarks/bench_export.py                      # 4k and 16k x 16k (2 workers), speed-up at 4k
    python benchmarks/bench_export.py --sizes 16384,32768  # the full check (about 4x longer per doubling)
    python benchmarks/bench_export.py --sizes 2048 --speedup-size 2048   # a quick smoke run
    python benchmarks/bench_export.py --device cuda --sizes 16384 --workers-max 1 --batch 32   # one GPU worker

The canvas is synthetic (smooth Poisson rates, written chunk by chunk with
dask, never whole in memory); the model is an untrained ``gdt-v1`` with
8 channels per stage and 16 px per bin.
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

GENES = [f"G{i:02d}" for i in range(16)]


def _rss_mb(b: int) -> float:
    return b / 2**20


def make_model(path: Path, tile_px: int) -> None:
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import untrained_bundle

    b = untrained_bundle(genes=GENES, out_channels=3, seed=0, stage_channels=(8, 8, 8, 8), emb_ch=8, latent_dim=16)
    save_bundle(
        path,
        b.model,
        b.genes,
        um_per_px=0.5,
        output={"kind": "he", "channels": ["R", "G", "B"]},
        tile_px=tile_px,
        name="bench-tiny",
    )


def make_canvas(path: Path, n_bins: int, chunk: int = 256) -> None:
    """A lazy synthetic canvas (G, n, n): smooth rates from absolute coordinates, Poisson per block."""
    import dask
    import dask.array as da

    from napari_gdt.expression.canvas import ExpressionCanvas

    G = len(GENES)
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, n_bins, size=(G, 4, 2))
    sigmas = rng.uniform(0.05, 0.2, size=(G, 4)) * n_bins
    amps = rng.uniform(0.5, 2.0, size=(G, 4))

    def block(block_info=None):
        (g0, g1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        out = np.empty((g1 - g0, y1 - y0, x1 - x0), dtype=np.float32)
        r = np.random.default_rng([y0, x0, g0])
        for gi, g in enumerate(range(g0, g1)):
            rate = np.full(yy.shape, 0.2, dtype=np.float32)
            for k in range(4):
                cy, cx = centres[g, k]
                rate += amps[g, k] * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigmas[g, k] ** 2))
            out[gi] = r.poisson(rate * 3.0)
        return out

    data = da.map_blocks(block, chunks=((G,), _chunks(n_bins, chunk), _chunks(n_bins, chunk)), dtype=np.float32)
    with dask.config.set(scheduler="threads", num_workers=2):
        ExpressionCanvas(data, GENES, bin_um=8.0, meta={"source": "bench_export synthetic"}).to_ome_zarr(
            path, chunks=(G, chunk, chunk)
        )


def _chunks(n, c):
    return tuple([c] * (n // c) + ([n % c] if n % c else []))


def bare_forward(
    model: Path, canvas: Path, tile_px: int, threads: int, n_tiles: int = 12, batch: int = 4, device: str = "cpu"
) -> tuple:
    """Mpx/s of ``TileRenderer.forward`` alone (windows read beforehand), output px of whole tiles."""
    import torch

    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import TileRenderer

    torch.set_num_threads(threads)
    from napari_gdt.models.device import synchronize

    r = TileRenderer(load_bundle(model), ExpressionCanvas.from_ome_zarr(canvas), tile_px=tile_px, device=device, batch_size=batch)
    specs = [s for s in r.tiles_for(r.check_region(None)) if s.out.shape == (tile_px, tile_px)][:n_tiles]
    n_tiles = len(specs)
    wins = [r.read_window(s) for s in specs]
    r.forward(np.stack(wins[:1]), [specs[0].win[:2]])  # warm-up
    best = best_cpu = float("inf")
    for _ in range(2):  # best of two: the machine is shared
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, n_tiles, batch):
            r.forward(np.stack(wins[i : i + batch]), [s.win[:2] for s in specs[i : i + batch]])
        synchronize(r.device)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    mpx = n_tiles * tile_px * tile_px / 1e6
    return mpx / best, mpx / best_cpu


def run_one(spec: dict) -> dict:
    """(subprocess) one render; returns the summary plus this client's peak RSS."""
    from napari_gdt.export.omezarr_render import peak_rss_sampled, render_to_omezarr, start_rss_sampler

    start_rss_sampler()
    if spec.get("no_malloc_tune"):  # the contrast: dask's MALLOC_TRIM_THRESHOLD_ left in force in the workers
        import dask

        dask.config.set({"distributed.nanny.environ.NAPARI_GDT_MALLOC_TUNE": "0"})
    s = render_to_omezarr(
        spec["model"],
        spec["canvas"],
        spec["out"],
        tile_px=spec["tile_px"],
        chunk_px=spec["chunk_px"],
        device=spec.get("device", "cpu"),
        workers=spec["workers"],
        progress=False,
        overwrite=True,
        batch_size=spec["batch"],
    )
    import torch

    ru = resource.getrusage(resource.RUSAGE_SELF)
    s["torch_threads"] = torch.get_num_threads()
    s["client_peak_rss"] = peak_rss_sampled()  # sampled: ru_maxrss would include the bench parent's RSS (fork + exec)
    s["client_cpu_seconds"] = ru.ru_utime + ru.ru_stime
    return s


def spawn(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--_one", json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"render subprocess failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def count_diff(a_path: Path, b_path: Path, chunk: int = 2048) -> tuple[int, int, int]:
    import zarr

    a, b = zarr.open_array(str(a_path / "0"), mode="r"), zarr.open_array(str(b_path / "0"), mode="r")
    n = mx = 0
    for y in range(0, a.shape[1], chunk):
        da_, db = a[:, y : y + chunk].astype(np.int16), b[:, y : y + chunk].astype(np.int16)
        d = np.abs(da_ - db)
        n += int((d > 0).sum())
        mx = max(mx, int(d.max()))
    return n, mx, int(np.prod(a.shape))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="4096,16384", help="slide edges (px) rendered with --workers-max workers")
    p.add_argument("--speedup-size", type=int, default=4096, help="edge (px) rendered with 1 and with 2 workers")
    p.add_argument("--workers-max", type=int, default=2)
    p.add_argument("--tile-px", type=int, default=512)
    p.add_argument("--chunk-px", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--no-speedup", action="store_true", help="skip the 1-worker run")
    p.add_argument(
        "--tuned-forward", action="store_true", help="also time the bare forward after tune_malloc() (for information)"
    )
    p.add_argument("--no-malloc-contrast", action="store_true", help="skip the 1-worker run without napari-gdt's malloc tuning")
    p.add_argument("--in-process", action="store_true", help="also render the speed-up size in-process (no cluster)")
    p.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed afterwards)")
    p.add_argument("--device", default="cpu", help="auto|cpu|cuda|mps: where the workers and the bare forward run (default cpu)")
    p.add_argument("--_one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._one:
        print(json.dumps(run_one(json.loads(a._one))))
        return 0
    sizes = [int(s) for s in a.sizes.split(",") if s]
    tmp = tempfile.TemporaryDirectory(prefix="bench_export_") if a.dir is None else None
    work = Path(a.dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    ppb = 16
    model = work / "tiny.safetensors"
    make_model(model, a.tile_px)
    cores = os.cpu_count() or 1
    print(
        f"machine: {cores} cores (shared), load average {os.getloadavg()[0]:.2f}; model gdt-v1 untrained, 8 ch/stage, {ppb} "
        "px/bin, "
        f"{len(GENES)} genes; tile {a.tile_px} px, chunk {a.chunk_px} px, batch {a.batch}"
    )
    canvases = {}
    for size in sorted(set(sizes + [a.speedup_size])):
        c = work / f"canvas_{size}.ome.zarr"
        t = time.perf_counter()
        make_canvas(c, -(-size // ppb))
        canvases[size] = c
        print(
            f"canvas {size}x{size} px ({-(-size // ppb)}^2 bins x {len(GENES)} genes) written in {time.perf_counter() - t:.1f} s"
        )
    from napari_gdt.models.device import describe, get_device, peak_memory_bytes, reset_peak_memory

    dev = get_device(a.device)
    print(f"device: {describe(dev)} (bare forward and workers)")
    reset_peak_memory(dev)
    fwd0 = {
        th: bare_forward(model, canvases[max(canvases)], a.tile_px, th, batch=a.batch, device=str(dev))
        for th in sorted({1, cores})
    }
    if dev.type != "cpu":
        print(f"bare forward peak device memory: {(peak_memory_bytes(dev) or 0) / 2**20:.0f} MiB")
    print(
        "bare batched forward (this process, windows pre-read): "
        + ", ".join(f"{th} thread(s) {v[0]:.2f} Mpx/s wall, {v[1]:.2f} Mpx per CPU-s" for th, v in fwd0.items())
    )
    from napari_gdt.export.omezarr_render import tune_malloc

    fwd = fwd0  # the 'x fwd' reference: a plain process, as a user's script would run the model
    if a.tuned_forward:  # what the forward alone gains from tune_malloc (process-wide, so measured last)
        tuned = tune_malloc()
        fwd1 = {th: bare_forward(model, canvases[max(canvases)], a.tile_px, th, batch=a.batch) for th in sorted({1, cores})}
        print(
            f"bare batched forward (same, after tune_malloc: {tuned}; for information): "
            + ", ".join(f"{th} thread(s) {v[0]:.2f} Mpx/s wall, {v[1]:.2f} Mpx per CPU-s" for th, v in fwd1.items())
        )
    fwd_best = max(v[0] for v in fwd.values())

    def row(s, label):
        w = s.get("workers", {})
        rss = ", ".join(f"{_rss_mb(v['peak_rss']):.0f}" for v in w.values()) or "-"
        mpx = s["shape"][0] * s["shape"][1] / 1e6
        tp = mpx / s["timings"]["level0"]
        per_cpu = mpx / s["task_cpu"]  # CPU seconds inside level-0 chunk tasks (all their threads)
        th = next(iter(w.values()))["torch_threads"] if w else s["torch_threads"]
        ref_cpu = fwd[th][1] if th in fwd else fwd[1][1]
        print(
            f"{label:>14} | {s['shape'][0]:>6}x{s['shape'][1]:<6} | {s['chunks']:>6} | {s['timings']['cluster']:>7.1f} | "
            f"{s['timings']['level0']:>8.1f} | "
            f"{s['timings']['pyramid']:>7.1f} | {tp:>8.3f} | {tp / fwd_best:>7.2f} | {per_cpu:>8.3f} | "
            f"{per_cpu / ref_cpu:>7.2f} | "
            f"{_rss_mb(s['client_peak_rss']):>9.0f} | {rss}"
        )
        return tp

    print("\nMpx/s: level-0 px / level-0 wall time; 'x fwd': that over the best bare-forward wall rate above.")
    print(
        "Mpx/CPU-s: level-0 px / CPU seconds spent inside the level-0 chunk tasks (canvas read, keys, forward, quantise, write);"
    )
    print(
        "'x fwd cpu': that over the bare forward per CPU-s at the same torch threads. CPU-s are less sensitive than wall time to"
    )
    print("other load, not immune: a worker process's CPU time also counts dask's own threads (event loop, profiler).")
    print(
        f"{'run':>14} | {'slide px':^13} | {'chunks':>6} | {'start s':>7} | {'level0 s':>8} | {'pyr s':>7} | {'Mpx/s':>8} | "
        f"{'x fwd':>7} | "
        f"{'Mpx/CPU-s':>8} | {'x fwd cpu':>7} | {'client MB':>9} | worker peak RSS MB"
    )
    results = {}
    for size in sizes:
        spec = dict(
            model=str(model),
            canvas=str(canvases[size]),
            out=str(work / f"out_{size}_{a.workers_max}.ome.zarr"),
            tile_px=a.tile_px,
            chunk_px=a.chunk_px,
            workers=a.workers_max,
            batch=a.batch,
            device=str(dev),
        )
        results[(size, a.workers_max)] = s = spawn(spec)
        row(s, f"{a.workers_max} workers")
    if a.workers_max > 1 and not a.no_speedup:
        size = a.speedup_size
        if (size, a.workers_max) not in results:
            spec = dict(
                model=str(model),
                canvas=str(canvases[size]),
                out=str(work / f"out_{size}_{a.workers_max}.ome.zarr"),
                tile_px=a.tile_px,
                chunk_px=a.chunk_px,
                workers=a.workers_max,
                batch=a.batch,
                device=str(dev),
            )
            results[(size, a.workers_max)] = spawn(spec)
            row(results[(size, a.workers_max)], f"{a.workers_max} workers")
        spec = dict(
            model=str(model),
            canvas=str(canvases[size]),
            out=str(work / f"out_{size}_1.ome.zarr"),
            tile_px=a.tile_px,
            chunk_px=a.chunk_px,
            workers=1,
            batch=a.batch,
            device=str(dev),
        )
        results[(size, 1)] = s1 = spawn(spec)
        row(s1, "1 worker")
        if not a.no_malloc_contrast:
            spec0 = dict(spec, out=str(work / f"out_{size}_1_dask_malloc.ome.zarr"), no_malloc_tune=True)
            s0 = spawn(spec0)
            row(s0, "1 w, no tune")
            print(
                f"{'':>14}   (the same 1-worker render with dask's MALLOC_TRIM_THRESHOLD_=65536 left in force: "
                f"level 0 {s0['timings']['level0'] / s1['timings']['level0']:.2f}x the time of the tuned worker)"
            )
        if a.in_process:
            spec = dict(spec, out=str(work / f"out_{size}_inproc.ome.zarr"), workers=None)
            row(spawn(spec), "in-process")
        s2 = results[(size, a.workers_max)]
        sp = s1["timings"]["level0"] / s2["timings"]["level0"]
        n, mx, tot = count_diff(Path(s1["out"]), Path(s2["out"]))
        print(
            f"\nspeed-up 1 -> {a.workers_max} workers at {size}x{size}: {sp:.2f}x (level 0: {s1['timings']['level0']:.1f} s -> "
            f"{s2['timings']['level0']:.1f} s)"
        )
        print(
            f"level-0 values that differ between the 1- and {a.workers_max}-worker renders: {n} of {tot} "
            f"({100 * n / tot:.4f}%), max |diff| {mx}"
            f" (1 worker uses {s1['workers'][next(iter(s1['workers']))]['torch_threads']} torch threads, each of "
            f"{a.workers_max} uses "
            f"{s2['workers'][next(iter(s2['workers']))]['torch_threads']})"
        )
    worst = max(max(v["peak_rss"] for v in s["workers"].values()) for s in results.values())
    client = max(s["client_peak_rss"] for s in results.values())
    print(
        f"\nlargest peak RSS: client {_rss_mb(client):.0f} MB, worker {_rss_mb(worst):.0f} MB (goal < 1536 MB each, whatever "
        "the slide size)"
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
