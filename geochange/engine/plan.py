"""Which windows to run, in which order, and how much each pixel of a window counts when blending."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class WindowPlan:
    """Windows of one size covering a ``height`` x ``width`` grid, row by row.

    Every window has the same shape (``tile_h`` x ``tile_w``) so that they batch; the last row and
    column are pushed back inside the grid rather than padded. ``row_offsets``/``col_offsets`` are
    the window origins; windows go row-major, so rows above ``row_offsets[r + 1]`` are final once
    window row ``r`` is done.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def windows(self):
        """(row index, Window) pairs in processing order."""
        for r, y in enumerate(self.row_offsets):
            for x in self.col_offsets:
                yield r, Window(x, y, self.tile_w, self.tile_h)

    def strip_rows(self, r: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of the grid that are final once window row ``r`` is done."""
        start = self.row_offsets[r]
        stop = self.row_offsets[r + 1] if r + 1 < len(self.row_offsets) else self.height
        return start, stop


def plan_windows(height: int, width: int, tile: int = 512, overlap: int = 64) -> WindowPlan:
    """Plan windows of ``tile`` pixels overlapping by ``overlap``; a tile larger than the grid shrinks to it."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    overlap = max(0, min(overlap, min(tile_h, tile_w) // 2))
    return WindowPlan(height, width, tile_h, tile_w, overlap,
                      _offsets(height, tile_h, overlap), _offsets(width, tile_w, overlap))


def _offsets(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    stride = max(1, tile - overlap)
    offsets = list(range(0, max(size - tile, 0) + 1, stride))
    if offsets[-1] + tile < size:
        offsets.append(size - tile)
    return tuple(offsets)


def blend_weights(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """Weights that ramp linearly from near 0 at a window's edge to 1 at ``overlap`` pixels inside.

    Where windows overlap, each pixel is the weighted mean of their predictions, so a window's
    edge (where its context is poorest) hands over smoothly to its neighbour's centre: no seams.
    Where only one window covers a pixel the normalisation gives that window's value unchanged.
    """
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        i = np.arange(n, dtype=np.float32)
        edge = np.minimum(i, n - 1 - i) + 0.5
        return np.clip(edge / overlap, 1.0 / (2 * overlap), 1.0).astype(np.float32)

    return np.outer(ramp(tile_h), ramp(tile_w))
