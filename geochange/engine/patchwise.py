"""Dense maps from patch classifiers: the PCD protocol of Hamaguchi et al. (2019, Sec. 5.2).

Models that classify a whole patch pair (the disentangled VAE, RSC-VAE) give one score per pair.
For a change map, each ``cell x cell`` block of a window (14 x 14 in the paper) takes the score of
the ``patch x patch`` pair centred on it (112 x 112), so the scores tile the window into a heat map
that the engine then blends across windows and thresholds at 0.5. Near window borders the patch is
completed by reflection; the engine's overlap (>= (patch - cell) / 2 to be exact) hides those.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: a scorer takes (n, C, patch, patch) float32 BEFORE and AFTER patches and returns (n,) scores
PatchScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def patch_heatmap(score: PatchScorer, before: np.ndarray, after: np.ndarray, patch: int = 112, cell: int = 14,
                  batch: int = 256) -> np.ndarray:
    """``(N, H, W)`` map of ``score`` over ``(N, C, H, W)`` windows, one patch per ``cell`` block."""
    if patch < cell or (patch - cell) % 2:
        raise ValueError(f"patch ({patch}) must be >= cell ({cell}) with an even difference, to centre the cell")
    n, _, h, w = before.shape
    rows, cols = math.ceil(h / cell), math.ceil(w / cell)
    views = [sliding_window_view(_pad(x, patch, cell, rows, cols), (patch, patch), axis=(2, 3))[:, :, ::cell, ::cell]
             for x in (before, after)]  # (N, C, rows, cols, patch, patch), no copy
    flat = np.indices((n, rows, cols)).reshape(3, -1).T
    out = np.empty(len(flat), np.float32)
    for start in range(0, len(flat), batch):
        k, i, j = flat[start:start + batch].T
        b = np.ascontiguousarray(views[0][k, :, i, j], np.float32)
        a = np.ascontiguousarray(views[1][k, :, i, j], np.float32)
        out[start:start + batch] = np.asarray(score(b, a), np.float32).reshape(-1)
    grid = out.reshape(n, rows, cols)
    return np.repeat(np.repeat(grid, cell, axis=1), cell, axis=2)[:, :h, :w]


def _pad(x: np.ndarray, patch: int, cell: int, rows: int, cols: int) -> np.ndarray:
    """Pad so that the patch centred on every cell (the last ones partial) lies inside."""
    margin = (patch - cell) // 2
    _, _, h, w = x.shape
    widths = ((0, 0), (0, 0), (margin, margin + rows * cell - h), (margin, margin + cols * cell - w))
    mode = "reflect" if min(h, w) > max(max(p) for p in widths[2:]) else "symmetric"
    try:
        return np.pad(x, widths, mode=mode)
    except ValueError:  # a window smaller than the padding: repeat its edge
        return np.pad(x, widths, mode="edge")
