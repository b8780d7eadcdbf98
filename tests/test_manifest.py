"""Manifests: the D.C. manifest validates; every kind of mistake is one clear line; paths stay confined."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import rasterio

from geochange.data.manifest import cache_path, load_manifest, verify_local_checksums
from geochange.errors import GeochangeError

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
name: town
crs: EPSG:26985
pairs: [[2010, 2015]]
filter_year: 2015
imagery:
  2005: a.tif
  2010: {source: a.tif, crs: EPSG:26985, licence: CC0}
  2015: {source: b.tif}
footprints:
  2010: {source: f.gpkg, id_field: id}
  2015: {source: f.gpkg, year_field: year}
"""


def write(tmp_path: Path, text: str, files=("a.tif", "b.tif", "f.gpkg")) -> Path:
    for f in files:
        (tmp_path / f).write_bytes(b"data of " + f.encode())
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_the_wdc_manifest_holds_the_papers_years_pairs_and_filter_year():
    m = load_manifest(ROOT / "data_manifests" / "wdc.yaml", check_files=False)
    assert sorted(m.imagery) == [1995, 1999, 2002, 2005, 2008, 2010, 2013, 2015]
    assert m.pairs == [(1999, 2005), (2010, 2015)] and m.filter_year == 2015
    assert m.noisy_pairs[0] == (1995, 1999) and len(m.noisy_pairs) == 7     # consecutive image years
    assert m.crs == "EPSG:26985"
    for e in m.entries():
        assert e.licence and e.provenance and e.crs == "EPSG:26985"
    # the orthophoto services open in GDAL (the WMS driver reads nothing until a window is asked for)
    with rasterio.open(m.imagery[2013].source) as ds:
        assert ds.crs.to_epsg() == 26985 and ds.res == pytest.approx((0.16, 0.16)) and ds.count == 3
        assert ds.bounds.left == pytest.approx(389400) and ds.bounds.top == pytest.approx(148200)


