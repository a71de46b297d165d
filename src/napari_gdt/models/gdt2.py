"""``gdt-v2``: depth-invariant input, structure latents, smooth upsampling.

Layout (every spatial op is valid; the geometry is traced from :meth:`spatial_ops`)::

    counts (G, h, w)
      -> composition  log1p(counts / total * 1e4) / gene_scale          (G channels)
         coverage     1 where the bin holds counts, else 0             (1 channel)
         rel. depth   log(total) - its mean over a valid k x k window   (1 channel; ("conv", k))
         structure    n_struct channels of coordinate-hashed noise at bin resolution
      -> 1x1 embed -> n_bin_convs x [3x3 modconv + noise]               (context at bin level)
      -> per stage: smooth x2 up (nearest x2 + valid [1,2,1]/4 blur, i.e. bilinear)
                    -> convs x [3x3 modconv + noise]
      -> 1x1 to image -> sigmoid

Why (issue 15):

- **Depth.** ``gdt-v1`` reads ``log1p(raw counts)``, so a section sequenced 15x shallower
  looks like sparse tissue. Here a global depth factor cancels exactly from the composition
  and from the relative depth (a difference of logs); what is left is "measured / not measured"
  (coverage) and where a bin is shallow *relative to its neighbourhood* (tissue edges,
  partially covered spots). Counts in the 1e-6 range count as "no counts" (float noise).
- **Large-scale structure.** The structure channels are hashed from absolute bin coordinates
  (like every noise map here), so tiles stay random-access, and the bin-level convolutions
  turn them into a spatially correlated field: the seed chooses where nests and fibres lie.
- **Lattice.** Expression enters at bin resolution; upsampling is bilinear (smooth), never
  nearest alone, so bin edges do not print into the picture.
- **Receptive field.** ``depth_window`` and ``n_bin_convs`` give several bins (a bin is
  about 24 µm for her2st) of context on each side before any upsampling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import TiledGenerator
from .gdt import ModConvStack
from .noise import batched_noise, noise_at

__all__ = ["GDT2Generator", "coarse_noise", "composition", "composition_scale", "depth_features", "smooth_up2"]

_STRUCT_LAYER = 1000  # noise layer ids of the structure channels (distinct from the conv layers')
_MIN_TOTAL = 1e-6  # a bin with less than this many counts in total is "not measured"


def composition(counts: torch.Tensor, cp: float = 1e4) -> torch.Tensor:
    """``log1p(counts / total * cp)`` per bin ((B, G, h, w) -> same); zero where the bin has no counts."""
    c = counts.clamp_min(0)
    tot = c.sum(dim=1, keepdim=True)
    return torch.log1p(c * (cp / tot.clamp_min(_MIN_TOTAL))) * (tot > _MIN_TOTAL)


def depth_features(counts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage and relative log depth, each ``(B, 1, h, w)`` (not cropped).

    Relative depth is ``log(total)`` minus the mean of ``log(total)`` over the measured bins
    of the ``k x k`` window centred on the bin; only the central ``h - k + 1`` rows/columns are
    meaningful (valid window), and it is zero where the bin is not measured.
    """
    tot = counts.clamp_min(0).sum(dim=1, keepdim=True)
    cov = (tot > _MIN_TOTAL).to(counts.dtype)
    lt = torch.log(tot.clamp_min(_MIN_TOTAL)) * cov
    if k <= 1:
        return cov, torch.zeros_like(lt)
    s = F.avg_pool2d(lt, k, stride=1)
    n = F.avg_pool2d(cov, k, stride=1)
    r = (k - 1) // 2
    mean = s / n.clamp_min(1.0 / (k * k))
    rel = (lt[..., r : r + mean.shape[-2], r : r + mean.shape[-1]] - mean) * cov[
        ..., r : r + mean.shape[-2], r : r + mean.shape[-1]
    ]
    # pad back to the window size so callers crop all channels alike
    return cov, F.pad(rel, (r, r, r, r))


