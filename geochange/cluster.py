"""k-means through FAISS, shared by the models that cluster learned features (DRLnet, CDCluster).

One function, :func:`kmeans`: Lloyd iterations of ``faiss.Kmeans`` from a seeded initialisation,
then the nearest centroid of every point. On the CPU a fixed seed gives the same centroids and
labels on every run. The initialisation is greedy k-means++ (Arthur & Vassilvitskii 2007; the
default of MATLAB's and scikit-learn's k-means) by default, or FAISS's own uniform draw of ``k`` points (DeepCluster's
setting) with ``init="random"``: from a random draw Lloyd's iterations often leave two centroids in
one well-separated group and none in another. FAISS's own behaviour is kept otherwise: when a
cluster empties during training it is refilled by splitting a populous one, and when there are more
than ``256 * k`` points the centroids are trained on a seeded random subset of that size (every
point is still labelled).
"""

from __future__ import annotations

import numpy as np

from geochange.errors import GeochangeError

__all__ = ["INITS", "faiss_gpus", "kmeans", "kmeans_plus_plus", "refill_small_clusters"]


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


INITS = ("k-means++", "random")
# points the k-means++ seeding looks at (a seeded random subset beyond this, as FAISS's own training)
_PP_POINTS_PER_CENTROID = 256


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (scikit-learn's default): ``k`` rows of ``x``; each new one is the
    best, by the resulting potential, of ``2 + ln k`` candidates drawn with probability proportional
    to the squared distance to the nearest row already chosen. Works on a random subset of at most
    ``256 * k`` rows."""
    n = x.shape[0]
    m = min(n, _PP_POINTS_PER_CENTROID * k)
    pts = x[np.sort(rng.choice(n, m, replace=False))] if m < n else x
    pts = pts.astype(np.float64)
    sq = (pts ** 2).sum(axis=1)
    trials = 2 + int(np.log(k))
    chosen = [int(rng.integers(m))]
    d2 = np.maximum(sq - 2.0 * pts @ pts[chosen[0]] + sq[chosen[0]], 0.0)
    for _ in range(1, k):
        total = d2.sum()
        if not total > 0:  # fewer distinct points than clusters: any point (FAISS splits duplicates)
            nxt = int(rng.integers(m))
            chosen.append(nxt)
            continue
        cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * total)
        cand = np.minimum(cand, m - 1)
        cand_d2 = np.maximum(sq[None, :] - 2.0 * pts[cand] @ pts.T + sq[cand, None], 0.0)
        np.minimum(cand_d2, d2[None, :], out=cand_d2)
        best = int(np.argmin(cand_d2.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = cand_d2[best]
    return np.ascontiguousarray(pts[chosen], dtype=np.float32)


def kmeans(x: np.ndarray, k: int, *, seed: int, niter: int = 20, gpu: bool | None = None,
           init: str = "k-means++", max_points_per_centroid: int = _PP_POINTS_PER_CENTROID
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups with FAISS k-means.

    Returns ``(centroids, labels)``: ``(k, d)`` float32 and ``(n,)`` int64, each label the index of
    the nearest centroid (squared Euclidean distance). ``gpu``: ``None`` uses a GPU when faiss-gpu
    sees one and torch's deterministic-algorithms mode is off (GPU k-means is not bit-reproducible);
    ``False`` always the CPU (reproducible for a given ``seed``); ``True`` requires a GPU.

    ``init``: ``"k-means++"`` (seeded from ``seed``) or ``"random"`` (FAISS's own draw).
    ``max_points_per_centroid``: the centroids are trained on a seeded random subset of at most
    ``k`` times this many points (FAISS's default, 256); every point is labelled all the same.

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
    if init not in INITS:
        raise GeochangeError(f"k-means init must be one of {', '.join(INITS)}, got {init!r}")
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
                      min_points_per_centroid=1, max_points_per_centroid=int(max_points_per_centroid))
    if init == "k-means++":
        km.train(x, init_centroids=kmeans_plus_plus(x, k, np.random.default_rng(seed)))
    else:
        km.train(x)
    _, labels = km.index.search(x, 1)
    return np.asarray(km.centroids, dtype=np.float32), labels[:, 0].astype(np.int64)


def refill_small_clusters(x: np.ndarray, labels: np.ndarray, k: int, min_size: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Refill empty or tiny clusters by splitting populous ones (DeepCluster, Caron et al. 2018; CDCluster
    Sec. 2.2: "whenever the population of a cluster drops below a given threshold, the data points
    assigned to a random above-threshold cluster are split and reassigned to the below-threshold one").

    ``x`` (n, d) points, ``labels`` (n,) in ``0..k-1``. While a cluster holds fewer than
    ``m = min(min_size, n // k)`` points (at least 1), a random cluster with at least ``2 m`` points is
    split in two at the median of its points' projection on their direction of largest variance: one
    half keeps its label, the other joins the small cluster. When no cluster is that large, the
    largest gives up just enough points from the same end of that direction (keeping ``m`` itself).
    Every step keeps the donor at ``m`` or more, and ``n >= k m``, so the loop ends with every
    cluster holding at least ``m`` points: none is empty. Returns ``(centroids (k, d) float32 — the
    mean of each cluster, labels, number of moves)``.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).copy()
    n = x.shape[0]
    if n < k:
        raise GeochangeError(f"{n} points cannot fill {k} clusters")
    m = max(1, min(int(min_size), n // k))
    counts = np.bincount(labels, minlength=k)
    splits = 0
    while True:
        small = np.flatnonzero(counts < m)
        if small.size == 0:
            break
        c = int(small[np.argmin(counts[small])])
        donors = np.flatnonzero(counts >= 2 * m)
        if donors.size:
            j = int(rng.choice(donors))
            take = int(counts[j] // 2)
        else:
            j = int(np.argmax(counts))
            take = int(min(m - counts[c], counts[j] - m))  # >= 1, as sum(counts) >= k m
        members = np.flatnonzero(labels == j)
        pts = x[members].astype(np.float64)
        centred = pts - pts.mean(axis=0)
        cov = centred.T @ centred
        axis = np.linalg.eigh(cov)[1][:, -1] if np.any(cov) else np.eye(x.shape[1])[0]
        order = np.argsort(centred @ axis, kind="stable")
        moved = members[order[members.size - take:]]
        labels[moved] = c
        counts[c] += take
        counts[j] -= take
        splits += 1
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
    centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    return centroids, labels, splits
