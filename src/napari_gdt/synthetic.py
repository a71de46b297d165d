"""Small synthetic data for demos, tests and benchmarks (no real data involved)."""

from __future__ import annotations

import numpy as np

from .expression.canvas import ExpressionCanvas
from .models.bundle import GeneratorBundle, bundle_from_model
from .models.gdt import GDTGenerator

__all__ = ["synthetic_canvas", "untrained_bundle", "SYNTHETIC_GENES"]

SYNTHETIC_GENES = ["EPCAM", "KRT19", "ERBB2", "MKI67", "COL1A1", "PTPRC", "ACTA2", "VIM"] + [f"GENE{i:03d}" for i in range(8, 24)]


def synthetic_canvas(
    n_bins: tuple[int, int] = (64, 64), genes: list[str] | None = None, seed: int = 0, bin_um: float = 16.0, lam: float = 3.0
) -> ExpressionCanvas:
    """A canvas of Poisson counts whose rates vary smoothly in space.

    Each gene has a rate map made of a few Gaussian blobs, so that regions
    differ in composition the way tissue compartments do.
    """
    genes = list(genes or SYNTHETIC_GENES)
    rng = np.random.default_rng(seed)
    H, W = n_bins
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rates = np.empty((len(genes), H, W), dtype=np.float32)
    for g in range(len(genes)):
        r = np.full((H, W), 0.2, dtype=np.float32)
        for _ in range(3):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            s = rng.uniform(0.1, 0.3) * min(H, W)
            r += rng.uniform(0.5, 2.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        rates[g] = r * lam
    counts = rng.poisson(rates).astype(np.float32)
    return ExpressionCanvas(counts, genes, bin_um=bin_um, meta={"source": "synthetic", "seed": seed})


def untrained_bundle(
    genes: list[str] | None = None, out_channels: int = 3, seed: int = 0, um_per_px: float = 1.0, arch: str = "gdt-v1", **config
) -> GeneratorBundle:
    """A randomly initialised generator (``arch`` ``gdt-v1`` or ``gdt-v2``; for demos before training, tests, benchmarks)."""
    import torch

    from .models.gdt2 import GDT2Generator

    genes = list(genes or SYNTHETIC_GENES)
    torch.manual_seed(seed)
    cls = {"gdt-v1": GDTGenerator, "gdt-v2": GDT2Generator}[arch]
    model = cls(n_genes=len(genes), out_channels=out_channels, **config)
    with torch.no_grad():
        for p in model.noise_strength:
            p.fill_(0.2)
        for conv in model.convs:  # give styles some effect
            conv.affine.weight.normal_(0, 0.3)
        model.to_img.weight.mul_(4.0)
    return bundle_from_model(
        model, genes, um_per_px=um_per_px, name=f"untrained-{arch}", provenance={"trained": False, "init_seed": seed}
    )
