"""``gdt-v1``: the project's own padding-free, style-modulated generator.

Layout (all convolutions valid, no padding anywhere)::

    counts (G, h, w) --normalise--> 1x1 embed --> n_bin_convs x [3x3 modconv + noise]
        --> for each stage: nearest x2 up --> convs_per_stage x [3x3 modconv + noise]
        --> 1x1 to image --> sigmoid

Styles come from one global latent through a small mapping MLP; each
modulated convolution scales its input channels by an affine of the style
and demodulates (StyleGAN2). Per-layer noise is coordinate-hashed
(:mod:`napari_gdt.rendering.noise`), so tiles are random-access.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import TiledGenerator
from .noise import batched_noise

__all__ = ["GDTGenerator", "ModConv", "ModConvStack"]


class ModConv(nn.Module):
    """A valid kxk convolution modulated by a style vector (StyleGAN2 style)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, k: int = 3, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, k, k) / math.sqrt(in_ch * k * k))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.affine = nn.Linear(w_dim, in_ch)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)
        self.demodulate = demodulate
        self.k = k

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (S, in)
        wt = self.weight[None] * s[:, None, :, None, None]  # (S, out, in, k, k)
        if self.demodulate:
            wt = wt * torch.rsqrt(wt.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if s.shape[0] == 1:
            return F.conv2d(x, wt[0], self.bias)
        b, c, h, ww = x.shape
        out = F.conv2d(x.reshape(1, b * c, h, ww), wt.reshape(-1, c, self.k, self.k), groups=b)
        return out.reshape(b, -1, out.shape[-2], out.shape[-1]) + self.bias[None, :, None, None]


class ModConvStack:
    """What the gdt architectures share: a stack of modulated convolutions with per-layer noise
    strengths, recorded in ``self._plan``, and the style mapping of a global latent.

    Subclasses create ``self.convs`` (ModuleList), ``self.noise_strength`` (ParameterList), ``self._plan``
    (list) and ``self.mapping_net`` before calling :meth:`_add_conv`.
    """

    def _add_conv(self, cin: int, cout: int, w_dim: int) -> None:
        self._plan.append(("conv", len(self.convs)))
        self.convs.append(ModConv(cin, cout, w_dim))
        self.noise_strength.append(nn.Parameter(torch.zeros(1, cout, 1, 1)))

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Style vectors ``(S, latent_dim)`` from latents ``z`` (pixel-normalised, then the mapping MLP)."""
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.mapping_net(z)


class GDTGenerator(ModConvStack, TiledGenerator):
    """Padding-free conditional generator with coordinate-hashed noise.

    Parameters
    ----------
    n_genes : int
        Number of input genes (the bundle's ordered panel).
    out_channels : int
        3 for H&E RGB, N for fluorescence.
    emb_ch : int
        Channels of the per-bin gene embedding.
    n_bin_convs : int
        Valid 3x3 convolutions at bin resolution (spatial context, 1 bin each side each).
    stage_channels : list of int
        Channels of each x2 upsampling stage; ``px_per_bin = 2 ** len(stage_channels)``.
    convs_per_stage : int
        Valid 3x3 convolutions after each upsampling.
    latent_dim : int
        Size of the global latent and style vector.
    log1p : bool
        Normalise counts as ``log1p(counts) / gene_scale`` (else ``counts / gene_scale``).
    """

    arch = "gdt-v1"

    def __init__(
        self,
        n_genes: int,
        out_channels: int = 3,
        emb_ch: int = 64,
        n_bin_convs: int = 2,
        stage_channels: list[int] | tuple[int, ...] = (64, 48, 32, 24),
        convs_per_stage: int = 1,
        latent_dim: int = 64,
        log1p: bool = True,
    ):
        super().__init__()
        self.config = dict(
            n_genes=int(n_genes),
            out_channels=int(out_channels),
            emb_ch=int(emb_ch),
            n_bin_convs=int(n_bin_convs),
            stage_channels=[int(c) for c in stage_channels],
            convs_per_stage=int(convs_per_stage),
            latent_dim=int(latent_dim),
            log1p=bool(log1p),
        )
        self.n_genes = n_genes
        self.out_channels = out_channels
        self.latent_dim = latent_dim
        self.log1p = log1p
        self.register_buffer("gene_scale", torch.ones(n_genes))
        self.mapping_net = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2), nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2)
        )
        self.embed = nn.Conv2d(n_genes, emb_ch, 1)
        ch = emb_ch
        self.convs = nn.ModuleList()
        self.noise_strength = nn.ParameterList()
        self._plan: list[tuple[str, int]] = []  # ("conv", idx) / ("up", 2)
        for _ in range(n_bin_convs):
            self._add_conv(ch, emb_ch, latent_dim)
            ch = emb_ch
        for sc in stage_channels:
            self._plan.append(("up", 2))
            for _ in range(convs_per_stage):
                self._add_conv(ch, sc, latent_dim)
                ch = sc
        self.to_img = nn.Conv2d(ch, out_channels, 1)

    def spatial_ops(self) -> list[tuple[str, int]]:
        return [("conv", 3) if kind == "conv" else ("up", 2) for kind, _ in self._plan]

    def normalise(self, counts: torch.Tensor) -> torch.Tensor:
        x = torch.log1p(counts.clamp_min(0)) if self.log1p else counts
        return x / self.gene_scale.view(1, -1, 1, 1)

    def synthesis(self, counts, origins, w, seed):
        x = self.embed(self.normalise(counts))
        org = origins.to(
            device=x.device, dtype=torch.int64
        )  # absolute origin of the current lattice (on the device: no copy per layer)
        for kind, idx in self._plan:
            if kind == "up":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                org = org * 2
                continue
            x = self.convs[idx](x, w)
            org = org + 1
            n = batched_noise(seed, idx, org, x.shape[-2], x.shape[-1], x.device)
            x = F.leaky_relu(x + self.noise_strength[idx] * n, 0.2)
        return torch.sigmoid(self.to_img(x))
