"""Atomic outputs: hidden temporary names, write_text, commit, discard."""

from __future__ import annotations

import pytest

from geochange.io.atomic import commit, discard, run_token, temp_path, write_text


def test_temp_path_is_a_hidden_sibling(tmp_path):
    t = temp_path(tmp_path / "change_mask.tif", ".cog.tif")
    assert t.parent == tmp_path
    assert t.name == f".change_mask.tif.partial-{run_token()}.cog.tif"
    assert temp_path("out/changes").name == f".changes.partial-{run_token()}"
    assert temp_path(tmp_path / "a.tif") != temp_path(tmp_path / "a.tif", ".x")
    assert temp_path(tmp_path / "a.tif") == temp_path(tmp_path / "a.tif")   # one name per run


def test_two_processes_never_share_a_temporary_name(tmp_path):
    """Two runs writing into one folder: each has its own hidden names (issue 14 item 1)."""
    import subprocess
    import sys

    code = "from geochange.io.atomic import temp_path; print(temp_path('out/change_mask.tif'))"
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
             for _ in range(2)}
    assert len(names) == 2 and str(temp_path("out/change_mask.tif")) + "\n" not in names


def test_write_text_writes_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "summary.json"
    write_text(final, '{"é": 1}\n')
    assert final.read_text(encoding="utf-8") == '{"é": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    # replaces an existing file completely
    write_text(final, "short")
    assert final.read_text(encoding="utf-8") == "short"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_write_text_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    final = tmp_path / "style.qml"
    final.write_text("old", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_text(final, "half written \ud800 then fails")   # a lone surrogate cannot be encoded
    assert final.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["style.qml"]


def test_write_text_failure_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(UnicodeEncodeError):
        write_text(tmp_path / "new.txt", "\udfff")
    assert list(tmp_path.iterdir()) == []


def test_write_text_into_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "missing" / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_commit_replaces_atomically(tmp_path):
    tmp, final = tmp_path / ".a.partial", tmp_path / "a"
    final.write_text("old")
    tmp.write_text("new")
    commit(tmp, final)
    assert final.read_text() == "new"
    assert not tmp.exists()


def test_discard_files_folders_and_missing_paths(tmp_path):
    f = tmp_path / "f.tmp"
    f.write_text("x")
    d = tmp_path / ".dir.partial"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "g.shp").write_text("y")
    keep = tmp_path / "keep.txt"
    keep.write_text("k")
    discard(f, d, tmp_path / "missing.tif", str(tmp_path / "missing-too"), tmp_path / "no" / "such" / "dir")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    discard()                      # nothing to do
    discard(f, d)                  # twice is fine
    assert keep.read_text() == "k"
