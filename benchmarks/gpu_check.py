"""The GPU path in one command: correctness, seams, speed, lazy panning, export, memory (and training).

    python benchmarks/gpu_check.py                  # on a CUDA GPU: the full check, under 5 minutes
    python benchmarks/gpu_check.py --train 60       # ... and 60 s of training on a tiny synthetic pair
    python benchmarks/gpu_check.py --device cpu     # no GPU: the same checks at small sizes (a smoke test)

Prints one table (check | model | result | goal | status) and, with ``--json FILE``, writes
every number. Checks:

* ``cuda vs cpu``: max |pixel difference| (output in [0, 1]) of a region rendered on the
  device and on the CPU, for the bundled her2st-he and merfish-dapi models and an
  IST-editing-shaped model (published widths, random weights) imported through
  ``import_ist_checkpoint``. Torch's default (TF32 convolutions on CUDA) and strict fp32.
* ``seams``: on the device, the region tiled (small tiles) vs one piece, and in shuffled order.
* ``speed``: tiles/s and Mpx/s of the bare batched forward, swept over batch 8/32/128, fp32 vs
  bf16/fp16 autocast, channels_last (and torch.compile with ``--compile``); then the engine
  (``compute_tiles``: canvas reads, batching, cropping) in the chosen mode, as a ratio.
* ``lazy``: a 100k x 100k px lazy canvas (synthetic expression, computed per chunk) panned for
  10 s through the tile pyramid and its worker thread; tiles/s, and the largest gap of a 5-ms
  "UI" tick loop on the main thread that reads the view like napari does (goal <= 100 ms).
* ``export``: an OME-Zarr render of 16k x 16k px with one worker process on the device.
* ``train`` (``--train S``): S seconds of training on the device (bf16 autocast on CUDA), steps/s.

Without a GPU (``--device cpu``, or auto on a machine without one) sizes shrink (``--smoke``
is implied unless ``--full``): the suite runs it as a smoke test (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch
from _device import PIXEL_TOL, apply_best, fmt_bytes, peak_memory, print_sweep, rate, sweep

from napari_gdt.models.device import describe, get_device, reset_peak_memory, synchronize

SIZES = {
    #            equality px, seams px / small tile, speed tiles, lazy canvas px / seconds, export px, ist widths
    "full": dict(
        eq_px=512,
        seam_px=1024,
        seam_tile=128,
        speed_tiles=256,
        batches=(8, 32, 128),
        lazy_px=100_000,
        lazy_s=10.0,
        view=(1024, 1536),
        export_px=16384,
        export_workers=1,
        ist="published",
        min_s=0.5,
    ),
    "smoke": dict(
        eq_px=128,
        seam_px=256,
        seam_tile=64,
        speed_tiles=8,
        batches=(8,),
        lazy_px=100_000,
        lazy_s=1.5,
        view=(256, 384),
        export_px=256,
        export_workers=None,
        ist="small",
        min_s=0.05,
    ),
}
IST_SMALL = dict(latent_dim=16, n_mlp=4, base_channels=6, stage_channels=[12, 8, 6, 4], drive_hidden=16, n_drive=2)


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, check, model, result, goal="", ok=None, **data):
        status = "" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append(dict(check=check, model=model, result=result, goal=goal, status=status, **data))
        print(f"  [{check}] {model}: {result}" + (f"  (goal {goal}: {status})" if goal else ""), flush=True)

    def print(self):
        cols = ("check", "model", "result", "goal", "status")
        w = {c: max(len(c), *(len(str(r[c])) for r in self.rows)) for c in cols}
        line = " | ".join(c.ljust(w[c]) for c in cols)
        print("\n" + line + "\n" + "-+-".join("-" * w[c] for c in cols))
        for r in self.rows:
            print(" | ".join(str(r[c]).ljust(w[c]) for c in cols))

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "FAIL"]


# ------------------------------------------------------------------------- models
def ist_bundle_path(work: Path, kind: str) -> Path:
    """An IST-editing-shaped checkpoint (random weights) imported as a bundle, as a user would import theirs."""
    from napari_gdt.models.ist import PUBLISHED_CONFIG, ISTGenerator
    from napari_gdt.models.ist_import import import_ist_checkpoint

    cfg = dict(PUBLISHED_CONFIG, out_channels=1)
    if kind == "small":
        cfg.update(IST_SMALL, n_genes=24)
    else:
        cfg["n_genes"] = 64  # the published widths; a shorter panel keeps the checkpoint small
    torch.manual_seed(0)
    m = ISTGenerator(**cfg)
    with torch.no_grad():  # StyleGAN-like magnitudes, so that the output is not flat
        for k, v in m.state_dict().items():
            if k.endswith("noise.weight"):
                v.copy_(0.1 * torch.randn_like(v))
    ckpt = work / "ist_random.pt"
    torch.save({"g_ema": m.state_dict()}, ckpt)
    genes = work / "ist_genes.txt"
    genes.write_text("\n".join(f"IST{i:03d}" for i in range(cfg["n_genes"])) + "\n")
    out = work / "ist_random.safetensors"
    import_ist_checkpoint(ckpt, genes, output="dapi", out_path=out, name="ist-shaped-random")
    return out


def model_paths(work: Path, size: dict) -> dict[str, Path]:
    from napari_gdt.models.bundle import resolve_model

    return {
        "her2st-he": Path(resolve_model("her2st-he")),
        "merfish-dapi": Path(resolve_model("merfish-dapi")),
        "ist-shaped": ist_bundle_path(work, size["ist"]),
    }


def load(path, device):
    from napari_gdt.models.bundle import load_bundle

    return load_bundle(path, device=device)


def canvas_for(bundle, side_px: int, seed: int = 0):
    from napari_gdt.synthetic import synthetic_canvas

    nb = side_px // bundle.px_per_bin + 8
    return synthetic_canvas((nb, nb), genes=bundle.genes, seed=seed, lam=2.0)


def strict_fp32(on: bool):
    """Turn TF32 off (True) or back to torch's defaults (False) for CUDA convolutions and matmuls."""
    torch.backends.cudnn.allow_tf32 = not on
    torch.backends.cuda.matmul.allow_tf32 = False if on else torch.backends.cuda.matmul.allow_tf32


