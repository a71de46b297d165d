"""Contrast baseline: the same gdt-v1 weights run the ordinary way.

Zero padding keeps every feature map the size of its tile, and each tile
draws its noise from tile-local coordinates, with no halo. This is what
naive tiling of a padded network does; its tiles do not match at their
borders. Used only by benchmarks and tests, to show what the padding-free
design buys.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.noise import batched_noise
from .tiles import Region


def _padded_forward(model, counts: torch.Tensor, w: torch.Tensor, seed: int) -> torch.Tensor:
    x = model.embed(model.normalise(counts))
    for kind, idx in model._plan:
        if kind == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            continue
        x = model.convs[idx](F.pad(x, (1, 1, 1, 1)), w)
        zero = torch.zeros(x.shape[0], 2, dtype=torch.int64)
        n = batched_noise(seed, idx, zero, x.shape[-2], x.shape[-1], x.device)
        x = F.leaky_relu(x + model.noise_strength[idx] * n, 0.2)
    return torch.sigmoid(model.to_img(x))


def naive_padded_render(bundle, canvas, region: Region, tile_px: int, seed: int = 0) -> np.ndarray:
    """Render ``region`` with zero padding and naive tiles (no halo); region and tiles must align to bins."""
    model = bundle.model
    ppb = model.geometry.px_per_bin
    if tile_px % ppb or region.y0 % ppb or region.x0 % ppb:
        raise ValueError("naive tiling needs bin-aligned tiles")
    canvas = canvas.align(bundle.genes)
    out = np.zeros(region.shape + (model.out_channels,), dtype=np.float32)
    nb = tile_px // ppb
    w = bundle.styles(seed)
    with torch.inference_mode():
        for y in range(region.y0, region.y1, tile_px):
            for x in range(region.x0, region.x1, tile_px):
                win = canvas.read_window(y // ppb, x // ppb, nb, nb)
                img = _padded_forward(model, torch.from_numpy(win)[None], w, seed)[0].permute(1, 2, 0).numpy()
                h, ww = min(tile_px, region.y1 - y), min(tile_px, region.x1 - x)
                out[y - region.y0 : y - region.y0 + h, x - region.x0 : x - region.x0 + ww] = img[:h, :ww]
    return out
