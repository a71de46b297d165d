"""Time the nuclear morphometrics on a large H&E image (one process; pin threads for one core).

    OMP_NUM_THREADS=1 python benchmarks/morphometrics_speed.py                       # her2st C5 crop, 2048 px
    OMP_NUM_THREADS=1 python benchmarks/morphometrics_speed.py --size 5000           # the 5000 x 5000 target
    python benchmarks/morphometrics_speed.py --image path/to/he.jpg --um 0.69 --size 5000

The real image comes from $NAPARI_GDT_DATA (or ../shared/data) her2st/C5/he.jpg unless --image is
given. Prints the wall and CPU time of measure_nuclei and of tile_stats (256 px tiles, with a
tissue mask) side by side, with CPU seconds per megapixel (wall time depends on machine load).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=None)
    ap.add_argument("--um", type=float, default=0.69)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--y0", type=int, default=1500)
    ap.add_argument("--x0", type=int, default=1500)
    a = ap.parse_args()
    from PIL import Image

    from napari_gdt.analysis.morphometrics import measure_nuclei, tile_stats, tissue_mask

    Image.MAX_IMAGE_PIXELS = None
    if a.image is None:
        root = Path(os.environ.get("NAPARI_GDT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
        a.image = str(root / "her2st" / "C5" / "he.jpg")
    with Image.open(a.image) as im:
        rgb = np.asarray(im.crop((a.x0, a.y0, a.x0 + a.size, a.y0 + a.size)).convert("RGB"))
    mpx = rgb.shape[0] * rgb.shape[1] / 1e6
    t, c = time.perf_counter(), time.process_time()
    st = measure_nuclei(rgb, "he", a.um)
    t_measure, c_measure = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    tm = tissue_mask(rgb, "he", a.um)
    df = tile_stats(rgb, "he", a.um, tile_px=256, tissue_mask=tm)
    t_tiles, c_tiles = time.perf_counter() - t, time.process_time() - c
    print(f"image {rgb.shape[1]}x{rgb.shape[0]} px ({mpx:.1f} Mpx) at {a.um} um/px, tissue {tm.mean():.2f}")
    print(
        f"measure_nuclei: wall {t_measure:6.1f} s, cpu {c_measure:6.1f} s ({c_measure / mpx:.2f} cpu s/Mpx)  count={st.count} "
        f"density={st.density_per_mm2:.0f}/mm2 mean_area={st.mean_area_um2:.1f} um2 area_fraction={st.area_fraction:.3f}"
    )
    print(
        f"tile_stats:     wall {t_tiles:6.1f} s, cpu {c_tiles:6.1f} s ({c_tiles / mpx:.2f} cpu s/Mpx)  tiles={len(df)} (incl. "
        "tissue_mask)"
    )


if __name__ == "__main__":
    main()
