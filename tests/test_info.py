"""``info``: facts about rasters and the overlap of a pair, on real files."""

from __future__ import annotations

import numpy as np
import rasterio

from geochange.info import describe_overlap, describe_raster
from tests.conftest import UTM, write_tif


def test_describe_raster(planted):
    info = describe_raster(str(planted.before))
    assert info["crs"] == "EPSG:32615" and info["crs_name"] == "WGS 84 / UTM zone 15N"
    assert (info["width"], info["height"], info["bands"]) == (300, 240, 3)
    assert info["res"] == [1.0, 1.0] and info["nodata"] == 0 and info["dtype"] == "uint8"


def test_overlap_of_a_pair_in_two_crs(planted):
    ov = describe_overlap(str(planted.before), str(planted.after))
    assert ov["overlap"] and ov["after_warped"] and ov["bands_compared"] == 3
    assert ov["fraction_of_before"] > 0.95


def test_no_overlap_is_reported_not_raised(tmp_path):
    t = rasterio.Affine(1.0, 0, 0, 0, -1.0, 100)
    write_tif(tmp_path / "a.tif", np.ones((1, 10, 10), np.uint8), UTM, t)
    write_tif(tmp_path / "b.tif", np.ones((1, 10, 10), np.uint8), UTM, t @ rasterio.Affine.translation(1000, 0))
    ov = describe_overlap(str(tmp_path / "a.tif"), str(tmp_path / "b.tif"))
    assert ov["overlap"] is False and "do not overlap" in ov["reason"]
