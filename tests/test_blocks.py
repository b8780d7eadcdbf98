"""``detect`` in blocks on a local Dask cluster of 2 workers: the same outputs as one process, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geochange.detect import DetectOptions, detect
from geochange.engine.plan import plan_blocks, plan_windows
from geochange.errors import GeochangeError
from geochange.io.journal import WORK_DIR
from geochange.models.cva import CVA, CVAConfig
from tests.conftest import make_planted_scene
from tests.test_detect import register_model

ROOT = Path(__file__).resolve().parents[1]
RASTERS = ("change_probability.tif", "change_mask.tif", "change_type.tif")
BASE = dict(model="slow_typed_cva", tile=64, overlap=16, batch_size=5)  # batches straddle window rows


@dataclass
class SlowConfig(CVAConfig):
    sleep: float = 0.0  # seconds per batch, so that a run can be killed half-way
    die_once: str = ""  # marker file: the first worker to predict creates it and dies (a lost worker)


class SlowTypedCVA(CVA):
    """cva with two change types (brighter / darker after), optionally slow or losing its worker once."""

    name = "slow_typed_cva"
    config_class = SlowConfig
    n_types = 2
    context_px = None   # windows overlap as a network's do: the seams between blocks are blended

    def predict(self, before, after, valid):
        time.sleep(self.config.sleep)
        if self.config.die_once and _on_a_worker() and not os.path.exists(self.config.die_once):
            Path(self.config.die_once).touch()
            os._exit(1)
        return super().predict(before, after, valid)

    def predict_with_types(self, before, after, valid):
        kinds = np.where((after - before).mean(axis=1) > 0, 1, 2).astype(np.uint8)
        return self.predict(before, after, valid), kinds


def _on_a_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


@pytest.fixture
def scene(tmp_path, monkeypatch, many_cores):
    register_model(monkeypatch, "slow_typed_cva", SlowTypedCVA)
    return make_planted_scene(tmp_path / "scene", height=600, holes=True)  # tall enough for overviews


@pytest.fixture
def single(scene, tmp_path):
    """The reference: the same run in one process."""
    out = tmp_path / "single"
    detect(str(scene.before), str(scene.after), out, DetectOptions(**BASE))
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    """Rasters equal bit for bit (full resolution and overviews, same profile); polygons equal after
    the same, features in the same order with the same ids; the same statistics."""
    for name in RASTERS:
        with rasterio.open(a / name) as da, rasterio.open(b / name) as db:
            assert da.profile == db.profile and da.descriptions == db.descriptions, name
            # the same provenance (but the date, and the model's settings some tests vary: sleep) and band
            # meaning, colour table, style and class names
            own = ("CREATED", "TIFFTAG_DATETIME", "MODEL_PARAMS")
            assert {k: v for k, v in da.tags().items() if k not in own} == \
                {k: v for k, v in db.tags().items() if k not in own}, name
            assert "MODEL_PARAMS" in da.tags() and "MODEL_PARAMS" in db.tags(), name
            assert da.tags(1) == db.tags(1) and da.units == db.units and da.tags(1)["VALUES"], name
            if name == "change_type.tif":
                assert da.colormap(1) == db.colormap(1), name
            assert np.array_equal(da.read(1), db.read(1)), name
            assert da.overviews(1) == db.overviews(1) and da.overviews(1), name
            shape = (da.height // 2, da.width // 2)
            assert np.array_equal(da.read(1, out_shape=shape), db.read(1, out_shape=shape)), name
    for name in ("change_probability.qml", "change_mask.qml", "change_type.qml", "change_type.tif.aux.xml",
                 "changes.qml"):
        assert (a / name).read_text() == (b / name).read_text(), name
    metadata = [pyogrio.read_info(d / "changes.gpkg", layer="changes")["layer_metadata"] for d in (a, b)]
    assert metadata[0]["MODEL"] == metadata[1]["MODEL"] == "slow_typed_cva"
    assert_same_polygons(a, b)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("valid_pixels", "changed_pixels", "polygons", "threshold", "min_area_m2", "hysteresis_low",
                "regions_dropped", "holes_filled"):
        assert sa[key] == sb[key], key
    assert sa["changed_area_m2"] == pytest.approx(sb["changed_area_m2"], abs=0.02)
    assert (b / "quicklook.png").is_file() and not (b / WORK_DIR).exists()


def assert_same_polygons(a: Path, b: Path) -> None:
    """The same features in the same order: ids, attributes and geometries (vertex for vertex), in the
    GeoPackage and the Shapefile."""
    for name, kw in (("changes.gpkg", {"layer": "changes"}), ("changes.shp", {})):
        frames = [gpd.read_file(d / name, **kw) for d in (a, b)]
        assert len(frames[0]) > 10, name
        assert list(frames[0].columns) == list(frames[1].columns), name
        assert frames[0]["id"].tolist() == list(range(1, len(frames[0]) + 1)), name
        assert frames[0].drop(columns="geometry").equals(frames[1].drop(columns="geometry")), name
        assert (shapely.to_wkb(frames[0].geometry.values) == shapely.to_wkb(frames[1].geometry.values)).all(), name


def block_borders(height: int, width: int) -> list[int]:
    blocks = plan_blocks(plan_windows(height, width, BASE["tile"], BASE["overlap"]), 96)
    return [b.y0 for b in blocks[1:]]


def test_blocked_run_on_two_workers_equals_the_single_process_run(scene, single, tmp_path):
    out = tmp_path / "blocked"
    summary = detect(str(scene.before), str(scene.after), out, DetectOptions(**BASE, workers=2, block_size=96))
    borders = block_borders(*scene.shape)
    assert summary["engine"]["blocks"] == len(borders) + 1 == 6 and summary["engine"]["dask_workers"] == 2
    assert summary["regions_dropped"] > 0  # the default MMU at work
    assert_same_outputs(single, out)
    # the test means something: polygons cross the borders between blocks, and were joined there
    bounds = gpd.read_file(out / "changes.gpkg", layer="changes").geometry.bounds
    t = scene.transform
    top, bottom = (t.f - bounds.maxy) / abs(t.e), (t.f - bounds.miny) / abs(t.e)
    crossing = sum(int(((top < y) & (bottom > y)).sum()) for y in borders)
    assert crossing >= 2


def test_blocked_run_with_mmu_and_hysteresis_equals_the_single_process_run(scene, tmp_path):
    """The region decisions: a block's own regions decided in the block, border regions at assembly."""
    opts = dict(BASE, min_area=40.0, hysteresis_low=0.3)
    single = tmp_path / "single"
    s = detect(str(scene.before), str(scene.after), single, DetectOptions(**opts))
    b = detect(str(scene.before), str(scene.after), tmp_path / "blocked", DetectOptions(**opts, workers=2, block_size=96))
    assert s["regions_dropped"] > 0 and s["holes_filled"] > 0 and s["hysteresis_low"] == 0.3
    assert_same_outputs(single, tmp_path / "blocked")
    with rasterio.open(single / "change_mask.tif") as ds:
        assert b["changed_pixels"] == int((ds.read(1) == 1).sum())