def smooth_up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 followed by a valid separable ``[1, 2, 1] / 4`` blur: ``(h, w) -> (2h - 2, 2w - 2)``.

    Equal to bilinear x2 interpolation (half-pixel centres) without its border clamping: each output
    value is computed from the same two inputs wherever the window starts (tiles match exactly).
    """

    # bilinear x2 with half-pixel centres; its first and last rows/columns (the border clamp) are
    # dropped, every other value is 0.75 * a + 0.25 * b of two neighbours, whatever the window
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[..., 1:-1, 1:-1]


def coarse_noise(seed: int, layer: int, origins_yx: torch.Tensor, h: int, w: int, stride: int, device=None) -> torch.Tensor:
    """A smooth random field ``(B, 1, h, w)`` at bin positions, with structure every ``stride`` bins.

    Standard-normal values are hashed at the nodes of a coarse lattice (one node every ``stride``
    bins, from absolute coordinates, so any window gives the same values) and interpolated with
    smoothstep weights. The weighted sum is divided by the root of the summed squared weights, so
    the field has unit variance at every position: no periodic contrast at the node spacing.
    ``stride`` 1 is the plain per-bin noise.
    """
    if stride <= 1:
        return batched_noise(seed, layer, origins_yx, h, w, device)
    o = origins_yx.to(device=device, dtype=torch.int64)
    s2 = 2 * int(stride)

    def axis(o1, n):  # node index and weight of the lower node along one axis, (B, n)
        num = 2 * (o1[:, None] + torch.arange(n, dtype=torch.int64, device=device)[None, :]) + 1 - stride
        i0 = torch.div(num, s2, rounding_mode="floor")
        t = (num - i0 * s2).to(torch.float32) / s2
        t = t * t * (3.0 - 2.0 * t)
        return i0, t

    iy, ty = axis(o[:, 0], h)
    ix, tx = axis(o[:, 1], w)
    iy, ty = iy[:, :, None], ty[:, :, None]
    ix, tx = ix[:, None, :], tx[:, None, :]
    out = torch.zeros(o.shape[0], h, w, dtype=torch.float32, device=device)
    norm = torch.zeros_like(out)
    for dy, wy in ((0, 1.0 - ty), (1, ty)):
        for dx, wx in ((0, 1.0 - tx), (1, tx)):
            wgt = wy * wx
            out = out + wgt * noise_at(seed, layer, iy + dy, ix + dx)
            norm = norm + wgt * wgt
    return (out / torch.sqrt(norm))[:, None]


def composition_scale(counts_list, cp: float = 1e4) -> np.ndarray:
    """Per-gene normaliser of the composition: its 99th percentile over measured bins (numpy)."""
    vals = []
    for c in counts_list:
        c = np.asarray(c, dtype=np.float32)
        tot = c.sum(axis=0)
        m = tot > _MIN_TOTAL
        if m.any():
            x = c[:, m]
            vals.append(np.log1p(x * (cp / tot[m])[None, :]))
    if not vals:
        return None
    x = np.concatenate(vals, axis=1)
    q = np.percentile(x, 99, axis=1)
    mx = x.max(axis=1)
    q = np.where(q > 0, q, mx)
    return np.where(q > 0, q, 1.0).astype(np.float32)


class GDT2Generator(ModConvStack, TiledGenerator):
    """Padding-free conditional generator, version 2 (see the module docstring).

    Parameters
    ----------
    n_genes, out_channels, latent_dim :
        As for ``gdt-v1``.
    emb_ch : int
        Channels of the per-bin embedding and of the bin-level convolutions.
    n_bin_convs : int
        Valid 3x3 convolutions at bin resolution (one bin of context each side each).
    depth_window : int
        Odd window (bins) of the relative-depth mean.
    n_struct : int
        Channels of hashed structure noise at bin resolution.
    stage_channels : list of int
        Channels of each x2 stage; ``px_per_bin = 2 ** len(stage_channels)``.
    stage_convs : list of int
        Valid 3x3 convolutions per stage (same length as ``stage_channels``).
    cp : float
        Composition scale (counts per ``cp`` counts of the panel).
    struct_strides : list of int, optional
        Node spacing (bins) of each structure channel: 1 is per-bin noise, larger values give
        smooth fields with structure at that scale (nests, fibre bundles). Default: all 1.
    abs_depth : bool
        Add a channel of absolute depth, ``log1p(panel total) / depth_scale`` (fitted on the
        training canvases). For assays whose detection efficiency is the same on every section
        (MERFISH), transcript density marks cell density; the model then reads depth as
        cellularity again, so leave it off where sections are sequenced to different depths
        (spot data). Default off.
    prior : int
        Channels of **composition prior** (0: none, 1: local nuclear area fraction): a fixed
        linear read-out of the scaled composition, ``(composition . prior_w + prior_b) x
        coverage``, fitted in closed form (ridge, penalty chosen leaving one training section
        out) to the real local nuclear area fraction around each bin and standardised
        (:func:`napari_gdt.training.prior.fit_prior`). It hands the generator the regression's
        expected cellularity, which generalises across sections better than what the
        convolutions learn from the adversarial signal. A 1 x 1 read-out: tiles and halo are
        unchanged. Default 0.
    """

    arch = "gdt-v2"

    def __init__(
        self,
        n_genes: int,
        out_channels: int = 3,
        emb_ch: int = 64,
        n_bin_convs: int = 3,
        depth_window: int = 5,
        n_struct: int = 4,
        stage_channels: list[int] | tuple[int, ...] = (48, 32, 20, 12),
        stage_convs: list[int] | tuple[int, ...] = (1, 1, 1, 2),
        latent_dim: int = 32,
        cp: float = 1e4,
        struct_strides: list[int] | tuple[int, ...] | None = None,
        abs_depth: bool = False,
        prior: int = 0,
    ):
        super().__init__()
        strides = [1] * int(n_struct) if struct_strides is None else [int(v) for v in struct_strides]
        if len(strides) != int(n_struct) or any(v < 1 for v in strides):
            raise ValueError("struct_strides needs one entry >= 1 per structure channel")
        if depth_window < 1 or depth_window % 2 != 1:
            raise ValueError("depth_window must be odd and >= 1")
        if len(stage_convs) != len(stage_channels):
            raise ValueError("stage_convs needs one entry per stage")
        self.config = {
            "n_genes": int(n_genes),
            "out_channels": int(out_channels),
            "emb_ch": int(emb_ch),
            "n_bin_convs": int(n_bin_convs),
            "depth_window": int(depth_window),
            "n_struct": int(n_struct),
            "stage_channels": [int(c) for c in stage_channels],
            "stage_convs": [int(c) for c in stage_convs],
            "latent_dim": int(latent_dim),
            "cp": float(cp),
        }
        if any(v != 1 for v in strides):  # recorded only when used: older bundles stay byte-identical
            self.config["struct_strides"] = strides
        self.abs_depth = bool(abs_depth)
        if self.abs_depth:  # likewise
            self.config["abs_depth"] = True
        self.n_prior = int(prior)
        if self.n_prior not in (0, 1):
            raise ValueError("prior must be 0 or 1 (one channel: the local nuclear area fraction)")
        if self.n_prior:  # likewise
            self.config["prior"] = self.n_prior
        self.struct_strides = strides
        self.n_genes = int(n_genes)
        self.out_channels = int(out_channels)
        self.latent_dim = int(latent_dim)
        self.depth_window = int(depth_window)
        self.n_struct = int(n_struct)
        self.cp = float(cp)
        self.log1p = True  # for PreviewMap: log1p-like features
        self.register_buffer("gene_scale", torch.ones(self.n_genes))
        if self.abs_depth:
            self.register_buffer("depth_scale", torch.ones(()))
        if self.n_prior:
            self.register_buffer("prior_w", torch.zeros(self.n_prior, self.n_genes))
            self.register_buffer("prior_b", torch.zeros(self.n_prior))
            self.register_buffer("prior_fitted", torch.zeros(()))
        self.mapping_net = nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2), nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2)
        )
        self.embed = nn.Conv2d(self.n_genes + 2 + int(self.abs_depth) + self.n_prior + self.n_struct, emb_ch, 1)
        self.convs = nn.ModuleList()
        self.noise_strength = nn.ParameterList()
        self._plan: list[tuple[str, int]] = []
        if self.depth_window > 1:
            self._plan.append(("pool", self.depth_window))
        ch = emb_ch
        for _ in range(n_bin_convs):
            self._add_conv(ch, emb_ch, latent_dim)
        for sc, nc in zip(stage_channels, stage_convs):
            self._plan.append(("up", 2))
            for _ in range(nc):
                self._add_conv(ch, sc, latent_dim)
                ch = sc
        self.to_img = nn.Conv2d(ch, out_channels, 1)

    @property
    def normalisation(self) -> dict:
        """How the counts are read (recorded in the bundle card)."""
        return {
            "composition": f"log1p(counts / panel total * {self.cp:g})",
            "per_gene_scale": True,
            "coverage": "panel total > 0",
            "relative_depth_window_bins": self.depth_window,
            "structure_channels": self.n_struct,
            "structure_strides_bins": list(self.struct_strides),
            **({"absolute_depth": "log1p(panel total) / depth_scale"} if self.abs_depth else {}),
            **({"prior": "(scaled composition . prior_w + prior_b) x coverage"} if self.n_prior else {}),
        }

    @property
    def prior_column(self) -> int:
        """Index of the first prior channel in the embedding's input (composition, coverage,
        relative depth, [absolute depth], prior, structure)."""
        return self.n_genes + 2 + int(self.abs_depth)

    def prior_channels(self, comp: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """The prior read-out ``(B, P, h, w)`` of a scaled composition and its coverage."""
        return (torch.einsum("bghw,pg->bphw", comp, self.prior_w) + self.prior_b.view(1, -1, 1, 1)) * cov

    def spatial_ops(self) -> list[tuple[str, int]]:
        ops = []
        for kind, v in self._plan:
            if kind == "pool":
                ops.append(("conv", v))
            elif kind == "conv":
                ops.append(("conv", 3))
            else:  # smooth up: nearest x2 then a valid 3-tap blur
                ops += [("up", 2), ("conv", 3)]
        return ops

    def normalise(self, counts: torch.Tensor) -> torch.Tensor:
        """Composition scaled per gene, window-aligned ``(B, G, h, w)`` (what the discriminator sees)."""
        return composition(counts, self.cp) / self.gene_scale.view(1, -1, 1, 1)

    def inputs(self, counts: torch.Tensor, origins: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The bin-level input stack, cropped by the depth window, and its lattice origins."""
        k = self.depth_window
        r = (k - 1) // 2
        comp = self.normalise(counts)
        cov, rel = depth_features(counts, k)
        h, w = counts.shape[-2] - 2 * r, counts.shape[-1] - 2 * r

        def crop(t):
            return t[..., r : r + h, r : r + w]

        org = origins.to(torch.int64).cpu().clone() + r
        parts = [crop(comp), crop(cov), crop(rel)]
        if self.abs_depth:
            parts.append(crop(torch.log1p(counts.clamp_min(0).sum(dim=1, keepdim=True)) / self.depth_scale))
        if self.n_prior:
            parts.append(crop(self.prior_channels(comp, cov)))
        for i in range(self.n_struct):
            parts.append(coarse_noise(seed, _STRUCT_LAYER + i, org, h, w, self.struct_strides[i], counts.device))
        return torch.cat(parts, dim=1), org

    def synthesis(self, counts, origins, w, seed):
        x, org = self.inputs(counts, origins, seed)
        x = self.embed(x)
        for kind, idx in self._plan:
            if kind == "pool":
                continue  # applied in inputs()
            if kind == "up":
                x = smooth_up2(x)
                org = org * 2 + 1
                continue
            x = self.convs[idx](x, w)
            org = org + 1
            n = batched_noise(seed, idx, org, x.shape[-2], x.shape[-1], x.device)
            x = F.leaky_relu(x + self.noise_strength[idx] * n, 0.2)
        return torch.sigmoid(self.to_img(x))

    @torch.no_grad()
    def fit_input_scale(self, counts_list) -> None:
        """Set ``gene_scale`` from training canvases (list of ``(G, H, W)`` arrays)."""
        s = composition_scale(counts_list, self.cp)
        if s is not None:
            self.gene_scale.copy_(torch.from_numpy(s))
        if self.abs_depth:
            tot = np.concatenate([np.asarray(c, np.float32).sum(axis=0).ravel() for c in counts_list])
            tot = tot[tot > _MIN_TOTAL]
            if tot.size:
                self.depth_scale.fill_(max(float(np.percentile(np.log1p(tot), 99)), 1e-3))

    def n_params(self) -> int:
        return int(sum(math.prod(p.shape) for p in self.parameters()))
