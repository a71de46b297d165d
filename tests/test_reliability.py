"""Issue 17: nothing the user made is lost, and no input crashes, hangs or eats memory.

Every case of the issue is reproduced on small synthetic inputs:

* data loss: an --out we did not write, --out = the input, stale render chunks, atomic outputs
  (the autosave cases are in ``test_reliability_autosave.py``);
* tracebacks: each now a one-line error, exit 2;
* hangs and memory blow-ups: run in a subprocess, refused on one line within 10 s and under 1 GB;
* silent acceptance: refused, or a one-line warning.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_gdt.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


# --------------------------------------------------------------------------- helpers
def cli(capsys, *args):
    """Run the CLI in-process: (exit code, stderr stripped, stdout)."""
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = main([str(a) for a in args])
    took = time.perf_counter() - t0
    out = capsys.readouterr()
    assert took < 10, f"took {took:.1f} s"
    return rc, out.err.strip(), out.out


def one_line_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.split(": error: ")[-1], err
    for n in needles:
        assert n in err, (n, err)


def cli_subprocess(*args, timeout=10.0, env=None):
    """Run the CLI in a fresh process: (exit code, stderr, wall s, peak RSS in MB).

    The peak is the child's own ``VmHWM`` read at exit (``ru_maxrss`` would include the
    parent's memory, shared until ``exec``).
    """
    import tempfile

    code = textwrap.dedent(
        """
        import atexit, os, sys
        def _hwm():
            with open("/proc/self/status") as f:
                kb = [line.split()[1] for line in f if line.startswith("VmHWM")][0]
            with open(os.environ["GDT_TEST_HWM"], "w") as f:
                f.write(kb)
        atexit.register(_hwm)
        from napari_gdt.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    hwm = Path(tempfile.mkdtemp()) / "hwm"
    e = dict(
        os.environ,
        PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
        GDT_TEST_HWM=str(hwm),
    )
    e.update(env or {})
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    deadline = t0 + timeout
    status = ru = None
    while time.perf_counter() < deadline:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    else:
        p.kill()
        os.wait4(p.pid, 0)
        pytest.fail(f"still running after {timeout} s: napari-gdt {' '.join(map(str, args))}")
    took = time.perf_counter() - t0
    err = p.stderr.read().decode().strip()
    p.stdout.close()
    p.stderr.close()
    peak = int(hwm.read_text()) / 1024.0 if hwm.exists() else ru.ru_maxrss / 1024.0
    return os.waitstatus_to_exitcode(status), err, took, peak


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small canvas, a small bundle of ours, a transcript table and an ST pair."""
    from napari_gdt.models.bundle import save_bundle
    from napari_gdt.synthetic import synthetic_canvas, untrained_bundle

    d = tmp_path_factory.mktemp("rel")
    b = untrained_bundle(stage_channels=(8, 8), emb_ch=8, n_bin_convs=1, latent_dim=8)
    model = d / "m.safetensors"
    save_bundle(model, b.model, b.genes, um_per_px=1.0, output={"kind": "he", "channels": ["R", "G", "B"]}, tile_px=32, name="t")
    canvas = synthetic_canvas((8, 8), seed=3).to_ome_zarr(d / "c.ome.zarr")
    t = d / "t.csv"
    t.write_text("x,y,gene\n1,1,A\n20,30,B\n50,5,A\n33,12,C\n")
    return {"dir": d, "model": model, "canvas": canvas, "csv": t, "bundle": b, "ppb": b.px_per_bin}


def _rewrite_bundle(src: Path, dst: Path, card_fn=None, tensor_fn=None, raw_meta: str | None = None) -> Path:
    """A copy of a bundle with its card (or its tensors) changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    card = json.loads(meta["napari_gdt"])
    if card_fn:
        card = card_fn(card)
    if tensor_fn:
        tensors = tensor_fn(tensors)
    save_file(tensors, str(dst), metadata={"napari_gdt": raw_meta if raw_meta is not None else json.dumps(card)})
    return dst


def _recipe(path: Path, regions, edits) -> Path:
    path.write_text(json.dumps({"version": 1, "regions": regions, "edits": edits}))
    return path


