"""Streaming OME-Zarr export: cluster == in-process, kill + resume, NGFF validity, cache warming."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_gdt.errors import GDTError
from napari_gdt.export import omezarr_render as oz
from napari_gdt.export.workers import bundle_for
from napari_gdt.models.bundle import save_bundle

SRC = str(Path(__file__).resolve().parents[2] / "src")
REGION = "32:672,0:512"  # not tile-aligned in y on purpose: 640 x 512 px


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    d = tmp_path_factory.mktemp("export")
    b = untrained_bundle(out_channels=3, seed=0, stage_channels=(8, 8, 8, 8), emb_ch=8)
    m = d / "model.safetensors"
    save_bundle(m, b.model, b.genes, um_per_px=0.5, output={"kind": "he", "channels": ["R", "G", "B"]}, tile_px=128, name="tiny")
    c = synthetic_canvas((44, 34), seed=3).to_ome_zarr(d / "canvas.ome.zarr")
    return d, m, c


@pytest.fixture(scope="module")
def reference(files):
    """An uninterrupted in-process render (uint8, NGFF 0.4, 3 levels)."""
    d, m, c = files
    out = d / "ref.ome.zarr"
    s = oz.render_to_omezarr(m, c, out, region=REGION, chunk_px=256, levels=3, device="cpu", progress=False)
    assert s["rendered"] == s["chunks"] == 6 and s["skipped"] == 0 and s["mode"] == "in-process"
    return out


def _levels(path, n=3):
    return [zarr.open_array(str(Path(path) / str(lvl)), mode="r")[:] for lvl in range(n)]


def test_quantise_and_downsample_helpers():
    from napari_gdt.cli._common import to_uint8

    x = np.random.default_rng(0).uniform(-0.2, 1.2, size=(5, 7, 3)).astype(np.float32)
    assert np.array_equal(oz.quantise_uint8(x), to_uint8(x))
    a = np.array([[[0, 1, 2], [3, 4, 5], [250, 251, 255]]], dtype=np.uint8)
    d = oz.downsample2x(a)  # odd edges replicate: [[0,1],[3,4]] etc.
    assert d.shape == (1, 2, 2) and d.dtype == np.uint8
    assert d[0, 0, 0] == 2 and d[0, 0, 1] == 4 and d[0, 1, 0] == 251 and d[0, 1, 1] == 255
    f = oz.downsample2x(np.arange(16, dtype=np.float32).reshape(1, 4, 4))
    assert np.allclose(f[0], [[2.5, 4.5], [10.5, 12.5]])
    assert oz.default_levels((4096, 1000)) == 5 and oz.default_levels((200, 100)) == 1


def test_level0_matches_direct_render(files, reference):
    """Level 0 holds exactly the TileRenderer's pixels (quantised like the .png/.tif output)."""
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import TileRenderer, parse_region

    d, m, c = files
    r = TileRenderer(load_bundle(m), ExpressionCanvas.from_ome_zarr(c), seed=0, tile_px=128, device="cpu")
    img = r.render_region(parse_region(REGION))
    lv = _levels(reference)
    assert lv[0].shape == (3, 640, 512) and lv[0].dtype == np.uint8
    assert np.array_equal(lv[0], np.moveaxis(oz.quantise_uint8(img), -1, 0))
    assert lv[1].shape == (3, 320, 256) and np.array_equal(lv[1], oz.downsample2x(lv[0]))
    assert lv[2].shape == (3, 160, 128) and np.array_equal(lv[2], oz.downsample2x(lv[1]))
    assert lv[0].std() > 5  # a real image, not a constant


