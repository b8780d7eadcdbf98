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

    @property
    def strips(self) -> bool:
        """Full-width windows that do not overlap (``plan_strips``): each window is a strip as it is."""
        return self.overlap == 0 and len(self.col_offsets) == 1

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


#: pixels per window of a per-pixel model (``plan_strips``): large enough that reading, the model and
#: the sinks work on big arrays, small enough that memory stays flat whatever the raster's size
STRIP_PIXELS = 1 << 20


def plan_strips(height: int, width: int, max_pixels: int | None = None, block_h: int | None = None) -> WindowPlan:
    """Full-width windows of about ``max_pixels`` (at least one row), not overlapping: the plan of a
    per-pixel model, whose windows need no context (``ChangeModel.context_px`` 0). Their height is a
    multiple or a divisor of ``block_h`` (the input's block height) when it can be, so that no window
    straddles a row of input blocks and each block is decompressed once while GDAL's cache holds
    one row of blocks; the last window is pushed back inside the grid, as in any plan."""
    rows = max(1, (max_pixels or STRIP_PIXELS) // max(width, 1))
    if block_h and block_h <= rows:
        rows -= rows % block_h
    elif block_h:
        rows = max(d for d in range(1, rows + 1) if block_h % d == 0)
    rows = min(rows, height)
    return WindowPlan(height, width, rows, width, 0, _offsets(height, rows, 0), (0,))


def plan_for(height: int, width: int, tile: int, overlap: int, context_px: int | None,
             block_h: int | None = None) -> WindowPlan:
    """The plan of a model: strips for a per-pixel one (``context_px`` 0; ``tile`` and ``overlap``
    then change nothing in its result), square ``tile`` windows overlapping by ``overlap`` otherwise."""
    if context_px == 0:
        return plan_strips(height, width, block_h=block_h)
    return plan_windows(height, width, tile, overlap)


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


@dataclass(frozen=True)
class Block:
    """A band of whole window rows ``[first, stop)`` of a plan: the unit of distributed and resumable work.

    The block owns the grid rows ``[y0, y1)``. Its first ``seam`` rows (``[y0, y0 + seam)``) are also
    reached by the previous block's last window row, so their blend is finished when both blocks
    are done (``sliding.replay_seam``); the block itself finishes the *body* ``[y0 + seam, y1)``.
    """

    index: int
    first: int
    stop: int
    y0: int
    y1: int
    seam: int

    @property
    def body(self) -> tuple[int, int]:
        """Grid rows ``[start, stop)`` this block finishes on its own."""
        return self.y0 + self.seam, self.y1


def plan_blocks(plan: WindowPlan, block_size: int = 2048) -> list[Block]:
    """Cut ``plan`` into bands of about ``block_size`` grid rows (at least two window rows each).

    A band may only start at window row ``r`` when the windows of row ``r - 2`` end above row
    ``r``'s first pixel row, so that a seam is shared by two neighbouring blocks only (this keeps
    the plan's pushed-back last row with the band before it).
    """
    n = len(plan.row_offsets)
    stride = max(1, plan.tile_h - plan.overlap)
    per_block = max(2, round(block_size / stride))
    offs = plan.row_offsets
    starts = [0]
    r = per_block
    while r < n:
        if offs[r - 2] + plan.tile_h <= offs[r] and n - r >= 2:
            starts.append(r)
            r += per_block
        else:
            r += 1
    stops = starts[1:] + [n]
    blocks = []
    for i, (first, stop) in enumerate(zip(starts, stops)):
        y0 = offs[first]
        y1 = offs[stop] if stop < n else plan.height
        seam = max(0, offs[first - 1] + plan.tile_h - y0) if first > 0 else 0
        blocks.append(Block(i, first, stop, y0, y1, seam))
    return blocks
