"""RSC-VAE (geochange.models.rscvae): losses by hand, the augmentations, learning, the outlier score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from geochange.errors import GeochangeError
from geochange.models import create_model
from geochange.models.rscvae import (RSCVAE, RSCVAEConfig, cutout, hflip, js_gaussians, kl_gaussians,
                                     kl_standard_normal, l1_reconstruction, rot90, shift_distribution, vflip)
from geochange.train import TrainOptions, load_model, save_checkpoint, train

SIZE = 16


def _t(*values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


# -- losses -----------------------------------------------------------------------------------------

def test_kl_to_the_standard_normal_by_hand():
    # 1/2 (mu^2 + var - 1 - log var) per dimension: (1, var 1) -> 0.5; (0, var 2) -> (1 - ln 2) / 2
    kl = kl_standard_normal(_t(1.0, 0.0), _t(0.0, math.log(2.0)))
    assert kl.item() == pytest.approx(0.5 + 0.5 * (1.0 - math.log(2.0)))
    assert kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).tolist() == [0.0, 0.0, 0.0]
    # the general form agrees with the special case
    assert kl_gaussians(_t(1.0, 0.0), _t(0.0, math.log(2.0)), _t(0.0, 0.0), _t(0.0, 0.0)).item() == pytest.approx(kl.item())


def test_js_by_hand_symmetric_and_zero_for_equal_distributions():
    # N(0, 1) vs N(2, 1): M = N(1, 1 + 1) by moment matching; KL(P || M) = (1/2 + 1/2 - 1 + ln 2) / 2 each
    assert js_gaussians(_t(0.0), _t(0.0), _t(2.0), _t(0.0)).item() == pytest.approx(0.5 * math.log(2.0))
    g = torch.Generator().manual_seed(0)
    mu1, lv1, mu2, lv2 = (torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(4))
    js12, js21 = js_gaussians(mu1, lv1, mu2, lv2), js_gaussians(mu2, lv2, mu1, lv1)
    assert torch.allclose(js12, js21)
    assert (js12 > 0).all()
    assert torch.allclose(js_gaussians(mu1, lv1, mu1, lv1), torch.zeros(5, dtype=torch.float64))


def _js_numeric(m1: float, s1: float, m2: float, s2: float) -> float:
    """The true JS divergence of two 1-D Gaussians by quadrature."""
    x = np.linspace(min(m1 - 12 * s1, m2 - 12 * s2), max(m1 + 12 * s1, m2 + 12 * s2), 200_001)
    p = np.exp(-0.5 * ((x - m1) / s1) ** 2) / (s1 * math.sqrt(2 * math.pi))
    q = np.exp(-0.5 * ((x - m2) / s2) ** 2) / (s2 * math.sqrt(2 * math.pi))
    m = 0.5 * (p + q)
    f = 0.5 * p * np.log(np.maximum(p, 1e-300) / m) + 0.5 * q * np.log(np.maximum(q, 1e-300) / m)
    return float(np.sum(f) * (x[1] - x[0]))


@pytest.mark.parametrize("m2, s2", [(0.5, 1.0), (0.3, 1.2), (1.0, 1.0)])
def test_js_approximation_is_close_to_the_true_js_for_nearby_gaussians(m2, s2):
    approx = js_gaussians(_t(0.0), _t(0.0), _t(m2), _t(2 * math.log(s2))).item()
    assert approx == pytest.approx(_js_numeric(0.0, 1.0, m2, s2), rel=0.04)


def test_l1_reconstruction_sums_absolute_errors_per_sample():
    x = torch.zeros(2, 2, 2, 2)
    x_hat = x.clone()
    x_hat[0, 0, 0, 0], x_hat[0, 1, 1, 1], x_hat[1, 0, 1, 0] = 1.5, -2.0, 0.25
    assert l1_reconstruction(x, x_hat).tolist() == [3.5, 0.25]


# -- augmentations ----------------------------------------------------------------------------------

def test_flips_and_rotation_are_exact():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(hflip(x), torch.from_numpy(x.numpy()[..., ::-1].copy()))
    assert torch.equal(vflip(x), torch.from_numpy(x.numpy()[..., ::-1, :].copy()))
    r = rot90(x)
    assert r.shape == x.shape
    assert torch.equal(r[..., 0, 0], x[..., 0, 3]) and torch.equal(r[..., 3, 0], x[..., 0, 0])  # counter-clockwise
    assert torch.equal(rot90(rot90(rot90(rot90(x)))), x)
    assert torch.equal(hflip(hflip(x)), x) and torch.equal(vflip(vflip(x)), x)


def test_cutout_zeroes_exactly_a_square_clipped_at_the_borders():
    x = torch.ones(1, 2, 8, 8)
    inside = cutout(x, 4, 4, 4)
    assert inside.shape == x.shape and (inside == 0).sum().item() == 2 * 16
    assert (inside[..., 2:6, 2:6] == 0).all()
    corner = cutout(x, 4, 0, 7)  # rows -2..1 and cols 5..8 clipped: 2 x 3 pixels per channel
    assert (corner == 0).sum().item() == 2 * 6 and (corner[..., 0:2, 5:8] == 0).all()
    assert (x == 1).all()  # the input is left alone


def test_shift_distribution_changes_the_chosen_samples_only_and_one_date_by_default():
    torch.manual_seed(0)
    x = torch.randn(6, 4, SIZE, SIZE)  # C = 2 bands per date
    chosen = torch.tensor([True, False, True, False, True, True])
    out = shift_distribution(x, chosen, ("hflip", "vflip", "rot90", "cutout"), dates="one")
    assert out.shape == x.shape
    assert torch.equal(out[~chosen], x[~chosen])
    for i in torch.nonzero(chosen).flatten().tolist():
        same_before = torch.equal(out[i, :2], x[i, :2])
        same_after = torch.equal(out[i, 2:], x[i, 2:])
        assert same_before != same_after  # exactly one date shifted
    both = shift_distribution(x, torch.ones(6, dtype=torch.bool), ("rot90",), dates="both")
    assert torch.equal(both, rot90(x))  # a single op: always that op, on the whole sample


# -- learning and the outlier score -----------------------------------------------------------------

def _pairs(n: int, seed: int, changed_every: int = 0, bands: int = 2) -> list[dict]:
    """Unchanged pairs of smooth ramps (AFTER = BEFORE + noise); every ``changed_every``-th pair has a
    bright 6x6 square planted in AFTER (a change: the anomaly). Already standardised-like values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
    items = []
    for i in range(n):
        g = rng.normal(0, 1, (bands, 3))
        before = (g[:, 0, None, None] * xx + g[:, 1, None, None] * yy + 0.5 * g[:, 2, None, None]).astype(np.float32)
        after = before + rng.normal(0, 0.05, before.shape).astype(np.float32)
        label = np.zeros((SIZE, SIZE), np.uint8)
        if changed_every and i % changed_every == changed_every - 1:
            r, c = rng.integers(0, SIZE - 6, 2)
            after[:, r:r + 6, c:c + 6] = 2.0
            label[r:r + 6, c:c + 6] = 1
        items.append({"before": before, "after": after, "label": label})
    return items


