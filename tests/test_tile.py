"""tile(): chip pairs of two rasters (aligned as detect aligns them), labels, spatial splits, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
from rasterio.windows import Window

from geochange.data import PatchDataset
from geochange.data.tile import assign_splits, plan_chips, tile
from geochange.errors import GeochangeError
from geochange.io.pair import RasterPair


def read_index(out: Path) -> list[dict]:
    with open(out / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def truth_window(scene, info: dict, meta: dict) -> np.ndarray:
    """The planted truth (on BEFORE's full grid) under a patch's window of the pair grid."""
    off = info["sources"][0]["before_window"]
    r, c, n = meta["row_off"] + off["row_off"], meta["col_off"] + off["col_off"], meta["size"]
    return scene.truth_array[r:r + n, c:c + n]


def test_tile_with_raster_labels_matches_the_pair_and_the_truth(planted, tmp_path):
    out = tmp_path / "ds"
    summary = tile(str(planted.before), str(planted.after), out, labels=str(planted.truth),
                   size=32, overlap=8, block=2, seed=0)
    assert summary["patches"] + summary["skipped_nodata"] == summary["chips_planned"]
    assert summary["skipped_nodata"] > 0            # the nodata strips of both dates
    assert summary["patches"] == sum(summary["splits"].values()) == sum(summary["labels"].values())
    assert summary["labels"]["changed"] > 0 and summary["labels"]["unknown"] == 0
    assert summary["dtype"] == "uint8" and summary["crs"] == "EPSG:32615"

    ds = PatchDataset(out)
    info = ds.info
    assert info["counts"]["total"] == len(ds) == summary["patches"]
    assert info["sources"][0]["after_warped"] is True and info["params"]["overlap"] == 8
    n_changed_patches = 0
    with RasterPair.open(str(planted.before), str(planted.after)) as pair:
        for i in range(len(ds)):
            item = ds[i]
            meta = item["meta"]
            assert meta["valid_fraction"] >= 0.99
            window = Window(meta["col_off"], meta["row_off"], 32, 32)
            wp = pair.read_raw(window)      # what detect reads: the stored chips are exactly that, raw
            np.testing.assert_array_equal(item["before"], wp.before.astype(np.uint8))
            np.testing.assert_array_equal(item["after"], wp.after.astype(np.uint8))
            label, truth = item["label"], truth_window(planted, info, meta)
            assert np.array_equal(label == 255, ~wp.valid | (truth == 255))
            known = label != 255
            np.testing.assert_array_equal(label[known], truth[known])
            planted_change = bool((truth[known] == 1).any())
            assert meta["label"] == int(planted_change)
            n_changed_patches += planted_change
    assert n_changed_patches == summary["labels"]["changed"]


def test_index_bounds_are_the_windows_on_befores_grid(planted, tmp_path):
    out = tmp_path / "ds"
    tile(str(planted.before), str(planted.after), out, size=48, overlap=16, block=3)
    info = json.loads((out / "dataset.json").read_text())
    off = info["sources"][0]["before_window"]
    t = planted.transform
    rows = read_index(out)
    assert rows and all(r["crs"] == "EPSG:32615" and r["pair"] == "before->after" for r in rows)
    for r in rows:
        col, row, n = int(r["col_off"]) + off["col_off"], int(r["row_off"]) + off["row_off"], int(r["size"])
        assert float(r["minx"]) == pytest.approx(t.c + col * t.a)
        assert float(r["maxx"]) == pytest.approx(t.c + (col + n) * t.a)
        assert float(r["maxy"]) == pytest.approx(t.f + row * t.e)
        assert float(r["miny"]) == pytest.approx(t.f + (row + n) * t.e)
        assert r["label"] == "-1" and r["changed_fraction"] == ""     # no labels given
    assert PatchDataset(out)[0]["label"].min() == 255


def test_tile_with_vector_labels(planted, tmp_path):
    # the planted change as polygons, stored in another CRS (EPSG:4326) than BEFORE's
    changed = planted.truth_array == 1
    shapes = rasterio.features.shapes(changed.astype(np.uint8), mask=changed, transform=planted.transform)
    polys = [shapely.geometry.shape(geom) for geom, _ in shapes]
    gpd.GeoDataFrame(geometry=polys, crs=planted.crs).to_crs(4326).to_file(tmp_path / "changes.gpkg", layer="changes")
    out = tmp_path / "ds"
    summary = tile(str(planted.before), str(planted.after), out, labels=str(tmp_path / "changes.gpkg"),
                   size=32, overlap=0, block=2)
    assert summary["labels"]["changed"] > 0
    ds = PatchDataset(out)
    agree = total = 0
    for i in range(len(ds)):
        item = ds[i]
        truth = truth_window(planted, ds.info, item["meta"])
        both = (item["label"] != 255) & (truth != 255)
        agree += int(np.count_nonzero(item["label"][both] == truth[both]))
        total += int(np.count_nonzero(both))
        assert item["meta"]["label"] in (0, 1)
    assert total > 0 and agree == total

    # the same labels through --label-layer
    out2 = tmp_path / "ds2"
    tile(str(planted.before), str(planted.after), out2, labels=str(tmp_path / "changes.gpkg"),
         label_layer="changes", size=32, overlap=0, block=2)
    assert [r["label"] for r in read_index(out2)] == [r["label"] for r in read_index(out)]


def windows_intersect(a: dict, b: dict) -> bool:
    ra, ca, rb, cb, n = int(a["row_off"]), int(a["col_off"]), int(b["row_off"]), int(b["col_off"]), int(a["size"])
    return ra < rb + n and rb < ra + n and ca < cb + n and cb < ca + n


def test_splits_are_spatially_disjoint_and_deterministic(planted_same_grid, tmp_path):
    s = planted_same_grid
    kwargs = dict(size=24, overlap=12, block=2, min_valid=0.5)
    tile(str(s.before), str(s.after), tmp_path / "a", seed=7, **kwargs)
    rows = read_index(tmp_path / "a")
    by_split = {k: [r for r in rows if r["split"] == k] for k in ("train", "val", "test")}
    assert all(by_split.values()), {k: len(v) for k, v in by_split.items()}
    # overlapping chips exist (overlap 12), but never across splits
    assert any(windows_intersect(a, b) for a, b in zip(by_split["train"], by_split["train"][1:]))
    for one, other in (("train", "test"), ("train", "val"), ("val", "test")):
        for a in by_split[one]:
            assert not any(windows_intersect(a, b) for b in by_split[other])

    tile(str(s.before), str(s.after), tmp_path / "b", seed=7, **kwargs)
    assert (tmp_path / "a" / "index.csv").read_bytes() == (tmp_path / "b" / "index.csv").read_bytes()
    tile(str(s.before), str(s.after), tmp_path / "c", seed=8, **kwargs)
    assert [r["split"] for r in read_index(tmp_path / "c")] != [r["split"] for r in rows]


def test_plan_chips_stays_in_blocks_and_covers_the_grid():
    h, w, size, overlap = 100, 130, 16, 4
    chips, block_splits, block_px = plan_chips(h, w, size, overlap, 3, (0.6, 0.2, 0.2), seed=0)
    assert block_px == 2 * 12 + 16
    covered = np.zeros((h, w), int)
    extent: dict[int, list] = {}
    for ch in chips:
        assert 0 <= ch.row_off <= h - size and 0 <= ch.col_off <= w - size
        assert ch.split == block_splits[ch.block]
        covered[ch.row_off:ch.row_off + size, ch.col_off:ch.col_off + size] += 1
        extent.setdefault(ch.block, []).append(ch)
    assert covered.min() >= 1                        # nothing left out at the edges
    boxes = {b: (min(c.row_off for c in cs), min(c.col_off for c in cs),
                 max(c.row_off for c in cs) + size, max(c.col_off for c in cs) + size) for b, cs in extent.items()}
    for b1, (r0, c0, r1, c1) in boxes.items():       # blocks' footprints never overlap
        for b2, (s0, d0, s1, d1) in boxes.items():
            if b1 < b2:
                assert not (r0 < s1 and s0 < r1 and c0 < d1 and d0 < c1)

    # without overlap, a plain grid at stride = size
    chips, _, _ = plan_chips(64, 64, 16, 0, 2, (1, 0, 0), seed=0)
    assert sorted((c.row_off, c.col_off) for c in chips) == [(r, c) for r in range(0, 64, 16) for c in range(0, 64, 16)]
    assert {c.split for c in chips} == {"train"}


def test_assign_splits():
    a = assign_splits(20, (0.8, 0.1, 0.1), seed=1)
    assert list(a) == list(assign_splits(20, (0.8, 0.1, 0.1), seed=1))
    assert [int(np.sum(a == s)) for s in ("train", "val", "test")] == [16, 2, 2]
    small = assign_splits(4, (0.8, 0.1, 0.1), seed=0)
    assert {s for s in small} == {"train", "val", "test"}   # every split gets a block when it can
    assert set(assign_splits(5, (1, 0, 0), seed=0)) == {"train"}


def test_tile_errors(planted, tmp_path):
    b, a = str(planted.before), str(planted.after)
    with pytest.raises(GeochangeError, match="larger than the overlap"):
        tile(b, a, tmp_path / "big", size=512)
    assert not (tmp_path / "big").exists() and not list(tmp_path.glob(".big.partial*"))
    with pytest.raises(GeochangeError, match="--overlap"):
        tile(b, a, tmp_path / "x", size=32, overlap=32)
    with pytest.raises(GeochangeError, match="--split"):
        tile(b, a, tmp_path / "x", size=32, split=(0, 0, 0))
    with pytest.raises(GeochangeError, match="no such file"):
        tile(b, a, tmp_path / "x", size=32, labels=str(tmp_path / "missing.tif"))
    with pytest.raises(GeochangeError, match="min-valid"):
        tile(b, a, tmp_path / "x", size=32, min_valid=1.5)
    assert not (tmp_path / "x").exists()

    tile(b, a, tmp_path / "ds", size=64)
    first = (tmp_path / "ds" / "index.csv").read_bytes()
    with pytest.raises(GeochangeError, match="overwrite"):
        tile(b, a, tmp_path / "ds", size=32)
    assert (tmp_path / "ds" / "index.csv").read_bytes() == first
    summary = tile(b, a, tmp_path / "ds", size=32, overwrite=True)
    assert len(PatchDataset(tmp_path / "ds")) == summary["patches"] and PatchDataset(tmp_path / "ds").size == 32


def test_summary_notes_empty_splits(planted_same_grid, tmp_path):
    s = planted_same_grid
    summary = tile(str(s.before), str(s.after), tmp_path / "one", size=32, block=50)
    assert summary["blocks"] == {"train": 1, "val": 0, "test": 0}
    assert summary["splits"]["val"] == summary["splits"]["test"] == 0
    assert summary["notes"] and "val and test" in summary["notes"][0]
