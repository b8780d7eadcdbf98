"""VectorWriter: GeoPackage + Shapefile + QGIS style, streamed and published atomically."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import CRS

from geochange.io.vectors import STYLE_QML, VectorWriter

UTM33 = CRS.from_epsg(32633)
FIELDS = ["id", "area_m2", "perim_m", "mean_prob", "max_prob"]
SHP_FILES = ["changes.cpg", "changes.dbf", "changes.prj", "changes.shp", "changes.shx"]
ALL_FILES = sorted(["changes.gpkg", "changes.qml", *SHP_FILES])


def schema() -> gpd.GeoDataFrame:
    cols = {"id": np.array([], np.int64), "area_m2": np.array([], float), "perim_m": np.array([], float),
            "mean_prob": np.array([], float), "max_prob": np.array([], float)}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([]))


def squares(first_id: int, n: int, crs=UTM33) -> gpd.GeoDataFrame:
    x0, y0 = 400_000.0, 5_000_000.0
    geoms = [shapely.box(x0 + 30 * i, y0, x0 + 30 * i + 20, y0 + 10) for i in range(n)]
    if n:
        # one multipolygon and one polygon with a hole, to check both survive
        geoms[0] = shapely.MultiPolygon([shapely.box(x0, y0, x0 + 5, y0 + 5), shapely.box(x0 + 10, y0, x0 + 15, y0 + 5)])
    if n > 1:
        geoms[1] = shapely.box(x0 + 30, y0, x0 + 50, y0 + 10).difference(shapely.box(x0 + 35, y0 + 2, x0 + 40, y0 + 7))
    ids = np.arange(first_id, first_id + n)
    return gpd.GeoDataFrame({"id": ids, "area_m2": [g.area for g in geoms], "perim_m": [g.length for g in geoms],
                             "mean_prob": np.linspace(0.5, 0.9, n), "max_prob": np.linspace(0.6, 1.0, n)},
                            geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_writes_gpkg_shapefile_and_style(tmp_path):
    w = VectorWriter(tmp_path, UTM33, schema())
    batches = [squares(1, 3), squares(4, 0), squares(4, 5)]
    for b in batches:
        w.write(b)
        assert visible(tmp_path) == []          # only hidden temporaries while writing
    assert w.count == 8
    published = w.close()
    assert sorted(p.name for p in published) == sorted(["changes.gpkg", *SHP_FILES])
    assert sorted(p.name for p in tmp_path.iterdir()) == ALL_FILES   # no hidden leftovers either

    expected = gpd.GeoDataFrame(
        gpd.pd.concat([b for b in batches if len(b)], ignore_index=True), crs=UTM33)
    for name, kw in [("changes.gpkg", {"layer": "changes"}), ("changes.shp", {})]:
        info = pyogrio.read_info(tmp_path / name, **kw)
        # a Shapefile has one polygon type for both (OGR calls it Polygon); the GeoPackage says Multi
        assert info["geometry_type"] == ("MultiPolygon" if name.endswith(".gpkg") else "Polygon")
        assert list(info["fields"]) == FIELDS          # names intact, also in the .dbf (<= 10 chars)
        got = gpd.read_file(tmp_path / name, **kw)
        assert CRS.from_user_input(got.crs).equals(UTM33)
        assert len(got) == 8
        assert got["id"].tolist() == list(range(1, 9))
        np.testing.assert_allclose(got["area_m2"], expected["area_m2"])
        np.testing.assert_allclose(got["max_prob"], expected["max_prob"])
        if name.endswith(".gpkg"):
            assert all(g.geom_type == "MultiPolygon" for g in got.geometry)
        assert got.geometry.is_valid.all()
        assert all(a.equals(b) for a, b in zip(got.geometry, expected.geometry))
    # "changes" is the first (default) layer; GDAL also lists the QGIS style table, as for QGIS's own
    assert pyogrio.list_layers(tmp_path / "changes.gpkg")[:, 0].tolist() in (["changes"], ["changes", "layer_styles"])
    assert (tmp_path / "changes.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    assert CRS.from_wkt((tmp_path / "changes.prj").read_text()).equals(UTM33)


def test_gpkg_holds_the_default_qgis_style(tmp_path):
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 2))
    w.close()
    con = sqlite3.connect(tmp_path / "changes.gpkg")
    try:
        rows = con.execute("SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault"
                           " FROM layer_styles").fetchall()
        geom_col = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'changes'").fetchone()[0]
    finally:
        con.close()
    assert len(rows) == 1
    table, column, style_name, qml, default = rows[0]
    assert table == "changes"
    assert column == geom_col
    assert default == 1
    assert qml == STYLE_QML == (tmp_path / "changes.qml").read_text(encoding="utf-8")
    # the layer is still readable by GDAL after the style table was added
    assert len(gpd.read_file(tmp_path / "changes.gpkg", layer="changes")) == 2


def test_qml_is_xml_with_red_outlines(tmp_path):
    w = VectorWriter(tmp_path, UTM33, schema())
    w.close()
    root = ET.fromstring((tmp_path / "changes.qml").read_text(encoding="utf-8"))
    assert root.tag == "qgis"
    colours = [o.get("value") for o in root.iter("Option") if o.get("name") == "outline_color"]
    colours += [p.get("v") for p in root.iter("prop") if p.get("k") == "outline_color"]
    assert colours
    for c in colours:
        r, g, b, *alpha = (int(v) for v in c.split(","))
        assert r >= 180 and g <= 80 and b <= 80, c     # red-ish
        assert not alpha or alpha[0] > 0


def test_zero_features_give_empty_layers_with_schema(tmp_path):
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 0))
    assert w.count == 0
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ALL_FILES
    for name, kw in [("changes.gpkg", {"layer": "changes"}), ("changes.shp", {})]:
        info = pyogrio.read_info(tmp_path / name, **kw)
        assert info["features"] == 0
        assert list(info["fields"]) == FIELDS
        assert info["geometry_type"] == ("MultiPolygon" if name.endswith(".gpkg") else "Polygon")
        assert CRS.from_user_input(info["crs"]).equals(UTM33)
        got = gpd.read_file(tmp_path / name, **kw)
        assert len(got) == 0


def test_other_crs_and_name(tmp_path):
    crs = CRS.from_epsg(4326)
    w = VectorWriter(tmp_path, crs, schema(), name="diff")
    w.write(squares(1, 2, crs=None).set_crs(crs))   # coordinates irrelevant here
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["diff.gpkg", "diff.qml", "diff.cpg", "diff.dbf", "diff.prj", "diff.shp", "diff.shx"])
    for name, kw in [("diff.gpkg", {"layer": "changes"}), ("diff.shp", {})]:
        assert CRS.from_user_input(gpd.read_file(tmp_path / name, **kw).crs).equals(crs)


def test_abort_leaves_no_files(tmp_path):
    (tmp_path / "other.txt").write_text("not ours")
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 4))
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden and visible(tmp_path) == ["other.txt"]
    w.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["other.txt"]


def test_close_replaces_earlier_outputs(tmp_path):
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 5))
    w.close()
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 2))
    w.abort()                                        # an aborted rerun keeps the earlier outputs
    assert len(gpd.read_file(tmp_path / "changes.gpkg", layer="changes")) == 5
    w = VectorWriter(tmp_path, UTM33, schema())
    w.write(squares(1, 2))
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ALL_FILES
    assert len(gpd.read_file(tmp_path / "changes.gpkg", layer="changes")) == 2
    assert len(gpd.read_file(tmp_path / "changes.shp")) == 2
    con = sqlite3.connect(tmp_path / "changes.gpkg")
    try:
        assert con.execute("SELECT count(*) FROM layer_styles").fetchone()[0] == 1
    finally:
        con.close()
