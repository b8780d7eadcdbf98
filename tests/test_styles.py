"""QGIS styles of the outputs (``io.styles``): each raster's sidecar ``.qml``, the type raster's colour
table and class names, the polygons categorised by type; written by ``detect`` and replaced by an overwrite.

That QGIS itself opens the outputs with these styles is tested in tests/test_qgis.py.
"""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio

from geochange.detect import DetectOptions, detect
from geochange.io import styles
from geochange.io.vectors import STYLE_QML
from geochange.models.cva import CVA
from tests.test_detect import register_model


class TypedCVA(CVA):
    """cva with two change types: brighter (1) or darker (2) after."""

    name = "typed_cva"
    n_types = 2

    def predict_with_types(self, before, after, valid):
        kinds = np.where((after - before).mean(axis=1) > 0, 1, 2).astype(np.uint8)
        return self.predict(before, after, valid), kinds


def test_probability_style_is_a_ramp_transparent_at_zero():
    root = ET.fromstring(styles.probability_qml())
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    items = renderer.findall("rastershader/colorrampshader/item")
    values = [float(i.get("value")) for i in items]
    assert values[0] == 0 and values[-1] == 1 and values == sorted(values)
    assert items[0].get("alpha") == "0" and items[-1].get("alpha") == "255"
    # opaque from the threshold (0.5) on
    assert all(i.get("alpha") == "255" for i in items if float(i.get("value")) >= 0.5)


def test_mask_style_paints_change_red_and_the_rest_transparent():
    entries = ET.fromstring(styles.mask_qml()).findall("pipe/rasterrenderer/colorPalette/paletteEntry")
    by_value = {int(e.get("value")): e for e in entries}
    assert set(by_value) == {0, 1}   # 255 is nodata: transparent without a class
    assert by_value[1].get("color") == "#e41a1c" and by_value[1].get("alpha") == "255"
    assert by_value[0].get("alpha") == "0"


def test_type_style_colour_table_and_names_agree():
    n = 12   # more types than the palette: the rest get their own colours too
    entries = ET.fromstring(styles.type_qml(n)).findall("pipe/rasterrenderer/colorPalette/paletteEntry")
    names = styles.type_names(n)
    cmap = styles.type_colormap(n)
    assert [int(e.get("value")) for e in entries] == list(range(n + 1))
    assert [e.get("label") for e in entries] == names == ["unchanged"] + [f"type {k}" for k in range(1, n + 1)]
    assert entries[0].get("alpha") == "0"
    for e in entries[1:]:
        assert e.get("color") == "#{:02x}{:02x}{:02x}".format(*cmap[int(e.get("value"))][:3])
    assert len({cmap[k] for k in range(1, n + 1)}) == n


def test_polygon_style_is_categorised_by_type_only_with_types():
    assert styles.polygons_qml(0, STYLE_QML) == STYLE_QML
    root = ET.fromstring(styles.polygons_qml(3, STYLE_QML))
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "type"
    cats = renderer.findall("categories/category")
    assert [(c.get("value"), c.get("label")) for c in cats] == [("1", "type 1"), ("2", "type 2"), ("3", "type 3")]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for c in cats:   # each category's outline is its type's colour in change_type.tif
        outline = symbols[c.get("symbol")].find("layer/prop[@k='outline_color']").get("v")
        assert outline == ",".join(map(str, styles.type_colour(int(c.get("value"))))) + ",255"


def test_pam_categories_are_gdal_category_names():
    root = ET.fromstring(styles.pam_categories(["unchanged", "type 1", "a & b"]))
    band = root.find("PAMRasterBand")
    assert band.get("band") == "1"
    assert [c.text for c in band.findall("CategoryNames/Category")] == ["unchanged", "type 1", "a & b"]


def test_detect_writes_a_style_beside_every_raster(planted_same_grid, tmp_path, monkeypatch):
    register_model(monkeypatch, "typed_cva", TypedCVA)
    s, out = planted_same_grid, tmp_path / "typed"
    summary = detect(str(s.before), str(s.after), out, DetectOptions(model="typed_cva", tile=64, overlap=16))
    sidecars = ["change_probability.qml", "change_mask.qml", "change_type.qml", "change_type.tif.aux.xml"]
    assert set(sidecars) <= set(summary["outputs"])
    assert set(summary["outputs"]) == {p.name for p in out.iterdir() if p.suffix not in (".shx", ".dbf", ".prj", ".cpg")}
    assert (out / "change_probability.qml").read_text() == styles.probability_qml()
    assert (out / "change_mask.qml").read_text() == styles.mask_qml()
    assert (out / "change_type.qml").read_text() == styles.type_qml(2)
    assert (out / "change_type.tif.aux.xml").read_text() == styles.pam_categories(["unchanged", "type 1", "type 2"])
    with rasterio.open(out / "change_type.tif") as ds:
        cmap = ds.colormap(1)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.tags(1)["CLASSES"] == "0: unchanged, 1: type 1, 2: type 2"
    for k in (1, 2):
        assert cmap[k][:3] == styles.type_colour(k)
    # the polygons are categorised by type, in changes.qml and as the GeoPackage's default style
    qml = (out / "changes.qml").read_text()
    assert qml == styles.polygons_qml(2, STYLE_QML) != STYLE_QML
    with sqlite3.connect(out / "changes.gpkg") as con:
        assert con.execute("SELECT styleQML FROM layer_styles WHERE useAsDefault = 1").fetchall() == [(qml,)]

    # an untyped run over it leaves no type map, no style or class names of the earlier one
    summary = detect(str(s.before), str(s.after), out, DetectOptions(tile=64, overlap=16, overwrite=True))
    left = {p.name for p in out.iterdir()}
    assert not left & {"change_type.tif", "change_type.qml", "change_type.tif.aux.xml"}
    assert {"change_probability.qml", "change_mask.qml"} <= left
    assert not [n for n in summary["outputs"] if n.startswith("change_type")]
    assert (out / "changes.qml").read_text() == STYLE_QML
    assert json.loads((out / "summary.json").read_text())["outputs"] == summary["outputs"]


@pytest.mark.parametrize("n", [1, 9, 10, 40])
def test_type_colours_are_distinct(n):
    colours = [styles.type_colour(k) for k in range(1, n + 1)]
    assert len(set(colours)) == n and all(0 <= c <= 255 for rgb in colours for c in rgb)
