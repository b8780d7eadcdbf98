"""End to end: ``detect`` on real GeoTIFFs writes every output on BEFORE's grid and finds planted change."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import pyproj
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from scipy import ndimage

from geochange.detect import DetectOptions, detect
from geochange.errors import GeochangeError
from geochange.metrics import ConfusionMatrix
from geochange.models.cva import CVA
from tests.conftest import make_planted_scene, texture, write_tif

OUTPUTS = ["change_probability.tif", "change_mask.tif", "changes.gpkg", "changes.shp", "changes.qml",
           "quicklook.png", "summary.json"]


def register_model(monkeypatch, name: str, cls: type) -> None:
    """Make a model class defined in a test reachable by name, for this test only."""
    import sys
    import types

    from geochange import models

    mod = types.ModuleType(f"test_model_{name}")
    setattr(mod, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(models.MODELS, name, f"{mod.__name__}:{cls.__name__}")


@pytest.fixture
def result(planted, tmp_path):
    out = tmp_path / "out"
    summary = detect(str(planted.before), str(planted.after), out, DetectOptions(tile=96, overlap=16))
    return planted, out, summary


def test_all_outputs_on_before_grid(result):
    scene, out, summary = result
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    for name in ("change_probability.tif", "change_mask.tif"):
        with rasterio.open(out / name) as ds:
            assert ds.crs == scene.crs
            assert ds.res == (1.0, 1.0)
            # the grid is BEFORE's: same pixel size, origin on BEFORE's pixel corners
            col = (ds.transform.c - scene.transform.c) / scene.transform.a
            row = (ds.transform.f - scene.transform.f) / scene.transform.e
            assert col == int(col) and row == int(row)
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert ds.profile["tiled"] and ds.compression.name == "deflate"
    with rasterio.open(out / "change_probability.tif") as ds:
        assert ds.dtypes[0] == "float32" and ds.nodata == -1.0
        prob = ds.read(1)
        valid = prob != -1
        assert prob[valid].min() >= 0 and prob[valid].max() <= 1


def test_invalid_areas_are_nodata_never_changed(result):
    scene, out, summary = result
    with rasterio.open(out / "change_mask.tif") as ds:
        mask = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        win = rasterio.windows.from_bounds(*ds.bounds, transform=scene.transform)
        r0, c0 = int(round(win.row_off)), int(round(win.col_off))
    assert set(np.unique(mask)) <= {0, 1, 255}
    # BEFORE's nodata strip (bottom 12 rows) and AFTER's (left 15 columns) are nodata
    h = scene.shape[0] - r0
    assert (mask[h - 12:h] == 255).all()  # BEFORE's nodata strip, exactly (it is on the output grid)
    # AFTER's strip (left 15 columns) went through two warps: its edge may soften by a pixel
    assert (mask[:, : max(0, 13 - c0)] == 255).all()
    assert (mask[: h - 12, 17 - c0:] != 255).all()  # and everything else is valid
    with rasterio.open(out / "change_probability.tif") as ds:
        assert ((ds.read(1) == -1) == (mask == 255)).all()


def test_planted_changes_found_under_illumination_change(result):
    scene, out, summary = result
    with rasterio.open(out / "change_mask.tif") as ds:
        mask = ds.read(1)
        win = rasterio.windows.from_bounds(*ds.bounds, transform=scene.transform)
        r0, c0 = int(round(win.row_off)), int(round(win.col_off))
    truth = scene.truth_array[r0:r0 + mask.shape[0], c0:c0 + mask.shape[1]]
    cm = ConfusionMatrix()
    cm.update(mask == 1, truth == 1, (truth != 255) & (mask != 255))
    assert cm.scores()["f1"] >= 0.6, cm.scores()


def test_polygons_open_with_crs_and_fields(result):
    scene, out, summary = result
    for name in ("changes.gpkg", "changes.shp"):
        gdf = gpd.read_file(out / name, layer="changes" if name.endswith(".gpkg") else None)
        assert gdf.crs == scene.crs
        assert {"id", "area_m2", "perim_m", "mean_prob", "max_prob"} <= set(gdf.columns)
        assert len(gdf) == summary["polygons"] > 0
        assert gdf.geometry.is_valid.all()
        assert gdf["id"].is_unique
        assert (gdf["mean_prob"] >= 0.5).all() and (gdf["max_prob"] <= 1).all()
        # polygons lie inside the output raster's footprint, in map coordinates
        with rasterio.open(out / "change_mask.tif") as ds:
            b = ds.bounds
        minx, miny, maxx, maxy = gdf.total_bounds
        assert b.left - 1 <= minx and maxx <= b.right + 1 and b.bottom - 1 <= miny and maxy <= b.top + 1
    with sqlite3.connect(out / "changes.gpkg") as con:
        assert con.execute("SELECT count(*) FROM layer_styles WHERE useAsDefault = 1").fetchone()[0] == 1
    assert "outline_color" in (out / "changes.qml").read_text()


def test_polygon_area_matches_mask_area(result):
    scene, out, summary = result
    gdf = gpd.read_file(out / "changes.gpkg", layer="changes")
    with rasterio.open(out / "change_mask.tif") as ds:
        mask = ds.read(1)
    # 1 m pixels: the polygons are exactly the changed pixels of the mask, the statistics count them
    assert summary["changed_pixels"] == int((mask == 1).sum())
    assert summary["changed_area_m2"] == summary["changed_pixels"] * 1.0
    assert gdf["area_m2"].sum() == pytest.approx(summary["changed_area_m2"], abs=0.01)
    np.testing.assert_allclose(gdf.geometry.area, gdf["area_m2"])
    # the default MMU (9 pixels, at least 10 m²) and no hysteresis, as summary.json says
    assert summary["min_area_m2"] == 10.0 and summary["hysteresis_low"] == summary["threshold"]
    assert (gdf["area_m2"] >= 10.0).all() and summary["regions_dropped"] > 0


def test_summary_and_quicklook(result):
    scene, out, summary = result
    saved = json.loads((out / "summary.json").read_text())
    for key in ("inputs", "crs", "grid", "model", "threshold", "changed_area_m2", "polygons", "timings_s",
                "geochange_version"):
        assert key in saved
    assert saved["crs"]["epsg"] == 32615
    assert saved["inputs"]["after_warped"] is True
    assert saved["model"]["name"] == "cva" and saved["model"]["magnitude_threshold"] > 0
    img = Image.open(out / "quicklook.png")
    assert img.mode == "RGB" and img.width > 2 * img.height


def test_min_area_drops_specks(planted, tmp_path):
    a = detect(str(planted.before), str(planted.after), tmp_path / "a", DetectOptions(tile=128))
    b = detect(str(planted.before), str(planted.after), tmp_path / "b", DetectOptions(tile=128, min_area=100))
    c = detect(str(planted.before), str(planted.after), tmp_path / "c", DetectOptions(tile=128, min_area=0))
    gdf = gpd.read_file(tmp_path / "b" / "changes.gpkg", layer="changes")
    assert b["polygons"] <= a["polygons"] < c["polygons"]
    assert (gdf["area_m2"] >= 100).all()
    # ... and from the mask and the statistics: a region is change or not, everywhere
    with rasterio.open(tmp_path / "b" / "change_mask.tif") as ds:
        mask = ds.read(1)
    assert b["changed_pixels"] == int((mask == 1).sum()) and b["regions_dropped"] >= a["regions_dropped"] > 0
    assert gdf["area_m2"].sum() == pytest.approx(b["changed_area_m2"], abs=0.01)
    labels, n = ndimage.label(mask == 1)
    assert n == b["polygons"] and (np.bincount(labels.ravel())[1:] >= 100).all()
    # --min-area 0: every candidate region is change, specks of one pixel too
    assert c["regions_dropped"] == 0


def test_web_mercator_at_60n_measures_ground_areas(tmp_path):
    """EPSG:3857 far from the equator: polygon and mask areas are the geodesic ones (~1/4 of planar)."""
    rng = np.random.default_rng(1)
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.0, 60.0)
    transform = Affine(5.0, 0.0, x, 0.0, -5.0, y)
    before = texture(rng, (80, 90))
    after = before + rng.normal(0, 1.0, before.shape).astype(np.float32)
    after[:, 20:34, 30:47] += 80.0       # a planted change
    after[:, 60:62, 10:13] += 80.0
    crs = CRS.from_epsg(3857)
    write_tif(tmp_path / "b.tif", before, crs, transform)
    write_tif(tmp_path / "a.tif", after, crs, transform)
    summary = detect(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), tmp_path / "o", DetectOptions(tile=64, overlap=16))
    with rasterio.open(tmp_path / "o" / "change_mask.tif") as ds:
        mask, t = ds.read(1), ds.transform
    rows, cols = np.nonzero(mask == 1)
    assert len(rows) >= 14 * 17
    # the truth: each changed pixel's corners to lon/lat, geodesic area on WGS84
    to_lonlat = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    truth = 0.0
    for r, c in zip(rows, cols):
        xs, ys = zip(*(t @ p for p in ((c, r), (c + 1, r), (c + 1, r + 1), (c, r + 1))))
        truth += abs(geod.polygon_area_perimeter(*to_lonlat.transform(xs, ys))[0])
    gdf = gpd.read_file(tmp_path / "o" / "changes.gpkg", layer="changes")
    assert summary["changed_area_m2"] == pytest.approx(truth, rel=0.01)
    assert gdf["area_m2"].sum() == pytest.approx(truth, rel=0.01)
    assert summary["min_area_m2"] == pytest.approx(9 * 25.0 / 4, rel=0.01)  # 9 ground pixels


def test_tile_size_does_not_change_result(planted_same_grid, tmp_path):
    """No seams: a pixelwise model gives the same map whatever the window size."""
    s = planted_same_grid
    detect(str(s.before), str(s.after), tmp_path / "small", DetectOptions(tile=40, overlap=12))
    detect(str(s.before), str(s.after), tmp_path / "big", DetectOptions(tile=4096))
    with rasterio.open(tmp_path / "small" / "change_probability.tif") as a, \
            rasterio.open(tmp_path / "big" / "change_probability.tif") as b:
        assert np.allclose(a.read(1), b.read(1), atol=1e-5)
    small = gpd.read_file(tmp_path / "small" / "changes.gpkg", layer="changes")
    big = gpd.read_file(tmp_path / "big" / "changes.gpkg", layer="changes")
    assert len(small) == len(big)
    assert small.union_all().symmetric_difference(big.union_all()).area < 1e-6


def test_per_pixel_model_needs_no_overlap(planted_same_grid, tmp_path, monkeypatch):
    """cva (per pixel) runs on windows that do not overlap, and maps exactly what overlapping windows
    map; a filtered cva, or a model whose context is unknown, keeps the overlap."""
    class Blended(CVA):
        name = "blended_cva"
        context_px = None

    register_model(monkeypatch, "blended_cva", Blended)
    s = planted_same_grid
    plain = detect(str(s.before), str(s.after), tmp_path / "plain", DetectOptions(tile=48, overlap=16))
    blended = detect(str(s.before), str(s.after), tmp_path / "blended",
                     DetectOptions(model="blended_cva", tile=48, overlap=16))
    median = detect(str(s.before), str(s.after), tmp_path / "median",
                    DetectOptions(tile=48, overlap=16, model_params={"filter": "median"}))
    assert plain["engine"]["overlap"] == 0 and blended["engine"]["overlap"] == 16
    assert median["engine"]["overlap"] == 16
    assert plain["engine"]["windows"] < blended["engine"]["windows"]
    for name, tol in (("change_mask.tif", 0), ("change_probability.tif", 2 * 2.0**-20)):
        with rasterio.open(tmp_path / "plain" / name) as a, rasterio.open(tmp_path / "blended" / name) as b:
            assert np.abs(a.read(1).astype(float) - b.read(1)).max() <= tol
    assert plain["polygons"] == blended["polygons"] > 0


def test_seeded_runs_are_reproducible(planted_same_grid, tmp_path):
    s = planted_same_grid
    for name in ("r1", "r2"):
        detect(str(s.before), str(s.after), tmp_path / name, DetectOptions(tile=128, seed=3))
    with rasterio.open(tmp_path / "r1" / "change_probability.tif") as a, \
            rasterio.open(tmp_path / "r2" / "change_probability.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_refuses_to_overwrite_then_overwrites(planted_same_grid, tmp_path):
    s = planted_same_grid
    detect(str(s.before), str(s.after), tmp_path / "o", DetectOptions(tile=128))
    stamp = (tmp_path / "o" / "summary.json").stat().st_mtime_ns
    with pytest.raises(GeochangeError, match="--overwrite"):
        detect(str(s.before), str(s.after), tmp_path / "o", DetectOptions(tile=128))
    assert (tmp_path / "o" / "summary.json").stat().st_mtime_ns == stamp
    detect(str(s.before), str(s.after), tmp_path / "o", DetectOptions(tile=128, overwrite=True))
    assert (tmp_path / "o" / "summary.json").stat().st_mtime_ns != stamp


def test_default_out_dir_is_beside_before(planted_same_grid):
    s = planted_same_grid
    detect(str(s.before), str(s.after), None, DetectOptions(tile=128))
    assert (s.before.parent / "before_change" / "change_mask.tif").is_file()


def test_failure_mid_run_leaves_nothing_under_final_names(planted_same_grid, tmp_path, monkeypatch):
    """A model that breaks half-way: no output file appears, no temporary file stays."""
    from geochange.models.base import ChangeModel

    class Breaks(ChangeModel):
        name = "breaks"
        config_class = dict
        calls = 0

        def predict(self, before, after, valid):
            Breaks.calls += 1
            if Breaks.calls > 2:
                raise RuntimeError("model failed")
            return np.zeros(valid.shape, np.float32)

    register_model(monkeypatch, "breaks", Breaks)
    s = planted_same_grid
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="model failed"):
        detect(str(s.before), str(s.after), out, DetectOptions(model="breaks", tile=40, overlap=8, batch_size=1))
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not_raster", "no_overlap", "no_crs", "local_crs", "all_nodata"])
def test_bad_input_is_one_clear_error(planted_same_grid, tmp_path, case):
    s = planted_same_grid
    before, after = str(s.before), str(s.after)
    if case == "missing":
        after = str(tmp_path / "nope.tif")
        match = "no such file"
    elif case == "not_raster":
        after = str(tmp_path / "notes.txt")
        (tmp_path / "notes.txt").write_text("not an image")
        match = "not a raster"
    elif case == "no_overlap":
        with rasterio.open(s.after) as ds:
            arr, t = ds.read(), ds.transform
        after = str(write_tif(tmp_path / "far.tif", arr, ds.crs, t * rasterio.Affine.translation(10_000, 0), nodata=0))
        match = "do not overlap"
    elif case == "no_crs":
        with rasterio.open(s.after) as ds:
            arr = ds.read()
        after = str(write_tif(tmp_path / "nocrs.tif", arr, None, rasterio.Affine.identity()))
        match = "no CRS"
    elif case == "local_crs":
        with rasterio.open(s.after) as ds:
            arr, t = ds.read(), ds.transform
        local = rasterio.crs.CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
        after = str(write_tif(tmp_path / "local.tif", arr, local, t))
        match = "cannot relate the CRS"
    else:
        with rasterio.open(s.after) as ds:
            arr, t, crs = ds.read(), ds.transform, ds.crs
        after = str(write_tif(tmp_path / "empty.tif", np.zeros_like(arr), crs, t, nodata=0))
        match = "no valid pixels"
    out = tmp_path / "out"
    with pytest.raises(GeochangeError, match=match):
        detect(before, after, out, DetectOptions(tile=128))
    assert not out.exists() or list(out.iterdir()) == []


def test_tile_larger_than_raster_just_works(planted_same_grid, tmp_path):
    s = planted_same_grid
    summary = detect(str(s.before), str(s.after), tmp_path / "o", DetectOptions(tile=5000, overlap=64))
    assert summary["engine"]["windows"] == 1


def test_unwritable_output_path(planted_same_grid, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GeochangeError, match="not a folder|cannot write"):
        detect(str(planted_same_grid.before), str(planted_same_grid.after), blocker / "out", DetectOptions())


def test_pair_in_two_crs_partial_overlap(two_crs_tiles, tmp_path):
    """PRE in UTM 15N, POST in WGS84, overlapping in part; outputs on the PRE grid."""
    pre, post = two_crs_tiles.pre, two_crs_tiles.post
    summary = detect(str(pre), str(post), tmp_path / "j", DetectOptions(tile=128, min_area=5))
    with rasterio.open(pre) as src, rasterio.open(tmp_path / "j" / "change_mask.tif") as ds:
        assert ds.crs == src.crs and ds.res == src.res
        col = (ds.transform.c - src.transform.c) / src.transform.a
        assert abs(col - round(col)) < 1e-6
        mask = ds.read(1)
    # the rotated WGS84 footprint leaves nodata corners, never "changed"
    assert 0.0 < (mask == 255).mean() < 0.5
    assert summary["polygons"] > 0
    gdf = gpd.read_file(tmp_path / "j" / "changes.gpkg", layer="changes")
    assert gdf.crs.to_epsg() == 26915 and (gdf["area_m2"] >= 5).all()
    planted = shapely.box(*np.array(two_crs_tiles.change).T)
    assert shapely.intersects(shapely.union_all(gdf.geometry.values), planted).all()


def test_typed_model_writes_change_types(planted_same_grid, tmp_path, monkeypatch):
    """A model that tells change types apart gets change_type.tif and a polygon `type` attribute."""
    from geochange.models.cva import CVA

    class TypedCVA(CVA):
        name = "typed_cva"
        n_types = 2

        def predict_with_types(self, before, after, valid):
            # type 1: brighter after (new roofs here), type 2: darker after
            kinds = np.where((after - before).mean(axis=1) > 0, 1, 2).astype(np.uint8)
            return self.predict(before, after, valid), kinds

    register_model(monkeypatch, "typed_cva", TypedCVA)
    s = planted_same_grid
    out = tmp_path / "typed"
    detect(str(s.before), str(s.after), out, DetectOptions(model="typed_cva", tile=64, overlap=16))
    with rasterio.open(out / "change_type.tif") as ds, rasterio.open(out / "change_mask.tif") as dm:
        kinds, mask = ds.read(1), dm.read(1)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert set(np.unique(kinds)) <= {0, 1, 2, 255}
    assert ((kinds == 255) == (mask == 255)).all()
    assert ((kinds == 0) == (mask == 0)).all()
    assert {1, 2} <= set(np.unique(kinds))
    gdf = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert "type" in gdf.columns and set(gdf["type"]) <= {1, 2}
    # a polygon's type is the majority type of its pixels
    big = gdf.loc[gdf["area_m2"].idxmax()]
    rows, cols = rasterio.features.geometry_mask([big.geometry], mask.shape, s.transform, invert=True).nonzero()
    values = kinds[rows, cols]
    values = values[(values == 1) | (values == 2)]
    assert big["type"] == np.bincount(values).argmax()


def test_bundled_naip_example_has_no_specks_and_true_areas(tmp_path):
    """The README's example (copied, so nothing is written beside the checkout's files): no polygon
    below the minimum mapping unit, and the polygons' summed area is the mask's changed area."""
    import shutil

    examples = Path(__file__).resolve().parent.parent / "examples"
    for name in ("naip_2009.tif", "naip_2020.tif"):
        shutil.copy(examples / name, tmp_path / name)
    summary = detect(str(tmp_path / "naip_2009.tif"), str(tmp_path / "naip_2020.tif"), tmp_path / "out")
    gdf = gpd.read_file(tmp_path / "out" / "changes.gpkg", layer="changes")
    mmu = summary["min_area_m2"]
    assert mmu == 9 * 25.0 and len(gdf) == summary["polygons"] > 0
    assert (gdf["area_m2"] >= mmu).all()
    assert gdf["area_m2"].sum() == pytest.approx(summary["changed_area_m2"], rel=0.01)
    with rasterio.open(tmp_path / "out" / "change_mask.tif") as ds:
        changed = int((ds.read(1) == 1).sum())
    assert changed * 25.0 == pytest.approx(summary["changed_area_m2"], rel=1e-6)


def test_quicklook_shows_the_kept_regions(planted_same_grid, tmp_path):
    """The red overlay is the published mask (after the region decision), not every pixel over the threshold."""
    s = planted_same_grid
    summary = detect(str(s.before), str(s.after), tmp_path / "o", DetectOptions(tile=128, min_area=150))
    with rasterio.open(tmp_path / "o" / "change_mask.tif") as ds:
        mask = ds.read(1)
    h, w = mask.shape          # 240 x 300: the canvas is at full resolution
    img = np.asarray(Image.open(tmp_path / "o" / "quicklook.png"))[-h:]   # below the captions
    gap = (img.shape[1] - 3 * w) // 2
    after, overlay = img[:, w + gap:2 * w + gap], img[:, 2 * (w + gap):]
    red = (overlay != after).any(axis=2)
    assert summary["regions_dropped"] > 0 and red.sum() > 0 and np.array_equal(red, mask == 1)


def truncated_copy(src: Path, dst: Path, keep: float) -> Path:
    """The first ``keep`` share of ``src``'s bytes (a download cut short): header intact, pixels missing."""
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("which", ["before", "after"])
def test_a_truncated_input_is_one_line_naming_it(tmp_path, which):
    s = make_planted_scene(tmp_path / "s", after_crs=None)
    bad = truncated_copy(getattr(s, which), tmp_path / "bad.tif", 0.1)
    paths = {"before": str(s.before), "after": str(s.after), which: str(bad)}
    with pytest.raises(GeochangeError, match=r"bad.tif: cannot read its pixels, the file is truncated or corrupt "
                                             r"\(.*IReadBlock failed"):
        detect(paths["before"], paths["after"], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_file_found_corrupt_mid_run_leaves_nothing(tmp_path):
    """The scene sample reads only the middle; the damage is in the last rows, met by the engine."""
    s = make_planted_scene(tmp_path / "s", height=600, width=300, after_crs=None)
    uncompressed = tmp_path / "after_strips.tif"
    with rasterio.open(s.after) as src:
        profile = src.profile | {"compress": None, "tiled": False, "blockysize": 1}
        with rasterio.open(uncompressed, "w", **profile) as dst:
            dst.write(src.read())
    bad = truncated_copy(uncompressed, tmp_path / "bad.tif", 0.8)
    opts = DetectOptions(tile=64, overlap=16, coregister="off", sample_windows=1, sample_size=48)
    with pytest.raises(GeochangeError, match="bad.tif: cannot read its pixels"):
        detect(str(s.before), str(bad), tmp_path / "o", opts)
    assert not (tmp_path / "o").exists()


def test_sparse_valid_data_is_detected_not_refused(tmp_path):
    """99.99 % nodata (676 valid pixels) where the spread-out scene sample does not look."""
    from tests.test_pair import sparse_pair

    b, a, (r, c) = sparse_pair(tmp_path / "s")
    detect(str(b), str(a), tmp_path / "o", DetectOptions(min_area=0, normalize="none"))
    with rasterio.open(tmp_path / "o" / "change_mask.tif") as ds:
        mask = ds.read(1, window=rasterio.windows.Window(c, r, 26, 26))
    assert (mask[:, :13] == 1).mean() > 0.9 and (mask[:, 13:] == 0).mean() > 0.9
