"""FAISS k-means (geochange.cluster): recovers well-separated blobs (k-means++ seeding), labels every
point with its nearest centroid, and is reproducible for a fixed seed on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.cluster import faiss_gpus, kmeans, kmeans_plus_plus, refill_small_clusters
from geochange.errors import GeochangeError


def _blobs(seed: int, n_per: int = 300, d: int = 6, k: int = 5, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(k, d))
    truth = np.repeat(np.arange(k), n_per)
    x = centres[truth] + rng.normal(0, spread, size=(truth.size, d))
    perm = rng.permutation(truth.size)
    return x[perm].astype(np.float32), truth[perm], centres


def test_recovers_well_separated_blobs():
    x, truth, centres = _blobs(0)
    cents, labels = kmeans(x, 5, seed=1, gpu=False)
    assert cents.shape == (5, 6) and cents.dtype == np.float32
    assert labels.shape == (x.shape[0],) and labels.dtype == np.int64
    # every found cluster is exactly one blob, and every blob one cluster
    for c in range(5):
        members = truth[labels == c]
        assert members.size == 300
        assert np.all(members == members[0])
    # each true centre has a centroid within a few noise standard deviations
    dist = np.linalg.norm(centres[:, None, :] - cents[None, :, :], axis=2)
    assert dist.min(axis=1).max() < 0.2


@pytest.mark.parametrize("seed", range(6))
def test_blobs_recovered_whatever_the_seed(seed):
    x, truth, _ = _blobs(100 + seed, n_per=60, k=8)
    _, labels = kmeans(x, 8, seed=seed, gpu=False)
    pairs = set(zip(labels.tolist(), truth.tolist()))
    assert len(pairs) == 8  # a bijection between clusters and blobs


def test_kmeans_plus_plus_seeds_one_point_per_blob():
    x, truth, _ = _blobs(9, n_per=80, k=6)
    init = kmeans_plus_plus(x, 6, np.random.default_rng(0))
    owner = [truth[np.argmin(((x - c) ** 2).sum(axis=1))] for c in init]
    assert sorted(owner) == list(range(6))


def test_faiss_random_init_is_available():
    x, _, _ = _blobs(4, n_per=50, k=3)
    cents, labels = kmeans(x, 3, seed=0, gpu=False, init="random")
    assert cents.shape == (3, 6) and set(labels.tolist()) <= {0, 1, 2}
    with pytest.raises(GeochangeError, match="init"):
        kmeans(x, 3, seed=0, init="forgy")


def test_labels_are_the_nearest_centroid():
    x, _, _ = _blobs(3, n_per=100, k=4, spread=3.0)  # overlapping blobs: assignments not trivial
    cents, labels = kmeans(x, 7, seed=0, gpu=False)
    d2 = ((x[:, None, :].astype(np.float64) - cents[None, :, :]) ** 2).sum(axis=2)
    best = d2[np.arange(x.shape[0]), labels]
    assert np.all(best <= d2.min(axis=1) + 1e-3)


def test_same_seed_same_result_other_seed_may_differ():
    x, _, _ = _blobs(5, n_per=200, k=6, spread=4.0)
    c1, l1 = kmeans(x, 10, seed=42, gpu=False)
    c2, l2 = kmeans(x, 10, seed=42, gpu=False)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    c3, _ = kmeans(x, 10, seed=7, gpu=False)
    assert not np.array_equal(c1, c3)  # the seed does drive the initialisation


def test_default_is_reproducible_on_a_cpu_only_machine():
    if faiss_gpus() > 0:
        pytest.skip("faiss-gpu with a GPU here: the default may run on the GPU")
    x, _, _ = _blobs(2, n_per=50, k=3)
    a = kmeans(x.astype(np.float64), 3, seed=0)  # float64 is accepted (converted)
    b = kmeans(x, 3, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_requests_raise():
    x, _, _ = _blobs(0, n_per=2, k=2)
    with pytest.raises(GeochangeError, match="cannot make"):
        kmeans(x, 5, seed=0)
    with pytest.raises(GeochangeError):
        kmeans(x, 0, seed=0)
    with pytest.raises(GeochangeError, match="NaN"):
        bad = x.copy()
        bad[0, 0] = np.nan
        kmeans(bad, 2, seed=0)
    with pytest.raises(GeochangeError):
        kmeans(x[0], 1, seed=0)
    if faiss_gpus() == 0:
        with pytest.raises(GeochangeError, match="GPU"):
            kmeans(x, 2, seed=0, gpu=True)


def _lloyd_reference(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain NumPy Lloyd iterations in float64: assign to the nearest centroid, move it to the mean."""
    x = x.astype(np.float64)
    cents = init.astype(np.float64)
    for _ in range(niter):
        labels = ((x[:, None, :] - cents[None]) ** 2).sum(axis=2).argmin(axis=1)
        cents = np.stack([x[labels == j].mean(axis=0) for j in range(cents.shape[0])])
    return cents, ((x[:, None, :] - cents[None]) ** 2).sum(axis=2).argmin(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faiss_path_agrees_with_a_numpy_lloyd_reference(seed):
    x, _, _ = _blobs(20 + seed, n_per=200, d=5, k=6, spread=2.5)  # overlapping blobs: many boundary points
    cents, labels = kmeans(x, 6, seed=seed, niter=10, gpu=False, max_points_per_centroid=10**6)
    ref_cents, ref_labels = _lloyd_reference(x, kmeans_plus_plus(x, 6, np.random.default_rng(seed)), 10)
    assert np.mean(labels == ref_labels) > 0.995
    np.testing.assert_allclose(cents, ref_cents, atol=1e-3)


def test_training_subset_is_bounded_by_max_points_per_centroid():
    x, _, _ = _blobs(7, n_per=400, d=4, k=4, spread=3.0)
    small, _ = kmeans(x, 4, seed=0, gpu=False, max_points_per_centroid=8)   # 32 of 1600 points
    full, _ = kmeans(x, 4, seed=0, gpu=False, max_points_per_centroid=10**6)
    assert not np.allclose(small, full)


def _counts(labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels, minlength=k)


@pytest.mark.parametrize("seed", range(5))
def test_refill_leaves_no_cluster_empty_or_tiny(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    k = 10
    labels = rng.choice([0, 1, 2], size=500, p=[0.6, 0.3, 0.1])  # clusters 3..9 empty
    labels[:3] = 3                                                # cluster 3 tiny
    cents, new, splits = refill_small_clusters(x, labels, k, min_size=20, rng=np.random.default_rng(seed))
    counts = _counts(new, k)
    assert counts.min() >= 20 and counts.sum() == 500 and splits >= 7
    # centroids are the means of the refilled clusters
    np.testing.assert_allclose(cents[4], x[new == 4].mean(axis=0), atol=1e-5)
    # a split halves one cluster along its widest direction: the new clusters are spatially coherent
    unchanged = _counts(refill_small_clusters(x, new, k, 20, np.random.default_rng(0))[1], k)
    np.testing.assert_array_equal(unchanged, counts)


def test_refill_when_every_point_is_the_same_and_when_min_size_cannot_be_met():
    x = np.ones((12, 2), np.float32)
    cents, labels, _ = refill_small_clusters(x, np.zeros(12, np.int64), 5, min_size=100,
                                             rng=np.random.default_rng(0))
    assert _counts(labels, 5).min() >= 2  # min(min_size, n // k) = 2 each
    x = np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32)
    _, labels, _ = refill_small_clusters(x, np.zeros(7, np.int64), 7, min_size=1, rng=np.random.default_rng(0))
    assert sorted(labels.tolist()) == list(range(7))  # n == k: one point each, none empty
    with pytest.raises(GeochangeError):
        refill_small_clusters(x, np.zeros(7, np.int64), 8, 1, np.random.default_rng(0))
