"""Change vector analysis (CVA): the "Raw" baseline of the DRLnet paper (Zhang et al. 2017, Table 1).

The change-vector magnitude ``|after - before|`` of the radiometrically normalised pair is split
into unchanged and changed by GGKI (threshold.py), fitted once on pixels sampled over the whole
scene so the threshold is the same in every window. The probability is the GGKI posterior
P(changed | magnitude); it crosses 0.5 at the GGKI threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from geochange.errors import GeochangeError
from geochange.models.base import ChangeModel, Sample
from geochange.threshold import GGKIResult, ggki_threshold


@dataclass
class CVAConfig:
    """Hyper-parameters of the CVA baseline."""

    bins: int = 512          # histogram bins of the GGKI fit (Bazi et al. 2005 work on the histogram)
    smooth: int = 0          # box filter size applied to the magnitude (0/1: none, the paper's Raw baseline)
    max_fit_pixels: int = 2_000_000  # pixels drawn from the scene sample for the threshold fit


class CVA(ChangeModel):
    """Change-vector magnitude thresholded by GGKI."""

    name = "cva"
    config_class = CVAConfig
    uses_torch = False

    def __init__(self, config: CVAConfig | None = None, device: str = "cpu") -> None:
        super().__init__(config or CVAConfig(), device)
        self.fitted: GGKIResult | None = None

    def magnitude(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Euclidean norm of the change vector over bands: ``(N, C, h, w) -> (N, h, w)``."""
        diff = after - before
        mag = np.sqrt(np.einsum("nchw,nchw->nhw", diff, diff))
        if self.config.smooth > 1:
            mag = ndimage.uniform_filter(mag, size=(1, self.config.smooth, self.config.smooth))
        return mag

    def fit(self, samples: Sequence[Sample], seed: int = 0) -> None:
        """GGKI on the magnitudes of valid pixels sampled over the whole scene."""
        mags = [self.magnitude(b[None], a[None])[0][v] for b, a, v in samples]
        values = np.concatenate(mags) if mags else np.empty(0, np.float32)
        if values.size > self.config.max_fit_pixels:
            values = np.random.default_rng(seed).choice(values, self.config.max_fit_pixels, replace=False)
        self.fitted = ggki_threshold(values, bins=self.config.bins)

    def predict(self, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.fitted is None:
            raise GeochangeError("the cva model must be fitted on the scene before predicting")
        return self.fitted.posterior(self.magnitude(before, after)).astype(np.float32, copy=False)

    def params(self) -> dict:
        out = super().params()
        if self.fitted is not None:
            out["ggki"] = self.fitted.as_dict()
            out["magnitude_threshold"] = float(self.fitted.threshold)
        return out
