"""Measurements in metres whatever the CRS: planar in projected CRSs, geodesic in geographic ones."""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from affine import Affine


def areas_perimeters_m(geoms: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m) of each geometry in ``crs``."""
    crs = pyproj.CRS.from_user_input(crs)
    if crs.is_geographic:
        geod = crs.get_geod()
        out = np.array([geod.geometry_area_perimeter(g) if not g.is_empty else (0.0, 0.0) for g in geoms])
        return np.abs(out[:, 0]), out[:, 1]
    factor = _metres_per_unit(crs)
    return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor


def pixel_areas_m2(transform: Affine, crs, row_off: int, n_rows: int) -> np.ndarray:
    """Area (m²) of one pixel in each of ``n_rows`` grid rows from ``row_off`` (varies by row only in
    geographic CRSs)."""
    crs = pyproj.CRS.from_user_input(crs)
    if not crs.is_geographic:
        return np.full(n_rows, abs(transform.a * transform.e - transform.b * transform.d)
                       * _metres_per_unit(crs) ** 2)
    geod = crs.get_geod()
    rows = np.arange(row_off, row_off + n_rows)
    x0, _ = transform @ (0, 0)
    x1, _ = transform @ (1, 0)
    top = np.array([(transform @ (0, r))[1] for r in rows])
    bottom = np.array([(transform @ (0, r + 1))[1] for r in rows])
    return np.array([abs(geod.polygon_area_perimeter([x0, x1, x1, x0], [t, t, b, b])[0])
                     for t, b in zip(top, bottom)])


def _metres_per_unit(crs: pyproj.CRS) -> float:
    try:
        return float(crs.axis_info[0].unit_conversion_factor)
    except (IndexError, AttributeError):
        return 1.0


def repair(geoms: np.ndarray) -> np.ndarray:
    """Make geometries valid, keeping every covered area (GEOS's "structure" method when available)."""
    from shapely.errors import UnsupportedGEOSVersionError

    try:
        return shapely.make_valid(geoms, method="structure", keep_collapsed=False)
    except (TypeError, ValueError, UnsupportedGEOSVersionError):  # shapely < 2.1, GEOS < 3.10
        return shapely.make_valid(geoms)


def polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    """The polygonal part of a (repaired) geometry, or None when it has none (stray lines, points)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    return shapely.union_all(parts) if parts else None
