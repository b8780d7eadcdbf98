"""Footprint annotation: the planted changes of a synthetic city, exactly; IoU edge cases; repair; reprojection; D.C. data."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from geochange.data.footprints import annotate, best_iou, capture_years, read_footprints, write_changes
from geochange.errors import GeochangeError

CRS = "EPSG:26985"


def read_city(city):
    y0, y1 = city.years
    return (read_footprints(str(city.footprints[y0]), y0, CRS, id_field="bid"),
            read_footprints(str(city.footprints[y1]), y1, CRS, id_field="bid"))


def test_annotation_finds_exactly_the_planted_changes(city):
    fp0, fp1 = read_city(city)
    ch = annotate(fp0, fp1)
    assert set(fp0.ids[ch.destroyed]) == city.planted["destroyed"]
    assert set(fp1.ids[ch.new]) == city.planted["new"]
    # buildings redrawn 0.5-1 m off keep a large IoU: not changes
    moved = np.isin(fp1.ids, list(city.planted["moved"]))
    assert moved.sum() == len(city.planted["moved"]) > 0 and (ch.iou1[moved] > 0.2).all()
    # IoU exactly 0.01 is not a change (the rule is IoU < 0.01); 0.0099 is, both ways
    for ids, ious in ((fp0.ids, ch.iou0), (fp1.ids, ch.iou1)):
        eq = np.isin(ids, list(city.planted["edge_equal"]))
        below = np.isin(ids, list(city.planted["edge_below"]))
        assert eq.sum() == 1 and ious[eq][0] == 0.01
        assert below.sum() == 1 and ious[below][0] == pytest.approx(0.0099)
    assert ch.counts() == {"new": len(city.planted["new"]), "destroyed": len(city.planted["destroyed"]),
                           "buildings": {"2010": len(fp0), "2015": len(fp1)}}
    # every change records its best IoU and the best-matching building of the other year
    assert (ch.iou < 0.01).all() and set(ch.kind) == {"new", "destroyed"}
    below_new = (ch.kind == "new") & np.isin(ch.src_id, list(city.planted["edge_below"]))
    assert list(ch.match_id[below_new]) == [i for i in city.planted["edge_below"] if i.startswith("a")]


def test_invalid_footprints_are_repaired_before_measuring(city):
    fp0, fp1 = read_city(city)
    assert fp1.repaired == 1 and fp0.repaired == 0 and shapely.is_valid(fp1.geoms).all()
    bowtie = fp1.ids == next(iter(city.planted["invalid"]))
    ch = annotate(fp0, fp1)
    assert ch.iou1[bowtie][0] == pytest.approx(0.5)     # two triangles: half its year0 rectangle
    assert not bowtie[ch.new].any()


def test_best_iou_matches_a_brute_force_reference():
    rng = np.random.default_rng(3)
    def boxes(n):
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(1, 15, (n, 2))
        return shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + wh[:, 0], xy[:, 1] + wh[:, 1])
    a, b = boxes(150), boxes(170)
    best, match = best_iou(a, b)
    for i, g in enumerate(a):
        ious = np.array([g.intersection(h).area / g.union(h).area for h in b])
        assert best[i] == pytest.approx(ious.max(), abs=1e-12)
        assert match[i] == (int(ious.argmax()) if ious.max() > 0 else -1)
    assert (best > 0).sum() > 50 and (best == 0).sum() > 5
    empty_best, empty_match = best_iou(a, b[:0])
    assert (empty_best == 0).all() and (empty_match == -1).all()


def test_footprints_in_another_crs_are_reprojected_to_the_imagery_crs(city, tmp_path):
    y0, y1 = city.years
    path = tmp_path / "b_wgs84.gpkg"
    city.frames[y1].to_crs(4326).to_file(path, engine="pyogrio")
    fp0, _ = read_city(city)
    fp1 = read_footprints(str(path), y1, CRS, id_field="bid")
    assert fp1.crs == CRS and fp1.geoms[0].bounds[0] > 400_000      # metres in EPSG:26985, not degrees
    ch = annotate(fp0, fp1)
    edge = city.planted["edge_equal"]          # exactly 0.01 does not survive a round trip through degrees
    assert set(fp0.ids[ch.destroyed]) - edge == city.planted["destroyed"]
    assert set(fp1.ids[ch.new]) - edge == city.planted["new"]


def test_the_dc_footprint_schema_reads_as_a_manifest_year(test_data):
    path = str(test_data / "dc_building_footprints.geojson")
    fp = read_footprints(path, 2015, CRS, id_field="GIS_ID", year_field="CAPTUREYEAR")
    assert len(fp) == 108 and fp.dropped == 3                    # 3 were captured in 2021 and 2023
    assert all(i.startswith("BldgPly_") for i in fp.ids) and fp.crs == CRS
    xmin, ymin, xmax, ymax = shapely.total_bounds(fp.geoms)
    assert 389_400 < xmin < xmax < 408_600 and 124_200 < ymin < ymax < 148_200   # the orthophoto extent
    assert len(read_footprints(path, 2023, CRS, year_field="CAPTUREYEAR")) == 111
    # a later vintage of the same layer without 5 buildings: they come out destroyed, nothing else
    later = fp.geoms.copy()
    ch = annotate(fp, type(fp)(2021, np.delete(fp.ids, [0, 7, 50, 51, 99]), np.delete(later, [0, 7, 50, 51, 99]), CRS))
    assert sorted(fp.ids[ch.destroyed]) == sorted(fp.ids[[0, 7, 50, 51, 99]]) and len(ch.new) == 0


def test_bad_footprint_sources_are_one_line(city, tmp_path):
    with pytest.raises(GeochangeError, match="has no field 'nope'"):
        read_footprints(str(city.footprints[2010]), 2010, CRS, id_field="nope")
    with pytest.raises(GeochangeError, match="footprints.2010: cannot read"):
        read_footprints(str(tmp_path / "missing.gpkg"), 2010, CRS)
    with pytest.raises(GeochangeError, match="is not the manifest's"):
        read_footprints(str(city.footprints[2010]), 2010, CRS, source_crs="EPSG:4326")


def test_capture_years_from_dates_numbers_and_text():
    assert list(capture_years(pd.Series(pd.to_datetime(["2015-04-24", "2021-03-11"])))) == [2015, 2021]
    assert list(capture_years(pd.Series([1999, 2005]))) == [1999, 2005]
    years = capture_years(pd.Series(["2015/04/24", "unknown", None]))
    assert years[0] == 2015 and np.isnan(years[1:]).all()


def test_write_changes_gives_a_styled_geopackage_in_the_imagery_crs(city, tmp_path):
    fp0, fp1 = read_city(city)
    ch = annotate(fp0, fp1)
    write_changes(ch, tmp_path)
    path = tmp_path / "changes_2010_2015.gpkg"
    assert path.is_file() and (tmp_path / "changes_2010_2015.shp").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]       # no leftovers
    got = gpd.read_file(path, layer="changes")
    assert got.crs.to_epsg() == 26985 and len(got) == len(ch.kind)
    assert set(got.columns) >= {"kind", "iou", "year", "src_id", "match_id", "area_m2"}
    assert set(got.loc[got.kind == "new", "src_id"]) == city.planted["new"]
    assert set(got.loc[got.kind == "destroyed", "year"]) == {2010}
    assert (got.area_m2 > 0).all() and pyogrio.list_layers(path)[0][0] == "changes"
