"""Device options shared by the benchmarks: ``--device``, the GPU sweep, peak memory.

On a GPU the sweep tries batch sizes (8/32/128), fp32 against bf16/fp16 autocast,
channels-last input and, where asked, ``torch.compile``; it reports tiles/s, Mpx/s,
peak device memory and the pixel difference of each mode from fp32 on the same
device. A reduced-precision mode is chosen only when that difference is at most
1/255 (one step of an 8-bit image).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from napari_gdt.models.device import describe, get_device, peak_memory_bytes, reset_peak_memory, synchronize

#: Largest pixel difference (output in [0, 1]) that a faster precision may introduce: one 8-bit step.
PIXEL_TOL = 1.0 / 255.0


def add_device_args(ap, sweep: bool = True) -> None:
    """``--device`` (and, for the forward benchmarks, the sweep options)."""
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto: CUDA > MPS > CPU)")
    if sweep:
        ap.add_argument(
            "--sweep",
            choices=["auto", "on", "off"],
            default="auto",
            help="try batch sizes 8/32/128, fp32 vs bf16/fp16 autocast, channels_last (auto: on a GPU only)",
        )
        ap.add_argument("--compile", action="store_true", help="also time torch.compile of the model (in the sweep)")


def device_of(a) -> torch.device:
    dev = get_device(a.device)
    print(f"device: {describe(dev)}")
    return dev


def sweep_wanted(a, dev) -> bool:
    return a.sweep == "on" or (a.sweep == "auto" and dev.type != "cpu")


def fmt_bytes(b) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(dev) -> int:
    """Peak device memory (CUDA/MPS), or this process's peak RSS on the CPU."""
    p = peak_memory_bytes(dev)
    return peak_rss() if p is None else p


def batches_of(wins: list[np.ndarray], origins: list[tuple[int, int]], b: int):
    return [(wins[i : i + b], origins[i : i + b]) for i in range(0, len(wins), b)]


def rate(renderer, wins, origins, batch: int, min_s: float = 0.3, max_rounds: int = 20) -> tuple[float, int]:
    """Tiles/s of ``renderer.forward`` over pre-read windows, at least ``min_s`` of work; and the peak memory."""
    dev = renderer.device
    bs = batches_of(wins, origins, batch)
    renderer.forward(*bs[0])  # warm-up (allocator, cuDNN autotuning, compile)
    synchronize(dev)
    reset_peak_memory(dev)
    n = 0
    t0 = time.perf_counter()
    for _ in range(max_rounds):
        for w, o in bs:
            renderer.forward(w, o)
            n += len(w)
        synchronize(dev)
        if time.perf_counter() - t0 >= min_s:
            break
    dt = time.perf_counter() - t0
    return n / dt, peak_memory(dev)


@contextlib.contextmanager
def renderer_mode(r, batch=None, precision=None, channels_last=None, model=None):
    """Temporarily run renderer ``r`` with other settings."""
    old = (r.batch_size, r.precision, r.channels_last, r._model)
    try:
        if batch is not None:
            r.batch_size = batch
        if precision is not None:
            r.precision = precision
        if channels_last is not None:
            r.channels_last = channels_last
        if model is not None:
            r._model = model
        yield r
    finally:
        r.batch_size, r.precision, r.channels_last, r._model = old


def precisions_for(dev) -> list[str]:
    if dev.type == "cuda":
        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if dev.type == "mps":
        return ["fp32", "fp16"]
    return ["fp32", "bf16"]


def sweep(
    r, wins, origins, batches=(8, 32, 128), precisions=None, channels_last=(False, True), compile=False, min_s=0.3, log=print
) -> dict:
    """Time the bare batched forward of renderer ``r`` in each mode; return the rows and the chosen mode.

    The pixel difference of a mode is the max |output - fp32 output| on the first
    batch of tiles, on the same device. The chosen mode is the fastest whose
    difference is <= :data:`PIXEL_TOL`.
    """
    dev = r.device
    precisions = precisions or precisions_for(dev)
    T2 = r.tile_px**2
    nref = min(8, len(wins))
    with renderer_mode(r, precision="fp32", channels_last=False):
        ref = r.forward(wins[:nref], origins[:nref])
    rows = []
    diffs = {}
    for prec in precisions:
        for cl in channels_last:
            with renderer_mode(r, precision=prec, channels_last=cl):
                try:
                    d = float(np.abs(r.forward(wins[:nref], origins[:nref]) - ref).max())
                except Exception as e:  # noqa: BLE001 - a mode this device or build cannot run is logged and skipped
                    log(f"  {prec} channels_last={cl}: not run ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                    continue
                diffs[(prec, cl)] = d
                for b in batches:
                    if b > len(wins):
                        continue
                    with renderer_mode(r, batch=b):
                        tps, peak = rate(r, wins, origins, b, min_s)
                    rows.append(
                        dict(
                            batch=b,
                            precision=prec,
                            channels_last=cl,
                            compiled=False,
                            tiles_s=tps,
                            mpx_s=tps * T2 / 1e6,
                            peak=peak,
                            diff=d,
                        )
                    )
    ok = [x for x in rows if x["diff"] <= PIXEL_TOL]
    best = max(ok or rows, key=lambda x: x["tiles_s"])
    if compile:
        t = time.perf_counter()
        try:
            cm = torch.compile(r.bundle.model)
            with renderer_mode(
                r, batch=best["batch"], precision=best["precision"], channels_last=best["channels_last"], model=cm
            ):
                d = float(np.abs(r.forward(wins[:nref], origins[:nref]) - ref).max())
                tc = time.perf_counter() - t
                tps, peak = rate(r, wins, origins, best["batch"], min_s)
            row = dict(
                batch=best["batch"],
                precision=best["precision"],
                channels_last=best["channels_last"],
                compiled=True,
                tiles_s=tps,
                mpx_s=tps * T2 / 1e6,
                peak=peak,
                diff=d,
                compile_s=tc,
            )
            rows.append(row)
            if d <= PIXEL_TOL and tps > best["tiles_s"] * 1.05:  # "where it helps": at least 5 % faster
                best = row
        except Exception as e:  # noqa: BLE001 - torch.compile fails in many ways (no compiler, unsupported op); log it and go on
            log(f"  torch.compile: not run ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
    return {"rows": rows, "best": best, "diffs": diffs}


def print_sweep(res: dict, log=print) -> None:
    log(
        f"  {'batch':>5} {'precision':>9} {'ch_last':>7} {'compiled':>8} | {'tiles/s':>9} {'Mpx/s':>8} | {'peak mem':>10} | "
        f"{'max |diff| vs fp32':>18}"
    )
    for x in res["rows"]:
        mark = "  <- chosen" if x is res["best"] else ""
        log(
            f"  {x['batch']:>5} {x['precision']:>9} {x['channels_last']!s:>7} {x['compiled']!s:>8} | {x['tiles_s']:>9.1f} "
            f"{x['mpx_s']:>8.2f} | "
            f"{fmt_bytes(x['peak']):>10} | {x['diff']:>18.2e}{mark}"
        )
    log(f"  chosen: the fastest mode with max |diff| <= 1/255 ({PIXEL_TOL:.4f})")


def apply_best(r, best: dict) -> None:
    """Set renderer ``r`` to the sweep's chosen mode."""
    r.batch_size = best["batch"]
    r.precision = best["precision"]
    r.channels_last = best["channels_last"]
    if best.get("compiled"):
        r._model = torch.compile(r.bundle.model)
