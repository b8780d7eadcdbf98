"""Co-registration: AFTER's residual sub-pixel shift is measured, corrected on the fly, and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from geochange.cli import app
from geochange.detect import DetectOptions, detect
from geochange.io.coregister import TOLERANCE_PX, combine, window_shift
from geochange.io.pair import RasterPair
from tests.conftest import UTM, make_shifted_pair, texture, write_tif

SHIFTS = [(0.6, -1.3), (-0.45, 0.8), (2.3, 0.35)]  # sub-pixel and integer parts, both signs on both axes


def mean_abs_diff(pair: RasterPair) -> float:
    """Mean |AFTER - BEFORE| over the valid interior, after fitting the normalisation (standard units)."""
    pair.fit_normalization("meanstd")
    h, w = pair.shape
    wp = pair.read(Window(8, 8, w - 16, h - 16))
    return float(np.abs(wp.after - wp.before)[:, wp.valid].mean())


@pytest.mark.parametrize("shift", SHIFTS)
def test_shift_is_measured_to_a_tenth_of_a_pixel(tmp_path, shift):
    sp = make_shifted_pair(tmp_path / "pair", shift)
    with RasterPair.open(str(sp.before), str(sp.after)) as pair:
        est = pair.coregister("auto")
    assert est.shift_px == pytest.approx(shift, abs=0.1)
    assert est.shift_m == pytest.approx((shift[0] * 2.0, shift[1] * 2.0), abs=0.2)  # 2 m pixels
    assert est.applied and est.reliable and est.windows >= 3 and est.agree >= 0.5
    assert est.spread_px < 0.2


@pytest.mark.parametrize("shift", SHIFTS)
def test_correction_brings_the_dates_back_together(tmp_path, shift):
    aligned = make_shifted_pair(tmp_path / "aligned", (0.0, 0.0))
    shifted = make_shifted_pair(tmp_path / "shifted", shift)
    with RasterPair.open(str(aligned.before), str(aligned.after)) as pair:
        reference = mean_abs_diff(pair)
    with RasterPair.open(str(shifted.before), str(shifted.after)) as pair:
        uncorrected = mean_abs_diff(pair)
        pair.coregister("auto")
        corrected = mean_abs_diff(pair)
        # the other sign makes it worse: the correction moves AFTER the right way
        pair.shift_after(tuple(-v for v in pair.after_shift))
        wrong_way = mean_abs_diff(pair)
    assert corrected < reference * 1.15, (reference, corrected, uncorrected)
    assert uncorrected > reference * 1.15 and wrong_way > uncorrected, (reference, uncorrected, wrong_way)


def test_after_shift_reads_after_at_the_shifted_place(tmp_path):
    """Sign convention: with after_shift (dy, dx), output pixel (r, c) holds AFTER's pixel (r + dy, c + dx)."""
    rng = np.random.default_rng(3)
    img = texture(rng, (80, 80), 1).astype(np.float32)
    t = rasterio.Affine(1.0, 0, 500_000, 0, -1.0, 4_000_000)
    write_tif(tmp_path / "b.tif", img, UTM, t)
    write_tif(tmp_path / "a.tif", img, UTM, t)
    with RasterPair.open(str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), after_shift=(2, -3),
                         resampling=rasterio.enums.Resampling.nearest) as pair:
        wp = pair.read_raw(Window(10, 10, 40, 40))
    assert np.array_equal(wp.after[0], img[0, 12:52, 7:47])
    assert wp.valid.all()


def test_aligned_pair_is_not_corrected(tmp_path):
    sp = make_shifted_pair(tmp_path / "pair", (0.0, 0.0))
    with RasterPair.open(str(sp.before), str(sp.after)) as pair:
        est = pair.coregister("auto")
        assert pair.after_shift is None and not pair.describe()["after_warped"]
    assert est.reliable and not est.applied
    assert est.magnitude_px <= TOLERANCE_PX and "tolerance" in est.note


def test_off_leaves_after_alone(tmp_path):
    sp = make_shifted_pair(tmp_path / "pair", (0.6, -1.3))
    with RasterPair.open(str(sp.before), str(sp.after)) as pair:
        est = pair.coregister("off")
        assert pair.after_shift is None
    assert est.shift_px is None and not est.applied and est.as_dict()["mode"] == "off"


def test_flat_or_tiny_scene_is_not_an_error(tmp_path):
    t = rasterio.Affine(1.0, 0, 500_000, 0, -1.0, 4_000_000)
    flat = np.full((3, 200, 200), 90, np.uint8)
    write_tif(tmp_path / "b.tif", flat, UTM, t)
    write_tif(tmp_path / "a.tif", flat, UTM, t)
    with RasterPair.open(str(tmp_path / "b.tif"), str(tmp_path / "a.tif")) as pair:
        est = pair.coregister("auto")
    assert est.shift_px is None and not est.applied and est.windows == 0 and est.note
    rng = np.random.default_rng(0)
    tiny = texture(rng, (30, 30)).astype(np.uint8)
    write_tif(tmp_path / "tb.tif", tiny, UTM, t)
    write_tif(tmp_path / "ta.tif", tiny, UTM, t)
    with RasterPair.open(str(tmp_path / "tb.tif"), str(tmp_path / "ta.tif")) as pair:
        est = pair.coregister("auto")
    assert est.shift_px is None and not est.applied and "too small" in est.note


