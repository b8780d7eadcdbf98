"""The one raster writer: rows streamed into a temporary GeoTIFF, published as a Cloud-Optimized GeoTIFF.

Rows arrive strip by strip from the engine (memory bounded by one strip). On ``close`` GDAL's COG
driver copies the temporary file into tiled, compressed COG layout with overviews, and the result
is renamed onto its final name; ``abort`` removes every temporary file.

A distributed ``detect`` writes each block's rows as a plain tiled GeoTIFF (``cog=False``) and
publishes the mosaic of those parts (a VRT, :func:`write_vrt`) as the COG (:func:`publish_cog`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geochange.io.align import Grid
from geochange.io.atomic import commit, discard, temp_path
from geochange.io.overviews import OverviewBuilder

#: layout of the temporary rows: strips of 16 full rows, so that a strip of the engine fills whole
#: blocks that GDAL writes out at once (256-pixel tiles held a row of tiles in GDAL's cache, half written)
TEMP_LAYOUT = {"tiled": False, "blockysize": 16}
#: creation options of the published COGs; DEFLATE opens everywhere (QGIS, ArcGIS, GDAL >= 2)
#: (level 1: a third faster than the default level 6 for about 4 % more bytes)
COG_OPTIONS = {"compress": "DEFLATE", "level": 1, "blocksize": 512, "overviews": "AUTO", "bigtiff": "IF_SAFER",
               "num_threads": "ALL_CPUS"}


@dataclass(frozen=True)
class RasterMeta:
    """What a single-band raster says about itself: dataset tags (the run's provenance), and its band's
    description, units, tags (what its values mean) and colour table. Written into the GeoTIFF
    (``GDAL_METADATA``, TIFF tags, the colour map), so the COG copy carries it."""

    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    units: str | None = None
    band_tags: dict[str, str] = field(default_factory=dict)
    colormap: dict[int, tuple[int, int, int, int]] | None = None

    def apply(self, ds) -> None:
        """Set everything on ``ds``, a GeoTIFF open for writing."""
        if self.tags:
            ds.update_tags(**self.tags)
        if self.description:
            ds.set_band_description(1, self.description)
        if self.units:
            ds.set_band_unit(1, self.units)
        if self.band_tags:
            ds.update_tags(1, **self.band_tags)
        if self.colormap:
            ds.write_colormap(1, self.colormap)

    def vrt_dataset_xml(self) -> str:
        return _vrt_metadata(self.tags, "  ")

    def vrt_band_xml(self) -> str:
        xml = []
        if self.description:
            xml.append(f"    <Description>{escape(self.description)}</Description>")
        if self.band_tags:
            xml.append(_vrt_metadata(self.band_tags, "    "))
        if self.units:
            xml.append(f"    <UnitType>{escape(self.units)}</UnitType>")
        if self.colormap:
            xml.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
            for value in range(max(self.colormap) + 1):
                r, g, b, a = self.colormap.get(value, (0, 0, 0, 0))
                xml.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>')
            xml.append("    </ColorTable>")
        return "\n".join(xml)


def _vrt_metadata(items: dict[str, str], indent: str) -> str:
    if not items:
        return ""
    entries = "".join(f"\n{indent}  <MDI key={quoteattr(k)}>{escape(str(v))}</MDI>" for k, v in items.items())
    return f"{indent}<Metadata>{entries}\n{indent}</Metadata>"


class RasterWriter:
    """Write a single-band raster on ``grid`` row strip by row strip, atomically, as a COG."""

    def __init__(self, path: str | Path, grid: Grid, dtype: str, nodata: float | int,
                 overview_resampling: str = "average", description: str | None = None, cog: bool = True,
                 first_row: int = 0, meta: RasterMeta | None = None) -> None:
        """``grid`` may be a band of rows of a larger grid whose row ``first_row`` is its row 0; ``meta``:
        tags, units, colour table (and a description that replaces ``description``)."""
        self.path = Path(path)
        self.first_row = first_row
        self.grid = grid
        self.overview_resampling = overview_resampling
        self.cog = cog
        self._tmp = temp_path(self.path, ".tif")
        self._tmp_cog = temp_path(self.path, ".cog.tif")
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype=dtype,
                       crs=grid.crs, transform=grid.transform, nodata=nodata, bigtiff="IF_SAFER",
                       **TEMP_LAYOUT, **temp_compression(dtype, cog))
        self._ds = rasterio.open(self._tmp, "w", **profile)
        # a COG of floats averaged into overviews: build them from the rows as they come (io.overviews)
        self._overviews = None
        if cog and np.dtype(dtype).kind == "f" and overview_resampling == "average":
            self._overviews = OverviewBuilder(self.path, grid, nodata)
        self._next_row = first_row
        if description:
            self._ds.set_band_description(1, description)
        if meta is not None:
            meta.apply(self._ds)

    def write_rows(self, row_off: int, rows: np.ndarray) -> None:
        """Write a full-width strip ``rows`` (h, width) starting at (larger) grid row ``row_off``."""
        self._ds.write(rows, 1, window=Window(0, row_off - self.first_row, self.grid.width, rows.shape[0]))
        if self._overviews is not None:
            if row_off == self._next_row:
                self._overviews.add(rows)
            else:   # rows out of order: GDAL builds the overviews at the end instead
                self._overviews.discard()
                self._overviews = None
        self._next_row = row_off + rows.shape[0]

    def seal(self) -> Path:
        """Finish writing rows; the temporary GeoTIFF's path, to edit in place before :meth:`close`."""
        self._ds.close()
        return self._tmp

    def close(self) -> Path:
        """Publish: COG copy with overviews (or the GeoTIFF as it is), then rename onto the final name."""
        try:
            self._ds.close()
            if self.cog:
                complete = self._overviews is not None and self._next_row == self.first_row + self.grid.height
                overviews = self._overviews.finish() if complete else None
                publish_cog(self._tmp, self.path, self.overview_resampling, overviews)
            else:
                commit(self._tmp, self.path)
        finally:
            discard(self._tmp, self._tmp_cog)
            if self._overviews is not None:
                self._overviews.discard()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the final name is left untouched."""
        try:
            self._ds.close()
        finally:
            discard(self._tmp, self._tmp_cog)
            if self._overviews is not None:
                self._overviews.discard()


def temp_compression(dtype: str, cog: bool) -> dict:
    """How the rows are kept until :meth:`RasterWriter.close`: a float raster bound for a COG is kept
    uncompressed, since the COG copy compresses it anyway and ZSTD gains only a third on a probability
    (measured: bench_detect.py); masks and a block's parts (kept until the assembly) as ZSTD level 1."""
    if cog and np.dtype(dtype).kind == "f":
        return {}
    return {"compress": "ZSTD", "zstd_level": 1}


def publish_cog(src: str | Path, final: str | Path, overview_resampling: str = "average",
                overviews: list[Path] | None = None) -> Path:
    """Copy any GDAL raster (a GeoTIFF, a VRT mosaic) to ``final`` as a COG with overviews, atomically.

    ``overviews``: ready-made levels of ``src``, finest first (io.overviews), used as they are;
    without them GDAL builds the overviews from ``src``. A VRT is first copied into one tiled GeoTIFF:
    the COG driver then reads its source twice (overviews, then the copy), and reading one GeoTIFF
    twice is faster than reading the VRT's parts twice.
    """
    final = Path(final)
    tmp, flat, vrt = temp_path(final, ".cog.tif"), temp_path(final, ".flat.tif"), temp_path(final, ".ovr.vrt")
    try:
        options = dict(COG_OPTIONS)
        if overviews:
            src = with_overviews(src, overviews, vrt)
            options["overviews"] = "FORCE_USE_EXISTING"
        elif str(src).endswith(".vrt"):
            src = flatten(src, flat)
        rasterio.shutil.copy(str(src), tmp, driver="COG", predictor=_predictor(src),
                             overview_resampling=overview_resampling.upper(), **options)
        commit(tmp, final)
    finally:
        discard(tmp, flat, vrt)
    return final


def _predictor(src: str | Path) -> str:
    """The floating-point predictor for floats (a probability: 5 % smaller and 13 % less CPU to
    compress, measured on bench_detect's 6144² pair; libtiff and GDAL read it everywhere), none else."""
    with rasterio.open(str(src)) as ds:
        return "FLOATING_POINT" if np.dtype(ds.dtypes[0]).kind == "f" else "NO"


def with_overviews(src: str | Path, overviews: list[Path], vrt: str | Path) -> Path:
    """A VRT of the single-band raster ``src`` (its metadata and all) whose overviews are the files
    ``overviews``: how a COG copy is handed overviews built elsewhere."""
    rasterio.shutil.copy(str(src), str(vrt), driver="VRT")
    text = Path(vrt).read_text(encoding="utf-8")
    levels = "".join(f"""    <Overview>
      <SourceFilename relativeToVRT="0">{escape(str(Path(p).resolve()))}</SourceFilename>
      <SourceBand>1</SourceBand>
    </Overview>
""" for p in overviews)
    head, sep, tail = text.rpartition("</VRTRasterBand>")
    Path(vrt).write_text(head + levels + "  " + sep + tail, encoding="utf-8")
    return Path(vrt)


def flatten(src: str | Path, dst: str | Path) -> Path:
    """Copy any GDAL raster (a VRT mosaic) into one tiled GeoTIFF ``dst`` (that can be edited in place)."""
    rasterio.shutil.copy(str(src), str(dst), driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
                         compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")
    return Path(dst)


def write_vrt(path: str | Path, grid: Grid, dtype: str, nodata: float | int, parts: list[tuple[str | Path, int]],
              description: str | None = None, meta: RasterMeta | None = None) -> Path:
    """A VRT of ``grid`` mosaicking full-width row bands: ``parts`` are (GeoTIFF, first grid row) pairs;
    ``meta`` is carried by the copies made of it (:func:`flatten`, :func:`publish_cog`)."""
    path = Path(path)
    sources = []
    for part, row_off in parts:
        with rasterio.open(part) as ds:
            h = ds.height
        rel = escape(str(Path(part).resolve().relative_to(path.parent.resolve())))
        sources.append(f"""    <SimpleSource>
      <SourceFilename relativeToVRT="1">{rel}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{h}"/>
      <DstRect xOff="0" yOff="{row_off}" xSize="{grid.width}" ySize="{h}"/>
    </SimpleSource>""")
    gdal_type = {"float32": "Float32", "uint8": "Byte"}[dtype]
    meta = meta or RasterMeta()
    if description and not meta.description:
        meta = dataclasses.replace(meta, description=description)
    dataset_xml, band_xml = meta.vrt_dataset_xml(), meta.vrt_band_xml()
    t = grid.transform
    text = f"""<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">
  <SRS>{escape(grid.crs.to_wkt())}</SRS>
  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>{chr(10) + dataset_xml if dataset_xml else ""}
  <VRTRasterBand dataType="{gdal_type}" band="1">{chr(10) + band_xml if band_xml else ""}
    <NoDataValue>{nodata}</NoDataValue>
{chr(10).join(sources)}
  </VRTRasterBand>
</VRTDataset>
"""
    path.write_text(text, encoding="utf-8")
    return path
