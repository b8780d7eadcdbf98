"""Change labels and ground truth from files: a raster, or polygons burnt onto a grid window by window.

The layer is read once, reprojected onto the grid's CRS, repaired (one part at a time, so that
overlapping parts of a multipolygon add up rather than cut each other out), indexed in an STRtree,
and each window rasterises only the polygons it touches. Used by ``tile`` (labels) and ``evaluate``
(truth).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from geochange.errors import GeochangeError
from geochange.geometry import polygonal_part, repair
from geochange.io.align import Grid, first_line


def open_raster_or_vector(path: str) -> rasterio.io.DatasetReader | None:
    """The raster dataset at ``path``, or None when ``path`` only opens as a vector layer."""
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise GeochangeError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        if vector_layers(path):
            return None
        raise GeochangeError(f"{path}: not a raster or vector file GDAL can read ({first_line(exc)})") from None
    if ds.count == 0:
        ds.close()
        if vector_layers(path):
            return None
        raise GeochangeError(f"{path}: the file holds no raster bands and no vector layers")
    return ds


def vector_layers(path: str, spatial_only: bool = False) -> list[str]:
    """Layer names of an OGR-readable vector source, or [] when ``path`` is not one; ``spatial_only``:
    only layers with geometries (not a GeoPackage's ``layer_styles`` or other attribute tables)."""
    import pyogrio

    try:
        layers = pyogrio.list_layers(path)
    except Exception:  # pyogrio's DataSourceError and friends: not a vector source
        return []
    return [str(name) for name, geom in layers
            if not spatial_only or (geom is not None and str(name) not in NON_DATA_LAYERS)]


#: tables a GIS keeps beside the data (QGIS writes its styles into a GeoPackage's layer_styles)
NON_DATA_LAYERS = ("layer_styles",)


def window_bounds(window: Window, transform: Affine) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a pixel window under ``transform`` (any rotation)."""
    h, w = int(window.height), int(window.width)
    t = transform @ Affine.translation(window.col_off, window.row_off)
    corners = np.array([t @ xy for xy in ((0, 0), (w, 0), (0, h), (w, h))])
    (minx, miny), (maxx, maxy) = corners.min(axis=0), corners.max(axis=0)
    return float(minx), float(miny), float(maxx), float(maxy)


class VectorMask:
    """Burn the polygons of ``path`` (layer ``layer``) onto ``grid``: 1 inside, 0 outside.

    ``what`` names the layer in messages ("truth", "label"); ``layer_hint`` tells how to choose a
    layer when the file holds several; ``allow_empty`` accepts a layer without polygons (all 0).
    """

    def __init__(self, path: str, layer: str | None, grid: Grid, *, what: str = "truth",
                 layer_hint: str = "name the layer to use", allow_empty: bool = False) -> None:
        import geopandas as gpd

        layers = vector_layers(path)
        if not layers:
            raise GeochangeError(f"{path}: not a vector file OGR can read")
        data = vector_layers(path, spatial_only=True)
        if layer is None and len(data) > 1:
            raise GeochangeError(f"{path}: holds {len(data)} layers ({', '.join(data)}): {layer_hint}")
        if layer is None and len(data) == 1:
            layer = data[0]
        if layer is not None and layer not in layers:
            raise GeochangeError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
        try:
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
        except Exception as exc:
            raise GeochangeError(f"{path}: cannot read the vector layer ({first_line(exc)})") from None
        if len(gdf) == 0 and not allow_empty:
            raise GeochangeError(f"{path}: the {what} layer holds no features")
        if len(gdf) and gdf.crs is None:
            raise GeochangeError(f"{path}: the vector has no CRS (assign one first, e.g. ogr2ogr -a_srs EPSG:XXXX)")
        geoms = np.asarray(gdf.geometry.to_crs(grid.crs), dtype=object) if len(gdf) else np.array([], object)
        geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
        geoms = repair(shapely.get_parts(geoms))
        self.geoms = np.array([g for g in (polygonal_part(g) for g in geoms) if g is not None], dtype=object)
        if len(self.geoms) == 0 and not allow_empty:
            raise GeochangeError(f"{path}: no polygon in the {what} layer (change {what} must be polygons)")
        if len(self.geoms):
            xmin, ymin, xmax, ymax = shapely.total_bounds(self.geoms)
            gb = grid.bounds
            if not (xmin < gb[2] and gb[0] < xmax and ymin < gb[3] and gb[1] < ymax):
                raise GeochangeError(f"{path}: the {what} polygons do not overlap the rasters "
                                     "(check their CRSs and extents)")
        self.tree = shapely.STRtree(self.geoms)
        self.grid = grid

    def close(self) -> None:
        """Nothing to close: the layer was read whole (vectors are small next to rasters)."""

    def read(self, window: Window) -> np.ndarray:
        """uint8 (h, w): 1 where a pixel's centre lies in a polygon, else 0."""
        h, w = int(window.height), int(window.width)
        hits = self.tree.query(shapely.box(*window_bounds(window, self.grid.transform)))
        if len(hits) == 0:
            return np.zeros((h, w), np.uint8)
        transform = self.grid.transform @ Affine.translation(window.col_off, window.row_off)
        return rasterio.features.rasterize(((g, 1) for g in self.geoms[hits]), out_shape=(h, w),
                                           transform=transform, fill=0, dtype="uint8")