# ------------------------------------------------------------------------- checks
def mem_label(dev) -> str:
    return "peak process RSS" if dev.type == "cpu" else "peak device memory"


def check_equality(tab: Table, name: str, path: Path, dev, size: dict) -> dict:
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b_cpu = load(path, "cpu")
    canvas = canvas_for(b_cpu, size["eq_px"] + 256)
    T = min(b_cpu.tile_px, 128 if size is SIZES["smoke"] else b_cpu.tile_px)
    o = 4 * b_cpu.px_per_bin
    region = Region(o, o + size["eq_px"], o, o + size["eq_px"])
    ref = TileRenderer(b_cpu, canvas, seed=3, tile_px=T, device="cpu", batch_size=8).render_region(region)
    b_dev = load(path, dev)
    out = {}
    modes = [("default", False)] + ([("strict fp32", True)] if dev.type == "cuda" else [])
    for label, strict in modes:
        if dev.type == "cuda":
            strict_fp32(strict)
        img = TileRenderer(b_dev, canvas, seed=3, tile_px=T, device=dev, batch_size=8).render_region(region)
        d = float(np.abs(img - ref).max())
        q = int(np.abs(np.round(img * 255).astype(np.int16) - np.round(ref * 255).astype(np.int16)).max())
        out[label] = d
        goal = "<= 1e-4" if strict else "<= 1/255"
        tol = 1e-4 if strict else PIXEL_TOL
        tab.add(
            f"{dev.type} vs cpu ({label})",
            name,
            f"max |diff| {d:.2e} (8-bit: {q}) over {region.shape[0]}x{region.shape[1]} px",
            goal,
            d <= tol,
            value=d,
        )
    if dev.type == "cuda":
        strict_fp32(False)
    return out


