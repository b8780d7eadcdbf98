"""The marks' logistic regression (geochange.models.logistic): it learns which change the marks want,
flags cva's share of it, refuses too few marked pixels in one line, and its checkpoint maps as it did."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from geochange.cli import app
from geochange.errors import GeochangeError
from geochange.io.marks import Marks
from geochange.io.pair import RasterPair
from geochange.models import create_model, learns_from_marks
from geochange.models.logistic import MarksLogistic, feature_names
from geochange.train.checkpoint import load_checkpoint, model_from_checkpoint
from geochange.train.marks import marked_scene

runner = CliRunner()


def _fitted(scene, **config):
    """The model fitted on ``scene``'s marks as detect fits it, and the whole pair normalised."""
    with RasterPair.open(str(scene.before), str(scene.after)) as pair:
        marks = Marks(str(scene.marks), pair.grid)
        samples = pair.fit_normalization(n_windows=8, size=96)
        model = create_model("logistic", **config)
        patch, negatives = model.marks_sizes()
        cut = marked_scene(pair, marks, samples, patch=patch, negatives=negatives, seed=0)
        summary = model.fit_marks(cut, seed=0)
        whole = pair.read(Window(0, 0, pair.grid.width, pair.grid.height))
    return model, summary, cut, whole


def test_it_learns_which_change_the_marks_want(marked_scene):
    """Roofs (marked changed) and distractors (marked unchanged) change as much in the pair; the fitted
    model ranks the right half's roofs above its distractors, which cva flags alike."""
    s = marked_scene
    model, summary, _, wp = _fitted(s)
    prob = model.predict(wp.before[None], wp.after[None], wp.valid[None])[0]
    right = np.zeros(s.shape, bool)
    right[:, s.shape[1] // 2 + 8:] = True
    roofs, distractors, ground = prob[s.roofs & right], prob[s.distractors & right], prob[~s.roofs & ~s.distractors]
    assert np.median(roofs) > 0.9 and np.quantile(distractors, 0.95) < 0.1
    assert np.quantile(ground, 0.99) < 0.2 and (ground >= 0.5).mean() < 0.005   # the box means blur roofs' edges
    cva = model.cva.predict(wp.before[None], wp.after[None], wp.valid[None])[0]   # its cva feature
    assert np.quantile(cva[s.distractors & right], 0.05) > 0.5 and np.quantile(cva[s.roofs & right], 0.05) > 0.5
    assert summary["pixels"]["changed"] > 0 and summary["history"][0]["loss"] < np.log(2)
    assert learns_from_marks("logistic") and model.context_px == 7


def test_it_flags_the_share_cva_flags_and_the_marks_accept(marked_scene):
    """amount: accepted <= cva's share (the distractors are rejected), and the flagged share of the
    scene sample is the one asked for; balanced leaves the log-odds alone."""
    s = marked_scene
    accepted, _, _, wp = _fitted(s)
    everything, *_ = _fitted(s, amount="cva")
    balanced, *_ = _fitted(s, amount="balanced")
    assert balanced.offset == 0.0 and balanced.changed_share is None
    assert 0 < accepted.changed_share < 0.75 * everything.changed_share
    # the roofs are about half of cva's change in this scene
    share = s.roofs.mean() / (s.roofs.mean() + s.distractors.mean())
    assert accepted.changed_share / everything.changed_share == pytest.approx(share, abs=0.15)
    flagged = accepted.predict(wp.before[None], wp.after[None], wp.valid[None])[0] >= 0.5
    assert flagged.mean() == pytest.approx(accepted.changed_share, abs=0.01)


def test_too_few_changed_pixels_refused_in_one_line(marked_scene, tmp_path):
    s = marked_scene
    marks = gpd.read_file(s.marks)
    one = marks[marks["change"] == 0].copy()
    centre = marks[marks["change"] == 1].geometry.iloc[0].centroid
    one = gpd.GeoDataFrame({"change": [0] * len(one) + [1]}, geometry=list(one.geometry) + [centre], crs=marks.crs)
    path = tmp_path / "point.gpkg"
    one.to_file(path)
    out = tmp_path / "o"
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "-q", "--labels", str(path)])
    assert res.exit_code == 2, res.output
    assert "1 changed (change = 1) pixels among the marks" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_checkpoint_maps_as_the_fitted_model(marked_scene, tmp_path):
    s = marked_scene
    model, _, cut, wp = _fitted(s)
    from geochange.train.trainer import TrainOptions

    summary = create_model("logistic").fit_marks(cut, seed=0, options=TrainOptions(out=tmp_path / "run"))
    assert summary["checkpoint"] == str(tmp_path / "run" / "last.pt")
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,loss")
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")       # weights_only: plain data
    loaded = model_from_checkpoint(ckpt)
    assert isinstance(loaded, MarksLogistic) and loaded.in_bands == 3
    a = model.predict(wp.before[None], wp.after[None], wp.valid[None])
    b = loaded.predict(wp.before[None], wp.after[None], wp.valid[None])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_summary_names_the_weights_and_the_share(marked_scene, tmp_path):
    s = marked_scene
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-q",
                              "--labels", str(s.marks)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    m = summary["model"]
    assert m["name"] == "logistic" and list(m["weights"]) == feature_names(3, (3, 7, 15), 7)
    assert 0 < m["changed_share"] < 0.2 and summary["engine"]["overlap"] >= 2 * 7


@pytest.mark.parametrize("params, text", [({"scales": [4]}, "odd window sizes"),
                                          ({"amount": "all"}, "unknown amount"),
                                          ({"regularization": 0}, "regularization must be > 0"),
                                          ({"accept": 1.0}, "accept is a probability")])
def test_bad_settings_refused(params, text):
    with pytest.raises(GeochangeError, match=text):
        create_model("logistic", **params)


def test_it_does_not_map_without_marks(marked_scene, tmp_path):
    s = marked_scene
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-q",
                              "--model", "logistic"])
    assert res.exit_code == 2 and "learns from marks: give --labels" in res.output, res.output
    assert not (tmp_path / "o").exists()
