"""GGKI threshold (geochange.threshold): recovers the Bayes threshold and class shapes on known
generalized-Gaussian mixtures, reduces to classic Kittler–Illingworth for beta = 2, and gives a
monotone, threshold-consistent posterior."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import gammaln

from geochange.errors import GeochangeError
from geochange.threshold import GGClass, GGKIResult, ggki_threshold


def _gennorm(beta: float, mean: float, std: float) -> stats.rv_continuous:
    """scipy's generalized normal with the given mean and *standard deviation*."""
    scale = std / np.sqrt(np.exp(gammaln(3.0 / beta) - gammaln(1.0 / beta)))
    return stats.gennorm(beta, loc=mean, scale=scale)


def _mixture(seed: int, n: int, prior0: float, beta0: float, beta1: float, sep: float,
             std1: float = 1.0) -> np.ndarray:
    """Class 0 ~ GG(0, 1, beta0) with prior ``prior0``, class 1 ~ GG(sep, std1, beta1)."""
    rng = np.random.default_rng(seed)
    n1 = int(round(n * (1.0 - prior0)))
    a = _gennorm(beta0, 0.0, 1.0).rvs(n - n1, random_state=rng)
    b = _gennorm(beta1, sep, std1).rvs(n1, random_state=rng)
    values = np.concatenate([a, b])
    rng.shuffle(values)
    return values


def _bayes_threshold(prior0: float, beta0: float, beta1: float, sep: float,
                     std1: float = 1.0) -> float:
    """Where P0 p0(x) = P1 p1(x) between the two means (scipy's own pdfs, not the module's)."""
    d0, d1 = _gennorm(beta0, 0.0, 1.0), _gennorm(beta1, sep, std1)

    def f(x: float) -> float:
        return (np.log(prior0) + d0.logpdf(x)) - (np.log(1.0 - prior0) + d1.logpdf(x))

    return float(optimize.brentq(f, 0.0, sep))


def _classic_ki(values: np.ndarray, candidates: np.ndarray) -> float:
    """Reference Gaussian Kittler–Illingworth on the raw sample:
    argmin_T P0 ln s0 + P1 ln s1 - P0 ln P0 - P1 ln P1."""
    v = np.sort(values)
    n = v.size
    c1, c2 = np.concatenate([[0.0], np.cumsum(v)]), np.concatenate([[0.0], np.cumsum(v * v)])
    k = np.searchsorted(v, candidates, side="right")  # class 0 is v <= T
    n0, n1 = k, n - k
    m0, m1 = c1[k] / n0, (c1[-1] - c1[k]) / n1
    var0 = c2[k] / n0 - m0**2
    var1 = (c2[-1] - c2[k]) / n1 - m1**2
    p0, p1 = n0 / n, n1 / n
    crit = p0 * 0.5 * np.log(var0) + p1 * 0.5 * np.log(var1) - p0 * np.log(p0) - p1 * np.log(p1)
    return float(candidates[np.argmin(crit)])


# -- recovery on generalized-Gaussian mixtures -------------------------------------------------

def test_recovers_bayes_threshold_priors_and_shapes_for_non_gaussian_classes():
    prior0, beta0, beta1, sep = 0.85, 1.2, 3.0, 4.0
    values = _mixture(0, 1_000_000, prior0, beta0, beta1, sep)
    res = ggki_threshold(values)
    bayes = _bayes_threshold(prior0, beta0, beta1, sep)
    assert abs(res.threshold - bayes) < 0.03 * sep
    assert res.unchanged.prior == pytest.approx(prior0, abs=0.01)
    assert res.changed.prior == pytest.approx(1.0 - prior0, abs=0.01)
    assert res.unchanged.prior + res.changed.prior == pytest.approx(1.0)
    assert res.unchanged.mean == pytest.approx(0.0, abs=0.1)
    assert res.changed.mean == pytest.approx(sep, abs=0.2)
    # Shapes are of the truncated classes, so only loosely the truth; but clearly non-Gaussian.
    assert res.unchanged.beta == pytest.approx(beta0, abs=0.25)
    assert 2.4 < res.changed.beta < 4.6
    assert res.unchanged.beta < 2.0 < res.changed.beta


def test_shapes_are_accurate_when_classes_are_well_separated():
    prior0, beta0, beta1, sep = 0.85, 1.2, 3.0, 6.0
    values = _mixture(1, 1_000_000, prior0, beta0, beta1, sep, std1=1.0)
    res = ggki_threshold(values)
    assert abs(res.threshold - _bayes_threshold(prior0, beta0, beta1, sep)) < 0.02 * sep
    assert res.unchanged.beta == pytest.approx(beta0, abs=0.15)
    assert res.changed.beta == pytest.approx(beta1, abs=0.4)
    assert res.unchanged.std == pytest.approx(1.0, abs=0.1)
    assert res.changed.std == pytest.approx(1.0, abs=0.1)


