"""Edit recipes (JSON, version 1): load, validate, save, apply lazily, find dirty bins and tiles.

A recipe is a set of named regions and an ordered list of edits (see
``docs/recipes.md`` and the contract in ``CLI.md``). :meth:`Recipe.apply`
returns a new :class:`~napari_gdt.expression.canvas.ExpressionCanvas` whose
data is the original dask array with one ``map_blocks`` per edit: nothing is
computed until a tile reads its window, and each block only does work where it
meets the edit's region. Population statistics (``transfer`` means, ``eigen``
second moments) are computed once, up front, from the masked bins of the
canvas as the earlier edits left it.

Bins that an edit does not change keep their exact bytes, so a content-keyed
tile cache recomputes only tiles whose input window (tile + halo) touches a
changed bin; :func:`dirty_tiles` lists exactly those.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import RecipeError
from ..expression.canvas import ExpressionCanvas
from . import ops
from .regions import RegionDef, read_labels, write_labels

__all__ = [
    "Recipe",
    "load_recipe",
    "apply_recipe_file",
    "dirty_bins",
    "changed_bins",
    "dirty_tiles",
    "OPS",
    "MAX_EIGEN_GENES",
]

RECIPE_VERSION = 1
MAX_EIGEN_GENES = 4096

# op -> (required fields, optional fields with defaults). "genes" is a list of names or "all".
OPS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "scale": (("region", "genes", "factor"), {"others": 1.0}),
    "set": (("region", "genes", "value"), {}),
    "add": (("region", "genes", "value"), {}),
    "knockout": (("region", "genes"), {}),
    "transfer": (("from", "to", "genes"), {"strength": 1.0}),
    "eigen": (("region", "source", "genes"), {"reference": None, "coef": None, "k": 1, "strength": 1.0, "basis": "all"}),
}
_REGION_FIELDS = ("region", "from", "to", "source", "reference")
_NUM_FIELDS = {"factor", "others", "value", "strength", "coef"}


def _is_num(v) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:  # an integer with hundreds of digits
        return False


#: Sane ranges of the numeric fields: a factor of 1e300 overflows float32 to inf and NaN.
NUM_RANGES = {"factor": (0.0, 1e6), "others": (0.0, 1e6), "coef": (0.0, 1e6), "value": (-1e9, 1e9), "strength": (0.0, 1.0)}


def _target_region(edit: dict) -> str:
    """The region whose bins an edit changes."""
    return edit["to"] if edit["op"] == "transfer" else edit["region"]


@dataclass
class Recipe:
    """Named regions and an ordered list of edits.

    Attributes
    ----------
    regions : dict of str -> RegionDef
    edits : list of dict
        Each edit is the recipe's JSON object (``{"op": ..., ...}``).
    base_dir : Path, optional
        Folder that relative ``labels`` paths are resolved against.
    source : str
        Name used in error messages (the recipe file, or ``"recipe"``).
    """

    regions: dict[str, RegionDef] = field(default_factory=dict)
    edits: list[dict] = field(default_factory=list)
    base_dir: Path | None = None
    source: str = "recipe"
    version: int = RECIPE_VERSION

    # ------------------------------------------------------------ build/IO
    @classmethod
    def from_dict(cls, d: Any, source: str = "recipe", base_dir: str | Path | None = None) -> Recipe:
        """Build and validate (structure only) a recipe from its JSON object."""
        if not isinstance(d, dict):
            raise RecipeError(f"{source}: a recipe must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"version", "regions", "edits"})
        if unknown:
            raise RecipeError(
                f"{source}: unknown top-level field(s) {', '.join(map(repr, unknown))} (expected version, regions, edits)"
            )
        if d.get("version") != RECIPE_VERSION:
            raise RecipeError(f"{source}: field 'version' must be {RECIPE_VERSION}, got {d.get('version')!r}")
        regs = d.get("regions", {})
        if not isinstance(regs, dict):
            raise RecipeError(f"{source}: field 'regions' must be an object of name -> region")
        edits = d.get("edits", [])
        if not isinstance(edits, list):
            raise RecipeError(f"{source}: field 'edits' must be a list")
        r = cls(
            regions={str(k): RegionDef(str(k), copy.deepcopy(v)) for k, v in regs.items()},
            edits=[copy.deepcopy(e) for e in edits],
            base_dir=Path(base_dir) if base_dir is not None else None,
            source=str(source),
        )
        r.validate()
        return r

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "regions": {n: copy.deepcopy(r.spec) for n, r in self.regions.items()},
            "edits": copy.deepcopy(self.edits),
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write the recipe (atomically) and any in-memory labels images next to it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        written = set()
        for reg in self.regions.values():
            if reg.kind == "labels":
                rel = reg.spec["labels"]
                target = Path(rel) if Path(rel).is_absolute() else path.parent / rel
                if reg.array is None:
                    src = Path(rel) if Path(rel).is_absolute() or self.base_dir is None else self.base_dir / rel
                    if src.resolve() == target.resolve():
                        continue  # already there
                    reg.array = read_labels(src)
                if target not in written:
                    tmp = target.with_name(target.stem + ".tmp" + target.suffix)
                    write_labels(tmp, reg.array)
                    os.replace(tmp, target)
                    written.add(target)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        os.replace(tmp, path)
        self.base_dir = path.parent
        return path

    def copy(self) -> Recipe:
        return Recipe(
            regions={
                n: RegionDef(n, copy.deepcopy(r.spec), None if r.array is None else r.array) for n, r in self.regions.items()
            },
            edits=copy.deepcopy(self.edits),
            base_dir=self.base_dir,
            source=self.source,
            version=self.version,
        )

    # ---------------------------------------------------------- validation
    def validate(self) -> None:
        """Check structure: known ops, fields, value types, region names. No canvas needed."""
        src = self.source
        for reg in self.regions.values():
            reg.validate(src)
        for i, e in enumerate(self.edits):
            self.validate_edit(e, i)

    def validate_edit(self, e: Any, i: int | None = None) -> None:
        src = self.source
        where = f"{src}: edit {i}" if i is not None else f"{src}: edit"
        if not isinstance(e, dict):
            raise RecipeError(f"{where} must be an object, got {type(e).__name__}")
        op = e.get("op")
        if op not in OPS:
            raise RecipeError(f"{where}: unknown op {op!r} (expected one of {', '.join(OPS)})")
        where = f"{where} ({op})"
        req, opt = OPS[op]
        missing = [f for f in req if f not in e]
        if missing:
            raise RecipeError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
        extra = sorted(set(e) - set(req) - set(opt) - {"op"})
        if extra:
            raise RecipeError(f"{where}: unknown field(s) {', '.join(map(repr, extra))}")
        for f in _REGION_FIELDS:
            if f in e:
                if not isinstance(e[f], str):
                    raise RecipeError(f"{where}: field {f!r} must be a region name, got {e[f]!r}")
                if e[f] not in self.regions:
                    known = ", ".join(sorted(self.regions)) or "none defined"
                    raise RecipeError(f"{where}: unknown region {e[f]!r} in field {f!r} (regions: {known})")
        g = e["genes"]
        if g != "all":
            if not (isinstance(g, list) and g and all(isinstance(x, str) and x.strip() for x in g)):
                raise RecipeError(f"{where}: field 'genes' must be \"all\" or a non-empty list of gene names, got {g!r}")
            dup = sorted({x for x in g if g.count(x) > 1})
            if dup:
                raise RecipeError(f"{where}: gene(s) listed twice in 'genes': {', '.join(dup)}")
        for f in _NUM_FIELDS:
            if f in e and not _is_num(e[f]):
                shown = repr(e[f]) if len(repr(e[f])) <= 40 else repr(e[f])[:37] + "..."
                raise RecipeError(f"{where}: field {f!r} must be a finite number, got {shown}")
        for f in ("factor", "others", "coef"):
            if f in e and e[f] > NUM_RANGES[f][1]:
                raise RecipeError(f"{where}: field {f!r} is {e[f]:g}, above the sane maximum {NUM_RANGES[f][1]:g}")
        if op in ("set", "add") and abs(e["value"]) > NUM_RANGES["value"][1]:
            raise RecipeError(
                f"{where}: field 'value' is {e['value']:g}, outside the sane range [-{NUM_RANGES['value'][1]:g}, "
                f"{NUM_RANGES['value'][1]:g}] counts"
            )
        if op == "scale" and (e["factor"] < 0 or e.get("others", 1.0) < 0):
            bad = "factor" if e["factor"] < 0 else "others"
            raise RecipeError(f"{where}: field {bad!r} must be >= 0 (counts stay non-negative), got {e[bad]!r}")
        if op == "set" and e["value"] < 0:
            raise RecipeError(f"{where}: field 'value' must be >= 0 counts, got {e['value']!r}")
        if "strength" in e and not (0.0 <= e["strength"] <= 1.0):
            raise RecipeError(f"{where}: field 'strength' must lie in [0, 1], got {e['strength']!r}")
        if op == "eigen":
            if ("reference" in e) == ("coef" in e):
                raise RecipeError(
                    f"{where}: give either 'reference' (match a reference population) or 'coef' (rescale the source's own top-k "
                    f"eigen-directions), not {'both' if 'coef' in e else 'neither'}"
                )
            if "coef" in e and e["coef"] < 0:
                raise RecipeError(f"{where}: field 'coef' must be >= 0, got {e['coef']!r}")
            k = e.get("k", 1)
            if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
                raise RecipeError(f"{where}: field 'k' must be an integer >= 1, got {k!r}")
            if e.get("basis", "all") not in ("all", "genes"):
                raise RecipeError(f'{where}: field \'basis\' must be "all" or "genes", got {e.get("basis")!r}')

    def check_regions(self, canvas: ExpressionCanvas, masks: dict[str, np.ndarray]) -> None:
        """Every region an edit uses covers at least one bin; eigen's ``k`` fits its gene basis."""
        H, W = canvas.n_bins
        for i, e in enumerate(self.edits):
            where = f"{self.source}: edit {i} ({e['op']})"
            for f in _REGION_FIELDS:
                name = e.get(f)
                if name is None or name not in masks or masks[name].any():
                    continue
                reg = self.regions[name]
                if reg.kind == "labels":
                    why = f"label value {reg.spec.get('value')} does not occur in {reg.spec.get('labels')}"
                elif reg.kind == "gene":
                    why = "no bin passes its threshold"
                else:
                    why = f"it lies outside the canvas ({H} x {W} bins)"
                raise RecipeError(f"{where}: region {name!r} is empty on this canvas (field {f!r}: {why})")
            if e["op"] == "eigen":
                n = (
                    len(canvas.genes)
                    if e.get("basis", "all") == "all"
                    else (len(canvas.genes) if e["genes"] == "all" else len(e["genes"]))
                )
                k = int(e.get("k", 1))
                if k > n:
                    raise RecipeError(f"{where}: field 'k' is {k} but the eigen basis has only {n} gene(s)")

    def check_canvas(self, canvas: ExpressionCanvas) -> None:
        """Check that every gene the recipe names is in the canvas."""
        have = set(canvas.genes)
        for i, e in enumerate(self.edits):
            if e["genes"] != "all":
                missing = [g for g in e["genes"] if g not in have]
                if missing:
                    s = "s" if len(missing) > 1 else ""
                    raise RecipeError(
                        f"{self.source}: edit {i} ({e['op']}): unknown gene{s} {', '.join(map(repr, missing))} (not in the "
                        "canvas)"
                    )
        for reg in self.regions.values():
            if reg.kind == "gene" and reg.spec["gene"] not in have:
                raise RecipeError(f"{self.source}: region {reg.name!r}: unknown gene {reg.spec['gene']!r} (not in the canvas)")

    # ------------------------------------------------------------- masks
    def masks(self, canvas: ExpressionCanvas, px_per_bin: float, names=None) -> dict[str, np.ndarray]:
        """Bool masks ``(Hb, Wb)`` of the named regions (default: all)."""
        names = list(self.regions) if names is None else list(names)
        return {n: self.regions[n].mask(canvas, px_per_bin, self.base_dir, self.source) for n in names}

    def used_regions(self) -> list[str]:
        seen: list[str] = []
        for e in self.edits:
            for f in _REGION_FIELDS:
                if f in e and e[f] not in seen:
                    seen.append(e[f])
        return seen

    def edit_mask(self, canvas: ExpressionCanvas, px_per_bin: float) -> np.ndarray:
        """Union of the regions the edits change (a superset of the changed bins)."""
        out = np.zeros(canvas.n_bins, dtype=bool)
        targets = {_target_region(e) for e in self.edits}
        for m in self.masks(canvas, px_per_bin, [t for t in self.regions if t in targets]).values():
            out |= m
        return out

    # ------------------------------------------------------------- apply
    def apply(self, canvas: ExpressionCanvas, px_per_bin: float) -> ExpressionCanvas:
        """The edited canvas (lazy). The input canvas is not modified."""
        self.validate()
        self.check_canvas(canvas)
        if not self.edits:
            return canvas
        masks = self.masks(canvas, px_per_bin, self.used_regions())
        self.check_regions(canvas, masks)
        index = {g: i for i, g in enumerate(canvas.genes)}
        data = canvas.data
        if data.dtype != np.float32:
            data = data.astype(np.float32)
        for i, e in enumerate(self.edits):
            data = self._apply_edit(data, i, e, masks, index)
        meta = dict(canvas.meta)
        meta["recipe"] = self.to_dict()
        return ExpressionCanvas(data=data, genes=list(canvas.genes), bin_um=canvas.bin_um, affine=canvas.affine.copy(), meta=meta)

    def _apply_edit(self, data: da.Array, i: int, e: dict, masks: dict, index: dict) -> da.Array:
        op = e["op"]
        where = f"{self.source}: edit {i} ({op})"
        gi = list(range(data.shape[0])) if e["genes"] == "all" else [index[g] for g in e["genes"]]
        mask = masks[_target_region(e)]
        if op == "scale":
            fn = functools.partial(ops.scale, factor=float(e["factor"]), others=float(e.get("others", 1.0)))
            if float(e.get("others", 1.0)) != 1.0:
                return _map_full_genes(data, mask, fn, gi)
        elif op == "set":
            fn = functools.partial(ops.set_value, value=float(e["value"]))
        elif op == "add":
            fn = functools.partial(ops.add, value=float(e["value"]))
        elif op == "knockout":
            fn = ops.knockout
        elif op == "transfer":
            mean_from, _, n_from = _masked_stats(data, masks[e["from"]], gi)
            mean_to, _, n_to = _masked_stats(data, mask, gi)
            for name, n in ((e["from"], n_from), (e["to"], n_to)):
                if n == 0:
                    raise RecipeError(f"{where}: region {name!r} is empty on this canvas")
            return _map_genes(
                data,
                mask,
                gi,
                lambda blk, m, local, sel: ops.transfer(
                    blk, m, local, mean_from[sel], mean_to[sel], float(e.get("strength", 1.0))
                ),
            )
        elif op == "eigen":
            basis = gi if e.get("basis", "all") == "genes" else list(range(data.shape[0]))
            if len(basis) > MAX_EIGEN_GENES:
                raise RecipeError(
                    f"{where}: eigen over {len(basis)} genes needs a {len(basis)}x{len(basis)} moment; "
                    f'use "basis": "genes" with at most {MAX_EIGEN_GENES} genes'
                )
            _, m_src, n_src = _masked_stats(data, masks[e["source"]], basis, moment=True)
            pops = [(e["source"], n_src)]
            if "coef" in e:
                A, _ = ops.eigen_rescale_transform(m_src, k=int(e.get("k", 1)), coef=float(e["coef"]))
            else:
                _, m_ref, n_ref = _masked_stats(data, masks[e["reference"]], basis, moment=True)
                pops.append((e["reference"], n_ref))
                A, _ = ops.eigen_transform(m_src, m_ref, k=int(e.get("k", 1)))
            for name, n in pops:
                if n == 0:
                    raise RecipeError(f"{where}: region {name!r} is empty on this canvas")
            fn = functools.partial(ops.eigen, transform=A, basis=basis, strength=float(e.get("strength", 1.0)))
            return _map_full_genes(data, mask, fn, gi)
        else:  # pragma: no cover - validated before
            raise RecipeError(f"{where}: unknown op")
        return _map_genes(data, mask, gi, lambda blk, m, local, sel: fn(blk, m, local))


