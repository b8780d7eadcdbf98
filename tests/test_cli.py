"""The command line: each command parses, calls the library, and reports errors in one line."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from geochange.cli import app

runner = CliRunner()


def test_detect_then_evaluate_then_info(planted_same_grid, tmp_path):
    s = planted_same_grid
    out = tmp_path / "out"
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "--tile", "128", "-q"])
    assert res.exit_code == 0, res.output
    assert (out / "change_mask.tif").is_file()
    res = runner.invoke(app, ["evaluate", str(out / "change_mask.tif"), str(s.truth), "--change-values", "1", "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)["scores"]
    assert scores["f1"] >= 0.6 and 0 <= scores["kappa"] <= 1
    res = runner.invoke(app, ["info", str(s.before), str(s.after), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["rasters"][0]["crs"] == "EPSG:32615" and info["overlap"]["overlap"] is True


def test_evaluate_prints_a_table(planted_same_grid, tmp_path):
    s = planted_same_grid
    runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-q"])
    res = runner.invoke(app, ["evaluate", str(tmp_path / "o" / "change_mask.tif"), str(s.truth)])
    assert res.exit_code == 0 and "kappa" in res.stdout and "[[" in res.stdout


def test_evaluate_ignores_truth_values(planted_same_grid, tmp_path):
    """A sparse truth: the planted truth labelled in a few rows only, 255 elsewhere (no nodata declared)."""
    import numpy as np
    import rasterio

    s = planted_same_grid
    with rasterio.open(s.truth) as ds:
        truth, profile = ds.read(1), ds.profile
    sparse = np.where(np.arange(truth.shape[0])[:, None] % 32 == 0, truth, 255).astype(np.uint8)
    with rasterio.open(tmp_path / "sparse.tif", "w", **(profile | {"nodata": None})) as ds:
        ds.write(sparse, 1)
    runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-q"])
    mask = str(tmp_path / "o" / "change_mask.tif")
    with rasterio.open(mask) as ds:
        scored = ds.read(1) != 255      # the prediction's own nodata is never scored
    whole = runner.invoke(app, ["evaluate", mask, str(tmp_path / "sparse.tif"), "--json"])
    assert whole.exit_code == 0 and "--ignore-value 255 " in whole.stderr
    for args in (["--ignore-value", "254,255"], ["--ignore-value", "255", "--ignore-value", "254"]):
        res = runner.invoke(app, ["evaluate", mask, str(tmp_path / "sparse.tif"), "--json", *args])
        assert res.exit_code == 0, res.output
        result = json.loads(res.stdout)
        assert result["ignored"] == {"values": [254, 255], "pixels": int((scored & (sparse == 255)).sum())}
        assert result["scores"]["n_pixels"] == int((scored & (sparse <= 1)).sum()) and "warning" not in res.stderr
    res = runner.invoke(app, ["evaluate", mask, str(tmp_path / "sparse.tif"), "--ignore-value", "x"])
    assert res.exit_code == 2 and res.stderr.splitlines() == [
        "error: --ignore-value x: give raster values separated by commas, e.g. 255"]


@pytest.mark.parametrize("command", ["detect", "evaluate", "info", "tile", "train"])
def test_help_shows_an_example(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "Example" in res.stdout and f"geochange {command}" in res.stdout


def test_bad_input_is_one_line_without_traceback(planted_same_grid, tmp_path):
    """As a user sees it: a real process, one line on stderr, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "geochange", "detect", str(planted_same_grid.before),
                           str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.tif" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_bad_option_values(planted_same_grid, tmp_path):
    s = planted_same_grid
    for args, text in ((["--bands", "1,x"], "--bands"), (["--device", "tpu"], "unknown device"),
                       (["--normalize", "magic"], "normalisation"), (["--model", "nope"], "unknown model"),
                       (["--resume"], "--workers or --scheduler"), (["--workers", "0"], "--workers must be"),
                       (["--min-area", "-1"], "--min-area must"), (["--min-area", "nan"], "--min-area must"),
                       (["--hysteresis", "1.5"], "--hysteresis must")):
        res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), *args])
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output


