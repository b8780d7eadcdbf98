"""Estimate the residual shift of AFTER relative to BEFORE on the aligned grid (sub-pixel phase correlation).

Two dates put on one grid are often still off by a pixel or less (orthorectification, parallax).
Every edge then differs between the dates and the change map fills with speckles along them. The
shift is measured on windows sampled over the whole scene (as the normalisation is) and combined by
the median, so a few windows of real change, clouds or flat water do not move it.

Sign convention: ``shift_px = (dy, dx)`` is where AFTER's content lies relative to BEFORE's, in
pixels of the grid (rows down, columns right): a feature at BEFORE's pixel ``(r, c)`` is seen in
AFTER at ``(r + dy, c + dx)``. The correction reads AFTER at ``(r + dy, c + dx)`` for output pixel
``(r, c)`` (:meth:`geochange.io.pair.RasterPair.shift_after`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from geochange.io.pair import RasterPair

#: a shift smaller than this (pixels, vector length) is left alone: below it the correction's
#: resampling would blur AFTER more than the misregistration costs
TOLERANCE_PX = 0.2
#: sub-pixel precision of the estimate: 1/20 px
UPSAMPLE = 20
#: windows sampled over the scene, and their size (smaller on a small scene, never under MIN_SIZE)
N_WINDOWS = 25
SIZE = 256
MIN_SIZE = 48
#: a window is used when this share of its pixels is valid in both dates ...
MIN_VALID = 0.9
#: ... and the dates correlate there once aligned (phase_cross_correlation's error is sqrt(1 - r²):
#: 0.9 is r = 0.44; unrelated texture or plain noise gives ~0.99, shared texture ~0.2)
MAX_ERROR = 0.9
#: standardised values are clipped to this many (robust) standard deviations
CLIP = 2.0
#: the estimate is trusted with at least this many windows, of which this share agree with the
#: median to within AGREE_PX
MIN_WINDOWS = 3
MIN_AGREE = 0.5
AGREE_PX = 0.5
#: ... and the shift must stand out of the windows' scatter: at least this many standard errors
#: (spread / sqrt(windows)) long, so a few noisy windows never move AFTER
SIGNIFICANCE = 3.0


@dataclass
class Coregistration:
    """The residual shift of AFTER relative to BEFORE, and whether it was corrected."""

    mode: str                               # auto (estimate, correct above the tolerance) or off
    shift_px: tuple[float, float] | None    # (dy, dx) in grid pixels; None when not estimated
    res: tuple[float, float] = (1.0, 1.0)   # the grid's pixel size on the ground (x, y) in metres, for shift_m
    windows: int = 0                        # windows the estimate rests on
    sampled: int = 0                        # windows sampled
    spread_px: float | None = None          # median distance of the windows' shifts from the median
    agree: float | None = None              # share of windows within AGREE_PX of the median
    reliable: bool = False                  # enough windows, agreeing enough, to be applied
    applied: bool = False
    note: str = ""                          # why nothing was applied, in words

    @property
    def shift_m(self) -> tuple[float, float] | None:
        """The shift on the ground in metres: rows x pixel height, columns x pixel width."""
        if self.shift_px is None:
            return None
        return self.shift_px[0] * self.res[1], self.shift_px[1] * self.res[0]

    @property
    def magnitude_px(self) -> float:
        return math.hypot(*self.shift_px) if self.shift_px is not None else 0.0

    def as_dict(self) -> dict:
        """The ``coregistration`` entry of summary.json."""
        def rnd(v, n=4):
            return None if v is None else [round(float(x), n) for x in v]
        return {"mode": self.mode, "shift_px": rnd(self.shift_px), "shift_m": rnd(self.shift_m),
                "applied": self.applied, "tolerance_px": TOLERANCE_PX, "windows": self.windows,
                "sampled": self.sampled, "reliable": self.reliable, "spread_px": None if self.spread_px is None else round(self.spread_px, 4),
                "agree": None if self.agree is None else round(self.agree, 3), "note": self.note}


def estimate_shift(pair: "RasterPair", *, n_windows: int = N_WINDOWS, size: int = SIZE,
                   seed: int = 0) -> Coregistration:
    """Measure AFTER's shift relative to BEFORE on ``n_windows`` windows sampled over the pair (raw reads).

    Never fails for want of signal: a scene too small, too flat or too changed gives an estimate
    with ``shift_px`` None (or not trusted) and a ``note`` saying why.
    """
    h, w = pair.shape
    size = min(size, max(MIN_SIZE, min(h, w) // 2))
    if min(h, w) < MIN_SIZE:
        return Coregistration("auto", None, _ground_res(pair),
                              note=f"the overlap of the dates ({w}x{h} px) is too small to estimate a shift")
    shifts = []
    windows = pair.sample_windows(n_windows, size, seed)
    # one BLAS thread: the upsampled DFT's small matrix products only spin a second one (3x the CPU
    # time for the same shifts, measured on bench_detect's 6144² pair)
    with threadpool_limits(1, user_api="blas"):
        for window in windows:
            wp = pair.read_raw(window)
            s = window_shift(wp.before, wp.after, wp.valid)
            if s is not None:
                shifts.append(s)
    return combine(np.array(shifts).reshape(-1, 2), len(windows), _ground_res(pair))


def window_shift(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> tuple[float, float] | None:
    """AFTER's shift ``(dy, dx)`` relative to BEFORE in one ``(C, h, w)`` window pair; None when the
    window has too few valid pixels, no texture, or the dates do not correlate there."""
    from skimage.registration import phase_cross_correlation

    if valid.mean() < MIN_VALID:
        return None
    ref, mov = single_channel(before, valid), single_channel(after, valid)
    if ref is None or mov is None:
        return None
    taper = _hann(ref.shape)  # no wrap-around edge for the FFT to lock onto
    shift, error, _ = phase_cross_correlation(ref * taper, mov * taper, upsample_factor=UPSAMPLE,
                                              normalization=None)
    if not np.isfinite(error) or error > MAX_ERROR:
        return None
    # phase_cross_correlation gives the shift that registers AFTER onto BEFORE: the opposite of ours
    return -float(shift[0]), -float(shift[1])


def single_channel(img: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """The mean of the robustly standardised bands, clipped to ±CLIP (invalid pixels at 0, the median);
    None when every band is flat.

    Standardising per window makes the dates comparable under an illumination or sensor change;
    clipping keeps a bright new roof or a cloud from outweighing the texture both dates share.
    """
    out = np.zeros(img.shape[1:], np.float64)
    used = 0
    for band in img:
        v = band[valid].astype(np.float64)
        median = np.median(v)
        scale = 1.4826 * np.median(np.abs(v - median))
        if not np.isfinite(scale) or scale <= 1e-6 * max(1.0, abs(median)):
            continue
        out += np.where(valid, np.clip((band - median) / scale, -CLIP, CLIP), 0.0)
        used += 1
    return out / used if used else None


def combine(shifts: np.ndarray, sampled: int, res: tuple[float, float]) -> Coregistration:
    """The median of the windows' shifts, how far they scatter around it, and whether to trust it."""
    n = len(shifts)
    if n == 0:
        return Coregistration("auto", None, res, sampled=sampled,
                              note="no window with enough valid pixels and texture to estimate a shift")
    median = np.median(shifts, axis=0)
    dist = np.hypot(*(shifts - median).T)
    est = Coregistration("auto", (float(median[0]), float(median[1])), res, windows=n, sampled=sampled,
                         spread_px=float(np.median(dist)), agree=float(np.mean(dist <= AGREE_PX)))
    if n < MIN_WINDOWS:
        est.note = f"only {n} of {sampled} windows could be matched (at least {MIN_WINDOWS} needed)"
    elif est.agree < MIN_AGREE:
        est.note = f"the windows disagree (only {est.agree:.0%} within {AGREE_PX} px of the median)"
    elif est.magnitude_px < SIGNIFICANCE * est.spread_px / np.sqrt(n):
        est.note = (f"the shift ({est.magnitude_px:.2f} px) is within the scatter of the {n} windows "
                    f"(median distance {est.spread_px:.2f} px)")
    else:
        est.reliable = True
    return est


def _hann(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def _ground_res(pair: "RasterPair") -> tuple[float, float]:
    """The pair's pixel size on the ground (x, y) in metres, whatever its CRS."""
    from geochange.geometry import GroundScale

    g = pair.grid
    return GroundScale(g.transform, g.crs, g.width, g.height).pixel_size_m()
