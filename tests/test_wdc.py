"""build-wdc on a synthetic city: planted changes found, 9:1 noisy ratio, disjoint splits, pixels traceable, Dask = serial."""

from __future__ import annotations

import json
from pathlib import Path

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
from geochange.data.tile import assign_splits
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


def assert_no_ground_in_two_splits(index: pd.DataFrame) -> None:
    """Patches of different splits share at most an edge."""
    geoms = boxes(index)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    cross = index.split.to_numpy()[a] != index.split.to_numpy()[b]
    areas = shapely.area(shapely.intersection(geoms[a[cross]], geoms[b[cross]]))
    assert len(areas) == 0 or areas.max() == 0.0


def block_grid(out) -> tuple[float, float, float, int, np.ndarray]:
    """side, left, top, columns and the split of every block, recomputed from dataset.json (the rule of `tile`)."""
    params = json.loads((out / "dataset.json").read_text())["params"]
    (left, top), (n_rows, n_cols) = params["block_origin"], params["blocks"]
    splits = assign_splits(n_rows * n_cols, [params["split"][s] for s in ("train", "val", "test")], params["seed"])
    return params["block_m"], left, top, n_cols, splits


def split_of_centre(out, geoms: np.ndarray) -> np.ndarray:
    """The split of the block holding each geometry's bounds centre."""
    side, left, top, n_cols, splits = block_grid(out)
    b = shapely.bounds(geoms)
    bj = np.floor(((b[:, 0] + b[:, 2]) / 2 - left) / side).astype(int)
    bi = np.floor((top - (b[:, 1] + b[:, 3]) / 2) / side).astype(int)
    return splits[bi * n_cols + bj]


def splits_touching(index: pd.DataFrame, geoms: np.ndarray) -> list[set]:
    """For each geometry, the splits of the patches that overlap it with an area."""
    patches = boxes(index)
    a, b = shapely.STRtree(patches).query(geoms, predicate="intersects")
    area = shapely.area(shapely.intersection(geoms[a], patches[b]))
    seen = [set() for _ in geoms]
    for i, j in zip(a[area > 0], b[area > 0]):
        seen[i].add(index.split.iloc[j])
    return seen


def test_splits_never_overlap_spatially(built):
    city, out, summary, index = built
    assert set(index.split) == {"train", "val", "test"}
    assert_no_ground_in_two_splits(index)
    # every patch but the positives lies inside its block (a positive may reach over to hold its building)
    side, left, top, n_cols, _ = block_grid(out)
    bi, bj = np.divmod(index.block.to_numpy(), n_cols)
    inside = (index.minx >= left + bj * side - 1e-6) & (index.maxx <= left + (bj + 1) * side + 1e-6) & \
             (index.maxy <= top - bi * side + 1e-6) & (index.miny >= top - (bi + 1) * side - 1e-6)
    assert inside[index.kind != "positive"].all()
    assert not inside[index.kind == "positive"].all()       # some do reach over (the test is not vacuous)


def test_positive_patches_hold_their_whole_building(built):
    city, out, summary, index = built
    changes = gpd.read_file(out / "changes_2010_2015.gpkg", layer="changes")
    geom = dict(zip(changes.kind + ":" + changes.src_id, changes.geometry))
    pos = index[index.kind == "positive"]
    held = shapely.covers(boxes(pos), np.array([geom[c] for c in pos.change_id]))
    assert held.all() and len(pos) == len(changes) == summary["positive"]["written"]
    assert summary["positive"]["not_whole"] == 0
    # the buildings that a patch inside their block could not hold: they cross a block border
    side, left, top, _, _ = block_grid(out)
    b = shapely.bounds(np.asarray(changes.geometry))
    crossing = (np.floor((b[:, 0] - left) / side) != np.floor((b[:, 2] - left) / side)) | \
               (np.floor((top - b[:, 3]) / side) != np.floor((top - b[:, 1]) / side))
    assert crossing.sum() >= 5


def test_a_changed_building_lies_in_one_split_only(built):
    """Its patches go to the split of the block holding its centre; no patch of another split touches it,
    although several changed buildings cross into blocks of another split."""
    city, out, summary, index = built
    changes = gpd.read_file(out / "changes_2010_2015.gpkg", layer="changes")
    geoms = np.asarray(changes.geometry)
    own = split_of_centre(out, geoms)
    seen = splits_touching(index, geoms)
    assert all(s <= {o} for s, o in zip(seen, own))
    pos = index[index.kind == "positive"].set_index("change_id")
    assert (pos.loc[changes.kind + ":" + changes.src_id, "split"].to_numpy() == own).all()
    # not vacuous: buildings whose corners lie in blocks of different splits
    side, left, top, n_cols, splits = block_grid(out)
    b = shapely.bounds(geoms)
    corner_splits = [splits[np.floor((top - y) / side).astype(int) * n_cols + np.floor((x - left) / side).astype(int)]
                     for x in (b[:, 0], b[:, 2]) for y in (b[:, 1], b[:, 3])]
    assert (np.array(corner_splits) != own).any(axis=0).sum() >= 2


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


