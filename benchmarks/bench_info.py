"""How long does ``napari-gdt info MODEL`` take, and does it import torch?

    python benchmarks/bench_info.py [her2st-he] [--repeat 5]

Runs the command in fresh interpreters (as a user would) and prints the best and median wall
time beside the time of ``import torch`` alone, which ``info`` no longer pays: the card is
JSON in the safetensors header and the digest hashes the raw tensor bytes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(code: str, repeat: int) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t0)
        out = r.stdout
    return times, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="her2st-he")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    info = (
        f"import sys; from napari_gdt.cli import main; rc = main(['info', {a.model!r}]); "
        "print('torch imported:', 'torch' in sys.modules)"
    )
    t_info, out = _time(info, a.repeat)
    t_torch, _ = _time("import torch", a.repeat)
    t_py, _ = _time("pass", a.repeat)
    print(
        f"napari-gdt info {a.model}: best {min(t_info):.3f} s, median {statistics.median(t_info):.3f} s "
        f"({out.strip().splitlines()[-1]})"
    )
    print(f"import torch alone:       best {min(t_torch):.3f} s, median {statistics.median(t_torch):.3f} s")
    print(f"bare python start:        best {min(t_py):.3f} s")
    print(f"budget 0.5 s: {'met' if min(t_info) < 0.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
