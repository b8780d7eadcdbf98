"""DRLnet (geochange.models.drlnet) on a small synthetic scene with planted changes.

The scene: a smooth textured background, unchanged "buildings" on both dates, rectangles of new
material planted in AFTER, sensor noise, a global illumination change of AFTER, and an invalid
strip. Both dates are standardised per band as the engine's ``meanstd`` normalisation does before
any model sees them. The config is small (few epochs, a short schedule) so the file runs in seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from geochange.errors import GeochangeError
from geochange.models import create_model
from geochange.models.cva import CVA
from geochange.models.drlnet import (DRLnet, DRLnetConfig, _patches, superpixel_centres,
                                     superpixel_samples, superpixels)

SIZE = 128
SCHEDULE = (12, 6, 3)
SMALL = dict(schedule=SCHEDULE, pretrain_epochs=5, stage_epochs=2, max_samples=3000)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_scene(seed: int = 0):
    """(before, after) (3, SIZE, SIZE) standardised float32, planted-change mask, valid mask."""
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    base = []
    for b in range(3):
        field = (ndimage.gaussian_filter(rng.normal(size=shape), 6) * 25
                 + ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 6)
        base.append(100 + 10 * b + field / field.std() * 15)
    before = np.stack(base)
    after = before.copy()
    for _ in range(6):  # existing buildings: the same on both dates
        r, c = rng.integers(5, SIZE - 20, 2)
        before[:, r:r + 10, c:c + 12] = after[:, r:r + 10, c:c + 12] = np.array([200, 190, 180])[:, None, None]
    change = np.zeros(shape, bool)
    materials = ([230, 220, 210], [50, 45, 40], [90, 160, 70])  # new roofs, asphalt, vegetation
    for k in range(6):
        r, c = rng.integers(4, SIZE - 30, 2)
        h, w = rng.integers(10, 18, 2)
        after[:, r:r + h, c:c + w] = np.array(materials[k % 3])[:, None, None]
        change[r:r + h, c:c + w] = True
    before += rng.normal(0, 2.0, before.shape)
    after += rng.normal(0, 2.0, after.shape)
    after = after * 0.7 + 30  # a global illumination change: not a change
    valid = np.ones(shape, bool)
    valid[:, -8:] = False     # nodata strip, zeroed in both dates like the engine does

    def standardise(x):
        v = x[:, valid]
        out = (x - v.mean(axis=1)[:, None, None]) / v.std(axis=1)[:, None, None]
        out[:, ~valid] = 0.0
        return out.astype(np.float32)

    return standardise(before), standardise(after), change & valid, valid


def sample_windows(before, after, valid, size: int = 80):
    """Four overlapping windows covering the scene, as detect's scene sample would give."""
    starts = (0, SIZE - size)
    return [(before[:, r:r + size, c:c + size], after[:, r:r + size, c:c + size], valid[r:r + size, c:c + size])
            for r in starts for c in starts]


def f1(pred, truth):
    tp = np.sum(pred & truth)
    return 2 * tp / max(2 * tp + np.sum(pred & ~truth) + np.sum(~pred & truth), 1)


@pytest.fixture(scope="module")
def scene():
    return make_scene(0)


@pytest.fixture(scope="module")
def fitted(scene):
    before, after, _, valid = scene
    model = DRLnet(DRLnetConfig(**SMALL))
    model.fit(sample_windows(before, after, valid), seed=0)
    return model


def test_training_loss_falls(fitted):
    pre = [h for h in fitted.history if h["stage"] == 0]
    assert len(pre) == SMALL["pretrain_epochs"]
    assert pre[-1]["loss"] < 0.8 * pre[0]["loss"]
    assert pre[-1]["classification"] < pre[0]["classification"]
    assert len(fitted.history) == SMALL["pretrain_epochs"] + SMALL["stage_epochs"] * (len(SCHEDULE) - 1)
    assert all(np.isfinite(h["loss"]) for h in fitted.history)
    # the clustering term of Eq. 4 is active once lambda exists (timesteps >= 1)
    assert all(h["clustering"] == 0.0 for h in pre)
    assert any(h["clustering"] > 0.0 for h in fitted.history if h["stage"] > 0)


