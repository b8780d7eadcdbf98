"""CDCluster (models/cdcluster.py): CBAM and the network on odd sizes, the Sobel input, the warm-up
sample, a warm-up that learns planted changes through the shared trainer, pseudo-labels that isolate
them, checkpoints, and the Initial Alignment table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import planted_patches
from geochange.errors import GeochangeError
from geochange.models import create_model
from geochange.models.cdcluster import (CBAM, CDCluster, CDClusterConfig, change_probability, initial_alignment,
                                        sobel_magnitude, warmup_sample)
from geochange.train import TrainOptions, load_model, train
from geochange.train.data import PairStandardizer, TrainData, item_groups, sample_index

# a short schedule for tests: the warm-up only (the paper's lr 1e-3 needs many more steps than 16 pairs give)
WARMUP = dict(epochs=12, warmup_epochs=12, warmup_fraction=0.5, lr=1e-2, batch_size=8)


def _standardised(items: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    std = PairStandardizer(items, item_groups(items))
    before, after = (np.stack(d) for d in zip(*(std(i, item) for i, item in enumerate(items))))
    return before, after, np.stack([item["label"] for item in items])


def _found_and_kept(model: CDCluster, items: list[dict]) -> tuple[float, float]:
    """Share of planted (changed) pixels found and of unchanged pixels left alone."""
    before, after, label = _standardised(items)
    prob = model.predict(before, after, np.ones(label.shape, bool))
    assert prob.shape == label.shape and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    return float((prob[label == 1] >= 0.5).mean()), float((prob[label == 0] < 0.5).mean())


def test_cbam_keeps_the_shape_and_only_rescales():
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=16, kernel=7)
    x = torch.randn(2, 16, 13, 17)
    y = cbam(x)
    assert y.shape == x.shape
    # channel and spatial attention are sigmoids: each value is scaled by a factor in (0, 1)
    ratio = y / x
    assert torch.all(ratio > 0) and torch.all(ratio < 1)
    assert ratio.std() > 1e-3  # and the factors differ across channels and pixels


@pytest.mark.parametrize("bands,size", [(3, (23, 31)), (5, (17, 9)), (1, (8, 8))])
def test_network_gives_features_and_k_logits_at_full_resolution(bands, size):
    torch.manual_seed(0)
    model = CDCluster(CDClusterConfig(k=7))
    model.build(bands)
    model.net.eval()
    before, after = torch.randn(2, bands, *size), torch.randn(2, bands, *size)
    features, logits = model.forward(before, after)
    assert features.shape == (2, 16, *size) and logits.shape == (2, 7, *size)
    prob = model.predict(before.numpy(), after.numpy(), np.ones((2, *size), bool))
    assert prob.shape == (2, *size) and np.all((prob >= 0) & (prob <= 1))


def test_sobel_channel_marks_edges_and_keeps_every_band():
    x = torch.zeros(1, 5, 10, 10)
    x[:, :3, :, 5:] = 3.0  # a vertical step in the first three bands
    x[:, 3:] = 7.0          # extra bands are kept as they are
    out = sobel_magnitude(x)
    assert out.shape == (1, 6, 10, 10)
    torch.testing.assert_close(out[:, :5], x)
    mag = out[0, 5]
    assert torch.all(mag[:, 4:6] > 5) and torch.all(mag[:, :3] < 0.01) and torch.all(mag[:, 7:] < 0.01)


def test_change_probability_crosses_half_where_the_argmax_cluster_is_a_changed_one():
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 5, 4) * 3
    prob = change_probability(logits, [1, 4])
    argmax_changed = torch.isin(logits.argmax(dim=1), torch.tensor([1, 4]))
    assert torch.equal(prob >= 0.5, argmax_changed)
    assert torch.all(change_probability(logits, []) == 0) and torch.all(change_probability(logits, range(6)) == 1)


def test_warmup_sample_takes_the_fraction_from_pairs_with_enough_change():
    items = planted_patches(20, size=24, seed=3)  # odd items hold an 8x8 square: 11 % of 24x24
    items[1]["label"][:] = 0
    items[1]["label"][0, :5] = 1                  # below 3 %
    items[2]["label"][:] = 255                    # unlabelled
    index = sample_index(items)
    picked = warmup_sample(index, 0.3, 0.03, np.random.default_rng(0))
    assert len(picked) == 6 and len(set(picked.tolist())) == 6
    assert all(p % 2 == 1 and p != 1 for p in picked)
    anything = warmup_sample(index, 0.5, 0.0, np.random.default_rng(0))
    assert len(anything) == 10 and 2 not in anything.tolist()
    with pytest.raises(GeochangeError, match=r"0 labelled pairs with >= 3% changed pixels .* needs at least 1"):
        warmup_sample(index.assign(changed_fraction=0.0), 0.3, 0.03, np.random.default_rng(0))
    # any labelled pair, but none changed: the warm-up could not learn the changed class (issue 13)
    with pytest.raises(GeochangeError, match="warm-up pairs hold no changed pixel, needs at least 1"):
        warmup_sample(index.assign(changed_fraction=0.0), 0.3, 0.0, np.random.default_rng(0))
    with pytest.raises(GeochangeError, match="hold no unchanged pixel"):
        warmup_sample(index.assign(changed_fraction=1.0), 0.3, 0.0, np.random.default_rng(0))


def test_warmup_makes_the_loss_fall_and_finds_planted_changes():
    model = create_model("cdcluster", **WARMUP)
    summary = train(model, planted_patches(32, seed=0), TrainOptions(device="cpu", seed=0))
    losses = [row["loss"] for row in summary["history"]]
    assert all(row["warmup"] == 1 and row["samples"] == 16 for row in summary["history"])
    assert losses[-1] < 0.1 * losses[0]
    found, kept = _found_and_kept(model, planted_patches(8, seed=99))
    assert found > 0.8 and kept > 0.97


def test_unsupervised_phase_clusters_the_planted_changes_apart_and_keeps_finding_them(tmp_path):
    items = planted_patches(32, seed=0)
    model = create_model("cdcluster", **{**WARMUP, "epochs": 15, "recluster_every": 2})
    summary = train(model, items, TrainOptions(device="cpu", seed=0, out=tmp_path / "run"))
    history = summary["history"]
    # clusterings at the first unsupervised epoch and every recluster_every epochs, on 75 % of the pairs
    assert [row["warmup"] for row in history[11:]] == [1, 0, 0, 0]
    assert history[12]["clustered"] == 24 and history[14]["clustered"] == 24 and "clustered" not in history[13]
    assert history[12]["samples"] == 24 and history[13]["loss"] < history[12]["loss"]
    # pseudo-labels: uint8 per pixel of the clustered pairs; the planted squares fill clusters of their own
    assert len(model.pseudo) == 24 and all(v.dtype == np.uint8 and v.shape == (24, 24) for v in model.pseudo.values())
    table = np.zeros((20, 2), np.int64)
    for position, labels in model.pseudo.items():
        for v in (0, 1):
            table[:, v] += np.bincount(labels[items[position]["label"] == v], minlength=20)
    purest = table[:, 1] > table[:, 0]   # the best binarisation of the clusters, by the truth
    assert 2 * table[purest, 1].sum() / (table[:, 1].sum() + table[purest].sum()) > 0.8   # its F1
    # the model's own cluster -> change table still finds the planted changes in new pairs
    found, kept = _found_and_kept(model, planted_patches(8, seed=99))
    assert found > 0.8 and kept > 0.97
    # the checkpoint (read with weights_only) carries what predict needs
    loaded = load_model(tmp_path / "run" / "last.pt")
    assert loaded.change_clusters == model.change_clusters
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    before, after, label = _standardised(planted_patches(4, seed=5))
    np.testing.assert_allclose(loaded.predict(before, after, np.ones(label.shape, bool)),
                               model.predict(before, after, np.ones(label.shape, bool)), atol=1e-6)


def test_initial_alignment_table_per_seed_and_k():
    items = planted_patches(8, seed=2)
    table = initial_alignment(items, seeds=[0, 1], ks=[2, 5], max_pixels=2000)
    assert list(table.columns) == ["seed", "k", "ia"] and len(table) == 4
    assert table[["seed", "k"]].values.tolist() == [[0, 2], [0, 5], [1, 2], [1, 5]]
    again = initial_alignment(items, seeds=[0], ks=[2, 5], max_pixels=2000)
    np.testing.assert_allclose(again["ia"], table["ia"][:2])  # the seed fixes the filters and the k-means
    # bright planted squares are visible even to random filters: clusters align with them above chance
    assert table["ia"].max() > 0.05
    shuffled = [dict(item, label=np.random.default_rng(i).permutation(item["label"].ravel()).reshape(24, 24))
                for i, item in enumerate(items)]
    noise = initial_alignment(shuffled, seeds=[0], ks=[2, 5], max_pixels=2000)
    assert noise["ia"].abs().max() < 0.02
    with pytest.raises(GeochangeError, match="ground truth"):
        initial_alignment([dict(item, label=np.full((24, 24), 255, np.uint8)) for item in items], [0], [2])


def test_training_data_without_labelled_pairs_is_refused_for_the_warmup():
    items = [dict(item, label=np.full((24, 24), 255, np.uint8)) for item in planted_patches(4)]
    with pytest.raises(GeochangeError, match="warm-up"):
        train(CDCluster(CDClusterConfig(**WARMUP)), items, TrainOptions(device="cpu"))
    assert len(TrainData(items)) == 4
