"""Change vector analysis (CVA): the change-vector magnitude of the normalised pair, thresholded.

The "Raw" baseline of the DRLnet paper (Zhang et al. 2017, Table 1) is the bare magnitude
``|after - before|`` split by a threshold fitted once on pixels sampled over the whole scene (so
the threshold is the same in every window). geochange's default adds what the accuracy benchmark
(benchmarks/bench_accuracy.py) showed to help on real scenes (docs/models.md has the figures):

* EM on a two-gamma mixture of the magnitude (``threshold="gamma-em"``, threshold.py) instead of
  GGKI, which flagged 5-24 % of an OSCD scene where 0.3-4 % changed;
* a probability that ranks: ``1 / (1 + (t / m) ** s)``, 0.5 at the threshold ``t``, never
  saturating (the GGKI posterior put 50-68 % of an OSCD scene's changed pixels on exactly 1.0).

The pixels are not filtered: a 3x3 median or box filter of the magnitude (``-p filter=median``)
raised the AUC but lowered the mean kappa (the mixture then splits the unchanged class); single
pixels and slivers are removed by detect's region decision (the minimum mapping unit) instead.
``-p threshold=ggki`` gives the DRLnet paper's Raw baseline with the GGKI threshold used before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from geochange.errors import GeochangeError
from geochange.models.base import ChangeModel, Sample
from geochange.threshold import THRESHOLD_METHODS, fit_threshold

FILTERS = ("median", "mean", "none")
MEASURES = ("cva", "rcva")


@dataclass
class CVAConfig:
    """Hyper-parameters of CVA (defaults chosen by benchmarks/bench_accuracy.py)."""

    measure: str = "cva"        # cva: |after - before|; rcva: robust CVA (Thonfeld et al. 2016), see rcva_magnitude
    radius: int = 1             # rcva: the neighbourhood searched is (2 radius + 1)² pixels
    filter: str = "none"        # spatial filter of the magnitude: none (the paper's Raw), median or mean (box)
    size: int = 3               # filter window, pixels
    threshold: str = "gamma-em"  # gamma-em (EM on a two-gamma mixture), ggki (Bazi et al. 2005) or ki
    bins: int = 512             # histogram bins of a GGKI / KI fit
    max_fit_pixels: int = 2_000_000  # pixels drawn from the scene sample for the threshold fit

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise GeochangeError(f"cva: unknown measure {self.measure!r} (choose one of {', '.join(MEASURES)})")
        if self.radius < 0:
            raise GeochangeError("cva: radius must be >= 0")
        if self.filter not in FILTERS:
            raise GeochangeError(f"cva: unknown filter {self.filter!r} (choose one of {', '.join(FILTERS)})")
        if self.threshold not in THRESHOLD_METHODS:
            raise GeochangeError(f"cva: unknown threshold {self.threshold!r} "
                                 f"(choose one of {', '.join(THRESHOLD_METHODS)})")
        if self.size < 1:
            raise GeochangeError("cva: size must be >= 1")


class CVA(ChangeModel):
    """Change-vector magnitude, filtered, thresholded by a mixture fitted on the scene."""

    name = "cva"
    config_class = CVAConfig
    uses_torch = False

    def __init__(self, config: CVAConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or CVAConfig(), device)
        self.fitted = None

    @property
    def context_px(self) -> int:
        """0: the magnitude is per pixel; rcva searches ``radius`` pixels, a filter half its size."""
        reach = self.config.radius if self.config.measure == "rcva" else 0
        if self.config.filter != "none":
            reach += self.config.size // 2
        return reach

    def magnitude(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The change statistic: Euclidean norm of the change vector over bands, filtered:
        ``(N, C, h, w) -> (N, h, w)``. Invalid pixels (``valid`` False) count as unchanged in the filter."""
        if self.config.measure == "rcva":
            mag = rcva_magnitude(before, after, self.config.radius)
        else:
            diff = after - before
            mag = np.sqrt(np.einsum("nchw,nchw->nhw", diff, diff))
        if valid is not None and not valid.all():
            mag[~valid] = 0.0
        size = self.config.size
        if size > 1 and self.config.filter == "median":
            mag = ndimage.median_filter(mag, size=(1, size, size), mode="nearest")
        elif size > 1 and self.config.filter == "mean":
            mag = ndimage.uniform_filter(mag, size=(1, size, size), mode="nearest")
        return mag

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        """Fit the threshold on the (filtered) magnitudes of valid pixels sampled over the whole scene."""
        mags = [self.magnitude(b[None], a[None], v[None])[0][v] for b, a, v in samples]
        values = np.concatenate(mags) if mags else np.empty(0, np.float32)
        if values.size > self.config.max_fit_pixels:
            values = np.random.default_rng(seed).choice(values, self.config.max_fit_pixels, replace=False)
        self.fitted = fit_threshold(values, self.config.threshold, bins=self.config.bins)

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.fitted is None:
            raise GeochangeError("the cva model must be fitted on the scene before predicting")
        return self.fitted.probability(self.magnitude(before, after, valid)).astype(np.float32, copy=False)

    def params(self) -> dict:
        out = super().params()
        if self.fitted is not None:
            out["fit"] = self.fitted.as_dict()
            out["magnitude_threshold"] = float(self.fitted.threshold)
        return out


def rcva_magnitude(before: np.ndarray, after: np.ndarray, radius: int = 1) -> np.ndarray:
    """Robust change-vector magnitude (Thonfeld, Feilhauer, Braun & Menz, RSE 2016), ``(N, C, h, w) -> (N, h, w)``.

    Each band of a pixel is compared with the closest value of that band within ``radius`` pixels in
    the other date, in both directions (BEFORE against AFTER's neighbourhood and AFTER against
    BEFORE's); the larger of the two magnitudes is kept. A residual shift or parallax of up to
    ``radius`` pixels then leaves edges unchanged, while an object that is new or gone stays changed
    both ways. Windows are padded by repeating their edge pixels.
    """
    def one_way(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = radius
        pad = np.pad(y, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
        h, w = x.shape[-2:]
        best = None
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                d = np.abs(pad[..., dy:dy + h, dx:dx + w] - x)
                best = d if best is None else np.minimum(best, d, out=best)
        return np.sqrt(np.einsum("nchw,nchw->nhw", best, best))

    return np.maximum(one_way(before, after), one_way(after, before))