def test_training_fits_the_pseudo_labels_which_the_network_as_initialised_does_not(scene, fitted):
    """What DRLnet's training changes (issue 13 item 6), against the same fit with the learning switched
    off (lr 0: the same data, seed, over-clustering, GGKI and k-means, no weight update).

    It does not change the change map measurably, by design of Eq. 4 (module docstring; the quality
    tests here pass with the network as initialised): measured on make_scene seeds 0, 1, 2, the CI AUC
    of trained and untrained fits agree to 0.0006 (0.9934 / 0.9934, 0.9973 / 0.9979, 0.9957 / 0.9956),
    their F1 within 0.02 either way, and no representation separates the planted change better once
    trained (distance of d(x) to the unchanged centre: AUC 0.860 / 0.932, 0.848 / 0.884, 0.937 / 0.936;
    silhouette of the changed types in d(x): 0.32 / 0.47, 0.47 / 0.38, 0.34 / 0.34). What training does
    change is the fit of Eq. 4's classifier to the previous timestep's labels: at the end of every
    timestep its term is well below that of the frozen network (final timestep: 1.85 / 4.57, 1.25 /
    2.83, 0.29 / 0.96 on those seeds)."""
    before, after, _, valid = scene
    frozen = DRLnet(DRLnetConfig(**{**SMALL, "lr": 0.0}))
    frozen.fit(sample_windows(before, after, valid), seed=0)
    assert [h["stage"] for h in frozen.history] == [h["stage"] for h in fitted.history]
    for stage in range(len(SCHEDULE)):
        trained = [h["classification"] for h in fitted.history if h["stage"] == stage][-1]
        still = [h["classification"] for h in frozen.history if h["stage"] == stage][-1]
        assert trained < 0.6 * still, (stage, trained, still)


def make_mixed_scene(seed: int = 0):
    """make_scene's pair with AFTER's bands mixed and bent by a power 1.5, then standardised again:
    a radiometric change that per-band standardisation does not undo, so an untrained extractor
    reads much of the unchanged area as change."""
    before, after, change, valid = make_scene(seed)
    mix = np.array([[0.5, 0.5, 0.0], [0.0, 0.6, 0.4], [0.3, 0.0, 0.7]], np.float32)
    a = np.einsum("ij,jhw->ihw", mix, after)
    a = np.sign(a) * np.abs(a) ** 1.5
    v = a[:, valid]
    a = (a - v.mean(axis=1)[:, None, None]) / v.std(axis=1)[:, None, None]
    a[:, ~valid] = 0.0
    return before, a.astype(np.float32), change, valid