def test_the_manifests_options_are_defaults_that_flags_and_python_override(city, tmp_path):
    manifest = city.manifest(options={"patch": 32, "block": 4, "noisy": 20, "margin": 4, "split": [1, 1, 1]})
    res = CliRunner().invoke(app, ["build-wdc", "-m", str(manifest), "-o", str(tmp_path / "cli"), "--noisy", "10",
                                   "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "cli" / "dataset.json").read_text())["params"]
    assert (params["patch"], params["block"], params["noisy"], params["margin"]) == (32, 4, 10, 4)
    assert params["split"] == pytest.approx({"train": 1 / 3, "val": 1 / 3, "test": 1 / 3})
    summary = build_wdc(manifest, tmp_path / "py", options={"noisy": 5, "workers": 0})
    assert summary["patch"] == 32 and summary["noisy"]["written"] == 5
    summary = build_wdc(manifest, tmp_path / "all", options=WdcOptions(patch=16, block=4, noisy=5, workers=0))
    assert summary["patch"] == 16            # a WdcOptions is taken as it is
    with pytest.raises(GeochangeError, match="unknown build-wdc option 'patches'"):
        build_wdc(manifest, tmp_path / "x", options={"patches": 3})


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


def test_imagery_and_footprints_in_other_crs_overlapping_in_part(city, tmp_path):
    """The later year's orthophoto in EPSG:4326 covering only part of the earlier one, its footprints a
    GeoJSON in EPSG:4326 (as the Joplin tiles and footprints are): changes still come from the whole
    layers, patches only from where both images hold data, AFTER warped onto the working grid."""
    import yaml
    from rasterio.warp import calculate_default_transform, reproject

    y0, y1 = city.years
    with rasterio.open(city.imagery[y1]) as src:
        part = rasterio.windows.Window(160, 0, src.width - 160, src.height - 120)   # the east and north part
        arr, t = src.read(window=part), src.window_transform(part)
        bounds = rasterio.windows.bounds(part, src.transform)
        dst_t, w, h = calculate_default_transform(src.crs, "EPSG:4326", int(part.width), int(part.height), *bounds)
        warped = np.zeros((3, h, w), np.uint8)
        reproject(arr, warped, src_transform=t, src_crs=src.crs, src_nodata=0, dst_transform=dst_t,
                  dst_crs="EPSG:4326", dst_nodata=0)
    post = tmp_path / "post.tif"
    with rasterio.open(post, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=dst_t, nodata=0) as ds:
        ds.write(warped)
    city.frames[y1].to_crs(4326).to_file(tmp_path / "later.geojson", engine="pyogrio")
    manifest = tmp_path / "two_crs.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "two_crs", "crs": "EPSG:26985", "pairs": [[y0, y1]], "filter_year": y1,
        "imagery": {y0: {"source": str(city.imagery[y0])}, y1: {"source": str(post), "crs": "EPSG:4326"}},
        "footprints": {y0: {"source": str(city.footprints[y0]), "id_field": "bid"},
                       y1: {"source": str(tmp_path / "later.geojson"), "id_field": "bid"}}}))
    summary = build_wdc(manifest, tmp_path / "ds", options=WdcOptions(patch=32, block=4, noisy=60, margin=4, workers=0))
    changes = gpd.read_file(tmp_path / "ds" / f"changes_{y0}_{y1}.gpkg", layer="changes")
    edge = city.planted["edge_equal"]          # exactly 0.01 does not survive a round trip through degrees
    assert set(changes.loc[changes.kind == "new", "src_id"]) - edge == city.planted["new"]
    assert set(changes.loc[changes.kind == "destroyed", "src_id"]) - edge == city.planted["destroyed"]
    assert summary["crs"] == "EPSG:26985"
    kinds = summary["kinds"]
    n_pos, n_neg = sum(kinds["positive"].values()), sum(kinds["negative"].values())
    assert n_pos >= 5 and n_neg == summary["negative"]["written"]
    assert n_neg == n_pos or any("negative patches short" in note for note in summary["notes"])
    ds = PatchDataset(tmp_path / "ds")
    assert ds.info["sources"][0]["after_warped"] is True
    assert all(ds[i]["meta"]["valid_fraction"] >= 0.99 for i in range(0, len(ds), 5))
    # every patch lies inside the part both images cover
    index = pd.read_csv(tmp_path / "ds" / "index.csv", keep_default_na=False)
    covered = shapely.box(*bounds)
    assert shapely.covers(covered, boxes(index)).all()


