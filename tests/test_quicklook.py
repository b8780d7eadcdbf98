"""quicklook.png: true colour from what the bands say they are, captions drawn above the panels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from typer.testing import CliRunner

from geochange.cli import app
from geochange.detect import DetectOptions, detect
from geochange.errors import GeochangeError
from geochange.io.quicklook import QuicklookCanvas, acquisition_date, caption_height, captions, true_colour

SIZE = 64
UTM = "EPSG:32633"
TRANSFORM = Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0)


def _labels(colorinterp=(), descriptions=()):
    n = max(len(colorinterp), len(descriptions))
    return [{"colorinterp": (list(colorinterp) + ["undefined"] * n)[i],
             "description": (list(descriptions) + [None] * n)[i]} for i in range(n)]


@pytest.mark.parametrize("labels, expected, why", [
    (_labels(["blue", "green", "red", "nir"]), [2, 1, 0], "colour interpretation"),
    (_labels(descriptions=["Blue", "Green", "Red", "Near infrared"]), [2, 1, 0], "band descriptions"),
    (_labels(descriptions=["B02", "B03", "B04", "B08"]), [2, 1, 0], "band descriptions"),
    # GDAL's default for a 3-band byte GeoTIFF (red, green, blue) loses to descriptions that say otherwise
    (_labels(["red", "green", "blue"], ["blue", "green", "red"]), [2, 1, 0], "band descriptions"),
    (_labels(descriptions=["green", "red", "Red edge 1", "blue"]), [1, 0, 3], "band descriptions"),
    (_labels(["gray", "undefined", "undefined", "undefined"]), [0, 1, 2], "first bands"),
    (_labels(descriptions=["B2", "B3", "B4"]), [0, 1, 2], "first bands"),   # Landsat 8 or 7? not said
    (_labels(["undefined", "undefined"]), [0], "first bands"),
])
def test_true_colour_follows_what_the_bands_say(labels, expected, why):
    assert true_colour(labels) == (expected, why)


def test_true_colour_chosen():
    assert true_colour(_labels(["blue", "green", "red"]), [1, 2, 3]) == ([0, 1, 2], "--rgb")


def test_acquisition_dates_from_tags():
    assert acquisition_date({"ACQUISITIONDATETIME": "2019-06-01T10:21:00Z"}) == "2019-06-01"
    assert acquisition_date({"DATE_ACQUIRED": "20160816"}) == "2016-08-16"
    assert acquisition_date({"landsat_acquisition": "2001:07:14"}) == "2001-07-14"
    assert acquisition_date({"TIFFTAG_DATETIME": "2024:01:05 12:00:00"}) is None   # when the file was written
    assert acquisition_date({"DATE": "soon"}) is None


def test_captions_name_files_dates_model_and_share():
    assert captions("/data/a_2009.tif", "s3://b/after.tif?x=1", "cva", 0.2481, dates=("2009-06-01", None),
                    rgb=[3, 2, 1]) == ["BEFORE 2009-06-01: a_2009.tif (bands 3,2,1)", "AFTER: after.tif",
                                       "changes (cva): 24.81 % changed"]


def test_captions_are_drawn_in_a_strip_above_the_panels(tmp_path):
    canvas = QuicklookCanvas(40, 50, 3)
    rng = np.random.default_rng(0)
    before, after = rng.uniform(0, 255, (2, 3, 40, 50)).astype(np.float32)
    canvas.add_window(Window(0, 0, 50, 40), before, after, np.ones((40, 50), bool))
    plain = np.asarray(Image.open(canvas.save(tmp_path / "plain.png")))
    texts = captions("before.tif", "after.tif", "cva", 0.1)
    shown = np.asarray(Image.open(canvas.save(tmp_path / "captioned.png", texts)))
    strip = caption_height(50)
    assert shown.shape == (plain.shape[0] + strip, plain.shape[1], 3)
    assert np.array_equal(shown[strip:], plain)
    for n in range(3):   # dark text in each panel's part of the strip, on white
        part = shown[:strip, n * 58:n * 58 + 50]
        assert (part < 128).any() and (part == 255).mean() > 0.5


def _four_bands(path, colorinterp=None, descriptions=None, tags=None, shift=0.0):
    """Blue, green, red, nir: band 1 (blue) grows downwards, band 3 (red) to the right, 2 and 4 flat-ish."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    rng = np.random.default_rng(1)
    bands = np.stack([40 + 2 * rows, 90 + rng.normal(0, 3, rows.shape), 40 + 2 * cols, 120 + rng.normal(0, 3, rows.shape)])
    bands[:, 20:30, 20:30] += shift   # a change
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint8", crs=UTM, transform=TRANSFORM)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.clip(bands, 1, 255).astype(np.uint8))
        if colorinterp:
            ds.colorinterp = colorinterp
        for i, text in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, text)
        if tags:
            ds.update_tags(ns="IMAGERY", **tags)
    return str(path)


def _before_panel(out):
    img = np.asarray(Image.open(out / "quicklook.png")).astype(float)
    return img[-SIZE:, :SIZE]     # below the caption strip, the first panel: BEFORE


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_landsat_blue_green_red_are_not_shown_as_red_green_blue(tmp_path):
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    before = _four_bands(tmp_path / "b.tif", interp, tags={"ACQUISITIONDATETIME": "2001-07-14T10:00:00Z"})
    after = _four_bands(tmp_path / "a.tif", interp, shift=60)
    summary = detect(before, after, tmp_path / "o", DetectOptions(tile=32, overlap=8))
    panel = _before_panel(tmp_path / "o")
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    assert _corr(panel[..., 0], cols) > 0.9 and _corr(panel[..., 2], rows) > 0.9   # red = band 3, blue = band 1
    assert summary["quicklook"] == {"bands": [3, 2, 1], "chosen_by": "colour interpretation",
                                    "dates": ["2001-07-14", None]}
    img = Image.open(tmp_path / "o" / "quicklook.png")
    assert img.height == SIZE + caption_height(SIZE)   # the captions' strip

    # --rgb 1,2,3 (as the user asks), from the command line
    res = CliRunner().invoke(app, ["detect", before, after, "--out", str(tmp_path / "c"), "--tile", "32",
                                   "--overlap", "8", "--rgb", "1,2,3", "-q"])
    assert res.exit_code == 0, res.output
    assert _corr(_before_panel(tmp_path / "c")[..., 0], rows) > 0.9
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["quicklook"]["chosen_by"] == "--rgb"


def test_rgb_is_checked(tmp_path):
    before = _four_bands(tmp_path / "b.tif")
    after = _four_bands(tmp_path / "a.tif", shift=60)
    for rgb, message in (([3, 2], "give three bands"), ([0, 1, 2], "start at 1"), ([4, 3, 2], "2 bands as compared")):
        with pytest.raises(GeochangeError, match=message):
            detect(before, after, tmp_path / "o", DetectOptions(tile=32, overlap=8, bands=[1, 2] if rgb[0] == 4 else None,
                                                                rgb=rgb))
    assert not (tmp_path / "o").exists()