def test_run_killed_half_way_resumes_to_the_same_outputs(scene, single, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from geochange import models, scheduler
        from geochange.detect import DetectOptions, detect
        models.MODELS["slow_typed_cva"] = "tests.test_blocks:SlowTypedCVA"
        scheduler.usable_cores = lambda: 16  # the many_cores fixture
        if __name__ == "__main__":
            detect({str(scene.before)!r}, {str(scene.after)!r}, {str(out)!r},
                   DetectOptions(**{BASE!r}, model_params={{"sleep": 0.4}}, workers=2, block_size=96))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    blocks = out / WORK_DIR / "blocks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if blocks.is_dir() and any((p / "block.json").is_file() for p in blocks.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the client, the cluster and its workers
    proc.wait()
    finished = [p for p in blocks.iterdir() if (p / "block.json").is_file()]
    assert 1 <= len(finished) < 6
    assert not any((out / name).exists() for name in (*RASTERS, "changes.gpkg", "changes.shp", "summary.json"))

    with pytest.raises(GeochangeError, match="unfinished run"):  # not without --resume
        detect(str(scene.before), str(scene.after), out, DetectOptions(**BASE, workers=2, block_size=96))
    with pytest.raises(GeochangeError, match="differs"):  # not with other settings
        detect(str(scene.before), str(scene.after), out,
               DetectOptions(**BASE, model_params={"sleep": 0.4}, workers=2, block_size=96, min_area=5, resume=True))
    summary = detect(str(scene.before), str(scene.after), out,
                     DetectOptions(**BASE, model_params={"sleep": 0.4}, workers=2, block_size=96, resume=True))
    assert summary["engine"]["blocks_resumed"] == len(finished)
    assert_same_outputs(single, out)


def test_a_lost_worker_is_replaced_and_the_result_is_unchanged(scene, single, tmp_path):
    marker = tmp_path / "died"
    out = tmp_path / "lost"
    detect(str(scene.before), str(scene.after), out,
           DetectOptions(**BASE, model_params={"die_once": str(marker)}, workers=2, block_size=96))
    assert marker.exists()  # a worker did die mid-block
    assert_same_outputs(single, out)


def test_resume_needs_a_cluster_and_an_unfinished_run_is_not_overwritten_silently(scene, tmp_path):
    with pytest.raises(GeochangeError, match="--workers or --scheduler"):
        detect(str(scene.before), str(scene.after), tmp_path / "x", DetectOptions(**BASE, resume=True))
    (tmp_path / "y" / WORK_DIR).mkdir(parents=True)
    (tmp_path / "y" / WORK_DIR / "journal.json").write_text("{}")
    with pytest.raises(GeochangeError, match="unfinished run"):
        detect(str(scene.before), str(scene.after), tmp_path / "y", DetectOptions(**BASE))
    detect(str(scene.before), str(scene.after), tmp_path / "y", DetectOptions(**BASE, overwrite=True))
    assert not (tmp_path / "y" / WORK_DIR).exists()


def test_blocks_on_a_running_scheduler_given_by_address(scene, single, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "remote"
        summary = detect(str(scene.before), str(scene.after), out,
                         DetectOptions(**BASE, scheduler=cluster.scheduler_address, block_size=96))
        assert len(cluster.scheduler_info["workers"]) == 2  # the cluster outlives the run: not ours to close
    assert summary["engine"]["scheduler"] == cluster.scheduler_address and summary["engine"]["dask_workers"] == 2
    assert_same_outputs(single, out)


def test_workers_run_in_one_process_where_a_local_cluster_cannot_gain(scene, single, tmp_path, monkeypatch):
    """On 2 cores a plain run already keeps them busy: ``--workers 2`` runs it, and says so;
    ``--resume`` runs blocks all the same (a resumable run)."""
    monkeypatch.setattr("geochange.scheduler.usable_cores", lambda: 2)
    out = tmp_path / "plain"
    summary = detect(str(scene.before), str(scene.after), out, DetectOptions(**BASE, workers=2, block_size=96))
    assert "blocks" not in summary["engine"]
    local = summary["engine"]["local_cluster"]
    assert local["workers"] == 2 and not local["used"] and "2 cores" in local["reason"]
    assert json.loads((out / "summary.json").read_text())["engine"]["local_cluster"] == local
    assert_same_outputs(single, out)
    resumable = detect(str(scene.before), str(scene.after), tmp_path / "resumable",
                       DetectOptions(**BASE, workers=2, block_size=96, resume=True))
    assert resumable["engine"]["blocks"] == 6 and "local_cluster" not in resumable["engine"]
    assert_same_outputs(single, tmp_path / "resumable")


@pytest.mark.parametrize("workers, blocks, cores, per_run, gains", [
    (2, 6, 16, 2, True), (2, 6, 4, 2, True), (4, 6, 4, 2, True),
    (1, 6, 16, 2, False),   # one worker: the blocks one after another
    (4, 1, 16, 2, False),   # one block
    (2, 6, 2, 2, False), (2, 6, 3, 2, False),  # a plain run keeps the cores busy
    (2, 6, 16, 16, False),  # a model on torch's CPU threads: all of them
])
def test_when_a_local_cluster_can_gain(workers, blocks, cores, per_run, gains):
    from geochange.scheduler import why_not_local_blocks

    assert (why_not_local_blocks(workers, blocks, cores, per_run) is None) == gains


@pytest.mark.parametrize("coregister", [
    "off",
    # AFTER is warped onto BEFORE's grid here: the single run reads it after the co-registration's
    # reads, the workers afresh (io.align.warp_to_grid keeps such reads equal)
    "auto",
])
def test_polygons_of_real_imagery_in_blocks_are_a_single_runs_ids_included(test_data, many_cores, tmp_path,
                                                                            coregister, monkeypatch):
    """NAIP 2016 / 2017 (tests/data): changes.gpkg and changes.shp of ``--workers 2`` are a single
    run's feature for feature (order, ids, attributes, geometries), regions across block borders included."""
    from geochange.engine import plan

    monkeypatch.setattr(plan, "STRIP_PIXELS", 256 * 16)   # cva's strips: 16 rows, so several blocks
    before, after = str(test_data / "naip_nd_2016_crop.tif"), str(test_data / "naip_nd_2017_crop.tif")
    opts = dict(tile=64, overlap=16, min_area=0, coregister=coregister)
    single = detect(before, after, tmp_path / "single", DetectOptions(**opts))
    blocked = detect(before, after, tmp_path / "blocked", DetectOptions(**opts, workers=2, block_size=64))
    assert blocked["engine"]["blocks"] >= 2 and blocked["polygons"] == single["polygons"]
    assert_same_polygons(tmp_path / "single", tmp_path / "blocked")
    grid = single["grid"]
    borders = [b.y0 for b in plan_blocks(plan.plan_strips(grid["height"], grid["width"]), 64)[1:]]
    frame = gpd.read_file(tmp_path / "blocked" / "changes.gpkg", layer="changes")
    with rasterio.open(before) as ds:
        t = ds.transform
    top, bottom = (t.f - frame.geometry.bounds.maxy) / abs(t.e), (t.f - frame.geometry.bounds.miny) / abs(t.e)
    assert sum(int(((top < y) & (bottom > y)).sum()) for y in borders) >= 2
