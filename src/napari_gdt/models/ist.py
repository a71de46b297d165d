"""``ist-stylegan2``: a generator compatible with IST-editing's published weights.

IST-editing (Wu, Berg & Koelzer; CTPLab, MIDL 2024) trained padding-free
StyleGAN2 generators that paint DAPI (1 channel) or H&E (3 channels) from
spatial gene expression. This module is an independent implementation of
that network's *mathematics*, written from its published description and
the shapes of its weights, so that the EMA generator of their checkpoints
(``ckpt["g_ema"]``) loads into it strictly, key for key and shape for shape.

Conventions of the published models
-----------------------------------
- Input: the summed transcript counts of each gene in 32 x 32 px bins of the
  Xenium morphology image (0.2125 µm/px, so 6.8 µm bins), **no log, no
  scaling**. Each gene vector goes through a per-bin MLP (``drive``).
- Geometry: every layer is valid (no padding). A window of ``n`` bins
  produces ``32 * (n - 4)`` px; the first output pixel lies 64 px (two bins)
  inside the window. So their 8 x 8-bin windows give 128-px tiles with a
  64-px halo on each side, and our tiling engine can ask for any size.
- Upsampling is a stride-2 transposed 3x3 convolution, cropped by one sample
  on each side and then low-pass filtered by a fixed valid 3x3 (or, on the
  image skip path, a learned 3x3 transposed kernel and a fixed valid 5x5)
  filter. Samples after upsampling sit at half-steps of the coarser lattice,
  so every lattice stays integer-aligned with the bin grid; see
  :meth:`ISTGenerator.noise_origin`.
- One style vector ``w`` for the whole slide, from one global latent
  (``mapping``: pixel norm + ``n_mlp`` equalised linear layers, lr x0.01).
- Per-layer noise: one single-channel map per noise layer, scaled by a
  learned scalar. Their code shares crops of one large noise map between
  neighbouring tiles and generates the tiles in a fixed order. Here the
  noise is a pure function of (seed, layer, absolute lattice position)
  (:mod:`napari_gdt.rendering.noise`), so tiles are random-access. The
  ``noises.noise_*`` buffers of a checkpoint (one fixed crop's noise) are
  kept for strict loading but are not used.
- Output: the raw StyleGAN image (trained against images in [-1, 1]), mapped to [0, 1]
  as ``clamp((x + 1) / 2, 0, 1)`` (their images were scaled ``/127.5 - 1``).
  H&E channels are RGB.

The layer list (``S`` stages, ``S = 4`` for the published 128-px models,
``D = 2 ** (S + 1)`` px per bin)::

    counts (G, h, w) -> drive MLP per bin -> [out (c0), skip (c0)]
    out  -> gconv_out : up-conv 3x3, no style, demodulated, bias+lrelu
    skip -> gconv_skip: up-conv 3x3 to image channels, no style, bias+lrelu
    for stage j in 0..S-1:
        out += noise[2j];  out = convs[2j](out)       (styled up-conv, bias+lrelu)
        skip = to_rgbs[j](out) + up(skip)             (styled 3x3, no demod)
        if j < S-1: out = convs[2j+1](out); out += noise[2j+1]; bias+lrelu
    image = skip[2:-3, 2:-3]
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Geometry, TiledGenerator
from .noise import batched_noise
from .registry import register

__all__ = ["PUBLISHED_CONFIG", "ISTGenerator", "ist_state_shapes"]

_SQRT2 = math.sqrt(2.0)

#: Hyper-parameters of the published Xenium mouse-pup models (``train.sh``:
#: size 128, latent 512, n_mlp 8, kernel 3, channel multiplier 2, 379 genes).
PUBLISHED_CONFIG = dict(
    n_genes=379,
    out_channels=1,
    latent_dim=512,
    n_mlp=8,
    base_channels=64,
    stage_channels=[512, 512, 512, 512],
    drive_hidden=256,
    n_drive=4,
    kernel_size=3,
    lr_mlp=0.01,
    locl_sz=13,
)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) with StyleGAN's gain sqrt(2)."""
    return F.leaky_relu(x, 0.2) * _SQRT2


def _separable_kernel(taps: list[float], gain: float) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def _depthwise_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """True (flipped) 2-D convolution of every channel with ``kernel``, no padding."""
    b, c, h, w = x.shape
    k = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    y = F.conv2d(x.reshape(b * c, 1, h, w), k[None, None])
    return y.reshape(b, c, y.shape[-2], y.shape[-1])