def _map_genes(data: da.Array, mask: np.ndarray, gi: list[int], fn) -> da.Array:
    """map_blocks for a per-gene op: ``fn(block, block_mask, local_gene_idx, selection)``.

    ``selection`` indexes ``gi`` (for per-gene parameters such as means).
    Blocks that miss the mask or hold none of the genes are returned as they are.
    """
    gi_arr = np.asarray(gi, dtype=np.intp)

    def block_fn(block, block_info=None):
        (g0, g1), (y0, y1), (x0, x1) = block_info[0]["array-location"]
        m = mask[y0:y1, x0:x1]
        if not m.any():
            return block
        sel = np.nonzero((gi_arr >= g0) & (gi_arr < g1))[0]
        if sel.size == 0:
            return block
        return fn(block, m, gi_arr[sel] - g0, sel)

    return data.map_blocks(block_fn, dtype=np.float32, meta=np.empty((0, 0, 0), dtype=np.float32))


def _map_full_genes(data: da.Array, mask: np.ndarray, fn, gi: list[int]) -> da.Array:
    """map_blocks for an op that needs every gene of a bin at once (gene axis in one chunk)."""
    if data.numblocks[0] > 1:
        data = data.rechunk({0: -1})

    def block_fn(block, block_info=None):
        (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
        m = mask[y0:y1, x0:x1]
        if not m.any():
            return block
        return fn(block, m, gi)

    return data.map_blocks(block_fn, dtype=np.float32, meta=np.empty((0, 0, 0), dtype=np.float32))


def _bbox(mask: np.ndarray):
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return None
    cols = np.nonzero(mask.any(axis=0))[0]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _slabs(data: da.Array, y0: int, y1: int):
    """Row slabs of ``[y0, y1)`` that follow the array's y chunks (bounded memory)."""
    step = max(int(data.chunks[1][0]) if data.chunks[1] else 256, 1)
    ya = y0
    while ya < y1:
        yb = min((ya // step + 1) * step, y1)
        yield ya, yb
        ya = yb


def _masked_stats(data: da.Array, mask: np.ndarray, gi: list[int], moment: bool = False):
    """Mean profile (g,), optional uncentred second moment (g, g) and count of the masked bins.

    Read slab by slab over the mask's bounding box, so memory follows one slab.
    """
    g = len(gi)
    total = np.zeros(g, dtype=np.float64)
    M = np.zeros((g, g), dtype=np.float64) if moment else None
    n = 0
    box = _bbox(mask)
    if box is None:
        return total, M, 0
    y0, y1, x0, x1 = box
    sub = data[np.asarray(gi, dtype=np.intp)] if g != data.shape[0] or list(gi) != list(range(data.shape[0])) else data
    for ya, yb in _slabs(data, y0, y1):
        m = mask[ya:yb, x0:x1]
        if not m.any():
            continue
        x = np.asarray(sub[:, ya:yb, x0:x1], dtype=np.float64)[:, m]  # (g, n)
        total += x.sum(axis=1)
        if moment:
            M += x @ x.T
        n += x.shape[1]
    if n:
        total /= n
        if moment:
            M /= n
    return total, M, n


# ---------------------------------------------------------------- files
def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (structure; genes are checked when applied)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text (JSON) file") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to be a recipe") from None
    except ValueError as e:  # e.g. an integer too long to convert
        raise RecipeError(f"{path}: not a readable recipe ({' '.join(str(e).split())[:120]})") from None
    return Recipe.from_dict(d, source=str(path), base_dir=path.parent)


def apply_recipe_file(path: str | Path, canvas: ExpressionCanvas, px_per_bin: float) -> ExpressionCanvas:
    """Load a recipe file and apply it to ``canvas`` (lazily)."""
    return load_recipe(path).apply(canvas, px_per_bin)


# ------------------------------------------------------- dirty bins/tiles
def changed_bins(a: ExpressionCanvas, b: ExpressionCanvas, candidate: np.ndarray | None = None) -> np.ndarray:
    """Bins where any gene differs between two canvases of the same shape.

    Only bins in ``candidate`` (default: all) are compared, slab by slab over
    its bounding box.
    """
    if a.shape != b.shape:
        raise ValueError(f"canvases differ in shape: {a.shape} vs {b.shape}")
    out = np.zeros(a.n_bins, dtype=bool)
    cand = np.ones(a.n_bins, dtype=bool) if candidate is None else np.asarray(candidate, dtype=bool)
    box = _bbox(cand)
    if box is None or a.data is b.data:
        return out
    y0, y1, x0, x1 = box
    for ya, yb in _slabs(a.data, y0, y1):
        xa = np.asarray(a.data[:, ya:yb, x0:x1])
        xb = np.asarray(b.data[:, ya:yb, x0:x1])
        out[ya:yb, x0:x1] = (xa != xb).any(axis=0) & cand[ya:yb, x0:x1]
    return out


def dirty_bins(recipe: Recipe, canvas: ExpressionCanvas, px_per_bin: float, exact: bool = True) -> np.ndarray:
    """Bool mask ``(Hb, Wb)`` of the bins the recipe changes.

    With ``exact`` (default) the edited values are compared with the
    originals inside the edited regions (a bin scaled from 0 to 0 is not
    dirty); otherwise the union of the edited regions is returned.
    """
    cand = recipe.edit_mask(canvas, px_per_bin)
    if not exact:
        return cand
    return changed_bins(canvas, recipe.apply(canvas, px_per_bin), cand)


def dirty_tiles(renderer, dirty_mask: np.ndarray) -> list:
    """Grid tiles (``TileSpec``, row-major) whose input window touches a dirty bin.

    A tile's input window is ``TileSpec.win`` (the tile plus its halo, in bins).
    """
    m = np.asarray(dirty_mask, dtype=bool)
    H, W = m.shape
    if not m.any():
        return []
    ii = np.zeros((H + 1, W + 1), dtype=np.int64)
    ii[1:, 1:] = m.cumsum(0).cumsum(1)
    gy, gx = renderer.grid_shape

    def span(b0, n, size):
        return max(b0, 0), min(b0 + n, size)

    row_win = [span(*(lambda s: (s.win[0], s.win[2]))(renderer.tile(ty, 0)), H) for ty in range(gy)]
    col_win = [span(*(lambda s: (s.win[1], s.win[3]))(renderer.tile(0, tx)), W) for tx in range(gx)]
    rows_hit = np.concatenate([[0], np.cumsum(m.any(axis=1))])
    cols_hit = np.concatenate([[0], np.cumsum(m.any(axis=0))])
    out = []
    for ty, (ya, yb) in enumerate(row_win):
        if ya >= yb or rows_hit[yb] == rows_hit[ya]:
            continue
        for tx, (xa, xb) in enumerate(col_win):
            if xa >= xb or cols_hit[xb] == cols_hit[xa]:
                continue
            if ii[yb, xb] - ii[ya, xb] - ii[yb, xa] + ii[ya, xa] > 0:
                out.append(renderer.tile(ty, tx))
    return out
