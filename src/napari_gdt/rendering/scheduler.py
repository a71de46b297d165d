"""A background tile scheduler: one worker thread, prioritised jobs, stale requests dropped.

No Qt here: the scheduler is a thread, a condition variable and callbacks.
GUI code connects the callbacks to its own main-thread mechanism (a Qt
signal, napari's ``thread_worker`` ...).

Jobs are ``(priority, owner, kind, key)``. ``owner`` is any object with a
``process(kind, keys, should_stop)`` method (a :class:`~napari_gdt.rendering.pyramid.TilePyramid`)
and a ``batch_limit(kind)``. Jobs are grouped into *channels* (for example
``"view"``, ``"nearby"``, ``"thumb"``); :meth:`TileScheduler.set_jobs`
replaces a channel's jobs wholesale, so a job that is no longer requested by
any channel (a tile that left the view) is dropped before it runs. The worker
repeatedly takes the best-priority job and batches it with up to
``batch_limit(kind) - 1`` further queued jobs of the same owner and kind.
``process`` may return how many of the keys it handled (it polls
``should_stop()``, which turns true on cancel, when a better-priority job was
queued meanwhile, or when a job of the batch left every request); the rest go
back to the queue if still requested.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

__all__ = ["Job", "TileScheduler"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One unit of work: ``owner.process(kind, [key, ...], should_stop)`` batches these."""

    priority: tuple
    owner: object
    kind: str
    key: Hashable

    @property
    def ident(self) -> tuple:
        return (id(self.owner), self.kind, self.key)


