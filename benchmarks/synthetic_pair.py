"""Write a small synthetic training pair (expression canvas + registered 'H&E' image) for a quick `napari-gdt train`.

    python benchmarks/synthetic_pair.py DIR [--bins 64]
    napari-gdt train --image DIR/img.png --expression DIR/c.ome.zarr --out DIR/model.safetensors --device cuda --steps 300

The image darkens with gene 0's counts, so a few hundred steps learn something visible. 16 px per bin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--bins", type=int, default=64, help="canvas edge in bins (16 image px each)")
    a = ap.parse_args(argv)
    from skimage.io import imsave

    from napari_gdt.synthetic import synthetic_canvas

    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    ppb = 16
    c = synthetic_canvas((a.bins, a.bins), genes=[f"G{i}" for i in range(16)], seed=3)
    c.affine = np.diag([float(ppb), float(ppb), 1.0])
    c.to_ome_zarr(d / "c.ome.zarr")
    rate = np.asarray(c.data[0], dtype=float)
    dark = np.kron(rate / max(rate.max(), 1.0), np.ones((ppb, ppb)))
    rng = np.random.default_rng(0)
    img = np.stack([0.9 - 0.5 * dark, 0.85 - 0.6 * dark, 0.9 - 0.3 * dark], -1) + rng.normal(0, 0.03, dark.shape + (3,))
    imsave(d / "img.png", (np.clip(img, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    print(f"wrote {d / 'c.ome.zarr'} and {d / 'img.png'} ({a.bins * ppb} px square, {ppb} px per bin)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
