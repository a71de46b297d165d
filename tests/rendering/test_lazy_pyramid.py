"""The lazy tile pyramid and its scheduler (no Qt): immediate reads, same pixels, stale drops, computed once."""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_gdt.rendering.pyramid import TilePyramid
from napari_gdt.rendering.scheduler import Job, TileScheduler
from napari_gdt.rendering.tiles import Region, TileRenderer


@pytest.fixture
def renderer(small_bundle, small_canvas):
    return TileRenderer(small_bundle, small_canvas, seed=5, tile_px=128, device="cpu", batch_size=4)


def test_levels_shapes_and_immediate_read(renderer):
    p = TilePyramid(renderer, probe=0, coarsest_px=100)
    try:
        assert [lv.shape for lv in p.levels] == [(1280, 1280, 3), (640, 640, 3), (320, 320, 3), (160, 160, 3), (80, 80, 3)]
        assert p.levels[0].chunks == (128, 128, 3) and p.levels[0].dtype == np.uint8
        t0 = time.perf_counter()
        a = p.levels[0][100:400, 200:700]
        assert time.perf_counter() - t0 < 0.1  # no model run: placeholder at once
        assert a.shape == (300, 500, 3) and (a == p.placeholder).all()
        assert p.levels[0][5, 6].shape == (3,) and p.levels[0][..., 1].shape == (1280, 1280)
        assert p.levels[2][::2, ::4].shape == (160, 80, 3)
        assert p.wait(120)
        b = p.levels[0][100:400, 200:700]
        assert p.is_complete(0, Region(100, 400, 200, 700))
        assert b.std() > 0
    finally:
        p.close()


def test_same_pixels_as_blocking_renderer_all_levels(small_bundle, small_canvas):
    r = TileRenderer(small_bundle, small_canvas, seed=5, tile_px=128, device="cpu")
    p = TilePyramid(TileRenderer(small_bundle, small_canvas, seed=5, tile_px=128, device="cpu"), probe=0)
    try:
        region = Region(0, 512, 256, 768)
        out = p.compute_region(region)  # blocking path, same tile function as the worker
        ref = r.render_region(region)
        assert np.abs(out / 255.0 - ref).max() <= 1 / 255 + 1e-6
        # level 1 holds the 2x2 mean of level 0 where its tiles exist
        l1 = np.asarray(p.levels[1][0:256, 128:384]).astype(np.float64)
        ref1 = ref.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3)) * 255
        assert np.abs(l1 - ref1).max() <= 1.5
        assert p.is_complete(1, Region(0, 256, 128, 384)) and not p.is_complete(1)
    finally:
        p.close()


def test_preview_map_learns_colour(renderer):
    p = TilePyramid(renderer, probe=8)
    try:
        assert p.wait(120)
        W = p.preview.weights()
        assert W is not None and W.shape == (len(renderer.canvas.genes) + 1, 3)
        # coarse views get previews (not the flat placeholder) without computing the tiles under them
        before = renderer.stats["computed"]
        p.max_view_tiles = 4
        np.asarray(p.levels[2][:, :])
        assert p.wait(60)
        assert renderer.stats["computed"] == before  # 100 tiles under the view > max_view_tiles
        prev = np.asarray(p.levels[2][:, :]).astype(float)
        assert prev.std() > 0.5 and p.n_previews > 0
        # previews track the real image: correlate with the exact level-2 render
        ref = TileRenderer(renderer.bundle, renderer.canvas, seed=5, tile_px=640, device="cpu").render_region()
        ref2 = ref.reshape(320, 4, 320, 4, 3).mean(axis=(1, 3)).mean(-1)
        assert np.corrcoef(prev.mean(-1).ravel(), ref2.ravel())[0, 1] > 0.3
    finally:
        p.close()


def test_stale_requests_are_dropped(renderer):
    p = TilePyramid(renderer, probe=0, nearby=0)
    gate = threading.Event()
    orig = renderer.forward

    def slow(*a, **k):
        gate.wait(30)
        return orig(*a, **k)

    renderer.forward = slow
    try:
        p.levels[0][0:512, 0:512]  # 16 tiles + previews queued
        time.sleep(0.3)
        p.levels[0][768:1024, 768:1024]  # pan away: the old view's tiles are dropped
        assert p.scheduler.dropped > 0
        gate.set()
        assert p.wait(120)
        assert p.is_complete(0, Region(768, 1024, 768, 1024))
        assert renderer.stats["computed"] <= 4 + 4  # new view + at most one batch already running
        assert not p.is_complete(0, Region(0, 512, 0, 512))
    finally:
        gate.set()
        p.close()