def check_seams(tab: Table, name: str, path: Path, dev, size: dict) -> None:
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b = load(path, dev)
    n = size["seam_px"]
    canvas = canvas_for(b, n, seed=1)
    region = Region(0, n, 0, n)
    small = TileRenderer(b, canvas, seed=0, tile_px=size["seam_tile"], device=dev, batch_size=8)
    tiled = small.render_region(region)
    one = TileRenderer(b, canvas, seed=0, tile_px=n, device=dev, batch_size=1).render_region(region)
    perm = np.random.default_rng(0).permutation(len(small.tiles_for(region)))
    shuffled = small.render_region(region, order=perm)
    d = float(np.abs(tiled - one).max())
    q = int(np.abs(np.round(tiled * 255).astype(np.int16) - np.round(one * 255).astype(np.int16)).max())
    tab.add(
        f"seams on {dev.type}",
        name,
        f"{size['seam_tile']}-px tiles vs one {n}-px piece: max |diff| {d:.2e} (8-bit: {q})",
        "<= 1/255",
        d <= PIXEL_TOL,
        value=d,
    )
    same = shuffled.tobytes() == tiled.tobytes()
    ds = float(np.abs(shuffled - tiled).max())
    tab.add(
        f"seams on {dev.type}",
        name,
        f"shuffled tile order: {'identical bytes' if same else f'max |diff| {ds:.2e}'}",
        "identical",
        same,
        value=ds,
    )