class _PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class _EqLinear(nn.Module):
    """Equalised-learning-rate linear layer: ``weight`` (out, in), ``bias`` (out,)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.gain) + self.bias * self.lr_mul
        return _lrelu(y) if self.act else y


class _Blur(nn.Module):
    """Fixed valid low-pass filter after a stride-2 transposed convolution."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", _separable_kernel([1.0, 2.0, 1.0], gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _depthwise_valid(x, self.kernel)


class _ModConv(nn.Module):
    """Style-modulated valid convolution; ``up`` makes it a stride-2 transposed one.

    Keys: ``weight`` (1, out, in, k, k); with modulation ``modulation.weight``
    (in, w_dim) and ``modulation.bias`` (in,); with ``up`` ``blur.kernel`` (3, 3).
    """

    def __init__(
        self, in_ch: int, out_ch: int, k: int, w_dim: int, demodulate: bool = True, up: bool = False, modulated: bool = True
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, k, k))
        self.modulation = _EqLinear(w_dim, in_ch, bias_init=1.0) if modulated else None
        self.blur = _Blur() if up else None
        self.up = up
        self.demodulate = demodulate
        self.gain = 1.0 / math.sqrt(in_ch * k * k)

    def kernel_for(self, w: torch.Tensor | None) -> torch.Tensor:
        """The effective (out, in, k, k) kernel for one style row ``w`` (1, w_dim)."""
        wt = self.weight[0] * self.gain
        if self.modulation is not None:
            s = self.modulation(w)[0]
            wt = wt * s[None, :, None, None]
        if self.demodulate:
            wt = wt * torch.rsqrt(wt.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        return wt

    def forward(self, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if w is not None and w.shape[0] > 1 and self.modulation is not None:
            return torch.cat([self.forward(x[i : i + 1], w[i : i + 1]) for i in range(x.shape[0])])
        wt = self.kernel_for(w).to(x.dtype)
        if not self.up:
            return F.conv2d(x, wt)
        y = F.conv_transpose2d(x, wt.transpose(0, 1), stride=2)
        return self.blur(y[..., 1:-1, 1:-1])


class _NoiseScale(nn.Module):
    """Learned scalar strength of one noise map: ``weight`` (1,)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class _BiasAct(nn.Module):
    """Per-channel bias then scaled leaky ReLU: ``bias`` (C,)."""

    def __init__(self, ch: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu(x + self.bias.view(1, -1, 1, 1).to(x.dtype))


class _StyledConv(nn.Module):
    """``conv`` + ``noise`` strength + ``activate`` bias (the noise is applied by the generator)."""

    def __init__(self, in_ch: int, out_ch: int, k: int, w_dim: int, up: bool = False, modulated: bool = True):
        super().__init__()
        self.conv = _ModConv(in_ch, out_ch, k, w_dim, demodulate=True, up=up, modulated=modulated)
        self.noise = _NoiseScale()
        self.activate = _BiasAct(out_ch)


class _SkipUp(nn.Module):
    """Image-skip upsampling: learned depthwise 3x3 transposed conv, crop 1, fixed valid 5x5."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, 1, 3, 3))
        self.register_buffer("kernel", _separable_kernel([1.0, 4.0, 6.0, 4.0, 1.0], gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = F.conv_transpose2d(x.reshape(b * c, 1, h, w), self.weight.to(x.dtype), stride=2)[..., 1:-1, 1:-1]
        y = y.reshape(b, c, y.shape[-2], y.shape[-1])
        return _depthwise_valid(y, self.kernel)


class _ToImage(nn.Module):
    """Styled 3x3 conv to image channels (no demodulation) plus the upsampled skip."""

    def __init__(self, in_ch: int, out_ch: int, k: int, w_dim: int):
        super().__init__()
        self.upsample = _SkipUp()
        self.conv = _ModConv(in_ch, out_ch, k, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, w) + self.bias.to(x.dtype)
        s = self.upsample(skip)
        dy, dx = s.shape[-2] - y.shape[-2], s.shape[-1] - y.shape[-1]
        if dy or dx:  # never happens with 3x3 kernels (kept as a guard)
            raise RuntimeError(f"image skip {tuple(s.shape[-2:])} does not align with {tuple(y.shape[-2:])}")
        return y + s


def _noise_sizes(locl_sz: int, n_layers: int) -> list[int]:
    sizes, res = [], int(locl_sz)
    for i in range(n_layers):
        if i % 2 == 1:
            res = 2 * res - 5
        sizes.append(res)
    return sizes


@register
class ISTGenerator(TiledGenerator):
    """IST-editing's padding-free StyleGAN2 generator, with random-access noise.

    All widths are parameters so that the importer can infer them from a
    checkpoint's tensor shapes (and tests can use tiny ones).

    Parameters
    ----------
    n_genes : int
        Input genes (``drive.0.weight`` has shape ``(drive_hidden, n_genes)``).
    out_channels : int
        1 (DAPI) or 3 (H&E, RGB).
    latent_dim : int
        Size of the latent and style vectors (512 in the published models).
    n_mlp : int
        Layers of the mapping network (8).
    base_channels : int
        Channels of the bin-resolution features (64).
    stage_channels : list of int
        Output channels of each x2 stage (``[512] * 4``); ``px_per_bin = 2 ** (len + 1)``.
    drive_hidden : int
        Hidden width of the per-bin gene MLP (256).
    n_drive : int, optional
        Layers of that MLP (default ``n_mlp // 2``).
    kernel_size : int
        Convolution size; only 3 is supported (as published).
    lr_mlp : float
        Learning-rate multiplier of the MLPs; it scales their weights at run time (0.01).
    locl_sz : int
        Side of the first fixed noise buffer (13); kept for strict loading only.
    """

    arch = "ist-stylegan2"

    def __init__(
        self,
        n_genes: int,
        out_channels: int = 1,
        latent_dim: int = 512,
        n_mlp: int = 8,
        base_channels: int = 64,
        stage_channels: list[int] | tuple[int, ...] = (512, 512, 512, 512),
        drive_hidden: int = 256,
        n_drive: int | None = None,
        kernel_size: int = 3,
        lr_mlp: float = 0.01,
        locl_sz: int = 13,
    ):
        super().__init__()
        n_drive = int(n_mlp // 2 if n_drive is None else n_drive)
        if kernel_size != 3:
            raise ValueError(f"ist-stylegan2 supports kernel_size 3 only (got {kernel_size})")
        if n_drive < 1 or n_mlp < 1:
            raise ValueError("n_mlp and n_drive must be >= 1")
        if len(stage_channels) < 1:
            raise ValueError("stage_channels must name at least one stage")
        self.config = dict(
            n_genes=int(n_genes),
            out_channels=int(out_channels),
            latent_dim=int(latent_dim),
            n_mlp=int(n_mlp),
            base_channels=int(base_channels),
            stage_channels=[int(c) for c in stage_channels],
            drive_hidden=int(drive_hidden),
            n_drive=n_drive,
            kernel_size=int(kernel_size),
            lr_mlp=float(lr_mlp),
            locl_sz=int(locl_sz),
        )
        self.n_genes = int(n_genes)
        self.out_channels = int(out_channels)
        self.latent_dim = int(latent_dim)
        self.n_stages = len(stage_channels)
        self.num_layers = 2 * self.n_stages
        k, wd, c0 = int(kernel_size), int(latent_dim), int(base_channels)

        # Registration order mirrors the checkpoint (irrelevant for loading, nice for reading).
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i, res in enumerate(_noise_sizes(locl_sz, self.num_layers)):
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        cin = c0
        for j, cout in enumerate(stage_channels):
            self.convs.append(_StyledConv(cin, cout, k, wd, up=True))
            last = j == self.n_stages - 1
            self.convs.append(nn.Identity() if last else _StyledConv(cout, cout, k, wd))
            self.to_rgbs.append(_ToImage(cout, self.out_channels, k, wd))
            cin = cout
        self.style = nn.Sequential(_PixelNorm(), *[_EqLinear(wd, wd, lr_mul=lr_mlp, act=True) for _ in range(n_mlp)])
        dims = [self.n_genes] + [int(drive_hidden)] * (n_drive - 1) + [2 * c0]
        self.drive = nn.Sequential(*[_EqLinear(a, b, lr_mul=lr_mlp, act=True) for a, b in itertools.pairwise(dims)])
        self.gconv_out = _StyledConv(c0, c0, k, wd, up=True, modulated=False)
        self.gconv_skip = _StyledConv(c0, self.out_channels, k, wd, up=True, modulated=False)

    # ------------------------------------------------------------ geometry
    @property
    def px_per_bin(self) -> int:
        return 2 ** (self.n_stages + 1)

    @property
    def geometry(self) -> Geometry:
        """``n`` bins -> ``D * (n - 4)`` px, first pixel ``2 D`` px into the window (``D`` px per bin).

        Derived by following sample positions through the layers: a transposed
        stride-2 conv cropped by one keeps the first sample and halves the
        spacing, each valid 3x3 advances the first sample by one spacing, the
        skip's 5x5 by two; the final ``[2:-3]`` crop lands on ``2 D``.
        """
        D = self.px_per_bin
        return Geometry(px_per_bin=D, offset=2 * D, shrink=4 * D)

    def spatial_ops(self) -> list[tuple[str, int]]:
        """Ops with the same overall geometry for :func:`~napari_gdt.models.base.trace_geometry`.

        The layers themselves (transposed convolutions with crops) are not
        nearest-neighbour ``("up", f)`` steps, so this is an equivalent
        description of the whole network, not a layer list.
        """
        D = self.px_per_bin
        return [("up", D), ("conv", 4 * D + 1)]

    @staticmethod
    def noise_origin(bin_origins: torch.Tensor, level: int) -> torch.Tensor:
        """Absolute lattice index of the first sample at resolution ``level``.

        Level 0 is the output of ``gconv_out`` (2 samples per bin); level
        ``j`` has ``2 ** (j + 1)`` samples per bin. For a window starting at
        bin ``b0`` its first sample is ``2 ** (j + 1) * (b0 + 2) - 2``: the
        same absolute lattice for every window, so noise agrees across tiles.
        """
        f = 2 ** (level + 1)
        return f * (bin_origins + 2) - 2

    # ------------------------------------------------------------- network
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.style(z)

    def _noise(self, x: torch.Tensor, layer: int, level: int, bin_origins: torch.Tensor, seed: int) -> torch.Tensor:
        strength = self.convs[layer].noise.weight  # noise layer i belongs to convs[i]
        n = batched_noise(seed, layer, self.noise_origin(bin_origins, level), x.shape[-2], x.shape[-1], x.device)
        return x + strength.to(x.dtype) * n.to(x.dtype)

    def synthesis(self, counts, origins, w, seed):
        return ((self.raw_image(counts, origins, w, seed) + 1.0) * 0.5).clamp(0.0, 1.0)

    def raw_image(self, counts: torch.Tensor, origins: torch.Tensor, w: torch.Tensor, seed: int) -> torch.Tensor:
        """The network's own output (about [-1, 1], before the map to [0, 1]); same arguments as ``forward``."""
        g = counts.shape[1]
        if g != self.n_genes:
            raise ValueError(f"expected {self.n_genes} genes, got {g}")
        org = origins.to(torch.int64).cpu()
        w = w.to(counts.dtype)
        feat = self.drive(counts.permute(0, 2, 3, 1))  # (B, h, w, 2 c0), raw counts in
        feat = feat.permute(0, 3, 1, 2)
        c0 = feat.shape[1] // 2
        out = self.gconv_out.activate(self.gconv_out.conv(feat[:, :c0].contiguous(), None))
        skip = self.gconv_skip.activate(self.gconv_skip.conv(feat[:, c0:].contiguous(), None))
        for j in range(self.n_stages):
            conv1, conv2 = self.convs[2 * j], self.convs[2 * j + 1]
            out = self._noise(out, 2 * j, j, org, seed)  # noise before the up-conv
            out = conv1.activate(conv1.conv(out, w))
            skip = self.to_rgbs[j](out, w, skip)
            if j < self.n_stages - 1:
                out = conv2.conv(out, w)
                out = self._noise(out, 2 * j + 1, j + 1, org, seed)  # noise after the conv
                out = conv2.activate(out)
        return skip[..., 2:-3, 2:-3]


def ist_state_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Expected ``g_ema`` key -> shape for an IST-editing config (see :data:`PUBLISHED_CONFIG`)."""
    with torch.device("meta"):
        m = ISTGenerator(**config)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}
