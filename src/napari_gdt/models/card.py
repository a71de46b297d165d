"""The model card of a bundle, read and cleaned without torch.

A bundle is a ``.safetensors`` file: an 8-byte little-endian header length, a
JSON header (tensor names, dtypes, shapes, byte offsets and a ``__metadata__``
dict of strings) and the raw tensor bytes. The card is the JSON string under
the metadata key ``napari_gdt``. Reading it needs only :mod:`json`, so
``napari-gdt info`` starts in a fraction of a second.

:func:`clean_card` makes a card fit to share: every absolute path (data files,
canvases, checkpoints, paths inside recorded commands) becomes the file's public
sample-data name (``her2st/C2/he.jpg``) or its bare file name, and long floats
in provenance and validation are rounded. :func:`rewrite_card` writes a bundle
with a new card and byte-identical tensors (``scripts/clean_card.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path

from ..errors import BundleError

__all__ = [
    "BUNDLED_MODELS",
    "CARD_BOUNDS",
    "CONFIG_INT_BOUNDS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_GENES",
    "META_KEY",
    "REQUIRED",
    "WEIGHTS_DIR",
    "check_card",
    "clean_card",
    "clean_path",
    "expected_input",
    "file_digest",
    "read_card",
    "read_header",
    "resolve_model",
    "rewrite_card",
]

FORMAT = "napari-gdt-bundle"
FORMAT_VERSION = 1
META_KEY = "napari_gdt"
REQUIRED = ("arch", "config", "genes", "px_per_bin", "um_per_px", "output", "tile_px", "halo_px")

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED_MODELS = {
    "her2st-he": "her2st-he.safetensors",
    "merfish-dapi": "merfish-dapi.safetensors",
}

_MAX_HEADER = 100_000_000


def resolve_model(name_or_path: str | Path) -> Path:
    """Map a bundled model name (``her2st-he``, ``merfish-dapi``) or a path to a file path."""
    s = str(name_or_path)
    if s in BUNDLED_MODELS:
        p = WEIGHTS_DIR / BUNDLED_MODELS[s]
        if not p.exists():
            raise BundleError(f"{s}: the bundled demo model file {p} is not installed with this package")
        return p
    return Path(s)


def read_header(path: str | Path) -> tuple[dict, int]:
    """The safetensors JSON header of ``path`` and the byte offset where tensor data start."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise BundleError(f"{p}: not a model bundle (file too short for a safetensors header)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise BundleError(f"{p}: not a model bundle (header length {n} is implausible)")
            text = f.read(n)
    except OSError as e:
        raise BundleError(f"{p}: cannot be read ({e.strerror})") from None
    if len(text) < n:
        raise BundleError(f"{p}: not a model bundle (unreadable or truncated safetensors header)")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{p}: not a model bundle (safetensors header is not JSON: {e})") from None
    except RecursionError:
        raise BundleError(f"{p}: not a model bundle (safetensors header is nested too deeply)") from None
    if not isinstance(header, dict):
        raise BundleError(f"{p}: not a model bundle (safetensors header is not a JSON object)")
    return header, 8 + n