def test_detect_region_options(planted_same_grid, tmp_path):
    s = planted_same_grid
    out = tmp_path / "o"
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "--tile", "128", "-q",
                              "--min-area", "0", "--hysteresis", "0.3"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_area_m2"] == 0.0 and summary["hysteresis_low"] == 0.3


@pytest.mark.parametrize("command", ["detect", "detect-many", "evaluate", "info", "tile", "train", "build-wdc"])
def test_help_shows_flags_as_flags(command):
    """An on/off option takes no value: --help must not suggest one (``--overwrite <bool>``)."""
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "<bool>" not in res.stdout
    flag = next(line for line in res.stdout.splitlines() if "--help" in line)
    assert re.search(r"--help\s+-h\s+Show this message", flag)


def test_help_names_the_arguments_and_offers_shell_completion():
    res = runner.invoke(app, ["detect", "--help"], env={"COLUMNS": "200"})
    assert "BEFORE" in res.stdout and "AFTER" in res.stdout and "{before}" not in res.stdout
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout and "<bool>" not in res.stdout


def test_a_flag_given_a_value_is_one_line_naming_the_value(planted_same_grid, tmp_path):
    s = planted_same_grid
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "--overwrite", "true"],
                        prog_name="geochange")
    assert res.exit_code == 2
    assert res.stderr.splitlines() == ["error: Got unexpected extra argument(s) (true) (see geochange detect --help)"]
    assert not (tmp_path / "o").exists()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("geochange ")


def test_detect_drlnet_with_types_and_params(planted_same_grid, tmp_path):
    import numpy as np
    import rasterio

    s = planted_same_grid
    out = tmp_path / "d"
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "-q", "--model", "drlnet",
                              "--types", "3", "-p", "max_samples=1500", "-p", "pretrain_epochs=3",
                              "-p", "stage_epochs=2", "--seed", "1"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out / "change_type.tif") as ds:
        kinds = ds.read(1)
    assert set(np.unique(kinds)) - {255} <= {0, 1, 2, 3}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "drlnet"
    assert summary["model"]["config"]["schedule"][-1] == 3


def test_bad_param_is_one_line(planted_same_grid, tmp_path):
    s = planted_same_grid
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-p", "oops"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "--types", "3"])
    assert res.exit_code == 2 and "model cva has no setting 'types'" in res.output


