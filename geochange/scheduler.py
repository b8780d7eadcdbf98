"""Dask distributed clients: a cluster at ``--scheduler ADDRESS``, or a local one of ``--workers N``.

geochange scales out on Dask rather than on a pool of its own: the same code runs on a laptop
(a ``LocalCluster`` of worker processes), on Slurm through dask-jobqueue, or on Kubernetes through
the Dask operator; users point ``--scheduler`` at the scheduler those start.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Iterator

from geochange.errors import GeochangeError

if TYPE_CHECKING:
    import distributed


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1) -> Iterator["distributed.Client"]:
    """A client of the cluster at ``scheduler``, or of a local cluster of ``workers`` processes
    (default: one per CPU core, at most 4), closed on exit."""
    from distributed import Client, LocalCluster

    from geochange.progress import say

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise GeochangeError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
        with client:
            say(f"Dask scheduler {scheduler}: {len(client.nthreads())} worker(s)")
            yield client
        return
    n = workers if workers is not None else min(4, os.cpu_count() or 1)
    if n < 1:
        raise GeochangeError("--workers must be >= 1")
    with LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
