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
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BundleError
from .base import TiledGenerator
from .registry import build

__all__ = [
    "GeneratorBundle",
    "save_bundle",
    "load_bundle",
    "bundle_from_model",
    "resolve_model",
    "read_card",
    "set_card_fields",
    "BUNDLED_MODELS",
    "FORMAT",
    "FORMAT_VERSION",
]

from .card import (  # noqa: F401  (the card is read and checked without torch in .card)
    BUNDLED_MODELS,
    CARD_BOUNDS,
    CONFIG_INT_BOUNDS,
    FORMAT,
    FORMAT_VERSION,
    MAX_GENES,
    META_KEY,
    REQUIRED,
    WEIGHTS_DIR,
    _is_int,
    check_card,
    read_card,
    resolve_model,
)


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

    def to(self, device) -> GeneratorBundle:
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
        "normalisation": extra.pop(
            "normalisation",
            getattr(model, "normalisation", None) or {"log1p": bool(model.config.get("log1p", False)), "per_gene_scale": True},
        ),
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
    from ..safeio import atomic_file

    with atomic_file(path) as tmp:  # a crash mid-write leaves the old bundle in place
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(card)})
    return card


def _validate_card(card: dict, model: TiledGenerator, source: str) -> None:
    if len(card["genes"]) != model.n_genes:
        raise BundleError(f"{source}: field 'genes' lists {len(card['genes'])} genes but the architecture takes {model.n_genes}")
    if len(set(card["genes"])) != len(card["genes"]):
        dup = sorted({g for g in card["genes"] if card["genes"].count(g) > 1})
        raise BundleError(f"{source}: field 'genes' has duplicates: {', '.join(dup[:10])}")
    if int(card["px_per_bin"]) != model.geometry.px_per_bin:
        raise BundleError(
            f"{source}: field 'px_per_bin' is {card['px_per_bin']} but the architecture gives {model.geometry.px_per_bin}"
        )
    chans = card["output"].get("channels", [])
    if chans and len(chans) != model.out_channels:
        raise BundleError(
            f"{source}: field 'output.channels' names {len(chans)} channels but the model outputs {model.out_channels}"
        )
    if not (float(card["um_per_px"]) > 0):
        raise BundleError(f"{source}: field 'um_per_px' must be > 0, got {card['um_per_px']}")


_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _header_tensors(p: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, safetensors dtype) from the file's header (no tensor is read)."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(p), framework="pt") as f:
        for k in list(f.keys()):  # a safetensors handle, not a dict
            sl = f.get_slice(k)
            out[k] = (tuple(sl.get_shape()), sl.get_dtype())
    return out


_ST_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class _AllocationGuard:
    """While a model is built from its card, count the bytes its tensor factories ask for and
    refuse (before allocating) once they pass ``budget``: a card cannot make us allocate much more
    than the tensors its file holds. Cheap: a torch function mode, no meta device."""

    def __init__(self, budget: float, source: str, held: float):
        from torch.overrides import TorchFunctionMode

        guard = self
        self.budget, self.source, self.held, self.total = float(budget), source, float(held), 0.0
        factories = {
            torch.empty,
            torch.zeros,
            torch.ones,
            torch.randn,
            torch.rand,
            torch.full,
            torch.randint,
            torch.empty_strided,
        }

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in factories:
                    guard._count(func, args, kwargs)
                return func(*args, **kwargs)

        self.mode = Mode()

    def _count(self, func, args, kwargs) -> None:
        size = kwargs.get("size")
        if size is None:
            if func is torch.randint:
                size = next((a for a in args if isinstance(a, (tuple, list, torch.Size))), ())
            elif args and isinstance(args[0], (tuple, list, torch.Size)):
                size = args[0]
            else:
                size = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        try:
            n = math.prod(int(v) for v in size)
        except (TypeError, ValueError):
            return
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        self.total += n * (torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 4)
        if self.total > self.budget:
            from ..safeio import check_model_bytes

            check_model_bytes(self.total, self.source)  # above the absolute limit: say so
            raise BundleError(
                f"{self.source}: field 'config' describes a model larger than the file's tensors "
                f"(over {self.total:,.0f} bytes of weights; the file holds {self.held:,.0f}); it was not built"
            )

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _build_checked(p: Path, card: dict):
    """Build the card's architecture without letting the card allocate more than its file holds,
    then check every tensor's shape and dtype in the header against it (before reading any)."""
    from ..safeio import check_model_bytes

    header = _header_tensors(p)
    held = sum(math.prod(shape) * _ST_BYTES.get(dt, 8) for shape, dt in header.values())
    check_model_bytes(held, str(p))
    with _AllocationGuard(
        budget=1.25 * held + (128 << 20), source=str(p), held=held
    ):  # slack for buffers an architecture builds but does not save
        model = build(card["arch"], card["config"], source=str(p))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        parts = ([f"missing tensors: {', '.join(missing[:12])}"] if missing else []) + (
            [f"unexpected tensors: {', '.join(extra[:12])}"] if extra else []
        )
        raise BundleError(f"{p}: metadata does not match the tensors ({'; '.join(parts)})")
    wrong = []
    for k in sorted(expected):
        shape, dtype = header[k]
        want = _ST_DTYPES.get(expected[k].dtype, str(expected[k].dtype))
        if dtype != want:
            raise BundleError(f"{p}: tensor {k!r} has dtype {dtype}, expected {want}")
        if shape != tuple(expected[k].shape):
            wrong.append(f"{k} {shape} != {tuple(expected[k].shape)}")
    if wrong:
        raise BundleError(f"{p}: metadata does not match the tensors (wrong shapes: {', '.join(wrong[:12])})")
    return model


def load_bundle(path: str | Path, device=None) -> GeneratorBundle:
    """Load a bundle safely (safetensors only; no pickle).

    Raises :class:`~napari_gdt.errors.BundleError` naming the file and the
    field or tensor when anything is wrong.
    """
    from safetensors.torch import load_file

    p = resolve_model(path)
    card = read_card(p)
    try:
        model = _build_checked(p, card)
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError, KeyError) as e:
        raise BundleError(
            f"{p}: field 'config' does not fit architecture {card['arch']!r}: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}"
        ) from None
    _validate_card(card, model, str(p))
    try:
        tensors = load_file(str(p))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own and OS errors on a damaged file: one line names it
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
                "wrong shapes: " + ", ".join(f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:12])
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

    output = output or {
        "kind": "he" if model.out_channels == 3 else "fluorescence",
        "channels": _default_channels(model.out_channels),
    }
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
