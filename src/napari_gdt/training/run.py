"""Glue between the ``train`` command and :class:`~napari_gdt.training.loop.Trainer`."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..errors import GDTError
from ..expression.canvas import ExpressionCanvas
from ..pixels import read_image
from .loop import DEFAULT_ARCHS, EXTRA_LOSS_KEYS, TrainConfig, Trainer, smallest_patch_bins
from .sampling import PairedSection

__all__ = ["gene_panel", "load_sections", "train_from_args", "write_bundle"]


def _open_canvas(path) -> ExpressionCanvas:
    p = Path(path)
    if not p.exists():
        raise GDTError(f"{p}: no such expression canvas")
    return ExpressionCanvas.from_ome_zarr(p)


def gene_panel(canvases: list[ExpressionCanvas], genes_arg=None) -> list[str]:
    """The panel: ``genes_arg`` (file or comma list) or the genes shared by all canvases."""
    if genes_arg:
        if isinstance(genes_arg, list | tuple):
            genes = [str(g) for g in genes_arg]
        elif "," not in str(genes_arg) and Path(genes_arg).is_file():
            genes = [g.strip() for g in Path(genes_arg).read_text().split() if g.strip()]
        else:
            genes = [g.strip() for g in str(genes_arg).split(",") if g.strip()]
        for c in canvases:
            missing = [g for g in genes if g not in set(c.genes)]
            if missing:
                raise GDTError(
                    f"{c.meta.get('path', 'canvas')}: lacks {len(missing)} gene(s) of --genes: {', '.join(missing[:10])}"
                )
        return genes
    shared = set(canvases[0].genes)
    for c in canvases[1:]:
        shared &= set(c.genes)
    genes = [g for g in canvases[0].genes if g in shared]
    if not genes:
        raise GDTError("the canvases share no genes")
    return genes


def load_sections(images, canvases_paths, genes_arg, px_per_bin, val_region=None, names=None):
    """Open the canvases, pair them with their images (one per canvas, in order) on the model grid.

    ``val_region`` is held out of the first section.
    """
    if len(images) != len(canvases_paths):
        raise GDTError(f"give one --image per --expression (got {len(images)} images and {len(canvases_paths)} canvases)")
    canvases = [_open_canvas(c) for c in canvases_paths]
    genes = gene_panel(canvases, genes_arg)
    sections = []
    for i, (img_path, c) in enumerate(zip(images, canvases)):
        img = read_image(img_path)
        exclude = [val_region] if (val_region is not None and i == 0) else []
        sections.append(
            PairedSection.from_canvas(c, img, genes, px_per_bin, name=names[i] if names else str(img_path), exclude=exclude)
        )
    return sections, canvases, genes


def _init_arch(path) -> tuple[str, dict]:
    """The architecture name and config of the model or checkpoint ``--init-from`` names (without the
    panel and output size)."""
    from .loop import Trainer

    if Path(str(path)).suffix == ".pt":
        peek = Trainer.peek(path)
        model, arch = peek["model"], dict(peek["arch"])
    else:
        from ..models.bundle import BundleError, read_card

        try:
            card = read_card(path)
        except BundleError as e:
            raise GDTError(f"--init-from: {e}") from None
        model, arch = card.get("arch"), dict(card.get("config", {}))
        if model not in DEFAULT_ARCHS:
            raise GDTError(f"{path}: --init-from needs a gdt-v1 or gdt-v2 model (this one is {model!r})")
    arch.pop("n_genes", None)
    arch.pop("out_channels", None)
    return model, arch


def _init_patch_bins(path) -> int | None:
    """The window size the ``--init-from`` model was trained with (its card's or checkpoint's config)."""
    if not path:
        return None
    from ..models.bundle import BundleError, read_card
    from .loop import Trainer

    try:
        if Path(str(path)).suffix == ".pt":
            cfg = Trainer.peek(path).get("cfg") or {}
        else:
            cfg = (read_card(path).get("provenance") or {}).get("config") or {}
    except (BundleError, GDTError, OSError, ValueError):  # an unreadable model: init_from says so in one line
        return None
    pb = cfg.get("patch_bins")
    return int(pb) if pb else None


def _versions() -> dict:
    import torch

    from .. import __version__

    return {"napari_gdt": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def write_bundle(
    trainer: Trainer,
    out,
    canvases,
    images,
    cfg_json,
    commands,
    um_per_px,
    kind,
    channels,
    tile_px,
    name,
    validation=None,
    data=None,
    val_images=None,
):
    """Save the trainer's generator as a model bundle whose card records data, commands, time and validation."""
    from ..data import describe
    from ..models.bundle import save_bundle

    def _sources(c):
        files = c.meta.get("files") or ([c.meta["source"]] if c.meta.get("source") else [])
        return [describe(f) for f in files]

    prov = {
        "trained": True,
        "data": data
        or {
            "images": [describe(p) for p in images],
            "canvases": [
                {
                    "path": str(c.meta.get("path", "")),
                    "bin_um": float(c.bin_um),
                    "mode": c.meta.get("mode"),
                    "sources": _sources(c),
                }
                | ({"bin_px": float(c.meta["bin_px"])} if c.meta.get("bin_px") else {})  # spot canvases: image px per bin
                for c in canvases
            ],
            "validation": [describe(p) for p in (val_images or [])],
        },
        "commands": commands,
        "command": commands[-1]["command"] if commands else "",
        "steps": int(trainer.step),
        "train_time_s": round(float(trainer.elapsed_s), 1),
        "finished_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(trainer.device),
        "config": json.loads(cfg_json),
        "bin_um": float(canvases[0].bin_um),
        "software": _versions(),
        "history": trainer.history[-20:],
    }
    if getattr(trainer, "init_info", None):
        prov["init_from"] = trainer.init_info
    # A shared card names files by their public sample-data name or bare file name, never by a
    # path of the machine that trained it (commands and init_from included); long floats rounded.
    from ..models.card import clean_card

    shareable = clean_card(
        {"provenance": prov, "validation": validation or ({"held_out_patches": trainer.history[-1]} if trainer.history else {})}
    )
    return save_bundle(
        out,
        trainer.G_ema,
        trainer.genes,
        um_per_px=um_per_px,
        output={"kind": kind, "channels": channels},
        tile_px=tile_px,
        name=name,
        provenance=shareable["provenance"],
        validation=shareable["validation"],
    )


