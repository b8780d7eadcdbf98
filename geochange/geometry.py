"""Measurements in metres whatever the CRS: planar in projected CRSs that keep scale, geodesic otherwise."""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from affine import Affine


def areas_perimeters_m(geoms: np.ndarray, crs, tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m) of each geometry in ``crs``: geodesic in geographic CRSs and in
    projections that distort at the geometries' centre (as :class:`GroundScale` decides), planar otherwise."""
    crs = pyproj.CRS.from_user_input(crs)
    geoms = np.asarray(geoms, dtype=object)
    geographic = crs.is_geographic
    if not geographic and len(geoms):
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        if not (np.isfinite(x0) and _distorts(crs, ((x0 + x1) / 2, (y0 + y1) / 2), tolerance)):
            factor = _metres_per_unit(crs)
            return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor
        to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    if not len(geoms):
        return np.zeros(0), np.zeros(0)
    geod = crs.get_geod()
    out = np.array([geod.geometry_area_perimeter(g) if g is not None and not g.is_empty else (0.0, 0.0)
                    for g in geoms])
    return np.abs(out[:, 0]), out[:, 1]


def pixel_areas_m2(transform: Affine, crs, row_off: int, n_rows: int, width: int = 1,
                   height: int | None = None) -> np.ndarray:
    """Ground area (m²) of one pixel in each of ``n_rows`` grid rows from ``row_off``, on a grid of
    ``width`` x ``height`` pixels (see :class:`GroundScale`)."""
    return GroundScale(transform, crs, width, height or row_off + n_rows).row_areas(row_off, n_rows)


class GroundScale:
    """Areas and lengths on the ground (metres) for a grid, whatever its CRS.

    Planar in projected CRSs whose scale is true at the grid's centre (areal scale within
    ``tolerance`` of 1); geodesic (``pyproj.Geod`` on the CRS's ellipsoid) in geographic CRSs and in
    projections that distort there (e.g. Web Mercator away from the equator). Pixel areas are
    measured per row, on the pixel of the middle column: exact where the distortion varies slowly
    across a row (north-up grids in latitude-dependent projections).
    """

    def __init__(self, transform: Affine, crs, width: int = 1, height: int = 1, tolerance: float = 1e-3) -> None:
        self.transform, self.crs = transform, pyproj.CRS.from_user_input(crs)
        self.width, self.height = width, height
        self.geodesic = self.crs.is_geographic or _distorts(self.crs, transform @ (width / 2, height / 2), tolerance)
        self._to_lonlat = None
        if self.geodesic:
            self.geod = self.crs.get_geod()
            if not self.crs.is_geographic:
                self._to_lonlat = pyproj.Transformer.from_crs(self.crs, self.crs.geodetic_crs, always_xy=True)
        self._cache: tuple[int, int, np.ndarray] | None = None

    def row_areas(self, row_off: int, n_rows: int) -> np.ndarray:
        """Ground area (m²) of one pixel in each of ``n_rows`` rows from ``row_off``."""
        if self._cache is not None and self._cache[:2] == (row_off, n_rows):
            return self._cache[2]
        t = self.transform
        if not self.geodesic:
            areas = np.full(n_rows, abs(t.a * t.e - t.b * t.d) * _metres_per_unit(self.crs) ** 2)
        else:
            c = self.width // 2
            rows = np.arange(row_off, row_off + n_rows, dtype=np.float64)
            corners = [(c, rows), (c + 1, rows), (c + 1, rows + 1), (c, rows + 1)]
            xs = np.stack([t.a * cx + t.b * cy + t.c for cx, cy in corners], axis=1)
            ys = np.stack([t.d * cx + t.e * cy + t.f for cx, cy in corners], axis=1)
            if self._to_lonlat is not None:
                xs, ys = self._to_lonlat.transform(xs, ys)
            areas = np.array([abs(self.geod.polygon_area_perimeter(x, y)[0]) for x, y in zip(xs, ys)])
        self._cache = (row_off, n_rows, areas)
        return areas

    def pixel_area(self) -> float:
        """Ground area (m²) of the pixel at the grid's centre."""
        return float(self.row_areas(self.height // 2, 1)[0])

    def pixel_size_m(self) -> tuple[float, float]:
        """Ground width and height (m) of the pixel at the grid's centre."""
        t, c, r = self.transform, self.width // 2, self.height // 2
        if not self.geodesic:
            unit = _metres_per_unit(self.crs)
            return float(np.hypot(t.a, t.d) * unit), float(np.hypot(t.b, t.e) * unit)
        xs, ys = zip(*(t @ p for p in ((c, r), (c + 1, r), (c, r + 1))))
        if self._to_lonlat is not None:
            xs, ys = self._to_lonlat.transform(xs, ys)
        width = self.geod.inv(xs[0], ys[0], xs[1], ys[1])[2]
        height = self.geod.inv(xs[0], ys[0], xs[2], ys[2])[2]
        return float(width), float(height)

    def areas_px(self, geoms: np.ndarray) -> np.ndarray:
        """Ground area (m²) of polygons in grid pixel coordinates: their area in each row times the row's
        pixel area."""
        geoms = np.asarray(geoms, dtype=object)
        if not self.geodesic:
            return shapely.area(geoms) * self.row_areas(0, 1)[0]
        out = np.zeros(len(geoms))
        for i, (g, (_, y0, _, y1)) in enumerate(zip(geoms, shapely.bounds(geoms))):
            if g is None or g.is_empty:
                continue
            ys = np.arange(int(np.floor(y0)), int(np.ceil(y1)))
            per_row = shapely.area(shapely.intersection(g, shapely.box(-1e12, ys, 1e12, ys + 1)))
            out[i] = per_row @ self.row_areas(int(ys[0]), len(ys))
        return out

    def perimeters(self, geoms: np.ndarray) -> np.ndarray:
        """Ground length (m) of every ring of each geometry (in the grid's CRS), holes included."""
        geoms = np.asarray(geoms, dtype=object)
        if not self.geodesic:
            return shapely.length(geoms) * _metres_per_unit(self.crs)
        rings, index = shapely.get_rings(geoms, return_index=True)
        if self._to_lonlat is not None:
            rings = shapely.transform(rings, lambda xy: np.column_stack(self._to_lonlat.transform(xy[:, 0], xy[:, 1])))
        lengths = np.array([self.geod.geometry_length(r) for r in rings])
        return np.bincount(index, weights=lengths, minlength=len(geoms)) if len(rings) else np.zeros(len(geoms))


def _distorts(crs: pyproj.CRS, centre: tuple[float, float], tolerance: float) -> bool:
    """Whether a projected CRS's areal scale at ``centre`` is off 1 by more than ``tolerance``."""
    try:
        lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(*centre)
        scale = pyproj.Proj(crs).get_factors(lon, lat).areal_scale
    except (pyproj.exceptions.CRSError, pyproj.exceptions.ProjError, AttributeError, TypeError):
        return False  # a local or engineering CRS: planar
    return bool(np.isfinite(scale)) and abs(scale - 1) > tolerance


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
