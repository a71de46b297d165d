"""The contract every generator architecture fulfils.

A *tiled generator* maps a window of expression bins to a window of image
pixels with valid (padding-free) operations only. Its geometry is affine:
an input window of ``n`` bins starting at absolute bin ``b0`` produces
``n * px_per_bin - shrink`` output pixels starting at absolute pixel
``b0 * px_per_bin + offset``. Both numbers are fixed by the architecture, so a
tiling engine can compute the minimal window for any output tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Geometry", "TiledGenerator", "trace_geometry"]


@dataclass(frozen=True)
class Geometry:
    """Per-axis geometry of a padding-free generator.

    Attributes
    ----------
    px_per_bin : int
        Output pixels per expression bin.
    offset : int
        Output origin (px) of a window starting at bin 0.
    shrink : int
        Output pixels lost to valid convolutions over the whole window.
    """

    px_per_bin: int
    offset: int
    shrink: int

    def out_len(self, n_bins: int) -> int:
        """Output length in px for an input window of ``n_bins`` bins."""
        return n_bins * self.px_per_bin - self.shrink

    def out_origin(self, b0: int) -> int:
        """Absolute px of the first output pixel of a window starting at bin ``b0``."""
        return b0 * self.px_per_bin + self.offset

    def window_for(self, p0: int, p1: int) -> tuple[int, int, int]:
        """Minimal input window for output pixels ``[p0, p1)``.

        Returns ``(b0, n_bins, crop)``: the window's first bin, its length in
        bins, and how many output pixels to drop at the start.
        """
        if p1 <= p0:
            raise ValueError(f"empty output span [{p0}, {p1})")
        b0 = (p0 - self.offset) // self.px_per_bin
        crop = p0 - self.out_origin(b0)
        need = crop + (p1 - p0)
        n = -(-(need + self.shrink) // self.px_per_bin)
        return b0, n, crop

    @property
    def halo_px(self) -> int:
        """Context on each side of a tile, in output px (the larger side, rounded up to a bin)."""
        return max(self.offset, self.shrink - self.offset)


def trace_geometry(ops: list[tuple[str, int]]) -> Geometry:
    """Compute a :class:`Geometry` from an ordered list of spatial ops.

    ``ops`` holds ``("conv", k)`` for a valid k×k convolution (odd k, stride 1)
    and ``("up", f)`` for nearest-neighbour upsampling by an integer factor.
    Positions are tracked on the lattice of the current layer, where bin
    ``b`` covers finer positions ``[b*f, (b+1)*f)``.
    """
    origin_num = 0  # origin of a window that starts at bin 0, in current units
    lost = 0  # positions lost so far, in current units
    scale = 1
    for kind, k in ops:
        if kind == "conv":
            if k % 2 != 1:
                raise ValueError("only odd kernel sizes keep the lattice aligned")
            origin_num += (k - 1) // 2
            lost += k - 1
        elif kind == "up":
            origin_num *= k
            lost *= k
            scale *= k
        else:
            raise ValueError(f"unknown op {kind!r}")
    return Geometry(px_per_bin=scale, offset=origin_num, shrink=lost)


class TiledGenerator(nn.Module):
    """Base class: a padding-free conditional generator.

    Subclasses set :attr:`arch` and implement :meth:`spatial_ops`,
    :meth:`mapping` and :meth:`synthesis`. ``config`` must be JSON-serialisable
    and sufficient to rebuild the module with ``cls(**config)``.
    """

    arch: str = ""
    config: dict
    n_genes: int
    out_channels: int
    latent_dim: int

    def spatial_ops(self) -> list[tuple[str, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def geometry(self) -> Geometry:
        return trace_geometry(self.spatial_ops())

    def latent(self, seed: int) -> torch.Tensor:
        """The global latent ``z`` for a seed, shape ``(1, latent_dim)``; device-independent."""
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn(1, self.latent_dim, generator=g)

    def styles(self, seed: int) -> torch.Tensor:
        """Mapped style vector(s) for a seed, on the module's device."""
        dev = next(self.parameters()).device
        return self.mapping(self.latent(seed).to(dev))

    def mapping(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def synthesis(
        self, counts: torch.Tensor, origins: torch.Tensor, w: torch.Tensor, seed: int
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, counts: torch.Tensor, origins: torch.Tensor, w: torch.Tensor, seed: int) -> torch.Tensor:
        """Generate images from raw count windows.

        Parameters
        ----------
        counts : (B, G, h, w) float tensor
            Raw expression counts per bin (the model normalises them).
        origins : (B, 2) int64 tensor
            Absolute (y, x) bin index of each window's first bin.
        w : (1, D) or (B, D) tensor
            Style vector(s) from :meth:`mapping`.
        seed : int
            Seed of the coordinate-hashed noise.

        Returns
        -------
        (B, C, H, W) float tensor in [0, 1], ``H = geometry.out_len(h)``.
        """
        return self.synthesis(counts, origins, w, seed)
