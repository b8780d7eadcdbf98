"""FAISS k-means (geochange.cluster): recovers well-separated blobs (k-means++ seeding), labels every
point with its nearest centroid, and is reproducible for a fixed seed on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.cluster import faiss_gpus, kmeans, kmeans_plus_plus
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
