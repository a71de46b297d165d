"""Registry of generator architectures, by name."""

from __future__ import annotations

import contextlib

from ..errors import BundleError
from .base import TiledGenerator

__all__ = ["ARCHITECTURES", "register", "build"]

ARCHITECTURES: dict[str, type[TiledGenerator]] = {}


def register(cls: type[TiledGenerator]) -> type[TiledGenerator]:
    """Class decorator / function: make ``cls`` loadable by its ``arch`` name."""
    if not cls.arch:
        raise ValueError(f"{cls.__name__} has no arch name")
    ARCHITECTURES[cls.arch] = cls
    return cls


def build(arch: str, config: dict, source: str = "bundle") -> TiledGenerator:
    """Instantiate architecture ``arch`` from its JSON config."""
    _load_builtin()
    if arch not in ARCHITECTURES:
        raise BundleError(f"{source}: unknown architecture {arch!r} in field 'arch' (known: {', '.join(sorted(ARCHITECTURES))})")
    try:
        return ARCHITECTURES[arch](**config)
    except TypeError as e:
        raise BundleError(f"{source}: field 'config' does not fit architecture {arch!r}: {e}") from None


def _load_builtin() -> None:
    from .gdt import GDTGenerator
    from .gdt2 import GDT2Generator

    ARCHITECTURES.setdefault(GDTGenerator.arch, GDTGenerator)
    ARCHITECTURES.setdefault(GDT2Generator.arch, GDT2Generator)
    with contextlib.suppress(ImportError):  # optional architectures register themselves on import
        from . import ist  # noqa: F401
