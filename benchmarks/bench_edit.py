"""Edit latency on CPU: from an edit to the first updated tile, and how many tiles are recomputed.

Measured side by side in one run, on a synthetic canvas and an untrained generator:

1. the original whole canvas is rendered once into a content-keyed tile cache;
2. a ``scale`` edit is applied to a small region; we time
   recipe -> exact dirty bins -> dirty tiles -> first updated tile -> all updated tiles;
3. the number of tiles recomputed (renderer stats) is compared with the minimal
   number (tiles whose input window touches a changed bin) and the grid total;
4. the same edited canvas rendered without any cache (what a naive re-render costs);
5. undo: back to the original recipe, served from the cache.

    PYTHONPATH=src python benchmarks/bench_edit.py            # default: 48x48 bins, small model
    PYTHONPATH=src python benchmarks/bench_edit.py --bins 128 --full-model --edit-bins 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=48, help="canvas edge in bins (default 48 -> 768 px at 16 px/bin)")
    ap.add_argument("--edit-bins", type=int, default=3, help="edge of the square edited region, in bins (default 3)")
    ap.add_argument("--tile-px", type=int, default=128)
    ap.add_argument("--full-model", action="store_true", help="the default gdt-v1 width instead of the small test model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args(argv)

    import torch

    from napari_gdt.editing.recipe import Recipe, changed_bins, dirty_tiles
    from napari_gdt.rendering.tiles import MemoryTileCache, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = {} if args.full_model else {"stage_channels": (32, 24, 16, 16), "emb_ch": 32}
    bundle = untrained_bundle(out_channels=3, seed=0, **cfg)
    canvas = synthetic_canvas((args.bins, args.bins), seed=1)
    ppb = bundle.px_per_bin
    cache = MemoryTileCache(max_bytes=2**31)

    base = TileRenderer(bundle, canvas, seed=0, tile_px=args.tile_px, device="cpu", cache=cache)
    n_tiles = base.grid_shape[0] * base.grid_shape[1]
    t = time.perf_counter()
    base.render_region()
    t_full = time.perf_counter() - t
    print(
        f"canvas {args.bins}x{args.bins} bins = {base.shape_px[0]}x{base.shape_px[1]} px, {n_tiles} tiles of {args.tile_px} px "
        f"(halo {bundle.card['halo_px']} px), torch threads {torch.get_num_threads()}"
    )
    print(f"initial render (cold cache): {t_full:.2f} s, {t_full / n_tiles * 1e3:.0f} ms/tile")

    c = args.bins // 2 * ppb
    half = args.edit_bins * ppb // 2
    recipe = Recipe.from_dict(
        {
            "version": 1,
            "regions": {"r": {"rect": [c - half, c - half, c + half, c + half]}},
            "edits": [{"op": "scale", "region": "r", "genes": ["EPCAM", "KRT19", "ERBB2"], "factor": 4.0}],
        },
        source="bench",
    )

    # ---- edit -> first updated tile
    t0 = time.perf_counter()
    edited = recipe.apply(canvas, ppb)
    er = TileRenderer(bundle, edited, seed=0, tile_px=args.tile_px, device="cpu", cache=cache)
    t_apply = time.perf_counter() - t0
    changed = changed_bins(base.canvas, er.canvas, recipe.edit_mask(canvas, ppb))
    t_dirty = time.perf_counter() - t0
    specs = dirty_tiles(er, changed)
    t_tiles = time.perf_counter() - t0
    first = []

    def on_tile(s, tile):
        if not first:
            first.append(time.perf_counter() - t0)

    er.compute_tiles(specs, on_tile=on_tile)
    t_all = time.perf_counter() - t0
    minimal = len(specs)
    print(f"edit: scale 3 genes in {args.edit_bins}x{args.edit_bins} bins ({int(changed.sum())} changed bins)")
    print(f"  recipe applied (lazy)          {t_apply * 1e3:8.1f} ms")
    print(f"  exact changed bins             {(t_dirty - t_apply) * 1e3:8.1f} ms")
    print(f"  dirty tiles                    {(t_tiles - t_dirty) * 1e3:8.1f} ms")
    print(f"  edit -> first updated tile     {first[0] * 1e3 if first else float('nan'):8.1f} ms")
    print(f"  edit -> all updated tiles      {t_all * 1e3:8.1f} ms")
    print(f"tiles recomputed: {er.stats['computed']} (minimal {minimal}, grid {n_tiles}); cache hits {er.stats['cached']}")

    # ---- the whole edited view through the cache: only the dirty tiles compute
    er2 = TileRenderer(bundle, edited, seed=0, tile_px=args.tile_px, device="cpu", cache=cache)
    t = time.perf_counter()
    img_cached = er2.render_region()
    t_view = time.perf_counter() - t
    print(f"whole edited canvas via cache: {t_view:.2f} s, computed {er2.stats['computed']}, cached {er2.stats['cached']}")

    # ---- naive: re-render everything without a cache
    naive = TileRenderer(bundle, edited, seed=0, tile_px=args.tile_px, device="cpu", cache=None)
    t = time.perf_counter()
    img_naive = naive.render_region()
    t_naive = time.perf_counter() - t
    same = float(np.abs(img_naive - img_cached).max())
    print(f"naive full re-render (no cache): {t_naive:.2f} s, {naive.stats['computed']} tiles; max |naive - cached| = {same:.2e}")
    print(
        f"speed-up of exact invalidation: {t_naive / t_all:.1f}x (all updated tiles), {t_naive / first[0]:.1f}x to first tile"
        if first
        else ""
    )

    # ---- the same edit (new factor, so nothing is cached) with one tile per forward: earlier first tile
    r1 = Recipe.from_dict({**recipe.to_dict(), "edits": [{**recipe.edits[0], "factor": 5.0}]})
    t0 = time.perf_counter()
    e1 = TileRenderer(bundle, r1.apply(canvas, ppb), seed=0, tile_px=args.tile_px, device="cpu", cache=cache, batch_size=1)
    specs1 = dirty_tiles(e1, changed_bins(base.canvas, e1.canvas, r1.edit_mask(canvas, ppb)))
    first1 = []
    e1.compute_tiles(specs1, on_tile=lambda s, tile: first1.append(time.perf_counter() - t0) if not first1 else None)
    t_all1 = time.perf_counter() - t0
    print(
        f"batch_size=1: edit -> first updated tile {first1[0] * 1e3:.1f} ms, all {t_all1 * 1e3:.1f} ms "
        f"(recomputed {e1.stats['computed']}, minimal {len(specs1)})"
    )

    # ---- undo: the original tiles come back from the cache
    t = time.perf_counter()
    back = Recipe.from_dict({"version": 1, "regions": recipe.to_dict()["regions"], "edits": []}).apply(canvas, ppb)
    ur = TileRenderer(bundle, back, seed=0, tile_px=args.tile_px, device="cpu", cache=cache)
    ur.compute_tiles(dirty_tiles(ur, changed))
    t_undo = time.perf_counter() - t
    print(f"undo: {t_undo * 1e3:.1f} ms, computed {ur.stats['computed']}, cached {ur.stats['cached']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