def test_generalized_gaussian_beats_gaussian_ki_on_heavy_and_light_tails():
    prior0, beta0, beta1, sep = 0.9, 1.0, 4.0, 5.0
    values = _mixture(2, 400_000, prior0, beta0, beta1, sep)
    bayes = _bayes_threshold(prior0, beta0, beta1, sep)
    gg = ggki_threshold(values)
    gauss = ggki_threshold(values, beta_bounds=(2.0, 2.0))
    assert abs(gg.threshold - bayes) < 0.02 * sep
    assert abs(gauss.threshold - bayes) > 0.05 * sep
    assert gauss.unchanged.beta == gauss.changed.beta == 2.0


def test_gaussian_case_matches_classic_ki_and_bayes():
    prior0, sep = 0.8, 4.0
    values = _mixture(3, 400_000, prior0, 2.0, 2.0, sep)
    bayes = _bayes_threshold(prior0, 2.0, 2.0, sep)
    classic = _classic_ki(values, np.linspace(0.0, sep, 4001))
    fixed = ggki_threshold(values, beta_bounds=(2.0, 2.0))
    free = ggki_threshold(values)
    # beta fixed at 2 is the classic KI criterion (up to the histogram bin width).
    bin_width = (np.percentile(values, 99.99) - np.percentile(values, 0.01)) / 512
    assert abs(fixed.threshold - classic) <= 1.5 * bin_width
    for res in (fixed, free):
        assert abs(res.threshold - bayes) < 0.03 * sep
        assert res.unchanged.prior == pytest.approx(prior0, abs=0.01)
    assert free.unchanged.beta == pytest.approx(2.0, abs=0.2)
    assert free.changed.beta == pytest.approx(2.0, abs=0.6)


def test_ignores_non_finite_values_and_accepts_any_shape():
    values = _mixture(4, 200_000, 0.85, 1.5, 2.5, 5.0)
    ref = ggki_threshold(values)
    dirty = np.concatenate([values, [np.nan] * 50, [np.inf, -np.inf]]).astype(np.float32)
    res = ggki_threshold(dirty[: 200_000].reshape(400, 500))  # a 2-D float32 block
    assert res.threshold == pytest.approx(ggki_threshold(values.astype(np.float32)).threshold)
    assert ggki_threshold(dirty).threshold == pytest.approx(ref.threshold, abs=0.02)


def test_threshold_is_float32_exact():
    res = ggki_threshold(_mixture(5, 100_000, 0.85, 1.2, 3.0, 4.0))
    assert float(np.float32(res.threshold)) == res.threshold


def test_large_offset_keeps_float64_precision():
    # float32 cannot resolve these values, so the threshold must not be snapped to float32.
    values = 1e6 + 1e-3 * _mixture(11, 200_000, 0.85, 2.0, 2.0, 5.0)
    res = ggki_threshold(values)
    assert 1e6 + 1.5e-3 < res.threshold < 1e6 + 3.5e-3


# -- posterior --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted() -> GGKIResult:
    return ggki_threshold(_mixture(7, 300_000, 0.85, 1.2, 3.0, 4.0))


def test_posterior_is_monotone_bounded_and_threshold_consistent(fitted):
    t = fitted.threshold
    c0, c1 = fitted.unchanged, fitted.changed
    x = np.sort(np.concatenate([
        np.linspace(c0.mean - 60 * c0.std, c1.mean + 60 * c1.std, 200_001),
        [t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), -1e30, 1e30],
    ]))
    p = fitted.posterior(x)
    assert p.shape == x.shape
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert np.all(np.diff(p) >= 0.0)
    assert np.all(p[x <= t] < 0.5)
    assert np.all(p[x > t] >= 0.5)
    assert fitted.posterior(np.array([c0.mean]))[0] < 0.01
    assert fitted.posterior(np.array([c1.mean]))[0] > 0.95


def test_posterior_follows_the_bayes_posterior_away_from_the_threshold(fitted):
    c0, c1 = fitted.unchanged, fitted.changed
    x = np.linspace(c0.mean - 2 * c0.std, c1.mean + 2 * c1.std, 501)
    raw = 1.0 / (1.0 + np.exp((np.log(c0.prior) + c0.logpdf(x))
                              - (np.log(c1.prior) + c1.logpdf(x))))
    far = np.abs(x - fitted.threshold) > 0.25
    assert np.allclose(fitted.posterior(x)[far], raw[far], atol=2e-3)


