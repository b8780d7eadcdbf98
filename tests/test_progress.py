"""Progress: bars with totals on a terminal, plain lines (with totals, never blank) anywhere else."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from geochange import progress
from geochange.logs import configure_cli_logging
from geochange.progress import count_text, set_quiet, task

from test_logs import rgba_with_nodata


@pytest.fixture
def lines(capsys, monkeypatch):
    """The CLI's handler on, stderr captured (no terminal): the progress lines written."""
    configure_cli_logging()
    set_quiet(False)
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)

    def read() -> list[str]:
        return capsys.readouterr().err.splitlines()
    return read


def test_line_mode_reports_each_tenth_with_the_total_then_a_final_line(lines):
    with task("detecting (cva, cpu)", 20, unit="windows") as advance:
        for _ in range(20):
            advance(1)
    out = lines()
    assert len(out) == 10 and all(line.strip() for line in out)   # 10 %, ..., 90 %, then the final line
    assert out[0].startswith("detecting (cva, cpu): 2/20 windows (10 %, ")
    assert out[4].startswith("detecting (cva, cpu): 10/20 windows (50 %, ")
    assert re.fullmatch(r"detecting \(cva, cpu\): 20/20 windows in \d+\.\d s", out[-1])


def test_line_mode_is_throttled(lines, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 3600.0)
    with task("tiling", 1000, unit="chips") as advance:
        for _ in range(1000):
            advance(1)
    assert [line.split(" in ")[0] for line in lines()] == ["tiling: 1000/1000 chips"]


def test_line_mode_steps_with_notes_and_unknown_sizes(lines):
    with task("fitting on the scene", 3, unit="steps") as advance:
        advance(0, "co-registration")
        advance(1, "normalisation")
        advance(1, "cva model")
        advance(1)
    with task("packing", None):
        pass
    with task("epoch 1/3", 5, unit="batches", transient=True) as advance:
        advance(5)
    out = lines()
    assert out[0].startswith("fitting on the scene (normalisation): 1/3 steps (33 %, ")
    assert out[1].startswith("fitting on the scene (cva model): 2/3 steps (67 %, ")
    assert out[2].startswith("fitting on the scene: 3/3 steps in ")
    assert out[3].startswith("packing: done in ")      # never 0/?
    assert len(out) == 4                                 # a transient step leaves no final line
    assert not any("/?" in line for line in out)


def test_quiet_and_failed_steps_write_nothing(lines):
    set_quiet(True)
    try:
        with task("detecting", 4, unit="windows") as advance:
            advance(4)
    finally:
        set_quiet(False)
    with pytest.raises(KeyError):
        with task("detecting", 4, unit="windows") as advance:
            raise KeyError("x")
    assert lines() == []


def test_counts_of_bytes_and_of_unknown_totals():
    assert count_text(3 * 2**20, 10 * 2**20, "bytes") == "3.0/10.0 MB"
    assert count_text(512, None, "bytes") == "512.0 bytes"
    assert count_text(7, None, "windows") == "7 windows"
    assert count_text(1, 3, "") == "1/3"


def _on_a_terminal(code: str) -> str:
    """Run ``code`` with stderr on a pseudo-terminal; what the terminal received, escapes removed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=slave, stdout=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_terminal_bars_have_totals_and_finished_steps_never_show_0_of_unknown():
    code = ("from geochange.progress import task\n"
            "with task('fitting on the scene', 3, unit='steps') as advance:\n"
            "    advance(1, 'normalisation')\n"
            "    with task('training vae', 2, unit='epochs') as epochs:\n"
            "        for e in range(2):\n"
            "            with task(f'vae epoch {e + 1}/2', 4, unit='batches', transient=True) as batch:\n"
            "                batch(4)\n"
            "            epochs(1)\n"
            "    advance(2)\n"
            "with task('writing outputs', None):\n"
            "    pass\n")
    screen = _on_a_terminal(code)
    # what stays on each line: its last redraw
    final = [[seg for seg in line.split("\r") if seg.strip()][-1].strip() for line in screen.split("\n")
             if line.strip()]
    assert "/?" not in screen
    assert any(line.startswith("fitting on the scene") and "3/3 steps" in line for line in final)
    assert any(line.startswith("training vae") and "2/2 epochs" in line for line in final)
    assert any(line.startswith("writing outputs") and "done" in line for line in final)
    assert not any("vae epoch" in line for line in final)   # the epochs' batches are gone once done


def _cli_with_frequent_lines(*args: str) -> subprocess.CompletedProcess:
    """``geochange ARGS`` in a real process, stderr to a pipe, a progress line for every tenth."""
    code = ("import sys\nimport geochange.progress as p\np.LINE_EVERY_S = 0.0\n"
            "from geochange.cli import main\nsys.argv = ['geochange', *sys.argv[1:]]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_plain_progress_lines_with_totals_to_a_pipe(planted_same_grid, tmp_path):
    s = planted_same_grid
    before = rgba_with_nodata(s.before, tmp_path / "rgba.tif")   # and a warning longer than 80 columns
    proc = _cli_with_frequent_lines("detect", str(before), str(s.after), "--out", str(tmp_path / "o"),
                                    "--bands", "1,2,3", "--tile", "32", "--overlap", "8",
                                    "-p", "filter=median")   # windows, not cva's strips: many progress lines
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = proc.stderr.splitlines()
    assert err and all(line.strip() for line in err), proc.stderr           # no blank line
    assert not any("\x1b" in line or "\r" in line for line in err)          # no bar, no colour
    warning = [line for line in err if line.startswith("warning:")]
    assert len(warning) == 1 and len(warning[0]) > 80 and warning[0].endswith("(NodataShadowWarning)")
    windows = [line for line in err if line.startswith("detecting (cva, cpu): ")]
    total = int(re.search(r"/(\d+) windows", windows[-1]).group(1))
    assert total > 10 and re.fullmatch(rf"detecting \(cva, cpu\): {total}/{total} windows in .*", windows[-1])
    assert len(windows) >= 6 and all(f"/{total} windows (" in line for line in windows[:-1])
    assert any(re.fullmatch(r"fitting on the scene: 3/3 steps in .*", line) for line in err)
    assert any(re.fullmatch(r"writing outputs: 5/5 steps in .*", line) for line in err)


def test_cli_usage_errors_are_one_line(tmp_path):
    for args, text in ((["detect", "a.tif", "b.tif", "--overwrite", "true"], "unexpected extra argument"),
                       (["detect", "a.tif"], "Missing argument 'AFTER'"),
                       (["detect", "a.tif", "b.tif", "--tile", "x"], "--tile"),
                       (["detekt"], "No such command")):
        proc = subprocess.run([sys.executable, "-m", "geochange", *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 2
        err = proc.stderr.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], proc.stderr