def auc(score, truth):
    """Area under the ROC curve (Mann-Whitney U from average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    p = int(truth.sum())
    n = truth.size - p
    return (ranks[truth].sum() - p * (p + 1) / 2) / (p * n)


def test_separation_term_trains_the_change_intensity():
    """Issue 12 item 7: with the separation term (``separation_weight``, off by default) the learning
    shows in the change intensity that GGKI thresholds: the same fit with no epochs at all (the
    network as initialised) ranks the planted changes worse and its GGKI map is worse. This fails
    when the learning is switched off (lr 0, no epochs, or separation_weight=0: Eq. 4 as printed
    never reaches ``||h1 - h2||``: AUC 0.9108, F1 0.599 here). Measured (seed 0): AUC 0.9106
    untrained, 0.9167 trained; F1 0.601, 0.643. On real scenes the term does not win everywhere
    (benchmarks/README.md), hence off by default."""
    before, after, change, valid = make_mixed_scene(0)
    windows = sample_windows(before, after, valid)
    cfg = dict(SMALL, pretrain_epochs=2, stage_epochs=4, separation_weight=20.0)
    scores = {}
    for name, extra in (("trained", {}), ("untrained", dict(pretrain_epochs=0, stage_epochs=0))):
        model = DRLnet(DRLnetConfig(**{**cfg, **extra}))
        model.fit(windows, seed=0)
        ci = model.change_intensity(before[None], after[None])[0]
        scores[name] = (auc(ci[valid], change[valid]), f1((ci > model.fitted.threshold) & valid, change))
    (auc_t, f1_t), (auc_u, f1_u) = scores["trained"], scores["untrained"]
    assert auc_t >= auc_u + 0.003, scores
    assert f1_t >= f1_u + 0.02, scores


def test_recurrent_schedule_reduces_the_labels(fitted):
    stages = fitted.stages
    assert [s.k for s in stages] == list(SCHEDULE)
    # timestep 0: the over-clustering into K0 classes, "all samples changed"
    assert stages[0].n_labels == SCHEDULE[0]
    assert stages[0].labels.max() == SCHEDULE[0] - 1
    for prev, cur in zip(stages, stages[1:]):
        assert cur.n_labels <= cur.k + 1          # unchanged share label 0, changed in K_t types
        assert cur.n_labels < prev.n_labels
        assert set(np.unique(cur.labels)) <= set(range(cur.k + 1))
        assert np.sum(cur.labels > 0) == cur.n_changed
        assert 0 < cur.n_changed < fitted.n_samples / 2
    assert fitted.change_centres.shape[0] == SCHEDULE[-1]


def test_finds_the_planted_changes_and_not_the_illumination(scene, fitted):
    before, after, change, valid = scene
    prob = fitted.predict(before[None], after[None], valid[None])[0]
    assert prob.shape == change.shape and prob.dtype == np.float32
    assert np.all((prob[valid] >= 0) & (prob[valid] <= 1))
    changed = (prob >= fitted.threshold) & valid
    assert f1(changed, change) >= 0.6
    # the whole unchanged area went through the illumination change: almost none of it is change
    unchanged = valid & ~change
    assert changed[unchanged].mean() < 0.05
    assert np.median(prob[unchanged]) < 0.1
    # the probability is the GGKI posterior of the change intensity: 0.5 exactly at the threshold
    ci = fitted.change_intensity(before[None], after[None])[0]
    np.testing.assert_array_equal(prob >= 0.5, ci > fitted.fitted.threshold)


def test_drlnet_against_cva_on_the_scene(scene, fitted):
    """DRLnet is at least in CVA's league here (the numbers are reported by the project)."""
    before, after, change, valid = scene
    cva = CVA()
    cva.fit(sample_windows(before, after, valid))
    f_cva = f1((cva.predict(before[None], after[None], valid[None])[0] >= 0.5) & valid, change)
    f_drl = f1((fitted.predict(before[None], after[None], valid[None])[0] >= 0.5) & valid, change)
    assert f_drl >= f_cva - 0.1


def test_same_seed_same_probabilities(scene, fitted):
    before, after, _, valid = scene
    again = DRLnet(DRLnetConfig(**SMALL))
    again.fit(sample_windows(before, after, valid), seed=0)
    p1 = fitted.predict(before[None], after[None], valid[None])
    p2 = again.predict(before[None], after[None], valid[None])
    np.testing.assert_array_equal(p1, p2)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in fitted.history]
    np.testing.assert_array_equal(
        fitted.predict_types(before[None], after[None], valid[None]),
        again.predict_types(before[None], after[None], valid[None]))


def test_predict_types(scene, fitted):
    before, after, change, valid = scene
    batch = (np.stack([before, before]), np.stack([after, after]), np.stack([valid, valid]))
    types = fitted.predict_types(*batch)
    prob = fitted.predict(*batch)
    assert types.shape == (2, SIZE, SIZE) and types.dtype == np.uint8
    assert types.max() <= SCHEDULE[-1]
    np.testing.assert_array_equal(types[0], types[1])
    v = batch[2]
    np.testing.assert_array_equal(types[v] > 0, prob[v] >= 0.5)  # a type exactly where changed
    assert np.all(types[~v] == 0)
    # the planted materials come out as more than one change type
    assert len(np.unique(types[0][change & (types[0] > 0)])) >= 2