def test_posterior_float32_keeps_shape_and_threshold_side(fitted):
    rng = np.random.default_rng(8)
    x = rng.normal(fitted.threshold, 1.0, size=(2, 3, 4)).astype(np.float32)
    t32 = np.float32(fitted.threshold)
    x[0, 0, 0] = t32
    x[0, 0, 1] = np.nextafter(t32, np.float32(np.inf))
    x[0, 0, 2] = np.nextafter(t32, np.float32(-np.inf))
    p = fitted.posterior(x)
    assert p.shape == (2, 3, 4)
    assert p.dtype == np.float32
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert np.array_equal(p >= 0.5, x > fitted.threshold)
    assert np.array_equal(p >= 0.5, x > t32)  # same labels under float32 comparison
    order = np.argsort(x, axis=None)
    assert np.all(np.diff(p.reshape(-1)[order]) >= 0.0)


def test_posterior_on_large_float32_array(fitted):
    rng = np.random.default_rng(9)
    x = rng.normal(2.0, 3.0, size=2_000_000).astype(np.float32)
    p = fitted.posterior(x)
    assert p.dtype == np.float32
    assert np.array_equal(p >= 0.5, x > fitted.threshold)
    s = np.sort(x)
    assert np.all(np.diff(fitted.posterior(s)) >= 0.0)


def test_posterior_passes_nan_through(fitted):
    p = fitted.posterior(np.array([np.nan, -np.inf, np.inf, fitted.changed.mean]))
    assert np.isnan(p[0])
    assert p[1] < 0.5 and p[2] >= 0.5 and p[3] > 0.95


# -- degenerate input and serialisation -------------------------------------------------------

@pytest.mark.parametrize("values", [
    np.full(1000, 3.5),
    np.array([]),
    np.full(100, np.nan),
    np.array([np.inf, -np.inf, np.nan] * 10),
    np.arange(5, dtype=float),
    np.full(1000, 1e6) + np.random.default_rng(0).normal(0.0, 1e-12, 1000),
], ids=["constant", "empty", "all-nan", "all-non-finite", "too-few", "nearly-constant"])
def test_degenerate_input_raises(values):
    with pytest.raises(GeochangeError) as info:
        ggki_threshold(values)
    assert "\n" not in str(info.value)


def test_bad_beta_bounds_raise():
    values = _mixture(10, 10_000, 0.85, 1.2, 3.0, 4.0)
    with pytest.raises(GeochangeError):
        ggki_threshold(values, beta_bounds=(0.0, 2.0))
    with pytest.raises(GeochangeError):
        ggki_threshold(values, beta_bounds=(3.0, 2.0))


def test_as_dict_round_trips_through_json(fitted):
    d = fitted.as_dict()
    back = json.loads(json.dumps(d))
    assert back == d
    assert back["threshold"] == fitted.threshold
    assert set(back["unchanged"]) == {"prior", "mean", "std", "beta"}
    assert GGKIResult.from_dict(back) == fitted


def test_ggclass_logpdf_matches_scipy():
    for beta in (0.5, 1.0, 2.0, 3.7):
        cls = GGClass(prior=0.3, mean=1.5, std=2.0, beta=beta)
        x = np.linspace(-10, 10, 101)
        assert np.allclose(cls.logpdf(x), _gennorm(beta, 1.5, 2.0).logpdf(x))


# --------------------------------------------------------------------------------------------------
# EM on a two-gamma mixture (cva's default decision rule)
# --------------------------------------------------------------------------------------------------

from geochange.threshold import (GammaMixtureResult, fit_threshold, gamma_mixture_threshold,  # noqa: E402
                                 threshold_from_dict)


