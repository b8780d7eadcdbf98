"""detect-many: pairs as Dask tasks on a local cluster of 2 workers; a failing pair does not stop the rest."""

from __future__ import annotations

import csv

import pytest
import rasterio
from typer.testing import CliRunner

from conftest import make_planted_scene
from geochange.cli import app
from geochange.detect_many import read_pairs
from geochange.errors import GeochangeError


def test_a_failing_pair_is_reported_and_the_others_finish(tmp_path):
    a = make_planted_scene(tmp_path / "a", seed=1, after_crs=None)
    b = make_planted_scene(tmp_path / "b", seed=2)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("before,after,out\n"
                     f"{a.before},{a.after},out_a\n"
                     f"{b.before},{tmp_path / 'missing.tif'},out_bad\n"
                     f"b/before.tif,b/after.tif,out_b\n")  # relative to the CSV
    res = CliRunner().invoke(app, ["detect-many", str(pairs), "--workers", "2", "--tile", "128", "-q"])
    assert res.exit_code == 1, res.output
    assert "1 of 3 pairs failed" in res.output and "Traceback" not in res.output
    report = list(csv.DictReader(open(tmp_path / "detect_many.csv")))
    assert [r["status"] for r in report] == ["ok", "failed", "ok"]
    assert "missing.tif" in report[1]["error"]
    for name in ("out_a", "out_b"):
        with rasterio.open(tmp_path / name / "change_mask.tif") as ds:
            assert ds.crs.to_epsg() == 32615
    assert float(report[0]["changed_area_m2"]) > 0
    assert not (tmp_path / "out_bad").exists()


@pytest.mark.parametrize("text, message", [
    ("before,after\nx.tif,y.tif\n", "missing column 'out'"),
    ("before,after,out,colour\nx,y,z,red\n", "unknown column 'colour'"),
    ("before,after,out\nx,y,o\nx2,y2,o\n", "also used on line 2"),
    ("before,after,out\n", "no pairs"),
    ("before,after,out\nx,,o\n", "empty 'after'"),
])
def test_bad_pairs_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(GeochangeError, match=message):
        read_pairs(path)


def test_a_truncated_pair_is_reported_naming_the_file(tmp_path):
    from geochange.detect import DetectOptions
    from geochange.detect_many import run_pair

    s = make_planted_scene(tmp_path / "s", after_crs=None)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(s.after.read_bytes()[:20000])
    row = run_pair({"before": str(s.before), "after": str(bad), "out": str(tmp_path / "o")}, DetectOptions())
    assert row["status"] == "failed" and row["error"].startswith(f"{bad}: cannot read its pixels")
    assert not (tmp_path / "o").exists()
