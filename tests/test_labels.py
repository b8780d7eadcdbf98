"""Labels and truth from files: raster-or-vector detection, polygons burnt window by window."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.io.align import Grid
from geochange.io.labels import VectorMask, open_raster_or_vector, vector_layers, window_bounds
from tests.conftest import UTM, write_tif

T = rasterio.Affine(10.0, 0, 500_000, 0, -10.0, 4_100_000)
GRID = Grid(UTM, T, 40, 30)


def test_raster_or_vector(tmp_path):
    write_tif(tmp_path / "r.tif", np.ones((1, 4, 4), np.uint8), UTM, T)
    gpd.GeoDataFrame(geometry=[shapely.box(500_000, 4_099_800, 500_100, 4_099_900)], crs=UTM).to_file(tmp_path / "v.gpkg")
    ds = open_raster_or_vector(str(tmp_path / "r.tif"))
    assert ds is not None and ds.count == 1
    ds.close()
    assert open_raster_or_vector(str(tmp_path / "v.gpkg")) is None
    assert vector_layers(str(tmp_path / "v.gpkg")) == ["v"] and vector_layers(str(tmp_path / "r.tif")) == []
    with pytest.raises(GeochangeError, match="no such file"):
        open_raster_or_vector(str(tmp_path / "missing.tif"))


def test_polygons_in_another_crs_burn_onto_the_grid_window_by_window(tmp_path):
    box = shapely.box(500_050, 4_099_850, 500_150, 4_099_950)  # columns 5..14, rows 5..14
    gpd.GeoDataFrame(geometry=[box], crs=UTM).to_crs(4326).to_file(tmp_path / "v.geojson")
    mask = VectorMask(str(tmp_path / "v.geojson"), None, GRID)
    whole = mask.read(Window(0, 0, 40, 30))
    assert whole.sum() == pytest.approx(100, abs=12)  # a reprojected square's edges may shift by a pixel
    assert whole[10, 10] == 1 and whole[0, 0] == 0
    tiles = np.zeros_like(whole)
    for r in range(0, 30, 7):
        for c in range(0, 40, 9):
            w = Window(c, r, min(9, 40 - c), min(7, 30 - r))
            tiles[r:r + w.height, c:c + w.width] = mask.read(w)
    assert np.array_equal(tiles, whole)


def test_empty_and_far_layers(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=UTM).to_file(tmp_path / "far.gpkg")
    with pytest.raises(GeochangeError, match="do not overlap"):
        VectorMask(str(tmp_path / "far.gpkg"), None, GRID)
    gpd.GeoDataFrame(geometry=[], crs=UTM).to_file(tmp_path / "empty.gpkg")
    with pytest.raises(GeochangeError, match="holds no features"):
        VectorMask(str(tmp_path / "empty.gpkg"), None, GRID)
    assert VectorMask(str(tmp_path / "empty.gpkg"), None, GRID, allow_empty=True).read(Window(0, 0, 5, 5)).sum() == 0


def test_window_bounds():
    assert window_bounds(Window(2, 3, 4, 5), T) == (500_020.0, 4_099_920.0, 500_060.0, 4_099_970.0)


def test_a_styled_geopackage_is_one_data_layer(tmp_path):
    """QGIS's layer_styles table (geochange writes one too) is not a layer to choose between."""
    from geochange.io.vectors import _add_gpkg_style

    path = tmp_path / "styled.gpkg"
    box = shapely.box(500_050, 4_099_850, 500_150, 4_099_950)
    gpd.GeoDataFrame(geometry=[box], crs=UTM).to_file(path, layer="changes")
    _add_gpkg_style(path, "changes", "<qgis/>")
    assert set(vector_layers(str(path))) == {"changes", "layer_styles"}
    assert vector_layers(str(path), spatial_only=True) == ["changes"]
    assert VectorMask(str(path), None, GRID).read(Window(0, 0, 40, 30)).sum() == 100
    gpd.GeoDataFrame(geometry=[box], crs=UTM).to_file(path, layer="other")
    with pytest.raises(GeochangeError, match=r"holds 2 layers \(changes, other\)"):
        VectorMask(str(path), None, GRID)
