"""Autosave of an editing session: one file per viewer run, every stroke saved within a second.

* :func:`new_autosave_path` gives each run its own autosave recipe, next to the canvas
  (``<canvas>.edits.autosave-<UTC time>-<pid>.json``) or, where that folder cannot be written,
  in the temporary folder. A restart never overwrites an earlier run's autosave.
* :func:`list_autosaves` / :func:`latest_autosave` find the earlier runs' autosaves of a canvas,
  newest first, so the viewer can offer to restore the latest.
* :class:`StrokeAutosaver` debounces saves: painting calls :meth:`StrokeAutosaver.touch` on every
  stroke and the labels and recipe are written at most ``delay`` seconds later (default 0.5 s),
  on a timer thread. It needs no Qt.

Pure Python (no Qt, no napari).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["AUTOSAVE_TAG", "StrokeAutosaver", "latest_autosave", "list_autosaves", "new_autosave_path"]

AUTOSAVE_TAG = ".edits.autosave-"


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / "napari-gdt"


def _stem(canvas_path: str | Path | None) -> tuple[Path, str]:
    """(folder, name prefix) of a canvas's autosaves."""
    if canvas_path:
        src = Path(str(canvas_path).rstrip("/"))
        if src.exists() and os.access(src.parent, os.W_OK):
            return src.parent, src.name
        tag = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:10]
        return _fallback_dir(), f"{src.name}-{tag}"
    return _fallback_dir(), "session"


def new_autosave_path(canvas_path: str | Path | None = None, run_id: str | None = None) -> Path:
    """A fresh autosave path for this viewer run (never one an earlier run wrote)."""
    folder, prefix = _stem(canvas_path)
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    p = folder / f"{prefix}{AUTOSAVE_TAG}{run_id}.json"
    i = 2
    while p.exists():
        p = folder / f"{prefix}{AUTOSAVE_TAG}{run_id}-{i}.json"
        i += 1
    return p


def list_autosaves(canvas_path: str | Path | None) -> list[Path]:
    """Autosave recipes of ``canvas_path`` (all runs), newest first."""
    folder, prefix = _stem(canvas_path)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{prefix}{AUTOSAVE_TAG}*.json") if p.is_file() and not p.name.endswith(".tmp")]

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=lambda p: (mtime(p), p.name), reverse=True)


def latest_autosave(canvas_path: str | Path | None, exclude: str | Path | None = None) -> Path | None:
    """The newest autosave of ``canvas_path`` other than ``exclude`` (this run's own), or None."""
    ex = Path(exclude).resolve() if exclude else None
    for p in list_autosaves(canvas_path):
        if ex is None or p.resolve() != ex:
            return p
    return None


class StrokeAutosaver:
    """Debounced saves: :meth:`touch` after each change, ``save`` runs at most ``delay`` s later.

    Parameters
    ----------
    save : callable
        Writes the autosave (e.g. ``EditHistory.save_autosave``). Called on a timer thread,
        under ``lock``.
    delay : float
        Seconds from the first unsaved change to the save (the whole stroke burst is saved once).
    lock : threading.RLock, optional
        Shared with any other writer of the same files.
    """

    def __init__(self, save: Callable[[], object], delay: float = 0.5, lock=None):
        self._save = save
        self.delay = float(delay)
        self.lock = lock if lock is not None else threading.RLock()
        self._timer: threading.Timer | None = None
        self._guard = threading.Lock()
        self.saves = 0
        self.last_error: Exception | None = None

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def touch(self, *_args) -> None:
        """Note a change; the save runs within ``delay`` seconds (one save per burst)."""
        with self._guard:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._guard:
            self._timer = None
        self._run()

    def _run(self) -> None:
        try:
            with self.lock:
                self._save()
            self.saves += 1
            self.last_error = None
        except Exception as e:  # noqa: BLE001 - an autosave must never take the viewer down
            self.last_error = e

    def flush(self) -> None:
        """Save now if a save is pending."""
        with self._guard:
            t, self._timer = self._timer, None
        if t is not None:
            t.cancel()
            self._run()

    def close(self) -> None:
        self.flush()