class TileScheduler:
    """A worker thread that runs tile jobs visible-first, batched, and drops stale ones.

    Parameters
    ----------
    num_threads : int, optional
        If given, the worker calls ``torch.set_num_threads(num_threads)`` when it
        starts (intra-op threads of the model forward; leave a core for the UI).
    nice : int
        If > 0, the worker thread lowers its own OS scheduling priority by this
        much (Linux), so that a busy CPU serves the UI thread first.
    on_progress : callable, optional
        ``on_progress(done, queued)`` after each batch and when the queue changes;
        called from the worker thread (or the caller of :meth:`set_jobs`).
    on_error : callable, optional
        ``on_error(exc)`` when a batch raises; the worker keeps running.

    Notes
    -----
    Callbacks run on the worker thread; a GUI must hop to its main thread
    before touching widgets.
    """

    def __init__(
        self, num_threads: int | None = None, on_progress=None, on_error=None, name: str = "napari-gdt-tiles", nice: int = 0
    ):
        self._cond = threading.Condition()
        self._channels: dict[str, dict[tuple, Job]] = {}
        self._running: list[Job] = []
        self._origin: dict = {}
        self._version: dict[str, int] = {}
        self._generation = 0
        self._closed = False
        self.num_threads = num_threads
        self.nice = int(nice)
        self.progress_callbacks: list[Callable[[int, int], None]] = [on_progress] if on_progress else []
        self.error_callbacks: list[Callable[[BaseException], None]] = [on_error] if on_error else []
        self.done = 0
        self.dropped = 0
        self.batches = 0
        self.busy_s = 0.0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- queue
    def set_jobs(self, channel: str, jobs: Iterable[Job]) -> None:
        """Replace the jobs of ``channel``; queued jobs no channel wants any more are dropped."""
        new = {}
        for j in jobs:
            old = new.get(j.ident)
            if old is None or j.priority < old.priority:
                new[j.ident] = j
        with self._cond:
            before = self._pending_idents()
            self._channels[channel] = new
            self._version[channel] = self._version.get(channel, 0) + 1
            after = self._pending_idents()
            self.dropped += len(before - after)
            self._cond.notify_all()
        self._emit_progress()

    def clear(self, channel: str | None = None, owner: object | None = None) -> None:
        """Drop a channel's jobs (all channels if None), or only those of ``owner``."""
        with self._cond:
            names = list(self._channels) if channel is None else [channel]
            for c in names:
                self._version[c] = self._version.get(c, 0) + 1
                if owner is None:
                    self._channels.pop(c, None)
                else:
                    d = self._channels.get(c, {})
                    for k in [k for k, j in d.items() if j.owner is owner]:
                        del d[k]
            self._cond.notify_all()
        self._emit_progress()

    def cancel(self) -> None:
        """Drop every queued job and ask the running batch to stop between sub-batches."""
        with self._cond:
            n = len(self._pending_idents())
            self._channels.clear()
            self.dropped += n
            self._generation += 1
            self._cond.notify_all()
        self._emit_progress()

    def _pending_idents(self) -> set:
        s = set()
        for d in self._channels.values():
            s.update(d)
        return s

    def _pending(self) -> dict[tuple, Job]:
        best: dict[tuple, Job] = {}
        for d in self._channels.values():
            for k, j in d.items():
                o = best.get(k)
                if o is None or j.priority < o.priority:
                    best[k] = j
        return best

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending_idents())

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def is_idle(self) -> bool:
        with self._cond:
            return not self._running and not self._pending_idents()

    def wait_idle(self, timeout: float | None = None, poll: Callable[[], None] | None = None) -> bool:
        """Block until no job is queued or running; ``poll()`` is called every 10 ms (e.g. to process GUI events)."""
        t_end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if not self._running and not self._pending_idents():
                    return True
                if poll is None:
                    rest = None if t_end is None else max(0.0, t_end - time.monotonic())
                    self._cond.wait(0.05 if rest is None else min(0.05, rest))
            if poll is not None:
                poll()
                time.sleep(0.01)
            if t_end is not None and time.monotonic() >= t_end:
                return self.is_idle()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (the running batch finishes its current sub-batch)."""
        with self._cond:
            self._closed = True
            self._channels.clear()
            self._generation += 1
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # --------------------------------------------------------------- worker
    def _take_batch(self) -> list[Job]:
        pend = self._pending()
        if not pend:
            return []
        first = min(pend.values(), key=lambda j: j.priority)
        limit = max(1, int(first.owner.batch_limit(first.kind)))
        same = [j for j in pend.values() if j.owner is first.owner and j.kind == first.kind]
        same.sort(key=lambda j: j.priority)
        batch = same[:limit]
        ids = {j.ident for j in batch}
        self._origin = {}
        for c, d in self._channels.items():
            for k in ids:
                j = d.pop(k, None)
                if j is not None:
                    self._origin.setdefault(k, []).append((c, self._version.get(c, 0), j))
        return batch

    def _requeue(self, jobs: list[Job], gen: int) -> None:
        """Put back jobs a preempted batch did not reach (if their channel still wants them)."""
        if gen != self._generation or self._closed:
            return
        for j in jobs:
            back = False
            for c, v, jj in self._origin.get(j.ident, []):
                d = self._channels.get(c)
                if d is not None and (j.ident in d or self._version.get(c, 0) == v):
                    d.setdefault(j.ident, jj)
                    back = True
            self.dropped += not back

    def _stale(self, job: Job) -> bool:
        """A running job whose every requesting channel was replaced without it."""
        origins = self._origin.get(job.ident, [])
        for c, v, _ in origins:
            if self._version.get(c, 0) == v or job.ident in self._channels.get(c, {}):
                return False
        return bool(origins)

    def _loop(self) -> None:
        if self.num_threads:
            import torch

            torch.set_num_threads(int(self.num_threads))
        if self.nice > 0 and hasattr(os, "setpriority"):
            # Linux: a thread is a task; lower only this worker's priority so the UI thread wins the CPU.
            # OSError: not permitted / not Linux.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        while True:
            with self._cond:
                while not self._closed and not self._pending_idents():
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._take_batch()
                self._running = batch
                gen = self._generation
            if not batch:
                continue

            prio = batch[0].priority

            def should_stop(gen=gen, prio=prio, batch=batch) -> bool:
                """Cancelled, closed, or preempted by a better-priority job queued meanwhile."""
                if self._closed or self._generation != gen:
                    return True
                with self._cond:
                    if any(self._stale(j) for j in batch):
                        return True
                    return any(j.priority < prio for d in self._channels.values() for j in d.values())

            t0 = time.perf_counter()
            n_done = len(batch)
            try:
                n = batch[0].owner.process(batch[0].kind, [j.key for j in batch], should_stop)
                if isinstance(n, int) and 0 <= n < len(batch):
                    n_done = n
                    with self._cond:
                        self._requeue(batch[n:], gen)
            except Exception as e:  # noqa: BLE001 - keep the worker alive; report
                self.last_error = e
                _log.error("tile job failed: %s", e, exc_info=e)
                for cb in list(self.error_callbacks):
                    try:
                        cb(e)
                    except Exception:  # noqa: BLE001 - a broken callback must not kill the worker
                        _log.exception("error callback failed")
            finally:
                self.busy_s += time.perf_counter() - t0
                with self._cond:
                    self._running = []
                    self.done += n_done
                    self.batches += 1
                    self._cond.notify_all()
            self._emit_progress()

    def _emit_progress(self) -> None:
        if not self.progress_callbacks:
            return
        with self._cond:
            queued = len(self._pending_idents()) + len(self._running)
        for cb in list(self.progress_callbacks):
            try:
                cb(self.done, queued)
            except Exception:  # noqa: BLE001 - a broken callback must not kill the worker
                _log.exception("progress callback failed")
