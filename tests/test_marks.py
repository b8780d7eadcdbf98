"""An analyst's marks: reading them onto a grid (io.marks), the patches a model learns from (train.marks),
and ``detect --labels`` end to end: bad marks refused in one line, planted change found where nothing was marked."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window
from typer.testing import CliRunner

from geochange.cli import app
from geochange.detect import DetectOptions, detect
from geochange.errors import GeochangeError
from geochange.io.align import Grid
from geochange.io.marks import Marks
from geochange.io.pair import RasterPair
from geochange.train.marks import marked_scene as cut_marked_scene
from tests.conftest import UTM

runner = CliRunner()
GRID = Grid(UTM, Affine(2.0, 0, 600_000.0, 0, -2.0, 4_200_000.0), 100, 80)
#: fast training for tests: a short warm-up and one clustering, few cheap negatives
FAST = {"epochs": 6, "warmup_epochs": 4, "recluster_every": 2, "marks_negatives": 16}


def box(col: float, row: float, w: float, h: float):
    """A polygon over pixels [col, col + w) x [row, row + h) of GRID."""
    (x0, y0), (x1, y1) = GRID.transform @ (col, row), GRID.transform @ (col + w, row + h)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def write_marks(path: Path, geoms, values, crs=UTM, field: str = "change", **kw) -> Path:
    gpd.GeoDataFrame({field: values}, geometry=list(geoms), crs=crs).to_file(path, **kw)
    return path


def test_polygons_and_points_on_the_grid(tmp_path):
    pt = shapely.Point(*(GRID.transform @ (60.5, 30.5)))
    path = write_marks(tmp_path / "m.gpkg", [box(10, 10, 5, 4), box(12, 11, 6, 6), pt], [0, 1, 1])
    marks = Marks(str(path), GRID)
    assert (marks.n_changed, marks.n_unchanged) == (2, 1)
    label = marks.read(Window(0, 0, 100, 80))
    assert label[10, 10] == 0 and label[13, 14] == 1   # changed wins where they overlap
    assert label[30, 60] == 1 and label[30, 61] == 255  # a point marks its pixel
    assert int((label == 0).sum()) == 5 * 4 - 3 * 3 and int((label == 1).sum()) == 36 + 1
    assert label[50, 50] == 255                         # unmarked is unknown, not unchanged
    # windows cover every mark, inside the grid
    wins = marks.windows(32)
    covered = np.zeros((80, 100), bool)
    for w in wins:
        assert 0 <= w.col_off <= 100 - 32 and 0 <= w.row_off <= 80 - 32
        covered[int(w.row_off):int(w.row_off) + 32, int(w.col_off):int(w.col_off) + 32] = True
    assert covered[label != 255].all()


def test_marks_in_another_crs_land_on_the_same_pixels(tmp_path):
    path = write_marks(tmp_path / "m.geojson", [box(20, 20, 10, 10), box(60, 40, 6, 6)], [1, 0], driver="GeoJSON")
    wgs = write_marks(tmp_path / "w.gpkg", gpd.read_file(path).to_crs(4326).geometry, [1, 0], crs=4326)
    a, b = Marks(str(path), GRID).read(Window(0, 0, 100, 80)), Marks(str(wgs), GRID).read(Window(0, 0, 100, 80))
    assert (a != b).sum() <= 4  # the same pixels, bar a few on the edges of the reprojected outlines


def test_a_large_mark_is_tiled_by_windows(tmp_path):
    path = write_marks(tmp_path / "m.gpkg", [box(0, 0, 90, 70), box(95, 75, 3, 3)], [1, 0])
    wins = Marks(str(path), GRID).windows(32)
    covered = np.zeros((80, 100), bool)
    for w in wins:
        covered[int(w.row_off):int(w.row_off) + 32, int(w.col_off):int(w.col_off) + 32] = True
    assert covered[:70, :90].all() and len(wins) >= 9


@pytest.mark.parametrize("case, text", [
    ("empty", "holds no marks"),
    ("nofield", "no field 'change'"),
    ("oneclass", "mark a few unchanged"),
    ("badvalue", "must be 1 (changed) or 0"),
    ("outside", "outside the overlap"),
    ("lines", "must be polygons or points"),
    ("notvector", "not a vector file"),
])
def test_bad_marks_refused_in_one_line(tmp_path, case, text):
    p = tmp_path / "m.gpkg"
    if case == "empty":
        write_marks(p, [], [])
    elif case == "nofield":
        write_marks(p, [box(1, 1, 3, 3), box(9, 9, 3, 3)], [1, 0], field="kind")
    elif case == "oneclass":
        write_marks(p, [box(1, 1, 3, 3), box(9, 9, 3, 3)], [1, 1])
    elif case == "badvalue":
        write_marks(p, [box(1, 1, 3, 3), box(9, 9, 3, 3)], [1, 2])
    elif case == "outside":
        write_marks(p, [box(1, 1, 3, 3), box(500, 9, 3, 3)], [1, 0])
    elif case == "lines":
        write_marks(p, [box(1, 1, 3, 3), shapely.LineString([GRID.transform @ (5, 5), GRID.transform @ (9, 9)])], [1, 0])
    else:
        p.write_text("not a vector")
    with pytest.raises(GeochangeError, match=text.replace("(", r"\(").replace(")", r"\)")) as err:
        Marks(str(p), GRID)
    assert "\n" not in str(err.value)


def test_marked_scene_patches(marked_scene):
    s = marked_scene
    with RasterPair.open(str(s.before), str(s.after)) as pair:
        marks = Marks(str(s.marks), pair.grid)
        samples = pair.fit_normalization(n_windows=4, size=96)
        scene = marked_scene_of(pair, marks, samples)
    assert len(scene.marked) >= 1 and len(scene.negatives) == 8
    for it in scene.marked:
        assert it["before"].shape == (3, 48, 48) and set(np.unique(it["label"])) <= {0, 1, 255}
    for it in scene.negatives:
        col, row, w, h = it["meta"]["window"]
        # a cheap negative is unchanged everywhere, except where a mark says otherwise
        expected = marks.read(Window(col, row, w, h))
        assert ((it["label"] == expected) | (expected == 255)).all() and set(np.unique(it["label"])) <= {0, 1}
    changed, unchanged = scene.pixel_counts()
    assert changed > 0 and unchanged > 0


def marked_scene_of(pair, marks, samples):
    return cut_marked_scene(pair, marks, samples, patch=48, negatives=8, seed=0)


@pytest.mark.parametrize("model, params", [(None, {}), ("cdcluster", FAST)])
def test_detect_learns_from_marks(marked_scene, tmp_path, model, params):
    """Roofs and distractors change as much: without marks both are flagged; with marks of the left half
    only, the right half's roofs are found and its distractors are not (the default, logistic, and cdcluster)."""
    s = marked_scene
    right = np.zeros(s.shape, bool)
    right[:, s.shape[1] // 2 + 8:] = True
    found = {}
    for name, opts in (("cva", DetectOptions()),
                       ("marks", DetectOptions(labels=str(s.marks), model=model, model_params=params))):
        summary = detect(str(s.before), str(s.after), tmp_path / name, opts)
        with rasterio.open(tmp_path / name / "change_mask.tif") as ds:
            mask = ds.read(1) == 1
        found[name] = (mask[s.roofs & right].mean(), mask[s.distractors & right].mean(),
                       mask[~s.roofs & ~s.distractors].mean())
    assert found["cva"][0] > 0.9 and found["cva"][1] > 0.9, found  # label-free: both kinds of change
    # logistic leaves the unchanged ground alone; cdcluster's clusters take in 5 % of it
    assert found["marks"][0] > 0.8 and found["marks"][1] < 0.1 and found["marks"][2] < (0.1 if model else 0.01), found
    assert summary["model"]["name"] == (model or "logistic")
    learned = summary["labels"]
    assert learned["changed"] > 0 and learned["unchanged"] > 0 and learned["negatives"] == (16 if model else 96)
    assert summary["timings_s"]["fit"] > 0 and summary["timings_s"]["inference"] > 0


def test_cli_bad_marks_leave_nothing(marked_scene, tmp_path):
    s = marked_scene
    bad = write_marks(tmp_path / "one.gpkg", gpd.read_file(s.marks).geometry[:2], [1, 1], crs=4326)
    out = tmp_path / "o"
    for args, text in ((["--labels", str(bad)], "mark a few unchanged"),
                       (["--labels", str(s.marks), "--model", "cva"], "does not learn from marks"),
                       (["--labels", str(s.marks), "--label-field", "kind"], "no field 'kind'"),
                       (["--labels", str(tmp_path / "none.gpkg")], "no such file")):
        res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "-q", *args])
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()


