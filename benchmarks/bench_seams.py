"""Seams: the same region rendered with different tilings, and in shuffled order.

Prints the max abs difference (float32 output in [0, 1]) between a 1024x1024-px
region rendered with 128-px tiles, with 512-px tiles and as one tile, whether a
shuffled tile order gives identical bytes, and, for contrast, the same weights
run with ordinary zero padding and naive tiling (no halo, tile-local noise).

    python benchmarks/bench_seams.py [--size 1024] [--seed 0] [--device auto|cpu|cuda|mps] [--arch gdt-v2 | --model her2st-he]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device import add_device_args, device_of, fmt_bytes, peak_memory

from napari_gdt.rendering.naive import naive_padded_render
from napari_gdt.rendering.tiles import Region, TileRenderer
from napari_gdt.synthetic import synthetic_canvas, untrained_bundle


def seam_profile(img: np.ndarray, tile: int) -> float:
    """Mean |step| across tile borders divided by the mean |step| elsewhere (1.0 = no visible seam)."""
    dx = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))
    border = np.arange(tile - 1, dx.size, tile)
    other = np.setdiff1d(np.arange(dx.size), border)
    return float(dx[border].mean() / dx[other].mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    add_device_args(ap, sweep=False)
    ap.add_argument("--arch", default="gdt-v1", choices=["gdt-v1", "gdt-v2"])
    ap.add_argument("--model", default=None, help="a trained bundle (name or file) instead of an untrained --arch model")
    a = ap.parse_args()
    dev = device_of(a)
    if a.model:
        from napari_gdt.models.bundle import load_bundle, resolve_model

        bundle = load_bundle(resolve_model(a.model))
        a.arch = bundle.card.get("arch", "gdt-v1")
        print(f"model {a.model} ({a.arch})")
    else:
        bundle = untrained_bundle(arch=a.arch)
    ppb = bundle.px_per_bin
    n_bins = a.size // ppb + 8
    canvas = synthetic_canvas((n_bins, n_bins), genes=bundle.genes, seed=1)
    region = Region(0, a.size, 0, a.size)
    outs = {}
    for T in (128, 512, a.size):
        r = TileRenderer(bundle, canvas, seed=a.seed, tile_px=T, device=dev)
        t = time.perf_counter()
        outs[T] = r.render_region(region)
        print(f"padding-free  tile {T:5d} px: {r.stats['computed']:3d} tiles in {time.perf_counter() - t:6.2f} s")
    r = TileRenderer(bundle, canvas, seed=a.seed, tile_px=128, device=dev)
    perm = np.random.default_rng(0).permutation(len(r.tiles_for(region)))
    shuffled = r.render_region(region, order=perm)
    d128_512 = np.abs(outs[128] - outs[512]).max()
    d128_one = np.abs(outs[128] - outs[a.size]).max()
    print(f"max |128-px tiles - 512-px tiles|      = {d128_512:.3g}   (goal <= 1e-5)")
    print(f"max |128-px tiles - one tile|          = {d128_one:.3g}   (goal <= 1e-5)")
    print(f"shuffled order identical bytes         = {shuffled.tobytes() == outs[128].tobytes()}")
    print(f"seam ratio (border step / other steps) = {seam_profile(outs[128], 128):.3f}  padding-free, 128-px tiles")
    print(f"peak {'device memory' if dev.type != 'cpu' else 'process RSS'}: {fmt_bytes(peak_memory(dev))}")
    if a.arch != "gdt-v1":
        return  # the zero-padding contrast runs gdt-v1's layer plan
    n128 = naive_padded_render(bundle, canvas, region, tile_px=128, seed=a.seed)
    n_one = naive_padded_render(bundle, canvas, region, tile_px=a.size, seed=a.seed)
    print("contrast: zero padding + naive tiling (same weights)")
    print(f"max |128-px tiles - one tile|          = {np.abs(n128 - n_one).max():.3g}")
    print(f"seam ratio (border step / other steps) = {seam_profile(n128, 128):.3f}  naive, 128-px tiles")


if __name__ == "__main__":
    main()