def _small(**kw) -> RSCVAE:
    cfg = dict(size=SIZE, widths=(16, 32), latent=8, epochs=30, batch_size=16, lr=0.003, cosine_t_max=0,
               patch=SIZE, cell=SIZE)
    return RSCVAE(RSCVAEConfig(**{**cfg, **kw}))


def _stack(items: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([i["before"] for i in items]), np.stack([i["after"] for i in items]),
            np.array([int(i["label"].max()) for i in items]))


@pytest.fixture(scope="module")
def trained() -> tuple[RSCVAE, dict, list[dict]]:
    """RSC-VAE_o trained by the shared trainer on 100 unchanged pairs (what the 0.99 quantile threshold
    needs), score statistics fitted."""
    normal = _pairs(100, seed=0)
    model = _small()
    summary = train(model, normal, TrainOptions(device="cpu", standardize=False))
    assert model.extra_state()["n_normal"] == 100  # the trainer's finish hook fitted the score statistics
    return model, summary, normal


def test_training_makes_the_loss_fall(trained):
    model, summary, _ = trained
    losses = [row["loss"] for row in summary["history"]]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    assert {"l_recon", "l_enc1", "l_enc2", "l_mut", "anomalous"} <= set(summary["history"][-1])
    assert summary["history"][-1]["l_mut"] > 0  # the recoding is trained (lambda = 0.1)


