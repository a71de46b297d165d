"""Convert IST-editing checkpoints (``.pt``) into napari-gdt bundles.

IST-editing's training script saves ``{"g", "d", "g_ema", "g_optim",
"d_optim", "args", "ada_aug_p"}`` with ``torch.save``. Only the EMA
generator ``g_ema`` is needed. The file is read with
``torch.load(weights_only=True)``: tensors, plain containers and numbers
only, plus the one class their checkpoints contain, ``argparse.Namespace``
(the training arguments). Anything else in the pickle (a class, a function)
is refused before it can run.

The architecture's widths are inferred from the tensor shapes, the tensors
are checked key by key against :class:`~napari_gdt.models.ist.ISTGenerator`,
and a bundle with a full model card is written.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import pickle
import re
import time
from pathlib import Path

import torch

from ..data import file_sha256
from ..errors import BundleError
from .ist import ISTGenerator

__all__ = [
    "SAFE_GLOBALS",
    "XENIUM_UM_PER_PX",
    "check_ist_state",
    "import_ist_checkpoint",
    "infer_ist_config",
    "load_ist_checkpoint",
    "read_gene_list",
]

#: The only non-builtin Python objects an IST-editing checkpoint holds.
SAFE_GLOBALS = (argparse.Namespace,)
#: Xenium morphology image pixel size (their data: 4.705882 px per µm).
XENIUM_UM_PER_PX = 0.2125

PAPER = (
    "Wu J, Berg I, Koelzer VH. IST-editing: Infinite spatial transcriptomic editing in a generated "
    "gigapixel mouse pup. MIDL 2024 (bioRxiv 10.1101/2023.12.23.573175)"
)
CODE_URL = "https://github.com/CTPLab/IST-editing"
LICENCE_NOTE = (
    "Weights trained with IST-editing (code: CC BY-NC-SA 4.0, StyleGAN2 parts under the NVIDIA licence). "
    "The licence of the weights follows their source; non-commercial use and attribution are the safe assumption. "
    "The napari-gdt architecture 'ist-stylegan2' is an independent implementation and contains none of their code."
)

_MAX_LISTED = 12


def load_ist_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the ``g_ema`` state dict of an IST-editing checkpoint, safely.

    Returns ``(state_dict, info)``; ``info`` holds the checkpoint's JSON-able
    training arguments (``args``) and which entry the weights came from.
    A bare state dict (the ``g_ema`` dict saved on its own) is accepted too.

    Raises
    ------
    BundleError
        The file is missing, is not a PyTorch checkpoint, needs a Python
        object outside the allowlist, or holds no generator weights.
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such checkpoint file")
    if p.is_dir():
        raise BundleError(f"{p}: is a folder, not a checkpoint file (.pt)")
    try:
        with _allow(SAFE_GLOBALS):
            try:  # memory-mapped: the tensors (discriminator, optimiser states) are not read until used
                obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e) and "zipfile" not in str(e):
                    raise
                obj = torch.load(str(p), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", msg)
        if m:
            allowed = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS)
            raise BundleError(
                f"{p}: refusing to unpickle {m.group(1)!r}: the checkpoint contains a Python object outside the "
                f"allowlist (tensors, plain containers, numbers, {allowed}); it was not loaded"
            ) from None
        raise BundleError(f"{p}: not a PyTorch checkpoint (unpickling failed: {_first_line(msg)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, UnicodeDecodeError, AttributeError, IndexError) as e:
        raise BundleError(f"{p}: not a PyTorch checkpoint ({type(e).__name__}: {_first_line(str(e)) or 'unreadable'})") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{p}: checkpoint holds a {type(obj).__name__}, expected a dict with key 'g_ema'")
    info: dict = {}
    if "g_ema" in obj:
        sd = obj["g_ema"]
        info["weights_from"] = "g_ema"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()) and "drive.0.weight" in obj:
        sd = obj
        info["weights_from"] = "bare state dict"
    else:
        keys = ", ".join(sorted(map(str, obj))[:_MAX_LISTED])
        raise BundleError(f"{p}: checkpoint has no 'g_ema' entry (its keys: {keys})")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BundleError(f"{p}: 'g_ema' is not a state dict of tensors")
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        info["args"] = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool)) or v is None}
    for k in ("ada_aug_p",):
        if isinstance(obj.get(k), (int, float)):
            info[k] = obj[k]
    return dict(sd), info


@contextlib.contextmanager
def _allow(classes):
    """Allowlist ``classes`` for ``weights_only`` loading (scoped where torch supports it)."""
    ser = torch.serialization
    if hasattr(ser, "safe_globals"):  # torch >= 2.5: scoped to this load
        with ser.safe_globals(list(classes)):
            yield
    else:  # torch 2.4: process-wide; older torch cannot allowlist (the load then names the class)
        if hasattr(ser, "add_safe_globals"):
            ser.add_safe_globals(list(classes))
        yield


def _first_line(s: str) -> str:
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    # torch's long messages put the useful part last
    useful = [ln for ln in lines if "Unsupported" in ln or "failed" in ln.lower()]
    return (useful[-1] if useful else (lines[0] if lines else ""))[:200]


def infer_ist_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """Infer :class:`ISTGenerator` keyword arguments from a ``g_ema`` state dict's shapes."""

    def need(key: str, what: str) -> torch.Tensor:
        if key not in sd:
            raise BundleError(f"{source}: cannot infer {what}: tensor {key!r} is missing")
        return sd[key]

    drive_keys = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"drive\.(\d+)\.weight", k)))
    style_keys = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    rgb_keys = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k)))
    if not drive_keys:
        raise BundleError(f"{source}: cannot infer the gene count: no 'drive.N.weight' tensors (not an IST-editing generator?)")
    if not style_keys:
        raise BundleError(f"{source}: cannot infer the mapping network: no 'style.N.weight' tensors")
    if not rgb_keys:
        raise BundleError(f"{source}: cannot infer the stages: no 'to_rgbs.N.conv.weight' tensors")
    d0 = need("drive.0.weight", "the gene count")
    skip_w = need("gconv_skip.conv.weight", "the output channels")
    out_w = need("gconv_out.conv.weight", "the base channels")
    style_w = need(f"style.{style_keys[0]}.weight", "the latent size")
    n_stages = max(rgb_keys) + 1
    stage_channels = [int(need(f"convs.{2 * j}.conv.weight", f"the channels of stage {j}").shape[1]) for j in range(n_stages)]
    noise0 = sd.get("noises.noise_0")
    cfg = dict(
        n_genes=int(d0.shape[1]),
        out_channels=int(skip_w.shape[1]),
        latent_dim=int(style_w.shape[0]),
        n_mlp=max(style_keys),
        base_channels=int(out_w.shape[1]),
        stage_channels=stage_channels,
        drive_hidden=int(d0.shape[0]) if len(drive_keys) > 1 else 256,
        n_drive=max(drive_keys) + 1,
        kernel_size=int(out_w.shape[-1]),
        lr_mlp=0.01,
        locl_sz=int(noise0.shape[-1]) if noise0 is not None and noise0.ndim == 4 else 13,
    )
    if cfg["kernel_size"] != 3:
        raise BundleError(
            f"{source}: tensor 'gconv_out.conv.weight' has kernel size {cfg['kernel_size']}; only 3x3 IST-editing generators "
            "are supported"
        )
    return cfg


