"""Expression canvases of the sample datasets, built the way the bundled models were trained.

Used by training (``napari_gdt.training.recipes``) and by analysis (baselines), so it lives
below both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MERFISH_EXTENT_UM", "merfish_canvas"]

#: the MERFISH mouse brain z0 field (µm) that the DAPI image covers
MERFISH_EXTENT_UM = {"x0": 6400.029, "x1": 6900.037, "y0": 4699.967, "y1": 5150.007}


def merfish_canvas(transcripts_csv, image_shape, bin_px: int = 64, genes=None):
    """Bin MERFISH z0 transcripts on ``bin_px`` DAPI pixels (canvas affine: bins -> DAPI px)."""
    import pandas as pd

    from .canvas import ExpressionCanvas

    df = pd.read_csv(transcripts_csv)
    df = df[~df["gene"].astype(str).str.startswith("Blank")]
    H, W = image_shape
    e = MERFISH_EXTENT_UM
    um_x, um_y = (e["x1"] - e["x0"]) / W, (e["y1"] - e["y0"]) / H
    col = (df["global_x"].to_numpy() - e["x0"]) / um_x
    row = (df["global_y"].to_numpy() - e["y0"]) / um_y
    all_genes = sorted(df["gene"].astype(str).unique()) if genes is None else list(genes)
    gi = {g: i for i, g in enumerate(all_genes)}
    g = df["gene"].astype(str).map(gi)
    ok = g.notna().to_numpy() & (row >= -0.5) & (col >= -0.5) & (row < H - 0.5) & (col < W - 0.5)
    Hb, Wb = -(-H // bin_px), -(-W // bin_px)
    by = np.floor((row[ok] + 0.5) / bin_px).astype(int)
    bx = np.floor((col[ok] + 0.5) / bin_px).astype(int)
    counts = np.zeros((len(all_genes), Hb, Wb), dtype=np.float32)
    np.add.at(counts, (g[ok].astype(int).to_numpy(), by, bx), 1.0)
    um_per_px = 0.5 * (um_x + um_y)
    affine = np.diag([float(bin_px), float(bin_px), 1.0])
    return ExpressionCanvas(
        counts,
        all_genes,
        bin_um=bin_px * um_per_px,
        affine=affine,
        meta={"format": "merfish", "files": [str(transcripts_csv)], "um_per_px": um_per_px, "total_counts": float(counts.sum())},
    )
