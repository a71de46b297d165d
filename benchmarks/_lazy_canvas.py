"""A lazy synthetic expression canvas of any size: Poisson counts computed per dask chunk.

Rates are smooth functions of absolute bin coordinates (a few sinusoids per
gene), so neighbouring chunks join up; the counts of each chunk come from a
generator seeded by the chunk's position. Nothing is held in memory.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from napari_gdt.expression.canvas import ExpressionCanvas
from napari_gdt.synthetic import SYNTHETIC_GENES


def lazy_synthetic_canvas(
    n_bins: tuple[int, int], genes=None, chunk: int = 256, seed: int = 0, lam: float = 3.0
) -> ExpressionCanvas:
    genes = list(genes or SYNTHETIC_GENES)
    G = len(genes)
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.005, 0.05, size=(G, 3, 2)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(G, 3)).astype(np.float32)

    def block(x, block_info=None):
        (g0, g1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        out = np.empty((g1 - g0, y1 - y0, x1 - x0), np.float32)
        r = np.random.default_rng([seed, y0, x0, g0])
        for i, g in enumerate(range(g0, g1)):
            rate = 0.2 + sum(np.sin(freq[g, j, 0] * yy + freq[g, j, 1] * xx + phase[g, j]) ** 2 for j in range(3))
            out[i] = r.poisson(rate * lam)
        return out

    H, W = n_bins
    base = da.zeros((G, H, W), dtype=np.float32, chunks=(G, chunk, chunk))
    data = base.map_blocks(block, dtype=np.float32)
    return ExpressionCanvas(data, genes, bin_um=16.0, meta={"source": "lazy-synthetic", "seed": seed})
