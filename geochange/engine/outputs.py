"""The outputs of ``detect`` for a grid, or for one block's rows of it: the sinks the engine feeds.

A whole run writes the change rasters as COGs and the polygons as GeoPackage + Shapefile into the
output folder. A block (distributed run) writes the same rasters for its own rows as plain GeoTIFFs
and its finished polygons as a GeoPackage into its work folder, and keeps the regions that touch
its first or last row for the assembly (``engine.blocks``).

The mask and type rasters are written as candidates (``prob >= low``) as the strips come; on close the
region decisions (``engine.regions``) are burned into their temporary GeoTIFFs (``engine.fixups``)
before they are published, and the statistics are corrected to match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geochange.engine.fixups import MaskFixups
from geochange.engine.regions import RegionRule
from geochange.engine.sinks import MASK_NODATA, PROB_NODATA, PolygonSink, RasterSink, StatsSink
from geochange.geometry import GroundScale
from geochange.io.align import Grid
from geochange.io.atomic import temp_path
from geochange.io.quicklook import QuicklookCanvas
from geochange.io.rasters import RasterWriter
from geochange.io.vectors import VectorWriter


@dataclass(frozen=True)
class RasterSpec:
    name: str
    dtype: str
    nodata: float | int
    overview_resampling: str
    description: str


def raster_specs(n_types: int) -> list[RasterSpec]:
    """The change rasters of a run: probability and mask, and the type map for typed models."""
    specs = [RasterSpec("change_probability.tif", "float32", PROB_NODATA, "average", "change probability"),
             RasterSpec("change_mask.tif", "uint8", MASK_NODATA, "nearest", "change mask (1 changed, 0 unchanged)")]
    if n_types:
        specs.append(RasterSpec("change_type.tif", "uint8", MASK_NODATA, "nearest",
                                f"change type (1..{n_types}; 0 unchanged)"))
    return specs


def rows_writers(folder: Path, grid: Grid, specs: list[RasterSpec], rows: tuple[int, int] | None = None,
                 cog: bool = True) -> list[RasterWriter]:
    """One writer per raster, for the whole grid or (``rows``) a band of its rows."""
    y0, y1 = rows or (0, grid.height)
    band = grid if rows is None else grid.window_grid(Window(0, y0, grid.width, y1 - y0))
    return [RasterWriter(folder / s.name, band, s.dtype, s.nodata, s.overview_resampling, s.description,
                         cog=cog, first_row=y0) for s in specs]


def ground_scale(grid: Grid) -> GroundScale:
    """The ground measures of ``grid`` (the whole grid's, also for a block: decisions must not differ)."""
    return GroundScale(grid.transform, grid.crs, grid.width, grid.height)


def polygon_schema(typed: bool = False):
    """The columns of the change polygons (an empty GeoDataFrame)."""
    import geopandas as gpd

    cols = {"id": np.array([], np.int64), "area_m2": np.array([], float), "perim_m": np.array([], float),
            "mean_prob": np.array([], float), "max_prob": np.array([], float)}
    if typed:
        cols["type"] = np.array([], np.int32)
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([]))


class DetectOutputs:
    """Writers and sinks of one run (``rows=None``) or of one block's body rows (``rows=(y0, y1)``)."""

    def __init__(self, folder: Path, grid: Grid, rule: RegionRule, n_types: int, bands: int,
                 rows: tuple[int, int] | None = None, rgb: list[int] | None = None) -> None:
        block = rows is not None
        self.first_row = rows[0] if block else 0
        scale = ground_scale(grid)
        self.writers = rows_writers(folder, grid, raster_specs(n_types), rows, cog=not block)
        self.vectors = VectorWriter(folder, grid.crs, polygon_schema(n_types > 0),
                                    name="regions" if block else "changes", shapefile=not block)
        self.fixups = MaskFixups(temp_path(folder / "change_mask.tif", ".fixups"), scale)
        self.polygons = PolygonSink(self.vectors, grid, rule, self.fixups, n_types, hold_top=block)
        self.stats = StatsSink(scale, rule.low)
        self.quicklook = QuicklookCanvas(grid.height, grid.width, bands, rule.high, rgb=rgb)
        raster = RasterSink(self.writers[0], self.writers[1], rule.low, self.writers[2] if n_types else None)
        self.sinks = [raster, self.polygons, self.stats, self.quicklook]

    @property
    def close_steps(self) -> int:
        """The steps of :meth:`close`, for a progress bar: the mask's decisions, each raster, the polygons."""
        return len(self.writers) + 2

    def close(self, advance=lambda n=1, note=None: None) -> None:
        """Burn the region decisions into the mask, correct the statistics, publish the rasters and
        polygons (a whole run closes ``polygons`` first, to decide its last regions); ``advance(n,
        note)`` is told of each of :attr:`close_steps`."""
        advance(0, "region decisions")
        temps = [w.seal() for w in self.writers]
        try:
            correction = self.fixups.apply(temps[1], temps[2] if len(temps) > 2 else None, self.first_row)
        finally:
            self.fixups.discard()
        self.stats.correct(correction, self.fixups)
        for w in self.writers:
            advance(1, w.path.name)
            w.close()
        advance(1, "polygons")
        self.vectors.close()
        advance(1)

    def abort(self) -> None:
        self.fixups.discard()
        for w in self.writers:
            w.abort()
        self.vectors.abort()