def test_localcluster_matches_inprocess(files, reference):
    d, m, c = files
    out = d / "cluster.ome.zarr"
    import torch

    # Same arithmetic as in-process: torch's CPU kernels may differ in the last float bit with the
    # thread count (docs/cluster.md), so the workers use this process's torch thread count here.
    s = oz.render_to_omezarr(
        m,
        c,
        out,
        region=REGION,
        chunk_px=256,
        levels=3,
        device="cpu",
        workers=2,
        progress=False,
        torch_threads=torch.get_num_threads(),
    )
    print("cluster summary:", json.dumps(s))
    assert s["mode"] == "LocalCluster(2)" and s["rendered"] == 6
    workers = s["workers"]
    assert len(workers) == 2
    assert sum(w["chunks_rendered"] for w in workers.values()) == 6
    for w in workers.values():  # the model is loaded once per worker, never per task
        assert w["torch_threads"] == torch.get_num_threads()
        assert w["model_loads"] == 1 and w["devices"] == ["cpu"] and w["pid"] != os.getpid()
        # dask's MALLOC_TRIM_THRESHOLD_ (which halved throughput) is undone on Linux/glibc workers
        assert w["malloc_tuned"] is oz.tune_malloc(), w
    for a, b in zip(_levels(reference), _levels(out)):
        assert np.array_equal(a, b)


def _cli(*args, env_extra=None):
    import torch

    # The CPU forward's last bit can depend on the thread count: the subprocess uses this process's, so its
    # chunks are comparable with the in-process reference whatever ran before in this process.
    env = dict(
        os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS=str(torch.get_num_threads())
    )
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "napari_gdt.cli", *args], capture_output=True, text=True, env=env, timeout=300)


# The kill hook lives here, not in the library: the child process wraps the chunk task so that it dies
# (os._exit, no cleanup, like kill -9) right after the N-th level-0 chunk is written, then runs the CLI.
_KILLED_CLI = """
import os, sys
from napari_gdt.export import omezarr_render as oz
from napari_gdt.export.workers import bundle_for
from napari_gdt.cli import main
n, task, done = int(sys.argv[1]), oz.render_chunk, [0]
def killed_after_n(*a, **k):
    res = task(*a, **k)
    done[0] += not res["skipped"]
    if done[0] >= n:
        os._exit(137)
    return res
oz.render_chunk = killed_after_n
sys.exit(main(sys.argv[2:]))
"""


def _killed_cli(n_chunks, *args):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", _KILLED_CLI, str(n_chunks), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_killed_render_resumes_to_identical_output(files, reference, capsys):
    d, m, c = files
    out = d / "killed.ome.zarr"
    args = (
        "render",
        "--model",
        str(m),
        "--expression",
        str(c),
        "--out",
        str(out),
        "--region",
        REGION,
        "--chunk-px",
        "256",
        "--levels",
        "3",
        "--device",
        "cpu",
    )
    r = _killed_cli(2, *args)
    assert r.returncode == 137, r.stderr  # died abruptly, like kill -9
    done = sorted(p.name for p in (out / oz.MARKER_DIR / "0").glob("*.json"))
    assert len(done) == 2 and not (out / oz.MARKER_DIR / "1").exists()
    assert oz.read_settings(out)["complete"] is False
    from napari_gdt.cli import main

    assert main(list(args)) == 0
    stdout = capsys.readouterr().out
    print(stdout)
    assert "4 chunks rendered, 2 skipped (already done) of 6" in stdout
    assert oz.read_settings(out)["complete"] is True
    for a, b in zip(_levels(reference), _levels(out)):
        assert np.array_equal(a, b)
    # A chunk whose bytes no longer match its marker is rendered again; the others are skipped.
    arr = zarr.open_array(str(out / "0"), mode="r+")
    arr[:, 256:512, 0:256] = 0
    assert main(list(args)) == 0
    assert "1 chunks rendered, 5 skipped (already done) of 6" in capsys.readouterr().out
    assert np.array_equal(_levels(reference)[0], _levels(out)[0])


def test_rerun_with_other_settings_is_refused(files, reference, tmp_path, capsys):
    from napari_gdt.cli import main

    d, m, c = files
    base = ["render", "--model", str(m), "--expression", str(c)]
    assert main(base + ["--out", str(reference), "--region", REGION, "--chunk-px", "256", "--levels", "3", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "rendered with a different 'seed' (0 != 5)" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "x.ome.zarr"
    other.mkdir()
    (other / "junk.txt").write_text("x")
    assert main(base + ["--out", str(other), "--region", "0:128,0:128"]) == 2
    assert "x.ome.zarr: exists and is not a napari-gdt render" in capsys.readouterr().err
    assert main(base + ["--out", str(other), "--region", "0:128,0:128", "--workers", "2", "--scheduler", "tcp://x:1"]) == 2
    assert "either --workers or --scheduler" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "y.ome.zarr"), "--region", "0:99999,0:128"]) == 2
    assert "lies outside the canvas" in capsys.readouterr().err
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert (
            main(base + ["--out", str(tmp_path / "z.ome.zarr"), "--region", "0:128,0:128", "--scheduler", "tcp://127.0.0.1:9"])
            == 2
        )
    assert "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().err


