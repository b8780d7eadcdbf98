"""The region decision (MMU, hysteresis, small holes) shared by mask, statistics and polygons.

Strips of a hand-made probability field go through the run's real sinks (``DetectOutputs``) into
real files; the published mask, polygons and statistics are compared with a whole-array reference.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from geochange.engine.outputs import DetectOutputs
from geochange.engine.regions import MMU_M2, MMU_PIXELS, RegionRule, default_min_area_m2
from geochange.engine.sliding import Strip
from geochange.io.align import Grid

UTM33 = CRS.from_epsg(32633)
T5 = Affine(5.0, 0.0, 400_000.0, 0.0, -5.0, 5_000_000.0)  # 5 m pixels: 25 m² each
MMU = 100.0  # 4 pixels of 25 m²


def run(tmp_path, prob: np.ndarray, rule: RegionRule, heights=(4,), valid: np.ndarray | None = None):
    """Feed ``prob`` in strips of ``heights`` (cycled) through a run's sinks; the mask, polygons and stats."""
    h, w = prob.shape
    valid = np.ones(prob.shape, bool) if valid is None else valid
    tmp_path.mkdir(exist_ok=True)
    outputs = DetectOutputs(tmp_path, Grid(UTM33, T5, w, h), rule, 0, bands=3)
    row, k = 0, 0
    while row < h:
        n = min(heights[k % len(heights)], h - row)
        strip = Strip(row, prob[row:row + n].astype(np.float32), valid[row:row + n])
        for sink in outputs.sinks:
            sink.write(strip)
        row, k = row + n, k + 1
    outputs.polygons.close()
    outputs.close()
    with rasterio.open(tmp_path / "change_mask.tif") as ds:
        mask = ds.read(1)
    frame = gpd.read_file(tmp_path / "changes.gpkg", layer="changes")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no spill left behind
    return mask, frame, outputs.stats.as_dict()


def reference(prob: np.ndarray, rule: RegionRule, pixel_area: float = 25.0) -> np.ndarray:
    """The decision on the whole array at once: regions kept by max and area, small holes filled."""
    labels, n = ndimage.label(prob >= rule.low)
    out = np.zeros(prob.shape, bool)
    for k in range(1, n + 1):
        region = labels == k
        if prob[region].max() < rule.high or region.sum() * pixel_area < rule.min_area_m2:
            continue
        out |= region
        holes, m = ndimage.label(~region)
        for j in range(1, m + 1):
            hole = holes == j
            inside = not (hole[0].any() or hole[-1].any() or hole[:, 0].any() or hole[:, -1].any())
            if inside and hole.sum() * pixel_area < rule.min_area_m2:
                out |= hole
    return out


def assert_consistent(mask, frame, stats) -> None:
    """Mask, statistics and polygons tell the same change."""
    assert stats["changed_pixels"] == int((mask == 1).sum())
    assert stats["changed_area_m2"] == pytest.approx(25.0 * stats["changed_pixels"])
    assert frame["area_m2"].sum() == pytest.approx(stats["changed_area_m2"], abs=0.01)
    np.testing.assert_allclose(frame.geometry.area, frame["area_m2"])  # outlines cover their pixels exactly
    burned = np.zeros(mask.shape, np.uint8)
    if len(frame):
        burned = rasterio.features.rasterize(frame.geometry, out_shape=mask.shape, transform=T5)
    assert np.array_equal(burned == 1, mask == 1)


def test_default_mmu_is_nine_pixels_and_at_least_ten_square_metres():
    assert (MMU_PIXELS, MMU_M2) == (9, 10.0)
    assert default_min_area_m2(25.0) == 225.0 and default_min_area_m2(0.25) == 10.0


def test_a_speck_is_neither_polygon_nor_mask_with_the_default_mmu(tmp_path):
    prob = np.zeros((12, 12))
    prob[2, 2] = 0.9                  # a one-pixel speck
    prob[6:9, 6:9] = 0.8              # a 3 x 3 region: 225 m²
    mask, frame, stats = run(tmp_path / "mmu", prob, RegionRule(0.5, 0.5, MMU))
    assert mask[2, 2] == 0 and (mask[6:9, 6:9] == 1).all() and (mask == 1).sum() == 9
    assert frame["area_m2"].tolist() == [225.0]
    assert (stats["regions_dropped"], stats["holes_filled"]) == (1, 0)
    assert_consistent(mask, frame, stats)
    # --min-area 0: the speck is change, a polygon of exactly one pixel
    mask, frame, stats = run(tmp_path / "none", prob, RegionRule(0.5, 0.5, 0.0))
    assert mask[2, 2] == 1 and sorted(frame["area_m2"]) == [25.0, 225.0] and stats["regions_dropped"] == 0
    assert_consistent(mask, frame, stats)


def test_a_region_below_the_mmu_across_two_strips_is_dropped(tmp_path):
    prob = np.zeros((10, 8))
    prob[2:5, 1] = 0.9                # 3 px, rows 2..4: across the border of strips 0..3 / 4..7
    prob[2:6, 5] = 0.9                # 4 px across the same border: exactly the MMU, kept
    mask, frame, stats = run(tmp_path, prob, RegionRule(0.5, 0.5, MMU), heights=(4,))
    assert (mask[:, 1] == 0).all() and (mask[2:6, 5] == 1).all()
    assert frame["area_m2"].tolist() == [100.0] and stats["regions_dropped"] == 1
    assert_consistent(mask, frame, stats)


