"""CVA (geochange.models.cva): a probability that ranks as the magnitude does, a flagged share near the
true one, and its options, on the planted scene through detect."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from sklearn.metrics import roc_auc_score

from geochange.detect import DetectOptions, detect
from geochange.errors import GeochangeError
from geochange.io.pair import RasterPair
from geochange.models import create_model


@pytest.fixture
def run(planted_same_grid, tmp_path):
    summary = detect(str(planted_same_grid.before), str(planted_same_grid.after), tmp_path / "out",
                     DetectOptions(tile=128, coregister="off"))
    with rasterio.open(tmp_path / "out" / "change_probability.tif") as ds:
        prob = ds.read(1)
    with rasterio.open(tmp_path / "out" / "change_mask.tif") as ds:
        mask = ds.read(1)
    return planted_same_grid, summary, prob, mask


def test_probability_ranks_as_the_magnitude_does(run):
    scene, summary, prob, mask = run
    with RasterPair.open(str(scene.before), str(scene.after)) as pair:
        pair.fit_normalization("meanstd")
        wp = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    model = create_model("cva")
    mag = model.magnitude(wp.before[None], wp.after[None], wp.valid[None])[0]
    scored = scene.valid & (mask != 255)
    truth = scene.truth_array[scored] == 1
    # the same AUC: the probability is a strictly increasing map of the magnitude, finely stored
    assert roc_auc_score(truth, prob[scored]) == pytest.approx(roc_auc_score(truth, mag[scored]), abs=1e-4)
    # 0.5 at the magnitude threshold
    t = summary["model"]["magnitude_threshold"]
    near = np.abs(mag - t) < 0.01 * t
    assert near.any() and np.abs(prob[near & scored] - 0.5).max() < 0.01


def test_no_probability_value_piles_up_among_changed_pixels(run):
    _, summary, prob, mask = run
    changed = prob[mask == 1]
    assert changed.size > 1000
    assert np.unique(changed, return_counts=True)[1].max() / changed.size < 0.10
    assert (changed < 1.0).all()


def test_flagged_share_is_near_the_true_share_and_changes_are_found(run):
    scene, summary, _, mask = run
    scored = scene.valid & (mask != 255)
    truth, pred = scene.truth_array[scored] == 1, mask[scored] == 1
    assert abs(pred.mean() - truth.mean()) < 0.25 * truth.mean()
    tp = (pred & truth).sum()
    assert tp / truth.sum() > 0.9 and tp / pred.sum() > 0.9


def test_options_are_validated():
    with pytest.raises(GeochangeError, match="unknown filter"):
        create_model("cva", filter="gauss")
    with pytest.raises(GeochangeError, match="unknown threshold"):
        create_model("cva", threshold="otsu3")
    with pytest.raises(GeochangeError, match="unknown measure"):
        create_model("cva", measure="foo")


@pytest.mark.parametrize("params", [{"threshold": "ggki"}, {"filter": "median"}, {"threshold": "ki", "filter": "mean"},
                                    {"measure": "rcva"}])
def test_other_rules_still_find_the_planted_changes(planted_same_grid, tmp_path, params):
    summary = detect(str(planted_same_grid.before), str(planted_same_grid.after), tmp_path / "o",
                     DetectOptions(tile=128, model_params=params))
    assert summary["model"]["config"] | params == summary["model"]["config"]
    with rasterio.open(tmp_path / "o" / "change_mask.tif") as ds:
        mask = ds.read(1)
    truth = planted_same_grid.truth_array
    scored = (truth != 255) & (mask != 255)
    assert ((mask == 1) & (truth == 1))[scored].sum() / (truth[scored] == 1).sum() > 0.8


def test_rcva_ignores_a_one_pixel_shift_but_not_a_new_object():
    """Thonfeld et al. 2016: the closest value within the radius, both ways."""
    from geochange.models.cva import rcva_magnitude

    rng = np.random.default_rng(0)
    before = rng.normal(size=(1, 3, 40, 40)).astype(np.float32)
    after = np.roll(before, 1, axis=3)            # everything moved one pixel right
    after[..., 10:20, 10:20] += 5.0               # and a new object
    mag = rcva_magnitude(before, after, radius=1)[0]
    cva = np.sqrt(((after - before) ** 2).sum(axis=1))[0]
    inner = np.zeros((40, 40), bool)
    inner[2:-2, 2:-2] = True
    inner[9:21, 9:21] = False
    assert mag[inner].max() < 1e-6 < cva[inner].mean()            # the shift alone is no change
    assert mag[11:19, 11:19].min() > 4.0                          # the new object is
