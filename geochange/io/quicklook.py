"""quicklook.png: BEFORE | AFTER | AFTER with the changes in red, downsampled, for a person to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from geochange.io.atomic import commit, discard, temp_path

GAP = 8


def to_rgb(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w, 3)`` uint8: first three bands (or the first as grey), 2-98 % stretch."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    out = np.zeros(bands.shape[1:] + (3,), np.uint8)
    for c in range(3):
        vals = bands[c][valid]
        lo, hi = (np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0))
        scaled = (bands[c] - lo) / max(hi - lo, 1e-9)
        out[..., c] = (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    out[~valid] = 0
    return out


def write_quicklook(path: str | Path, before: np.ndarray, after: np.ndarray, valid: np.ndarray,
                    mask: np.ndarray) -> Path:
    """Write the three panels side by side; ``mask`` is uint8 (1 changed, 255 nodata) at the same size."""
    rgb_b, rgb_a = to_rgb(before, valid), to_rgb(after, valid)
    overlay = rgb_a.copy()
    changed = mask == 1
    overlay[changed] = (0.45 * overlay[changed] + 0.55 * np.array([228, 26, 28])).astype(np.uint8)
    h, w = valid.shape
    canvas = np.full((h, 3 * w + 2 * GAP, 3), 255, np.uint8)
    for i, panel in enumerate((rgb_b, rgb_a, overlay)):
        canvas[:, i * (w + GAP):i * (w + GAP) + w] = panel
    path = Path(path)
    tmp = temp_path(path, ".png")
    try:
        Image.fromarray(canvas).save(tmp, format="PNG", compress_level=3)
        commit(tmp, path)
    finally:
        discard(tmp)
    return path
