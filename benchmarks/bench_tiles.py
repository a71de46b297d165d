"""Tiles/s of the tiling engine vs the bare batched model forward on the same tiles.

    PYTHONPATH=src python benchmarks/bench_tiles.py            # default: 1024x1024 px, 128-px tiles
    PYTHONPATH=src python benchmarks/bench_tiles.py --full     # 2048x2048 px, 5 repeats
    PYTHONPATH=src python benchmarks/bench_tiles.py --device cuda   # on a GPU: sweep batch 8/32/128, fp32/bf16/fp16,
                                                                    # channels_last (--compile: torch.compile too), peak memory

The bare forward gets the input windows pre-read and pre-stacked, and only runs
``TileRenderer.forward`` batch by batch. The engine does everything a user's call does: reads the
windows from the (dask) canvas, batches, runs the same forward, crops and stitches
(``render_region``), or returns the tile dict (``compute_tiles``). The goal is
engine >= 0.9x bare forward. Runs are interleaved and the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device import add_device_args, apply_best, device_of, fmt_bytes, peak_memory, print_sweep, sweep, sweep_wanted

from napari_gdt.models.device import reset_peak_memory, synchronize


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--region-px", type=int, default=1024)
    ap.add_argument("--tile-px", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="torch threads (default: cores - 1, as the layer's worker)",
    )
    ap.add_argument("--small-model", action="store_true", help="the tiny test model instead of the default gdt-v1 size")
    ap.add_argument("--full", action="store_true", help="2048x2048 px region, 5 repeats")
    add_device_args(ap)
    ap.add_argument(
        "--arch",
        default="gdt-v1",
        choices=["gdt-v1", "gdt-v2"],
        help="architecture of the untrained model (default size of each)",
    )
    ap.add_argument("--model", default=None, help="a trained bundle (name or file) instead of an untrained --arch model")
    a = ap.parse_args(argv)
    if a.full:
        a.region_px, a.repeats = 2048, 5
    if a.threads:
        torch.set_num_threads(a.threads)

    from napari_gdt.rendering.tiles import Region, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    cfg = dict(stage_channels=(32, 24, 16, 16), emb_ch=32) if a.small_model else {}
    if a.model:
        from napari_gdt.models.bundle import load_bundle, resolve_model

        bundle = load_bundle(resolve_model(a.model))
        print(f"model {a.model} ({bundle.card.get('arch', 'gdt-v1')}, {len(bundle.genes)} genes)")
    else:
        bundle = untrained_bundle(out_channels=3, seed=0, arch=a.arch, **(cfg if a.arch == "gdt-v1" else {}))
    ppb = bundle.px_per_bin
    nb = a.region_px // ppb + 16  # margin so every tile has an interior window of the same shape
    canvas = synthetic_canvas((nb, nb), genes=bundle.genes if a.model else None, seed=0)
    dev = device_of(a)
    r = TileRenderer(bundle, canvas, seed=1, tile_px=a.tile_px, device=dev, batch_size=a.batch_size)
    o = (8 * ppb // a.tile_px + 1) * a.tile_px
    region = Region(o, o + a.region_px, o, o + a.region_px)
    specs = r.tiles_for(region)
    n = len(specs)
    wins = r._read_windows(specs)
    if sweep_wanted(a, dev):  # pick the fastest mode within 1/255 of fp32, then compare engine and bare forward in it
        full = [s for s in specs if s.out.shape == (a.tile_px, a.tile_px)]
        res = sweep(r, [wins[(s.ty, s.tx)] for s in full], [(s.win[0], s.win[1]) for s in full], compile=a.compile)
        print(f"sweep of the bare forward on {dev}, {len(full)} tiles of {a.tile_px} px:")
        print_sweep(res)
        apply_best(r, res["best"])
        a.batch_size = r.batch_size
    stacked = [
        (
            np.stack([wins[(s.ty, s.tx)] for s in specs[i : i + a.batch_size]]),
            [(s.win[0], s.win[1]) for s in specs[i : i + a.batch_size]],
        )
        for i in range(0, n, a.batch_size)
    ]

    def bare():
        for x, org in stacked:
            r.forward(x, org)

    def engine_region():
        r.render_region(region)

    def engine_tiles():
        r.compute_tiles(specs)

    runs = {"bare forward": bare, "engine render_region": engine_region, "engine compute_tiles": engine_tiles}
    bare()  # warm-up
    reset_peak_memory(dev)
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(a.repeats):  # interleaved, so that load changes hit all three alike
        for k, f in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            synchronize(dev)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    print(
        f"bench_tiles: {n} tiles of {a.tile_px} px ({a.region_px}x{a.region_px} px), batch {a.batch_size}, "
        f"model {'small' if a.small_model else 'default ' + a.arch}, device {dev}, precision {r.precision}"
        f"{', channels_last' if r.channels_last else ''}, torch threads {torch.get_num_threads()}, median of {a.repeats}; "
        f"peak {'device memory' if dev.type != 'cpu' else 'process RSS'} {fmt_bytes(peak_memory(dev))}"
    )
    print("  (wall: elapsed time; cpu: this process's CPU time, robust to other jobs on a shared machine)")
    bw, bc = n / statistics.median(wall["bare forward"]), n / statistics.median(cpu["bare forward"])
    for k in runs:
        tw, tc = n / statistics.median(wall[k]), n / statistics.median(cpu[k])
        print(
            f"  {k:22s} wall {tw:8.2f} tiles/s ({tw * a.tile_px**2 / 1e6:6.3f} Mpx/s) ratio {tw / bw:5.3f}x | "
            f"cpu {tc:8.2f} tiles/cpu-s ratio {tc / bc:5.3f}x"
        )
    for k in ("engine render_region", "engine compute_tiles"):
        rw = (n / statistics.median(wall[k])) / bw
        rc = (n / statistics.median(cpu[k])) / bc
        print(
            f"engine/bare ratio ({k.split()[-1]}): wall {rw:.3f}, cpu {rc:.3f}  (goal >= 0.9): "
            f"{'PASS' if max(rw, rc) >= 0.9 else 'FAIL'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
