"""The work folder of a blocked run: atomic block folders, the journal, the fingerprint of the scene fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geochange.errors import GeochangeError
from geochange.io.journal import DONE, WORK_DIR, BlockJournal, file_identity, publish_block, state_digest
from geochange.models.cva import CVA


def test_a_block_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "blocks" / "00001"

    def breaks(folder):
        (folder / "part.tif").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish_block(final, breaks)
    assert not final.exists() and list((tmp_path / "blocks").iterdir()) == []

    def fills(folder):
        (folder / "part.tif").write_bytes(b"whole")
        (folder / DONE).write_text("{}")

    publish_block(final, fills)
    assert (final / "part.tif").read_bytes() == b"whole" and [p.name for p in (tmp_path / "blocks").iterdir()] == ["00001"]


def test_journal_resumes_only_the_same_run(tmp_path):
    fp = {"before": {"path": "a.tif", "size": 10}, "settings": {"tile": 512}, "fit": "abc"}
    j = BlockJournal(tmp_path, fp, 3)
    assert j.start(resume=False) == set()
    for i in (0, 2):
        j.block_dir(i).mkdir()
    (j.block_dir(0) / DONE).write_text("{}")   # block 2's folder is incomplete: no block.json
    j.mark_done(0)
    saved = json.loads((tmp_path / WORK_DIR / "journal.json").read_text())
    assert saved["done"] == [0] and saved["blocks"] == 3 and saved["fingerprint"] == fp

    assert BlockJournal(tmp_path, fp, 3).start(resume=True) == {0}
    other = {**fp, "settings": {"tile": 256}}
    with pytest.raises(GeochangeError, match="settings.tile"):
        BlockJournal(tmp_path, other, 3).start(resume=True)
    with pytest.raises(GeochangeError, match="scene fit"):
        BlockJournal(tmp_path, {**fp, "fit": "abd"}, 3).start(resume=True)
    assert BlockJournal(tmp_path, other, 3).start(resume=False) == set()   # a new run starts clean
    assert not j.block_dir(0).exists()


def test_state_digest_sees_the_fitted_numbers(tmp_path):
    rng = np.random.default_rng(0)
    samples = [(rng.normal(size=(3, 32, 32)).astype(np.float32), rng.normal(size=(3, 32, 32)).astype(np.float32),
                np.ones((32, 32), bool))]
    a, b, c = CVA(), CVA(), CVA()
    a.fit(samples)
    b.fit(samples)
    samples[0][1][0, :8] += 3
    c.fit(samples)
    assert state_digest(a) == state_digest(b) != state_digest(c)
    assert state_digest(CVA()) != state_digest(a)


def test_file_identity_changes_when_the_file_does(tmp_path):
    f = tmp_path / "x.tif"
    f.write_bytes(b"1")
    first = file_identity(str(f))
    f.write_bytes(b"22")
    assert file_identity(str(f)) != first and file_identity("s3://bucket/x.tif") == {"path": "s3://bucket/x.tif"}