def test_planted_changes_score_higher_than_unchanged_pairs(trained):
    model, _, _ = trained
    before, after, y = _stack(_pairs(40, seed=99, changed_every=2))
    s = model.score(before, after)
    assert s.min() >= 0 and s.max() <= 1
    assert roc_auc_score(y, s) > 0.85
    assert s[y == 1].mean() > s[y == 0].mean() + 0.15
    prob = model.predict(before, after, np.ones((len(y), SIZE, SIZE), bool))
    assert prob.shape == (40, SIZE, SIZE) and prob.dtype == np.float32
    assert np.array_equal(prob, np.broadcast_to(s[:, None, None], prob.shape))  # patch = cell = window: its score


def test_score_statistics_are_eq15_16_on_the_normal_training_data(trained):
    model, _, normal = trained
    before, after, _ = _stack(normal)
    mut, recon = model.outlier_terms(before, after)
    stats = model.extra_state()
    assert stats["e_mut"] == pytest.approx(mut.mean(), rel=1e-5)
    assert stats["e_recon"] == pytest.approx(recon.mean(), rel=1e-5)
    s = 0.5 * mut / mut.mean() + 0.5 * recon / recon.mean()
    assert stats["s_min"] == pytest.approx(s.min(), rel=1e-5) and stats["s_max"] == pytest.approx(s.max(), rel=1e-5)
    norm = model.score(before, after)
    assert norm.min() == pytest.approx(0.0, abs=1e-6) and norm.max() == pytest.approx(1.0, abs=1e-6)
    assert model.threshold == pytest.approx(np.quantile(norm, 0.99), abs=1e-5)


def test_checkpoint_reloads_to_identical_scores(trained, tmp_path):
    model, _, _ = trained
    before, after, _ = _stack(_pairs(8, seed=7, changed_every=2))
    save_checkpoint(tmp_path / "rsc.pt", model)
    again = load_model(tmp_path / "rsc.pt")
    assert isinstance(again, RSCVAE) and again.config == model.config
    assert np.array_equal(again.score(before, after), model.score(before, after))
    assert again.threshold == model.threshold


def test_an_unfitted_model_refuses_to_score():
    model = create_model("rscvae", size=SIZE, widths=(8,), latent=4)
    model.build(2)
    with pytest.raises(GeochangeError, match="fit_score_statistics"):
        model.score(*_stack(_pairs(2, seed=1))[:2])


def test_shifted_mode_trains_pseudo_anomalies_without_reconstructing_them():
    model = _small(mode="shifted", dsa_p=0.5, epochs=3)
    summary = train(model, _pairs(100, seed=2), TrainOptions(device="cpu", standardize=False))
    shares = [row["anomalous"] for row in summary["history"]]
    assert 0.2 < np.mean(shares) < 0.8 and all(np.isfinite(r["loss"]) for r in summary["history"])


def test_imbalanced_mode_uses_a_few_real_anomalies_and_needs_some():
    items = _pairs(100, seed=3) + _pairs(10, seed=4, changed_every=1)
    model = _small(mode="imbalanced", anomaly_share=0.02, epochs=2)
    summary = train(model, items, TrainOptions(device="cpu", standardize=False))
    assert summary["history"][0]["samples"] == 100 + 2  # 2 % of 100 normals
    assert summary["history"][0]["anomalous"] > 0
    with pytest.raises(GeochangeError, match="changed pairs"):
        train(_small(mode="imbalanced", epochs=1), _pairs(100, seed=5), TrainOptions(device="cpu", standardize=False))


