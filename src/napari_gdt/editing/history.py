"""Undo/redo history of a recipe, with autosave; named gene sets. Pure Python, no Qt.

:class:`EditHistory` owns the current :class:`~napari_gdt.editing.recipe.Recipe`.
Every change (an edit pushed, undone or redone, a region set) is written to
the autosave file at once (atomically: a temporary file then a rename), so a
crash loses nothing; :meth:`EditHistory.restore` reopens it.

:class:`GeneSets` keeps named gene lists in a JSON file
(``{"name": ["G1", "G2"], ...}``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import RecipeError
from .recipe import Recipe, load_recipe
from .regions import RegionDef

__all__ = ["EditHistory", "GeneSets", "parse_gene_list", "default_gene_sets_path"]


def parse_gene_list(text: str) -> list[str]:
    """Split a pasted gene list (commas, semicolons, spaces, tabs or new lines); keeps order, drops repeats."""
    out: list[str] = []
    for g in re.split(r"[\s,;]+", text or ""):
        g = g.strip().strip("\"'")
        if g and g not in out:
            out.append(g)
    return out


class EditHistory:
    """An ordered list of edits with undo/redo over a fixed set of regions.

    Parameters
    ----------
    recipe : Recipe, optional
        Starting recipe (its edits count as done; they can be undone).
    autosave : path, optional
        Recipe file rewritten after every change.
    on_change : callable, optional
        Called with no arguments after every change.
    """

    def __init__(
        self, recipe: Recipe | None = None, autosave: str | Path | None = None, on_change: Callable[[], None] | None = None
    ):
        self.recipe = recipe.copy() if recipe is not None else Recipe(source="session recipe")
        self._redo: list[dict] = []
        self.autosave_path = Path(autosave) if autosave else None
        self.on_change = on_change
        self.lock = threading.RLock()  # shared with a StrokeAutosaver writing the same files

    # ------------------------------------------------------------ state
    @property
    def edits(self) -> list[dict]:
        return list(self.recipe.edits)

    @property
    def can_undo(self) -> bool:
        return bool(self.recipe.edits)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def describe(self) -> list[str]:
        """One line per edit, for a history list."""
        return [describe_edit(e) for e in self.recipe.edits]

    # ------------------------------------------------------------ changes
    def set_region(self, name: str, spec: dict, array: np.ndarray | None = None) -> None:
        """Add or replace a region (validated)."""
        reg = RegionDef(str(name), copy.deepcopy(spec), array)
        reg.validate(self.recipe.source)
        self.recipe.regions[reg.name] = reg
        self._changed()

    def remove_region(self, name: str) -> None:
        used = [
            i
            for i, e in enumerate(self.recipe.edits)
            if name in {e.get(f) for f in ("region", "from", "to", "source", "reference")}
        ]
        if used:
            raise RecipeError(f"region {name!r} is used by edit(s) {used}; undo them first")
        self.recipe.regions.pop(name, None)
        self._changed()

    def push(self, edit: dict) -> None:
        """Append an edit (validated against the regions); clears the redo stack."""
        edit = copy.deepcopy(edit)
        self.recipe.validate_edit(edit, len(self.recipe.edits))
        self.recipe.edits.append(edit)
        self._redo.clear()
        self._changed()

    def undo(self) -> dict | None:
        if not self.recipe.edits:
            return None
        e = self.recipe.edits.pop()
        self._redo.append(e)
        self._changed()
        return e

    def redo(self) -> dict | None:
        if not self._redo:
            return None
        e = self._redo.pop()
        self.recipe.edits.append(e)
        self._changed()
        return e

    def state(self) -> tuple[list, list]:
        """A copy of (edits, redo stack), for :meth:`set_state` (e.g. to roll back a failed edit)."""
        return copy.deepcopy(self.recipe.edits), copy.deepcopy(self._redo)

    def set_state(self, state: tuple[list, list]) -> None:
        """Restore (edits, redo stack) taken by :meth:`state`."""
        edits, redo = state
        self.recipe.edits[:] = copy.deepcopy(edits)
        self._redo[:] = copy.deepcopy(redo)
        self._changed()

    def touch(self) -> None:
        """Announce a change made in place (e.g. painted labels): autosave and notify."""
        self._changed()

    def clear(self) -> None:
        self.recipe.edits.clear()
        self._redo.clear()
        self._changed()

    # ------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        return self.recipe.save(path)

    def load(self, path: str | Path) -> None:
        """Replace the recipe by a recipe file (undo history starts afresh)."""
        self.recipe = load_recipe(path)
        self._redo.clear()
        self._changed()

    @classmethod
    def restore(cls, autosave: str | Path, on_change=None) -> EditHistory:
        """Reopen an autosaved session recipe."""
        h = cls(load_recipe(autosave), autosave=autosave, on_change=on_change)
        return h

    def save_autosave(self, labels: tuple[str, np.ndarray] | None = None) -> Path | None:
        """Write the autosave now (atomically); ``labels``: ``(file name, array)`` of a painted
        labels image saved beside it even when no region uses it yet."""
        if self.autosave_path is None:
            return None
        with self.lock:
            if labels is not None:
                from .regions import write_labels

                target = self.autosave_path.parent / labels[0]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.stem + ".tmp" + target.suffix)
                write_labels(tmp, np.array(labels[1], copy=True))
                os.replace(tmp, target)
            self.recipe.save(self.autosave_path)
        return self.autosave_path

    def _changed(self) -> None:
        self.save_autosave()
        if self.on_change is not None:
            self.on_change()


def describe_edit(e: dict) -> str:
    genes = e.get("genes")
    g = "all genes" if genes == "all" else ", ".join(genes[:4]) + (f" (+{len(genes) - 4})" if len(genes) > 4 else "")
    op = e.get("op")
    if op == "scale":
        return f"scale {g} x{e['factor']:g} in {e['region']}"
    if op == "set":
        return f"set {g} = {e['value']:g} in {e['region']}"
    if op == "add":
        return f"add {e['value']:+g} to {g} in {e['region']}"
    if op == "knockout":
        return f"knock out {g} in {e['region']}"
    if op == "transfer":
        return f"transfer {g}: {e['to']} -> {e['from']} (strength {e.get('strength', 1.0):g})"
    if op == "eigen":
        if "coef" in e:
            return f"eigen {g} in {e['region']}: top-{e.get('k', 1)} of {e['source']} x sqrt({e['coef']:g})"
        return f"eigen {g} in {e['region']}: {e['source']} -> {e['reference']} (k={e.get('k', 1)})"
    return json.dumps(e)


def default_gene_sets_path() -> Path:
    """Where saved gene sets live: ``$NAPARI_GDT_CONFIG/gene_sets.json`` or ``~/.config/napari-gdt/gene_sets.json``."""
    base = os.environ.get("NAPARI_GDT_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "napari-gdt")
    return Path(base) / "gene_sets.json"


class GeneSets:
    """Named gene lists persisted as JSON (``{"name": ["G1", ...]}``)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_gene_sets_path()
        self.sets: dict[str, list[str]] = {}
        if self.path.exists():
            try:
                d = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RecipeError(f"{self.path}: gene sets file is not valid JSON ({e})") from None
            if not isinstance(d, dict) or not all(isinstance(v, list) and all(isinstance(g, str) for g in v) for v in d.values()):
                raise RecipeError(f"{self.path}: gene sets file must map names to lists of gene names")
            self.sets = {str(k): list(v) for k, v in d.items()}

    def names(self) -> list[str]:
        return sorted(self.sets)

    def get(self, name: str) -> list[str]:
        if name not in self.sets:
            raise RecipeError(f"{self.path}: no gene set named {name!r}")
        return list(self.sets[name])

    def save_set(self, name: str, genes: list[str]) -> None:
        name = str(name).strip()
        if not name:
            raise RecipeError("a gene set needs a name")
        if not genes:
            raise RecipeError(f"gene set {name!r} is empty")
        self.sets[name] = list(genes)
        self._write()

    def remove(self, name: str) -> None:
        self.sets.pop(name, None)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.sets, indent=2) + "\n")
        os.replace(tmp, self.path)
