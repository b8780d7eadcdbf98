"""The QGIS plugin in a real, headless QGIS: installed by ``geochange qgis-install``, its Processing
algorithms run on a tiny planted pair, their outputs loaded styled.

QGIS's Python (``/usr/bin/python3`` with the ``qgis`` module: ``apt-get install python3-qgis``) runs
tests/qgis_session.py; this module checks what it saw. Without QGIS these tests fail, unless
GEOCHANGE_NO_QGIS=1 says to skip them knowingly (.ci/run installs QGIS, so CI always runs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geochange.cli import app
from geochange.detect import DetectOptions, detect
from tests.conftest import make_marked_scene, make_planted_scene
from tests.test_styles import TypedCVA

ROOT = Path(__file__).resolve().parents[1]
QGIS_PYTHON = os.environ.get("GEOCHANGE_QGIS_PYTHON", "/usr/bin/python3")
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"   # Debian's: Processing's Python lives there


def qgis_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME",)}
    # the geochange the plugin runs (sys.executable -m geochange) imports this checkout's code
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1",
               XDG_RUNTIME_DIR=str(tmp), GEOCHANGE_EXECUTABLE="")
    return env


def require_qgis(tmp: Path) -> None:
    if os.environ.get("GEOCHANGE_NO_QGIS") == "1":
        pytest.skip("GEOCHANGE_NO_QGIS=1: the QGIS plugin is not tested")
    code = f"import sys; sys.path.insert(0, {QGIS_PLUGINS!r}); import qgis.core, processing"
    probe = subprocess.run([QGIS_PYTHON, "-c", code], env=qgis_env(tmp), cwd=tmp,
                           capture_output=True, text=True) if Path(QGIS_PYTHON).exists() else None
    if probe is None or probe.returncode != 0:
        pytest.fail(f"QGIS's Python ({QGIS_PYTHON} with the qgis module) is needed to test the QGIS plugin: "
                    "apt-get install -y python3-qgis qgis-providers, or set GEOCHANGE_NO_QGIS=1 to skip knowingly"
                    + (f" ({probe.stderr.strip().splitlines()[-1]})" if probe and probe.stderr.strip() else ""),
                    pytrace=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Install the plugin, make the scenes, run tests/qgis_session.py once; what QGIS saw."""
    tmp = tmp_path_factory.mktemp("qgis")
    require_qgis(tmp)
    result = CliRunner().invoke(app, ["qgis-install", "--plugins-dir", str(tmp / "plugins")])
    assert result.exit_code == 0, result.output
    planted = make_planted_scene(tmp / "scene", after_crs=None)
    marked = make_marked_scene(tmp / "marked")
    typed = tmp / "typed"
    mp = pytest.MonkeyPatch()
    try:
        from tests.test_detect import register_model

        register_model(mp, "typed_cva", TypedCVA)
        detect(str(planted.before), str(planted.after), typed, DetectOptions(model="typed_cva", tile=64, overlap=16))
    finally:
        mp.undo()
    cfg = {"qgis_plugins": QGIS_PLUGINS, "profile": str(tmp / "profile"), "plugins": str(tmp / "plugins"),
           "before": str(planted.before), "after": str(planted.after), "truth": str(planted.truth),
           "out": str(tmp / "out"), "marks": str(marked.marks), "marks_before": str(marked.before),
           "marks_after": str(marked.after), "marks_out": str(tmp / "marks_out"), "cancel_out": str(tmp / "canceled"),
           "scores": str(tmp / "scores.json"), "typed": str(typed), "bare": str(tmp / "bare"),
           "report": str(tmp / "report.json")}
    fake = tmp / "fake-geochange"   # what the provider's setting names, in one test
    fake.write_text(f"#!{sys.executable}\nimport sys\n"
                    "print('error: the geochange of the setting ran:', sys.argv[1], file=sys.stderr)\nsys.exit(2)\n")
    fake.chmod(0o755)
    cfg["fake_geochange"] = str(fake)
    (tmp / "session.json").write_text(json.dumps(cfg))
    proc = subprocess.run([QGIS_PYTHON, str(ROOT / "tests" / "qgis_session.py"), str(tmp / "session.json")],
                          env=qgis_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=600)
    assert (tmp / "report.json").is_file(), f"QGIS session died ({proc.returncode}): {proc.stderr[-3000:]}"
    report = json.loads((tmp / "report.json").read_text())
    assert "exception" not in report, report["exception"]
    return tmp, report


def test_plugin_installs_and_registers_its_algorithms(session):
    tmp, report = session
    installed = json.loads((tmp / "plugins" / "geochange_qgis" / "geochange_command.json").read_text())
    assert installed["command"] == [sys.executable, "-m", "geochange"]
    assert report["available"] and report["started"]
    assert report["algorithms"] == ["geochange:detect", "geochange:evaluate"]
    # the provider's setting exists (empty: the installed command) and, when set, is what runs
    assert report["setting"] == ""
    run = report["other_geochange"]
    assert run["error"] == "geochange detect failed: the geochange of the setting ran: detect"
    assert run["log"]["commands"][0].startswith(str(tmp / "fake-geochange") + " detect ")