def test_a_positive_is_moved_off_or_dropped_for_a_changed_building_of_another_split(city, tmp_path):
    """Hand-placed buildings at the border of two blocks of different splits (patch 16 m, blocks 32 m):
    X and Y, new, 2 m apart with Y reaching 3 m into X's block: X's patch is moved to the side that
    does not touch Y, Y's reaches over the border to hold Y; D (demolished) and N (new) overlap by a
    corner across the border: no patch holds one without touching the other, both are dropped; L is
    larger than a patch: its patch holds part of it."""
    import yaml

    opts = WdcOptions(patch=32, block=2, noisy=60, building_share=0.5, margin=2, workers=0)
    side, (x0, top) = 32.0, (city.transform.c, city.transform.f)
    splits = assign_splits(100, (0.7, 0.1, 0.2), 0)                  # 10 x 10 blocks of 32 m
    borders = [(i, j) for i in range(1, 9) for j in range(2, 9) if splits[i * 10 + j - 1] != splits[i * 10 + j]]
    (i1, j1), (i2, j2) = borders[0], next(b for b in borders if b[0] > borders[0][0] + 1)
    bx1, y1 = x0 + side * j1, top - side * i1 - 20
    bx2, y2 = x0 + side * j2, top - side * i2 - 20
    box = shapely.box
    new = {"X": box(bx1 - 9, y1, bx1 - 4, y1 + 6), "Y": box(bx1 - 3, y1, bx1 + 7, y1 + 6),
           "N": box(bx2, y2 + 5.5, bx2 + 8, y2 + 11.5), "L": box(x0 + 100, top - 300, x0 + 120, top - 290)}
    gone = {"D": box(bx2 - 8, y2, bx2 + 0.5, y2 + 6)}
    kept = {f"S{k}": box(x0 + 40 * k + 5, top - 250, x0 + 40 * k + 13, top - 242) for k in range(1, 6)}
    for year, shapes in ((2010, {**gone, **kept}), (2015, {**new, **kept})):
        gpd.GeoDataFrame({"bid": list(shapes)}, geometry=list(shapes.values()), crs="EPSG:26985").to_file(
            tmp_path / f"b{year}.gpkg", engine="pyogrio")
    manifest = tmp_path / "border.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "border", "pairs": [[2010, 2015]], "filter_year": 2015,
        "imagery": {y: {"source": str(city.imagery[y])} for y in (2010, 2015)},
        "footprints": {y: {"source": f"b{y}.gpkg", "id_field": "bid"} for y in (2010, 2015)}}))
    summary = build_wdc(manifest, tmp_path / "ds", options=opts)
    index = pd.read_csv(tmp_path / "ds" / "index.csv", keep_default_na=False)
    assert summary["changes"] == {"2010-2015": {"new": 4, "destroyed": 1}}
    assert {k: summary["positive"][k] for k in ("written", "moved", "dropped_other_split", "not_whole")} == \
        {"written": 3, "moved": 1, "dropped_other_split": 2, "not_whole": 1}
    pos = index[index.kind == "positive"].set_index("change_id")
    assert set(pos.index) == {"new:X", "new:Y", "new:L"}
    px, py, pl = (shapely.box(*pos.loc[f"new:{k}", ["minx", "miny", "maxx", "maxy"]]) for k in "XYL")
    assert px.covers(new["X"]) and shapely.area(px.intersection(new["Y"])) == 0 and px.bounds[2] <= bx1
    assert py.covers(new["Y"]) and py.bounds[0] < bx1                 # over the border, into X's block
    assert not pl.covers(new["L"]) and shapely.area(pl.intersection(new["L"])) > 0
    assert pos.loc["new:X", "split"] != pos.loc["new:Y", "split"]
    # D and N: in two splits, and no patch touches either across the border of its split
    names = [*new, *gone]
    geoms = np.array([*new.values(), *gone.values()])
    own = split_of_centre(tmp_path / "ds", geoms)
    assert own[names.index("D")] != own[names.index("N")]
    assert all(s <= {o} for s, o in zip(splits_touching(index, geoms), own))
    assert_no_ground_in_two_splits(index)