def train_from_args(args, argv=None) -> int:
    """Run ``napari-gdt train`` for parsed arguments (new run or ``--resume``); returns the exit code.

    ``--threads`` applies to this run only: the process's torch thread count is restored afterwards
    (in-process callers render with it, and the CPU forward's last bit can depend on it).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return _train_from_args(args, argv)
    finally:
        torch.set_num_threads(threads)


def _train_from_args(args, argv=None) -> int:
    import torch

    from ..models.device import get_device
    from ..models.registry import ARCHITECTURES, _load_builtin
    from ..rendering.tiles import parse_region

    t0 = time.time()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = get_device(args.device)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise GDTError(f"{out}: --out must end in .safetensors")
    ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else out.with_suffix(".ckpt")
    from ..safeio import check_not_input, check_output

    check_not_input(out, list(args.expression or []) + list(args.image or []) + [getattr(args, "init_from", None)])
    check_output(out, overwrite=getattr(args, "overwrite", False), what="model bundle")
    _load_builtin()
    model = getattr(args, "arch", None) or "gdt-v1"
    if model not in DEFAULT_ARCHS:
        raise GDTError(f"--arch: unknown architecture {model!r} (choose {', '.join(sorted(DEFAULT_ARCHS))})")
    arch = dict(DEFAULT_ARCHS[model])
    prior = None
    if args.resume:
        prior = Trainer.peek(args.resume)
        model = prior.get("model", "gdt-v1")
        arch = prior["arch"]
        arch.pop("n_genes", None)
        arch.pop("out_channels", None)
    elif getattr(args, "init_from", None):  # fine-tune: the starting model's architecture
        init_model, init_arch = _init_arch(args.init_from)
        if getattr(args, "arch", None) and args.arch != init_model:
            raise GDTError(f"--init-from {args.init_from} is a {init_model} model; --arch says {args.arch}")
        model, arch = init_model, init_arch
        if args.arch_config:  # changes on top of the starting model's; init_from refuses any that alters a weight
            try:
                arch.update(json.loads(args.arch_config))
            except json.JSONDecodeError as e:
                raise GDTError(f"--arch-config is not valid JSON ({e})") from None
    elif args.arch_config:
        try:
            arch.update(json.loads(args.arch_config))
        except json.JSONDecodeError as e:
            raise GDTError(f"--arch-config is not valid JSON ({e})") from None
    try:
        ppb = ARCHITECTURES[model](n_genes=1, out_channels=1, **arch).geometry.px_per_bin
    except (TypeError, ValueError) as e:
        raise GDTError(f"--arch-config does not fit {model}: {e}") from None
    val_region = None
    if args.val_region:
        r = parse_region(args.val_region)
        val_region = (r.y0, r.y1, r.x0, r.x1)
    genes_arg = args.genes
    if prior is not None:
        genes_arg = list(prior["genes"])
    sections, canvases, genes = load_sections(args.image, args.expression, genes_arg, ppb, val_region)
    val_sections = []
    if args.val_image or args.val_expression:
        vi, ve = args.val_image or [], args.val_expression or []
        if len(vi) != len(ve):
            raise GDTError(f"give one --val-image per --val-expression (got {len(vi)} and {len(ve)})")
        val_canvases = [_open_canvas(c) for c in ve]
        val_sections = [PairedSection.from_canvas(c, read_image(i), genes, ppb, name=str(i)) for i, c in zip(vi, val_canvases)]
    if val_region is not None:
        s0 = sections[0]
        y0, y1, x0, x1 = val_region
        if not (0 <= y0 < y1 <= s0.image.shape[0] and 0 <= x0 < x1 <= s0.image.shape[1]):
            raise GDTError(
                f"--val-region {args.val_region} lies outside the first section (0:{s0.image.shape[0]},0:{s0.image.shape[1]} "
                "output px)"
            )
        b = (y0 // ppb, -(-y1 // ppb), x0 // ppb, -(-x1 // ppb))
        val_sections.append(
            PairedSection(
                name=f"{s0.name}[{args.val_region}]",
                counts=s0.counts[:, b[0] : b[1], b[2] : b[3]].copy(),
                image=s0.image[b[0] * ppb : b[1] * ppb, b[2] * ppb : b[3] * ppb].copy(),
                px_per_bin=ppb,
            )
        )
    cfg = TrainConfig(
        steps=int(args.steps),
        batch_size=int(args.batch_size),
        patch_bins=int(args.patch_bins or _init_patch_bins(getattr(args, "init_from", None)) or 10),
        lr_g=float(args.lr),
        lr_d=float(args.lr),
        lambda_rec=float(args.lambda_rec),
        rec_pool=int(args.rec_pool),
        lambda_hem=float(getattr(args, "lambda_hem", 0.0)),
        hem_pool=int(getattr(args, "hem_pool", 16)),
        lambda_nuc=float(getattr(args, "lambda_nuc", 0.0) or 0.0),
        lambda_nuc_var=float(getattr(args, "lambda_nuc_var", 0.0) or 0.0),
        lambda_orient=float(getattr(args, "lambda_orient", 0.0) or 0.0),
        lambda_dist=float(getattr(args, "lambda_dist", 0.0) or 0.0),
        lambda_seed=float(getattr(args, "lambda_seed", 0.0) or 0.0),
        lambda_spec=float(getattr(args, "lambda_spec", 0.0) or 0.0),
        lambda_tex=float(getattr(args, "lambda_tex", 0.0) or 0.0),
        lambda_gran=float(getattr(args, "lambda_gran", 0.0) or 0.0),
        lambda_depth=float(getattr(args, "lambda_depth", 0.0) or 0.0),
        lambda_prior=float(getattr(args, "lambda_prior", 0.0) or 0.0),
        seed=int(args.seed),
        ckpt_every=int(args.ckpt_every),
        beta1=float(getattr(args, "beta1", 0.0)),
        clip_grad=float(getattr(args, "clip_grad", 0.0)),
        time_limit_min=float(args.time_limit),
        train_only_new_genes=bool(getattr(args, "train_only_new_genes", False)),
        arch=arch,
        model=model,
        d_scales=int(getattr(args, "d_scales", 1) or 1),
        d_ch=int(getattr(args, "d_ch", 32) or 32),
        r1_gamma=float(getattr(args, "r1_gamma", 0.0) or 0.0),
        depth_aug=float(getattr(args, "depth_aug", 0.0) or 0.0),
        depth_unit=str(getattr(args, "depth_unit", "bin") or "bin"),
        keep_every=int(getattr(args, "keep_every", 0) or 0),
    )
    if prior is not None:  # keep the run's loss settings; only the length/time may change
        pc = prior["cfg"]
        for k in (
            "batch_size",
            "patch_bins",
            "lr_g",
            "lr_d",
            "lambda_rec",
            "lambda_adv",
            "rec_pool",
            "ema",
            "seed",
            "d_cond",
            "beta1",
            "clip_grad",
            "train_only_new_genes",
            "d_scales",
            "d_ch",
            "r1_gamma",
            "r1_every",
            "depth_aug",
            "depth_min",
            "prior_boost",
        ):
            if k in pc:
                setattr(cfg, k, pc[k])
        # options added on a resume (e.g. --lambda-hem 20) stay; left at their defaults, the checkpoint's win
        defaults = TrainConfig()
        for k in ("keep_every", *EXTRA_LOSS_KEYS):
            if k in pc and getattr(cfg, k) == getattr(defaults, k):
                setattr(cfg, k, pc[k])
    if args.patch_bins is None and prior is None:  # a default window too small: the smallest that fits
        geo = ARCHITECTURES[model](n_genes=1, out_channels=1, **arch).geometry
        what, need, smallest = smallest_patch_bins(geo, cfg)
        if geo.out_len(cfg.patch_bins) < need:
            print(
                f"--patch-bins {smallest}: the smallest window this model (halo {geo.offset} px a side) paints {need} px in, "
                f"for {what}",
                file=sys.stderr,
            )
            cfg.patch_bins = smallest
    if cfg.lambda_depth > 0 and cfg.depth_aug <= 0:
        raise GDTError("--lambda-depth needs --depth-aug (the thinned copy it compares with the measured counts)")
    if cfg.depth_unit == "spot":
        flat = [s.name for s in sections if s.spots is None]
        if flat:
            raise GDTError(f"--depth-unit spot needs spot canvases; {flat[0]} has no spot positions")
    made_dir = not ckpt_dir.exists()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log = Path(args.log) if args.log else ckpt_dir / "log.jsonl"
    try:
        amp = getattr(args, "amp", "auto")
        trainer = Trainer(sections, genes, cfg, device, val_sections=val_sections, ckpt_dir=ckpt_dir, log=str(log), amp=amp)
    except GDTError:  # refused before any work: leave no empty checkpoint folder behind
        if made_dir and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()
        raise
    trainer.out_bundle = out  # --keep-every copies it next to the checkpoints
    commands = []
    if getattr(args, "train_only_new_genes", False) and not (args.init_from or args.resume):
        raise GDTError("--train-only-new-genes needs --init-from (the model whose weights stay)")
    if args.resume:
        if getattr(args, "init_from", None):
            raise GDTError("give --resume or --init-from, not both (a resumed run already holds its starting weights)")
        trainer.load_checkpoint(args.resume)
        meta_file = Path(args.resume).with_name("commands.json")
        if meta_file.exists():
            commands = json.loads(meta_file.read_text())
    elif getattr(args, "init_from", None):
        info = trainer.init_from(args.init_from)
        if cfg.train_only_new_genes and not info["new"]:
            raise GDTError("--train-only-new-genes: the panel has no gene that the starting model lacks")
        print(
            f"starting from {args.init_from}: {info['shared']} genes shared, {len(info['new'])} new "
            f"({', '.join(info['new'][:12])}{'…' if len(info['new']) > 12 else ''}), {len(info['dropped'])} dropped",
            file=sys.stderr,
        )
    cmd = "napari-gdt " + shlex.join((argv or [])[1:]) if argv else "napari-gdt train"
    commands.append({"command": cmd, "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "from_step": trainer.step})
    (ckpt_dir / "commands.json").write_text(json.dumps(commands, indent=1))
    out_ch = sections[0].image.shape[-1]
    kind = "he" if out_ch == 3 else "fluorescence"
    channels = (
        args.channels.split(",")
        if args.channels
        else (["R", "G", "B"] if out_ch == 3 else (["DAPI"] if out_ch == 1 else [f"ch{i}" for i in range(out_ch)]))
    )
    um_per_px = float(canvases[0].bin_um) / ppb
    name = args.name or out.stem
    import dataclasses

    cfg_json = json.dumps(dataclasses.asdict(cfg))

    def snapshot(tr):
        write_bundle(
            tr,
            out,
            canvases,
            args.image,
            cfg_json,
            commands,
            um_per_px,
            kind,
            channels,
            args.tile_px,
            name,
            val_images=args.val_image,
        )

    print(
        f"training {name}: {len(genes)} genes, {len(sections)} section(s), {out_ch} channel(s), {um_per_px:.3f} "
        f"µm/px, px_per_bin {ppb}, from step {trainer.step} to {cfg.steps} on {device} (amp {trainer.amp})",
        file=sys.stderr,
    )
    trainer.run(on_checkpoint=snapshot)
    validation = {"held_out_patches": trainer.history[-1]} if trainer.history else {}
    if not args.no_eval and trainer.step >= cfg.steps:
        validation.update(
            _final_eval(
                out,
                args,
                val_region,
                canvases,
                sections,
                trainer,
                canvases_paths=args.expression,
                channels=channels,
                um_per_px=um_per_px,
                kind=kind,
                cfg_json=cfg_json,
                commands=commands,
                name=name,
            )
        )
    write_bundle(
        trainer,
        out,
        canvases,
        args.image,
        cfg_json,
        commands,
        um_per_px,
        kind,
        channels,
        args.tile_px,
        name,
        validation=validation,
        val_images=args.val_image,
    )
    print(
        f"wrote {out} after step {trainer.step} ({trainer.elapsed_s / 60:.1f} min of training; this call "
        f"{(time.time() - t0) / 60:.1f} min); checkpoint {ckpt_dir / 'last.pt'}"
    )
    return 0


def _final_eval(out, args, val_region, canvases, sections, trainer, **kw) -> dict:
    """Nuclear morphometrics of the held-out data (see napari_gdt.analysis.quality)."""
    try:
        from ..analysis.quality import evaluate
    except ImportError as e:  # morphometrics not installed in this build
        return {"morphometrics": f"not computed ({e})"}
    from ..models.bundle import load_bundle
    from ..rendering.tiles import Region

    write_bundle(
        trainer,
        out,
        canvases,
        args.image,
        kw["cfg_json"],
        kw["commands"],
        kw["um_per_px"],
        kw["kind"],
        kw["channels"],
        args.tile_px,
        kw["name"],
    )
    bundle = load_bundle(out, device=trainer.device)
    res = {}
    for vi, ve in zip(args.val_image or [], args.val_expression or []):
        res[f"{Path(vi).parent.name}/{Path(vi).name}"] = evaluate(bundle, _open_canvas(ve), read_image(vi))
    if val_region is not None:
        y0, y1, x0, x1 = val_region
        res[f"{Path(args.image[0]).name}[{args.val_region}]"] = evaluate(
            bundle, canvases[0], read_image(args.image[0]), region=Region(y0, y1, x0, x1)
        )
    return {"morphometrics": res}