def test_worker_refuses_a_different_model_file(files):
    d, m, c = files
    with pytest.raises(GDTError, match="differs from the client's"):
        bundle_for(str(m), "0" * 64, "cpu")


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_output_validates_as_ome_zarr(files, tmp_path, ngff):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import OMERO, Multiscales, Reader

    d, m, c = files
    out = tmp_path / f"v{ngff}.ome.zarr"
    s = oz.render_to_omezarr(m, c, out, region="0:384,32:544", chunk_px=128, levels=3, device="cpu", ngff=ngff, progress=False)
    assert s["ngff"] == ngff
    g = zarr.open_group(str(out), mode="r")
    assert g.info._zarr_format == (2 if ngff == "0.4" else 3)
    if ngff == "0.5":
        assert g.attrs["ome"]["version"] == "0.5" and "multiscales" in g.attrs["ome"]
        assert list(zarr.open_array(str(out / "0"), mode="r").metadata.dimension_names) == ["c", "y", "x"]
    else:
        assert g.attrs["multiscales"][0]["version"] == "0.4"
    # Schema validation (pydantic models of the NGFF spec), where ome-zarr-models is installed.
    models = pytest.importorskip(f"ome_zarr_models.v0{ngff[-1]}")
    im = models.Image.from_zarr(g)
    ms = im.attributes.multiscales[0] if ngff == "0.4" else im.ome_attributes.multiscales[0]
    assert [ax.name for ax in ms.axes] == ["c", "y", "x"] and len(ms.datasets) == 3
    node = list(Reader(parse_url(str(out)))())[0]
    assert any(isinstance(sp, Multiscales) for sp in node.specs) and any(isinstance(sp, OMERO) for sp in node.specs)
    assert [tuple(a.shape) for a in node.data] == [(3, 384, 512), (3, 192, 256), (3, 96, 128)]
    assert node.metadata["channel_names"] == ["R", "G", "B"]
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "y", "x"]
    assert node.metadata["axes"][1]["unit"] == "micrometer"
    cts = node.metadata["coordinateTransformations"]
    for lvl, ct in enumerate(cts):  # um_per_px = 0.5, doubling per level; translation = region origin (+ half-pixel)
        scale = next(t["scale"] for t in ct if t["type"] == "scale")
        trans = next(t["translation"] for t in ct if t["type"] == "translation")
        assert scale == [1.0, 0.5 * 2**lvl, 0.5 * 2**lvl]
        assert trans[2] == pytest.approx((32 + (2**lvl - 1) / 2) * 0.5) and trans[1] == pytest.approx((2**lvl - 1) / 2 * 0.5)
    assert np.array_equal(np.asarray(node.data[0][:, 0:128, 0:128]), zarr.open_array(str(out / "0"), mode="r")[:, 0:128, 0:128])
    # napari's own reader plugin opens it as three channel layers with the bundle's names.
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr")
    layers = napari_ome_zarr.napari_get_reader(str(out))(str(out))
    data, kw, kind = layers[0]
    assert kind == "image" and len(data) == 3 and kw["channel_axis"] == 0
    assert kw["name"] == ["generated: R", "generated: G", "generated: B"]


