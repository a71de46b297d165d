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

__all__ = ["GeneratorBundle", "save_bundle", "load_bundle", "bundle_from_model", "resolve_model", "read_card", "BUNDLED_MODELS", "FORMAT", "FORMAT_VERSION"]

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
        "normalisation": extra.pop("normalisation", {"log1p": bool(model.config.get("log1p", False)), "per_gene_scale": True}),
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
    except RecursionError:
        raise BundleError(f"{p}: model card is nested too deeply to read") from None
    return check_card(card, str(p))


# Bounds of the card's numeric fields (validated before any model is built).
CARD_BOUNDS = {"px_per_bin": (1, 1024), "tile_px": (1, 16384), "halo_px": (0, 16384)}
MAX_GENES = 100_000
#: Any integer in an architecture's ``config`` (channels, widths, counts) lies in this range, so an
#: architecture needs no list of its own keys here; it may add its own checks as ``check_config``.
CONFIG_INT_BOUNDS = (0, 1 << 20)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_config(config: dict, arch: str, source: str) -> None:
    def walk(v, where, depth=0):
        if depth > 4:
            raise BundleError(f"{source}: field {where!r} is nested too deeply")
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if _is_int(v):
            lo, hi = CONFIG_INT_BOUNDS
            if not lo <= v <= hi:
                raise BundleError(f"{source}: field {where!r} is {v}, outside [{lo}, {hi}]")
            return
        if isinstance(v, float):
            if not math.isfinite(v):
                raise BundleError(f"{source}: field {where!r} is {v}, not a finite number")
            return
        if isinstance(v, list):
            if len(v) > 1024:
                raise BundleError(f"{source}: field {where!r} lists {len(v)} values (at most 1024)")
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]", depth + 1)
            return
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}", depth + 1)
            return
        raise BundleError(f"{source}: field {where!r} has an unexpected type {type(v).__name__}")

    for k, v in config.items():
        walk(v, f"config.{k}")
    from .registry import ARCHITECTURES, _load_builtin

    _load_builtin()
    cls = ARCHITECTURES.get(arch)
    hook = getattr(cls, "check_config", None)
    if callable(hook):
        try:
            hook(config)
        except (TypeError, ValueError) as e:
            raise BundleError(f"{source}: field 'config' does not fit architecture {arch!r}: {e}") from None


def check_card(card, source: str) -> dict:
    """Check a model card's structure, types and bounds (no model is built). Returns the card."""
    if not isinstance(card, dict):
        raise BundleError(f"{source}: model card must be a JSON object, got {type(card).__name__}")
    p = source
    if card.get("format") != FORMAT:
        raise BundleError(f"{p}: field 'format' is {card.get('format')!r}, expected {FORMAT!r}")
    fv = card.get("format_version", -1)
    if not _is_int(fv):
        raise BundleError(f"{p}: field 'format_version' must be an integer, got {fv!r}")
    if fv > FORMAT_VERSION:
        raise BundleError(f"{p}: field 'format_version' {card.get('format_version')} is newer than this napari-gdt supports ({FORMAT_VERSION})")
    for k in REQUIRED:
        if k not in card:
            raise BundleError(f"{p}: model card lacks field {k!r}")
    if not (isinstance(card["arch"], str) and card["arch"]):
        raise BundleError(f"{p}: field 'arch' must be an architecture name, got {card['arch']!r}")
    if not isinstance(card["config"], dict):
        raise BundleError(f"{p}: field 'config' must be an object, got {type(card['config']).__name__}")
    genes = card["genes"]
    if not (isinstance(genes, list) and genes):
        raise BundleError(f"{p}: field 'genes' must be a non-empty list of gene names")
    if len(genes) > MAX_GENES:
        raise BundleError(f"{p}: field 'genes' lists {len(genes)} genes (at most {MAX_GENES})")
    for i, g in enumerate(genes):
        if not (isinstance(g, str) and g.strip() and g == g.strip()):
            raise BundleError(f"{p}: field 'genes' entry {i} is {g!r}, not a gene name (text without surrounding blanks)")
    for k, (lo, hi) in CARD_BOUNDS.items():
        v = card[k]
        if not (_is_int(v) and lo <= v <= hi):
            raise BundleError(f"{p}: field {k!r} must be an integer in [{lo}, {hi}], got {v!r}")
    u = card["um_per_px"]
    if not (isinstance(u, (int, float)) and not isinstance(u, bool) and math.isfinite(u) and 0 < u <= 1e4):
        raise BundleError(f"{p}: field 'um_per_px' must be a number in (0, 10000], got {u!r}")
    out = card["output"]
    if not isinstance(out, dict) or not isinstance(out.get("kind"), str):
        raise BundleError(f"{p}: field 'output' must be an object with a 'kind' (he or fluorescence), got {out!r}")
    ch = out.get("channels", [])
    if not (isinstance(ch, list) and len(ch) <= 1024 and all(isinstance(c, str) for c in ch)):
        raise BundleError(f"{p}: field 'output.channels' must be a list of channel names, got {ch!r}")
    for k in ("name",):
        if k in card and not isinstance(card[k], str):
            raise BundleError(f"{p}: field {k!r} must be text, got {card[k]!r}")
    for k in ("provenance", "validation", "normalisation"):
        if k in card and not isinstance(card[k], dict):
            raise BundleError(f"{p}: field {k!r} must be an object, got {type(card[k]).__name__}")
    _check_config(card["config"], card["arch"], p)
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


_ST_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
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


_ST_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class _AllocationGuard:
    """While a model is built from its card, count the bytes its tensor factories ask for and
    refuse (before allocating) once they pass ``budget``: a card cannot make us allocate much more
    than the tensors its file holds. Cheap: a torch function mode, no meta device."""

    def __init__(self, budget: float, source: str, held: float):
        from torch.overrides import TorchFunctionMode

        guard = self
        self.budget, self.source, self.held, self.total = float(budget), source, float(held), 0.0
        factories = {torch.empty, torch.zeros, torch.ones, torch.randn, torch.rand, torch.full, torch.randint, torch.empty_strided}

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
    with _AllocationGuard(budget=1.25 * held + (128 << 20), source=str(p), held=held):  # slack for buffers an architecture builds but does not save
        model = build(card["arch"], card["config"], source=str(p))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        parts = ([f"missing tensors: {', '.join(missing[:12])}"] if missing else []) + ([f"unexpected tensors: {', '.join(extra[:12])}"] if extra else [])
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
        raise BundleError(f"{p}: field 'config' does not fit architecture {card['arch']!r}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
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