@pytest.mark.parametrize("model", ["logistic", "cdcluster"])
def test_cli_detect_with_marks(marked_scene, tmp_path, model):
    s = marked_scene
    out = tmp_path / "o"
    params = [x for k, v in FAST.items() for x in ("-p", f"{k}={v}")] if model == "cdcluster" else []
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "-q", "--labels",
                              str(s.marks), "--model", model, *params])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["path"] == str(s.marks) and summary["labels"]["epochs"] == (6 if params else 1)


def test_tile_takes_the_same_marks(marked_scene, tmp_path):
    """``tile --labels`` with a change field: marks, unknown (255) elsewhere, not "unchanged"."""
    from geochange.data import PatchDataset
    from geochange.data.tile import tile

    s = marked_scene
    tile(str(s.before), str(s.after), tmp_path / "ds", labels=str(s.marks), size=32, overlap=0, block=2)
    ds = PatchDataset(tmp_path / "ds")
    labels = [ds[i]["label"] for i in range(len(ds))]
    values = np.concatenate([x.ravel() for x in labels])
    assert {0, 1, 255} <= set(np.unique(values).tolist())
    assert (values == 255).mean() > 0.5  # most of the scene was not marked
    with RasterPair.open(str(s.before), str(s.after)) as pair:
        expected = Marks(str(s.marks), pair.grid).read(Window(0, 0, s.shape[1], s.shape[0]))
    assert int((values == 1).sum()) == int((expected == 1).sum())


