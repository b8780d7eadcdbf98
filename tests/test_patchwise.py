"""The PCD protocol: every cell of a window gets the score of the patch centred on it."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.engine.patchwise import patch_heatmap


def _centre_mean(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Scores a patch pair by the mean |A - B| of its centre 4 x 4 pixels."""
    c = b.shape[-1] // 2
    return np.abs(a - b)[:, :, c - 2:c + 2, c - 2:c + 2].mean(axis=(1, 2, 3))


def test_each_cell_gets_the_score_of_the_patch_centred_on_it():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(2, 3, 40, 52)).astype(np.float32)
    after = before.copy()
    after[1, :, 8:12, 20:24] += 5.0  # one changed cell (cell 4 x 4 at row 2, col 5) in the second window
    heat = patch_heatmap(_centre_mean, before, after, patch=12, cell=4, batch=7)
    assert heat.shape == (2, 40, 52)
    assert heat[0].max() == 0
    changed = heat[1] > 0
    assert changed[8:12, 20:24].all() and changed.sum() == 16
    np.testing.assert_allclose(heat[1, 8:12, 20:24], 5.0, rtol=1e-6)


def test_partial_cells_at_the_border_and_small_windows():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(1, 1, 10, 9)).astype(np.float32)
    after = before + 1.0
    seen = []

    def score(b, a):
        seen.append(b.shape)
        return (a - b).mean(axis=(1, 2, 3))

    heat = patch_heatmap(score, before, after, patch=28, cell=4)
    assert heat.shape == (1, 10, 9) and np.allclose(heat, 1.0)
    assert all(s[1:] == (1, 28, 28) for s in seen) and sum(s[0] for s in seen) == 3 * 3
    with pytest.raises(ValueError, match="even difference"):
        patch_heatmap(score, before, after, patch=27, cell=4)