def read_card(path: str | Path, arch_hook: bool = True) -> dict:
    """Read and check only the model card of a bundle (no tensors; torch only for ``arch_hook``)."""
    p = resolve_model(path)
    if not p.exists():
        raise BundleError(f"{p}: no such model file")
    if p.is_dir():
        raise BundleError(f"{p}: is a folder, not a model bundle (.safetensors)")
    header, start = read_header(p)
    ends = [v.get("data_offsets", [0, 0])[1] for v in _tensor_entries(header).values() if isinstance(v, dict)]
    if ends and start + max(ends) > p.stat().st_size:
        raise BundleError(
            f"{p}: not a model bundle (unreadable or truncated safetensors file: tensor data end past the end of the file)"
        )
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise BundleError(f"{p}: not a napari-gdt bundle (safetensors metadata has no '{META_KEY}' card)")
    try:
        card = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, TypeError) as e:
        raise BundleError(f"{p}: model card is not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"{p}: model card is nested too deeply to read") from None
    return check_card(card, str(p), arch_hook=arch_hook)


# Bounds of the card's numeric fields (validated before any model is built).
CARD_BOUNDS = {"px_per_bin": (1, 1024), "tile_px": (1, 16384), "halo_px": (0, 16384)}
MAX_GENES = 100_000
#: Any integer in an architecture's ``config`` (channels, widths, counts) lies in this range, so an
#: architecture needs no list of its own keys here; it may add its own checks as ``check_config``.
CONFIG_INT_BOUNDS = (0, 1 << 20)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_config(config: dict, arch: str, source: str, arch_hook: bool = True) -> None:
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
    if not arch_hook:
        return
    from .registry import ARCHITECTURES, _load_builtin  # imports the architectures (torch)

    _load_builtin()
    cls = ARCHITECTURES.get(arch)
    hook = getattr(cls, "check_config", None)
    if callable(hook):
        try:
            hook(config)
        except (TypeError, ValueError) as e:
            raise BundleError(f"{source}: field 'config' does not fit architecture {arch!r}: {e}") from None


#: Source files of the built-in architectures: their ``__init__`` annotations are read with ``ast``
#: (no import, no torch) to check a card's ``config`` types, e.g. for ``napari-gdt info``.
_ARCH_FILES = {"gdt-v1": "gdt.py", "ist-stylegan2": "ist.py"}
_SIMPLE = {"int", "float", "bool", "str", "None"}


@functools.lru_cache(maxsize=8)
def _arch_params(arch: str):
    """``({param: annotation}, takes **kwargs)`` of a built-in architecture's ``__init__``, or None."""
    import ast

    f = _ARCH_FILES.get(arch)
    if f is None or not (Path(__file__).parent / f).exists():
        return None
    tree = ast.parse((Path(__file__).parent / f).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        names = {t.id: n.value for n in node.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        if not (isinstance(names.get("arch"), ast.Constant) and names["arch"].value == arch):
            continue
        for fn in node.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                a = fn.args
                params = {
                    x.arg: (ast.unparse(x.annotation).replace(" ", "") if x.annotation else "") for x in a.args[1:] + a.kwonlyargs
                }
                return params, a.kwarg is not None
    return None


def _fits(v, ann: str):
    """True/False whether ``v`` (JSON) fits annotation ``ann``; None when the annotation is not understood."""
    alts = [x for x in ann.split("|") if x]
    if not alts:
        return None
    for a in alts:
        base = a.split("[", 1)[0]
        if base not in _SIMPLE | {"list", "tuple"}:
            return None
    for a in alts:
        base = a.split("[", 1)[0]
        if (
            (a == "None" and v is None)
            or (a == "int" and _is_int(v))
            or (a == "bool" and isinstance(v, bool))
            or (a == "str" and isinstance(v, str))
        ):
            return True
        if a == "float" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if base in ("list", "tuple") and isinstance(v, list):
            inner = a[len(base) + 1 : -1].split(",")[0] if "[" in a else ""
            if not inner or all(_fits(x, inner) is not False for x in v):
                return True
    return False


def _check_config_types(config: dict, arch: str, source: str) -> None:
    """The keys and value types of ``config`` against the architecture's ``__init__`` (torch-free)."""
    spec = _arch_params(arch)
    if spec is None:
        return
    params, var_kw = spec
    for k, v in config.items():
        if k not in params:
            if var_kw:
                continue
            raise BundleError(f"{source}: field 'config' does not fit architecture {arch!r}: unexpected key {k!r}")
        if _fits(v, params[k]) is False:
            raise BundleError(f"{source}: field 'config' does not fit architecture {arch!r}: {k} must be {params[k]}, got {v!r}")


def check_card(card, source: str, arch_hook: bool = True) -> dict:
    """Check a model card's structure, types and bounds (no model is built). Returns the card.

    ``arch_hook=False`` skips the architecture's own ``check_config`` (which needs torch); the
    generic bounds are still checked."""
    if not isinstance(card, dict):
        raise BundleError(f"{source}: model card must be a JSON object, got {type(card).__name__}")
    p = source
    if card.get("format") != FORMAT:
        raise BundleError(f"{p}: field 'format' is {card.get('format')!r}, expected {FORMAT!r}")
    fv = card.get("format_version", -1)
    if not _is_int(fv):
        raise BundleError(f"{p}: field 'format_version' must be an integer, got {fv!r}")
    if fv > FORMAT_VERSION:
        raise BundleError(
            f"{p}: field 'format_version' {card.get('format_version')} is newer than this napari-gdt supports ({FORMAT_VERSION})"
        )
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
    _check_config(card["config"], card["arch"], p, arch_hook=arch_hook)
    _check_config_types(card["config"], card["arch"], p)
    return card


def _tensor_entries(header: dict) -> dict:
    return {k: v for k, v in header.items() if k != "__metadata__"}


def file_digest(path: str | Path, card: dict | None = None) -> str:
    """The bundle digest that :func:`~napari_gdt.models.bundle.load_bundle` computes, from the raw
    file bytes (no torch): sha256 of the identity fields of the card, then each tensor's name and bytes."""
    p = resolve_model(path)
    card = card if card is not None else read_card(p)
    header, start = read_header(p)
    entries = _tensor_entries(header)
    size = p.stat().st_size
    h = hashlib.sha256(json.dumps({k: card[k] for k in ("arch", "config", "genes", "px_per_bin")}, sort_keys=True).encode())
    with open(p, "rb") as f:
        for k in sorted(entries):
            a, b = entries[k]["data_offsets"]
            if start + b > size:
                raise BundleError(f"{p}: tensor {k!r} runs past the end of the file (truncated file?)")
            f.seek(start + a)
            h.update(k.encode())
            h.update(f.read(b - a))
    return h.hexdigest()


def expected_input(card: dict) -> dict:
    """What the model expects of a canvas, from its card: ``bin_um`` (output px per bin x µm per px),
    ``bin_px`` (image px per bin of the spot canvases it was trained on, when all agree and the card
    records it, else None), ``spot_mode`` ("spread"/"footprint" when all training canvases agree,
    else None) and ``genes``."""
    data = (card.get("provenance") or {}).get("data") or {}
    canv = [c for c in (data.get("canvases") or []) if isinstance(c, dict)] if isinstance(data, dict) else []
    modes = {c.get("mode") for c in canv}
    bin_pxs = {float(c["bin_px"]) if c.get("bin_px") else None for c in canv}
    return {
        "bin_um": float(card["px_per_bin"]) * float(card["um_per_px"]),
        "bin_px": bin_pxs.pop() if len(bin_pxs) == 1 and None not in bin_pxs else None,
        "spot_mode": modes.pop() if len(modes) == 1 and None not in modes else None,
        "genes": list(card["genes"]),
    }


# --- cleaning -------------------------------------------------------------------------------------

# An absolute path inside a string: at the start or after a space, '=', quote or bracket.
_ABS = re.compile(r"""(?:^|(?<=[\s='"(\[]))(?:/|~/|[A-Za-z]:[\\/])[^\s'",;)\]]+""")
_GENERIC = {"last.pt", "best.pt", "checkpoint.pt", "model.pt"}


def clean_path(path: str) -> str:
    """A path as it may appear in a shared card: the public sample-data name when it is one of the
    registered demo files (``her2st/C2/he.jpg``), else the bare file name (with its folder for a
    generic name such as ``her2st-he.ckpt/last.pt``)."""
    from ..data import describe

    d = describe(path)
    if "source" in d:
        return str(d["file"])  # a registered sample-data file
    parts = re.split(r"[\\/]+", str(path).rstrip("/\\"))
    base = parts[-1] if parts else str(path)
    if (base in _GENERIC or re.fullmatch(r"(step_?)?\d+\.pt", base)) and len(parts) > 1:
        return f"{parts[-2]}/{base}"
    return base


def _clean_string(s: str) -> str:
    return _ABS.sub(lambda m: clean_path(m.group(0)), s)


def _round(x: float, sig: int) -> float:
    import math

    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{sig}g}")


def _walk(v, sig: int | None):
    if isinstance(v, dict):
        return {k: _walk(vv, sig) for k, vv in v.items()}
    if isinstance(v, list):
        return [_walk(vv, sig) for vv in v]
    if isinstance(v, str):
        return _clean_string(v)
    if isinstance(v, float) and sig is not None:
        return _round(v, sig)
    return v


def clean_card(card: dict, sig: int = 4, canvas_bin_px: float | None = None) -> dict:
    """A copy of ``card`` with no absolute paths anywhere and floats in ``provenance`` and
    ``validation`` rounded to ``sig`` significant digits. The fields that define the model
    (arch, config, genes, px_per_bin, um_per_px, output, tile/halo) are kept as they are.

    ``canvas_bin_px`` records the image px per bin of the training canvases where the card lacks it
    (cards written before ``write_bundle`` stored it; ``convert --model`` then lays spot data on the
    same grid)."""
    out = _walk(card, None)  # strings everywhere; numbers untouched
    for k in ("provenance", "validation"):
        if k in out:
            out[k] = _walk(out[k], sig)
    prov = out.get("provenance")
    if isinstance(prov, dict) and isinstance(prov.get("data"), dict):
        for c in prov["data"].get("canvases") or []:
            if isinstance(c, dict) and isinstance(c.get("path"), str) and c["path"]:
                c["path"] = clean_path(c["path"])
            if isinstance(c, dict) and canvas_bin_px and not c.get("bin_px"):
                c["bin_px"] = float(canvas_bin_px)
    return out


def rewrite_card(src: str | Path, card: dict, dst: str | Path | None = None) -> Path:
    """Write bundle ``src`` with ``card`` as its model card to ``dst`` (default: ``src``, replaced
    atomically). Tensor names, shapes, offsets and bytes are copied unchanged."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    header, start = read_header(src)
    meta = dict(header.get("__metadata__") or {})
    meta[META_KEY] = json.dumps(card)
    new = {"__metadata__": meta, **_tensor_entries(header)}
    text = json.dumps(new, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data section to 8 bytes
    tmp = dst.with_name(dst.name + ".tmp-card")
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(struct.pack("<Q", len(text)))
        g.write(text)
        f.seek(start)
        while chunk := f.read(1 << 20):
            g.write(chunk)
    os.replace(tmp, dst)
    return dst
