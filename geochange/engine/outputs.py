"""The outputs of ``detect`` for a grid, or for one block's rows of it: the sinks the engine feeds.

A whole run writes the change rasters as COGs and the polygons as GeoPackage + Shapefile into the
output folder. A block (distributed run) writes the same rasters for its own rows as plain GeoTIFFs
and its finished polygons as a GeoPackage into its work folder, and keeps the regions that touch
its first or last row for the assembly (``engine.blocks``).

The mask and type rasters are written as candidates (``prob >= low``) as the strips come; on close the
region decisions (``engine.regions``) are burned into their temporary GeoTIFFs (``engine.fixups``)
before they are published, and the statistics are corrected to match.

Every raster carries the run's provenance (``io.provenance``) and what its band means, and a whole run
puts its QGIS style beside it (``<name>.qml``, ``io.styles``).
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
from geochange.io import styles
from geochange.io.atomic import temp_path, write_text
from geochange.io.provenance import tiff_tags
from geochange.io.quicklook import QuicklookCanvas
from geochange.io.rasters import RasterMeta, RasterWriter
from geochange.io.vectors import STYLE_QML, VectorWriter


@dataclass(frozen=True)
class RasterSpec:
    name: str
    dtype: str
    nodata: float | int
    overview_resampling: str
    description: str
    units: str = ""
    values: str = ""                   # what the values mean (the band's VALUES tag)
    style: str = ""                    # its QGIS style (the sidecar <name>.qml)
    colormap: dict | None = None       # its colour table
    categories: list[str] | None = None  # its class names by value (the band's CLASSES tag and <name>.aux.xml)

    def meta(self, provenance: dict[str, str] | None = None) -> RasterMeta:
        """What the file says about itself: the run's ``provenance`` and its band's meaning."""
        band = {"VALUES": self.values} if self.values else {}
        if self.categories:
            band["CLASSES"] = ", ".join(f"{v}: {name}" for v, name in enumerate(self.categories))
        tags = tiff_tags(provenance, f"{self.description}, made by geochange") if provenance else {}
        return RasterMeta(tags, self.description, self.units or None, band, self.colormap)


def raster_specs(n_types: int) -> list[RasterSpec]:
    """The change rasters of a run: probability and mask, and the type map for typed models."""
    specs = [RasterSpec("change_probability.tif", "float32", PROB_NODATA, "average", "change probability",
                        "probability", f"0..1: probability of change, 0.5 at the model's threshold; {PROB_NODATA}: nodata",
                        styles.probability_qml()),
             RasterSpec("change_mask.tif", "uint8", MASK_NODATA, "nearest", "change mask (1 changed, 0 unchanged)",
                        "class", f"1: changed, 0: unchanged, {MASK_NODATA}: nodata", styles.mask_qml())]
    if n_types:
        specs.append(RasterSpec("change_type.tif", "uint8", MASK_NODATA, "nearest",
                                f"change type (1..{n_types}; 0 unchanged)", "class",
                                f"1..{n_types}: change type, 0: unchanged, {MASK_NODATA}: nodata",
                                styles.type_qml(n_types), styles.type_colormap(n_types), styles.type_names(n_types)))
    return specs


def rows_writers(folder: Path, grid: Grid, specs: list[RasterSpec], rows: tuple[int, int] | None = None,
                 cog: bool = True, provenance: dict[str, str] | None = None) -> list[RasterWriter]:
    """One writer per raster, for the whole grid or (``rows``) a band of its rows."""
    y0, y1 = rows or (0, grid.height)
    band = grid if rows is None else grid.window_grid(Window(0, y0, grid.width, y1 - y0))
    return [RasterWriter(folder / s.name, band, s.dtype, s.nodata, s.overview_resampling, s.description,
                         cog=cog, first_row=y0, meta=s.meta(provenance)) for s in specs]


def publish_styles(folder: Path, specs: list[RasterSpec]) -> list[Path]:
    """Each raster's QGIS style beside it (``<name>.qml``), and the class names of a categorical one
    (``<name>.tif.aux.xml``: GeoTIFFs cannot hold them), atomically."""
    written = []
    for spec in specs:
        written.append(styles.style_path(folder / spec.name))
        write_text(written[-1], spec.style)
        if spec.categories:
            written.append(folder / f"{spec.name}.aux.xml")
            write_text(written[-1], styles.pam_categories(spec.categories))
    return written


def polygon_style(n_types: int) -> str:
    """The polygons' QGIS style: categorised by ``type`` for typed models, red outlines otherwise."""
    return styles.polygons_qml(n_types, STYLE_QML)


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
                 rows: tuple[int, int] | None = None, rgb: list[int] | None = None,
                 provenance: dict[str, str] | None = None) -> None:
        block = rows is not None
        self.folder, self.block = folder, block
        self.first_row = rows[0] if block else 0
        scale = ground_scale(grid)
        self.specs = raster_specs(n_types)
        self.writers = rows_writers(folder, grid, self.specs, rows, cog=not block, provenance=provenance)
        self.vectors = VectorWriter(folder, grid.crs, polygon_schema(n_types > 0),
                                    name="regions" if block else "changes", shapefile=not block,
                                    style=polygon_style(n_types), metadata=provenance)
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
        if not self.block:
            publish_styles(self.folder, self.specs)
        advance(1, "polygons")
        self.vectors.close()
        advance(1)

    def abort(self) -> None:
        self.fixups.discard()
        for w in self.writers:
            w.abort()
        self.vectors.abort()
