import json
import math

import numpy as np
import pytest

from geochange.metrics import ConfusionMatrix


def _example():
    """tp=3, fp=1, fn=2, tn=4 laid out in a 2x5 image."""
    truth = np.array([[1, 1, 1, 0, 1], [1, 0, 0, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=np.uint8)
    return pred, truth


def test_hand_computed_example():
    pred, truth = _example()
    cm = ConfusionMatrix()
    cm.update(pred, truth)
    assert cm.matrix.tolist() == [[4, 1], [2, 3]]
    assert cm.matrix.dtype == np.int64
    s = cm.scores()
    tp, fp, fn, tn = 3, 1, 2, 4
    n = 10
    assert (s["tp"], s["fp"], s["fn"], s["tn"], s["n_pixels"]) == (tp, fp, fn, tn, n)
    assert s["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["mse"] == pytest.approx(0.3)
    assert s["precision"] == pytest.approx(0.75)
    assert s["recall"] == pytest.approx(0.6)
    assert s["f1"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert s["specificity"] == pytest.approx(4 / 5)
    po = (tp + tn) / n
    pe = ((tp + fp) / n) * ((tp + fn) / n) + ((tn + fn) / n) * ((tn + fp) / n)  # 0.2 + 0.3
    assert pe == pytest.approx(0.5)
    assert s["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert s["kappa"] == pytest.approx(0.4)
    assert s["iou"] == pytest.approx(3 / 6)
    assert s["iou_unchanged"] == pytest.approx(4 / 7)
    assert s["miou"] == pytest.approx((3 / 6 + 4 / 7) / 2)


def test_bool_and_int_inputs_agree():
    pred, truth = _example()
    a, b = ConfusionMatrix(), ConfusionMatrix()
    a.update(pred, truth)
    b.update(pred.astype(bool), truth.astype(bool))
    assert a == b


def test_valid_mask_excludes_pixels():
    pred, truth = _example()
    valid = np.ones_like(pred, dtype=bool)
    valid[0, 0] = False  # a tp
    valid[0, 3] = False  # the fp
    cm = ConfusionMatrix()
    cm.update(pred, truth, valid)
    s = cm.scores()
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 0, 2, 4)
    assert s["n_pixels"] == 8
    assert s["precision"] == 1.0


def test_merge_of_halves_equals_whole():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 2, (40, 30))
    truth = rng.integers(0, 2, (40, 30))
    valid = rng.random((40, 30)) > 0.2
    whole = ConfusionMatrix()
    whole.update(pred, truth, valid)
    top, bottom = ConfusionMatrix(), ConfusionMatrix()
    top.update(pred[:17], truth[:17], valid[:17])
    bottom.update(pred[17:], truth[17:], valid[17:])
    assert top + bottom == whole
    assert top.merge(bottom) is top
    assert top == whole
    assert top.scores() == whole.scores()
    assert whole.scores()["n_pixels"] == int(valid.sum())


def test_perfect_prediction():
    truth = np.array([[0, 1, 1], [0, 0, 1]])
    cm = ConfusionMatrix()
    cm.update(truth, truth)
    s = cm.scores()
    assert s["f1"] == 1.0 and s["kappa"] == 1.0 and s["accuracy"] == 1.0
    assert s["iou"] == 1.0 and s["miou"] == 1.0 and s["mse"] == 0.0


def _all_finite(scores):
    for key, value in scores.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
    json.dumps(scores, allow_nan=False)


def test_degenerate_all_zero_has_no_nan():
    zeros = np.zeros((4, 4), dtype=np.uint8)
    cm = ConfusionMatrix()
    cm.update(zeros, zeros)
    s = cm.scores()
    _all_finite(s)
    assert s["accuracy"] == 1.0
    assert s["kappa"] == 1.0  # both maps agree everywhere
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0 and s["iou"] == 0.0
    assert s["miou"] == 1.0  # only the unchanged class is present, and it is perfect
    assert s["tn"] == 16


def test_degenerate_cases_have_no_nan():
    ones = np.ones((3, 3), dtype=np.uint8)
    zeros = np.zeros((3, 3), dtype=np.uint8)
    for pred, truth in [(ones, zeros), (zeros, ones), (ones, ones)]:
        cm = ConfusionMatrix()
        cm.update(pred, truth)
        _all_finite(cm.scores())
    s = ConfusionMatrix().scores()  # nothing counted at all
    _all_finite(s)
    assert s["n_pixels"] == 0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        ConfusionMatrix().update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_normalized_matrix_is_shares_of_each_true_class():
    pred, truth = _example()  # tp=3, fp=1, fn=2, tn=4
    cm = ConfusionMatrix()
    cm.update(pred, truth)
    norm = cm.normalized()
    np.testing.assert_allclose(norm, [[4 / 5, 1 / 5], [2 / 5, 3 / 5]])
    s = cm.scores()
    assert norm[0, 0] == pytest.approx(s["specificity"]) and norm[1, 1] == pytest.approx(s["recall"])
    empty_truth_change = ConfusionMatrix()
    empty_truth_change.update(np.zeros(4, bool), np.zeros(4, bool))
    np.testing.assert_array_equal(empty_truth_change.normalized(), [[1.0, 0.0], [0.0, 0.0]])
