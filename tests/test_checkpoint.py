"""Checkpoints reload to identical outputs, and a checkpoint that carries code is refused, not run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TinyChangeNet, TinyConfig, planted_patches
from geochange.errors import GeochangeError
from geochange.train import TrainOptions, load_checkpoint, load_model, save_checkpoint, train
from geochange.train.checkpoint import model_from_checkpoint

MARKER = {"path": None}


class Payload:
    """Unpickling this would create a file: the proof that loading ran code."""

    def __reduce__(self):
        return (open, (MARKER["path"], "w"))


def _trained(tmp_path, **config) -> tuple[TinyChangeNet, str]:
    model = TinyChangeNet(TinyConfig(**config))
    summary = train(model, planted_patches(16), TrainOptions(device="cpu", epochs=2, out=tmp_path / "run"))
    return model, summary["checkpoint"]


def test_reloads_to_identical_outputs_with_its_configuration(tmp_path, tiny_model):
    model, path = _trained(tmp_path, hidden=5)
    again = load_model(path)
    assert again.config == TinyConfig(hidden=5, epochs=2) and again.in_bands == 3
    rng = np.random.default_rng(0)
    b, a = rng.normal(size=(2, 2, 3, 16, 16)).astype(np.float32)
    valid = np.ones((2, 16, 16), bool)
    np.testing.assert_array_equal(model.predict(b, a, valid), again.predict(b, a, valid))
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == "tiny" and ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert ckpt["geochange"] and ckpt["format"] == "geochange-checkpoint"


def test_a_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path, tiny_model):
    model, path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    MARKER["path"] = str(tmp_path / "pwned")
    ckpt["extra"] = {"payload": Payload()}
    evil = tmp_path / "evil.pt"
    torch.save(ckpt, evil)
    with pytest.raises(GeochangeError, match="refused"):
        load_model(evil)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None])
def test_other_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)  # a plain torch file, not ours
    else:
        path.write_bytes(content)
    with pytest.raises(GeochangeError, match="checkpoint"):
        load_checkpoint(path)
    with pytest.raises(GeochangeError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_save_is_atomic_and_round_trips_extra_state(tmp_path, tiny_model):
    model, _ = _trained(tmp_path)
    model.extra_state = lambda: {"centres": torch.arange(6.0).reshape(2, 3), "k": 2}
    out = save_checkpoint(tmp_path / "m.pt", model, epoch=7)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 7 and ckpt["extra"]["k"] == 2
    assert torch.equal(ckpt["extra"]["centres"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(in_bands="three"), r"malformed checkpoint: 'in_bands' is 'three', not a number of bands"),
    (lambda c: c.update(state_dict=[1, 2]), r"'state_dict' is \[1, 2\], not a mapping of names to tensors"),
    (lambda c: c["state_dict"].update(extra_layer=torch.zeros(2)), r"the weights do not fit model tiny with 3 bands"
                                                                   r".*Unexpected key\(s\) in state_dict: \"extra_layer\""),
    (lambda c: c["state_dict"].pop("0.weight"), r"the weights do not fit.*Missing key\(s\)"),
    (lambda c: c.update(in_bands=4), r"the weights do not fit model tiny with 4 bands.*size mismatch"),
    (lambda c: c["config"].update(hidden="many"), r"model tiny: hidden must be int, not 'many'"),
    (lambda c: c.update(model=7), r"'model' is 7, not a model name"),
    (lambda c: c.update(version="1"), r"'version' is '1', not a whole number"),
])
def test_a_malformed_checkpoint_of_plain_data_is_one_line(tmp_path, tiny_model, change, message):
    _, path = _trained(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(GeochangeError, match=message) as err:
        load_model(bad)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_overrides_of_a_checkpoint_are_checked_like_any_setting(tmp_path, tiny_model):
    _, path = _trained(tmp_path)
    ckpt = load_checkpoint(path)
    with pytest.raises(GeochangeError, match=r"model tiny has no setting 'foo'; it takes epochs \(int\)"):
        model_from_checkpoint(ckpt, "cpu", {"foo": 1})
    assert model_from_checkpoint(ckpt, "cpu", {"lr": 1}).config.lr == 1.0