@pytest.mark.parametrize("model", ["logistic", "cdcluster"])
def test_train_on_marks_then_detect_with_the_checkpoint(marked_scene, tmp_path, model):
    """``train --labels --pair``: the checkpoint maps the unmarked half as detect --labels does."""
    s = marked_scene
    out = tmp_path / "run"
    params = [x for k, v in FAST.items() for x in ("-p", f"{k}={v}")] if model == "cdcluster" else []
    res = runner.invoke(app, ["train", model, "--labels", str(s.marks), "--pair", f"{s.before},{s.after}",
                              "--out", str(out), "-q", "--device", "cpu", *params])
    assert res.exit_code == 0, res.output
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_file()
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "d"), "-q",
                              "--checkpoint", str(out / "last.pt")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "d" / "change_mask.tif") as ds:
        mask = ds.read(1) == 1
    right = np.zeros(s.shape, bool)
    right[:, s.shape[1] // 2 + 8:] = True
    assert mask[s.roofs & right].mean() > 0.8 and mask[s.distractors & right].mean() < 0.1


def test_train_on_marks_refuses_what_it_cannot_use(marked_scene, tmp_path):
    s = marked_scene
    far = write_marks(tmp_path / "far.gpkg", [box(900, 1, 3, 3), box(909, 9, 3, 3)], [1, 0])  # another place
    for args, text in ((["--labels", str(s.marks)], "--pair BEFORE,AFTER"),
                       (["--labels", str(s.marks), "--pair", str(s.before)], "BEFORE,AFTER"),
                       (["--labels", str(far), "--pair", f"{s.before},{s.after}"], "no mark lies on any"),
                       ([], "give --data")):
        res = runner.invoke(app, ["train", "cdcluster", "--out", str(tmp_path / "r"), "-q", *args])
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_vae_learns_from_marks_by_the_table3_protocol(marked_scene, tmp_path):
    """vae: representation on the scene's cheap negatives, classifier fine-tuned on the marks; the
    right half's roofs are found, its distractors are not."""
    s = marked_scene
    params = {"scene_patches": 200, "scene_epochs": 3, "marks_negatives": 200, "epochs": 10, "prior_adjust": True}
    summary = detect(str(s.before), str(s.after), tmp_path / "v", DetectOptions(model="vae", labels=str(s.marks),
                                                                                model_params=params))
    with rasterio.open(tmp_path / "v" / "change_mask.tif") as ds:
        mask = ds.read(1) == 1
    right = np.zeros(s.shape, bool)
    right[:, s.shape[1] // 2 + 8:] = True
    roofs, distractors = mask[s.roofs & right].mean(), mask[s.distractors & right].mean()
    assert roofs > 0.5 and distractors < 0.1, (roofs, distractors)
    assert summary["model"]["config"]["stage"] == "finetune"
    assert 0 < summary["model"]["scene_prior"] < 0.5   # the balanced classifier moved to the scene's share


def test_rscvae_takes_unchanged_marks_and_negatives_as_its_normal_class(marked_scene):
    from geochange.models.rscvae import RSCVAE

    s = marked_scene
    with RasterPair.open(str(s.before), str(s.after)) as pair:
        marks = Marks(str(s.marks), pair.grid)
        samples = pair.fit_normalization(n_windows=4, size=96)
        scene = cut_marked_scene(pair, marks, samples, patch=32, negatives=120, seed=0)
    model = RSCVAE(device="cpu")
    model.config.scene_epochs, model.config.patch, model.config.threshold_quantile = 2, 32, 0.9
    summary = model.fit_marks(scene)
    normal = sum(1 for it in scene.items() if not (np.asarray(it["label"]) == 1).any())
    assert model.stats["n_normal"] == normal < len(scene.items())
    assert summary["history"][-1]["samples"] == normal   # one-class: the changed marks are not trained on