def test_a_good_manifest_resolves_paths_relative_to_its_folder(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    assert m.noisy_pairs == [(2005, 2010), (2010, 2015)]
    assert m.imagery[2010].source == str(tmp_path.resolve() / "a.tif")
    assert m.footprints[2015].year_field == "year" and m.footprints[2010].id_field == "id"
    assert m.describe()["pairs"] == ["2010-2015"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("filter_year", "filtre_year"), "unknown key 'filtre_year' (known:"),
    (lambda t: t.replace("licence: CC0", "licens: CC0"), "unknown key 'licens' in imagery.2010"),
    (lambda t: t.replace("pairs: [[2010, 2015]]", "pairs: [[2005, 2015]]"), "pair 2005-2015: no footprints for 2005"),
    (lambda t: t.replace("pairs: [[2010, 2015]]", "pairs: [[2010, 2020]]"), "pair 2010-2020: no imagery for 2020"),
    (lambda t: t.replace("pairs: [[2010, 2015]]", "pairs: [[2015, 2010]]"), "the earlier year comes first"),
    (lambda t: t.replace("filter_year: 2015", "filter_year: 2005"), "filter_year 2005 has no footprints"),
    (lambda t: t.replace("2015: {source: b.tif}", "2015: {source: missing.tif}"), "imagery.2015: missing.tif: no such file"),
    (lambda t: t.replace("2015: {source: b.tif}", "2015: {source: b.tif, url: 'https://x.org/b.tif'}"), "exactly one of"),
    (lambda t: t.replace("2015: {source: b.tif}", "2015: {url: 'ftp://x.org/b.tif'}"), "not an http(s) URL"),
    (lambda t: t.replace("2015: {source: b.tif}", "2015: {source: b.tif, sha256: abc}"), "64 hexadecimal"),
    (lambda t: t.replace("crs: EPSG:26985\npairs", "crs: EPSG:999999\npairs"), "not a CRS PROJ knows"),
    (lambda t: t.replace("2005: a.tif", "20x5: a.tif"), "'20x5' is not a year"),
    (lambda t: t.replace("pairs: [[2010, 2015]]", "pairs: [[2010, 2015]"), "not a valid YAML manifest (line"),
    (lambda t: "- just\n- a list\n", "a manifest is a mapping"),
    (lambda t: t + "options: {patch: 32, workers: 4}\n", "unknown key 'workers' in options (known: patch,"),
    (lambda t: t + "options: {patch: 32.5}\n", "options.patch must be a whole number, not 32.5"),
    (lambda t: t + "options: {split: [0.8, 0.2]}\n", "options.split must be three fractions [train, val, test]"),
    (lambda t: t + "options: [patch, 32]\n", "'options' is a mapping of build-wdc options"),
])
def test_a_corrupt_manifest_is_one_clear_line(tmp_path, edit, message):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(GeochangeError) as err:
        load_manifest(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("m.yaml") or str(err.value).startswith(str(path))


def test_options_are_the_citys_build_defaults(tmp_path):
    m = load_manifest(write(tmp_path, GOOD + "options: {patch: 32, block: 2, building_share: 1, split: [7, 1, 2], margin: null}\n"))
    assert m.options == {"patch": 32, "block": 2, "building_share": 1.0, "split": [7.0, 1.0, 2.0], "margin": None}
    assert m.describe()["options"] == m.options
    assert load_manifest(write(tmp_path, GOOD)).options == {}


@pytest.mark.parametrize("name", ["../outside.tif", "/etc/passwd", "a/../../b.tif", "~/x.tif", "a\\..\\b", "we ird.tif", "."])
def test_cache_names_cannot_leave_the_cache(tmp_path, name):
    text = GOOD.replace("2015: {source: b.tif}", f"2015: {{url: 'https://x.org/b.tif', file: '{name}'}}")
    with pytest.raises(GeochangeError, match="inside the cache"):
        load_manifest(write(tmp_path, text))


def test_a_url_is_cached_under_its_own_name_inside_the_cache(tmp_path):
    text = GOOD.replace("2015: {source: b.tif}", "2015: {url: 'https://x.org/dl/ortho%202015.tif?x=1'}")
    m = load_manifest(write(tmp_path, text))
    e = m.imagery[2015]
    assert e.remote and e.file == "ortho_2015.tif"
    assert Path(e.path(tmp_path / "cache")).parent == (tmp_path / "cache").resolve()
    with pytest.raises(GeochangeError, match="outside the cache"):
        cache_path(tmp_path / "cache", "../x")


def test_a_gdal_description_that_would_write_a_tile_cache_is_refused(tmp_path):
    xml = '"<GDAL_WMS><Service name=\\"TMS\\"/><Cache><Path>/tmp/anywhere</Path></Cache></GDAL_WMS>"'
    with pytest.raises(GeochangeError, match="<Cache>"):
        load_manifest(write(tmp_path, GOOD.replace("2015: {source: b.tif}", f"2015: {{source: {xml}}}")))
    (tmp_path / "svc.xml").write_text("<GDAL_WMS><Cache/></GDAL_WMS>")
    with pytest.raises(GeochangeError, match="svc.xml has a <Cache>"):
        load_manifest(write(tmp_path, GOOD.replace("2015: {source: b.tif}", "2015: {source: svc.xml}")))


def test_a_local_checksum_mismatch_is_one_clear_line(tmp_path):
    good = hashlib.sha256(b"data of b.tif").hexdigest()
    m = load_manifest(write(tmp_path, GOOD.replace("2015: {source: b.tif}", f"2015: {{source: b.tif, sha256: {good}}}")))
    verify_local_checksums(m)   # matches
    (tmp_path / "b.tif").write_bytes(b"changed on disk")
    with pytest.raises(GeochangeError, match=r"imagery.2015: checksum mismatch for .*b.tif \(manifest sha256 " + good[:12]):
        verify_local_checksums(m)