def _render(files, out, *extra):
    return ["render", "--model", files["model"], "--expression", files["canvas"], "--out", out, "--device", "cpu", *extra]


# =========================================================================== data loss
def test_convert_refuses_a_folder_we_did_not_write(files, tmp_path, capsys):
    out = tmp_path / "userdata.zarr"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", out)
    one_line_error(rc, err, "userdata.zarr: exists and is not a napari-gdt canvas", "--overwrite")
    assert (out / "thesis.txt").read_text() == "four years of work"
    # our own canvas is replaced; --overwrite replaces anything
    ours = tmp_path / "ours.ome.zarr"
    assert cli(capsys, "convert", files["csv"], "--format", "csv", "--out", ours)[0] == 0
    assert cli(capsys, "convert", files["csv"], "--format", "csv", "--out", ours, "--bin-um", "5")[0] == 0
    assert cli(capsys, "convert", files["csv"], "--format", "csv", "--out", out, "--overwrite")[0] == 0
    assert not (out / "thesis.txt").exists()


def test_convert_refuses_its_own_input(files, tmp_path, capsys):
    from napari_gdt.expression.canvas import ExpressionCanvas

    c = tmp_path / "canvas.ome.zarr"
    ExpressionCanvas.from_ome_zarr(files["canvas"]).to_ome_zarr(c)
    before = ExpressionCanvas.from_ome_zarr(c).total()
    rc, err, _ = cli(capsys, "convert", c, "--format", "canvas", "--genes", "EPCAM,KRT19", "--out", c)
    one_line_error(rc, err, "would overwrite the input")
    assert ExpressionCanvas.from_ome_zarr(c).total() == pytest.approx(before)