def test_superpixel_unit_follows_the_segments(scene, fitted):
    """predict_unit="superpixel" (the paper's unit): one value per intersected superpixel, taken at its
    centre; the planted rectangles come out at least as well as per pixel."""
    before, after, change, valid = scene
    sp = copy.copy(fitted)
    sp.config = dataclasses.replace(fitted.config, predict_unit="superpixel")
    batch = (before[None], after[None], valid[None])
    prob = sp.predict(*batch)[0]
    types = sp.predict_types(*batch)[0]
    labels = superpixels(before, after, valid, round(sp.config.n_segments * valid.sum() / 65536),
                         sp.config.compactness)
    for lab in np.unique(labels[valid])[:50]:
        assert np.unique(prob[labels == lab]).size == 1
    np.testing.assert_array_equal(types[valid] > 0, prob[valid] >= 0.5)
    f_pixel = f1((fitted.predict(*batch)[0] >= 0.5) & valid, change)
    assert f1((prob >= 0.5) & valid, change) >= f_pixel - 0.02


def test_predict_with_types_for_the_engine(scene, fitted):
    """The engine's typed call: the same probabilities, and every valid pixel's type if changed."""
    before, after, _, valid = scene
    batch = (before[None], after[None], valid[None])
    assert fitted.n_types == SCHEDULE[-1]
    prob, kinds = fitted.predict_with_types(*batch)
    np.testing.assert_array_equal(prob, fitted.predict(*batch))
    assert kinds.dtype == np.uint8 and kinds.shape == prob.shape
    assert kinds[batch[2]].min() >= 1 and kinds.max() <= fitted.n_types
    changed = (prob >= 0.5) & batch[2]
    np.testing.assert_array_equal(kinds[changed], fitted.predict_types(*batch)[changed])


def test_detect_end_to_end_writes_change_types(planted_same_grid, tmp_path):
    """``geochange detect --model drlnet`` on the planted GeoTIFF pair of conftest."""
    import rasterio

    from geochange.detect import DetectOptions, detect

    s = planted_same_grid
    out = tmp_path / "drlnet"
    summary = detect(str(s.before), str(s.after), out,
                     DetectOptions(model="drlnet", model_params=dict(SMALL), device="cpu"))
    assert summary["model"]["name"] == "drlnet" and summary["model"]["change_types"] == SCHEDULE[-1]
    with rasterio.open(out / "change_mask.tif") as dm, rasterio.open(out / "change_type.tif") as dt:
        mask, kinds = dm.read(1), dt.read(1)
    truth, valid = s.truth_array == 1, s.truth_array != 255
    assert f1((mask == 1) & valid, truth) >= 0.6
    assert ((kinds == 0) == (mask == 0)).all()
    assert set(np.unique(kinds[mask == 1])) <= set(range(1, SCHEDULE[-1] + 1))


def test_dense_prediction_matches_the_training_samples(scene, fitted):
    """The convolutional per-pixel path equals the network on the superpixel-centre patches."""
    before, after, _, _ = scene
    rows, cols = np.array([0, 5, 64, 127]), np.array([3, 0, 90, 127])  # borders included (edge padding)
    x1 = torch.from_numpy(fitted._scale_patches(_patches(before, rows, cols, 3)))
    x2 = torch.from_numpy(fitted._scale_patches(_patches(after, rows, cols, 3)))
    b, a = (torch.from_numpy(fitted._scale_image(x[None])) for x in (before, after))
    with torch.no_grad():
        h1, h2, d, _ = fitted.net(x1, x2)
        dense1 = fitted.net.dense(b, 3)[0][:, rows, cols].T
        dense_d = fitted.net.dense_dr(fitted.net.dense(b, 3), fitted.net.dense(a, 3))[0][:, rows, cols].T
    np.testing.assert_allclose(dense1.numpy(), h1.numpy(), atol=1e-5)
    np.testing.assert_allclose(dense_d.numpy(), d.numpy(), atol=1e-5)
    ci = fitted.change_intensity(before[None], after[None])[0][rows, cols]
    np.testing.assert_allclose(ci, np.sqrt(((h1 - h2) ** 2).sum(1).numpy()), rtol=1e-4, atol=1e-5)


