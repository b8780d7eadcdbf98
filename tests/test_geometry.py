"""Ground measures: planar where the projection keeps scale, geodesic where it does not."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS

from geochange.geometry import GroundScale

MERC = CRS.from_epsg(3857)
UTM33 = CRS.from_epsg(32633)
GEOD = pyproj.Geod(ellps="WGS84")
TO_LONLAT = pyproj.Transformer.from_crs(MERC, "EPSG:4326", always_xy=True)


def mercator_grid_at(lat: float, res: float = 5.0) -> Affine:
    x, y = pyproj.Transformer.from_crs("EPSG:4326", MERC, always_xy=True).transform(10.0, lat)
    return Affine(res, 0.0, x, 0.0, -res, y)


def ground_area(xs, ys) -> float:
    """Geodesic area of a polygon given by Web Mercator corners (the truth, computed independently)."""
    lon, lat = TO_LONLAT.transform(np.asarray(xs, float), np.asarray(ys, float))
    return abs(GEOD.polygon_area_perimeter(lon, lat)[0])


def test_web_mercator_at_60n_is_geodesic_per_row():
    t = mercator_grid_at(60.0)
    scale = GroundScale(t, MERC, 40, 30)
    assert scale.geodesic
    areas = scale.row_areas(0, 30)
    for r in (0, 29):
        (x0, y0), (x1, y1) = t @ (20, r), t @ (21, r + 1)
        assert areas[r] == pytest.approx(ground_area([x0, x1, x1, x0], [y0, y0, y1, y1]), rel=1e-9)
    assert areas[0] == pytest.approx(25.0 / 4, rel=0.01)   # planar area / sec²(60°)
    assert (np.diff(areas) > 0).all()                      # larger toward the equator
    # polygons in pixel coordinates: the sum of their rows
    ring = shapely.difference(shapely.box(2, 3, 12, 25), shapely.box(5, 6, 8, 9))
    per_row = np.full(22, 10.0)
    per_row[3:6] -= 3
    assert scale.areas_px([ring])[0] == pytest.approx(per_row @ areas[3:25], rel=1e-12)
    # a pixel's perimeter: four ground sides of ~2.5 m
    (x0, y0), (x1, y1) = t @ (0, 0), t @ (1, 1)
    perim = scale.perimeters(np.array([shapely.box(x0, y1, x1, y0)]))[0]
    lon, lat = TO_LONLAT.transform([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
    assert perim == pytest.approx(GEOD.line_length(lon, lat), rel=1e-9)
    assert perim == pytest.approx(10.0, rel=0.01)


def test_web_mercator_at_the_equator_and_utm_near_its_meridian_are_planar():
    assert not GroundScale(mercator_grid_at(0.0), MERC, 100, 100).geodesic
    t = Affine(10.0, 0.0, 480_000.0, 0.0, -10.0, 5_000_000.0)
    scale = GroundScale(t, UTM33, 100, 100)
    assert not scale.geodesic
    np.testing.assert_array_equal(scale.row_areas(0, 3), np.full(3, 100.0))
    ring = shapely.difference(shapely.box(0, 0, 10, 10), shapely.box(2, 2, 4, 4))  # pixel coordinates
    assert scale.areas_px([ring])[0] == 9600.0
    in_metres = shapely.affinity.scale(ring, 10, 10, origin=(0, 0))
    assert scale.perimeters(np.array([in_metres]))[0] == 400.0 + 80.0   # holes count


def test_utm_far_outside_its_zone_is_geodesic():
    t = Affine(10.0, 0.0, -300_000.0, 0.0, -10.0, 5_000_000.0)  # ~800 km west of the meridian
    scale = GroundScale(t, UTM33, 10, 10)
    assert scale.geodesic
    assert scale.row_areas(0, 1)[0] < 100.0 * 0.99


def test_areas_of_geometries_in_web_mercator_at_60n_are_geodesic():
    """Footprint areas (data/footprints.py) follow the same rule as the grids: geodesic where the CRS distorts."""
    import pyproj
    import shapely

    from geochange.geometry import areas_perimeters_m

    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.0, 60.0)
    square = shapely.box(x, y, x + 20.0, y + 20.0)        # 20 x 20 Mercator metres: about 10 x 10 on the ground
    to_lonlat = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    truth = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(
        shapely.transform(square, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1]))))[0])
    area, perim = areas_perimeters_m(np.array([square], dtype=object), "EPSG:3857")
    assert area[0] == pytest.approx(truth, rel=1e-3) and area[0] == pytest.approx(100.0, rel=0.02)
    assert perim[0] == pytest.approx(40.0, rel=0.02)
    utm = shapely.box(500_000, 5_000_000, 500_010, 5_000_010)
    assert areas_perimeters_m(np.array([utm], dtype=object), "EPSG:32633")[0][0] == pytest.approx(100.0)