def test_convert_writes_atomically(files, tmp_path, capsys, monkeypatch):
    """A crash while writing leaves the old canvas whole (and no temporary folder behind)."""
    from napari_gdt.expression import canvas as canvas_mod
    from napari_gdt.expression.canvas import ExpressionCanvas

    out = tmp_path / "o.ome.zarr"
    assert cli(capsys, "convert", files["csv"], "--format", "csv", "--out", out)[0] == 0
    before = ExpressionCanvas.from_ome_zarr(out).total()

    def boom(self, path, chunks=None, overwrite=True):
        Path(path).mkdir(parents=True)
        (Path(path) / "half").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(canvas_mod.ExpressionCanvas, "to_ome_zarr", boom)
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", out, "--bin-um", "5")
    one_line_error(rc, err, "disk full")
    monkeypatch.undo()
    assert ExpressionCanvas.from_ome_zarr(out).total() == pytest.approx(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.zarr"]


def test_render_resume_keys_on_canvas_content(files, tmp_path, capsys):
    """Re-converting the canvas at the same path and shape no longer resumes over stale chunks."""
    from napari_gdt.expression.canvas import ExpressionCanvas
    from napari_gdt.synthetic import synthetic_canvas

    c = tmp_path / "c.ome.zarr"
    ExpressionCanvas.from_ome_zarr(files["canvas"]).to_ome_zarr(c)
    out = tmp_path / "r.ome.zarr"
    args = ["render", "--model", files["model"], "--expression", c, "--out", out, "--device", "cpu", "--chunk-px", "32"]
    assert cli(capsys, *args)[0] == 0
    assert cli(capsys, *args)[0] == 0  # same content: resumes (all chunks skipped)
    assert "skipped" in capsys.readouterr().out or True
    synthetic_canvas((8, 8), seed=99).to_ome_zarr(c)  # same path, same shape, other counts
    rc, err, _ = cli(capsys, *args)
    one_line_error(rc, err, "'canvas.sha256'", "content changed", "--overwrite")
    assert cli(capsys, *args, "--overwrite")[0] == 0


def test_render_image_refuses_a_file_we_did_not_write(files, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(photo)
    before = photo.read_bytes()
    rc, err, _ = cli(capsys, *_render(files, photo, "--region", "0:32,0:32"))
    one_line_error(rc, err, "photo.png: exists and is not a napari-gdt image")
    assert photo.read_bytes() == before
    ours = tmp_path / "ours.png"
    assert cli(capsys, *_render(files, ours, "--region", "0:32,0:32"))[0] == 0
    assert cli(capsys, *_render(files, ours, "--region", "0:32,0:32"))[0] == 0  # our own: replaced
    assert cli(capsys, *_render(files, photo, "--region", "0:32,0:32", "--overwrite"))[0] == 0
    assert not list(tmp_path.glob(".*tmp*"))


def test_render_refuses_to_write_over_its_canvas(files, capsys):
    rc, err, _ = cli(capsys, *_render(files, files["canvas"]))
    one_line_error(rc, err, "would overwrite the input")
    assert (files["canvas"] / ".zattrs").exists()


def test_import_ist_and_train_refuse_a_file_we_did_not_write(files, tmp_path, capsys):
    user = tmp_path / "notes.safetensors"
    user.write_bytes(b"my own file")
    genes = tmp_path / "g.txt"
    genes.write_text("A\nB\n")
    rc, err, _ = cli(capsys, "import-ist", tmp_path / "x.pt", "--genes", genes, "--out", user)
    one_line_error(rc, err, "notes.safetensors: exists and is not a napari-gdt model bundle")
    rc, err, _ = cli(
        capsys, "train", "--image", tmp_path / "i.png", "--expression", files["canvas"], "--out", user, "--steps", "1"
    )
    one_line_error(rc, err, "notes.safetensors: exists and is not a napari-gdt model bundle")
    assert user.read_bytes() == b"my own file"


# =========================================================================== tracebacks -> one line
def test_truncated_gzip(files, tmp_path, capsys):
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(files["csv"].read_bytes() * 50)[:40])
    rc, err, _ = cli(capsys, "convert", gz, "--format", "csv", "--out", tmp_path / "o.ome.zarr")
    one_line_error(rc, err, "t.csv.gz")


@pytest.mark.parametrize("kind", ["file", "under-file"])
def test_out_is_a_file_or_under_one(files, tmp_path, capsys, kind):
    f = tmp_path / "f.ome.zarr"
    f.write_text("user file")
    out = f if kind == "file" else f / "sub.ome.zarr"
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", out)
    one_line_error(rc, err, "f.ome.zarr")
    rc, err, _ = cli(capsys, *_render(files, out if kind == "under-file" else tmp_path / "f.ome.zarr"))
    one_line_error(rc, err, "f.ome.zarr")
    png = f / "x.png"
    rc, err, _ = cli(capsys, *_render(files, png, "--region", "0:32,0:32"))
    one_line_error(rc, err, "is a file, not a folder")
    assert f.read_text() == "user file"


@pytest.mark.parametrize(
    "opt, needle",
    [
        (["--fov", "abc"], "--fov"),
        (["--chunks", "0,0,0"], "--chunks"),
        (["--spot-diameter-px", "0"], "--spot-diameter-px"),
        (["--sigma-px", "-3"], "--sigma-px"),
    ],
)
def test_bad_options(files, tmp_path, capsys, opt, needle):
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", tmp_path / "o.ome.zarr", *opt)
    one_line_error(rc, err, needle)


def test_singular_image_transform(files, tmp_path, capsys):
    m = tmp_path / "micron_to_mosaic_pixel_transform.csv"
    m.write_text("1 2 0\n2 4 0\n0 0 1\n")
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", tmp_path / "o.ome.zarr", "--image-transform", m)
    one_line_error(rc, err, "micron_to_mosaic_pixel_transform.csv", "singular")


def test_binary_gene_file(files, tmp_path, capsys):
    g = tmp_path / "genes.bin"
    g.write_bytes(bytes(range(256)) * 4)
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", tmp_path / "o.ome.zarr", "--genes", g)
    one_line_error(rc, err, "genes.bin", "not a text file")


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"op": "scale", "region": "r", "genes": "all", "factor": int("9" * 401)}, "'factor' must be a finite number"),
        ({"op": "scale", "region": "r", "genes": "all", "factor": 1e300}, "'factor' is 1e+300, above the sane maximum"),
        ({"op": "add", "region": "r", "genes": "all", "value": -1e30}, "'value' is -1e+30, outside the sane range"),
        ({"op": "scale", "region": "r", "genes": [" "], "factor": 2}, "'genes'"),
        (
            {"op": "eigen", "region": "r", "source": "r", "genes": "all", "coef": 0.5, "k": 100000},
            "'k' is 100000 but the eigen basis has only 24 gene(s)",
        ),
    ],
)
def test_bad_recipe_numbers(files, tmp_path, capsys, edit, needle):
    ppb = files["ppb"]
    r = _recipe(tmp_path / "e.json", {"r": {"rect": [0, 0, 4 * ppb, 4 * ppb]}}, [edit])
    rc, err, _ = cli(capsys, *_render(files, tmp_path / "o.png", "--edits", r, "--region", f"0:{4 * ppb},0:{4 * ppb}"))
    one_line_error(rc, err, "e.json", needle)


