"""Pick the compute device: ``auto`` is CUDA when there is one, the CPU otherwise."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from geochange.errors import GeochangeError

DEVICES = ("auto", "cpu", "cuda")



def check_device_name(name: str) -> str:
    """Validate a ``--device`` value without importing torch: auto, cpu, cuda or cuda:N."""
    name = name.lower()
    if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise GeochangeError(f"unknown device {name!r} (choose auto, cpu or cuda)")


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` or ``cpu``; refuse ``cuda`` where torch sees no GPU."""
    name = check_device_name(name)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GeochangeError(f"--device {name}: torch sees no CUDA GPU here (use --device cpu or auto)")
        return name
    return name


@contextlib.contextmanager
def torch_threads(n: int, device: str = "cpu") -> Iterator[None]:
    """Run torch's CPU ops on ``n`` threads inside the block (no effect on CUDA).

    Training steps on tiny batches (DRLnet's batch of 10 through small layers) gain nothing from
    intra-op threads and can lose a lot: on a 2-core machine with another busy process, a fit that
    takes 4 s on one thread took 4 minutes on two, as the threads wait for each other.
    """
    import torch

    if not device.startswith("cpu"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def inference_thread_count() -> int:
    """torch's CPU threads while ``detect`` runs a model over the windows (``DetectOptions.torch_threads``
    overrides it): the cores this process may use, less one for the sliding engine's reader and writer
    threads (which warp, blend and write while the model predicts in the main thread); at least 1.

    Measured on 2 cores (benchmarks/bench_models.py, issue 15), where this gives one thread and
    torch's default was two: on a quiet machine two threads ran drlnet and cdcluster 1.2-1.6x faster
    and rscvae 1.4x slower; beside one busy process they ran drlnet 4x and rscvae 1.7x slower (their
    OpenMP threads wait for each other at every barrier of a small op) and cdcluster no faster. At
    one thread every learned model ran in detect at 0.8x or more of its own predict rate, quiet or not.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def inference_threads(uses_torch: bool, device: str, n: int | None = None):
    """The block in which ``detect`` runs a model over the windows: torch on ``n`` CPU threads
    (:func:`inference_thread_count` when None); nothing for models without torch or on a GPU."""
    if not uses_torch or not device.startswith("cpu"):
        return contextlib.nullcontext()
    return torch_threads(inference_thread_count() if n is None else int(n), device)
