"""Dask distributed clients: a cluster at ``--scheduler ADDRESS``, or a local one of ``--workers N``.

geochange scales out on Dask rather than on a pool of its own: the same code runs on a laptop
(a ``LocalCluster`` of worker processes), on Slurm through dask-jobqueue, or on Kubernetes through
the Dask operator; users point ``--scheduler`` at the scheduler those start.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator, Sequence

from geochange.errors import GeochangeError

if TYPE_CHECKING:
    import distributed

#: cores one run of the detect engine keeps busy: a reader thread (decoding, warping), the model and a
#: writer thread (compression, polygons) -- 1.4 with cva on 2 cores (benchmarks/bench_scale.py); a
#: worker of a local cluster runs the same engine on its block, so it needs as many to itself
CORES_PER_RUN = 2


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or a job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def why_not_local_blocks(workers: int, blocks: int, cores: int | None = None, cores_per_run: int = CORES_PER_RUN,
                         block_size: int | None = None) -> str | None:
    """Why a local cluster of ``workers`` processes cannot run a plan of ``blocks`` blocks faster than
    one process alone (None: it can). It gains only by running two blocks or more at once, each on
    cores the single run would leave idle; otherwise the blocks' overheads (the cluster's start, the
    blocks' parts, the assembly) make it slower (1.1x to 1.4x the time and 1.5x the CPU on 2 cores:
    benchmarks/bench_scale.py)."""
    cores = usable_cores() if cores is None else cores
    if workers < 2:
        return "one worker runs the blocks one after another"
    if blocks < 2:
        size = f" of --block-size {block_size} rows" if block_size else ""
        return f"the raster is one block{size}"
    if cores // cores_per_run < 2:
        return (f"one run already keeps {min(cores, cores_per_run)} of this machine's {cores} cores busy, "
                "so workers would only share them")
    return None


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1) -> Iterator["distributed.Client"]:
    """A client of the cluster at ``scheduler``, or of a local cluster of ``workers`` processes
    (default: one per CPU core, at most 4), closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    from geochange.progress import say

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise GeochangeError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
        try:  # closed by hand, not ``with client``: that may only end in the thread that began it
            say(f"Dask scheduler {scheduler}: {len(client.nthreads())} worker(s)")
            yield client
        finally:
            client.close()
        return
    n = workers if workers is not None else min(4, os.cpu_count() or 1)
    if n < 1:
        raise GeochangeError("--workers must be >= 1")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ()}), \
            LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None,
                         silence_logs=logging.ERROR) as cluster:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()


def _worker_environ() -> dict:
    """Dask's environment for worker processes, less ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets it to 64 KiB to hand memory back to the OS sooner; that also turns off glibc's
    adaptive mmap threshold, so every large array (a strip of windows, a batch) is a fresh mmap
    and page faults: blocks of ``detect`` ran 40 % slower with it (``benchmarks/bench_scale.py``).
    """
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


class BackgroundClient:
    """:func:`dask_client`, started in a background thread now, so the cluster comes up (and its
    workers import the ``warm`` modules) while the caller works, e.g. while ``detect`` fits the scene.

    :meth:`client` waits for it; :meth:`release` starts closing it in the background once no more
    tasks will come (``detect`` assembles meanwhile); leaving the ``with`` block waits for that.
    """

    def __init__(self, scheduler: str | None = None, workers: int | None = None, warm: Sequence[str] = ()) -> None:
        self._stack = contextlib.ExitStack()
        self._pool = ThreadPoolExecutor(1, "geochange-dask")  # one thread: closing queues after starting
        self._started = self._pool.submit(self._start, scheduler, workers, list(warm))
        self._closing: Future | None = None

    def _start(self, scheduler: str | None, workers: int | None, warm: list[str]) -> "distributed.Client":
        client = self._stack.enter_context(dask_client(scheduler, workers))
        if warm:
            client.run(_import_all, warm)
        return client

    def client(self) -> "distributed.Client":
        return self._started.result()

    def release(self) -> None:
        if self._closing is None:
            self._closing = self._pool.submit(self._stack.close)

    def __enter__(self) -> "BackgroundClient":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        try:
            self._closing.result()
        finally:
            self._pool.shutdown()


def _import_all(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