def test_warm_cache_makes_viewing_compute_nothing(files, tmp_path):
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import MemoryTileCache, Region, TileRenderer
    from napari_gdt.synthetic import synthetic_canvas

    d, m, c = files
    out = tmp_path / "f32.ome.zarr"
    s = oz.render_to_omezarr(
        m, c, out, region="0:512,128:512", chunk_px=256, levels=2, device="cpu", dtype="float32", progress=False
    )
    assert zarr.open_array(str(out / "0"), mode="r").dtype == np.float32
    bundle = load_bundle(m)
    canvas = ExpressionCanvas.from_ome_zarr(c)
    r = TileRenderer(bundle, canvas, seed=0, tile_px=128, device="cpu", cache=MemoryTileCache())
    w = oz.warm_cache_from_omezarr(out, r)
    assert w == {"warmed": 12, "mismatched": 0, "exact": True} and s["computed"] == 12
    img = r.render_region(Region(0, 512, 128, 512))
    assert r.stats == {"computed": 0, "cached": 12}
    assert np.array_equal(img, np.moveaxis(zarr.open_array(str(out / "0"), mode="r")[:], 0, -1))
    # Settings must match the renderer; a different canvas never poisons the cache.
    with pytest.raises(GDTError, match="rendered with seed 0 but the renderer uses 7"):
        oz.warm_cache_from_omezarr(out, TileRenderer(bundle, canvas, seed=7, tile_px=128, device="cpu", cache=MemoryTileCache()))
    with pytest.raises(GDTError, match="rendered with tile_px 128 but the renderer uses 256"):
        oz.warm_cache_from_omezarr(out, TileRenderer(bundle, canvas, seed=0, tile_px=256, device="cpu", cache=MemoryTileCache()))
    other = TileRenderer(bundle, synthetic_canvas((44, 34), seed=9), seed=0, tile_px=128, device="cpu", cache=MemoryTileCache())
    assert oz.warm_cache_from_omezarr(out, other) == {"warmed": 0, "mismatched": 12, "exact": True} and len(other.cache) == 0
    with pytest.raises(GDTError, match="no cache"):
        oz.warm_cache_from_omezarr(out, TileRenderer(bundle, canvas, seed=0, tile_px=128, device="cpu"))


def test_warm_from_uint8_needs_allow_quantised(files, reference):
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import MemoryTileCache, TileRenderer

    d, m, c = files
    r = TileRenderer(
        load_bundle(m), ExpressionCanvas.from_ome_zarr(c), seed=0, tile_px=128, device="cpu", cache=MemoryTileCache()
    )
    with pytest.raises(GDTError, match="stores uint8 .quantised. pixels; render with --dtype float32"):
        oz.warm_cache_from_omezarr(reference, r)
    w = oz.warm_cache_from_omezarr(reference, r, allow_quantised=True)
    # region 32:672 is not tile-aligned in y: only the 4 x 4 tiles wholly inside it are warmed
    assert w == {"warmed": 16, "mismatched": 0, "exact": False} and len(r.cache) == 16
    with pytest.raises(GDTError, match="not an OME-Zarr rendered by napari-gdt"):
        oz.warm_cache_from_omezarr(files[2], r)


def test_edits_are_rendered_and_hashed(files, tmp_path):
    recipe_mod = pytest.importorskip("napari_gdt.editing.recipe")
    d, m, c = files
    rec = tmp_path / "edit.json"
    rec.write_text(
        json.dumps(
            {
                "version": 1,
                "regions": {"a": {"rect": [0, 0, 256, 256]}},
                "edits": [{"op": "scale", "region": "a", "genes": ["EPCAM", "KRT19"], "factor": 5.0}],
            }
        )
    )
    out = tmp_path / "edited.ome.zarr"
    oz.render_to_omezarr(
        m, c, out, region="0:256,0:512", edits=rec, chunk_px=256, levels=1, device="cpu", progress=False, dtype="float32"
    )
    st = oz.read_settings(out)
    assert st["recipe"]["sha256"] == oz.recipe_hash(rec)
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.models.bundle import load_bundle
    from napari_gdt.rendering.tiles import Region, TileRenderer

    bundle = load_bundle(m)
    edited = recipe_mod.apply_recipe_file(rec, ExpressionCanvas.from_ome_zarr(c), px_per_bin=bundle.px_per_bin)
    img = TileRenderer(bundle, edited, seed=0, tile_px=128, device="cpu").render_region(Region(0, 256, 0, 512))
    assert np.array_equal(np.moveaxis(zarr.open_array(str(out / "0"), mode="r")[:], 0, -1), img)
