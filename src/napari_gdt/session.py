"""The Session: the viewer's state, in one evented, Qt-free object that the widgets share.

A :class:`Session` owns what the dock widgets used to keep each for itself:

* the model bundle, the expression canvas, ``px_per_bin`` (read from the model
  card: one source), the seed, the device, the tile cache and the tile scheduler;
* the lazy pyramids (``generated``, ``generated (edited)``, ...) that napari layers show;
* the edit history (regions + edits), the edited canvas, and the **one
  incremental render path** after an edit: candidate tiles are those whose input
  window touches a bin of the current edits; of those, the ones whose content hash
  did not change are taken over from the ``generated`` pyramid (never recomputed),
  the others are computed by the worker where the user looks (cache first);
* region statistics (mean counts per bin before and after the edits) and the
  ``|edited - generated|`` difference arrays.

It is evented with psygnal (the same library as napari's events, but no napari
import): widgets connect to :attr:`Session.events` and call the Session's
methods; they never hold this state and never reach into each other. Tile
events (``tiles``, ``progress``, ``error``) are emitted on the **worker thread**:
a GUI must hand them to its main thread (the generator widget does this with a
Qt signal).

Example (no display needed)::

    s = Session(bundle, canvas, seed=0)
    gen = s.generate()                 # lazy: nothing computed yet
    s.set_region("tumour", {"box": [0, 64, 0, 64]})
    info = s.apply_edit({"op": "scale", "region": "tumour", "genes": ["ERBB2"], "factor": 4})
    info["changed"]                    # the tiles whose pixels change
    s.edited_pyramid.compute_region()  # blocking render of the edited image
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal, SignalGroup

from .editing.history import EditHistory
from .editing.recipe import dirty_tiles
from .errors import GDTError
from .rendering.difference import difference_levels
from .rendering.pyramid import TilePyramid
from .rendering.tiles import Region, TileRenderer

__all__ = ["EDITED", "GENERATED", "MAX_CHECKS", "EditInfo", "Session", "SessionEvents"]

GENERATED = "generated"
EDITED = "generated (edited)"
#: At most this many candidate tiles of an edit have their content hash compared when the edit is
#: applied (about 1-3 ms each, on the caller's thread: the UI thread in napari); the rest are settled
#: by the worker and the tile cache.
MAX_CHECKS = 128


class SessionEvents(SignalGroup):
    """Events of a :class:`Session` (psygnal signals; ``connect`` a callable to each)."""

    bundle = Signal(object)  #: the model changed (the new GeneratorBundle)
    canvas = Signal(object)  #: the expression canvas changed
    seed = Signal(int)  #: the seed changed (call ``generate`` to see it)
    pyramid = Signal(str, object)  #: (name, TilePyramid) shown or replaced; (name, None) when closed
    history = Signal()  #: regions or edits changed (undo/redo availability too)
    edited = Signal(object)  #: the edited pyramid was rebuilt after an edit, undo or redo (an EditInfo)
    tiles = Signal()  #: tiles or previews arrived (worker thread)
    progress = Signal(int, int)  #: (done, queued) of the tile worker (worker thread)
    error = Signal(str)  #: a tile computation failed (worker thread)


@dataclass
class EditInfo:
    """What an edit (or undo/redo) changed in the edited pyramid."""

    edits: int  #: number of edits now in the recipe
    changed: list = field(default_factory=list)  #: tiles (ty, tx) that are recomputed or fetched from the cache
    unchecked: int = 0  #: of those, how many were not compared with the original (more than ``MAX_CHECKS``)
    adopted: int = 0  #: tiles taken over from the generated pyramid
    pyramid: TilePyramid | None = None
    computed0: int = 0  #: renderer counters when the pyramid was built (for "computed since")
    cached0: int = 0

    def progress(self) -> tuple[int, int]:
        """Tiles (computed, served from the cache) since this edit."""
        if self.pyramid is None:
            return 0, 0
        st = self.pyramid.renderer.stats
        return int(st["computed"]) - self.computed0, int(st["cached"]) - self.cached0


class Session:
    """The state of one viewing/editing session (see the module docstring).

    Parameters
    ----------
    bundle : GeneratorBundle, optional
    canvas : ExpressionCanvas, optional
    seed : int
        Seed of the global latent and the noise.
    device : str
        ``auto`` (CUDA > MPS > CPU), ``cpu``, ``cuda``, ``mps``.
    cache : str, Path, tile cache object or None
        A folder for the on-disk tile cache (kept across sessions), a cache object
        (``MemoryTileCache``, ...), or None for memory only.
    num_threads : int, optional
        Tile worker threads (default: cores - 1, leaving one to the UI).
    nice : int
        OS priority decrement of the tile worker thread (Linux).
    autosave : path, optional
        Recipe file rewritten after every change of the edit history.
    """

    def __init__(
        self,
        bundle=None,
        canvas=None,
        *,
        seed: int = 0,
        device: str = "auto",
        cache=None,
        num_threads: int | None = None,
        nice: int = 0,
        autosave=None,
    ):
        self.events = SessionEvents()
        self._bundle = bundle
        self._canvas = canvas
        self._seed = int(seed)
        self.device = str(device)
        self.num_threads = num_threads
        self.nice = int(nice)
        self._caches: dict = {}
        self._cache_arg = cache
        self._scheduler = None
        self._pyramids: dict[str, TilePyramid] = {}
        self._orig_keys: dict = {}
        self.edit_info: EditInfo | None = None
        self.history = EditHistory(autosave=autosave, on_change=self.events.history.emit)

    # ================================================================ state
    @property
    def bundle(self):
        """The generator bundle (None before a model is loaded)."""
        return self._bundle

    @bundle.setter
    def bundle(self, bundle) -> None:
        if bundle is self._bundle:
            return
        self._bundle = bundle
        self.events.bundle.emit(bundle)

    @property
    def canvas(self):
        """The (original, unedited) expression canvas."""
        return self._canvas

    @canvas.setter
    def canvas(self, canvas) -> None:
        if canvas is self._canvas:
            return
        self._canvas = canvas
        self.events.canvas.emit(canvas)

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, seed: int) -> None:
        seed = int(seed)
        if seed != self._seed:
            self._seed = seed
            self.events.seed.emit(seed)

    @property
    def px_per_bin(self) -> int | None:
        """Output px per expression bin: the model card's (the one source); None without a model."""
        return None if self._bundle is None else int(self._bundle.px_per_bin)

    def load_model(self, path_or_name, device: str | None = None):
        """Load a bundle file or bundled model name (on ``device``, default the session's) and use it."""
        from .models.bundle import load_bundle

        if device is not None:
            self.device = str(device)
        self.bundle = load_bundle(path_or_name, device=self.device)
        return self.bundle

    def require(self, canvas: bool = True) -> None:
        """Raise one clear GDTError when the model (or the canvas) is missing."""
        if self._bundle is None or (canvas and self._canvas is None):
            raise GDTError("load a model and an expression canvas first" if canvas else "load a model first")

    # ---------------------------------------------------------------- cache and worker
    @property
    def cache(self):
        """The tile cache shared by every pyramid of the session (opened once per folder)."""
        from .rendering.cache import open_cache

        arg = self._cache_arg
        if arg is not None and not isinstance(arg, (str, os.PathLike)):
            return arg
        folder = str(arg or "")
        if folder not in self._caches:
            self._caches[folder] = open_cache(folder or None)
        return self._caches[folder]

    @cache.setter
    def cache(self, folder_or_cache) -> None:
        self._cache_arg = folder_or_cache or None

    @property
    def scheduler(self):
        """The one tile worker shared by all pyramids (started on first use)."""
        from .rendering.scheduler import TileScheduler

        if self._scheduler is None or self._scheduler.closed:
            threads = self.num_threads or max(1, (os.cpu_count() or 2) - 1)  # leave a core to the UI thread
            self._scheduler = TileScheduler(
                num_threads=threads,
                nice=self.nice,
                on_progress=lambda done, queued: self.events.progress.emit(done, queued),
                on_error=lambda e: self.events.error.emit(f"tile computation failed: {e}"),
            )
        return self._scheduler

    @property
    def busy(self) -> bool:
        """True while the worker has tiles queued or running."""
        return self._scheduler is not None and not self._scheduler.is_idle()

    def stats(self) -> dict:
        """Tiles ``computed``, ``cached`` (all pyramids), ``queued`` (worker) and ``previews``."""
        pyrs = list(self._pyramids.values())
        sch = self._scheduler
        return {
            "computed": sum(int(p.renderer.stats["computed"]) for p in pyrs),
            "cached": sum(int(p.renderer.stats["cached"]) for p in pyrs),
            "queued": 0 if sch is None else sch.queued + sch.running,
            "previews": sum(p.n_previews for p in pyrs),
        }

    def cancel(self) -> None:
        """Drop all queued tiles (the running batch finishes; views ask again when they move)."""
        if self._scheduler is not None:
            self._scheduler.cancel()

    def wait(self, timeout: float | None = 60.0, poll=None) -> bool:
        """Block until no tile is queued or running (``poll`` is called while waiting, e.g. to process GUI events)."""
        return True if self._scheduler is None else self._scheduler.wait_idle(timeout, poll=poll)

    def close(self) -> None:
        """Stop the worker and close every pyramid."""
        for name in list(self._pyramids):
            self.close_pyramid(name)
        if self._scheduler is not None:
            self._scheduler.close()

    # ================================================================ pyramids
    @property
    def pyramids(self) -> dict[str, TilePyramid]:
        """``{name: TilePyramid}`` of the images shown (a copy)."""
        return dict(self._pyramids)

    def pyramid(self, name: str = GENERATED) -> TilePyramid | None:
        return self._pyramids.get(name)

    @property
    def renderer(self) -> TileRenderer | None:
        """The ``generated`` pyramid's renderer (None before :meth:`generate`)."""
        p = self._pyramids.get(GENERATED)
        return None if p is None else p.renderer

    @property
    def edited_pyramid(self) -> TilePyramid | None:
        return self._pyramids.get(EDITED)

    def make_renderer(self, canvas) -> TileRenderer:
        """A renderer of ``canvas`` with the session's model, seed, device and cache."""
        self.require(canvas=False)
        return TileRenderer(self._bundle, canvas, seed=self._seed, device=self.device, cache=self.cache)

    def show_canvas(self, canvas, name: str, before_show=None, probe: int | None = None) -> TilePyramid:
        """Build the lazy pyramid ``name`` of ``canvas`` (sharing model, seed, cache and worker) and announce it.

        ``before_show(pyramid)`` runs before the ``pyramid`` event (e.g. to adopt unchanged
        tiles). Replaces (and closes) a previous pyramid of that name. Nothing is computed
        here but the coarsest level's request (the thumbnail).
        """
        renderer = self.make_renderer(canvas)
        # auto_request off: the view (not napari's chunk-widened reads) says what is visible
        pyr = TilePyramid(renderer, self.scheduler, name=name, auto_request=False, probe=probe)
        k = pyr.n_levels - 1
        pyr.request_view(k, Region(0, pyr.level_shapes[k][0], 0, pyr.level_shapes[k][1]), channel="thumb")
        pyr.update_callbacks.append(lambda kind, keys: self.events.tiles.emit())
        if before_show is not None:
            before_show(pyr)
        old = self._pyramids.pop(name, None)
        if old is not None:
            old.close()
            old.update_callbacks.clear()
        self._pyramids[name] = pyr
        self.events.pyramid.emit(name, pyr)
        return pyr

    def close_pyramid(self, name: str) -> None:
        """Close and forget pyramid ``name`` (its layer was removed)."""
        p = self._pyramids.pop(name, None)
        if p is not None:
            p.close()
            p.update_callbacks.clear()
            self.events.pyramid.emit(name, None)

    def generate(self) -> TilePyramid:
        """(Re)build the lazy ``generated`` pyramid of the canvas (e.g. after a seed change); returns it.

        Returns at once; tiles are computed by the worker where the views ask. An edited
        pyramid, if there are edits, is rebuilt against it.
        """
        self.require()
        self._orig_keys = {}
        pyr = self.show_canvas(self._canvas, GENERATED)
        if EDITED in self._pyramids or self.history.recipe.edits:
            self.update_edited()
        return pyr

    def set_model_and_canvas(self, bundle=None, canvas=None) -> None:
        """Use a new model and/or canvas: forget the pyramids (not the regions and edits)."""
        if bundle is not None:
            self.bundle = bundle
        if canvas is not None:
            self.canvas = canvas
        for name in list(self._pyramids):
            self.close_pyramid(name)
        self._orig_keys = {}
        self.edit_info = None

    # ================================================================ editing
    @property
    def edited_canvas(self):
        """The canvas with the current edits applied (lazily, chunk by chunk); the canvas itself without edits."""
        self.require()
        recipe = self.history.recipe
        return recipe.apply(self._canvas, self.px_per_bin) if recipe.edits else self._canvas

    def set_region(self, name: str, spec: dict, array: np.ndarray | None = None) -> None:
        """Add or replace region ``name`` (a recipe region spec; ``array``: the label image of a painted region)."""
        self.history.set_region(name, spec, array=array)

    def apply_edit(self, edit: dict, view: tuple[int, Region] | None = None, max_checks: int | None = None) -> EditInfo:
        """Validate ``edit`` (regions, genes against the canvas), append it and update the edited pyramid.

        On an error nothing changes (the history is as before, redo stack included).
        ``view``: ``(level, region)`` of the current view, so that the tiles nearest it are
        compared first; ``max_checks``: see :meth:`update_edited`. Returns the :class:`EditInfo`.
        """
        self.require()
        edit = copy.deepcopy(edit)
        self.history.recipe.validate_edit(edit, len(self.history.recipe.edits))
        trial = self.history.recipe.copy()
        trial.edits.append(edit)
        trial.check_canvas(self._canvas)
        before = self.history.state()
        self.history.push(edit)
        try:
            return self.update_edited(view, max_checks)
        except GDTError:
            self.history.set_state(before)
            raise

    def undo(self, view=None, max_checks: int | None = None) -> EditInfo | None:
        """Undo the last edit; None when there is nothing to undo."""
        self.require()
        if self.history.undo() is None:
            return None
        return self.update_edited(view, max_checks)

    def redo(self, view=None, max_checks: int | None = None) -> EditInfo | None:
        """Redo the last undone edit; None when there is nothing to redo."""
        self.require()
        if self.history.redo() is None:
            return None
        return self.update_edited(view, max_checks)

    def load_recipe(self, path) -> None:
        """Replace regions and edits by a recipe file (the edited pyramid follows)."""
        self.require()
        self.history.load(path)
        self.update_edited()

    def _orig_key(self, spec, orig: TilePyramid | None) -> str:
        """Content hash of the original tile (memoised: the original canvas does not change in a session)."""
        t = (spec.ty, spec.tx)
        k = self._orig_keys.get(t)
        if k is None:
            r = orig.renderer if orig is not None else self.make_renderer(self._canvas)
            win = orig.blocks.read(*spec.win) if orig is not None else r.read_window(spec)
            k = self._orig_keys[t] = r.tile_key(spec, win)
        return k

    @staticmethod
    def _nearest_first(specs: list, view) -> list:
        """``specs`` sorted by the distance of their tile centre to the centre of ``view`` = (level, Region)."""
        if view is None or len(specs) < 2:
            return list(specs)
        k, reg = view
        f = 2**k
        cy, cx = (reg.y0 + reg.y1) * f / 2, (reg.x0 + reg.x1) * f / 2
        return sorted(specs, key=lambda s: ((s.out.y0 + s.out.y1) / 2 - cy) ** 2 + ((s.out.x0 + s.out.x1) / 2 - cx) ** 2)

    def update_edited(self, view=None, max_checks: int | None = None) -> EditInfo:
        """The one incremental render path: rebuild the lazy edited pyramid for the current recipe.

        Nothing is rendered here. The edited canvas is lazy; the candidate tiles are those whose
        input window (tile + halo) touches a bin of the current edits (every other tile has the
        original's pixels). Of the candidates the ``generated`` pyramid already holds, at most
        ``max_checks`` (default :data:`MAX_CHECKS`), nearest ``view`` first, have their content
        hash compared with the original's; tiles whose hash did not change are taken over, with
        every tile outside the candidates, from the ``generated`` pyramid (:meth:`TilePyramid.adopt`).
        The rest are left to the worker, which takes unchanged ones from the tile cache, so
        nothing is computed twice and undo restores the original bit for bit.
        """
        self.require()
        max_checks = MAX_CHECKS if max_checks is None else int(max_checks)
        ppb = self.px_per_bin
        recipe = self.history.recipe
        edited = self.edited_canvas
        mask = recipe.edit_mask(self._canvas, ppb) if recipe.edits else np.zeros(self._canvas.n_bins, dtype=bool)
        orig = self._pyramids.get(GENERATED)
        info = EditInfo(edits=len(recipe.edits))

        def prepare(pyr):
            r = pyr.renderer
            cands = dirty_tiles(r, mask)
            held = [s for s in cands if orig is not None and orig.has_tile(s.ty, s.tx)]
            check = {(s.ty, s.tx) for s in self._nearest_first(held, view)[:max_checks]}
            changed, unchecked = [], []
            for s in cands:
                if (s.ty, s.tx) not in check:
                    unchecked.append((s.ty, s.tx))
                # windows through the pyramid's block reader: same values as read_window, so the same keys
                elif r.tile_key(s, pyr.blocks.read(*s.win)) != self._orig_key(s, orig):
                    changed.append((s.ty, s.tx))
            info.adopted = pyr.adopt(orig, changed + unchecked) if orig is not None else 0
            info.changed, info.unchecked, info.pyramid = changed + unchecked, len(unchecked), pyr
            info.computed0, info.cached0 = int(r.stats["computed"]), int(r.stats["cached"])

        # the preview map is taken over from the generated pyramid (adopt) instead of computing probe tiles
        self.show_canvas(edited, EDITED, before_show=prepare, probe=0 if orig is not None else None)
        self.edit_info = info
        self.events.edited.emit(info)
        return info

    # ================================================================ statistics and differences
    def region_stats(self, region: str, genes, max_genes: int = 50) -> dict[str, tuple[float, float]]:
        """Mean counts per bin in ``region`` for ``genes`` (or ``"all"``): ``{gene: (before, after)}``.

        At most ``max_genes`` genes (the first ones). NaN for an empty region.
        """
        self.require()
        ppb = self.px_per_bin
        recipe = self.history.recipe
        if region not in recipe.regions:
            raise GDTError(f"region statistics: no region named {region!r}")
        mask = recipe.masks(self._canvas, ppb, [region])[region]
        genes = list(self._canvas.genes) if genes == "all" else list(genes)
        missing = [g for g in genes if g not in self._canvas.genes]
        if missing:
            raise GDTError(f"region statistics: gene(s) not in the canvas: {', '.join(missing)}")
        genes = genes[:max_genes]
        if not mask.any():
            return {g: (float("nan"), float("nan")) for g in genes}
        edited = recipe.apply(self._canvas, ppb)
        rows = np.nonzero(mask.any(1))[0]
        cols = np.nonzero(mask.any(0))[0]
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        m = mask[y0:y1, x0:x1]
        idx = [self._canvas.genes.index(g) for g in genes]
        a = np.asarray(self._canvas.data[idx][:, y0:y1, x0:x1])[:, m].mean(axis=1)
        b = np.asarray(edited.data[idx][:, y0:y1, x0:x1])[:, m].mean(axis=1)
        return {g: (float(u), float(v)) for g, u, v in zip(genes, a, b)}

    def difference(self, a: str = GENERATED, b: str = EDITED) -> list:
        """``|b - a|`` (channel mean, 0-1) of two of the session's pyramids, one lazy array per level.

        The arrays read the pyramids current at read time (an edit replaces the edited
        pyramid), through their stored tiles and previews.
        """
        for n in (a, b):
            if n not in self._pyramids:
                raise GDTError(f"difference: no image named {n!r} in this session (have: {', '.join(self._pyramids) or 'none'})")
        return difference_levels(lambda: self._pyramids[a].levels, lambda: self._pyramids[b].levels, (a, b))
