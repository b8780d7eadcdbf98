"""build-wdc on a synthetic city: planted changes found, 9:1 noisy ratio, disjoint splits, pixels traceable, Dask = serial."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely
from rasterio.windows import from_bounds
from typer.testing import CliRunner

from geochange.cli import app
from geochange.data import PatchDataset
from geochange.data.wdc import WdcOptions, build_wdc
from geochange.errors import GeochangeError
from conftest import make_city

OPTS = dict(patch=32, block=4, noisy=300, margin=4, workers=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of a synthetic city, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("wdc")
    city = make_city(folder / "city")
    out = folder / "wdc"
    summary = build_wdc(city.manifest(), out, options=WdcOptions(**OPTS))
    return city, out, summary, pd.read_csv(out / "index.csv", keep_default_na=False)


def boxes(index: pd.DataFrame) -> np.ndarray:
    return shapely.box(*(index[c].to_numpy(float) for c in ("minx", "miny", "maxx", "maxy")))


def test_summary_counts_the_planted_changes_and_every_patch(built):
    city, out, summary, index = built
    assert summary["changes"] == {"2010-2015": {"new": len(city.planted["new"]),
                                                "destroyed": len(city.planted["destroyed"])}}
    assert summary["buildings"] == {"2010": len(city.frames[2010]), "2015": len(city.frames[2015])}
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary, default=str))
    assert summary["patches"]["total"] == len(index) == sum(summary["patches"][s] for s in ("train", "val", "test"))
    for kind, per_split in summary["kinds"].items():
        for split, n in per_split.items():
            assert n == ((index.kind == kind) & (index.split == split)).sum()
    # one positive per planted change that has a block around it; as many negatives as positives
    n_pos = (index.kind == "positive").sum()
    assert n_pos == summary["positive"]["written"] >= 0.8 * (len(city.planted["new"]) + len(city.planted["destroyed"]))
    assert (index.kind == "negative").sum() == n_pos and summary["notes"] == []
    assert (index.kind == "noisy_negative").sum() == 300
    # the change layer is in the dataset folder, published with it
    changes = gpd.read_file(out / "changes_2010_2015.gpkg", layer="changes")
    assert set(changes.loc[changes.kind == "new", "src_id"]) == city.planted["new"]
    assert set(changes.loc[changes.kind == "destroyed", "src_id"]) == city.planted["destroyed"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_noisy_negatives_hold_buildings_nine_times_in_ten(built):
    city, out, summary, index = built
    noisy = index[index.kind == "noisy_negative"]
    # recomputed from the filter year's footprints, independently of the index's own column
    filter_year = gpd.read_file(city.footprints[2015])
    hit, _ = shapely.STRtree(np.asarray(filter_year.geometry)).query(boxes(noisy), predicate="intersects")
    has = np.zeros(len(noisy), bool)
    has[np.unique(hit)] = True
    assert has.mean() == pytest.approx(0.9, abs=0.01)
    np.testing.assert_array_equal(has, noisy.has_building.to_numpy() == 1)
    assert summary["noisy"]["share_with_buildings"] == pytest.approx(0.9, abs=0.01)
    # the patches without buildings come from the empty park or between lots, and are unlabelled
    assert (noisy.label == -1).all() and (noisy.split == "train").all()


def test_splits_never_overlap_spatially(built):
    city, out, summary, index = built
    assert set(index.split) == {"train", "val", "test"}
    geoms = boxes(index)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    cross = index.split.to_numpy()[a] != index.split.to_numpy()[b]
    areas = shapely.area(shapely.intersection(geoms[a[cross]], geoms[b[cross]]))
    assert len(areas) == 0 or areas.max() == 0.0          # at most a shared edge between blocks
    # and every patch lies inside its block
    side, (left, top) = summary["block_m"], json.loads((out / "dataset.json").read_text())["params"]["block_origin"]
    bj, bi = np.floor((index.minx - left) / side), np.floor((top - index.maxy) / side)
    assert ((index.maxx <= left + (bj + 1) * side + 1e-6) & (index.miny >= top - (bi + 1) * side - 1e-6)).all()


def test_patch_bounds_in_the_index_are_the_pixels_in_the_shard(built):
    city, out, summary, index = built
    ds = PatchDataset(out)
    changes = gpd.read_file(out / "changes_2010_2015.gpkg", layer="changes")
    pick = np.r_[np.flatnonzero(index.kind == "positive")[:12], np.flatnonzero(index.kind == "negative")[:8],
                 np.flatnonzero(index.kind == "noisy_negative")[:8]]
    with rasterio.open(city.imagery[2010]) as b, rasterio.open(city.imagery[2015]) as a:
        for i in pick:
            item, row = ds[int(i)], index.iloc[int(i)]
            window = from_bounds(row.minx, row.miny, row.maxx, row.maxy, b.transform).round_offsets().round_lengths()
            np.testing.assert_array_equal(item["before"], b.read(window=window))
            np.testing.assert_array_equal(item["after"], a.read(window=window))
            truth = rasterio.features.rasterize(
                [(g, 1) for g in changes.geometry], out_shape=(32, 32), fill=0, dtype="uint8",
                transform=rasterio.windows.transform(window, b.transform))
            if row.kind == "noisy_negative":
                assert (item["label"] == 255).all()
            else:
                np.testing.assert_array_equal(item["label"], truth)
            if row.kind == "positive":     # centred on its change: the change's centre is in the patch
                kind, src = row.change_id.split(":")
                g = changes.loc[(changes.kind == kind) & (changes.src_id == src)].geometry.iloc[0]
                cx, cy = shapely.centroid(shapely.box(*g.bounds)).coords[0]
                assert row.minx <= cx <= row.maxx and row.miny <= cy <= row.maxy and item["label"].any()
            if row.kind == "negative":     # no change within the margin (4 px = 2 m) of the patch
                assert not changes.intersects(shapely.box(row.minx, row.miny, row.maxx, row.maxy).buffer(2.0, join_style="mitre")).any()
                assert item["meta"]["label"] == 0


def test_same_seed_same_dataset_other_seed_other_draw(built, tmp_path):
    city, out, summary, index = built
    again = build_wdc(city.manifest(), tmp_path / "again", options=WdcOptions(**OPTS))
    assert pd.read_csv(tmp_path / "again" / "index.csv", keep_default_na=False).equals(index)
    assert again["patches"] == summary["patches"]
    other = build_wdc(city.manifest(), tmp_path / "other", options=WdcOptions(**{**OPTS, "seed": 1}))
    assert not pd.read_csv(tmp_path / "other" / "index.csv", keep_default_na=False)[["minx", "miny"]].equals(index[["minx", "miny"]])
    assert other["changes"] == summary["changes"]


def test_cli_with_a_two_worker_dask_cluster_writes_what_the_library_writes_serially(built, tmp_path):
    city, out, summary, index = built
    res = CliRunner().invoke(app, ["build-wdc", "--manifest", str(city.manifest()), "--out", str(tmp_path / "cli"),
                                   "--patch", "32", "--block", "4", "--noisy", "300", "--margin", "4",
                                   "--workers", "2", "-q"])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "cli" / "index.csv", keep_default_na=False)
    assert got.equals(index)
    a, b = PatchDataset(tmp_path / "cli"), PatchDataset(out)
    for i in range(0, len(a), 7):
        for key in ("before", "after", "label"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
    cli_summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert cli_summary["workers"] == 2 and cli_summary["patches"] == summary["patches"]


def test_the_cli_prints_the_summary_and_errors_in_one_line(city, tmp_path):
    res = CliRunner().invoke(app, ["build-wdc", "-m", str(city.manifest()), "-o", str(tmp_path / "o"),
                                   "--patch", "32", "--block", "4", "--noisy", "20", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "buildings: 2010 " in res.stdout and "changes 2010-2015: " in res.stdout and "noisy_negative: train 20" in res.stdout
    res = CliRunner().invoke(app, ["build-wdc", "-m", str(city.manifest()), "-o", str(tmp_path / "o"), "--workers", "0"])
    assert res.exit_code == 2 and "holds a dataset already" in res.output


def test_inputs_that_cannot_work_are_refused_in_one_line(city, tmp_path):
    remote = city.manifest(imagery={2010: {"url": "http://127.0.0.1:9/ortho.tif"}, 2015: {"source": city.imagery[2015].name}})
    with pytest.raises(GeochangeError, match=r"imagery.2010: .* is not in the cache .*run with --download"):
        build_wdc(remote, tmp_path / "x", cache=tmp_path / "cache", options=WdcOptions(**OPTS))
    wrong = city.manifest(imagery={y: {"source": city.imagery[y].name, "crs": "EPSG:32618"} for y in city.years})
    with pytest.raises(GeochangeError, match="imagery.2010: the image is in EPSG:26985, the manifest says EPSG:32618"):
        build_wdc(wrong, tmp_path / "x", options=WdcOptions(**OPTS))
    with pytest.raises(GeochangeError, match="--patch must be"):
        build_wdc(city.manifest(), tmp_path / "x", options=WdcOptions(patch=4, workers=0))
    assert not (tmp_path / "x").exists() and not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_real_joplin_imagery_and_footprints_end_to_end(shared_data, tmp_path):
    """Real files: a pre-tornado tile (EPSG:26915) and a post tile (EPSG:4326), 2,823 real footprints.

    No public two-year footprint set exists offline, so the earlier year is the real layer with a
    known set removed (they come out new) and a known set of boxes added (they come out destroyed).
    """
    import yaml

    joplin = shared_data / "joplin"
    pre, post = joplin / "input/pre/tile_337-10160.tif", joplin / "input/post/tile_31500-5137.tif"
    real = gpd.read_file(joplin / "joplin.geojson").to_crs(26915)
    real["bid"] = [f"j{i}" for i in range(len(real))]
    overlap = shapely.box(366700, 4103580, 367240, 4103890)      # where the two tiles overlap (EPSG:26915)
    inside = np.flatnonzero(real.within(overlap))
    rng = np.random.default_rng(0)
    removed = set(real.bid.iloc[rng.choice(inside, 12, replace=False)])
    tree = shapely.STRtree(np.asarray(real.geometry))
    added = []
    while len(added) < 8:
        x, y = rng.uniform(366720, 367220), rng.uniform(4103600, 4103870)
        box = shapely.box(x, y, x + 12, y + 9)
        if not len(tree.query(box.buffer(3))) and not any(box.intersects(b) for _, b in added):
            added.append((f"added{len(added)}", box))
    earlier = pd.concat([real[~real.bid.isin(removed)][["bid", "geometry"]],
                         gpd.GeoDataFrame({"bid": [a for a, _ in added]}, geometry=[b for _, b in added], crs=26915)])
    earlier.to_file(tmp_path / "buildings_2010.gpkg", engine="pyogrio")
    manifest = tmp_path / "joplin.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "joplin", "pairs": [[2010, 2011]], "filter_year": 2011,
        "imagery": {2010: {"source": str(pre), "crs": "EPSG:26915"}, 2011: {"source": str(post), "crs": "EPSG:4326"}},
        "footprints": {2010: {"source": "buildings_2010.gpkg", "id_field": "bid"},
                       2011: {"source": str(joplin / "joplin.geojson")}}}))
    summary = build_wdc(manifest, tmp_path / "ds", options=WdcOptions(patch=64, block=2, noisy=120, margin=8, workers=0))
    changes = gpd.read_file(tmp_path / "ds" / "changes_2010_2011.gpkg", layer="changes")
    real_ids = {f"j{int(i)}" for i in changes.loc[changes.kind == "new", "src_id"]}   # 2011 ids are row numbers
    assert real_ids == removed
    assert set(changes.loc[changes.kind == "destroyed", "src_id"]) == {a for a, _ in added}
    assert summary["buildings"] == {"2010": len(earlier), "2011": 2823} and summary["crs"] == "EPSG:26915"
    kinds = summary["kinds"]
    n_pos, n_neg = sum(kinds["positive"].values()), sum(kinds["negative"].values())
    assert n_pos >= 15 and n_neg >= 5 and n_neg == summary["negative"]["written"]
    # negatives need an unchanged building with no change nearby, inside the tiles' common valid area:
    # when there are fewer than positives, the summary says so
    assert n_neg == n_pos or any("negative patches short" in note for note in summary["notes"])
    assert sum(kinds["noisy_negative"].values()) == 120 and summary["noisy"]["share_with_buildings"] == pytest.approx(0.9, abs=0.01)
    ds = PatchDataset(tmp_path / "ds")
    assert ds.info["sources"][0]["after_warped"] is True
    assert all(ds[i]["meta"]["valid_fraction"] >= 0.99 for i in range(0, len(ds), 11))
