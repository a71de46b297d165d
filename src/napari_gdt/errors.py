"""Exceptions with messages that name the file, field or gene at fault."""

from __future__ import annotations


class GDTError(Exception):
    """Base class for user-facing errors (the CLI prints them on one line, exit 2)."""


class BundleError(GDTError):
    """A model bundle is missing, unreadable or inconsistent."""


class CanvasError(GDTError):
    """An expression canvas is unreadable or does not fit the request."""


class GenePanelError(CanvasError):
    """A canvas lacks genes that a model or recipe needs."""

    def __init__(self, missing: list[str], where: str = "canvas"):
        self.missing = list(missing)
        shown = ", ".join(self.missing[:20]) + (f" ... (+{len(self.missing) - 20} more)" if len(self.missing) > 20 else "")
        super().__init__(f"{where} lacks {len(self.missing)} gene(s) of the model panel: {shown}")


class RegionError(GDTError):
    """A region lies outside the canvas or is malformed."""


class ReaderError(GDTError):
    """An input file for a reader is missing fields or malformed."""


class RecipeError(GDTError):
    """An edit recipe is malformed or names something unknown."""


class DeviceMemoryError(GDTError):
    """The accelerator ran out of memory even at the smallest batch."""
