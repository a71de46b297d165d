"""Running chunk tasks: in this process or on a dask.distributed cluster, with per-worker setup and reports.

:class:`InProcess` and :class:`Distributed` share one interface (``map_bounded``,
``close``); :class:`GDTWorkerPlugin` loads the model once per worker and tunes its
allocator; :func:`start_rss_sampler` samples a process's peak RSS for the summary.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from ..errors import GDTError
from . import workers

__all__ = ["Distributed", "GDTWorkerPlugin", "InProcess", "peak_rss_sampled", "start_rss_sampler"]

try:  # distributed is a dependency, but keep this module importable without it
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover
    _WorkerPluginBase = object


_PEAK = [0]


def start_rss_sampler(interval: float = 0.2) -> None:
    """Sample this process's current RSS in a daemon thread and keep the maximum.

    ``ru_maxrss`` is not used for reports: on Linux it carries over the parent's RSS
    through fork + exec, so spawned workers would report their parent's peak.
    """
    if getattr(start_rss_sampler, "_started", False):
        return
    start_rss_sampler._started = True
    import psutil

    proc = psutil.Process()

    def loop():
        while True:
            try:
                _PEAK[0] = max(_PEAK[0], proc.memory_info().rss)
            except Exception:  # noqa: BLE001 - psutil raises several types while the process shuts down; stop sampling
                return
            time.sleep(interval)

    threading.Thread(target=loop, name="napari-gdt-rss", daemon=True).start()


def peak_rss_sampled() -> int:
    """Largest RSS (bytes) seen by :func:`start_rss_sampler`, or the current RSS."""
    import psutil

    return max(_PEAK[0], psutil.Process().memory_info().rss)


class GDTWorkerPlugin(_WorkerPluginBase):
    """Set up each worker once: torch threads, and load the model (and canvas) before any task.

    It carries only the :class:`RenderJob` (paths and numbers), never weights.
    """

    name = "napari-gdt-render"

    def __init__(self, job, torch_threads: int | None = None):
        self.job = job
        self.torch_threads = torch_threads

    def setup(self, worker=None):
        import torch

        start_rss_sampler()
        workers.MALLOC_TUNED[0] = workers.tune_malloc()
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        try:
            workers.renderer_for(self.job)
        except Exception as e:  # noqa: BLE001 - any failure: tasks raise it again with its message; don't kill the worker
            import logging

            logging.getLogger(__name__).warning("napari-gdt: could not preload the model on this worker: %s", e)


def _worker_info() -> dict:
    """Per-worker facts for the summary: device, torch threads, peak RSS (bytes)."""
    import resource

    import torch

    info = {
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        **workers.count(),
        "malloc_tuned": workers.MALLOC_TUNED[0],
    }
    info["devices"] = workers.loaded_devices()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    info["cpu_seconds"] = ru.ru_utime + ru.ru_stime
    rss = ru.ru_maxrss
    info["ru_maxrss"] = int(rss if sys.platform == "darwin" else rss * 1024)  # includes the parent's RSS at spawn on Linux
    info["peak_rss"] = peak_rss_sampled()  # sampled every 0.2 s since the plugin's setup
    return info


class InProcess:
    """Runs tasks one after the other in this process (same task functions as the cluster)."""

    nthreads = 1

    def map_bounded(self, fn, argsets, on_result):
        for a in argsets:
            on_result(fn(*a))

    def close(self):
        pass


class Distributed:
    """Runs tasks on a dask.distributed cluster: a new LocalCluster of ``n_workers`` processes, or an existing ``scheduler``."""

    def __init__(self, job, n_workers: int | None, scheduler: str | None, processes: bool, torch_threads: int | None):
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler)
            except (OSError, TimeoutError) as e:
                raise GDTError(f"cannot reach the dask scheduler at {scheduler!r}: {e}") from None
        else:
            n = int(n_workers)
            if n < 1:
                raise GDTError(f"--workers must be >= 1, got {n}")
            if torch_threads is None:
                torch_threads = max(1, (os.cpu_count() or 1) // n)
            saved = dict(os.environ)
            try:
                self.cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=processes, dashboard_address=None, silence_logs=40
                )
            finally:  # the nanny sets OMP_NUM_THREADS=1 etc. in *this* process's environment; undo that
                for k in set(os.environ) - set(saved):
                    del os.environ[k]
                os.environ.update(saved)
            self.client = Client(self.cluster)
        self.client.register_plugin(GDTWorkerPlugin(job, torch_threads))
        self.nthreads = max(1, sum(self.client.nthreads().values()))

    def map_bounded(self, fn, argsets, on_result, max_in_flight=None):
        """Submit tasks with at most ``max_in_flight`` pending; results are small dicts."""
        from distributed import as_completed

        argsets = iter(argsets)
        limit = max_in_flight or max(2, 2 * self.nthreads)
        pending = as_completed()
        for n, a in enumerate(argsets, start=1):
            pending.add(self.client.submit(fn, *a, pure=False))
            if n >= limit:
                break
        for fut in pending:
            on_result(fut.result())
            fut.release()
            nxt = next(argsets, None)
            if nxt is not None:
                pending.add(self.client.submit(fn, *nxt, pure=False))

    def worker_info(self) -> dict:
        return self.client.run(_worker_info)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
