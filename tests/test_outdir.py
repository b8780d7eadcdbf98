"""The output folder of a run: locked against a second run, left as it was when the run fails
(an error, a full disk), and I/O failures told apart from bugs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from geochange.detect import DetectOptions, detect
from geochange.errors import GeochangeError
from geochange.io.outdir import LOCK, OutputFolder, io_failure, take_lock
from tests.conftest import make_planted_scene


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path):
    import socket

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        with pytest.raises(GeochangeError, match=rf"another geochange run \(pid {sleeper.pid}\) is writing there"):
            take_lock(tmp_path / LOCK)
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / LOCK).write_text(f"{socket.gethostname()} {dead_pid()}\n")
    take_lock(tmp_path / LOCK)
    assert (tmp_path / LOCK).read_text().split()[1] == str(os.getpid())


def test_detect_refuses_a_locked_folder_in_one_line_and_releases_its_own(tmp_path):
    import socket

    s = make_planted_scene(tmp_path / "s", after_crs=None)
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK).write_text(f"{socket.gethostname()} {os.getppid()}\n")    # a live process: pytest's parent
    with pytest.raises(GeochangeError, match="is writing there; wait for it to finish or choose another --out"):
        detect(str(s.before), str(s.after), out, DetectOptions(tile=128, overlap=16))
    assert sorted(p.name for p in out.iterdir()) == [LOCK]                # nothing written, the lock not ours
    (out / LOCK).unlink()
    detect(str(s.before), str(s.after), out, DetectOptions(tile=128, overlap=16))
    assert not (out / LOCK).exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_failed_run_puts_back_the_outputs_it_was_replacing(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text("earlier")
    (out / "notes.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="boom"):
        with OutputFolder(out, ("summary.json", "change_mask.tif")):
            assert not (out / "summary.json").exists()
            (out / "change_mask.tif").write_text("half of a new run")
            (out / "summary.json").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    assert (out / "summary.json").read_text() == "earlier"
    with OutputFolder(out, ("summary.json",)):
        (out / "summary.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json"]
    assert (out / "summary.json").read_text() == "new"


def test_io_failures_are_told_apart_from_bugs():
    assert io_failure(OSError(28, "No space left on device")) == "No space left on device"
    try:
        try:
            raise OSError(5, "Input/output error")
        except OSError as exc:
            raise RuntimeError("Read failed. See previous exception") from exc
    except RuntimeError as exc:
        assert io_failure(exc) == "Input/output error"
    assert io_failure(ValueError("a bug")) is None


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs (root only): a real full disk. Skipped where mounting is not allowed."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(folder)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_one_line_and_leaves_the_folder_as_it_was(tmp_path, small_disk):
    s = make_planted_scene(tmp_path / "s", height=600, width=600, after_crs=None)
    out = small_disk / "run"
    with pytest.raises(GeochangeError, match=r"run: cannot write the outputs, is the disk full or failing\? "
                                             r"\(.*\); the folder is left as it was"):
        detect(str(s.before), str(s.after), out)
    assert not out.exists() and list(small_disk.iterdir()) == []
    # an earlier, smaller run in the folder: a failed --overwrite leaves it as it was
    small = make_planted_scene(tmp_path / "small", height=120, width=120, after_crs=None)
    detect(str(small.before), str(small.after), out, DetectOptions(tile=64, overlap=16))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(GeochangeError, match="cannot write the outputs"):
        detect(str(s.before), str(s.after), out, DetectOptions(overwrite=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_full_disk_from_the_command_line_is_exactly_one_line(tmp_path, small_disk):
    """What a user sees: one line on stderr (no libtiff message), exit 2; without -q the progress lines
    come first and the error is still one line, the last."""
    import sys

    s = make_planted_scene(tmp_path / "s", height=600, width=600, after_crs=None)
    cmd = [sys.executable, "-m", "geochange", "detect", str(s.before), str(s.after), "--out", str(small_disk / "run")]
    res = subprocess.run(cmd + ["-q"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "disk full" in res.stderr, res.stderr
    assert list(small_disk.iterdir()) == []
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and lines[-1].startswith("error: ") and "disk full" in lines[-1], res.stderr
    assert all(re.search(r": \d+/\d+ ", ln) for ln in lines[:-1]), res.stderr  # progress lines only before it
    assert list(small_disk.iterdir()) == []