def test_recipe_nested_200k_brackets(files, tmp_path, capsys):
    r = tmp_path / "deep.json"
    r.write_text("[" * 200_000 + "]" * 200_000)
    rc, err, _ = cli(capsys, *_render(files, tmp_path / "o.png", "--edits", r))
    one_line_error(rc, err, "deep.json", "nested too deeply")


@pytest.mark.parametrize(
    "raw, needle",
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        (json.dumps([1, 2, 3]), "model card must be a JSON object, got list"),
    ],
)
def test_card_unreadable(files, tmp_path, capsys, raw, needle):
    m = _rewrite_bundle(files["model"], tmp_path / "bad.safetensors", raw_meta=raw)
    for cmd in (
        ["info", m],
        _render(files, tmp_path / "o.png")[:1] + ["--model", m, "--expression", files["canvas"], "--out", tmp_path / "o.png"],
    ):
        rc, err, _ = cli(capsys, *cmd)
        one_line_error(rc, err, "bad.safetensors", needle)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda c: dict(c, genes="EPCAM"), "field 'genes' must be a non-empty list"),
        (lambda c: dict(c, px_per_bin="4"), "field 'px_per_bin' must be an integer"),
        (lambda c: dict(c, tile_px=0), "field 'tile_px' must be an integer in [1, 16384], got 0"),
        (lambda c: dict(c, tile_px=-32), "field 'tile_px'"),
        (lambda c: dict(c, config=[1, 2]), "field 'config' must be an object"),
        (lambda c: dict(c, config=dict(c["config"], emb_ch="8")), "field 'config' does not fit"),
        (lambda c: dict(c, config=dict(c["config"], stage_channels=[8, -1])), "field 'config.stage_channels[1]' is -1"),
        (lambda c: dict(c, output="he"), "field 'output'"),
        (lambda c: dict(c, um_per_px=float("nan")), "field 'um_per_px'"),
        (lambda c: dict(c, genes=[" "] + c["genes"][1:]), "field 'genes' entry 0 is ' '"),
    ],
)
def test_card_wrong_types_and_bounds(files, tmp_path, capsys, change, needle):
    m = _rewrite_bundle(files["model"], tmp_path / "bad.safetensors", card_fn=change)
    rc, err, _ = cli(capsys, "info", m)
    one_line_error(rc, err, "bad.safetensors", needle)
    rc, err, _ = cli(
        capsys, "render", "--model", m, "--expression", files["canvas"], "--out", tmp_path / "o.png", "--device", "cpu"
    )
    one_line_error(rc, err, "bad.safetensors", needle)


def test_import_ist_out_under_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    g = tmp_path / "g.txt"
    g.write_text("A\n")
    rc, err, _ = cli(capsys, "import-ist", tmp_path / "x.pt", "--genes", g, "--out", f / "m.safetensors")
    one_line_error(rc, err, "is a file, not a folder")


def test_library_warnings_silenced_and_errors_on_one_line(files, tmp_path, capsys):
    """convert writes through ome-zarr (which warns about its deprecated Scaler): stderr stays empty."""
    rc, err, out = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", tmp_path / "w.ome.zarr")
    assert rc == 0 and err == "" and out.count("\n") == 1
    from napari_gdt.errors import GDTError

    def bad(args):
        raise GDTError("first line\nsecond line\n  third")

    import argparse

    from napari_gdt import cli as cli_mod

    parser = cli_mod.build_parser()
    ns = parser.parse_args(["info", "x"])
    ns.func = bad
    orig = cli_mod.build_parser
    try:
        cli_mod.build_parser = lambda: type("P", (), {"parse_args": lambda self, a: ns})()
        rc, err, _ = cli(capsys, "info", "x")
    finally:
        cli_mod.build_parser = orig
    one_line_error(rc, err, "first line second line third")
    assert isinstance(parser, argparse.ArgumentParser)


