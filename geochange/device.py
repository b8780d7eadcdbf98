"""Pick the compute device: ``auto`` is CUDA when there is one, the CPU otherwise."""

from __future__ import annotations

import contextlib
from typing import Iterator

from geochange.errors import GeochangeError

DEVICES = ("auto", "cpu", "cuda")

#: torch's CPU threads while ``detect`` runs a model over the windows (``DetectOptions.torch_threads``
#: overrides it). One: the sliding engine predicts in the main thread while a reader and a writer
#: thread warp, blend and write, so on a 2-core machine a second torch thread competes with them (and
#: with any other process) and its OpenMP barriers spin; benchmarks/bench_models.py measures 1 and 2.
INFERENCE_THREADS = 1


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


def inference_threads(uses_torch: bool, device: str, n: int | None = None):
    """The block in which ``detect`` runs a model over the windows: torch on ``n`` CPU threads
    (``INFERENCE_THREADS`` when None); nothing for models without torch or on a GPU."""
    if not uses_torch or not device.startswith("cpu"):
        return contextlib.nullcontext()
    return torch_threads(INFERENCE_THREADS if n is None else int(n), device)
