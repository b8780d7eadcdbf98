"""Augmented-MNIST-style digit pairs from scikit-learn's 8x8 digits (geochange.data.digits)."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.data.digits import (VARIANTS, augment, digit_images, digit_pairs, render, split_sources)
from geochange.errors import GeochangeError
from geochange.train.data import TrainData


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_shape_range_and_seed(variant):
    images, labels = digit_images(variant, seed=3)
    assert images.shape == (1797, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert sorted(np.unique(labels)) == list(range(10))
    again, _ = digit_images(variant, seed=3)
    np.testing.assert_array_equal(images, again)
    other, _ = digit_images(variant, seed=4)
    assert np.array_equal(images, other) == (variant == "plain")  # only plain has nothing random


def test_plain_digit_sits_in_the_centred_box():
    images, _ = digit_images("plain", seed=0)
    ink = images[:, 0].sum(axis=0)
    # the 20x20 box is rows/cols 4..23; bilinear taps reach at most one pixel beyond it
    assert ink[:3].sum() == 0 and ink[25:].sum() == 0 and ink[:, :3].sum() == 0 and ink[:, 25:].sum() == 0
    assert ink[4:24, 4:24].sum() > 0.95 * ink.sum()


def test_rotation_by_90_degrees_rotates_the_image():
    src = np.zeros((1, 8, 8), np.float32)
    src[0, 1:7, 2] = 1.0  # a vertical bar left of centre
    upright = render(src)[0]
    turned = render(src, np.array([90.0]))[0]
    # counter-clockwise by 90 degrees: np.rot90 does the same on the grid (28 is even: exact up to interpolation)
    np.testing.assert_allclose(turned, np.rot90(upright), atol=1e-5)


def test_background_fills_the_frame_and_keeps_the_digit():
    rng = np.random.default_rng(0)
    src = np.zeros((4, 8, 8), np.float32)
    src[:, 2:6, 3:5] = 1.0
    plain = augment(src, "plain", rng)
    cluttered = augment(src, "B", rng)
    assert (plain[:, 0, :3] == 0).all()
    assert (cluttered[:, 0, :3] > 0).mean() > 0.5  # the corners now hold a photograph
    assert (cluttered >= plain - 1e-6).all()  # max(digit, background)
    assert cluttered[:, 0, 13:15, 13:15].min() == pytest.approx(1.0)


def test_split_keeps_source_images_apart():
    parts = split_sources(seed=1, test_fraction=0.3)
    assert not set(parts["train"]) & set(parts["test"])
    assert len(parts["train"]) + len(parts["test"]) == 1797
    assert 0.27 < len(parts["test"]) / 1797 < 0.33
    train = digit_pairs("R", n_pairs=400, seed=0, split="train", split_seed=1)
    test = digit_pairs("R", n_pairs=400, seed=0, split="test", split_seed=1)
    used_train = {it["meta"][k] for it in train for k in ("source_before", "source_after")}
    used_test = {it["meta"][k] for it in test for k in ("source_before", "source_after")}
    assert used_train <= set(parts["train"]) and used_test <= set(parts["test"])
    assert {it["meta"]["split"] for it in train} == {"train"}


def test_pairs_are_labelled_by_whether_the_digits_differ():
    items = digit_pairs("R-B", n_pairs=300, seed=5, positive_fraction=0.2)
    labels = np.array([it["label"].max() for it in items])
    assert labels.sum() == 60
    for it in items:
        assert it["before"].shape == (1, 28, 28) and it["after"].shape == (1, 28, 28)
        assert it["label"].shape == (28, 28) and it["label"].dtype == np.uint8
        assert len(np.unique(it["label"])) == 1  # the whole pair is one event
        meta = it["meta"]
        assert (meta["digit_before"] != meta["digit_after"]) == bool(it["label"][0, 0])
        assert meta["source_before"] != meta["source_after"]  # a negative is two different writers' digit
    # rotations differ within a pair: the images of a negative pair are not the same picture
    negative = next(it for it in items if it["label"][0, 0] == 0)
    assert not np.allclose(negative["before"], negative["after"])


def test_pairs_are_seeded():
    a = digit_pairs("R", n_pairs=20, seed=2)
    b = digit_pairs("R", n_pairs=20, seed=2)
    c = digit_pairs("R", n_pairs=20, seed=3)
    assert all(np.array_equal(x["before"], y["before"]) and x["meta"] == y["meta"] for x, y in zip(a, b))
    assert not all(np.array_equal(x["before"], y["before"]) for x, y in zip(a, c))


def test_pairs_feed_the_trainer():
    items = digit_pairs("R", n_pairs=10, seed=0, positive_fraction=0.5)
    data = TrainData(items, standardize=False)
    assert data.in_bands == 1
    assert sorted(data.index["label"]) == [0] * 5 + [1] * 5
    batch = next(data.batches(batch_size=10))
    assert tuple(batch["before"].shape) == (10, 1, 28, 28)
    np.testing.assert_array_equal(batch["patch_label"].numpy(), [it["label"][0, 0] for it in items])


def test_bad_arguments_are_user_errors():
    with pytest.raises(GeochangeError):
        digit_images("X")
    with pytest.raises(GeochangeError):
        digit_pairs("R", 10, split="val")
    with pytest.raises(GeochangeError):
        digit_pairs("R", 10, positive_fraction=1.5)
