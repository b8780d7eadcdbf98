import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.warp
from rasterio.enums import Resampling
from affine import Affine
from shapely.geometry import MultiPolygon, box

from geochange.errors import GeochangeError
from geochange.evaluate import evaluate
from geochange.logs import configure_cli_logging
from geochange.metrics import ConfusionMatrix

SIZE = 64
RES = 10.0
X0, Y0 = 500000.0, 5000000.0  # UTM 33N, ~45 degrees north
UTM = "EPSG:32633"


def from_origin(west, north, xres, yres):
    return Affine(xres, 0.0, west, 0.0, -yres, north)


TRANSFORM = from_origin(X0, Y0, RES, RES)


def _write(path, array, crs=UTM, transform=TRANSFORM, nodata=None):
    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                   dtype=array.dtype, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return str(path)


def _expected(pred, truth, valid=None):
    valid = np.ones(pred.shape, bool) if valid is None else valid
    valid = valid & (pred != 255)
    cm = ConfusionMatrix()
    cm.update(pred == 1, truth, valid)
    return cm.scores()


@pytest.fixture
def pred_array():
    rng = np.random.default_rng(42)
    return rng.integers(0, 2, (SIZE, SIZE)).astype(np.uint8)


@pytest.fixture
def truth_array():
    """Blocky truth: 20 m blocks, so block edges lie 5 m away from every 10 m pixel centre."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 2, (SIZE // 2, SIZE // 2)).astype(np.uint8)
    return np.kron(blocks, np.ones((2, 2), np.uint8))


@pytest.fixture
def pred_path(tmp_path, pred_array):
    return _write(tmp_path / "pred.tif", pred_array, nodata=255)


@pytest.fixture
def truth_path(tmp_path, truth_array):
    return _write(tmp_path / "truth.tif", truth_array)


@pytest.fixture
def truth_4326_path(tmp_path, truth_array):
    """The blocky truth reprojected to EPSG:4326 at ~1 m, nodata 255 outside its footprint."""
    left, bottom, right, top = rasterio.transform.array_bounds(SIZE, SIZE, TRANSFORM)
    dst_transform, width, height = rasterio.warp.calculate_default_transform(
        UTM, "EPSG:4326", SIZE, SIZE, left, bottom, right, top, resolution=(1e-5, 1e-5))
    dst = np.full((height, width), 255, np.uint8)
    rasterio.warp.reproject(truth_array, dst, src_transform=TRANSFORM, src_crs=UTM,
                            dst_transform=dst_transform, dst_crs="EPSG:4326",
                            dst_nodata=255, resampling=Resampling.nearest)
    assert (dst == 255).any() and (dst == 1).any()
    return _write(tmp_path / "truth_4326.tif", dst, crs="EPSG:4326", transform=dst_transform, nodata=255)


# Polygon truth: pixel edges at multiples of 10 m, so every pixel is clearly in or out.
BOX = box(X0 + 100, Y0 - 300, X0 + 300, Y0 - 100)  # cols 10..29, rows 10..29
BOX2 = box(X0 + 250, Y0 - 450, X0 + 500, Y0 - 250)  # cols 25..49, rows 25..44, overlaps BOX


def _box_truth(*boxes):
    truth = np.zeros((SIZE, SIZE), bool)
    for b in boxes:
        c0, c1 = int((b.bounds[0] - X0) / RES), int((b.bounds[2] - X0) / RES)
        r0, r1 = int((Y0 - b.bounds[3]) / RES), int((Y0 - b.bounds[1]) / RES)
        truth[r0:r1, c0:c1] = True
    return truth


@pytest.fixture
def truth_gpkg(tmp_path):
    path = str(tmp_path / "truth.gpkg")
    gpd.GeoDataFrame({"id": [1]}, geometry=[BOX], crs=UTM).to_file(path, driver="GPKG", engine="pyogrio")
    return path


# --- raster truth ----------------------------------------------------------------------------

def test_same_grid_raster(pred_path, truth_path, pred_array, truth_array):
    result = evaluate(pred_path, truth_path)
    assert result["pred"] == pred_path and result["truth"] == truth_path
    assert result["scores"] == _expected(pred_array, truth_array)
    assert result["scores"]["n_pixels"] == SIZE * SIZE
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("window_size", [1, 7, 16, 64, 1024])
def test_window_size_does_not_change_result(pred_path, truth_path, truth_4326_path, truth_gpkg, window_size):
    for truth in (truth_path, truth_4326_path, truth_gpkg):
        assert evaluate(pred_path, truth, window_size=window_size) == evaluate(pred_path, truth)


def test_raster_truth_in_another_crs(pred_path, truth_path, truth_4326_path):
    reference = evaluate(pred_path, truth_path)["scores"]
    scores = evaluate(pred_path, truth_4326_path)["scores"]
    # pixel centres lie 5 m from every block edge and the 4326 truth is ~1 m: no edge effect
    assert scores == reference


def test_truth_nodata_and_footprint_are_excluded(tmp_path, pred_path, pred_array, truth_array):
    truth = truth_array.copy()
    truth[:, :8] = 255
    path = _write(tmp_path / "truth_nd.tif", truth, nodata=255)
    valid = np.ones(truth.shape, bool)
    valid[:, :8] = False
    assert evaluate(path, path)["scores"]["n_pixels"] == SIZE * (SIZE - 8)  # 0/1 mask with nodata
    assert evaluate(pred_path, path)["scores"] == _expected(pred_array, truth_array, valid)

    # truth covering only the right half of pred (no nodata value: footprint from the added alpha)
    half = truth_array[:, SIZE // 2:]
    path = _write(tmp_path / "truth_half.tif", np.ascontiguousarray(half),
                  transform=from_origin(X0 + RES * SIZE / 2, Y0, RES, RES))
    valid = np.zeros(truth.shape, bool)
    valid[:, SIZE // 2:] = True
    assert evaluate(pred_path, path)["scores"] == _expected(pred_array, truth_array, valid)


def test_change_values(tmp_path, pred_path, pred_array):
    classes = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 3).astype(np.uint8)  # 0, 1, 2
    path = _write(tmp_path / "classes.tif", classes)
    assert evaluate(pred_path, path)["scores"] == _expected(pred_array, classes > 0)
    assert evaluate(pred_path, path, change_values=[2])["scores"] == _expected(pred_array, classes == 2)


def _sparse_truth(truth_array):
    """Taizhou-like sparse truth: labelled (0/1) pixels in two strips, 255 (unlabelled, not declared
    nodata) everywhere else."""
    sparse = np.full(truth_array.shape, 255, np.uint8)
    labelled = np.zeros(truth_array.shape, bool)
    labelled[10:12] = labelled[:, 40] = True
    sparse[labelled] = truth_array[labelled]
    return sparse, labelled


@pytest.fixture
def warnings_shown(capsys):
    """The warnings the CLI would print (its one handler, on captured stderr)."""
    configure_cli_logging()
    capsys.readouterr()
    return lambda: [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_ignore_values_are_not_scored(tmp_path, pred_path, pred_array, truth_array, warnings_shown):
    sparse, labelled = _sparse_truth(truth_array)
    path = _write(tmp_path / "sparse.tif", sparse)
    result = evaluate(pred_path, path, ignore_values=[255], window_size=16)
    assert result["scores"] == _expected(pred_array, truth_array == 1, labelled)
    assert result["ignored"] == {"values": [255], "pixels": int((~labelled).sum())}
    # with the labels' own change value, and as the same file with 255 declared nodata
    assert evaluate(pred_path, path, ignore_values=[255], change_values=[1])["scores"] == result["scores"]
    declared = _write(tmp_path / "sparse_nd.tif", sparse, nodata=255)
    assert evaluate(pred_path, declared)["scores"] == result["scores"]
    assert warnings_shown() == []


def test_a_sparse_truth_scored_whole_gets_a_hint(tmp_path, pred_path, pred_array, truth_array, warnings_shown):
    sparse, labelled = _sparse_truth(truth_array)
    path = _write(tmp_path / "sparse.tif", sparse)
    scores = evaluate(pred_path, path)["scores"]
    assert scores == _expected(pred_array, sparse > 0)     # 255 counted as change, as asked
    [hint] = warnings_shown()
    assert hint.startswith(f"warning: {path}: ") and "% of the scored truth pixels are 255" in hint
    assert "--ignore-value 255" in hint and "scored as changed" in hint
    # a dense two-class truth, or three classes none of which looks unlabelled: no hint
    classes = np.where(np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 50 == 0, 2, 0).astype(np.uint8)
    classes[0, 0] = 1
    for truth in (truth_array, classes):
        evaluate(pred_path, _write(tmp_path / "dense.tif", truth))
    assert warnings_shown() == []


def test_ignore_values_are_checked(tmp_path, pred_path, truth_path, truth_gpkg):
    with pytest.raises(GeochangeError, match="both as a change value and as one to ignore"):
        evaluate(pred_path, truth_path, change_values=[1], ignore_values=[1])
    with pytest.raises(GeochangeError, match="values to ignore apply to a truth raster"):
        evaluate(pred_path, truth_gpkg, ignore_values=[255])
    everything = _write(tmp_path / "unlabelled.tif", np.full((SIZE, SIZE), 255, np.uint8))
    with pytest.raises(GeochangeError, match="no valid pixels.*values ignored"):
        evaluate(pred_path, everything, ignore_values=[255])


def test_pred_nodata_255_is_excluded(tmp_path, pred_array, truth_array):
    pred = pred_array.copy()
    pred[5:20, 3:40] = 255
    valid = pred != 255
    # with and without a declared nodata value
    for name, nodata in (("declared.tif", 255), ("undeclared.tif", None)):
        path = _write(tmp_path / name, pred, nodata=nodata)
        truth = _write(tmp_path / "truth.tif", truth_array)
        scores = evaluate(path, truth)["scores"]
        assert scores == _expected(pred, truth_array)
        assert scores["n_pixels"] == int(valid.sum())


def test_pred_file_nodata_value_is_respected(tmp_path, pred_array, truth_array):
    pred = pred_array.copy()
    pred[:10] = 0
    path = _write(tmp_path / "pred_nd0.tif", pred, nodata=0)  # odd, but the file says so
    truth = _write(tmp_path / "truth.tif", truth_array)
    scores = evaluate(path, truth)["scores"]
    assert scores["n_pixels"] == int((pred == 1).sum())
    assert scores["fp"] + scores["tp"] == scores["n_pixels"]


def test_not_georeferenced_pixel_to_pixel(tmp_path, pred_array, truth_array):
    pred = _write(tmp_path / "pred_nogeo.tif", pred_array, crs=None)
    truth = _write(tmp_path / "truth_nogeo.tif", truth_array, crs=None)
    assert evaluate(pred, truth, window_size=10)["scores"] == _expected(pred_array, truth_array)
    small = _write(tmp_path / "small_nogeo.tif", truth_array[:32], crs=None)
    with pytest.raises(GeochangeError, match="sizes differ"):
        evaluate(pred, small)


# --- vector truth ----------------------------------------------------------------------------

def test_vector_truth_gpkg(pred_path, truth_gpkg, pred_array):
    scores = evaluate(pred_path, truth_gpkg)["scores"]
    expected = _expected(pred_array, _box_truth(BOX))
    assert scores == expected
    assert scores["tp"] + scores["fn"] == 400  # 20 x 20 changed pixels
    assert scores["n_pixels"] == SIZE * SIZE


def test_vector_truth_in_4326_geojson(tmp_path, pred_path, pred_array):
    path = str(tmp_path / "truth.geojson")
    gdf = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[BOX, BOX2], crs=UTM).to_crs("EPSG:4326")
    gdf.to_file(path, driver="GeoJSON", engine="pyogrio")
    assert evaluate(pred_path, path, window_size=16)["scores"] == _expected(pred_array, _box_truth(BOX, BOX2))


def test_vector_truth_invalid_geometry_is_repaired(tmp_path, pred_path, pred_array):
    path = str(tmp_path / "invalid.gpkg")
    bad = MultiPolygon([BOX, BOX2])  # overlapping parts: invalid
    assert not bad.is_valid
    gpd.GeoDataFrame({"id": [1]}, geometry=[bad], crs=UTM).to_file(path, driver="GPKG", engine="pyogrio")
    assert evaluate(pred_path, path)["scores"] == _expected(pred_array, _box_truth(BOX, BOX2))


def test_vector_truth_layers(tmp_path, pred_path, pred_array):
    path = str(tmp_path / "layers.gpkg")
    gpd.GeoDataFrame({"id": [1]}, geometry=[BOX], crs=UTM).to_file(path, layer="a", engine="pyogrio")
    gpd.GeoDataFrame({"id": [1]}, geometry=[BOX2], crs=UTM).to_file(path, layer="b", engine="pyogrio")
    with pytest.raises(GeochangeError, match="layers"):
        evaluate(pred_path, path)
    assert evaluate(pred_path, path, truth_layer="b")["scores"] == _expected(pred_array, _box_truth(BOX2))
    with pytest.raises(GeochangeError, match="no layer 'c'"):
        evaluate(pred_path, path, truth_layer="c")


def test_vector_far_away_polygon_is_no_overlap(tmp_path, pred_path):
    path = str(tmp_path / "far.gpkg")
    gpd.GeoDataFrame({"id": [1]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:4326").to_file(path, engine="pyogrio")
    with pytest.raises(GeochangeError, match="do not overlap"):
        evaluate(pred_path, path)


# --- errors ----------------------------------------------------------------------------------

def test_missing_files(tmp_path, pred_path, truth_path):
    with pytest.raises(GeochangeError, match="no such file"):
        evaluate(str(tmp_path / "nope.tif"), truth_path)
    with pytest.raises(GeochangeError, match="no such file"):
        evaluate(pred_path, str(tmp_path / "nope.gpkg"))


def test_truth_neither_raster_nor_vector(tmp_path, pred_path):
    path = tmp_path / "notes.txt"
    path.write_text("not geodata\n")
    with pytest.raises(GeochangeError, match="not a raster or vector"):
        evaluate(pred_path, str(path))


def test_no_overlap_raster(tmp_path, pred_path, truth_array):
    far = _write(tmp_path / "far.tif", truth_array, transform=from_origin(X0 + 100_000, Y0, RES, RES))
    with pytest.raises(GeochangeError, match="do not overlap"):
        evaluate(pred_path, far)


def test_non_mask_values(tmp_path, pred_array, truth_path):
    pred = pred_array.copy()
    pred[50, 60] = 7
    path = _write(tmp_path / "scores.tif", pred, nodata=255)
    with pytest.raises(GeochangeError, match="not a change mask.*7"):
        evaluate(path, truth_path, window_size=16)


def test_no_valid_pixels(tmp_path, truth_path):
    path = _write(tmp_path / "empty.tif", np.full((SIZE, SIZE), 255, np.uint8), nodata=255)
    with pytest.raises(GeochangeError, match="no valid pixels"):
        evaluate(path, truth_path)


def test_georeferencing_required(tmp_path, pred_path, pred_array, truth_array, truth_gpkg):
    nogeo_truth = _write(tmp_path / "truth_nogeo.tif", truth_array, crs=None)
    with pytest.raises(GeochangeError, match="no CRS"):
        evaluate(pred_path, nogeo_truth)
    nogeo_pred = _write(tmp_path / "pred_nogeo.tif", pred_array, crs=None)
    with pytest.raises(GeochangeError, match="no CRS"):
        evaluate(nogeo_pred, truth_gpkg)


def test_bad_window_size(pred_path, truth_path):
    with pytest.raises(GeochangeError, match="window size"):
        evaluate(pred_path, truth_path, window_size=0)
