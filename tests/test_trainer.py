"""The shared trainer on a tiny real model: learning, datasets on disk, checkpoints, resume, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import TinyChangeNet, TinyConfig, planted_patches
from geochange.data.patches import PatchWriter
from geochange.errors import GeochangeError
from geochange.train import TrainOptions, load_model, train
from geochange.train.data import PairStandardizer, item_groups


def _accuracy_on_changes(model: TinyChangeNet, items: list[dict]) -> tuple[float, float]:
    """Share of planted (changed) pixels found and of unchanged pixels left alone, at 0.5."""
    std = PairStandardizer(items, item_groups(items))
    b, a = (np.stack(d) for d in zip(*(std(i, item) for i, item in enumerate(items))))
    prob = model.predict(b, a, np.ones(b.shape[:1] + b.shape[2:], bool))
    label = np.stack([i["label"] for i in items])
    return float((prob[label == 1] >= 0.5).mean()), float((prob[label == 0] < 0.5).mean())


def test_training_makes_the_loss_fall_and_finds_planted_changes(tiny_model):
    model = TinyChangeNet(TinyConfig())
    summary = train(model, planted_patches(32, seed=0), TrainOptions(device="cpu", epochs=8))
    losses = [row["loss"] for row in summary["history"]]
    assert len(losses) == 8 and summary["checkpoint"] is None
    assert losses[-1] < 0.5 * losses[0]
    found, kept = _accuracy_on_changes(model, planted_patches(8, seed=99))
    assert found > 0.9 and kept > 0.95


def _write_dataset(path, items, splits) -> None:
    with PatchWriter(path, size=items[0]["before"].shape[1], bands=3, dtype="uint8", shard_size=5) as w:
        for item, split in zip(items, splits):
            w.add(item["before"], item["after"], item["label"], {"split": split})


def test_trains_from_a_dataset_folder_and_writes_checkpoints_and_metrics(tmp_path, tiny_model):
    items = planted_patches(24, seed=1)
    _write_dataset(tmp_path / "ds", items, ["train"] * 20 + ["test"] * 4)
    run = tmp_path / "run"
    summary = train(TinyChangeNet(TinyConfig()), tmp_path / "ds", TrainOptions(device="cpu", epochs=3, out=run))
    assert summary["samples"] == 20  # the train split only
    assert sorted(p.name for p in run.iterdir()) == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt",
                                                     "last.pt", "metrics.csv"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "changed_share", "lr", "seconds"} <= set(rows[0])
    assert float(rows[-1]["loss"]) == pytest.approx(summary["history"][-1]["loss"])
    assert load_model(run / "last.pt").config.epochs == 3


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_model):
    items = planted_patches(16, seed=2)
    full = TinyChangeNet(TinyConfig())
    train(full, items, TrainOptions(device="cpu", epochs=4, seed=3, out=tmp_path / "full"))
    part = TinyChangeNet(TinyConfig())
    train(part, items, TrainOptions(device="cpu", epochs=2, seed=3, out=tmp_path / "part"))
    resumed = TinyChangeNet(TinyConfig())
    summary = train(resumed, items, TrainOptions(device="cpu", epochs=4, seed=3, out=tmp_path / "part", resume=True))
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4]
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_second_call_continues_from_the_trained_weights(tiny_model):
    items = planted_patches(16, seed=4)
    model = TinyChangeNet(TinyConfig())
    first = train(model, items, TrainOptions(device="cpu", epochs=3))
    second = train(model, items, TrainOptions(device="cpu", epochs=1))
    assert second["history"][0]["loss"] < first["history"][0]["loss"]


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, tiny_model):
    items = planted_patches(8)
    train(TinyChangeNet(TinyConfig()), items, TrainOptions(device="cpu", epochs=1, out=tmp_path / "run"))
    with pytest.raises(GeochangeError, match="--resume to continue"):
        train(TinyChangeNet(TinyConfig()), items, TrainOptions(device="cpu", epochs=1, out=tmp_path / "run"))
    with pytest.raises(GeochangeError, match="nothing to resume"):
        train(TinyChangeNet(TinyConfig()), items, TrainOptions(device="cpu", out=tmp_path / "other", resume=True))


def test_diverging_loss_is_a_clear_error(tiny_model):
    with pytest.raises(GeochangeError, match="lower --lr"):
        train(TinyChangeNet(TinyConfig()), planted_patches(8), TrainOptions(device="cpu", epochs=3, lr=1e30))


def test_unknown_setting_and_mixed_sizes_are_refused(tiny_model):
    items = planted_patches(4, size=16) + planted_patches(4, size=24)
    with pytest.raises(GeochangeError, match="differ in shape"):
        train(TinyChangeNet(TinyConfig()), items, TrainOptions(device="cpu", epochs=1, batch_size=8))
    from dataclasses import dataclass

    @dataclass
    class NoLr:
        epochs: int = 1

    model = TinyChangeNet(NoLr())
    with pytest.raises(GeochangeError, match="no 'lr' setting"):
        train(model, planted_patches(4), TrainOptions(device="cpu", lr=0.1))


def test_a_failed_run_leaves_no_empty_run_folder_but_keeps_one_with_checkpoints(tmp_path):
    class Breaks(TinyChangeNet):
        fail_at = 0

        def training_step(self, batch, epoch):
            if epoch >= self.fail_at:
                raise GeochangeError("the loss became nan")
            return super().training_step(batch, epoch)

    with pytest.raises(GeochangeError, match="nan"):
        train(Breaks(TinyConfig()), planted_patches(8), TrainOptions(device="cpu", out=tmp_path / "runs" / "a"))
    assert not (tmp_path / "runs").exists()
    model = Breaks(TinyConfig())
    model.fail_at = 1
    with pytest.raises(GeochangeError, match="nan"):
        train(model, planted_patches(8), TrainOptions(device="cpu", out=tmp_path / "b"))
    assert (tmp_path / "b" / "last.pt").is_file()        # an epoch finished: kept for --resume
