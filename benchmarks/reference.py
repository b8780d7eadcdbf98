"""Reference change detectors, written here from their papers, to judge geochange's models against.

Each takes both dates as ``(C, H, W)`` float arrays on one grid and a ``(H, W)`` validity mask, and
returns ``(score, changed)``: a per-pixel change score (higher = more likely changed, for AUC) and
the method's own binary decision. They hold whole scenes in memory: benchmark scenes are small.

* :func:`cva_otsu`: the textbook baseline: per-band z-scores of each date, the change-vector
  magnitude, Otsu's threshold (``skimage.filters.threshold_otsu``).
* :func:`irmad`: iteratively reweighted multivariate alteration detection (Nielsen, "The regularized
  iteratively reweighted MAD method for change detection in multi- and hyperspectral data", IEEE TIP
  16(2), 2007): canonical correlation analysis of the two dates, MAD variates ``U - V``, their
  chi-square statistic, no-change probabilities as weights of the next iteration; a pixel is
  changed when the statistic is significant at 1 % (chi-square with ``C`` degrees of freedom).
* :func:`pca_kmeans`: Celik, "Unsupervised change detection in satellite images using principal
  component analysis and k-means clustering", IEEE GRSL 6(4), 2009: ``h x h`` blocks of the
  difference image give a PCA basis, each pixel's ``h x h`` neighbourhood is projected onto the
  leading components (90 % of the variance), k-means (k = 2) splits them, the cluster of larger
  mean difference is "changed". For several bands the difference image is the change-vector
  magnitude of the z-scored dates.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, stats


def _zscores(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    v = x[:, valid].astype(np.float64)
    mean, std = v.mean(axis=1), v.std(axis=1)
    std[std < 1e-12] = 1.0
    return (x - mean[:, None, None]) / std[:, None, None]


def cva_magnitude(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Change-vector magnitude of the per-band z-scores of each date (0 where invalid)."""
    d = _zscores(after, valid) - _zscores(before, valid)
    mag = np.sqrt((d * d).sum(axis=0))
    return np.where(valid, mag, 0.0)


def cva_otsu(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.filters import threshold_otsu

    mag = cva_magnitude(before, after, valid)
    t = threshold_otsu(mag[valid])
    return mag, (mag > t) & valid


def irmad(before: np.ndarray, after: np.ndarray, valid: np.ndarray, max_iter: int = 30, tol: float = 1e-3,
          significance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """IR-MAD (Nielsen 2007). Score: the chi-square statistic of the MAD variates."""
    c = before.shape[0]
    x = before[:, valid].astype(np.float64).T      # (n, c)
    y = after[:, valid].astype(np.float64).T
    w = np.ones(x.shape[0])
    rho_old = np.zeros(c)
    for _ in range(max_iter):
        sw = w.sum()
        mx, my = (w @ x) / sw, (w @ y) / sw
        xc, yc = x - mx, y - my
        # a small ridge (the "regularized" of the title) keeps the problem definite on flat bands
        ridge = 1e-6 * np.eye(c)
        sxx = (xc * w[:, None]).T @ xc / sw + ridge * np.trace(np.cov(x.T)) / c
        syy = (yc * w[:, None]).T @ yc / sw + ridge * np.trace(np.cov(y.T)) / c
        sxy = (xc * w[:, None]).T @ yc / sw
        # generalised eigenproblems of CCA: Sxy Syy^-1 Syx a = rho^2 Sxx a, and likewise for b
        lam, a = linalg.eigh(sxy @ np.linalg.solve(syy, sxy.T), sxx)
        lam, a = lam[::-1], a[:, ::-1]               # descending correlation
        b = np.linalg.solve(syy, sxy.T @ a)
        b /= np.sqrt(np.einsum("ij,ij->j", b, syy @ b))[None, :]
        rho = np.sqrt(np.clip(lam, 0.0, 1.0))
        # sign: positive correlation between each pair of canonical variates
        sign = np.sign(np.einsum("ij,ij->j", a, sxy @ b))
        b *= np.where(sign == 0, 1.0, sign)[None, :]
        mad = xc @ a - yc @ b                        # MAD variates, each of variance 2(1 - rho)
        var = np.maximum(2.0 * (1.0 - rho), 1e-12)
        z = (mad * mad / var[None, :]).sum(axis=1)
        w = stats.chi2.sf(z, c)                      # no-change probability: the next weights
        if np.max(np.abs(rho - rho_old)) < tol:
            break
        rho_old = rho
    score = np.zeros(valid.shape)
    score[valid] = z
    changed = np.zeros(valid.shape, bool)
    changed[valid] = z > stats.chi2.ppf(1.0 - significance, c)
    return score, changed


def pca_kmeans(before: np.ndarray, after: np.ndarray, valid: np.ndarray, h: int = 5, variance: float = 0.9,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA-k-means (Celik 2009) on the difference image. Score: the distance to the unchanged centre
    minus the distance to the changed centre, in the PCA feature space."""
    from numpy.lib.stride_tricks import sliding_window_view
    from sklearn.cluster import KMeans

    diff = cva_magnitude(before, after, valid)
    H, W = diff.shape
    bh, bw = H // h * h, W // h * h
    blocks = diff[:bh, :bw].reshape(bh // h, h, bw // h, h).transpose(0, 2, 1, 3).reshape(-1, h * h)
    mean = blocks.mean(axis=0)
    cov = np.cov((blocks - mean).T)
    evals, evecs = np.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    s = int(np.searchsorted(np.cumsum(evals) / evals.sum(), variance) + 1)
    pad = h // 2
    padded = np.pad(diff, pad, mode="symmetric")
    neigh = sliding_window_view(padded, (h, h))[:H, :W].reshape(H * W, h * h)
    feats = (neigh - mean) @ evecs[:, :s]
    fv = feats[valid.reshape(-1)]
    km = KMeans(2, n_init=4, random_state=seed).fit(fv[:: max(1, fv.shape[0] // 200_000)])
    labels = km.predict(fv)
    dmean = [diff[valid][labels == k].mean() if (labels == k).any() else -np.inf for k in (0, 1)]
    changed_k = int(np.argmax(dmean))
    centres = km.cluster_centers_
    dist = np.linalg.norm(fv[:, None, :] - centres[None], axis=2)
    score = np.zeros(H * W)
    score[valid.reshape(-1)] = dist[:, 1 - changed_k] - dist[:, changed_k]
    changed = np.zeros(H * W, bool)
    changed[valid.reshape(-1)] = labels == changed_k
    return score.reshape(H, W), changed.reshape(H, W)


REFERENCES = {"cva+otsu": cva_otsu, "ir-mad": irmad, "pca-kmeans": pca_kmeans}
