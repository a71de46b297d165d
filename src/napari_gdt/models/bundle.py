"""The model bundle: one ``.safetensors`` file, tensors plus a JSON model card.

The card lives in the safetensors header under the metadata key
``napari_gdt`` (a JSON string). Loading reads tensors with safetensors only,
so no pickled code is ever executed.

Card fields (``format_version`` 1)::

    format          "napari-gdt-bundle"
    format_version  1
    name            short model name
    arch            architecture name in the registry (e.g. "gdt-v1")
    config          JSON kwargs that rebuild the architecture
    genes           ordered gene panel (length = config n_genes)
    px_per_bin      output pixels per expression bin
    um_per_px       micrometres per output pixel
    output          {"kind": "he" | "fluorescence", "channels": [...]}
    tile_px         default tile size (px)
    halo_px         context on each side of a tile (px)
    normalisation   how raw counts are normalised (documentation of the model's own step)
    provenance      training data, command, time, steps, software versions
    validation      validation metrics (may be empty)
    model_version   (optional) version of a named model: 2 when a retrained model replaced version 1
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BundleError
from .base import TiledGenerator
from .registry import build

__all__ = ["GeneratorBundle", "save_bundle", "load_bundle", "bundle_from_model", "resolve_model", "read_card", "set_card_fields", "BUNDLED_MODELS", "FORMAT", "FORMAT_VERSION"]

FORMAT = "napari-gdt-bundle"
FORMAT_VERSION = 1
META_KEY = "napari_gdt"
REQUIRED = ("arch", "config", "genes", "px_per_bin", "um_per_px", "output", "tile_px", "halo_px")

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED_MODELS = {"her2st-he": "her2st-he.safetensors", "merfish-dapi": "merfish-dapi.safetensors"}


@dataclass
class GeneratorBundle:
    """A loaded generator with its model card.

    Attributes
    ----------
    model : TiledGenerator
        The torch module, in eval mode, on CPU until moved.
    card : dict
        The model card (see module docstring).
    path : Path or None
        File it came from.
    digest : str
        sha256 of the tensors and card; part of every tile's cache key.
    """

    model: TiledGenerator
    card: dict
    path: Path | None = None
    digest: str = ""
    _styles: dict = field(default_factory=dict, repr=False)

    @property
    def genes(self) -> list[str]:
        return list(self.card["genes"])

    @property
    def px_per_bin(self) -> int:
        return int(self.card["px_per_bin"])

    @property
    def um_per_px(self) -> float:
        return float(self.card["um_per_px"])

    @property
    def out_channels(self) -> int:
        return int(self.model.out_channels)

    @property
    def output_kind(self) -> str:
        return str(self.card["output"]["kind"])

    @property
    def channel_names(self) -> list[str]:
        return list(self.card["output"].get("channels", []))

    @property
    def tile_px(self) -> int:
        return int(self.card["tile_px"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "GeneratorBundle":
        self.model.to(device)
        self._styles.clear()
        return self

    def styles(self, seed: int) -> torch.Tensor:
        """Cached style vector for ``seed`` on the model's device."""
        key = (int(seed), str(self.device))
        if key not in self._styles:
            with torch.inference_mode():
                self._styles[key] = self.model.styles(seed)
        return self._styles[key]


def _card_for(model: TiledGenerator, genes, px_per_bin, um_per_px, output, tile_px, extra) -> dict:
    geo = model.geometry
    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": extra.pop("name", model.arch),
        "arch": model.arch,
        "config": model.config,
        "genes": list(genes),
        "px_per_bin": int(px_per_bin if px_per_bin is not None else geo.px_per_bin),
        "um_per_px": float(um_per_px),
        "output": output,
        "tile_px": int(tile_px),
        "halo_px": int(geo.halo_px),
        "normalisation": extra.pop("normalisation", getattr(model, "normalisation", None) or {"log1p": bool(model.config.get("log1p", False)), "per_gene_scale": True}),
        "provenance": extra.pop("provenance", {}),
        "validation": extra.pop("validation", {}),
    }
    card.update(extra)
    return card


def save_bundle(
    path: str | Path,
    model: TiledGenerator,
    genes: list[str],
    um_per_px: float,
    output: dict,
    tile_px: int = 128,
    px_per_bin: int | None = None,
    **extra,
) -> dict:
    """Write ``model`` and its card to a ``.safetensors`` bundle; return the card."""
    from safetensors.torch import save_file

    card = _card_for(model, genes, px_per_bin, um_per_px, output, tile_px, dict(extra))
    _validate_card(card, model, str(path))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(card)})
    return card


def resolve_model(name_or_path: str | Path) -> Path:
    """Map a bundled model name (``her2st-he``, ``merfish-dapi``) or a path to a file path."""
    s = str(name_or_path)
    if s in BUNDLED_MODELS:
        p = WEIGHTS_DIR / BUNDLED_MODELS[s]
        if not p.exists():
            raise BundleError(f"{s}: the bundled demo model file {p} is not installed with this package")
        return p
    return Path(s)


