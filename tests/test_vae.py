"""The disentangled VAE (geochange.models.vae): losses on hand-computed tensors, both encoders' shapes,
training through the shared trainer (representation, fine-tuning), anomaly mode, checkpoints."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from geochange.data.digits import digit_pairs
from geochange.device import torch_threads
from geochange.errors import GeochangeError
from geochange.models import create_model
from geochange.models.vae import (DisentangledVAE, VAEConfig, activation_loss, cosine_distance, fft_conv2d,
                                  fft_conv_transpose2d, gaussian_nll, invmax_loss, jeffreys, kl_weight, l1_distance,
                                  l2_distance, latent_distance, mmd_gaussians, modified_l2, sparsity_loss)
from geochange.progress import set_quiet
from geochange.train import TrainOptions, load_model, train, train_model


@pytest.fixture(autouse=True)
def one_thread():
    """Small batches: intra-op threads only cost time on this machine (see geochange.device.torch_threads)."""
    with torch_threads(1):
        yield


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# -- losses on small hand-computed tensors -----------------------------------------------------------

def test_modified_l2_closed_form():
    # mu_A = (1, 2), mu_B = (0, 0), sigma_A = (1, 2), sigma_B = (2, 1): ((1/2) + (4/2)) / 2 = 1.25 (Eq. 8)
    mu_a, mu_b = t([1.0, 2.0]), t([0.0, 0.0])
    lv_a, lv_b = t([0.0, 2 * math.log(2)]), t([2 * math.log(2), 0.0])
    assert modified_l2(mu_a, lv_a, mu_b, lv_b).item() == pytest.approx(1.25)
    # a flatter posterior makes the same mean difference nearer (Sec. 3.3)
    assert modified_l2(mu_a, lv_a + 2, mu_b, lv_b + 2).item() == pytest.approx(1.25 / math.e ** 2)


def test_jeffreys_closed_form():
    # 1-D: N(0, 1) vs N(1, 4): KL(A||B) = (1/4 + 1/4 - 1 + ln 4) / 2, KL(B||A) = (4 + 1 - 1 - ln 4) / 2; sum 1.75
    mu_a, mu_b, lv_a, lv_b = t([0.0]), t([1.0]), t([0.0]), t([math.log(4)])
    assert jeffreys(mu_a, lv_a, mu_b, lv_b).item() == pytest.approx(1.75)
    assert jeffreys(mu_b, lv_b, mu_a, lv_a).item() == pytest.approx(1.75)  # symmetric
    # averaged over units: a second, identical unit halves it
    two = jeffreys(t([0.0, 0.0]), t([0.0, 0.0]), t([1.0, 0.0]), t([math.log(4), 0.0]))
    assert two.item() == pytest.approx(0.875)


def test_mean_distances_and_mmd():
    mu_a, mu_b, lv = t([1.0, 0.0], [1.0, 1.0]), t([0.0, 1.0], [2.0, 2.0]), torch.zeros(2, 2, dtype=torch.float64)
    np.testing.assert_allclose(l2_distance(mu_a, lv, mu_b, lv).numpy(), [1.0, 1.0])
    np.testing.assert_allclose(l1_distance(mu_a, lv, mu_b, lv).numpy(), [1.0, 1.0])
    np.testing.assert_allclose(cosine_distance(mu_a, lv, mu_b, lv).numpy(), [1.0, 0.0], atol=1e-12)
    # MMD of two point masses (variance -> 0) is 2 - 2 k(a, b); bandwidth h^2 = 1 unit: 2 - 2 exp(-1/2)
    tiny = t([-40.0])
    assert mmd_gaussians(t([0.0]), tiny, t([1.0]), tiny).item() == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-6)
    # zero for equal distributions, and it sees a difference in variance alone (the mean distances do not)
    assert mmd_gaussians(t([0.3]), t([0.5]), t([0.3]), t([0.5])).item() == pytest.approx(0.0, abs=1e-12)
    assert mmd_gaussians(t([0.0]), t([0.0]), t([0.0]), t([2.0])).item() > 1e-3
    for name in ("modified-l2", "jeffreys", "l2", "l1", "cosine", "mmd"):
        d = latent_distance(name, mu_a, lv, mu_b, lv)
        assert d.shape == (2,) and (d >= -1e-12).all()


def test_gaussian_nll_is_the_normal_log_likelihood():
    x, x_hat = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(3, 1, 4, 4)
    expected = -torch.distributions.Normal(x_hat, 0.5).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(x, x_hat, 0.5), expected)


def test_sparsity_loss_is_minimised_at_the_target():
    s = 0.5
    grid = np.linspace(0.05, 1.6, 32)
    values = [sparsity_loss(torch.full((8, 20), v), s).item() for v in grid]
    assert grid[int(np.argmin(values))] == pytest.approx(s, abs=0.03)
    assert sparsity_loss(torch.full((8, 20), s), s).item() == pytest.approx(0.0, abs=1e-9)
    # m_i is the batch mean of |mu_i|: signs do not matter, and 20 units at KL(0.5 || 0.25) each
    mixed = torch.tensor([[0.25], [-0.25]]).repeat(1, 20)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert sparsity_loss(mixed, s).item() == pytest.approx(20 * kl, rel=1e-5)
    # beyond the clamp (|mu| > 1) it stays finite and still pulls m back toward s
    mu = torch.full((4, 3), 2.0, requires_grad=True)
    loss = sparsity_loss(mu, s)
    loss.backward()
    assert math.isfinite(loss.item()) and (mu.grad > 0).all()
    # another target moves the minimum
    values = [sparsity_loss(torch.full((8, 20), v), 0.2).item() for v in grid]
    assert grid[int(np.argmin(values))] == pytest.approx(0.2, abs=0.03)


def test_invmax_and_activation_loss():
    mu = torch.tensor([[0.5, -2.0], [0.1, 0.2]])
    expected = (1 / 2.01 + 1 / 0.21) / 2  # Eq. 11 with the 0.01 guard
    assert invmax_loss(mu).item() == pytest.approx(expected, rel=1e-6)
    assert activation_loss(mu, 0.5, invmax=True).item() == pytest.approx(
        sparsity_loss(mu, 0.5).item() + expected, rel=1e-6)
    assert activation_loss(mu, 0.5, invmax=False).item() == pytest.approx(sparsity_loss(mu, 0.5).item())
    # the trivial solution mu_c = 0 that L_act exists to prevent is heavily penalised
    assert activation_loss(torch.zeros(4, 20)).item() > 100


def test_kl_annealing():
    assert kl_weight(0.0, 1.0) == 0.0 and kl_weight(0.5, 1.0) == 0.5 and kl_weight(2.0, 1.0) == 1.0
    assert kl_weight(0.25, 0.5) == 0.5
    assert kl_weight(0.0, 0.0) == 1.0  # off: the MNIST setting


# -- configuration and architectures ---------------------------------------------------------------

def test_appendix_b_defaults_per_architecture():
    m = VAEConfig(arch="mnist").settled()
    assert (m.lr, m.batch_size, m.lambda_sim, m.lambda_act, m.lr_decay, m.kl_anneal) == (1e-3, 100, 1.0, 1.0, False, 0.0)
    assert (m.common, m.specific, m.classifier, m.patch) == ((20,), (10,), (100, 100), 28)
    v = VAEConfig(arch="vgg").settled()
    assert v.patch == 112
    assert (v.lr, v.batch_size, v.lambda_sim, v.lambda_act, v.lr_decay, v.kl_anneal) == (1e-4, 50, 10.0, 1.0, True, 1.0)
    assert v.kernels == (64, 32, 16, 8, 1) and v.common == (0, 0, 0, 16, 16) and v.classifier == (2048, 2048)
    assert m.weight_decay == v.weight_decay == 5e-4 and m.epochs == v.epochs == 30 and m.sparsity == 0.5
    assert VAEConfig(lr=0.01).lr == 0.01  # an explicit value wins
    for bad in (dict(arch="x"), dict(stage="x"), dict(distance="x"), dict(arch="vgg", patch=100), dict(sparsity=1.0),
                dict(arch="mnist", patch=32), dict(patch=64)):
        with pytest.raises(GeochangeError):
            VAEConfig(**bad)


def test_auto_architecture_follows_the_patch_size():
    """arch=auto (the default): Enc-MNIST for 28 px, Enc-VGG otherwise, with the side as patch."""
    assert VAEConfig().arch == "auto" and VAEConfig().lr is None   # open until the data settles it
    assert VAEConfig().settled(28).arch == "mnist"
    v = VAEConfig().settled(128)
    assert (v.arch, v.patch, v.lr, v.kernels) == ("vgg", 128, 1e-4, (64, 32, 16, 8, 1))
    assert VAEConfig(patch=112).arch == "vgg" and VAEConfig(patch=28).arch == "mnist"
    assert VAEConfig(arch="vgg").settled(128).patch == 128          # a patch left open takes the data's side
    assert VAEConfig(lr=0.5).settled(128).lr == 0.5                  # explicit values survive
    assert VAEConfig().settled().arch == "mnist"                     # no data (detect's self-training): 28 px
    with pytest.raises(GeochangeError, match="multiple of 16"):
        VAEConfig().settled(64)


def _patches(n: int, side: int, bands: int = 1) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"before": rng.normal(size=(bands, side, side)).astype(np.float32),
             "after": rng.normal(size=(bands, side, side)).astype(np.float32),
             "label": np.full((side, side), 255, np.uint8)} for _ in range(n)]


def test_training_settles_the_architecture_from_the_data_and_the_checkpoint_keeps_it(tmp_path):
    """`geochange train vae --data <build-wdc dataset>` (128 px patches) builds Enc-VGG, and the
    checkpoint rebuilds the same network; a patch side neither encoder takes says what to give."""
    cfg = dict(epochs=1, batch_size=2, width=1 / 16)
    model = create_model("vae", **cfg)
    summary = train(model, _patches(2, 128), TrainOptions(standardize=False, out=tmp_path / "vgg"))
    assert (model.config.arch, model.config.patch) == ("vgg", 128)
    assert summary["config"]["arch"] == "vgg" and summary["config"]["patch"] == 128
    loaded = load_model(summary["checkpoint"])
    assert (loaded.config.arch, loaded.config.patch) == ("vgg", 128)
    assert [h.kernel_size for h in loaded.net.hidden] == [h.kernel_size for h in model.net.hidden]
    x = np.random.default_rng(1).normal(size=(2, 1, 128, 128)).astype(np.float32)
    np.testing.assert_allclose(loaded.common_distance(x, x[::-1]), model.common_distance(x, x[::-1]), rtol=1e-5)
    with pytest.raises(GeochangeError, match="patch=128"):   # an explicit arch that does not fit: which -p
        train(create_model("vae", arch="mnist", **cfg), _patches(2, 128), TrainOptions(standardize=False))
    with pytest.raises(GeochangeError, match="multiple of 16"):
        train(create_model("vae", **cfg), _patches(2, 64), TrainOptions(standardize=False))


def test_enc_mnist_shapes():
    model = DisentangledVAE(VAEConfig())   # built without data: arch auto settles on Enc-MNIST
    model.build(1)
    assert model.config.arch == "mnist"
    x = torch.randn(5, 1, 28, 28)
    (mu_c, lv_c, mu_s, lv_s), = model.net.encode(x)
    assert mu_c.shape == lv_c.shape == (5, 20, 1, 1) and mu_s.shape == lv_s.shape == (5, 10, 1, 1)
    assert model.net.decode([torch.cat([mu_c, mu_s], 1)]).shape == x.shape
    assert model.net.classify(x, x).shape == (5, 2)


@pytest.mark.parametrize("patch, sides", [(128, (65, 33, 17, 9, 2)), (112, (49, 25, 13, 7, 1))])
def test_enc_vgg_shapes(patch, sides):
    """Table 6b's spatial sizes for 128x128 inputs (and the PCD 112x112 patches), full VGG-16 widths,
    on torch's meta device (shapes without arithmetic)."""
    with torch.device("meta"):
        model = DisentangledVAE(VAEConfig(arch="vgg", patch=patch))
        model.build(3)
        x = torch.empty(2, 3, patch, patch)
        levels = model.net.encode(x)
        for (mu_c, lv_c, mu_s, lv_s), side, c in zip(levels, sides, (0, 0, 0, 16, 16)):
            assert mu_c.shape == lv_c.shape == (2, c, side, side)
            assert mu_s.shape[1:] == (32 if c == 0 else 16, side, side)
        assert model.net.decode([torch.cat([m, s], 1) for m, _, s, _ in levels]).shape == x.shape
        mu, _ = model.net.common_features(levels)
        assert mu.shape == (2, 16 * sides[3] ** 2 + 16 * sides[4] ** 2)  # common features on H4 and H5 only
        assert model.net.classify(x, x).shape == (2, 2)
    assert model.net.classifier[0].out_features == 2048
    assert [h.kernel_size[0] for h in model.net.hidden] == [64, 32, 16, 8, 1]


