"""Radiometric normalisation of AFTER to BEFORE, fitted on valid pixels sampled over the whole scene.

A global brightness or contrast change between the dates (sun angle, exposure, season) must not
read as change. Both dates come out in BEFORE's standardised units (zero mean, unit variance per
band of BEFORE), so a model sees comparable numbers whatever the sensor's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from geochange.errors import GeochangeError

if TYPE_CHECKING:
    from geochange.io.pair import WindowPair

METHODS = ("meanstd", "histogram", "none")
_N_QUANTILES = 1025


@dataclass
class Normalizer:
    """Per-band maps: ``before -> (before - mean_b) / std_b`` and AFTER first matched to BEFORE.

    ``meanstd``: AFTER's per-band mean and std are matched to BEFORE's (a linear gain and offset).
    ``histogram``: AFTER's per-band quantiles are mapped onto BEFORE's (histogram matching).
    ``none``: AFTER is left as it is, only both are scaled by BEFORE's statistics.
    """

    method: str
    mean_before: np.ndarray
    std_before: np.ndarray
    mean_after: np.ndarray
    std_after: np.ndarray
    q_before: np.ndarray | None = None  # (C, Q) quantiles, histogram method only
    q_after: np.ndarray | None = None

    def apply(self, before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise ``(C, h, w)`` or ``(N, C, h, w)`` arrays of both dates, of any numeric dtype (float32 out).

        The linear maps run as one multiply-add per date in float32, converting the input as they go
        (a uint8 or uint16 window needs no float copy first).
        """
        if self.method == "histogram":
            b = _affine(before, *self._linear(self.mean_before, self.std_before))
            a = np.empty(after.shape, dtype=np.float32)
            for c in range(after.shape[-3]):
                matched = np.interp(after[..., c, :, :], self.q_after[c], self.q_before[c])
                a[..., c, :, :] = (matched - self.mean_before[c]) / self.std_before[c]
            return b, a
        scale_b, shift_b = self._linear(self.mean_before, self.std_before)
        if self.method == "meanstd":
            return _affine(before, scale_b, shift_b), _affine(after, *self._linear(self.mean_after, self.std_after))
        return _affine(before, scale_b, shift_b), _affine(after, scale_b, shift_b)

    @staticmethod
    def _linear(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x - mean) / std`` as ``x * scale + shift``, float32, shaped ``(C, 1, 1)``."""
        scale = 1.0 / np.asarray(std, np.float64)
        shift = -np.asarray(mean, np.float64) * scale
        return scale.astype(np.float32).reshape(-1, 1, 1), shift.astype(np.float32).reshape(-1, 1, 1)

    def as_dict(self) -> dict:
        return {"method": self.method,
                "mean_before": self.mean_before.round(4).tolist(), "std_before": self.std_before.round(4).tolist(),
                "mean_after": self.mean_after.round(4).tolist(), "std_after": self.std_after.round(4).tolist()}


def _affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x * scale + shift`` in a new float32 array, in two passes whatever ``x``'s dtype."""
    out = np.multiply(x, scale, dtype=np.float32)
    out += shift
    return out


def fit_normalizer(samples: Sequence["WindowPair"], method: str = "meanstd", *, max_pixels: int = 1_000_000,
                   seed: int = 0) -> Normalizer:
    """Fit per-band statistics of both dates on the valid pixels of ``samples``.

    At most ``max_pixels`` pixels are used, drawn evenly from the windows (seeded), so memory does
    not grow with the sample.
    """
    if method not in METHODS:
        raise GeochangeError(f"unknown normalisation {method!r} (choose one of {', '.join(METHODS)})")
    rng = np.random.default_rng(seed)
    per_window = max(1, max_pixels // max(len(samples), 1))
    parts_b, parts_a = [], []
    for s in samples:
        idx = np.flatnonzero(s.valid)
        if idx.size > per_window:
            idx = np.sort(rng.choice(idx, per_window, replace=False))
        parts_b.append(s.before.reshape(s.before.shape[0], -1)[:, idx])
        parts_a.append(s.after.reshape(s.after.shape[0], -1)[:, idx])
    b64 = np.concatenate(parts_b, axis=1).astype(np.float64) if parts_b else np.empty((0, 0))
    a64 = np.concatenate(parts_a, axis=1).astype(np.float64) if parts_a else np.empty((0, 0))
    if b64.size == 0 or b64.shape[1] < 2:
        raise GeochangeError("no valid pixels where the two dates overlap (nodata or alpha everywhere)")
    mean_b, std_b = b64.mean(axis=1), _safe_std(b64)
    mean_a, std_a = a64.mean(axis=1), _safe_std(a64)
    q_b = q_a = None
    if method == "histogram":
        qs = np.linspace(0, 1, _N_QUANTILES)
        q_b = np.quantile(b64, qs, axis=1).T
        q_a = np.quantile(a64, qs, axis=1).T
        q_a = np.maximum.accumulate(q_a + np.arange(_N_QUANTILES) * 1e-9, axis=1)  # strictly increasing for interp
    return Normalizer(method, mean_b, std_b, mean_a, std_a, q_b, q_a)


def _safe_std(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=1)
    return np.where(std > 1e-12, std, 1.0)
