"""Provenance inside every output (``io.provenance``): GeoTIFF tags and band descriptions, the
GeoPackage layer's metadata, the Shapefile's date, the shards of a ``tile`` dataset."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyogrio
import pytest
import rasterio

import geochange
from geochange.data.tile import tile
from geochange.detect import DetectOptions, detect
from geochange.io.provenance import run_provenance, source_path
from tests.conftest import make_planted_scene

RASTERS = {  # name: (description, units, VALUES band tag)
    "change_probability.tif": ("change probability", "probability",
                               "0..1: probability of change, 0.5 at the model's threshold; -1.0: nodata"),
    "change_mask.tif": ("change mask (1 changed, 0 unchanged)", "class", "1: changed, 0: unchanged, 255: nodata"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One detect run with relative input paths (from inside the scene's folder) and a minimum area."""
    root = tmp_path_factory.mktemp("provenance")
    scene = make_planted_scene(root / "scene", after_crs=None)
    cwd = os.getcwd()
    os.chdir(root / "scene")
    try:
        summary = detect("before.tif", "after.tif", root / "out", DetectOptions(tile=64, overlap=16, min_area=20))
    finally:
        os.chdir(cwd)
    return scene, root / "out", summary


def test_every_raster_says_how_it_was_made(run):
    scene, out, summary = run
    for name, (description, units, values) in RASTERS.items():
        with rasterio.open(out / name) as ds:
            tags = ds.tags()
            assert tags["GEOCHANGE_VERSION"] == geochange.__version__
            assert tags["TIFFTAG_SOFTWARE"] == f"geochange {geochange.__version__}"
            assert tags["CREATED"] == summary["created"]
            created = dt.datetime.fromisoformat(summary["created"])
            assert tags["TIFFTAG_DATETIME"] == created.strftime("%Y:%m:%d %H:%M:%S")
            assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
            # inputs as absolute paths, though given relative to the working folder
            assert tags["BEFORE"] == str(scene.before) and tags["AFTER"] == str(scene.after)
            assert tags["MODEL"] == "cva" and json.loads(tags["MODEL_PARAMS"]) == summary["model"]["config"]
            assert float(tags["THRESHOLD"]) == summary["threshold"]
            assert float(tags["MIN_AREA_M2"]) == 20.0 and float(tags["HYSTERESIS_LOW"]) == summary["hysteresis_low"]
            assert json.loads(tags["SETTINGS"])["tile"] == 64
            assert description in tags["TIFFTAG_IMAGEDESCRIPTION"]
            # the band: what it is, its units, what its values mean
            assert ds.descriptions == (description,) and ds.units == (units,)
            assert ds.tags(1)["VALUES"] == values
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"   # tags did not spoil the layout


def test_the_geopackage_layer_carries_the_same_metadata(run):
    scene, out, summary = run
    with rasterio.open(out / "change_mask.tif") as ds:
        raster = ds.tags()
    meta = pyogrio.read_info(out / "changes.gpkg", layer="changes")["layer_metadata"]
    for key in ("GEOCHANGE_VERSION", "CREATED", "BEFORE", "AFTER", "MODEL", "MODEL_PARAMS", "THRESHOLD",
                "MIN_AREA_M2", "SETTINGS"):
        assert meta[key] == raster[key], key
    # the layer's description (gpkg_contents, shown by QGIS as its abstract)
    assert meta["DESCRIPTION"].startswith(f"geochange {geochange.__version__}, cva") and "before.tif -> after.tif" in meta["DESCRIPTION"]


def test_the_shapefile_keeps_the_date(run):
    scene, out, summary = run
    header = (out / "changes.dbf").read_bytes()[1:4]   # dBASE: YY (since 1900), MM, DD of the last update
    created = dt.date.fromisoformat(summary["created"][:10])
    assert (1900 + header[0], header[1], header[2]) == (created.year, created.month, created.day)


def test_run_provenance_keeps_urls_and_names_optional_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    model = {"name": "drlnet", "config": {"types": 5}, "threshold": 0.25}
    p = run_provenance("a.tif", "/vsicurl/https://x/b.tif", model, when)
    assert p["BEFORE"] == str(tmp_path / "a.tif") and p["AFTER"] == "/vsicurl/https://x/b.tif"
    assert p["CREATED"] == "2024-05-01T12:00:00+00:00" and p["THRESHOLD"] == "0.25"
    assert "CHECKPOINT" not in p and "LABELS" not in p
    p = run_provenance("s3://b/a.tif", "b.tif", model, when, checkpoint="run/last.pt", labels="marks.gpkg")
    assert p["BEFORE"] == "s3://b/a.tif"
    assert p["CHECKPOINT"] == str(tmp_path / "run" / "last.pt") and p["LABELS"] == str(tmp_path / "marks.gpkg")
    assert all(isinstance(v, str) for v in p.values())
    assert source_path(None) == ""


def test_tile_shards_say_how_they_were_made(planted_same_grid, tmp_path):
    s = planted_same_grid
    tile(str(s.before), str(s.after), tmp_path / "ds", size=64)
    shard = sorted((tmp_path / "ds" / "shards").iterdir())[0]
    with rasterio.open(shard) as ds:
        tags = ds.tags()
        assert tags["GEOCHANGE_VERSION"] == geochange.__version__ and tags["TIFFTAG_SOFTWARE"].startswith("geochange")
        assert json.loads(tags["SOURCES"]) == [{"before": str(s.before), "after": str(s.after)}]
        assert tags["FORMAT"] == "geochange-patches"
        assert ds.tags(ds.count)["VALUES"] == "0: unchanged, 1: changed, 255: unknown"
        assert ds.descriptions[-1] == "label"
