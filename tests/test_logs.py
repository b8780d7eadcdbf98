"""The CLI's one handler: library messages, GDAL's and Python warnings as one plain line each on stderr."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from typer.testing import CliRunner

from geochange.cli import app
from geochange.logs import configure_cli_logging

runner = CliRunner()


def rgba_with_nodata(src, dst):
    """BEFORE with an alpha band and a nodata value: rasterio warns that the nodata shadows the alpha."""
    with rasterio.open(src) as ds:
        arr, profile = ds.read(), ds.profile
    alpha = np.where(arr[0] > 0, 255, 0).astype(np.uint8)
    with rasterio.open(dst, "w", **(profile | {"count": 4, "nodata": 0})) as out:
        out.write(np.concatenate([arr, alpha[None]]))
        out.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return dst


def test_a_successful_run_with_a_known_warning_prints_one_plain_line(planted_same_grid, tmp_path):
    s = planted_same_grid
    before = rgba_with_nodata(s.before, tmp_path / "rgba.tif")
    res = runner.invoke(app, ["detect", str(before), str(s.after), "--out", str(tmp_path / "o"), "--bands", "1,2,3",
                              "-q"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["warning: The dataset's nodata attribute is shadowing the alpha band. All masks will be "
                     "determined by the nodata attribute (NodataShadowWarning)"]


def test_verbose_adds_debug_lines(planted_same_grid, tmp_path):
    s = planted_same_grid
    quiet = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "a"), "-q"])
    loud = runner.invoke(app, ["-v", "detect", str(s.before), str(s.after), "--out", str(tmp_path / "b"), "-q"])
    assert quiet.exit_code == loud.exit_code == 0
    assert "detect " not in quiet.stderr and any(line.startswith("detect ") for line in loud.stderr.splitlines())


def test_gdal_messages_are_one_line_and_known_notices_wait_for_verbose(capsys):
    configure_cli_logging(verbose=False)
    gdal = logging.getLogger("rasterio._env")
    gdal.warning("CPLE_AppDefined in x.tif: something\nto know")
    gdal.warning("CPLE_AppDefined in .t.tif: A strile cannot be rewritten in place, which invalidates the "
                 "BLOCK_ORDER optimization.")
    logging.getLogger("geochange.detect").debug("hidden")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning)
        warnings.warn("careful", UserWarning)   # once
    assert capsys.readouterr().err.splitlines() == ["warning: GDAL: something to know (x.tif)",
                                                     "warning: careful (UserWarning)"]