def check_ist_state(model: ISTGenerator, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`BundleError` listing missing, unexpected and wrongly shaped tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(expected) & set(sd) if tuple(sd[k].shape) != expected[k])
    if missing or extra or wrong:
        parts = []

        def listed(items):
            more = f" ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            return ", ".join(items[:_MAX_LISTED]) + more

        if missing:
            parts.append(f"{len(missing)} missing: " + listed(missing))
        if extra:
            parts.append(f"{len(extra)} unexpected: " + listed(extra))
        if wrong:
            parts.append(
                f"{len(wrong)} with wrong shapes: "
                + listed([f"{k} {tuple(sd[k].shape)} != expected {expected[k]}" for k in wrong])
            )
        raise BundleError(f"{source}: 'g_ema' does not match the IST-editing generator layout ({'; '.join(parts)})")
    bad = sorted(k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise BundleError(f"{source}: tensors with NaN or Inf values: {', '.join(bad[:_MAX_LISTED])}")


def read_gene_list(path: str | Path) -> list[str]:
    """Read the model's ordered gene panel.

    Accepts a text file with one gene per line (blank lines and ``#``
    comments skipped), a JSON list, or a 10x ``features.tsv(.gz)`` (the
    ``Gene Expression`` rows, in file order: the order IST-editing used).
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such gene list file")
    try:
        if p.name.endswith(".gz"):
            with gzip.open(p, "rt") as f:
                raw = f.read()
        else:
            raw = p.read_text()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise BundleError(f"{p}: unreadable gene list ({e})") from None
    if p.suffix.lower() == ".json":
        try:
            genes = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BundleError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
            raise BundleError(f"{p}: expected a JSON list of gene names")
        genes = [g.strip() for g in genes]
    else:
        lines = [ln.rstrip("\n\r") for ln in raw.splitlines()]
        lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        rows = [ln.split("\t") for ln in lines]
        if rows and all(len(r) >= 3 for r in rows):  # 10x features.tsv: id, name, type
            genes = [r[1].strip() for r in rows if r[2].strip() == "Gene Expression"]
        else:
            genes = [ln.strip() for ln in lines]
    if not genes:
        raise BundleError(f"{p}: the gene list is empty")
    empty = [i + 1 for i, g in enumerate(genes) if not g]
    if empty:
        raise BundleError(f"{p}: empty gene name at entry {empty[0]}")
    dup = sorted({g for g in genes if genes.count(g) > 1})
    if dup:
        raise BundleError(f"{p}: duplicate genes: {', '.join(dup[:10])}")
    return genes


def import_ist_checkpoint(
    ckpt: str | Path,
    genes_file: str | Path,
    output: str = "auto",
    out_path: str | Path | None = None,
    um_per_px: float = XENIUM_UM_PER_PX,
    name: str | None = None,
    tile_px: int = 128,
    overwrite: bool = False,
) -> dict:
    """Convert an IST-editing checkpoint into a napari-gdt bundle.

    Parameters
    ----------
    ckpt : path
        IST-editing ``.pt`` checkpoint (``{"g_ema": ..., ...}``).
    genes_file : path
        The model's ordered gene panel (see :func:`read_gene_list`).
    output : {"auto", "dapi", "he"}
        What the generator paints; ``auto`` follows the channel count
        (1 -> DAPI, 3 -> H&E). A mismatch with the weights is an error.
    out_path : path, optional
        Bundle to write (default: the checkpoint's name with ``.safetensors``).
    um_per_px : float
        Micrometres per output pixel (0.2125 for Xenium; the MERFISH model
        was trained on Vizgen mosaics at about 0.108).
    name : str, optional
        Model name in the card.
    tile_px : int
        Default tile size (128, IST-editing's own tile).

    Returns
    -------
    dict
        The model card written into the bundle.
    """
    from .. import __version__
    from ..safeio import check_not_input, check_output
    from .bundle import load_bundle, save_bundle

    ckpt = Path(ckpt)
    source = str(ckpt)
    out_path = Path(out_path) if out_path is not None else ckpt.with_suffix(".safetensors")
    check_not_input(out_path, [ckpt, genes_file])
    check_output(out_path, overwrite=overwrite, what="model bundle")
    genes = read_gene_list(genes_file)  # cheap checks first: nothing is allocated before they pass
    sd, info = load_ist_checkpoint(ckpt)
    config = infer_ist_config(sd, source)
    if len(genes) != config["n_genes"]:
        raise BundleError(
            f"{genes_file}: lists {len(genes)} genes but the checkpoint's generator takes {config['n_genes']} "
            f"(tensor 'drive.0.weight' {tuple(sd['drive.0.weight'].shape)}); give the panel in training order"
        )
    bad = sorted(k for k, v in sd.items() if v.dtype != torch.float32)
    if bad:
        raise BundleError(
            f"{source}: tensor {bad[0]!r} has dtype {str(sd[bad[0]].dtype).replace('torch.', '')}, expected float32"
        )
    try:
        model = ISTGenerator(**config)
    except ValueError as e:
        raise BundleError(f"{source}: inferred configuration is not usable: {e}") from None
    check_ist_state(model, sd, source)
    nch = config["out_channels"]
    output = (output or "auto").lower()
    if output == "auto":
        if nch == 1:
            output = "dapi"
        elif nch == 3:
            output = "he"
        else:
            raise BundleError(f"{source}: the generator outputs {nch} channels; neither DAPI (1) nor H&E (3)")
    if output not in ("dapi", "he"):
        raise BundleError(f"--output must be 'dapi' or 'he', got {output!r}")
    want = 1 if output == "dapi" else 3
    if nch != want:
        raise BundleError(
            f"{source}: --output {output} needs {want} output channel(s) but the generator outputs {nch} (tensor "
            "'gconv_skip.conv.weight')"
        )
    model.load_state_dict(sd, strict=True)
    model.eval()
    out = (
        {"kind": "he", "channels": ["R", "G", "B"], "stain": "H&E"}
        if output == "he"
        else {"kind": "fluorescence", "channels": ["DAPI"], "stain": "DAPI"}
    )
    geo = model.geometry
    provenance = {
        "source": "IST-editing",
        "paper": PAPER,
        "code": CODE_URL,
        "licence": LICENCE_NOTE,
        "checkpoint": ckpt.name,
        "checkpoint_sha256": file_sha256(ckpt),
        "checkpoint_weights": info.get("weights_from", "g_ema"),
        "training_args": info.get("args", {}),
        "imported_by": "napari-gdt import-ist",
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "napari_gdt_version": __version__,
        "torch_version": torch.__version__,
        "differences": (
            "Per-layer noise is a hash of absolute canvas coordinates (tiles are random-access and seamless); "
            "IST-editing cropped one random noise map per tile row/column in a fixed order. The checkpoint's "
            "fixed 'noises.noise_*' buffers are stored but unused. The global latent comes from --seed."
        ),
    }
    normalisation = {
        "log1p": False,
        "per_gene_scale": False,
        "input": "summed transcript counts of each gene per bin (no log, no scaling)",
        "bin_px": geo.px_per_bin,
        "bin_um": round(geo.px_per_bin * float(um_per_px), 6),
        "window_bins": 8,
        "paper_tile_px": 128,
    }
    card = save_bundle(
        out_path,
        model,
        genes,
        um_per_px=float(um_per_px),
        output=out,
        tile_px=int(tile_px),
        name=name or f"ist-editing-{output}-{ckpt.stem}",
        normalisation=normalisation,
        provenance=provenance,
        validation={},
    )
    load_bundle(out_path)  # proves the written bundle loads strictly
    return card