def check_speed(tab: Table, name: str, path: Path, dev, size: dict, compile: bool, do_sweep: bool) -> dict:
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b = load(path, dev)
    T = b.tile_px if size is SIZES["full"] else 64
    n = size["speed_tiles"]
    side = int(np.ceil(np.sqrt(n)))
    ppb = b.px_per_bin
    canvas = canvas_for(b, side * T + 8 * ppb, seed=2)
    r = TileRenderer(b, canvas, seed=1, tile_px=T, device=dev, batch_size=8)
    o = (4 * ppb // T + 1) * T
    region = Region(o, o + side * T, o, o + side * T)
    specs = [s for s in r.tiles_for(region) if s.out.shape == (T, T)][:n]
    wins = [r.read_window(s) for s in specs]
    origins = [(s.win[0], s.win[1]) for s in specs]
    if do_sweep:
        print(f"  speed sweep, {name}: {len(specs)} tiles of {T} px", flush=True)
        res = sweep(r, wins, origins, batches=size["batches"], compile=compile, min_s=size["min_s"])
        print_sweep(res)
        best = res["best"]
        fp32_8 = next(
            (x for x in res["rows"] if x["batch"] == size["batches"][0] and x["precision"] == "fp32" and not x["channels_last"]),
            best,
        )
        apply_best(r, best)
        tps, peak = best["tiles_s"], best["peak"]
        mode = (
            f"batch {best['batch']}, {best['precision']}"
            f"{', channels_last' if best['channels_last'] else ''}{', compiled' if best.get('compiled') else ''}"
        )
        gain = f"; {tps / fp32_8['tiles_s']:.2f}x fp32 batch {fp32_8['batch']}"
    else:
        tps, peak = rate(r, wins, origins, r.batch_size, size["min_s"])
        mode, gain = f"batch {r.batch_size}, fp32", ""
    # the engine in the same mode: canvas reads, batching, crop, in compute_tiles
    if dev.type == "cuda":  # the renderer's own choice (batch_size=None): from the free device memory
        ra = TileRenderer(b, canvas, seed=1, tile_px=T, device=dev)
        per = ra.measure_tile_bytes()
        free, total = torch.cuda.mem_get_info(dev)
        tab.add(
            "auto batch",
            name,
            f"batch_size=None chose {ra.batch_size} ({fmt_bytes(per)} per {T}-px tile, {fmt_bytes(free)} of {fmt_bytes(total)} "
            "free)",
            "",
            None,
            batch=ra.batch_size,
            per_tile=per,
        )
    r.compute_tiles(specs[: r.batch_size])
    synchronize(dev)
    t0 = time.perf_counter()
    k = 0
    while True:
        r.compute_tiles(specs)
        k += len(specs)
        if time.perf_counter() - t0 >= size["min_s"]:
            break
    eng = k / (time.perf_counter() - t0)
    tab.add(
        "speed",
        name,
        f"bare forward {tps:.1f} tiles/s = {tps * T * T / 1e6:.2f} Mpx/s ({T}-px tiles; {mode}{gain}); {mem_label(dev)} "
        f"{fmt_bytes(peak)}",
        "",
        None,
        tiles_s=tps,
        mpx_s=tps * T * T / 1e6,
        peak=peak,
        mode=mode,
    )
    tab.add(
        "speed",
        name,
        f"engine compute_tiles {eng:.1f} tiles/s = {eng * T * T / 1e6:.2f} Mpx/s: {eng / tps:.2f}x the bare forward",
        ">= 0.8x" if dev.type != "cpu" else "",
        (eng / tps >= 0.8) if dev.type != "cpu" else None,
        tiles_s=eng,
        ratio=eng / tps,
    )
    return {"mode": (r.batch_size, r.precision, r.channels_last), "tiles_s": tps}


def check_lazy(tab: Table, path: Path, dev, size: dict, mode) -> None:
    """Pan a huge lazy canvas through TilePyramid + TileScheduler; a main-thread tick loop stands in for the UI."""
    from _lazy_canvas import lazy_synthetic_canvas

    from napari_gdt.rendering.pyramid import TilePyramid
    from napari_gdt.rendering.tiles import Region, TileRenderer

    b = load(path, dev)
    ppb = b.px_per_bin
    nb = size["lazy_px"] // ppb
    canvas = lazy_synthetic_canvas((nb, nb), genes=b.genes[:32], chunk=128)
    batch, prec, cl = mode
    r = TileRenderer(
        b,
        canvas,
        seed=0,
        tile_px=128 if size is SIZES["full"] else 64,
        device=dev,
        batch_size=batch,
        zero_fill=True,
        precision=prec,
        channels_last=cl,
    )
    p = TilePyramid(r, nearby=0, probe=0)
    reset_peak_memory(dev)
    vh, vw = size["view"]
    y0, x0 = size["lazy_px"] // 3, size["lazy_px"] // 3
    gaps, t_last = [], time.perf_counter()
    c0 = r.stats["computed"]
    t_start = t_next = time.perf_counter()
    i, x = 0, x0
    while True:  # the "UI thread": ticks every 5 ms; every 100 ms the view moves by half a view and is read (napari's slicing)
        now = time.perf_counter()
        gaps.append(now - t_last)
        t_last = now
        if now - t_start >= size["lazy_s"]:
            break
        if now >= t_next:
            x = x0 + (i * vw // 2) % (size["lazy_px"] // 3)
            p.levels[0][y0 : y0 + vh, x : x + vw]
            i += 1
            t_next += 0.1
        time.sleep(0.005)
    dt = time.perf_counter() - t_start
    n = r.stats["computed"] - c0
    T = r.tile_px
    view = Region(y0, y0 + vh, x, x + vw)
    p.levels[0][view.y0 : view.y1, view.x0 : view.x1]
    t_w = time.perf_counter()
    while not p.is_complete(0, view) and time.perf_counter() - t_w < 30:
        time.sleep(0.01)
        p.levels[0][view.y0 : view.y1, view.x0 : view.x1]
    last_view_s = time.perf_counter() - t_w
    peak = peak_memory(dev)
    p.close()
    gap_ms = 1000 * max(gaps[1:] or [0.0])
    tab.add(
        "lazy pan",
        "her2st-he",
        f"{size['lazy_px']:,}^2 px canvas, {i} views of {vh}x{vw} px in {dt:.1f} s: {n} tiles = {n / dt:.1f} tiles/s "
        f"({n * T * T / dt / 1e6:.2f} Mpx/s); last view complete after {last_view_s:.2f} s; {mem_label(dev)} {fmt_bytes(peak)}",
        "",
        None,
        tiles_s=n / dt,
        last_view_s=last_view_s,
        peak=peak,
    )
    gated = size is SIZES["full"]  # a smoke run on a loaded CPU reports the gap without judging it
    tab.add(
        "lazy pan",
        "her2st-he",
        f"largest UI-thread gap {gap_ms:.0f} ms (p99 {1000 * float(np.percentile(gaps[1:], 99)):.0f} ms)",
        "<= 100 ms" if gated else "",
        (gap_ms <= 100) if gated else None,
        gap_ms=gap_ms,
    )


def write_canvas(path: Path, genes, side_px: int, ppb: int) -> None:
    from _lazy_canvas import lazy_synthetic_canvas

    nb = -(-side_px // ppb)
    lazy_synthetic_canvas((nb, nb), genes=genes, chunk=256).to_ome_zarr(path)


def check_export(tab: Table, path: Path, dev, size: dict, work: Path, batch: int) -> None:
    from napari_gdt.export.omezarr_render import render_to_omezarr

    b = load(path, "cpu")
    n = size["export_px"]
    canvas = work / f"export_canvas_{n}.ome.zarr"
    t = time.perf_counter()
    write_canvas(canvas, b.genes[:32], n, b.px_per_bin)
    t_canvas = time.perf_counter() - t
    out = work / f"export_{n}.ome.zarr"
    reset_peak_memory(dev)
    t = time.perf_counter()
    s = render_to_omezarr(
        path,
        canvas,
        out,
        device=str(dev),
        workers=size["export_workers"],
        progress=False,
        overwrite=True,
        batch_size=batch,
        zero_fill=True,
        tile_px=256 if n >= 2048 else 64,
        chunk_px=1024 if n >= 2048 else 128,
    )
    dt = time.perf_counter() - t
    lv0 = s["timings"]["level0"]
    mpx = s["shape"][0] * s["shape"][1] / 1e6
    w = s.get("workers", {})
    wpeak = max((v.get("peak_rss", 0) for v in w.values()), default=0)
    devs = sorted({d for v in w.values() for d in v.get("devices", [])}) or [str(dev)]
    where = f"{size['export_workers']} worker process" if size["export_workers"] else "in-process"
    tab.add(
        "export",
        "her2st-he",
        f"OME-Zarr {s['shape'][0]}x{s['shape'][1]} px ({where}, device {','.join(devs)}): level 0 {lv0:.1f} s = {mpx / lv0:.2f} "
        "Mpx/s, "
        f"all {dt:.1f} s (canvas written in {t_canvas:.1f} s)" + (f"; worker peak RSS {fmt_bytes(wpeak)}" if wpeak else ""),
        "",
        None,
        mpx_s=mpx / lv0,
        seconds=dt,
    )


def check_train(tab: Table, dev, seconds: float) -> None:
    """Train a small gdt-v1 on a synthetic pair for ``seconds``; report steps/s and img/s."""
    from napari_gdt.synthetic import synthetic_canvas
    from napari_gdt.training.loop import TrainConfig, Trainer
    from napari_gdt.training.sampling import PairedSection

    ppb = 16
    genes = [f"G{i}" for i in range(16)]
    c = synthetic_canvas((48, 48), genes=genes, seed=3)
    counts = np.asarray(c.data, dtype=np.float32)
    rate = counts[0] / max(1.0, counts[0].max())
    dark = np.kron(rate, np.ones((ppb, ppb), np.float32))
    img = np.clip(np.stack([0.9 - 0.5 * dark, 0.85 - 0.6 * dark, 0.9 - 0.3 * dark], -1), 0, 1).astype(np.float32)
    sec = PairedSection(name="synthetic", counts=counts, image=img, px_per_bin=ppb)
    big = dev.type != "cpu"
    cfg = TrainConfig(
        steps=10**9,
        batch_size=16 if big else 2,
        patch_bins=12 if big else 6,
        ckpt_every=10**9,
        log_every=10**9,
        time_limit_min=seconds / 60.0,
    )
    tr = Trainer([sec], genes, cfg, dev, progress=False)
    tr.run()
    tp = tr.throughput
    tab.add(
        "train",
        "gdt-v1 (synthetic pair)",
        f"{tp['steps']} steps in {tp['seconds']:.1f} s: {tp['steps_s']:.2f} steps/s, {tp['img_s']:.1f} img/s "
        f"(batch {cfg.batch_size}, {tp['patch_px']}-px patches, amp {tr.amp})",
        "",
        None,
        **tp,
    )


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_true", help="small sizes (the default on the CPU)")
    g.add_argument("--full", action="store_true", help="full sizes (the default on a GPU)")
    ap.add_argument("--train", type=float, default=0.0, metavar="S", help="also train for S seconds and report steps/s")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile in the speed sweep (slow first call)")
    ap.add_argument("--skip", default="", help="comma-separated checks to skip: equality,seams,speed,lazy,export")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", metavar="FILE", help="write all rows as JSON here")
    ap.add_argument("--dir", help="work folder (default: a temporary one)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    full = a.full or (not a.smoke and dev.type == "cuda")
    size = SIZES["full" if full else "smoke"]
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    tmp = tempfile.TemporaryDirectory(prefix="gpu_check_") if not a.dir else None
    work = Path(a.dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"gpu_check: device {describe(dev)}; {'full' if full else 'smoke'} sizes; {os.cpu_count()} CPU cores", flush=True)
    if dev.type == "cpu":
        print(
            "gpu_check: no GPU in use: the CPU runs the same checks at small sizes (the 'cpu vs cpu' rows are trivially 0)",
            flush=True,
        )
    tab = Table()
    paths = model_paths(work, size)
    timing = {}

    def section(name, fn):
        if name in skip:
            return None
        t = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failed check must not hide the others
            tab.add(name, "-", f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", "runs", False)
            import traceback

            traceback.print_exc()
            return None
        finally:
            dt = time.perf_counter() - t
            timing[name] = timing.get(name, 0.0) + dt
            print(f"  ({name}: {dt:.1f} s)", flush=True)

    for name, p in paths.items():
        section("equality", lambda name=name, p=p: check_equality(tab, name, p, dev, size))
    section("seams", lambda: check_seams(tab, "her2st-he", paths["her2st-he"], dev, size))
    modes = {}
    for name, p in paths.items():
        modes[name] = section(
            "speed",
            lambda name=name, p=p: check_speed(tab, name, p, dev, size, a.compile and name == "her2st-he", dev.type != "cpu"),
        )
    he_mode = (modes.get("her2st-he") or {}).get("mode", (8, "fp32", False))
    section("lazy", lambda: check_lazy(tab, paths["her2st-he"], dev, size, he_mode))
    section("export", lambda: check_export(tab, paths["her2st-he"], dev, size, work, he_mode[0]))
    if a.train > 0:
        section("train", lambda: check_train(tab, dev, a.train))
    synchronize(dev)
    tab.print()
    total = time.perf_counter() - t0
    print(
        f"\ngpu_check: {len(tab.rows)} rows, {len(tab.failed)} failed, {total:.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
        + ")"
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"device": describe(dev), "full": full, "seconds": total, "timing": timing, "rows": tab.rows},
                indent=1,
                default=str,
            )
        )
    if tmp is not None:
        tmp.cleanup()
    return 1 if tab.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