def test_hysteresis_keeps_a_weak_region_with_a_strong_core_and_drops_a_weak_one(tmp_path):
    prob = np.zeros((12, 14))
    prob[1:7, 1:6] = 0.4              # weak region ...
    prob[3, 3] = 0.9                  # ... with a strong core: kept whole
    prob[1:7, 8:13] = 0.4             # weak only: dropped
    rule = RegionRule(0.3, 0.5, 0.0)
    mask, frame, stats = run(tmp_path / "h", prob, rule, heights=(2, 3))
    assert (mask[1:7, 1:6] == 1).all() and (mask[1:7, 8:13] == 0).all()
    assert frame["area_m2"].tolist() == [30 * 25.0] and frame["max_prob"].tolist() == [pytest.approx(0.9)]
    assert stats["regions_dropped"] == 1
    assert_consistent(mask, frame, stats)
    # low == high: no hysteresis, only the core is change
    mask, frame, _ = run(tmp_path / "off", prob, RegionRule(0.5, 0.5, 0.0))
    assert (mask == 1).sum() == 1


def test_hysteresis_equals_skimage_on_a_random_field(tmp_path):
    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.uniform(size=(60, 50)), 2)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    low, high = 0.55, 0.7
    prob = np.where(np.isin(prob, [low, high]), prob + 1e-6, prob)  # skimage compares strictly
    mask, frame, stats = run(tmp_path, prob, RegionRule(low, high, 0.0), heights=(7, 3))
    expected = apply_hysteresis_threshold(prob, low, high)
    assert expected.any() and (prob >= low).sum() > expected.sum()  # some weak regions dropped
    assert np.array_equal(mask == 1, expected)
    assert_consistent(mask, frame, stats)


def test_a_small_hole_is_filled_a_big_one_kept(tmp_path):
    prob = np.zeros((14, 22))
    prob[1:6, 1:6] = 0.9
    prob[3, 3] = 0.1                  # a 1-pixel hole: filled
    prob[1:8, 9:16] = 0.9
    prob[3:6, 11:14] = 0.1            # a 3 x 3 hole (225 m² >= MMU): kept
    mask, frame, stats = run(tmp_path, prob, RegionRule(0.5, 0.5, MMU), heights=(2,))
    assert mask[3, 3] == 1 and (mask[3:6, 11:14] == 0).all()
    frame = frame.sort_values("area_m2").reset_index(drop=True)
    assert frame["area_m2"].tolist() == [25 * 25.0, 40 * 25.0]
    assert shapely.get_num_interior_rings(shapely.get_parts(frame.geometry.values)).tolist() == [0, 1]
    assert (stats["holes_filled"], stats["regions_dropped"]) == (1, 0)
    assert_consistent(mask, frame, stats)


def test_an_island_dropped_inside_a_filled_hole_ends_up_filled(tmp_path):
    prob = np.zeros((11, 11))
    prob[1:10, 1:10] = 0.9            # a ring 2 px thick: 56 px, 1400 m²
    prob[3:8, 3:8] = 0.1              # a 5 x 5 hole (625 m² < 650) ...
    prob[5, 5] = 0.9                  # ... with a 1-pixel island in it (dropped)
    mask, frame, stats = run(tmp_path, prob, RegionRule(0.5, 0.5, 650.0), heights=(3,))
    assert (mask[1:10, 1:10] == 1).all() and (mask == 1).sum() == 81
    assert frame["area_m2"].tolist() == [81 * 25.0]
    assert (stats["holes_filled"], stats["regions_dropped"]) == (1, 1)
    assert_consistent(mask, frame, stats)


@pytest.mark.parametrize("seed", [0, 1])
def test_mask_polygons_and_stats_equal_the_whole_array_decision(tmp_path, seed):
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.uniform(size=(80, 64)), 1.2)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    rule = RegionRule(0.55, 0.62, 150.0)
    mask, frame, stats = run(tmp_path, prob, rule, heights=(5, 1, 9, 2))
    expected = reference(prob, rule)
    assert stats["regions_dropped"] > 3 and stats["holes_filled"] > 0
    assert np.array_equal(mask == 1, expected)
    assert_consistent(mask, frame, stats)
    assert len(frame) == ndimage.label(expected)[1]  # one polygon per kept region


def test_nodata_stays_nodata(tmp_path):
    prob = np.full((8, 8), 0.9)
    valid = np.ones(prob.shape, bool)
    valid[:, 4:] = False
    prob[3, 1] = 0.1                  # an enclosed hole: filled
    prob[5, 3] = 0.1                  # unchanged next to nodata: not enclosed by the region, stays
    mask, frame, stats = run(tmp_path, prob, RegionRule(0.5, 0.5, MMU), valid=valid)
    assert (mask[:, 4:] == 255).all() and mask[3, 1] == 1 and mask[5, 3] == 0
    assert_consistent(mask, frame, stats)


def test_polygons_are_exact_pixel_outlines(tmp_path):
    prob = np.zeros((8, 8))
    prob[2:5, 2] = prob[4, 2:6] = 0.9   # an L of 6 pixels
    _, frame, _ = run(tmp_path, prob, RegionRule(0.5, 0.5, 0.0))
    expected = shapely.union_all([shapely.box(*(T5 @ (c, r + 1)), *(T5 @ (c + 1, r)))
                                  for r, c in zip(*np.nonzero(prob))])
    assert frame.geometry[0].equals(expected) and frame["perim_m"].tolist() == [14 * 5.0]