def _gamma_mix(seed: int = 0, n: int = 200_000, share: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """A change statistic: unchanged ~ Gamma(3, 0.4) (mean 1.2), changed ~ Gamma(16, 0.4) (mean 6.4)."""
    rng = np.random.default_rng(seed)
    n1 = int(n * share)
    values = np.concatenate([rng.gamma(3.0, 0.4, n - n1), rng.gamma(16.0, 0.4, n1)])
    return values, np.r_[np.zeros(n - n1, bool), np.ones(n1, bool)]


def test_gamma_mixture_recovers_the_classes_and_the_bayes_threshold():
    values, changed = _gamma_mix()
    fit = gamma_mixture_threshold(values)
    assert fit.changed.prior == pytest.approx(0.03, abs=0.005)
    assert fit.unchanged.mean == pytest.approx(1.2, rel=0.03) and fit.changed.mean == pytest.approx(6.4, rel=0.05)
    # the Bayes threshold of the true mixture, from scipy's pdfs
    def log_odds(x):
        return (np.log(0.03) + stats.gamma.logpdf(x, 16.0, scale=0.4)
                - np.log(0.97) - stats.gamma.logpdf(x, 3.0, scale=0.4))
    truth = optimize.brentq(log_odds, 1.2, 6.4)
    assert fit.threshold == pytest.approx(truth, abs=0.15)
    flagged = values > fit.threshold
    assert abs(flagged.mean() - changed.mean()) < 0.005


def test_gamma_mixture_probability_is_half_at_the_threshold_and_ranks_without_saturating():
    fit = gamma_mixture_threshold(_gamma_mix()[0])
    t = fit.threshold
    x = np.array([0.0, 0.5 * t, t, 2 * t, 50 * t, 100 * t, 1000 * t], np.float32)
    p = fit.posterior(x)
    assert p.dtype == np.float32 and p[2] == pytest.approx(0.5, abs=1e-6)
    assert (np.diff(p) > 0).all()          # strictly increasing: no two of these share a value
    assert p[-1] < 1.0                     # never exactly 1, even at 1000x the threshold
    assert fit.posterior(np.array([np.nan]))[0] != fit.posterior(np.array([np.nan]))[0]  # NaN stays NaN


def test_gamma_mixture_round_trips_and_dispatches():
    fit = gamma_mixture_threshold(_gamma_mix(seed=1)[0])
    back = threshold_from_dict(json.loads(json.dumps(fit.as_dict())))
    assert isinstance(back, GammaMixtureResult) and back == fit
    assert isinstance(threshold_from_dict(ggki_threshold(_gamma_mix(seed=1)[0]).as_dict()), GGKIResult)
    assert isinstance(fit_threshold(_gamma_mix()[0], "ggki"), GGKIResult)
    with pytest.raises(GeochangeError, match="unknown threshold method"):
        fit_threshold(_gamma_mix()[0], "magic")


def test_gamma_mixture_refuses_too_little_or_constant_data():
    with pytest.raises(GeochangeError, match="only 3 finite values"):
        gamma_mixture_threshold(np.array([1.0, 2.0, np.nan, 3.0]))
    with pytest.raises(GeochangeError, match="equal"):
        gamma_mixture_threshold(np.full(100, 2.0))


def test_prior_of_a_balanced_classifier_is_recovered():
    """Saerens et al. 2002: the posteriors of a classifier trained on balanced classes, on a scene with 4 %
    change, give back that share, and the adjusted posteriors are calibrated there."""
    from geochange.threshold import adjust_to_prior, estimate_prior

    rng = np.random.default_rng(0)
    n, prior = 200_000, 0.04
    y = rng.random(n) < prior
    x = rng.normal(np.where(y, 2.0, 0.0), 1.0)                 # one feature, unit-variance classes
    p_bal = 1 / (1 + np.exp(-(2.0 * x - 2.0)))                 # the exact posterior at prior 0.5
    assert p_bal.mean() > 0.15                                  # balanced: far more than 4 % "changed"
    est = estimate_prior(p_bal)
    assert abs(est - prior) < 0.005
    adj = adjust_to_prior(p_bal, est)
    assert abs(adj.mean() - prior) < 0.005
    high = adj > 0.8                                            # calibrated: 80 %+ sure means mostly changed
    assert y[high].mean() > 0.8
    assert np.all(np.diff(adj[np.argsort(p_bal)]) >= -1e-6)    # the ranking is kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranking_probability_is_half_at_the_threshold_and_increasing(dtype):
    from geochange.threshold import ranking_probability

    for t in (0.3, 1.7, 123.456):
        x = np.array([0.0, t / 10, t / 2, t, 2 * t, 1e3 * t, np.nan, -1.0], dtype)
        p = ranking_probability(x, t, 2.5)
        assert p.dtype == dtype
        assert p[3] == 0.5                                  # exactly, in both precisions
        assert p[0] == 0.0 and p[-1] == 0.0 and np.isnan(p[6])
        assert np.all(np.diff(p[:6]) > 0) and p[5] < 1.0    # strictly increasing, not saturated at 1000x
        # 1 / (1 + (t / x) ** s) with s = 2.5 below the threshold and clipped to 2 above it
        expect = 1 / (1 + (t / x[1:6].astype(np.float64)) ** np.array([2.5, 2.5, 2.5, 2, 2]))
        assert np.allclose(p[1:6], expect, rtol=1e-5)
