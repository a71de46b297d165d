"""The training loop: adversarial + reconstruction, EMA generator, checkpoints, resume.

Everything the loop needs to continue is in one checkpoint file (generator,
EMA generator, discriminator, both optimisers, step, RNG states, the
architecture config, gene panel and the options it was started with), so a
run stopped at any point continues with ``--resume CKPT`` and its step
counter goes on from where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import file_sha256
from ..errors import GDTError
from ..models.device import autocast, default_amp
from ..models.registry import build as build_arch
from .losses import (
    GRANULOMETRY_SIZES,
    MultiScaleDiscriminator,
    PatchDiscriminator,
    batch_nuclear_mask,
    d_hinge_loss,
    dapi_nuclear_channel,
    g_hinge_loss,
    granulometry,
    granulometry_loss,
    haematoxylin_loss,
    intensity_distribution_loss,
    nuclear_fraction_loss,
    orientation_loss,
    prior_fraction_loss,
    r1_penalty,
    reconstruction_loss,
    seed_consistency_loss,
    spectral_loss,
    spectrum_bands,
    texture_grams,
    texture_loss,
    thin_counts,
    thin_counts_spots,
)
from .sampling import PairedSection, PatchSampler

__all__ = ["DEFAULT_ARCH", "DEFAULT_ARCHS", "EXTRA_LOSS_KEYS", "TrainConfig", "Trainer", "compute_gene_scale"]

DEFAULT_ARCH = dict(emb_ch=64, n_bin_convs=1, stage_channels=[64, 32, 24, 16], convs_per_stage=1, latent_dim=32, log1p=True)
# default config per architecture (--arch); gdt-v2: see napari_gdt.models.gdt2
DEFAULT_ARCHS = {
    "gdt-v1": DEFAULT_ARCH,
    "gdt-v2": dict(
        emb_ch=64,
        n_bin_convs=3,
        depth_window=5,
        n_struct=4,
        stage_channels=[48, 32, 20, 12],
        stage_convs=[1, 1, 1, 2],
        latent_dim=32,
    ),
}


@dataclass
class TrainConfig:
    """Options of a training run (recorded in checkpoints and the model card)."""

    steps: int = 1000
    batch_size: int = 4
    patch_bins: int = 10
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    lambda_rec: float = 10.0
    lambda_adv: float = 1.0
    rec_pool: int = 8
    lambda_hem: float = 0.0  # H&E only: L1 of pooled haematoxylin density (colour deconvolution)
    hem_pool: int = 16
    ema: float = 0.995
    beta1: float = 0.0
    clip_grad: float = 0.0  # max gradient norm of the generator (0 = no clipping)
    seed: int = 0
    ckpt_every: int = 200
    log_every: int = 20
    d_cond: bool = True
    train_only_new_genes: bool = False  # with init_from: only the new genes' input weights of the generator learn
    time_limit_min: float = 0.0  # stop (and checkpoint) after this many minutes; 0 = no limit
    arch: dict = field(default_factory=lambda: dict(DEFAULT_ARCH))
    model: str = "gdt-v1"  # architecture name in the registry (--arch)
    d_scales: int = 1  # discriminators at full, 1/2, ... resolution
    d_ch: int = 32  # channels of each discriminator's first layer (x2, x4 deeper); wider on a GPU
    r1_gamma: float = 0.0  # R1 penalty on real images (0 = off), applied lazily every r1_every steps
    r1_every: int = 4
    depth_aug: float = 0.0  # probability of thinning a training window's counts (depth augmentation)
    depth_min: float = 0.05  # smallest thinning factor (log-uniform in [depth_min, 1])
    depth_unit: str = "bin"  # thin each bin ("bin") or each spot of a spot canvas ("spot", as sequencing does)
    # H&E only: L1 of the pooled soft nuclear mask (local nuclear area fraction) + its contrast
    lambda_nuc: float = 0.0
    lambda_nuc_var: float = 0.0  # weight of |SD(fake) - SD(real)| of the pooled fractions over the batch
    nuc_pools: list = field(default_factory=lambda: [32, 64])
    nuc_thr: float = 0.0  # haematoxylin threshold of the soft mask (0: the segmenter's, measured on the training images)
    nuc_tau: float = 0.0  # softness of the mask (0: a tenth of the threshold)
    nuc_perim: float = 0.0  # weight of the pooled boundary density (nuclear count and size, not only area)
    nuc_sigma_px: float = 0.0  # DAPI: Gaussian smoothing of the channel, output px (the segmenter's sigma_um / um_per_px)
    nuc_bg_px: float = 0.0  # DAPI: background radius, output px (the segmenter's 12 um / um_per_px); 0: none
    # texture: L1 of pooled structure-tensor coherence and edge energy (fibres, in any direction)
    lambda_orient: float = 0.0
    orient_sigmas: list = field(default_factory=lambda: [2.0, 6.0])
    orient_pool: int = 64
    # intensity distribution: W1 between each window's sorted intensities, generated vs real, per pool
    lambda_dist: float = 0.0
    dist_pools: list = field(default_factory=lambda: [1, 8])
    # seed consistency: L1 between two seeds' pooled nuclear fractions (cellularity follows expression)
    lambda_seed: float = 0.0
    seed_pools: list = field(default_factory=lambda: [64, 128])
    # gdt-v2 prior: when the prior is fitted into a zero input column, start that column at this multiple of the
    # embedding's existing response along the prior's composition direction (0: at zero, the old model exactly)
    prior_boost: float = 0.0
    # gdt-v2 prior: L1 of the pooled soft nuclear mask against the prior's map, stretched to the real fraction's
    # mean and SD over the training bins (a target that is a function of the expression, so it carries over)
    lambda_prior: float = 0.0
    # depth consistency: L1 between the pooled nuclear fractions (nuc_pools) of the render from the thinned counts and,
    # with the same seed and latent, the render from the counts as measured (held fixed); needs depth_aug
    lambda_depth: float = 0.0
    # texture: squared difference between the generated batch-mean log power spectrum of standardised luminance
    # (spec_bands octave bands) and a running mean of the real batches' (decay spec_decay per step)
    lambda_spec: float = 0.0
    spec_bands: int = 8
    spec_decay: float = 0.99
    # texture: relative squared difference between the generated batch-mean Gram matrices of a fixed random
    # network's features of standardised luminance and a running mean of the real batches' (decay tex_decay)
    lambda_tex: float = 0.0
    tex_decay: float = 0.99
    # nuclear size: squared log ratio between the generated batch-mean pattern spectrum of the soft nuclear mask
    # (means of its openings by 2-12 px squares) and a running mean of the real batches' (decay gran_decay)
    lambda_gran: float = 0.0
    gran_decay: float = 0.99
    keep_every: int = 0  # also keep the bundle of every Nth step as CKPT_DIR/step{N}.safetensors (0 = no)


#: the optional H&E / texture loss settings: a resumed run keeps the checkpoint's unless the command
#: line sets them, and a ``rearch`` stage may change them
EXTRA_LOSS_KEYS = (
    "lambda_hem",
    "hem_pool",
    "lambda_nuc",
    "lambda_nuc_var",
    "nuc_pools",
    "nuc_thr",
    "nuc_tau",
    "nuc_perim",
    "nuc_sigma_px",
    "nuc_bg_px",
    "lambda_orient",
    "orient_sigmas",
    "orient_pool",
    "lambda_dist",
    "dist_pools",
    "lambda_seed",
    "seed_pools",
    "lambda_prior",
    "depth_unit",
    "lambda_spec",
    "spec_bands",
    "spec_decay",
    "lambda_tex",
    "tex_decay",
    "lambda_gran",
    "gran_decay",
    "lambda_depth",
)


def compute_gene_scale(sections: list[PairedSection], log1p: bool = True) -> np.ndarray:
    """Per-gene normaliser: the 99th percentile of (log1p) counts over bins with expression."""
    vals = []
    for s in sections:
        tot = s.counts.sum(axis=0)
        m = tot > 0
        if not m.any():
            continue
        x = s.counts[:, m]
        vals.append(np.log1p(x) if log1p else x)
    if not vals:
        raise GDTError("the training canvases hold no counts")
    x = np.concatenate(vals, axis=1)
    q = np.percentile(x, 99, axis=1)
    mx = x.max(axis=1)
    q = np.where(q > 0, q, mx)
    return np.where(q > 0, q, 1.0).astype(np.float32)


def nuclear_threshold(
    sections, max_px: float = 4e6, sigma_px: float = 0.0, background_px: float = 0.0, what: str = "--lambda-nuc"
) -> float:
    """The nuclear segmenter's threshold, averaged over the training images: Otsu of the haematoxylin
    density over tissue (H&E), or of the DAPI channel of :func:`~napari_gdt.training.losses.dapi_nuclear_channel`
    over every pixel, with the segmenter's floor (one-channel images)."""
    from ..analysis import morphometrics as mm

    thr = []
    for s in sections:
        img = s.image
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 3 and img.shape[-1] != 3:
            raise GDTError(f"{what}: section {s.name!r} has {img.shape[-1]} channels (nuclear mask: RGB H&E or 1 DAPI channel)")
        stride = max(1, int(np.sqrt(img.shape[0] * img.shape[1] / max_px)))
        if img.ndim == 2:  # DAPI: the channel at full resolution (the background radius is in pixels), then subsampled
            x = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
            ch = dapi_nuclear_channel(x, sigma_px, background_px)[0, 0].numpy()
            t = max(mm._auto_threshold(ch[::stride, ::stride].ravel(), "otsu"), 0.05)
        else:
            a = img[::stride, ::stride]
            ch = mm.haematoxylin(a)
            sel = a.mean(axis=-1) < mm.DEFAULTS["background_grey"]  # tissue, as the segmenter's mask (without its hole filling)
            v = ch[sel] if sel.any() else ch.ravel()
            t = mm._auto_threshold(v, "otsu")
        if np.isfinite(t):
            thr.append(t)
    if not thr:
        raise GDTError(f"{what}: no training image has tissue to set the nuclear threshold from")
    return float(np.mean(thr))