def test_tile_writes_a_dataset(planted, tmp_path):
    from geochange.data import PatchDataset

    s, out = planted, tmp_path / "ds"
    args = ["tile", str(s.before), str(s.after), "--out", str(out), "--labels", str(s.truth),
            "--size", "32", "--overlap", "8", "--block", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "patch pairs" in res.output
    ds = PatchDataset(out)
    assert len(ds) > 10 and ds[0]["before"].shape == (3, 32, 32)
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_tile_then_train_then_detect_with_the_checkpoint(planted_same_grid, tmp_path, tiny_model):
    """The researcher's path end to end: chips with labels, a trained model, a change map from it."""
    s = planted_same_grid
    ds, run, out = tmp_path / "ds", tmp_path / "run", tmp_path / "out"
    res = runner.invoke(app, ["tile", str(s.before), str(s.after), "--labels", str(s.truth), "--size", "32",
                              "--split", "1,0,0", "--out", str(ds), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "tiny", "--data", str(ds), "--out", str(run), "--epochs", "2",
                              "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "tiny", "--data", str(ds), "--out", str(run), "--epochs", "25",
                              "--device", "cpu", "--resume", "-q"])
    assert res.exit_code == 0, res.output
    assert (run / "epoch_025.pt").is_file() and len((run / "metrics.csv").read_text().splitlines()) == 26
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--checkpoint", str(run / "last.pt"),
                              "--out", str(out), "--tile", "128", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "tiny" and summary["model"]["checkpoint"].endswith("last.pt")
    res = runner.invoke(app, ["evaluate", str(out / "change_mask.tif"), str(s.truth), "--change-values", "1", "--json"])
    assert json.loads(res.stdout)["scores"]["f1"] >= 0.6


def test_train_and_detect_refuse_bad_checkpoints_in_one_line(planted_same_grid, tmp_path, tiny_model):
    s = planted_same_grid
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    for args in (["detect", str(s.before), str(s.after), "--checkpoint", str(bad), "--out", str(tmp_path / "o")],
                 ["train", "--init", str(bad), "--data", str(tmp_path)],
                 ["train", "cva", "--data", str(tmp_path)],
                 ["train", "nosuchmodel", "--data", str(tmp_path)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.count("error:") == 1 and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_train_cdcluster_report_ia_prints_and_saves_the_table(planted_same_grid, tmp_path):
    s = planted_same_grid
    ds = tmp_path / "ds"
    res = runner.invoke(app, ["tile", str(s.before), str(s.after), "--labels", str(s.truth), "--size", "32",
                              "--split", "1,0,0", "--out", str(ds), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "cdcluster", "--data", str(ds), "--out", str(tmp_path / "ia"), "--report-ia",
                              "--ia-seeds", "0,1", "--ia-k", "2,4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "Initial Alignment" in res.output
    import csv

    rows = list(csv.DictReader(open(tmp_path / "ia" / "initial_alignment.csv")))
    assert sorted((int(r["seed"]), int(r["k"])) for r in rows) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert all(-1 <= float(r["ia"]) <= 1 for r in rows)
    assert not (tmp_path / "ia" / "last.pt").exists()  # reported, not trained
    res = runner.invoke(app, ["train", "tiny", "--data", str(ds), "--report-ia"])
    assert res.exit_code == 2 and "train cdcluster --report-ia" in res.output


def test_detect_on_a_local_dask_cluster_from_the_command_line(planted_same_grid, many_cores, tmp_path):
    s = planted_same_grid
    out = tmp_path / "o"
    # a filtered cva runs on overlapping windows (a plain one on strips), so the small scene makes blocks
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "--tile", "64", "--overlap",
                              "16", "--workers", "2", "--block-size", "64", "-p", "filter=median", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"]["blocks"] >= 2 and summary["engine"]["dask_workers"] == 2
    assert (out / "change_mask.tif").is_file() and (out / "changes.gpkg").is_file()


@pytest.mark.parametrize("args, message", [
    (["--bands", "1,1,1"], "error: --bands 1,1,1: band 1 is given twice"),
    (["--min-area", "nan"], "error: --min-area must be a finite number"),
    (["--min-area", "-5"], "error: --min-area must be >= 0"),
    (["--tile", "64", "--overlap", "64"], "error: --overlap (64) must be less than --tile (64)"),
    (["-p", "bins=abc"], "error: model cva: bins must be int, not 'abc'; it takes measure (str)"),
    (["-p", "foo=1"], "error: model cva has no setting 'foo'; it takes measure (str)"),
])
def test_detect_refuses_bad_options_in_one_line(planted_same_grid, tmp_path, args, message):
    s = planted_same_grid
    out = tmp_path / "o"
    res = runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(out), "-q", *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not out.exists()


def test_evaluate_takes_detects_styled_geopackage_as_truth(planted_same_grid, tmp_path):
    """changes.gpkg holds a layer_styles table beside its one data layer: no --truth-layer needed."""
    s = planted_same_grid
    runner.invoke(app, ["detect", str(s.before), str(s.after), "--out", str(tmp_path / "o"), "-q"])
    mask, gpkg = str(tmp_path / "o" / "change_mask.tif"), str(tmp_path / "o" / "changes.gpkg")
    res = runner.invoke(app, ["evaluate", mask, gpkg, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["scores"]["f1"] > 0.9   # the polygons are the mask's regions
    res = runner.invoke(app, ["evaluate", mask, str(s.truth), "--change-values", "abc"])
    assert res.exit_code == 2 and "error: --change-values abc: give raster values" in " ".join(res.output.split())
    res = runner.invoke(app, ["tile", str(s.before), str(s.after), "--labels", gpkg, "--size", "64",
                              "--out", str(tmp_path / "ds"), "-q"])
    assert res.exit_code == 0, res.output


def test_a_truncated_input_is_one_line_exit_2(planted_same_grid, tmp_path):
    s = planted_same_grid
    bad = tmp_path / "bad.tif"
    bad.write_bytes(s.after.read_bytes()[:20000])
    res = runner.invoke(app, ["detect", str(s.before), str(bad), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: cannot read its pixels")


SIGTERM_SCRIPT = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
import __main__
from geochange import models
from geochange.models.cva import CVA
from conftest import TinyChangeNet


class TermCVA(CVA):
    name = "term_cva"
    calls = 0
    context_px = None   # overlapping windows: several batches, so the signal comes half-way

    def predict(self, before, after, valid):
        TermCVA.calls += 1
        if TermCVA.calls == 2:                      # half-way: as `timeout` or a scheduler would
            os.kill(os.getpid(), signal.SIGTERM)
        return super().predict(before, after, valid)


class TermTiny(TinyChangeNet):
    name = "term_tiny"

    def training_step(self, batch, epoch):
        os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(batch, epoch)


__main__.TermCVA, __main__.TermTiny = TermCVA, TermTiny
models.MODELS.update(term_cva="__main__:TermCVA", term_tiny="__main__:TermTiny")
from geochange.cli import main
sys.argv = ["geochange", *{args!r}]
main()
"""


def run_until_sigterm(args: list[str]) -> subprocess.CompletedProcess:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = SIGTERM_SCRIPT.format(root=str(root), tests=str(root / "tests"), args=args)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_sigterm_mid_detect_exits_143_and_leaves_nothing(planted_same_grid, tmp_path):
    s, out = planted_same_grid, tmp_path / "o"
    res = run_until_sigterm(["detect", str(s.before), str(s.after), "--out", str(out), "--model", "term_cva",
                             "--tile", "64", "--overlap", "16", "-q"])
    assert res.returncode == 143, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == ["terminated: no output was left half-written"]
    assert not out.exists()


def test_sigterm_and_errors_in_train_leave_no_run_folder(tmp_path):
    from tests.test_patches import write_levir

    write_levir(tmp_path / "levir", [f"p{i}" for i in range(4)], size=16)
    run = tmp_path / "runs" / "tiny"
    res = run_until_sigterm(["train", "term_tiny", "--data", str(tmp_path / "levir"), "--out", str(run),
                             "--device", "cpu", "-q"])
    assert res.returncode == 143, res.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_remote_outputs_are_refused_in_one_line(planted_same_grid, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    s = planted_same_grid
    for args in (["detect", str(s.before), str(s.after), "--out", "s3://bucket/run"],
                 ["tile", str(s.before), str(s.after), "--out", "s3://bucket/run"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        assert res.output.strip() == ("error: --out s3://bucket/run: remote outputs are not supported; write to a "
                                      "local folder and copy it there afterwards (e.g. aws s3 cp --recursive)")
    assert list((tmp_path / "cwd").iterdir()) == []      # no ./s3:/bucket


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_workers_die_on_sigterm_as_without_the_handler():
    """The CLI's SIGTERM handler unwinds its own process only: a forked worker (a multiprocessing pool's,
    a DataLoader's) that its parent stops with SIGTERM dies at once, whatever it was waiting on."""
    import signal
    import time

    from geochange import cli

    before = signal.getsignal(signal.SIGTERM)
    try:
        cli._catch_sigterm()       # as every command does, in this (pytest's) process
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
        child.start()
        time.sleep(0.2)
        child.terminate()
        child.join(10)
        assert child.exitcode == -signal.SIGTERM, child.exitcode
        with pytest.raises(KeyboardInterrupt):   # Terminated, in the process that installed it
            cli._on_sigterm(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, before)