def test_detect_writes_the_outputs_and_loads_them_styled(session):
    tmp, report = session
    run = report["detect"]
    assert "error" not in run, run
    out = tmp / "out"
    results = run["results"]
    assert results["OUTPUT"] == str(out)
    assert results["CHANGE_MASK"] == str(out / "change_mask.tif") and Path(results["CHANGE_MASK"]).is_file()
    assert results["CHANGES"] == f"{out / 'changes.gpkg'}|layername=changes"
    summary = json.loads((out / "summary.json").read_text())
    assert results["POLYGONS"] == summary["polygons"] > 0 and results["CHANGE_TYPE"] is None
    assert summary["min_area_m2"] == 20 and summary["engine"]["tile"] == 64   # the parameters reached geochange
    layers = {l["name"]: l for l in report["project_layers"]}
    assert set(layers) == {"changes", "change mask", "change probability"}
    assert all(l["valid"] for l in layers.values())
    assert layers["change mask"]["renderer"] == "paletted"
    assert layers["change mask"]["classes"] == [[0, "unchanged", 0], [1, "changed", 255]]
    assert layers["change probability"]["renderer"] == "singlebandpseudocolor"
    assert layers["change probability"]["ramp"][0] == [0.0, 0] and layers["change probability"]["ramp"][-1] == [1.0, 255]
    assert layers["changes"]["renderer"] == "singleSymbol" and layers["changes"]["source"] == results["CHANGES"]
    # polygons over the mask over the probability
    assert report["tree_order"] == ["changes", "change mask", "change probability"]


def test_rasters_open_with_their_sidecar_styles(session):
    tmp, report = session
    assert report["opened"]["change_probability.tif"]["renderer"] == "singlebandpseudocolor"
    assert report["opened"]["change_mask.tif"]["renderer"] == "paletted"


def test_detect_reports_start_progress_and_finish(session):
    tmp, report = session
    log = report["detect"]["log"]
    assert len(log["commands"]) == 1 and " detect " in log["commands"][0] and "--min-area 20.0" in log["commands"][0]
    assert log["texts"][0] == "geochange detect: started"
    progress = log["progress"]
    assert 0 in progress and 100 in progress[progress.index(0):]   # 0 at the start, 100 when done
    finished = [i for i in log["infos"] if i.startswith("geochange detect: finished in ")]
    assert len(finished) == 1 and any(i.startswith("done:") for i in log["infos"])
    # geochange's N/M lines became progress (cdcluster's epochs: 1/1, shown as 99 % until it is done)
    marks_log = report["marks"]["log"]
    assert "cdcluster epoch 1/1" in marks_log["texts"] and 99.0 in marks_log["progress"], marks_log


def test_marks_drawn_in_qgis_reach_geochange(session):
    tmp, report = session
    assert "error" not in report["marks"], report["marks"]
    summary = json.loads((tmp / "marks_out" / "summary.json").read_text())
    assert summary["model"]["name"] == "cdcluster"
    labels = summary["labels"]
    assert labels["field"] == "changed" and labels["changed"] + labels["unchanged"] == report["marks_drawn"] > 0
    assert labels["changed"] > 0 and labels["unchanged"] > 0


def test_cancel_stops_geochange_and_leaves_nothing(session):
    tmp, report = session
    run = report["canceled"]
    assert run.get("results", {}) == {} and any("canceled" in i for i in run["log"]["infos"])
    folder = tmp / "canceled"
    assert not folder.exists() or not [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert not folder.exists() or not list(folder.iterdir())


def test_a_refused_run_is_one_clear_error(session):
    tmp, report = session
    error = report["refused"]["error"]
    assert error.startswith("geochange detect failed: ") and "--overwrite" in error and "\n" not in error


def test_evaluate_scores_the_mask(session):
    tmp, report = session
    run = report["evaluate"]
    assert "error" not in run, run
    saved = json.loads((tmp / "scores.json").read_text())["scores"]
    for key in ("f1", "kappa", "iou", "precision", "recall"):
        assert run["results"][key.upper()] == pytest.approx(saved[key])
    assert run["results"]["F1"] > 0.7     # the planted change is found


def test_change_types_open_as_named_classes(session):
    tmp, report = session
    typed = report["typed"]
    names = [[0, "unchanged", 0], [1, "type 1", 255], [2, "type 2", 255]]
    assert typed["change_type"]["renderer"] == "paletted" and typed["change_type"]["classes"] == names
    # without its .qml: QGIS's own renderer of the colour table, named by the GDAL category names
    bare = typed["no_qml"]
    assert bare["renderer"] == "paletted"
    assert [c[:2] for c in bare["classes"] if c[0] in (1, 2)] == [[1, "type 1"], [2, "type 2"]]
    for layer in ("gpkg", "shp"):
        assert typed[layer]["renderer"] == "categorizedSymbol" and typed[layer]["attr"] == "type"
        assert typed[layer]["categories"] == [["1", "type 1"], ["2", "type 2"]]
