"""quicklook.png: BEFORE | AFTER | AFTER with the changes in red, downsampled, for a person to look at.

The canvas is filled as a by-product of detection: every k-th pixel of each window the engine reads
(``add_window``) and of each finished strip of the mask (``write``), so the rasters are read once;
``detect`` then takes the changes from the published mask (``load_mask``: after the region decision,
from its overviews), so the red areas are the regions that were kept.
The dates are shown as the model saw them (radiometrically normalised), with one contrast stretch
for both, so they compare at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.windows import Window

from geochange.io.atomic import commit, discard, temp_path

GAP = 8
RED = np.array([228, 26, 28])


class QuicklookCanvas:
    """Decimated BEFORE, AFTER and change mask of a ``height`` x ``width`` grid (longer side <= max_size)."""

    def __init__(self, height: int, width: int, bands: int, threshold: float = 0.5, max_size: int = 1024) -> None:
        self.k = max(1, math.ceil(max(height, width) / max_size))
        h, w = math.ceil(height / self.k), math.ceil(width / self.k)
        nb = min(bands, 3)
        self.before = np.zeros((nb, h, w), np.float32)
        self.after = np.zeros((nb, h, w), np.float32)
        self.valid = np.zeros((h, w), bool)
        self.changed = np.zeros((h, w), bool)
        self.threshold = threshold

    def _targets(self, row_off: int, col_off: int) -> tuple[int, int, int, int]:
        """First in-window row/col on the decimation grid, and where they land on the canvas."""
        r, c = (-row_off) % self.k, (-col_off) % self.k
        return r, c, (row_off + r) // self.k, (col_off + c) // self.k

    def add_window(self, window: Window, before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> None:
        """Engine hook: copy the window's pixels that fall on the decimation grid."""
        r, c, i, j = self._targets(int(window.row_off), int(window.col_off))
        nb = self.before.shape[0]
        b = before[:nb, r::self.k, c::self.k]
        h, w = b.shape[1:]
        self.before[:, i:i + h, j:j + w] = b
        self.after[:, i:i + h, j:j + w] = after[:nb, r::self.k, c::self.k]
        self.valid[i:i + h, j:j + w] = valid[r::self.k, c::self.k]

    def write(self, strip) -> None:
        """Strip sink: keep the decimated change mask."""
        r, c, i, j = self._targets(strip.row_off, 0)
        sub = strip.valid[r::self.k, c::self.k] & (strip.prob[r::self.k, c::self.k] >= self.threshold)
        self.changed[i:i + sub.shape[0], j:j + sub.shape[1]] = sub

    def load_mask(self, path: str | Path) -> None:
        """Take the changes from the published mask (after the region decision), read at the canvas's
        size from its overviews (nearest), so the quicklook shows exactly the regions that were kept."""
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(path) as ds:
            mask = ds.read(1, out_shape=self.changed.shape, resampling=Resampling.nearest)
        self.changed = mask == 1

    def part(self, y0: int, y1: int) -> dict[str, np.ndarray]:
        """The canvas rows of grid rows ``[y0, y1)`` (a block's share), for :meth:`paste`."""
        i0, i1 = -(-y0 // self.k), -(-y1 // self.k)
        return {"rows": np.array([i0, i1]), "before": self.before[:, i0:i1], "after": self.after[:, i0:i1],
                "valid": self.valid[i0:i1], "changed": self.changed[i0:i1]}

    def paste(self, part) -> None:
        """Copy in a block's :meth:`part`."""
        i0, i1 = (int(v) for v in part["rows"])
        self.before[:, i0:i1], self.after[:, i0:i1] = part["before"], part["after"]
        self.valid[i0:i1] = part["valid"]
        self.changed[i0:i1] |= part["changed"]

    def save(self, path: str | Path) -> Path:
        """Write the three panels side by side, atomically."""
        lo, hi = _stretch(self.before, self.valid)
        rgb_b, rgb_a = to_rgb(self.before, self.valid, lo, hi), to_rgb(self.after, self.valid, lo, hi)
        overlay = rgb_a.copy()
        sel = self.changed & self.valid
        overlay[sel] = (0.45 * overlay[sel] + 0.55 * RED).astype(np.uint8)
        h, w = self.valid.shape
        canvas = np.full((h, 3 * w + 2 * GAP, 3), 255, np.uint8)
        for n, panel in enumerate((rgb_b, rgb_a, overlay)):
            canvas[:, n * (w + GAP):n * (w + GAP) + w] = panel
        path = Path(path)
        tmp = temp_path(path, ".png")
        try:
            Image.fromarray(canvas).save(tmp, format="PNG", compress_level=1)
            commit(tmp, path)
        finally:
            discard(tmp)
        return path


def _stretch(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 percentiles of the valid pixels."""
    if not valid.any():
        return np.zeros(image.shape[0]), np.ones(image.shape[0])
    vals = image[:, valid]
    return np.percentile(vals, 2, axis=1), np.percentile(vals, 98, axis=1)


def to_rgb(image: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w, 3)`` uint8: up to three bands (one band as grey), stretched to [lo, hi]."""
    bands = image if image.shape[0] == 3 else np.repeat(image[:1], 3, axis=0)
    lo3, hi3 = (lo, hi) if image.shape[0] == 3 else (np.repeat(lo[:1], 3), np.repeat(hi[:1], 3))
    scaled = (bands - lo3[:, None, None]) / np.maximum(hi3 - lo3, 1e-9)[:, None, None]
    out = (np.clip(scaled, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0).copy()
    out[~valid] = 0
    return out
