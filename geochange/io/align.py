"""Bring a raster onto another raster's grid on the fly (GDAL's warper through rasterio's WarpedVRT)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geochange.errors import GeochangeError


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size. Outputs are written on the BEFORE image's grid."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, ds: rasterio.io.DatasetReaderBase) -> "Grid":
        return cls(ds.crs, ds.transform, ds.width, ds.height)

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[::1]

    def window_grid(self, window: Window) -> "Grid":
        """The grid of a window of this grid (same CRS, same pixel size, shifted origin)."""
        return Grid(self.crs, rasterio.windows.transform(window, self.transform),
                    int(window.width), int(window.height))

    def translated(self, dy: float, dx: float) -> "Grid":
        """This grid moved by ``dy`` rows and ``dx`` columns (fractions allowed): its pixel ``(r, c)``
        lies where this grid's pixel ``(r + dy, c + dx)`` does."""
        return Grid(self.crs, self.transform @ Affine.translation(dx, dy), self.width, self.height)

    def same_as(self, other: "Grid", tol: float = 1e-6) -> bool:
        return (self.crs == other.crs and self.width == other.width and self.height == other.height
                and self.transform.almost_equals(other.transform, precision=tol * max(self.res)))


def open_raster(path: str) -> rasterio.io.DatasetReader:
    """Open any GDAL-readable path, turning GDAL's complaints into one-line user errors."""
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        import os

        if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
            raise GeochangeError(f"{path}: no such file") from None
        raise GeochangeError(f"{path}: not a raster GDAL can read ({first_line(exc)})") from None
    if ds.count == 0:
        ds.close()
        raise GeochangeError(f"{path}: the file holds no raster bands")
    return ds


def require_crs(ds: rasterio.io.DatasetReaderBase, path: str) -> None:
    """Change detection needs georeferencing: refuse a raster with no CRS or no geotransform."""
    if ds.crs is None:
        raise GeochangeError(f"{path}: the raster has no CRS (georeference it first, e.g. gdal_edit.py -a_srs EPSG:XXXX)")
    if ds.transform == Affine.identity() and not ds.gcps[0]:
        raise GeochangeError(f"{path}: the raster has no geotransform")


def warp_to_grid(ds: rasterio.io.DatasetReaderBase, grid: Grid,
                 resampling: Resampling = Resampling.bilinear) -> rasterio.io.DatasetReaderBase:
    """Return ``ds`` itself when it already lies on ``grid``, else a WarpedVRT of it onto ``grid``.

    The VRT warps lazily, window by window, so nothing is read whole. Pixels of ``grid`` outside
    ``ds``'s footprint come out masked: through the source's nodata value when it has one, its
    alpha band when it has one, and an added alpha band otherwise.
    """
    if Grid.of(ds).same_as(grid):
        return ds
    has_alpha = any(ci == rasterio.enums.ColorInterp.alpha for ci in ds.colorinterp)
    # warp_mem_limit 1 (MB): with GDAL's default, GDAL 3.10 returned pixels off by up to 84 DN for some
    # windows read after others (a read of the whole VRT after smaller ones, tests/test_pair.py); with
    # small warp chunks every read equals rasterio.warp.reproject's, at the same speed (measured)
    kwargs = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                  resampling=resampling, warp_mem_limit=1)
    if ds.nodata is None and not has_alpha:
        kwargs["add_alpha"] = True
    return WarpedVRT(ds, **kwargs)


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def unreadable(path: str, exc: BaseException) -> GeochangeError:
    """A read that failed half-way through a raster (a truncated or corrupt file) as one line naming it.

    rasterio's own message ("Read failed. See previous exception") names nothing: GDAL's, further
    down the chain of causes, says which block of which file.
    """
    detail = ""
    while exc is not None:
        text = first_line(exc)
        if text and not text.startswith("Read failed"):
            detail = text
            break
        exc = exc.__cause__ or exc.__context__
    return GeochangeError(f"{path}: cannot read its pixels, the file is truncated or corrupt"
                          + (f" ({detail})" if detail else ""))


def read_valid_mask(ds: rasterio.io.DatasetReaderBase, window: Window, bands: list[int]) -> np.ndarray:
    """Boolean mask of pixels that hold data in every band of ``bands`` (nodata and alpha respected)."""
    masks = ds.read_masks(bands, window=window)
    return np.all(masks > 0, axis=0)
