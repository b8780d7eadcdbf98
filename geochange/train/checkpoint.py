"""Checkpoints: a model's name, configuration, weights and fitted state, loadable without running code.

A checkpoint is a ``torch.save`` of plain data only (tensors, numbers, strings, lists, dicts)::

    format "geochange-checkpoint", version, geochange (the version that wrote it),
    model (its name in geochange.models.MODELS), config (the config dataclass as a dict),
    in_bands, state_dict, extra (model.extra_state()),
    epoch (epochs done), history (one dict of logged scalars per epoch),
    optimizer, scheduler (state dicts, for --resume; absent in a final export)

It is read with ``torch.load(..., weights_only=True)``: a file that carries a pickled object (a
class, a function) is refused instead of executed, so a checkpoint from a stranger cannot run code.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path

import geochange
from geochange.errors import GeochangeError
from geochange.io.atomic import commit, discard, temp_path
from geochange.models.base import TrainableModel

FORMAT = "geochange-checkpoint"
VERSION = 1


def checkpoint_dict(model: TrainableModel, *, epoch: int = 0, history: list | None = None,
                    optimizer=None, scheduler=None) -> dict:
    """Everything needed to rebuild ``model`` (and, with the optimiser's state, to resume training)."""
    ckpt = {
        "format": FORMAT, "version": VERSION, "geochange": geochange.__version__,
        "model": model.name, "config": dataclasses.asdict(model.config), "in_bands": int(model.in_bands),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "extra": model.extra_state(), "epoch": int(epoch), "history": list(history or []),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    return ckpt


def save_checkpoint(path: str | Path, model: TrainableModel, **kwargs) -> Path:
    """Write a checkpoint of ``model`` atomically (see :func:`checkpoint_dict` for ``kwargs``)."""
    import torch

    path = Path(path)
    tmp = temp_path(path)
    try:
        torch.save(checkpoint_dict(model, **kwargs), tmp)
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``) and check that it is one of ours."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise GeochangeError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise GeochangeError(f"{path}: not a geochange checkpoint (not a torch file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        raise GeochangeError(f"{path}: refused: the file holds objects other than plain data, so loading it "
                             f"could run code" + (f" ({what[0]})" if what else "")) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise GeochangeError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise GeochangeError(f"{path}: not a geochange checkpoint")
    version = ckpt.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise GeochangeError(f"{path}: malformed checkpoint: 'version' is {version!r}, not a whole number")
    if version > VERSION:
        raise GeochangeError(f"{path}: checkpoint format version {ckpt['version']} is newer than this geochange "
                             f"reads ({VERSION}); upgrade geochange")
    _check_layout(path, ckpt)
    ckpt["source"] = str(path)   # for messages; never written back (checkpoint_dict builds a new dict)
    return ckpt


def _check_layout(path: Path, ckpt: dict) -> None:
    """Each entry of the right kind, so that a hand-edited or damaged file is one line, not a traceback."""
    import torch

    def bad(key: str, want: str) -> GeochangeError:
        return GeochangeError(f"{path}: malformed checkpoint: {key!r} is {_short(ckpt.get(key))}, not {want}")

    if not isinstance(ckpt.get("model"), str):
        raise bad("model", "a model name")
    in_bands = ckpt.get("in_bands")
    if isinstance(in_bands, bool) or not isinstance(in_bands, int) or in_bands < 1:
        raise bad("in_bands", "a number of bands >= 1")
    if not isinstance(ckpt.get("config", {}), dict):
        raise bad("config", "a mapping of settings")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise bad("state_dict", "a mapping of names to tensors")
    if not isinstance(ckpt.get("extra") or {}, dict):
        raise bad("extra", "a mapping")
    epoch = ckpt.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise bad("epoch", "a number of epochs >= 0")
    if not isinstance(ckpt.get("history", []), list):
        raise bad("history", "a list")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def model_from_checkpoint(ckpt: dict, device: str = "cpu", overrides: dict | None = None) -> TrainableModel:
    """Rebuild the model a checkpoint dict describes, weights and fitted state loaded, in eval mode;
    ``overrides`` (``-p KEY=VALUE``) replace settings of the stored configuration."""
    from geochange.models import create_model

    values = config_values(ckpt)
    if overrides:
        values.update(overrides)   # create_model checks keys and types (models.config)
    model = create_model(ckpt["model"], device=device, **values)
    if not isinstance(model, TrainableModel):
        raise GeochangeError(f"model {ckpt['model']} is not trainable, yet the checkpoint holds weights")
    source = ckpt.get("source", "checkpoint")
    model.build(int(ckpt["in_bands"]))
    try:
        model.net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:   # missing, unexpected or mis-shaped weights: torch lists them, one per line
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3] if line.strip())
        raise GeochangeError(f"{source}: the weights do not fit model {ckpt['model']} with {ckpt['in_bands']} bands "
                             f"and its stored settings ({_short_text(detail)})") from None
    model.net.to(device)
    try:
        model.load_extra_state(ckpt.get("extra") or {})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise GeochangeError(f"{source}: malformed checkpoint: its fitted state ('extra') does not fit model "
                             f"{ckpt['model']} ({type(exc).__name__}: {_short_text(str(exc))})") from None
    model.net.eval()
    return model


def _short_text(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_model(path: str | Path, device: str = "cpu") -> TrainableModel:
    """The trained model stored at ``path``, ready to ``predict`` on ``device``."""
    return model_from_checkpoint(load_checkpoint(path), device)


def config_values(ckpt: dict) -> dict:
    """The stored config, lists turned back into tuples where the dataclass default is a tuple."""
    from geochange.models import model_class

    cls = model_class(ckpt["model"]).config_class
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in (ckpt.get("config") or {}).items():
        field = defaults.get(key)
        if field is None:
            raise GeochangeError(f"checkpoint config has {key!r}, which model {ckpt['model']} does not know "
                                 "(written by another geochange version?)")
        default = field.default if field.default is not dataclasses.MISSING else None
        values[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    return values
