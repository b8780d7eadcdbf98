"""The raster pair: alignment of AFTER onto BEFORE's grid, overlap, validity, bands, normalisation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from geochange.errors import GeochangeError
from geochange.io.pair import RasterPair, match_bands
from tests.conftest import UTM, texture, write_tif


def test_after_in_other_crs_lands_on_before_grid(planted):
    with RasterPair.open(str(planted.before), str(planted.after)) as pair:
        assert pair.grid.crs == planted.crs
        assert pair.grid.res == (1.0, 1.0)
        assert pair.describe()["after_warped"]
        wp = pair.read_raw(Window(40, 40, 120, 120))
        assert wp.before.shape == wp.after.shape == (3, 120, 120)
        # unchanged pixels agree after the illumination change is undone (after = 0.7 * before + 30)
        truth = planted.truth_array[40:160, 40:160]
        keep = wp.valid & (truth == 0)
        corr = np.corrcoef(wp.before[0][keep], wp.after[0][keep])[0, 1]
        assert corr > 0.9


def test_validity_mask_follows_nodata_of_both_dates(planted):
    with RasterPair.open(str(planted.before), str(planted.after)) as pair:
        h, w = pair.shape
        wp = pair.read_raw(Window(0, 0, w, h))
    assert not wp.valid[-12:].any()          # BEFORE's nodata strip
    assert not wp.valid[:, :13].any()        # AFTER's nodata strip, warped
    assert wp.valid[5:-20, 20:-5].all()


def test_normalisation_removes_global_illumination(planted_same_grid):
    def median_gap(method: str) -> float:
        with RasterPair.open(str(planted_same_grid.before), str(planted_same_grid.after)) as pair:
            pair.fit_normalization(method, seed=0)
            h, w = pair.shape
            wp = pair.read(Window(0, 0, w, h))
        unchanged = wp.valid & (planted_same_grid.truth_array == 0)
        return float(np.median(np.abs(wp.after - wp.before)[:, unchanged]))

    # AFTER = 0.7 * BEFORE + 30: matching the dates removes most of the difference on unchanged ground
    none, meanstd, histogram = median_gap("none"), median_gap("meanstd"), median_gap("histogram")
    assert meanstd < none / 2 and histogram < none / 2, (none, meanstd, histogram)


@pytest.mark.parametrize("method", ["meanstd", "histogram", "none"])
def test_normalisation_methods_run_and_are_finite(planted_same_grid, method):
    with RasterPair.open(str(planted_same_grid.before), str(planted_same_grid.after)) as pair:
        pair.fit_normalization(method)
        wp = pair.read(Window(0, 0, 64, 64))
    assert np.isfinite(wp.before).all() and np.isfinite(wp.after).all()


def test_partial_overlap_restricts_the_grid(tmp_path):
    rng = np.random.default_rng(0)
    t = rasterio.Affine(2.0, 0, 300_000, 0, -2.0, 4_000_000)
    write_tif(tmp_path / "b.tif", texture(rng, (100, 100)).astype(np.uint8), UTM, t)
    shifted = t * rasterio.Affine.translation(60, 30)  # AFTER starts 60 columns right, 30 rows down
    write_tif(tmp_path / "a.tif", texture(rng, (100, 100)).astype(np.uint8), UTM, shifted)
    with RasterPair.open(str(tmp_path / "b.tif"), str(tmp_path / "a.tif")) as pair:
        assert (pair.offset.col_off, pair.offset.row_off, pair.offset.width, pair.offset.height) == (60, 30, 40, 70)
        assert pair.grid.transform.c == 300_000 + 120 and pair.grid.transform.f == 4_000_000 - 60


def test_band_count_mismatch_uses_common_first_bands(tmp_path, caplog):
    rng = np.random.default_rng(1)
    t = rasterio.Affine(1.0, 0, 0, 0, -1.0, 100)
    write_tif(tmp_path / "b4.tif", texture(rng, (40, 40), 4).astype(np.uint8), UTM, t)
    write_tif(tmp_path / "a3.tif", texture(rng, (40, 40), 3).astype(np.uint8), UTM, t)
    ours = logging.getLogger("geochange")  # the CLI's logging (an earlier test) stops propagation: listen here
    ours.addHandler(caplog.handler)
    try:
        with RasterPair.open(str(tmp_path / "b4.tif"), str(tmp_path / "a3.tif")) as pair:
            assert pair.bands_before == [1, 2, 3] and pair.count == 3
    finally:
        ours.removeHandler(caplog.handler)
    assert any("first 3" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)  # progress.warn
    with RasterPair.open(str(tmp_path / "b4.tif"), str(tmp_path / "a3.tif"), bands=[3, 1]) as pair:
        assert pair.bands_before == [3, 1]


def test_bad_bands_are_refused():
    with pytest.raises(GeochangeError, match="band 5 does not exist"):
        match_bands(4, 3, [1, 5])


def test_sample_windows_cover_the_scene_reproducibly(planted_same_grid):
    with RasterPair.open(str(planted_same_grid.before), str(planted_same_grid.after)) as pair:
        a = pair.sample_windows(16, 64, seed=1)
        b = pair.sample_windows(16, 64, seed=1)
        h, w = pair.shape
    assert a == b and len(a) >= 9
    assert all(0 <= win.row_off <= h - 64 and 0 <= win.col_off <= w - 64 for win in a)
    rows = [win.row_off for win in a]
    assert min(rows) < h / 4 and max(rows) > h / 2


# --- real data: pairs that do not share a grid -------------------------------------------------

def test_pre_utm_post_wgs84_partial_overlap(two_crs_tiles):
    """PRE in EPSG:26915, POST in EPSG:4326, overlapping only in part (as the Joplin tiles do)."""
    t = two_crs_tiles
    with RasterPair.open(str(t.pre), str(t.post)) as pair:
        assert pair.grid.crs.to_epsg() == 26915
        assert pair.grid.res == pytest.approx((0.6, 0.6))
        h, w = pair.shape
        assert (h, w) != (256, 256) and h * w < 256 * 256
        wp = pair.read_raw(Window(0, 0, w, h))
        # the rotated footprint of the WGS84 tile leaves invalid corners on the UTM grid
        assert 0.5 < wp.valid.mean() < 1.0
        keep = wp.valid
        corr = np.corrcoef(wp.before.mean(0)[keep], wp.after.mean(0)[keep])[0, 1]
        assert corr > 0.2  # the same place (new roofs in between)


def test_naip_years_with_shifted_grids_align(test_data):
    """NAIP 2016 and 2017 grids differ by 1-2 m (a fraction of the 5 m pixel): AFTER is warped onto BEFORE."""
    b, a = test_data / "naip_nd_2016_crop.tif", test_data / "naip_nd_2017_crop.tif"
    with rasterio.open(b) as ds:
        before_shape = ds.shape
    with RasterPair.open(str(b), str(a)) as pair:
        assert pair.describe()["after_warped"]
        assert pair.shape[0] <= before_shape[0] and pair.shape[1] <= before_shape[1]
        wp = pair.read_raw(Window(20, 20, 200, 200))
        corr = np.corrcoef(wp.before[3][wp.valid], wp.after[3][wp.valid])[0, 1]
    assert corr > 0.6


# --- sparse valid data: the scene sample must find it -------------------------------------------

def sparse_pair(folder, size: int = 3000, block: int = 26):
    """One-band pair of ``size``² pixels, nodata but for a ``block``² patch (676 px: 99.99 % nodata)
    placed where the spread-out scene sample does not look; AFTER brighter in the patch's left half."""
    folder.mkdir(parents=True, exist_ok=True)
    t = rasterio.Affine(1.0, 0, 500_000, 0, -1.0, 4_100_000)
    empty = np.zeros((1, size, size), np.uint8)
    b, a = write_tif(folder / "b.tif", empty, UTM, t, nodata=0), write_tif(folder / "a.tif", empty, UTM, t, nodata=0)
    with RasterPair.open(str(b), str(a)) as pair:
        covered = np.zeros((size, size), bool)
        for w in pair.sample_windows():
            covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = True
    free = np.argwhere(~ndimage.binary_dilation(covered, iterations=block))
    r, c = free[(free < size - block).all(axis=1)][len(free) // 4]
    rng = np.random.default_rng(0)
    before = empty.copy()
    before[0, r:r + block, c:c + block] = rng.integers(60, 90, (block, block))
    after = before.copy()
    after[0, r:r + block, c:c + block // 2] += 120
    write_tif(b, before, UTM, t, nodata=0, tiled=True, compress="deflate")
    write_tif(a, after, UTM, t, nodata=0, tiled=True, compress="deflate")
    return b, a, (r, c)


def test_sparse_valid_pixels_are_found_where_they_are(tmp_path):
    b, a, (r, c) = sparse_pair(tmp_path)
    with RasterPair.open(str(b), str(a)) as pair:
        spread = [pair.read_raw(w) for w in pair.sample_windows()]
        assert sum(int(s.valid.sum()) for s in spread) == 0          # the usual sample misses them
        samples = pair.fit_normalization()
    assert sum(int(s.valid.sum()) for s in samples) == 26 * 26
    assert all(w.window.row_off <= r < w.window.row_off + w.window.height for w in samples)


@pytest.mark.parametrize("valid, message", [
    (1, r"too few valid pixels to fit \(1\)"), (9, r"too few valid pixels to fit \(9\)"),
    (0, "no valid pixels where the two dates overlap")])
def test_too_few_valid_pixels_is_said_only_when_true(tmp_path, valid, message):
    t = rasterio.Affine(1.0, 0, 500_000, 0, -1.0, 4_100_000)
    arr = np.zeros((1, 40, 40), np.uint8)
    arr.reshape(-1)[:valid] = 50
    b = write_tif(tmp_path / "b.tif", arr, UTM, t, nodata=0)
    a = write_tif(tmp_path / "a.tif", arr, UTM, t, nodata=0)
    with RasterPair.open(str(b), str(a)) as pair, pytest.raises(GeochangeError, match=message):
        pair.fit_normalization()
    one = write_tif(tmp_path / "one.tif", np.full((1, 1, 1), 7, np.uint8), UTM, t)
    with RasterPair.open(str(one), str(one)) as pair, pytest.raises(GeochangeError, match=r"too few .* \(1\)"):
        pair.fit_normalization()


@pytest.mark.parametrize("dtype, nodata", [("uint8", None), ("uint16", 0), ("float32", None)])
def test_normalised_read_is_the_affine_map_of_the_raw_read(tmp_path, dtype, nodata):
    """The engine's read converts and normalises in one float32 multiply-add per date: the same numbers
    as the normalisation applied to the float32 raw read; invalid pixels are zero and not valid."""
    rng = np.random.default_rng(3)
    t = rasterio.transform.from_origin(500000, 5600000, 1, 1)
    b = (texture(rng, (48, 40)) + 1).astype(dtype)
    a = (texture(rng, (48, 40)) * 0.8 + 20).astype(dtype)
    if dtype == "float32":
        a[0, 5, 7] = np.nan            # a NaN in one band makes the pixel invalid
    if nodata is not None:
        b[:, :3] = nodata
    write_tif(tmp_path / "b.tif", b, UTM, t, nodata=nodata)
    write_tif(tmp_path / "a.tif", a, UTM, t)
    with RasterPair.open(str(tmp_path / "b.tif"), str(tmp_path / "a.tif")) as pair:
        pair.fit_normalization("meanstd", seed=0)
        win = Window(0, 0, 40, 48)
        raw = pair.read_raw(win)
        got = pair.read(win)
        n = pair.normalizer
    assert got.before.dtype == got.after.dtype == raw.before.dtype == np.float32
    assert (got.valid == raw.valid).all()
    expect_b = (raw.before - n.mean_before[:, None, None]) / n.std_before[:, None, None]
    expect_a = (raw.after - n.mean_after[:, None, None]) / n.std_after[:, None, None]
    v = raw.valid
    assert np.allclose(got.before[:, v], expect_b[:, v], atol=1e-5)
    assert np.allclose(got.after[:, v], expect_a[:, v], atol=1e-5)
    assert (got.before[:, ~v] == 0).all() and (got.after[:, ~v] == 0).all()
    if nodata is not None:
        assert not v[:3].any() and v[3:].all()
    elif dtype == "float32":
        assert not v[5, 7] and v.sum() == v.size - 1
    else:
        assert v.all()


def test_warped_reads_do_not_depend_on_earlier_reads(test_data):
    """AFTER warped onto BEFORE's grid (the NAIP crops' grids differ): every window reads what a whole
    reprojection gives, also after the co-registration's and the normalisation's reads (with GDAL's
    default warp memory, GDAL 3.10 returned some windows off by up to 84 DN after those reads)."""
    from rasterio.warp import Resampling, reproject

    before, after = str(test_data / "naip_nd_2016_crop.tif"), str(test_data / "naip_nd_2017_crop.tif")
    with RasterPair.open(before, after) as pair:
        assert pair.describe()["after_warped"]
        pair.coregister("auto", seed=0)
        pair.fit_normalization("meanstd")
        g, bands = pair.grid, pair.bands_after
        windows = [Window(c, r, 64, 64) for r in range(0, 193, 48) for c in range(0, 193, 48)]
        reads = [pair.read_raw(w) for w in windows]
    with rasterio.open(after) as src:
        ref = np.zeros((len(bands), g.height, g.width), np.float32)
        reproject(rasterio.band(src, bands), ref, dst_transform=g.transform, dst_crs=g.crs,
                  resampling=Resampling.bilinear)
    for w, wp in zip(windows, reads):
        expect = ref[:, w.row_off:w.row_off + 64, w.col_off:w.col_off + 64]
        assert np.abs(wp.after - expect)[:, wp.valid].max() <= 1.0, w