def read_card(path: str | Path) -> dict:
    """Read only the model card of a bundle (no tensors)."""
    from safetensors import safe_open

    p = resolve_model(path)
    if not p.exists():
        raise BundleError(f"{p}: no such model file")
    if p.is_dir():
        raise BundleError(f"{p}: is a folder, not a model bundle (.safetensors)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise BundleError(f"{p}: not a model bundle (unreadable or truncated safetensors file: {e})") from None
    if META_KEY not in meta:
        raise BundleError(f"{p}: not a napari-gdt bundle (safetensors metadata has no '{META_KEY}' card)")
    try:
        card = json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        raise BundleError(f"{p}: model card is not valid JSON ({e})") from None
    if card.get("format") != FORMAT:
        raise BundleError(f"{p}: field 'format' is {card.get('format')!r}, expected {FORMAT!r}")
    if int(card.get("format_version", -1)) > FORMAT_VERSION:
        raise BundleError(f"{p}: field 'format_version' {card.get('format_version')} is newer than this napari-gdt supports ({FORMAT_VERSION})")
    for k in REQUIRED:
        if k not in card:
            raise BundleError(f"{p}: model card lacks field {k!r}")
    return card


def _validate_card(card: dict, model: TiledGenerator, source: str) -> None:
    if len(card["genes"]) != model.n_genes:
        raise BundleError(f"{source}: field 'genes' lists {len(card['genes'])} genes but the architecture takes {model.n_genes}")
    if len(set(card["genes"])) != len(card["genes"]):
        dup = sorted({g for g in card["genes"] if card["genes"].count(g) > 1})
        raise BundleError(f"{source}: field 'genes' has duplicates: {', '.join(dup[:10])}")
    if int(card["px_per_bin"]) != model.geometry.px_per_bin:
        raise BundleError(f"{source}: field 'px_per_bin' is {card['px_per_bin']} but the architecture gives {model.geometry.px_per_bin}")
    chans = card["output"].get("channels", [])
    if chans and len(chans) != model.out_channels:
        raise BundleError(f"{source}: field 'output.channels' names {len(chans)} channels but the model outputs {model.out_channels}")
    if not (float(card["um_per_px"]) > 0):
        raise BundleError(f"{source}: field 'um_per_px' must be > 0, got {card['um_per_px']}")


def load_bundle(path: str | Path, device=None) -> GeneratorBundle:
    """Load a bundle safely (safetensors only; no pickle).

    Raises :class:`~napari_gdt.errors.BundleError` naming the file and the
    field or tensor when anything is wrong.
    """
    from safetensors.torch import load_file

    p = resolve_model(path)
    card = read_card(p)
    model = build(card["arch"], card["config"], source=str(p))
    _validate_card(card, model, str(p))
    try:
        tensors = load_file(str(p))
    except Exception as e:
        raise BundleError(f"{p}: tensors could not be read (truncated file?): {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append("missing tensors: " + ", ".join(missing[:12]))
        if extra:
            parts.append("unexpected tensors: " + ", ".join(extra[:12]))
        if wrong:
            parts.append(
                "wrong shapes: "
                + ", ".join(f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:12])
            )
        raise BundleError(f"{p}: metadata does not match the tensors ({'; '.join(parts)})")
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BundleError(f"{p}: tensor {k!r} contains NaN or Inf values")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    h = hashlib.sha256(json.dumps({k: card[k] for k in ("arch", "config", "genes", "px_per_bin")}, sort_keys=True).encode())
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].numpy().tobytes())
    bundle = GeneratorBundle(model=model, card=card, path=p, digest=h.hexdigest())
    if device is not None:
        from .device import get_device

        bundle.to(get_device(device))
    return bundle


def bundle_from_model(model: TiledGenerator, genes, um_per_px=1.0, output=None, tile_px=128, **extra) -> GeneratorBundle:
    """Wrap an in-memory model as a bundle (for tests, training and demos)."""
    import io

    output = output or {"kind": "he" if model.out_channels == 3 else "fluorescence", "channels": _default_channels(model.out_channels)}
    card = _card_for(model, genes, None, um_per_px, output, tile_px, dict(extra))
    _validate_card(card, model, "<in-memory model>")
    h = hashlib.sha256(json.dumps({k: card[k] for k in ("arch", "config", "genes", "px_per_bin")}, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        buf = io.BytesIO(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(k.encode())
        h.update(buf.getvalue())
    model.eval()
    return GeneratorBundle(model=model, card=card, path=None, digest=h.hexdigest())


def _default_channels(n: int) -> list[str]:
    return ["R", "G", "B"] if n == 3 else (["DAPI"] if n == 1 else [f"ch{i}" for i in range(n)])



def set_card_fields(path: str | Path, **fields) -> dict:
    """Rewrite the card of the bundle file ``path`` with ``fields`` set (tensors unchanged); returns the card.

    For fields that describe a finished model, e.g. ``model_version`` when a retrained model
    replaces a bundled one under the same name. Architecture fields cannot be changed this way.
    """
    import os

    from safetensors.torch import load_file, save_file

    p = Path(path)
    card = read_card(p)
    fixed = set(REQUIRED) | {"format", "format_version"}
    bad = sorted(set(fields) & fixed)
    if bad:
        raise BundleError(f"{p}: field(s) {', '.join(bad)} describe the architecture and cannot be set")
    tensors = load_file(str(p))
    card.update(fields)
    tmp = p.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(card)})
    os.replace(tmp, p)
    return card
