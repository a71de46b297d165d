"""Writing outputs without losing what the user made, and limits checked before allocating.

Rules (issue 17):

* an output that exists and is not our own (no marker of ours) is refused unless the caller
  passes ``overwrite=True`` (``--overwrite`` in the CLI);
* writing over an input (or into it, or around it) is refused;
* outputs are written to a temporary sibling and renamed into place, so a crash leaves either
  the old output or the new one, never half of one;
* grid and model sizes are estimated before anything is allocated and refused above a limit
  the user can raise with an environment variable.

Pure Python (no Qt, no napari); used by the CLI, the readers and the exporters.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from .errors import GDTError

__all__ = [
    "LIMITS",
    "OUR_ATTR",
    "atomic_dir",
    "atomic_file",
    "check_grid",
    "check_not_input",
    "check_output",
    "is_our_output",
    "limit",
]

OUR_ATTR = "napari_gdt"  # the key of our metadata in zarr attrs and safetensors headers
PNG_MARK = "napari-gdt"  # PNG tEXt "Software" / TIFF software tag written by our image writers

# name -> (environment variable, default, unit shown in messages)
LIMITS = {
    "bins": ("NAPARI_GDT_MAX_BINS", 1e8, "bins (y x x)"),
    "cells": ("NAPARI_GDT_MAX_CELLS", 1e11, "values (genes x y x x)"),
    "model_bytes": ("NAPARI_GDT_MAX_MODEL_BYTES", 4e9, "bytes of model weights"),
    "file_bytes": ("NAPARI_GDT_MAX_CHECKPOINT_BYTES", 8e9, "bytes of checkpoint"),
}


def limit(name: str) -> float:
    """The current limit ``name`` (its environment variable overrides the default)."""
    env, default, _ = LIMITS[name]
    v = os.environ.get(env)
    if v:
        try:
            return float(v)
        except ValueError:
            raise GDTError(f"environment variable {env}={v!r} is not a number") from None
    return float(default)


def _over(name: str, value: float, what: str) -> None:
    env, _, unit = LIMITS[name]
    lim = limit(name)
    if value > lim:
        raise GDTError(
            f"{what} would need {value:,.0f} {unit}, above the limit of {lim:,.0f} (raise it with {env}=N if this is intended)"
        )


def check_grid(shape: Iterable[int], source: str, hint: str = "check the units and the bin size (--bin-um / --bin-px)") -> None:
    """Refuse a (genes, y, x) grid larger than the limits, before it is rasterised."""
    g, h, w = (int(s) for s in shape)
    env_b, _, _ = LIMITS["bins"]
    if h * w > limit("bins"):
        raise GDTError(
            f"{source}: the grid would be {h:,} x {w:,} bins, above the limit of {limit('bins'):,.0f} bins; {hint} "
            f"(or raise {env_b}=N)"
        )
    _over("cells", float(g) * h * w, f"{source}: the canvas ({g} genes x {h:,} x {w:,} bins)")


def check_model_bytes(n_bytes: float, source: str) -> None:
    _over("model_bytes", n_bytes, f"{source}: the model its card describes")


# --------------------------------------------------------------------------- ownership
def _zarr_attrs(p: Path) -> dict | None:
    for name in (".zattrs", "zarr.json"):
        f = p / name
        if f.is_file():
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError, RecursionError):
                return None
            if name == "zarr.json":
                d = d.get("attributes", {}) if isinstance(d, dict) else {}
            return d if isinstance(d, dict) else None
    return None


def is_our_output(path: str | Path) -> bool:
    """True when ``path`` carries a marker of ours.

    A zarr folder whose attrs hold ``napari_gdt``, a ``.safetensors`` bundle whose header holds a
    ``napari_gdt`` card, or a PNG/TIFF/PDF written by our image and figure writers. A ``.npy``
    cannot carry a marker, so an existing one is never ours.
    """
    p = Path(path)
    if p.is_dir():
        attrs = _zarr_attrs(p)
        return bool(attrs) and OUR_ATTR in attrs
    if not p.is_file():
        return False
    name = p.name.lower()
    try:
        if name.endswith(".safetensors"):
            with open(p, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 0 < n < 100_000_000:
                    return False
                head = json.loads(fh.read(n))
            return isinstance(head, dict) and OUR_ATTR in (head.get("__metadata__") or {})
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(p) as im:
                return PNG_MARK in str(im.info.get("Software", ""))
        if name.endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(p) as tf:
                tag = tf.pages[0].tags.get("Software")
                return tag is not None and PNG_MARK in str(tag.value)
        if name.endswith(".pdf"):
            data = p.read_bytes()[-(1 << 20) :] if p.stat().st_size < (64 << 20) else b""
            return b"napari-gdt" in data
    except Exception:  # noqa: BLE001 - unreadable means "not ours"
        return False
    return False


def check_output(
    path: str | Path, overwrite: bool = False, what: str = "output", ours: Callable[[Path], bool] | None = None
) -> Path:
    """Check that ``path`` may be (re)written; returns it.

    Refused when a parent is a file, when ``path`` is a file where a folder is expected or the
    reverse, and when it exists and is not ours (unless ``overwrite``).
    """
    p = Path(path)
    for parent in [p.parent, *p.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise GDTError(f"{p}: cannot write the {what} here: {parent} is a file, not a folder")
        if parent.is_dir():
            break
    if p.exists() or p.is_symlink():
        mine = (ours or is_our_output)(p)
        if not mine and not overwrite:
            kind = "folder" if p.is_dir() else "file"
            raise GDTError(
                f"{p}: exists and is not a napari-gdt {what} (a {kind} we did not write); choose another path or pass "
                "--overwrite to replace it"
            )
    return p


def check_not_input(out: str | Path, inputs: Iterable, what: str = "--out") -> None:
    """Refuse an output that is one of the inputs, lies inside one, or contains one."""
    o = Path(out).resolve()
    for i in inputs:
        if i is None:
            continue
        try:
            q = Path(i).resolve()
        except (OSError, RuntimeError, TypeError, ValueError):
            continue
        if o == q or q in o.parents or o in q.parents:
            raise GDTError(f"{out}: {what} would overwrite the input {i}; write to another path")


def _sibling(p: Path, tag: str) -> Path:
    return p.parent / f".{p.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        with contextlib.suppress(OSError):
            p.unlink()


def _swap_into_place(tmp: Path, p: Path) -> None:
    if p.exists() or p.is_symlink():
        old = _sibling(p, "old")
        os.replace(p, old)
        try:
            os.replace(tmp, p)
        except BaseException:
            os.replace(old, p)
            raise
        _remove(old)
    else:
        os.replace(tmp, p)


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling folder path; on success it replaces ``path``, on failure it is removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(p, "tmp")
    try:
        yield tmp
        _swap_into_place(tmp, p)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary sibling file path (same suffix); on success it replaces ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{p.suffix}"
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        _remove(tmp)
        raise
