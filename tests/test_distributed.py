"""Distributed training: two processes launched by torchrun (gloo, CPU) train together and agree."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from geochange.errors import GeochangeError
from geochange.train.distributed import Dist, setup

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from conftest import TinyChangeNet, TinyConfig, planted_patches
    from geochange import models
    from geochange.train import TrainOptions, train
    models.MODELS["tiny"] = "conftest:TinyChangeNet"
    model = TinyChangeNet(TinyConfig())
    summary = train(model, planted_patches(21, seed=3), TrainOptions(device="cpu", epochs=6, seed=1,
                                                                      out={out!r}, ddp=True))
    torch.save({{"state": model.net.state_dict(), "losses": [r["loss"] for r in summary["history"]],
                "rank": summary["rank"], "world": summary["world_size"]}}, {out!r} + f"/rank{{summary['rank']}}.pt")
""")


def test_two_ranks_train_together_and_end_with_identical_weights(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(out)))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    losses = ranks[0]["losses"]
    assert losses == ranks[1]["losses"] and losses[-1] < 0.6 * losses[0]  # averaged over ranks, and falling
    assert (out / "last.pt").is_file() and len((out / "metrics.csv").read_text().splitlines()) == 7


def test_shards_cover_every_sample_with_equal_steps():
    positions = np.arange(11)
    shards = [Dist(rank=r, world=3).shard(positions) for r in range(3)]
    assert {len(s) for s in shards} == {4}
    assert set(np.concatenate(shards)) == set(range(11))
    assert Dist().shard(positions) is positions


def test_ddp_outside_torchrun_is_a_clear_error(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(GeochangeError, match="torchrun"):
        setup(True, "cpu")
