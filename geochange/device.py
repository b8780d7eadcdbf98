"""Pick the compute device: ``auto`` is CUDA when there is one, the CPU otherwise."""

from __future__ import annotations

from geochange.errors import GeochangeError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` or ``cpu``; refuse ``cuda`` where torch sees no GPU."""
    import torch

    name = name.lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GeochangeError(f"--device {name}: torch sees no CUDA GPU here (use --device cpu or auto)")
        return name
    if name == "cpu":
        return name
    raise GeochangeError(f"unknown device {name!r} (choose auto, cpu or cuda)")