def test_positive_windows_of_two_splits_that_would_overlap_are_moved_apart(city, tmp_path):
    """X and Y, new, 8 m apart, each crossing the border of two blocks of different splits: their
    windows (X's in its block, Y's centred) do not touch the other building but overlap each other;
    the later one in the seeded order moves."""
    import yaml

    x0, top = city.transform.c, city.transform.f
    splits = assign_splits(100, (0.7, 0.1, 0.2), 0)
    i, j = next((i, j) for i in range(1, 9) for j in range(2, 9) if splits[i * 10 + j - 1] != splits[i * 10 + j])
    bx, y = x0 + 32.0 * j, top - 32.0 * (i + 1) + 4         # 4 m above the bottom of block row i
    new = {"X": shapely.box(bx - 4, y, bx + 2, y + 4), "Y": shapely.box(bx - 2, y + 12, bx + 4, y + 16)}
    for year, shapes in ((2010, {}), (2015, new)):
        gpd.GeoDataFrame({"bid": list(shapes)}, geometry=list(shapes.values()), crs="EPSG:26985").to_file(
            tmp_path / f"b{year}.gpkg", engine="pyogrio")
    manifest = tmp_path / "pair.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "pair", "pairs": [[2010, 2015]],
        "imagery": {y: {"source": str(city.imagery[y])} for y in (2010, 2015)},
        "footprints": {y: {"source": f"b{y}.gpkg", "id_field": "bid"} for y in (2010, 2015)}}))
    summary = build_wdc(manifest, tmp_path / "ds", options=WdcOptions(patch=32, block=2, noisy=0, workers=0))
    index = pd.read_csv(tmp_path / "ds" / "index.csv", keep_default_na=False)
    pos = index[index.kind == "positive"].set_index("change_id")
    assert summary["positive"]["moved"] == 1 and summary["positive"]["dropped_other_split"] == 0
    assert set(pos.index) == {"new:X", "new:Y"} and pos.loc["new:X", "split"] != pos.loc["new:Y", "split"]
    for k in "XY":
        assert shapely.box(*pos.loc[f"new:{k}", ["minx", "miny", "maxx", "maxy"]]).covers(new[k])
    assert_no_ground_in_two_splits(index)


def test_the_bundled_example_runs_offline_end_to_end(tmp_path):
    """examples/wdc_naip.yaml: NAIP 2009/2020 and hand-digitised footprints from the repository, into
    tmp_path; the buildings and changes are the ones digitised, and docs/datasets.md shows this run."""
    root = Path(__file__).resolve().parents[1]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (root / "examples").iterdir())
    res = CliRunner().invoke(app, ["build-wdc", "--manifest", str(root / "examples" / "wdc_naip.yaml"),
                                   "--out", str(tmp_path / "wdc_example"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "wdc_example"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["buildings"] == {"2009": 8, "2020": 8}
    assert summary["changes"] == {"2009-2020": {"new": 1, "destroyed": 1}}
    changes = gpd.read_file(out / "changes_2009_2020.gpkg", layer="changes")
    assert sorted(changes.kind + ":" + changes.src_id) == ["destroyed:n4", "new:n5"]
    index = pd.read_csv(out / "index.csv", keep_default_na=False)
    pos = index[index.kind == "positive"]
    geom = dict(zip(changes.kind + ":" + changes.src_id, changes.geometry))
    assert len(pos) == 2 and shapely.covers(boxes(pos), np.array([geom[c] for c in pos.change_id])).all()
    ds = PatchDataset(out)
    for i in pos.index:
        assert ds[int(i)]["label"].sum() > 0 and ds[int(i)]["before"].shape == (4, 32, 32)
    assert_no_ground_in_two_splits(index)
    # the run documented in docs/datasets.md is this one, line for line (the timing aside)
    docs = (root / "docs" / "datasets.md").read_text()
    for line in res.stdout.splitlines():
        line = line.strip()
        if line and not line.startswith("done:"):
            assert line in docs, line
    assert f"done: {summary['patches']['total']} patch pairs" in docs
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (root / "examples").iterdir()) == before


def test_the_example_footprints_are_the_ones_its_script_writes(tmp_path):
    """examples/buildings_naip_*.geojson come from the rectangles recorded in make_wdc_footprints.py."""
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "examples"
    spec = importlib.util.spec_from_file_location("make_wdc_footprints", root / "make_wdc_footprints.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)
    for year in (2009, 2020):
        made = gpd.read_file(tmp_path / f"buildings_naip_{year}.geojson")
        kept = gpd.read_file(root / f"buildings_naip_{year}.geojson")
        assert list(made.id) == list(kept.id) == list(script.BUILDINGS[year])
        assert made.crs == kept.crs and made.crs.to_epsg() == 26914
        assert shapely.equals(np.asarray(made.geometry), np.asarray(kept.geometry)).all()
