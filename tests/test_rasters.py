"""RasterWriter: strips in, a Cloud-Optimized GeoTIFF out, published atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Compression

from geochange.io.align import Grid
from geochange.io.atomic import temp_path
from geochange.io.rasters import RasterWriter

GRID = Grid(CRS.from_epsg(32633), Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0), width=1200, height=900)


def write_in_strips(writer: RasterWriter, data: np.ndarray, heights=(1, 37, 128, 300)) -> None:
    row, i = 0, 0
    while row < data.shape[0]:
        h = min(heights[i % len(heights)], data.shape[0] - row)
        writer.write_rows(row, data[row:row + h])
        row += h
        i += 1


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def float_data(grid: Grid = GRID) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (grid.height, grid.width)).astype(np.float32)
    data[:50, :] = -1.0        # nodata rows
    data[:, 1100:] = -1.0
    return data


def test_close_publishes_a_cog_with_overviews(tmp_path):
    data = float_data()
    path = tmp_path / "change_probability.tif"
    w = RasterWriter(path, GRID, "float32", -1.0, "average", "change probability")
    write_in_strips(w, data)
    assert visible(tmp_path) == []          # nothing under a final name while writing
    assert w.close() == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["change_probability.tif"]   # no temporaries left
    with rasterio.open(path) as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.compression == Compression.deflate
        assert ds.profile["tiled"]
        assert ds.block_shapes == [(512, 512)]
        assert ds.overviews(1) == [2, 4]
        assert ds.count == 1 and ds.dtypes == ("float32",)
        assert (ds.width, ds.height) == (GRID.width, GRID.height)
        assert ds.crs == GRID.crs
        assert ds.transform.almost_equals(GRID.transform)
        assert ds.nodata == -1.0
        assert ds.descriptions == ("change probability",)
        np.testing.assert_array_equal(ds.read(1), data)
        # the masked (nodata) area is respected
        assert not ds.read_masks(1)[:50].any() and ds.read_masks(1)[50:, :1100].all()
        # overview: averages of the valid values, nodata where the data is nodata
        ov = ds.read(1, out_shape=(225, 300))
        assert (ov[:12] == -1).all()
        assert ((ov[13:, :274] >= 0) & (ov[13:, :274] <= 1)).all()


def test_mask_raster_round_trip_and_nearest_overviews(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.uniform(size=(GRID.height, GRID.width)) > 0.7).astype(np.uint8)
    data[-100:] = 255
    path = tmp_path / "change_mask.tif"
    w = RasterWriter(path, GRID, "uint8", 255, "nearest")
    write_in_strips(w, data, heights=(64,))
    w.close()
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.dtypes == ("uint8",) and ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), data)
        assert ds.overviews(1)
        ov = ds.read(1, out_shape=(450, 600))
        assert set(np.unique(ov).tolist()) <= {0, 1, 255}   # nearest: no averaged classes


def test_small_raster_is_still_a_cog(tmp_path):
    grid = Grid(CRS.from_epsg(4326), Affine(0.001, 0.0, 10.0, 0.0, -0.001, 50.0), width=70, height=40)
    data = np.arange(70 * 40, dtype=np.float32).reshape(40, 70) / 2800
    path = tmp_path / "p.tif"
    w = RasterWriter(path, grid, "float32", -1.0)
    write_in_strips(w, data, heights=(3,))
    w.close()
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.crs == grid.crs
        assert ds.transform.almost_equals(grid.transform)
        np.testing.assert_array_equal(ds.read(1), data)


def test_abort_leaves_nothing(tmp_path):
    w = RasterWriter(tmp_path / "change_probability.tif", GRID, "float32", -1.0)
    write_in_strips(w, float_data()[:400], heights=(100,))
    names = sorted(p.name for p in tmp_path.iterdir())     # only temporaries: the rows and their overviews
    assert temp_path(tmp_path / "change_probability.tif", ".tif").name in names
    assert all(n.startswith(".change_probability.tif") for n in names), names
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_abort_keeps_and_close_replaces_an_existing_file(tmp_path):
    path = tmp_path / "change_mask.tif"
    path.write_bytes(b"earlier output")
    w = RasterWriter(path, GRID, "uint8", 255, "nearest")
    write_in_strips(w, np.ones((GRID.height, GRID.width), np.uint8))
    assert path.read_bytes() == b"earlier output"     # untouched while writing
    w.abort()
    assert path.read_bytes() == b"earlier output"     # and by abort
    assert [p.name for p in tmp_path.iterdir()] == ["change_mask.tif"]

    w = RasterWriter(path, GRID, "uint8", 255, "nearest")
    write_in_strips(w, np.zeros((GRID.height, GRID.width), np.uint8))
    assert path.read_bytes() == b"earlier output"
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["change_mask.tif"]
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (ds.read(1) == 0).all()


def test_failed_close_leaves_no_temporaries(tmp_path):
    """If publishing fails (here: the final name is a folder), the temporaries are still removed."""
    path = tmp_path / "out.tif"
    path.mkdir()
    (path / "keep").write_text("x")
    w = RasterWriter(path, GRID, "uint8", 255, "nearest")
    write_in_strips(w, np.zeros((GRID.height, GRID.width), np.uint8))
    with pytest.raises(OSError):
        w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    assert (path / "keep").read_text() == "x"
