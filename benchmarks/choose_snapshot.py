"""Choose among a run's snapshots on a validation region of a training section, never the held-out one.

    python benchmarks/choose_snapshot.py SNAP.safetensors [...] --expression C2.ome.zarr --image C2/he.jpg \
        [--region 3200:3840,2560:3360] [--seed 0] [--json]

Scores each bundle with ``napari-gdt evaluate`` (one seed) over the region, which training excluded
(``train --val-region``), by the fixed score that chose ``her2st-he`` versions 2 and 3: the sum of
|log| of the nuclei-density and area-fraction ratios and of the three density-CV ratios, the lattice
excess (lattice ratio - 1, at least 0), ``w1_iqr`` of nuclear area and of solidity, and 1 - tissue
IoU. Lower is better; prints one line per snapshot, best first. Baselines play no part in it.

This file re-creates the score from its description (docs/training.md) after the original script
was lost with a machine: on C2's region it gives version 3 the same figures as recorded (density
0.867, area fraction 1.020, CV 0.94 / 0.83 / 0.83, w1 area 0.19) but a sum of 1.006, not the 0.71
recorded then, so compare only scores made by this file.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path


def score(ev: dict) -> float:
    """The selection score of one ``evaluate --json`` result (lower is better; inf if a figure is missing)."""
    try:
        s = abs(math.log(ev["nuclei_density_ratio"])) + abs(math.log(ev["area_fraction_ratio"]))
        s += sum(abs(math.log(ev[f"density_cv_ratio_{w}um"])) for w in (50, 100, 200))
        s += max(0.0, ev["lattice_ratio"] - 1.0)
        s += ev["w1_iqr_area"] + ev["w1_iqr_solidity"] + (1.0 - ev["tissue_iou"])
    except (KeyError, TypeError, ValueError):
        return math.inf
    return float(s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshots", nargs="+")
    ap.add_argument("--expression", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--region", default="3200:3840,2560:3360")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for snap in a.snapshots:
        cmd = [sys.executable, "-m", "napari_gdt.cli", "evaluate", "--model", snap, "--expression", a.expression]
        cmd += ["--image", a.image, "--region", a.region, "--seed", str(a.seed), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{snap}: evaluate failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
            continue
        ev = json.loads(p.stdout)
        keys = ("nuclei_density_ratio", "area_fraction_ratio", "density_cv_ratio_50um", "density_cv_ratio_100um")
        keys += ("density_cv_ratio_200um", "lattice_ratio", "w1_iqr_area", "w1_iqr_solidity", "tissue_iou")
        rows.append({"snapshot": snap, "score": score(ev), **{k: ev.get(k) for k in keys}})
        r = rows[-1]
        print(
            f"{Path(snap).name:28s} score {r['score']:.3f}  density {r['nuclei_density_ratio']:.3f} af "
            f"{r['area_fraction_ratio']:.3f}  CV {r['density_cv_ratio_50um']:.2f}/{r['density_cv_ratio_100um']:.2f}/"
            f"{r['density_cv_ratio_200um']:.2f}  w1 area {r['w1_iqr_area']:.2f}",
            flush=True,
        )
    rows.sort(key=lambda r: r["score"])
    if rows:
        print(f"best: {rows[0]['snapshot']} ({rows[0]['score']:.3f})")
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
