"""Unsupervised change/no-change threshold: generalized-Gaussian Kittler–Illingworth (GGKI).

A change magnitude image is a mixture of an "unchanged" and a "changed" population whose shapes
are rarely Gaussian (speckle, ratios and spectral distances give heavy or light tails). Following
Bazi, Bruzzone & Melgani, "An unsupervised approach based on the generalized Gaussian model to
automatic change detection in multitemporal SAR images", IEEE TGRS 43(4), 2005, each class is a
generalized Gaussian (GG) and the threshold ``T`` minimises the Kittler–Illingworth criterion

    J(T) = -sum_i sum_{x in class i} h(x) * [ln P_i + ln p_GG(x; mu_i, sigma_i, beta_i)],
    p_GG(x) = alpha*beta / (2*Gamma(1/beta)) * exp(-(alpha*|x - mu|)**beta),
    alpha   = (1/sigma) * sqrt(Gamma(3/beta) / Gamma(1/beta)),

where, for each candidate ``T``, the prior ``P_i``, mean, std and shape of each side of the histogram
are estimated from that side alone; the shape comes from the moment ratio
``E[(x-mu)^2] / E[|x-mu|]^2 = Gamma(1/beta)*Gamma(3/beta)/Gamma(2/beta)^2``. With ``beta = 2``
this is the classic (Gaussian) Kittler–Illingworth minimum-error threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, gammaln

from geochange.errors import GeochangeError

__all__ = ["GGClass", "GGKIResult", "ggki_threshold", "GammaClass", "GammaMixtureResult",
           "gamma_mixture_threshold", "fit_threshold", "threshold_from_dict"]

# Candidate cuts that leave a class with less than this share of the sample are skipped.
_MIN_PRIOR = 1e-3
# Fewer finite values than this cannot support a two-class fit.
_MIN_VALUES = 10
# Robust histogram range: values outside these percentiles are clipped into the end bins.
_RANGE_PERCENTILES = (0.01, 99.99)
# Largest float32 strictly below 0.5 that we use for "unchanged" posteriors (exact in float32).
_BELOW_HALF = 0.5 - 2.0**-20
# Points of the posterior lookup grid (uniform, so lookups index it directly).
_GRID_POINTS = 4097


def _log_moment_ratio(beta: np.ndarray) -> np.ndarray:
    """ln r(beta), r(beta) = Gamma(1/beta) Gamma(3/beta) / Gamma(2/beta)^2 (decreasing in beta)."""
    return gammaln(1.0 / beta) + gammaln(3.0 / beta) - 2.0 * gammaln(2.0 / beta)


@dataclass(frozen=True)
class GGClass:
    """One generalized-Gaussian class: prior, mean, standard deviation and shape ``beta``.

    ``beta = 2`` is a Gaussian, ``beta = 1`` a Laplacian; smaller means heavier tails.
    """

    prior: float
    mean: float
    std: float
    beta: float

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """ln p_GG(x; mean, std, beta) (Bazi et al. 2005), computed in float64."""
        x = np.asarray(x, dtype=np.float64)
        beta = float(self.beta)
        log_alpha = 0.5 * (gammaln(3.0 / beta) - gammaln(1.0 / beta)) - np.log(self.std)
        log_norm = log_alpha + np.log(beta) - np.log(2.0) - gammaln(1.0 / beta)
        return log_norm - (np.exp(log_alpha) * np.abs(x - self.mean)) ** beta

    def as_dict(self) -> dict[str, float]:
        return {"prior": float(self.prior), "mean": float(self.mean), "std": float(self.std),
                "beta": float(self.beta)}


@dataclass(frozen=True)
class GGKIResult:
    """A fitted GGKI threshold and its two classes; values ``> threshold`` are "changed".

    ``threshold`` from :func:`ggki_threshold` is exactly representable in float32 (whenever float32
    resolves the histogram bins), so ``values > threshold`` gives the same labels whether
    ``values`` is float32 or float64.
    """

    threshold: float
    unchanged: GGClass
    changed: GGClass

    def _lookup(self) -> tuple[float, float, np.ndarray, int]:
        """Posterior on a fine uniform grid around both classes, with the threshold on a node.

        Returns (first node, step, posterior at the nodes, index of the threshold node). The raw
        Bayes posterior of two GG classes with different shapes is not monotone in the far tails
        (the heavier-tailed class wins again), so it is made non-increasing going left from the
        threshold and non-decreasing going right, then clamped to the threshold's side of 0.5.
        """
        t = float(self.threshold)
        c0, c1 = self.unchanged, self.changed
        lo = min(c0.mean - 10.0 * c0.std, c1.mean - 10.0 * c1.std, t)
        hi = max(c0.mean + 10.0 * c0.std, c1.mean + 10.0 * c1.std, t)
        step = (hi - lo) / (_GRID_POINTS - 1)
        if not step > 0:
            step = max(abs(t), 1.0) * 1e-6
        n_left = int(np.ceil((t - lo) / step)) + 1
        n_right = int(np.ceil((hi - t) / step)) + 1
        grid = t + step * np.arange(-n_left, n_right + 1, dtype=np.float64)
        log_odds = (np.log(c1.prior) + c1.logpdf(grid)) - (np.log(c0.prior) + c0.logpdf(grid))
        post = expit(log_odds)
        # post[:n_left + 1] covers grid <= t (grid[n_left] == t exactly), the rest grid > t.
        left = np.minimum.accumulate(post[:n_left + 1][::-1])[::-1]
        right = np.maximum.accumulate(post[n_left + 1:])
        post = np.concatenate([np.minimum(left, _BELOW_HALF), np.maximum(right, 0.5)])
        return float(grid[0]), step, post, n_left

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """P(changed | x) in [0, 1] from the two fitted GG classes, made monotone non-decreasing in x
        and consistent with the threshold: < 0.5 for x <= threshold, >= 0.5 for x > threshold.

        Linear interpolation on a uniform lookup grid (direct indexing, about 0.1 s for 10^7
        values); values beyond the grid take the end values. Keeps the shape of ``x``; float32
        input gives float32 output (the threshold-side guarantees still hold), anything else
        float64. NaN in gives NaN out.
        """
        arr = np.asarray(x)
        first, step, post, t_node = self._lookup()
        t = float(self.threshold)
        u = np.asarray(arr, dtype=np.float64).reshape(-1) - first
        u *= 1.0 / step
        nan = np.isnan(u)
        has_nan = bool(nan.any())
        if has_nan:
            u[nan] = 0.0
        np.clip(u, 0.0, post.size - 1, out=u)
        idx = u.astype(np.intp)
        np.minimum(idx, post.size - 2, out=idx)
        u -= idx
        slope = np.diff(post)
        out = post[idx]
        out += u * slope[idx]
        np.minimum(out, post[idx + 1], out=out)  # no rounding overshoot past the next node
        # Only cells next to the threshold node can land on the wrong side of 0.5 (the jump at
        # the threshold, and rounding in the index); settle those with exact comparisons.
        idx -= t_node - 1
        near = np.flatnonzero(idx.view(np.uintp) <= 2)
        if near.size:
            xs = np.asarray(arr, dtype=np.float64).reshape(-1)[near]
            out[near] = np.where(xs > t, np.maximum(out[near], 0.5),
                                 np.minimum(out[near], _BELOW_HALF))
        np.clip(out, 0.0, 1.0, out=out)
        if has_nan:
            out[nan] = np.nan
        out = out.reshape(arr.shape)
        if arr.dtype == np.float32:
            return out.astype(np.float32)
        return out

    def probability(self, x: np.ndarray) -> np.ndarray:
        """The probability a change map stores for a non-negative statistic: GGKI's threshold with
        :func:`ranking_probability` (0.5 there, strictly increasing, never saturating), its slope the
        two classes' log-odds slope at the threshold. :meth:`posterior` is the Bayes posterior, which
        reaches 1.0 within a few class widths and then no longer ranks."""
        def log_odds(v):
            return (np.log(self.changed.prior) + self.changed.logpdf(v)) - (np.log(self.unchanged.prior)
                                                                            + self.unchanged.logpdf(v))
        t = float(self.threshold)
        if not t > 0:
            return self.posterior(x)
        return ranking_probability(x, t, _log_odds_slope(log_odds, t))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (plain floats), e.g. for ``summary.json``."""
        return {"method": "ggki", "threshold": float(self.threshold),
                "unchanged": self.unchanged.as_dict(), "changed": self.changed.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GGKIResult:
        """Inverse of :meth:`as_dict`."""
        return cls(threshold=float(data["threshold"]), unchanged=GGClass(**data["unchanged"]),
                   changed=GGClass(**data["changed"]))


def _beta_from_log_ratio(log_ratio: np.ndarray, beta_bounds: tuple[float, float]) -> np.ndarray:
    """Invert the monotone moment ratio r(beta) on a table, clipped to ``beta_bounds``."""
    b_lo, b_hi = beta_bounds
    if b_lo == b_hi:
        return np.full_like(log_ratio, b_lo)
    betas = np.geomspace(b_lo, b_hi, 2048)
    table = _log_moment_ratio(betas)  # decreasing in beta; np.interp needs increasing xp
    return np.interp(log_ratio, table[::-1], betas[::-1])


def _class_fits(x: np.ndarray, h: np.ndarray, member: np.ndarray, beta_bounds: tuple[float, float]
                ) -> tuple[np.ndarray, ...]:
    """Per candidate cut (rows), fit one GG class to the bins in ``member`` (rows x bins mask).

    Returns (weight, mean, std, beta, neg_loglik) per row, where ``neg_loglik`` is
    ``-sum h * ln p_GG`` over the member bins (NaN where the class is empty or has zero variance).
    """
    hw = np.where(member, h[None, :], 0.0)
    weight = hw.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (hw @ x) / weight
        dev = np.abs(x[None, :] - mean[:, None])
        var = (hw * dev**2).sum(axis=1) / weight
        mad = (hw * dev).sum(axis=1) / weight
        ok = (weight > 0) & (var > 0) & (mad > 0)
        beta = np.full_like(weight, np.nan)
        beta[ok] = _beta_from_log_ratio(np.log(var[ok]) - 2.0 * np.log(mad[ok]), beta_bounds)
        std = np.sqrt(var)
        log_alpha = 0.5 * (gammaln(3.0 / beta) - gammaln(1.0 / beta)) - np.log(std)
        log_norm = log_alpha + np.log(beta) - np.log(2.0) - gammaln(1.0 / beta)
        scaled = (np.exp(log_alpha)[:, None] * dev) ** beta[:, None]
        neg_loglik = (hw * scaled).sum(axis=1) - weight * log_norm
    neg_loglik[~ok] = np.nan
    return weight, mean, std, beta, neg_loglik


def ggki_threshold(values: np.ndarray, bins: int = 512,
                   beta_bounds: tuple[float, float] = (0.3, 5.0)) -> GGKIResult:
    """Fit the GGKI minimum-error threshold (Bazi et al. 2005) on a 1-D sample.

    Any array shape is accepted and flattened; NaN and inf are dropped. The histogram spans the 0.01th–99.99th percentiles of the sample
    (falling back to min–max if that is degenerate); values outside are clipped into the end bins,
    so a few extreme outliers neither waste the bins nor change the class priors. Every cut
    between two bins is a candidate threshold; cuts leaving a class with a prior below 1e-3 or zero
    variance are skipped. Bin centres stand for the values. ``beta_bounds`` limits the estimated
    shapes; ``(2, 2)`` gives the classic Gaussian Kittler–Illingworth threshold.

    Raises GeochangeError if there are fewer than 10 finite values, if they are (nearly) all
    equal, or if no cut leaves two usable classes.
    """
    b_lo, b_hi = (float(b) for b in beta_bounds)
    if not (0.0 < b_lo <= b_hi and np.isfinite(b_hi)):
        raise GeochangeError(f"GGKI beta_bounds must satisfy 0 < low <= high, got {beta_bounds}")
    if bins < 4:
        raise GeochangeError(f"GGKI needs at least 4 histogram bins, got {bins}")
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size < _MIN_VALUES:
        raise GeochangeError(
            f"cannot threshold: only {arr.size} finite values (need at least {_MIN_VALUES})")
    lo, hi = (float(v) for v in np.percentile(arr, _RANGE_PERCENTILES))
    vmin, vmax = float(arr.min()), float(arr.max())
    scale = max(abs(vmin), abs(vmax), 1e-300)
    if hi - lo <= 1e-9 * scale:
        lo, hi = vmin, vmax
    if hi - lo <= 1e-9 * scale:
        raise GeochangeError(f"cannot threshold: all values are (nearly) equal to {vmin:g}")

    counts, edges = np.histogram(np.clip(arr, lo, hi), bins=bins, range=(lo, hi))
    h = counts / arr.size
    x = 0.5 * (edges[:-1] + edges[1:])

    # Row k-1 is the cut at edges[k], k = 1..bins-1: class 0 is bins < k, class 1 is bins >= k.
    # All cuts are fitted at once on (bins-1) x bins masked matrices (about 20 ms for 512 bins).
    cut = np.arange(1, bins)
    below = np.arange(bins)[None, :] < cut[:, None]
    w0, m0, s0, be0, nll0 = _class_fits(x, h, below, (b_lo, b_hi))
    w1, m1, s1, be1, nll1 = _class_fits(x, h, ~below, (b_lo, b_hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = nll0 + nll1 - w0 * np.log(w0) - w1 * np.log(w1)
    valid = (w0 >= _MIN_PRIOR) & (w1 >= _MIN_PRIOR) & np.isfinite(crit)
    if not valid.any():
        raise GeochangeError("cannot threshold: no cut leaves two classes with enough spread")
    best = int(np.argmin(np.where(valid, crit, np.inf)))

    # Snap to the nearest float32 so float32 and float64 data compare alike against it, unless
    # float32 cannot resolve the bins here (large offset, tiny spread).
    edge = float(edges[cut[best]])
    threshold = float(np.float32(edge))
    if abs(threshold - edge) > 0.25 * (edges[1] - edges[0]):
        threshold = edge
    return GGKIResult(
        threshold=threshold,
        unchanged=GGClass(prior=float(w0[best]), mean=float(m0[best]), std=float(s0[best]),
                          beta=float(be0[best])),
        changed=GGClass(prior=float(w1[best]), mean=float(m1[best]), std=float(s1[best]),
                        beta=float(be1[best])),
    )


# --------------------------------------------------------------------------------------------------
# A probability that ranks
# --------------------------------------------------------------------------------------------------

#: the log-odds slope (per unit of ln x) of the probability map is the decision rule's own slope at
#: its threshold, kept within these bounds: below the threshold up to 4 (unchanged pixels get a low
#: probability: 0.06 at half the threshold), above it up to 2 (strong changes still rank apart:
#: 1.0 in float32 only past ~1,400x the threshold)
SLOPE_BELOW = (1.0, 4.0)
SLOPE_ABOVE = (1.0, 2.0)


def ranking_probability(x: np.ndarray, threshold: float, slope: float) -> np.ndarray:
    """``1 / (1 + (threshold / x) ** s)`` for a non-negative statistic ``x``, ``s`` the ``slope``
    clipped to :data:`SLOPE_BELOW` below the threshold and to :data:`SLOPE_ABOVE` above it: exactly
    0.5 at the threshold, continuous, strictly increasing, never saturating. Keeps the shape and
    float32-ness of ``x``; NaN in, NaN out."""
    arr = np.asarray(x)
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    above, below = (dtype(np.clip(slope, *b)) for b in (SLOPE_ABOVE, SLOPE_BELOW))
    # in place, one ufunc pass per step (np.where and scipy's expit cost 3-6x more on a batch)
    z = np.divide(arr, dtype(threshold), dtype=dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.maximum(z, 0.0, out=z)
        np.log(z, out=z)                       # ln(x / t): -inf at 0
        neg = np.minimum(z, 0.0)
        neg *= -below
        np.maximum(z, 0.0, out=z)
        z *= -above
        z += neg                               # -s ln(x / t), s by side
        np.exp(z, out=z)
        z += 1.0
        return np.reciprocal(z, out=z)         # 1 / (1 + (t / x) ** s)


def _log_odds_slope(log_odds, threshold: float) -> float:
    """d log-odds / d ln x at the threshold (a central difference)."""
    eps = 1e-3
    up, down = log_odds(np.array([threshold * (1 + eps)])), log_odds(np.array([threshold * (1 - eps)]))
    slope = float((up - down)[0] / (np.log1p(eps) - np.log1p(-eps)))
    return slope if np.isfinite(slope) else SLOPE_ABOVE[1]


# --------------------------------------------------------------------------------------------------
# EM on a two-gamma mixture of the change statistic
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaClass:
    """One gamma class of a change statistic: prior, shape ``k`` and scale ``theta``."""

    prior: float
    shape: float
    scale: float

    @property
    def mean(self) -> float:
        return self.shape * self.scale

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = np.maximum(np.asarray(x, dtype=np.float64), 1e-300)
        return (self.shape - 1.0) * np.log(x) - x / self.scale - gammaln(self.shape) - self.shape * np.log(self.scale)

    def as_dict(self) -> dict[str, float]:
        return {"prior": float(self.prior), "shape": float(self.shape), "scale": float(self.scale)}


@dataclass(frozen=True)
class GammaMixtureResult:
    """A two-gamma mixture fitted by EM, its Bayes threshold, and a ranking probability.

    ``posterior(x) = 1 / (1 + (threshold / x) ** slope)`` (:func:`ranking_probability`): exactly 0.5
    at the threshold, strictly increasing, and never saturating, so the probability raster ranks
    pixels as the statistic does. ``slope`` is the mixture's own log-odds slope in ln x at the
    threshold (its calibration where the decision is made), bounded on each side of it.
    """

    threshold: float
    unchanged: GammaClass
    changed: GammaClass
    slope: float

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """P(changed | x) as above (:func:`ranking_probability`)."""
        return ranking_probability(x, self.threshold, self.slope)

    probability = posterior

    def as_dict(self) -> dict[str, Any]:
        return {"method": "gamma-em", "threshold": float(self.threshold), "slope": float(self.slope),
                "unchanged": self.unchanged.as_dict(), "changed": self.changed.as_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GammaMixtureResult:
        return cls(threshold=float(data["threshold"]), unchanged=GammaClass(**data["unchanged"]),
                   changed=GammaClass(**data["changed"]), slope=float(data["slope"]))


def _gamma_moments(x: np.ndarray, w: np.ndarray) -> GammaClass:
    """The gamma of the weighted sample's mean and variance (the method-of-moments M-step)."""
    total = w.sum()
    mean = (w @ x) / total
    var = max((w @ (x - mean) ** 2) / total, 1e-12 * mean * mean + 1e-300)
    return GammaClass(prior=float(total), shape=float(mean * mean / var), scale=float(var / mean))


def gamma_mixture_threshold(values: np.ndarray, bins: int = 2048, max_iter: int = 500,
                            tol: float = 1e-9) -> GammaMixtureResult:
    """Fit a two-gamma mixture to a non-negative change statistic by EM and threshold it.

    The statistic of unchanged pixels (a change-vector magnitude, a chi-square statistic) is
    gamma-like and concentrated near zero; changed pixels form a second, wider gamma. EM runs on a
    histogram (``bins`` bins over the 0 .. 99.99th percentile range, the rest clipped into the last
    bin), started from Otsu's split, with the method-of-moments M-step. The threshold is the
    smallest value above the unchanged mean where the changed class's posterior reaches 0.5.

    When the statistic shows one population only (a class's prior falls below 1e-3, or the classes
    do not cross: a scene without change), the threshold is the 99.9th percentile of one gamma
    fitted to all of it, a 0.1 % significance test.

    Raises GeochangeError for fewer than 10 finite values or all values (nearly) equal.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size < _MIN_VALUES:
        raise GeochangeError(f"cannot threshold: only {arr.size} finite values (need at least {_MIN_VALUES})")
    arr = np.maximum(arr, 0.0)
    hi = float(np.percentile(arr, _RANGE_PERCENTILES[1]))
    if not hi > 0:
        hi = float(arr.max())
    if not hi > 0 or float(arr.max() - arr.min()) <= 1e-9 * hi:
        raise GeochangeError(f"cannot threshold: all values are (nearly) equal to {float(arr.min()):g}")
    counts, edges = np.histogram(np.minimum(arr, hi), bins=bins, range=(0.0, hi))
    h = counts / arr.size
    x = np.maximum(0.5 * (edges[:-1] + edges[1:]), 0.25 * edges[1])
    resp = (x > _otsu(x, h)).astype(np.float64)  # P(changed) per bin
    last = -np.inf
    for _ in range(max_iter):
        c0, c1 = _gamma_moments(x, h * (1.0 - resp)), _gamma_moments(x, h * resp)
        if not (c0.prior > _MIN_PRIOR and c1.prior > _MIN_PRIOR):
            return _single_population(x, h)
        l0 = np.log(c0.prior) + c0.logpdf(x)
        l1 = np.log(c1.prior) + c1.logpdf(x)
        top = np.maximum(l0, l1)
        loglik = float(h @ (top + np.log(np.exp(l0 - top) + np.exp(l1 - top))))
        resp = expit(l1 - l0)
        if loglik - last < tol:
            break
        last = loglik
    if c1.mean < c0.mean:
        c0, c1 = c1, c0
    grid = np.linspace(c0.mean, max(hi, c1.mean) * 1.5, 20_001)
    log_odds = (np.log(c1.prior) + c1.logpdf(grid)) - (np.log(c0.prior) + c0.logpdf(grid))
    above = np.flatnonzero(log_odds >= 0)
    if not above.size:
        return _single_population(x, h)
    threshold = float(np.float32(grid[above[0]]))
    slope = float((c1.shape - c0.shape) + threshold * (1.0 / c0.scale - 1.0 / c1.scale))
    return GammaMixtureResult(threshold, c0, c1, slope)


def _single_population(x: np.ndarray, h: np.ndarray) -> GammaMixtureResult:
    """One gamma for the whole statistic: change is what it makes significant at 0.1 %."""
    from scipy.stats import gamma

    c0 = _gamma_moments(x, h)
    threshold = float(np.float32(gamma.ppf(0.999, c0.shape, scale=c0.scale)))
    return GammaMixtureResult(threshold, c0, GammaClass(0.0, c0.shape, c0.scale), SLOPE_ABOVE[1])


def _otsu(x: np.ndarray, h: np.ndarray) -> float:
    """Otsu's threshold of a histogram (bin centres ``x``, weights ``h``)."""
    w0 = np.cumsum(h)
    m = np.cumsum(h * x)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m[-1] * w0 - m) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(x[int(np.argmax(between[:-1]))])


#: the decision rules a change statistic can be thresholded by
THRESHOLD_METHODS = ("gamma-em", "ggki", "ki")


def fit_threshold(values: np.ndarray, method: str = "gamma-em", bins: int = 512):
    """Threshold a change statistic by ``method``: ``gamma-em`` (EM on a two-gamma mixture),
    ``ggki`` (Bazi et al. 2005) or ``ki`` (Kittler-Illingworth, Gaussian classes)."""
    if method == "gamma-em":
        return gamma_mixture_threshold(values)
    if method == "ggki":
        return ggki_threshold(values, bins=bins)
    if method == "ki":
        return ggki_threshold(values, bins=bins, beta_bounds=(2.0, 2.0))
    raise GeochangeError(f"unknown threshold method {method!r} (choose one of {', '.join(THRESHOLD_METHODS)})")


def threshold_from_dict(data: dict[str, Any]):
    """Inverse of the ``as_dict`` of either result."""
    if data.get("method") == "gamma-em":
        return GammaMixtureResult.from_dict(data)
    return GGKIResult.from_dict(data)


def adjust_to_prior(p: np.ndarray, prior: float, trained_prior: float = 0.5) -> np.ndarray:
    """Posterior of a classifier trained at class prior ``trained_prior`` moved to ``prior`` (Saerens,
    Latinne & Decaestecker 2002, Eq. 2.4): the odds are scaled by ``prior / (1 - prior)`` over the trained
    odds. A class-balanced model (``trained_prior`` 0.5) flags far too much where change is rare."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    scale = (prior / (1 - prior)) / (trained_prior / (1 - trained_prior))
    odds = p / (1 - p) * scale
    return (odds / (1 + odds)).astype(np.float32)


def estimate_prior(p: np.ndarray, trained_prior: float = 0.5, iterations: int = 100, tol: float = 1e-6) -> float:
    """The share of changed pixels in a scene from a classifier's posteriors ``p`` on a sample of it, by
    Saerens et al.'s EM (2002, Eqs. 2.9-2.10): adjust the posteriors to the current prior, take their mean
    as the new prior, until it settles. Bounded to [1e-4, 0.5]."""
    prior = float(trained_prior)
    for _ in range(iterations):
        new = float(np.clip(adjust_to_prior(p, prior, trained_prior).mean(), 1e-4, 0.5))
        if abs(new - prior) < tol:
            return new
        prior = new
    return prior
