"""The one vector writer: change polygons streamed into a GeoPackage and a Shapefile, published atomically.

Both files are written in a hidden temporary folder beside the outputs and moved onto their final
names on ``close``. A QGIS style (red outlines, or one colour per ``type``: ``io.styles``) goes beside
them as ``<name>.qml`` (QGIS loads it with the Shapefile) and into the GeoPackage's ``layer_styles``
table (QGIS's default style for it). The run's provenance is the GeoPackage layer's metadata (GDAL's
``gpkg_metadata`` tables) and its description; a Shapefile keeps only the date (its ``.dbf`` header).
Field names are at most 10 characters so the Shapefile keeps them whole.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from geochange.io.atomic import commit, discard, temp_path, write_text
from geochange.io.provenance import dbf_date, describe_run

LAYER = "changes"
STYLE_QML = resources.files("geochange.io").joinpath("changes.qml").read_text(encoding="utf-8")
_SHP_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


class VectorWriter:
    """Append GeoDataFrames of polygons to ``<out>/<name>.gpkg`` (layer ``changes``) and ``<name>.shp``.

    Features are buffered and appended ``flush_every`` at a time (each GeoPackage append is one
    SQLite transaction), so memory stays bounded and appends stay cheap.
    """

    def __init__(self, out_dir: str | Path, crs, schema: gpd.GeoDataFrame, name: str = "changes",
                 flush_every: int = 20_000, shapefile: bool = True, style: str = STYLE_QML,
                 metadata: dict[str, str] | None = None) -> None:
        """``style``: the QGIS style (QML); ``metadata``: the run's provenance (``io.provenance``)."""
        self.out_dir, self.name, self.crs = Path(out_dir), name, crs
        self.shapefile = shapefile
        self.style, self.metadata = style, dict(metadata or {})
        self.flush_every = flush_every
        self._buffer: list[gpd.GeoDataFrame] = []
        self._buffered = 0
        self._schema = schema.iloc[:0].set_crs(crs, allow_override=True)
        self._tmp_dir = temp_path(self.out_dir / name)
        discard(self._tmp_dir)
        self._tmp_dir.mkdir(parents=True)
        self.count = 0
        self._write(self._schema, append=False)  # the layers exist (empty) even if nothing changed

    def write(self, frame: gpd.GeoDataFrame) -> None:
        """Append features (same columns as the schema, geometries in ``crs``)."""
        if len(frame):
            self._buffer.append(frame)
            self._buffered += len(frame)
            self.count += len(frame)
            if self._buffered >= self.flush_every:
                self._flush()

    def _flush(self) -> None:
        if self._buffer:
            frame = pd.concat(self._buffer, ignore_index=True) if len(self._buffer) > 1 else self._buffer[0]
            self._write(gpd.GeoDataFrame(frame, crs=self.crs).set_crs(self.crs, allow_override=True), append=True)
            self._buffer, self._buffered = [], 0

    def _write(self, frame: gpd.GeoDataFrame, append: bool) -> None:
        kw = dict(geometry_type="MultiPolygon", promote_to_multi=True, append=append)
        # the GeoPackage is a temporary file until close(): no fsync per transaction
        previous = pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS")
        pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF"})
        create = {} if append else self._creation()
        try:
            # GeoPackage 1.2: read without warnings by the GDAL of older QGIS releases too
            pyogrio.write_dataframe(frame, self._tmp_dir / f"{self.name}.gpkg", layer=LAYER, **create.get("gpkg", {}),
                                    **kw)
        finally:
            pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": previous})
        if self.shapefile:
            pyogrio.write_dataframe(frame, self._tmp_dir / f"{self.name}.shp", encoding="UTF-8",
                                    **create.get("shp", {}), **kw)

    def _creation(self) -> dict:
        """Options of the layers' creation: the GeoPackage's version, metadata and description, the
        Shapefile's date."""
        gpkg: dict = {"dataset_options": {"VERSION": "1.2"}}
        shp: dict = {}
        if self.metadata:
            gpkg["layer_metadata"] = self.metadata
            gpkg["layer_options"] = {"DESCRIPTION": describe_run(self.metadata)}
            if dbf_date(self.metadata):
                shp["layer_options"] = {"DBF_DATE_LAST_UPDATE": dbf_date(self.metadata)}
        return {"gpkg": gpkg, "shp": shp}

    def close(self) -> list[Path]:
        """Write what is buffered, add the styles and move every file onto its final name."""
        try:
            self._flush()
            _add_gpkg_style(self._tmp_dir / f"{self.name}.gpkg", LAYER, self.style)
            published = []
            for ext in (".gpkg", *_SHP_SIDECARS):
                src = self._tmp_dir / f"{self.name}{ext}"
                if src.exists():
                    commit(src, self.out_dir / src.name)
                    published.append(self.out_dir / src.name)
            if self.shapefile:
                write_text(self.out_dir / f"{self.name}.qml", self.style)
            return published
        finally:
            discard(self._tmp_dir)

    def abort(self) -> None:
        discard(self._tmp_dir)


def _add_gpkg_style(gpkg: Path, layer: str, qml: str) -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage (QGIS's layer_styles table)."""
    con = sqlite3.connect(gpkg)
    try:
        con.execute("""CREATE TABLE IF NOT EXISTS layer_styles (
            id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
            f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
            styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
            update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))""")
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                               (layer,)).fetchone()
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column,"
                    " styleName, styleQML, styleSLD, useAsDefault, description, owner) VALUES"
                    " ('', '', ?, ?, ?, ?, '', 1, 'geochange default style', '')",
                    (layer, geom_col[0] if geom_col else "geom", layer, qml))
        con.commit()
    finally:
        con.close()