def test_windows_of_noise_or_nodata_are_skipped():
    rng = np.random.default_rng(0)
    noise = [100 + rng.normal(0, 2, (3, 96, 96)) for _ in range(2)]
    assert window_shift(noise[0], noise[1], np.ones((96, 96), bool)) is None
    mostly_nodata = np.zeros((96, 96), bool)
    mostly_nodata[:40] = True
    img = texture(rng, (96, 96))
    assert window_shift(img, img, mostly_nodata) is None


def test_disagreeing_windows_are_not_trusted():
    shifts = np.array([[0.5, 0.5], [3.0, -2.0], [-4.0, 1.0], [2.0, 5.0]])
    est = combine(shifts, 4, (1.0, 1.0))
    assert not est.reliable and "disagree" in est.note
    assert combine(np.array([[0.5, 0.5], [0.55, 0.5]]), 9, (1.0, 1.0)).reliable is False


def test_estimate_is_deterministic_for_a_seed(tmp_path):
    sp = make_shifted_pair(tmp_path / "pair", (0.6, -1.3))
    runs = []
    for _ in range(2):
        with RasterPair.open(str(sp.before), str(sp.after)) as pair:
            runs.append(pair.coregister("auto", seed=7).as_dict())
    assert runs[0] == runs[1]


def test_detect_corrects_and_reports_the_shift(tmp_path):
    sp = make_shifted_pair(tmp_path / "pair", (0.6, -1.3))
    opts = dict(tile=96, overlap=16)
    on = detect(str(sp.before), str(sp.after), tmp_path / "on", DetectOptions(**opts))
    off = detect(str(sp.before), str(sp.after), tmp_path / "off", DetectOptions(coregister="off", **opts))
    coreg = json.loads((tmp_path / "on" / "summary.json").read_text())["coregistration"]
    assert coreg["applied"] and coreg["shift_px"] == pytest.approx([0.6, -1.3], abs=0.1)
    assert coreg["shift_m"] == pytest.approx([1.2, -2.6], abs=0.2) and coreg["windows"] >= 3
    assert coreg["spread_px"] is not None and coreg["shift_px"] == pytest.approx(on["inputs"]["after_shift_px"], abs=1e-3)
    assert off["coregistration"]["mode"] == "off" and not off["coregistration"]["applied"]
    assert off["inputs"]["after_shift_px"] is None


def test_blocked_run_applies_the_same_shift(tmp_path, monkeypatch, many_cores):
    from geochange.engine import plan

    monkeypatch.setattr(plan, "STRIP_PIXELS", 400 * 40)   # cva runs on strips: 40 rows, so several blocks
    sp = make_shifted_pair(tmp_path / "pair", (0.6, -1.3), size=400)
    opts = dict(tile=96, overlap=16, block_size=128)
    plain = detect(str(sp.before), str(sp.after), tmp_path / "plain", DetectOptions(**opts))
    blocked = detect(str(sp.before), str(sp.after), tmp_path / "blocked", DetectOptions(workers=2, **opts))
    assert plain["coregistration"]["applied"] and blocked["coregistration"] == plain["coregistration"]
    assert blocked["engine"]["blocks"] > 1
    for name in ("change_probability.tif", "change_mask.tif"):
        with rasterio.open(tmp_path / "plain" / name) as a, rasterio.open(tmp_path / "blocked" / name) as b:
            assert np.array_equal(a.read(1), b.read(1)), name


def test_cli_accepts_coregister(tmp_path):
    sp = make_shifted_pair(tmp_path / "pair", (0.6, -1.3))
    runner = CliRunner()
    res = runner.invoke(app, ["detect", str(sp.before), str(sp.after), "--out", str(tmp_path / "out"),
                              "--coregister", "off", "--tile", "96", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["coregistration"]["mode"] == "off"
    res = runner.invoke(app, ["detect", str(sp.before), str(sp.after), "--out", str(tmp_path / "bad"),
                              "--coregister", "sometimes", "-q"])
    assert res.exit_code == 2 and "--coregister" in res.output


def test_a_shift_within_the_windows_scatter_is_not_applied():
    """Windows that agree within 0.5 px but scatter as much as their median is long: noise, not a shift."""
    scattered = np.array([[0.3, 0.15], [0.65, -0.15], [-0.05, 0.45], [0.0, -0.1], [0.6, 0.45]])
    est = combine(scattered, 5, (1.0, 1.0))
    assert est.magnitude_px > TOLERANCE_PX and not est.reliable and "scatter" in est.note
    tight = np.array([[0.3, 0.15], [0.32, 0.17], [0.29, 0.14], [0.31, 0.16]])
    assert combine(tight, 4, (1.0, 1.0)).reliable