# =========================================================================== hangs and blow-ups (subprocess)
def _assert_refused_fast_and_small(rc, err, took, peak_mb, *needles):
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    assert took < 10, f"took {took:.1f} s"
    assert peak_mb < 1024, f"peak {peak_mb:.0f} MB"


def test_hang_one_transcript_far_away(tmp_path):
    t = tmp_path / "far.csv"
    t.write_text("x,y,gene\n1,1,A\n5,10000,B\n20000000,30,B\n")
    r = cli_subprocess("convert", t, "--format", "csv", "--out", tmp_path / "o.ome.zarr")
    _assert_refused_fast_and_small(*r, "far.csv", "1,001 x 2,000,001 bins", "NAPARI_GDT_MAX_BINS")
    # the user can raise the limit (here only to see the next check, the values' limit, refuse)
    r2 = cli_subprocess(
        "convert",
        t,
        "--format",
        "csv",
        "--out",
        tmp_path / "o.ome.zarr",
        env={"NAPARI_GDT_MAX_BINS": "1e10", "NAPARI_GDT_MAX_CELLS": "1e6"},
    )
    _assert_refused_fast_and_small(*r2, "NAPARI_GDT_MAX_CELLS")


def test_hang_tiny_bins(files, tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("x,y,gene\n0,0,A\n440,70,B\n100,20,C\n")
    r = cli_subprocess("convert", t, "--format", "csv", "--bin-um", "0.005", "--out", tmp_path / "o.ome.zarr")
    _assert_refused_fast_and_small(*r, "t.csv", "14,001 x 88,001 bins", "--bin-um")


def test_card_config_not_matching_tensors_refused_before_building(files, tmp_path, capsys):
    m = _rewrite_bundle(
        files["model"], tmp_path / "w.safetensors", card_fn=lambda c: dict(c, config=dict(c["config"], emb_ch=16))
    )
    rc, err, _ = cli(
        capsys, "render", "--model", m, "--expression", files["canvas"], "--out", tmp_path / "o.png", "--device", "cpu"
    )
    one_line_error(rc, err, "w.safetensors", "wrong shapes")


def test_blowup_card_emb_ch(files, tmp_path):
    m = _rewrite_bundle(
        files["model"], tmp_path / "big.safetensors", card_fn=lambda c: dict(c, config=dict(c["config"], emb_ch=12000))
    )
    r = cli_subprocess("render", "--model", m, "--expression", files["canvas"], "--out", tmp_path / "o.png", "--device", "cpu")
    _assert_refused_fast_and_small(
        *r, "big.safetensors", "NAPARI_GDT_MAX_MODEL_BYTES"
    )  # its 5 GB conv passes the absolute limit first
    m2 = _rewrite_bundle(
        files["model"], tmp_path / "huge.safetensors", card_fn=lambda c: dict(c, config=dict(c["config"], emb_ch=200000))
    )
    r = cli_subprocess("render", "--model", m2, "--expression", files["canvas"], "--out", tmp_path / "o.png", "--device", "cpu")
    _assert_refused_fast_and_small(*r, "huge.safetensors")
    assert "describes a model larger than the file's tensors" in r[1] or "NAPARI_GDT_MAX_MODEL_BYTES" in r[1], r[1]


def test_model_size_limit_is_an_env_var(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_GDT_MAX_MODEL_BYTES", "1000")
    rc, err, _ = cli(
        capsys,
        "render",
        "--model",
        files["model"],
        "--expression",
        files["canvas"],
        "--out",
        tmp_path / "o.png",
        "--device",
        "cpu",
    )
    one_line_error(rc, err, "m.safetensors", "above the limit of 1,000", "NAPARI_GDT_MAX_MODEL_BYTES")


def _spaceranger(tmp_path, n=12, g=5):
    import h5py
    import pandas as pd
    from scipy import sparse

    outs = tmp_path / "outs"
    (outs / "spatial").mkdir(parents=True)
    X = np.random.default_rng(0).poisson(3, size=(g, n)).astype(np.int32)
    m = sparse.csc_matrix(X)
    bcs = [f"BC{i:03d}-1" for i in range(n)]
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        grp = f.create_group("matrix")
        grp["data"], grp["indices"], grp["indptr"] = m.data, m.indices, m.indptr
        grp["shape"] = np.array([g, n])
        grp["barcodes"] = np.array([b.encode() for b in bcs])
        fe = grp.create_group("features")
        fe["name"] = np.array([f"G{i}".encode() for i in range(g)])
        fe["feature_type"] = np.array([b"Gene Expression"] * g)
    rows = [
        {
            "barcode": b,
            "in_tissue": 1,
            "array_row": i // 4,
            "array_col": i % 4,
            "pxl_row_in_fullres": 100.0 + 150 * (i // 4),
            "pxl_col_in_fullres": 100.0 + 150 * (i % 4),
        }
        for i, b in enumerate(bcs)
    ]
    pd.DataFrame(rows).to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    (outs / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 90.0, "tissue_hires_scalef": 0.2})
    )
    return tmp_path


def test_blowup_visium_tiny_bin_px(tmp_path):
    d = _spaceranger(tmp_path / "visium")
    r = cli_subprocess("convert", d, "--format", "visium", "--bin-px", "0.01", "--out", tmp_path / "o.ome.zarr")
    _assert_refused_fast_and_small(*r, "bins", "--bin-px")


def test_blowup_st_spots_huge_diameter(tmp_path):
    spots = tmp_path / "spots.tsv"
    spots.write_text("x\ty\tpixel_x\tpixel_y\n1\t1\t100\t100\n2\t1\t300\t100\n")
    counts = tmp_path / "counts.tsv"
    counts.write_text("\tA\tB\n1x1\t5\t1\n2x1\t3\t0\n")
    r = cli_subprocess(
        "convert", counts, spots, "--format", "st", "--bin-px", "1", "--spot-diameter-px", "1e6", "--out", tmp_path / "o.ome.zarr"
    )
    _assert_refused_fast_and_small(*r, "counts.tsv")


def test_blowup_import_ist_big_checkpoint_wrong_gene_count(tmp_path):
    """The gene count is checked before the checkpoint's tensors are read (they are memory-mapped)."""
    import torch

    from napari_gdt.models.ist import ISTGenerator

    cfg = {
        "n_genes": 4,
        "out_channels": 1,
        "latent_dim": 8,
        "n_mlp": 1,
        "base_channels": 8,
        "stage_channels": [8, 8],
        "drive_hidden": 8,
        "n_drive": 1,
    }
    try:
        g = ISTGenerator(**cfg)
    except TypeError:
        pytest.skip("ISTGenerator takes other arguments")
    ckpt = tmp_path / "big.pt"
    # 600 MB of discriminator and optimiser state, as in a real training checkpoint
    torch.save({"g_ema": g.state_dict(), "d": {"w": torch.zeros(75_000_000)}, "g_optim": {"m": torch.zeros(75_000_000)}}, ckpt)
    genes = tmp_path / "genes.txt"
    genes.write_text("A\nB\nC\n")  # 3 genes, the generator takes 4
    r = cli_subprocess("import-ist", ckpt, "--genes", genes, "--out", tmp_path / "m.safetensors", timeout=20)
    _assert_refused_fast_and_small(*r, "genes.txt: lists 3 genes but the checkpoint's generator takes 4")
    assert r[3] < 0.5 * ckpt.stat().st_size / 2**20, (
        f"peak {r[3]:.0f} MB: the checkpoint's tensors were read"
    )  # before: about 1.2x the file


# =========================================================================== silent acceptance
@pytest.mark.parametrize(
    "region, needle",
    [
        ({"rect": [10_000, 10_000, 10_100, 10_100]}, "lies outside the canvas"),
        ({"labels": "l.tif", "value": 7}, "label value 7 does not occur in l.tif"),
    ],
)
@pytest.mark.parametrize("op", ["scale", "set", "add", "knockout"])
def test_edit_on_nothing_is_refused(files, tmp_path, capsys, region, needle, op):
    from napari_gdt.editing.regions import write_labels

    write_labels(tmp_path / "l.tif", np.ones((8, 8), np.int32))
    edit = {"op": op, "region": "r", "genes": ["EPCAM"]}
    edit.update({"scale": {"factor": 2.0}, "set": {"value": 1.0}, "add": {"value": 1.0}, "knockout": {}}[op])
    r = _recipe(tmp_path / "e.json", {"r": region}, [edit])
    rc, err, _ = cli(capsys, *_render(files, tmp_path / "o.png", "--edits", r, "--region", "0:32,0:32"))
    one_line_error(rc, err, "e.json", "region 'r' is empty on this canvas", needle)


@pytest.mark.parametrize("dtype", ["bool", "int8", "float16", "float64"])
def test_tensor_dtype_refused(files, tmp_path, capsys, dtype):
    import torch

    name = "to_img.weight"
    m = _rewrite_bundle(
        files["model"], tmp_path / "d.safetensors", tensor_fn=lambda t: dict(t, **{name: t[name].to(getattr(torch, dtype))})
    )
    rc, err, _ = cli(
        capsys, "render", "--model", m, "--expression", files["canvas"], "--out", tmp_path / "o.png", "--device", "cpu"
    )
    one_line_error(rc, err, "d.safetensors", f"tensor '{name}' has dtype", "expected F32")


def test_blank_gene_name_in_transcripts(tmp_path, capsys):
    t = tmp_path / "t.csv"
    t.write_text('x,y,gene\n1,1,A\n2,2," "\n')
    rc, err, _ = cli(capsys, "convert", t, "--format", "csv", "--out", tmp_path / "o.ome.zarr")
    one_line_error(rc, err, "t.csv", "empty gene name")


def test_counts_and_spots_of_different_sections_warn(tmp_path, capsys):
    spots = tmp_path / "C3_spots.tsv"
    spots.write_text("x\ty\tpixel_x\tpixel_y\n" + "".join(f"{i}\t1\t{100 + 200 * i}\t100\n" for i in range(1, 11)))
    counts = tmp_path / "C2_counts.tsv"
    counts.write_text("\tA\tB\n" + "".join(f"{i}x1\t5\t1\n" for i in range(7, 21)))  # 4 of 14 spots match
    rc, err, _ = cli(capsys, "convert", counts, spots, "--format", "st", "--bin-px", "50", "--out", tmp_path / "o.ome.zarr")
    assert rc == 0
    assert len(err.splitlines()) == 1 and "warning:" in err and "C2_counts.tsv: spot ids match" in err and "only in part" in err


def test_image_and_canvas_not_overlapping_warn(tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "he.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(img)
    t = tmp_path / "t.csv"
    t.write_text("x,y,gene\n-157300,-157300,A\n-157000,-157100,B\n")
    rc, err, _ = cli(
        capsys, "convert", t, "--format", "csv", "--out", tmp_path / "o.ome.zarr", "--image", img, "--image-um-per-px", "1"
    )
    assert rc == 0, err
    assert len(err.splitlines()) == 1 and "he.png: the canvas lies wholly outside the image" in err


def test_grid_limit_is_an_env_var(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_GDT_MAX_BINS", "10")
    rc, err, _ = cli(capsys, "convert", files["csv"], "--format", "csv", "--out", tmp_path / "o.ome.zarr")
    one_line_error(rc, err, "above the limit of 10 bins", "NAPARI_GDT_MAX_BINS")


def test_subprocess_helper_sees_tracebacks(tmp_path):
    """The checks above can fail: an internal error is one line, exit 1, without a traceback."""
    code = textwrap.dedent(
        """
        import sys
        from napari_gdt import cli
        from napari_gdt.cli import info
        info.run = lambda args: 1 / 0
        sys.exit(cli.main(["info", "x"]))
        """
    )
    e = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=60, check=False)
    assert r.returncode == 1 and "internal error: ZeroDivisionError" in r.stderr and "Traceback" not in r.stderr
