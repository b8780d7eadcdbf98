"""The QGIS plugin's parts that need no QGIS: finding and running the geochange command, reading its
progress, stopping it (``geochange.qgis.runner``), and ``geochange qgis-install`` (``geochange.qgis.install``)."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geochange.cli import app
from geochange.qgis import install as installer
from geochange.qgis import runner

PLUGIN_SOURCE = Path(installer.__file__).parent


@pytest.mark.parametrize("line, progress", [
    ("detecting (cva, cpu): 12/40", 30.0),
    ("detecting (cva, cpu): 120/480 windows (25 %, 12 s)", 25.0),
    ("detecting (cva, cpu): 480/480 windows in 48 s", 100.0),
    ("downloading: 3.2/10.0 MB", 32.0),
    ("epochs 3/4.", 75.0),
    ("cdcluster epoch 3/30: loss 0.45", 10.0),
    ("windows 5 / 10", 50.0),
    ("block 2/6, window 10/20", 50.0),          # the last N/M of a line
    ("(40/40)", 100.0),
    ("reading /data/2020/10/scene.tif", None),   # a path is no progress
    ("AFTER is off by +0.35, -1.20 px", None),
    ("done: 1,234 m² changed (2.35 % of valid pixels), 8 polygons, in 3.1 s -> out", None),
    ("50/40", None),                             # more done than there is: not progress
    ("3/0", None),
    ("v1.2/3", None),
])
def test_progress_is_read_from_n_of_m(line, progress):
    assert runner.progress_of(line) == progress


def test_the_error_shown_is_geochanges_one_line():
    assert runner.error_of(["warning: x", "error: out: cannot write", "more"]) == "out: cannot write"
    assert runner.error_of(["Traceback (most recent call last):", "  ...", "ValueError: boom"]) == "ValueError: boom"
    assert runner.error_of([]) == ""


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}")
    path.chmod(0o755)
    return path


def test_find_geochange_in_order_setting_env_installed_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = _script(bin_dir, "geochange", "print('x')")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv(runner.ENV_VAR, raising=False)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    assert runner.find_geochange(None, str(plugin)) == [str(on_path)]
    (plugin / runner.INSTALLED_COMMAND).write_text(json.dumps({"command": [sys.executable, "-m", "geochange"]}))
    assert runner.find_geochange("", str(plugin)) == [sys.executable, "-m", "geochange"]
    other = _script(tmp_path, "geochange-env", "print('y')")
    monkeypatch.setenv(runner.ENV_VAR, str(other))
    assert runner.find_geochange("  ", str(plugin)) == [str(other)]
    setting = _script(tmp_path, "geochange-setting", "print('z')")
    assert runner.find_geochange(str(setting), str(plugin)) == [str(setting)]
    with pytest.raises(runner.GeochangeNotFound, match="provider's setting names .*/nowhere, which does not exist"):
        runner.find_geochange(str(tmp_path / "nowhere"), str(plugin))


def test_find_geochange_says_what_to_do_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(runner.ENV_VAR, raising=False)
    with pytest.raises(runner.GeochangeNotFound, match="geochange qgis-install"):
        runner.find_geochange(None, str(tmp_path))


def test_run_streams_lines_and_reports_the_error(tmp_path):
    script = _script(tmp_path, "fake", """
        import sys
        print("status: 1/2", file=sys.stderr, flush=True)
        print("done: half", flush=True)
        print("warning: odd", file=sys.stderr, flush=True)
        print("error: the folder is full", file=sys.stderr, flush=True)
        sys.exit(2)
        """)
    seen = []
    result = runner.run([str(script)], lambda stream, text: seen.append((stream, text)), lambda: False)
    assert result.returncode == 2 and not result.ok and not result.canceled
    assert result.error == "the folder is full" and result.stdout == "done: half"
    assert [t for s, t in seen if s == "stderr"] == ["status: 1/2", "warning: odd", "error: the folder is full"]
    assert ("stdout", "done: half") in seen


def test_cancel_terminates_the_command(tmp_path):
    script = _script(tmp_path, "slow", """
        import signal, sys, time
        def bye(*_):
            print("cleaned up", file=sys.stderr, flush=True)
            sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("working: 0/10", file=sys.stderr, flush=True)
        time.sleep(60)
        """)
    seen = []
    t0 = time.monotonic()
    result = runner.run([str(script)], lambda s, t: seen.append(t), lambda: bool(seen), poll_s=0.05)
    assert result.canceled and not result.ok and result.returncode == 143
    assert seen == ["working: 0/10", "cleaned up"]     # it had the time to clean up
    assert time.monotonic() - t0 < 30


def test_qgis_install_copies_the_plugin_with_this_command(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.ENV_VAR, raising=False)
    plugins = tmp_path / "QGIS3" / "profiles" / "default" / "python" / "plugins"
    result = CliRunner().invoke(app, ["qgis-install", "--plugins-dir", str(plugins)])
    assert result.exit_code == 0, result.output
    assert "enable 'geochange'" in result.output
    folder = plugins / installer.PLUGIN
    assert sorted(p.name for p in folder.iterdir()) == sorted([*installer.FILES, runner.INSTALLED_COMMAND])
    for name in installer.FILES:
        assert (folder / name).read_bytes() == (PLUGIN_SOURCE / name).read_bytes()
    recorded = json.loads((folder / runner.INSTALLED_COMMAND).read_text())
    assert recorded["command"] == [sys.executable, "-m", "geochange"]
    assert runner.find_geochange(None, str(folder)) == [sys.executable, "-m", "geochange"]
    # again (an upgrade): replaced whole, nothing left beside it
    (folder / "stale.py").write_text("")
    assert CliRunner().invoke(app, ["qgis-install", "--plugins-dir", str(plugins)]).exit_code == 0
    assert not (folder / "stale.py").exists() and [p.name for p in plugins.iterdir()] == [installer.PLUGIN]


def test_qgis_install_replaces_a_developer_link_without_touching_its_target(tmp_path):
    plugins, checkout = tmp_path / "plugins", tmp_path / "checkout"
    plugins.mkdir()
    checkout.mkdir()
    (checkout / "keep.py").write_text("kept")
    (plugins / installer.PLUGIN).symlink_to(checkout, target_is_directory=True)
    installer.install(plugins)
    assert not (plugins / installer.PLUGIN).is_symlink() and (plugins / installer.PLUGIN / "metadata.txt").is_file()
    assert [p.name for p in checkout.iterdir()] == ["keep.py"]


def test_qgis_install_refused_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["qgis-install", "--plugins-dir", str(blocker / "plugins")])
    assert result.exit_code == 2 and result.output.startswith("error: cannot install the QGIS plugin")


def test_profile_plugin_folder(monkeypatch, tmp_path):
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
        assert installer.plugins_dir("work") == tmp_path / "QGIS" / "QGIS3" / "profiles" / "work" / "python" / "plugins"
    assert installer.plugins_dir().parts[-3:] == ("default", "python", "plugins")


def test_plugin_code_imports_only_qgis_and_the_standard_library():
    """QGIS's Python has neither geochange's dependencies nor geochange: the copied plugin must not need them."""
    allowed = set(sys.stdlib_module_names) | {"qgis", "processing", "__future__"}
    for name in installer.FILES:
        if not name.endswith(".py"):
            continue
        tree = ast.parse((PLUGIN_SOURCE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [] if node.level else [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in allowed, f"{name} imports {module}"


def test_metadata_names_the_plugin_and_its_provider():
    import configparser

    meta = configparser.ConfigParser()
    meta.read(PLUGIN_SOURCE / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    assert general["name"] == "geochange" and general["hasProcessingProvider"] == "yes"
    from geochange import __version__

    assert general["version"] == __version__ and general["icon"] in installer.FILES
