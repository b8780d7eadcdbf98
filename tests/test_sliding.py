"""The sliding-window engine on a real raster pair: no seams, strips in order, invalid pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geochange.engine.plan import plan_windows
from geochange.engine.sliding import Strip, run_sliding
from geochange.io.pair import RasterPair
from geochange.models.base import ChangeModel

CRS_33N = CRS.from_epsg(32633)
TRANSFORM = Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0)
H, W = 150, 170


def write_tif(path: Path, arr: np.ndarray, nodata=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs=CRS_33N, transform=TRANSFORM, nodata=nodata) as ds:
        ds.write(arr)
    return path


class PixelModel(ChangeModel):
    """sigmoid((after - before) of band 1 / 10): depends on each pixel only."""

    name = "pixel-test"
    config_class = dict

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.shapes = []

    def predict(self, before, after, valid):
        self.calls += 1
        self.shapes.append(before.shape)
        assert before.dtype == np.float32 and after.dtype == np.float32 and valid.dtype == bool
        d = (after[:, 0] - before[:, 0]) / 10.0
        return (1.0 / (1.0 + np.exp(-d))).astype(np.float32)


class ConstantPerWindowModel(ChangeModel):
    """Each window predicts one constant of its own (0.1, 0.9, 0.3, 0.7, ...): worst case for seams."""

    name = "constant-test"
    config_class = dict

    def __init__(self):
        super().__init__()
        self.counter = 0

    def predict(self, before, after, valid):
        out = np.empty(valid.shape, np.float32)
        for i in range(len(out)):
            out[i] = (0.1, 0.9, 0.3, 0.7)[self.counter % 4]
            self.counter += 1
        return out


class ListSink:
    def __init__(self):
        self.strips: list[Strip] = []

    def write(self, strip: Strip) -> None:
        self.strips.append(strip)

    def assemble(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        prob = np.full((height, width), np.nan, np.float32)
        valid = np.zeros((height, width), bool)
        for s in self.strips:
            prob[s.row_off:s.row_off + s.prob.shape[0]] = s.prob
            valid[s.row_off:s.row_off + s.valid.shape[0]] = s.valid
        return prob, valid


@pytest.fixture
def pair_files(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(3)
    before = rng.integers(20, 200, size=(3, H, W)).astype(np.uint16)
    after = before.copy()
    after[0] = np.clip(before[0].astype(int) + rng.integers(-40, 40, size=(H, W)), 1, 400).astype(np.uint16)
    after[0, 60:90, 40:120] += 100   # a "change"
    invalid = np.zeros((H, W), bool)
    invalid[:, :5] = True            # a nodata column band on the left edge
    invalid[100:110, 30:60] = True   # a nodata block inside
    invalid[0, 169] = True           # a single pixel at a corner
    before[:, invalid] = 0
    b = write_tif(tmp_path / "before.tif", before, nodata=0)
    a = write_tif(tmp_path / "after.tif", after, nodata=0)
    return b, a, invalid


def run(pair, model, tile, overlap, batch_size=8, prefetch=2):
    sink = ListSink()
    plan = plan_windows(pair.grid.height, pair.grid.width, tile, overlap)
    advanced = []
    stats = run_sliding(pair, model, plan, [sink], batch_size=batch_size, prefetch=prefetch,
                        advance=advanced.append)
    assert stats.windows == len(plan) == sum(advanced)
    return plan, sink, stats


def test_blended_output_has_no_seams(pair_files):
    b, a, invalid = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        assert pair.shape == (H, W)
        whole_plan, whole, _ = run(pair, PixelModel(), tile=1000, overlap=0)
        assert len(whole_plan) == 1 and len(whole.strips) == 1
        ref_prob, ref_valid = whole.assemble(H, W)
        for tile, overlap, batch in [(32, 8, 8), (32, 8, 3), (50, 16, 1), (17, 5, 64)]:
            model = PixelModel()
            plan, sink, stats = run(pair, model, tile, overlap, batch_size=batch)
            assert len(plan) > 1
            # batches never span window rows
            assert model.calls == stats.batches == len(plan.row_offsets) * -(-len(plan.col_offsets) // batch)
            assert all(s[1:] == (3, plan.tile_h, plan.tile_w) for s in model.shapes)
            prob, valid = sink.assemble(H, W)
            np.testing.assert_array_equal(valid, ref_valid)
            np.testing.assert_allclose(prob[valid], ref_prob[valid], atol=1e-5)
        # and the reference is the model's output computed directly from the files
        with rasterio.open(b) as db, rasterio.open(a) as da:
            d = (da.read(1).astype(np.float32) - db.read(1).astype(np.float32)) / 10.0
        np.testing.assert_allclose(ref_prob[ref_valid], (1 / (1 + np.exp(-d)))[ref_valid], atol=1e-5)


def test_strips_arrive_in_order_and_cover_each_row_once(pair_files):
    b, a, _ = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        for tile, overlap in [(32, 8), (64, 0), (150, 10), (7, 3)]:
            plan, sink, _ = run(pair, PixelModel(), tile, overlap)
            assert len(sink.strips) == len(plan.row_offsets)
            row = 0
            for r, s in enumerate(sink.strips):
                assert s.row_off == row           # in order, no gap, no overlap
                assert (s.row_off, s.row_off + s.prob.shape[0]) == plan.strip_rows(r)
                assert s.prob.shape == s.valid.shape
                assert s.prob.shape[1] == W       # full width
                assert s.prob.dtype == np.float32 and s.valid.dtype == bool
                row += s.prob.shape[0]
            assert row == H


def test_invalid_pixels_come_out_invalid(pair_files):
    b, a, invalid = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        _, sink, _ = run(pair, PixelModel(), 32, 8)
    prob, valid = sink.assemble(H, W)
    np.testing.assert_array_equal(valid, ~invalid)
    assert np.isfinite(prob).all()
    assert ((prob[valid] >= 0) & (prob[valid] <= 1)).all()
    # the planted change is seen (after band 1 is 100 higher there)
    assert (prob[60:90, 40:120][valid[60:90, 40:120]] > 0.99).all()


def test_constant_per_window_predictions_are_blended_smoothly(pair_files):
    b, a, invalid = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        plan, sink, _ = run(pair, ConstantPerWindowModel(), 32, 8)
    prob, valid = sink.assemble(H, W)
    # weighted means of the window constants
    assert (prob[valid] >= 0.1 - 1e-6).all() and (prob[valid] <= 0.9 + 1e-6).all()
    assert len(np.unique(np.round(prob[valid], 4))) > 8   # not just the four constants: blended
    # a hard seam would jump by up to 0.8 between neighbours; blending ramps over the overlap
    both_v = valid[:, 1:] & valid[:, :-1]
    both_h = valid[1:, :] & valid[:-1, :]
    jump_x = np.abs(np.diff(prob, axis=1))[both_v].max()
    jump_y = np.abs(np.diff(prob, axis=0))[both_h].max()
    assert max(jump_x, jump_y) < 0.2, (jump_x, jump_y)   # 0.8 without overlap


def test_nan_and_out_of_range_predictions_are_clipped(pair_files):
    class Wild(ChangeModel):
        name = "wild"
        config_class = dict

        def predict(self, before, after, valid):
            out = np.full(valid.shape, 2.0, np.float32)
            out[:, ::2] = -1.0
            out[:, 1::4] = np.nan
            return out

    b, a, _ = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        _, sink, _ = run(pair, Wild(), 1000, 0)
    prob, valid = sink.assemble(H, W)
    assert np.isfinite(prob).all()
    assert set(np.unique(prob[valid]).tolist()) <= {0.0, 1.0}


def test_errors_of_model_and_sinks_propagate(pair_files):
    class FailingModel(PixelModel):
        def predict(self, before, after, valid):
            if self.calls == 2:
                raise ValueError("model failed")
            return super().predict(before, after, valid)

    class FailingSink(ListSink):
        def write(self, strip):
            if len(self.strips) == 1:
                raise OSError("disk full")
            super().write(strip)

    b, a, _ = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        plan = plan_windows(H, W, 32, 8)
        with pytest.raises(ValueError, match="model failed"):
            run_sliding(pair, FailingModel(), plan, [ListSink()], batch_size=2)
        sink = FailingSink()
        with pytest.raises(OSError, match="disk full"):
            run_sliding(pair, PixelModel(), plan, [sink], batch_size=2)
        assert sink.strips[0].row_off == 0


class TypedPixelModel(PixelModel):
    """PixelModel with two change types (brighter / darker after), and not batch-invariant on purpose:
    each window's prediction is nudged by the batch's size, as real models may be in their last bits."""

    n_types = 2

    def predict_with_types(self, before, after, valid):
        prob = self.predict(before, after, valid) * np.float32(1 - 1e-7 * len(before))
        kinds = np.where(after[:, 0] > before[:, 0], 1, 2).astype(np.uint8)
        return prob, kinds


@pytest.mark.parametrize("tile,overlap,batch,block", [(32, 8, 5, 48), (40, 20, 3, 40), (32, 0, 7, 64), (17, 5, 8, 30)])
def test_blocks_and_replayed_seams_equal_the_whole_run_bit_for_bit(pair_files, tile, overlap, batch, block):
    from geochange.engine.plan import plan_blocks
    from geochange.engine.sliding import replay_seam

    b, a, _ = pair_files
    with RasterPair.open(str(b), str(a)) as pair:
        plan = plan_windows(H, W, tile, overlap)
        whole = ListSink()
        run_sliding(pair, TypedPixelModel(), plan, [whole], batch_size=batch)  # unrounded
        blocks = plan_blocks(plan, block)
        assert len(blocks) >= 2 and any(bl.seam for bl in blocks) == (overlap > 0)
        parts, tail, windows = ListSink(), {}, 0
        for bl in blocks:
            sink = ListSink()
            stats = run_sliding(pair, TypedPixelModel(), plan, [sink], batch_size=batch, block=bl)
            windows += stats.windows
            seam = replay_seam(plan, bl, tail, stats.edges) if bl.first else None
            parts.strips += ([seam] if seam is not None else []) + sink.strips
            tail = stats.edges.tail if stats.edges else {}
            assert [s.row_off for s in sink.strips][:1] == [bl.body[0]]
    assert windows == len(plan)
    rows = [(s.row_off, s.row_off + len(s.prob)) for s in parts.strips]
    assert rows[0][0] == 0 and rows[-1][1] == H and all(x[1] == y[0] for x, y in zip(rows, rows[1:]))
    for got, ref in ((parts, whole),):
        gp, gv = got.assemble(H, W)
        rp, rv = ref.assemble(H, W)
        np.testing.assert_array_equal(gv, rv)
        assert np.array_equal(gp.view(np.uint32), rp.view(np.uint32))  # bit for bit
    gt = np.concatenate([s.types for s in parts.strips])
    rt = np.concatenate([s.types for s in whole.strips])
    np.testing.assert_array_equal(gt, rt)


def test_clean_probabilities_clips_and_zeroes_nan():
    from geochange.engine.sliding import clean_probabilities

    raw = np.array([np.nan, -1.0, 0.25, 2.0, np.inf, -np.inf], np.float64)
    got = clean_probabilities(raw)
    assert got.dtype == np.float32
    assert got.tolist() == [0.0, 0.0, 0.25, 1.0, 1.0, 0.0]
    frozen = np.full(3, 0.5, np.float32)
    frozen.flags.writeable = False
    assert clean_probabilities(frozen).tolist() == [0.5, 0.5, 0.5]


def test_split_strip_bounds_the_pixels_and_keeps_every_row():
    from geochange.engine.sliding import Strip, split_strip

    rng = np.random.default_rng(0)
    prob = rng.random((100, 50)).astype(np.float32)
    strip = Strip(37, prob, prob > 0.1, (prob * 9).astype(np.uint8))
    parts = split_strip(strip, max_pixels=20 * 50)
    assert all(p.prob.shape[0] * 50 <= 20 * 50 for p in parts)
    assert [p.row_off for p in parts] == [37, 40, 60, 80, 100, 120]       # cut at multiples of 20 rows
    assert np.array_equal(np.concatenate([p.prob for p in parts]), prob)
    assert np.array_equal(np.concatenate([p.types for p in parts]), strip.types)
    assert np.array_equal(np.concatenate([p.valid for p in parts]), strip.valid)
    assert split_strip(strip, max_pixels=10**9) == [strip]
    assert len(split_strip(strip, max_pixels=1)) == 100                   # one row at least


@pytest.mark.parametrize("steps", [2**20, 2**10, 1000])
def test_round_to_steps_equals_numpy_rounding(steps):
    from geochange.engine.sliding import round_to_steps

    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(100_000), [0.0, 1.0, 0.5, 2.0**-21, 3 * 2.0**-21, 1 - 2.0**-21,
                                                 np.nextafter(np.float32(0.5), 1)]]).astype(np.float32)
    expect = (np.round(p * np.float32(steps)) / np.float32(steps)).astype(np.float32)
    got = round_to_steps(p.copy(), steps)
    assert got.dtype == np.float32 and np.array_equal(got, expect)