def read_checkpoint(path, required=()) -> dict:
    """Load a training checkpoint (``last.pt``) on the CPU; one clear error line when it is missing,
    foreign or damaged, or lacks one of the ``required`` fields."""
    p = Path(path)
    if not p.exists():
        raise GDTError(f"{p}: no such checkpoint")
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on a foreign or damaged file: one line names it
        raise GDTError(f"{p}: not a napari-gdt training checkpoint ({e})") from None
    for k in required:
        if k not in st:
            raise GDTError(f"{p}: checkpoint lacks field {k!r}")
    return st


def smallest_patch_bins(geo, cfg: TrainConfig) -> tuple[str, int, int]:
    """``(what, px, bins)``: the most a training window must paint (each discriminator scale needs 8
    px, a pooled loss one pool), what needs it, and the smallest window in bins that paints it."""
    needs = {"the discriminator": 8 * 2 ** (max(1, cfg.d_scales) - 1)}
    if cfg.lambda_rec > 0:
        needs["--rec-pool"] = cfg.rec_pool
    if cfg.lambda_hem > 0:
        needs["--hem-pool"] = cfg.hem_pool
    if cfg.lambda_gran > 0:
        needs["--lambda-gran's openings"] = 2 * (max(GRANULOMETRY_SIZES) - 1) + 1
    what, need = max(needs.items(), key=lambda kv: kv[1])
    return what, need, next(b for b in range(1, 100000) if geo.out_len(b) >= need)