def test_fft_convolutions_equal_the_direct_ones():
    """Enc-VGG's wide hidden kernels run through the FFT: the same outputs and gradients as torch's
    convolutions, on non-square maps and kernels."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 23, 19, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 9, 12, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    y = fft_conv2d(x, w, b)
    ref = F.conv2d(x, w, b)
    assert y.shape == ref.shape == (2, 4, 15, 8)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad((y * ref.detach()).sum(), (x, w))
    for got, want in zip(grads, torch.autograd.grad((ref * ref.detach()).sum(), (x, w))):
        torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-3)
    z = torch.randn(2, 4, 15, 8, generator=g, dtype=torch.float64)
    wt = torch.randn(4, 3, 9, 12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fft_conv_transpose2d(z, wt, b[:3]).double(), F.conv_transpose2d(z, wt, b[:3]),
                               rtol=1e-4, atol=1e-4)


def test_enc_vgg_learns_on_real_arithmetic():
    """A narrow Enc-VGG (width 1/16, 4x4 hidden kernels) trains end to end: its loss falls on one batch."""
    torch.manual_seed(0)
    model = DisentangledVAE(VAEConfig(arch="vgg", width=1 / 16, kernels=(4, 4, 4, 4, 1), lr=1e-3))
    model.build(2)
    x = torch.randn(1, 2, 112, 112)
    y = x + 0.1 * torch.randn_like(x)
    opt = model.make_optimizer()
    losses = []
    for _ in range(4):
        out = model.representation_losses(x, y, beta=0.5)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]


# -- sampling, optimiser -----------------------------------------------------------------------------

def test_select_representation_negatives_and_undersampled_finetuning():
    import pandas as pd

    index = pd.DataFrame({"label": [0] * 20 + [1] * 4 + [-1] * 3})
    rng = np.random.default_rng(0)
    rep = DisentangledVAE(VAEConfig()).select(0, index, rng)
    assert set(rep) == set(range(20)) | {24, 25, 26}  # every pair not known to be changed
    fine = DisentangledVAE(VAEConfig(stage="finetune"))
    picks = [fine.select(e, index, rng) for e in range(3)]
    for p in picks:
        assert sorted(p[:4]) == [20, 21, 22, 23] and len(p) == 8 and set(p[4:]) <= set(range(20))
    assert len({tuple(p) for p in picks}) > 1  # a fresh draw of negatives each epoch


def test_finetuning_optimiser_slows_the_encoder():
    model = DisentangledVAE(VAEConfig(stage="finetune"))
    model.build(1)
    enc, cls = model.make_optimizer().param_groups
    assert enc["lr"] == pytest.approx(1e-4) and cls["lr"] == pytest.approx(1e-3) and enc["weight_decay"] == 5e-4
    n_enc = sum(p.numel() for p in enc["params"])
    assert n_enc == sum(p.numel() for p in [*model.net.enc.parameters(), *model.net.hidden.parameters()])


def test_anomaly_posterior_is_the_kmeans_split():
    model = DisentangledVAE(VAEConfig())
    model.anomaly = {"low": 1.0, "high": 5.0, "var": 1.0, "n": 10, "events": 5}
    p = model.anomaly_probability(np.array([0.0, 2.9, 3.0, 3.1, 9.0]))
    assert p[2] == pytest.approx(0.5) and p[0] < 1e-3 and p[-1] > 1 - 1e-3
    assert np.all(np.diff(p) > 0)
    with pytest.raises(GeochangeError):
        DisentangledVAE(VAEConfig()).anomaly_probability(np.zeros(2))


def test_anomaly_mode_refuses_what_it_cannot_split():
    """Too few pairs, or pairs whose distances are all one value (a posterior of 0.5 everywhere would
    flag every pixel), are refused in one line with the counts."""
    torch.manual_seed(0)
    model = DisentangledVAE(VAEConfig())
    model.build(1)
    x = np.random.default_rng(0).normal(size=(6, 1, 28, 28)).astype(np.float32)
    with pytest.raises(GeochangeError, match="1 pair to cluster, needs at least 2"):
        model.fit_anomaly(x[:1], x[1:2])
    with pytest.raises(GeochangeError, match="distances of the 6 pairs are all 0"):
        model.fit_anomaly(x, x)   # both dates the same: every distance is 0
    assert not model.anomaly
    info = model.fit_anomaly(x, x[::-1])
    assert info["high"] > info["low"] and 0 < info["events"] < 6


# -- learning through the shared trainer -----------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """Plain digit pairs, standardised with one mean and std: 600 negatives to learn the
    representation, 120 positives for fine-tuning, and 200 held-out pairs from other source digits."""
    neg = digit_pairs("plain", 600, seed=0, positive_fraction=0.0, split="train")
    pos = digit_pairs("plain", 120, seed=1, positive_fraction=1.0, split="train")
    test = digit_pairs("plain", 200, seed=2, positive_fraction=0.5, split="test")
    x = np.stack([it["before"] for it in neg])
    mean, std = float(x.mean()), float(x.std())

    def z(items):
        return [{**it, "before": (it["before"] - mean) / std, "after": (it["after"] - mean) / std} for it in items]

    return z(neg), z(pos), z(test)


def _arrays(items):
    return (np.stack([it["before"] for it in items]), np.stack([it["after"] for it in items]),
            np.array([it["label"][0, 0] for it in items]))


def test_representation_then_finetuning_learn(digits, tmp_path):
    set_quiet(True)
    neg, pos, test = digits
    model = create_model("vae", epochs=3, batch_size=50)
    rep = train(model, neg + pos, TrainOptions(standardize=False, seed=0, out=tmp_path / "rep"))
    losses = [h["loss"] for h in rep["history"]]
    assert rep["history"][0]["samples"] == len(neg)  # positives are left out of representation learning
    assert losses[-1] < 0.9 * losses[0]
    assert rep["history"][-1]["recon"] < rep["history"][0]["recon"]

    # anomaly mode on the training pairs; a checkpoint carries it
    fitted = model.finish(neg + pos, standardize=False)
    assert fitted["high"] > fitted["low"]

    # fine-tune from the representation checkpoint, as `geochange train vae --init` does
    tuned = train_model(None, neg + pos, TrainOptions(standardize=False, seed=0, epochs=20, out=tmp_path / "ft"),
                        params={"stage": "finetune", "batch_size": 40, "lr": 3e-3}, init=rep["checkpoint"])
    ft = [h["loss"] for h in tuned["history"]]
    assert tuned["history"][0]["samples"] == 2 * len(pos)  # undersampled to the positives
    assert ft[-1] < 0.8 * ft[0]
    b, a, y = _arrays(test)
    loaded = load_model(tuned["checkpoint"])
    prob = loaded.score_pairs(b, a)
    assert ((prob >= 0.5) == y).mean() > 0.6  # held-out source digits: the change is found above chance

    # the checkpoint reloads to identical outputs, the representation's with its anomaly clustering
    again = load_model(tuned["checkpoint"])
    np.testing.assert_array_equal(again.score_pairs(b, a), prob)
    reloaded = load_model(rep["checkpoint"])
    assert reloaded.config.stage == "represent"


def test_anomaly_mode_and_dense_predict(digits):
    set_quiet(True)
    neg, _, test = digits
    model = create_model("vae", epochs=1, batch_size=50)
    train(model, neg[:200], TrainOptions(standardize=False, seed=0))
    b, a, _ = _arrays(test)
    info = model.fit_anomaly(b, a, seed=0)
    d = model.common_distance(b, a)
    events = model.score_pairs(b, a) >= 0.5
    assert events.sum() == info["events"]  # 0.5 is the k-means boundary
    assert d[events].min() > d[~events].max()
    # PCD protocol: a 56x56 window is 4 cells of 14x14, each scored by the 28x28 pair centred on it
    before = np.tile(b[:1], (1, 1, 2, 2))
    after = np.tile(a[:1], (1, 1, 2, 2))
    heat = model.predict(before, after, np.ones((1, 56, 56), bool))
    assert heat.shape == (1, 56, 56) and heat.dtype == np.float32 and (0 <= heat).all() and (heat <= 1).all()
    assert len(np.unique(heat[0, :14, :14])) == 1  # one score per cell
    # fit() on scene windows tiles them into patch pairs
    model.anomaly = {}
    model.fit([(before[0], after[0], np.ones((56, 56), bool))] * 2, seed=0)
    assert model.anomaly["n"] == 8


def test_wrong_patch_size_is_a_user_error():
    model = DisentangledVAE(VAEConfig())
    model.build(1)
    batch = {"before": torch.zeros(2, 1, 32, 32), "after": torch.zeros(2, 1, 32, 32),
             "patch_label": torch.zeros(2, dtype=torch.int64)}
    with pytest.raises(GeochangeError, match="28x28"):
        model.training_step(batch, 0)
    model.config = dataclasses.replace(model.config, stage="finetune")
    with pytest.raises(GeochangeError):
        model.select(0, __import__("pandas").DataFrame({"label": [0, 0]}), np.random.default_rng(0))


def test_detect_without_a_checkpoint_learns_from_the_pair_itself(planted_same_grid, tmp_path):
    """--model vae with no checkpoint: representation trained on noisy negatives of the scene, anomaly mode."""
    import json

    import rasterio

    from geochange.detect import DetectOptions, detect

    s = planted_same_grid
    params = dict(scene_patches=200, scene_epochs=3, batch_size=50)
    summary = detect(str(s.before), str(s.after), tmp_path / "out",
                     DetectOptions(model="vae", model_params=params, tile=128, overlap=32, device="cpu",
                                   sample_windows=16, sample_size=96))
    assert summary["model"]["anomaly"]["n"] > 0
    with rasterio.open(tmp_path / "out" / "change_probability.tif") as ds:
        prob = ds.read(1, masked=True)
    assert prob[s.truth_array == 1].mean() > prob[s.truth_array == 0].mean() + 0.05
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["model"]["name"] == "vae"
