"""k-means through FAISS, shared by the models that cluster learned features (DRLnet, CDCluster).

One function, :func:`kmeans`: Lloyd iterations of ``faiss.Kmeans`` from a seeded random
initialisation, then the nearest centroid of every point. On the CPU a fixed seed gives the same
centroids and labels on every run. FAISS's own behaviour is kept as it is: when a cluster empties
during training it is refilled by splitting a populous one (Jégou, Douze & Johnson), and when there
are more than ``256 * k`` points the centroids are trained on a seeded random subset of that size
(every point is still labelled).
"""

from __future__ import annotations

import numpy as np

from geochange.errors import GeochangeError

__all__ = ["faiss_gpus", "kmeans"]


def faiss_gpus() -> int:
    """Number of GPUs FAISS can use here (0 with faiss-cpu)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None and hasattr(faiss, "StandardGpuResources") else 0
    except Exception:  # a faiss-gpu build without a working driver
        return 0


def _deterministic_mode() -> bool:
    """Whether the caller asked torch for deterministic algorithms (then FAISS stays on the CPU)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.are_deterministic_algorithms_enabled())


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int = 20,
           gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups with FAISS k-means.

    Returns ``(centroids, labels)``: ``(k, d)`` float32 and ``(n,)`` int64, each label the index of
    the nearest centroid (squared Euclidean distance). ``gpu``: ``None`` uses a GPU when faiss-gpu
    sees one and torch's deterministic-algorithms mode is off (GPU k-means is not bit-reproducible);
    ``False`` always the CPU (reproducible for a given ``seed``); ``True`` requires a GPU.

    Raises GeochangeError for fewer points than clusters, ``k < 1`` or non-finite values.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise GeochangeError(f"k-means expects an (n, d) array, got shape {x.shape}")
    n, d = x.shape
    k = int(k)
    if k < 1:
        raise GeochangeError(f"k-means needs k >= 1, got {k}")
    if n < k:
        raise GeochangeError(f"k-means: {n} points cannot make {k} clusters")
    if not np.isfinite(x).all():
        raise GeochangeError("k-means: the points hold NaN or inf")
    n_gpus = faiss_gpus()
    if gpu is None:
        use_gpu = n_gpus > 0 and not _deterministic_mode()
    elif gpu:
        if n_gpus == 0:
            raise GeochangeError("k-means on the GPU needs faiss-gpu and a CUDA device")
        use_gpu = True
    else:
        use_gpu = False
    # min_points_per_centroid=1: small samples are legitimate here, and FAISS would print a warning
    # on stderr for every call with fewer than 39 points per centroid.
    km = faiss.Kmeans(d, k, niter=int(niter), seed=int(seed) % 2**31, verbose=False, gpu=use_gpu,
                      min_points_per_centroid=1)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return np.asarray(km.centroids, dtype=np.float32), labels[:, 0].astype(np.int64)