class Trainer:
    """Train a generator (``cfg.model``: ``gdt-v1`` or ``gdt-v2``) on paired sections.

    Parameters
    ----------
    sections : list of PairedSection
        Training data (canvases with their images on the model grid).
    genes : list of str
        The gene panel (order of the canvas channels).
    cfg : TrainConfig
    device : torch.device
    val_sections : list of PairedSection, optional
        Held-out data for the validation loss logged at each checkpoint.
    ckpt_dir : path
        Where ``last.pt`` (and the bundle snapshot ``last.safetensors``) go.
    progress : bool
        Show a tqdm bar (on a terminal, or always when True).
    amp : {"auto", "fp32", "bf16"}
        Mixed precision of the training step: ``auto`` is bf16 autocast on a CUDA GPU
        that supports it and fp32 elsewhere (see :func:`~napari_gdt.models.device.default_amp`).
    """

    def __init__(
        self, sections, genes, cfg: TrainConfig, device, val_sections=None, ckpt_dir=None, progress=None, log=None, amp="auto"
    ):
        self.sections = sections
        self.val_sections = val_sections or []
        self.genes = list(genes)
        self.cfg = cfg
        self.device = torch.device(device)
        self.amp = default_amp(self.device) if amp in (None, "", "auto") else amp
        if self.amp not in ("fp32", "bf16"):
            raise GDTError(f"--amp {amp!r}: training runs in fp32 or bf16 (auto picks bf16 on a CUDA GPU)")
        autocast(self.device, self.amp)  # refuses bf16 where the device cannot run it
        #: the last run's speed: steps, seconds, steps/s, img/s (patches per second)
        self.throughput: dict = {}
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        self.progress = progress
        self.log_file = log
        torch.manual_seed(cfg.seed)
        out_ch = sections[0].image.shape[-1]
        self.G = build_arch(cfg.model, dict(n_genes=len(self.genes), out_channels=out_ch, **cfg.arch), source="--arch-config").to(
            self.device
        )
        with torch.no_grad():
            if hasattr(self.G, "fit_input_scale"):  # the architecture normalises its own way (gdt-v2: composition)
                self.G.fit_input_scale([s.counts for s in sections])
            else:
                self.G.gene_scale.copy_(torch.from_numpy(compute_gene_scale(sections, cfg.arch.get("log1p", True))))
            # start the output bias at the mean colour of the data: faster, steadier start
            mean = np.mean([s.image.reshape(-1, out_ch).mean(axis=0) for s in sections], axis=0).clip(0.02, 0.98)
            self.G.to_img.bias.copy_(torch.from_numpy(np.log(mean / (1 - mean)).astype(np.float32)))
            for p in self.G.noise_strength:
                p.fill_(0.1)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        n_cond = len(self.genes) if cfg.d_cond else 0
        self.D = (
            MultiScaleDiscriminator(out_ch, n_genes=n_cond, scales=cfg.d_scales, ch=cfg.d_ch)
            if cfg.d_scales > 1
            else PatchDiscriminator(out_ch, n_genes=n_cond, ch=cfg.d_ch)
        ).to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.99))
        if cfg.lambda_prior > 0 and not getattr(self.G, "n_prior", 0):
            raise GDTError(f"--lambda-prior needs a generator with the composition prior ({cfg.model} with prior 1)")
        if cfg.lambda_gran > 0 and out_ch != 3:
            raise GDTError(f"--lambda-gran needs RGB H&E images (a haematoxylin mask); these have {out_ch} channel(s)")
        self._prior_target = None  # (mean, sd) of the real fraction the prior predicts, set by run()
        if (cfg.lambda_nuc > 0 or cfg.lambda_seed > 0 or cfg.lambda_prior > 0 or cfg.lambda_depth > 0) and cfg.nuc_thr <= 0:
            cfg.nuc_thr = nuclear_threshold(sections, sigma_px=cfg.nuc_sigma_px, background_px=cfg.nuc_bg_px)
        if cfg.nuc_tau <= 0 and cfg.nuc_thr > 0:
            cfg.nuc_tau = 0.1 * cfg.nuc_thr
        self.geo = self.G.geometry
        self._check_patch_size()
        self.sampler = PatchSampler(sections, self.geo, cfg.patch_bins, seed=cfg.seed, owners=cfg.depth_unit == "spot")
        self.val_sampler = (
            PatchSampler(self.val_sections, self.geo, cfg.patch_bins, seed=12345, augment=False, p_empty=0.0)
            if self.val_sections
            else None
        )
        self._new_cols = None  # (1, G, 1, 1) mask of trainable embedding columns (train_only_new_genes)
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[dict] = []
        self._stop = False

    def _running_mean(self, attr: str, cur, decay: float):
        """Update the running mean ``self.<attr>`` (a tensor or a list of tensors) with ``cur``: it starts at
        the first value, and restarts when the shapes change."""
        many = isinstance(cur, list)
        prev = getattr(self, attr, None)
        cur_l, prev_l = (cur, prev) if many else ([cur], None if prev is None else [prev])
        if prev_l is None or [p.shape for p in prev_l] != [c.shape for c in cur_l]:
            new = cur_l
        else:
            new = [decay * p.to(c.device) + (1.0 - decay) * c for p, c in zip(prev_l, cur_l)]
        setattr(self, attr, new if many else new[0])
        return getattr(self, attr)

    # Each running target starts at the first batch's and is kept in the checkpoint, so a resumed run goes on
    # with the same target.
    @torch.no_grad()
    def spectrum_target(self, real: torch.Tensor) -> torch.Tensor:
        """The running mean of the real batches' log power spectra (``--lambda-spec``), updated with ``real``."""
        return self._running_mean("_spec_target", spectrum_bands(real, self.cfg.spec_bands).mean(dim=0), self.cfg.spec_decay)

    @torch.no_grad()
    def texture_target(self, real: torch.Tensor) -> list[torch.Tensor]:
        """The running mean of the real batches' Gram matrices (``--lambda-tex``), updated with ``real``."""
        return self._running_mean("_tex_target", texture_grams(real), self.cfg.tex_decay)

    @torch.no_grad()
    def granulometry_target(self, real: torch.Tensor) -> torch.Tensor:
        """The running mean of the real batches' pattern spectra (``--lambda-gran``), updated with ``real``."""
        return self._running_mean("_gran_target", granulometry(batch_nuclear_mask(real)).mean(dim=0), self.cfg.gran_decay)

    # ------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "genes": self.genes,
            "arch": dict(self.G.config),
            "model_arch": self.G.arch,
            "cfg": json.dumps(asdict(self.cfg)),
            "history": json.dumps(self.history),
            "rng": json.dumps(self.sampler.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "init_from": json.dumps(getattr(self, "init_info", None)),
            **({"spec_target": self._spec_target.cpu()} if getattr(self, "_spec_target", None) is not None else {}),
            **({"tex_target": [t.cpu() for t in self._tex_target]} if getattr(self, "_tex_target", None) else {}),
            **({"gran_target": self._gran_target.cpu()} if getattr(self, "_gran_target", None) is not None else {}),
        }

    def save_checkpoint(self, path=None) -> Path:
        path = Path(path) if path else self.ckpt_dir / "last.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        if path.exists():  # keep the previous checkpoint to roll back to if a run diverges
            os.replace(path, path.with_name(path.stem + ".prev.pt"))
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path) -> None:
        p = Path(path)
        st = read_checkpoint(p, ("step", "G", "G_ema", "D", "opt_g", "opt_d", "genes"))
        if list(st["genes"]) != self.genes:
            raise GDTError(
                f"{p}: checkpoint gene panel ({len(st['genes'])} genes) differs from this run's ({len(self.genes)} genes)"
            )
        try:
            self.G.load_state_dict(st["G"])
            self.G_ema.load_state_dict(st["G_ema"])
            self.D.load_state_dict(st["D"])
        except RuntimeError as e:
            raise GDTError(f"{p}: checkpoint does not fit this architecture ({str(e).splitlines()[0]})") from None
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        self._ckpt_step = self.step  # the checkpoint it came from holds this step
        self.elapsed_s = float(st.get("elapsed_s", 0.0))
        self.history = json.loads(st.get("history", "[]"))
        if "rng" in st:
            self.sampler.rng.bit_generator.state = json.loads(st["rng"])
        if "torch_rng" in st:
            torch.set_rng_state(st["torch_rng"])
        if st.get("init_from"):
            self.init_info = json.loads(st["init_from"])
        if "spec_target" in st:
            self._spec_target = st["spec_target"].to(self.device)
        if "tex_target" in st:
            self._tex_target = [t.to(self.device) for t in st["tex_target"]]
        if "gran_target" in st:
            self._gran_target = st["gran_target"].to(self.device)
        if self.cfg.train_only_new_genes and getattr(self, "init_info", None):  # resumed: the same columns stay trainable
            self._new_cols = self._columns_of(self.init_info.get("new", []))

    def _check_patch_size(self) -> None:
        """One clear line when a training window is too small for the model's halo and the losses."""
        cfg, geo = self.cfg, self.geo
        what, need, smallest = smallest_patch_bins(geo, cfg)
        out = geo.out_len(cfg.patch_bins)
        if out < need:
            raise GDTError(
                f"--patch-bins {cfg.patch_bins}: a window paints {out} px (this model's halo is {geo.offset} px a side), "
                f"too few for {what} ({need} px); use --patch-bins {smallest} or more"
            )

    def _columns_of(self, genes) -> torch.Tensor:
        """(1, C, 1, 1) mask over the embedding's input columns: 1 for the panel columns of ``genes``,
        0 elsewhere (``gdt-v2``'s columns after the genes, coverage, depth, prior and structure, stay 0)."""
        chosen = set(genes)
        cols = [1.0 if g in chosen else 0.0 for g in self.genes]
        cols += [0.0] * (int(self.G.embed.weight.shape[1]) - len(cols))
        return torch.tensor(cols, device=self.device).view(1, -1, 1, 1)

    def init_from(self, path) -> dict:
        """Start from a trained model's weights (a fine-tune), matching genes by name.

        ``path`` is a model bundle (``.safetensors``, or a bundled model name: the
        generator and its EMA copy start from it; the discriminator starts fresh) or
        a training checkpoint (``.pt``: generator, EMA generator and discriminator),
        of this run's architecture (``gdt-v1`` or ``gdt-v2``). The architecture must
        match, except for the gene panel: the gene-indexed tensors (the generator's
        input embedding and gene scales, a ``gdt-v2`` prior's read-out, the
        discriminator's expression input) are copied gene by gene, and the columns
        that follow the genes (``gdt-v2``: coverage, depth, prior, structure) as they
        are; genes new to this panel start with
        zero input weights (so the start is the old model, blind to them) and the gene
        scale computed from this run's data. Optimiser states and the step counter
        start fresh. Returns ``{"from", "digest", "shared", "new", "dropped"}``.
        """
        from ..models.bundle import BundleError, load_bundle, resolve_model

        p = Path(path)
        d_state = None
        if p.suffix == ".pt":
            st = read_checkpoint(p)
            if not all(k in st for k in ("genes", "arch", "G")):
                raise GDTError(f"{p}: checkpoint lacks field 'genes', 'arch' or 'G'")
            old_genes, arch, g_state, ema_state = list(st["genes"]), dict(st["arch"]), st["G"], st.get("G_ema", st["G"])
            their_model = st.get("model_arch", "gdt-v1")
            d_state = st.get("D")
            digest = None
            parent = {"step": int(st.get("step", 0)), "file_sha256": file_sha256(p)}
            cmds = p.with_name("commands.json")
            if cmds.exists():
                parent["commands"] = json.loads(cmds.read_text())
        else:
            try:
                b = load_bundle(resolve_model(path), device="cpu")
            except BundleError as e:
                raise GDTError(f"--init-from: {e}") from None
            their_model = b.card.get("arch")
            old_genes, arch, digest = list(b.genes), dict(b.card.get("config", {})), b.digest
            g_state = ema_state = b.model.state_dict()
            parent = {
                "name": b.card.get("name"),
                "steps": (b.card.get("provenance") or {}).get("steps"),
                "commands": (b.card.get("provenance") or {}).get("commands", []),
            }
        if their_model != self.cfg.model:
            raise GDTError(f"{path}: --init-from needs a {self.cfg.model} model like this run (this one is {their_model!r})")
        mine = dict(self.G.config)
        theirs = dict(arch)
        diff = sorted(k for k in set(mine) | set(theirs) if k != "n_genes" and mine.get(k) != theirs.get(k))
        diff_text = ", ".join(f"{k} ({theirs.get(k)!r} vs {mine.get(k)!r})" for k in diff)
        # options that keep every weight's shape (e.g. gdt-v2's depth_window) may change, as rearch allows
        # between stages; a change that alters a weight is refused, naming the options
        if diff and (set(mine) ^ set(theirs)) - {"n_genes"}:
            raise GDTError(f"{path}: architecture differs from this run's in {diff_text}")
        old_idx = {g: i for i, g in enumerate(old_genes)}
        shared_pos = [i for i, g in enumerate(self.genes) if g in old_idx]  # their columns in this panel ...
        src_pos = [old_idx[self.genes[i]] for i in shared_pos]  # ... and in the starting model's
        new = [g for g in self.genes if g not in old_idx]
        if not shared_pos:
            raise GDTError(f"{path}: shares no gene with this run's panel")

        def mapped(state: dict, own: dict, gene_keys: dict) -> dict:
            out = {}
            for k, v in own.items():
                if k not in state:
                    raise GDTError(f"{path}: lacks tensor {k!r}")
                s = state[k]
                dim = next((d for suffix, d in gene_keys.items() if k == suffix or k.endswith("." + suffix)), None)
                if dim is not None:
                    t = v.detach().clone()
                    extra = int(t.shape[dim]) - len(self.genes)  # columns after the genes (gdt-v2 embedding)
                    theirs_extra = int(s.shape[dim]) - len(old_genes)
                    other = [i for i in range(t.dim()) if i != dim]
                    if [t.shape[i] for i in other] != [s.shape[i] for i in other]:
                        raise GDTError(f"{path}: tensor {k!r} has shape {tuple(s.shape)}, this run needs {tuple(t.shape)}")
                    if extra != theirs_extra:
                        raise GDTError(f"{path}: tensor {k!r} has {theirs_extra} non-gene columns, this run {extra}")
                    if not k.endswith("gene_scale"):  # new genes: zero weights (gene scale: this run's data)
                        t.zero_()
                    dst = shared_pos + [len(self.genes) + j for j in range(extra)]
                    src = src_pos + [len(old_genes) + j for j in range(extra)]
                    t.index_copy_(dim, torch.tensor(dst), s.index_select(dim, torch.tensor(src)).to(t.dtype))
                    out[k] = t
                elif tuple(s.shape) != tuple(v.shape):
                    raise GDTError(f"{path}: tensor {k!r} has shape {tuple(s.shape)}, this run needs {tuple(v.shape)}")
                else:
                    out[k] = s
            return out

        g_keys = {"embed.weight": 1, "gene_scale": 0, "prior_w": 1}
        if self.cfg.train_only_new_genes:
            # the frozen weights must be the starting model's as shipped (its EMA), not the raw generator's
            g_state = ema_state
            self._new_cols = self._columns_of(new)
        with torch.no_grad():
            try:
                g_mapped = mapped(g_state, self.G.state_dict(), g_keys)
            except GDTError as e:
                if diff:
                    raise GDTError(f"{path}: architecture differs from this run's in {diff_text}") from None
                raise e from None
            self.G.load_state_dict(g_mapped)
            self.G_ema.load_state_dict(mapped(ema_state, self.G_ema.state_dict(), g_keys))
            if d_state is not None and self.cfg.d_cond:
                self.D.load_state_dict(mapped(d_state, self.D.state_dict(), {"cond.weight_orig": 1, "cond.weight_v": 0}))
        dropped = [g for g in old_genes if g not in set(self.genes)]
        self.init_info = {
            "from": str(path),
            "digest": digest,
            "shared": len(shared_pos),
            "new": new,
            "dropped": dropped,
            "discriminator": d_state is not None,
            "arch_changes": {k: [theirs.get(k), mine.get(k)] for k in diff},
            "parent": parent,
        }
        return self.init_info

    @staticmethod
    def peek(path) -> dict:
        """Read a checkpoint's genes, arch and cfg without building a trainer."""
        p = Path(path)
        st = read_checkpoint(p)
        if "genes" not in st or "arch" not in st:
            raise GDTError(f"{p}: checkpoint lacks field 'genes' or 'arch'")
        return {
            "genes": list(st["genes"]),
            "arch": dict(st["arch"]),
            "model": st.get("model_arch", "gdt-v1"),
            "cfg": json.loads(st.get("cfg", "{}")),
            "step": int(st.get("step", 0)),
        }

    # ---------------------------------------------------------------- training
    def _batch(self, sampler, batch):
        c, im, o = sampler.sample(batch)
        return torch.from_numpy(c).to(self.device), torch.from_numpy(im).to(self.device), torch.from_numpy(o)

    def _thin(self, counts: torch.Tensor) -> torch.Tensor:
        """Depth augmentation of a batch of training windows (``depth_aug``, ``depth_min``, ``depth_unit``)."""
        cfg = self.cfg
        owners = getattr(self.sampler, "last_owners", None)
        if cfg.depth_unit == "spot" and owners is not None:
            return thin_counts_spots(counts, torch.from_numpy(owners).to(counts.device), cfg.depth_aug, cfg.depth_min)
        return thin_counts(counts, cfg.depth_aug, cfg.depth_min)

    def _styles(self, G, b):
        # one style per step (the plain-convolution path is much faster on CPU than per-sample styles)
        z = torch.randn(1, G.latent_dim, device=self.device)
        return G.mapping(z)

    def train_step(self) -> dict:
        cfg = self.cfg
        G, D = self.G, self.D
        counts, real, origins = self._batch(self.sampler, cfg.batch_size)
        full = counts  # as measured: what the tissue is (the prior's target reads these)
        if cfg.depth_aug > 0:  # the same tissue sequenced shallower: the picture must not change
            counts = self._thin(counts)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        cond = G.normalise(counts)
        off, ppb = self.geo.offset, self.geo.px_per_bin
        # discriminator
        with torch.no_grad():
            fake = G(counts, origins, self._styles(G, counts.shape[0]), seed)
        r1_now = cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0
        if r1_now:
            real.requires_grad_(True)
        real_logits = D(real, cond, off, ppb)
        d_loss = d_hinge_loss(real_logits, D(fake, cond, off, ppb))
        if r1_now:
            d_loss = d_loss + cfg.r1_gamma * 0.5 * cfg.r1_every * r1_penalty(real_logits, real)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        real = real.detach()
        # generator
        styles = self._styles(G, counts.shape[0])
        fake = G(counts, origins, styles, seed)
        adv = g_hinge_loss(D(fake, cond, off, ppb))
        rec = reconstruction_loss(fake, real, cfg.rec_pool)
        g_loss = cfg.lambda_adv * adv + cfg.lambda_rec * rec
        hem = torch.zeros(())
        if cfg.lambda_hem > 0 and fake.shape[1] == 3:
            hem = haematoxylin_loss(fake, real, cfg.hem_pool)
            g_loss = g_loss + cfg.lambda_hem * hem
        nuc = nvar = torch.zeros(())
        if cfg.lambda_nuc > 0:
            nuc, nvar = nuclear_fraction_loss(
                fake,
                real,
                cfg.nuc_thr,
                cfg.nuc_tau,
                cfg.nuc_pools,
                cfg.lambda_nuc_var,
                cfg.nuc_perim,
                cfg.nuc_sigma_px,
                cfg.nuc_bg_px,
            )
            g_loss = g_loss + cfg.lambda_nuc * nuc + nvar
        pri = torch.zeros(())
        if cfg.lambda_prior > 0:
            # from the counts before thinning: a shallower copy of the same tissue has the same target
            tgt, meas = self.prior_target_map(G, full, cond if full is counts else G.normalise(full), fake.shape[-2:])
            pri = prior_fraction_loss(fake, tgt, meas, cfg.nuc_thr, cfg.nuc_tau, cfg.nuc_pools, cfg.nuc_sigma_px, cfg.nuc_bg_px)
            g_loss = g_loss + cfg.lambda_prior * pri
        orient = torch.zeros(())
        if cfg.lambda_orient > 0:
            orient = orientation_loss(fake, real, cfg.orient_sigmas, cfg.orient_pool)
            g_loss = g_loss + cfg.lambda_orient * orient
        dist = torch.zeros(())
        if cfg.lambda_dist > 0:
            dist = intensity_distribution_loss(fake, real, cfg.dist_pools)
            g_loss = g_loss + cfg.lambda_dist * dist
        dep = torch.zeros(())
        if cfg.lambda_depth > 0 and full is not counts:  # the measured tissue, rendered alike, is the reference
            with torch.no_grad():
                fake_full = G(full, origins, styles, seed)
            dep = seed_consistency_loss(
                fake, fake_full, cfg.nuc_thr, cfg.nuc_tau, cfg.nuc_pools, sigma_px=cfg.nuc_sigma_px, background_px=cfg.nuc_bg_px
            )
            g_loss = g_loss + cfg.lambda_depth * dep
        spec = torch.zeros(())
        if cfg.lambda_spec > 0:
            spec = spectral_loss(fake, n_bands=cfg.spec_bands, target=self.spectrum_target(real))
            g_loss = g_loss + cfg.lambda_spec * spec
        tex = torch.zeros(())
        if cfg.lambda_tex > 0:
            tex = texture_loss(fake, target=self.texture_target(real))
            g_loss = g_loss + cfg.lambda_tex * tex
        gran = torch.zeros(())
        if cfg.lambda_gran > 0:
            gran = granulometry_loss(fake, self.granulometry_target(real))
            g_loss = g_loss + cfg.lambda_gran * gran
        cons = torch.zeros(())
        if cfg.lambda_seed > 0:  # a second render of the same windows: another seed and latent
            seed_b = int(torch.randint(0, 2**31 - 1, (1,)).item())
            fake_b = G(counts, origins, self._styles(G, counts.shape[0]), seed_b)
            cons = seed_consistency_loss(
                fake, fake_b, cfg.nuc_thr, cfg.nuc_tau, cfg.seed_pools, sigma_px=cfg.nuc_sigma_px, background_px=cfg.nuc_bg_px
            )
            g_loss = g_loss + cfg.lambda_seed * cons
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if self._new_cols is not None:  # fine-tune of the new genes only: every other generator weight stays
            for n, p in G.named_parameters():
                if p.grad is not None:
                    if n == "embed.weight":
                        p.grad.mul_(self._new_cols)
                    else:
                        p.grad.zero_()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(G.parameters(), cfg.clip_grad)
        self.opt_g.step()
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1.0 - cfg.ema)
            for be, b in zip(self.G_ema.buffers(), G.buffers()):
                be.copy_(b)
        out = {"d": d_loss.item(), "adv": adv.item(), "rec": rec.item(), "hem": float(hem.detach())}
        if cfg.lambda_nuc > 0:
            out.update(nuc=float(nuc.detach()), nuc_var=float(nvar.detach()))
        if cfg.lambda_prior > 0:
            out["prior"] = float(pri.detach())
        if cfg.lambda_orient > 0:
            out["orient"] = float(orient.detach())
        if cfg.lambda_dist > 0:
            out["dist"] = float(dist.detach())
        if cfg.lambda_spec > 0:
            out["spec"] = float(spec.detach())
        if cfg.lambda_tex > 0:
            out["tex"] = float(tex.detach())
        if cfg.lambda_gran > 0:
            out["gran"] = float(gran.detach())
        if cfg.lambda_depth > 0:
            out["depth"] = float(dep.detach())
        if cfg.lambda_seed > 0:
            out["seed"] = float(cons.detach())
        return out

    @torch.no_grad()
    def validate(self, n_batches: int = 4) -> dict:
        """Reconstruction loss of the EMA generator on fixed held-out patches."""
        if self.val_sampler is None:
            return {}
        rng_state = self.val_sampler.rng.bit_generator.state
        self.val_sampler.rng = np.random.default_rng(12345)
        tot = 0.0
        for _ in range(n_batches):
            counts, real, origins = self._batch(self.val_sampler, self.cfg.batch_size)
            fake = self.G_ema(counts, origins, self.G_ema.mapping(self.G_ema.latent(0).to(self.device)), 0)
            tot += float(reconstruction_loss(fake, real, self.cfg.rec_pool))
        self.val_sampler.rng.bit_generator.state = rng_state
        return {"val_rec_l1": tot / n_batches}

    def _log(self, rec: dict) -> None:
        line = json.dumps(rec)
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    def fit_prior_if_needed(self) -> dict | None:
        """Fit the generator's composition prior (``gdt-v2`` ``prior``) on the training sections if it
        has one that is not fitted yet (a new run, or a stage that turned it on); both generators get
        it. Returns the fit's report (see :func:`napari_gdt.training.prior.fit_prior`) or None."""
        from .prior import fit_prior, needs_prior_fit, prior_depths

        if not needs_prior_fit(self.G):
            return None
        cfg = self.cfg
        thr = (
            cfg.nuc_thr
            if cfg.nuc_thr > 0
            else nuclear_threshold(
                self.sections, sigma_px=cfg.nuc_sigma_px, background_px=cfg.nuc_bg_px, what="the composition prior"
            )
        )
        tau = cfg.nuc_tau if cfg.nuc_tau > 0 else 0.1 * thr
        rep = fit_prior(
            self.G,
            self.sections,
            thr,
            tau,
            pool=max(cfg.nuc_pools),
            sigma_px=cfg.nuc_sigma_px,
            background_px=cfg.nuc_bg_px,
            depths=prior_depths(cfg),
        )
        col = self.G.prior_column
        if cfg.prior_boost and not self.G.embed.weight[:, col].any():
            # the composition direction the prior reads, w / |w|^2 (a unit step of the prior); the embedding's
            # response to it, times prior_boost, becomes the prior's column: that response grows by that factor
            w = self.G.prior_w[0]
            d = w / w.pow(2).sum().clamp_min(1e-12)
            for g in (self.G, self.G_ema):
                with torch.no_grad():
                    g.embed.weight[:, col, 0, 0] = cfg.prior_boost * (g.embed.weight[:, : g.n_genes, 0, 0] @ d)
            rep["boost_column_norm"] = float(self.G.embed.weight[:, col].detach().norm())
        for name in ("prior_w", "prior_b", "prior_fitted"):
            getattr(self.G_ema, name).copy_(getattr(self.G, name))
        self._log({"step": self.step, "event": "prior fitted", **rep})
        cv = ", ".join(f"{k} {v:.2f}" for k, v in rep["cv_r"].items())
        dep = ""
        if rep.get("depths"):
            fr = ", ".join(f"{f:.2g}" for f in rep["depths"])
            dep = f"; also at {fr} of the depth: shift {rep['depth_shift']:+.2f} SD at the shallowest"
        print(
            f"prior fitted on {sum(rep['n_bins'].values())} {rep.get('unit', 'bin')}s: r {rep['r_train']:.2f} "
            f"(each section from the others: {cv or 'n/a'}){dep}",
            file=sys.stderr,
        )
        return rep

    def prior_target_if_needed(self) -> dict | None:
        """With ``lambda_prior``: measure the mean and SD of the real nuclear fraction the prior predicts
        (:func:`napari_gdt.training.prior.target_stats`), the spread its target is stretched to."""
        from .prior import target_stats

        cfg = self.cfg
        if cfg.lambda_prior <= 0 or self._prior_target is not None:
            return None
        if float(self.G.prior_fitted) == 0.0:
            raise GDTError("--lambda-prior: the composition prior is not fitted")
        rep = target_stats(
            self.sections,
            cfg.nuc_thr,
            cfg.nuc_tau,
            pool=max(cfg.nuc_pools),
            sigma_px=cfg.nuc_sigma_px,
            background_px=cfg.nuc_bg_px,
        )
        self._prior_target = (rep["mean"], rep["sd"])
        self._log({"step": self.step, "event": "prior target", **rep})
        print(
            f"prior target: mean {rep['mean']:.3f}, SD {rep['sd']:.3f} over {rep['n_bins']} {rep.get('unit', 'bin')}s",
            file=sys.stderr,
        )
        return rep

    def prior_target_map(self, G, counts: torch.Tensor, comp: torch.Tensor, out_hw) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``lambda_prior`` target on a batch's output pixels: the prior of each bin, stretched to the
        real fraction's mean and SD, clipped to [0, 1], and the measured mask, both ``(B, 1, H, W)``."""
        from ..models.gdt2 import _MIN_TOTAL

        if self._prior_target is None:  # train_step without run(): measure it on first use
            self.prior_target_if_needed()
        mean, sd = self._prior_target
        cov = (counts.clamp_min(0).sum(dim=1, keepdim=True) > _MIN_TOTAL).to(comp.dtype)
        t = (mean + sd * G.prior_channels(comp, cov)[:, :1]).clamp(0.0, 1.0)
        ppb, off = self.geo.px_per_bin, self.geo.offset
        h, w = out_hw

        def px(m):
            m = m.repeat_interleave(ppb, dim=-2).repeat_interleave(ppb, dim=-1)
            return m[..., off : off + h, off : off + w]

        return px(t), px(cov)

    def run(self, on_checkpoint=None) -> None:
        """Train until ``cfg.steps`` (total, counting resumed steps) or the time limit."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.fit_prior_if_needed()
        self.prior_target_if_needed()
        disable = (not sys.stderr.isatty()) if self.progress is None else (not self.progress)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=disable, file=sys.stderr)
        old = signal.getsignal(signal.SIGTERM)

        def _term(*_):
            self._stop = True

        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, _term)
        t_start = time.time()
        base_elapsed = self.elapsed_s
        acc: dict = {}
        n_acc = 0
        self.G.train()
        step0, t_tp = self.step, time.perf_counter()
        try:
            while self.step < cfg.steps and not self._stop:
                with autocast(self.device, self.amp):  # mixed precision around the whole step (bf16 needs no loss scaling)
                    losses = self.train_step()
                self.step += 1
                self.elapsed_s = base_elapsed + (time.time() - t_start)
                for k, v in losses.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._update_throughput(step0, t_tp)
                    rec = {
                        "step": self.step,
                        "time_s": round(self.elapsed_s, 1),
                        **{k: round(v / n_acc, 5) for k, v in acc.items()},
                        "steps_s": round(self.throughput["steps_s"], 3),
                        "img_s": round(self.throughput["img_s"], 2),
                    }
                    bar.set_postfix(d=rec["d"], rec=rec["rec"])
                    acc = {k: 0.0 for k in acc}
                    n_acc = 0
                    self._log(rec)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self._checkpoint(on_checkpoint)
                if cfg.time_limit_min and (time.time() - t_start) > 60 * cfg.time_limit_min:
                    self._log({"step": self.step, "event": "time limit reached"})
                    break
            self._update_throughput(step0, t_tp)
            if getattr(self, "_ckpt_step", None) != self.step:  # the last step (or a run of 0 steps) has its checkpoint too
                self._checkpoint(on_checkpoint)
        finally:
            bar.close()
            if self.throughput.get("steps"):
                tp = self.throughput
                line = (
                    f"throughput: {tp['steps_s']:.2f} steps/s, {tp['img_s']:.1f} img/s ({tp['steps']} steps in "
                    f"{tp['seconds']:.1f} s, "
                    f"batch {cfg.batch_size}, {tp['patch_px']}-px patches, {self.device}, amp {self.amp})"
                )
                print(line, file=sys.stderr)
                self._log({"step": self.step, "event": "throughput", **tp})
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, old)

    def _update_throughput(self, step0: int, t0: float) -> None:
        n, dt = self.step - step0, max(1e-9, time.perf_counter() - t0)
        patch_px = self.geo.out_len(self.cfg.patch_bins)
        self.throughput = {
            "steps": n,
            "seconds": round(dt, 2),
            "steps_s": n / dt,
            "img_s": n * self.cfg.batch_size / dt,
            "patch_px": patch_px,
            "amp": self.amp,
        }

    def _checkpoint(self, on_checkpoint) -> None:
        self._ckpt_step = self.step
        val = self.validate()
        rec = {"step": self.step, "time_s": round(self.elapsed_s, 1), **val}
        self.history.append(rec)
        self._log({"checkpoint": True, **rec})
        if self.ckpt_dir is not None:
            self.save_checkpoint()
        if on_checkpoint is not None:
            on_checkpoint(self)
        if self.ckpt_dir is not None and self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
            import shutil

            out = getattr(self, "out_bundle", None)  # the bundle on_checkpoint just wrote (run.py)
            if out is not None and Path(out).exists():
                shutil.copyfile(out, self.ckpt_dir / f"step{self.step}.safetensors")
