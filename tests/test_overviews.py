"""Overviews built from the rows as they stream: the same levels and values as GDAL's AVERAGE, one pass."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geochange.io.align import Grid
from geochange.io.overviews import OverviewBuilder, halve, level_sizes
from geochange.io.rasters import RasterWriter
from tests.test_rasters import float_data, visible, write_in_strips

GRID = Grid(CRS.from_epsg(32633), Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0), width=1201, height=1103)
EVEN = Grid(GRID.crs, GRID.transform, width=1200, height=1104)


def test_halve_leaves_nodata_out_and_drops_odd_edges():
    rows = np.array([[1, 3, 5],
                     [-1, 7, -1],
                     [2, -1, 9]], np.float32)
    np.testing.assert_allclose(halve(rows, -1.0), [[(1 + 3 + 7) / 3]], rtol=1e-6)
    assert halve(np.full((2, 2), -1, np.float32), -1.0).tolist() == [[-1.0]]


def test_level_sizes_halve_until_one_tile_as_gdal_does():
    # what GDAL 3.10's COG driver builds for these sizes with blocksize 512
    assert level_sizes(1201, 1103, 512) == [(600, 551), (300, 275)]
    assert level_sizes(1025, 3001, 512) == [(512, 1500), (256, 750), (128, 375)]
    assert level_sizes(2049, 1537, 512) == [(1024, 768), (512, 384)]
    assert level_sizes(512, 300, 512) == []


@pytest.mark.parametrize("heights", [(1, 37, 128, 300), (1103,), (2,), (7, 1)])
def test_streamed_levels_equal_the_pyramid_of_the_whole(tmp_path, heights):
    data = float_data(GRID)
    builder = OverviewBuilder(tmp_path / "p.tif", GRID, -1.0)
    row, i = 0, 0
    while row < GRID.height:
        h = min(heights[i % len(heights)], GRID.height - row)
        builder.add(data[row:row + h])
        row, i = row + h, i + 1
    paths = builder.finish()
    expect = data
    assert len(paths) == 2
    for path in paths:
        expect = halve(expect, -1.0)
        with rasterio.open(path) as ds:
            np.testing.assert_array_equal(ds.read(1), expect)
    builder.discard()
    assert list(tmp_path.iterdir()) == []


def test_published_cog_has_the_overviews_gdal_would_build(tmp_path):
    """The COG written from streamed overviews and one whose overviews GDAL built (rows out of order)
    have the same full resolution, the same levels, and overviews equal to float32 rounding (on even
    sizes: on odd ones GDAL spreads the last pixel over the level, shifting its blocks a little)."""
    data = float_data(EVEN)
    (tmp_path / "a").mkdir()
    streamed = RasterWriter(tmp_path / "a" / "p.tif", EVEN, "float32", -1.0)
    write_in_strips(streamed, data)
    streamed.close()
    (tmp_path / "b").mkdir()
    gdal = RasterWriter(tmp_path / "b" / "p.tif", EVEN, "float32", -1.0)
    gdal.write_rows(600, data[600:])            # out of order: no streamed overviews
    gdal.write_rows(0, data[:600])
    gdal.close()
    assert visible(tmp_path / "a") == ["p.tif"] and visible(tmp_path / "b") == ["p.tif"]
    with rasterio.open(tmp_path / "a" / "p.tif") as a, rasterio.open(tmp_path / "b" / "p.tif") as b:
        assert a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        np.testing.assert_array_equal(a.read(1), data)
        for k in range(len(a.overviews(1))):
            ov_a, ov_b = _overview(a, k), _overview(b, k)
            assert ov_a.shape == ov_b.shape
            np.testing.assert_allclose(ov_a, ov_b, atol=1e-6)


def _overview(ds, level: int) -> np.ndarray:
    with rasterio.open(ds.name, overview_level=level) as ov:
        return ov.read(1)