def test_too_few_normal_pairs_are_refused_before_training_not_fitted_to_a_zero_threshold(tmp_path):
    """Issue 13: one unchanged pair gave Eq. 16 no range and a threshold of 0.0 that flagged every pixel.
    The threshold is the 0.99 quantile of the normal scores: 100 pairs needed, 99 refused (one line that
    says how many there are, how many are needed and what to add), and nothing written."""
    for n in (1, 99):
        with pytest.raises(GeochangeError, match=rf"^rscvae: {n} normal .* needs at least 100 .*add unchanged pairs"):
            train(_small(epochs=1), _pairs(n, seed=6), TrainOptions(device="cpu", standardize=False, out=tmp_path / "r"))
        assert not (tmp_path / "r").exists()
    model = _small(epochs=1, threshold_quantile=0.9)   # a coarser quantile needs fewer: 10
    assert model.normal_pairs_needed() == 10
    train(model, _pairs(10, seed=6), TrainOptions(device="cpu", standardize=False))
    assert model.stats["n_normal"] == 10 and 0.0 < model.threshold < 1.0
    # called directly (a checkpoint, other data), the statistics refuse too, and pairs without a score range
    with pytest.raises(GeochangeError, match="needs at least 10"):
        model.fit_score_statistics(_pairs(9, seed=7), standardize=False)
    same = _pairs(1, seed=8) * 10
    with pytest.raises(GeochangeError, match="same outlier score"):
        model.fit_score_statistics(same, standardize=False)
    assert not model.stats   # no half-fitted statistics left behind


def test_config_is_checked():
    with pytest.raises(GeochangeError, match="mode"):
        RSCVAEConfig(mode="semi")
    with pytest.raises(GeochangeError, match="divisible"):
        RSCVAEConfig(size=20, widths=(8, 8, 8))
    with pytest.raises(GeochangeError, match="dsa_ops"):
        RSCVAEConfig(dsa_ops=("blur",))
    assert RSCVAEConfig(mode="d", dsa_ops=["cutout"]).mode == "shifted"


def test_detect_with_a_trained_checkpoint_maps_the_planted_scene(planted_same_grid, tmp_path):
    """tile -> train rscvae -> detect --checkpoint: the PCD heat map scores planted buildings above the rest."""
    import rasterio

    from geochange.data.tile import tile
    from geochange.detect import DetectOptions, detect

    s = planted_same_grid
    tile(str(s.before), str(s.after), tmp_path / "ds", size=32, overlap=16, split=(1, 0, 0))
    model = _small(epochs=15, patch=32, cell=8)
    summary = train(model, tmp_path / "ds", TrainOptions(device="cpu", out=tmp_path / "run"))
    assert "finish_e_mut" in summary["history"][-1]
    detect(str(s.before), str(s.after), tmp_path / "out",
           DetectOptions(checkpoint=str(tmp_path / "run" / "last.pt"), tile=128, overlap=32, device="cpu"))
    with rasterio.open(tmp_path / "out" / "change_probability.tif") as ds:
        prob = ds.read(1, masked=True)
    truth = s.truth_array
    assert prob[truth == 1].mean() > prob[truth == 0].mean() + 0.1


def test_detect_without_a_checkpoint_learns_from_the_pair_itself(planted_same_grid, tmp_path):
    """--model rscvae with no checkpoint: one-class training on noisy negatives of the scene itself."""
    import rasterio

    from geochange.detect import DetectOptions, detect

    s = planted_same_grid
    params = dict(size=SIZE, widths=(16, 32), latent=8, batch_size=16, lr=0.003, cosine_t_max=0,
                  patch=32, cell=8, scene_patches=200, scene_epochs=10)
    summary = detect(str(s.before), str(s.after), tmp_path / "out",
                     DetectOptions(model="rscvae", model_params=params, tile=128, overlap=32, device="cpu",
                                   sample_windows=16, sample_size=96))
    assert summary["model"]["score_statistics"]["n_normal"] == 200
    with rasterio.open(tmp_path / "out" / "change_probability.tif") as ds:
        prob = ds.read(1, masked=True)
    assert prob[s.truth_array == 1].mean() > prob[s.truth_array == 0].mean() + 0.05