def test_inputs_are_scaled_to_the_unit_range(scene, fitted):
    """The toolbox's sigmoid nets take inputs in [0, 1]: each band of the pooled training patches
    (both dates) spans exactly [0, 1] by default; ``input_scale="none"`` leaves them as given."""
    before, after, _, valid = scene
    x1, x2 = fitted.collect_samples(sample_windows(before, after, valid), seed=0)
    both = np.concatenate([x1, x2]).reshape(-1, 3, 9).transpose(1, 0, 2).reshape(3, -1)
    np.testing.assert_allclose(both.min(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(both.max(axis=1), 1.0, atol=1e-5)
    raw = DRLnet(DRLnetConfig(**{**SMALL, "input_scale": "none"}))
    r1, _ = raw.collect_samples(sample_windows(before, after, valid), seed=0)
    assert r1.min() < -0.5 and r1.max() > 1.5   # the standardised values themselves
    np.testing.assert_allclose(fitted._scale_image(before[None])[0, :, 5, 7],
                               (before[:, 5, 7] - fitted.input_offset) * fitted.input_gain, rtol=1e-5)


def test_superpixels_intersect_both_dates(scene):
    before, after, _, valid = scene
    joint = superpixels(before, after, valid, 60, 0.1)
    assert np.all(joint[~valid] == 0) and np.all(joint[valid] > 0)
    # finer than either date's own segmentation, and each joint segment lies in one segment of each
    from skimage.segmentation import slic
    for img in (before, after):
        own = slic(np.moveaxis(img, 0, -1).astype(np.float64), n_segments=60, compactness=0.1, mask=valid,
                   convert2lab=False, start_label=1, channel_axis=-1)
        assert joint.max() >= own.max()
        pairs = np.unique(np.stack([joint[valid], own[valid]]), axis=1)
        assert pairs.shape[1] == len(np.unique(joint[valid]))
    rows, cols = superpixel_centres(joint)
    assert rows.size == joint.max()
    np.testing.assert_array_equal(joint[rows, cols], np.arange(1, joint.max() + 1))  # centres inside
    x1, x2 = superpixel_samples(before, after, valid, 3, 1000, 0.1)
    assert x1.shape == x2.shape and x1.shape[1] == 3 * 3 * 3 and x1.dtype == np.float32


def test_drlnet1_fine_tunes_only_after_the_merging_layer(scene):
    """DRLnet1 keeps the pre-trained extractor: lambda (GGKI on h1 - h2) is the same at every step."""
    before, after, _, valid = scene
    model = DRLnet(DRLnetConfig(**{**SMALL, "variant": "DRLnet1", "pretrain_epochs": 2, "stage_epochs": 1}))
    model.fit(sample_windows(before, after, valid), seed=1)
    taus = [s.tau for s in model.stages[1:]]
    assert taus[0] == taus[1]
    assert model.stages[1].n_changed == model.stages[2].n_changed


def test_registry_config_and_errors(scene):
    before, after, _, valid = scene
    model = create_model("drlnet", **SMALL)
    assert isinstance(model, DRLnet) and model.config.k0 == SCHEDULE[0]
    with pytest.raises(GeochangeError, match="fitted"):
        model.predict(before[None], after[None], valid[None])
    with pytest.raises(GeochangeError, match="schedule"):
        create_model("drlnet", schedule=[5, 8])
    with pytest.raises(GeochangeError, match="variant"):
        create_model("drlnet", variant="DRLnet3")
    with pytest.raises(GeochangeError, match="predict_unit"):
        create_model("drlnet", predict_unit="segment")
    with pytest.raises(GeochangeError, match="window"):
        create_model("drlnet", window=4)
    with pytest.raises(GeochangeError, match="no valid"):
        model.fit([(before, after, np.zeros_like(valid))])
    assert create_model("drlnet", schedule=[25, 15, 8, 5]).config.schedule == (25, 15, 8, 5)


def test_params_are_json_ready(fitted):
    params = json.loads(json.dumps(fitted.params(), allow_nan=False))  # strict JSON: no NaN
    assert params["name"] == "drlnet" and params["config"]["schedule"] == list(SCHEDULE)
    assert params["ci_threshold"] == fitted.fitted.threshold
    assert [s["k"] for s in params["stages"]] == list(SCHEDULE)
    assert params["stages"][0]["tau"] is None and params["stages"][1]["tau"] > 0
    assert params["ggki"]["threshold"] == fitted.fitted.threshold


@pytest.mark.parametrize("types, schedule", [(5, (25, 15, 8, 5)), (3, (25, 15, 8, 3)), (10, (25, 15, 10)),
                                             (40, (80, 40))])
def test_types_ends_the_schedule(types, schedule):
    assert DRLnetConfig(types=types).schedule == schedule


def test_row_chunks_do_not_change_the_maps(fitted, scene):
    """predict works on blocks of rows (bounded memory); the block size must not show in the maps."""
    before, after, _, valid = scene
    b, a, v = before[None], after[None], valid[None]
    whole = copy.deepcopy(fitted)
    whole.config.predict_chunk = 10_000
    fitted_small = copy.deepcopy(fitted)
    fitted_small.config.predict_chunk = 7
    p1, t1 = whole.predict_with_types(b, a, v)
    p2, t2 = fitted_small.predict_with_types(b, a, v)
    np.testing.assert_allclose(p1, p2, atol=1e-4)  # float32 convolutions sum in another order
    assert (t1 == t2).mean() > 0.999


# -- issue 15: SLIC's mask, the NumPy training step, torch's threads in detect ---------------------

def test_superpixels_use_no_mask_where_every_pixel_is_valid(scene):
    """A full window is segmented without a mask (skimage seeds a mask by k-means on its coordinates,
    10x slower), and every pixel gets a superpixel."""
    from skimage.segmentation import slic

    before, after = scene[0], scene[1]
    full = np.ones(before.shape[1:], bool)
    labels = superpixels(before, after, full, 60, 0.1)
    assert labels.min() == 1 and labels.shape == full.shape
    plain = [slic(np.moveaxis(img, 0, -1).astype(np.float64), n_segments=60, compactness=0.1, convert2lab=False,
                  start_label=1, channel_axis=-1) for img in (before, after)]
    joint = plain[0] * (plain[1].max() + 1) + plain[1]
    expected = np.unique(joint, return_inverse=True)[1].reshape(joint.shape) + 1
    np.testing.assert_array_equal(labels, expected)


def test_slic_mask_always_restores_the_masked_segmentation(scene):
    """``slic_mask="always"`` segments as before issue 15: SLIC given the (full) mask, k-means seeds."""
    from skimage.segmentation import slic

    before, after = scene[0], scene[1]
    full = np.ones(before.shape[1:], bool)
    labels = superpixels(before, after, full, 60, 0.1, always_mask=True)
    masked = [slic(np.moveaxis(img, 0, -1).astype(np.float64), n_segments=60, compactness=0.1, mask=full,
                   convert2lab=False, start_label=1, channel_axis=-1) for img in (before, after)]
    joint = masked[0] * (masked[1].max() + 1) + masked[1]
    np.testing.assert_array_equal(labels, np.unique(joint, return_inverse=True)[1].reshape(joint.shape) + 1)
    assert create_model("drlnet", slic_mask="always").config.slic_mask == "always"
    with pytest.raises(GeochangeError, match="slic_mask"):
        create_model("drlnet", slic_mask="sometimes")


def test_superpixels_of_a_date_without_structure_do_not_collapse():
    """SLIC seeded on its grid makes 2 segments of white noise where 1000 are asked; superpixels() then
    seeds by k-means on the (full) mask, as before issue 15, and gets hundreds."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(2, 3, 128, 128)).astype(np.float32)
    labels = superpixels(noise[0], noise[1], np.ones((128, 128), bool), 250, 0.1)
    assert labels.min() == 1 and labels.max() > 250


def test_superpixels_leave_invalid_pixels_unlabelled(scene):
    before, after = scene[0], scene[1]
    valid = np.ones(before.shape[1:], bool)
    valid[:, :20] = False
    valid[50:60, 70:90] = False
    labels = superpixels(before, after, valid, 60, 0.1)
    assert (labels[~valid] == 0).all() and (labels[valid] >= 1).all()
    assert len(np.unique(labels[valid])) == labels.max()  # labels 1..n, no gaps


@pytest.mark.parametrize("variant,separation", [("DRLnet2", 0.0), ("DRLnet2", 20.0), ("DRLnet1", 0.0)])
def test_numpy_training_step_matches_torch_autograd(variant, separation):
    """The CPU's hand-written SGD steps (_NumpyStep) give torch's autograd + SGD results to float rounding:
    weights, losses of every term, with the clustering updates of Algorithm 1."""
    from geochange.models.drlnet import _build_network, _Clustering

    cfg = DRLnetConfig(variant=variant, separation_weight=separation)
    rng = np.random.default_rng(0)
    n = 300
    x1 = torch.from_numpy(rng.random((n, 27), dtype=np.float32))
    x2 = torch.from_numpy(rng.random((n, 27), dtype=np.float32))
    prev = torch.from_numpy(rng.integers(0, 6, n))
    lam = torch.from_numpy(rng.random(n) < 0.3)
    labels = torch.where(lam, torch.from_numpy(rng.integers(1, 4, n)), 0)
    centres = torch.from_numpy(rng.random((4, 10), dtype=np.float32))
    torch.manual_seed(0)
    net = _build_network(27, cfg, 6)
    runs = []
    for train in ("_torch_train", "_train"):
        model = DRLnet(cfg)
        model.net = copy.deepcopy(net)
        params = ([p for m in [*model.net.dr, model.net.classifier] for p in m.parameters()]
                  if variant == "DRLnet1" else list(model.net.parameters()))
        getattr(model, train)(x1, x2, prev, _Clustering(centres, labels, lam, 0.5), np.random.default_rng(1), 2,
                              stage=1, params=params)
        runs.append(model)
    by_torch, by_numpy = runs
    for p, q, p0 in zip(by_torch.net.parameters(), by_numpy.net.parameters(), net.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), atol=2e-6)
    moved = max(float((p - p0).detach().abs().max()) for p, p0 in zip(by_numpy.net.parameters(), net.parameters()))
    assert moved > 0.01
    frozen = [p for m in [*by_numpy.net.extractor, by_numpy.net.merge] for p in m.parameters()]
    if variant == "DRLnet1":  # the extractor and the merging layer are not fine-tuned
        assert all(torch.equal(p, p0) for p, p0 in zip(frozen, [*net.extractor.parameters(), *net.merge.parameters()]))
    for a, b in zip(by_torch.history, by_numpy.history):
        for key in ("loss", "classification", "clustering", "sparsity", "separation"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7)
    assert (by_numpy.history[-1]["separation"] > 0) == (separation > 0)


class ThreadsDRLnet(DRLnet):
    """DRLnet that notes torch's CPU threads at each predict call."""

    name = "threads_drlnet"
    seen: list = []

    def predict_with_types(self, before, after, valid):
        ThreadsDRLnet.seen.append(torch.get_num_threads())
        return super().predict_with_types(before, after, valid)


@pytest.mark.parametrize("threads", [None, 2])
def test_detect_runs_torch_on_the_chosen_threads(planted_same_grid, tmp_path, monkeypatch, threads):
    """detect runs the model's inference on ``device.inference_thread_count()`` torch threads (the cores
    less one for the engine's reader and writer; or ``DetectOptions.torch_threads``), records it, and
    gives torch's setting back."""
    from geochange import models
    from geochange.detect import DetectOptions, detect
    from geochange.device import inference_thread_count

    monkeypatch.setitem(models.MODELS, "threads_drlnet", f"{__name__}:ThreadsDRLnet")
    ThreadsDRLnet.seen = []
    torch.set_num_threads(3)
    s = planted_same_grid
    params = {**SMALL, "pretrain_epochs": 1, "stage_epochs": 1}
    summary = detect(str(s.before), str(s.after), tmp_path / "out",
                     DetectOptions(model="threads_drlnet", model_params=params, device="cpu", tile=64, overlap=8,
                                   torch_threads=threads))
    want = inference_thread_count() if threads is None else threads
    assert inference_thread_count() == max(1, len(os.sched_getaffinity(0)) - 1)
    assert ThreadsDRLnet.seen and set(ThreadsDRLnet.seen) == {want}
    assert summary["engine"]["torch_threads"] == want
    assert torch.get_num_threads() == 3
    torch.set_num_threads(1)
