"""Window planning: coverage, equal shapes, strips that partition the rows, blending weights."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.engine.plan import blend_weights, plan_blocks, plan_windows


def coverage(plan) -> np.ndarray:
    cov = np.zeros((plan.height, plan.width), np.int32)
    for _, w in plan.windows():
        r0, c0 = int(w.row_off), int(w.col_off)
        cov[r0:r0 + int(w.height), c0:c0 + int(w.width)] += 1
    return cov


@pytest.mark.parametrize("height,width,tile,overlap", [
    (150, 170, 32, 8), (100, 100, 50, 10), (101, 99, 50, 10), (513, 1030, 512, 64),
    (7, 300, 64, 16), (1, 1, 512, 64), (64, 64, 64, 8), (65, 65, 64, 8), (40, 40, 8, 0),
])
def test_windows_cover_every_pixel_with_one_shape(height, width, tile, overlap):
    plan = plan_windows(height, width, tile, overlap)
    wins = list(plan.windows())
    assert len(wins) == len(plan) == len(plan.row_offsets) * len(plan.col_offsets)
    # every window the same shape, inside the grid
    for _, w in wins:
        assert (int(w.height), int(w.width)) == (plan.tile_h, plan.tile_w)
        assert 0 <= w.row_off and w.row_off + w.height <= height
        assert 0 <= w.col_off and w.col_off + w.width <= width
    assert (coverage(plan) >= 1).all()
    # the last row and column are pushed back inside, flush with the grid's edge
    assert plan.row_offsets[-1] + plan.tile_h == height
    assert plan.col_offsets[-1] + plan.tile_w == width
    assert plan.row_offsets[0] == 0 and plan.col_offsets[0] == 0
    # offsets strictly increasing, row-major order with the right row index
    assert all(a < b for a, b in zip(plan.row_offsets, plan.row_offsets[1:]))
    assert all(a < b for a, b in zip(plan.col_offsets, plan.col_offsets[1:]))
    expected = [(r, y, x) for r, y in enumerate(plan.row_offsets) for x in plan.col_offsets]
    assert [(r, int(w.row_off), int(w.col_off)) for r, w in wins] == expected


def test_consecutive_windows_overlap_by_at_least_the_overlap():
    plan = plan_windows(150, 170, 32, 8)
    assert plan.overlap == 8
    for offs in (plan.row_offsets, plan.col_offsets):
        steps = np.diff(offs)
        assert (steps <= 32 - 8).all()
        assert (steps[:-1] == 24).all()   # regular stride, only the last one pushed inside


def test_tile_larger_than_grid_shrinks_to_it():
    plan = plan_windows(40, 70, tile=512, overlap=64)
    assert (plan.tile_h, plan.tile_w) == (40, 70)
    assert len(plan) == 1
    assert plan.row_offsets == (0,) and plan.col_offsets == (0,)
    # the overlap is clamped to half the smaller side of the shrunken window
    assert plan.overlap == 20
    # one side only
    plan = plan_windows(1000, 30, tile=256, overlap=32)
    assert (plan.tile_h, plan.tile_w) == (256, 30)
    assert plan.col_offsets == (0,)
    assert (coverage(plan) >= 1).all()


@pytest.mark.parametrize("tile,overlap,expected", [(32, 8, 8), (32, 16, 16), (32, 17, 16), (32, 1000, 16),
                                                   (32, 0, 0), (32, -5, 0), (1, 64, 0), (3, 64, 1)])
def test_overlap_is_clamped(tile, overlap, expected):
    plan = plan_windows(100, 100, tile, overlap)
    assert plan.overlap == expected
    assert (coverage(plan) >= 1).all()
    # even with the largest overlap the windows still advance
    assert all(a < b for a, b in zip(plan.row_offsets, plan.row_offsets[1:]))


@pytest.mark.parametrize("height,width,tile,overlap", [
    (150, 170, 32, 8), (101, 99, 50, 10), (7, 300, 64, 16), (1, 5, 512, 64), (1000, 30, 256, 32),
    (65, 65, 64, 8), (40, 40, 8, 0), (97, 13, 3, 1),
])
def test_strip_rows_partition_the_grid(height, width, tile, overlap):
    plan = plan_windows(height, width, tile, overlap)
    strips = [plan.strip_rows(r) for r in range(len(plan.row_offsets))]
    assert strips[0][0] == 0
    assert strips[-1][1] == height
    for (s0, e0), (s1, _) in zip(strips, strips[1:]):
        assert e0 == s1          # contiguous: no gap, no overlap
    for r, (s, e) in enumerate(strips):
        assert s < e
        assert s == plan.row_offsets[r]
        # a strip never extends below the window row it belongs to
        assert e <= plan.row_offsets[r] + plan.tile_h
    rows = np.concatenate([np.arange(s, e) for s, e in strips])
    assert np.array_equal(rows, np.arange(height))


@pytest.mark.parametrize("h,w,overlap", [(32, 32, 8), (64, 48, 16), (33, 17, 8), (10, 10, 0), (5, 9, 2)])
def test_blend_weights_shape_positive_symmetric(h, w, overlap):
    wts = blend_weights(h, w, overlap)
    assert wts.shape == (h, w)
    assert wts.dtype == np.float32
    assert (wts > 0).all()
    assert wts.max() <= 1.0
    np.testing.assert_array_equal(wts, wts[::-1, :])
    np.testing.assert_array_equal(wts, wts[:, ::-1])
    # separable: the outer product of its centre row and centre column
    np.testing.assert_allclose(wts, np.outer(wts[:, w // 2], wts[h // 2, :]), rtol=1e-6)


def test_blend_weights_one_inside_falling_toward_edges():
    overlap = 8
    wts = blend_weights(32, 32, overlap)
    # the centre (more than `overlap` pixels from every edge) weighs 1
    assert (wts[overlap:-overlap, overlap:-overlap] == 1.0).all()
    assert wts[16, 16] == 1.0
    # along a row through the centre: non-decreasing from the edge to the middle, strictly within the ramp
    row = wts[16]
    assert (np.diff(row[:16]) >= 0).all()
    assert (np.diff(row[:overlap]) > 0).all()
    assert row[0] < row[overlap // 2] < row[overlap]
    # corners weigh least
    assert wts[0, 0] == wts.min()
    assert wts[0, 0] < wts[0, 16] < wts[16, 16]
    np.testing.assert_allclose(row[0], 0.5 / overlap, rtol=1e-6)


def test_blend_weights_without_overlap_are_flat():
    np.testing.assert_array_equal(blend_weights(12, 7, 0), np.ones((12, 7), np.float32))


@pytest.mark.parametrize("height,tile,overlap,block", [(600, 64, 16, 96), (1000, 100, 50, 150), (997, 64, 0, 200),
                                                       (130, 64, 16, 48), (50, 64, 16, 96), (2000, 512, 64, 2048)])
def test_blocks_partition_the_rows_and_share_seams_with_their_neighbour_only(height, tile, overlap, block):
    plan = plan_windows(height, 80, tile, overlap)
    blocks = plan_blocks(plan, block)
    n = len(plan.row_offsets)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert blocks[0].first == 0 and blocks[-1].stop == n and blocks[0].y0 == 0 and blocks[-1].y1 == height
    for a, b in zip(blocks, blocks[1:]):
        assert a.stop == b.first and a.y1 == b.y0           # consecutive bands, no gap, no overlap
    for b in blocks:
        assert b.stop - b.first >= min(2, n)
        assert b.y0 == plan.row_offsets[b.first]
        # only the previous block's last window row reaches into this block, and only its seam rows
        reach = [plan.row_offsets[r] + plan.tile_h for r in range(b.first)]
        assert all(end <= b.y0 for end in reach[:-1])
        assert b.seam == (max(0, reach[-1] - b.y0) if reach else 0)
        assert b.body[0] <= b.body[1]
    if height >= 4 * block:
        assert len(blocks) >= 3


def test_blocks_keep_the_pushed_back_last_row_with_the_band_before():
    plan = plan_windows(150, 80, 64, 16)   # rows at 0, 48 and 86 (pushed back)
    assert plan.row_offsets == (0, 48, 86)
    assert [(b.first, b.stop) for b in plan_blocks(plan, 48)] == [(0, 3)]


def test_strips_cover_the_grid_in_full_width_windows_of_bounded_size():
    from geochange.engine.plan import plan_for, plan_strips

    plan = plan_strips(1000, 300, max_pixels=300 * 70, block_h=32)
    assert (plan.tile_w, plan.tile_h, plan.overlap, plan.col_offsets) == (300, 64, 0, (0,))   # 70 -> 64 rows
    assert plan.row_offsets[-1] + plan.tile_h == 1000                                       # last pushed back
    assert all(b - a == 64 for a, b in zip(plan.row_offsets[:-2], plan.row_offsets[1:-1]))
    covered = np.zeros(1000, int)
    for _, w in plan.windows():
        covered[w.row_off:w.row_off + w.height] += 1
    assert covered.min() == 1
    assert plan_strips(10, 5000, max_pixels=100).tile_h == 1                                # one row at least
    assert plan_strips(1000, 300, max_pixels=300 * 70, block_h=256).tile_h == 64             # a divisor of 256
    assert plan_strips(1000, 300, max_pixels=300 * 70, block_h=100).tile_h == 50
    assert plan_strips(50, 20, max_pixels=10**6).tile_h == 50                                # never above the grid
    # a per-pixel model gets strips, a model with context square overlapping windows
    assert plan_for(1000, 300, 128, 16, 0).tile_w == 300
    assert (plan_for(1000, 300, 128, 16, None).tile_w, plan_for(1000, 300, 128, 16, 3).overlap) == (128, 16)