def test_scheduler_priority_batches_and_cancel():
    seen = []

    class Owner:
        def batch_limit(self, kind):
            return 3

        def process(self, kind, keys, should_stop):
            seen.append((kind, list(keys)))
            time.sleep(0.05)

    o = Owner()
    s = TileScheduler()
    try:
        s.set_jobs("low", [Job((2, i), o, "tile", ("n", i)) for i in range(4)])
        s.set_jobs("high", [Job((0, i), o, "tile", ("v", i)) for i in range(5)] + [Job((1, 0), o, "preview", "p")])
        assert s.wait_idle(10)
        flat = [k for _, ks in seen for k in ks]
        assert set(flat) == {("v", i) for i in range(5)} | {("n", i) for i in range(4)} | {"p"}
        assert all(len(ks) <= 3 for _, ks in seen)
        # visible tiles before the preview before nearby tiles (the very first batch may have started early)
        assert flat.index("p") > flat.index(("v", 4)) and flat.index("p") < flat.index(("n", 3))
        seen.clear()
        s.set_jobs("x", [Job((0, i), o, "tile", i) for i in range(30)])
        s.cancel()
        assert s.wait_idle(10) and len(seen) <= 1 and s.queued == 0
    finally:
        s.close()


def test_worker_errors_are_reported():
    errors = []

    class Bad:
        def batch_limit(self, kind):
            return 1

        def process(self, kind, keys, should_stop):
            raise RuntimeError("boom")

    s = TileScheduler(on_error=errors.append)
    try:
        s.set_jobs("v", [Job((0,), Bad(), "tile", 1)])
        assert s.wait_idle(10)
        assert len(errors) == 1 and "boom" in str(errors[0])
    finally:
        s.close()


