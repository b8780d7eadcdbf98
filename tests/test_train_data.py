"""Training data: standardised as detect standardises a scene, batched the same with or without workers."""

from __future__ import annotations

import numpy as np

from conftest import planted_patches
from geochange.data.patches import PatchDataset, PatchWriter
from geochange.train.data import PairStandardizer, TrainData, item_groups, open_training_data, scene_patches


def _dataset(path, items, pairs, splits=None):
    with PatchWriter(path, size=items[0]["before"].shape[1], bands=3, dtype="uint16", shard_size=4) as w:
        for k, (item, pair) in enumerate(zip(items, pairs)):
            w.add(item["before"], item["after"], item["label"],
                  {"pair": pair, "split": splits[k] if splits else "train"})
    return path


def test_each_pair_is_standardised_per_date_so_a_global_brightness_change_vanishes(tmp_path):
    items = planted_patches(12, seed=5)
    bright = []
    for k, item in enumerate(items):  # pair "b": AFTER = 1.5 x BEFORE + 20 (gain and offset), no real change
        if k >= 6:
            item = {**item, "after": (item["before"].astype(np.uint16) * 3 // 2 + 20), "label": item["label"] * 0}
        bright.append({**item, "before": item["before"].astype(np.uint16), "after": np.asarray(item["after"], np.uint16)})
    ds = PatchDataset(_dataset(tmp_path / "ds", bright, ["a"] * 6 + ["b"] * 6))
    std = PairStandardizer(ds, item_groups(ds))
    b = np.stack([std(i, ds[i])[0] for i in range(6, 12)])
    a = np.stack([std(i, ds[i])[1] for i in range(6, 12)])
    np.testing.assert_allclose(b.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(b.std(axis=(0, 2, 3)), 1, atol=1e-3)
    np.testing.assert_allclose(a, b, atol=0.02)  # the gain/offset between the dates is gone
    # pair "a" has its own statistics: its planted squares stay bright after standardisation
    a0 = std(1, ds[1])[1]
    assert a0[:, ds[1]["label"] == 1].mean() > 2


def test_batches_carry_labels_positions_and_are_the_same_with_workers(tmp_path):
    items = planted_patches(10, seed=6)
    for k in (2, 3):
        items[k]["label"][:] = 255  # unlabelled patches
    ds = open_training_data(_dataset(tmp_path / "ds", items, ["p"] * 10, ["train"] * 8 + ["test"] * 2))
    assert len(ds) == 8
    data = TrainData(ds, device="cpu")
    assert list(data.index["label"]) == [0, 1, -1, -1, 0, 1, 0, 1]
    serial = list(data.batches(batch_size=3))
    parallel = list(TrainData(ds, device="cpu", workers=1).batches(batch_size=3))
    assert [b["position"].tolist() for b in serial] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert serial[0]["before"].dtype.is_floating_point and serial[0]["label"].dtype.is_signed
    assert serial[0]["patch_label"].tolist() == [0, 1, -1]
    for s, p in zip(serial, parallel):
        for key in s:
            assert (s[key] == p[key]).all(), key


def test_levir_folder_items_are_their_own_pairs(tmp_path):
    import rasterio

    items = planted_patches(3, seed=7)
    for sub in ("A", "B", "label"):
        (tmp_path / "lv" / sub).mkdir(parents=True)
    for k, item in enumerate(items):
        for sub, arr in (("A", item["before"]), ("B", item["after"]), ("label", item["label"][None] * 255)):
            with rasterio.open(tmp_path / "lv" / sub / f"{k}.png", "w", driver="PNG", width=24, height=24,
                               count=arr.shape[0], dtype="uint8") as dst:
                dst.write(arr.astype(np.uint8))
    ds = open_training_data(tmp_path / "lv")
    assert list(item_groups(ds)) == ["0", "1", "2"]
    batch = next(TrainData(ds, device="cpu").batches(batch_size=3))
    np.testing.assert_allclose(batch["before"].numpy().mean(axis=(2, 3)), 0, atol=1e-4)
    assert batch["label"].max() == 1 and batch["patch_label"].tolist() == [0, 1, 0]


def test_scene_patches_crop_valid_noisy_negatives_from_detect_samples():
    rng = np.random.default_rng(8)
    samples = []
    for _ in range(3):
        before = rng.normal(size=(2, 64, 64)).astype(np.float32)
        valid = np.ones((64, 64), bool)
        valid[:, :20] = False  # nodata on the left of every window
        samples.append((before, before + 1, valid))
    samples.append((rng.normal(size=(2, 16, 16)).astype(np.float32),) * 2 + (np.ones((16, 16), bool),))  # too small
    items = scene_patches(samples, size=32, n=10, seed=1)
    assert len(items) == 10
    for item in items:
        assert item["before"].shape == (2, 32, 32) and (item["label"] == 255).all()
        np.testing.assert_array_equal(item["after"], item["before"] + 1)
    again = scene_patches(samples, size=32, n=10, seed=1)
    assert all((a["before"] == b["before"]).all() for a, b in zip(items, again))
    assert scene_patches(samples, size=128, n=5) == []