VIEW_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_gdt.rendering.cache import open_cache
    from napari_gdt.rendering.pyramid import TilePyramid
    from napari_gdt.rendering.tiles import TileRenderer
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    b = untrained_bundle(out_channels=3, seed=0, stage_channels=(32, 24, 16, 16), emb_ch=32)
    r = TileRenderer(b, synthetic_canvas((40, 40), seed=2), seed=7, tile_px=128, device="cpu", cache=open_cache(sys.argv[1]))
    p = TilePyramid(r, probe=0, nearby=0)
    p.levels[0][128:384, 0:256]          # what napari does when the view shows this region
    assert p.wait(300)
    a = np.asarray(p.levels[0][128:384, 0:256])
    np.save(sys.argv[2], a)
    print("computed", r.stats["computed"], "cached", r.stats["cached"])
    """
)


def test_computed_once_across_processes(tmp_path):
    script = tmp_path / "view.py"
    script.write_text(VIEW_SCRIPT)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    import os

    env = {**os.environ, **env}
    cache = tmp_path / "cache"
    out1 = subprocess.run(
        [sys.executable, str(script), str(cache), str(tmp_path / "a.npy")], capture_output=True, text=True, env=env, timeout=600
    )
    assert out1.returncode == 0, out1.stderr
    assert out1.stdout.split()[:4] == ["computed", "4", "cached", "0"]
    out2 = subprocess.run(
        [sys.executable, str(script), str(cache), str(tmp_path / "b.npy")], capture_output=True, text=True, env=env, timeout=600
    )
    assert out2.returncode == 0, out2.stderr
    assert out2.stdout.split()[:4] == ["computed", "0", "cached", "4"]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_preempted_batch_requeues_the_rest():
    seen = []
    started = threading.Event()
    go = threading.Event()

    class Owner:
        def batch_limit(self, kind):
            return 4

        def process(self, kind, keys, should_stop):
            for i, k in enumerate(keys):
                if i > 0 and should_stop():
                    return i
                seen.append(k)
                started.set()
                go.wait(10)
            return len(keys)

    o = Owner()
    s = TileScheduler()
    try:
        s.set_jobs("thumb", [Job((1, i), o, "preview", ("slow", i)) for i in range(4)])
        assert started.wait(10)
        s.set_jobs("view", [Job((0, 0), o, "preview", "urgent")])  # a better job arrives mid-batch
        go.set()
        assert s.wait_idle(10)
        assert seen[0] == ("slow", 0) and seen[1] == "urgent"  # preempted after one key
        assert sorted(k for k in seen if k != "urgent") == [("slow", i) for i in range(4)]  # the rest were requeued, not lost
    finally:
        go.set()
        s.close()


def test_batch_stops_when_its_jobs_leave_the_view():
    seen = []
    started = threading.Event()
    go = threading.Event()

    class Owner:
        def batch_limit(self, kind):
            return 4

        def process(self, kind, keys, should_stop):
            for i, k in enumerate(keys):
                if i > 0 and should_stop():
                    return i
                seen.append(k)
                started.set()
                go.wait(10)
            return len(keys)

    o = Owner()
    s = TileScheduler()
    try:
        s.set_jobs("view", [Job((0, i), o, "preview", ("old", i)) for i in range(4)])
        assert started.wait(10)
        s.set_jobs("view", [Job((0, i), o, "preview", ("new", i)) for i in range(2)])  # pan: same priority, new place
        go.set()
        assert s.wait_idle(10)
        assert seen == [("old", 0), ("new", 0), ("new", 1)]  # the stale rest of the batch was dropped, not requeued
        assert s.dropped >= 1
    finally:
        go.set()
        s.close()


def test_layer_pixels_equal_cli_render_and_cache_is_shared(tmp_path, small_bundle, capsys):
    """The lazy pyramid, the CLI's PNG and the CLI's --cache agree: same pixels, tiles computed once."""
    from skimage.io import imread

    from napari_gdt.cli import main
    from napari_gdt.models.bundle import load_bundle, save_bundle
    from napari_gdt.rendering.cache import open_cache
    from napari_gdt.synthetic import synthetic_canvas

    model_path = tmp_path / "m.safetensors"
    save_bundle(model_path, small_bundle.model, small_bundle.genes, um_per_px=1.0, output=small_bundle.card["output"])
    canvas_path = tmp_path / "c.ome.zarr"
    synthetic_canvas((24, 24), seed=3).to_ome_zarr(canvas_path)
    cache = tmp_path / "tiles"
    png = tmp_path / "out.png"
    assert (
        main(
            [
                "render",
                "--model",
                str(model_path),
                "--expression",
                str(canvas_path),
                "--out",
                str(png),
                "--region",
                "0:384,0:256",
                "--seed",
                "2",
                "--device",
                "cpu",
                "--cache",
                str(cache),
            ]
        )
        == 0
    )
    assert "6 tiles computed, 0 from cache" in capsys.readouterr().out

    from napari_gdt.expression.canvas import ExpressionCanvas

    r = TileRenderer(
        load_bundle(model_path), ExpressionCanvas.from_ome_zarr(canvas_path), seed=2, device="cpu", cache=open_cache(cache)
    )
    p = TilePyramid(r, probe=0, nearby=0)
    try:
        p.levels[0][0:384, 0:256]
        assert p.wait(120)
        assert r.stats == {"computed": 0, "cached": 6}  # the CLI's tiles, from the shared disk cache
        assert np.array_equal(np.asarray(p.levels[0][0:384, 0:256]), imread(png))
    finally:
        p.close()


def test_huge_canvas_opens_at_once_in_little_memory(small_bundle):
    """A 100,000 x 100,000 px generated canvas: the pyramid answers napari's reads at once, in little memory."""
    import dask.array as da
    import psutil

    from napari_gdt.expression.canvas import ExpressionCanvas

    G = len(small_bundle.genes)
    nb = 100_000 // small_bundle.px_per_bin
    canvas = ExpressionCanvas(da.zeros((G, nb, nb), dtype=np.float32, chunks=(G, 256, 256)), small_bundle.genes, bin_um=16.0)
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    p = TilePyramid(TileRenderer(small_bundle, canvas, seed=0, device="cpu"), probe=0)
    try:
        assert p.levels[0].shape[:2] == (100_000, 100_000) and max(p.levels[-1].shape[:2]) <= 256
        thumb = np.asarray(p.levels[-1])  # what napari materialises for the thumbnail
        view = p.levels[p.n_levels - 4][0:800, 0:1000]  # a zoomed-out view
        assert time.perf_counter() - t0 < 1.0
        assert thumb.shape == p.levels[-1].shape and view.shape == (800, 1000, 3)
        assert psutil.Process().memory_info().rss - rss0 < 200 * 2**20
    finally:
        p.close()
